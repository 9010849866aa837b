/// @file
/// Configuration loading: argv tokenizer, typed parsers, TOML walk, help and summaries.
///
/// The command line is tokenized here rather than by CLI11: the loader needs its own help
/// layout (flag, environment variable, TOML key and default of every setting), its own
/// one-line error messages, and exact semantics that CLI11 2.1 does not give (`--opt=` with an
/// empty value takes the next argument there, for instance). The grammar is small:
/// `--name=value`, `--name value`, a bare `--bool-flag`, `-h`, and `--` before positionals.
///
/// This file: the table of settings (keys, flags, environment variables, targets), rendering
/// of current values, help text and summaries. The value layer (typed parsing, display) is in
/// config_values.cpp, the sources (command line, environment, file) and `load` in
/// config_sources.cpp.

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/version.hpp>

#include "config_values.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace trading_shared::core {

using namespace config_detail;

// ---- ConfigError
// ---------------------------------------------------------------------------------

namespace {
std::string one_line(std::string_view message) {
  std::string out(message);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = ' ';
    }
  }
  return out;
}
}  // namespace

ConfigError::ConfigError(std::string_view message) : std::runtime_error(one_line(message)) {}

std::string_view to_string(ConfigSource source) noexcept {
  switch (source) {
    case ConfigSource::default_value:
      return "default";
    case ConfigSource::config_file:
      return "config file";
    case ConfigSource::environment:
      return "environment";
    case ConfigSource::command_line:
      return "command line";
  }
  return "unknown";
}

// ---- ConfigLoader
// ----------------------------------------------------------------------------------

ConfigLoader::ConfigLoader(std::string program, std::string description)
    : program_(std::move(program)),
      description_(std::move(description)),
      version_(std::string(kVersion)) {}

ConfigLoader& ConfigLoader::env_namespace(std::string name,
                                          std::vector<std::string> shared_tables) {
  const bool valid = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (!valid) {
    throw std::invalid_argument("invalid environment namespace \"" + name +
                                "\" (upper-case letters, digits, '_')");
  }
  env_namespace_ = std::move(name);
  shared_tables_ = std::move(shared_tables);
  return *this;
}

ConfigLoader& ConfigLoader::version(std::string version) {
  version_ = std::move(version);
  return *this;
}

ConfigLoader& ConfigLoader::env_prefix(std::string prefix) {
  env_prefix_ = std::move(prefix);
  return *this;
}

ConfigLoader& ConfigLoader::allow_positional(std::string name) {
  positional_name_ = std::move(name);
  return *this;
}

std::string ConfigLoader::flag_for(std::string_view key) {
  std::string flag(key);
  std::replace_if(
      flag.begin(), flag.end(), [](char c) { return c == '.' || c == '_'; }, '-');
  return "--" + flag;
}

std::string ConfigLoader::env_var_for(std::string_view key) const {
  std::string name = normalized_key(key);
  for (char& c : name) {
    if (c >= 'a' && c <= 'z') {
      c = static_cast<char>(c - 'a' + 'A');
    }
  }
  if (env_namespace_.empty()) {
    return env_prefix_ + name;
  }
  const std::string_view table = key.substr(0, key.find('.'));
  const bool shared =
      key.find('.') != std::string_view::npos &&
      std::find(shared_tables_.begin(), shared_tables_.end(), table) != shared_tables_.end();
  return shared ? env_prefix_ + name : env_prefix_ + env_namespace_ + "_" + name;
}

std::string ConfigLoader::config_env_var() const {
  return env_namespace_.empty() ? env_prefix_ + "CONFIG" : env_prefix_ + env_namespace_ + "_CONFIG";
}

ConfigLoader& ConfigLoader::add_custom(SettingSpec spec, CustomSetting custom) {
  if (!custom.parse || !custom.format) {
    throw std::invalid_argument("custom setting " + spec.key + " needs parse and format");
  }
  return add_target(Target{std::in_place_type<CustomSetting>, std::move(custom)}, std::move(spec));
}

ConfigLoader& ConfigLoader::add_target(Target target, SettingSpec spec) {
  if (!valid_key(spec.key)) {
    throw std::invalid_argument("invalid setting key \"" + spec.key +
                                "\" (lower-case letters, digits, '_', '-', dot-separated)");
  }
  const std::string normalized = normalized_key(spec.key);
  if (normalized == "help" || normalized == "config" || normalized == "version" ||
      normalized == "help_markdown") {
    throw std::invalid_argument("setting key \"" + spec.key + "\" is reserved");
  }
  for (const auto& other : settings_) {
    const bool file_flag_clash =
        (other.spec.secret && normalized_key(other.spec.key) + "_file" == normalized) ||
        (spec.secret && normalized + "_file" == normalized_key(other.spec.key));
    if (normalized_key(other.spec.key) == normalized || file_flag_clash) {
      throw std::invalid_argument("setting key \"" + spec.key + "\" clashes with \"" +
                                  other.spec.key + "\" (same flag or environment variable)");
    }
    // A TOML key cannot be both a value and a table.
    const auto is_table_of = [](const std::string& table, const std::string& key) {
      return key.size() > table.size() && key.compare(0, table.size(), table) == 0 &&
             key[table.size()] == '.';
    };
    if (is_table_of(other.spec.key, spec.key) || is_table_of(spec.key, other.spec.key)) {
      throw std::invalid_argument("setting key \"" + spec.key + "\" conflicts with \"" +
                                  other.spec.key + "\" in the TOML layout");
    }
  }
  Setting setting{std::move(spec), {}, std::move(target), {}, ConfigSource::default_value};
  setting.flag = flag_for(setting.spec.key).substr(2);
  setting.default_text = render(setting);
  settings_.push_back(std::move(setting));
  return *this;
}

std::string ConfigLoader::render(const Setting& setting) const {
  const bool secret = setting.spec.secret;
  // Non-secret text still goes through the redaction safety net: a URL setting may embed a
  // password even though the setting as a whole is not a secret.
  const auto text = [secret](std::string_view value) {
    if (secret && !value.empty()) {
      return std::string(kSecretShown);
    }
    return display(redact_secrets(value));
  };
  return std::visit(
      [&](const auto& target) -> std::string {
        using P = std::decay_t<decltype(target)>;
        if constexpr (std::is_same_v<P, CustomSetting>) {
          return text(target.format());
        } else {
          using T = std::remove_pointer_t<P>;
          const T& value = *target;
          if constexpr (std::is_same_v<T, std::string>) {
            return text(value);
          } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
            return value ? text(*value) : std::string("<unset>");
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            return text(join(value, ","));
          } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
            return secret ? std::string(kSecretShown) : format_duration(value);
          } else if constexpr (std::is_same_v<T, bool>) {
            return secret ? std::string(kSecretShown) : std::string(value ? "true" : "false");
          } else {
            return secret ? std::string(kSecretShown) : fmt::format("{}", value);
          }
        }
      },
      setting.target);
}

namespace {

/// The placeholder of a setting's value in help (`TEXT`, `INT`, ...).
template <class Variant>
std::string_view type_name_of(const Variant& variant) {
  return std::visit(
      [](const auto& target) -> std::string_view {
        using P = std::decay_t<decltype(target)>;
        if constexpr (std::is_same_v<P, CustomSetting>) {
          return target.type_name.empty() ? std::string_view("VALUE")
                                          : std::string_view(target.type_name);
        } else {
          using T = std::remove_pointer_t<P>;
          if constexpr (std::is_same_v<T, std::string> ||
                        std::is_same_v<T, std::optional<std::string>>) {
            return "TEXT";
          } else if constexpr (std::is_same_v<T, bool>) {
            return "[=BOOL]";
          } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
            return "INT";
          } else if constexpr (std::is_integral_v<T>) {
            return "UINT";
          } else if constexpr (std::is_same_v<T, double>) {
            return "NUMBER";
          } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
            return "DURATION";
          } else {
            return "LIST";
          }
        }
      },
      variant);
}

}  // namespace

std::string ConfigLoader::help_text() const {
  std::string out = fmt::format("Usage: {} [OPTIONS]", program_);
  if (positional_name_) {
    out += fmt::format(" [--] {}...", *positional_name_);
  }
  out += "\n\n";
  if (!description_.empty()) {
    out += description_ + "\n\n";
  }
  out += fmt::format(
      "Each setting is taken from, in decreasing precedence: its command-line flag, its\n"
      "environment variable, the TOML file named by --config (or {0}), its default.\n"
      "An empty environment variable counts as unset. Durations take ms, s, m or h (a plain\n"
      "integer is milliseconds); lists are comma-separated (TOML: arrays of strings).\n\n"
      "A secret can also be read from a file named by its --<flag>-file or <VAR>_FILE.\n\n"
      "Options:\n"
      "  -h, --help\n"
      "      Print this help and exit.\n"
      "  --help-markdown\n"
      "      Print the settings as a Markdown table and exit.\n"
      "  --version\n"
      "      Print \"{1} <version>\" and exit.\n"
      "  --config FILE\n"
      "      TOML configuration file. Unknown keys in it are errors.\n"
      "      env: {0}\n",
      config_env_var(), program_);
  for (const auto& setting : settings_) {
    const std::string_view type = type_name_of(setting.target);
    const bool bool_flag = type == "[=BOOL]";
    out += fmt::format("  --{}{}{}{}\n", setting.flag, bool_flag ? "" : " ", type,
                       setting.spec.secret ? fmt::format(", --{}-file FILE", setting.flag) : "");
    std::string help = setting.spec.help;
    if (setting.spec.secret) {
      help += help.empty() ? "(secret)" : " (secret)";
    }
    if (!help.empty()) {
      out += fmt::format("      {}\n", help);
    }
    const std::string env = env_var_for(setting.spec.key);
    out += fmt::format("      env: {}{} | file: {} | default: {}\n", env,
                       setting.spec.secret ? fmt::format(" or {}_FILE", env) : "", setting.spec.key,
                       setting.default_text);
  }
  return out;
}

namespace {
/// A Markdown table cell: `|` escaped, no line breaks.
std::string cell(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

std::string ConfigLoader::help_markdown() const {
  std::string out = fmt::format(
      "| {} flag | environment | TOML key | default | meaning |\n"
      "|---|---|---|---|---|\n"
      "| `--config` | `{}` | | | TOML configuration file |\n",
      program_, config_env_var());
  for (const auto& setting : settings_) {
    const std::string env = env_var_for(setting.spec.key);
    std::string flag = fmt::format("`--{}`", setting.flag);
    std::string env_cell = fmt::format("`{}`", env);
    std::string help = setting.spec.help;
    if (setting.spec.secret) {
      flag += fmt::format(", `--{}-file`", setting.flag);
      env_cell += fmt::format(", `{}_FILE`", env);
      help += help.empty() ? "(secret)" : " (secret)";
    }
    const std::string default_cell = setting.default_text.empty() || setting.default_text == "\"\""
                                         ? std::string()
                                         : fmt::format("`{}`", cell(setting.default_text));
    out += fmt::format("| {} | {} | `{}` |{} | {} |\n", flag, env_cell, setting.spec.key,
                       default_cell.empty() ? "" : " " + default_cell, cell(help));
  }
  return out;
}

std::vector<EffectiveSetting> ConfigLoader::effective_config() const {
  std::vector<EffectiveSetting> out;
  out.reserve(settings_.size());
  for (const auto& setting : settings_) {
    out.push_back({setting.spec.key, render(setting), setting.source});
  }
  return out;
}

std::string ConfigLoader::effective_config_summary() const {
  std::string out;
  for (const auto& setting : settings_) {
    if (!out.empty()) {
      out += ' ';
    }
    out += setting.spec.key;
    out += '=';
    out += render(setting);
  }
  return out;
}

}  // namespace trading_shared::core

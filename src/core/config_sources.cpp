/// @file
/// The sources of the configuration loader: the command line (tokenized here, see config.cpp),
/// the environment, and the TOML file named by --config; `ConfigLoader::load` applies them,
/// lowest precedence first, validating every source that is present.

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/config_warnings.hpp>
#include <trading_shared/core/logging.hpp>

#include "config_values.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <utility>

namespace trading_shared::core {

using namespace config_detail;

namespace {

/// A URL (`scheme://...`) or a libpq keyword/value DSN (`host=x dbname=y`): a value whose
/// secret part, if it has one, `redact_secrets` finds (a URL's password, `password=...`). A
/// DSN's `=` follows a lower-case keyword (at the start or after white space; spaces before
/// the `=` allowed) and is followed by a value; base64 padding (a trailing `=` or `==`, as in
/// an API key) is not one.
bool is_connection_string(std::string_view value) {
  if (value.find("://") != std::string_view::npos) {
    return true;
  }
  const auto keyword_char = [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; };
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  for (std::size_t eq = value.find('='); eq != std::string_view::npos;
       eq = value.find('=', eq + 1)) {
    if (eq + 1 >= value.size() || value[eq + 1] == '=') {
      continue;
    }
    std::size_t k = eq;
    while (k > 0 && space(value[k - 1])) {
      --k;
    }
    const std::size_t keyword_end = k;
    while (k > 0 && keyword_char(value[k - 1])) {
      --k;
    }
    if (k < keyword_end && (k == 0 || space(value[k - 1]))) {
      return true;
    }
  }
  return false;
}

/// Whether a secret setting's value given in argv gives a secret away: a URL or a DSN only
/// when it holds a password (`--redis-url redis://127.0.0.1:6379` or `redis://user:@host`,
/// the password from a file, does not); any other secret (an API key) always.
bool gives_secret_away(std::string_view value) {
  if (value.empty()) {
    return false;
  }
  return !is_connection_string(value) || redact_secrets(value) != value;
}

/// A secret file larger than this is not a secret (a wrong path, e.g. a log).
constexpr std::size_t kMaxSecretFile = 64 * 1024;

/// Reads a whole file, naming it in the error.
std::string read_file(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw ConfigError(fmt::format("config file {}: cannot open: {}", path, std::strerror(errno)));
  }
  std::string content;
  char buffer[8192];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) {
    content.append(buffer, n);
  }
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) {
    throw ConfigError(fmt::format("config file {}: cannot read: {}", path, std::strerror(error)));
  }
  return content;
}

/// The value of a secret read from the file `path` (named by `source`, e.g. "environment
/// variable TS_POSTGRES_DSN_FILE"): the whole content without its trailing newlines.
std::string read_secret_file(const std::string& path, const std::string& source) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw ConfigError(fmt::format("secret file {} (from {}): cannot open: {}", path, source,
                                  std::strerror(errno)));
  }
  std::string content;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0 && content.size() <= kMaxSecretFile) {
    content.append(buffer, n);
  }
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) {
    throw ConfigError(fmt::format("secret file {} (from {}): cannot read: {}", path, source,
                                  std::strerror(error)));
  }
  if (content.size() > kMaxSecretFile) {
    throw ConfigError(fmt::format("secret file {} (from {}): larger than {} bytes", path, source,
                                  kMaxSecretFile));
  }
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) {
    content.pop_back();
  }
  return content;
}

/// Walks the parsed file: records the node of every known key, rejects every other key.
void collect_file_values(const toml::table& table, const std::string& prefix,
                         const std::set<std::string>& known, const std::set<std::string>& tables,
                         std::map<std::string, const toml::node*>& found,
                         std::vector<std::pair<std::string, toml::source_position>>& unknown) {
  for (const auto& [k, node] : table) {
    const std::string segment(k.str());
    std::string path = prefix;
    if (!path.empty()) {
      path += '.';
    }
    path += segment;
    const bool plain_segment = segment.find('.') == std::string::npos;
    if (plain_segment && known.count(path) != 0) {
      found.emplace(path, &node);
    } else if (const auto* sub = node.as_table();
               sub != nullptr && plain_segment && tables.count(path) != 0) {
      collect_file_values(*sub, path, known, tables, found, unknown);
    } else {
      unknown.emplace_back(path, k.source().begin);
    }
  }
}

std::mutex warnings_mutex;
std::vector<std::string>& config_warnings() {
  static std::vector<std::string> warnings;
  return warnings;
}

void record_config_warning(std::string warning) {
  const std::lock_guard lock(warnings_mutex);
  config_warnings().push_back(std::move(warning));
}

}  // namespace

std::vector<std::string> take_config_warnings() {
  const std::lock_guard lock(warnings_mutex);
  return std::exchange(config_warnings(), {});
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): startup only, documented.
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      return std::nullopt;
    }
    return std::string(value);
  };
}

LoadResult ConfigLoader::load(int argc, const char* const* argv, const EnvLookup& env) {
  LoadResult result;

  // ---- 1. command line -----------------------------------------------------------------------
  std::map<std::string, std::size_t, std::less<>> by_flag;
  std::map<std::string, std::size_t, std::less<>> by_file_flag;  // --<secret>-file
  std::vector<std::string> flag_names{"help", "config", "version", "help-markdown"};
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    by_flag.emplace(settings_[i].flag, i);
    flag_names.push_back(settings_[i].flag);
    if (settings_[i].spec.secret) {
      by_file_flag.emplace(settings_[i].flag + "-file", i);
      flag_names.push_back(settings_[i].flag + "-file");
    }
  }
  std::vector<std::optional<std::string>> from_flags(settings_.size());
  std::vector<std::optional<std::string>> from_flag_files(settings_.size());
  std::optional<std::string> config_flag;
  std::optional<std::string> first_error;
  bool help = false;
  bool markdown = false;
  bool version = false;
  bool options_ended = false;
  std::string previous_bare_bool;  // a bool flag given without '=', for a hint.

  const auto error = [&first_error](std::string message) {
    if (!first_error) {
      first_error = std::move(message);
    }
  };
  for (int i = 1; i < argc && argv != nullptr; ++i) {
    const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
    const std::string bare_bool = std::exchange(previous_bare_bool, {});
    if (options_ended || arg.empty() || arg == "-" || arg.front() != '-') {
      if (positional_name_) {
        result.positional.emplace_back(arg);
      } else if (!bare_bool.empty()) {
        error(fmt::format("unexpected argument {} (boolean flags take a value only as --{}={})",
                          quoted(arg), bare_bool, arg));
      } else {
        error(fmt::format("unexpected argument {}", quoted(arg)));
      }
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    if (arg == "-h") {
      help = true;
      continue;
    }
    if (arg.size() < 3 || arg[1] != '-') {
      error(fmt::format("unknown option {}", arg));
      continue;
    }
    const std::size_t eq = arg.find('=');
    const std::string_view name = arg.substr(2, eq == std::string_view::npos ? eq : eq - 2);
    std::optional<std::string_view> inline_value;
    if (eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
    }

    if (name == "help") {
      help = true;
      continue;
    }
    if (name == "help-markdown") {
      markdown = true;
      continue;
    }
    if (name == "version") {
      version = true;
      continue;
    }
    const auto setting_it = by_flag.find(name);
    const auto file_flag_it = by_file_flag.find(name);
    if (name != "config" && setting_it == by_flag.end() && file_flag_it == by_file_flag.end()) {
      std::string message = fmt::format("unknown option --{}", name);
      if (auto hint = closest(name, flag_names)) {
        message += fmt::format("; did you mean --{}?", *hint);
      }
      error(std::move(message));
      continue;
    }
    const bool is_bool = setting_it != by_flag.end() &&
                         std::holds_alternative<bool*>(settings_[setting_it->second].target);
    std::string value;
    if (inline_value) {
      value = std::string(*inline_value);
    } else if (is_bool) {
      value = "true";
      previous_bare_bool = std::string(name);
    } else if (i + 1 < argc && argv[i + 1] != nullptr &&
               std::string_view(argv[i + 1]).substr(0, 2) != "--") {
      value = argv[++i];
    } else {
      error(fmt::format("option --{} requires a value", name));
      continue;
    }
    if (name == "config") {
      config_flag = std::move(value);
    } else if (file_flag_it != by_file_flag.end()) {
      from_flag_files[file_flag_it->second] = std::move(value);
    } else {
      from_flags[setting_it->second] = std::move(value);
    }
  }
  if (help || markdown || version) {
    result.help_requested = true;
    result.help_text = help       ? help_text()
                       : markdown ? help_markdown()
                                  : fmt::format("{} {}\n", program_, version_);
    result.positional.clear();
    return result;
  }
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    if (!from_flag_files[i]) {
      continue;
    }
    const std::string& flag = settings_[i].flag;
    if (from_flags[i]) {
      error(fmt::format("give either --{0} or --{0}-file, not both", flag));
    } else if (from_flag_files[i]->empty()) {
      error(fmt::format("option --{}-file requires a file name", flag));
    } else if (!first_error) {
      from_flags[i] =
          read_secret_file(*from_flag_files[i], fmt::format("command line --{}-file", flag));
    }
  }
  if (first_error) {
    throw ConfigError(*first_error);
  }
  // A secret's value given on the command line (not through its --<flag>-file): visible to
  // every local user in `ps` and /proc/PID/cmdline. Warned about once the load succeeded; a
  // URL or DSN only when it holds a password (gives_secret_away).
  std::vector<std::size_t> secrets_in_argv;
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    if (settings_[i].spec.secret && from_flags[i] && !from_flag_files[i] &&
        gives_secret_away(*from_flags[i])) {
      secrets_in_argv.push_back(i);
    }
  }

  // ---- 2. environment ---------------------------------------------------------------------------
  const auto lookup = [&env](const std::string& name) -> std::optional<std::string> {
    auto value = env ? env(name) : std::nullopt;
    if (value && value->empty()) {
      return std::nullopt;  // empty counts as unset (documented)
    }
    return value;
  };
  std::vector<std::optional<std::string>> from_env(settings_.size());
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    const std::string var = env_var_for(settings_[i].spec.key);
    from_env[i] = lookup(var);
    if (!settings_[i].spec.secret) {
      continue;
    }
    if (const auto path = lookup(var + "_FILE")) {
      if (from_env[i]) {
        throw ConfigError(fmt::format("give either {0} or {0}_FILE, not both", var));
      }
      from_env[i] = read_secret_file(*path, "environment variable " + var + "_FILE");
    }
  }

  // ---- 3. file ----------------------------------------------------------------------------------
  toml::table file_table;  // owns the nodes referenced below
  std::map<std::string, const toml::node*> from_file;
  result.config_file = config_flag ? config_flag : lookup(config_env_var());
  if (result.config_file && result.config_file->empty()) {
    throw ConfigError("option --config requires a file name");
  }
  if (result.config_file) {
    const std::string& path = *result.config_file;
    const std::string content = read_file(path);
    try {
      file_table = toml::parse(content, path);
    } catch (const toml::parse_error& e) {
      const auto& begin = e.source().begin;
      throw ConfigError(fmt::format("config file {}: line {}, column {}: {}", path, begin.line,
                                    begin.column, e.description()));
    }
    std::set<std::string> known;
    std::set<std::string> tables;
    std::vector<std::string> keys;
    for (const auto& setting : settings_) {
      known.insert(setting.spec.key);
      keys.push_back(setting.spec.key);
      for (std::size_t dot = setting.spec.key.find('.'); dot != std::string::npos;
           dot = setting.spec.key.find('.', dot + 1)) {
        tables.insert(setting.spec.key.substr(0, dot));
      }
    }
    std::vector<std::pair<std::string, toml::source_position>> unknown;
    collect_file_values(file_table, "", known, tables, from_file, unknown);
    if (!unknown.empty()) {
      // Report the first one in the file, not the first in key order.
      const auto first =
          std::min_element(unknown.begin(), unknown.end(),
                           [](const auto& a, const auto& b) { return a.second < b.second; });
      std::string message =
          fmt::format("unknown key {} in config file {} ({})", quoted(first->first), path,
                      fmt::format("line {}, column {}", first->second.line, first->second.column));
      if (auto hint = closest(first->first, keys)) {
        message += fmt::format("; did you mean \"{}\"?", *hint);
      }
      if (unknown.size() > 1) {
        message += fmt::format(" (and {} more unknown keys)", unknown.size() - 1);
      }
      throw ConfigError(message);
    }
  }

  // ---- 4. apply, lowest precedence first, validating every source that is present --------------
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    Setting& setting = settings_[i];
    setting.source = ConfigSource::default_value;
    const bool secret = setting.spec.secret;
    if (const auto it = from_file.find(setting.spec.key); it != from_file.end()) {
      const toml::node& node = *it->second;
      try {
        std::visit(
            [&node](auto& target) {
              using P = std::decay_t<decltype(target)>;
              if constexpr (std::is_same_v<P, CustomSetting>) {
                target.parse(string_from_toml(node));
              } else {
                *target = value_from_toml<std::remove_pointer_t<P>>(node);
              }
            },
            setting.target);
      } catch (const std::invalid_argument& e) {
        throw ConfigError(fmt::format("invalid value {} for {} (from config file {}, {}): {}",
                                      secret ? std::string(kHiddenValue) : render_toml(node),
                                      setting.spec.key, *result.config_file, toml_position(node),
                                      e.what()));
      }
      setting.source = ConfigSource::config_file;
    }
    const auto apply_text = [&setting](const std::string& raw) {
      std::visit(
          [&raw](auto& target) {
            using P = std::decay_t<decltype(target)>;
            if constexpr (std::is_same_v<P, CustomSetting>) {
              target.parse(raw);
            } else {
              *target = value_from_text<std::remove_pointer_t<P>>(raw);
            }
          },
          setting.target);
    };
    if (from_env[i]) {
      try {
        apply_text(*from_env[i]);
      } catch (const std::invalid_argument& e) {
        throw ConfigError(
            fmt::format("invalid value {} for --{} (from environment variable {}): {}",
                        secret ? std::string(kHiddenValue) : quoted(*from_env[i]), setting.flag,
                        env_var_for(setting.spec.key), e.what()));
      }
      setting.source = ConfigSource::environment;
    }
    if (from_flags[i]) {
      try {
        apply_text(*from_flags[i]);
      } catch (const std::invalid_argument& e) {
        throw ConfigError(fmt::format("invalid value {} for --{} (from command line): {}",
                                      secret ? std::string(kHiddenValue) : quoted(*from_flags[i]),
                                      setting.flag, e.what()));
      }
      setting.source = ConfigSource::command_line;
    }
  }
  // One warning per secret, logged at start by the program (take_config_warnings), naming the
  // flag and never the value.
  for (const std::size_t i : secrets_in_argv) {
    const std::string& flag = settings_[i].flag;
    record_config_warning(fmt::format(
        "--{0} carries a secret on the command line, visible in ps: use --{0}-file or {1}_FILE",
        flag, env_var_for(settings_[i].spec.key)));
  }
  return result;
}

std::optional<int> load_or_exit_code(ConfigLoader& loader, int argc, const char* const* argv,
                                     std::ostream& err, std::ostream& out, const EnvLookup& env) {
  try {
    LoadResult result = loader.load(argc, argv, env);
    if (result.help_requested) {
      out << result.help_text << std::flush;
      return 0;
    }
    return std::nullopt;
  } catch (const ConfigError& e) {
    err << loader.program() << ": configuration error: " << e.what() << std::endl;
    return kExitBadConfig;
  }
}

}  // namespace trading_shared::core

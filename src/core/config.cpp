/// @file
/// Configuration loading: argv tokenizer, typed parsers, TOML walk, help and summaries.
///
/// The command line is tokenized here rather than by CLI11: the loader needs its own help
/// layout (flag, environment variable, TOML key and default of every setting), its own
/// one-line error messages, and exact semantics that CLI11 2.1 does not give (`--opt=` with an
/// empty value takes the next argument there, for instance). The grammar is small:
/// `--name=value`, `--name value`, a bare `--bool-flag`, `-h`, and `--` before positionals.

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace trading_shared::core {
namespace {

constexpr std::string_view kDurationExpected =
    "expected a duration such as 250ms, 2s, 1m or 1h (a plain integer is milliseconds)";
constexpr std::string_view kBoolExpected = "expected a boolean (true/false, yes/no, on/off, 1/0)";
constexpr std::string_view kSecretShown = "***";
constexpr std::string_view kHiddenValue = "(secret, not shown)";
constexpr std::size_t kMaxShownValue = 80;

[[noreturn]] void fail_expected(std::string_view what) {
  throw std::invalid_argument(std::string(what));
}

bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

/// A value as shown in messages: quoted and escaped, shortened when long.
std::string quoted(std::string_view value) {
  std::string escaped = json_escape(value);
  if (escaped.size() > kMaxShownValue) {
    escaped.resize(kMaxShownValue);
    escaped += "...";
  }
  return "\"" + escaped + "\"";
}

/// Whether a rendered value needs quotes to stay one unambiguous `key=value` token.
bool needs_quotes(std::string_view value) noexcept {
  if (value.empty()) {
    return true;
  }
  return std::any_of(value.begin(), value.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == ' ' || c == '"' || c == '\\' || c == '\'' ||
           c == 0x7f;
  });
}

std::string display(std::string_view value) {
  return needs_quotes(value) ? "\"" + json_escape(value) + "\"" : std::string(value);
}

/// Edit distance, for "did you mean" hints.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// The closest candidate within a distance that still looks like a typo, if any.
std::optional<std::string> closest(std::string_view wrong,
                                   const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  std::size_t best_distance = std::max<std::size_t>(2, wrong.size() / 4) + 1;
  for (const auto& candidate : candidates) {
    const std::size_t d = edit_distance(wrong, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

// ---- typed parsing from text (command line, environment) -------------------------------------

template <class T>
[[noreturn]] void fail_range() {
  fail_expected(fmt::format("expected an integer between {} and {}", std::numeric_limits<T>::min(),
                            std::numeric_limits<T>::max()));
}

template <class T, class Wide>
T checked_integer(Wide value) {
  if (!std::in_range<T>(value)) {
    fail_range<T>();
  }
  return static_cast<T>(value);
}

bool all_digits(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

template <class T>
T integer_from_text(std::string_view text) {
  std::string_view digits = text;
  const bool positive = !digits.empty() && digits.front() == '+';
  if (positive) {
    digits.remove_prefix(1);
  }
  const bool negative = !positive && !digits.empty() && digits.front() == '-';
  if (!all_digits(negative ? digits.substr(1) : digits)) {
    fail_expected("expected an integer");
  }
  if constexpr (std::is_unsigned_v<T>) {
    if (negative) {
      fail_range<T>();
    }
  }
  using Wide = std::conditional_t<std::is_signed_v<T>, std::int64_t, std::uint64_t>;
  Wide wide{};
  const char* end = digits.data() + digits.size();
  auto [ptr, ec] = std::from_chars(digits.data(), end, wide);
  if (ec == std::errc::result_out_of_range) {
    fail_range<T>();
  }
  if (ec != std::errc{} || ptr != end) {
    fail_expected("expected an integer");
  }
  return checked_integer<T>(wide);
}

double double_from_text(std::string_view text) {
  double value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end || !std::isfinite(value)) {
    fail_expected("expected a number");
  }
  return value;
}

bool bool_from_text(std::string_view text) {
  const std::string v = ascii_lower(text);
  if (v == "true" || v == "1" || v == "yes" || v == "on") {
    return true;
  }
  if (v == "false" || v == "0" || v == "no" || v == "off") {
    return false;
  }
  fail_expected(kBoolExpected);
}

std::chrono::milliseconds duration_from_text(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && is_digit(text[digits])) {
    ++digits;
  }
  if (digits == 0) {
    fail_expected(kDurationExpected);
  }
  const std::string_view unit = text.substr(digits);
  std::int64_t factor = 0;
  if (unit.empty() || unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else {
    fail_expected(kDurationExpected);
  }
  std::int64_t number = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, number);
  if (ec != std::errc{} || number > std::numeric_limits<std::int64_t>::max() / factor) {
    fail_expected("expected a duration that fits in 64-bit milliseconds");
  }
  (void)ptr;
  return std::chrono::milliseconds(number * factor);
}

std::vector<std::string> list_from_text(std::string_view text) {
  std::vector<std::string> items;
  while (true) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (!item.empty()) {
      items.emplace_back(item);
    }
    if (comma == std::string_view::npos) {
      break;
    }
    text.remove_prefix(comma + 1);
  }
  return items;
}

template <class T>
T value_from_text(std::string_view text) {
  if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::optional<std::string>>) {
    return std::string(text);
  } else if constexpr (std::is_same_v<T, bool>) {
    return bool_from_text(text);
  } else if constexpr (std::is_integral_v<T>) {
    return integer_from_text<T>(text);
  } else if constexpr (std::is_same_v<T, double>) {
    return double_from_text(text);
  } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
    return duration_from_text(text);
  } else {
    static_assert(std::is_same_v<T, std::vector<std::string>>);
    return list_from_text(text);
  }
}

// ---- typed conversion from TOML ---------------------------------------------------------------

std::string string_from_toml(const toml::node& node) {
  if (const auto* s = node.as_string()) {
    return s->get();
  }
  fail_expected("expected a string");
}

template <class T>
T value_from_toml(const toml::node& node) {
  if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::optional<std::string>>) {
    return string_from_toml(node);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (const auto* b = node.as_boolean()) {
      return b->get();
    }
    fail_expected("expected a boolean (true or false)");
  } else if constexpr (std::is_integral_v<T>) {
    if (const auto* i = node.as_integer()) {
      return checked_integer<T>(i->get());
    }
    fail_expected("expected an integer");
  } else if constexpr (std::is_same_v<T, double>) {
    if (const auto* i = node.as_integer()) {
      return static_cast<double>(i->get());
    }
    if (const auto* f = node.as_floating_point(); f != nullptr && std::isfinite(f->get())) {
      return f->get();
    }
    fail_expected("expected a number");
  } else if constexpr (std::is_same_v<T, std::chrono::milliseconds>) {
    if (const auto* i = node.as_integer(); i != nullptr && i->get() >= 0) {
      return std::chrono::milliseconds(i->get());
    }
    if (const auto* s = node.as_string()) {
      return duration_from_text(s->get());
    }
    fail_expected(kDurationExpected);
  } else {
    static_assert(std::is_same_v<T, std::vector<std::string>>);
    const auto* array = node.as_array();
    if (array == nullptr) {
      fail_expected("expected an array of strings");
    }
    std::vector<std::string> items;
    items.reserve(array->size());
    for (const auto& element : *array) {
      const auto* s = element.as_string();
      if (s == nullptr) {
        fail_expected("expected an array of strings");
      }
      items.push_back(s->get());
    }
    return items;
  }
}

/// A TOML value as shown in messages (strings quoted, other values in TOML syntax).
std::string render_toml(const toml::node& node) {
  if (const auto* s = node.as_string()) {
    return quoted(s->get());
  }
  std::ostringstream os;
  node.visit([&os](const auto& n) { os << n; });
  std::string text = os.str();
  if (text.size() > kMaxShownValue) {
    text.resize(kMaxShownValue);
    text += "...";
  }
  return text;
}

// ---- rendering of current values ---------------------------------------------------------------

std::string format_duration(std::chrono::milliseconds d) {
  const std::int64_t ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) {
    return fmt::format("{}h", ms / 3'600'000);
  }
  if (ms != 0 && ms % 60'000 == 0) {
    return fmt::format("{}m", ms / 60'000);
  }
  if (ms != 0 && ms % 1000 == 0) {
    return fmt::format("{}s", ms / 1000);
  }
  return fmt::format("{}ms", ms);
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i != 0) {
      out += separator;
    }
    out += items[i];
  }
  return out;
}

bool valid_key(std::string_view key) noexcept {
  if (key.empty() || key.front() == '.' || key.back() == '.') {
    return false;
  }
  char previous = '\0';
  for (const char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '-' || c == '.';
    if (!ok || (c == '.' && previous == '.')) {
      return false;
    }
    previous = c;
  }
  return true;
}

/// Keys that derive the same flag or environment variable are the same setting.
std::string normalized_key(std::string_view key) {
  std::string out(key);
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == '.' || c == '-'; }, '_');
  return out;
}

struct FileValue {
  const toml::node* node = nullptr;
  std::string key;
};

std::string toml_position(const toml::node& node) {
  const auto& begin = node.source().begin;
  return fmt::format("line {}, column {}", begin.line, begin.column);
}

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

}  // namespace

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

// ---- ConfigLoader
// ----------------------------------------------------------------------------------

ConfigLoader::ConfigLoader(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

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
  return env_prefix_ + name;
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
  if (normalized == "help" || normalized == "config") {
    throw std::invalid_argument("setting key \"" + spec.key + "\" is reserved");
  }
  for (const auto& other : settings_) {
    if (normalized_key(other.spec.key) == normalized) {
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
      "environment variable, the TOML file named by --config (or {0}CONFIG), its default.\n"
      "An empty environment variable counts as unset. Durations take ms, s, m or h (a plain\n"
      "integer is milliseconds); lists are comma-separated (TOML: arrays of strings).\n\n"
      "Options:\n"
      "  -h, --help\n"
      "      Print this help and exit.\n"
      "  --config FILE\n"
      "      TOML configuration file. Unknown keys in it are errors.\n"
      "      env: {0}CONFIG\n",
      env_prefix_);
  for (const auto& setting : settings_) {
    const std::string_view type = type_name_of(setting.target);
    const bool bool_flag = type == "[=BOOL]";
    out += fmt::format("  --{}{}{}\n", setting.flag, bool_flag ? "" : " ", type);
    std::string help = setting.spec.help;
    if (setting.spec.secret) {
      help += help.empty() ? "(secret)" : " (secret)";
    }
    if (!help.empty()) {
      out += fmt::format("      {}\n", help);
    }
    out += fmt::format("      env: {} | file: {} | default: {}\n", env_var_for(setting.spec.key),
                       setting.spec.key, setting.default_text);
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

LoadResult ConfigLoader::load(int argc, const char* const* argv, const EnvLookup& env) {
  LoadResult result;

  // ---- 1. command line -----------------------------------------------------------------------
  std::map<std::string, std::size_t, std::less<>> by_flag;
  std::vector<std::string> flag_names{"help", "config"};
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    by_flag.emplace(settings_[i].flag, i);
    flag_names.push_back(settings_[i].flag);
  }
  std::vector<std::optional<std::string>> from_flags(settings_.size());
  std::optional<std::string> config_flag;
  std::optional<std::string> first_error;
  bool help = false;
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
    const auto setting_it = by_flag.find(name);
    if (name != "config" && setting_it == by_flag.end()) {
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
    } else {
      from_flags[setting_it->second] = std::move(value);
    }
  }
  if (help) {
    result.help_requested = true;
    result.help_text = help_text();
    result.positional.clear();
    return result;
  }
  if (first_error) {
    throw ConfigError(*first_error);
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
    from_env[i] = lookup(env_var_for(settings_[i].spec.key));
  }

  // ---- 3. file ----------------------------------------------------------------------------------
  toml::table file_table;  // owns the nodes referenced below
  std::map<std::string, const toml::node*> from_file;
  result.config_file = config_flag ? config_flag : lookup(env_prefix_ + "CONFIG");
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

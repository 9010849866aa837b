/// @file
/// The value layer of the configuration loader: parsing of text and TOML values (durations,
/// booleans, numbers, lists), how values are shown in messages, setting keys. Declared in
/// config_values.hpp with the templates that dispatch on a setting's type.

#include "config_values.hpp"

#include <trading_shared/core/logging.hpp>

#include <algorithm>
#include <charconv>
#include <sstream>

namespace trading_shared::core::config_detail {

[[noreturn]] void fail_expected(std::string_view what) {
  throw std::invalid_argument(std::string(what));
}

namespace {
bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
}  // namespace

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

namespace {
std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}
}  // namespace

/// A value as shown in messages: quoted and escaped, shortened when long.
std::string quoted(std::string_view value) {
  std::string escaped = json_escape(value);
  if (escaped.size() > kMaxShownValue) {
    escaped.resize(kMaxShownValue);
    escaped += "...";
  }
  return "\"" + escaped + "\"";
}

namespace {
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
}  // namespace

std::string display(std::string_view value) {
  return needs_quotes(value) ? "\"" + json_escape(value) + "\"" : std::string(value);
}

namespace {
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
}  // namespace

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

bool all_digits(std::string_view s) noexcept {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
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

std::string string_from_toml(const toml::node& node) {
  if (const auto* s = node.as_string()) {
    return s->get();
  }
  fail_expected("expected a string");
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

std::string toml_position(const toml::node& node) {
  const auto& begin = node.source().begin;
  return fmt::format("line {}, column {}", begin.line, begin.column);
}

}  // namespace trading_shared::core::config_detail

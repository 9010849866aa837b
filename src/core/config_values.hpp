#pragma once
// The value layer of the configuration loader (private to src/core): typed parsing of text
// (command line, environment) and of TOML values, durations, lists, booleans and integers
// checked against their type's range, how values are shown in messages and summaries, and
// setting keys. Used by config.cpp (the table of settings, help) and config_sources.cpp (the
// command line, environment and file sources).

#include <fmt/format.h>
#include <toml++/toml.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace trading_shared::core::config_detail {

inline constexpr std::string_view kDurationExpected =
    "expected a duration such as 250ms, 2s, 1m or 1h (a plain integer is milliseconds)";
inline constexpr std::string_view kBoolExpected =
    "expected a boolean (true/false, yes/no, on/off, 1/0)";
inline constexpr std::string_view kSecretShown = "***";
inline constexpr std::string_view kHiddenValue = "(secret, not shown)";
inline constexpr std::size_t kMaxShownValue = 80;

/// Throws std::invalid_argument(what): the loader adds the setting and source to it.
[[noreturn]] void fail_expected(std::string_view what);

// ---- text ---------------------------------------------------------------------------------------

bool is_digit(char c) noexcept;
std::string_view trim(std::string_view s) noexcept;
/// A value as shown in messages: quoted and escaped, shortened when long.
std::string quoted(std::string_view value);
/// A value as shown in summaries: quoted only when it would not be one `key=value` token.
std::string display(std::string_view value);
/// The closest candidate within a distance that still looks like a typo, if any.
std::optional<std::string> closest(std::string_view wrong,
                                   const std::vector<std::string>& candidates);

// ---- typed parsing from text (command line, environment) -------------------------------------

bool all_digits(std::string_view s) noexcept;
double double_from_text(std::string_view text);
bool bool_from_text(std::string_view text);
std::chrono::milliseconds duration_from_text(std::string_view text);
std::vector<std::string> list_from_text(std::string_view text);

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

std::string string_from_toml(const toml::node& node);

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
std::string render_toml(const toml::node& node);
/// "line L, column C" of a node of the file.
std::string toml_position(const toml::node& node);

// ---- rendering of current values, keys ---------------------------------------------------------

std::string format_duration(std::chrono::milliseconds d);
std::string join(const std::vector<std::string>& items, std::string_view separator);
bool valid_key(std::string_view key) noexcept;
/// Keys that derive the same flag or environment variable are the same setting.
std::string normalized_key(std::string_view key);

}  // namespace trading_shared::core::config_detail

#pragma once
/// @file
/// Checks of the text fields the services pass between each other (untrusted input: the feed,
/// stream entries, order requests).

#include <cstdint>
#include <string_view>

namespace trading_shared::services {

/// True for an exchange symbol: upper-case letters and digits only (it becomes part of Redis
/// key names).
bool is_symbol(std::string_view text) noexcept;

/// True for a plain non-negative decimal: digits with at most one '.', at least one digit
/// (no sign, no exponent): prices and quantities are passed on exactly as received.
bool is_decimal(std::string_view text) noexcept;

/// The times the services accept, in milliseconds since the Unix epoch: from 2000-01-01 up to
/// (not including) 2100-01-01. A time outside is not a time in milliseconds (a venue sending
/// nanoseconds or microseconds, or garbage) and makes its message malformed: it would fail a
/// whole batch's insert (22008, past PostgreSQL's range) or create a partition for the year
/// 55 000 (F44).
inline constexpr std::int64_t kMinTimeMs = 946'684'800'000;    // 2000-01-01T00:00:00Z
inline constexpr std::int64_t kMaxTimeMs = 4'102'444'800'000;  // 2100-01-01T00:00:00Z

/// True for a time in milliseconds within [kMinTimeMs, kMaxTimeMs).
constexpr bool is_plausible_millis(std::int64_t ms) noexcept {
  return ms >= kMinTimeMs && ms < kMaxTimeMs;
}
/// True for a time in microseconds within the same range.
constexpr bool is_plausible_micros(std::int64_t us) noexcept {
  return us >= kMinTimeMs * 1000 && us < kMaxTimeMs * 1000;
}

}  // namespace trading_shared::services

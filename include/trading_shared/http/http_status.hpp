#pragma once
/// @file
/// What the HTTP client knows of HTTP statuses (docs/http.md): the status -> `ErrorKind`
/// classification of an answer that `throw_for_status()` turns into an `Error`.

#include <trading_shared/core/error.hpp>

namespace trading_shared::http {

/// Classifies an HTTP status of an answer: 2xx/3xx `permanent` (not an error to retry: the
/// caller's business), 408 `transient_unavailable`, 429 and 418 (throttled / banned: wait for
/// Retry-After) `transient_unavailable`, any other 4xx `permanent`, 5xx `transient_unavailable`.
ErrorKind classify_http_status(unsigned status) noexcept;

/// 429 (too many requests) and 418 (Binance's "banned after ignoring 429"): the server throttles;
/// its Retry-After says how long to wait before sending again.
constexpr bool is_throttle_status(unsigned status) noexcept {
  return status == 429 || status == 418;
}

/// The HTTP status of an error (an `Error` of a `ServerKind::http` server error), or 0.
unsigned http_status(const Error& error) noexcept;

}  // namespace trading_shared::http

#pragma once
/// @file
/// Retrying a sink's write inside a stream handler until it succeeds or the service stops
/// (ts-recorder, ts-executor; docs/services.md).
///
/// Why inside the handler and not through StreamConsumer's redelivery: every failed handler
/// call adds a delivery, and after `max_deliveries` the entries go to the dead-letter stream.
/// A PostgreSQL restart must not burn deliveries, so transient failures (connection lost,
/// server down, timeout, breaker open: `transient_*` and, for idempotent writes,
/// `outcome_unknown`) are waited out here with capped exponential backoff; only permanent
/// failures (and a stop) leave the handler with an exception.
///
/// Used by ts-recorder, ts-executor and tsctl load-orders. Known overlap: the classification
/// in `is_retryable` and the backoff loop repeat part of `core::retry` (core/retry.hpp), which
/// has no "until stopped" mode; ts-receiver has its own loop (it retries permanent errors too).

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/logger.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace trading_shared::services {

/// The "stop requested" state of a service, shared by its handlers. `stop()` (from
/// `ServiceContext::on_stop`) wakes every `sleep` at once. Single-threaded, like the loop.
class StopFlag {
 public:
  bool stopped() const noexcept { return stopped_; }
  void stop() {
    stopped_ = true;
    for (auto* timer : sleepers_) timer->cancel();
  }
  /// Waits `delay`, or less when a stop comes; returns false when stopped. Cancellation of
  /// the caller propagates (as an exception).
  boost::asio::awaitable<bool> sleep(std::chrono::milliseconds delay) {
    if (stopped_) co_return false;
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, delay);
    sleepers_.push_back(&timer);
    std::exception_ptr failure;
    try {
      co_await timer.async_wait(boost::asio::use_awaitable);
    } catch (...) {
      failure = std::current_exception();
    }
    sleepers_.erase(std::find(sleepers_.begin(), sleepers_.end(), &timer));
    // The timer cancelled by stop() ends with operation_aborted: that is a stop, not an
    // error. Anything else (the caller's cancellation) goes on up.
    if (failure && !stopped_) std::rethrow_exception(failure);
    co_return !stopped_;
  }

 private:
  bool stopped_ = false;
  std::vector<boost::asio::steady_timer*> sleepers_;
};

/// What a retry loop needs: the stop flag, the delays, where to count and log.
struct TransientRetry {
  StopFlag* stop = nullptr;
  core::BackoffConfig backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(5000), 2.0};
  core::RandomSource* random = nullptr;
  std::uint64_t* retries = nullptr;  ///< incremented once per retry.
  std::shared_ptr<spdlog::logger> log;
};

/// Whether `kind` is worth waiting out (for an idempotent write: outcome_unknown too).
constexpr bool is_retryable(ErrorKind kind, core::Idempotent idempotent) noexcept {
  return kind == ErrorKind::transient_not_sent || kind == ErrorKind::transient_conflict ||
         kind == ErrorKind::transient_unavailable ||
         (kind == ErrorKind::outcome_unknown && idempotent == core::Idempotent::yes);
}

/// Runs `make()` (returning `awaitable<T>`) until it succeeds. Rethrows, unchanged: a
/// cancellation, a non-retryable error, and a retryable one once a stop was requested. The
/// first failure of a series is logged as a warning, later ones at debug level, the recovery
/// at info level; every retry is counted.
template <class Make>
auto retry_transient(const TransientRetry& policy, core::Idempotent idempotent, std::string what,
                     Make make) -> std::invoke_result_t<Make&> {
  using T = typename std::invoke_result_t<Make&>::value_type;
  core::Backoff backoff(policy.backoff, *policy.random);
  for (;;) {
    std::exception_ptr failure;
    std::optional<std::chrono::milliseconds> retry_after;
    std::string reason;
    try {
      if constexpr (std::is_void_v<T>) {
        co_await make();
        if (backoff.attempts() > 0) {
          policy.log->info("{}: succeeded after {} retries", what, backoff.attempts());
        }
        co_return;
      } else {
        T value = co_await make();
        if (backoff.attempts() > 0) {
          policy.log->info("{}: succeeded after {} retries", what, backoff.attempts());
        }
        co_return value;
      }
    } catch (const Error& e) {
      failure = std::current_exception();
      retry_after = e.retry_after();  // an open breaker says when it admits a probe
      reason = e.what();
    } catch (const std::exception& e) {
      failure = std::current_exception();
      reason = e.what();
    }
    const ErrorKind kind = classify(failure);
    if (!is_retryable(kind, idempotent)) std::rethrow_exception(failure);
    if (policy.stop->stopped()) {
      policy.log->warn("{}: failed ({}: {}) while stopping: not retried", what, to_string(kind),
                       reason);
      std::rethrow_exception(failure);
    }
    std::chrono::milliseconds delay = backoff.next();
    if (retry_after) delay = std::max(delay, std::min(*retry_after, policy.backoff.cap));
    ++*policy.retries;
    if (backoff.attempts() == 1) {
      policy.log->warn(
          "{}: {} failure ({}); retrying with backoff until it succeeds or the "
          "service stops",
          what, to_string(kind), reason);
    } else {
      policy.log->debug("{}: retry {} failed ({}: {}); next in {} ms", what, backoff.attempts() - 1,
                        to_string(kind), reason, delay.count());
    }
    const bool go_on = co_await policy.stop->sleep(delay);
    if (!go_on) {
      policy.log->warn("{}: stopping during the backoff: giving up ({})", what, reason);
      std::rethrow_exception(failure);
    }
  }
}

}  // namespace trading_shared::services

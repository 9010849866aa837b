#pragma once
/// @file
/// The connect/reconnect loop the clients share: connect with capped, jittered backoff until
/// connected, stopped, out of time (start-up) or a permanent error (docs/core.md).

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/this_coro.hpp>

#include <spdlog/logger.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace trading_shared::core {

/// How `reconnect` tries. The delays come from the caller's `Backoff` (its `BackoffConfig`:
/// the clients' `reconnect_backoff`), kept by the caller across calls so that it can
/// `reset()` it only after a connection that lasted.
struct ReconnectPolicy {
  /// Give up after this long (a start-up: `startup_timeout`); zero = until stopped. The last
  /// wait is cut to the time left, and one more attempt is made at the deadline.
  std::chrono::milliseconds deadline{0};
  /// Passed to each attempt as its budget (`connect_timeout`), cut to the time left before
  /// the deadline (at least 1 ms); zero = none.
  std::chrono::milliseconds attempt_timeout{0};
  /// Wait one backoff delay before the first attempt (the reconnect of a running client:
  /// never in lockstep with the other clients, F21).
  bool pause_first = false;
  /// A permanent error (wrong password, unknown database) ends the loop and is rethrown (a
  /// start-up). When false (a running client), it is reported to `on_failure` and waited out:
  /// the server may be fixed.
  bool permanent_ends = true;
};

/// Log context and counting of one loop.
struct ReconnectObserver {
  /// Log context: "Redis host:6379: start-up" logs "Redis host:6379: start-up attempt 2 failed
  /// (...); retrying in 180 ms".
  std::string_view what = "connect";
  /// null: `logger("reconnect")`.
  std::shared_ptr<spdlog::logger> log{};
  /// Incremented once per failed attempt (the clients' `connect_failures`), optional.
  std::uint64_t* failures = nullptr;
  /// Log the first failure of the loop and every `log_every`-th (1 = each).
  std::uint32_t log_every = 1;
  /// Called after each failed attempt (not for a cancellation, not once stopped), e.g. to
  /// fail the queued requests on a permanent error. Optional.
  std::function<void(const std::exception_ptr&, ErrorKind)> on_failure{};
};

enum class ReconnectEnd : std::uint8_t {
  connected,  ///< an attempt succeeded.
  stopped,    ///< `stopped()` became true (close()).
  deadline,   ///< `ReconnectPolicy::deadline` passed: the caller reports its timeout error.
};

struct ReconnectResult {
  ReconnectEnd end = ReconnectEnd::connected;
  std::uint32_t attempts = 0;     ///< attempts made.
  std::exception_ptr last_error;  ///< of the last failed attempt (null when none failed).
  std::string last_cause;         ///< its text, for the caller's timeout error.
};

namespace detail {
void record_connect_failure(const ReconnectObserver& observer, std::uint32_t attempt,
                            std::string_view cause, std::chrono::milliseconds delay);
std::shared_ptr<spdlog::logger> reconnect_logger();
}  // namespace detail

/// Runs `connect(budget)` (returning `awaitable<void>`; `budget` is a
/// `std::chrono::milliseconds`, zero = unbounded) until it succeeds, `stopped()` is true, the
/// deadline passes or a permanent error ends it (rethrown unchanged, see
/// `ReconnectPolicy::permanent_ends`). Between attempts it waits `backoff.next()` on `wake`,
/// the event the owner notifies when `stopped()` may have become true (its
/// `RunState::changed()`), so that a close() ends the wait at once. Each failure is counted
/// and logged once with its context and the delay (see `ReconnectObserver`).
///
/// @code
///   core::Backoff backoff(config_.reconnect_backoff, random_);
///   const core::ReconnectPolicy policy{.deadline = config_.startup_timeout,
///                                      .attempt_timeout = config_.connect_timeout};
///   const core::ReconnectObserver observer{.what = what, .log = log(),
///                                          .failures = &stats_.connect_failures};
///   const auto r = co_await core::reconnect(
///       [&](std::chrono::milliseconds budget) { return connect_once(budget); }, backoff,
///       policy, observer, [&] { return !state_.is(core::RunPhase::starting); },
///       state_.changed());
///   if (r.end == core::ReconnectEnd::deadline) throw Error(errc::startup_timeout, ...);
/// @endcode
///
/// The policy and the observer are named locals on purpose: GCC 12 destroys brace-initialised
/// temporaries of a `co_await` expression twice (the PostgreSQL client's start-up crashed so).
/// Likewise never write `cond && co_await ...`: GCC 12 evaluates the awaited operand even when
/// `cond` is false; put the `co_await` in a statement of its own.
///
/// An attempt that fails once `stopped()` holds (close() cut it short) ends the loop with
/// `ReconnectEnd::stopped`; it is neither counted nor reported to `on_failure`.
///
/// @par Per-operation cancellation
/// terminal: the attempt or the wait is cancelled and its error (cancelled /
/// `operation_aborted`) rethrown; nothing is retried.
template <class Connect, class Stopped>
boost::asio::awaitable<ReconnectResult> reconnect(Connect connect, Backoff& backoff,
                                                  ReconnectPolicy policy,
                                                  ReconnectObserver observer, Stopped stopped,
                                                  AsyncEvent& wake) {
  using steady = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  const bool has_deadline = policy.deadline > milliseconds::zero();
  const auto deadline = steady::now() + policy.deadline;
  auto left = [&] {
    return std::max(std::chrono::ceil<milliseconds>(deadline - steady::now()),
                    milliseconds::zero());
  };
  ReconnectResult result;
  milliseconds pause = policy.pause_first ? backoff.next() : milliseconds::zero();
  for (;;) {
    if (pause > milliseconds::zero()) {
      const auto until = steady::now() + pause;
      while (!stopped() && steady::now() < until) (void)co_await wake.wait_until(until);
    }
    if (stopped()) {
      result.end = ReconnectEnd::stopped;
      co_return result;
    }
    milliseconds budget = policy.attempt_timeout;
    if (has_deadline) {
      const auto time_left = left();
      budget = budget > milliseconds::zero() ? std::min(budget, time_left) : time_left;
      budget = std::max(budget, milliseconds(1));
    }
    ++result.attempts;
    std::exception_ptr failure;
    try {
      co_await connect(budget);
      result.end = ReconnectEnd::connected;
      co_return result;
    } catch (...) {
      failure = std::current_exception();
    }
    const ErrorKind kind = classify(failure);
    // The loop's own cancellation ends it (rethrown). A cancelled-class error of the attempt
    // alone (an operation_aborted, a client_closed from below) is not one: it is the owner's
    // close cutting the attempt short when `stopped()` holds, an ordinary failure otherwise.
    const auto cancellation = co_await boost::asio::this_coro::cancellation_state;
    if (kind == ErrorKind::cancelled &&
        cancellation.cancelled() != boost::asio::cancellation_type::none) {
      std::rethrow_exception(failure);
    }
    result.last_error = failure;
    result.last_cause = detail::describe(failure);
    if (stopped()) {  // the close's doing: neither counted nor reported
      result.end = ReconnectEnd::stopped;
      co_return result;
    }
    if (observer.failures != nullptr) ++*observer.failures;
    if (observer.on_failure) observer.on_failure(failure, kind);
    if (kind == ErrorKind::permanent && policy.permanent_ends) std::rethrow_exception(failure);
    if (has_deadline && left() <= milliseconds::zero()) {
      result.end = ReconnectEnd::deadline;
      co_return result;
    }
    pause = backoff.next();
    if (has_deadline) pause = std::min(pause, left());
    detail::record_connect_failure(observer, result.attempts, result.last_cause, pause);
  }
}

}  // namespace trading_shared::core

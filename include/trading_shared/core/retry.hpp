#pragma once
/// @file
/// Retry policy and the one retry helper of the library (docs/core.md), in two modes:
///
/// - bounded, `retry()`: the clients' resilient entry points (attempts, total deadline);
/// - until stopped, `retry_until_stopped()`: a service's work that must not be dropped
///   (a sink's write in a stream handler), retried with backoff until it succeeds, a stop
///   comes or the error is one that retrying cannot fix.
///
/// Both decide through one pure function (`decide_retry`) of the error kind, the caller's
/// stated idempotency, the attempts made and the time left, so that every row is unit-tested.
/// Reconnect loops use `core::reconnect` (core/reconnect.hpp), on the same backoff.

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/core/timeout.hpp>

#include <boost/asio/awaitable.hpp>
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
#include <string_view>
#include <type_traits>
#include <utility>

namespace trading_shared::core {

/// Whether running an operation twice has the same effect as running it once. Only the
/// caller knows: reads are idempotent by default, writes are not.
enum class Idempotent : bool { no = false, yes = true };

inline constexpr std::uint32_t kDefaultMaxAttempts = 3;
inline constexpr std::chrono::milliseconds kDefaultRetryDeadline{10000};

/// How an operation is retried.
struct RetryPolicy {
  /// Attempts in all, the first included (1 = never retry).
  std::uint32_t max_attempts = kDefaultMaxAttempts;
  /// Delay between attempts: capped exponential with full jitter.
  BackoffConfig backoff{std::chrono::milliseconds(50), std::chrono::milliseconds(2000), 2.0};
  /// Total time for all attempts and delays together; zero = no total deadline.
  std::chrono::milliseconds total_deadline = kDefaultRetryDeadline;
  /// When true (the default), each attempt gets at most its share of the time left
  /// (time left / attempts left), so that one hung attempt cannot use up the whole
  /// deadline and leave no room to retry. When false, an attempt may use all the time left.
  bool split_deadline = true;
  /// The shortest budget an attempt gets, whatever its share of the time left (zero = no
  /// floor). An operation that legitimately takes up to this long (a statement within its
  /// timeout) is then never cut short by the retry layer: the clients set it to their own
  /// deadline of one request (PostgresClient: statement timeout + network margin), F48. The
  /// total deadline still decides whether a *further* attempt is made, so the whole may
  /// overrun `total_deadline` by at most one attempt.
  std::chrono::milliseconds min_attempt_budget{0};
};

/// Why `decide_retry` said what it said.
enum class RetryReason : std::uint8_t {
  retry,               ///< retry after `delay`.
  permanent,           ///< the error can never succeed on retry.
  cancelled,           ///< the caller cancelled: never retried.
  not_idempotent,      ///< outcome unknown and the operation is not idempotent.
  attempts_exhausted,  ///< `max_attempts` reached.
  deadline_exhausted,  ///< the next delay would pass the total deadline.
};
std::string_view to_string(RetryReason reason) noexcept;

struct RetryDecision {
  bool retry = false;
  std::chrono::milliseconds delay{0};
  RetryReason reason = RetryReason::permanent;
};

/// Pure retry decision after a failed attempt.
/// @param attempts_made attempts so far, the failed one included (>= 1).
/// @param remaining time left before the total deadline (ignored when the policy has none).
/// @param jittered_delay the backoff delay proposed for this retry.
RetryDecision decide_retry(ErrorKind kind, Idempotent idempotent, std::uint32_t attempts_made,
                           const RetryPolicy& policy, std::chrono::milliseconds remaining,
                           std::chrono::milliseconds jittered_delay) noexcept;

/// What one attempt gets to know.
struct AttemptContext {
  std::uint32_t attempt = 1;  ///< 1-based.
  /// This attempt's time budget (its share of the total deadline); zero = unbounded.
  std::chrono::milliseconds budget{0};
};

/// Counters and names for one retried operation (log and metric labels).
struct RetryObserver {
  std::string_view operation = "operation";  ///< e.g. "pg.execute_resiliently"
  MetricsRegistry* metrics = &MetricsRegistry::global();
};

namespace detail {
void record_retry(const RetryObserver& observer, std::uint32_t attempt, ErrorKind kind,
                  std::chrono::milliseconds delay, std::string_view what);
void record_give_up(const RetryObserver& observer, std::uint32_t attempt, ErrorKind kind,
                    RetryReason reason, std::string_view what);
/// An error's text for a log line or a cause: `what()`, but a Boost system error without its
/// source location ("Connection refused", not "Connection refused [system:111 at ...]").
std::string describe(const std::exception& error);
std::string describe(const std::exception_ptr& error);
}  // namespace detail

/// Runs `fn(AttemptContext)` (returning `awaitable<T>`) until it succeeds or `decide_retry`
/// says stop; then rethrows the last error unchanged. Each attempt runs under its budget
/// (`with_timeout`, `errc::request_timeout`, counted as `outcome_unknown`). Every retry and
/// every give-up is logged once with its reason and counted.
///
/// @par Per-operation cancellation
/// terminal: the running attempt or the backoff wait is cancelled; nothing is retried.
template <class F>
auto retry(F fn, Idempotent idempotent, RetryPolicy policy, RandomSource& random,
           RetryObserver observer = {}, const Clock& clock = SteadyClock::instance())
    -> std::invoke_result_t<F, const AttemptContext&> {
  using Awaitable = std::invoke_result_t<F, const AttemptContext&>;
  using T = typename Awaitable::value_type;
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;

  const auto start = clock.now();
  const bool has_deadline = policy.total_deadline > milliseconds::zero();
  const std::uint32_t max_attempts = std::max<std::uint32_t>(policy.max_attempts, 1);
  auto remaining = [&] {
    if (!has_deadline) return milliseconds::max();
    const auto left = policy.total_deadline - duration_cast<milliseconds>(clock.now() - start);
    return std::max(left, milliseconds::zero());
  };

  for (std::uint32_t attempt = 1;; ++attempt) {
    AttemptContext context{attempt, milliseconds::zero()};
    if (has_deadline) {
      const auto left = remaining();
      context.budget = std::max(
          {policy.split_deadline ? left / static_cast<int>(max_attempts - attempt + 1) : left,
           policy.min_attempt_budget, milliseconds(1)});
    }
    std::exception_ptr failure;
    try {
      if constexpr (std::is_void_v<T>) {
        co_await with_timeout(fn(std::as_const(context)), context.budget, errc::request_timeout,
                              std::string(observer.operation));
        co_return;
      } else {
        co_return co_await with_timeout(fn(std::as_const(context)), context.budget,
                                        errc::request_timeout, std::string(observer.operation));
      }
    } catch (...) {
      failure = std::current_exception();
    }
    const ErrorKind kind = classify(failure);
    const auto proposed = backoff_delay(policy.backoff, attempt - 1, random);
    const auto decision = decide_retry(kind, idempotent, attempt, policy, remaining(), proposed);
    if (!decision.retry) {
      if (kind != ErrorKind::cancelled) {
        detail::record_give_up(observer, attempt, kind, decision.reason, detail::describe(failure));
      }
      std::rethrow_exception(failure);
    }
    detail::record_retry(observer, attempt, kind, decision.delay, detail::describe(failure));
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, decision.delay);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

// ---- until stopped ---------------------------------------------------------------------

/// How `retry_until_stopped` retries: no attempt limit, no total deadline.
struct UntilStopped {
  /// A stop ends the retrying (the last error is rethrown). Null: only the caller's
  /// cancellation ends it.
  StopSignal* stop = nullptr;
  BackoffConfig backoff{std::chrono::milliseconds(100), std::chrono::milliseconds(5000), 2.0};
  /// Required: the jitter of the backoff.
  RandomSource* random = nullptr;
  /// Incremented once per retry (optional).
  std::uint64_t* retries = nullptr;
  /// Where the failures are logged; null: `logger("retry")`.
  std::shared_ptr<spdlog::logger> log{};
  /// Retries logged as warnings (errors when permanent): the first `warn_first` of a series
  /// and every 100th; the others at debug level.
  std::uint32_t warn_first = 1;
  /// Retry permanent errors too (a service that must keep what it received until an operator
  /// fixes the server). A cancellation is never retried.
  bool retry_permanent = false;
  /// Number the retries by the total in `*retries` (a counter shared by many calls: every page
  /// of a backfill) rather than within each call: "retry #n" and the `warn_first` / every-100th
  /// cadence then run over the total, and a recovery is logged at debug level only.
  bool number_by_total = false;
};

namespace detail {
/// The until-stopped decision: `decide_retry` without attempt limit or deadline.
bool retry_until_stopped_decision(ErrorKind kind, Idempotent idempotent,
                                  bool retry_permanent) noexcept;
/// One line per retry: "<what> failed (retry #n in d ms; kind): reason; retrying with backoff
/// until it succeeds or the service stops" (see `UntilStopped::warn_first` for its level).
void record_until_stopped_retry(const UntilStopped& policy, std::string_view what,
                                std::uint64_t retry, ErrorKind kind, std::string_view reason,
                                std::chrono::milliseconds delay);
void record_until_stopped_recovery(const UntilStopped& policy, std::string_view what,
                                   std::uint32_t retries);
void record_until_stopped_stop(const UntilStopped& policy, std::string_view what, ErrorKind kind,
                               std::string_view reason, bool during_backoff);
std::optional<std::chrono::milliseconds> retry_after(const std::exception_ptr& error) noexcept;
}  // namespace detail

/// Until-stopped mode: runs `make()` (returning `awaitable<T>`) until it succeeds. Rethrows,
/// unchanged: a cancellation, an error `decide_retry` does not retry (permanent,
/// outcome_unknown of a non-idempotent operation; see `UntilStopped::retry_permanent`), and any
/// error once a stop was requested (before or during the backoff). An `Error` with a
/// `retry_after()` (an open circuit breaker) waits at least that long (up to the backoff cap).
/// Each retry is logged (the first `warn_first` of a series and every 100th as warnings, the
/// others at debug level), the recovery at info level; every retry is counted.
///
/// @code
///   core::UntilStopped policy{&stop, backoff, &random, &counters.retries, log()};
///   co_await core::retry_until_stopped([&] { return pg.execute(sql); }, core::Idempotent::yes,
///                                      policy, "insert batch");
/// @endcode
///
/// @par Per-operation cancellation
/// terminal: the running attempt or the backoff wait is cancelled; nothing is retried.
template <class Make>
auto retry_until_stopped(Make make, Idempotent idempotent, const UntilStopped& policy,
                         std::string what) -> std::invoke_result_t<Make&> {
  using T = typename std::invoke_result_t<Make&>::value_type;
  Backoff backoff(policy.backoff, *policy.random);
  for (;;) {
    std::exception_ptr failure;
    try {
      if constexpr (std::is_void_v<T>) {
        co_await make();
        if (backoff.attempts() > 0) {
          detail::record_until_stopped_recovery(policy, what, backoff.attempts());
        }
        co_return;
      } else {
        T value = co_await make();
        if (backoff.attempts() > 0) {
          detail::record_until_stopped_recovery(policy, what, backoff.attempts());
        }
        co_return value;
      }
    } catch (...) {
      failure = std::current_exception();
    }
    const ErrorKind kind = classify(failure);
    if (!detail::retry_until_stopped_decision(kind, idempotent, policy.retry_permanent)) {
      std::rethrow_exception(failure);
    }
    const std::string reason = detail::describe(failure);
    if (policy.stop != nullptr && policy.stop->stop_requested()) {
      detail::record_until_stopped_stop(policy, what, kind, reason, false);
      std::rethrow_exception(failure);
    }
    std::chrono::milliseconds delay = backoff.next();
    // An open breaker says when it admits a probe.
    if (const auto after = detail::retry_after(failure)) {
      delay = std::max(delay, std::min(*after, policy.backoff.cap));
    }
    if (policy.retries != nullptr) ++*policy.retries;
    const std::uint64_t number =
        policy.number_by_total && policy.retries != nullptr ? *policy.retries : backoff.attempts();
    detail::record_until_stopped_retry(policy, what, number, kind, reason, delay);
    bool go_on = true;
    if (policy.stop != nullptr) {
      go_on = co_await policy.stop->sleep_for(delay);
    } else {
      boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, delay);
      co_await timer.async_wait(boost::asio::use_awaitable);
    }
    if (!go_on) {
      detail::record_until_stopped_stop(policy, what, kind, reason, true);
      std::rethrow_exception(failure);
    }
  }
}

}  // namespace trading_shared::core

#pragma once
/// @file
/// Per-endpoint circuit breaker (docs/core.md; docs/failure-modes.md F31-F34).
///
/// A breaker stops a client from hammering an endpoint that is failing: after enough recent
/// calls failed it rejects calls immediately (`circuit_open`, with a retry-after) for an open
/// period, then lets a few probe calls through to find out whether the endpoint recovered.
///
/// @par States
/// @code
///   closed ──(window has >= min_calls and failure rate >= threshold)──▶ open
///   open ──(open period elapsed; checked lazily by try_acquire()/state())──▶ half_open
///   half_open ──(any probe failure)──▶ open   (next open period longer, up to the cap)
///   half_open ──(half_open_probes probe successes)──▶ closed   (empty window, trips reset)
/// @endcode
///
/// @par What counts
/// Only failures of the endpoint count: `transient_*` and `outcome_unknown` (a timed-out call
/// is `outcome_unknown`, so timeouts count, F31). Business errors (`permanent`: 23505,
/// WRONGTYPE, syntax errors) and cancellation are *ignored*: they are neither successes nor
/// failures (F33, F31). See `breaker_outcome()`.
///
/// @par Generations
/// Every state transition increments the breaker's generation, and every `Permit` remembers
/// the generation that admitted it. A result reported through a permit of an older generation
/// is *stale*: it is counted in `Stats::stale` and otherwise ignored, so a late success of a
/// call admitted before a trip cannot close the breaker, and a late failure cannot re-open it
/// or eat a half-open probe slot that was already reset (F32).
///
/// @par Threading
/// Not thread-safe. Clients are single-threaded (docs/core.md): one breaker per
/// endpoint is shared by the clients that run on the same executor/thread. The breaker must
/// outlive every `Permit` it issued.

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace trading_shared::core {

/// The state of a circuit breaker.
enum class CircuitState : std::uint8_t {
  closed,     ///< calls pass; results feed the sliding window.
  open,       ///< calls are rejected with `circuit_open` until the open period has elapsed.
  half_open,  ///< at most `half_open_probes` concurrent probe calls pass; the rest are rejected.
};

/// "closed", "open" or "half_open" (for logs and metric labels).
std::string_view to_string(CircuitState state) noexcept;
/// The state as a metrics gauge shows it (`ts_redis_breaker_state`, `ts_pg_breaker_state`):
/// 0 closed, 1 half-open, 2 open.
std::int64_t gauge_value(CircuitState state) noexcept;

/// How a call's result affects the breaker.
enum class CallOutcome : std::uint8_t {
  success,  ///< the endpoint served the call.
  failure,  ///< the endpoint failed (transient or unknown outcome, including timeouts).
  ignored,  ///< says nothing about the endpoint's health (business error, cancellation).
};

/// Maps an error kind to its effect on the breaker.
///
/// `permanent` is ignored rather than counted as a success although the server did answer:
/// such answers may come from a proxy (PgBouncer) or an auth layer while the backend is still
/// down, and counting them would make the failure rate depend on the workload's mix of caller
/// bugs (a burst of WRONGTYPE would dilute a real outage). `cancelled` is ignored because a
/// shutdown or a caller giving up says nothing about the endpoint (F31). `transient_conflict`
/// (40001, 40P01, 55P03, TRYAGAIN) is ignored because contention between callers is no sign
/// of an unhealthy server (F49).
constexpr CallOutcome breaker_outcome(ErrorKind kind) noexcept {
  return counts_as_endpoint_failure(kind) ? CallOutcome::failure : CallOutcome::ignored;
}

/// Configuration of one breaker. Aggregate with documented defaults.
struct CircuitBreakerConfig {
  static constexpr std::size_t kDefaultWindowSize = 20;
  static constexpr std::size_t kDefaultMinCalls = 10;
  static constexpr double kDefaultFailureRateThreshold = 0.5;
  static constexpr std::chrono::milliseconds kDefaultOpenBase{1000};
  static constexpr std::chrono::milliseconds kDefaultOpenCap{30000};
  static constexpr double kDefaultOpenMultiplier = 2.0;
  static constexpr std::size_t kDefaultHalfOpenProbes = 1;

  /// Name of the endpoint, used in logs and in the `circuit_open` error's context
  /// (e.g. "pg:db-primary:5432"). Must not contain secrets.
  std::string name;

  /// Count-based sliding window: the last `window_size` calls recorded in the closed state
  /// (ignored results are not recorded and do not push older calls out). Default 20; >= 1.
  std::size_t window_size = kDefaultWindowSize;

  /// The breaker never opens while the window holds fewer recorded calls than this, so that
  /// two failures out of two calls right after start do not open it. Default 10;
  /// 1 <= min_calls <= window_size.
  std::size_t min_calls = kDefaultMinCalls;

  /// Opens when failures / recorded calls >= this (inclusive). Default 0.5; in (0, 1].
  double failure_rate_threshold = kDefaultFailureRateThreshold;

  /// Length of the open period. The n-th consecutive trip (n = 0 for a trip from closed;
  /// each re-open from half_open without a successful close in between adds 1) uses the
  /// ceiling c = min(cap, base * multiplier^n) and *equal jitter*: a uniformly random period
  /// in [c/2, c]. Unlike the full jitter of retries, the period never drops near zero, so a
  /// dead endpoint is not re-probed at once, while breakers of many clients that tripped
  /// together still spread their probes over half the ceiling (F34).
  /// Defaults: base 1 s, cap 30 s, multiplier 2. Requires base >= 1 ms, base <= cap <= 24 h,
  /// multiplier >= 1.
  BackoffConfig open_backoff{kDefaultOpenBase, kDefaultOpenCap, kDefaultOpenMultiplier};

  /// Maximum number of concurrent probe calls in half_open, and also the number of probe
  /// successes needed to close: one success per allowed probe means that with the default 1 a
  /// single good call closes the breaker, and a larger value asks for proportionally more
  /// evidence. Default 1; >= 1.
  std::size_t half_open_probes = kDefaultHalfOpenProbes;
};

/// Counters (monotonic since construction) and gauges of one breaker.
struct CircuitBreakerStats {
  std::uint64_t admitted = 0;         ///< permits issued (closed calls and half-open probes).
  std::uint64_t rejected = 0;         ///< calls rejected with `circuit_open`.
  std::uint64_t successes = 0;        ///< successes applied (current-generation permits only).
  std::uint64_t failures = 0;         ///< failures applied (current-generation permits only).
  std::uint64_t ignored = 0;          ///< current-generation results that were ignored (permanent,
                                      ///< cancelled, or a permit dropped without a result).
  std::uint64_t stale = 0;            ///< results of permits from an older generation (F32).
  std::uint64_t trips = 0;            ///< transitions to open (from closed or half_open).
  std::uint64_t listener_errors = 0;  ///< exceptions thrown by the transition listener (logged).
  // Gauges.
  std::size_t window_calls = 0;         ///< recorded calls in the sliding window.
  std::size_t window_failures = 0;      ///< failures among them.
  std::size_t probes_in_flight = 0;     ///< half-open probes admitted and not yet finished.
  std::uint32_t consecutive_trips = 0;  ///< trips since the last close (drives the open period).
};

class CircuitBreaker;

/// Permission to make one call, bound to a breaker and to the breaker's generation at the
/// time it was issued. Move-only RAII: report the result once with `success()`, `failure()`,
/// `record()` or `ignore()`; a permit destroyed without a result counts as ignored (the call
/// was cancelled or abandoned, F31) and releases its half-open probe slot. After a result
/// was reported (or after being moved from) the permit is empty and further reports are
/// no-ops.
class [[nodiscard]] CircuitBreakerPermit {
 public:
  /// An empty permit (bound to nothing).
  CircuitBreakerPermit() noexcept = default;
  CircuitBreakerPermit(CircuitBreakerPermit&& other) noexcept;
  /// Drops this permit's pending call (as `ignore()`), then takes over `other`'s.
  CircuitBreakerPermit& operator=(CircuitBreakerPermit&& other) noexcept;
  CircuitBreakerPermit(const CircuitBreakerPermit&) = delete;
  CircuitBreakerPermit& operator=(const CircuitBreakerPermit&) = delete;
  ~CircuitBreakerPermit();

  /// The endpoint served the call.
  void success() noexcept { report(CallOutcome::success); }
  /// The endpoint failed: use for timeouts detected by the caller and other endpoint failures.
  void failure() noexcept { report(CallOutcome::failure); }
  /// The call's result says nothing about the endpoint (explicit form of dropping the permit).
  void ignore() noexcept { report(CallOutcome::ignored); }
  /// Reports a failed call by its classification (`breaker_outcome(kind)`).
  void record(ErrorKind kind) noexcept { report(breaker_outcome(kind)); }
  /// Reports a failed call by its exception (`classify(error)`; non-library exceptions are
  /// `permanent`, hence ignored).
  void record(const std::exception_ptr& error) noexcept;
  /// Reports a failed call by its error code and whether the request had been sent
  /// (`classify(ec, state)`; e.g. `request_timeout` after sending is a failure).
  void record(std::error_code ec, RequestState state) noexcept;
  /// Reports an outcome already mapped by the caller (the other reporters end up here).
  void report(CallOutcome outcome) noexcept;

  /// Whether the permit still waits for a result.
  bool active() const noexcept { return breaker_ != nullptr; }
  explicit operator bool() const noexcept { return active(); }
  /// The breaker generation that issued this permit.
  std::uint64_t generation() const noexcept { return generation_; }

 private:
  friend class CircuitBreaker;
  CircuitBreakerPermit(CircuitBreaker& breaker, std::uint64_t generation) noexcept
      : breaker_(&breaker), generation_(generation) {}

  CircuitBreaker* breaker_ = nullptr;
  std::uint64_t generation_ = 0;
};

/// Why a call was not admitted.
struct CircuitBreakerRejection {
  /// `open`, or `half_open` when all probe slots are taken.
  CircuitState state = CircuitState::open;
  /// Open: the remaining open period, rounded up to whole milliseconds (a retry after it
  /// finds the breaker half-open). Half-open: zero, because the breaker cannot know when the
  /// in-flight probe will finish (its request timeout bounds it); the retry layer's own
  /// backoff still spaces retries.
  std::chrono::milliseconds retry_after{0};
};

/// The result of `CircuitBreaker::try_acquire()`: either a permit or a rejection.
class [[nodiscard]] CircuitBreakerAdmission {
 public:
  explicit CircuitBreakerAdmission(CircuitBreakerPermit permit) noexcept
      : permit_(std::move(permit)) {}
  explicit CircuitBreakerAdmission(CircuitBreakerRejection rejection) noexcept
      : rejection_(rejection) {}

  bool admitted() const noexcept { return !rejection_.has_value(); }
  explicit operator bool() const noexcept { return admitted(); }
  /// The permit (empty when rejected). Move it out: `auto p = std::move(a).permit();`.
  CircuitBreakerPermit& permit() & noexcept { return permit_; }
  CircuitBreakerPermit permit() && noexcept { return std::move(permit_); }
  /// The rejection; only meaningful when `!admitted()`.
  const std::optional<CircuitBreakerRejection>& rejection() const noexcept { return rejection_; }

 private:
  CircuitBreakerPermit permit_;
  std::optional<CircuitBreakerRejection> rejection_;
};

/// Circuit breaker of one remote endpoint, shared by the clients that talk to it.
///
/// Typical use inside a client's call path:
/// @code
///   auto permit = breaker.acquire_or_throw();  // throws Error(circuit_open) with retry_after
///   try {
///     auto reply = co_await do_call(...);
///     permit.success();
///     co_return reply;
///   } catch (...) {
///     permit.record(std::current_exception());
///     throw;
///   }
/// @endcode
/// A rejected call has no permit, so `circuit_open` errors never feed the window.
class CircuitBreaker {
 public:
  using State = CircuitState;
  using Config = CircuitBreakerConfig;
  using Stats = CircuitBreakerStats;
  using Permit = CircuitBreakerPermit;
  using Rejection = CircuitBreakerRejection;
  using Admission = CircuitBreakerAdmission;
  /// Called after every transition, once the new state is in place (so it may read `stats()`).
  /// Exceptions it throws are logged with the breaker's name and counted in
  /// `Stats::listener_errors`, not propagated: the call path reports results from noexcept
  /// code (permit destructors).
  using Listener = std::function<void(State from, State to)>;

  /// @throws Error(errc::invalid_argument) if `config` violates the documented ranges.
  /// `clock` and `random` must outlive the breaker.
  CircuitBreaker(Config config, Clock& clock, RandomSource& random);
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;
  ~CircuitBreaker() = default;

  /// Admits a call (a permit) or rejects it. Moves open → half_open first if the open
  /// period has elapsed (boundary inclusive: at exactly the end of the period it is over).
  Admission try_acquire();

  /// Like `try_acquire()`, but throws on rejection.
  /// @throws Error(errc::circuit_open) with `retry_after()` set from the rejection.
  [[nodiscard]] Permit acquire_or_throw();

  /// The `circuit_open` error for a rejection: context names the breaker and the state,
  /// `retry_after` is the rejection's.
  Error make_error(const Rejection& rejection) const;

  /// The current state; moves open → half_open first if the open period has elapsed, so
  /// that exported state never shows "open" after the period is over.
  State state();

  /// Counters and gauges (no lazy transition).
  Stats stats() const noexcept;

  /// Incremented on every state transition.
  std::uint64_t generation() const noexcept { return generation_; }

  /// The length of the current (or, when not open, the most recent) open period; zero before
  /// the first trip.
  Clock::duration last_open_period() const noexcept { return open_period_; }

  /// Time left in the open period (zero when not open); does not transition.
  Clock::duration remaining_open_time() const noexcept;

  /// Replaces the transition listener (empty to remove it).
  void set_listener(Listener listener) { listener_ = std::move(listener); }

  const Config& config() const noexcept { return config_; }
  const std::string& name() const noexcept { return config_.name; }

 private:
  friend class CircuitBreakerPermit;

  /// Applies a permit's result (called once per permit).
  void on_result(std::uint64_t generation, CallOutcome outcome) noexcept;
  void record_in_window(bool failed) noexcept;
  void clear_window() noexcept;
  bool window_should_trip() const noexcept;
  void maybe_half_open() noexcept;
  void trip() noexcept;
  void transition(State to) noexcept;
  Clock::duration next_open_period() noexcept;

  Config config_;
  Clock* clock_;
  RandomSource* random_;
  Listener listener_;

  State state_ = State::closed;
  std::uint64_t generation_ = 0;

  // Sliding window (closed state): ring buffer of the last window_size recorded results.
  std::vector<bool> window_;  // true = failure
  std::size_t window_next_ = 0;
  std::size_t window_count_ = 0;
  std::size_t window_failures_ = 0;

  // Open state.
  Clock::time_point open_until_{};
  Clock::duration open_period_{};
  std::uint32_t consecutive_trips_ = 0;

  // Half-open state.
  std::size_t probes_in_flight_ = 0;
  std::size_t probe_successes_ = 0;

  // Counters.
  std::uint64_t admitted_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t successes_ = 0;
  std::uint64_t failures_ = 0;
  std::uint64_t ignored_ = 0;
  std::uint64_t stale_ = 0;
  std::uint64_t trips_ = 0;
  std::uint64_t listener_errors_ = 0;
};

}  // namespace trading_shared::core

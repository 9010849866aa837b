#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/logging.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace trading_shared::core {

namespace {

/// Longest open period ceiling accepted. Anything longer is a misconfiguration (a breaker
/// that stays open for a day is an outage of our own making), and the bound keeps the
/// nanosecond time arithmetic of the clock far from overflow.
constexpr std::chrono::milliseconds kMaxOpenCap = std::chrono::hours(24);

[[noreturn]] void throw_invalid(const std::string& name, const char* what) {
  throw Error(make_error_code(errc::invalid_argument),
              "circuit breaker '" + name + "': " + std::string(what));
}

void validate(const CircuitBreakerConfig& config) {
  if (config.window_size < 1) {
    throw_invalid(config.name, "window_size must be >= 1");
  }
  if (config.min_calls < 1 || config.min_calls > config.window_size) {
    throw_invalid(config.name, "min_calls must be in [1, window_size]");
  }
  // The negated form also rejects NaN.
  if (!(config.failure_rate_threshold > 0.0 && config.failure_rate_threshold <= 1.0)) {
    throw_invalid(config.name, "failure_rate_threshold must be in (0, 1]");
  }
  if (config.half_open_probes < 1) {
    throw_invalid(config.name, "half_open_probes must be >= 1");
  }
  const BackoffConfig& open = config.open_backoff;
  if (open.base < std::chrono::milliseconds(1)) {
    throw_invalid(config.name, "open_backoff.base must be >= 1 ms");
  }
  if (open.cap < open.base || open.cap > kMaxOpenCap) {
    throw_invalid(config.name, "open_backoff.cap must be in [base, 24 h]");
  }
  if (!(open.multiplier >= 1.0) || !std::isfinite(open.multiplier)) {
    throw_invalid(config.name, "open_backoff.multiplier must be finite and >= 1");
  }
}

}  // namespace

std::int64_t gauge_value(CircuitState state) noexcept {
  switch (state) {
    case CircuitState::closed:
      return 0;
    case CircuitState::half_open:
      return 1;
    case CircuitState::open:
      return 2;
  }
  return 2;
}

std::string_view to_string(CircuitState state) noexcept {
  switch (state) {
    case CircuitState::closed:
      return "closed";
    case CircuitState::open:
      return "open";
    case CircuitState::half_open:
      return "half_open";
  }
  return "unknown";
}

// ---- CircuitBreakerPermit --------------------------------------------------------------------

CircuitBreakerPermit::CircuitBreakerPermit(CircuitBreakerPermit&& other) noexcept
    : breaker_(std::exchange(other.breaker_, nullptr)), generation_(other.generation_) {}

CircuitBreakerPermit& CircuitBreakerPermit::operator=(CircuitBreakerPermit&& other) noexcept {
  if (this != &other) {
    ignore();
    breaker_ = std::exchange(other.breaker_, nullptr);
    generation_ = other.generation_;
  }
  return *this;
}

CircuitBreakerPermit::~CircuitBreakerPermit() {
  // A call abandoned without a result was cancelled or its coroutine destroyed: it says
  // nothing about the endpoint, but a half-open probe slot must be given back (F31, F32).
  ignore();
}

void CircuitBreakerPermit::record(const std::exception_ptr& error) noexcept {
  record(classify(error));
}

void CircuitBreakerPermit::record(std::error_code ec, RequestState state) noexcept {
  record(classify(ec, state));
}

void CircuitBreakerPermit::report(CallOutcome outcome) noexcept {
  if (breaker_ == nullptr) {
    return;
  }
  // Empty the permit first so that a listener reacting to the result cannot report twice.
  CircuitBreaker* breaker = std::exchange(breaker_, nullptr);
  breaker->on_result(generation_, outcome);
}

// ---- CircuitBreaker --------------------------------------------------------------------------

CircuitBreaker::CircuitBreaker(Config config, Clock& clock, RandomSource& random)
    : config_(std::move(config)), clock_(&clock), random_(&random) {
  validate(config_);
  window_.assign(config_.window_size, false);
}

CircuitBreaker::Admission CircuitBreaker::try_acquire() {
  maybe_half_open();
  switch (state_) {
    case State::closed:
      ++admitted_;
      return Admission(Permit(*this, generation_));
    case State::half_open:
      if (probes_in_flight_ < config_.half_open_probes) {
        ++probes_in_flight_;
        ++admitted_;
        return Admission(Permit(*this, generation_));
      }
      ++rejected_;
      return Admission(Rejection{State::half_open, std::chrono::milliseconds(0)});
    case State::open:
      break;
  }
  ++rejected_;
  // maybe_half_open() just ran, so the period has not elapsed and this is at least 1 ms;
  // rounding up means a retry after `retry_after` finds the breaker half-open.
  return Admission(Rejection{
      State::open, std::chrono::ceil<std::chrono::milliseconds>(open_until_ - clock_->now())});
}

CircuitBreaker::Permit CircuitBreaker::acquire_or_throw() {
  Admission admission = try_acquire();
  if (!admission.admitted()) {
    throw make_error(*admission.rejection());
  }
  return std::move(admission).permit();
}

Error CircuitBreaker::make_error(const Rejection& rejection) const {
  std::string context = "circuit breaker '" + config_.name + "' is ";
  if (rejection.state == State::half_open) {
    context +=
        "half-open and all " + std::to_string(config_.half_open_probes) + " probe slot(s) are busy";
  } else {
    context += "open; retry in " + std::to_string(rejection.retry_after.count()) + " ms";
  }
  Error error(make_error_code(errc::circuit_open), std::move(context), RequestState::not_sent);
  error.with_retry_after(rejection.retry_after);
  return error;
}

CircuitBreaker::State CircuitBreaker::state() {
  maybe_half_open();
  return state_;
}

CircuitBreaker::Stats CircuitBreaker::stats() const noexcept {
  Stats stats;
  stats.admitted = admitted_;
  stats.rejected = rejected_;
  stats.successes = successes_;
  stats.failures = failures_;
  stats.ignored = ignored_;
  stats.stale = stale_;
  stats.trips = trips_;
  stats.listener_errors = listener_errors_;
  stats.window_calls = window_count_;
  stats.window_failures = window_failures_;
  stats.probes_in_flight = probes_in_flight_;
  stats.consecutive_trips = consecutive_trips_;
  return stats;
}

Clock::duration CircuitBreaker::remaining_open_time() const noexcept {
  if (state_ != State::open) {
    return Clock::duration::zero();
  }
  return std::max(open_until_ - clock_->now(), Clock::duration::zero());
}

void CircuitBreaker::on_result(std::uint64_t generation, CallOutcome outcome) noexcept {
  if (generation != generation_) {
    // Admitted before the last transition (F32): its slot, if it was a probe, was already
    // reset by that transition, and its result describes the endpoint as it was then.
    ++stale_;
    return;
  }
  switch (state_) {
    case State::closed:
      switch (outcome) {
        case CallOutcome::success:
          ++successes_;
          record_in_window(false);
          break;
        case CallOutcome::failure:
          ++failures_;
          record_in_window(true);
          break;
        case CallOutcome::ignored:
          ++ignored_;
          return;
      }
      // Checked after successes too: the call that brings the window up to min_calls may
      // be a success while the rate is still above the threshold.
      if (window_should_trip()) {
        trip();
      }
      return;
    case State::half_open:
      if (probes_in_flight_ > 0) {
        --probes_in_flight_;
      }
      switch (outcome) {
        case CallOutcome::success:
          ++successes_;
          if (++probe_successes_ >= config_.half_open_probes) {
            transition(State::closed);
          }
          return;
        case CallOutcome::failure:
          ++failures_;
          trip();
          return;
        case CallOutcome::ignored:
          ++ignored_;
          return;
      }
      return;
    case State::open:
      // Unreachable: no permit is issued while open and every transition changes the
      // generation. Treated as stale rather than trusted.
      ++stale_;
      return;
  }
}

void CircuitBreaker::record_in_window(bool failed) noexcept {
  if (window_count_ == window_.size()) {
    // Full: the slot about to be overwritten holds the oldest result.
    if (window_[window_next_]) {
      --window_failures_;
    }
  } else {
    ++window_count_;
  }
  window_[window_next_] = failed;
  if (failed) {
    ++window_failures_;
  }
  window_next_ = (window_next_ + 1) % window_.size();
}

void CircuitBreaker::clear_window() noexcept {
  std::fill(window_.begin(), window_.end(), false);
  window_next_ = 0;
  window_count_ = 0;
  window_failures_ = 0;
}

bool CircuitBreaker::window_should_trip() const noexcept {
  if (window_count_ < config_.min_calls || window_count_ == 0) {
    return false;
  }
  // IEEE division is correctly rounded, so e.g. 3/10 equals the literal 0.3: "reaches the
  // threshold" is exact at the boundary.
  const double rate = static_cast<double>(window_failures_) / static_cast<double>(window_count_);
  return rate >= config_.failure_rate_threshold;
}

void CircuitBreaker::maybe_half_open() noexcept {
  if (state_ == State::open && clock_->now() >= open_until_) {
    transition(State::half_open);
  }
}

void CircuitBreaker::trip() noexcept {
  open_period_ = next_open_period();
  open_until_ = clock_->now() + open_period_;
  if (consecutive_trips_ < std::numeric_limits<std::uint32_t>::max()) {
    ++consecutive_trips_;
  }
  ++trips_;
  transition(State::open);
}

Clock::duration CircuitBreaker::next_open_period() noexcept {
  // Equal jitter: uniform in [c - c/2, c]; never below half the ceiling (see Config).
  const std::int64_t ceiling = backoff_ceiling(config_.open_backoff, consecutive_trips_).count();
  const std::int64_t half = ceiling / 2;
  const double u = std::clamp(random_->uniform01(), 0.0, 1.0);
  const std::int64_t jitter =
      std::min(static_cast<std::int64_t>(u * static_cast<double>(half)), half);
  return std::chrono::milliseconds(ceiling - half + jitter);
}

void CircuitBreaker::transition(State to) noexcept {
  const State from = state_;
  state_ = to;
  ++generation_;
  // Every state starts from scratch: the window describes only the current closed period,
  // and probe slots only the current half-open period.
  clear_window();
  probes_in_flight_ = 0;
  probe_successes_ = 0;
  if (to == State::closed) {
    consecutive_trips_ = 0;
  }
  // State changes are always logged: a tripped breaker is the first thing to look for
  // when calls fail fast.
  logger("breaker")->log(
      to == State::open ? spdlog::level::warn : spdlog::level::info,
      "circuit breaker {}: {} -> {} (trips in a row: {}, open period: {} ms)", config_.name,
      to_string(from), to_string(to), consecutive_trips_,
      std::chrono::duration_cast<std::chrono::milliseconds>(open_period_).count());
  if (!listener_) {
    return;
  }
  try {
    // A copy, so that a listener replacing itself does not destroy the running callable.
    const Listener listener = listener_;
    listener(from, to);
  } catch (const std::exception& e) {
    // Transitions happen inside permit destructors, which cannot throw: handled here by
    // logging with context and counting, never silently.
    ++listener_errors_;
    logger("breaker")->error("circuit breaker {}: transition listener threw: {}", config_.name,
                             e.what());
  } catch (...) {
    ++listener_errors_;
    logger("breaker")->error(
        "circuit breaker {}: transition listener threw a non-standard exception", config_.name);
  }
}

}  // namespace trading_shared::core

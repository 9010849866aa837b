#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>

#include <boost/system/system_error.hpp>

#include <fmt/format.h>

#include <limits>

namespace trading_shared::core {

std::string_view to_string(RetryReason reason) noexcept {
  switch (reason) {
    case RetryReason::retry:
      return "retry";
    case RetryReason::permanent:
      return "permanent";
    case RetryReason::cancelled:
      return "cancelled";
    case RetryReason::not_idempotent:
      return "not_idempotent";
    case RetryReason::attempts_exhausted:
      return "attempts_exhausted";
    case RetryReason::deadline_exhausted:
      return "deadline_exhausted";
  }
  return "unknown";
}

RetryDecision decide_retry(ErrorKind kind, Idempotent idempotent, std::uint32_t attempts_made,
                           const RetryPolicy& policy, std::chrono::milliseconds remaining,
                           std::chrono::milliseconds jittered_delay) noexcept {
  switch (kind) {
    case ErrorKind::cancelled:
      return {false, {}, RetryReason::cancelled};
    case ErrorKind::permanent:
      return {false, {}, RetryReason::permanent};
    case ErrorKind::outcome_unknown:
      // The server may have acted on the request: only a repeatable operation may run again.
      if (idempotent == Idempotent::no) return {false, {}, RetryReason::not_idempotent};
      break;
    case ErrorKind::transient_not_sent:
    case ErrorKind::transient_conflict:     // the server rolled the work back
    case ErrorKind::transient_unavailable:  // the server did nothing
      break;
  }
  if (attempts_made >= std::max<std::uint32_t>(policy.max_attempts, 1)) {
    return {false, {}, RetryReason::attempts_exhausted};
  }
  if (policy.total_deadline > std::chrono::milliseconds::zero() && jittered_delay >= remaining) {
    return {false, {}, RetryReason::deadline_exhausted};
  }
  return {true, jittered_delay, RetryReason::retry};
}

namespace detail {

std::string describe(const std::exception& error) {
  if (const auto* system = dynamic_cast<const boost::system::system_error*>(&error)) {
    return system->code().message();
  }
  return error.what();
}

std::string describe(const std::exception_ptr& error) {
  if (!error) return "no error";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return describe(e);
  } catch (...) {
    return "non-standard exception";
  }
}

void record_retry(const RetryObserver& observer, std::uint32_t attempt, ErrorKind kind,
                  std::chrono::milliseconds delay, std::string_view what) {
  logger("retry")->warn("{}: attempt {} failed ({}: {}); retrying in {} ms", observer.operation,
                        attempt, to_string(kind), what, delay.count());
  if (observer.metrics != nullptr) {
    observer.metrics->counter(fmt::format("ts_retries_total{{op=\"{}\"}}", observer.operation))
        .add();
  }
}

void record_give_up(const RetryObserver& observer, std::uint32_t attempt, ErrorKind kind,
                    RetryReason reason, std::string_view what) {
  // A permanent error on the first attempt is the caller's to report (it is rethrown
  // unchanged); it is still counted. Every other give-up is worth an error line.
  const auto level =
      reason == RetryReason::permanent && attempt == 1 ? spdlog::level::debug : spdlog::level::err;
  logger("retry")->log(level, "{}: giving up after {} attempt(s) ({}; {}: {})", observer.operation,
                       attempt, to_string(reason), to_string(kind), what);
  if (observer.metrics != nullptr) {
    observer.metrics
        ->counter(fmt::format("ts_retry_give_ups_total{{op=\"{}\",reason=\"{}\"}}",
                              observer.operation, to_string(reason)))
        .add();
  }
}

bool retry_until_stopped_decision(ErrorKind kind, Idempotent idempotent,
                                  bool retry_permanent) noexcept {
  if (retry_permanent && kind == ErrorKind::permanent) return true;
  RetryPolicy unbounded;
  unbounded.max_attempts = std::numeric_limits<std::uint32_t>::max();
  unbounded.total_deadline = std::chrono::milliseconds::zero();
  return decide_retry(kind, idempotent, 1, unbounded, std::chrono::milliseconds::max(),
                      std::chrono::milliseconds::zero())
      .retry;
}

namespace {
std::shared_ptr<spdlog::logger> log_of(const UntilStopped& policy) {
  return policy.log ? policy.log : logger("retry");
}
}  // namespace

void record_until_stopped_retry(const UntilStopped& policy, std::string_view what,
                                std::uint64_t retry, ErrorKind kind, std::string_view reason,
                                std::chrono::milliseconds delay) {
  auto level = spdlog::level::debug;
  if (retry <= policy.warn_first || retry % 100 == 0) {
    level = kind == ErrorKind::permanent ? spdlog::level::err : spdlog::level::warn;
  }
  log_of(policy)->log(level,
                      "{} failed (retry #{} in {} ms; {}): {}; retrying with backoff until it "
                      "succeeds or the service stops",
                      what, retry, delay.count(), to_string(kind), reason);
}

void record_until_stopped_recovery(const UntilStopped& policy, std::string_view what,
                                   std::uint32_t retries) {
  log_of(policy)->log(policy.number_by_total ? spdlog::level::debug : spdlog::level::info,
                      "{}: succeeded after {} retries", what, retries);
}

void record_until_stopped_stop(const UntilStopped& policy, std::string_view what, ErrorKind kind,
                               std::string_view reason, bool during_backoff) {
  if (during_backoff) {
    log_of(policy)->warn("{}: stopping during the backoff: giving up ({})", what, reason);
  } else {
    log_of(policy)->warn("{}: failed ({}: {}) while stopping: not retried", what, to_string(kind),
                         reason);
  }
}

std::optional<std::chrono::milliseconds> retry_after(const std::exception_ptr& error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.retry_after();
  } catch (...) {  // not an Error: no hint; the caller rethrows `error` itself
    return std::nullopt;
  }
}

}  // namespace detail
}  // namespace trading_shared::core

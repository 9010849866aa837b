#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>

#include <fmt/format.h>

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

std::string describe(const std::exception_ptr& error) {
  if (!error) return "no error";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
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

}  // namespace detail
}  // namespace trading_shared::core

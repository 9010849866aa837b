#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/reconnect.hpp>

namespace trading_shared::core::detail {

std::shared_ptr<spdlog::logger> reconnect_logger() {
  static const auto log = logger("reconnect");
  return log;
}

void record_connect_failure(const ReconnectObserver& observer, std::uint32_t attempt,
                            std::string_view cause, std::chrono::milliseconds delay) {
  const std::uint32_t every = std::max<std::uint32_t>(observer.log_every, 1);
  if (attempt != 1 && attempt % every != 0) return;
  const auto& log = observer.log ? observer.log : reconnect_logger();
  log->warn("{} attempt {} failed ({}); retrying in {} ms", observer.what, attempt, cause,
            delay.count());
}

}  // namespace trading_shared::core::detail

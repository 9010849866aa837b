#include <trading_shared/core/backoff.hpp>

#include <algorithm>
#include <cmath>

namespace trading_shared::core {

std::chrono::milliseconds backoff_ceiling(const BackoffConfig& config,
                                          std::uint32_t attempt) noexcept {
  const auto base_ms = std::max<std::int64_t>(config.base.count(), 0);
  const auto cap_ms = std::max<std::int64_t>(config.cap.count(), 0);
  if (base_ms == 0 || cap_ms == 0) return std::chrono::milliseconds(0);
  const double multiplier =
      std::isfinite(config.multiplier) ? std::max(config.multiplier, 1.0) : 1.0;
  // pow may overflow to inf for large attempts; comparing in double before converting keeps
  // the conversion to an integer in range (a double >= 2^63 converted is undefined).
  const double ceiling =
      static_cast<double>(base_ms) * std::pow(multiplier, static_cast<double>(attempt));
  if (!(ceiling < static_cast<double>(cap_ms))) return std::chrono::milliseconds(cap_ms);
  return std::chrono::milliseconds(static_cast<std::int64_t>(ceiling));
}

std::chrono::milliseconds backoff_delay(const BackoffConfig& config, std::uint32_t attempt,
                                        RandomSource& random) noexcept {
  const auto ceiling = backoff_ceiling(config, attempt);
  const double u = std::clamp(random.uniform01(), 0.0, 1.0);
  // Full jitter: uniform in [0, ceiling].
  const auto delay = static_cast<std::int64_t>(u * static_cast<double>(ceiling.count()));
  return std::chrono::milliseconds(std::min(delay, ceiling.count()));
}

}  // namespace trading_shared::core

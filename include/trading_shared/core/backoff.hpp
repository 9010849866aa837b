#pragma once
/// @file
/// Capped exponential backoff with full jitter (the AWS architecture blog's "full jitter").

#include <trading_shared/core/clock.hpp>

#include <chrono>
#include <cstdint>

namespace trading_shared::core {

/// Delay policy. The n-th retry (n = 0, 1, ...) waits a uniformly random time in
/// [0, min(cap, base * multiplier^n)]: spreading retries of many clients over the whole
/// window avoids synchronised reconnect storms (F34).
struct BackoffConfig {
  std::chrono::milliseconds base{50};   ///< ceiling of the first delay.
  std::chrono::milliseconds cap{5000};  ///< the ceiling never grows past this.
  double multiplier = 2.0;              ///< growth of the ceiling per attempt (>= 1).
};

/// Stateless computation of one delay.
/// @param attempt 0 for the first retry.
/// @param random source of the jitter (uniform in [0, 1)).
std::chrono::milliseconds backoff_delay(const BackoffConfig& config, std::uint32_t attempt,
                                        RandomSource& random) noexcept;

/// The ceiling of the delay for `attempt` (without jitter).
std::chrono::milliseconds backoff_ceiling(const BackoffConfig& config,
                                          std::uint32_t attempt) noexcept;

/// Stateful helper for reconnect loops: `next()` after each failure, `reset()` after success.
class Backoff {
 public:
  Backoff(BackoffConfig config, RandomSource& random) : config_(config), random_(&random) {}
  std::chrono::milliseconds next() noexcept { return backoff_delay(config_, attempt_++, *random_); }
  void reset() noexcept { attempt_ = 0; }
  std::uint32_t attempts() const noexcept { return attempt_; }
  const BackoffConfig& config() const noexcept { return config_; }

 private:
  BackoffConfig config_;
  RandomSource* random_;
  std::uint32_t attempt_ = 0;
};

}  // namespace trading_shared::core

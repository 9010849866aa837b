#pragma once
/// @file
/// Injectable time and randomness, so that backoff, retry and circuit-breaker decisions are
/// unit-tested deterministically (fake clock, scripted random source).

#include <chrono>
#include <cstdint>
#include <random>

namespace trading_shared::core {

/// A monotonic clock. Production code uses `SteadyClock`; tests use `FakeClock`.
class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
};

/// The real monotonic clock.
class SteadyClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  /// A process-wide instance (stateless).
  static SteadyClock& instance() {
    static SteadyClock clock;
    return clock;
  }
};

/// A clock that moves only when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(time_point start = time_point{} + std::chrono::hours(1)) : now_(start) {}
  time_point now() const override { return now_; }
  void advance(duration d) { now_ += d; }

 private:
  time_point now_;
};

/// A source of uniformly distributed numbers in [0, 1).
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual double uniform01() = 0;
};

/// Production random source: a per-instance PRNG seeded from std::random_device.
/// Not thread-safe: one per client (clients are single-threaded, docs/core.md).
class DefaultRandom final : public RandomSource {
 public:
  DefaultRandom() : engine_(std::random_device{}()) {}
  explicit DefaultRandom(std::uint64_t seed) : engine_(seed) {}
  double uniform01() override { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }

 private:
  std::mt19937_64 engine_;
};

/// Returns a fixed value (tests): 0 gives the shortest jittered delay, just below 1 the longest.
class FixedRandom final : public RandomSource {
 public:
  explicit FixedRandom(double value) : value_(value) {}
  double uniform01() override { return value_; }
  void set(double value) { value_ = value; }

 private:
  double value_;
};

}  // namespace trading_shared::core

#include <trading_shared/core/backoff.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>

namespace ts = trading_shared;
using std::chrono::milliseconds;
using ts::core::Backoff;
using ts::core::backoff_ceiling;
using ts::core::backoff_delay;
using ts::core::BackoffConfig;
using ts::core::DefaultRandom;
using ts::core::FixedRandom;

namespace {

constexpr std::uint32_t kMaxAttempt = std::numeric_limits<std::uint32_t>::max();

BackoffConfig config_100ms_10s() {
  return {milliseconds(100), milliseconds(10000), 2.0};
}

TEST(BackoffTest, DefaultsAreSmallAndCapped) {
  const BackoffConfig config;
  EXPECT_EQ(config.base, milliseconds(50));
  EXPECT_EQ(config.cap, milliseconds(5000));
  EXPECT_DOUBLE_EQ(config.multiplier, 2.0);
}

TEST(BackoffTest, CeilingIsMinOfCapAndExponential) {
  const auto config = config_100ms_10s();
  for (std::uint32_t n = 0; n < 20; ++n) {
    const double exponential = 100.0 * std::pow(2.0, n);
    const auto expected = milliseconds(static_cast<std::int64_t>(std::min(10000.0, exponential)));
    EXPECT_EQ(backoff_ceiling(config, n), expected) << "attempt " << n;
  }
  EXPECT_EQ(backoff_ceiling(config, 0), milliseconds(100));
  EXPECT_EQ(backoff_ceiling(config, 6), milliseconds(6400));
  EXPECT_EQ(backoff_ceiling(config, 7), milliseconds(10000));  // 12800 capped
}

TEST(BackoffTest, CeilingGrowsMonotonicallyUntilTheCap) {
  const BackoffConfig config{milliseconds(7), milliseconds(60000), 1.5};
  auto previous = backoff_ceiling(config, 0);
  for (std::uint32_t n = 1; n < 100; ++n) {
    const auto ceiling = backoff_ceiling(config, n);
    EXPECT_GE(ceiling, previous) << n;
    EXPECT_LE(ceiling, config.cap) << n;
    if (previous < config.cap && previous >= milliseconds(20)) {
      EXPECT_GT(ceiling, previous) << n;
    }
    previous = ceiling;
  }
  EXPECT_EQ(previous, config.cap);
}

TEST(BackoffTest, DelayStaysWithinZeroAndCeiling) {
  const auto config = config_100ms_10s();
  FixedRandom random(0.0);
  for (double u : {0.0, 0.25, 0.5, 0.999, 0.999999999, 1.0}) {
    random.set(u);
    for (std::uint32_t n = 0; n < 40; ++n) {
      const auto ceiling = backoff_ceiling(config, n);
      const auto delay = backoff_delay(config, n, random);
      EXPECT_GE(delay, milliseconds(0)) << "u=" << u << " n=" << n;
      EXPECT_LE(delay, ceiling) << "u=" << u << " n=" << n;
    }
  }
  random.set(0.0);
  EXPECT_EQ(backoff_delay(config, 3, random), milliseconds(0));  // full jitter reaches zero
  random.set(0.5);
  EXPECT_EQ(backoff_delay(config, 3, random), milliseconds(400));
  random.set(0.999);
  EXPECT_EQ(backoff_delay(config, 3, random), milliseconds(799));
}

TEST(BackoffTest, OutOfRangeRandomValuesAreClamped) {
  const auto config = config_100ms_10s();
  FixedRandom random(-3.0);
  EXPECT_EQ(backoff_delay(config, 2, random), milliseconds(0));
  random.set(7.0);
  EXPECT_EQ(backoff_delay(config, 2, random), milliseconds(400));
}

TEST(BackoffTest, HugeAttemptNumbersDoNotOverflow) {
  const auto config = config_100ms_10s();
  FixedRandom random(0.999);
  for (std::uint32_t n : {64u, 1000u, 1u << 20, kMaxAttempt - 1, kMaxAttempt}) {
    EXPECT_EQ(backoff_ceiling(config, n), config.cap) << n;
    const auto delay = backoff_delay(config, n, random);
    EXPECT_GE(delay, milliseconds(9980)) << n;
    EXPECT_LE(delay, config.cap) << n;
  }
  // A large multiplier overflows pow() to infinity; the cap still wins.
  const BackoffConfig steep{milliseconds(1), milliseconds(30000), 1e300};
  EXPECT_EQ(backoff_ceiling(steep, 5), milliseconds(30000));
  EXPECT_EQ(backoff_ceiling(steep, kMaxAttempt), milliseconds(30000));
}

TEST(BackoffTest, DegenerateConfigsStayFinite) {
  FixedRandom random(0.5);
  // multiplier < 1 is treated as 1 (constant ceiling).
  const BackoffConfig shrinking{milliseconds(100), milliseconds(1000), 0.5};
  EXPECT_EQ(backoff_ceiling(shrinking, 0), milliseconds(100));
  EXPECT_EQ(backoff_ceiling(shrinking, 10), milliseconds(100));
  // Zero base: no delay at all.
  const BackoffConfig zero{milliseconds(0), milliseconds(1000), 2.0};
  EXPECT_EQ(backoff_ceiling(zero, 5), milliseconds(0));
  EXPECT_EQ(backoff_delay(zero, 5, random), milliseconds(0));
  // Cap below base: the cap wins.
  const BackoffConfig inverted{milliseconds(500), milliseconds(200), 2.0};
  EXPECT_EQ(backoff_ceiling(inverted, 0), milliseconds(200));
}

// Regression: 0 * pow(2, huge) is 0 * inf = NaN, and std::min(cap, NaN) returned the cap, so a
// zero base yielded a 1 s ceiling for huge attempts (backoff_ceiling now returns 0 early).
TEST(BackoffTest, ZeroBaseWithHugeAttemptStaysZero) {
  // The ceiling must stay 0, not jump to the cap.
  const BackoffConfig zero{milliseconds(0), milliseconds(1000), 2.0};
  EXPECT_EQ(backoff_ceiling(zero, kMaxAttempt), milliseconds(0));
}

TEST(BackoffTest, JitterSpreadsDelaysOverTheWholeWindow_F34) {
  // 1000 clients retrying the same attempt must not retry together: their delays cover
  // [0, ceiling] roughly uniformly.
  const auto config = config_100ms_10s();
  constexpr std::uint32_t kAttempt = 5;
  const auto ceiling = static_cast<double>(backoff_ceiling(config, kAttempt).count());  // 3200
  DefaultRandom random(20240611);
  double sum = 0.0;
  std::int64_t lowest = std::numeric_limits<std::int64_t>::max();
  std::int64_t highest = 0;
  std::set<std::int64_t> distinct;
  int below_half = 0;
  constexpr int kSamples = 1000;
  for (int i = 0; i < kSamples; ++i) {
    const std::int64_t d = backoff_delay(config, kAttempt, random).count();
    sum += static_cast<double>(d);
    lowest = std::min(lowest, d);
    highest = std::max(highest, d);
    distinct.insert(d);
    if (static_cast<double>(d) < ceiling / 2) {
      ++below_half;
    }
  }
  const double mean = sum / kSamples;
  EXPECT_LT(static_cast<double>(lowest), 0.1 * ceiling);
  EXPECT_GT(static_cast<double>(highest), 0.9 * ceiling);
  EXPECT_LE(static_cast<double>(highest), ceiling);
  EXPECT_NEAR(mean, ceiling / 2, 0.05 * ceiling);
  EXPECT_NEAR(below_half, 0.5 * kSamples, 80.0);  // ~5 standard deviations
  EXPECT_GT(distinct.size(), 500u);               // not a handful of synchronised slots
}

TEST(BackoffTest, NextGrowsAndResetStartsOver) {
  FixedRandom random(0.999);
  Backoff backoff(config_100ms_10s(), random);
  EXPECT_EQ(backoff.attempts(), 0u);
  EXPECT_EQ(backoff.config().base, milliseconds(100));
  const milliseconds expected[] = {milliseconds(99),   milliseconds(199),  milliseconds(399),
                                   milliseconds(799),  milliseconds(1598), milliseconds(3196),
                                   milliseconds(6393), milliseconds(9990), milliseconds(9990)};
  for (const auto& e : expected) {
    EXPECT_EQ(backoff.next(), e);
  }
  EXPECT_EQ(backoff.attempts(), 9u);

  backoff.reset();
  EXPECT_EQ(backoff.attempts(), 0u);
  EXPECT_EQ(backoff.next(), milliseconds(99));
  EXPECT_EQ(backoff.attempts(), 1u);

  random.set(0.0);
  EXPECT_EQ(backoff.next(), milliseconds(0));
}

}  // namespace

#include <trading_shared/core/circuit_breaker.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ts = trading_shared;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using ts::ErrorKind;
using ts::RequestState;
using ts::core::CallOutcome;
using ts::core::CircuitBreaker;
using ts::core::CircuitState;
using ts::core::FakeClock;
using ts::core::FixedRandom;

namespace {

using Config = CircuitBreaker::Config;
using Permit = CircuitBreaker::Permit;

/// Small numbers so that tests read easily: window 10, opens at >= 5 calls with >= 50 %
/// failures, open ceiling 1 s doubling up to 8 s, one probe.
Config small_config() {
  Config config;
  config.name = "test-endpoint";
  config.window_size = 10;
  config.min_calls = 5;
  config.failure_rate_threshold = 0.5;
  config.open_backoff = {milliseconds(1000), milliseconds(8000), 2.0};
  config.half_open_probes = 1;
  return config;
}

void record_n(CircuitBreaker& breaker, int n, CallOutcome outcome) {
  for (int i = 0; i < n; ++i) {
    breaker.acquire_or_throw().report(outcome);
  }
}

/// Fails calls until the breaker opens (from closed).
void trip_from_closed(CircuitBreaker& breaker) {
  ASSERT_EQ(breaker.state(), CircuitState::closed);
  for (std::size_t i = 0; i <= breaker.config().window_size; ++i) {
    breaker.acquire_or_throw().failure();
    if (breaker.state() != CircuitState::closed) {
      break;
    }
  }
  ASSERT_EQ(breaker.state(), CircuitState::open);
}

/// Waits out the open period (exactly) so that the breaker is half-open.
void wait_open_period(CircuitBreaker& breaker, FakeClock& clock) {
  ASSERT_EQ(breaker.state(), CircuitState::open);
  clock.advance(breaker.remaining_open_time());
  ASSERT_EQ(breaker.state(), CircuitState::half_open);
}

/// Expected open period for ceiling `c` and jitter `u` (equal jitter, see CircuitBreakerConfig).
milliseconds expected_period(std::int64_t c, double u) {
  const std::int64_t half = c / 2;
  return milliseconds(c - half + static_cast<std::int64_t>(u * static_cast<double>(half)));
}

class CircuitBreakerTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  FixedRandom random_{0.0};
};

// ---- configuration ---------------------------------------------------------------------------

TEST_F(CircuitBreakerTest, DefaultsAreTheDocumentedOnes) {
  const Config config;
  EXPECT_EQ(config.window_size, 20u);
  EXPECT_EQ(config.min_calls, 10u);
  EXPECT_DOUBLE_EQ(config.failure_rate_threshold, 0.5);
  EXPECT_EQ(config.open_backoff.base, milliseconds(1000));
  EXPECT_EQ(config.open_backoff.cap, milliseconds(30000));
  EXPECT_DOUBLE_EQ(config.open_backoff.multiplier, 2.0);
  EXPECT_EQ(config.half_open_probes, 1u);

  CircuitBreaker breaker(config, clock_, random_);
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  EXPECT_EQ(breaker.generation(), 0u);
  EXPECT_EQ(breaker.last_open_period(), nanoseconds::zero());
}

TEST_F(CircuitBreakerTest, RejectsInvalidConfig) {
  auto expect_invalid = [&](const Config& config) {
    try {
      CircuitBreaker breaker(config, clock_, random_);
      ADD_FAILURE() << "config accepted";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::errc::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("test-endpoint"), std::string::npos) << e.what();
    }
  };
  Config c = small_config();
  c.window_size = 0;
  c.min_calls = 0;
  expect_invalid(c);
  c = small_config();
  c.min_calls = c.window_size + 1;  // could never open
  expect_invalid(c);
  c = small_config();
  c.min_calls = 0;
  expect_invalid(c);
  c = small_config();
  c.failure_rate_threshold = 0.0;  // would open on a window of successes
  expect_invalid(c);
  c.failure_rate_threshold = 1.01;
  expect_invalid(c);
  c.failure_rate_threshold = std::nan("");
  expect_invalid(c);
  c = small_config();
  c.half_open_probes = 0;
  expect_invalid(c);
  c = small_config();
  c.open_backoff.base = milliseconds(0);
  expect_invalid(c);
  c = small_config();
  c.open_backoff.cap = milliseconds(999);
  expect_invalid(c);
  c.open_backoff.cap = std::chrono::hours(25);
  expect_invalid(c);
  c = small_config();
  c.open_backoff.multiplier = 0.5;
  expect_invalid(c);
  c.open_backoff.multiplier = std::numeric_limits<double>::infinity();
  expect_invalid(c);

  c = small_config();
  c.min_calls = c.window_size;
  c.failure_rate_threshold = 1.0;
  EXPECT_NO_THROW({ CircuitBreaker ok(c, clock_, random_); });
}

TEST_F(CircuitBreakerTest, ToStringAndOutcomeMapping) {
  EXPECT_EQ(to_string(CircuitState::closed), "closed");
  EXPECT_EQ(to_string(CircuitState::open), "open");
  EXPECT_EQ(to_string(CircuitState::half_open), "half_open");

  static_assert(ts::core::breaker_outcome(ErrorKind::transient_not_sent) == CallOutcome::failure);
  // F49: contention (40001, 40P01, 55P03, TRYAGAIN) says nothing about the server's health.
  static_assert(ts::core::breaker_outcome(ErrorKind::transient_conflict) == CallOutcome::ignored);
  static_assert(ts::core::breaker_outcome(ErrorKind::transient_unavailable) ==
                CallOutcome::failure);
  static_assert(ts::core::breaker_outcome(ErrorKind::outcome_unknown) == CallOutcome::failure);
  static_assert(ts::core::breaker_outcome(ErrorKind::permanent) == CallOutcome::ignored);
  static_assert(ts::core::breaker_outcome(ErrorKind::cancelled) == CallOutcome::ignored);
}

// ---- closed → open ---------------------------------------------------------------------------

TEST_F(CircuitBreakerTest, StaysClosedBelowMinCallsEvenAtFullFailureRate) {
  CircuitBreaker breaker(Config{}, clock_, random_);  // min_calls 10
  record_n(breaker, 9, CallOutcome::failure);
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  EXPECT_EQ(breaker.stats().window_failures, 9u);
  record_n(breaker, 1, CallOutcome::failure);
  EXPECT_EQ(breaker.state(), CircuitState::open);
  EXPECT_EQ(breaker.stats().trips, 1u);
}

TEST_F(CircuitBreakerTest, TripsExactlyAtThreshold) {
  CircuitBreaker breaker(Config{}, clock_, random_);  // window 20, min 10, threshold 0.5
  record_n(breaker, 6, CallOutcome::success);
  record_n(breaker, 4, CallOutcome::failure);  // 4/10 = 0.4
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  record_n(breaker, 1, CallOutcome::failure);  // 5/11 = 0.45
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  record_n(breaker, 1, CallOutcome::failure);  // 6/12 = 0.5: reaches it
  EXPECT_EQ(breaker.state(), CircuitState::open);

  // An exactly representable non-half threshold: 3/10 must equal 0.3.
  FakeClock clock;
  Config config = small_config();
  config.min_calls = 10;
  config.failure_rate_threshold = 0.3;
  CircuitBreaker b2(config, clock, random_);
  record_n(b2, 7, CallOutcome::success);
  record_n(b2, 2, CallOutcome::failure);
  EXPECT_EQ(b2.state(), CircuitState::closed);
  record_n(b2, 1, CallOutcome::failure);  // 3/10
  EXPECT_EQ(b2.state(), CircuitState::open);
}

TEST_F(CircuitBreakerTest, StaysClosedJustBelowThreshold) {
  CircuitBreaker breaker(Config{}, clock_, random_);
  // 9 failures out of 19, then alternate so the rate stays < 0.5 at every step.
  record_n(breaker, 10, CallOutcome::success);
  for (int i = 0; i < 9; ++i) {
    record_n(breaker, 1, CallOutcome::failure);
    EXPECT_EQ(breaker.state(), CircuitState::closed) << i;
  }
  EXPECT_EQ(breaker.stats().window_calls, 19u);
  EXPECT_EQ(breaker.stats().window_failures, 9u);
}

TEST_F(CircuitBreakerTest, ASuccessThatReachesMinCallsCanTrip) {
  CircuitBreaker breaker(Config{}, clock_, random_);
  record_n(breaker, 9, CallOutcome::failure);
  record_n(breaker, 1, CallOutcome::success);  // 9/10 failures once min_calls is reached
  EXPECT_EQ(breaker.state(), CircuitState::open);
}

TEST_F(CircuitBreakerTest, IgnoresPermanentAndCancelled_F31_F33) {
  CircuitBreaker breaker(Config{}, clock_, random_);
  for (int i = 0; i < 100; ++i) {
    breaker.acquire_or_throw().record(ErrorKind::permanent);
  }
  for (int i = 0; i < 100; ++i) {
    breaker.acquire_or_throw().record(ErrorKind::cancelled);
  }
  for (int i = 0; i < 100; ++i) {
    Permit dropped = breaker.acquire_or_throw();  // destroyed without a result
  }
  for (int i = 0; i < 100; ++i) {
    breaker.acquire_or_throw().record(std::make_exception_ptr(std::runtime_error("bug")));
  }
  for (int i = 0; i < 100; ++i) {
    breaker.acquire_or_throw().record(ts::errc::cancelled, RequestState::sent);
  }
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  const auto stats = breaker.stats();
  EXPECT_EQ(stats.ignored, 500u);
  EXPECT_EQ(stats.window_calls, 0u);
  EXPECT_EQ(stats.failures, 0u);
  EXPECT_EQ(stats.successes, 0u);
  EXPECT_EQ(stats.admitted, 500u);
  EXPECT_EQ(stats.trips, 0u);
}

TEST_F(CircuitBreakerTest, IgnoredResultsDoNotDiluteFailures) {
  CircuitBreaker breaker(Config{}, clock_, random_);
  for (int i = 0; i < 10; ++i) {
    breaker.acquire_or_throw().record(ErrorKind::permanent);
    breaker.acquire_or_throw().record(ErrorKind::transient_unavailable);
  }
  EXPECT_EQ(breaker.state(), CircuitState::open);  // 10/10 failures, the WRONGTYPEs don't count
}

TEST_F(CircuitBreakerTest, TimeoutsCountAsFailures_F31) {
  {
    CircuitBreaker breaker(Config{}, clock_, random_);
    for (int i = 0; i < 10; ++i) {
      breaker.acquire_or_throw().record(ts::errc::request_timeout, RequestState::sent);
    }
    EXPECT_EQ(breaker.state(), CircuitState::open);
  }
  {
    CircuitBreaker breaker(Config{}, clock_, random_);
    for (int i = 0; i < 10; ++i) {
      breaker.acquire_or_throw().record(std::make_exception_ptr(
          ts::Error(ts::errc::request_timeout, "GET k", RequestState::sent)));
    }
    EXPECT_EQ(breaker.state(), CircuitState::open);
    EXPECT_EQ(breaker.stats().failures, 10u);
  }
  {
    CircuitBreaker breaker(Config{}, clock_, random_);
    for (int i = 0; i < 10; ++i) {
      breaker.acquire_or_throw().record(ErrorKind::outcome_unknown);
    }
    EXPECT_EQ(breaker.state(), CircuitState::open);
  }
}

TEST_F(CircuitBreakerTest, SlidingWindowForgetsOldResults) {
  CircuitBreaker breaker(small_config(), clock_, random_);  // window 10, min 5, 0.5
  record_n(breaker, 5, CallOutcome::success);
  record_n(breaker, 4, CallOutcome::failure);  // 4/9
  EXPECT_EQ(breaker.stats().window_failures, 4u);
  record_n(breaker, 10, CallOutcome::success);  // pushes the 4 failures out
  EXPECT_EQ(breaker.stats().window_calls, 10u);
  EXPECT_EQ(breaker.stats().window_failures, 0u);
  record_n(breaker, 4, CallOutcome::failure);  // 4/10: the old failures are forgotten
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  EXPECT_EQ(breaker.stats().window_failures, 4u);
  record_n(breaker, 1, CallOutcome::failure);  // 5/10 in the window, though 9/24 overall
  EXPECT_EQ(breaker.state(), CircuitState::open);
}

TEST_F(CircuitBreakerTest, SlidingWindowRollsOverManyTimes) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  // Pattern S S F repeated: every window of 10 holds 3 or 4 failures, never 5.
  for (int i = 0; i < 300; ++i) {
    record_n(breaker, 1, i % 3 == 2 ? CallOutcome::failure : CallOutcome::success);
    ASSERT_EQ(breaker.state(), CircuitState::closed) << i;
    ASSERT_LE(breaker.stats().window_failures, 4u);
    ASSERT_EQ(breaker.stats().window_calls, std::min<std::size_t>(10u, i + 1u));
  }
}

// ---- open ------------------------------------------------------------------------------------

TEST_F(CircuitBreakerTest, OpenRejectsWithRetryAfterEqualToRemainingTime) {
  CircuitBreaker breaker(small_config(), clock_, random_);  // u = 0: first period 500 ms
  trip_from_closed(breaker);
  EXPECT_EQ(breaker.last_open_period(), milliseconds(500));

  auto admission = breaker.try_acquire();
  ASSERT_FALSE(admission.admitted());
  EXPECT_FALSE(admission.permit().active());
  EXPECT_EQ(admission.rejection()->state, CircuitState::open);
  EXPECT_EQ(admission.rejection()->retry_after, milliseconds(500));

  clock_.advance(milliseconds(200));
  EXPECT_EQ(breaker.try_acquire().rejection()->retry_after, milliseconds(300));
  clock_.advance(std::chrono::microseconds(500));  // 299.5 ms left: rounded up
  EXPECT_EQ(breaker.try_acquire().rejection()->retry_after, milliseconds(300));

  try {
    (void)breaker.acquire_or_throw();
    ADD_FAILURE() << "admitted while open";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::errc::circuit_open);
    EXPECT_EQ(e.kind(), ErrorKind::transient_not_sent);
    ASSERT_TRUE(e.retry_after().has_value());
    EXPECT_EQ(*e.retry_after(), milliseconds(300));
    EXPECT_NE(std::string(e.what()).find("test-endpoint"), std::string::npos) << e.what();
  }
  EXPECT_EQ(breaker.stats().rejected, 4u);
}

TEST_F(CircuitBreakerTest, OpenToHalfOpenExactlyAtTheEndOfThePeriod) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  const auto gen_open = breaker.generation();
  clock_.advance(milliseconds(500) - nanoseconds(1));
  EXPECT_EQ(breaker.state(), CircuitState::open);
  auto rejected = breaker.try_acquire();
  ASSERT_FALSE(rejected.admitted());
  EXPECT_EQ(rejected.rejection()->retry_after, milliseconds(1));
  EXPECT_EQ(breaker.remaining_open_time(), nanoseconds(1));

  clock_.advance(nanoseconds(1));
  EXPECT_EQ(breaker.remaining_open_time(), nanoseconds(0));
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  EXPECT_EQ(breaker.generation(), gen_open + 1);
  auto probe = breaker.try_acquire();
  EXPECT_TRUE(probe.admitted());
}

TEST_F(CircuitBreakerTest, TryAcquireAloneMovesOpenToHalfOpen) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  clock_.advance(std::chrono::hours(1));
  auto probe = breaker.try_acquire();  // no state() call in between
  EXPECT_TRUE(probe.admitted());
  EXPECT_EQ(breaker.stats().probes_in_flight, 1u);
}

// ---- half-open -------------------------------------------------------------------------------

TEST_F(CircuitBreakerTest, HalfOpenAdmitsExactlyProbesOf100ConcurrentAcquirers_F32) {
  for (std::size_t probes : {1u, 3u}) {
    FakeClock clock;
    Config config = small_config();
    config.half_open_probes = probes;
    CircuitBreaker breaker(config, clock, random_);
    trip_from_closed(breaker);
    wait_open_period(breaker, clock);

    std::vector<Permit> in_flight;
    std::size_t rejected = 0;
    for (int i = 0; i < 100; ++i) {
      auto admission = breaker.try_acquire();
      if (admission.admitted()) {
        in_flight.push_back(std::move(admission).permit());
      } else {
        ++rejected;
        EXPECT_EQ(admission.rejection()->state, CircuitState::half_open);
        EXPECT_EQ(admission.rejection()->retry_after, milliseconds(0));
      }
    }
    EXPECT_EQ(in_flight.size(), probes);
    EXPECT_EQ(rejected, 100u - probes);
    EXPECT_EQ(breaker.stats().probes_in_flight, probes);
    EXPECT_EQ(breaker.state(), CircuitState::half_open);
  }
}

TEST_F(CircuitBreakerTest, HalfOpenRejectionThrowsWithZeroRetryAfter) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  Permit probe = breaker.acquire_or_throw();
  try {
    (void)breaker.acquire_or_throw();
    ADD_FAILURE() << "second probe admitted";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::errc::circuit_open);
    EXPECT_EQ(e.retry_after(), milliseconds(0));
    EXPECT_NE(std::string(e.what()).find("half-open"), std::string::npos) << e.what();
  }
}

TEST_F(CircuitBreakerTest, ProbeFailureReopensWithLongerPeriodBoundedByCap) {
  CircuitBreaker breaker(small_config(), clock_, random_);  // ceilings 1, 2, 4, 8, 8 s; u = 0
  trip_from_closed(breaker);
  const milliseconds expected[] = {milliseconds(500),  milliseconds(1000), milliseconds(2000),
                                   milliseconds(4000), milliseconds(4000), milliseconds(4000)};
  EXPECT_EQ(breaker.last_open_period(), expected[0]);
  for (std::size_t i = 1; i < std::size(expected); ++i) {
    wait_open_period(breaker, clock_);
    breaker.acquire_or_throw().record(ErrorKind::transient_not_sent);
    EXPECT_EQ(breaker.state(), CircuitState::open);
    EXPECT_EQ(breaker.last_open_period(), expected[i]) << i;
    EXPECT_EQ(breaker.try_acquire().rejection()->retry_after, expected[i]);
    EXPECT_EQ(breaker.stats().consecutive_trips, i + 1);
  }
  EXPECT_EQ(breaker.stats().trips, std::size(expected));
}

TEST_F(CircuitBreakerTest, ProbeSuccessesCloseWithEmptyWindowAndResetTrips) {
  Config config = small_config();
  config.half_open_probes = 2;
  CircuitBreaker breaker(config, clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  breaker.acquire_or_throw().failure();  // second trip: 1000 ms
  wait_open_period(breaker, clock_);

  Permit a = breaker.acquire_or_throw();
  Permit b = breaker.acquire_or_throw();
  a.success();
  EXPECT_EQ(breaker.state(), CircuitState::half_open);  // needs 2 successes
  Permit c = breaker.acquire_or_throw();                // a's slot is free again
  b.success();
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  const auto stats = breaker.stats();
  EXPECT_EQ(stats.window_calls, 0u);
  EXPECT_EQ(stats.consecutive_trips, 0u);
  EXPECT_EQ(stats.probes_in_flight, 0u);
  c.success();  // admitted in half-open: stale now
  EXPECT_EQ(breaker.stats().stale, 1u);
  EXPECT_EQ(breaker.stats().window_calls, 0u);

  // The next trip starts again from the base period.
  trip_from_closed(breaker);
  EXPECT_EQ(breaker.last_open_period(), milliseconds(500));
}

TEST_F(CircuitBreakerTest, IgnoredProbeReleasesItsSlotWithoutClosing) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  breaker.acquire_or_throw().record(ErrorKind::permanent);
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  breaker.acquire_or_throw().record(ErrorKind::cancelled);
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  breaker.acquire_or_throw().success();
  EXPECT_EQ(breaker.state(), CircuitState::closed);
}

TEST_F(CircuitBreakerTest, DestroyedPermitReleasesHalfOpenSlot) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  const auto ignored_before = breaker.stats().ignored;
  {
    Permit probe = breaker.acquire_or_throw();
    EXPECT_FALSE(breaker.try_acquire().admitted());
  }  // abandoned, e.g. the coroutine was cancelled
  EXPECT_EQ(breaker.stats().probes_in_flight, 0u);
  EXPECT_EQ(breaker.stats().ignored, ignored_before + 1);
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  auto next = breaker.try_acquire();
  EXPECT_TRUE(next.admitted());
}

TEST_F(CircuitBreakerTest, PermitMoveSemantics) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);

  Permit a = breaker.acquire_or_throw();
  Permit b(std::move(a));
  EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_TRUE(b.active());
  a.failure();  // empty: no effect
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  EXPECT_EQ(breaker.stats().probes_in_flight, 1u);

  Permit c;
  EXPECT_FALSE(c);
  c = std::move(b);  // the slot moves along
  EXPECT_EQ(breaker.stats().probes_in_flight, 1u);
  c = Permit();  // move-assigning over an active permit drops it (ignored)
  EXPECT_EQ(breaker.stats().probes_in_flight, 0u);

  Permit d = breaker.acquire_or_throw();
  d.success();
  d.failure();  // second report: no effect
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  EXPECT_EQ(breaker.stats().failures, 5u);  // the trip's 5 only
}

// ---- generations (F32) -----------------------------------------------------------------------

TEST_F(CircuitBreakerTest, LateResultsOfOldGenerationNeitherCloseNorReopenNorCount_F32) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  std::vector<Permit> slow;  // admitted while closed; their replies come late
  slow.reserve(6);
  for (int i = 0; i < 6; ++i) {
    slow.push_back(breaker.acquire_or_throw());
  }
  const auto gen_closed = breaker.generation();
  trip_from_closed(breaker);
  const auto before = breaker.stats();

  // While open: late successes do not close it, late failures do not extend it.
  const auto remaining = breaker.remaining_open_time();
  slow[0].success();
  slow[1].failure();
  EXPECT_EQ(breaker.state(), CircuitState::open);
  EXPECT_EQ(breaker.remaining_open_time(), remaining);

  wait_open_period(breaker, clock_);
  const auto gen_half_open = breaker.generation();
  Permit probe = breaker.acquire_or_throw();

  // While half-open: a late success does not close it nor free the probe's slot; a late
  // failure does not re-open it; a late drop does not free a slot either.
  slow[2].success();
  slow[3].success();
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  slow[4].record(ErrorKind::outcome_unknown);
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  slow[5] = Permit();
  EXPECT_EQ(breaker.stats().probes_in_flight, 1u);
  EXPECT_FALSE(breaker.try_acquire().admitted());
  EXPECT_EQ(breaker.generation(), gen_half_open);

  const auto after = breaker.stats();
  EXPECT_EQ(after.stale, before.stale + 6);
  EXPECT_EQ(after.successes, before.successes);
  EXPECT_EQ(after.failures, before.failures);
  EXPECT_EQ(after.ignored, before.ignored);
  EXPECT_EQ(after.trips, before.trips);
  EXPECT_NE(gen_closed, gen_half_open);

  // The real probe still decides.
  probe.success();
  EXPECT_EQ(breaker.state(), CircuitState::closed);
}

TEST_F(CircuitBreakerTest, LateProbeResultAfterAnotherProbeReopenedIsStale) {
  Config config = small_config();
  config.half_open_probes = 2;
  CircuitBreaker breaker(config, clock_, random_);
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  Permit a = breaker.acquire_or_throw();
  Permit b = breaker.acquire_or_throw();
  a.failure();
  EXPECT_EQ(breaker.state(), CircuitState::open);
  wait_open_period(breaker, clock_);
  Permit c = breaker.acquire_or_throw();
  b.success();  // from the previous half-open period
  EXPECT_EQ(breaker.state(), CircuitState::half_open);
  EXPECT_EQ(breaker.stats().probes_in_flight, 1u);
  EXPECT_EQ(breaker.stats().stale, 1u);
  c.success();
  EXPECT_EQ(breaker.state(), CircuitState::half_open);  // needs 2 current-generation successes
  breaker.acquire_or_throw().success();
  EXPECT_EQ(breaker.state(), CircuitState::closed);
}

TEST_F(CircuitBreakerTest, LateResultsInANewClosedPeriodDoNotCount) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  std::vector<Permit> slow;
  slow.reserve(5);
  for (int i = 0; i < 5; ++i) {
    slow.push_back(breaker.acquire_or_throw());
  }
  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  breaker.acquire_or_throw().success();
  ASSERT_EQ(breaker.state(), CircuitState::closed);
  for (auto& permit : slow) {
    permit.failure();  // 5 failures >= min_calls, but stale
  }
  EXPECT_EQ(breaker.state(), CircuitState::closed);
  EXPECT_EQ(breaker.stats().window_calls, 0u);
}

// ---- open period growth and jitter -----------------------------------------------------------

TEST_F(CircuitBreakerTest, OpenPeriodGrowsAndIsCappedWithEqualJitterBounds) {
  // Defaults: ceilings 1, 2, 4, 8, 16, 30, 30, ... s.
  const std::int64_t ceilings[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
  for (double u : {0.0, 0.999}) {
    FakeClock clock;
    FixedRandom random(u);
    CircuitBreaker breaker(Config{}, clock, random);
    trip_from_closed(breaker);
    for (std::size_t i = 0; i < std::size(ceilings); ++i) {
      if (i > 0) {
        wait_open_period(breaker, clock);
        breaker.acquire_or_throw().failure();
      }
      const auto period = breaker.last_open_period();
      const auto ceiling = milliseconds(ceilings[i]);
      EXPECT_EQ(period, expected_period(ceilings[i], u)) << "u=" << u << " trip " << i;
      EXPECT_GE(period, ceiling / 2) << "never below half the ceiling";
      EXPECT_LE(period, ceiling);
      if (u == 0.0) {
        EXPECT_EQ(period, ceiling / 2);
      }
      if (u > 0.5) {
        EXPECT_GE(period,
                  milliseconds(static_cast<std::int64_t>(0.999 * ceilings[i])) - milliseconds(1));
      }
    }
  }
}

TEST_F(CircuitBreakerTest, JitterIsDrawnPerTrip) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  random_.set(0.5);
  trip_from_closed(breaker);
  EXPECT_EQ(breaker.last_open_period(), milliseconds(750));  // 500 + 0.5 * 500
  wait_open_period(breaker, clock_);
  random_.set(0.0);
  breaker.acquire_or_throw().failure();
  EXPECT_EQ(breaker.last_open_period(), milliseconds(1000));  // ceiling 2000, lower bound
}

// ---- observability ---------------------------------------------------------------------------

TEST_F(CircuitBreakerTest, ListenerCalledOnEachTransition) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  std::vector<std::pair<CircuitState, CircuitState>> seen;
  std::vector<std::uint64_t> generations;
  breaker.set_listener([&](CircuitState from, CircuitState to) {
    seen.emplace_back(from, to);
    generations.push_back(breaker.generation());
  });

  trip_from_closed(breaker);
  wait_open_period(breaker, clock_);
  breaker.acquire_or_throw().failure();
  wait_open_period(breaker, clock_);
  breaker.acquire_or_throw().success();

  const std::vector<std::pair<CircuitState, CircuitState>> expected = {
      {CircuitState::closed, CircuitState::open},
      {CircuitState::open, CircuitState::half_open},
      {CircuitState::half_open, CircuitState::open},
      {CircuitState::open, CircuitState::half_open},
      {CircuitState::half_open, CircuitState::closed},
  };
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(generations, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));  // state already applied
  EXPECT_EQ(breaker.stats().trips, 2u);
}

TEST_F(CircuitBreakerTest, ThrowingListenerDoesNotBreakTheBreaker) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  int calls = 0;
  breaker.set_listener([&](CircuitState, CircuitState) {
    ++calls;
    throw std::runtime_error("log sink down");
  });
  trip_from_closed(breaker);
  EXPECT_EQ(breaker.state(), CircuitState::open);
  wait_open_period(breaker, clock_);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(breaker.stats().listener_errors, 2u);  // counted (and logged), not lost
  breaker.set_listener({});
  breaker.acquire_or_throw().success();
  EXPECT_EQ(breaker.state(), CircuitState::closed);
}

TEST_F(CircuitBreakerTest, StatsCountEveryDecision) {
  CircuitBreaker breaker(small_config(), clock_, random_);
  record_n(breaker, 3, CallOutcome::success);
  record_n(breaker, 2, CallOutcome::ignored);
  record_n(breaker, 3, CallOutcome::failure);  // 3/6 recorded: opens
  ASSERT_EQ(breaker.state(), CircuitState::open);
  EXPECT_FALSE(breaker.try_acquire().admitted());
  EXPECT_FALSE(breaker.try_acquire().admitted());
  const auto stats = breaker.stats();
  EXPECT_EQ(stats.admitted, 8u);
  EXPECT_EQ(stats.successes, 3u);
  EXPECT_EQ(stats.failures, 3u);
  EXPECT_EQ(stats.ignored, 2u);
  EXPECT_EQ(stats.stale, 0u);
  EXPECT_EQ(stats.trips, 1u);
  EXPECT_EQ(stats.rejected, 2u);
  EXPECT_EQ(stats.window_calls, 0u);  // cleared by the transition
  EXPECT_EQ(stats.consecutive_trips, 1u);
}

}  // namespace

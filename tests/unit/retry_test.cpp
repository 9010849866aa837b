#include <trading_shared/core/retry.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "support/async_test.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::ErrorKind;
using ts::core::Idempotent;
using ts::core::RetryReason;

namespace {

ts::core::RetryPolicy policy(std::uint32_t attempts = 3) {
  ts::core::RetryPolicy p;
  p.max_attempts = attempts;
  p.backoff = {1ms, 4ms, 2.0};
  p.total_deadline = 10s;
  return p;
}

// ---- decide_retry: every error kind x idempotency ----------------------------------------

struct DecisionRow {
  ErrorKind kind;
  Idempotent idempotent;
  bool retry;
  RetryReason reason;
};

const DecisionRow kDecisionRows[] = {
    {ErrorKind::transient_not_sent, Idempotent::no, true, RetryReason::retry},
    {ErrorKind::transient_not_sent, Idempotent::yes, true, RetryReason::retry},
    {ErrorKind::transient_conflict, Idempotent::no, true, RetryReason::retry},
    {ErrorKind::transient_conflict, Idempotent::yes, true, RetryReason::retry},
    {ErrorKind::transient_unavailable, Idempotent::no, true, RetryReason::retry},
    {ErrorKind::transient_unavailable, Idempotent::yes, true, RetryReason::retry},
    {ErrorKind::outcome_unknown, Idempotent::no, false, RetryReason::not_idempotent},
    {ErrorKind::outcome_unknown, Idempotent::yes, true, RetryReason::retry},
    {ErrorKind::permanent, Idempotent::no, false, RetryReason::permanent},
    {ErrorKind::permanent, Idempotent::yes, false, RetryReason::permanent},
    {ErrorKind::cancelled, Idempotent::no, false, RetryReason::cancelled},
    {ErrorKind::cancelled, Idempotent::yes, false, RetryReason::cancelled},
};

class RetryDecisionTable : public ::testing::TestWithParam<DecisionRow> {};

TEST_P(RetryDecisionTable, KindTimesIdempotency) {
  const auto& row = GetParam();
  const auto d = ts::core::decide_retry(row.kind, row.idempotent, 1, policy(), 5s, 3ms);
  EXPECT_EQ(d.retry, row.retry) << ts::to_string(row.kind);
  EXPECT_EQ(d.reason, row.reason) << ts::to_string(row.kind);
  if (d.retry) {
    EXPECT_EQ(d.delay, 3ms);
  }
}

INSTANTIATE_TEST_SUITE_P(AllRows, RetryDecisionTable, ::testing::ValuesIn(kDecisionRows),
                         [](const auto& p) {
                           return std::string(ts::to_string(p.param.kind)) +
                                  (p.param.idempotent == Idempotent::yes ? "_idempotent"
                                                                         : "_not_idempotent");
                         });

TEST(RetryDecision, AttemptsAreCapped) {
  const auto p = policy(3);
  EXPECT_TRUE(
      ts::core::decide_retry(ErrorKind::transient_unavailable, Idempotent::yes, 2, p, 5s, 1ms)
          .retry);
  const auto d =
      ts::core::decide_retry(ErrorKind::transient_unavailable, Idempotent::yes, 3, p, 5s, 1ms);
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, RetryReason::attempts_exhausted);
  // max_attempts = 1 never retries; 0 is treated as 1.
  EXPECT_FALSE(
      ts::core::decide_retry(ErrorKind::transient_not_sent, Idempotent::yes, 1, policy(1), 5s, 1ms)
          .retry);
  EXPECT_FALSE(
      ts::core::decide_retry(ErrorKind::transient_not_sent, Idempotent::yes, 1, policy(0), 5s, 1ms)
          .retry);
}

TEST(RetryDecision, DelayMustFitTheDeadline) {
  const auto d = ts::core::decide_retry(ErrorKind::transient_not_sent, Idempotent::yes, 1, policy(),
                                        10ms, 10ms);
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, RetryReason::deadline_exhausted);
  EXPECT_TRUE(ts::core::decide_retry(ErrorKind::transient_not_sent, Idempotent::yes, 1, policy(),
                                     11ms, 10ms)
                  .retry);
  auto no_deadline = policy();
  no_deadline.total_deadline = 0ms;
  EXPECT_TRUE(ts::core::decide_retry(ErrorKind::transient_not_sent, Idempotent::yes, 1, no_deadline,
                                     0ms, 10ms)
                  .retry);
}

// ---- the retry helper, on a real io_context ----------------------------------------------

TEST(RetryHelper, RetriesTransientUntilSuccess) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    int calls = 0;
    const int value = co_await ts::core::retry(
        [&](const ts::core::AttemptContext& ctx) -> asio::awaitable<int> {
          ++calls;
          EXPECT_EQ(ctx.attempt, static_cast<std::uint32_t>(calls));
          if (calls < 3) throw ts::Error(ts::errc::connect_failed, "connect");
          co_return 42;
        },
        Idempotent::no, policy(3), random, {"test.op"});
    EXPECT_EQ(value, 42);
    EXPECT_EQ(calls, 3);
  });
}

TEST(RetryHelper, PermanentErrorIsTriedExactlyOnce) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    int calls = 0;
    ts::core::MetricsRegistry metrics;
    try {
      co_await ts::core::retry(
          [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
            ++calls;
            throw ts::Error(
                ts::ServerError{ts::ServerKind::postgres, "42601", "syntax error", "", ""},
                ErrorKind::permanent, "query");
            co_return;
          },
          Idempotent::yes, policy(5), random, {"test.permanent", &metrics});
      ADD_FAILURE() << "expected an error";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::permanent);
      EXPECT_EQ(e.server().value_or(ts::ServerError{}).code, "42601");  // rethrown unchanged
    }
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(metrics.counter("ts_retry_give_ups_total{op=\"test.permanent\",reason=\"permanent\"}")
                  .value(),
              1u);
    EXPECT_EQ(metrics.counter("ts_retries_total{op=\"test.permanent\"}").value(), 0u);
  });
}

TEST(RetryHelper, OutcomeUnknownRetriedOnlyWhenIdempotent) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    for (auto idempotent : {Idempotent::no, Idempotent::yes}) {
      int calls = 0;
      try {
        co_await ts::core::retry(
            [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
              ++calls;
              throw ts::Error(ts::errc::connection_lost, "write", ts::RequestState::sent);
              co_return;
            },
            idempotent, policy(4), random, {"test.unknown"});
        ADD_FAILURE() << "expected an error";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::outcome_unknown);
      }
      EXPECT_EQ(calls, idempotent == Idempotent::yes ? 4 : 1);
    }
  });
}

TEST(RetryHelper, UnknownExceptionsAreNotRetried) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    int calls = 0;
    EXPECT_THROW(co_await ts::core::retry(
                     [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
                       ++calls;
                       throw std::logic_error("bug");
                       co_return;
                     },
                     Idempotent::yes, policy(5), random),
                 std::logic_error);
    EXPECT_EQ(calls, 1);
  });
}

TEST(RetryHelper, HungAttemptTimesOutWithinItsShareOfTheDeadline) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    auto p = policy(2);
    p.total_deadline = 400ms;
    int calls = 0;
    const auto start = std::chrono::steady_clock::now();
    const int value = co_await ts::core::retry(
        [&](const ts::core::AttemptContext& ctx) -> asio::awaitable<int> {
          ++calls;
          if (ctx.attempt == 1) {
            EXPECT_LE(ctx.budget, 200ms);  // half of the deadline for the first of two attempts
            asio::steady_timer hang(co_await asio::this_coro::executor, 1h);
            co_await hang.async_wait(asio::use_awaitable);  // cancelled by the budget
          }
          co_return 7;
        },
        Idempotent::yes, p, random, {"test.hung"});
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(value, 7);
    EXPECT_EQ(calls, 2);
    EXPECT_GE(took, 190ms);
    EXPECT_LT(took, 2s);
  });
}

// F48: an attempt is never given less than min_attempt_budget (an operation that runs within
// its own timeout is not cut at its share of the total deadline); a further attempt is still
// made only while the total deadline allows.
TEST(RetryHelper, MinAttemptBudgetIsAFloorOfEveryAttempt) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    auto p = policy(3);
    p.total_deadline = 300ms;
    p.min_attempt_budget = 2s;
    int calls = 0;
    const int value = co_await ts::core::retry(
        [&](const ts::core::AttemptContext& ctx) -> asio::awaitable<int> {
          ++calls;
          EXPECT_GE(ctx.budget, 2s);
          // Longer than the even share (100 ms) and the whole deadline, within the floor.
          asio::steady_timer slow(co_await asio::this_coro::executor, 400ms);
          co_await slow.async_wait(asio::use_awaitable);
          co_return 7;
        },
        Idempotent::yes, p, random, {"test.floor"});
    EXPECT_EQ(value, 7);
    EXPECT_EQ(calls, 1);

    // A failure after the total deadline has passed: no further attempt.
    calls = 0;
    EXPECT_THROW(co_await ts::core::retry(
                     [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
                       ++calls;
                       asio::steady_timer slow(co_await asio::this_coro::executor, 400ms);
                       co_await slow.async_wait(asio::use_awaitable);
                       throw ts::Error(ts::errc::connect_failed, "refused",
                                       ts::RequestState::not_sent);
                     },
                     Idempotent::yes, p, random, {"test.floor"}),
                 ts::Error);
    EXPECT_EQ(calls, 1);
  });
}

TEST(RetryHelper, TotalDeadlineBoundsTheWholeRun) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    ts::core::DefaultRandom random(7);
    auto p = policy(1000);
    p.backoff = {5ms, 20ms, 2.0};
    p.total_deadline = 300ms;
    int calls = 0;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(co_await ts::core::retry(
                     [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
                       ++calls;
                       throw ts::Error(ts::errc::connect_failed, "connect");
                       co_return;
                     },
                     Idempotent::yes, p, random, {"test.deadline"}),
                 ts::Error);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_LT(took, 1s);
    EXPECT_GT(calls, 2);
    EXPECT_LT(calls, 1000);
  });
}

TEST(RetryHelper, CancellationStopsRetrying) {
  asio::io_context io;
  ts::core::DefaultRandom random(7);
  asio::cancellation_signal cancel;
  int calls = 0;
  std::exception_ptr result;
  bool done = false;
  auto p = policy(100);
  p.backoff = {200ms, 200ms, 1.0};
  p.total_deadline = 0ms;
  asio::co_spawn(io,
                 ts::core::retry(
                     [&](const ts::core::AttemptContext&) -> asio::awaitable<void> {
                       ++calls;
                       throw ts::Error(ts::errc::connect_failed, "connect");
                       co_return;
                     },
                     Idempotent::yes, p, random, {"test.cancel"}),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                   result = e;
                   done = true;
                 }));
  asio::steady_timer timer(io, 50ms);
  timer.async_wait(
      [&](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
  io.run_for(5s);
  ASSERT_TRUE(done);
  ASSERT_TRUE(result);
  EXPECT_EQ(ts::classify(result), ErrorKind::cancelled);
  EXPECT_LE(calls, 2);
}

// ---- with_timeout ------------------------------------------------------------------------

asio::awaitable<int> sleep_then(std::chrono::milliseconds d, int value) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
  co_return value;
}

TEST(WithTimeout, CompletesBeforeDeadline) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    EXPECT_EQ(co_await ts::core::with_timeout(sleep_then(1ms, 5), 1s), 5);
  });
}

TEST(WithTimeout, ThrowsItsCodeAndCancelsTheOperation) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    const auto start = std::chrono::steady_clock::now();
    try {
      co_await ts::core::with_timeout(sleep_then(1h, 5), 50ms, ts::errc::request_timeout, "GET x");
      ADD_FAILURE() << "expected a timeout";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::errc::request_timeout);
      EXPECT_EQ(e.kind(), ErrorKind::outcome_unknown);
      EXPECT_NE(std::string(e.what()).find("GET x"), std::string::npos);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  });
}

TEST(WithTimeout, ZeroMeansNone) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    EXPECT_EQ(co_await ts::core::with_timeout(sleep_then(20ms, 9), 0ms), 9);
  });
}

TEST(WithTimeout, PropagatesTheOperationsError) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    auto failing = []() -> asio::awaitable<void> {
      throw std::runtime_error("inner");
      co_return;
    };
    EXPECT_THROW(co_await ts::core::with_timeout(failing(), 1s), std::runtime_error);
  });
}

TEST(WithTimeout, OuterCancellationReachesTheOperation) {
  asio::io_context io;
  asio::cancellation_signal cancel;
  std::exception_ptr result;
  bool done = false;
  asio::co_spawn(io, ts::core::with_timeout(sleep_then(1h, 1), 1h),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, int) {
                   result = e;
                   done = true;
                 }));
  asio::steady_timer timer(io, 20ms);
  timer.async_wait(
      [&](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
  io.run_for(5s);
  ASSERT_TRUE(done) << "cancellation did not reach the wrapped operation";
  EXPECT_EQ(ts::classify(result), ErrorKind::cancelled);
}

}  // namespace

// core::retry_until_stopped (the until-stopped mode of core::retry) and core::reconnect, on a
// real io_context with a fixed random source (delays known in advance).

#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/stop_signal.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include "support/async_test.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::ErrorKind;
using ts::core::Idempotent;
using ts::core::ReconnectEnd;
using Clock = std::chrono::steady_clock;

namespace {

asio::awaitable<void> settle() {
  for (int i = 0; i < 8; ++i) {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
}

ts::Error transient() {
  return ts::Error(ts::errc::connect_failed, "connect");
}

}  // namespace

// ---- retry_until_stopped -----------------------------------------------------------------

TEST(RetryUntilStopped, RetriesTransientErrorsUntilSuccessAndCountsThem) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::StopSignal stop(io.get_executor());
    ts::core::FixedRandom random(0.0);  // every delay 0
    std::uint64_t retries = 0;
    const ts::core::UntilStopped policy{
        .stop = &stop, .backoff = {1ms, 4ms, 2.0}, .random = &random, .retries = &retries};
    int calls = 0;
    const int value = co_await ts::core::retry_until_stopped(
        [&]() -> asio::awaitable<int> {
          if (++calls < 6) throw transient();
          co_return 42;
        },
        Idempotent::no, policy, "test.until");
    EXPECT_EQ(value, 42);
    EXPECT_EQ(calls, 6);  // more than the bounded mode's default of 3
    EXPECT_EQ(retries, 5u);
  });
}

TEST(RetryUntilStopped, NumberByTotalNumbersTheRetriesOfAllCallsTogether) {
  ts::testing::run_coroutine_test([](asio::io_context&) -> asio::awaitable<void> {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
    sink->set_pattern("%l %v");
    auto log = std::make_shared<spdlog::logger>("test.until.total", sink);
    log->set_level(spdlog::level::trace);
    ts::core::FixedRandom random(0.0);
    std::uint64_t retries = 7;  // earlier calls' retries
    const ts::core::UntilStopped policy{.backoff = {1ms, 4ms, 2.0},
                                        .random = &random,
                                        .retries = &retries,
                                        .log = log,
                                        .warn_first = 8,
                                        .number_by_total = true};
    int calls = 0;
    co_await ts::core::retry_until_stopped(
        [&]() -> asio::awaitable<void> {
          if (++calls < 3) throw transient();
          co_return;
        },
        Idempotent::yes, policy, "page");
    EXPECT_EQ(retries, 9u);
    const std::string text = out.str();
    EXPECT_NE(text.find("warning page failed (retry #8 in"), std::string::npos) << text;
    EXPECT_NE(text.find("debug page failed (retry #9 in"), std::string::npos) << text;
    EXPECT_NE(text.find("debug page: succeeded after 2 retries"), std::string::npos) << text;
  });
}

TEST(RetryUntilStopped, DecidesOnTheErrorKind) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::StopSignal stop(io.get_executor());
    ts::core::FixedRandom random(0.0);
    std::uint64_t retries = 0;
    ts::core::UntilStopped policy{
        .stop = &stop, .backoff = {1ms, 4ms, 2.0}, .random = &random, .retries = &retries};
    // Permanent: rethrown at once.
    int calls = 0;
    EXPECT_THROW(co_await ts::core::retry_until_stopped(
                     [&]() -> asio::awaitable<void> {
                       ++calls;
                       throw std::logic_error("bug");
                       co_return;
                     },
                     Idempotent::yes, policy, "test.permanent"),
                 std::logic_error);
    EXPECT_EQ(calls, 1);
    // outcome_unknown: retried only when idempotent.
    for (auto idempotent : {Idempotent::no, Idempotent::yes}) {
      calls = 0;
      bool threw = false;
      try {
        co_await ts::core::retry_until_stopped(
            [&]() -> asio::awaitable<void> {
              if (++calls == 1) {
                throw ts::Error(ts::errc::connection_lost, "write", ts::RequestState::sent);
              }
              co_return;
            },
            idempotent, policy, "test.unknown");
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::outcome_unknown);
        threw = true;
      }
      EXPECT_EQ(threw, idempotent == Idempotent::no);
      EXPECT_EQ(calls, idempotent == Idempotent::yes ? 2 : 1);
    }
    // retry_permanent: permanent errors are waited out too.
    policy.retry_permanent = true;
    calls = 0;
    co_await ts::core::retry_until_stopped(
        [&]() -> asio::awaitable<void> {
          if (++calls < 3) throw std::logic_error("READONLY");
          co_return;
        },
        Idempotent::no, policy, "test.retry_permanent");
    EXPECT_EQ(calls, 3);
  });
}

TEST(RetryUntilStopped, AStopDuringTheBackoffEndsItWithTheLastError) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::StopSignal stop(io.get_executor());
    ts::core::FixedRandom random(0.99);  // the longest delay: 30 s
    std::uint64_t retries = 0;
    const ts::core::UntilStopped policy{
        .stop = &stop, .backoff = {30s, 30s, 1.0}, .random = &random, .retries = &retries};
    int calls = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          while (calls == 0) co_await settle();
          stop.request_stop();
        },
        asio::detached);
    const auto start = Clock::now();
    EXPECT_THROW(co_await ts::core::retry_until_stopped(
                     [&]() -> asio::awaitable<void> {
                       ++calls;
                       throw transient();
                       co_return;
                     },
                     Idempotent::yes, policy, "test.stop"),
                 ts::Error);
    EXPECT_LT(Clock::now() - start, 10s);
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(retries, 1u);
    // Stopped already: a failure is not retried.
    calls = 0;
    EXPECT_THROW(co_await ts::core::retry_until_stopped(
                     [&]() -> asio::awaitable<void> {
                       ++calls;
                       throw transient();
                       co_return;
                     },
                     Idempotent::yes, policy, "test.stopped"),
                 ts::Error);
    EXPECT_EQ(calls, 1);
  });
}

TEST(RetryUntilStopped, RetryAfterIsAFloorOfTheDelay) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::StopSignal stop(io.get_executor());
    ts::core::FixedRandom random(0.0);
    const ts::core::UntilStopped policy{
        .stop = &stop, .backoff = {1ms, 5s, 2.0}, .random = &random};
    int calls = 0;
    const auto start = Clock::now();
    co_await ts::core::retry_until_stopped(
        [&]() -> asio::awaitable<void> {
          if (++calls == 1) throw transient().with_retry_after(30ms);  // a breaker's hint
          co_return;
        },
        Idempotent::yes, policy, "test.retry_after");
    EXPECT_GE(Clock::now() - start, 30ms);
  });
}

TEST(RetryUntilStopped, CancellationIsNotRetried) {
  asio::io_context io;
  ts::core::StopSignal stop(io.get_executor());
  ts::core::FixedRandom random(0.99);
  const ts::core::UntilStopped policy{.stop = &stop, .backoff = {30s, 30s, 1.0}, .random = &random};
  asio::cancellation_signal cancel;
  int calls = 0;
  std::exception_ptr result;
  bool done = false;
  asio::co_spawn(io,
                 ts::core::retry_until_stopped(
                     [&]() -> asio::awaitable<void> {
                       ++calls;
                       throw transient();
                       co_return;
                     },
                     Idempotent::yes, policy, "test.cancel"),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                   result = e;
                   done = true;
                 }));
  asio::post(io, [&] { asio::post(io, [&] { cancel.emit(asio::cancellation_type::terminal); }); });
  io.run_for(5s);
  ASSERT_TRUE(done);
  ASSERT_TRUE(result);
  EXPECT_EQ(ts::classify(result), ErrorKind::cancelled);
  EXPECT_EQ(calls, 1);
}

// ---- reconnect -----------------------------------------------------------------------------

TEST(Reconnect, ConnectsAfterFailuresCountingEach) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.0);
    ts::core::Backoff backoff({1ms, 4ms, 2.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    std::uint64_t failures = 0;
    int calls = 0;
    const auto r = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds budget) -> asio::awaitable<void> {
          EXPECT_EQ(budget, 0ms);  // neither deadline nor attempt timeout
          if (++calls < 4) throw transient();
          co_return;
        },
        backoff, {}, {.what = "test connect", .failures = &failures}, [] { return false; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::connected);
    EXPECT_EQ(r.attempts, 4u);
    EXPECT_EQ(failures, 3u);
    EXPECT_EQ(backoff.attempts(), 3u);  // the caller resets it after a connection that lasted
  });
}

TEST(Reconnect, PermanentErrorEndsTheStartUpButIsWaitedOutWhenRunning) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.0);
    ts::core::Backoff backoff({1ms, 4ms, 2.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    int calls = 0;
    auto connect = [&](std::chrono::milliseconds) -> asio::awaitable<void> {
      if (++calls < 3) throw std::logic_error("wrong password");
      co_return;
    };
    EXPECT_THROW((void)co_await ts::core::reconnect(
                     connect, backoff, {}, {}, [] { return false; }, wake),
                 std::logic_error);
    EXPECT_EQ(calls, 1);

    std::vector<ErrorKind> reported;
    ts::core::ReconnectObserver observer;
    observer.on_failure = [&](const std::exception_ptr&, ErrorKind kind) {
      reported.push_back(kind);
    };
    ts::core::ReconnectPolicy running;
    running.permanent_ends = false;
    const auto r = co_await ts::core::reconnect(
        connect, backoff, running, observer, [] { return false; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::connected);
    EXPECT_EQ(reported, (std::vector<ErrorKind>{ErrorKind::permanent}));
  });
}

TEST(Reconnect, DeadlineBoundsTheAttemptsAndTheirBudget) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.99);
    ts::core::Backoff backoff({10ms, 10ms, 1.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    ts::core::ReconnectPolicy policy;
    policy.deadline = 50ms;
    policy.attempt_timeout = 1s;
    std::vector<std::chrono::milliseconds> budgets;
    const auto start = Clock::now();
    const auto r = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds budget) -> asio::awaitable<void> {
          budgets.push_back(budget);
          throw transient();
          co_return;
        },
        backoff, policy, {}, [] { return false; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::deadline);
    EXPECT_GE(Clock::now() - start, 50ms);
    EXPECT_GE(r.attempts, 2u);
    EXPECT_EQ(r.attempts, budgets.size());
    EXPECT_EQ(r.last_cause, "connect: connect failed");
    EXPECT_TRUE(r.last_error);
    for (const auto b : budgets) {
      EXPECT_GE(b, 1ms);
      EXPECT_LE(b, 50ms);  // cut to the time left, never the 1 s attempt timeout
    }
  });
}

TEST(Reconnect, AStopEndsTheWaitAtOnce) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.99);
    ts::core::Backoff backoff({30s, 30s, 1.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    bool stopped = false;
    int calls = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          while (calls == 0) co_await settle();
          co_await settle();
          stopped = true;
          wake.notify_all();
        },
        asio::detached);
    const auto start = Clock::now();
    const auto r = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds) -> asio::awaitable<void> {
          ++calls;
          throw transient();
          co_return;
        },
        backoff, {}, {}, [&] { return stopped; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::stopped);
    EXPECT_EQ(calls, 1);
    EXPECT_LT(Clock::now() - start, 10s);
    // pause_first: stopped before the first attempt, nothing is tried.
    ts::core::ReconnectPolicy running;
    running.pause_first = true;
    const auto none = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds) -> asio::awaitable<void> {
          ++calls;
          co_return;
        },
        backoff, running, {}, [&] { return stopped; }, wake);
    EXPECT_EQ(none.end, ReconnectEnd::stopped);
    EXPECT_EQ(none.attempts, 0u);
    EXPECT_EQ(calls, 1);
  });
}

TEST(Reconnect, CancellationOfTheWaitIsRethrown) {
  asio::io_context io;
  ts::core::FixedRandom random(0.99);
  ts::core::Backoff backoff({30s, 30s, 1.0}, random);
  ts::core::AsyncEvent wake(io.get_executor());
  asio::cancellation_signal cancel;
  std::exception_ptr result;
  bool done = false;
  asio::co_spawn(io,
                 ts::core::reconnect(
                     [&](std::chrono::milliseconds) -> asio::awaitable<void> {
                       throw transient();
                       co_return;
                     },
                     backoff, {}, {}, [] { return false; }, wake),
                 asio::bind_cancellation_slot(cancel.slot(),
                                              [&](std::exception_ptr e, ts::core::ReconnectResult) {
                                                result = e;
                                                done = true;
                                              }));
  asio::post(io, [&] { asio::post(io, [&] { cancel.emit(asio::cancellation_type::terminal); }); });
  io.run_for(5s);
  ASSERT_TRUE(done);
  ASSERT_TRUE(result);
  EXPECT_EQ(ts::classify(result), ErrorKind::cancelled);
}

TEST(Reconnect, AFailureOnceStoppedEndsItUncounted) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.0);
    ts::core::Backoff backoff({1ms, 1ms, 1.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    bool stopped = false;
    std::uint64_t failures = 0;
    int reported = 0;
    ts::core::ReconnectObserver observer;
    observer.failures = &failures;
    observer.on_failure = [&](const std::exception_ptr&, ErrorKind) { ++reported; };
    ts::core::ReconnectPolicy running;
    running.permanent_ends = false;
    // close() cuts the attempt short: the attempt fails with an operation_aborted.
    const auto r = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds) -> asio::awaitable<void> {
          stopped = true;
          throw boost::system::system_error(asio::error::operation_aborted);
          co_return;
        },
        backoff, running, observer, [&] { return stopped; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::stopped);
    EXPECT_EQ(r.attempts, 1u);
    EXPECT_EQ(failures, 0u);
    EXPECT_EQ(reported, 0);
  });
}

TEST(Reconnect, ACancelledClassErrorOfTheAttemptAloneIsRetried) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::FixedRandom random(0.0);
    ts::core::Backoff backoff({1ms, 1ms, 1.0}, random);
    ts::core::AsyncEvent wake(io.get_executor());
    std::uint64_t failures = 0;
    int calls = 0;
    ts::core::ReconnectObserver observer;
    observer.failures = &failures;
    // Neither the loop was cancelled nor the owner stopped: an ordinary failure, retried.
    const auto r = co_await ts::core::reconnect(
        [&](std::chrono::milliseconds) -> asio::awaitable<void> {
          if (++calls < 3) throw boost::system::system_error(asio::error::operation_aborted);
          co_return;
        },
        backoff, {}, observer, [] { return false; }, wake);
    EXPECT_EQ(r.end, ReconnectEnd::connected);
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(failures, 2u);
  });
}

TEST(Reconnect, TheCauseOfASystemErrorHasNoSourceLocation) {
  const auto error = std::make_exception_ptr(
      boost::system::system_error(asio::error::connection_refused, "connect"));
  EXPECT_EQ(ts::core::detail::describe(error), "Connection refused");
  EXPECT_EQ(ts::core::detail::describe(std::make_exception_ptr(transient())),
            "connect: connect failed");
}

// core::AsyncEvent, core::StopSignal and core::RunState on a real io_context: notifications,
// deadlines, per-operation cancellation, single-flight start and idempotent close.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/run_state.hpp>
#include <trading_shared/core/stop_signal.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include "support/async_test.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::core::AsyncEvent;
using ts::core::CloseTurn;
using ts::core::RunPhase;
using ts::core::RunState;
using ts::core::StartTurn;
using Clock = std::chrono::steady_clock;

namespace {

/// Lets every handler that is ready now run (the waiters reach their wait).
asio::awaitable<void> settle() {
  for (int i = 0; i < 8; ++i)
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

bool is_aborted(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& error) {
    return error.code() == asio::error::operation_aborted;
  } catch (...) {
    return false;
  }
}

}  // namespace

// ---- AsyncEvent ----------------------------------------------------------------------------

TEST(AsyncEvent, NotifyAllWakesEveryCurrentWaiter) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    int woken = 0;
    std::vector<bool> results;
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            results.push_back(co_await event.wait_until(Clock::now() + 30s));
            ++woken;
          },
          asio::detached);
    }
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await event.wait();
          ++woken;
        },
        asio::detached);
    co_await settle();
    EXPECT_EQ(event.waiters(), 4u);
    EXPECT_EQ(woken, 0);
    event.notify_all();
    co_await settle();
    EXPECT_EQ(woken, 4);
    EXPECT_EQ(results, (std::vector<bool>{true, true, true}));
    EXPECT_EQ(event.waiters(), 0u);
  });
}

TEST(AsyncEvent, DeadlinePassesWithoutNotification) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    const auto start = Clock::now();
    EXPECT_FALSE(co_await event.wait_until(start + 20ms));
    EXPECT_GE(Clock::now() - start, 20ms);
    EXPECT_FALSE(co_await event.wait_for(1ms));
    // A deadline in the past: at once.
    EXPECT_FALSE(co_await event.wait_until(start));
    EXPECT_EQ(event.waiters(), 0u);
  });
}

TEST(AsyncEvent, IsNotALatch) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    event.notify_all();  // nobody waits: lost
    EXPECT_FALSE(co_await event.wait_for(20ms));
  });
}

TEST(AsyncEvent, LaterWaiterWaitsForTheNextNotification) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    int first = 0;
    int second = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await event.wait();
          ++first;
          // Registers after the notification that woke it: waits for the next one.
          co_await event.wait();
          ++second;
        },
        asio::detached);
    co_await settle();
    event.notify_all();
    co_await settle();
    EXPECT_EQ(first, 1);
    EXPECT_EQ(second, 0);
    event.notify_all();
    co_await settle();
    EXPECT_EQ(second, 1);
  });
}

TEST(AsyncEvent, PerOperationCancellationThrowsOperationAbortedAndSparesOthers) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    asio::cancellation_signal cancel;
    std::exception_ptr cancelled_result;
    bool cancelled_done = false;
    bool other_notified = false;
    asio::co_spawn(io, event.wait(),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                     cancelled_result = e;
                     cancelled_done = true;
                   }));
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { other_notified = co_await event.wait_for(30s); },
        asio::detached);
    co_await settle();
    EXPECT_EQ(event.waiters(), 2u);
    cancel.emit(asio::cancellation_type::terminal);
    co_await settle();
    EXPECT_TRUE(cancelled_done);
    EXPECT_TRUE(is_aborted(cancelled_result));
    EXPECT_EQ(event.waiters(), 1u);
    EXPECT_FALSE(other_notified);
    event.notify_all();
    co_await settle();
    EXPECT_TRUE(other_notified);
  });
}

TEST(AsyncEvent, CancellingAWaitWithADeadlineThrowsToo) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    AsyncEvent event(io.get_executor());
    asio::cancellation_signal cancel;
    std::exception_ptr result;
    bool done = false;
    asio::co_spawn(io, event.wait_until(Clock::now() + 30s),
                   asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, bool) {
                     result = e;
                     done = true;
                   }));
    co_await settle();
    cancel.emit(asio::cancellation_type::terminal);
    co_await settle();
    EXPECT_TRUE(done);
    EXPECT_TRUE(is_aborted(result));
  });
}

TEST(AsyncEvent, DestroyingTheEventAbortsItsWaits) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    auto event = std::make_unique<AsyncEvent>(io.get_executor());
    std::exception_ptr result;
    bool done = false;
    asio::co_spawn(io, event->wait(), [&](std::exception_ptr e) {
      result = e;
      done = true;
    });
    co_await settle();
    event.reset();
    co_await settle();
    EXPECT_TRUE(done);
    EXPECT_TRUE(is_aborted(result));
  });
}

// ---- StopSignal ----------------------------------------------------------------------------

TEST(StopSignal, StopEndsEverySleepAtOnce) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::StopSignal stop(io.get_executor());
    EXPECT_TRUE(co_await stop.sleep_for(1ms));  // not stopped: the delay passes
    std::vector<bool> results;
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(
          io, [&]() -> asio::awaitable<void> { results.push_back(co_await stop.sleep_for(30s)); },
          asio::detached);
    }
    co_await settle();
    EXPECT_TRUE(results.empty());
    stop.request_stop();
    co_await settle();
    EXPECT_EQ(results, (std::vector<bool>{false, false}));
    EXPECT_TRUE(stop.stop_requested());
    EXPECT_FALSE(co_await stop.sleep_for(30s));  // stopped already: at once
  });
}

// ---- RunState ------------------------------------------------------------------------------

TEST(RunState, SingleFlightStartSharesTheStartUp) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RunState state(io.get_executor());
    std::vector<StartTurn> turns;
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(
          io, [&]() -> asio::awaitable<void> { turns.push_back(co_await state.start_turn()); },
          asio::detached);
    }
    co_await settle();
    // The first runs the start-up, the others wait for it.
    EXPECT_EQ(turns, (std::vector<StartTurn>{StartTurn::run}));
    EXPECT_TRUE(state.is(RunPhase::starting));
    EXPECT_EQ(state.try_start(), StartTurn::in_progress);
    EXPECT_TRUE(state.start_succeeded());
    co_await settle();
    EXPECT_EQ(turns,
              (std::vector<StartTurn>{StartTurn::run, StartTurn::running, StartTurn::running}));
    EXPECT_EQ(co_await state.start_turn(), StartTurn::running);
  });
}

TEST(RunState, FailedStartUpIsSharedAndALaterStartTriesAgain) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RunState state(io.get_executor());
    EXPECT_EQ(co_await state.start_turn(), StartTurn::run);
    int failed = 0;
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(io, state.start_turn(), [&](std::exception_ptr e, StartTurn) {
        try {
          if (e) std::rethrow_exception(e);
        } catch (const std::runtime_error& error) {
          EXPECT_STREQ(error.what(), "server down");
          ++failed;
        }
      });
    }
    co_await settle();
    state.start_failed(std::make_exception_ptr(std::runtime_error("server down")));
    co_await settle();
    EXPECT_EQ(failed, 2);
    EXPECT_TRUE(state.is(RunPhase::idle));
    EXPECT_EQ(co_await state.start_turn(), StartTurn::run);  // a later start() tries again
  });
}

TEST(RunState, CloseIsIdempotentAndStartAfterCloseIsRefused) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RunState never_started(io.get_executor());
    EXPECT_EQ(never_started.close_turn(), CloseTurn::nothing);
    EXPECT_TRUE(never_started.is(RunPhase::closed));
    EXPECT_EQ(co_await never_started.start_turn(), StartTurn::closed);

    RunState state(io.get_executor());
    EXPECT_EQ(co_await state.start_turn(), StartTurn::run);
    EXPECT_TRUE(state.start_succeeded());
    EXPECT_EQ(state.close_turn(), CloseTurn::run);
    EXPECT_TRUE(state.is(RunPhase::closing));
    EXPECT_EQ(state.try_start(), StartTurn::closed);
    // A second close() waits for the first.
    bool second_done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          EXPECT_EQ(state.close_turn(), CloseTurn::other);
          co_await state.wait_until_closed();
          second_done = true;
        },
        asio::detached);
    co_await settle();
    EXPECT_FALSE(second_done);
    state.set(RunPhase::closed);
    co_await settle();
    EXPECT_TRUE(second_done);
    EXPECT_EQ(state.close_turn(), CloseTurn::nothing);
    EXPECT_EQ(co_await state.start_turn(), StartTurn::closed);
  });
}

TEST(RunState, CloseDuringStartUpAbortsIt) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RunState state(io.get_executor());
    EXPECT_EQ(co_await state.start_turn(), StartTurn::run);
    std::optional<StartTurn> waiter;
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { waiter = co_await state.start_turn(); },
        asio::detached);
    co_await settle();
    EXPECT_EQ(state.close_turn(), CloseTurn::starting);
    state.abort_start();
    EXPECT_TRUE(state.is(RunPhase::closing));
    // The start-up sees it and fails; its error is not the waiters' (they see "closed").
    EXPECT_FALSE(state.start_succeeded());
    state.start_failed(std::make_exception_ptr(std::runtime_error("closed during start")));
    co_await settle();
    EXPECT_EQ(waiter, std::optional<StartTurn>(StartTurn::closed));
    EXPECT_TRUE(state.is(RunPhase::closing));
  });
}

TEST(RunState, WaitWhileUntilReportsTheDeadline) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RunState state(io.get_executor());
    EXPECT_EQ(state.try_start(), StartTurn::run);
    EXPECT_FALSE(co_await state.wait_while_until(RunPhase::starting, Clock::now() + 10ms));
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          (void)state.start_succeeded();
          co_return;
        },
        asio::detached);
    EXPECT_TRUE(co_await state.wait_while_until(RunPhase::starting, Clock::now() + 30s));
    EXPECT_TRUE(state.is(RunPhase::running));
  });
}

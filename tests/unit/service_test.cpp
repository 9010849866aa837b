// run_daemon / run_once: exit codes, signals (first graceful, second immediate), run-once
// deadline, resources closed in reverse order on every path. Signals are raised in this
// process while the runner's handlers are installed.
#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace lc = trading_shared::lifecycle;
using namespace std::chrono_literals;

namespace {

struct Recorder {
  std::vector<std::string> events;
};

class Res {
 public:
  Res(std::string name, Recorder& r) : name_(std::move(name)), r_(&r) {}
  asio::awaitable<void> start() {
    r_->events.push_back("start " + name_);
    co_return;
  }
  asio::awaitable<void> close() {
    r_->events.push_back("close " + name_);
    co_return;
  }

 private:
  std::string name_;
  Recorder* r_;
};

asio::awaitable<void> forever() {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  co_await t.async_wait(asio::use_awaitable);
}

asio::awaitable<void> after(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

lc::ServiceOptions options(std::chrono::milliseconds deadline = 0ms) {
  lc::ServiceOptions o;
  o.name = "test-service";
  o.close_timeout = 500ms;
  o.shutdown_timeout = 2s;
  o.deadline = deadline;
  o.exit_process_on_immediate_stop = false;  // the runner runs inside the test binary
  return o;
}

const std::vector<std::string> kOpenedAndClosed{"start a", "start b", "close b", "close a"};

// F54: a resource whose close takes longer than the scope's bound (close_timeout).
struct Watch {
  int destroyed = 0;
  int destroyed_while_closing = 0;
  bool close_ended = false;
};

class SlowClose {
 public:
  SlowClose(Watch& watch, std::chrono::milliseconds takes) : watch_(&watch), takes_(takes) {}
  ~SlowClose() {
    ++watch_->destroyed;
    if (closing_ && !closed_) ++watch_->destroyed_while_closing;
  }
  SlowClose(const SlowClose&) = delete;
  SlowClose& operator=(const SlowClose&) = delete;
  asio::awaitable<void> start() { co_return; }
  asio::awaitable<void> close() {
    closing_ = true;
    asio::steady_timer work(co_await asio::this_coro::executor, takes_);
    co_await work.async_wait(asio::use_awaitable);
    closed_ = true;
    watch_->close_ended = true;
  }

 private:
  Watch* watch_;
  std::chrono::milliseconds takes_;
  bool closing_ = false;
  bool closed_ = false;
};

TEST(Service, ReturnsZeroWhenTheBodyReturnsAndClosesInReverse) {
  Recorder r;
  Res a("a", r), b("b", r);
  const int code = lc::run_once(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await ctx.scope().enter(b, "b");
    ctx.health().ready = true;
  });
  EXPECT_EQ(code, 0);
  EXPECT_EQ(r.events, kOpenedAndClosed);
}

TEST(Service, ExitCodeOneForAFailureAndTwoForBadConfiguration) {
  Recorder r;
  Res a("a", r);
  EXPECT_EQ(lc::run_once(options(),
                         [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
                           co_await ctx.scope().enter(a, "a");
                           throw std::runtime_error("dependency down");
                         }),
            1);
  EXPECT_EQ(r.events, (std::vector<std::string>{"start a", "close a"}));
  EXPECT_EQ(lc::run_daemon(options(),
                           [&](lc::ServiceContext&) -> asio::awaitable<void> {
                             throw trading_shared::core::ConfigError("bad --port");
                             co_return;
                           }),
            2);
}

TEST(Service, RunOnceDeadlineCancelsClosesAndFails) {
  Recorder r;
  Res a("a", r), b("b", r);
  const auto t0 = std::chrono::steady_clock::now();
  const int code =
      lc::run_once(options(100ms), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
        co_await ctx.scope().enter(a, "a");
        co_await ctx.scope().enter(b, "b");
        co_await forever();
      });
  EXPECT_EQ(code, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(r.events, kOpenedAndClosed);
}

TEST(Service, FirstSignalStopsADaemonGracefullyWithExitZero) {
  Recorder r;
  Res a("a", r), b("b", r);
  bool saw_stopping = false;
  const int code = lc::run_daemon(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await ctx.scope().enter(b, "b");
    co_await after(20ms);
    std::raise(SIGTERM);
    try {
      co_await forever();
    } catch (...) {
      saw_stopping = ctx.stopping();
      throw;
    }
  });
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(saw_stopping);
  EXPECT_EQ(r.events, kOpenedAndClosed);
}

TEST(Service, SecondSignalForcesAnImmediateStop) {
  Recorder r;
  Res a("a", r);
  const auto t0 = std::chrono::steady_clock::now();
  const int code = lc::run_daemon(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await after(20ms);
    std::raise(SIGINT);
    // A body that ignores the stop: keeps working after its cancellation...
    try {
      co_await forever();
    } catch (...) {
    }
    co_await asio::this_coro::throw_if_cancelled(false);
    std::raise(SIGINT);  // ...until the operator insists
    co_await forever();
  });
  EXPECT_EQ(code, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);  // before the shutdown_timeout
}

TEST(Service, DrainLetsTheBodyFinishItsStepAndReturn) {
  Recorder r;
  Res a("a", r);
  auto opts = options();
  opts.drain_timeout = 1500ms;  // within the shutdown budget of 2 s (F54: checked at start)
  bool callback_ran = false;
  bool step_finished = false;
  const int code = lc::run_daemon(opts, [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    ctx.on_stop([&] { callback_ran = true; });
    co_await after(20ms);
    std::raise(SIGTERM);
    co_await ctx.until_stopped();
    co_await after(50ms);  // the current step ends normally: no cancellation during the drain
    step_finished = true;
  });
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(callback_ran);
  EXPECT_TRUE(step_finished);
  EXPECT_EQ(r.events, (std::vector<std::string>{"start a", "close a"}));
}

TEST(Service, ABodyThatOverrunsTheDrainIsCancelled) {
  Recorder r;
  Res a("a", r);
  auto opts = options();
  opts.drain_timeout = 100ms;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = lc::run_daemon(opts, [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await after(20ms);
    std::raise(SIGTERM);
    co_await forever();
  });
  EXPECT_EQ(code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(r.events, (std::vector<std::string>{"start a", "close a"}));
}

// run_once after a first signal: the stop is graceful (the body cancelled, every resource
// closed, well within the shutdown budget) and still exit 1: the task did not complete.
TEST(Service, RunOnceExitsOneOnAFirstSignalAfterAGracefulStop) {
  Recorder r;
  Res a("a", r), b("b", r);
  bool saw_stopping = false;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = lc::run_once(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await ctx.scope().enter(b, "b");
    co_await after(20ms);
    std::raise(SIGTERM);
    try {
      co_await forever();
    } catch (...) {
      saw_stopping = ctx.stopping();
      throw;
    }
  });
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(saw_stopping);
  EXPECT_EQ(r.events, kOpenedAndClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "graceful: before the shutdown budget";
}

// The same when the body honours the drain and returns by itself: the task was still cut short
// by the signal (exit 1), whereas run_daemon returns 0 for it (DrainLetsTheBodyFinish...).
TEST(Service, RunOnceExitsOneOnAFirstSignalEvenWhenTheBodyReturnsDuringTheDrain) {
  Recorder r;
  Res a("a", r);
  auto opts = options();
  opts.drain_timeout = 1500ms;
  bool step_finished = false;
  const int code = lc::run_once(opts, [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await after(20ms);
    std::raise(SIGINT);
    co_await ctx.until_stopped();
    step_finished = true;
  });
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(step_finished);
  EXPECT_EQ(r.events, (std::vector<std::string>{"start a", "close a"}));
}

// A graceful stop that overruns shutdown_timeout becomes immediate: exit 1 at the budget,
// counted from the signal. Here the body ignores its cancellation and never ends (no second
// signal comes).
TEST(Service, AGracefulStopThatOverrunsTheShutdownBudgetExitsOneAtTheBudget) {
  Recorder r;
  Res a("a", r);
  std::chrono::steady_clock::time_point signalled{};
  bool cancelled = false;
  const int code = lc::run_daemon(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    co_await ctx.scope().enter(a, "a");
    co_await after(20ms);
    signalled = std::chrono::steady_clock::now();
    std::raise(SIGTERM);
    try {
      co_await forever();
    } catch (...) {
      cancelled = true;
    }
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await forever();  // the stop is ignored
  });
  const auto took = std::chrono::steady_clock::now() - signalled;
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(cancelled);
  EXPECT_GE(took, 2s) << "stopped before the shutdown budget (2 s) had passed";
  EXPECT_LT(took, 4s) << "the shutdown budget (2 s) did not bound the stop";
  EXPECT_EQ(r.events, (std::vector<std::string>{"start a"})) << "closed under a running body";
}

// The same with the body gone and a close that never ends, after a first signal, for both
// runners: exit 1 at the budget (run_daemon would return 0 for a graceful stop), and the
// resource under its running close is not freed.
TEST(Service, AGracefulStopWhoseCloseNeverEndsExitsOneAtTheBudget) {
  for (const bool once : {false, true}) {
    SCOPED_TRACE(once ? "run_once" : "run_daemon");
    Watch watch;
    std::chrono::steady_clock::time_point signalled{};
    auto body = [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
      (void)co_await ctx.scope().open<SlowClose>("stuck", watch, 1h);
      co_await after(20ms);
      signalled = std::chrono::steady_clock::now();
      std::raise(SIGTERM);
      co_await forever();
    };
    const int code = once ? lc::run_once(options(), body) : lc::run_daemon(options(), body);
    const auto took = std::chrono::steady_clock::now() - signalled;
    EXPECT_EQ(code, 1);
    EXPECT_GE(took, 2s) << "stopped before the shutdown budget (2 s) had passed";
    EXPECT_LT(took, 4s) << "the shutdown budget (2 s) did not bound the stop";
    EXPECT_EQ(watch.destroyed, 0);
    EXPECT_EQ(watch.destroyed_while_closing, 0);
  }
}

// F54: a close that overruns the scope's bound is not cut short and its resource is not freed
// while it runs; the runner waits for it (within the shutdown budget) and exits 0.
TEST(Service, F54_ACloseThatOverrunsItsBoundEndsBeforeItsResourceIsFreed) {
  Watch watch;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = lc::run_daemon(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    (void)co_await ctx.scope().open<SlowClose>("slow", watch, 1200ms);  // bound: 500 ms
  });
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 0);
  EXPECT_EQ(watch.destroyed_while_closing, 0) << "freed with its close cut short";
  EXPECT_TRUE(watch.close_ended);
  EXPECT_EQ(watch.destroyed, 1);
  EXPECT_GE(took, 1200ms);
  EXPECT_LT(took, 2s);  // the shutdown budget
}

// A close that never ends: the stop becomes immediate at the shutdown budget (exit 1), and the
// resource is still not freed under its running close (it is kept: the process is ending).
TEST(Service, F54_ACloseThatNeverEndsIsCutByTheShutdownBudgetWithoutFreeingItsResource) {
  Watch watch;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = lc::run_daemon(options(), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    (void)co_await ctx.scope().open<SlowClose>("stuck", watch, 1h);
  });
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 1);
  EXPECT_GE(took, 2s);
  EXPECT_LT(took, 4s);
  EXPECT_EQ(watch.destroyed, 0);
  EXPECT_EQ(watch.destroyed_while_closing, 0);
}

// F54: budgets that cannot add up are refused before anything runs (exit 2).
TEST(Service, F54_BudgetsThatCannotAddUpAreRefusedAtStartWithExitTwo) {
  auto daemon = [](const lc::ServiceOptions& o, bool& ran) {
    return lc::run_daemon(o, [&](lc::ServiceContext&) -> asio::awaitable<void> {
      ran = true;
      co_return;
    });
  };
  lc::ServiceOptions o = options();
  o.close_timeout = 7s;
  o.shutdown_timeout = 10s;
  o.drain_timeout = 5s;
  o.closes = {{"redis", 3s}, {"postgres", 7s}};
  try {
    lc::check_budgets(o);
    ADD_FAILURE() << "accepted";
  } catch (const trading_shared::core::ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "the stop budget does not add up: drain 5000 ms + redis up to 3000 ms + "
                 "postgres up to 7000 ms = 15000 ms, more than the shutdown timeout of 10000 ms");
  }
  bool ran = false;
  EXPECT_EQ(daemon(o, ran), 2);
  EXPECT_FALSE(ran);

  // A close bound beyond the scope's bound: the scope would stop waiting for a close that may
  // legitimately take longer.
  o.shutdown_timeout = 20s;
  o.close_timeout = 5s;
  EXPECT_THROW(lc::check_budgets(o), trading_shared::core::ConfigError);
  EXPECT_EQ(daemon(o, ran), 2);
  EXPECT_FALSE(ran);
  o.close_timeout = 7s;
  EXPECT_NO_THROW(lc::check_budgets(o));  // 5 + 3 + 7 = 15 <= 20

  o.drain_timeout = 20s;  // nothing left for the closes
  EXPECT_THROW(lc::check_budgets(o), trading_shared::core::ConfigError);
  o = options();
  o.shutdown_timeout = 0ms;
  EXPECT_THROW(lc::check_budgets(o), trading_shared::core::ConfigError);
  EXPECT_EQ(lc::run_once(o, [](lc::ServiceContext&) -> asio::awaitable<void> { co_return; }), 2);
  EXPECT_NO_THROW(lc::check_budgets(options()));
}

}  // namespace

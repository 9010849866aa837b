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
  opts.drain_timeout = 5s;
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

}  // namespace

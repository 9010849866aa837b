// ResourceScope and with_scope: start/close order, error aggregation, a close that throws,
// a close that hangs past its timeout, cancellation of the body. No servers: fake resources
// on a real io_context (the timeouts are short real timers).
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/lifecycle/resource_scope.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/async_test.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::lifecycle::ResourceScope;

namespace {

enum class Fault { none, start_throws, close_throws, close_hangs };

class FakeResource {
 public:
  FakeResource(std::string name, std::vector<std::string>& events, Fault fault = Fault::none)
      : name_(std::move(name)), events_(&events), fault_(fault) {}
  asio::awaitable<void> start() {
    events_->push_back("start " + name_);
    if (fault_ == Fault::start_throws) throw std::runtime_error("cannot start " + name_);
    co_return;
  }
  asio::awaitable<void> close() {
    events_->push_back("close " + name_);
    if (fault_ == Fault::close_throws) throw std::runtime_error("cannot close " + name_);
    if (fault_ == Fault::close_hangs) {
      asio::steady_timer forever(co_await asio::this_coro::executor, 1h);
      co_await forever.async_wait(asio::use_awaitable);
    }
    events_->push_back("closed " + name_);
  }

 private:
  std::string name_;
  std::vector<std::string>* events_;
  Fault fault_;
};

using Events = std::vector<std::string>;

TEST(ResourceScope, StartsInOrderAndClosesInReverse) {
  Events events;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    FakeResource a("a", events), b("b", events), c("c", events);
    const int result = co_await ts::lifecycle::with_scope(
        io.get_executor(), [&](ResourceScope& scope) -> asio::awaitable<int> {
          co_await scope.enter(a, "a");
          co_await scope.enter(b, "b");
          co_await scope.enter(c, "c");
          EXPECT_EQ(scope.size(), 3u);
          events.push_back("work");
          co_return 42;
        });
    EXPECT_EQ(result, 42);
  });
  EXPECT_EQ(events, (Events{"start a", "start b", "start c", "work", "close c", "closed c",
                            "close b", "closed b", "close a", "closed a"}));
}

TEST(ResourceScope, AFailedStartClosesWhatStartedAndPropagates) {
  Events events;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    FakeResource a("a", events), b("b", events, Fault::start_throws), c("c", events);
    try {
      co_await ts::lifecycle::with_scope(io.get_executor(),
                                         [&](ResourceScope& scope) -> asio::awaitable<void> {
                                           co_await scope.enter(a, "a");
                                           co_await scope.enter(b, "b");
                                           co_await scope.enter(c, "c");
                                         });
      ADD_FAILURE() << "no error";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "cannot start b");
    }
  });
  // b never started, so it is not closed; c was never reached.
  EXPECT_EQ(events, (Events{"start a", "start b", "close a", "closed a"}));
}

TEST(ResourceScope, ACloseThatThrowsIsRecordedAndNeverMasksTheBodysError) {
  Events events;
  std::vector<ts::lifecycle::CleanupFailure> failures;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    FakeResource a("a", events), b("b", events, Fault::close_throws), c("c", events);
    ResourceScope* seen = nullptr;
    try {
      co_await ts::lifecycle::with_scope(io.get_executor(),
                                         [&](ResourceScope& scope) -> asio::awaitable<void> {
                                           seen = &scope;
                                           co_await scope.enter(a, "a");
                                           co_await scope.enter(b, "b");
                                           co_await scope.enter(c, "c");
                                           throw std::logic_error("the body failed");
                                         });
      ADD_FAILURE() << "no error";
    } catch (const std::logic_error& e) {
      EXPECT_STREQ(e.what(), "the body failed");  // the primary error, not b's close error
    }
    (void)seen;
    // The scope is gone; check the failures through a scope of our own.
    ResourceScope scope(io.get_executor(), 1s);
    co_await scope.enter(b, "b");
    co_await scope.enter(a, "a");
    co_await scope.close();
    failures = scope.failures();
    co_await scope.close();  // idempotent: nothing left to close
    EXPECT_EQ(scope.size(), 0u);
  });
  EXPECT_EQ(events,
            (Events{"start a", "start b", "start c", "close c", "closed c", "close b", "close a",
                    "closed a", "start b", "start a", "close a", "closed a", "close b"}));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].name, "b");
  EXPECT_FALSE(failures[0].timed_out);
  EXPECT_EQ(failures[0].error, "cannot close b");
}

TEST(ResourceScope, ACloseThatHangsIsCutOffAtItsTimeoutAndTheRestStillClose) {
  Events events;
  std::vector<ts::lifecycle::CleanupFailure> failures;
  std::chrono::steady_clock::duration took{};
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    FakeResource a("a", events), b("b", events, Fault::close_hangs), c("c", events);
    ResourceScope scope(io.get_executor(), 100ms);
    co_await scope.enter(a, "a");
    co_await scope.enter(b, "b");
    co_await scope.enter(c, "c");
    const auto t0 = std::chrono::steady_clock::now();
    co_await scope.close();
    took = std::chrono::steady_clock::now() - t0;
    failures = scope.failures();
  });
  EXPECT_EQ(events, (Events{"start a", "start b", "start c", "close c", "closed c", "close b",
                            "close a", "closed a"}));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].name, "b");
  EXPECT_TRUE(failures[0].timed_out);
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 2s);
}

TEST(ResourceScope, ACancelledBodyStillClosesEverything) {
  Events events;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    FakeResource a("a", events), b("b", events);
    try {
      co_await ts::core::with_timeout(
          ts::lifecycle::with_scope(io.get_executor(),
                                    [&](ResourceScope& scope) -> asio::awaitable<void> {
                                      co_await scope.enter(a, "a");
                                      co_await scope.enter(b, "b");
                                      asio::steady_timer forever(io, 1h);
                                      co_await forever.async_wait(asio::use_awaitable);
                                    }),
          50ms);
      ADD_FAILURE() << "no timeout";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::timeout));
    }
  });
  EXPECT_EQ(events, (Events{"start a", "start b", "close b", "closed b", "close a", "closed a"}));
}

class OwnedResource : public FakeResource {
 public:
  OwnedResource(std::string name, std::vector<std::string>& events, Fault fault = Fault::none)
      : FakeResource(name, events, fault), name_(std::move(name)), events_(&events) {}
  ~OwnedResource() { events_->push_back("destroy " + name_); }

 private:
  std::string name_;
  std::vector<std::string>* events_;
};

TEST(ResourceScope, OwnedResourcesAreClosedThenDestroyedAfterTheBody) {
  Events events;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    co_await ts::lifecycle::with_scope(
        io.get_executor(), [&](ResourceScope& scope) -> asio::awaitable<void> {
          OwnedResource* a = co_await scope.open<OwnedResource>("a", std::string("a"), events);
          EXPECT_NE(a, nullptr);
          try {
            (void)co_await scope.open<OwnedResource>("b", std::string("b"), events,
                                                     Fault::start_throws);
            ADD_FAILURE() << "b started";
          } catch (const std::runtime_error&) {
            events.push_back("b failed");
          }
          co_await scope.open<OwnedResource>("c", std::string("c"), events);
          events.push_back("body ends");
        });
  });
  // b is destroyed at once, unregistered; a and c outlive the body and are destroyed right
  // after their close.
  EXPECT_EQ(events,
            (Events{"start a", "start b", "destroy b", "b failed", "start c", "body ends",
                    "close c", "closed c", "destroy c", "close a", "closed a", "destroy a"}));
}

// F54: the scope's bound is shorter than what a close may legitimately take. A close that
// overruns the bound must never free a live resource: the scope stops waiting at its bound
// (the other resources still close in time), and the resource is destroyed only once its
// close has ended. The fake's close honours cancellation the way a client may: it ends at
// once, with its work not done (`closed` stays false).
struct Watch {
  int destroyed = 0;
  int destroyed_while_closing = 0;  ///< destroyed after close() began and before it ended
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

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

TEST(ResourceScope, F54_ACloseThatOverrunsItsBoundNeverFreesTheResourceWhileItRuns) {
  Watch watch;
  Events events;
  std::vector<ts::lifecycle::CleanupFailure> failures;
  std::chrono::steady_clock::duration took{};
  int destroyed_when_scope_closed = -1;
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ResourceScope scope(io.get_executor(), 100ms);
    (void)co_await scope.open<OwnedResource>("a", std::string("a"), events);
    (void)co_await scope.open<SlowClose>("slow", watch, 600ms);
    const auto t0 = std::chrono::steady_clock::now();
    co_await scope.close();
    took = std::chrono::steady_clock::now() - t0;
    failures = scope.failures();
    destroyed_when_scope_closed = watch.destroyed;
    // The close goes on; the resource is freed when it has ended.
    for (int i = 0; i < 500 && watch.destroyed == 0; ++i) co_await sleep_for(10ms);
    co_await scope.wait_overrunning();
    EXPECT_EQ(scope.overrunning(), 0u);
  });
  // The bound held: "a" was closed right after the slow close's bound, not after its end.
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 500ms);
  EXPECT_EQ(events, (Events{"start a", "close a", "closed a", "destroy a"}));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].name, "slow");
  EXPECT_TRUE(failures[0].timed_out);
  EXPECT_EQ(destroyed_when_scope_closed, 0) << "freed while its close was still running";
  EXPECT_EQ(watch.destroyed_while_closing, 0) << "freed with its close cut short";
  EXPECT_TRUE(watch.close_ended);
  EXPECT_EQ(watch.destroyed, 1);
}

TEST(ResourceScope, RefusesBadArguments) {
  asio::io_context io;
  EXPECT_THROW(ResourceScope(io.get_executor(), 0ms), ts::Error);
  ResourceScope scope(io.get_executor());
  EXPECT_THROW(scope.defer("x", {}), ts::Error);
}

}  // namespace

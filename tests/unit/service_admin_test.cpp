// run_daemon / run_once with the admin endpoint on: the port is known before the body starts,
// /readyz goes starting -> ready -> stopping (drain), samplers run on the loop, the endpoint is
// closed (its thread joined) when the runner returns, and a port in use is a bad configuration
// (exit 2). Requests come from a thread of the test; SIGTERM is raised in this process while the
// runner's handlers are installed.
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/admin_client.hpp"
#include "support/fault_proxy.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <string>
#include <thread>

namespace asio = boost::asio;
namespace lc = trading_shared::lifecycle;
namespace core = trading_shared::core;
using trading_shared::testing::poll_until;
using trading_shared::testing::admin::http_get;
using trading_shared::testing::admin::HttpReply;
using namespace std::chrono_literals;

namespace {

lc::ServiceOptions admin_options(core::MetricsRegistry& registry) {
  lc::ServiceOptions o;
  o.name = "admin-test";
  o.close_timeout = 500ms;
  o.shutdown_timeout = 5s;
  o.drain_timeout = 3s;
  o.exit_process_on_immediate_stop = false;  // the runner runs inside the test binary
  o.metrics = &registry;
  o.admin.listen = "127.0.0.1:0";
  o.admin.check_interval = 20ms;
  o.admin.stuck_after = 1s;
  o.admin.request_timeout = 1s;
  return o;
}

asio::awaitable<void> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

bool answers(std::uint16_t port, const char* target, int status, const std::string& body,
             std::string* seen) {
  HttpReply r;
  const bool ok = poll_until(
      [&] {
        r = http_get(port, target);
        return r.status == status && r.body == body;
      },
      5s);
  if (!ok)
    *seen +=
        std::string(target) + " -> " + std::to_string(r.status) + " " + r.body + r.error + "\n";
  return ok;
}

}  // namespace

TEST(ServiceAdmin, ReadyzGoesFromStartingToReadyToStoppingAndTheEndpointCloses) {
  core::MetricsRegistry registry;
  std::atomic<std::uint16_t> port{0};
  std::atomic<bool> make_ready{false};
  std::atomic<bool> release{false};
  std::atomic<int> steps{0};
  std::string failures;  // written by the client thread, read after it is joined
  std::thread client;
  const int code = lc::run_daemon(
      admin_options(registry), [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
        port = ctx.admin_port();
        auto& sampled = ctx.metrics().gauge("ts_test_sampled", "Sampler runs");
        ctx.add_sampler([&sampled] { sampled.add(1); });
        ctx.add_readiness_check("dep", [] { return std::string(); });
        client = std::thread([&, p = ctx.admin_port()] {
          if (answers(p, "/readyz", 503, "not ready\nstarting\ndep: ok\n", &failures)) ++steps;
          make_ready = true;
          if (answers(p, "/readyz", 200, "ready\ndep: ok\n", &failures)) ++steps;
          if (answers(p, "/healthz", 200, "ok\n", &failures)) ++steps;
          const auto metrics = http_get(p, "/metrics");
          if (metrics.body.find("\nts_test_sampled ") != std::string::npos &&
              metrics.body.find("\nts_test_sampled 0\n") == std::string::npos) {
            ++steps;
          } else {
            failures += "no sampled gauge: " + metrics.body + "\n";
          }
          std::raise(SIGTERM);
          if (answers(p, "/readyz", 503, "not ready\nstopping\ndep: ok\n", &failures)) ++steps;
          release = true;
        });
        while (!make_ready) co_await pause(5ms);
        ctx.health().ready = true;
        co_await ctx.until_stopped();
        while (!release) co_await pause(5ms);  // the drain: /readyz says "stopping" meanwhile
      });
  client.join();
  EXPECT_EQ(code, 0);
  EXPECT_NE(port.load(), 0);
  EXPECT_EQ(steps.load(), 5) << failures;
  // The endpoint closed with the runner: nothing listens on its port any more.
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port.load()}, ec);
  EXPECT_TRUE(ec) << "the admin endpoint still accepts after run_daemon returned";
  EXPECT_EQ(registry.gauge("ts_service_up").value(), 0);
}

TEST(ServiceAdmin, RunOnceServesTooAndThePortIsZeroWhenOff) {
  core::MetricsRegistry registry;
  auto options = admin_options(registry);
  std::uint16_t port = 0;
  HttpReply health;
  EXPECT_EQ(lc::run_once(options,
                         [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
                           port = ctx.admin_port();
                           std::atomic<bool> done{false};
                           std::thread t([&] {
                             health = http_get(port, "/healthz");
                             done = true;
                           });
                           while (!done) co_await pause(5ms);
                           t.join();
                         }),
            0);
  EXPECT_NE(port, 0);
  EXPECT_EQ(health.status, 200) << health.error;
  options.admin.listen.clear();
  std::uint16_t off = 1;
  EXPECT_EQ(lc::run_once(options,
                         [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
                           off = ctx.admin_port();
                           co_return;
                         }),
            0);
  EXPECT_EQ(off, 0);
}

TEST(ServiceAdmin, APortInUseIsABadConfigurationExitTwo) {
  core::MetricsRegistry registry;
  asio::io_context io;
  asio::ip::tcp::acceptor taken(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto options = admin_options(registry);
  options.admin.listen = "127.0.0.1:" + std::to_string(taken.local_endpoint().port());
  bool ran = false;
  EXPECT_EQ(lc::run_daemon(options,
                           [&](lc::ServiceContext&) -> asio::awaitable<void> {
                             ran = true;
                             co_return;
                           }),
            2);
  EXPECT_FALSE(ran);
  options.admin.listen = "not-an-address:1";
  EXPECT_EQ(
      lc::run_daemon(options, [](lc::ServiceContext&) -> asio::awaitable<void> { co_return; }), 2);
}

// An immediate stop (the graceful one overran its budget) abandons the body's frame; it is
// destroyed with the io_context after the endpoint has closed: its ServiceContext must not
// reach the endpoint then (a review finding: ~ServiceContext cleared the checks of a destroyed
// AdminServer; ASan in `make sanitize` would report it).
TEST(ServiceAdmin, AnImmediateStopWithTheEndpointOnEndsCleanly) {
  core::MetricsRegistry registry;
  auto options = admin_options(registry);
  options.drain_timeout = 50ms;
  options.shutdown_timeout = 300ms;
  bool cancelled = false;
  const int code = lc::run_daemon(options, [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
    ctx.add_sampler([] {});
    ctx.add_readiness_check("dependency", [] { return std::string(); });
    ctx.health().ready = true;
    co_await pause(20ms);
    std::raise(SIGTERM);
    try {
      co_await pause(1h);
    } catch (...) {
      cancelled = true;
    }
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await pause(1h);  // the stop is ignored: it becomes immediate at the budget
  });
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(cancelled);
}

// lifecycle::AdminServer on loopback: routing, the text format of /metrics, /healthz following
// the loop's heartbeat, /readyz following its checks, the bounds (request size, request timeout,
// connections) and bad listen addresses. The "service loop" is an io_context run by a thread of
// the test; requests come from the test thread.
#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/admin_server.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "support/admin_client.hpp"
#include "support/fault_proxy.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <optional>
#include <thread>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace lc = trading_shared::lifecycle;
namespace core = trading_shared::core;
using trading_shared::testing::poll_until;
using trading_shared::testing::admin::http_get;
using trading_shared::testing::admin::http_request;
using trading_shared::testing::admin::HttpReply;
using namespace std::chrono_literals;

namespace {

lc::AdminOptions fast_options() {
  lc::AdminOptions o;
  o.listen = "127.0.0.1:0";
  o.check_interval = 20ms;
  o.stuck_after = 300ms;
  o.request_timeout = 500ms;
  o.max_connections = 4;
  return o;
}

/// An AdminServer on a loop run by a thread of its own; `setup` runs before the loop starts.
class Harness {
 public:
  explicit Harness(const lc::AdminOptions& options,
                   const std::function<void(lc::AdminServer&)>& setup = {})
      : admin_(std::in_place, options, registry, io_.get_executor()) {
    if (setup) setup(*admin_);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Harness() {
    io_.stop();
    thread_.join();
    admin_.reset();  // the loop has stopped: closes from this thread
  }
  std::uint16_t port() const { return admin_->port(); }
  /// Blocks the loop until the returned promise is set.
  std::promise<void> block_loop() {
    std::promise<void> release;
    auto released = release.get_future().share();
    asio::post(io_, [released] { released.wait(); });
    return release;
  }

  core::MetricsRegistry registry;

 private:
  asio::io_context io_{1};
  std::optional<lc::AdminServer> admin_;
  std::thread thread_;
};

bool eventually_answers(std::uint16_t port, std::string_view target, int status,
                        std::string_view body, std::chrono::milliseconds timeout = 5s,
                        HttpReply* last = nullptr) {
  HttpReply reply;
  const bool ok = poll_until(
      [&] {
        reply = http_get(port, target);
        return reply.status == status && reply.body == body;
      },
      timeout);
  if (last != nullptr) *last = reply;
  return ok;
}

}  // namespace

TEST(AdminServer, MetricsAreTheRegistryInTheTextFormat) {
  Harness h(fast_options());
  h.registry.counter("ts_test_things_total{kind=\"a\"}", "Things").add(3);
  const auto r = http_get(h.port(), "/metrics");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(r.body.find("# HELP ts_test_things_total Things\n# TYPE ts_test_things_total counter\n"
                        "ts_test_things_total{kind=\"a\"} 3\n"),
            std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("\nts_service_up 1\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("# TYPE ts_service_loop_lag_seconds histogram"), std::string::npos);
  // A query string does not change the path; the loop's timer has run (lag observed).
  EXPECT_TRUE(poll_until(
      [&] {
        const auto again = http_get(h.port(), "/metrics?x=1");
        return again.status == 200 &&
               again.body.find("ts_service_loop_lag_seconds_count 0\n") == std::string::npos;
      },
      5s));
}

TEST(AdminServer, UnknownPathIs404OtherMethodsAre405HeadHasNoBody) {
  Harness h(fast_options());
  const auto missing = http_get(h.port(), "/nope");
  EXPECT_EQ(missing.status, 404) << missing.error;
  const auto post = http_request(h.port(), "/metrics", http::verb::post);
  EXPECT_EQ(post.status, 405) << post.error;
  EXPECT_EQ(post.allow, "GET, HEAD");
  const auto head = http_request(h.port(), "/healthz", http::verb::head);
  EXPECT_EQ(head.status, 200) << head.error;
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(head.content_length, "3");  // "ok\n", as a GET would have it
  EXPECT_EQ(h.registry.counter("ts_service_admin_requests_total{path=\"other\"}").value(), 1U);
}

TEST(AdminServer, HealthzFollowsTheLoopsHeartbeat) {
  Harness h(fast_options());
  EXPECT_TRUE(eventually_answers(h.port(), "/healthz", 200, "ok\n"));
  auto release = h.block_loop();
  HttpReply stuck;
  const bool got_stuck = poll_until(
      [&] {
        stuck = http_get(h.port(), "/healthz");
        return stuck.status == 503;
      },
      5s);
  release.set_value();
  ASSERT_TRUE(got_stuck) << stuck.status << " " << stuck.body << stuck.error;
  EXPECT_EQ(stuck.body.rfind("event loop stuck for ", 0), 0U) << stuck.body;
  EXPECT_LT(stuck.took, 1s);  // answered by the admin thread while the loop is blocked
  EXPECT_TRUE(eventually_answers(h.port(), "/healthz", 200, "ok\n"));
}

TEST(AdminServer, ReadyzFollowsTheStateAndTheChecks) {
  std::atomic<bool> started{false};
  std::atomic<bool> dependency{true};
  Harness h(fast_options(), [&](lc::AdminServer& admin) {
    admin.set_state([&] { return started ? std::string() : std::string("starting"); });
    admin.add_readiness_check("redis", [&] { return dependency ? "" : std::string("down"); });
    admin.add_readiness_check("feed", [] { return std::string(); });
  });
  EXPECT_TRUE(
      eventually_answers(h.port(), "/readyz", 503, "not ready\nstarting\nredis: ok\nfeed: ok\n"));
  started = true;
  EXPECT_TRUE(eventually_answers(h.port(), "/readyz", 200, "ready\nredis: ok\nfeed: ok\n"));
  EXPECT_EQ(h.registry.gauge("ts_service_ready").value(), 1);
  dependency = false;
  EXPECT_TRUE(eventually_answers(h.port(), "/readyz", 503, "not ready\nredis: down\nfeed: ok\n"));
  EXPECT_EQ(h.registry.gauge("ts_service_ready").value(), 0);
  dependency = true;
  EXPECT_TRUE(eventually_answers(h.port(), "/readyz", 200, "ready\nredis: ok\nfeed: ok\n"));
}

TEST(AdminServer, AThrowingSamplerIsCountedAndACheckThatThrowsIsNotReady) {
  std::atomic<int> runs{0};
  Harness h(fast_options(), [&](lc::AdminServer& admin) {
    admin.add_sampler([&] {
      ++runs;
      throw std::runtime_error("stats unavailable");
    });
    admin.add_readiness_check("db", []() -> std::string { throw std::runtime_error("boom"); });
  });
  EXPECT_TRUE(eventually_answers(h.port(), "/readyz", 503, "not ready\ndb: check failed: boom\n"));
  EXPECT_TRUE(poll_until([&] { return runs >= 3; }, 5s));
  EXPECT_GE(h.registry.counter("ts_service_sampler_failures_total").value(), 2U);
}

TEST(AdminServer, AnOversizedRequestIs400AndClosed) {
  Harness h(fast_options());
  const auto r = http_get(h.port(), "/metrics?" + std::string(10000, 'x'));
  EXPECT_EQ(r.status, 400) << r.error;
  EXPECT_EQ(h.registry.counter("ts_service_admin_bad_requests_total").value(), 1U);
}

TEST(AdminServer, ASilentConnectionIsClosedAfterTheRequestTimeout) {
  Harness h(fast_options());
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), h.port()});
  const auto start = std::chrono::steady_clock::now();
  char byte = 0;
  boost::system::error_code ec;
  asio::read(socket, asio::buffer(&byte, 1), ec);  // ends when the server closes
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
  EXPECT_GE(waited, 400ms);
  EXPECT_LT(waited, 3s);
}

TEST(AdminServer, ConnectionsBeyondTheMaximumAreClosedAtAccept) {
  auto options = fast_options();
  options.max_connections = 2;
  options.request_timeout = 5s;
  Harness h(options);
  asio::io_context io;
  std::vector<asio::ip::tcp::socket> idle;
  for (int i = 0; i < 2; ++i) {
    idle.emplace_back(io);
    idle.back().connect({asio::ip::make_address("127.0.0.1"), h.port()});
  }
  auto& refused = h.registry.counter("ts_service_admin_connections_refused_total");
  const auto r = http_get(h.port(), "/healthz");
  EXPECT_EQ(r.status, 0) << r.body;  // closed without an answer
  EXPECT_TRUE(poll_until([&] { return refused.value() >= 1; }, 5s));
  idle.clear();
  EXPECT_TRUE(eventually_answers(h.port(), "/healthz", 200, "ok\n"));
}

TEST(AdminServer, BadListenAddressesAndABusyPortAreConfigErrors) {
  core::MetricsRegistry registry;
  asio::io_context io;
  auto make = [&](std::string listen) {
    auto o = fast_options();
    o.listen = std::move(listen);
    lc::AdminServer admin(o, registry, io.get_executor());
  };
  EXPECT_THROW(make("127.0.0.1"), core::ConfigError);  // a bare word is a port
  EXPECT_THROW(make("example.com:9101"), core::ConfigError);
  EXPECT_THROW(make("127.0.0.1:70000"), core::ConfigError);
  EXPECT_THROW(make("::1:9101"), core::ConfigError);
  EXPECT_NO_THROW(make("localhost:0"));
  auto o = fast_options();
  lc::AdminServer first(o, registry, io.get_executor());
  o.listen = "127.0.0.1:" + std::to_string(first.port());
  try {
    lc::AdminServer second(o, registry, io.get_executor());
    FAIL() << "bound a port in use";
  } catch (const core::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on " + o.listen), std::string::npos)
        << e.what();
  }
  auto slow = fast_options();
  slow.stuck_after = slow.check_interval;
  EXPECT_THROW(lc::check_admin_options(slow), core::ConfigError);
}

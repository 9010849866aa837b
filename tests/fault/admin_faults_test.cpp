// The admin endpoint under faults, at library level: a service body run by run_daemon (on a
// thread of the test) with a RedisClient against the harness's REAL Redis, scraped over loopback
// by the test (the main thread, which also stops and starts Redis).
//
// - F78: /readyz follows the dependency (Redis stopped -> 503 "redis: ...", started -> 200)
//   within one check interval of the client seeing it; /healthz is 503 while the test blocks the
//   loop and 200 otherwise, answered by the admin thread meanwhile.
// - F79: /metrics scraped every 100 ms while the loop is busy (Redis round trips and a label that
//   would explode): every scrape answers within a bound, the loop's lag stays bounded, the
//   exploding family stays within its series bound.
// - promtool: `promtool check metrics` accepts a real scrape (counters, gauges, histograms,
//   escaped label values, the overflow series).
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "redis_fault_support.hpp"
#include "support/admin_client.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace lc = ts::lifecycle;
namespace core = ts::core;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::testing::poll_until;
using ts::testing::Servers;
using ts::testing::admin::http_get;
using ts::testing::admin::HttpReply;

namespace {

asio::awaitable<void> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

/// run_daemon on a thread of its own with a RedisClient entered in its scope; `setup` runs in
/// the body (on the loop) once the client has started, then the body waits for stop().
class Service {
 public:
  using Setup =
      std::function<asio::awaitable<void>(lc::ServiceContext&, ts::redis::RedisClient&, Service&)>;
  Service(core::MetricsRegistry& registry, std::chrono::milliseconds check_interval, Setup setup)
      : redis_url_(Servers::instance().redis_url()) {  // started from the main thread
    lc::ServiceOptions o;
    o.name = "admin-fault";
    o.close_timeout = 2s;
    o.shutdown_timeout = 5s;
    o.exit_process_on_immediate_stop = false;
    o.metrics = &registry;
    o.admin.listen = "127.0.0.1:0";
    o.admin.check_interval = check_interval;
    o.admin.stuck_after = 500ms;
    o.admin.request_timeout = 2s;
    thread_ = std::thread([this, o, setup = std::move(setup)] {
      exit_code_ = lc::run_daemon(o, [&](lc::ServiceContext& ctx) -> asio::awaitable<void> {
        // Owned by the runner's scope: closed after the body, freed before the loop's io_context.
        auto& redis = *co_await ctx.scope().open<ts::redis::RedisClient>(
            "redis", ctx.executor(), ts::testing::fault::fast_config(redis_url_, "admin-fault"));
        co_await setup(ctx, redis, *this);
        ctx.health().ready = true;
        port_ = ctx.admin_port();
        while (!stop_) {
          if (block_) {
            block_ = false;
            blocked_.wait();  // the fault: the test holds the loop
          }
          co_await pause(5ms);
        }
        while (helpers_ > 0) co_await pause(5ms);  // they use the client and the context
      });
    });
    EXPECT_TRUE(poll_until([&] { return port_ != 0 || exit_code_ >= 0; }, 10s));
  }
  ~Service() { stop(); }
  std::uint16_t port() const { return port_; }
  /// Blocks the loop until the returned promise is set.
  std::promise<void> block_loop() {
    std::promise<void> release;
    blocked_ = release.get_future().share();
    block_ = true;
    return release;
  }
  /// Runs `work` on the loop beside the body until `stopping()`; the body waits for it to end.
  void spawn(lc::ServiceContext& ctx, std::function<asio::awaitable<void>()> work) {
    ++helpers_;
    asio::co_spawn(ctx.executor(), std::move(work), [this](const std::exception_ptr& e) {
      --helpers_;
      if (e) ADD_FAILURE() << "a helper of the service failed";
    });
  }
  bool stopping() const { return stop_; }
  int stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return exit_code_;
  }

 private:
  std::string redis_url_;
  std::atomic<std::uint16_t> port_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> block_{false};
  std::shared_future<void> blocked_;
  std::atomic<int> exit_code_{-1};
  std::atomic<int> helpers_{0};
  std::thread thread_;
};

asio::awaitable<void> no_setup(lc::ServiceContext&, ts::redis::RedisClient&, Service&) {
  co_return;
}

/// The Redis readiness check of a service: connected, breaker not open.
std::string redis_readiness(const ts::redis::RedisClient& redis) {
  const auto stats = redis.stats();
  if (stats.breaker == core::CircuitState::open) return "breaker open";
  return stats.connected ? std::string() : std::string("disconnected");
}

/// Polls `target` until its status is `status`; the time it took.
std::optional<Clock::duration> time_until(std::uint16_t port, const char* target, int status,
                                          HttpReply* last, Clock::duration timeout = 20s) {
  const auto start = Clock::now();
  const bool ok = poll_until(
      [&] {
        *last = http_get(port, target);
        return last->status == status;
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  if (!ok) return std::nullopt;
  return Clock::now() - start;
}

long long ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

TEST(AdminFaults, F78_ReadinessFollowsRedisStoppedAndStarted) {
  core::MetricsRegistry registry;
  std::atomic<bool> connected_seen{true};
  std::atomic<Clock::rep> disconnected_at{0};
  const auto interval = 100ms;
  Service service(registry, interval,
                  [&](lc::ServiceContext& ctx, ts::redis::RedisClient& redis,
                      Service& self) -> asio::awaitable<void> {
                    ctx.add_readiness_check("redis", [&redis] { return redis_readiness(redis); });
                    // When the client's own state flips (sampled finely on the loop), to time
                    // /readyz against.
                    self.spawn(ctx, [&]() -> asio::awaitable<void> {
                      while (!self.stopping()) {
                        const bool now = redis.stats().connected;
                        if (connected_seen && !now)
                          disconnected_at = Clock::now().time_since_epoch().count();
                        connected_seen = now;
                        co_await pause(2ms);
                      }
                    });
                    co_return;
                  });
  ASSERT_NE(service.port(), 0);
  HttpReply r;
  ASSERT_TRUE(time_until(service.port(), "/readyz", 200, &r)) << r.status << r.body << r.error;
  EXPECT_EQ(r.body, "ready\nredis: ok\n");

  auto& redis = Servers::instance().redis();
  ts::testing::fault::ScopeExit restart([&] { redis.start(); });
  redis.stop();
  ASSERT_TRUE(time_until(service.port(), "/readyz", 503, &r)) << r.body << r.error;
  const auto seen_503 = Clock::now();
  EXPECT_EQ(r.body, "not ready\nredis: disconnected\n");
  ASSERT_NE(disconnected_at.load(), 0);
  const auto after_client = seen_503 - Clock::time_point(Clock::duration(disconnected_at.load()));
  std::printf("F78: /readyz 503 %lld ms after the client saw Redis gone (interval %lld ms)\n",
              ms(after_client), static_cast<long long>(interval.count()));
  EXPECT_LE(after_client, interval + 400ms);  // one interval, plus the scrape loop's own step
  EXPECT_EQ(http_get(service.port(), "/healthz").status, 200);  // the loop answers

  const auto started = Clock::now();
  redis.start();
  ASSERT_TRUE(time_until(service.port(), "/readyz", 200, &r)) << r.body << r.error;
  std::printf("F78: /readyz 200 %lld ms after Redis was started again\n",
              ms(Clock::now() - started));
  EXPECT_EQ(r.body, "ready\nredis: ok\n");
  EXPECT_EQ(service.stop(), 0);
}

TEST(AdminFaults, F78_HealthzIs503WhileTheLoopIsBlockedAnd200Otherwise) {
  core::MetricsRegistry registry;
  Service service(registry, 50ms, no_setup);
  ASSERT_NE(service.port(), 0);
  HttpReply r;
  ASSERT_TRUE(time_until(service.port(), "/healthz", 200, &r)) << r.error;
  EXPECT_EQ(r.body, "ok\n");
  auto release = service.block_loop();
  const auto blocked = time_until(service.port(), "/healthz", 503, &r, 10s);
  release.set_value();
  ASSERT_TRUE(blocked) << r.body << r.error;
  EXPECT_EQ(r.body.rfind("event loop stuck for ", 0), 0U) << r.body;
  std::printf(
      "F78: /healthz 503 after %lld ms of a blocked loop (stuck_after 500 ms), answered "
      "in %lld ms: %s",
      ms(*blocked), static_cast<long long>(r.took.count()), r.body.c_str());
  EXPECT_LT(r.took, 1s);  // the admin thread answers while the loop is blocked
  // /metrics too: the registry is not the loop's.
  const auto metrics = http_get(service.port(), "/metrics");
  EXPECT_EQ(metrics.status, 200) << metrics.error;
  ASSERT_TRUE(time_until(service.port(), "/healthz", 200, &r, 10s)) << r.body << r.error;
  EXPECT_EQ(service.stop(), 0);
}

TEST(AdminFaults, F79_ScrapedEvery100msWhileTheLoopIsBusy) {
  constexpr std::size_t kMaxSeries = 50;
  core::MetricsRegistry registry(kMaxSeries);
  std::atomic<std::uint64_t> round_trips{0};
  Service service(
      registry, 100ms,
      [&](lc::ServiceContext& ctx, ts::redis::RedisClient& redis,
          Service& self) -> asio::awaitable<void> {
        ctx.add_readiness_check("redis", [&redis] { return redis_readiness(redis); });
        // The busy loop: Redis round trips back to back, a histogram per round trip, and a label
        // fed from outside (a new "peer" per round trip) that would grow the scrape without bound.
        self.spawn(ctx, [&]() -> asio::awaitable<void> {
          auto& rtt = ctx.metrics().histogram("ts_test_round_trip_seconds", "Round trips");
          std::uint64_t i = 0;
          while (!self.stopping()) {
            const auto t0 = Clock::now();
            co_await redis.set("f79:key", std::to_string(i));
            rtt.observe(Clock::now() - t0);
            ctx.metrics()
                .counter(
                    core::metric_name("ts_test_peer_messages_total", {{"peer", std::to_string(i)}}),
                    "Messages by peer")
                .add();
            ++i;
            round_trips = i;
          }
        });
        co_return;
      });
  ASSERT_NE(service.port(), 0);
  ASSERT_TRUE(poll_until([&] { return round_trips > 100; }, 10s));

  const auto& lag = registry.histogram("ts_service_loop_lag_seconds");
  const auto lag_before = lag.count();
  std::vector<long long> took;
  HttpReply last;
  auto next = Clock::now();
  for (int i = 0; i < 30; ++i) {  // 3 s of scrapes
    next += 100ms;
    last = http_get(service.port(), "/metrics");
    ASSERT_EQ(last.status, 200) << last.error;
    took.push_back(last.took.count());
    std::this_thread::sleep_until(next);  // the scrape cadence, not a wait for a condition
  }
  const auto slowest = *std::max_element(took.begin(), took.end());
  std::sort(took.begin(), took.end());
  std::printf(
      "F79: 30 scrapes every 100 ms while busy: median %lld ms, slowest %lld ms, "
      "%zu bytes; %llu round trips\n",
      took[took.size() / 2], slowest, last.body.size(),
      static_cast<unsigned long long>(round_trips.load()));
  EXPECT_LT(slowest, 1000);
  // The loop's heartbeat stayed on time: no tick of the check timer late by 250 ms or more.
  std::uint64_t late = 0;
  double worst = 0;  // upper bound of the highest bucket with a tick in it (the whole run)
  const auto bounds = lag.bounds();
  for (std::size_t b = 0; b <= bounds.size(); ++b) {
    const double bound = b == bounds.size() ? 1e9 : bounds[b];
    if (lag.bucket(b) > 0) worst = bound;
    if (bound > 0.25) late += lag.bucket(b);
  }
  std::printf(
      "F79: %llu check ticks during the scrapes, %llu late by more than 250 ms, every "
      "tick late by at most %g ms\n",
      static_cast<unsigned long long>(lag.count() - lag_before),
      static_cast<unsigned long long>(late), worst * 1000);
  EXPECT_GE(lag.count() - lag_before, 20U);
  EXPECT_EQ(late, 0U);
  // The exploding label: at most kMaxSeries series, the rest counted as refused.
  std::size_t series = 0;
  std::istringstream lines(last.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("ts_test_peer_messages_total{", 0) == 0) ++series;
  }
  EXPECT_LE(series, kMaxSeries);
  EXPECT_GT(registry.counter("ts_metrics_series_refused_total").value(), 100U);
  EXPECT_NE(last.body.find("ts_test_peer_messages_total{overflow=\"true\"}"), std::string::npos);
  EXPECT_EQ(service.stop(), 0);
}

TEST(AdminFaults, PromtoolAcceptsARealScrape) {
  core::MetricsRegistry registry;
  Service service(
      registry, 50ms,
      [&](lc::ServiceContext& ctx, ts::redis::RedisClient& redis,
          Service&) -> asio::awaitable<void> {
        auto& m = ctx.metrics();
        auto& commands =
            m.counter(core::metric_name("ts_test_redis_commands_total", {{"client", "main"}}),
                      "Redis requests submitted");
        auto& connected =
            m.gauge(core::metric_name("ts_test_redis_connected", {{"client", "main"}}),
                    "1 while connected");
        ctx.add_sampler([&commands, &connected, &redis] {
          const auto s = redis.stats();
          commands.set(s.commands);
          connected.set(s.connected ? 1 : 0);
        });
        auto& rtt = m.histogram(
            core::metric_name("ts_test_round_trip_seconds", {{"client", "main"}}), "Round trips");
        for (int i = 0; i < 20; ++i) {
          const auto t0 = Clock::now();
          co_await redis.ping();
          rtt.observe(Clock::now() - t0);
        }
        m.histogram("ts_test_batch_size", "Batch sizes", core::Histogram::kSizeBounds).observe(7);
        m.counter(core::metric_name("ts_test_odd_labels_total",
                                    {{"value", "a \"quoted\" \\ back\nline"}}),
                  "Label values that need escaping")
            .add();
        co_return;
      });
  ASSERT_NE(service.port(), 0);
  HttpReply r;
  ASSERT_TRUE(time_until(service.port(), "/readyz", 200, &r)) << r.error;
  r = http_get(service.port(), "/metrics");
  ASSERT_EQ(r.status, 200) << r.error;
  const auto path = std::filesystem::temp_directory_path() /
                    ("ts-admin-scrape-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(path) << r.body;
  const std::string command = "promtool check metrics < " + path.string() + " 2>&1";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << "cannot run promtool (scripts/install-deps installs it)";
  char chunk[512];
  while (std::fgets(chunk, sizeof chunk, pipe) != nullptr) output += chunk;
  const int status = ::pclose(pipe);
  std::filesystem::remove(path);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n--- the scrape:\n" << r.body;
  EXPECT_EQ(output, "") << r.body;
  EXPECT_NE(r.body.find("ts_test_round_trip_seconds_bucket{client=\"main\",le=\"+Inf\"} 20"),
            std::string::npos)
      << r.body;
  EXPECT_EQ(service.stop(), 0);
}

// tsctl status-page's pure code: the Prometheus text parser (also on what the library's own
// MetricsRegistry renders), percentiles from histogram buckets, rates from counter deltas, the
// views and the JSON of /api/status, and its flags' parsers.
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/metrics.hpp>

#include "tsctl/prom_text.hpp"
#include "tsctl/status_model.hpp"
#include "tsctl/tsctl.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace tsctl = trading_shared::services::tsctl;
namespace core = trading_shared::core;
using namespace std::chrono_literals;

namespace {

const tsctl::PromSample* find(const tsctl::PromScrape& scrape, std::string_view name,
                              const tsctl::PromLabels& labels = {}) {
  for (const auto& s : scrape.samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  return nullptr;
}

tsctl::MetricsSnapshot snapshot_of(const std::string& text, tsctl::SteadyTime at) {
  return tsctl::MetricsSnapshot::from(tsctl::parse_prometheus_text(text), at);
}

}  // namespace

TEST(StatusPageParser, ReadsSamplesLabelsTypesAndSpecialValues) {
  const std::string text =
      "# HELP ts_x_total what x counts\n"
      "# TYPE ts_x_total counter\n"
      "ts_x_total{symbol=\"BTCUSDT\",client=\"main\"} 42\n"
      "ts_x_total{client=\"b\\\\s\\\"q\\nn\"} 1.5e3 1700000000000\n"
      "\n"
      "# a plain comment\n"
      "  ts_gauge -7\r\n"
      "ts_h_bucket{le=\"+Inf\"} +Inf\n"
      "ts_nan NaN\n";
  const tsctl::PromScrape scrape = tsctl::parse_prometheus_text(text);
  ASSERT_EQ(scrape.samples.size(), 5u);
  EXPECT_EQ(scrape.types.at("ts_x_total"), "counter");
  // Labels are sorted by name.
  const auto* x = find(scrape, "ts_x_total", {{"client", "main"}, {"symbol", "BTCUSDT"}});
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->value, 42);
  const auto* escaped = find(scrape, "ts_x_total", {{"client", "b\\s\"q\nn"}});
  ASSERT_NE(escaped, nullptr);
  EXPECT_EQ(escaped->value, 1500);
  ASSERT_NE(find(scrape, "ts_gauge"), nullptr);
  EXPECT_EQ(find(scrape, "ts_gauge")->value, -7);
  EXPECT_TRUE(std::isinf(find(scrape, "ts_h_bucket", {{"le", "+Inf"}})->value));
  EXPECT_TRUE(std::isnan(find(scrape, "ts_nan")->value));
  // The key escapes back as the format does.
  EXPECT_EQ(tsctl::series_key("ts_x_total", escaped->labels),
            "ts_x_total{client=\"b\\\\s\\\"q\\nn\"}");
}

TEST(StatusPageParser, RefusesMalformedLinesNamingTheLine) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"ts_x 1\nts_y\n", "line 2: missing value"},
      {"ts_x{a=\"b\" 1\n", "line 1: expected ',' or '}'"},
      {"ts_x{a=\"b} 1\n", "line 1: unterminated label value"},
      {"ts_x{a=\"\\t\"} 1\n", "line 1: unknown escape"},
      {"ts_x{a=\"1\",a=\"2\"} 1\n", "line 1: label \"a\" given twice"},
      {"ts_x one\n", "line 1: invalid value \"one\""},
      {"ts_x 1 2 3\n", "line 1: unexpected text after the timestamp"},
      {"ts_x 1 soon\n", "line 1: invalid timestamp"},
      {"# TYPE ts_x countr\n", "line 1: unknown metric type \"countr\""},
      {"# TYPE ts_x counter\n# TYPE ts_x gauge\n", "line 2: second TYPE line"},
      {"9ts 1\n", "line 1: expected a metric or label name"},
  };
  for (const auto& [text, message] : bad) {
    try {
      (void)tsctl::parse_prometheus_text(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const tsctl::PromParseError& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos)
          << e.what() << " (expected " << message << ")";
    }
  }
}

// The stand-in for a service's /metrics: what the library's own registry renders.
TEST(StatusPageParser, ReadsWhatTheRegistryRenders) {
  core::MetricsRegistry registry;
  registry.counter(core::metric_name("ts_receiver_trades_total", {{"symbol", "BTCUSDT"}}), "t")
      .add(5);
  registry.gauge(core::metric_name("ts_redis_breaker_state", {{"client", "we\"ird\\"}}), "b")
      .set(2);
  auto& h = registry.histogram(
      core::metric_name("ts_receiver_stage_seconds", {{"stage", "feed_to_redis"}}), "s",
      core::Histogram::kLatencyBounds);
  h.observe(0.0003);
  h.observe(0.002);
  const tsctl::PromScrape scrape = tsctl::parse_prometheus_text(registry.prometheus_text());
  EXPECT_EQ(scrape.types.at("ts_receiver_stage_seconds"), "histogram");
  EXPECT_EQ(find(scrape, "ts_receiver_trades_total", {{"symbol", "BTCUSDT"}})->value, 5);
  EXPECT_EQ(find(scrape, "ts_redis_breaker_state", {{"client", "we\"ird\\"}})->value, 2);
  EXPECT_EQ(find(scrape, "ts_receiver_stage_seconds_count", {{"stage", "feed_to_redis"}})->value,
            2);
  const auto* inf = find(scrape, "ts_receiver_stage_seconds_bucket",
                         {{"le", "+Inf"}, {"stage", "feed_to_redis"}});
  ASSERT_NE(inf, nullptr);
  EXPECT_EQ(inf->value, 2);
}

TEST(StatusPageModel, HistogramQuantileInterpolatesInsideTheBucket) {
  const std::vector<tsctl::HistogramBucket> buckets = {
      {0.001, 10}, {0.01, 90}, {0.1, 100}, {INFINITY, 100}};
  // p50: rank 50, in (0.001, 0.01] holding 80 from 10: 0.001 + 0.009 * 40/80.
  EXPECT_NEAR(*tsctl::histogram_quantile(0.5, buckets), 0.0055, 1e-12);
  // p99: rank 99, in (0.01, 0.1] holding 10 from 90: 0.01 + 0.09 * 9/10.
  EXPECT_NEAR(*tsctl::histogram_quantile(0.99, buckets), 0.091, 1e-12);
  // In the first bucket: from 0.
  EXPECT_NEAR(*tsctl::histogram_quantile(0.05, buckets), 0.0005, 1e-12);
  // Observations above the last bound: the highest finite bound.
  const std::vector<tsctl::HistogramBucket> high = {{0.001, 1}, {INFINITY, 10}};
  EXPECT_EQ(*tsctl::histogram_quantile(0.99, high), 0.001);
  // Nothing observed: no percentile.
  const std::vector<tsctl::HistogramBucket> none = {{0.001, 0}, {INFINITY, 0}};
  EXPECT_FALSE(tsctl::histogram_quantile(0.5, none));
  EXPECT_FALSE(tsctl::histogram_quantile(0.5, {}));
}

TEST(StatusPageModel, CounterIncreaseSurvivesARestart) {
  EXPECT_EQ(tsctl::counter_increase(10, 25), 15);
  EXPECT_EQ(tsctl::counter_increase(100, 7), 7);  // the service restarted: counted from zero
}

TEST(StatusPageModel, ViewsFromTwoScrapes) {
  const tsctl::SteadyTime t0{};
  const std::string before =
      "# TYPE ts_receiver_trades_total counter\n"
      "ts_receiver_trades_total{symbol=\"BTCUSDT\"} 100\n"
      "ts_receiver_trades_written_total{symbol=\"BTCUSDT\"} 90\n"
      "ts_stream_consumer_delivered_total{group=\"recorder\"} 50\n"
      "ts_stream_consumer_lag{group=\"recorder\"} 3\n"
      "ts_redis_breaker_state{client=\"main\"} 0\n"
      "ts_redis_connected{client=\"main\"} 1\n"
      "ts_redis_reconnects_total{client=\"main\"} 1\n"
      "ts_recorder_trades_written_total 10\n"
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"0.001\"} 10\n"
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"0.01\"} 10\n"
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"+Inf\"} 10\n";
  const std::string after =
      "# TYPE ts_receiver_trades_total counter\n"
      "ts_receiver_trades_total{symbol=\"BTCUSDT\"} 300\n"
      "ts_receiver_trades_written_total{symbol=\"BTCUSDT\"} 290\n"
      "ts_receiver_backfilled_total{symbol=\"BTCUSDT\"} 4\n"
      "ts_stream_consumer_delivered_total{group=\"recorder\"} 150\n"
      "ts_stream_consumer_lag{group=\"recorder\"} 7\n"
      "ts_stream_consumer_pending{group=\"recorder\"} 2\n"
      "ts_redis_breaker_state{client=\"main\"} 2\n"
      "ts_redis_breaker_trips_total{client=\"main\"} 1\n"
      "ts_redis_connected{client=\"main\"} 0\n"
      "ts_redis_reconnects_total{client=\"main\"} 3\n"
      "ts_recorder_trades_written_total 30\n"
      // 100 new observations, all in (0.001, 0.01]: the window's p50 is there, although the
      // older ones (<= 0.001) would pull a since-start p50 down.
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"0.001\"} 10\n"
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"0.01\"} 110\n"
      "ts_receiver_stage_seconds_bucket{stage=\"feed_to_redis\",le=\"+Inf\"} 110\n";
  const tsctl::MetricsSnapshot older = snapshot_of(before, t0);
  const tsctl::MetricsSnapshot newer = snapshot_of(after, t0 + 2s);
  const tsctl::MetricsView view = tsctl::compute_view("ts-receiver", &older, newer);

  ASSERT_EQ(view.symbols.size(), 1u);
  EXPECT_EQ(view.symbols[0].symbol, "BTCUSDT");
  EXPECT_DOUBLE_EQ(*view.symbols[0].received_rate, 100);
  EXPECT_DOUBLE_EQ(*view.symbols[0].written_rate, 100);
  EXPECT_EQ(view.symbols[0].backfilled_total, 4);

  ASSERT_EQ(view.consumers.size(), 1u);
  EXPECT_EQ(view.consumers[0].group, "recorder");
  EXPECT_EQ(*view.consumers[0].lag, 7);
  EXPECT_EQ(*view.consumers[0].pending, 2);
  EXPECT_DOUBLE_EQ(*view.consumers[0].delivered_rate, 50);

  ASSERT_EQ(view.latency.size(), 1u);
  EXPECT_TRUE(view.latency[0].windowed);
  EXPECT_EQ(view.latency[0].labels, "stage=feed_to_redis");
  EXPECT_NEAR(*view.latency[0].p50, 0.0055, 1e-12);
  EXPECT_DOUBLE_EQ(*view.latency[0].rate, 50);
  EXPECT_EQ(view.latency[0].count, 110);

  ASSERT_EQ(view.breakers.size(), 1u);
  EXPECT_EQ(view.breakers[0].kind, "redis");
  EXPECT_EQ(view.breakers[0].state, 2);
  EXPECT_EQ(view.breakers[0].trips, 1);

  ASSERT_EQ(view.connections.size(), 1u);
  EXPECT_EQ(view.connections[0].connected, 0);
  EXPECT_EQ(view.connections[0].reconnects, 3);
  EXPECT_DOUBLE_EQ(*view.connections[0].reconnect_rate, 1);

  ASSERT_EQ(view.counters.size(), 1u);
  EXPECT_EQ(view.counters[0].metric, "ts_recorder_trades_written_total");
  EXPECT_DOUBLE_EQ(*view.counters[0].rate, 10);

  // One scrape only: totals and percentiles since start, no rates.
  const tsctl::MetricsView first = tsctl::compute_view("ts-receiver", nullptr, newer);
  EXPECT_FALSE(first.symbols[0].received_rate);
  EXPECT_FALSE(first.latency[0].windowed);
  EXPECT_TRUE(first.latency[0].p50);
}

TEST(StatusPageModel, ReadinessAndStateAndJson) {
  const auto checks = tsctl::parse_readyz("not ready\nredis: ok\npostgres: breaker open\n");
  ASSERT_EQ(checks.size(), 2u);
  EXPECT_TRUE(checks[0].ok);
  EXPECT_EQ(checks[1].name, "postgres");
  EXPECT_FALSE(checks[1].ok);
  EXPECT_EQ(checks[1].detail, "breaker open");
  EXPECT_EQ(tsctl::parse_readyz("not ready\nstopping\n")[0].name, "stopping");

  tsctl::ServiceStatus up;
  up.name = "ts-receiver";
  up.address = "127.0.0.1:9101";
  EXPECT_EQ(up.state(), "pending");
  up.polled = true;
  up.metrics_ok = true;
  up.readyz_status = 200;
  up.readyz_body = "ready\nredis: ok\n";
  EXPECT_EQ(up.state(), "up");
  up.add_snapshot(snapshot_of("ts_receiver_trades_total{symbol=\"ETHUSDT\"} 5\n", {}), 10s);
  tsctl::ServiceStatus down;
  down.name = "ts-recorder";
  down.address = "127.0.0.1:9102";
  down.polled = true;
  down.error = "/metrics: timed out";
  EXPECT_EQ(down.state(), "down");
  tsctl::ServiceStatus not_ready = up;
  not_ready.readyz_status = 503;
  EXPECT_EQ(not_ready.state(), "not-ready");

  const std::string json =
      tsctl::render_status_json({&up, &down}, tsctl::SteadyTime{} + 1s, 1000ms, "0.1.0");
  EXPECT_NE(json.find("\"name\":\"ts-receiver\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"state\":\"up\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"state\":\"down\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"error\":\"/metrics: timed out\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"symbol\":\"ETHUSDT\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"received_rate\":null"), std::string::npos) << json;
  EXPECT_NE(json.find("\"checks\":[{\"name\":\"redis\",\"ok\":true"), std::string::npos) << json;
}

TEST(StatusPageModel, WindowKeepsTheSpan) {
  tsctl::ServiceStatus s;
  const tsctl::SteadyTime t0{};
  for (int i = 0; i <= 20; ++i) s.add_snapshot(snapshot_of("x 1\n", t0 + i * 1s), 5s);
  ASSERT_GE(s.window.size(), 2u);
  EXPECT_EQ(s.window.back().at - s.window.front().at, 5s);
}

TEST(StatusPageFlags, ListenAndServiceTargets) {
  EXPECT_EQ(tsctl::parse_listen("127.0.0.1:8090").port, 8090);
  EXPECT_EQ(tsctl::parse_listen("[::1]:0").host, "::1");
  EXPECT_THROW((void)tsctl::parse_listen("localhost:80"), core::ConfigError);
  EXPECT_THROW((void)tsctl::parse_listen("127.0.0.1"), core::ConfigError);
  EXPECT_THROW((void)tsctl::parse_listen("127.0.0.1:70000"), core::ConfigError);
  EXPECT_THROW((void)tsctl::parse_listen("::1:80"), core::ConfigError);
  const auto targets = tsctl::parse_service_targets({"ts-receiver=127.0.0.1:9101"});
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0].name, "ts-receiver");
  EXPECT_EQ(targets[0].address, "127.0.0.1:9101");
  EXPECT_THROW((void)tsctl::parse_service_targets({"127.0.0.1:9101"}), core::ConfigError);
  EXPECT_THROW((void)tsctl::parse_service_targets({"a=127.0.0.1:1", "a=127.0.0.1:2"}),
               core::ConfigError);
  EXPECT_THROW((void)tsctl::parse_service_targets({"a=127.0.0.1:0"}), core::ConfigError);
}

TEST(StatusPageFlags, RepeatedServiceFlagsAddUp) {
  std::vector<std::string> args = {"tsctl",
                                   "status-page",
                                   "--service",
                                   "a=127.0.0.1:1",
                                   "--refresh",
                                   "1s",
                                   "--service=b=127.0.0.1:2"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  const auto joined =
      tsctl::join_repeated_flag(static_cast<int>(argv.size()), argv.data(), "--service");
  const std::vector<std::string> expected = {
      "tsctl", "status-page", "--service", "a=127.0.0.1:1,b=127.0.0.1:2", "--refresh", "1s"};
  EXPECT_EQ(joined, expected);
}

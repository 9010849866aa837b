// MetricsRegistry (core/metrics.hpp): one metric per name, references that stay valid, gauges
// that go up and down, snapshot() of every metric sorted by name, counts exact under threads.
#include <trading_shared/core/metrics.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace core = trading_shared::core;

namespace {

using Snapshot = std::vector<std::pair<std::string, std::int64_t>>;

TEST(Metrics, ACounterIsOnePerNameAndCounts) {
  core::MetricsRegistry registry;
  core::Counter& retries = registry.counter("ts_retries_total{op=\"pg.query\"}");
  EXPECT_EQ(retries.value(), 0u);
  retries.add();
  retries.add(4);
  EXPECT_EQ(&registry.counter("ts_retries_total{op=\"pg.query\"}"), &retries);
  EXPECT_EQ(registry.counter("ts_retries_total{op=\"pg.query\"}").value(), 5u);
  // Another label set is another counter.
  EXPECT_NE(&registry.counter("ts_retries_total{op=\"redis.xadd\"}"), &retries);
  EXPECT_EQ(registry.counter("ts_retries_total{op=\"redis.xadd\"}").value(), 0u);
}

TEST(Metrics, AGaugeIsOnePerNameAndGoesUpAndDown) {
  core::MetricsRegistry registry;
  core::Gauge& in_flight = registry.gauge("ts_in_flight{client=\"redis\"}");
  EXPECT_EQ(in_flight.value(), 0);
  in_flight.add(3);
  in_flight.add(-5);
  EXPECT_EQ(in_flight.value(), -2);
  in_flight.set(42);
  EXPECT_EQ(in_flight.value(), 42);
  in_flight.add(-42);
  EXPECT_EQ(in_flight.value(), 0);
  EXPECT_EQ(&registry.gauge("ts_in_flight{client=\"redis\"}"), &in_flight);
  in_flight.set(-7);
  EXPECT_EQ(registry.gauge("ts_in_flight{client=\"redis\"}").value(), -7);
  // A family has one type: the same name as a counter is a programming error.
  EXPECT_THROW(registry.counter("ts_in_flight{client=\"redis\"}"), std::logic_error);
  EXPECT_EQ(in_flight.value(), -7);
}

TEST(Metrics, ReferencesStayValidWhileMoreMetricsAreAdded) {
  core::MetricsRegistry registry;
  core::Counter& first = registry.counter("m_first");
  core::Gauge& gauge = registry.gauge("m_gauge");
  for (int i = 0; i < 1000; ++i) {
    registry.counter("m_" + std::to_string(i)).add(1);
    registry.gauge("g_" + std::to_string(i)).set(i);
  }
  first.add(7);
  gauge.set(-3);
  EXPECT_EQ(registry.counter("m_first").value(), 7u);
  EXPECT_EQ(registry.gauge("m_gauge").value(), -3);
}

TEST(Metrics, SnapshotListsEveryMetricSortedByName) {
  core::MetricsRegistry registry;
  EXPECT_TRUE(registry.snapshot().empty());
  registry.counter("ts_retries_total{op=\"b\"}").add(2);
  registry.gauge("ts_connections").set(-1);
  registry.counter("ts_breaker_trips_total").add(1);
  registry.gauge("ts_queue_depth").set(12);
  registry.counter("ts_retries_total{op=\"a\"}");  // looked up, never counted: listed as 0
  const Snapshot expected{{"ts_breaker_trips_total", 1},
                          {"ts_connections", -1},
                          {"ts_queue_depth", 12},
                          {"ts_retries_total{op=\"a\"}", 0},
                          {"ts_retries_total{op=\"b\"}", 2}};
  EXPECT_EQ(registry.snapshot(), expected);
  // A copy: later changes show in the next snapshot only.
  Snapshot taken = registry.snapshot();
  registry.gauge("ts_queue_depth").add(-12);
  registry.counter("ts_a_new_one").add(3);
  EXPECT_EQ(taken, expected);
  const Snapshot after = registry.snapshot();
  ASSERT_EQ(after.size(), 6u);
  EXPECT_EQ(after.front(), (std::pair<std::string, std::int64_t>{"ts_a_new_one", 3}));
  EXPECT_EQ(after[3], (std::pair<std::string, std::int64_t>{"ts_queue_depth", 0}));
}

TEST(Metrics, CountsFromManyThreadsAreExact) {
  core::MetricsRegistry registry;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&registry, t] {
      // Each thread looks the metrics up itself (the look-up takes the lock).
      core::Counter& c = registry.counter("ts_events_total");
      core::Gauge& g = registry.gauge("ts_balance");
      for (int i = 0; i < kPerThread; ++i) {
        c.add();
        g.add(t % 2 == 0 ? 2 : -1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(registry.counter("ts_events_total").value(),
            static_cast<std::uint64_t>(kThreads) * kPerThread);
  EXPECT_EQ(registry.gauge("ts_balance").value(), (kThreads / 2) * kPerThread * (2 - 1));
  const Snapshot s = registry.snapshot();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].first, "ts_balance");
  EXPECT_EQ(s[1].second, static_cast<std::int64_t>(kThreads) * kPerThread);
}

TEST(Metrics, TheGlobalRegistryIsOneInstance) {
  core::MetricsRegistry& global = core::MetricsRegistry::global();
  EXPECT_EQ(&core::MetricsRegistry::global(), &global);
  core::Counter& c = global.counter("ts_metrics_test_global_total");
  const std::uint64_t before = c.value();
  c.add();
  EXPECT_EQ(core::MetricsRegistry::global().counter("ts_metrics_test_global_total").value(),
            before + 1);
}

}  // namespace

namespace {

TEST(Metrics, ThePrometheusTextHasHelpTypeAndEverySeries) {
  core::MetricsRegistry registry;
  registry.counter(core::metric_name("ts_x_total", {{"client", "a\"b\\c"}}), "Things done.").add(3);
  registry.gauge("ts_depth", "Queue depth.\nSecond line.").set(-2);
  core::Histogram& h = registry.histogram("ts_rtt_seconds{client=\"main\"}", "Round trips.",
                                          std::vector<double>{0.001, 0.01});
  h.observe(0.0005);
  h.observe(std::chrono::milliseconds(5));
  h.observe(2.0);
  const std::string text = registry.prometheus_text();
  EXPECT_EQ(text,
            "# HELP ts_depth Queue depth.\\nSecond line.\n"
            "# TYPE ts_depth gauge\n"
            "ts_depth -2\n"
            "# HELP ts_rtt_seconds Round trips.\n"
            "# TYPE ts_rtt_seconds histogram\n"
            "ts_rtt_seconds_bucket{client=\"main\",le=\"0.001\"} 1\n"
            "ts_rtt_seconds_bucket{client=\"main\",le=\"0.01\"} 2\n"
            "ts_rtt_seconds_bucket{client=\"main\",le=\"+Inf\"} 3\n"
            "ts_rtt_seconds_sum{client=\"main\"} 2.0055\n"
            "ts_rtt_seconds_count{client=\"main\"} 3\n"
            "# HELP ts_x_total Things done.\n"
            "# TYPE ts_x_total counter\n"
            "ts_x_total{client=\"a\\\"b\\\\c\"} 3\n");
}

TEST(Metrics, AFamilyBeyondItsBoundOfLabelSetsFoldsIntoOneOverflowSeries) {
  core::MetricsRegistry registry(3);
  for (int i = 0; i < 10; ++i)
    registry.counter("ts_per_symbol_total{symbol=\"S" + std::to_string(i) + "\"}").add();
  const auto s = registry.snapshot();
  // 3 series: S0, S1, then the overflow series takes the rest (8 increments); 8 refusals.
  const std::vector<std::pair<std::string, std::int64_t>> expected{
      {"ts_metrics_series_refused_total", 8},
      {"ts_per_symbol_total{overflow=\"true\"}", 8},
      {"ts_per_symbol_total{symbol=\"S0\"}", 1},
      {"ts_per_symbol_total{symbol=\"S1\"}", 1}};
  EXPECT_EQ(s, expected);
}

TEST(Metrics, BadNamesAndBoundsAreRefused) {
  core::MetricsRegistry registry;
  EXPECT_THROW(registry.counter("1abc"), std::logic_error);
  EXPECT_THROW(registry.counter("a-b"), std::logic_error);
  EXPECT_THROW(registry.gauge("ts_x{a=\"b\""), std::logic_error);
  EXPECT_THROW(core::Histogram(std::vector<double>{1.0, 1.0}), std::invalid_argument);
  // Refused bounds leave no series behind: the registry still renders.
  EXPECT_THROW(registry.histogram("ts_bad_seconds", "", std::vector<double>{2.0, 1.0}),
               std::invalid_argument);
  EXPECT_EQ(registry.prometheus_text().find("ts_bad_seconds_bucket"), std::string::npos);
  core::Histogram& h = registry.histogram("ts_good_seconds");
  h.observe(std::nan(""));
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.sum(), 0.0);
}

}  // namespace

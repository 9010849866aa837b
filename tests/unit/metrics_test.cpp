// MetricsRegistry (core/metrics.hpp): one metric per name, references that stay valid, gauges
// that go up and down, snapshot() of every metric sorted by name, counts exact under threads.
#include <trading_shared/core/metrics.hpp>

#include <gtest/gtest.h>

#include <cstdint>
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
  // A gauge and a counter are separate metrics, even under one name.
  registry.counter("ts_in_flight{client=\"redis\"}").add(1);
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

// The services' own metrics and readiness checks (services/common/service_metrics.hpp,
// services/receiver/receiver_metrics.hpp), without servers: per-symbol series, the mirrored
// counters, the write path's and the consumer's readiness as plain functions.
#include "common/service_metrics.hpp"

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/redis/stream_consumer.hpp>
#include <trading_shared/ws/sequence_tracker.hpp>

#include "receiver/receiver_metrics.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace core = trading_shared::core;
namespace redis = trading_shared::redis;
namespace ws = trading_shared::ws;
namespace services = trading_shared::services;

namespace {

std::map<std::string, std::int64_t> values(const core::MetricsRegistry& registry) {
  std::map<std::string, std::int64_t> out;
  for (const auto& [name, value] : registry.snapshot()) out[name] = value;
  return out;
}

TEST(ServiceMetrics, ReceiverSeriesPerSymbolAndMirrored) {
  core::MetricsRegistry registry;
  services::SymbolMetrics btc(registry, "BTCUSDT");
  services::SymbolMetrics eth(registry, "ETHUSDT");
  btc.trades.add(3);
  btc.written.add(2);
  eth.gaps.add();
  eth.missing.add(7);
  eth.backfilled.add(7);
  services::ReceiverMetrics metrics(registry);
  services::ReceiverCounters counters;
  counters.received = 12;
  counters.malformed = 1;
  counters.write_retries = 4;
  ws::SequenceTracker sequence;
  (void)sequence.observe("BTCUSDT", 10);
  (void)sequence.observe("BTCUSDT", 10);  // a duplicate
  services::FeedSetStats feed;
  feed.connections = 2;
  feed.unconfirmed_symbols = 1;
  metrics.sample(counters, 5, sequence, feed);
  metrics.batch_size.observe(12.0);
  metrics.feed_to_redis.observe(std::chrono::microseconds(800));
  const auto v = values(registry);
  EXPECT_EQ(v.at("ts_receiver_trades_total{symbol=\"BTCUSDT\"}"), 3);
  EXPECT_EQ(v.at("ts_receiver_trades_written_total{symbol=\"BTCUSDT\"}"), 2);
  EXPECT_EQ(v.at("ts_receiver_gaps_total{symbol=\"ETHUSDT\"}"), 1);
  EXPECT_EQ(v.at("ts_receiver_missing_trades_total{symbol=\"ETHUSDT\"}"), 7);
  EXPECT_EQ(v.at("ts_receiver_backfilled_total{symbol=\"ETHUSDT\"}"), 7);
  EXPECT_EQ(v.at("ts_receiver_messages_total"), 12);
  EXPECT_EQ(v.at("ts_receiver_malformed_total"), 1);
  EXPECT_EQ(v.at("ts_receiver_write_retries_total"), 4);
  EXPECT_EQ(v.at("ts_receiver_duplicates_total"), 1);
  EXPECT_EQ(v.at("ts_receiver_held_trades"), 5);
  EXPECT_EQ(v.at("ts_receiver_feed_connections"), 2);
  EXPECT_EQ(v.at("ts_receiver_feed_unconfirmed_symbols"), 1);
  const std::string text = registry.prometheus_text();
  EXPECT_NE(text.find("# TYPE ts_receiver_stage_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("ts_receiver_stage_seconds_count{stage=\"feed_to_redis\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ts_receiver_stage_seconds_count{stage=\"event_to_redis\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE ts_receiver_batch_size histogram\n"), std::string::npos);
  EXPECT_NE(text.find("# HELP ts_receiver_trades_total "), std::string::npos);
}

TEST(ServiceMetrics, WritePathReadiness) {
  using namespace std::chrono_literals;
  const services::WritePathReadiness check(200ms);
  const auto t0 = services::WritePathReadiness::Clock::now();
  EXPECT_EQ(check.check(0, false, t0, t0 + 1s), "");
  // A write in progress for less than an interval: fine (it may be a normal one).
  EXPECT_EQ(check.check(0, true, t0, t0 + 199ms), "");
  // In progress for an interval: flagged at that check, not one later.
  EXPECT_EQ(check.check(0, true, t0, t0 + 200ms),
            "a batch write has been in progress for over a check interval");
  // A key failing: its trades held (a fixed text, whatever the counts).
  EXPECT_EQ(check.check(1, false, t0, t0 + 1s), "Redis keys failing, their trades held");
  EXPECT_EQ(check.check(3, true, t0, t0 + 1s), "Redis keys failing, their trades held");
  EXPECT_EQ(check.check(0, false, t0, t0 + 2s), "");
}

TEST(ServiceMetrics, ConsumerReadiness) {
  services::ConsumerReadiness check;
  redis::StreamConsumerStats stats;
  EXPECT_EQ(check.check(stats), "");
  stats.delivered = 10;
  stats.acked = 10;
  EXPECT_EQ(check.check(stats), "");
  // Reads fail and nothing moves: a fixed text, whatever the count.
  stats.read_errors = 3;
  EXPECT_EQ(check.check(stats), "reads failing, nothing delivered or acknowledged");
  stats.read_errors = 9;
  EXPECT_EQ(check.check(stats), "reads failing, nothing delivered or acknowledged");
  // A failure, but entries were delivered meanwhile: it recovered.
  stats.read_errors = 10;
  stats.delivered = 12;
  EXPECT_EQ(check.check(stats), "");
  // Idle (no new entries, no errors): ready.
  EXPECT_EQ(check.check(stats), "");
}

TEST(ServiceMetrics, ConsumerWritePathStuckCall) {
  using namespace std::chrono_literals;
  services::ConsumerWritePath check(200ms);
  std::vector<services::HandlerCalls> calls(2);
  redis::StreamConsumerStats stats;
  const auto t0 = services::HandlerCalls::Clock::now();
  EXPECT_EQ(check.check(calls, 0, 0, stats, t0), "");
  {
    const auto call = calls[1].begin(t0, 5, 7);
    // In progress for an interval, but never retried (a slow statement): fine.
    EXPECT_EQ(check.check(calls, 5, 7, stats, t0 + 300ms), "");
    // Retried, but not yet for an interval: fine.
    EXPECT_EQ(check.check(calls, 6, 7, stats, t0 + 150ms), "");
    // Retried and in progress for an interval, nothing committed: stuck.
    EXPECT_EQ(check.check(calls, 6, 7, stats, t0 + 200ms),
              "a handler call has been retried for over a check interval, nothing committed");
    EXPECT_EQ(check.check(calls, 9, 7, stats, t0 + 400ms),
              "a handler call has been retried for over a check interval, nothing committed");
    // Another reader committed meanwhile: the write path works.
    EXPECT_EQ(check.check(calls, 9, 8, stats, t0 + 600ms), "");
  }
  // The call ended.
  EXPECT_FALSE(calls[1].active);
  EXPECT_EQ(check.check(calls, 9, 8, stats, t0 + 800ms), "");
}

TEST(ServiceMetrics, ConsumerWritePathHandlerErrors) {
  using namespace std::chrono_literals;
  services::ConsumerWritePath check(200ms);
  std::vector<services::HandlerCalls> calls(1);
  redis::StreamConsumerStats stats;
  const auto now = services::HandlerCalls::Clock::now();
  stats.delivered = 10;
  stats.acked = 10;
  EXPECT_EQ(check.check(calls, 0, 1, stats, now), "");
  // Handler errors, nothing acknowledged: not ready, and it stays so while nothing moves
  // (no traffic until the entries are delivered again).
  stats.delivered = 15;
  stats.handler_errors = 5;
  EXPECT_EQ(check.check(calls, 0, 1, stats, now), "handler calls failing, nothing acknowledged");
  EXPECT_EQ(check.check(calls, 0, 1, stats, now), "handler calls failing, nothing acknowledged");
  stats.handler_errors = 10;
  EXPECT_EQ(check.check(calls, 0, 1, stats, now), "handler calls failing, nothing acknowledged");
  // An entry acknowledged: ready again.
  stats.acked = 11;
  EXPECT_EQ(check.check(calls, 0, 2, stats, now), "");
  // Errors beside acknowledgements (a poison entry isolated, its batch-mates written): ready.
  stats.handler_errors = 11;
  stats.acked = 20;
  EXPECT_EQ(check.check(calls, 0, 3, stats, now), "");
}

}  // namespace

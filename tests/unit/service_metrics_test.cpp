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
  services::WritePathReadiness check;
  EXPECT_EQ(check.check(0, 0, 1, false), "");
  // A write in progress at one check: not yet (it may be a normal one).
  EXPECT_EQ(check.check(0, 0, 2, true), "");
  // The same write still in progress at the next check: retried for over an interval.
  EXPECT_EQ(check.check(0, 0, 2, true), "a batch write has been retried for over a check interval");
  // Another write in progress: a new one, fine.
  EXPECT_EQ(check.check(0, 0, 3, true), "");
  EXPECT_EQ(check.check(0, 0, 3, false), "");
  // A key failing: its trades held.
  EXPECT_EQ(check.check(1, 250, 4, false), "1 Redis key(s) failing, 250 trade(s) held");
  EXPECT_EQ(check.check(0, 0, 5, false), "");
}

TEST(ServiceMetrics, ConsumerReadiness) {
  services::ConsumerReadiness check;
  redis::StreamConsumerStats stats;
  EXPECT_EQ(check.check(stats), "");
  stats.delivered = 10;
  stats.acked = 10;
  EXPECT_EQ(check.check(stats), "");
  // Reads fail and nothing moves.
  stats.read_errors = 3;
  EXPECT_EQ(check.check(stats), "reads failing (3 error(s) since last check)");
  // A failure, but entries were delivered meanwhile: it recovered.
  stats.read_errors = 4;
  stats.delivered = 12;
  EXPECT_EQ(check.check(stats), "");
  // Idle (no new entries, no errors): ready.
  EXPECT_EQ(check.check(stats), "");
}

}  // namespace

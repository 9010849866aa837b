// The clients' exporters (redis/pg/ws/http metrics.hpp): the contract's series exist with help
// text, sample() mirrors a stats snapshot, label values and breaker states as documented, the
// readiness checks as plain functions. No server: stats are built by hand.
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/http/metrics.hpp>
#include <trading_shared/pg/metrics.hpp>
#include <trading_shared/redis/metrics.hpp>
#include <trading_shared/ws/metrics.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace core = trading_shared::core;
namespace redis = trading_shared::redis;
namespace pg = trading_shared::pg;
namespace ws = trading_shared::ws;
namespace http = trading_shared::http;

namespace {

std::map<std::string, std::int64_t> values(const core::MetricsRegistry& registry) {
  std::map<std::string, std::int64_t> out;
  for (const auto& [name, value] : registry.snapshot()) out[name] = value;
  return out;
}

bool has_family(const std::string& text, std::string_view family, std::string_view type) {
  return text.find("# HELP " + std::string(family) + " ") != std::string::npos &&
         text.find("# TYPE " + std::string(family) + " " + std::string(type) + "\n") !=
             std::string::npos;
}

TEST(ClientMetrics, RedisSampleMirrorsTheStats) {
  core::MetricsRegistry registry;
  redis::RedisMetrics metrics(registry, "main");
  redis::RedisStats stats;
  stats.connected = true;
  stats.in_flight = 3;
  stats.queued = 2;
  stats.commands = 100;
  stats.replies = 120;
  stats.failures = 7;
  stats.timeouts = 2;
  stats.rejected = 4;
  stats.disconnects = 5;
  stats.connect_failures = 9;
  stats.breaker = core::CircuitState::half_open;
  stats.breaker_trips = 1;
  metrics.sample(stats);
  auto v = values(registry);
  EXPECT_EQ(v["ts_redis_connected{client=\"main\"}"], 1);
  EXPECT_EQ(v["ts_redis_in_flight{client=\"main\"}"], 3);
  EXPECT_EQ(v["ts_redis_queued{client=\"main\"}"], 2);
  EXPECT_EQ(v["ts_redis_commands_total{client=\"main\"}"], 100);
  EXPECT_EQ(v["ts_redis_replies_total{client=\"main\"}"], 120);
  EXPECT_EQ(v["ts_redis_failures_total{client=\"main\"}"], 7);
  EXPECT_EQ(v["ts_redis_timeouts_total{client=\"main\"}"], 2);
  EXPECT_EQ(v["ts_redis_rejected_total{client=\"main\"}"], 4);
  EXPECT_EQ(v["ts_redis_reconnects_total{client=\"main\"}"], 5);
  EXPECT_EQ(v["ts_redis_connect_failures_total{client=\"main\"}"], 9);
  EXPECT_EQ(v["ts_redis_breaker_state{client=\"main\"}"], 1);
  EXPECT_EQ(v["ts_redis_breaker_trips_total{client=\"main\"}"], 1);

  // A later snapshot replaces the values (counters mirror cumulative counts).
  stats.connected = false;
  stats.commands = 150;
  stats.breaker = core::CircuitState::open;
  metrics.sample(stats);
  v = values(registry);
  EXPECT_EQ(v["ts_redis_connected{client=\"main\"}"], 0);
  EXPECT_EQ(v["ts_redis_commands_total{client=\"main\"}"], 150);
  EXPECT_EQ(v["ts_redis_breaker_state{client=\"main\"}"], 2);

  metrics.round_trip().observe(std::chrono::microseconds(300));
  const std::string text = registry.prometheus_text();
  for (const char* family :
       {"ts_redis_connected", "ts_redis_in_flight", "ts_redis_breaker_state"}) {
    EXPECT_TRUE(has_family(text, family, "gauge")) << family;
  }
  for (const char* family : {"ts_redis_commands_total", "ts_redis_failures_total",
                             "ts_redis_reconnects_total", "ts_redis_breaker_trips_total"}) {
    EXPECT_TRUE(has_family(text, family, "counter")) << family;
  }
  EXPECT_TRUE(has_family(text, "ts_redis_round_trip_seconds", "histogram"));
  EXPECT_NE(text.find("ts_redis_round_trip_seconds_bucket{client=\"main\",le=\"+Inf\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(metrics.round_trip().bucket(3), 1u);  // (0.00025, 0.0005]
  EXPECT_NE(text.find("ts_redis_round_trip_seconds_count{client=\"main\"} 1\n"), std::string::npos);
}

TEST(ClientMetrics, TwoClientsAreTwoSeriesOfOneFamily) {
  core::MetricsRegistry registry;
  redis::RedisMetrics a(registry, "main");
  redis::RedisMetrics b(registry, "blocking");
  redis::RedisStats stats;
  stats.commands = 1;
  a.sample(stats);
  stats.commands = 2;
  b.sample(stats);
  auto v = values(registry);
  EXPECT_EQ(v["ts_redis_commands_total{client=\"main\"}"], 1);
  EXPECT_EQ(v["ts_redis_commands_total{client=\"blocking\"}"], 2);
  // Exporting the same client twice shares the series (no error, no duplicate).
  redis::RedisMetrics again(registry, "main");
  EXPECT_EQ(&again.round_trip(), &a.round_trip());
}

TEST(ClientMetrics, BreakerGaugeValues) {
  EXPECT_EQ(core::gauge_value(core::CircuitState::closed), 0);
  EXPECT_EQ(core::gauge_value(core::CircuitState::half_open), 1);
  EXPECT_EQ(core::gauge_value(core::CircuitState::open), 2);
}

TEST(ClientMetrics, RedisReadiness) {
  redis::RedisStats stats;
  stats.connected = true;
  EXPECT_EQ(redis::readiness(stats), "");
  stats.connected = false;
  EXPECT_EQ(redis::readiness(stats), "not connected");
  stats.connected = true;
  stats.breaker = core::CircuitState::open;
  EXPECT_EQ(redis::readiness(stats), "breaker open");
  stats.breaker = core::CircuitState::half_open;  // probing: taking work again
  EXPECT_EQ(redis::readiness(stats), "");
}

TEST(ClientMetrics, StreamConsumerSampleAndGroupState) {
  core::MetricsRegistry registry;
  redis::StreamConsumerMetrics metrics(registry, "recorder");
  auto v = values(registry);
  EXPECT_EQ(v["ts_stream_consumer_lag{group=\"recorder\"}"], -1);  // unknown until set
  redis::StreamConsumerStats stats;
  stats.delivered = 10;
  stats.acked = 9;
  stats.claimed = 3;
  stats.dead_lettered = 1;
  stats.read_errors = 2;
  metrics.sample(stats);
  metrics.set_group_state(4, 250);
  v = values(registry);
  EXPECT_EQ(v["ts_stream_consumer_delivered_total{group=\"recorder\"}"], 10);
  EXPECT_EQ(v["ts_stream_consumer_acked_total{group=\"recorder\"}"], 9);
  EXPECT_EQ(v["ts_stream_consumer_claimed_total{group=\"recorder\"}"], 3);
  EXPECT_EQ(v["ts_stream_consumer_dead_lettered_total{group=\"recorder\"}"], 1);
  EXPECT_EQ(v["ts_stream_consumer_read_errors_total{group=\"recorder\"}"], 2);
  EXPECT_EQ(v["ts_stream_consumer_pending{group=\"recorder\"}"], 4);
  EXPECT_EQ(v["ts_stream_consumer_lag{group=\"recorder\"}"], 250);
  metrics.set_group_state(0, std::nullopt);
  EXPECT_EQ(values(registry)["ts_stream_consumer_lag{group=\"recorder\"}"], -1);
  const std::string text = registry.prometheus_text();
  EXPECT_TRUE(has_family(text, "ts_stream_consumer_pending", "gauge"));
  EXPECT_TRUE(has_family(text, "ts_stream_consumer_delivered_total", "counter"));
}

TEST(ClientMetrics, PostgresSampleWithErrorsByKind) {
  core::MetricsRegistry registry;
  pg::PostgresMetrics metrics(registry, "main");
  pg::PostgresStats stats;
  stats.connections = 2;
  stats.exclusive = 1;
  stats.waiters = 5;
  stats.queries = 1000;
  stats.failures = 6;
  stats.failures_by_kind[static_cast<std::size_t>(trading_shared::ErrorKind::outcome_unknown)] = 4;
  stats.failures_by_kind[static_cast<std::size_t>(trading_shared::ErrorKind::permanent)] = 2;
  stats.connects = 3;
  stats.discarded = 1;
  stats.breaker = core::CircuitState::open;
  stats.breaker_trips = 2;
  metrics.sample(stats);
  auto v = values(registry);
  EXPECT_EQ(v["ts_pg_connections{client=\"main\"}"], 2);
  EXPECT_EQ(v["ts_pg_connections_leased{client=\"main\"}"], 1);
  EXPECT_EQ(v["ts_pg_waiters{client=\"main\"}"], 5);
  EXPECT_EQ(v["ts_pg_queries_total{client=\"main\"}"], 1000);
  EXPECT_EQ(v["ts_pg_errors_total{client=\"main\",kind=\"outcome_unknown\"}"], 4);
  EXPECT_EQ(v["ts_pg_errors_total{client=\"main\",kind=\"permanent\"}"], 2);
  EXPECT_EQ(v["ts_pg_errors_total{client=\"main\",kind=\"transient_not_sent\"}"], 0);
  EXPECT_EQ(v.count("ts_pg_errors_total{client=\"main\",kind=\"cancelled\"}"), 0u);
  EXPECT_EQ(v["ts_pg_reconnects_total{client=\"main\"}"], 1);
  EXPECT_EQ(v["ts_pg_breaker_state{client=\"main\"}"], 2);
  EXPECT_EQ(v["ts_pg_breaker_trips_total{client=\"main\"}"], 2);
  metrics.acquire_wait().observe(0.0);
  metrics.round_trip().observe(std::chrono::milliseconds(2));
  const std::string text = registry.prometheus_text();
  EXPECT_TRUE(has_family(text, "ts_pg_acquire_wait_seconds", "histogram"));
  EXPECT_TRUE(has_family(text, "ts_pg_round_trip_seconds", "histogram"));
  EXPECT_TRUE(has_family(text, "ts_pg_errors_total", "counter"));
  EXPECT_EQ(metrics.acquire_wait().bucket(0), 1u);  // a wait of 0: the first bucket
  EXPECT_NE(text.find("ts_pg_round_trip_seconds_count{client=\"main\"} 1\n"), std::string::npos)
      << text;
}

TEST(ClientMetrics, PostgresReadinessFollowsConnectsAndTheBreaker) {
  pg::PostgresReadiness check;
  pg::PostgresStats stats;
  stats.connections = 2;
  stats.connects = 2;
  EXPECT_EQ(check.check(stats), "");
  // The server went away: the pool lost its connections and its attempts fail.
  stats.connections = 0;
  stats.discarded = 2;
  EXPECT_EQ(check.check(stats), "");  // nothing failed yet
  stats.connect_failures = 3;
  EXPECT_EQ(check.check(stats), "cannot connect: no open connection");
  EXPECT_EQ(check.check(stats), "cannot connect: no open connection");  // still none
  stats.breaker = core::CircuitState::open;
  EXPECT_EQ(check.check(stats), "breaker open");
  // Back: a connect succeeded.
  stats.breaker = core::CircuitState::half_open;
  stats.connects = 3;
  stats.connections = 1;
  EXPECT_EQ(check.check(stats), "");
  // An idle pool (min_size 0) with an old failure stays ready.
  stats.connections = 0;
  EXPECT_EQ(check.check(stats), "");
}

TEST(ClientMetrics, WebSocketSampleWithReasons) {
  core::MetricsRegistry registry;
  ws::WebSocketMetrics metrics(registry, "feed-0");
  ws::WebSocketStats stats;
  stats.connected = true;
  stats.messages = 500;
  stats.dropped = 7;
  stats.disconnects = 3;
  stats.reasons.eof = 2;
  stats.reasons.idle_timeout = 1;
  stats.queued = 12;
  metrics.sample(stats);
  auto v = values(registry);
  EXPECT_EQ(v["ts_ws_connected{client=\"feed-0\"}"], 1);
  EXPECT_EQ(v["ts_ws_messages_total{client=\"feed-0\"}"], 500);
  EXPECT_EQ(v["ts_ws_dropped_total{client=\"feed-0\",reason=\"overflow\"}"], 7);
  EXPECT_EQ(v["ts_ws_reconnects_total{client=\"feed-0\"}"], 3);
  EXPECT_EQ(v["ts_ws_disconnects_total{client=\"feed-0\",reason=\"eof\"}"], 2);
  EXPECT_EQ(v["ts_ws_disconnects_total{client=\"feed-0\",reason=\"idle_timeout\"}"], 1);
  EXPECT_EQ(v["ts_ws_queued{client=\"feed-0\"}"], 12);
  const std::string text = registry.prometheus_text();
  EXPECT_TRUE(has_family(text, "ts_ws_connected", "gauge"));
  EXPECT_TRUE(has_family(text, "ts_ws_dropped_total", "counter"));
}

TEST(ClientMetrics, HttpSample) {
  core::MetricsRegistry registry;
  http::HttpMetrics metrics(registry, "rest");
  http::HttpStats stats;
  stats.requests = 8;
  stats.responses = 7;
  stats.failures = 1;
  stats.timeouts = 1;
  metrics.sample(stats);
  auto v = values(registry);
  EXPECT_EQ(v["ts_http_requests_total{client=\"rest\"}"], 8);
  EXPECT_EQ(v["ts_http_responses_total{client=\"rest\"}"], 7);
  EXPECT_EQ(v["ts_http_failures_total{client=\"rest\"}"], 1);
  EXPECT_EQ(v["ts_http_timeouts_total{client=\"rest\"}"], 1);
  EXPECT_TRUE(has_family(registry.prometheus_text(), "ts_http_requests_total", "counter"));
}

}  // namespace

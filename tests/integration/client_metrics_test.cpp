// The clients' round-trip histograms and exporters against the real servers (Redis 7,
// PostgreSQL 15 direct): a request is timed once it is answered, the exported series follow
// the client's stats, the readiness checks say ready, errors are counted by kind.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/pg/metrics.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/metrics.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/service_metrics.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

std::map<std::string, std::int64_t> values(const ts::core::MetricsRegistry& registry) {
  std::map<std::string, std::int64_t> out;
  for (const auto& [name, value] : registry.snapshot()) out[name] = value;
  return out;
}

TEST(ClientMetricsIntegration, RedisRequestsAreTimedAndExported) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::MetricsRegistry registry;
    ts::redis::RedisMetrics metrics(registry, "main");
    ts::redis::RedisConfig config;
    config.url = ts::testing::Servers::instance().redis_url();
    config.client_name = "client_metrics_test";
    ts::redis::RedisClient client(io.get_executor(), config);
    metrics.attach(client);
    co_await client.start();
    constexpr int kRequests = 50;
    for (int i = 0; i < kRequests; ++i) {
      co_await client.command("SET", "client_metrics_test:k", i);
    }
    // A pipeline is one request, timed once.
    ts::redis::Request pipeline;
    pipeline.push("GET", "client_metrics_test:k");
    pipeline.push("PING");
    (void)co_await client.pipeline(pipeline);
    metrics.sample(client.stats());
    EXPECT_EQ(ts::redis::readiness(client.stats()), "");
    // The health check's PINGs are not timed: at least the requests above, at most a few more.
    EXPECT_GE(metrics.round_trip().count(), kRequests + 1u);
    EXPECT_LE(metrics.round_trip().count(), client.stats().replies);
    EXPECT_GT(metrics.round_trip().sum(), 0.0);
    EXPECT_LT(metrics.round_trip().sum() / static_cast<double>(metrics.round_trip().count()), 1.0);
    const auto v = values(registry);
    EXPECT_EQ(v.at("ts_redis_connected{client=\"main\"}"), 1);
    EXPECT_GE(v.at("ts_redis_commands_total{client=\"main\"}"), kRequests + 1);
    EXPECT_EQ(v.at("ts_redis_failures_total{client=\"main\"}"), 0);
    EXPECT_EQ(v.at("ts_redis_breaker_state{client=\"main\"}"), 0);
    co_await client.close();
    metrics.sample(client.stats());
    EXPECT_EQ(values(registry).at("ts_redis_connected{client=\"main\"}"), 0);
    EXPECT_EQ(ts::redis::readiness(client.stats()), "not connected");
  });
}

TEST(ClientMetricsIntegration, PostgresStatementsAreTimedAndErrorsCountedByKind) {
  auto& servers = ts::testing::Servers::instance();
  servers.create_database("client_metrics_test");
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ts::core::MetricsRegistry registry;
    ts::pg::PostgresMetrics metrics(registry, "main");
    ts::pg::PostgresConfig config;
    config.dsn = servers.postgres_dsn("client_metrics_test");
    config.application_name = "client_metrics_test";
    config.statement_timeout = 10s;
    config.startup_timeout = 10s;
    ts::pg::PostgresClient client(io.get_executor(), config);
    metrics.attach(client);
    co_await client.start();
    constexpr int kQueries = 20;
    for (int i = 0; i < kQueries; ++i) {
      EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT $1::int8", std::int64_t{i}), i);
    }
    // A statement the server refuses: a permanent error, timed too (it had a connection).
    bool refused = false;
    try {
      (void)co_await client.query("SELECT 1/0");
    } catch (const ts::Error& e) {
      refused = e.kind() == ts::ErrorKind::permanent;
    }
    EXPECT_TRUE(refused);
    // Two statements in a transaction: each timed.
    const int two =
        co_await client.transaction([](ts::pg::Transaction& tx) -> asio::awaitable<int> {
          co_await tx.execute("SELECT 1");
          co_await tx.execute("SELECT 2");
          co_return 2;
        });
    EXPECT_EQ(two, 2);
    metrics.sample(client.stats());
    ts::pg::PostgresReadiness readiness;
    EXPECT_EQ(readiness.check(client.stats()), "");
    EXPECT_GE(metrics.round_trip().count(), kQueries + 1u + 2u);
    EXPECT_GE(metrics.acquire_wait().count(), kQueries + 1u);
    EXPECT_GT(metrics.round_trip().sum(), 0.0);
    const auto v = values(registry);
    EXPECT_GE(v.at("ts_pg_queries_total{client=\"main\"}"), kQueries);
    EXPECT_EQ(v.at("ts_pg_errors_total{client=\"main\",kind=\"permanent\"}"), 1);
    EXPECT_EQ(v.at("ts_pg_errors_total{client=\"main\",kind=\"outcome_unknown\"}"), 0);
    EXPECT_GE(v.at("ts_pg_connections{client=\"main\"}"), 1);
    EXPECT_EQ(v.at("ts_pg_breaker_state{client=\"main\"}"), 0);
    co_await client.close();
  });
}

// The services' probe of ts_stream_consumer_pending / _lag (services/common/service_metrics):
// XINFO GROUPS of every stream in one pipeline, summed; unknown lag when a stream or the group
// is missing.
TEST(ClientMetricsIntegration, GroupStateSumsPendingAndLagOverStreams) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ts::redis::RedisConfig config;
    config.url = ts::testing::Servers::instance().redis_url();
    ts::redis::RedisClient client(io.get_executor(), config);
    co_await client.start();
    const std::vector<std::string> streams{"client_metrics_test:s1", "client_metrics_test:s2"};
    const std::string group = "probe";
    for (const auto& stream : streams) {
      co_await client.command("DEL", stream);
      for (int i = 0; i < 3; ++i) co_await client.command("XADD", stream, "*", "f", i);
      co_await client.command("XGROUP", "CREATE", stream, group, "0");
    }
    // Two entries of s1 read (pending), none of s2.
    co_await client.command("XREADGROUP", "GROUP", group, "c", "COUNT", 2, "STREAMS", streams[0],
                            ">");
    auto state = co_await ts::services::group_state(client, streams, group);
    EXPECT_EQ(state.pending, 2);
    EXPECT_EQ(state.lag.value_or(-1), 1 + 3);
    // A stream that does not exist: the lag is unknown, the pending entries still summed.
    const std::vector<std::string> with_missing{streams[0], "client_metrics_test:none"};
    state = co_await ts::services::group_state(client, with_missing, group);
    EXPECT_EQ(state.pending, 2);
    EXPECT_FALSE(state.lag.has_value());
    // The gauges.
    ts::core::MetricsRegistry registry;
    ts::redis::StreamConsumerMetrics metrics(registry, group);
    metrics.set_group_state(state.pending, state.lag);
    EXPECT_EQ(values(registry).at("ts_stream_consumer_lag{group=\"probe\"}"), -1);
    for (const auto& stream : streams) co_await client.command("DEL", stream);
    co_await client.close();
  });
}

}  // namespace

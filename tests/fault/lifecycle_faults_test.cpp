// Lifecycle fault tests with the real clients: FAILURE_MODES.md F41 (run-once task with a
// dependency down). F40 (SIGTERM mid-batch in a service) comes with the services (issue 5).
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

TEST(LifecycleFault, F41_RunOnceWithADependencyDownEndsWithinItsDeadlineAndLeaksNothing) {
  // Redis is up (the harness's); PostgreSQL is "down": nothing listens on port 1, so its
  // start() keeps retrying (startup_timeout 30 s) until the task's 1 s deadline cancels it.
  const std::string redis_url = ts::testing::Servers::instance().redis_url();
  ts::redis::RedisConfig redis_config;
  redis_config.url = redis_url;
  redis_config.client_name = "f41";
  ts::pg::PostgresConfig pg_config;
  pg_config.dsn = "host=127.0.0.1 port=1 dbname=none user=none connect_timeout=1";
  pg_config.startup_timeout = 30s;

  const int fds_before = ts::testing::open_descriptors();
  ts::lifecycle::ServiceOptions options;
  options.name = "f41-task";
  options.deadline = 1s;
  options.shutdown_timeout = 5s;
  options.close_timeout = 2s;
  bool redis_started = false;
  bool pg_started = false;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = ts::lifecycle::run_once(
      options, [&](ts::lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        co_await ctx.scope().open<ts::redis::RedisClient>("redis", ctx.executor(), redis_config);
        redis_started = true;
        co_await ctx.scope().open<ts::pg::PostgresClient>("pg", ctx.executor(), pg_config);
        pg_started = true;
      });
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(redis_started);
  EXPECT_FALSE(pg_started);
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 4s) << "the deadline (1 s) plus the closes must bound the task";
  // Every socket of both clients is closed: descriptors are back where they were.
  EXPECT_EQ(ts::testing::open_descriptors(), fds_before);
}

}  // namespace

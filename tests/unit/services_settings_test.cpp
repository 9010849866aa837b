// The settings every service shares (services/common/settings.*): the PostgreSQL retry policy
// is an operator's setting (F48).
#include <trading_shared/core/config.hpp>
#include <trading_shared/pg/config.hpp>

#include "common/settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace core = trading_shared::core;
using namespace std::chrono_literals;

core::LoadResult load(core::ConfigLoader& loader, std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  return loader.load(static_cast<int>(args.size()), argv.data(),
                     [](const std::string&) { return std::optional<std::string>(); });
}

TEST(ServicesSettings, PostgresRetryPolicyDefaultsToTheLibrarys) {
  trading_shared::pg::PostgresConfig config;
  core::ConfigLoader loader("prog", "");
  trading_shared::services::add_postgres_settings(loader, config);
  load(loader, {});
  EXPECT_EQ(config.retry.max_attempts, core::kDefaultMaxAttempts);
  EXPECT_EQ(config.retry.total_deadline, core::kDefaultRetryDeadline);
}

TEST(ServicesSettings, PostgresRetryPolicyFromFlags_F48) {
  trading_shared::pg::PostgresConfig config;
  core::ConfigLoader loader("prog", "");
  trading_shared::services::add_postgres_settings(loader, config);
  load(loader, {"--postgres-retry-attempts", "5", "--postgres-retry-budget", "90s"});
  EXPECT_EQ(config.retry.max_attempts, 5u);
  EXPECT_EQ(config.retry.total_deadline, 90s);
}

namespace services = trading_shared::services;
using ::testing::HasSubstr;

std::string config_error(const std::function<void()>& check) {
  try {
    check();
  } catch (const core::ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

// Issue 18: every client setting that matters is an operator's setting.
TEST(ServicesSettings, EveryPostgresClientSettingIsSettable) {
  trading_shared::pg::PostgresConfig config;
  core::ConfigLoader loader("prog", "");
  services::add_postgres_settings(loader, config);
  load(loader, {"--postgres-min-size=2", "--postgres-pool-size=8", "--postgres-max-waiters=50",
                "--postgres-startup-timeout=7s", "--postgres-acquire-timeout=250ms",
                "--postgres-close-timeout=3s", "--postgres-reconnect-backoff-base=20ms",
                "--postgres-reconnect-backoff-cap=1s",
                "--postgres-pgbouncer-transaction-mode=false", "--postgres-statement-cache-size=64",
                "--postgres-breaker-window=40", "--postgres-breaker-min-calls=20",
                "--postgres-breaker-failure-rate=0.75", "--postgres-breaker-open-base=500ms",
                "--postgres-breaker-open-cap=10s", "--postgres-breaker-half-open-probes=2"});
  EXPECT_EQ(config.min_size, 2u);
  EXPECT_EQ(config.max_size, 8u);
  EXPECT_EQ(config.max_waiters, 50u);
  EXPECT_EQ(config.startup_timeout, 7s);
  EXPECT_EQ(config.acquire_timeout, 250ms);
  EXPECT_EQ(config.close_timeout, 3s);
  EXPECT_EQ(config.reconnect_backoff.base, 20ms);
  EXPECT_EQ(config.reconnect_backoff.cap, 1s);
  EXPECT_FALSE(config.pgbouncer_transaction_mode);
  EXPECT_EQ(config.statement_cache_size, 64u);
  EXPECT_EQ(config.breaker.window_size, 40u);
  EXPECT_EQ(config.breaker.min_calls, 20u);
  EXPECT_DOUBLE_EQ(config.breaker.failure_rate_threshold, 0.75);
  EXPECT_EQ(config.breaker.open_backoff.base, 500ms);
  EXPECT_EQ(config.breaker.open_backoff.cap, 10s);
  EXPECT_EQ(config.breaker.half_open_probes, 2u);
  config.dsn = "host=127.0.0.1";
  services::check_postgres_settings(config);  // a consistent set passes
}

TEST(ServicesSettings, EveryRedisClientSettingIsSettable) {
  trading_shared::redis::RedisConfig config;
  core::ConfigLoader loader("prog", "");
  services::add_redis_settings(loader, config);
  load(loader, {"--redis-max-queued=500", "--redis-max-blocking-connections=4",
                "--redis-connect-timeout=300ms", "--redis-startup-timeout=4s",
                "--redis-close-timeout=1500ms", "--redis-health-check-interval=2s",
                "--redis-health-check-timeout=5s", "--redis-reconnect-backoff-base=10ms",
                "--redis-reconnect-backoff-cap=500ms", "--redis-breaker-window=30",
                "--redis-breaker-failure-rate=0.9"});
  EXPECT_EQ(config.max_queued, 500u);
  EXPECT_EQ(config.max_blocking_connections, 4u);
  EXPECT_EQ(config.connect_timeout, 300ms);
  EXPECT_EQ(config.startup_timeout, 4s);
  EXPECT_EQ(config.close_timeout, 1500ms);
  EXPECT_EQ(config.health_check_interval, 2s);
  EXPECT_EQ(config.health_check_timeout, 5s);
  EXPECT_EQ(config.reconnect_backoff.base, 10ms);
  EXPECT_EQ(config.reconnect_backoff.cap, 500ms);
  EXPECT_EQ(config.breaker.window_size, 30u);
  EXPECT_DOUBLE_EQ(config.breaker.failure_rate_threshold, 0.9);
  services::check_redis_settings(config);
}

TEST(ServicesSettings, InconsistentClientSettingsNameTheirFlags) {
  trading_shared::pg::PostgresConfig pg;
  pg.dsn = "host=127.0.0.1";
  pg.statement_cache_size = 16;  // PgBouncer transaction mode is the default
  EXPECT_THAT(config_error([&] { services::check_postgres_settings(pg); }),
              HasSubstr("--postgres-statement-cache-size needs "
                        "--postgres-pgbouncer-transaction-mode=false"));
  pg.statement_cache_size = 0;
  pg.min_size = 5;
  EXPECT_THAT(config_error([&] { services::check_postgres_settings(pg); }),
              HasSubstr("--postgres-min-size (5) must be at most --postgres-pool-size (2)"));
  pg.min_size = 1;
  pg.breaker.min_calls = 50;
  EXPECT_THAT(config_error([&] { services::check_postgres_settings(pg); }),
              HasSubstr("--postgres-breaker-min-calls must be between 1 and "
                        "--postgres-breaker-window (20)"));
  pg.breaker.min_calls = 10;
  pg.acquire_timeout = 0ms;
  EXPECT_THAT(config_error([&] { services::check_postgres_settings(pg); }),
              HasSubstr("--postgres-acquire-timeout must be > 0"));

  trading_shared::redis::RedisConfig redis;
  redis.breaker.failure_rate_threshold = 1.5;
  EXPECT_THAT(config_error([&] { services::check_redis_settings(redis); }),
              HasSubstr("--redis-breaker-failure-rate must be in (0, 1]"));
  redis.breaker.failure_rate_threshold = 0.5;
  redis.reconnect_backoff.cap = 1ms;
  EXPECT_THAT(config_error([&] { services::check_redis_settings(redis); }),
              HasSubstr("--redis-reconnect-backoff-cap must be at least"));
}

TEST(ServicesSettings, AdminListenIsOffByDefaultAndChecked) {
  trading_shared::lifecycle::AdminOptions admin;
  core::ConfigLoader loader("prog", "");
  services::add_admin_settings(loader, admin);
  load(loader, {});
  EXPECT_EQ(admin.listen, "");
  services::check_admin_settings(admin);
  load(loader, {"--admin-listen=127.0.0.1:0", "--admin-check-interval=100ms"});
  EXPECT_EQ(admin.listen, "127.0.0.1:0");
  EXPECT_EQ(admin.check_interval, 100ms);
  services::check_admin_settings(admin);
  admin.listen = "[::1]:9101";
  services::check_admin_settings(admin);
  for (const char* bad : {"9101", "localhost", ":9101", "127.0.0.1:http", "127.0.0.1:70000"}) {
    admin.listen = bad;
    EXPECT_THAT(config_error([&] { services::check_admin_settings(admin); }),
                HasSubstr("--admin-listen"))
        << bad;
  }
}

TEST(ServicesSettings, ConsumerServicesPassTheAdminEndpointToTheRunner) {
  services::ConsumerServiceSettings settings;
  settings.pg.dsn = "host=127.0.0.1";
  core::ConfigLoader loader("prog", "");
  services::add_consumer_service_settings(loader, settings, {"c", "b", "entries", "m", "d"});
  load(loader, {"--admin-listen=127.0.0.1:9101", "--admin-check-interval=250ms"});
  const auto options = services::consumer_service_options(settings, "ts-recorder");
  EXPECT_EQ(options.admin.listen, "127.0.0.1:9101");
  EXPECT_EQ(options.admin.check_interval, 250ms);
}

TEST(ServicesSettings, EnvironmentNamespaceOfEachProgram) {
  EXPECT_EQ(services::env_namespace_of("ts-recorder"), "RECORDER");
  EXPECT_EQ(services::env_namespace_of("ts-feed-sim"), "FEED_SIM");
  EXPECT_EQ(services::env_namespace_of("tsctl"), "TSCTL");
  const core::ConfigLoader loader = services::make_loader("ts-executor", "");
  EXPECT_EQ(loader.env_var_for("batch"), "TS_EXECUTOR_BATCH");
  EXPECT_EQ(loader.env_var_for("redis.url"), "TS_REDIS_URL");
  EXPECT_EQ(loader.config_env_var(), "TS_EXECUTOR_CONFIG");
}

}  // namespace

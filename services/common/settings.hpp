#pragma once
/// @file
/// The settings every service shares, declared once (flag, `TS_*` variable, TOML key).

#include <trading_shared/core/config.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <string>
#include <string_view>

namespace trading_shared::services {

/// `postgres.dsn` (secret), `postgres.pool_size`, `postgres.connect_timeout`,
/// `postgres.statement_timeout`, `postgres.retry_attempts` and `postgres.retry_budget` (the
/// client's default retry policy: `PostgresConfig::retry`).
void add_postgres_settings(core::ConfigLoader& loader, pg::PostgresConfig& config);
/// `redis.url` (secret: it may carry a password), `redis.command_timeout`.
void add_redis_settings(core::ConfigLoader& loader, redis::RedisConfig& config);
/// "<service>-<hostname>-<pid>": a consumer name unique per process.
std::string default_consumer_name(std::string_view service);
/// Milliseconds / microseconds since the Unix epoch (system clock).
std::int64_t unix_millis();
std::int64_t unix_micros();

}  // namespace trading_shared::services

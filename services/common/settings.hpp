#pragma once
/// @file
/// The settings every service shares, declared once (flag, `TS_*` variable, TOML key).

#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services {

/// `postgres.dsn` (secret), `postgres.pool_size`, `postgres.connect_timeout`,
/// `postgres.statement_timeout`, `postgres.retry_attempts` and `postgres.retry_budget` (the
/// client's default retry policy: `PostgresConfig::retry`).
void add_postgres_settings(core::ConfigLoader& loader, pg::PostgresConfig& config);
/// `redis.url` (secret: it may carry a password), `redis.command_timeout`.
void add_redis_settings(core::ConfigLoader& loader, redis::RedisConfig& config);
/// Checks the PostgreSQL settings before anything connects (the settings step of every
/// service that opens a PostgresClient): `--postgres-dsn` is set and is a libpq connection
/// string libpq accepts (known keywords, ports 1-65535), `--postgres-pool-size` >= 1, the
/// timeouts > 0. @throws core::ConfigError naming the flag (never the DSN's password).
void check_postgres_settings(const pg::PostgresConfig& config);
/// Checks the Redis settings before anything connects: `--redis-url` parses
/// (`redis://host[:port][/db]`, port 1-65535), `--redis-command-timeout` > 0, and the rest of
/// `redis::validate`. @throws core::ConfigError naming the flag (never the URL's password).
void check_redis_settings(const redis::RedisConfig& config);
/// Longest symbol accepted (`--symbols`, tsctl's `--symbol`).
inline constexpr std::size_t kMaxSymbolLength = 20;
/// The one rule for `--symbols` in every service: 1 to kMaxSymbolLength ASCII letters or
/// digits, upper-cased in place (the receiver writes `md:trades:BTCUSDT` whatever the case
/// given), none twice, at least one unless `allow_empty`. @throws core::ConfigError.
void check_symbols(std::vector<std::string>& symbols, bool allow_empty = false,
                   std::string_view flag = "--symbols");
/// The same rule for one symbol (tsctl's `--symbol`). @throws core::ConfigError.
void check_symbol(std::string& symbol, std::string_view flag);
/// Default `--shutdown-timeout` of the daemons: their drain (5 s) plus the closes of their
/// clients (PostgreSQL up to 7 s, Redis up to 3 s by default) with room to spare.
inline constexpr std::chrono::milliseconds kDefaultShutdownTimeout{20000};
/// The longest `PostgresClient::close()` may take with this configuration: `close_timeout`
/// for the work in flight, then up to min(close_timeout, 1 s) for its cancel requests, plus
/// 1 s for sockets and tasks to wind down.
std::chrono::milliseconds close_bound(const pg::PostgresConfig& config);
/// The longest `RedisClient::close()` may take: `close_timeout` for the requests in flight,
/// plus 1 s for the connection and tasks to wind down.
std::chrono::milliseconds close_bound(const redis::RedisConfig& config);
/// `--shutdown-timeout`: the whole graceful stop (drain and closes).
void add_shutdown_setting(core::ConfigLoader& loader, std::chrono::milliseconds& shutdown_timeout);
/// The run_daemon / run_once options of a service whose body opens `closes` (F54): each close
/// is waited for up to the longest of their bounds, and the budgets must add up (drain plus
/// every close within the shutdown timeout). @throws core::ConfigError, one line naming the
/// figures and the flags that set them (`flags`, e.g. "--drain-timeout, --shutdown-timeout").
lifecycle::ServiceOptions service_options(std::string name, std::chrono::milliseconds drain_timeout,
                                          std::chrono::milliseconds shutdown_timeout,
                                          std::vector<lifecycle::CloseBudget> closes,
                                          std::string_view flags);
/// "<service>-<hostname>-<pid>": a consumer name unique per process.
std::string default_consumer_name(std::string_view service);
/// Milliseconds / microseconds since the Unix epoch (system clock).
std::int64_t unix_millis();
std::int64_t unix_micros();

}  // namespace trading_shared::services

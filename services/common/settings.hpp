#pragma once
/// @file
/// The settings every service shares, declared once (flag, `TS_*` variable, TOML key).

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services {

/// Every `PostgresConfig` field an operator may need, under `postgres.*` (environment
/// `TS_POSTGRES_*`, shared by every service): `dsn` (secret), `pool_size`, `min_size`,
/// `max_waiters`, the timeouts (`connect`, `startup`, `acquire`, `statement`, `close`),
/// `retry_attempts` and `retry_budget` (the client's default retry policy),
/// `reconnect_backoff_base/cap`, `pgbouncer_transaction_mode`, `statement_cache_size` and the
/// circuit breaker (`postgres.breaker.*`).
void add_postgres_settings(core::ConfigLoader& loader, pg::PostgresConfig& config);
/// Every `RedisConfig` field an operator may need, under `redis.*`: `url` (secret: it may
/// carry a password), the timeouts (`connect`, `startup`, `command`, `close`), the health
/// check, `max_queued`, `max_blocking_connections`, `reconnect_backoff_base/cap`, the
/// circuit breaker (`redis.breaker.*`) and TLS of a rediss:// URL (`redis.tls.ca_file`,
/// `ca_dir`, `cert_file`, `key_file`, `server_name`, `verify`).
void add_redis_settings(core::ConfigLoader& loader, redis::RedisConfig& config);
/// The TLS settings of one client under `prefix` (`redis.tls` -> `--redis-tls-ca-file`,
/// `TS_REDIS_TLS_CA_FILE`): ca_file, ca_dir, cert_file, key_file, server_name, verify. `scope`
/// opens each help text (e.g. "rediss://"), `whose` names the peer ("the server's").
void add_tls_settings(core::ConfigLoader& loader, const std::string& prefix,
                      const std::string& scope, const std::string& whose, core::TlsConfig& tls);
/// `admin.listen` (empty: no endpoint) and `admin.check_interval` of a daemon's admin
/// endpoint (/metrics, /healthz, /readyz: docs/operations.md).
void add_admin_settings(core::ConfigLoader& loader, lifecycle::AdminOptions& admin);
/// `admin.listen` is empty or `host:port` (`[v6]:port`), port 0-65535; the interval > 0.
/// @throws core::ConfigError naming the flag.
void check_admin_settings(const lifecycle::AdminOptions& admin);
/// The endpoint's options from the settings: `/healthz` reports the loop stuck after
/// max(3 s, 3 check intervals) without a heartbeat, so a longer interval never makes a healthy
/// loop look stuck.
lifecycle::AdminOptions admin_options(const lifecycle::AdminOptions& settings);
/// The environment namespace of a program ("ts-recorder" -> "RECORDER", "tsctl" -> "TSCTL"):
/// its own settings read `TS_RECORDER_*`, the shared `postgres.*`, `redis.*` and `log.*` keep
/// `TS_*` (docs/services.md).
std::string env_namespace_of(std::string_view program);
/// A loader for `program` with its environment namespace (`env_namespace_of`).
core::ConfigLoader make_loader(const std::string& program, std::string description);
/// The first log line of a service: `<program> <version> starting: <effective settings>`.
void log_start(const core::ConfigLoader& loader);
/// Checks the PostgreSQL settings before anything connects (the settings step of every
/// service that opens a PostgresClient): `--postgres-dsn` is set and is a libpq connection
/// string libpq accepts (known keywords, ports 1-65535), `--postgres-pool-size` >= 1, the
/// timeouts > 0, the breaker's figures, the statement cache only with
/// `--postgres-pgbouncer-transaction-mode=false`. @throws core::ConfigError naming the flag
/// (never the DSN's password).
void check_postgres_settings(const pg::PostgresConfig& config);
/// Checks the Redis settings before anything connects: `--redis-url` parses
/// (`redis[s]://host[:port][/db]`, port 1-65535), `--redis-command-timeout` > 0, the
/// `--redis-tls-*` settings only with `rediss://` and their files readable, and the rest of
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

// ---- services that consume a Redis stream in a consumer group into PostgreSQL ----------------

/// The settings ts-recorder and ts-executor share: both clients, logging, the group consumer
/// (its name, batch, claiming of stale entries, dead-lettering), the drain and the stop
/// budget. Each service's settings derive from it and add their own.
struct ConsumerServiceSettings {
  pg::PostgresConfig pg;
  redis::RedisConfig redis;
  core::LogConfig log;
  /// Consumer name in the group; empty: "<group>-<host>-<pid>".
  std::string consumer;
  /// Entries read at a time (1-10000).
  std::int64_t batch = 100;
  std::chrono::milliseconds claim_min_idle{10000};
  std::chrono::milliseconds claim_interval{2000};
  std::uint32_t max_deliveries = 5;
  std::chrono::milliseconds drain_timeout{5000};
  /// The whole graceful stop: the drain, then closing the clients (F54: checked at start).
  std::chrono::milliseconds shutdown_timeout{kDefaultShutdownTimeout};
  std::string summary_file;
  /// The admin endpoint (`--admin-listen`; off by default).
  lifecycle::AdminOptions admin;
};

/// What a consumer service's settings say in --help (the shared wording is in settings.cpp).
struct ConsumerServiceHelp {
  std::string_view consumer;        ///< `--consumer`.
  std::string_view batch;           ///< `--batch`.
  std::string_view items;           ///< what it consumes, plural: "entries", "requests".
  std::string_view max_deliveries;  ///< `--max-deliveries`.
  std::string_view drain_timeout;   ///< `--drain-timeout`.
};

/// Registers the shared settings: PostgreSQL, Redis, logging, `--consumer`, `--batch`,
/// `--claim-min-idle`, `--claim-interval`, `--max-deliveries`, `--drain-timeout`,
/// `--summary-file`, `--shutdown-timeout`, `--admin-listen`, `--admin-check-interval`. The service
/// registers its own after them.
void add_consumer_service_settings(core::ConfigLoader& loader, ConsumerServiceSettings& settings,
                                   const ConsumerServiceHelp& help);
/// The run_daemon options of consumer service `service` ("ts-recorder"): drain, shutdown
/// budget and the clients' close bounds, checked (F54). @throws core::ConfigError.
lifecycle::ServiceOptions consumer_service_options(const ConsumerServiceSettings& settings,
                                                   std::string service);
/// Checks the shared settings (after the service's own checks) and fills derived defaults:
/// the consumer name "<group>-<host>-<pid>", application_name and client_name `service`.
/// @throws core::ConfigError naming the flag.
void finish_consumer_service_settings(ConsumerServiceSettings& settings, std::string_view group,
                                      const std::string& service);

}  // namespace trading_shared::services

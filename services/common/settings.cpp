#include "common/settings.hpp"

#include <trading_shared/core/config_warnings.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/version.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <utility>

namespace trading_shared::services {

namespace {

/// `<table>.breaker.*`: the endpoint's circuit breaker (core::CircuitBreakerConfig).
void add_breaker_settings(core::ConfigLoader& loader, const std::string& table,
                          core::CircuitBreakerConfig& breaker) {
  loader
      .add(breaker.window_size,
           {table + ".breaker.window", "calls in the breaker's sliding window"})
      .add(breaker.min_calls,
           {table + ".breaker.min_calls", "the breaker never opens on fewer calls in its window"})
      .add(breaker.failure_rate_threshold,
           {table + ".breaker.failure_rate",
            "the breaker opens when this share of the window's calls failed (0 to 1]"})
      .add(breaker.open_backoff.base,
           {table + ".breaker.open_base", "first open period of the breaker (then doubled)"})
      .add(breaker.open_backoff.cap,
           {table + ".breaker.open_cap", "longest open period of the breaker"})
      .add(breaker.half_open_probes,
           {table + ".breaker.half_open_probes",
            "probe calls let through when half open (and successes needed to close)"});
}

}  // namespace

void add_postgres_settings(core::ConfigLoader& loader, pg::PostgresConfig& config) {
  loader
      .add(config.dsn,
           {"postgres.dsn", "libpq connection string of PostgreSQL (or PgBouncer)", true})
      .add(config.max_size, {"postgres.pool_size", "connections in the pool"})
      .add(config.min_size, {"postgres.min_size", "connections opened at start and kept"})
      .add(config.max_waiters,
           {"postgres.max_waiters", "calls waiting for a connection; more fail at once"})
      .add(config.connect_timeout, {"postgres.connect_timeout", "one connection attempt"})
      .add(config.startup_timeout,
           {"postgres.startup_timeout", "the first connection at start, retries included"})
      .add(config.acquire_timeout,
           {"postgres.acquire_timeout", "longest wait for a free connection of the pool"})
      .add(config.statement_timeout, {"postgres.statement_timeout", "default statement deadline"})
      .add(config.close_timeout, {"postgres.close_timeout",
                                  "on stop, time for the work in flight before it is cancelled"})
      .add(config.retry.max_attempts,
           {"postgres.retry_attempts",
            "attempts of a retried statement or transaction, the first included (1 = no retry)"})
      .add(config.retry.total_deadline,
           {"postgres.retry_budget",
            "time for all attempts of a retried statement or transaction (0 = no limit); each "
            "attempt still gets at least the statement timeout"})
      .add(config.reconnect_backoff.base,
           {"postgres.reconnect_backoff_base", "first delay before reconnecting (then doubled)"})
      .add(config.reconnect_backoff.cap,
           {"postgres.reconnect_backoff_cap", "longest delay before reconnecting"})
      .add(config.pgbouncer_transaction_mode,
           {"postgres.pgbouncer_transaction_mode",
            "safe behind PgBouncer in transaction mode: unnamed statements, no session state; "
            "false only for a direct connection"})
      .add(config.statement_cache_size,
           {"postgres.statement_cache_size",
            "statements prepared and kept per connection (0: none); needs "
            "--postgres-pgbouncer-transaction-mode=false"});
  add_breaker_settings(loader, "postgres", config.breaker);
}

void add_tls_settings(core::ConfigLoader& loader, const std::string& prefix,
                      const std::string& scope, const std::string& whose, core::TlsConfig& tls) {
  std::string flag_prefix = "--" + prefix + "-";
  std::replace(flag_prefix.begin(), flag_prefix.end(), '.', '-');
  loader
      .add(tls.ca_file,
           {prefix + ".ca_file", scope + ": PEM file of the CAs to trust (empty with " +
                                     flag_prefix + "ca-dir empty: the system's store)"})
      .add(tls.ca_dir, {prefix + ".ca_dir", scope + ": hashed directory of trusted CAs"})
      .add(tls.cert_file, {prefix + ".cert_file", scope +
                                                      ": client certificate chain (PEM) for "
                                                      "mutual TLS; needs " +
                                                      flag_prefix + "key-file"})
      .add(tls.key_file,
           {prefix + ".key_file", scope + ": the client certificate's private key file (PEM)"})
      .add(tls.server_name,
           {prefix + ".server_name", scope + ": the name sent as SNI and checked in " + whose +
                                         " certificate (empty: the URL's host)"})
      .add(tls.verify_peer, {prefix + ".verify", scope + ": verify " + whose +
                                                     " certificate chain and name; false only "
                                                     "for tests"});
}

void add_redis_settings(core::ConfigLoader& loader, redis::RedisConfig& config) {
  loader
      .add(config.url,
           {"redis.url", "redis[s]://[user[:password]@]host[:port][/db] (rediss://: TLS)", true})
      .add(config.password_file,
           {"redis.password_file",
            "file holding the password of --redis-url's user, read at every connection (a "
            "rotated password needs no restart); overrides the URL's password"})
      .add(config.connect_timeout, {"redis.connect_timeout", "one connection attempt"})
      .add(config.startup_timeout,
           {"redis.startup_timeout", "the first connection at start, retries included"})
      .add(config.command_timeout, {"redis.command_timeout", "default command deadline"})
      .add(config.close_timeout,
           {"redis.close_timeout", "on stop, time for the requests in flight"})
      .add(config.health_check_interval,
           {"redis.health_check_interval", "PING on an idle connection this often"})
      .add(config.health_check_timeout,
           {"redis.health_check_timeout", "a PING unanswered this long drops the connection"})
      .add(config.max_queued,
           {"redis.max_queued", "commands queued while disconnected or busy; more fail at once"})
      .add(config.max_blocking_connections,
           {"redis.max_blocking_connections",
            "dedicated connections for blocking commands (XREADGROUP BLOCK) at once"})
      .add(config.reconnect_backoff.base,
           {"redis.reconnect_backoff_base", "first delay before reconnecting (then doubled)"})
      .add(config.reconnect_backoff.cap,
           {"redis.reconnect_backoff_cap", "longest delay before reconnecting"});
  // TLS of a rediss:// URL (docs/redis.md, "TLS"): files are read again for a new connection
  // when they change (rotation without a restart). The key is a file path, never its content.
  add_tls_settings(loader, "redis.tls", "rediss://", "the server's", config.tls);
  add_breaker_settings(loader, "redis", config.breaker);
}

void add_admin_settings(core::ConfigLoader& loader, lifecycle::AdminOptions& admin) {
  loader
      .add(admin.listen, {"admin.listen",
                          "host:port of the admin endpoint (/metrics, /healthz, /readyz), e.g. "
                          "127.0.0.1:9101 (keep it on loopback; port 0 picks one); empty: off"})
      .add(admin.check_interval,
           {"admin.check_interval",
            "how often readiness checks and metric samplers run (/readyz follows within it)"});
}

std::string env_namespace_of(std::string_view program) {
  if (program.starts_with("ts-")) program.remove_prefix(3);
  std::string out;
  for (const char c : program) {
    if (c >= 'a' && c <= 'z') {
      out += static_cast<char>(c - 'a' + 'A');
    } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
      out += c;
    } else {
      out += '_';
    }
  }
  return out;
}

core::ConfigLoader make_loader(const std::string& program, std::string description) {
  core::ConfigLoader loader(program, std::move(description));
  loader.env_namespace(env_namespace_of(program));
  return loader;
}

void log_start(const core::ConfigLoader& loader) {
  core::logger("")->info("{} {} starting: {}", loader.program(), kVersion,
                         loader.effective_config_summary());
  // A secret given on the command line (F66): once, at start, the flag and never the value.
  for (const std::string& warning : core::take_config_warnings())
    core::logger("")->warn("{}", warning);
}

void add_shutdown_setting(core::ConfigLoader& loader, std::chrono::milliseconds& shutdown_timeout) {
  loader.add(shutdown_timeout,
             {"shutdown_timeout",
              "after SIGTERM, the whole graceful stop: the drain and then closing the clients; "
              "when it passes the stop is immediate (exit 1)"});
}

void add_consumer_service_settings(core::ConfigLoader& loader, ConsumerServiceSettings& s,
                                   const ConsumerServiceHelp& help) {
  add_postgres_settings(loader, s.pg);
  add_redis_settings(loader, s.redis);
  core::add_log_settings(loader, s.log);
  const std::string claim_min_idle =
      fmt::format("{} pending this long in another consumer are taken over", help.items);
  const std::string claim_interval =
      fmt::format("how often stale and own pending {} are looked at again", help.items);
  loader.add(s.consumer, {"consumer", std::string(help.consumer)})
      .add(s.batch, {"batch", std::string(help.batch)})
      .add(s.claim_min_idle, {"claim_min_idle", claim_min_idle})
      .add(s.claim_interval, {"claim_interval", claim_interval})
      .add(s.max_deliveries, {"max_deliveries", std::string(help.max_deliveries)})
      .add(s.drain_timeout, {"drain_timeout", std::string(help.drain_timeout)})
      .add(s.summary_file, {"summary_file", "JSON counters written on exit (empty: none)"});
  add_shutdown_setting(loader, s.shutdown_timeout);
  add_admin_settings(loader, s.admin);
}

std::string default_consumer_name(std::string_view service) {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  return std::string(service) + "-" + (host[0] != '\0' ? host.data() : "host") + "-" +
         std::to_string(::getpid());
}

std::int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t unix_micros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace trading_shared::services

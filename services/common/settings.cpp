#include "common/settings.hpp"

#include <trading_shared/core/error.hpp>

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <string>
#include <utility>

namespace trading_shared::services {

void add_postgres_settings(core::ConfigLoader& loader, pg::PostgresConfig& config) {
  loader
      .add(config.dsn,
           {"postgres.dsn", "libpq connection string of PostgreSQL (or PgBouncer)", true})
      .add(config.max_size, {"postgres.pool_size", "connections in the pool"})
      .add(config.connect_timeout, {"postgres.connect_timeout", "one connection attempt"})
      .add(config.statement_timeout, {"postgres.statement_timeout", "default statement deadline"})
      .add(config.retry.max_attempts,
           {"postgres.retry_attempts",
            "attempts of a retried statement or transaction, the first included (1 = no retry)"})
      .add(config.retry.total_deadline,
           {"postgres.retry_budget",
            "time for all attempts of a retried statement or transaction (0 = no limit); each "
            "attempt still gets at least the statement timeout"});
}

void add_redis_settings(core::ConfigLoader& loader, redis::RedisConfig& config) {
  loader.add(config.url, {"redis.url", "redis://[user[:password]@]host[:port][/db]", true})
      .add(config.command_timeout, {"redis.command_timeout", "default command deadline"});
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

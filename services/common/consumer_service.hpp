#pragma once
/// @file
/// What ts-recorder and ts-executor share at run time (their shared settings are
/// `ConsumerServiceSettings`, settings.hpp): opening both clients in the service's scope, and
/// the clients' figures for the summary, taken before the clients close.

#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/awaitable.hpp>

#include "common/settings.hpp"
#include "common/summary.hpp"

#include <spdlog/logger.h>

#include <cstdint>
#include <string>

namespace trading_shared::services {

/// What the summary needs from the clients, taken before they close.
struct ClientSnapshot {
  std::uint64_t redis_reconnects = 0;
  std::uint64_t redis_breaker_trips = 0;
  std::uint64_t pg_breaker_trips = 0;
  std::uint64_t pg_connects = 0;   // connections opened since start
  std::uint64_t pg_discarded = 0;  // connections discarded as broken (a server restart)

  /// Adds `redis_reconnects`, `pg_breaker_trips`, `pg_connects`, `pg_discarded` and
  /// `redis_breaker_trips` to `summary`, in that order.
  void add_to(Summary& summary) const;
};

struct ServiceClients {
  pg::PostgresClient* pg = nullptr;
  redis::RedisClient* redis = nullptr;
};

/// Adds a StreamConsumer's figures to `summary`: `delivered`, `acked`, `handler_errors`,
/// `claimed`, `dead_lettered`, `deleted`, `read_errors`, in that order.
void add_consumer_stats(Summary& summary, const redis::StreamConsumerStats& stats);

/// Adds the clients' figures (`snapshot`) and `exit_code`, then writes `summary` to `path`.
/// Returns the process exit code: `code`, or 1 when the service succeeded but the summary
/// could not be written (logged on `log`).
int write_summary(Summary& summary, const ClientSnapshot& snapshot, int code,
                  const std::string& path, spdlog::logger& log);

/// Opens (starts) the PostgreSQL client ("postgres") and then the Redis client ("redis") of
/// `settings` in the scope of `ctx`, and registers taking `snapshot` from them: it runs first
/// when the scope closes (reverse order), while both clients still exist.
boost::asio::awaitable<ServiceClients> open_clients(lifecycle::ServiceContext& ctx,
                                                    const ConsumerServiceSettings& settings,
                                                    ClientSnapshot& snapshot);

}  // namespace trading_shared::services

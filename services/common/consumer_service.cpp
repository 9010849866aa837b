#include "common/consumer_service.hpp"

namespace trading_shared::services {

void ClientSnapshot::add_to(Summary& summary) const {
  summary.add("redis_reconnects", redis_reconnects)
      .add("pg_breaker_trips", pg_breaker_trips)
      .add("pg_connects", pg_connects)
      .add("pg_discarded", pg_discarded)
      .add("redis_breaker_trips", redis_breaker_trips);
}

void add_consumer_stats(Summary& summary, const redis::StreamConsumerStats& stats) {
  summary.add("delivered", stats.delivered)
      .add("acked", stats.acked)
      .add("handler_errors", stats.handler_errors)
      .add("claimed", stats.claimed)
      .add("dead_lettered", stats.dead_lettered)
      .add("deleted", stats.deleted)
      .add("read_errors", stats.read_errors);
}

int write_summary(Summary& summary, const ClientSnapshot& snapshot, int code,
                  const std::string& path, spdlog::logger& log) {
  snapshot.add_to(summary);
  summary.add("exit_code", code);
  try {
    summary.write_file(path);
  } catch (const std::exception& e) {
    log.error("{}", e.what());
    return code == 0 ? 1 : code;
  }
  return code;
}

boost::asio::awaitable<ServiceClients> open_clients(lifecycle::ServiceContext& ctx,
                                                    const ConsumerServiceSettings& settings,
                                                    ClientSnapshot& snapshot) {
  ServiceClients clients;
  clients.pg =
      co_await ctx.scope().open<pg::PostgresClient>("postgres", ctx.executor(), settings.pg);
  clients.redis =
      co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  ctx.scope().defer(
      "client statistics",
      [&snapshot, pg = clients.pg, redis = clients.redis]() -> boost::asio::awaitable<void> {
        snapshot.redis_reconnects = redis->stats().disconnects;
        snapshot.redis_breaker_trips = redis->stats().breaker_trips;
        snapshot.pg_breaker_trips = pg->stats().breaker_trips;
        snapshot.pg_connects = pg->stats().connects;
        snapshot.pg_discarded = pg->stats().discarded;
        co_return;
      });
  co_return clients;
}

}  // namespace trading_shared::services

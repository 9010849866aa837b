// The "after" program of docs/lifecycle.md, complete: a service on run_daemon whose clients are
// opened by the ResourceScope (closed in reverse order on every exit), its settings from flags,
// environment (TS_POSTGRES_DSN, TS_REDIS_URL) or a TOML file, SIGTERM handled by the runner.
//
//   lifecycle_after --postgres-dsn 'host=127.0.0.1 dbname=trading' --redis-url redis://127.0.0.1
//
// Its `record` copies a count from PostgreSQL into Redis every second until stopped.
#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/version.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace asio = boost::asio;
namespace core = trading_shared::core;
namespace lifecycle = trading_shared::lifecycle;
namespace pg = trading_shared::pg;
namespace redis = trading_shared::redis;

namespace {

asio::awaitable<void> record(pg::PostgresClient& pg, redis::RedisClient& redis) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    const auto sessions =
        co_await pg.query_value<std::int64_t>("SELECT count(*) FROM pg_stat_activity");
    co_await redis.set("example:pg_sessions", std::to_string(sessions));
    timer.expires_after(std::chrono::seconds(1));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

}  // namespace

int main(int argc, char** argv) {
  pg::PostgresConfig pg_config;  // defaults in the structs
  redis::RedisConfig redis_config;
  core::ConfigLoader loader("lifecycle-after", "The lifecycle example, built on trading_shared " +
                                                   std::string(trading_shared::kVersion) + ".");
  loader.add(pg_config.dsn, {"postgres.dsn", "libpq connection string", true})
      .add(redis_config.url, {"redis.url", "redis://host:port/db", true});
  if (auto code = core::load_or_exit_code(loader, argc, argv)) return *code;  // 2
  // (docs/lifecycle.md writes `ServiceOptions options{.name = ...}`; assigned here, since
  // GCC 12's -Wextra warns about the members a designated initializer leaves out.)
  lifecycle::ServiceOptions options;
  options.name = "lifecycle-after";
  return lifecycle::run_daemon(
      options, [&](lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        auto* pg = co_await ctx.scope().open<pg::PostgresClient>("pg", ctx.executor(),
                                                                 pg_config);  // closed last
        auto* redis = co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(),
                                                                    redis_config);  // closed first
        ctx.health().ready = true;
        co_await record(*pg, *redis);  // until SIGTERM cancels it
      });
}

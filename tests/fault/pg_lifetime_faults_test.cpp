// Fault test F42 for PostgresClient: a client destroyed without a completed close(), after a
// start() that failed with connections already open, and after a close() cut short by its
// caller's timeout (as ResourceScope cuts it), while a statement and the pool's background
// task are still running. Nothing may touch the destroyed client (the ASan build reports any
// access to freed memory), every socket must be closed, and the statement still running must
// end with client_closed.
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::ErrorKind;
using ts::pg::PostgresClient;
using ts::testing::describe;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::Servers;
using ts::testing::fault::DirectPg;
using ts::testing::fault::eventually;
using ts::testing::fault::pg_backends;
using ts::testing::fault::ScopeExit;

ts::pg::PostgresConfig lifetime_config(std::string dsn, std::string app) {
  auto c = ts::testing::fault::fast_pg_config(std::move(dsn), std::move(app));
  const ts::pg::PostgresConfig defaults;
  c.min_size = defaults.min_size;
  c.max_size = defaults.max_size;
  c.statement_timeout = 10s;
  c.connect_timeout = 2s;
  c.startup_timeout = defaults.startup_timeout;
  c.close_timeout = defaults.close_timeout;
  c.reconnect_backoff = {50ms, 200ms, 2.0};
  c.retry = {};
  return c;
}

// start() with min_size 3 against a role that may hold only 2 connections: two connections
// open, the third is refused (53300) until startup_timeout, and start() fails with two
// connections to close. Then the client is destroyed. Must hold: start() fails with
// startup_timeout, no crash and no access to freed memory, and no connection of the client is
// left on the server.
TEST(PgFault, F42_destroyed_after_start_failed_with_connections_open) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  {
    DirectPg admin(servers.postgres_dsn("postgres"));
    admin.value(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ts_f42') THEN "
        "CREATE ROLE ts_f42 LOGIN CONNECTION LIMIT 2; END IF; END $$");
  }
  const std::string app = "ts_f42_start";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config =
            lifetime_config("host=127.0.0.1 port=" + std::to_string(servers.postgres().port()) +
                                " user=ts_f42 dbname=postgres",
                            app);
        config.min_size = 3;
        config.max_size = 3;
        config.startup_timeout = 1s;
        auto client = std::make_unique<PostgresClient>(io.get_executor(), config);
        const Outcome start = co_await outcome(client->start());
        EXPECT_TRUE(start.failed) << describe(start);
        EXPECT_EQ(start.code, ts::make_error_code(ts::errc::startup_timeout)) << describe(start);
        client.reset();  // destroyed without close()
        EXPECT_TRUE(co_await eventually([&] { return pg_backends(app) == 0; }, 3s, 50ms))
            << pg_backends(app) << " connection(s) of the destroyed client still open";
      },
      30s);
}

// A statement runs (pg_sleep 3 s) while close() is called with close_timeout 5 s and cut short
// after 200 ms by its caller's timeout (core::with_timeout, as ResourceScope does); then the
// client is destroyed. Must hold: no crash and no access to freed memory (the statement's
// coroutine and the pool's background task resume after the destruction); the statement ends
// with client_closed within 1 s; no connection of the client is left on the server within 3 s.
TEST(PgFault, F42_destroyed_after_close_cut_short) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string app = "ts_f42_close";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = lifetime_config(servers.postgres_dsn("postgres"), app);
        config.min_size = 2;
        config.max_size = 2;
        config.close_timeout = 5s;
        auto client = std::make_unique<PostgresClient>(io.get_executor(), config);
        co_await client->start();
        // Shared with the detached statement, which may outlive this body if the test fails.
        struct Statement {
          Outcome outcome;
          bool done = false;
        };
        auto running = std::make_shared<Statement>();
        asio::co_spawn(
            io,
            [running,
             query = client->query("SELECT pg_sleep(3)")]() mutable -> asio::awaitable<void> {
              running->outcome = co_await outcome(std::move(query));
              running->done = true;
            },
            asio::detached);
        const Outcome& statement = running->outcome;
        EXPECT_TRUE(co_await eventually([&] { return client->stats().in_flight == 1; }, 2s));
        const Outcome close = co_await outcome(
            ts::core::with_timeout(client->close(), 200ms, ts::errc::timeout, "close"));
        EXPECT_EQ(close.code, ts::make_error_code(ts::errc::timeout))
            << "close() was not cut short: " << describe(close);
        const auto destroyed_at = std::chrono::steady_clock::now();
        client.reset();  // destroyed without a completed close()
        EXPECT_TRUE(co_await eventually([&] { return running->done; }, 1s))
            << "the running statement did not end within 1 s of the destruction";
        if (running->done) {
          EXPECT_EQ(statement.code, ts::make_error_code(ts::errc::client_closed))
              << describe(statement);
          EXPECT_EQ(statement.kind, ErrorKind::cancelled) << describe(statement);
        }
        EXPECT_TRUE(co_await eventually([&] { return pg_backends(app) == 0; }, 3s, 50ms))
            << pg_backends(app) << " connection(s) of the destroyed client still open "
            << ts::testing::elapsed_ms(destroyed_at).count() << " ms after its destruction";
      },
      30s);
}

// The same cut close(), and the client kept (a ResourceScope's enter(), a caller's own
// object). Must hold: the cut close leaves the client closed, not half closed: no connection
// open right after it, the running statement ends with client_closed within 1 s, no backend of
// the client is left within 3 s, and a second close() returns at once (under 100 ms).
TEST(PgFault, F42_close_cut_short_leaves_the_client_closed) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string app = "ts_f42_cut";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = lifetime_config(servers.postgres_dsn("postgres"), app);
        config.min_size = 2;
        config.max_size = 2;
        config.close_timeout = 5s;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        struct Statement {
          Outcome outcome;
          bool done = false;
        };
        auto running = std::make_shared<Statement>();
        asio::co_spawn(
            io,
            [running,
             query = client.query("SELECT pg_sleep(3)")]() mutable -> asio::awaitable<void> {
              running->outcome = co_await outcome(std::move(query));
              running->done = true;
            },
            asio::detached);
        EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == 1; }, 2s));
        const Outcome cut = co_await outcome(
            ts::core::with_timeout(client.close(), 200ms, ts::errc::timeout, "close"));
        EXPECT_EQ(cut.code, ts::make_error_code(ts::errc::timeout)) << describe(cut);
        EXPECT_EQ(client.stats().connections, 0u) << "connections still open after the cut close";
        EXPECT_TRUE(co_await eventually([&] { return running->done; }, 1s))
            << "the running statement did not end within 1 s of the cut close";
        EXPECT_EQ(running->outcome.code, ts::make_error_code(ts::errc::client_closed))
            << describe(running->outcome);
        const Outcome again = co_await outcome(
            ts::core::with_timeout(client.close(), 1s, ts::errc::timeout, "second close"));
        EXPECT_FALSE(again.failed) << "a second close(): " << describe(again);
        EXPECT_LT(again.elapsed, 100ms) << describe(again);
        EXPECT_TRUE(co_await eventually([&] { return pg_backends(app) == 0; }, 3s, 50ms))
            << pg_backends(app) << " connection(s) of the closed client still open";
      },
      30s);
}

}  // namespace

// Fault test F47 for PostgresClient's pool bookkeeping, against the harness's PostgreSQL: a
// transaction that waits for a connection keeps one connection free of new shared statements
// (a reservation) so that it drains; the reservation must end with its waiter, however the
// waiter leaves (served by another connection, timed out), and shared statements must keep
// using the capacity nobody reserved, also while a transaction waits.
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::pg::PostgresClient;
using ts::pg::Transaction;
using ts::testing::describe;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::Servers;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;

ts::pg::PostgresConfig pool_config(const std::string& app) {
  auto c = ts::testing::fault::fast_pg_config(Servers::instance().postgres_dsn("postgres"), app);
  const ts::pg::PostgresConfig defaults;
  c.min_size = 2;
  c.statement_timeout = 10s;
  c.connect_timeout = 2s;
  c.acquire_timeout = 1s;
  c.startup_timeout = defaults.startup_timeout;
  c.reconnect_backoff = defaults.reconnect_backoff;
  c.retry = {};
  return c;
}

/// An operation started on the loop; `done` once it ended. Shared with its coroutine, which
/// may outlive the test body when the test fails.
struct Call {
  Outcome outcome;
  bool done = false;
};

template <class T>
std::shared_ptr<Call> spawn(asio::io_context& io, asio::awaitable<T> op) {
  auto call = std::make_shared<Call>();
  asio::co_spawn(
      io,
      [call, op = std::move(op)]() mutable -> asio::awaitable<void> {
        call->outcome = co_await outcome(std::move(op));
        call->done = true;
      },
      asio::detached);
  return call;
}

/// A transaction whose body runs one statement, says it is in, then waits until `gate` is
/// cancelled.
asio::awaitable<void> gated_transaction(PostgresClient& client, asio::steady_timer& gate,
                                        bool& inside) {
  co_await client.transaction([&](Transaction& tx) -> asio::awaitable<void> {
    co_await tx.execute("SELECT 1");
    inside = true;
    boost::system::error_code ec;
    co_await gate.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  });
}

// Pool of 2. Transaction 1 holds connection A; a 0.5 s statement runs on B; transaction 2
// waits and reserves B (it has something in flight). Transaction 1 ends: transaction 2 gets A.
// Must hold: its reservation of B ends with its wait (stats().reserved back to 0), and while
// transaction 2 holds A, shared statements run on B: 5 in a row, each in under 300 ms
// (acquire_timeout 1 s).
TEST(PgFault, F47_reservation_ends_when_its_waiter_is_served_elsewhere) {
  TS_SKIP_IF_EXTERNAL();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), pool_config("ts_f47_elsewhere"));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          asio::steady_timer gate1(io, Clock::time_point::max());
          asio::steady_timer gate2(io, Clock::time_point::max());
          bool in1 = false, in2 = false;
          auto tx1 = spawn(io, gated_transaction(client, gate1, in1));
          EXPECT_TRUE(co_await eventually([&] { return in1; }, 2s));
          auto sleeper = spawn(io, client.query("SELECT pg_sleep(0.5)"));
          EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == 1; }, 2s));
          auto tx2 = spawn(io, gated_transaction(client, gate2, in2));
          EXPECT_TRUE(co_await eventually([&] { return client.stats().waiters == 1; }, 2s));
          EXPECT_EQ(client.stats().reserved, 1u) << "the waiting transaction reserved nothing";
          gate1.cancel();  // transaction 1 commits; transaction 2 gets its connection
          EXPECT_TRUE(co_await eventually([&] { return in2; }, 2s));
          EXPECT_TRUE(co_await eventually([&] { return sleeper->done; }, 2s));
          EXPECT_FALSE(sleeper->outcome.failed) << describe(sleeper->outcome);
          EXPECT_EQ(client.stats().reserved, 0u)
              << "a reservation outlived its waiter (served by another connection)";
          for (int i = 0; i < 5; ++i) {
            const Outcome shared = co_await outcome(client.query_value<std::int32_t>("SELECT 1"));
            EXPECT_FALSE(shared.failed) << "shared statement " << i << ": " << describe(shared);
            EXPECT_LT(shared.elapsed, 300ms)
                << "shared statement " << i << ": " << describe(shared);
          }
          gate2.cancel();
          EXPECT_TRUE(co_await eventually([&] { return tx1->done && tx2->done; }, 2s));
          EXPECT_FALSE(tx1->outcome.failed) << describe(tx1->outcome);
          EXPECT_FALSE(tx2->outcome.failed) << describe(tx2->outcome);
          EXPECT_EQ(client.stats().reserved, 0u);
        }());
      },
      30s);
}

// Pool of 2, each connection running a 2 s statement; a transaction waits (it reserves one of
// them and, with acquire_timeout 1 s, times out: the pool is saturated for exclusive use).
// Then 10 shared statements. Must hold: they use the connection nobody reserved (pipelined
// behind its statement) instead of queueing behind the waiting transaction: all 10 succeed,
// within 3 s; no reservation is left once the transaction stopped waiting.
TEST(PgFault, F47_shared_callers_use_free_capacity_while_a_transaction_waits) {
  TS_SKIP_IF_EXTERNAL();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), pool_config("ts_f47_capacity"));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          auto slow1 = spawn(io, client.query("SELECT pg_sleep(2)"));
          auto slow2 = spawn(io, client.query("SELECT pg_sleep(2)"));
          EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == 2; }, 2s));
          auto tx = spawn(io, client.transaction([](Transaction& t) -> asio::awaitable<void> {
            co_await t.execute("SELECT 1");
          }));
          EXPECT_TRUE(co_await eventually([&] { return client.stats().waiters == 1; }, 2s));
          EXPECT_EQ(client.stats().reserved, 1u);
          const auto start = Clock::now();
          std::vector<std::shared_ptr<Call>> shared;
          for (int i = 0; i < 10; ++i) {
            shared.push_back(spawn(io, client.query_value<std::int32_t>("SELECT 1")));
          }
          EXPECT_TRUE(co_await eventually(
              [&] {
                for (const auto& c : shared) {
                  if (!c->done) return false;
                }
                return true;
              },
              3s));
          int failed = 0;
          for (const auto& c : shared) {
            if (c->done && c->outcome.failed) {
              ++failed;
              ADD_FAILURE() << "shared statement: " << describe(c->outcome);
            }
          }
          EXPECT_EQ(failed, 0) << "of 10 shared statements, issued while a transaction waited";
          EXPECT_LT(ts::testing::elapsed_ms(start), 3s);
          EXPECT_TRUE(
              co_await eventually([&] { return tx->done && slow1->done && slow2->done; }, 3s));
          EXPECT_FALSE(slow1->outcome.failed) << describe(slow1->outcome);
          EXPECT_FALSE(slow2->outcome.failed) << describe(slow2->outcome);
          EXPECT_EQ(client.stats().reserved, 0u) << "a reservation outlived its waiter";
          EXPECT_EQ(client.stats().waiters, 0u);
        }());
      },
      30s);
}

}  // namespace

// Fault tests of PostgresClient's statements, against the harness's PostgreSQL: a legitimate
// statement slower than its retry attempt's share of the retry budget (F48), and a server that
// stalls while the client drains a COPY's error (F52).
#include <trading_shared/core/retry.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::ErrorKind;
using ts::pg::PostgresClient;
using ts::pg::Transaction;
using ts::testing::describe;
using ts::testing::FaultProxy;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::poll_until;
using ts::testing::Servers;
using ts::testing::fault::BackgroundLoop;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;
using ts::testing::fault::ScopeExit;

ts::pg::PostgresConfig statement_config(std::string dsn, std::string app) {
  auto c = ts::testing::fault::fast_pg_config(std::move(dsn), std::move(app));
  const ts::pg::PostgresConfig defaults;
  c.connect_timeout = 2s;
  c.startup_timeout = defaults.startup_timeout;
  c.reconnect_backoff = defaults.reconnect_backoff;
  c.retry = {};
  return c;
}

// ---- F48 the retry budget never cuts a statement short of its timeout -------------------------

// The default policy's proportions (3 attempts, a total budget a third of the statement
// timeout: 10 s against 30 s), scaled down: statement_timeout 5 s, retry budget 1.5 s over 3
// attempts (0.5 s each if split evenly), and a statement of 0.8 s, well within its timeout:
// a migration's slow DDL. Must hold: it runs once and succeeds, through transaction(),
// execute_resiliently() with the client's policy, and execute_resiliently() with a policy
// given with the call; no attempt is cut at its share of the budget.
TEST(PgFault, F48_statement_slower_than_its_retry_share_is_not_cut) {
  TS_SKIP_IF_EXTERNAL();
  auto config = statement_config(Servers::instance().postgres_dsn("postgres"), "ts_f48");
  config.retry.max_attempts = 3;
  config.retry.total_deadline = 1500ms;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          int bodies = 0;
          ts::pg::TransactionOptions idempotent;
          idempotent.idempotent = ts::core::Idempotent::yes;
          const Outcome tx = co_await outcome(client.transaction(
              [&](Transaction& t) -> asio::awaitable<void> {
                ++bodies;
                co_await t.execute("SELECT pg_sleep(0.8)");
              },
              idempotent));
          EXPECT_FALSE(tx.failed) << "transaction: " << describe(tx);
          EXPECT_EQ(bodies, 1) << "the transaction's body ran " << bodies << " times";

          int calls = 0;
          auto slow = [&](PostgresClient& c) {
            ++calls;
            return c.execute("SELECT pg_sleep(0.8)");
          };
          const Outcome resilient =
              co_await outcome(client.execute_resiliently(slow, ts::core::Idempotent::yes));
          EXPECT_FALSE(resilient.failed) << "execute_resiliently: " << describe(resilient);
          EXPECT_EQ(calls, 1);

          calls = 0;
          ts::core::RetryPolicy per_call;
          per_call.max_attempts = 4;
          per_call.total_deadline = 1s;
          const Outcome given = co_await outcome(
              client.execute_resiliently(slow, ts::core::Idempotent::yes, per_call));
          EXPECT_FALSE(given.failed) << "execute_resiliently with a policy: " << describe(given);
          EXPECT_EQ(calls, 1);
        }());
      },
      30s);
}

// The library's defaults: RetryPolicy{} (3 attempts, 10 s in all) and a statement of 3.6 s,
// longer than the 3.33 s an even split of 10 s gives the first attempt, far below the
// default statement_timeout (30 s). Must hold: one attempt, success, in under 5 s.
TEST(PgFault, F48_default_policy_does_not_cut_a_statement_within_its_timeout) {
  TS_SKIP_IF_EXTERNAL();
  auto config = statement_config(Servers::instance().postgres_dsn("postgres"), "ts_f48_default");
  config.statement_timeout = ts::pg::kDefaultStatementTimeout;
  config.retry = ts::core::RetryPolicy{};
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          int bodies = 0;
          ts::pg::TransactionOptions idempotent;
          idempotent.idempotent = ts::core::Idempotent::yes;
          const Outcome tx = co_await outcome(client.transaction(
              [&](Transaction& t) -> asio::awaitable<void> {
                ++bodies;
                co_await t.execute("SELECT pg_sleep(3.6)");
              },
              idempotent));
          EXPECT_FALSE(tx.failed) << describe(tx);
          EXPECT_EQ(bodies, 1) << "the transaction's body ran " << bodies << " times";
          EXPECT_LT(tx.elapsed, 5s) << describe(tx);
        }());
      },
      30s);
}

// ---- F52 no blocking call while a COPY's error is drained --------------------------------------

// A COPY into a missing table fails at its start: the server sends ErrorResponse, then
// ReadyForQuery. A proxy holds the ReadyForQuery back (the server stalls between the two
// messages) while the client reads the error. Meanwhile another client on the same io_context
// runs SELECT 1 in a loop. Must hold: the other client completes at least 20 queries within 2 s
// of the stall (the loop is not blocked); once the stall ends the COPY fails with the server's
// 42P01, and its connection is still usable.
TEST(PgFault, F52_copy_error_drained_without_blocking_the_loop) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  FaultProxy proxy("127.0.0.1", servers.postgres().port());
  proxy.start();
  ScopeExit restore([&] { proxy.clear_faults(); });

  // The loop and the main thread take turns: 1 the copier is idle (the main thread reads the
  // proxy's byte count), 2 go (the first COPY runs), 3 it failed (the main thread reads the
  // count again), 4 the hold is set (the second COPY runs).
  struct Shared {
    std::atomic<int> phase{0};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> other_queries{0};
    std::atomic<std::uint64_t> other_failures{0};
    std::atomic<bool> other_done{false};
    Outcome first, second;
    bool usable_after = false;
  };
  // Outlives the loop (declared before it: the loop's destructor joins its thread first).
  Shared state;
  Shared* const shared = &state;
  const auto copier_config =
      statement_config(ts::testing::fault::pg_dsn_for_port(proxy.port(), "postgres"), "ts_f52c");
  const auto other_config = statement_config(servers.postgres_dsn("postgres"), "ts_f52o");
  auto await_phase = [shared](int phase) {
    return eventually([shared, phase] { return shared->phase.load() >= phase; }, 10s);
  };

  BackgroundLoop loop(30s, [&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient copier(io.get_executor(), copier_config);
    PostgresClient other(io.get_executor(), other_config);
    co_await closing(copier, other, [&]() -> asio::awaitable<void> {
      co_await copier.start();
      co_await other.start();
      co_await copier.execute("SELECT 1");
      const std::vector<std::tuple<std::int64_t>> rows{{1}, {2}};
      const std::vector<std::string_view> columns{"id"};
      shared->phase = 1;
      if (!co_await await_phase(2)) co_return;
      shared->first = co_await outcome(copier.copy_in("f52_missing", columns, rows));
      shared->phase = 3;
      if (!co_await await_phase(4)) co_return;
      asio::co_spawn(
          io,
          [&other, shared]() -> asio::awaitable<void> {
            while (!shared->stop) {
              try {
                co_await other.query_value<std::int32_t>("SELECT 1");
                ++shared->other_queries;
              } catch (const std::exception& e) {
                ++shared->other_failures;
                ADD_FAILURE() << "the other client: " << e.what();
                break;
              }
            }
            shared->other_done = true;
          },
          asio::detached);
      shared->second = co_await outcome(copier.copy_in("f52_missing", columns, rows));
      shared->stop = true;
      shared->usable_after = co_await copier.query_value<std::int32_t>("SELECT 1") == 1;
      // The other client's loop ends with its current query.
      EXPECT_TRUE(co_await eventually([&] { return shared->other_done.load(); }, 2s));
    }());
  });

  // The proxy's count of bytes sent to the client once it stopped moving (all delivered). The
  // proxy adds to its count after its write returns, so the client can have read bytes (and
  // the loop moved on) that are not counted yet: the count must stay unchanged for 100 ms, not
  // merely between two reads in a row. (A count read before the copier's last reply was
  // counted made `reply` too large; the hold then fell after the second COPY's ReadyForQuery,
  // that COPY ended at once and the hold caught the next query instead: the flake "the other
  // client completed 0 queries in 2000 ms", "the COPY ended while the server stalled".)
  auto settled_bytes = [&] {
    std::uint64_t last = proxy.bytes_server_to_client();
    auto quiet_since = Clock::now();
    poll_until(
        [&] {
          const std::uint64_t now = proxy.bytes_server_to_client();
          if (now != last) {
            last = now;
            quiet_since = Clock::now();
          }
          return Clock::now() - quiet_since >= 100ms;
        },
        5000ms);
    return last;
  };
  ASSERT_TRUE(poll_until([&] { return shared->phase >= 1 || loop.done(); }, 10s));
  const std::uint64_t before = settled_bytes();
  shared->phase = 2;
  ASSERT_TRUE(poll_until([&] { return shared->phase >= 3 || loop.done(); }, 10s));
  const std::uint64_t reply = settled_bytes() - before;  // ErrorResponse + ReadyForQuery
  constexpr std::uint64_t kReadyForQuery = 6;            // 'Z', int32 length 5, status byte
  EXPECT_EQ(shared->first.server_code, ts::pg::sqlstate::undefined_table)
      << describe(shared->first);
  ASSERT_GT(reply, kReadyForQuery);
  proxy.hold_after_bytes(reply - kReadyForQuery, ts::testing::Direction::server_to_client);
  shared->phase = 4;
  // The stall is in effect once the ReadyForQuery has reached the proxy and is held back:
  // exactly its 6 bytes (more would be a later reply, i.e. a hold at the wrong offset).
  const bool stalled = poll_until([&] { return proxy.held_bytes() >= kReadyForQuery; }, 5s);
  EXPECT_TRUE(stalled) << "the second COPY's ReadyForQuery never reached the proxy";
  EXPECT_EQ(proxy.held_bytes(), kReadyForQuery) << "the hold is not at the ReadyForQuery";
  const std::uint64_t at_stall = shared->other_queries;
  const auto stall_start = Clock::now();
  const bool progressed =
      poll_until([&] { return shared->other_queries >= at_stall + 20; }, 2000ms);
  EXPECT_TRUE(progressed) << "the other client completed " << shared->other_queries - at_stall
                          << " queries in " << ts::testing::elapsed_ms(stall_start).count()
                          << " ms while the COPY error was drained: the event loop was blocked";
  EXPECT_FALSE(shared->stop.load()) << "the COPY ended while the server stalled";
  proxy.release_hold();
  loop.join();
  EXPECT_TRUE(shared->second.failed);
  EXPECT_EQ(shared->second.server_code, ts::pg::sqlstate::undefined_table)
      << describe(shared->second);
  EXPECT_TRUE(shared->usable_after) << "the copier's connection is not usable after the error";
  EXPECT_EQ(shared->other_failures, 0u);
}

}  // namespace

// Public behaviour of PostgresClient that had no test (docs/postgres.md): the TransactionOptions
// `read_only` (a write inside fails with 25006), per-transaction `statement_timeout` (enforced by
// the server with SET LOCAL, gone after the transaction), `repeatable_read` (the snapshot holds
// against a concurrent commit, read_committed as the control), and `copy_in` when its connection
// is lost mid-stream (a proxy resets it) or when the server stops taking its data (a proxy holds
// it back) until the deadline. Against the harness's PostgreSQL 15, directly or through a
// FaultProxy.
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::ErrorKind;
using ts::pg::PostgresClient;
using ts::pg::Transaction;
using ts::pg::TransactionOptions;
using ts::testing::describe;
using ts::testing::FaultProxy;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::Servers;
using ts::testing::fault::closing;
using ts::testing::fault::DirectPg;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_pg_config;
using ts::testing::fault::fast_retry;
using ts::testing::fault::pg_backends;
using ts::testing::fault::pg_dsn_for_port;
using ts::testing::fault::ScopeExit;

constexpr const char* kDb = "ts_fault_options";

std::string db_dsn() {
  return Servers::instance().postgres_dsn(Servers::instance().create_database(kDb));
}

// ---- TransactionOptions::read_only -------------------------------------------------------------

// read_only = true: reads work, a write fails with 25006 (read_only_sql_transaction), permanent,
// the body runs once, nothing is written; read_only = false (the default) writes.
TEST(PgOptions, ReadOnlyTransactionRefusesWritesWith25006) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dsn = db_dsn();
  DirectPg direct(dsn);
  direct.value("DROP TABLE IF EXISTS opt_ro");
  direct.value("CREATE TABLE opt_ro (id int)");
  ts::testing::fault::run_with_client(
      fast_pg_config(dsn, "ts_opt_ro"), 30s,
      [&](asio::io_context&, PostgresClient& client) -> asio::awaitable<void> {
        TransactionOptions ro;
        ro.read_only = true;
        ro.idempotent = ts::core::Idempotent::yes;  // even so: a permanent error runs once
        int bodies = 0;
        std::string mode;
        const Outcome write = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++bodies;
              mode = co_await tx.query_value<std::string>("SHOW transaction_read_only");
              co_await tx.execute("INSERT INTO opt_ro VALUES (1)");
            },
            ro));
        EXPECT_EQ(mode, "on");
        EXPECT_TRUE(write.failed) << "a write inside a read-only transaction succeeded";
        EXPECT_EQ(write.server_code, ts::pg::sqlstate::read_only_sql_transaction)
            << describe(write);
        EXPECT_EQ(write.kind, ErrorKind::permanent) << describe(write);
        EXPECT_EQ(bodies, 1);
        const auto read = co_await client.transaction(
            [&](Transaction& tx) -> asio::awaitable<std::int64_t> {
              co_return co_await tx.query_value<std::int64_t>("SELECT count(*) FROM opt_ro");
            },
            ro);
        EXPECT_EQ(read, 0);
        co_await client.transaction([&](Transaction& tx) -> asio::awaitable<void> {
          EXPECT_EQ(co_await tx.query_value<std::string>("SHOW transaction_read_only"), "off");
          co_await tx.execute("INSERT INTO opt_ro VALUES (2)");
        });
        EXPECT_EQ(direct.count("SELECT count(*) FROM opt_ro"), 1);
        EXPECT_EQ(direct.count("SELECT count(*) FROM opt_ro WHERE id = 1"), 0);
      });
}

// ---- TransactionOptions::statement_timeout -----------------------------------------------------

// statement_timeout = 300 ms on a client whose own is 5 s: inside, SHOW says 300ms; a 3 s sleep
// is ended by the server (57014, transient_unavailable) after about 300 ms, long before the
// client's deadline (300 ms + 1 s margin); the setting does not outlive the transaction.
TEST(PgOptions, PerTransactionStatementTimeoutEnforcedByTheServer) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dsn = db_dsn();
  const std::string role_default = DirectPg(dsn).value("SHOW statement_timeout");
  ts::testing::fault::run_with_client(
      fast_pg_config(dsn, "ts_opt_timeout"), 30s,
      [&](asio::io_context&, PostgresClient& client) -> asio::awaitable<void> {
        TransactionOptions options;
        options.statement_timeout = 300ms;
        options.retry = fast_retry(1);
        std::string inside;
        int bodies = 0;
        const Outcome slow = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++bodies;
              inside = co_await tx.query_value<std::string>("SHOW statement_timeout");
              co_await tx.execute("SELECT pg_sleep(3)");
            },
            options));
        EXPECT_EQ(inside, "300ms");
        EXPECT_EQ(bodies, 1);
        EXPECT_TRUE(slow.failed);
        EXPECT_EQ(slow.server_code, ts::pg::sqlstate::query_canceled) << describe(slow);
        EXPECT_EQ(slow.kind, ErrorKind::transient_unavailable) << describe(slow);
        EXPECT_GE(slow.elapsed, 280ms) << describe(slow);
        EXPECT_LT(slow.elapsed, 1300ms) << "not the server's 300 ms: " << describe(slow);
        // The same statement with the client's 5 s completes.
        const Outcome fine =
            co_await outcome(client.transaction([&](Transaction& tx) -> asio::awaitable<void> {
              EXPECT_EQ(co_await tx.query_value<std::string>("SHOW statement_timeout"), "5s");
              co_await tx.execute("SELECT pg_sleep(0.5)");
            }));
        EXPECT_FALSE(fine.failed) << describe(fine);
        // Nothing of the SET LOCAL is left on the pool's connections.
        for (int i = 0; i < 4; ++i) {
          EXPECT_EQ(co_await client.query_value<std::string>("SHOW statement_timeout"),
                    role_default);
        }
      });
}

// ---- IsolationLevel::repeatable_read ------------------------------------------------------------

// A row committed by another session between two reads of one transaction: repeatable_read does
// not see it (the snapshot holds), read_committed (the control) does.
TEST(PgOptions, RepeatableReadSnapshotHoldsAgainstAConcurrentCommit) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dsn = db_dsn();
  DirectPg direct(dsn);
  direct.value("DROP TABLE IF EXISTS opt_rr");
  direct.value("CREATE TABLE opt_rr (id int)");
  direct.value("INSERT INTO opt_rr VALUES (1)");
  ts::testing::fault::run_with_client(
      fast_pg_config(dsn, "ts_opt_rr"), 30s,
      [&](asio::io_context&, PostgresClient& client) -> asio::awaitable<void> {
        int next = 2;
        auto twice = [&](ts::pg::IsolationLevel level) -> asio::awaitable<std::pair<long, long>> {
          TransactionOptions options;
          options.isolation = level;
          options.retry = fast_retry(1);
          co_return co_await client.transaction(
              [&](Transaction& tx) -> asio::awaitable<std::pair<long, long>> {
                const auto first =
                    co_await tx.query_value<std::int64_t>("SELECT count(*) FROM opt_rr");
                // Another session commits a row (blocking libpq on the loop: a test's injection).
                direct.value("INSERT INTO opt_rr VALUES (" + std::to_string(next++) + ")");
                const auto second =
                    co_await tx.query_value<std::int64_t>("SELECT count(*) FROM opt_rr");
                co_return std::make_pair(static_cast<long>(first), static_cast<long>(second));
              },
              options);
        };
        const auto rr = co_await twice(ts::pg::IsolationLevel::repeatable_read);
        EXPECT_EQ(rr.first, 1);
        EXPECT_EQ(rr.second, 1) << "repeatable_read saw a row committed after its snapshot";
        const auto rc = co_await twice(ts::pg::IsolationLevel::read_committed);
        EXPECT_EQ(rc.first, 2);
        EXPECT_EQ(rc.second, 3) << "the control: read_committed sees the concurrent commit";
        TransactionOptions options;
        options.isolation = ts::pg::IsolationLevel::repeatable_read;
        const auto level = co_await client.transaction(
            [&](Transaction& tx) -> asio::awaitable<std::string> {
              co_return co_await tx.query_value<std::string>("SHOW transaction_isolation");
            },
            options);
        EXPECT_EQ(level, "repeatable read");
      });
}

// ---- copy_in under connection loss and timeout
// ----------------------------------------------------

/// 200 000 rows of (int8, text): about 6 MB of COPY BINARY, far more than the 64 KiB after which
/// the proxy cuts or holds.
std::vector<std::tuple<std::int64_t, std::string>> copy_rows() {
  std::vector<std::tuple<std::int64_t, std::string>> rows;
  rows.reserve(200000);
  for (std::int64_t i = 0; i < 200000; ++i) rows.emplace_back(i, "row-" + std::to_string(i));
  return rows;
}

// The connection is reset 64 KiB into the COPY's data: copy_in fails as outcome_unknown
// (connection lost after sending), nothing is copied (COPY is one statement), the connection is
// discarded and the client serves again.
TEST(PgOptions, CopyInConnectionLostMidStream) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dsn = db_dsn();
  DirectPg direct(dsn);
  direct.value("DROP TABLE IF EXISTS opt_copy_lost");
  direct.value("CREATE TABLE opt_copy_lost (id int8, label text)");
  FaultProxy proxy("127.0.0.1", Servers::instance().postgres().port());
  proxy.start();
  ScopeExit restore([&] { proxy.clear_faults(); });
  const auto rows = copy_rows();
  const std::vector<std::string_view> columns{"id", "label"};
  auto config = fast_pg_config(pg_dsn_for_port(proxy.port(), kDb), "ts_opt_copy_lost");
  config.retry = {};
  ts::testing::fault::run_with_client(
      config, 30s, [&](asio::io_context&, PostgresClient& client) -> asio::awaitable<void> {
        const auto before = client.stats();
        proxy.cut_after_bytes(64 * 1024, ts::testing::Direction::client_to_server);
        const Outcome lost = co_await outcome(client.copy_in("opt_copy_lost", columns, rows));
        EXPECT_TRUE(lost.failed) << "the COPY survived a reset connection";
        EXPECT_EQ(lost.code, ts::make_error_code(ts::errc::connection_lost)) << describe(lost);
        EXPECT_EQ(lost.kind, ErrorKind::outcome_unknown) << describe(lost);
        EXPECT_LT(lost.elapsed, 3s) << describe(lost);
        proxy.clear_faults();
        EXPECT_GE(client.stats().discarded, before.discarded + 1);
        // The server ended the COPY's session without committing anything.
        EXPECT_TRUE(co_await eventually(
            [&] {
              return direct.count(
                         "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                         "'COPY%opt_copy_lost%' AND pid <> pg_backend_pid()") == 0;
            },
            5s, 20ms));
        EXPECT_EQ(direct.count("SELECT count(*) FROM opt_copy_lost"), 0);
        // The client serves again, COPY included.
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
        const std::vector<std::tuple<std::int64_t, std::string>> few{{1, "a"}, {2, "b"}};
        EXPECT_EQ(co_await client.copy_in("opt_copy_lost", columns, few), 2);
        EXPECT_EQ(direct.count("SELECT count(*) FROM opt_copy_lost"), 2);
      });
}

// The server stops receiving the COPY's data 64 KiB in (the proxy holds it back, the sockets
// stay open): copy_in ends at its deadline, timeout 500 ms + margin 1 s, as request_timeout
// (outcome_unknown), the connection is discarded, a cancel request reaches the server, and
// when the held data (CopyDone included) is then let through, the cancelled COPY commits
// nothing; the client serves again. (The proxy queues without bound, so the client could
// send everything: only copy_end's wait for CommandComplete meets the deadline.)
TEST(PgOptions, CopyInTimesOutWhenTheServerStopsTakingData) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dsn = db_dsn();
  DirectPg direct(dsn);
  direct.value("DROP TABLE IF EXISTS opt_copy_slow");
  direct.value("CREATE TABLE opt_copy_slow (id int8, label text)");
  FaultProxy proxy("127.0.0.1", Servers::instance().postgres().port());
  proxy.start();
  ScopeExit restore([&] { proxy.clear_faults(); });
  const auto rows = copy_rows();
  const std::vector<std::string_view> columns{"id", "label"};
  auto config = fast_pg_config(pg_dsn_for_port(proxy.port(), kDb), "ts_opt_copy_slow");
  config.retry = {};
  ts::testing::fault::run_with_client(
      config, 30s, [&](asio::io_context&, PostgresClient& client) -> asio::awaitable<void> {
        const auto before = client.stats();
        const auto accepted_before = proxy.connections_accepted();  // the COPY's connection
        proxy.hold_after_bytes(64 * 1024, ts::testing::Direction::client_to_server);
        const Outcome slow = co_await outcome(
            client.copy_in("opt_copy_slow", columns, rows, ts::pg::QueryOptions{500ms}));
        EXPECT_TRUE(slow.failed) << "the COPY completed through a held connection";
        EXPECT_EQ(slow.code, ts::make_error_code(ts::errc::request_timeout)) << describe(slow);
        EXPECT_EQ(slow.kind, ErrorKind::outcome_unknown) << describe(slow);
        EXPECT_GE(slow.elapsed, 1450ms) << describe(slow);
        EXPECT_LT(slow.elapsed, 3s) << "500 ms + 1 s margin: " << describe(slow);
        const auto after = client.stats();
        EXPECT_EQ(after.timeouts, before.timeouts + 1);
        EXPECT_GE(after.discarded, before.discarded + 1);
        // Before the held data is let through: the cancel request (a connection of its own
        // through the proxy, closed by the server once it has signalled the backend) has come
        // and gone, next to the pool's replacement connection; the COPY's held connection is
        // the other one still open.
        EXPECT_TRUE(co_await eventually(
            [&] {
              return proxy.connections_accepted() >= accepted_before + 2 &&
                     proxy.active_connections() == 2;
            },
            3s))
            << "no cancel request reached the server: accepted "
            << proxy.connections_accepted() - accepted_before << " more, active "
            << proxy.active_connections();
        // The held data (the whole COPY, CopyDone included) now reaches the server: the
        // cancelled COPY must not commit.
        proxy.clear_faults();
        EXPECT_TRUE(co_await eventually(
            [&] {
              return direct.count(
                         "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                         "'COPY%opt_copy_slow%' AND state = 'active' AND pid <> "
                         "pg_backend_pid()") == 0;
            },
            5s, 20ms))
            << "the server's COPY still runs";
        EXPECT_EQ(direct.count("SELECT count(*) FROM opt_copy_slow"), 0);
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
      });
}

}  // namespace

// Fault tests F01-F08 of docs/failure-modes.md for PostgresClient, injected for real on loopback:
// a port where nothing listens, the fault proxy (a stopped listener, a reply cut off after
// COMMIT), signals to the harness's servers (SIGTERM smart shutdown, SIGKILL, SIGSTOP and
// SIGCONT), pg_terminate_backend, real deadlocks and serialization failures, an exhausted pool.
//
// The tests of this binary (F09-F16 live in pg_faults_b_test.cpp) share one set of servers and
// run one after the other: every test leaves every server running and serving when it ends,
// also when it fails (RAII guards resume or restart what the test disturbed). Isolation: the
// database `pg_faults_a`, one table per test, one application_name per client.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using ts::errc;
using ts::ErrorKind;
using ts::core::Idempotent;
using ts::pg::PostgresClient;
using ts::pg::Transaction;
using ts::pg::TransactionOptions;
using ts::testing::describe;
using ts::testing::Direction;
using ts::testing::elapsed_ms;
using ts::testing::FaultProxy;
using ts::testing::LogCapture;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::ServerProcess;
using ts::testing::Servers;
using ts::testing::fault::DirectPg;
using ts::testing::fault::eventually;
using ts::testing::fault::ScopeExit;

namespace {

constexpr const char* kDatabase = "pg_faults_a";

Servers& servers() {
  return Servers::instance();
}

std::string dsn_for_port(std::uint16_t port, const std::string& database = kDatabase) {
  return ts::testing::fault::pg_dsn_for_port(port, database);
}

using ts::testing::fault::fast_retry;

/// Short timeouts everywhere, so that every fault resolves in well under a second or two.
ts::pg::PostgresConfig fast_config(std::string dsn, std::string application_name) {
  return ts::testing::fault::fast_pg_config(std::move(dsn), std::move(application_name));
}

/// A synchronous libpq connection of the test's own, to inject faults and to look from outside
/// the client (pg_terminate_backend, pg_locks, row counts, pg_stat_activity).
class Direct : public DirectPg {
 public:
  explicit Direct(const std::string& database = kDatabase)
      : DirectPg(servers().postgres_dsn(database)) {}

  /// pg_terminate_backend, waiting (up to 5 s) until the backend has exited.
  bool terminate(int pid) {
    return value("SELECT pg_terminate_backend(" + std::to_string(pid) + ", 5000)") == "t";
  }
  /// Server connections of one application (one client under test).
  std::int64_t connections_of(const std::string& application_name) {
    return count("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                 application_name + "'");
  }
};

bool serves(const std::string& dsn) {
  PGconn* c = PQconnectdb(dsn.c_str());
  bool ok = PQstatus(c) == CONNECTION_OK;
  if (ok) {
    PGresult* r = PQexec(c, "SELECT 1");
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

/// The next test finds PostgreSQL and PgBouncer serving (the servers are shared).
void expect_servers_healthy() {
  EXPECT_TRUE(ts::testing::poll_until(
      [] { return serves(servers().postgres_dsn()) && serves(servers().pgbouncer_dsn()); }, 20s))
      << "PostgreSQL or PgBouncer left unhealthy";
}

std::string kind_name(const Outcome& o) {
  return std::string(ts::to_string(o.kind));
}

void create_tables(const std::string& sql) {
  servers().create_database(kDatabase);
  Direct setup;
  setup.value(sql);
}

// ---- F01 -------------------------------------------------------------------------------------

// Nothing listens on the port: start() retries with backoff until startup_timeout, then fails
// with startup_timeout naming host:port and never the password.
TEST(PgFault, F01_server_down_at_start) {
  TS_SKIP_IF_EXTERNAL();
  const std::uint16_t port = ts::testing::free_loopback_port();
  auto config = fast_config(dsn_for_port(port, "postgres") + " password=secret123", "f01");
  config.startup_timeout = 1500ms;
  config.connect_timeout = 500ms;
  config.reconnect_backoff = ts::pg::PostgresConfig{}.reconnect_backoff;  // 100 ms, x2, 5 s
  LogCapture logs("pg");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        const Outcome o = co_await outcome(client.start());
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.code, ts::make_error_code(errc::startup_timeout)) << describe(o);
        EXPECT_EQ(kind_name(o), "transient_not_sent") << describe(o);
        EXPECT_NE(o.what.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << o.what;
        EXPECT_EQ(o.what.find("secret123"), std::string::npos) << o.what;
        // Retried until the deadline, not given up early, not hung past it.
        EXPECT_GE(o.elapsed, config.startup_timeout - 50ms)
            << "start() gave up before its startup_timeout: " << describe(o);
        EXPECT_LE(o.elapsed, config.startup_timeout + 700ms) << describe(o);
        const auto s = client.stats();
        EXPECT_GE(s.connect_failures, 3u) << "start() must retry with backoff";
        EXPECT_EQ(s.connects, 0u);
        EXPECT_EQ(s.connections, 0u);
        co_await client.close();
      },
      20s);
  EXPECT_GE(logs.count("start-up attempt"), 2u);
  EXPECT_EQ(logs.count("secret123"), 0u) << "the password reached the logger";
}

// The server accepts TCP connections and never answers (a black hole: the "endless connect
// hang" of F01). With the default connect_timeout (5 s) longer than startup_timeout, start()
// must still give up at its own deadline.
TEST(PgFault, F01_server_hangs_at_start) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  proxy.set_blackhole(true);
  auto config = fast_config(dsn_for_port(proxy.port(), "postgres"), "f01h");
  config.startup_timeout = 1500ms;
  config.connect_timeout = ts::pg::PostgresConfig{}.connect_timeout;  // 5 s
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        const Outcome o = co_await outcome(client.start());
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.code, ts::make_error_code(errc::startup_timeout)) << describe(o);
        EXPECT_EQ(kind_name(o), "transient_not_sent") << describe(o);
        EXPECT_LE(o.elapsed, config.startup_timeout + 700ms)
            << "start() overran its startup_timeout: " << describe(o);
        EXPECT_GE(proxy.connections_accepted(), 1u);
        co_await client.close();
      },
      20s);
  EXPECT_TRUE(ts::testing::poll_until([&] { return proxy.active_connections() == 0; }, 5s))
      << "the client left a connection open";
}

// The server is down when start() begins (a listener that is stopped: connections refused) and
// comes back while start() retries: start() succeeds and fills the pool.
TEST(PgFault, F01_server_back_during_start) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  proxy.stop();  // its port now refuses connections, as a server that is down
  auto config = fast_config(dsn_for_port(proxy.port()), "f01b");
  config.min_size = 2;
  config.startup_timeout = 10s;
  config.reconnect_backoff = {50ms, 200ms, 2.0};
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        bool back = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              co_await eventually([&] { return client.stats().connect_failures >= 3; }, 5s);
              proxy.start();  // the server is back
              back = true;
            },
            asio::detached);
        const Outcome o = co_await outcome(client.start());
        EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_TRUE(back);
        EXPECT_LT(o.elapsed, 5s) << describe(o);
        const auto s = client.stats();
        EXPECT_GE(s.connect_failures, 3u);
        EXPECT_EQ(s.connects, 2u);
        EXPECT_EQ(s.connections, 2u);
        if (!o.failed) {
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 42::int8"), 42);
        }
        co_await client.close();
      },
      20s);
}

// ---- F02 -------------------------------------------------------------------------------------

// A real 57P03: PostgreSQL in smart shutdown (SIGTERM while a session is open) refuses new
// connections with "the database system is shutting down" (57P03, as during start-up and
// recovery). start() must treat it as transient and keep retrying; then PostgreSQL crashes
// (SIGKILL) and restarts with crash recovery, and start() succeeds across all of it.
TEST(PgFault, F02_server_recovering_is_transient) {
  TS_SKIP_IF_EXTERNAL();
  for (const char* message :
       {"the database system is starting up", "the database system is in recovery mode",
        "the database system is shutting down",
        "the database system is not yet accepting connections"}) {
    EXPECT_EQ(ts::pg::sqlstate_of_connect_message(message), ts::pg::sqlstate::cannot_connect_now)
        << message;
    EXPECT_EQ(ts::pg::classify_sqlstate(ts::pg::sqlstate::cannot_connect_now, message,
                                        ts::RequestState::not_sent),
              ErrorKind::transient_unavailable)
        << message;
  }
  servers().create_database(kDatabase);
  ServerProcess& pg = servers().postgres();
  const std::string direct_dsn = servers().postgres_dsn();
  // The client connects through a proxy only to count its attempts from this thread.
  FaultProxy proxy("127.0.0.1", pg.port());
  proxy.start();

  struct WorkerResult {
    bool started = false;
    std::string error;
    milliseconds elapsed{0};
    std::int64_t value = 0;
    std::uint64_t connect_failures = 0;
    std::uint64_t connects = 0;
  } result;
  std::atomic<bool> finished{false};
  std::thread worker;
  ScopeExit join([&] {  // destroyed last: after PostgreSQL is back
    if (worker.joinable()) worker.join();
  });
  bool disturbed = false;
  // Restarts PostgreSQL (SIGKILL, start) when the test leaves it disturbed; destroyed first.
  ScopeExit restore([&] {
    if (disturbed || !pg.running()) {
      pg.kill();
      pg.start();
    }
  });
  LogCapture logs("pg");

  std::unique_ptr<PGconn, decltype(&PQfinish)> holder(PQconnectdb(direct_dsn.c_str()), &PQfinish);
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK);
  disturbed = true;
  ASSERT_EQ(::kill(pg.pid(), SIGTERM), 0);  // smart shutdown: waits for the holder's session
  std::string refusal;
  EXPECT_TRUE(ts::testing::poll_until(
      [&] {
        PGconn* probe = PQconnectdb(direct_dsn.c_str());
        const bool refused = PQstatus(probe) != CONNECTION_OK;
        refusal = PQerrorMessage(probe);
        PQfinish(probe);
        return refused && refusal.find("shutting down") != std::string::npos;
      },
      5s))
      << "no 57P03 from the server: " << refusal;

  auto config = fast_config(dsn_for_port(proxy.port()), "f02");
  config.startup_timeout = 20s;
  config.reconnect_backoff = {50ms, 250ms, 2.0};
  const auto started_at = Clock::now();
  worker = std::thread([&] {
    asio::io_context io;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          try {
            co_await client.start();
            result.started = true;
            result.elapsed = elapsed_ms(started_at);
            result.value = co_await client.query_value<std::int64_t>("SELECT 42::int8");
          } catch (const std::exception& e) {
            result.error = e.what();
            result.elapsed = elapsed_ms(started_at);
          }
          const auto s = client.stats();
          result.connect_failures = s.connect_failures;
          result.connects = s.connects;
          co_await client.close();
        },
        [&](std::exception_ptr) { finished = true; });
    io.run_for(40s);
  });

  // While every attempt gets 57P03, start() keeps retrying.
  EXPECT_TRUE(ts::testing::poll_until([&] { return proxy.connections_accepted() >= 4; }, 10s))
      << proxy.connections_accepted() << " connection attempts";
  EXPECT_FALSE(finished.load()) << "start() gave up while the server answered 57P03";
  // Crash, then start with crash recovery; the client is still in start().
  pg.kill();
  holder.reset();
  pg.start();
  disturbed = false;
  worker.join();

  EXPECT_TRUE(result.started) << result.error;
  EXPECT_EQ(result.value, 42);
  EXPECT_GE(result.connect_failures, 4u);
  EXPECT_GE(result.connects, 1u);
  EXPECT_LT(result.elapsed, 20s);
  EXPECT_GE(logs.count("shutting down"), 3u) << "the client never saw a 57P03";
  expect_servers_healthy();
}

// ---- F03 -------------------------------------------------------------------------------------

// Idle pooled connections killed by pg_terminate_backend: detected without a caller, replaced,
// the pool back to full size; a read issued right after the kill (before the client could
// notice) is retried by execute_resiliently and succeeds.
TEST(PgFault, F03_idle_connections_killed) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f03");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin("postgres");
        const auto first = client.backend_pids();
        EXPECT_EQ(first.size(), 2u);
        for (const int pid : first) EXPECT_TRUE(admin.terminate(pid)) << pid;
        const auto killed_at = Clock::now();
        auto replaced = [&](const std::vector<int>& old) {
          const auto pids = client.backend_pids();
          return pids.size() == 2 && std::none_of(pids.begin(), pids.end(), [&](int p) {
                   return std::find(old.begin(), old.end(), p) != old.end();
                 });
        };
        const bool refilled = co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.discarded >= 2 && s.connections == 2 && replaced(first);
            },
            5s);
        EXPECT_TRUE(refilled) << "discarded " << client.stats().discarded << ", connections "
                              << client.stats().connections;
        EXPECT_LT(elapsed_ms(killed_at), 2s);
        EXPECT_EQ(client.stats().connects, 4u);
        EXPECT_EQ(client.stats().failures, 0u) << "an error reached a caller";
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 2; }, 5s));

        // Killed right before a read: terminate() waits until the backends exited, and the
        // loop has not run since, so the client cannot have noticed yet.
        const auto second = client.backend_pids();
        for (const int pid : second) EXPECT_TRUE(admin.terminate(pid)) << pid;
        int attempts = 0;
        const auto read_at = Clock::now();
        const auto value = co_await client.execute_resiliently(
            [&](PostgresClient& c) -> asio::awaitable<std::int64_t> {
              ++attempts;
              co_return co_await c.query_value<std::int64_t>("SELECT 7::int8");
            },
            Idempotent::yes, fast_retry(3));
        EXPECT_EQ(value, 7);
        EXPECT_GE(attempts, 2) << "the first attempt should have met a dead connection";
        EXPECT_LE(attempts, 3);
        EXPECT_LT(elapsed_ms(read_at), 3s);
        EXPECT_TRUE(co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.discarded >= 4 && s.connections == 2 && replaced(second);
            },
            5s))
            << "pool not back to full size: " << client.stats().connections;
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 2; }, 5s));
        co_await client.close();
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 0; }, 5s));
      },
      30s);
}

// ---- F04 -------------------------------------------------------------------------------------

// The transaction's backend is terminated after its INSERT; the next statement fails. The
// transaction is rolled back (the row is absent), a non-idempotent body is not run again, an
// idempotent one is retried from the start and commits once.
TEST(PgFault, F04_killed_mid_transaction) {
  TS_SKIP_IF_EXTERNAL();
  create_tables("DROP TABLE IF EXISTS f04; CREATE TABLE f04 (id int PRIMARY KEY)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f04");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        // Inserts `id`; on its first run, gets its backend terminated from outside (and, with
        // `wait_for_detection`, lets the client notice the loss); then one more statement.
        auto body = [&](int id, int& runs, bool wait_for_detection) {
          return [&client, &admin, &runs, id,
                  wait_for_detection](Transaction& tx) -> asio::awaitable<void> {
            const int run = ++runs;
            const auto pid = co_await tx.query_value<std::int32_t>("SELECT pg_backend_pid()");
            co_await tx.execute("INSERT INTO f04 VALUES ($1)", id);
            if (run == 1) {
              const auto discarded = client.stats().discarded;
              EXPECT_TRUE(admin.terminate(pid));
              if (wait_for_detection) {
                EXPECT_TRUE(
                    co_await eventually([&] { return client.stats().discarded > discarded; }, 3s));
              }
            }
            co_await tx.query("SELECT 1");
          };
        };
        auto rows = [&](int id) {
          return admin.count("SELECT count(*) FROM f04 WHERE id = " + std::to_string(id));
        };
        auto pool_full = [&] {
          const auto s = client.stats();
          return s.connections == 1 && s.exclusive == 0;
        };
        TransactionOptions not_idempotent;
        not_idempotent.retry = fast_retry(3);
        TransactionOptions idempotent = not_idempotent;
        idempotent.idempotent = Idempotent::yes;

        // a) The next statement goes out on the dead connection: outcome unknown, no retry.
        int runs_a = 0;
        const Outcome a =
            co_await outcome(client.transaction(body(1, runs_a, false), not_idempotent));
        EXPECT_TRUE(a.failed);
        EXPECT_EQ(runs_a, 1) << "a non-idempotent transaction was run again";
        EXPECT_EQ(kind_name(a), "outcome_unknown") << describe(a);
        EXPECT_LT(a.elapsed, 3s);
        EXPECT_EQ(rows(1), 0) << "partial work kept";
        EXPECT_TRUE(co_await eventually(pool_full, 5s));

        // b) The client noticed the loss before the next statement: still not run again.
        int runs_b = 0;
        const Outcome b =
            co_await outcome(client.transaction(body(2, runs_b, true), not_idempotent));
        EXPECT_TRUE(b.failed) << "the body was retried and committed: " << describe(b);
        EXPECT_EQ(runs_b, 1) << "a non-idempotent transaction was run again after its "
                                "connection died mid-transaction";
        EXPECT_TRUE(kind_name(b) == "outcome_unknown" || kind_name(b) == "transient_not_sent")
            << describe(b);
        EXPECT_LT(b.elapsed, 3s);
        EXPECT_EQ(rows(2), b.failed ? 0 : 1);
        EXPECT_TRUE(co_await eventually(pool_full, 5s));

        // c) Declared idempotent: retried from the start, committed exactly once.
        int runs_c = 0;
        const Outcome c = co_await outcome(client.transaction(body(3, runs_c, false), idempotent));
        EXPECT_FALSE(c.failed) << describe(c);
        EXPECT_EQ(runs_c, 2);
        EXPECT_LT(c.elapsed, 3s);
        EXPECT_EQ(rows(3), 1);
        EXPECT_TRUE(co_await eventually(pool_full, 5s));
        EXPECT_GE(client.stats().discarded, 3u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT count(*) FROM f04"),
                  b.failed ? 1 : 2);
        co_await client.close();
      },
      30s);
}

// ---- F05 -------------------------------------------------------------------------------------

// COMMIT reaches the server, its reply is cut off by the proxy: commit_outcome_unknown
// (outcome_unknown), the non-idempotent body ran exactly once. The server did commit, which is
// why a blind retry would have written the payment twice. Declared idempotent, the body is
// retried and its effect stays single.
TEST(PgFault, F05_connection_lost_during_commit) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f05_ledger, f05_keyed;"
      "CREATE TABLE f05_ledger (k text NOT NULL, amount int NOT NULL);"
      "CREATE TABLE f05_keyed (k text PRIMARY KEY, amount int NOT NULL)");
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  auto config = fast_config(dsn_for_port(proxy.port()), "f05");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.retry = fast_retry(3);

        int runs = 0;
        const Outcome lost = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs;
              co_await tx.execute("INSERT INTO f05_ledger VALUES ('payment-1', 100)");
              // COMMIT goes out next; the first byte of its reply resets the connection.
              proxy.cut_after_bytes(0, Direction::server_to_client);
            },
            options));
        proxy.clear_faults();
        EXPECT_TRUE(lost.failed);
        EXPECT_EQ(lost.code, ts::make_error_code(errc::commit_outcome_unknown)) << describe(lost);
        EXPECT_EQ(kind_name(lost), "outcome_unknown");
        EXPECT_EQ(runs, 1) << "retried blindly";
        EXPECT_LT(lost.elapsed, 2s);
        // The server answered, so it had committed: only the answer was lost.
        EXPECT_EQ(admin.count("SELECT count(*) FROM f05_ledger WHERE k = 'payment-1'"), 1);
        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().connections == 1 && client.stats().exclusive == 0; }, 5s));
        EXPECT_GE(client.stats().discarded, 1u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);

        // Idempotent (ON CONFLICT DO NOTHING): retried after the lost COMMIT, effect single.
        options.idempotent = Idempotent::yes;
        const auto discarded_before = client.stats().discarded;
        bool cleared = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              co_await eventually([&] { return client.stats().discarded > discarded_before; }, 5s);
              proxy.clear_faults();  // the cut happened: let the pool reconnect
              cleared = true;
            },
            asio::detached);
        int runs_idempotent = 0;
        const Outcome retried = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs_idempotent;
              co_await tx.execute(
                  "INSERT INTO f05_keyed VALUES ('payment-2', 200) ON CONFLICT (k) DO NOTHING");
              if (runs_idempotent == 1) proxy.cut_after_bytes(0, Direction::server_to_client);
            },
            options));
        EXPECT_FALSE(retried.failed) << describe(retried);
        EXPECT_TRUE(cleared);
        EXPECT_EQ(runs_idempotent, 2);
        EXPECT_LT(retried.elapsed, 3s);
        EXPECT_EQ(admin.count("SELECT count(*) FROM f05_keyed WHERE k = 'payment-2'"), 1);
        EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 1; }, 5s));
        co_await client.close();
      },
      30s);
}

// ---- F06 -------------------------------------------------------------------------------------

// PostgreSQL frozen (SIGSTOP): the client deadline (statement_timeout + margin) fires, the
// connections are discarded, the slots freed, the breaker counts the timeouts and opens; after
// SIGCONT the pool refills, a probe closes the breaker. Then the same with PgBouncer frozen.
TEST(PgFault, F06_server_frozen) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  ServerProcess& pg = servers().postgres();
  ServerProcess& bouncer = servers().pgbouncer();
  auto frozen_config = [](std::string dsn, std::string application_name) {
    auto c = fast_config(std::move(dsn), std::move(application_name));
    c.statement_timeout = 300ms;
    c.network_timeout_margin = 200ms;
    c.connect_timeout = 300ms;
    c.acquire_timeout = 300ms;
    c.reconnect_backoff = {50ms, 300ms, 2.0};
    return c;
  };
  auto expect_timed_out = [](const Outcome& o) {
    EXPECT_TRUE(o.failed);
    EXPECT_EQ(o.code, ts::make_error_code(errc::request_timeout)) << describe(o);
    EXPECT_EQ(kind_name(o), "outcome_unknown") << describe(o);
    EXPECT_GE(o.elapsed, 450ms) << describe(o);
    EXPECT_LE(o.elapsed, 2s) << describe(o);
  };

  {
    auto config = frozen_config(servers().postgres_dsn(kDatabase), "f06");
    config.min_size = 2;
    config.max_size = 2;
    config.breaker.window_size = 4;
    config.breaker.min_calls = 2;
    config.breaker.failure_rate_threshold = 0.5;
    config.breaker.open_backoff = {200ms, 400ms, 2.0};
    ScopeExit resume([&] { pg.resume(); });  // SIGCONT, whatever happens
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          co_await client.start();
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
          pg.pause();
          // Two statements, one on each connection, against the frozen server.
          std::vector<Outcome> frozen;
          for (int i = 0; i < 2; ++i) {
            asio::co_spawn(io, outcome(client.query("SELECT 1")),
                           [&](std::exception_ptr, Outcome o) { frozen.push_back(o); });
          }
          EXPECT_TRUE(co_await eventually([&] { return frozen.size() == 2; }, 3s));
          for (const auto& o : frozen) expect_timed_out(o);
          auto s = client.stats();
          EXPECT_EQ(s.timeouts, 2u);
          EXPECT_GE(s.discarded, 2u);
          EXPECT_EQ(s.in_flight, 0u);
          EXPECT_EQ(s.exclusive, 0u);
          EXPECT_EQ(ts::core::to_string(s.breaker), "open");
          // The open breaker fails fast.
          const Outcome fast = co_await outcome(client.query("SELECT 1"));
          EXPECT_EQ(fast.code, ts::make_error_code(errc::circuit_open)) << describe(fast);
          EXPECT_EQ(kind_name(fast), "transient_not_sent");
          EXPECT_LT(fast.elapsed, 100ms);

          pg.resume();
          EXPECT_TRUE(co_await eventually(
              [&] {
                s = client.stats();
                return s.connections == 2 && s.breaker != ts::core::CircuitState::open;
              },
              10s))
              << "connections " << s.connections << ", breaker " << ts::core::to_string(s.breaker);
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 2::int8"), 2);
          EXPECT_EQ(ts::core::to_string(client.stats().breaker), "closed");
          co_await client.close();
        },
        40s);
  }

  {
    auto config = frozen_config(servers().pgbouncer_dsn(kDatabase), "f06b");
    ScopeExit resume([&] { bouncer.resume(); });  // SIGCONT, whatever happens
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          co_await client.start();
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
          bouncer.pause();
          expect_timed_out(co_await outcome(client.query("SELECT 1")));
          const auto s = client.stats();
          EXPECT_EQ(s.timeouts, 1u);
          EXPECT_GE(s.discarded, 1u);
          EXPECT_EQ(s.in_flight, 0u);
          bouncer.resume();
          EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 1; }, 10s));
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 3::int8"), 3);
          co_await client.close();
        },
        40s);
  }
  expect_servers_healthy();
}

// ---- F07 -------------------------------------------------------------------------------------

// A real deadlock: T1 locks row 1, T2 row 2, then each wants the other's (T2 goes on only once
// pg_locks shows T1 waiting). The loser gets 40P01 and its whole body runs again; both
// increments land exactly once.
TEST(PgFault, F07_deadlock_retried) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f07; CREATE TABLE f07 (id int PRIMARY KEY, v int NOT NULL);"
      "INSERT INTO f07 VALUES (1, 0), (2, 0)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.retry = fast_retry(3);
        int runs1 = 0, runs2 = 0, pid1 = 0, done = 0;
        bool t2_holds_row2 = false;
        std::vector<std::string> conflicts;
        std::vector<Outcome> results;
        auto on_done = [&](std::exception_ptr, Outcome o) {
          results.push_back(o);
          ++done;
        };
        const auto start = Clock::now();
        asio::co_spawn(io,
                       outcome(client.transaction(
                           [&](Transaction& tx) -> asio::awaitable<void> {
                             const int run = ++runs1;
                             co_await tx.execute("SET LOCAL deadlock_timeout = '100ms'");
                             co_await tx.execute("UPDATE f07 SET v = v + 1 WHERE id = 1");
                             if (run == 1) {
                               pid1 =
                                   co_await tx.query_value<std::int32_t>("SELECT pg_backend_pid()");
                               EXPECT_TRUE(co_await eventually([&] { return t2_holds_row2; }, 5s));
                             }
                             try {
                               co_await tx.execute("UPDATE f07 SET v = v + 1 WHERE id = 2");
                             } catch (const ts::Error& e) {
                               conflicts.push_back(e.server() ? e.server()->code : e.what());
                               throw;
                             }
                           },
                           options)),
                       on_done);
        asio::co_spawn(io,
                       outcome(client.transaction(
                           [&](Transaction& tx) -> asio::awaitable<void> {
                             const int run = ++runs2;
                             co_await tx.execute("SET LOCAL deadlock_timeout = '100ms'");
                             co_await tx.execute("UPDATE f07 SET v = v + 10 WHERE id = 2");
                             if (run == 1) {
                               t2_holds_row2 = true;
                               EXPECT_TRUE(co_await eventually(
                                   [&] {
                                     return pid1 != 0 && admin.count(
                                                             "SELECT count(*) FROM pg_locks WHERE "
                                                             "NOT granted AND pid = " +
                                                             std::to_string(pid1)) > 0;
                                   },
                                   5s))
                                   << "T1 never waited for row 2";
                             }
                             try {
                               co_await tx.execute("UPDATE f07 SET v = v + 10 WHERE id = 1");
                             } catch (const ts::Error& e) {
                               conflicts.push_back(e.server() ? e.server()->code : e.what());
                               throw;
                             }
                           },
                           options)),
                       on_done);
        EXPECT_TRUE(co_await eventually([&] { return done == 2; }, 10s));
        for (const auto& o : results) EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_LT(elapsed_ms(start), 5s);
        EXPECT_EQ(conflicts, std::vector<std::string>{"40P01"});
        EXPECT_EQ(runs1 + runs2, 3) << "T1 ran " << runs1 << " times, T2 " << runs2;
        EXPECT_TRUE((runs1 == 2 && runs2 == 1) || (runs1 == 1 && runs2 == 2));
        EXPECT_EQ(admin.value("SELECT string_agg(v::text, ',' ORDER BY id) FROM f07"), "11,11");
        const auto s = client.stats();
        EXPECT_EQ(s.failures, 1u);
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.connections, 2u);
        EXPECT_EQ(ts::core::to_string(s.breaker), "closed");
        co_await client.close();
      },
      30s);
}

// A real serialization failure: write skew under SERIALIZABLE (both read how many are on call,
// both take themselves off). One of them gets 40001 and runs again, now seeing one on call.
TEST(PgFault, F07_serialization_failure_retried) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f07_on_call;"
      "CREATE TABLE f07_on_call (name text PRIMARY KEY, on_call bool NOT NULL);"
      "INSERT INTO f07_on_call VALUES ('alice', true), ('bob', true)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07s");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.isolation = ts::pg::IsolationLevel::serializable;
        options.retry = fast_retry(3);
        int readers = 0, done = 0;
        std::array<int, 2> runs{0, 0};
        std::vector<Outcome> results;
        const std::array<std::string, 2> names{"alice", "bob"};
        for (std::size_t i = 0; i < 2; ++i) {
          asio::co_spawn(io,
                         outcome(client.transaction(
                             [&, i](Transaction& tx) -> asio::awaitable<void> {
                               const int run = ++runs[i];
                               const auto on_call = co_await tx.query_value<std::int64_t>(
                                   "SELECT count(*) FROM f07_on_call WHERE on_call");
                               if (run == 1) {
                                 ++readers;  // both read before either writes
                                 EXPECT_TRUE(co_await eventually([&] { return readers >= 2; }, 5s));
                               }
                               if (on_call >= 2) {
                                 co_await tx.execute(
                                     "UPDATE f07_on_call SET on_call = false WHERE name = $1",
                                     names[i]);
                               }
                             },
                             options)),
                         [&](std::exception_ptr, Outcome o) {
                           results.push_back(o);
                           ++done;
                         });
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 2; }, 10s));
        for (const auto& o : results) EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_EQ(runs[0] + runs[1], 3) << "alice ran " << runs[0] << " times, bob " << runs[1];
        EXPECT_EQ(admin.count("SELECT count(*) FROM f07_on_call WHERE on_call"), 1);
        EXPECT_EQ(client.stats().failures, 1u);
        EXPECT_EQ(client.stats().exclusive, 0u);
        co_await client.close();
      },
      30s);
}

// A conflict that never resolves (the server raises 40001 on every run): the body runs exactly
// max_attempts times with backoff, then the 40001 reaches the caller as transient_conflict.
TEST(PgFault, F07_conflict_retries_capped) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07c");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        TransactionOptions options;
        options.retry = fast_retry(4);
        int runs = 0;
        const Outcome o = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs;
              co_await tx.execute(
                  "DO $$BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = "
                  "'serialization_failure'; END$$");
            },
            options));
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.server_code, "40001") << describe(o);
        EXPECT_EQ(kind_name(o), "transient_conflict");
        EXPECT_EQ(runs, 4);
        EXPECT_LT(o.elapsed, 2s);
        const auto s = client.stats();
        EXPECT_EQ(s.failures, 4u);
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.discarded, 0u) << "a conflict does not break the connection";
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
        co_await client.close();
      },
      30s);
}

// ---- F08 -------------------------------------------------------------------------------------

// Both connections held by long transactions; 20 waiters time out (acquire_timeout), 20 are
// cancelled by their callers and fail at once; nothing leaks: no waiter left, the pool full,
// queries work, close() prompt, no server connection left. "At once" is asserted by order,
// not by a wall-time window a loaded machine could miss: the 40 waiters are all queued before
// any of them ended, and every cancelled waiter ended (as cancelled) before the first timed
// waiter's acquire_timeout (1 s, started earlier) expired.
TEST(PgFault, F08_pool_exhausted_waiters) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f08");
  config.min_size = 2;
  config.max_size = 2;
  config.acquire_timeout = 1s;
  // Acquire timeouts are transient_not_sent, which the endpoint's breaker counts as failures
  // (docs/core.md): with the default breaker, the 20 timeouts below open it and
  // the next query fails fast although the server is fine. This test is about the pool, so its
  // breaker needs more calls than the test makes to trip.
  config.breaker.window_size = 100;
  config.breaker.min_calls = 100;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin("postgres");
        TransactionOptions once;
        once.retry = fast_retry(1);
        int holders_done = 0, holders_failed = 0, bodies = 0;
        for (int i = 0; i < 2; ++i) {
          asio::co_spawn(io,
                         client.transaction(
                             [](Transaction& tx) -> asio::awaitable<void> {
                               co_await tx.execute("SELECT pg_sleep(3)");
                             },
                             once),
                         [&](std::exception_ptr e) {
                           if (e) ++holders_failed;
                           ++holders_done;
                         });
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().exclusive == 2; }, 2s));
        auto waiter = [&](int i) {
          if (i % 2 == 0) return outcome(client.query("SELECT 1"));
          return outcome(client.transaction(
              [&](Transaction& tx) -> asio::awaitable<void> {
                ++bodies;
                co_await tx.execute("SELECT 1");
              },
              once));
        };
        std::vector<Outcome> timed, cancelled;
        for (int i = 0; i < 20; ++i) {
          asio::co_spawn(io, waiter(i), [&](std::exception_ptr, Outcome o) { timed.push_back(o); });
        }
        std::array<asio::cancellation_signal, 20> signals;
        std::vector<std::size_t> timed_when_cancelled;
        for (int i = 0; i < 20; ++i) {
          asio::co_spawn(
              io, waiter(i),
              asio::bind_cancellation_slot(signals[static_cast<std::size_t>(i)].slot(),
                                           [&](std::exception_ptr, Outcome o) {
                                             cancelled.push_back(o);
                                             timed_when_cancelled.push_back(timed.size());
                                           }));
        }
        // All 40 queued, none ended: the cancellations below meet waiting waiters.
        EXPECT_TRUE(co_await eventually([&] { return client.stats().waiters == 40; }, 5s))
            << client.stats().waiters << " waiters";
        EXPECT_TRUE(timed.empty() && cancelled.empty())
            << timed.size() << " timed and " << cancelled.size()
            << " cancelled waiters ended before the cancellations";
        for (auto& signal : signals) signal.emit(asio::cancellation_type::terminal);
        EXPECT_TRUE(co_await eventually([&] { return cancelled.size() == 20; }, 5s));
        for (const auto& o : cancelled) {
          EXPECT_EQ(o.code, ts::make_error_code(errc::cancelled)) << describe(o);
          EXPECT_EQ(kind_name(o), "cancelled");
          EXPECT_LT(o.elapsed, config.acquire_timeout) << describe(o);
        }
        // At once: every cancelled waiter ended before the first timed one timed out.
        for (const auto n : timed_when_cancelled) {
          EXPECT_EQ(n, 0u) << "a cancelled waiter ended after a timed one's acquire_timeout";
        }
        EXPECT_TRUE(co_await eventually([&] { return timed.size() == 20; }, 5s));
        for (const auto& o : timed) {
          EXPECT_EQ(o.code, ts::make_error_code(errc::acquire_timeout)) << describe(o);
          EXPECT_EQ(kind_name(o), "transient_not_sent");
          EXPECT_GE(o.elapsed, 990ms) << describe(o);
          EXPECT_LE(o.elapsed, 2500ms) << describe(o);
        }
        EXPECT_EQ(bodies, 0);
        EXPECT_EQ(client.stats().waiters, 0u);
        EXPECT_TRUE(co_await eventually([&] { return holders_done == 2; }, 5s));
        EXPECT_EQ(holders_failed, 0);
        const auto s = client.stats();
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.connections, 2u);
        EXPECT_EQ(s.in_flight, 0u);
        EXPECT_EQ(s.cancellations, 20u);
        EXPECT_EQ(ts::core::to_string(s.breaker), "closed");
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 5::int8"), 5);
        EXPECT_EQ(admin.connections_of("f08"), 2);
        const auto closing = Clock::now();
        co_await client.close();
        EXPECT_LT(elapsed_ms(closing), 500ms);
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f08") == 0; }, 5s));
      },
      30s);
}

}  // namespace

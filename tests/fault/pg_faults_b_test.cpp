// Fault tests F09-F16 of docs/failure-modes.md for PostgresClient, injected for real against the
// harness's PostgreSQL 15 and PgBouncer (transaction pooling): caller cancellation and
// client-side timeouts mid-query, close() with a connection checked out, PgBouncer transaction
// pooling (unnamed statements, session state), query_wait_timeout, PAUSE/RESUME and restart,
// the server's idle_session_timeout, and permanent errors.
//
// Tests share one set of servers (one binary) and run one after the other: each isolates
// itself by database name, and RAII guards at test scope put every server back (running,
// unpaused, default settings) even when an expectation fails or the body throws.
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::pg::PostgresClient;
using ts::testing::elapsed_ms;
using ts::testing::open_descriptors;
using ts::testing::pause_for;
using ts::testing::Servers;
using ts::testing::fault::eventually;
using ts::testing::fault::PgConn;
using ts::testing::fault::ScopeExit;

// ---- synchronous libpq helpers (inspection and fault injection from the test) -------------

/// First value of the first row of `sql`, or nullopt.
std::optional<std::string> scalar(const std::string& dsn, const std::string& sql) {
  PgConn conn(dsn);
  auto rows = conn.exec(sql);
  if (!rows || rows->empty() || rows->front().empty()) return std::nullopt;
  return rows->front().front();
}

/// Runs one statement through a fresh connection; returns the error text ("" on success).
std::string run_sql(const std::string& dsn, const std::string& sql) {
  PgConn conn(dsn);
  if (!conn.ok()) return "connect: " + conn.error();
  return conn.exec(sql) ? std::string() : conn.last_error();
}

/// Backends of `app` on the server (direct connection, never counting itself); with `like`,
/// only those running a statement whose text contains it.
long backends(const std::string& app, const std::string& like = {}) {
  std::string sql =
      "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
      "application_name = '" +
      app + "'";
  if (!like.empty()) sql += " AND state = 'active' AND query LIKE '%" + like + "%'";
  const auto value = scalar(Servers::instance().postgres_dsn("postgres"), sql);
  return value ? std::stol(*value) : -1;
}

/// PIDs of the backends of `app` (direct connection, never counting itself).
std::vector<std::string> backend_pids(const std::string& app) {
  PgConn conn(Servers::instance().postgres_dsn("postgres"));
  const auto rows = conn.exec(
      "SELECT pid::text FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
      "application_name = '" +
      app + "' ORDER BY pid");
  std::vector<std::string> out;
  if (rows) {
    for (const auto& row : *rows) out.push_back(row.front());
  }
  return out;
}

/// Whether backend `pid` is still in pg_stat_activity.
bool backend_alive(const std::string& pid) {
  return scalar(Servers::instance().postgres_dsn("postgres"),
                "SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) != "0";
}

/// Whether PostgreSQL's log (log_line_prefix '%m [%p] ') says that backend `pid` ended by
/// the idle-session timeout (SQLSTATE 57P05).
bool idle_timeout_logged(const std::string& log_path, const std::string& pid) {
  std::ifstream log(log_path);
  const std::string needle =
      "[" + pid + "] FATAL:  terminating connection due to idle-session timeout";
  std::string line;
  while (std::getline(log, line)) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

bool wait_backends(const std::string& app, long expected, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (backends(app) == expected) return true;
    std::this_thread::sleep_for(20ms);  // polling a condition with a deadline
  }
  return backends(app) == expected;
}

/// A PgBouncer admin console command; returns the error text ("" on success).
std::string pgbouncer_admin(const std::string& command) {
  return run_sql(Servers::instance().pgbouncer_admin_dsn(), command);
}

/// `SHOW CONFIG` value of a PgBouncer setting.
std::optional<std::string> pgbouncer_setting(const std::string& key) {
  PgConn admin(Servers::instance().pgbouncer_admin_dsn());
  const auto rows = admin.exec("SHOW CONFIG");
  if (!rows) return std::nullopt;
  for (const auto& row : *rows) {
    if (row.size() >= 2 && row[0] == key) return row[1];
  }
  return std::nullopt;
}

/// `SHOW POOLS` row of `database` (user postgres) as column -> value.
std::map<std::string, std::string> pgbouncer_pool(const std::string& database) {
  PgConn admin(Servers::instance().pgbouncer_admin_dsn());
  const auto rows = admin.exec("SHOW POOLS");
  std::map<std::string, std::string> out;
  if (!rows) return out;
  for (const auto& row : *rows) {
    if (row.empty() || row[0] != database) continue;
    for (std::size_t c = 0; c < row.size() && c < admin.columns().size(); ++c) {
      out[admin.columns()[c]] = row[c];
    }
  }
  return out;
}

long pool_value(const std::map<std::string, std::string>& pool, const std::string& column) {
  const auto it = pool.find(column);
  return it == pool.end() ? -1 : std::stol(it->second);
}

/// Sends a cancel request for whatever each connection of `conns` runs (through PgBouncer).
void cancel_all(std::vector<std::unique_ptr<PgConn>>& conns) {
  for (auto& c : conns) {
    PGcancel* cancel = PQgetCancel(c->get());
    if (cancel == nullptr) continue;
    char error[256];
    if (PQcancel(cancel, error, sizeof error) == 0) ADD_FAILURE() << "cancel: " << error;
    PQfreeCancel(cancel);
  }
}

// ---- guards: every server running, unpaused, with default settings at test end -----------

/// PostgreSQL and PgBouncer running and not paused (start() is a no-op when running and
/// resumes a stopped process group).
void ensure_servers_running() {
  auto& servers = Servers::instance();
  servers.postgres().start();
  servers.pgbouncer().start();
}

// ---- asynchronous helpers ------------------------------------------------------------------

/// Waits until the pool has `size` open connections.
asio::awaitable<bool> pool_full(const PostgresClient& client, std::size_t size,
                                Clock::duration timeout) {
  co_return co_await eventually([&] { return client.stats().connections == size; }, timeout);
}

/// The library error `op` fails with, or nullopt when it succeeds. Any other exception
/// fails the test and is returned as nullopt.
template <class T>
asio::awaitable<std::optional<ts::Error>> error_of(asio::awaitable<T> op) {
  try {
    co_await std::move(op);
  } catch (const ts::Error& e) {
    co_return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
  }
  co_return std::nullopt;
}

std::string sqlstate(const std::optional<ts::Error>& e) {
  return e && e->server() ? e->server()->code : std::string();
}

std::string describe(const std::optional<ts::Error>& e) {
  if (!e) return "no error";
  return std::string(ts::to_string(e->kind())) + " / " + e->code().message() + " / " + e->what();
}

/// A config for one test: small timeouts, its own application_name, a full pool of two.
ts::pg::PostgresConfig config_for(std::string dsn, std::string app) {
  ts::pg::PostgresConfig c;
  c.dsn = std::move(dsn);
  c.application_name = std::move(app);
  c.min_size = 2;
  c.max_size = 2;
  c.statement_timeout = 10s;
  c.network_timeout_margin = 1s;
  c.connect_timeout = 2s;
  c.startup_timeout = 10s;
  c.acquire_timeout = 2s;
  c.close_timeout = 1s;
  c.reconnect_backoff = {50ms, 1000ms, 2.0};
  return c;
}

// ---- F09 query cancelled by the caller mid-flight ---------------------------------------------

// A caller cancels (terminal) a long query: it returns at once with `cancelled`; many other
// callers then each get their own result, never the cancelled query's (-1); and the cancelled
// statement must not keep running on the server (FAILURE_MODES F09: a server-side cancel is
// sent or the connection discarded), else every statement pipelined behind it waits for it.
TEST(PgFault, F09_cancelled_query_no_stale_result) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f09");
  const std::string app = "ts_f09_cancel";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.postgres_dsn(db), app));
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        asio::cancellation_signal signal;
        bool finished = false;
        std::optional<ts::Error> cancel_error;
        bool got_result = false;
        Clock::time_point finished_at{};
        asio::co_spawn(
            io, client.query("SELECT -1::int4 FROM pg_sleep(2)"),
            asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, ts::pg::Result) {
              finished = true;
              finished_at = Clock::now();
              got_result = !e;
              try {
                if (e) std::rethrow_exception(e);
              } catch (const ts::Error& error) {
                cancel_error = error;
              } catch (...) {
                ADD_FAILURE() << "unexpected exception type";
              }
            }));
        // The statement runs on the server before the caller gives up.
        EXPECT_TRUE(co_await eventually([&] { return backends(app, "pg_sleep(2)") == 1; }, 3s));
        co_await pause_for(100ms);
        const auto cancelled_at = Clock::now();
        signal.emit(asio::cancellation_type::terminal);
        EXPECT_TRUE(co_await eventually([&] { return finished; }, 1s, 1ms));
        EXPECT_FALSE(got_result);
        EXPECT_LT(finished_at - cancelled_at, 500ms);
        EXPECT_TRUE(cancel_error.has_value());
        if (cancel_error) {
          EXPECT_EQ(cancel_error->kind(), ts::ErrorKind::cancelled) << describe(cancel_error);
        }
        EXPECT_EQ(client.stats().cancellations, 1u);

        // Many other callers, each checking its own value, right after the cancellation.
        constexpr int kCallers = 100;
        constexpr int kPerCaller = 5;
        int done = 0, wrong = 0, errors = 0;
        Clock::duration slowest{};
        for (int c = 0; c < kCallers; ++c) {
          asio::co_spawn(
              io,
              [&, c]() -> asio::awaitable<void> {
                for (int i = 0; i < kPerCaller; ++i) {
                  const std::int32_t value = c * 100 + i;
                  const auto start = Clock::now();
                  const auto got =
                      co_await client.query_value<std::int32_t>("SELECT $1::int4", value);
                  slowest = std::max(slowest, Clock::now() - start);
                  if (got != value) ++wrong;
                }
              },
              [&](std::exception_ptr e) {
                if (e) ++errors;
                ++done;
              });
        }
        // FAILURE_MODES F09: the cancelled statement is cancelled on the server (or its
        // connection closed), well before its 2 s would be up.
        const bool stopped_on_server =
            co_await eventually([&] { return backends(app, "pg_sleep(2)") == 0; }, 1s, 20ms);
        EXPECT_TRUE(stopped_on_server)
            << "the cancelled statement still runs on the server "
            << elapsed_ms(cancelled_at).count() << " ms after the caller cancelled it";
        EXPECT_TRUE(co_await eventually([&] { return done == kCallers; }, 5s));
        EXPECT_EQ(wrong, 0);
        EXPECT_EQ(errors, 0);
        // Nobody waits for the abandoned statement (it would take up to 2 s).
        EXPECT_LT(slowest, 1s)
            << "slowest caller after the cancellation: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms";
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 5"), 5);
        co_await client.close();
      },
      30s);
}

// A client-side timeout (QueryOptions::timeout + network margin): the caller gets
// request_timeout within bound, the connection is discarded and replaced, and the statement
// is cancelled on the server (no backend still runs it), later queries get their own results.
TEST(PgFault, F09_timed_out_query_cancelled_on_server) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f09");
  const std::string app = "ts_f09_timeout";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.postgres_dsn(db), app);
        config.network_timeout_margin = 100ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        const auto before = client.stats();

        const auto start = Clock::now();
        const auto error = co_await error_of(
            client.query(ts::pg::QueryOptions{200ms}, "SELECT -1::int4 FROM pg_sleep(5)"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value());
        if (error) {
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::request_timeout))
              << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::outcome_unknown) << describe(error);
        }
        EXPECT_GE(took, 250ms);
        EXPECT_LT(took, 1000ms);
        const auto after = client.stats();
        EXPECT_EQ(after.timeouts, before.timeouts + 1);
        EXPECT_EQ(after.failures, before.failures + 1);
        EXPECT_GE(after.discarded, before.discarded + 1);

        // The server-side statement was cancelled: no backend of ours runs it any more.
        EXPECT_TRUE(
            co_await eventually([&] { return backends(app, "pg_sleep(5)") == 0; }, 2s, 20ms))
            << "pg_sleep(5) still running on the server";
        // The pool replaced the discarded connection; the server sees exactly the pool.
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        EXPECT_TRUE(co_await eventually([&] { return backends(app) == 2; }, 3s, 20ms))
            << "backends of the client: " << backends(app);

        int wrong = 0;
        for (std::int32_t v = 0; v < 50; ++v) {
          if (co_await client.query_value<std::int32_t>("SELECT $1::int4", v) != v) ++wrong;
        }
        EXPECT_EQ(wrong, 0);
        co_await client.close();
      },
      30s);
}

// ---- F10 shutdown while a connection is checked out ---------------------------------------

struct F10Outcome {
  bool done = false;
  std::optional<ts::Error> error;
  bool other_exception = false;
};

/// Starts a transaction whose body runs `body`, waits until the connection is checked out,
/// closes the client (close_timeout 300 ms) and checks that close() returns within ~1 s, the
/// transaction caller gets a cancellation error, and nothing is left (descriptors, server
/// connections).
void run_f10(const std::string& app,
             std::function<asio::awaitable<void>(ts::pg::Transaction&)> body,
             const std::string& running_like) {
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f10");
  const std::string dsn = servers.postgres_dsn(db);
  // Nothing of an earlier run is left; the descriptor baseline is taken before the client.
  EXPECT_TRUE(wait_backends(app, 0, 5s));
  const int fds_before = open_descriptors();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(dsn, app);
        config.close_timeout = 300ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        auto outcome = std::make_shared<F10Outcome>();
        asio::co_spawn(io, client.transaction(body), [outcome](std::exception_ptr e) {
          outcome->done = true;
          try {
            if (e) std::rethrow_exception(e);
          } catch (const ts::Error& error) {
            outcome->error = error;
          } catch (...) {
            outcome->other_exception = true;
          }
        });
        EXPECT_TRUE(co_await eventually([&] { return client.stats().exclusive == 1; }, 3s));
        if (!running_like.empty()) {
          EXPECT_TRUE(
              co_await eventually([&] { return backends(app, running_like) == 1; }, 3s, 20ms));
        }
        co_await pause_for(100ms);

        const auto start = Clock::now();
        co_await client.close();
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 1000ms) << "close() took " << took.count() << " ms (close_timeout 300)";
        EXPECT_TRUE(co_await eventually([&] { return outcome->done; }, 5s));
        EXPECT_FALSE(outcome->other_exception);
        EXPECT_TRUE(outcome->error.has_value()) << "the transaction did not fail";
        if (outcome->error) {
          EXPECT_EQ(outcome->error->kind(), ts::ErrorKind::cancelled) << describe(outcome->error);
          const auto code = outcome->error->code();
          EXPECT_TRUE(code == ts::make_error_code(ts::errc::client_closed) ||
                      code == ts::make_error_code(ts::errc::cancelled))
              << describe(outcome->error);
        }
        EXPECT_EQ(client.stats().connections, 0u);
        EXPECT_EQ(client.stats().exclusive, 0u);
      },
      30s);
  EXPECT_EQ(open_descriptors(), fds_before);
  // No server connection is left, and the statement in flight was cancelled on the server
  // (a backend in pg_sleep would outlive its closed socket until the sleep ends).
  EXPECT_TRUE(wait_backends(app, 0, 2s)) << "backends left: " << backends(app);
}

TEST(PgFault, F10_close_cancels_checked_out_statement) {
  TS_SKIP_IF_EXTERNAL();
  run_f10(
      "ts_f10_statement",
      [](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT pg_sleep(10)");
      },
      "pg_sleep(10)");
}

// The body awaits something that is not the client's (an Asio timer of 3 s): close() must
// still return within its timeout, the body's caller failing with a cancellation error.
TEST(PgFault, F10_close_cancels_transaction_body_awaiting_timer) {
  TS_SKIP_IF_EXTERNAL();
  run_f10(
      "ts_f10_timer",
      [](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT 1");
        co_await pause_for(3s);
        co_await tx.execute("SELECT 2");
      },
      "");
}

// ---- F11 PgBouncer transaction mode: repeated identical statements ------------------------

TEST(PgFault, F11_pgbouncer_repeated_identical_statements) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f11");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = servers.pgbouncer_dsn(db);
        PostgresClient a(io.get_executor(), config_for(dsn, "ts_f11_a"));
        PostgresClient b(io.get_executor(), config_for(dsn, "ts_f11_b"));
        co_await a.start();
        co_await b.start();

        constexpr int kCallersPerClient = 50;
        constexpr int kRounds = 20;
        int done = 0, wrong = 0, transactions = 0;
        std::vector<std::string> errors;
        const auto start = Clock::now();
        for (PostgresClient* client : {&a, &b}) {
          for (int c = 0; c < kCallersPerClient; ++c) {
            asio::co_spawn(
                io,
                [&, client, c]() -> asio::awaitable<void> {
                  for (int i = 0; i < kRounds; ++i) {
                    const std::int64_t v = c * 1000 + i;
                    try {
                      // The same three statement texts from every caller of both clients.
                      if (co_await client->query_value<std::int64_t>("SELECT $1::int8 * 2", v) !=
                          v * 2) {
                        ++wrong;
                      }
                      const std::string text = "v" + std::to_string(v);
                      if (co_await client->query_value<std::string>("SELECT $1::text", text) !=
                          text) {
                        ++wrong;
                      }
                      auto row = co_await client->query_one("SELECT $1::int8 + 1, $2::text || 'x'",
                                                            v, text);
                      if (!row || row->get<std::int64_t>(0) != v + 1 ||
                          row->get<std::string>(1) != text + "x") {
                        ++wrong;
                      }
                      if (i % 5 == 0) {
                        const auto in_tx = co_await client->transaction(
                            [&](ts::pg::Transaction& tx) -> asio::awaitable<std::int64_t> {
                              co_return co_await tx.query_value<std::int64_t>("SELECT $1::int8 * 2",
                                                                              v);
                            });
                        if (in_tx != v * 2) ++wrong;
                        ++transactions;
                      }
                    } catch (const ts::Error& e) {
                      errors.push_back(describe(e));
                    }
                  }
                },
                [&](std::exception_ptr e) {
                  if (e) errors.emplace_back("caller failed");
                  ++done;
                });
          }
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 2 * kCallersPerClient; }, 20s));
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 15s);
        EXPECT_EQ(wrong, 0);
        EXPECT_TRUE(errors.empty()) << errors.size() << " errors, first: " << errors.front();
        EXPECT_EQ(transactions, 2 * kCallersPerClient * (kRounds / 5));
        for (PostgresClient* client : {&a, &b}) {
          const auto s = client->stats();
          EXPECT_EQ(s.failures, 0u);
          EXPECT_EQ(s.discarded, 0u);
          EXPECT_EQ(s.queries, static_cast<std::uint64_t>(kCallersPerClient * kRounds * 3 +
                                                          kCallersPerClient * (kRounds / 5)));
          EXPECT_TRUE(co_await pool_full(*client, 2, 5s));
        }
        co_await a.close();
        co_await b.close();
      },
      40s);
}

// ---- F12 session state under transaction pooling -------------------------------------------

// Session-level SET is refused before anything is sent (a proxy in front of PgBouncer counts
// the bytes; that client `a` goes through it is asserted from the proxy's counters); SET LOCAL
// inside transaction() works and does not leak to other clients. The leak probe is shown able
// to fire: a session-level SET sent on purpose through PgBouncer by a plain libpq connection
// (bypassing the client's refusal) must be seen by it.
TEST(PgFault, F12_session_set_refused_set_local_does_not_leak) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f12");
  // The positive control leaves a session-level SET on a server connection of this database:
  // drop them at the end (KILL closes them, RESUME lets clients in again).
  ScopeExit cleanup([&] {
    ensure_servers_running();
    for (const std::string& command : {"KILL " + db, "RESUME " + db}) {
      const auto error = pgbouncer_admin(command);
      if (!error.empty()) ADD_FAILURE() << command << ": " << error;
    }
  });
  const auto default_timeout = scalar(servers.postgres_dsn(db), "SHOW statement_timeout");
  const auto default_path = scalar(servers.postgres_dsn(db), "SHOW search_path");
  ASSERT_TRUE(default_timeout && default_path);
  auto& bouncer = servers.pgbouncer();
  ts::testing::FaultProxy proxy(bouncer.host(), bouncer.port());
  proxy.start();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        // libpq: the last `port` wins.
        PostgresClient a(io.get_executor(), config_for(servers.pgbouncer_dsn(db) +
                                                           " port=" + std::to_string(proxy.port()),
                                                       "ts_f12_a"));
        PostgresClient b(io.get_executor(), config_for(servers.pgbouncer_dsn(db), "ts_f12_b"));
        co_await a.start();
        co_await b.start();
        EXPECT_TRUE(co_await pool_full(a, 2, 5s));
        // `a` goes through the proxy: its two connections were accepted there and their
        // startup crossed it (a client connected directly would leave both at zero).
        EXPECT_TRUE(co_await eventually(
            [&] { return proxy.connections_accepted() == 2 && proxy.active_connections() == 2; },
            2s))
            << "accepted " << proxy.connections_accepted() << ", active "
            << proxy.active_connections() << ": client a does not go through the proxy";
        EXPECT_EQ(co_await a.query_value<std::int32_t>("SELECT 1"), 1);
        co_await pause_for(50ms);  // the proxy's counters settle

        const auto stats_before = a.stats();
        const auto bytes_before = proxy.bytes_client_to_server();
        const auto bytes_back_before = proxy.bytes_server_to_client();
        EXPECT_GT(bytes_before, 0u) << "nothing of client a crossed the proxy";
        EXPECT_GT(bytes_back_before, 0u) << "nothing came back to client a through the proxy";
        for (const char* sql :
             {"SET search_path = x", "set search_path to x", "  SET\tstatement_timeout = 4321",
              "SET SESSION statement_timeout = 1", "SET\nwork_mem = '1MB'"}) {
          const auto error = co_await error_of(a.execute(sql));
          EXPECT_TRUE(error.has_value()) << sql << " was accepted";
          if (!error) continue;
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::invalid_argument))
              << sql << ": " << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::permanent) << sql;
          EXPECT_EQ(error->request_state(), ts::RequestState::not_sent) << sql;
        }
        co_await pause_for(100ms);
        EXPECT_EQ(proxy.bytes_client_to_server(), bytes_before) << "a refused SET was sent";
        EXPECT_EQ(a.stats().queries, stats_before.queries);
        EXPECT_EQ(a.stats().failures, stats_before.failures);
        EXPECT_EQ(a.stats().breaker, ts::core::CircuitState::closed);

        // SET LOCAL inside a transaction works for that transaction...
        const auto inside = co_await a.transaction(
            [&](ts::pg::Transaction& tx) -> asio::awaitable<std::pair<std::string, std::string>> {
              co_await tx.execute("SET LOCAL statement_timeout = 4321");
              co_await tx.execute("SET LOCAL search_path = f12_private, public");
              auto timeout = co_await tx.query_value<std::string>("SHOW statement_timeout");
              auto path =
                  co_await tx.query_value<std::string>("SELECT current_setting('search_path')");
              co_return std::make_pair(std::move(timeout), std::move(path));
            });
        EXPECT_EQ(inside.first, "4321ms");
        EXPECT_EQ(inside.second, "f12_private, public");
        // The same counter that showed the refused SETs were not sent moves for a's traffic.
        EXPECT_GT(proxy.bytes_client_to_server(), bytes_before)
            << "client a's transaction did not cross the proxy";
        EXPECT_EQ(proxy.connections_accepted(), 2u);

        // ... and nothing of it is left on any server connection: the other client (and this
        // one) see the defaults, from many concurrent callers spread over PgBouncer's pool.
        // The probe returns how many of its 200 reads saw anything but the defaults.
        auto probe = [&]() -> asio::awaitable<int> {
          int done = 0, leaked = 0, failed = 0;
          for (PostgresClient* client : {&a, &b}) {
            for (int c = 0; c < 20; ++c) {
              asio::co_spawn(
                  io,
                  [&, client]() -> asio::awaitable<void> {
                    for (int i = 0; i < 5; ++i) {
                      auto row = co_await client->query_one(
                          "SELECT current_setting('statement_timeout'), "
                          "current_setting('search_path')");
                      if (!row || row->get<std::string>(0) != *default_timeout ||
                          row->get<std::string>(1) != *default_path) {
                        ++leaked;
                      }
                    }
                  },
                  [&](std::exception_ptr e) {
                    if (e) ++failed;
                    ++done;
                  });
            }
          }
          EXPECT_TRUE(co_await eventually([&] { return done == 40; }, 10s));
          EXPECT_EQ(failed, 0);
          co_return leaked;
        };
        EXPECT_EQ(co_await probe(), 0) << "SET LOCAL leaked to a server connection";

        // Positive control: the probe can see a leak. A plain libpq connection through
        // PgBouncer (not our client: it would refuse) leaves a session-level SET on the server
        // connection it used; PgBouncer hands that connection to the probe's callers next.
        {
          PgConn raw(servers.pgbouncer_dsn(db));
          EXPECT_TRUE(raw.ok()) << raw.error();
          EXPECT_TRUE(raw.exec("SET statement_timeout = 4321").has_value()) << raw.last_error();
        }
        const int leaked_on_purpose = co_await probe();
        EXPECT_GT(leaked_on_purpose, 0)
            << "the probe did not see a session-level SET left on a PgBouncer server connection";
        std::printf("[ F12 ] positive control: %d of 200 reads saw the leaked SET\n",
                    leaked_on_purpose);
        co_await a.close();
        co_await b.close();
      },
      30s);
  proxy.stop();
}

// Session-level SET hidden behind a leading SQL comment (query tags, ORMs) must be refused
// just the same: sent to PgBouncer it would stay on a shared server connection.
TEST(PgFault, F12_session_set_behind_comment_refused) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f12c");
  // Whatever this test leaks stays on this database's server connections: drop them at the
  // end (KILL closes them, RESUME lets clients in again).
  ScopeExit cleanup([&] {
    ensure_servers_running();
    for (const std::string& command : {"KILL " + db, "RESUME " + db}) {
      const auto error = pgbouncer_admin(command);
      if (!error.empty()) ADD_FAILURE() << command << ": " << error;
    }
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.pgbouncer_dsn(db), "ts_f12c"));
        co_await client.start();
        for (const char* sql : {"-- tag: job=42\nSET statement_timeout = 4321",
                                "/* tag */ SET statement_timeout = 4321"}) {
          const auto error = co_await error_of(client.execute(sql));
          EXPECT_TRUE(error.has_value()) << "session-level SET accepted: " << sql;
          if (!error) continue;
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::invalid_argument))
              << describe(error);
          EXPECT_EQ(error->request_state(), ts::RequestState::not_sent);
        }
        co_await client.close();
      },
      20s);
}

// ---- F13 PgBouncer query_wait_timeout / pool saturation -----------------------------------

TEST(PgFault, F13_pgbouncer_query_wait_timeout_is_transient) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f13");
  const auto original = pgbouncer_setting("query_wait_timeout");
  ASSERT_TRUE(original.has_value()) << "SHOW CONFIG has no query_wait_timeout";
  const auto pool_size = pgbouncer_setting("default_pool_size");
  ASSERT_TRUE(pool_size.has_value());
  const int sleepers_needed = std::stoi(*pool_size);
  std::vector<std::unique_ptr<PgConn>> sleepers;
  ScopeExit restore([&] {
    cancel_all(sleepers);  // normally done already
    sleepers.clear();
    ensure_servers_running();
    const auto error = pgbouncer_admin("SET query_wait_timeout = " + *original);
    if (!error.empty()) ADD_FAILURE() << "cannot restore query_wait_timeout: " << error;
    EXPECT_EQ(pgbouncer_setting("query_wait_timeout"), original);
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = servers.pgbouncer_dsn(db);
        PostgresClient client(io.get_executor(), config_for(dsn, "ts_f13"));
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);

        const auto set_error = pgbouncer_admin("SET query_wait_timeout = 1");
        EXPECT_EQ(set_error, "");
        EXPECT_EQ(pgbouncer_setting("query_wait_timeout"), std::optional<std::string>("1"));

        // Saturate the database's pool: every server connection busy until cancelled (60 s).
        for (int i = 0; i < sleepers_needed; ++i) {
          auto conn = std::make_unique<PgConn>(dsn);
          EXPECT_TRUE(conn->ok()) << conn->error();
          if (!conn->ok()) co_return;
          EXPECT_EQ(PQsendQuery(conn->get(), "SELECT pg_sleep(60)"), 1);
          sleepers.push_back(std::move(conn));
        }
        const bool saturated = co_await eventually(
            [&] { return pool_value(pgbouncer_pool(db), "sv_active") >= sleepers_needed; }, 2s,
            20ms);
        EXPECT_TRUE(saturated) << "sv_active = " << pool_value(pgbouncer_pool(db), "sv_active");
        if (!saturated) co_return;

        const auto before = client.stats();
        const auto start = Clock::now();
        const auto error = co_await error_of(client.query("SELECT 1"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value()) << "the query did not wait for a server connection";
        if (error) {
          EXPECT_EQ(error->kind(), ts::ErrorKind::transient_unavailable) << describe(error);
          EXPECT_EQ(sqlstate(error), "08P01") << describe(error);
          EXPECT_NE(std::string(error->what()).find("query_wait_timeout"), std::string::npos)
              << describe(error);
        }
        EXPECT_GE(took, 800ms);
        EXPECT_LT(took, 4s);
        // Order, not wall time: the pool was still saturated when the error came back (every
        // sleeper still busy), so the error is PgBouncer's wait timeout, not an accident of
        // the sleepers ending.
        int busy = 0;
        for (auto& s : sleepers) {
          PQconsumeInput(s->get());
          if (PQisBusy(s->get()) != 0) ++busy;
        }
        EXPECT_EQ(busy, sleepers_needed) << "sleepers ended before the error came back";
        const auto after = client.stats();
        EXPECT_EQ(after.failures, before.failures + 1);
        EXPECT_EQ(after.timeouts, before.timeouts);  // PgBouncer's timeout, not ours

        // The sleepers are cancelled; then queries succeed again and the pool is back to full size.
        cancel_all(sleepers);
        const bool sleepers_done = co_await eventually(
            [&] {
              for (auto& s : sleepers) {
                PQconsumeInput(s->get());
                if (PQisBusy(s->get()) != 0) return false;
              }
              return true;
            },
            5s, 20ms);
        EXPECT_TRUE(sleepers_done);
        sleepers.clear();
        int attempts = 0;
        const auto value = co_await client.execute_resiliently(
            [&](PostgresClient& c) {
              ++attempts;
              return c.query_value<std::int32_t>("SELECT 2");
            },
            ts::core::Idempotent::yes);
        EXPECT_EQ(value, 2);
        EXPECT_GE(attempts, 1);
        EXPECT_LE(attempts, 2);
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        co_await client.close();
      },
      30s);
}

// ---- F14 PgBouncer PAUSE/RESUME and restart -----------------------------------------------

TEST(PgFault, F14_pgbouncer_pause_resume_deadline_holds) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  bool paused = false;
  ScopeExit restore([&] {
    ensure_servers_running();
    if (paused) {
      const auto error = pgbouncer_admin("RESUME " + db);
      if (!error.empty()) ADD_FAILURE() << "RESUME " << db << ": " << error;
    }
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.pgbouncer_dsn(db), "ts_f14_pause");
        config.network_timeout_margin = 200ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        const auto pause_error = pgbouncer_admin("PAUSE " + db);
        EXPECT_EQ(pause_error, "");
        paused = pause_error.empty();
        const auto before = client.stats();
        const auto start = Clock::now();
        const auto error = co_await error_of(client.query(ts::pg::QueryOptions{300ms}, "SELECT 1"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value()) << "a query went through a paused PgBouncer";
        if (error) {
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::request_timeout))
              << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::outcome_unknown);
        }
        EXPECT_GE(took, 450ms);
        EXPECT_LT(took, 1500ms) << "300 ms + 200 ms margin";
        EXPECT_EQ(client.stats().timeouts, before.timeouts + 1);

        const auto resume_error = pgbouncer_admin("RESUME " + db);
        EXPECT_EQ(resume_error, "");
        paused = !resume_error.empty();
        const auto resumed = Clock::now();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 2"), 2);
        EXPECT_LT(elapsed_ms(resumed), 2000ms);
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        co_await client.close();
      },
      30s);
}

TEST(PgFault, F14_pgbouncer_restart_reconnects_with_backoff) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  ScopeExit restore([] { ensure_servers_running(); });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.pgbouncer_dsn(db), "ts_f14_restart");
        config.acquire_timeout = 1s;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        ts::core::RetryPolicy policy;
        policy.max_attempts = 10;
        policy.total_deadline = 10s;
        policy.backoff = {50ms, 500ms, 2.0};

        // Down for a while (part 1, a restart met by a running client, is
        // F14_pgbouncer_restart_met_by_the_running_client): the caller retries, the pool
        // reconnects with backoff, and the work succeeds soon after PgBouncer is back.
        auto start = Clock::now();
        servers.pgbouncer().stop();
        const auto failures_before = client.stats().connect_failures;
        bool done = false;
        std::optional<std::int32_t> got;
        int down_attempts = 0;
        asio::co_spawn(io,
                       client.execute_resiliently(
                           [&](PostgresClient& c) {
                             ++down_attempts;
                             return c.query_value<std::int32_t>("SELECT 8");
                           },
                           ts::core::Idempotent::yes, policy),
                       [&](std::exception_ptr e, std::int32_t v) {
                         done = true;
                         if (!e) got = v;
                       });
        co_await pause_for(700ms);
        EXPECT_FALSE(done);
        servers.pgbouncer().start();
        start = Clock::now();
        EXPECT_TRUE(co_await eventually([&] { return done; }, 5s));
        EXPECT_EQ(got, std::optional<std::int32_t>(8));
        EXPECT_LT(elapsed_ms(start), 3000ms);
        const auto connect_failures = client.stats().connect_failures - failures_before;
        EXPECT_GE(connect_failures, 1u);
        EXPECT_LT(connect_failures, 30u) << "reconnect storm";
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        std::printf("[ F14 ] outage: %d attempt(s), %llu failed reconnects\n", down_attempts,
                    static_cast<unsigned long long>(connect_failures));
        co_await client.close();
      },
      40s);
}

// PgBouncer restarted (stop, then start once the client saw a reconnect refused) while the
// client runs on a loop of its own and keeps querying: the loop is shown to run during the
// restart (a 2 ms ticker ticks at least once), the client sees the outage (both connections
// discarded, at least one reconnect refused while PgBouncer is down), no query hangs (each ends
// within 3 s, a failure is transient), and it recovers with backoff: the pool is full again,
// reconnect failures stay few (no storm), and queries succeed within 3 s of PgBouncer being back.
TEST(PgFault, F14_pgbouncer_restart_met_by_the_running_client) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  const std::string dsn = servers.pgbouncer_dsn(db);  // starts PgBouncer from the main thread
  ScopeExit restore([] { ensure_servers_running(); });
  std::atomic<bool> ready{false}, restarting{false}, restarted{false}, saw_refusal{false};
  std::atomic<Clock::rep> back_at{0};
  ts::testing::fault::BackgroundLoop loop(40s, [&](asio::io_context& io) -> asio::awaitable<void> {
    auto config = config_for(dsn, "ts_f14_running");
    config.acquire_timeout = 1s;
    PostgresClient client(io.get_executor(), config);
    co_await ts::testing::fault::closing(client, [&]() -> asio::awaitable<void> {
      co_await client.start();
      EXPECT_TRUE(co_await pool_full(client, 2, 5s));
      const auto before = client.stats();
      // The ticker: counts its ticks while the main thread is inside restart().
      int ticks_during = 0;
      bool stop_ticking = false;
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            while (!stop_ticking) {
              co_await pause_for(2ms);
              if (restarting && !restarted) {
                ++ticks_during;
                if (client.stats().connect_failures > before.connect_failures) saw_refusal = true;
              }
            }
          },
          asio::detached);
      ready = true;
      // Query until PgBouncer has been back for 10 successes.
      int ok = 0, failed = 0, ok_after = 0, slow = 0;
      std::vector<std::string> failures;
      std::optional<Clock::time_point> first_ok_after;
      const auto deadline = Clock::now() + 30s;
      while (ok_after < 10 && Clock::now() < deadline) {
        const bool was_back = restarted.load();
        const auto o = co_await ts::testing::outcome(client.query_value<std::int32_t>("SELECT 7"));
        if (o.elapsed > 3s) ++slow;
        if (!o.failed) {
          ++ok;
          if (was_back) {
            ++ok_after;
            if (!first_ok_after) first_ok_after = Clock::now();
          }
        } else {
          ++failed;
          failures.push_back(describe(o));
          EXPECT_NE(o.kind, ts::ErrorKind::permanent) << describe(o);
          co_await pause_for(20ms);  // a caller's pause after a failure
        }
      }
      stop_ticking = true;
      const auto after = client.stats();
      EXPECT_GE(ticks_during, 1) << "the client's loop did not run during the restart";
      EXPECT_GE(after.discarded, before.discarded + 2)
          << "the client did not see its connections die";
      EXPECT_GE(after.connect_failures, before.connect_failures + 1)
          << "the client never tried to reconnect while PgBouncer was down";
      EXPECT_LT(after.connect_failures - before.connect_failures, 30u) << "reconnect storm";
      EXPECT_EQ(slow, 0) << "a query hung for more than 3 s";
      EXPECT_EQ(ok_after, 10) << failed
                              << " failures, last: " << (failures.empty() ? "" : failures.back());
      const Clock::time_point back{Clock::duration{back_at.load()}};
      EXPECT_TRUE(first_ok_after && *first_ok_after - back < 3s)
          << "no success within 3 s of PgBouncer being back";
      EXPECT_TRUE(co_await pool_full(client, 2, 5s));
      std::printf(
          "[ F14 ] restart met by the running client: %d ticks during it, %d ok, %d failed, "
          "%llu discarded, %llu failed reconnects%s%s\n",
          ticks_during, ok, failed,
          static_cast<unsigned long long>(after.discarded - before.discarded),
          static_cast<unsigned long long>(after.connect_failures - before.connect_failures),
          failures.empty() ? "" : "; first failure: ",
          failures.empty() ? "" : failures.front().c_str());
      co_await pause_for(20ms);  // the ticker sees stop_ticking
    }());
  });
  EXPECT_TRUE(ts::testing::poll_until([&] { return ready || loop.done(); }, 20s));
  if (ready) {
    restarting = true;
    const auto start = Clock::now();
    // stop() then start(), PgBouncer kept down until the client saw a reconnect refused (a
    // condition, so that a loaded machine cannot hide the outage from the client).
    servers.pgbouncer().stop();
    EXPECT_TRUE(ts::testing::poll_until([&] { return saw_refusal || loop.done(); }, 10s))
        << "the client saw no refused reconnect within 10 s of PgBouncer going down";
    servers.pgbouncer().start();
    back_at = Clock::now().time_since_epoch().count();
    restarted = true;
    std::printf("[ F14 ] PgBouncer restart took %lld ms\n",
                static_cast<long long>(elapsed_ms(start).count()));
  }
  loop.join();
}

// ---- F15 idle-session timeout (57P05) -------------------------------------------------------

TEST(PgFault, F15_idle_session_timeout_connections_replaced) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f15");
  const std::string admin_dsn = servers.postgres_dsn("postgres");
  const std::string server_log = servers.postgres().directory() + "/server.log";
  ASSERT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " SET idle_session_timeout = '1s'"), "");
  ScopeExit restore([&] {
    EXPECT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " RESET idle_session_timeout"), "");
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        // One connection: after a kill, the pool's only connection is the fresh replacement.
        // (With two, their idle clocks drift apart as queries touch one of them, and a query
        // right after one kill can land on the other just as its own second runs out: a race
        // the test would lose now and then, seen under ASan.)
        auto config = config_for(servers.postgres_dsn(db), "ts_f15");
        config.min_size = 1;
        config.max_size = 1;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::string>("SHOW idle_session_timeout"), "1s");

        // Idle past the timeout (1 s): the server ends the session with 57P05, and the client
        // notices. Waited for, not slept: the backends the pool had are gone from
        // pg_stat_activity and the client counted the discards. At the end, the server's log
        // must name the idle-session timeout (57P05) as the cause for each of those backends
        // (checked last, so that nothing delays the queries after a kill: the pool's fresh
        // connections start idling at the kill, and a query must come well within 1 s).
        std::vector<std::string> killed;
        auto idle_kill = [&](const std::vector<std::string>& pids,
                             std::uint64_t discarded_before) -> asio::awaitable<void> {
          const bool gone = co_await eventually(
              [&] {
                return client.stats().discarded >= discarded_before + pids.size() &&
                       std::none_of(pids.begin(), pids.end(),
                                    [&](const std::string& pid) { return backend_alive(pid); });
              },
              5s, 10ms);
          EXPECT_TRUE(gone) << "the client noticed no idle-session kill within 5 s: discarded "
                            << client.stats().discarded - discarded_before << " of " << pids.size();
          killed.insert(killed.end(), pids.begin(), pids.end());
        };
        auto pids = backend_pids("ts_f15");
        EXPECT_EQ(pids.size(), 1u);
        co_await idle_kill(pids, 0);

        // The first plain query after the idle period. Decision: it MAY fail. The server
        // keeps ending any session idle for 1 s and the pool keeps replacing them, so a
        // query can always meet a connection whose 1 s ran out the instant it was sent;
        // no client can rule that out without a round trip per query. It then fails as the
        // server said: 57P05, transient_not_sent (the query never ran), never as anything a
        // caller could mistake for a lost write, even when the client read the FATAL before
        // it sent the query and found the connection closed only afterwards (made
        // deterministic in F15_fatal_read_while_idle_reported_as_57P05). A plain query is
        // not retried; execute_resiliently() (below) hides it for idempotent work.
        const auto first = co_await error_of(client.query_value<std::int32_t>("SELECT 1"));
        if (first) {
          EXPECT_EQ(sqlstate(first), "57P05") << describe(first);
          EXPECT_EQ(first->kind(), ts::ErrorKind::transient_not_sent) << describe(first);
          std::printf("[ F15 ] the first query raced an idle kill: %s\n", describe(first).c_str());
        }

        // Same again through execute_resiliently: it succeeds, normally at the first attempt;
        // a second one only when the first raced the server's next idle kill, as above.
        pids = backend_pids("ts_f15");
        EXPECT_GE(pids.size(), 1u);
        co_await idle_kill(pids, client.stats().discarded);
        int attempts = 0;
        const auto value = co_await client.execute_resiliently(
            [&](PostgresClient& c) {
              ++attempts;
              return c.query_value<std::int32_t>("SELECT 2");
            },
            ts::core::Idempotent::yes);
        EXPECT_EQ(value, 2);
        EXPECT_GE(attempts, 1);
        EXPECT_LE(attempts, 2);

        // And many callers at once after an idle period.
        pids = backend_pids("ts_f15");
        EXPECT_GE(pids.size(), 1u);
        co_await idle_kill(pids, client.stats().discarded);
        int done = 0, failed = 0;
        for (int c = 0; c < 20; ++c) {
          asio::co_spawn(
              io,
              [&, c]() -> asio::awaitable<void> {
                if (co_await client.query_value<std::int32_t>("SELECT $1::int4", c) != c) {
                  ++failed;
                }
              },
              [&](std::exception_ptr e) {
                if (e) ++failed;
                ++done;
              });
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 20; }, 5s));
        EXPECT_EQ(failed, 0);
        const auto s = client.stats();
        EXPECT_GE(s.discarded, 3u);
        EXPECT_GE(s.connects, 4u);
        EXPECT_EQ(s.breaker, ts::core::CircuitState::closed);
        EXPECT_TRUE(co_await pool_full(client, 1, 5s));
        for (const auto& pid : killed) {
          EXPECT_TRUE(
              co_await eventually([&] { return idle_timeout_logged(server_log, pid); }, 2s, 20ms))
              << "backend " << pid << " did not end by the idle-session timeout (57P05)";
        }
        std::printf("[ F15 ] discarded %llu, connects %llu, failures %llu\n",
                    static_cast<unsigned long long>(s.discarded),
                    static_cast<unsigned long long>(s.connects),
                    static_cast<unsigned long long>(s.failures));
        co_await client.close();
      },
      30s);
}

// The race F15's first query can lose, made deterministic: the server's FATAL (57P05) reaches
// the client while its connection is idle, the close that follows is held back by a proxy, the
// client sends a query on the connection, then the close arrives. The query never ran, and the
// client holds the server's word for why: it must fail as 57P05 (transient_not_sent), not as a
// connection lost after sending (outcome_unknown), which a caller would have to treat as a
// possibly-lost write.
TEST(PgFault, F15_fatal_read_while_idle_reported_as_57P05) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f15f");
  const std::string admin_dsn = servers.postgres_dsn("postgres");
  ASSERT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " SET idle_session_timeout = '1s'"), "");
  ts::testing::FaultProxy proxy("127.0.0.1", servers.postgres().port());
  proxy.start();
  ScopeExit restore([&] {
    proxy.clear_faults();
    EXPECT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " RESET idle_session_timeout"), "");
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = ts::testing::fault::pg_dsn_for_port(proxy.port(), db);
        // 1. The size of the server's FATAL: the bytes it sends through the proxy to an idle
        // session of a plain libpq connection when it ends it.
        std::uint64_t fatal_size = 0;
        {
          PgConn raw(dsn);
          EXPECT_TRUE(raw.ok()) << raw.error();
          const std::string raw_pid = std::to_string(PQbackendPID(raw.get()));
          co_await pause_for(100ms);  // the proxy counts after its write: let the count settle
          const auto s2c_before = proxy.bytes_server_to_client();
          EXPECT_TRUE(co_await eventually([&] { return !backend_alive(raw_pid); }, 5s, 10ms));
          co_await pause_for(100ms);
          fatal_size = proxy.bytes_server_to_client() - s2c_before;
        }
        EXPECT_GT(fatal_size, 20u);
        EXPECT_LT(fatal_size, 300u);
        auto config = config_for(dsn, "ts_f15f");
        config.min_size = 1;
        config.max_size = 1;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 2"), 2);
        co_await pause_for(100ms);
        // 2. The next FATAL is let through, the close that follows it held back.
        proxy.hold_after_bytes(fatal_size, ts::testing::Direction::server_to_client, true);
        const auto pid = backend_pids("ts_f15f");
        EXPECT_EQ(pid.size(), 1u);
        if (pid.size() != 1) co_return;
        EXPECT_TRUE(co_await eventually([&] { return !backend_alive(pid.front()); }, 5s, 10ms));
        co_await pause_for(100ms);  // the FATAL reaches the client
        EXPECT_EQ(client.stats().discarded, 0u) << "the client saw the close: nothing held back";
        const auto c2s_before = proxy.bytes_client_to_server();
        std::optional<ts::Error> error;
        bool done = false;
        asio::co_spawn(io, error_of(client.query_value<std::int32_t>("SELECT 3")),
                       [&](std::exception_ptr, std::optional<ts::Error> e) {
                         error = std::move(e);
                         done = true;
                       });
        EXPECT_TRUE(co_await eventually(
            [&] { return proxy.bytes_client_to_server() > c2s_before || done; }, 2s));
        proxy.release_hold();
        EXPECT_TRUE(co_await eventually([&] { return done; }, 10s));
        EXPECT_TRUE(error.has_value()) << "the query succeeded on a connection the server ended";
        if (error) {
          EXPECT_EQ(sqlstate(error), "57P05") << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::transient_not_sent) << describe(error);
        }
        std::printf("[ F15 ] FATAL %llu bytes; the query after it: %s\n",
                    static_cast<unsigned long long>(fatal_size), describe(error).c_str());
        co_await client.close();
      },
      30s);
  proxy.stop();
}

// ---- F16 permanent errors --------------------------------------------------------------------

TEST(PgFault, F16_permanent_errors_one_attempt_breaker_unaffected) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f16");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.postgres_dsn(db), "ts_f16"));
        co_await client.start();
        co_await client.execute("DROP TABLE IF EXISTS f16_unique");
        co_await client.execute("CREATE TABLE f16_unique (id int PRIMARY KEY)");
        co_await client.execute("INSERT INTO f16_unique VALUES (1)");

        int attempts = 0;
        auto syntax = [&](PostgresClient& c) {
          ++attempts;
          return c.execute("SELEC 1");
        };
        auto duplicate = [&](PostgresClient& c) {
          ++attempts;
          return c.execute("INSERT INTO f16_unique VALUES (1)");
        };
        const auto start = Clock::now();
        const auto e1 =
            co_await error_of(client.execute_resiliently(syntax, ts::core::Idempotent::yes));
        EXPECT_EQ(attempts, 1);
        EXPECT_TRUE(e1 && e1->kind() == ts::ErrorKind::permanent) << describe(e1);
        EXPECT_EQ(sqlstate(e1), "42601");
        attempts = 0;
        const auto e2 =
            co_await error_of(client.execute_resiliently(duplicate, ts::core::Idempotent::yes));
        EXPECT_EQ(attempts, 1);
        EXPECT_TRUE(e2 && e2->kind() == ts::ErrorKind::permanent) << describe(e2);
        EXPECT_EQ(sqlstate(e2), "23505");

        // A transaction failing with 23505, declared idempotent: its body runs once.
        int bodies = 0;
        ts::pg::TransactionOptions idempotent_tx;
        idempotent_tx.idempotent = ts::core::Idempotent::yes;
        const auto e3 = co_await error_of(client.transaction(
            [&](ts::pg::Transaction& tx) -> asio::awaitable<void> {
              ++bodies;
              co_await tx.execute("INSERT INTO f16_unique VALUES (1)");
            },
            idempotent_tx));
        EXPECT_EQ(bodies, 1);
        EXPECT_TRUE(e3 && e3->kind() == ts::ErrorKind::permanent) << describe(e3);
        EXPECT_EQ(sqlstate(e3), "23505");

        // 50 more: far past the breaker's min_calls (10) at 100 % "failure", yet it stays
        // closed, and nothing waited for a backoff.
        attempts = 0;
        int permanent = 0;
        for (int i = 0; i < 50; ++i) {
          const auto e = co_await error_of(client.execute_resiliently(
              i % 2 == 0 ? std::function<asio::awaitable<std::int64_t>(PostgresClient&)>(syntax)
                         : std::function<asio::awaitable<std::int64_t>(PostgresClient&)>(duplicate),
              ts::core::Idempotent::yes));
          if (e && e->kind() == ts::ErrorKind::permanent) ++permanent;
        }
        EXPECT_EQ(attempts, 50);
        EXPECT_EQ(permanent, 50);
        EXPECT_LT(elapsed_ms(start), 2000ms);
        const auto s = client.stats();
        EXPECT_EQ(s.breaker, ts::core::CircuitState::closed);
        EXPECT_EQ(s.discarded, 0u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT count(*) FROM f16_unique"), 1);
        EXPECT_TRUE(co_await pool_full(client, 2, 1s));
        co_await client.close();
      },
      30s);
}

TEST(PgFault, F16_bad_credentials_fail_start_at_once) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string bad_password = "f16-not-the-password";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config =
            config_for(servers.postgres_dsn_for(ts::testing::kSecureRole, bad_password, "postgres"),
                       "ts_f16_auth");
        config.startup_timeout = 10s;
        config.connect_timeout = 5s;
        PostgresClient bad(io.get_executor(), config);
        const auto start = Clock::now();
        const auto error = co_await error_of(bad.start());
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 1000ms) << "start() took " << took.count() << " ms";
        EXPECT_TRUE(error.has_value());
        if (error) {
          EXPECT_EQ(error->kind(), ts::ErrorKind::permanent) << describe(error);
          EXPECT_EQ(sqlstate(error), "28P01") << describe(error);
          EXPECT_EQ(std::string(error->what()).find(bad_password), std::string::npos)
              << "the password is in the message";
        }
        EXPECT_EQ(bad.stats().connect_failures, 1u) << "start() made more than one attempt";
        EXPECT_EQ(bad.stats().connects, 0u);
        EXPECT_EQ(bad.stats().connections, 0u);
        co_await bad.close();

        config.dsn = servers.postgres_dsn_for(ts::testing::kSecureRole,
                                              ts::testing::kSecurePassword, "postgres");
        PostgresClient good(io.get_executor(), config);
        co_await good.start();
        EXPECT_EQ(co_await good.query_value<std::string>("SELECT current_user::text"),
                  ts::testing::kSecureRole);
        EXPECT_EQ(good.stats().connect_failures, 0u);
        co_await good.close();
      },
      30s);
}

}  // namespace

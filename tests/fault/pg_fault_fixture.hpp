// The helpers of the PostgresClient fault tests F01-F16 (pg_*_faults_test.cpp, one binary,
// binary `pg_fault_test`): the test's own libpq connections to inject faults and to look from
// outside the client (pg_terminate_backend, pg_stat_activity, PgBouncer's console), the guards
// that leave every server running and serving, and the client configurations of the tests.
// What every PostgreSQL fault test uses (PgConn, DirectPg, DSNs, fast_retry) is in
// pg_fault_support.hpp.
//
// The tests of the binary share one set of servers and run one after the other: every test
// leaves every server running and serving when it ends, also when it fails (RAII guards resume
// or restart what the test disturbed). Isolation: one database (kDatabase or a test's own), one
// table per test, one application_name per client.
#pragma once

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
using ts::testing::open_descriptors;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::pause_for;
using ts::testing::ServerProcess;
using ts::testing::Servers;
using ts::testing::fault::DirectPg;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_retry;
using ts::testing::fault::PgConn;
using ts::testing::fault::ScopeExit;

namespace pg_fault_test {

inline constexpr const char* kDatabase = "pg_fault_tests";

inline Servers& servers() {
  return Servers::instance();
}

inline std::string dsn_for_port(std::uint16_t port, const std::string& database = kDatabase) {
  return ts::testing::fault::pg_dsn_for_port(port, database);
}

using ts::testing::fault::fast_retry;

/// Short timeouts everywhere, so that every fault resolves in well under a second or two.
inline ts::pg::PostgresConfig fast_config(std::string dsn, std::string application_name) {
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

inline bool serves(const std::string& dsn) {
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
inline void expect_servers_healthy() {
  EXPECT_TRUE(ts::testing::poll_until(
      [] { return serves(servers().postgres_dsn()) && serves(servers().pgbouncer_dsn()); }, 20s))
      << "PostgreSQL or PgBouncer left unhealthy";
}

inline std::string kind_name(const Outcome& o) {
  return std::string(ts::to_string(o.kind));
}

inline void create_tables(const std::string& sql) {
  servers().create_database(kDatabase);
  Direct setup;
  setup.value(sql);
}

// ---- synchronous libpq helpers (inspection and fault injection from the test) -------------

/// First value of the first row of `sql`, or nullopt.
inline std::optional<std::string> scalar(const std::string& dsn, const std::string& sql) {
  PgConn conn(dsn);
  auto rows = conn.exec(sql);
  if (!rows || rows->empty() || rows->front().empty()) return std::nullopt;
  return rows->front().front();
}

/// Runs one statement through a fresh connection; returns the error text ("" on success).
inline std::string run_sql(const std::string& dsn, const std::string& sql) {
  PgConn conn(dsn);
  if (!conn.ok()) return "connect: " + conn.error();
  return conn.exec(sql) ? std::string() : conn.last_error();
}

/// Backends of `app` on the server (direct connection, never counting itself); with `like`,
/// only those running a statement whose text contains it.
inline long backends(const std::string& app, const std::string& like = {}) {
  std::string sql =
      "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
      "application_name = '" +
      app + "'";
  if (!like.empty()) sql += " AND state = 'active' AND query LIKE '%" + like + "%'";
  const auto value = scalar(Servers::instance().postgres_dsn("postgres"), sql);
  return value ? std::stol(*value) : -1;
}

/// PIDs of the backends of `app` (direct connection, never counting itself).
inline std::vector<std::string> backend_pids(const std::string& app) {
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
inline bool backend_alive(const std::string& pid) {
  return scalar(Servers::instance().postgres_dsn("postgres"),
                "SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) != "0";
}

/// Whether PostgreSQL's log (log_line_prefix '%m [%p] ') says that backend `pid` ended by
/// the idle-session timeout (SQLSTATE 57P05).
inline bool idle_timeout_logged(const std::string& log_path, const std::string& pid) {
  std::ifstream log(log_path);
  const std::string needle =
      "[" + pid + "] FATAL:  terminating connection due to idle-session timeout";
  std::string line;
  while (std::getline(log, line)) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

inline bool wait_backends(const std::string& app, long expected,
                          std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (backends(app) == expected) return true;
    std::this_thread::sleep_for(20ms);  // polling a condition with a deadline
  }
  return backends(app) == expected;
}

/// A PgBouncer admin console command; returns the error text ("" on success).
inline std::string pgbouncer_admin(const std::string& command) {
  return run_sql(Servers::instance().pgbouncer_admin_dsn(), command);
}

/// `SHOW CONFIG` value of a PgBouncer setting.
inline std::optional<std::string> pgbouncer_setting(const std::string& key) {
  PgConn admin(Servers::instance().pgbouncer_admin_dsn());
  const auto rows = admin.exec("SHOW CONFIG");
  if (!rows) return std::nullopt;
  for (const auto& row : *rows) {
    if (row.size() >= 2 && row[0] == key) return row[1];
  }
  return std::nullopt;
}

/// `SHOW POOLS` row of `database` (user postgres) as column -> value.
inline std::map<std::string, std::string> pgbouncer_pool(const std::string& database) {
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

inline long pool_value(const std::map<std::string, std::string>& pool, const std::string& column) {
  const auto it = pool.find(column);
  return it == pool.end() ? -1 : std::stol(it->second);
}

/// Sends a cancel request for whatever each connection of `conns` runs (through PgBouncer).
inline void cancel_all(std::vector<std::unique_ptr<PgConn>>& conns) {
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
inline void ensure_servers_running() {
  auto& servers = Servers::instance();
  servers.postgres().start();
  servers.pgbouncer().start();
}

// ---- asynchronous helpers ------------------------------------------------------------------

/// Waits until the pool has `size` open connections.
inline asio::awaitable<bool> pool_full(const PostgresClient& client, std::size_t size,
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

inline std::string sqlstate(const std::optional<ts::Error>& e) {
  return e && e->server() ? e->server()->code : std::string();
}

inline std::string describe(const std::optional<ts::Error>& e) {
  if (!e) return "no error";
  return std::string(ts::to_string(e->kind())) + " / " + e->code().message() + " / " + e->what();
}

/// A config for one test: small timeouts, its own application_name, a full pool of two.
inline ts::pg::PostgresConfig config_for(std::string dsn, std::string app) {
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

}  // namespace pg_fault_test

// Helpers shared by the PostgresClient fault tests (pg_*_faults_test.cpp, one binary, and the
// PostgreSQL side of breaker_faults_test.cpp): a blocking libpq connection for inspection and
// fault injection, DSNs, and the client type of run_with_client() for a PostgresConfig. What
// the fault tests of both clients use (scope-exit guard, polling step, closing a client, running
// a test body with a started client) is in fault_support_common.hpp.
#pragma once

#include <trading_shared/pg/config.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include "fault_support_common.hpp"
#include "support/server_harness.hpp"

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace trading_shared::testing::fault {

using Rows = std::vector<std::vector<std::string>>;

/// One blocking libpq connection; closed on destruction.
class PgConn {
 public:
  explicit PgConn(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {}
  ~PgConn() {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  bool ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
  PGconn* get() const { return conn_; }
  std::string error() const { return conn_ != nullptr ? PQerrorMessage(conn_) : "out of memory"; }

  /// Runs `sql` with the simple protocol (the PgBouncer console accepts nothing else).
  /// Returns its rows (text), or nullopt with `last_error()` set.
  std::optional<Rows> exec(const std::string& sql) {
    last_error_.clear();
    columns_.clear();
    if (!ok()) {
      last_error_ = "not connected: " + error();
      return std::nullopt;
    }
    PGresult* result = PQexec(conn_, sql.c_str());
    std::optional<Rows> rows;
    const auto status = PQresultStatus(result);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      rows.emplace();
      for (int c = 0; c < PQnfields(result); ++c) columns_.emplace_back(PQfname(result, c));
      for (int r = 0; r < PQntuples(result); ++r) {
        auto& row = rows->emplace_back();
        for (int c = 0; c < PQnfields(result); ++c) row.emplace_back(PQgetvalue(result, r, c));
      }
    } else {
      last_error_ = PQresultErrorMessage(result);
    }
    PQclear(result);
    return rows;
  }
  /// Column names of the last successful exec.
  const std::vector<std::string>& columns() const { return columns_; }
  const std::string& last_error() const { return last_error_; }

 private:
  PGconn* conn_;
  std::string last_error_;
  std::vector<std::string> columns_;
};

/// A PgConn that must connect (throws "direct connection: ..." otherwise) and whose
/// statements must succeed: for the tests' own inspection and fault injection.
class DirectPg : public PgConn {
 public:
  explicit DirectPg(const std::string& dsn) : PgConn(dsn) {
    if (!ok()) throw std::runtime_error("direct connection: " + error());
  }

  /// Runs `sql` (simple protocol); returns the first column of the first row ("" when there
  /// is none). Throws "<sql>: <error>" when it fails.
  std::string value(const std::string& sql) {
    const auto rows = exec(sql);
    if (!rows) throw std::runtime_error(sql + ": " + last_error());
    return !rows->empty() && !rows->front().empty() ? rows->front().front() : "";
  }
  std::int64_t count(const std::string& sql) { return std::stoll(value(sql)); }
};

/// Backends on the harness's PostgreSQL whose application_name is `app` (a direct connection
/// of the test's own, never counting itself); -1 when the server cannot be asked.
inline long pg_backends(const std::string& app) {
  PgConn conn(Servers::instance().postgres_dsn("postgres"));
  const auto rows = conn.exec(
      "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
      "application_name = '" +
      app + "'");
  if (!rows || rows->empty() || rows->front().empty()) return -1;
  return std::stol(rows->front().front());
}

/// Keyword DSN of `database` on 127.0.0.1:`port` (e.g. a FaultProxy's), user postgres.
inline std::string pg_dsn_for_port(std::uint16_t port, const std::string& database) {
  return "host=127.0.0.1 port=" + std::to_string(port) + " user=postgres dbname=" + database;
}

// ---- client lifetime -------------------------------------------------------------------------

/// A retry policy that gives up fast: `attempts` with 10-100 ms backoff, 10 s in all.
inline core::RetryPolicy fast_retry(std::uint32_t attempts) {
  using namespace std::chrono_literals;
  core::RetryPolicy policy;
  policy.max_attempts = attempts;
  policy.backoff = {10ms, 100ms, 2.0};
  policy.total_deadline = 10s;
  return policy;
}

/// The base configuration of the PostgreSQL fault tests: short timeouts everywhere, so that
/// every fault resolves in well under a second or two. A test sets what it is about on top.
inline pg::PostgresConfig fast_pg_config(std::string dsn, std::string application_name) {
  using namespace std::chrono_literals;
  pg::PostgresConfig c;
  c.dsn = std::move(dsn);
  c.application_name = std::move(application_name);
  c.min_size = 1;
  c.max_size = 2;
  c.connect_timeout = 1s;
  c.startup_timeout = 5s;
  c.acquire_timeout = 2s;
  c.statement_timeout = 5s;
  c.network_timeout_margin = 1s;
  c.close_timeout = 1s;
  c.reconnect_backoff = {20ms, 200ms, 2.0};
  c.retry = fast_retry(3);
  return c;
}

/// with_client() and run_with_client() of a PostgresConfig run a PostgresClient.
template <>
struct ClientOf<pg::PostgresConfig> {
  using type = pg::PostgresClient;
};

}  // namespace trading_shared::testing::fault

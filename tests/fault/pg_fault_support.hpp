// Helpers shared by the PostgresClient fault tests (pg_faults_*_test.cpp, one binary): a
// blocking libpq connection for inspection and fault injection, and this binary's scope-exit
// guard and polling step. What every client's fault tests use is in support/test_helpers.hpp.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "support/test_helpers.hpp"

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
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

/// The guard of these tests: a failure reads "restoring the servers failed: ...".
class ScopeExit : public testing::ScopeExit {
 public:
  explicit ScopeExit(std::function<void()> fn)
      : testing::ScopeExit("restoring the servers", std::move(fn)) {}
};

/// testing::eventually() polling every 10 ms unless told otherwise.
inline boost::asio::awaitable<bool> eventually(
    std::function<bool()> condition, std::chrono::steady_clock::duration timeout,
    std::chrono::steady_clock::duration step = std::chrono::milliseconds(10)) {
  return testing::eventually(std::move(condition), timeout, step);
}

}  // namespace trading_shared::testing::fault

// Helpers shared by the PostgresClient fault tests (pg_faults_*_test.cpp, one binary): a
// blocking libpq connection for inspection and fault injection, a scope-exit guard that puts
// servers back, polling with a deadline on the test's own loop, elapsed time, and the skip for
// external servers.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

/// Fault tests signal and restart server processes: they need harness-started servers.
#define TS_SKIP_IF_EXTERNAL()                                                   \
  if (::trading_shared::testing::Servers::instance().external()) {              \
    GTEST_SKIP() << "servers are external: no process handles for fault tests"; \
  }

namespace trading_shared::testing::fault {

/// Milliseconds since `since` (steady clock).
inline std::chrono::milliseconds elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since);
}

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

/// Runs `fn` at scope exit; failures are reported, never thrown (it runs in a destructor).
class ScopeExit {
 public:
  explicit ScopeExit(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~ScopeExit() {
    try {
      fn_();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "restoring the servers failed: " << e.what();
    }
  }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

 private:
  std::function<void()> fn_;
};

/// Polls `condition` on the test's own loop (without blocking it between polls) until it holds
/// or `timeout` passes; returns its last value. A deadline, never a sleep.
inline boost::asio::awaitable<bool> eventually(
    std::function<bool()> condition, std::chrono::steady_clock::duration timeout,
    std::chrono::steady_clock::duration step = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  for (;;) {
    if (condition()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return condition();
    timer.expires_after(step);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

}  // namespace trading_shared::testing::fault

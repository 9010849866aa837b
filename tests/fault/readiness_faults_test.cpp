// F78 for the consumer services (docs/failure-modes.md, docs/operations.md "Metrics"): /readyz of
// ts-recorder and ts-executor says "write_path: ..." (503) while their writes fail for real,
// and is 200 "write_path: ok" again once the fault is gone, with nothing lost.
//
// The real binaries against the harness's PostgreSQL and Redis, with the admin endpoint on
// (`--admin-check-interval 200ms`). Faults, all made on the server:
// - a lock: the test holds `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`, so every insert waits and
//   is cancelled by the server after the database's `lock_timeout` (100 ms here: 55P03, a
//   transient failure, the handler call retried for ever: nothing read meanwhile, no read
//   error). The client's own deadline would do too, but it is the statement timeout plus the
//   network margin (5 s), longer than the test needs;
// - a revoked privilege: the recorder runs under a role of its own and the test revokes its
//   INSERT on ticks (42501, a permanent failure: the handler fails, its entries stay pending).
#include <boost/beast/http/verb.hpp>

#include "common/keys.hpp"
#include "common/migrations.hpp"
#include "services_schema.hpp"
#include "support/admin_client.hpp"
#include "support/server_harness.hpp"
#include "support/service_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef TS_RECORDER_BIN
#error "TS_RECORDER_BIN must name the ts-recorder executable"
#endif
#ifndef TS_EXECUTOR_BIN
#error "TS_EXECUTOR_BIN must name the ts-executor executable"
#endif

namespace ts = trading_shared;
namespace detail = ts::testing::detail;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kDatabase = "readiness_faults";
constexpr const char* kRole = "ts_readiness_recorder";
constexpr std::chrono::milliseconds kInterval{200};
// The stalled write must show within two check intervals of its start; the slack is for a
// loaded machine (the insert's start, the scheduling of the check and of our poll).
constexpr std::chrono::milliseconds kStallBound = 2 * kInterval + 250ms;

/// One libpq connection of the test (superuser), kept open (a lock is held on it).
class Sql {
 public:
  explicit Sql(const std::string& dsn) : conn_(PQconnectdb(dsn.c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string message = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("connect: " + message);
    }
  }
  ~Sql() { PQfinish(conn_); }
  Sql(const Sql&) = delete;
  Sql& operator=(const Sql&) = delete;

  /// Runs `sql`; the first row's first value ("" when none).
  std::string run(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      const std::string message = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(sql + ": " + message);
    }
    std::string value = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return value;
  }
  std::int64_t count(const std::string& sql) { return std::stoll(run(sql)); }

 private:
  PGconn* conn_;
};

using ts::testing::apply_schema;

/// One Redis command (hiredis, synchronous); throws on an error reply.
redisReply* redis_command(const std::vector<std::string>& args) {
  auto& servers = ts::testing::Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    throw std::runtime_error("redis connect failed");
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
  redisFree(c);
  if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
    const std::string what = reply != nullptr ? reply->str : "no reply";
    if (reply != nullptr) freeReplyObject(reply);
    throw std::runtime_error(args.front() + ": " + what);
  }
  return reply;
}

void redis_do(const std::vector<std::string>& args) {
  freeReplyObject(redis_command(args));
}

/// Entries of `group` pending on `stream` now (XPENDING's summary).
std::int64_t pending(const std::string& stream, const std::string& group) {
  redisReply* reply = redis_command({"XPENDING", stream, group});
  const std::int64_t n =
      reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 ? reply->element[0]->integer : 0;
  freeReplyObject(reply);
  return n;
}

/// The highest delivery count among the entries of `group` pending on `stream` (0: none).
std::int64_t most_deliveries(const std::string& stream, const std::string& group) {
  redisReply* reply = redis_command({"XPENDING", stream, group, "-", "+", "10000"});
  std::int64_t most = 0;
  for (std::size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; ++i) {
    most = std::max<std::int64_t>(most, reply->element[i]->element[3]->integer);
  }
  freeReplyObject(reply);
  return most;
}

/// Entries in `stream` (0: no such stream).
std::int64_t stream_length(const std::string& stream) {
  redisReply* reply = redis_command({"XLEN", stream});
  const std::int64_t n = reply->integer;
  freeReplyObject(reply);
  return n;
}

/// Trades `first`..`first + count - 1` of `symbol`, as ts-receiver writes them.
void add_trades(const std::string& symbol, std::int64_t first, std::int64_t count) {
  const std::int64_t base_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count() -
                               first;
  const std::string stream = ts::services::trade_stream(symbol);
  for (std::int64_t id = first; id < first + count; ++id) {
    redis_do({"XADD", stream, "*", "s", symbol, "t", std::to_string(id), "p",
              "100." + std::to_string(id % 100), "q", "0.5", "T", std::to_string(base_ms + id), "E",
              std::to_string(base_ms + id + 1), "m", id % 2 == 0 ? "1" : "0", "r",
              std::to_string((base_ms + id + 2) * 1000)});
  }
}

/// Order requests `first`..`first + count - 1` (ids "<prefix>-<n>").
void add_orders(const std::string& prefix, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    redis_do({"XADD", std::string(ts::services::kOrderRequests), "*", "client_order_id",
              prefix + "-" + std::to_string(i), "symbol", "RDYUSDT", "side", "buy", "type",
              "market", "qty", "1"});
  }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes (a deadline, not a sleep).
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(10ms);
  }
}

class Readiness : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& servers = ts::testing::Servers::instance();
    servers.create_database(kDatabase);
    apply_schema(servers.postgres_dsn(kDatabase));
    Sql sql(servers.postgres_dsn(kDatabase));
    sql.run(std::string("DO $$ BEGIN CREATE ROLE ") + kRole +
            " LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    sql.run(std::string("GRANT SELECT, INSERT ON ticks TO ") + kRole);
    // The services' sessions (opened later) give up a lock wait after 100 ms.
    sql.run(std::string("ALTER DATABASE ") + kDatabase + " SET lock_timeout = '100ms'");
    sql.run(std::string("GRANT EXECUTE ON FUNCTION ts_ensure_tick_partition(date) TO ") + kRole);
  }
  void SetUp() override {
    TS_SKIP_IF_EXTERNAL();
    redis_do({"FLUSHALL"});
    std::string pattern = ts::testing::Servers::temp_root() + "/ts-readiness-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    admin_port_ = ts::testing::free_loopback_port();
  }
  void TearDown() override {
    if (HasFailure() && service_.pid > 0) {
      std::cerr << "---- service log (tail) ----\n"
                << detail::log_tail(service_.log, 0, 60) << '\n';
      std::cerr << "---- last /readyz ----\n" << last_readyz_ << '\n';
    }
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  void start(const char* binary, const std::string& name, const std::string& dsn,
             const std::string& max_deliveries = "100000") {
    auto& servers = ts::testing::Servers::instance();
    std::vector<std::string> argv{binary,
                                  "--postgres-dsn",
                                  dsn,
                                  "--redis-url",
                                  servers.redis_url(),
                                  "--admin-listen",
                                  "127.0.0.1:" + std::to_string(admin_port_),
                                  "--admin-check-interval",
                                  "200ms",
                                  "--claim-interval",
                                  "500ms",
                                  "--max-deliveries",
                                  max_deliveries,
                                  "--consumer",
                                  name};
    service_ = ts::testing::ServiceProcess::spawn(dir_, name, std::move(argv));
  }

  /// /readyz now: its status (0: no answer), the body kept for the failure report.
  int readyz() {
    const auto reply =
        ts::testing::admin::http_request(admin_port_, "/readyz", boost::beast::http::verb::get, 2s);
    last_readyz_ = std::to_string(reply.status) + "\n" + reply.body + reply.error;
    return reply.status;
  }
  bool write_path_ok() { return readyz() == 200 && has("write_path: ok\n"); }
  bool write_path_stalled() {
    return readyz() == 503 && has("\nwrite_path: ") && !has("write_path: ok\n");
  }
  bool has(const std::string& text) const { return last_readyz_.find(text) != std::string::npos; }

  /// Ready (with the write_path check) within 30 s.
  void expect_ready(const char* when) {
    EXPECT_TRUE(eventually([&] { return write_path_ok(); }, 30s))
        << when << ": /readyz was not 200 with 'write_path: ok'; last: " << last_readyz_;
  }
  /// 503 with a write_path reason within kStallBound of `since` (waits up to 10 s to tell);
  /// `between` runs before each poll (work that keeps arriving).
  void expect_stalled(Clock::time_point since, const std::function<void()>& between = {}) {
    const bool stalled = eventually(
        [&] {
          if (between) between();
          return write_path_stalled();
        },
        10s);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since);
    std::cout << "write_path stalled seen " << took.count() << " ms after the fault began\n"
              << last_readyz_ << std::endl;
    ASSERT_TRUE(stalled) << "/readyz never said the write path is stalled; last: " << last_readyz_;
    EXPECT_LE(took, kStallBound) << last_readyz_;
  }

  std::string dir_;
  std::uint16_t admin_port_ = 0;
  ts::testing::ServiceProcess service_;
  std::string last_readyz_;
};

// The recorder's insert waits on a lock and times out, again and again: the handler call is
// retried for ever (no commit, no read error, the postgres breaker not open yet).
TEST_F(Readiness, F78_RecorderInsertBlockedByALockIsNotReady) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dsn = servers.postgres_dsn(kDatabase);
  Sql sql(dsn);
  const std::string symbol = "RDYLOCK";
  sql.run("DELETE FROM ticks WHERE symbol = '" + symbol + "'");
  const std::string count_sql = "SELECT count(*) FROM ticks WHERE symbol = '" + symbol + "'";
  start(TS_RECORDER_BIN, "recorder-lock", dsn);
  expect_ready("at start");
  add_trades(symbol, 1, 100);
  ASSERT_TRUE(eventually([&] { return sql.count(count_sql) == 100; }, 30s));

  Sql lock(dsn);
  lock.run("SET lock_timeout = 0");
  lock.run("BEGIN");
  lock.run("LOCK TABLE ticks IN ACCESS EXCLUSIVE MODE");
  const auto t0 = Clock::now();
  add_trades(symbol, 101, 100);
  expect_stalled(t0);
  EXPECT_TRUE(has("write_path: a handler call has been retried for over a check interval"))
      << last_readyz_;
  lock.run("ROLLBACK");

  expect_ready("after the lock was released");
  EXPECT_TRUE(eventually([&] { return sql.count(count_sql) == 200; }, 30s))
      << sql.count(count_sql) << " trade(s) recorded";
  EXPECT_EQ(sql.count("SELECT count(DISTINCT trade_id) FROM ticks WHERE symbol = '" + symbol +
                      "' AND trade_id BETWEEN 1 AND 200"),
            200);
  EXPECT_TRUE(eventually(
      [&] { return pending(ts::services::trade_stream(symbol), "recorder") == 0; }, 10s));
  EXPECT_EQ(service_.stop(), 0);
}

// The recorder's role loses INSERT on ticks (42501, permanent): every batch fails and stays
// pending whole (not split: the refusal is about the sink, not the entries), and no read
// error happens.
TEST_F(Readiness, F78_RecorderInsertRefusedByRevokedPrivilegeIsNotReady) {
  auto& servers = ts::testing::Servers::instance();
  Sql sql(servers.postgres_dsn(kDatabase));
  const std::string symbol = "RDYPRIV";
  sql.run("DELETE FROM ticks WHERE symbol = '" + symbol + "'");
  sql.run(std::string("GRANT SELECT, INSERT ON ticks TO ") + kRole);
  const std::string count_sql = "SELECT count(*) FROM ticks WHERE symbol = '" + symbol + "'";
  // --max-deliveries 2: a sink that refuses everyone makes no entry poison; the trades must
  // not be dead-lettered however often they are delivered meanwhile.
  start(TS_RECORDER_BIN, "recorder-priv", servers.postgres_dsn_for(kRole, "", kDatabase), "2");
  expect_ready("at start");
  add_trades(symbol, 1, 100);
  ASSERT_TRUE(eventually([&] { return sql.count(count_sql) == 100; }, 30s));

  sql.run(std::string("REVOKE INSERT ON ticks FROM ") + kRole);
  const auto t0 = Clock::now();
  // Trades keep arriving, a few per poll.
  std::int64_t next = 101;
  expect_stalled(t0, [&] {
    add_trades(symbol, next, 5);
    next += 5;
  });
  EXPECT_TRUE(has("write_path: handler calls failing, nothing acknowledged")) << last_readyz_;
  // Still not ready a few checks later (no traffic meanwhile: the failure is remembered).
  const auto later = Clock::now() + 4 * kInterval;
  while (Clock::now() < later) {
    ASSERT_TRUE(write_path_stalled()) << "ready again while INSERT is revoked: " << last_readyz_;
    std::this_thread::sleep_for(20ms);
  }
  // A refused privilege is about the sink, not the entries: the batch is not split to find
  // "the entries at fault" (that would retry the same insert once per split); it stays pending
  // whole, with one error line per failed call naming the stream and the privilege problem.
  const std::string stream = ts::services::trade_stream(symbol);
  EXPECT_TRUE(eventually(
      [&] {
        return service_.text().find("stream " + stream +
                                    ": handler refused: the sink lacks a "
                                    "privilege") != std::string::npos;
      },
      5s))
      << "no line says the sink lacks a privilege:\n"
      << detail::log_tail(service_.log, 0, 40);
  // Delivered more often than --max-deliveries while refused, and not dead-lettered.
  EXPECT_TRUE(eventually([&] { return most_deliveries(stream, "recorder") >= 4; }, 15s))
      << "pending trades were not delivered again 4 times: " << most_deliveries(stream, "recorder");
  EXPECT_EQ(stream_length(stream + ":dead"), 0) << "trades refused for a privilege were "
                                                   "dead-lettered";
  const std::string revoked_log = service_.text();
  EXPECT_EQ(revoked_log.find("splitting"), std::string::npos)
      << "a batch refused for a privilege was split:\n"
      << detail::log_tail(service_.log, 0, 40);
  sql.run(std::string("GRANT INSERT ON ticks TO ") + kRole);

  expect_ready("after INSERT was granted again");
  const std::int64_t total = next - 1;
  EXPECT_TRUE(eventually([&] { return sql.count(count_sql) == total; }, 30s))
      << sql.count(count_sql) << " trade(s) recorded of " << total;
  EXPECT_EQ(sql.count("SELECT count(DISTINCT trade_id) FROM ticks WHERE symbol = '" + symbol +
                      "' AND trade_id BETWEEN 1 AND " + std::to_string(total)),
            total);
  EXPECT_TRUE(eventually([&] { return pending(stream, "recorder") == 0; }, 10s));
  EXPECT_EQ(service_.stop(), 0);
  EXPECT_EQ(service_.text().find("splitting"), std::string::npos);
}

// The executor's order insert waits on a lock of orders and times out, again and again.
TEST_F(Readiness, F78_ExecutorInsertBlockedByALockIsNotReady) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dsn = servers.postgres_dsn(kDatabase);
  Sql sql(dsn);
  const std::string prefix = "rdy-" + std::to_string(::getpid());
  const std::string count_sql =
      "SELECT count(*) FROM orders WHERE client_order_id LIKE '" + prefix + "-%'";
  start(TS_EXECUTOR_BIN, "executor-lock", dsn);
  expect_ready("at start");
  add_orders(prefix, 1, 20);
  ASSERT_TRUE(eventually([&] { return sql.count(count_sql) == 20; }, 30s));

  Sql lock(dsn);
  lock.run("SET lock_timeout = 0");
  lock.run("BEGIN");
  lock.run("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
  const auto t0 = Clock::now();
  add_orders(prefix, 21, 20);
  expect_stalled(t0);
  EXPECT_TRUE(has("write_path: a handler call has been retried for over a check interval"))
      << last_readyz_;
  lock.run("ROLLBACK");

  expect_ready("after the lock was released");
  EXPECT_TRUE(eventually([&] { return sql.count(count_sql) == 40; }, 30s))
      << sql.count(count_sql) << " order(s) recorded";
  EXPECT_TRUE(eventually(
      [&] { return pending(std::string(ts::services::kOrderRequests), "executor") == 0; }, 10s));
  EXPECT_EQ(service_.stop(), 0);
}

}  // namespace

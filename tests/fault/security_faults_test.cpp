// Security fault tests (docs/failure-modes.md F64-F66; docs/services.md, "What to provision"):
// the services' least-privilege identities, created by `tsctl acl --apply` (Redis ACL users)
// and `tsctl migrate --roles` (PostgreSQL roles), the real service binaries running under
// them against the harness's servers (plaintext), and secrets that never leak.
//
// The suite provisions once: an owner role sf_owner (CREATEROLE) owning the database
// "security_faults", the schema and the roles sf_recorder, sf_executor, sf_janitor, sf_status
// (migrate --roles --roles-prefix=sf_), and the Redis users sf_receiver, sf_recorder,
// sf_executor, sf_janitor (acl --apply --acl-user-prefix=sf_) with distinctive passwords read
// from files.
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "common/keys.hpp"
#include "common/scram.hpp"
#include "support/admin_client.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"
#include "support/service_process.hpp"
#include "support/test_helpers.hpp"
#include "tsctl/acl_rules.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if !defined(TS_RECORDER_BIN) || !defined(TS_EXECUTOR_BIN) || !defined(TS_JANITOR_BIN) || \
    !defined(TS_TSCTL_BIN) || !defined(TS_SOURCE_DIR)
#error \
    "TS_RECORDER_BIN, TS_EXECUTOR_BIN, TS_JANITOR_BIN, TS_TSCTL_BIN and TS_SOURCE_DIR must be defined"
#endif

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace detail = ts::testing::detail;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using trading_shared::testing::poll_until;

namespace {

constexpr const char* kDatabase = "security_faults";
constexpr const char* kOwner = "sf_owner";
constexpr const char* kRolePassword = "Role-pw-sf-status-4e1d";

/// The distinctive password of a Redis user: searched for in every output of a run.
std::string password_of(const std::string& user) {
  return "Pw-" + user + "-q7Zx93Lk";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text << '\n';
  if (!out) throw std::runtime_error("cannot write " + path);
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

/// One libpq connection; `run` throws with the SQLSTATE first in the message.
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

  std::string run(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      const std::string message =
          std::string(state != nullptr ? state : "?????") + " " + PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(message);
    }
    std::string value = PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return value;
  }
  /// The SQLSTATE `sql` fails with ("" when it succeeds).
  std::string state_of(const std::string& sql) {
    try {
      run(sql);
      return "";
    } catch (const std::runtime_error& e) {
      return std::string(e.what()).substr(0, 5);
    }
  }
  std::int64_t count(const std::string& sql) { return std::stoll(run(sql)); }

 private:
  PGconn* conn_;
};

/// A hiredis connection, authenticated as `user` (empty: the default user).
class Redis {
 public:
  explicit Redis(const std::string& user = "") {
    auto& servers = ts::testing::Servers::instance();
    c_ = redisConnect(servers.redis_host().c_str(), servers.redis_port());
    if (c_ == nullptr || c_->err != 0) throw std::runtime_error("redis connect failed");
    if (!user.empty()) {
      const std::string reply = call({"AUTH", user, password_of(user)});
      if (reply != "OK") throw std::runtime_error("AUTH " + user + ": " + reply);
    }
  }
  ~Redis() { redisFree(c_); }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  /// The reply as text: a status or string, an integer's digits, "ERR..." / "NOPERM ..." for
  /// an error, "[n]" for an array of n elements.
  std::string call(const std::vector<std::string>& args) {
    redisReply* reply = raw(args);
    std::string text;
    switch (reply->type) {
      case REDIS_REPLY_STATUS:
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_ERROR:
        text.assign(reply->str, reply->len);
        break;
      case REDIS_REPLY_INTEGER:
        text = std::to_string(reply->integer);
        break;
      case REDIS_REPLY_ARRAY:
        text = "[" + std::to_string(reply->elements) + "]";
        break;
      default:
        text = "(nil)";
    }
    freeReplyObject(reply);
    return text;
  }
  redisReply* raw(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (reply == nullptr) throw std::runtime_error(args.front() + ": no reply");
    return reply;
  }
  /// The denials ACL LOG holds for `user` (each entry's count, summed).
  std::int64_t denials(const std::string& user) {
    redisReply* log = raw({"ACL", "LOG", "128"});
    std::int64_t total = 0;
    for (std::size_t i = 0; i < log->elements; ++i) {
      const redisReply* entry = log->element[i];
      std::string name;
      std::int64_t count = 0;
      for (std::size_t k = 0; k + 1 < entry->elements; k += 2) {
        const std::string key(entry->element[k]->str, entry->element[k]->len);
        const redisReply* value = entry->element[k + 1];
        if (key == "username") name.assign(value->str, value->len);
        if (key == "count") count = value->integer;
      }
      if (name == user) total += count;
    }
    freeReplyObject(log);
    return total;
  }

 private:
  redisContext* c_ = nullptr;
};

bool is_noperm(const std::string& reply) {
  return reply.rfind("NOPERM", 0) == 0;
}

/// A program run by the test: stdout and stderr in `<dir>/<name>.log`, `env` added.
ts::testing::ServiceProcess spawn(const std::string& dir, const std::string& name,
                                  std::vector<std::string> argv, std::vector<std::string> env) {
  ts::testing::ServiceProcess s;
  s.log = dir + "/" + name + ".log";
  detail::SpawnRequest request;
  request.argv = std::move(argv);
  request.directory = dir;
  request.log_file = s.log;
  env.emplace_back("TS_LOG_LEVEL=info");
  request.extra_env = std::move(env);
  s.pid = detail::spawn_process(request);
  return s;
}

/// Runs a program to its end (within 60 s): exit code and output.
std::pair<int, std::string> run_to_end(const std::string& dir, const std::string& name,
                                       std::vector<std::string> argv,
                                       std::vector<std::string> env) {
  auto p = spawn(dir, name, std::move(argv), std::move(env));
  const int code = p.wait(60s);
  return {code, p.text()};
}

std::string dsn_of(const std::string& role) {
  return ts::testing::Servers::instance().postgres_dsn_for(role, "", kDatabase);
}

/// redis://<user>:@127.0.0.1:PORT/0: the user from the URL, its password from a file.
std::string redis_url_of(const std::string& user) {
  auto& servers = ts::testing::Servers::instance();
  return "redis://" + user + ":@" + servers.redis_host() + ":" +
         std::to_string(servers.redis_port()) + "/0";
}

/// The day `days_ago` days before today (UTC) as YYYYMMDD.
std::string day_name(int days_ago) {
  const std::time_t t = std::time(nullptr) - static_cast<std::time_t>(days_ago) * 86400;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[16];
  std::strftime(buffer, sizeof buffer, "%Y%m%d", &tm);
  return buffer;
}

/// Trades `first`..`first + count - 1` of `symbol`, trade time `days_ago` days back.
void add_trades(const std::string& symbol, std::int64_t first, std::int64_t count,
                int days_ago = 0) {
  Redis redis;
  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  const std::int64_t base = now_ms - std::int64_t{days_ago} * 86'400'000;
  for (std::int64_t id = first; id < first + count; ++id) {
    const std::string reply = redis.call({"XADD", ts::services::trade_stream(symbol), "*", "s",
                                          symbol, "t", std::to_string(id), "p", "10.5", "q", "1",
                                          "T", std::to_string(base + id), "m", "1"});
    if (reply.rfind("ERR", 0) == 0) throw std::runtime_error("XADD: " + reply);
  }
}

class SecurityFault : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& servers = ts::testing::Servers::instance();
    if (servers.external()) return;
    std::string pattern = ts::testing::Servers::temp_root() + "/ts-security-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    suite_dir_ = pattern;
    secrets_ = suite_dir_ + "/secrets";
    std::filesystem::create_directory(secrets_);
    for (const auto& user : acl_users()) write_file(secrets_ + "/" + user, password_of(user));

    {
      Sql admin(servers.postgres_dsn());
      admin.run(std::string("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '") +
                kOwner + "') THEN CREATE ROLE " + kOwner + " LOGIN CREATEROLE; END IF; END $$");
    }
    servers.create_database(kDatabase);
    Sql(servers.postgres_dsn())
        .run(std::string("ALTER DATABASE ") + kDatabase + " OWNER TO " + kOwner);
    // The schema and the roles, by the owner; twice: idempotent (the second run sets the
    // status role's password from a file: the others have none, trust authentication).
    // Every statement of the owner's sessions goes to the server's log while migrate runs:
    // the role's password must not be in it (F66), neither in a statement nor a parameter.
    Sql(servers.postgres_dsn())
        .run(std::string("ALTER ROLE ") + kOwner + " SET log_statement = 'all'");
    const std::string server_log = servers.postgres().directory() + "/server.log";
    const std::size_t log_offset = read_file(server_log).size();
    const std::string role_passwords = suite_dir_ + "/role-passwords";
    std::filesystem::create_directory(role_passwords);
    write_file(role_passwords + "/sf_status", kRolePassword);
    for (int i = 0; i < 2; ++i) {
      std::vector<std::string> argv{TS_TSCTL_BIN, "migrate", "--roles-create",
                                    "--roles-prefix=sf_"};
      if (i == 1) argv.push_back("--roles-password-dir=" + role_passwords);
      const auto [code, output] = run_to_end(suite_dir_, "migrate-" + std::to_string(i), argv,
                                             {"TS_POSTGRES_DSN=" + dsn_of(kOwner)});
      if (code != 0) throw std::runtime_error("tsctl migrate --roles failed:\n" + output);
      migrate_output_ += output;
    }
    Sql(servers.postgres_dsn()).run(std::string("ALTER ROLE ") + kOwner + " RESET log_statement");
    migrate_server_log_ = read_file(server_log).substr(log_offset);
    // The Redis users, through the default user.
    const auto [code, output] = run_to_end(
        suite_dir_, "acl", {TS_TSCTL_BIN, "acl", "--apply", "--acl-user-prefix=sf_"},
        {"TS_REDIS_URL=" + servers.redis_url(), "TS_TSCTL_ACL_PASSWORD_DIR=" + secrets_});
    if (code != 0) throw std::runtime_error("tsctl acl --apply failed:\n" + output);
    acl_output_ = output;
  }

  static std::vector<std::string> acl_users() {
    std::vector<std::string> users;
    for (const auto& user : ts::services::tsctl::acl_users()) {
      users.push_back("sf_" + std::string(user.service));
    }
    return users;
  }

  void SetUp() override {
    TS_SKIP_IF_EXTERNAL();
    std::string pattern = ts::testing::Servers::temp_root() + "/ts-security-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    Redis().call({"ACL", "LOG", "RESET"});
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  /// The environment of a service running as `service` (its Redis user and PostgreSQL role).
  static std::vector<std::string> identity_env(const std::string& service, bool with_pg = true) {
    std::vector<std::string> env{"TS_REDIS_URL=" + redis_url_of("sf_" + service),
                                 "TS_REDIS_PASSWORD_FILE=" + secrets_ + "/sf_" + service};
    if (with_pg) env.push_back("TS_POSTGRES_DSN=" + dsn_of("sf_" + service));
    return env;
  }

  inline static std::string suite_dir_;
  inline static std::string secrets_;
  inline static std::string acl_output_;
  inline static std::string migrate_output_;
  inline static std::string migrate_server_log_;
  std::string dir_;
};

// ---- F64: the ACL users ----------------------------------------------------------------------

// The documented template is what `tsctl acl` applies.
TEST_F(SecurityFault, F64_TheAclTemplateIsWhatTsctlApplies) {
  const auto [code, output] =
      run_to_end(dir_, "template", {TS_TSCTL_BIN, "acl", "--acl-format=aclfile"}, {});
  ASSERT_EQ(code, 0) << output;
  const std::string file = read_file(std::string(TS_SOURCE_DIR) + "/deploy/redis-acl.conf.in");
  // The file: its comment lines (the documentation), then exactly what tsctl prints.
  std::string lines;
  std::istringstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') lines += line + "\n";
  }
  EXPECT_EQ(lines, output);
  // What --apply printed: hashes, never a password.
  for (const auto& user : acl_users()) {
    EXPECT_EQ(acl_output_.find(password_of(user)), std::string::npos) << acl_output_;
    EXPECT_NE(acl_output_.find("applied: ACL SETUSER " + user + " reset on #"), std::string::npos)
        << acl_output_;
  }
}

// Each user can do what its service does, and nothing outside it.
TEST_F(SecurityFault, F64_EachUserIsRefusedOutsideItsCommandsAndKeys) {
  const std::string trades = ts::services::bucket_stream(3);
  const std::string last = ts::services::bucket_last_key(3);
  const std::string requests(ts::services::kOrderRequests);
  const std::string events(ts::services::kOrderEvents);
  Redis receiver("sf_receiver");
  EXPECT_FALSE(is_noperm(receiver.call({"XADD", trades, "*", "s", "X"})));
  EXPECT_FALSE(is_noperm(receiver.call({"HSET", last, "X", "1 1 1"})));
  EXPECT_FALSE(is_noperm(receiver.call({"CLIENT", "SETNAME", "r"})));
  EXPECT_TRUE(is_noperm(receiver.call({"DEL", trades})));
  EXPECT_TRUE(is_noperm(receiver.call({"XADD", requests, "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(receiver.call({"HSET", trades + "x", "a", "b"})));
  EXPECT_TRUE(is_noperm(receiver.call({"FLUSHALL"})));
  EXPECT_TRUE(is_noperm(receiver.call({"CONFIG", "GET", "*"})));

  Redis recorder("sf_recorder");
  EXPECT_FALSE(is_noperm(recorder.call({"XGROUP", "CREATE", trades, "sf", "0", "MKSTREAM"})));
  EXPECT_FALSE(is_noperm(recorder.call({"XADD", trades + ":dead", "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(recorder.call({"XADD", trades, "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(recorder.call({"HSET", last, "X", "1"})));
  EXPECT_TRUE(is_noperm(recorder.call({"XTRIM", trades, "MAXLEN", "0"})));
  EXPECT_TRUE(is_noperm(recorder.call({"XGROUP", "DESTROY", trades, "sf"})));

  Redis executor("sf_executor");
  EXPECT_FALSE(is_noperm(executor.call({"HGET", last, "X"})));
  EXPECT_FALSE(is_noperm(executor.call({"XADD", events, "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(executor.call({"HSET", last, "X", "1"})));
  EXPECT_TRUE(is_noperm(executor.call({"XADD", requests, "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(executor.call({"XREADGROUP", "GROUP", "g", "c", "STREAMS", trades, ">"})));

  Redis janitor("sf_janitor");
  EXPECT_FALSE(is_noperm(janitor.call({"XTRIM", trades, "MINID", "0"})));
  EXPECT_FALSE(is_noperm(janitor.call({"SCAN", "0", "MATCH", "md:trades:*", "TYPE", "stream"})));
  EXPECT_TRUE(is_noperm(janitor.call({"XADD", trades, "*", "a", "b"})));
  EXPECT_TRUE(is_noperm(janitor.call({"DEL", trades})));
  EXPECT_TRUE(is_noperm(janitor.call({"HGET", last, "X"})));
  Redis().call({"DEL", trades, trades + ":dead", last, events});
}

// ts-recorder, ts-executor and ts-janitor each run a short job as their own Redis user and
// PostgreSQL role, and nothing they do is refused (F64, F65: the recorder inserts rows and
// creates a past day's partition through the definer function; the janitor drops it).
TEST_F(SecurityFault, F64_F65_EachServiceRunsItsJobWithItsOwnIdentity) {
  auto& servers = ts::testing::Servers::instance();
  Sql sql(servers.postgres_dsn(kDatabase));
  const std::string symbol = "SFREC";
  // What a previous run (--gtest_repeat) left.
  sql.run("DELETE FROM ticks WHERE symbol = '" + symbol + "'");
  sql.run("DELETE FROM fills WHERE client_order_id = 'sf-order-1'");
  sql.run("DELETE FROM orders WHERE client_order_id = 'sf-order-1'");
  add_trades(symbol, 1, 50);
  add_trades(symbol, 51, 10, 10);  // ten days ago: a partition migrate did not create
  const std::string count = "SELECT count(*) FROM ticks WHERE symbol = '" + symbol + "'";
  {
    auto recorder = spawn(dir_, "recorder", {TS_RECORDER_BIN, "--consumer=sf-1", "--readers=1"},
                          identity_env("recorder"));
    EXPECT_TRUE(poll_until([&] { return sql.count(count) == 60; }, 30s))
        << sql.count(count) << " of 60 recorded:\n"
        << recorder.text();
    EXPECT_EQ(recorder.stop(), 0) << recorder.text();
    EXPECT_EQ(recorder.text().find("NOPERM"), std::string::npos) << recorder.text();
    EXPECT_EQ(recorder.text().find("permission denied"), std::string::npos) << recorder.text();
  }
  const std::string old_partition = "ticks_" + day_name(10);
  EXPECT_EQ(sql.run("SELECT to_regclass('" + old_partition + "') IS NOT NULL"), "t");

  {
    Redis().call({"XADD", std::string(ts::services::kOrderRequests), "*", "client_order_id",
                  "sf-order-1", "symbol", "SFREC", "side", "buy", "type", "market", "qty", "1"});
    auto executor =
        spawn(dir_, "executor", {TS_EXECUTOR_BIN, "--consumer=sf-1"}, identity_env("executor"));
    EXPECT_TRUE(poll_until(
        [&] {
          return sql.count("SELECT count(*) FROM orders WHERE client_order_id = 'sf-order-1'") == 1;
        },
        30s))
        << executor.text();
    EXPECT_TRUE(poll_until([&] { return Redis().call({"XLEN", "orders:events"}) != "0"; }, 10s));
    EXPECT_EQ(executor.stop(), 0) << executor.text();
    EXPECT_EQ(executor.text().find("NOPERM"), std::string::npos) << executor.text();
  }

  {
    const auto [code, output] =
        run_to_end(dir_, "janitor", {TS_JANITOR_BIN, "--retention=120h"}, identity_env("janitor"));
    EXPECT_EQ(code, 0) << output;
    EXPECT_EQ(output.find("NOPERM"), std::string::npos) << output;
    EXPECT_EQ(output.find("permission denied"), std::string::npos) << output;
  }
  EXPECT_EQ(sql.run("SELECT to_regclass('" + old_partition + "') IS NULL"), "t")
      << "the janitor's role did not drop " << old_partition;
  Redis admin;
  for (const auto& user : acl_users()) EXPECT_EQ(admin.denials(user), 0) << user;
}

// ts-receiver writes trades (XADD, HSET of the last trades, the backfill tape, trimming with
// --stream-maxlen) as its own Redis user, from ts-feed-sim, and nothing it does is refused.
TEST_F(SecurityFault, F64_TheReceiverRunsWithItsOwnUser) {
  const std::string symbol = "SFRCVUSDT";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::string port = std::to_string(ts::testing::free_loopback_port());
  // A fresh stream: no consumer group left by another test holds the trimming back (F53).
  Redis().call({"DEL", stream});
  auto sim = spawn(
      dir_, "sim",
      {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", symbol, "--rate", "500"}, {});
  const std::uint16_t admin_port = ts::testing::free_loopback_port();
  auto receiver =
      spawn(dir_, "receiver",
            {TS_RECEIVER_BIN, "--feed-url", "ws://127.0.0.1:" + port + "/ws", "--symbols", symbol,
             "--stream-maxlen", "200", "--admin-listen", "127.0.0.1:" + std::to_string(admin_port)},
            identity_env("receiver", false));
  Redis admin;
  EXPECT_TRUE(poll_until(
      [&] {
        return std::stoll(admin.call({"XLEN", stream})) >= 300 &&
               admin.call({"HGET", ts::services::last_trade_key(symbol), symbol}) != "(nil)";
      },
      30s))
      << receiver.text();
  // Its trimming (XLEN, XINFO GROUPS, XPENDING, XTRIM) ran too.
  std::string metrics;
  EXPECT_TRUE(poll_until(
      [&] {
        metrics = ts::testing::admin::http_request(admin_port, "/metrics",
                                                   boost::beast::http::verb::get, 2s)
                      .body;
        const std::size_t at = metrics.find("\nts_receiver_trimmed_total ");
        return at != std::string::npos && std::strtoll(metrics.c_str() + at + 27, nullptr, 10) > 0;
      },
      15s))
      << metrics << receiver.text();
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  EXPECT_EQ(receiver.text().find("NOPERM"), std::string::npos) << receiver.text();
  EXPECT_EQ(admin.denials("sf_receiver"), 0);
  admin.call({"DEL", stream, ts::services::last_trade_key(symbol), ts::services::tape_key(symbol)});
}

// F64: ts-recorder whose user lacks one command it needs (XGROUP CREATE): NOPERM is permanent,
// logged once with its context, never retried, and the service ends with it.
TEST_F(SecurityFault, F64_ARefusedCommandIsLoggedOnceAndNeverRetried) {
  Redis admin;
  std::vector<std::string> setuser{"ACL",   "SETUSER", "sf_limited",
                                   "reset", "on",      ">" + password_of("sf_limited")};
  for (const std::string_view rule : ts::services::tsctl::kRecorderRules) {
    if (rule != "+xgroup|create") setuser.emplace_back(rule);
  }
  ASSERT_EQ(admin.call(setuser), "OK");
  write_file(dir_ + "/sf_limited", password_of("sf_limited"));
  auto recorder = spawn(dir_, "recorder-limited",
                        {TS_RECORDER_BIN, "--consumer=sf-limited", "--readers=1",
                         "--summary-file=" + dir_ + "/limited.json"},
                        {"TS_REDIS_URL=" + redis_url_of("sf_limited"),
                         "TS_REDIS_PASSWORD_FILE=" + dir_ + "/sf_limited",
                         "TS_POSTGRES_DSN=" + dsn_of("sf_recorder")});
  const int code = recorder.wait(20s);
  const std::string log = recorder.text();
  EXPECT_NE(code, -1000) << "still running 20 s after a permanent NOPERM:\n" << log;
  EXPECT_NE(code, 0) << log;
  std::size_t refusals = 0;
  for (std::size_t at = log.find("permission refused, not retried"); at != std::string::npos;
       at = log.find("permission refused, not retried", at + 1)) {
    ++refusals;
  }
  EXPECT_EQ(refusals, 1u) << log;
  EXPECT_NE(log.find("NOPERM"), std::string::npos) << log;
  EXPECT_NE(log.find("group recorder"), std::string::npos) << log;
  // One XGROUP CREATE was refused, once: no retry.
  EXPECT_EQ(admin.denials("sf_limited"), 1);
  const std::string summary = read_file(dir_ + "/limited.json");
  const std::size_t trips = summary.find("\"redis_breaker_trips\":");
  ASSERT_NE(trips, std::string::npos) << summary;
  EXPECT_EQ(std::strtoll(summary.c_str() + trips + 22, nullptr, 10), 0) << summary;
  admin.call({"ACL", "DELUSER", "sf_limited"});
}

// F64/F65 at the client: NOPERM and 42501 fail at once (one attempt each, also with a retry
// policy), as permanent errors, and the breaker never counts them.
TEST_F(SecurityFault, F64_F65_RefusalsArePermanentAndNeverTripTheBreaker) {
  auto& servers = ts::testing::Servers::instance();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        ts::redis::RedisConfig redis_config;
        redis_config.url = redis_url_of("sf_recorder");
        redis_config.password_file = secrets_ + "/sf_recorder";
        redis_config.breaker.window_size = 4;
        redis_config.breaker.min_calls = 2;
        ts::redis::RedisClient redis(io.get_executor(), redis_config);
        ts::pg::PostgresConfig pg_config;
        pg_config.dsn = dsn_of("sf_recorder");
        pg_config.breaker.window_size = 4;
        pg_config.breaker.min_calls = 2;
        ts::pg::PostgresClient pg(io.get_executor(), pg_config);
        co_await redis.start();
        co_await pg.start();
        const std::string trades = ts::services::bucket_stream(5);
        int redis_permanent = 0;
        int pg_permanent = 0;
        for (int i = 0; i < 10; ++i) {
          try {
            const std::array<ts::redis::FieldView, 1> fields{ts::redis::FieldView{"a", "b"}};
            (void)co_await redis.xadd(trades, fields);
          } catch (const ts::Error& e) {
            if (e.kind() == ts::ErrorKind::permanent && e.server() &&
                e.server()->code == "NOPERM") {
              ++redis_permanent;
            }
          }
          try {
            (void)co_await pg.execute("DROP TABLE ticks");
          } catch (const ts::Error& e) {
            if (e.kind() == ts::ErrorKind::permanent && e.server() && e.server()->code == "42501") {
              ++pg_permanent;
            }
          }
        }
        EXPECT_EQ(redis_permanent, 10);
        EXPECT_EQ(pg_permanent, 10);
        EXPECT_EQ(redis.stats().breaker, ts::core::CircuitState::closed);
        EXPECT_EQ(redis.stats().breaker_trips, 0u);
        EXPECT_EQ(pg.stats().breaker, ts::core::CircuitState::closed);
        EXPECT_EQ(pg.stats().breaker_trips, 0u);
        co_await pg.close();
        co_await redis.close();
      },
      60s);
  // Ten XADDs, ten refusals: none was sent twice.
  EXPECT_EQ(Redis().denials("sf_recorder"), 10);
  // F65 with libpq: the recorder's role cannot drop ticks nor a partition, the janitor's can
  // drop a partition.
  Sql owner(dsn_of(kOwner));
  owner.run("SELECT ts_ensure_tick_partition(current_date - 20)");
  const std::string partition = "ticks_" + day_name(20);
  Sql recorder(dsn_of("sf_recorder"));
  EXPECT_EQ(recorder.state_of("DROP TABLE ticks"), "42501");
  EXPECT_EQ(recorder.state_of("DROP TABLE " + partition), "42501");
  EXPECT_EQ(recorder.state_of("SELECT count(*) FROM ticks"), "42501");
  EXPECT_EQ(recorder.state_of("CREATE TABLE sf_intruder (a int)"), "42501");
  Sql executor(dsn_of("sf_executor"));
  EXPECT_EQ(executor.state_of("DROP TABLE orders"), "42501");
  EXPECT_EQ(executor.state_of("INSERT INTO ticks (symbol, trade_id, price, qty, trade_time, "
                              "buyer_is_maker) VALUES ('X', 1, 1, 1, now(), true)"),
            "42501");
  // The janitor's role owns nothing: it drops an old partition through the owner's function.
  Sql janitor(dsn_of("sf_janitor"));
  EXPECT_EQ(janitor.state_of("DROP TABLE " + partition), "42501");
  EXPECT_EQ(janitor.state_of("SELECT ts_drop_tick_partition('" + partition + "')"), "");
  EXPECT_EQ(Sql(dsn_of(kOwner)).run("SELECT to_regclass('" + partition + "') IS NULL"), "t");
  (void)servers;
}

// F65, the janitor: its role drops old partitions of ticks and deletes old rows of them, through
// the owner's functions, and nothing else: no table of its own, no membership in the owner (no
// SET ROLE, no CREATE ROLE), no drop of ticks, orders or of a partition still in use.
TEST_F(SecurityFault, F65_TheJanitorsRoleDropsOldPartitionsAndNothingElse) {
  Sql owner(dsn_of(kOwner));
  owner.run("SELECT ts_ensure_tick_partition(current_date - 30)");
  const std::string old_partition = "ticks_" + day_name(30);
  const std::string today = "ticks_" + day_name(0);
  owner.run("SELECT ts_ensure_tick_partition(current_date)");
  owner.run("DELETE FROM ticks WHERE symbol = 'SFJAN'");
  owner.run(
      "INSERT INTO ticks (symbol, trade_id, price, qty, trade_time, buyer_is_maker) "
      "SELECT 'SFJAN', g, 1, 1, (current_date - 30)::timestamptz + g * interval '1 second', "
      "true "
      "FROM generate_series(1, 5) g");

  Sql janitor(dsn_of("sf_janitor"));
  EXPECT_EQ(janitor.state_of("DROP TABLE ticks"), "42501");
  EXPECT_EQ(janitor.state_of("DROP TABLE orders"), "42501");
  EXPECT_EQ(janitor.state_of("DROP TABLE fills"), "42501");
  EXPECT_EQ(janitor.state_of("DROP TABLE " + old_partition), "42501");
  EXPECT_EQ(janitor.state_of("DELETE FROM orders"), "42501");
  EXPECT_EQ(janitor.state_of(std::string("SET ROLE ") + kOwner), "42501");
  EXPECT_EQ(janitor.state_of("CREATE ROLE sf_janitor_intruder"), "42501");
  // The functions refuse anything but a partition of ticks, and a partition in use.
  EXPECT_EQ(janitor.state_of("SELECT ts_drop_tick_partition('orders')"), "42501");
  EXPECT_EQ(janitor.state_of("SELECT ts_drop_tick_partition('ticks')"), "42501");
  EXPECT_EQ(janitor.state_of("SELECT ts_drop_tick_partition('" + today + "')"), "42501");
  EXPECT_EQ(janitor.state_of("SELECT ts_delete_old_ticks('orders', now(), 10)"), "42501");
  EXPECT_EQ(
      janitor.state_of("SELECT ts_delete_old_ticks('" + today + "', now() + interval '1 day', 10)"),
      "42501");
  EXPECT_EQ(owner.count("SELECT count(*) FROM ticks WHERE symbol = 'SFJAN'"), 5);
  EXPECT_EQ(owner.run("SELECT to_regclass('orders') IS NOT NULL AND to_regclass('" + today +
                      "') IS NOT NULL"),
            "t");
  // What it may do: delete old rows (in batches) and drop an old partition.
  EXPECT_EQ(janitor.run("SELECT ts_delete_old_ticks('" + old_partition +
                        "', (current_date - 30)::timestamptz + interval '3.5 seconds', 2)"),
            "2");
  EXPECT_EQ(owner.count("SELECT count(*) FROM ticks WHERE symbol = 'SFJAN'"), 3);
  EXPECT_EQ(janitor.run("SELECT ts_drop_tick_partition('" + old_partition + "')"), "t");
  EXPECT_EQ(owner.run("SELECT to_regclass('" + old_partition + "') IS NULL"), "t");
  // Gone: the janitor's to_regclass gives NULL, a no-op (DROP TABLE IF EXISTS).
  EXPECT_EQ(janitor.run("SELECT ts_drop_tick_partition(to_regclass('" + old_partition + "'))"),
            "f");
  EXPECT_EQ(owner.count("SELECT count(*) FROM pg_roles WHERE rolname = 'sf_janitor_intruder'"), 0);
  owner.run("DELETE FROM ticks WHERE symbol = 'SFJAN'");
}

/// The entries of `stream` for order `id`: each one's status ("filled", "rejected"; "" when
/// it has none, as a request or a dead letter).
std::vector<std::string> order_entries(const std::string& stream, const std::string& id) {
  Redis redis;
  redisReply* reply = redis.raw({"XRANGE", stream, "-", "+"});
  std::vector<std::string> statuses;
  for (std::size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    std::string order;
    std::string status;
    for (std::size_t k = 0; k + 1 < fields->elements; k += 2) {
      const std::string name(fields->element[k]->str, fields->element[k]->len);
      const std::string value(fields->element[k + 1]->str, fields->element[k + 1]->len);
      if (name == "client_order_id") order = value;
      if (name == "status") status = value;
    }
    if (order == id) statuses.push_back(status);
  }
  freeReplyObject(reply);
  return statuses;
}

/// The events on orders:events for `id`: each one's status ("filled", "rejected").
std::vector<std::string> order_events(const std::string& id) {
  return order_entries(std::string(ts::services::kOrderEvents), id);
}

/// Occurrences of `needle` in `text`.
std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// F65 at ts-executor: its role loses INSERT on orders (42501). The refusal is about the
// executor's identity, not the order: the order is not published as rejected (nor recorded);
// it stays pending and is delivered again (also past --max-deliveries: a sink that refuses
// everyone makes no entry poison, so nothing is dead-lettered), and once INSERT is granted
// back it is claimed again and filled, exactly once.
TEST_F(SecurityFault, F65_AnOrderRefusedForAPrivilegeStaysPendingAndIsFilledAfterTheGrant) {
  auto& servers = ts::testing::Servers::instance();
  const std::string superuser = servers.postgres_dsn(kDatabase);
  Sql sql(superuser);
  // A new id per run: the events of an earlier run (--gtest_repeat) stay on the stream.
  static int run = 0;
  const std::string id = "sf-priv-" + std::to_string(::getpid()) + "-" + std::to_string(++run);
  const std::string symbol = "SFPRIVUSDT";
  sql.run("DELETE FROM fills WHERE client_order_id = '" + id + "'");
  sql.run("DELETE FROM orders WHERE client_order_id = '" + id + "'");
  Redis admin;
  const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  ASSERT_NE(admin.call({"HSET", ts::services::last_trade_key(symbol), symbol,
                        "10.5 1 " + std::to_string(now_ms)}),
            "ERR");
  // INSERT on orders is given back whatever happens below.
  struct Regrant {
    std::string dsn;
    ~Regrant() {
      try {
        Sql(dsn).run("GRANT INSERT ON orders TO sf_executor");
      } catch (const std::exception& e) {
        ADD_FAILURE() << "could not grant INSERT on orders back to sf_executor: " << e.what();
      }
    }
  } regrant{superuser};
  sql.run("REVOKE INSERT ON orders FROM sf_executor");
  ASSERT_EQ(sql.run("SELECT has_table_privilege('sf_executor', 'orders', 'INSERT')"), "f");

  admin.call({"XADD", std::string(ts::services::kOrderRequests), "*", "client_order_id", id,
              "symbol", symbol, "side", "buy", "type", "market", "qty", "2"});
  auto executor = spawn(dir_, "executor-priv",
                        {TS_EXECUTOR_BIN, "--consumer=sf-priv", "--symbols=" + symbol,
                         "--claim-min-idle=300ms", "--claim-interval=200ms", "--max-deliveries=2"},
                        identity_env("executor"));
  const std::string refused = "order " + id + ": refused: the executor's role lacks a privilege";
  // Refused, then delivered again and refused again, more often than --max-deliveries (or, the
  // defects, published at once or dead-lettered).
  const std::string dead = std::string(ts::services::kOrderRequests) + ":dead";
  EXPECT_TRUE(poll_until(
      [&] {
        return occurrences(executor.text(), refused) >= 4 || !order_events(id).empty() ||
               !order_entries(dead, id).empty();
      },
      20s))
      << executor.text();
  EXPECT_TRUE(order_entries(dead, id).empty())
      << "an order refused for a privilege was dead-lettered:\n"
      << executor.text();
  EXPECT_TRUE(order_events(id).empty())
      << "an event was published for an order refused for a privilege: "
      << ::testing::PrintToString(order_events(id)) << "\n"
      << executor.text();
  EXPECT_GE(occurrences(executor.text(), refused), 4u) << executor.text();
  EXPECT_EQ(sql.count("SELECT count(*) FROM orders WHERE client_order_id = '" + id + "'"), 0);

  sql.run("GRANT INSERT ON orders TO sf_executor");
  EXPECT_TRUE(poll_until(
      [&] {
        return sql.run("SELECT coalesce(max(status), '') FROM orders WHERE client_order_id = '" +
                       id + "'") == "filled";
      },
      20s))
      << executor.text();
  EXPECT_TRUE(poll_until([&] { return !order_events(id).empty(); }, 10s)) << executor.text();
  // Acknowledged: nothing pending in the executor's group.
  EXPECT_TRUE(poll_until(
      [&] {
        redisReply* reply =
            admin.raw({"XPENDING", std::string(ts::services::kOrderRequests), "executor"});
        const bool none = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                          reply->element[0]->integer == 0;
        freeReplyObject(reply);
        return none;
      },
      10s))
      << executor.text();
  EXPECT_EQ(executor.stop(), 0) << executor.text();
  EXPECT_EQ(sql.count("SELECT count(*) FROM orders WHERE client_order_id = '" + id + "'"), 1);
  EXPECT_EQ(sql.count("SELECT count(*) FROM fills WHERE client_order_id = '" + id + "'"), 1);
  const std::vector<std::string> events = order_events(id);
  EXPECT_EQ(events, std::vector<std::string>{"filled"}) << executor.text();
  EXPECT_EQ(executor.text().find("recording it as rejected"), std::string::npos) << executor.text();
  admin.call({"HDEL", ts::services::last_trade_key(symbol), symbol});
}

// tsctl migrate --roles-create: the roles exist with exactly their rights, a password only
// where a file gave one (set as a bound parameter: in no output), and it refuses a superuser.
TEST_F(SecurityFault, F65_MigrateCreatesTheRolesAndRefusesASuperuser) {
  auto& servers = ts::testing::Servers::instance();
  Sql admin(servers.postgres_dsn(kDatabase));
  EXPECT_EQ(admin.run("SELECT string_agg(rolname || '=' || (rolpassword IS NOT NULL)::text, ',' "
                      "ORDER BY rolname) FROM pg_authid WHERE rolname IN ('sf_recorder', "
                      "'sf_executor', 'sf_janitor', 'sf_status')"),
            "sf_executor=false,sf_janitor=false,sf_recorder=false,sf_status=true");
  EXPECT_EQ(migrate_output_.find(kRolePassword), std::string::npos) << migrate_output_;
  EXPECT_EQ(admin.run("SELECT has_table_privilege('sf_recorder', 'ticks', 'INSERT') AND NOT "
                      "has_table_privilege('sf_recorder', 'ticks', 'SELECT') AND "
                      "has_table_privilege('sf_executor', 'orders', 'SELECT, INSERT') AND NOT "
                      "has_table_privilege('sf_executor', 'orders', 'UPDATE, DELETE') AND "
                      "has_table_privilege('sf_status', 'ticks', 'SELECT') AND NOT "
                      "has_table_privilege('sf_status', 'orders', 'INSERT') AND "
                      "NOT pg_has_role('sf_janitor', 'sf_owner', 'MEMBER') AND NOT "
                      "pg_has_role('sf_recorder', 'sf_owner', 'MEMBER')"),
            "t");
  // The password went as a SCRAM-SHA-256 verifier computed by tsctl: it is in no statement
  // nor parameter the server logged, and the stored verifier is the password's.
  EXPECT_FALSE(migrate_server_log_.empty());
  const std::size_t leak = migrate_server_log_.find(kRolePassword);
  EXPECT_EQ(leak, std::string::npos)
      << "the server logged the password: ..."
      << migrate_server_log_.substr(leak < 160 ? 0 : leak - 160, 200);
  const std::string verifier =
      admin.run("SELECT rolpassword FROM pg_authid WHERE rolname = 'sf_status'");
  EXPECT_EQ(verifier.rfind("SCRAM-SHA-256$4096:", 0), 0u);
  EXPECT_TRUE(ts::services::scram_sha256_verifier_matches(verifier, kRolePassword));
  EXPECT_FALSE(ts::services::scram_sha256_verifier_matches(verifier, "Role-pw-sf-status-4e1e"));
  // The verifier is the one PostgreSQL computes itself (its salt and iterations, our code).
  admin.run("DROP ROLE IF EXISTS sf_scram_probe");
  admin.run("SET password_encryption = 'scram-sha-256'");
  admin.run("CREATE ROLE sf_scram_probe PASSWORD 'pencil'");
  const std::string by_server =
      admin.run("SELECT rolpassword FROM pg_authid WHERE rolname = 'sf_scram_probe'");
  admin.run("DROP ROLE sf_scram_probe");
  EXPECT_TRUE(ts::services::scram_sha256_verifier_matches(by_server, "pencil")) << by_server;
  EXPECT_FALSE(ts::services::scram_sha256_verifier_matches(by_server, "pencil2")) << by_server;
  // A janitor made a member of the owner by an earlier tsctl is removed from it.
  admin.run(std::string("GRANT ") + kOwner + " TO sf_janitor");
  const auto [again_code, again_output] = run_to_end(
      dir_, "migrate-again", {TS_TSCTL_BIN, "migrate", "--roles-create", "--roles-prefix=sf_"},
      {"TS_POSTGRES_DSN=" + dsn_of(kOwner)});
  EXPECT_EQ(again_code, 0) << again_output;
  EXPECT_EQ(admin.run("SELECT pg_has_role('sf_janitor', 'sf_owner', 'MEMBER')"), "f");
  const auto [code, output] = run_to_end(
      dir_, "migrate-superuser", {TS_TSCTL_BIN, "migrate", "--roles-create", "--roles-prefix=sf_"},
      {"TS_POSTGRES_DSN=" + servers.postgres_dsn(kDatabase)});
  EXPECT_NE(code, 0) << output;
  EXPECT_NE(output.find("not as a superuser"), std::string::npos) << output;
}

// ---- F66: secrets ----------------------------------------------------------------------------

/// Every process's command line (/proc/PID/cmdline, NULs as spaces) that we may read.
std::vector<std::string> all_command_lines() {
  std::vector<std::string> lines;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (!detail::is_pid_text(name)) continue;
    std::string text = read_file(entry.path().string() + "/cmdline");
    for (char& c : text) {
      if (c == '\0') c = ' ';
    }
    lines.push_back(std::move(text));
  }
  return lines;
}

// The password of a running service (from a file) is in no process's command line, no log
// line, no summary, no /metrics answer, no --help; a rotation (ACL SETUSER with the new
// password, then the file rewritten) takes effect on the next connection without a restart.
TEST_F(SecurityFault, F66_APasswordFromAFileNeverLeaksAndRotatesWithoutARestart) {
  auto& servers = ts::testing::Servers::instance();
  Sql sql(servers.postgres_dsn(kDatabase));
  Redis admin;
  // A user of its own (the recorder's rules), its password rotated below.
  const std::string user = "sf_rotating";
  const std::string old_password = "Old-Rot8-pW-5bb1e2";
  const std::string new_password = "New-Rot8-pW-93c0fa";
  std::vector<std::string> setuser{"ACL", "SETUSER", user, "reset", "on", ">" + old_password};
  for (const std::string_view rule : ts::services::tsctl::kRecorderRules) {
    setuser.emplace_back(rule);
  }
  ASSERT_EQ(admin.call(setuser), "OK");
  const std::string password_file = dir_ + "/redis-password";
  write_file(password_file, old_password);
  const std::uint16_t admin_port = ts::testing::free_loopback_port();
  const std::string summary_file = dir_ + "/rotating.json";
  const std::vector<std::string> env{"TS_REDIS_URL=" + redis_url_of(user),
                                     "TS_REDIS_PASSWORD_FILE=" + password_file,
                                     "TS_POSTGRES_DSN=" + dsn_of("sf_recorder")};
  auto recorder = spawn(
      dir_, "recorder-rotating",
      {TS_RECORDER_BIN, "--consumer=sf-rot", "--readers=1",
       "--admin-listen=127.0.0.1:" + std::to_string(admin_port), "--summary-file=" + summary_file},
      env);
  const std::string symbol = "SFROT";
  const std::string count = "SELECT count(*) FROM ticks WHERE symbol = '" + symbol + "'";
  sql.run("DELETE FROM ticks WHERE symbol = '" + symbol + "'");
  add_trades(symbol, 1, 20);
  ASSERT_TRUE(poll_until([&] { return sql.count(count) == 20; }, 30s)) << recorder.text();

  std::string metrics;
  ASSERT_TRUE(poll_until(
      [&] {
        const auto reply = ts::testing::admin::http_request(admin_port, "/metrics",
                                                            boost::beast::http::verb::get, 2s);
        metrics = reply.body;
        return reply.status == 200;
      },
      10s));
  EXPECT_NE(metrics.find("ts_"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find(old_password), std::string::npos);
  for (const std::string& line : all_command_lines()) {
    EXPECT_EQ(line.find(old_password), std::string::npos) << line;
  }
  EXPECT_EQ(read_file("/proc/" + std::to_string(recorder.pid) + "/environ").find(old_password),
            std::string::npos);

  // Rotation: the new password in Redis (the old one removed), the file rewritten, and the
  // recorder's connections closed: it reconnects with what the file holds now.
  ASSERT_EQ(admin.call({"ACL", "SETUSER", user, "resetpass", ">" + new_password}), "OK");
  write_file(password_file, new_password);
  const std::string killed = admin.call({"CLIENT", "KILL", "USER", user});
  EXPECT_NE(killed, "0") << "no connection of " << user << " to close";
  add_trades(symbol, 21, 20);
  EXPECT_TRUE(poll_until([&] { return sql.count(count) == 40; }, 30s))
      << sql.count(count) << " of 40 recorded after the rotation:\n"
      << recorder.text();
  // Connected again, as the user, with the new password (no restart: the same process).
  EXPECT_NE(admin.call({"CLIENT", "LIST", "USER", user}), "") << "no connection of " << user;
  EXPECT_EQ(::kill(recorder.pid, 0), 0);
  EXPECT_EQ(recorder.stop(), 0) << recorder.text();
  const std::string log = recorder.text();
  EXPECT_EQ(log.find("WRONGPASS"), std::string::npos) << log;
  for (const std::string& secret : {old_password, new_password}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << log;
    EXPECT_EQ(read_file(summary_file).find(secret), std::string::npos);
  }

  // --help with the secret in the environment, and the secret in argv: never printed; argv
  // gets a warning naming the flag.
  const std::string url_with_password = "redis://" + user + ":" + new_password + "@" +
                                        servers.redis_host() + ":" +
                                        std::to_string(servers.redis_port()) + "/0";
  for (const char* binary : {TS_RECORDER_BIN, TS_EXECUTOR_BIN, TS_JANITOR_BIN, TS_TSCTL_BIN}) {
    const auto [code, output] =
        run_to_end(dir_, "help", {binary, "--help"}, {"TS_REDIS_URL=" + url_with_password});
    EXPECT_EQ(code, 0) << output;
    EXPECT_EQ(output.find(new_password), std::string::npos) << output;
  }
  const auto [code, output] =
      run_to_end(dir_, "argv", {TS_TSCTL_BIN, "acl", "--redis-url=" + url_with_password}, {});
  EXPECT_EQ(code, 0) << output;
  EXPECT_EQ(output.find(new_password), std::string::npos) << output;
  EXPECT_NE(output.find("--redis-url carries a secret on the command line, visible in ps: use "
                        "--redis-url-file or TS_REDIS_URL_FILE"),
            std::string::npos)
      << output;
  // A service warns once at start, in its log.
  const std::string janitor_url = "redis://sf_janitor:" + password_of("sf_janitor") + "@" +
                                  servers.redis_host() + ":" +
                                  std::to_string(servers.redis_port()) + "/0";
  const auto [janitor_code, janitor_output] =
      run_to_end(dir_, "janitor-argv", {TS_JANITOR_BIN, "--redis-url=" + janitor_url},
                 {"TS_POSTGRES_DSN=" + dsn_of("sf_janitor")});
  EXPECT_EQ(janitor_code, 0) << janitor_output;
  EXPECT_EQ(janitor_output.find(password_of("sf_janitor")), std::string::npos) << janitor_output;
  std::size_t warnings = 0;
  for (std::size_t at = janitor_output.find("--redis-url carries a secret");
       at != std::string::npos; at = janitor_output.find("--redis-url carries a secret", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << janitor_output;
  admin.call({"ACL", "DELUSER", user});
}

// F66 for PostgreSQL: a DSN with `passfile=` (and no password) makes libpq read the password
// file at every new connection, so a rotated password (ALTER ROLE, then the file rewritten)
// is used by the next connection of the same client, without a restart.
TEST_F(SecurityFault, F66_APostgresPassfileRotatesWithoutARestart) {
  auto& servers = ts::testing::Servers::instance();
  const std::string passfile = dir_ + "/pgpass";
  const std::string role = ts::testing::kSecureRole;  // SCRAM on 127.0.0.1 (the harness)
  const std::string new_password = "New-pg-Pw-71c4aa";
  write_file(passfile, "*:*:*:" + role + ":" + ts::testing::kSecurePassword);
  Sql admin(servers.postgres_dsn());
  bool rotated = false;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        ts::pg::PostgresConfig config;
        config.dsn = servers.postgres_dsn_for(role, "", "postgres") + " passfile=" + passfile;
        config.max_size = 1;
        config.min_size = 1;
        ts::pg::PostgresClient pg(io.get_executor(), config);
        co_await pg.start();
        const auto first = co_await pg.query_value<std::int32_t>("SELECT pg_backend_pid()");
        admin.run("ALTER ROLE " + role + " PASSWORD '" + new_password + "'");
        rotated = true;
        write_file(passfile, "*:*:*:" + role + ":" + new_password);
        admin.run("SELECT pg_terminate_backend(" + std::to_string(first) + ")");
        // The client notices the closed connection and opens another, with the new password.
        std::int32_t second = first;
        const auto deadline = Clock::now() + 15s;
        while (second == first && Clock::now() < deadline) {
          bool failed = false;
          try {
            second = co_await pg.query_value<std::int32_t>("SELECT pg_backend_pid()");
          } catch (const ts::Error& e) {
            EXPECT_EQ(std::string(e.what()).find(new_password), std::string::npos) << e.what();
            failed = true;
          }
          if (failed) co_await ts::testing::pause_for(50ms);
        }
        EXPECT_NE(second, first) << "no new connection within 15 s";
        EXPECT_EQ(pg.stats().breaker_trips, 0u);
        co_await pg.close();
      },
      60s);
  if (rotated) {
    // The old password is refused now (SCRAM on 127.0.0.1): the new connection above used the
    // file's new one.
    EXPECT_THROW(Sql(servers.postgres_dsn_for(role, ts::testing::kSecurePassword, "postgres")),
                 std::runtime_error);
    admin.run("ALTER ROLE " + role + " PASSWORD '" + ts::testing::kSecurePassword + "'");
  }
}

}  // namespace

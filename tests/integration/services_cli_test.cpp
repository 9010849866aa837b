// tsctl and ts-janitor run as processes (spawn_process) against the harness's PostgreSQL and
// Redis: exit codes, what they print, and what they leave in the servers. Each test has its
// own database (create_database) and its own Redis db number.
#include "common/keys.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef TS_TSCTL
#error "TS_TSCTL (path of the tsctl binary) must be defined by CMake"
#endif
#ifndef TS_JANITOR
#error "TS_JANITOR (path of the ts-janitor binary) must be defined by CMake"
#endif
#if !defined(TS_RECORDER) || !defined(TS_EXECUTOR) || !defined(TS_RECEIVER) || !defined(TS_FEED_SIM)
#error "TS_RECORDER, TS_EXECUTOR, TS_RECEIVER and TS_FEED_SIM must be defined by CMake"
#endif
#ifndef TS_TEST_FAULTS
#error "TS_TEST_FAULTS (0 or 1, the CMake option) must be defined by CMake"
#endif

namespace ts = trading_shared;
namespace tt = trading_shared::testing;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

constexpr const char* kTsctl = TS_TSCTL;
constexpr const char* kJanitor = TS_JANITOR;
constexpr const char* kRecorder = TS_RECORDER;
constexpr const char* kExecutor = TS_EXECUTOR;
constexpr const char* kReceiver = TS_RECEIVER;
constexpr const char* kFeedSim = TS_FEED_SIM;

// ---- processes ---------------------------------------------------------------------------------

/// Where the runs' logs go: a directory of this binary's harness directory (removed at exit).
const std::string& work_directory() {
  static const std::string dir = [] {
    std::string path = tt::Servers::instance().directory() + "/cli";
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      throw std::runtime_error("mkdir " + path + ": " + std::strerror(errno));
    }
    return path;
  }();
  return dir;
}

std::string next_path(const std::string& stem) {
  static int counter = 0;
  return work_directory() + "/" + stem + "-" + std::to_string(++counter);
}

struct ToolRun {
  bool exited = false;  ///< exited by itself (not a signal, not killed at the timeout).
  int code = -1;
  std::string output;  ///< stdout and stderr, interleaved.
  std::chrono::milliseconds took{0};
};

std::string describe(const ToolRun& run) {
  return "exit " + std::to_string(run.code) + " after " + std::to_string(run.took.count()) +
         " ms, output:\n" + run.output;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return lines;
}

class Child {
 public:
  Child(const std::string& program, const std::vector<std::string>& args,
        const std::vector<std::string>& env)
      : log_(next_path("run") + ".log"), start_(std::chrono::steady_clock::now()) {
    tt::detail::SpawnRequest request;
    request.argv.push_back(program);
    request.argv.insert(request.argv.end(), args.begin(), args.end());
    request.directory = work_directory();
    request.log_file = log_;
    request.user = tt::detail::ServerUser{};  // run as ourselves
    // A stray TS_* of the caller's environment must not change the runs ("" counts as unset).
    request.extra_env = {"TS_LOG_LEVEL=",
                         "TS_RECEIVER_SYMBOLS=",
                         "TS_FEED_SIM_SYMBOLS=",
                         "TS_RECEIVER_CONFIG=",
                         "TS_RECORDER_CONFIG=",
                         "TS_EXECUTOR_CONFIG=",
                         "TS_JANITOR_CONFIG=",
                         "TS_FEED_SIM_CONFIG=",
                         "TS_TSCTL_CONFIG=",
                         "TS_RECORDER_ADMIN_LISTEN=",
                         "TS_RECEIVER_ADMIN_LISTEN=",
                         "TS_EXECUTOR_ADMIN_LISTEN="};
    request.extra_env.insert(request.extra_env.end(), env.begin(), env.end());
    pid_ = tt::detail::spawn_process(request);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {  // a test failed half-way: do not leave it behind
      ::kill(pid_, SIGKILL);
      (void)tt::detail::wait_child(pid_, std::chrono::steady_clock::now() + 5s);
    }
  }

  /// The file its stdout and stderr go to.
  const std::string& log() const { return log_; }

  /// Waits for the exit (killing the child at `timeout`) and reads its output.
  ToolRun finish(std::chrono::milliseconds timeout = 60s) {
    ToolRun run;
    auto status = tt::detail::wait_child(pid_, start_ + timeout);
    if (!status) {
      ADD_FAILURE() << "child " << pid_ << " still running after " << timeout.count()
                    << " ms: killed";
      ::kill(pid_, SIGKILL);
      status = tt::detail::wait_child(pid_, std::chrono::steady_clock::now() + 5s);
    }
    pid_ = -1;
    run.took = tt::elapsed_ms(start_);
    if (status && WIFEXITED(*status)) {
      run.exited = true;
      run.code = WEXITSTATUS(*status);
    }
    run.output = tt::detail::file_size_or_zero(log_) > 0 ? tt::detail::read_text_file(log_) : "";
    return run;
  }

 private:
  std::string log_;
  std::chrono::steady_clock::time_point start_;
  pid_t pid_ = -1;
};

ToolRun run(const std::string& program, const std::vector<std::string>& args,
            const std::vector<std::string>& env = {}, std::chrono::milliseconds timeout = 60s) {
  Child child(program, args, env);
  return child.finish(timeout);
}

// ---- servers -----------------------------------------------------------------------------------

std::string pg_dsn(const std::string& database) {
  return tt::Servers::instance().postgres_dsn(tt::Servers::instance().create_database(database));
}

std::string redis_url(int db) {
  return tt::Servers::instance().redis_url() + "/" + std::to_string(db);
}

std::vector<std::string> env_for(const std::string& database, int redis_db) {
  return {"TS_POSTGRES_DSN=" + pg_dsn(database), "TS_REDIS_URL=" + redis_url(redis_db)};
}

/// A synchronous libpq connection for checking and preparing data.
class Pg {
 public:
  explicit Pg(const std::string& database)
      : connection_(PQconnectdb((pg_dsn(database) + " connect_timeout=10").c_str()), &PQfinish) {
    if (PQstatus(connection_.get()) != CONNECTION_OK) {
      throw std::runtime_error(std::string("connect: ") + PQerrorMessage(connection_.get()));
    }
  }
  /// Runs `sql` (one or more statements); returns the first column of the first row of the
  /// last result, or nullopt when it has no rows or NULL there.
  std::optional<std::string> value(const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(connection_.get(), sql.c_str()),
                                                         &PQclear);
    const auto status = PQresultStatus(result.get());
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      throw std::runtime_error(sql + ": " + PQerrorMessage(connection_.get()));
    }
    if (PQntuples(result.get()) == 0 || PQgetisnull(result.get(), 0, 0) != 0) return std::nullopt;
    return std::string(PQgetvalue(result.get(), 0, 0));
  }
  void exec(const std::string& sql) { (void)value(sql); }

 private:
  std::unique_ptr<PGconn, decltype(&PQfinish)> connection_;
};

using RedisReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

/// A synchronous hiredis connection to one db of the harness's Redis.
class Redis {
 public:
  enum class Flush : bool { no, yes };
  explicit Redis(int db, Flush flush = Flush::yes) : context_(nullptr, &redisFree) {
    auto& servers = tt::Servers::instance();
    const timeval timeout{10, 0};
    context_.reset(
        redisConnectWithTimeout(servers.redis_host().c_str(), servers.redis_port(), timeout));
    if (!context_ || context_->err != 0) {
      throw std::runtime_error("redis connect: " +
                               std::string(context_ ? context_->errstr : "out of memory"));
    }
    (void)redisSetTimeout(context_.get(), timeout);
    command({"SELECT", std::to_string(db)});
    if (flush == Flush::yes) command({"FLUSHDB"});
  }
  RedisReplyPtr command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    RedisReplyPtr reply(
        static_cast<redisReply*>(redisCommandArgv(context_.get(), static_cast<int>(argv.size()),
                                                  argv.data(), lengths.data())),
        &freeReplyObject);
    if (!reply) throw std::runtime_error("redis: " + std::string(context_->errstr));
    if (reply->type == REDIS_REPLY_ERROR) {
      throw std::runtime_error("redis " + args[0] + ": " + std::string(reply->str, reply->len));
    }
    return reply;
  }
  long long integer(const std::vector<std::string>& args) { return command(args)->integer; }

 private:
  std::unique_ptr<redisContext, decltype(&redisFree)> context_;
};

/// The field values of a flat [name, value, ...] reply.
std::optional<std::string> field(const redisReply* pairs, const std::string& name) {
  for (std::size_t i = 0; i + 1 < pairs->elements; i += 2) {
    const redisReply* key = pairs->element[i];
    if (key->type == REDIS_REPLY_STRING && std::string(key->str, key->len) == name) {
      const redisReply* v = pairs->element[i + 1];
      if (v->type == REDIS_REPLY_INTEGER) return std::to_string(v->integer);
      if (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS) {
        return std::string(v->str, v->len);
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::vector<std::string> consumer_names(Redis& redis, const std::string& stream,
                                        const std::string& group) {
  std::vector<std::string> names;
  const auto reply = redis.command({"XINFO", "CONSUMERS", stream, group});
  for (std::size_t i = 0; i < reply->elements; ++i) {
    if (auto name = field(reply->element[i], "name")) names.push_back(*name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void migrate(const std::string& database) {
  const ToolRun r = run(kTsctl, {"migrate"}, env_for(database, 0));
  ASSERT_EQ(r.code, 0) << describe(r);
}

// ---- tsctl migrate -----------------------------------------------------------------------------

TEST(TsctlMigrate, SecondRunAppliesNothing) {
  const auto env = env_for("cli_migrate", 0);
  const ToolRun first = run(kTsctl, {"migrate"}, env);
  ASSERT_EQ(first.code, 0) << describe(first);
  EXPECT_THAT(first.output, HasSubstr("applied 3 migration(s), schema at version 3"));
  const ToolRun second = run(kTsctl, {"migrate"}, env);
  ASSERT_EQ(second.code, 0) << describe(second);
  EXPECT_THAT(second.output, HasSubstr("applied 0 migration(s), schema at version 3"));

  Pg pg("cli_migrate");
  EXPECT_EQ(
      pg.value("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"),
      "1,2,3");
  EXPECT_EQ(pg.value("SELECT name FROM schema_migrations WHERE version = 1"),
            "ticks, orders, fills");
  // The whole script ran, the plpgsql function and the partitions it creates included.
  EXPECT_EQ(pg.value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ticks'::regclass"), "4");
  EXPECT_EQ(pg.value("SELECT to_regclass('fills') IS NOT NULL"), "t");
  // Version 2: the partition function runs as its owner with a fixed search_path, and only
  // the roles granted EXECUTE may call it (docs/services.md, "What to provision").
  EXPECT_EQ(pg.value("SELECT prosecdef::text || ' ' || array_to_string(proconfig, ';') FROM "
                     "pg_proc WHERE oid = 'ts_ensure_tick_partition(date)'::regprocedure"),
            "true search_path=public, pg_temp");
  EXPECT_EQ(pg.value("SELECT has_function_privilege('public', "
                     "'ts_ensure_tick_partition(date)', 'EXECUTE')"),
            "f");
  // Version 3: the janitor's functions, the same way.
  for (const char* function :
       {"ts_drop_tick_partition(regclass)", "ts_delete_old_ticks(regclass, timestamptz, bigint)"}) {
    EXPECT_EQ(pg.value(std::string("SELECT prosecdef::text || ' ' || array_to_string(proconfig, "
                                   "';') FROM pg_proc WHERE oid = '") +
                       function + "'::regprocedure"),
              "true search_path=public, pg_temp")
        << function;
    EXPECT_EQ(pg.value(std::string("SELECT has_function_privilege('public', '") + function +
                       "', 'EXECUTE')"),
              "f")
        << function;
  }
}

TEST(TsctlMigrate, ConcurrentMigratesOnAFreshDatabaseApplyTheSchemaOnce) {
  const auto env = env_for("cli_migrate_concurrent", 0);
  Child a(kTsctl, {"migrate"}, env);
  Child b(kTsctl, {"migrate"}, env);
  const ToolRun ra = a.finish();
  const ToolRun rb = b.finish();
  ASSERT_EQ(ra.code, 0) << describe(ra);
  ASSERT_EQ(rb.code, 0) << describe(rb);
  // Each migration is applied once, by one of them (each in its own transaction under the
  // lock: with two migrations they may share the work); both end at the last version.
  auto applied = [](const std::string& output) {
    const std::size_t at = output.find("applied ");
    return at == std::string::npos ? -1 : std::stoi(output.substr(at + 8));
  };
  EXPECT_EQ(applied(ra.output) + applied(rb.output), 3) << ra.output << rb.output;
  EXPECT_THAT(ra.output, HasSubstr("migration(s), schema at version 3")) << ra.output;
  EXPECT_THAT(rb.output, HasSubstr("migration(s), schema at version 3")) << rb.output;

  Pg pg("cli_migrate_concurrent");
  EXPECT_EQ(pg.value("SELECT count(*) FROM schema_migrations"), "3");
  EXPECT_EQ(pg.value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ticks'::regclass"), "4");
}

// ---- configuration -----------------------------------------------------------------------------

TEST(ServicesCliConfig, BadInputExitsTwoWithOneClearLine) {
  struct Case {
    const char* program;
    std::vector<std::string> args;
    const char* mentions;
  };
  const std::vector<std::string> order = {"submit-order", "--symbol", "BTCUSDT", "--side",
                                          "buy",          "--type",   "market"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = order;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::vector<Case> cases = {
      {kTsctl, {"frobnicate"}, "unknown command \"frobnicate\""},
      {kTsctl, {}, "missing command"},
      {kTsctl, {"migrate", "status"}, "unexpected argument"},
      {kTsctl, with({"--qty", "abc"}), "--qty"},
      {kTsctl, with({"--qty", "0"}), "--qty"},
      {kTsctl, with({"--qty", "-1"}), "--qty"},
      {kTsctl, with({}), "--qty"},
      {kTsctl,
       {"submit-order", "--symbol", "BTCUSDT", "--side", "hold", "--type", "market", "--qty", "1"},
       "--side"},
      {kTsctl,
       {"submit-order", "--symbol", "BTCUSDT", "--side", "buy", "--type", "limit", "--qty", "1"},
       "--limit-price"},
      {kTsctl, {"load-orders", "--rate", "0", "--count", "10"}, "--rate"},
      {kTsctl, {"status", "--no-such-flag"}, "--no-such-flag"},
      {kJanitor, {"--retention", "soon"}, "--retention"},
      {kJanitor, {"--delete-batch", "0"}, "--delete-batch"},
  };
  for (const Case& c : cases) {
    // Nothing is connected before the configuration is checked: unreachable servers are fine.
    const ToolRun r =
        run(c.program, c.args,
            {"TS_POSTGRES_DSN=host=127.0.0.1 port=1", "TS_REDIS_URL=redis://127.0.0.1:1"}, 20s);
    std::string what = c.program;
    for (const auto& a : c.args) what += " " + a;
    EXPECT_EQ(r.code, 2) << what << ": " << describe(r);
    const auto lines = lines_of(r.output);
    ASSERT_EQ(lines.size(), 1u) << what << ": " << describe(r);
    EXPECT_THAT(lines[0], HasSubstr("configuration error")) << what;
    EXPECT_THAT(lines[0], HasSubstr(c.mentions)) << what;
  }
}

/// A TCP port on 127.0.0.1 that listens and never answers: counts the connections made to it
/// (a client that connects is caught even though its handshake never completes).
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd_);
      throw std::runtime_error("listen: " + why);
    }
    port_ = ntohs(address.sin_port);
  }
  ~Listener() { ::close(fd_); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  std::uint16_t port() const { return port_; }
  /// Connections accepted since the last call (each is closed at once).
  int take_connections() {
    int n = 0;
    for (;;) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return n;
      ::close(c);
      ++n;
    }
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// Issue 14: "exit 2, one line, before anything connects" for every bad configuration of every
// service, the client settings included (the Redis URL, the pool size, the command timeout, a
// missing DSN), and the same symbol rules everywhere. PostgreSQL and Redis are listeners that
// never answer: a service that connects before checking is caught by the count (and would be
// killed at the per-run timeout).
TEST(ServicesCliConfig, EveryServiceRejectsABadClientConfigurationWithExitTwoBeforeConnecting) {
  Listener postgres;
  Listener redis;
  const std::string dsn = "host=127.0.0.1 port=" + std::to_string(postgres.port()) +
                          " dbname=x user=x password=pgsecret connect_timeout=2";
  const std::string url = "redis://:redissecret@127.0.0.1:" + std::to_string(redis.port()) + "/0";
  struct Case {
    const char* program;
    std::vector<std::string> args;
    const char* mentions;
    std::vector<std::string> env = {};  ///< replaces the default DSN / URL variables
  };
  const std::vector<std::string> no_dsn = {"TS_POSTGRES_DSN=", "TS_REDIS_URL=" + url};
  const std::string http_url = "http://user:redissecret@127.0.0.1:6379";
  const std::string big_port = "redis://127.0.0.1:99999";
  const std::vector<Case> cases = {
      {kRecorder, {"--redis-url", http_url}, "--redis-url"},
      {kRecorder, {"--redis-url", big_port}, "--redis-url"},
      {kRecorder, {"--postgres-pool-size", "0"}, "--postgres-pool-size"},
      {kRecorder, {"--redis-command-timeout", "0"}, "--redis-command-timeout"},
      {kRecorder, {"--postgres-connect-timeout", "0"}, "--postgres-connect-timeout"},
      {kRecorder, {"--postgres-dsn", "hots=127.0.0.1"}, "--postgres-dsn"},
      {kRecorder, {"--postgres-dsn", "host=127.0.0.1 port=99999"}, "--postgres-dsn"},
      {kRecorder, {"--symbols", "BTC USD"}, "--symbols"},
      {kExecutor, {"--redis-url", http_url}, "--redis-url"},
      {kExecutor, {"--redis-url", big_port}, "--redis-url"},
      {kExecutor, {"--postgres-pool-size", "0"}, "--postgres-pool-size"},
      {kExecutor, {"--redis-command-timeout", "0"}, "--redis-command-timeout"},
      {kExecutor, {"--symbols", "BTC USD"}, "--symbols"},
      {kExecutor, {"--symbols", "BTCUSDT,BTCUSDT"}, "--symbols"},
      {kJanitor, {"--redis-url", http_url}, "--redis-url"},
      {kJanitor, {"--redis-url", big_port}, "--redis-url"},
      {kJanitor, {"--postgres-pool-size", "0"}, "--postgres-pool-size"},
      {kJanitor, {}, "--postgres-dsn", no_dsn},
      {kTsctl, {"status", "--redis-url", http_url}, "--redis-url"},
      {kTsctl, {"status", "--redis-url", big_port}, "--redis-url"},
      {kTsctl, {"status", "--redis-command-timeout", "0"}, "--redis-command-timeout"},
      {kTsctl, {"status"}, "--postgres-dsn", no_dsn},
      {kTsctl, {"migrate"}, "--postgres-dsn", no_dsn},
      {kTsctl, {"migrate", "--postgres-pool-size", "0"}, "--postgres-pool-size"},
      {kTsctl, {"load-orders", "--redis-url", http_url}, "--redis-url"},
      {kReceiver, {"--redis-url", http_url}, "--redis-url"},
      {kReceiver, {"--redis-command-timeout", "0"}, "--redis-command-timeout"},
      {kReceiver, {"--symbols", "BTC USD"}, "--symbols"},
      {kFeedSim, {"--rate", "0"}, "--rate"},
      {kFeedSim, {"--listen", "127.0.0.1"}, "--listen"},
      {kFeedSim, {"--symbols", "BTC USD"}, "--symbols"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> env = c.env;
    if (env.empty()) env = {"TS_POSTGRES_DSN=" + dsn, "TS_REDIS_URL=" + url};
    const ToolRun r = run(c.program, c.args, env, 15s);
    std::string what = c.program;
    for (const auto& a : c.args) what += " " + a;
    EXPECT_EQ(r.code, 2) << what << ": " << describe(r);
    const auto lines = lines_of(r.output);
    std::cout << "[ CASE ] " << what << " -> "
              << (r.exited ? "exit " + std::to_string(r.code) : "killed") << " after "
              << r.took.count() << " ms, " << lines.size()
              << " line(s): " << (lines.empty() ? "" : lines[0].substr(0, 160)) << std::endl;
    EXPECT_EQ(lines.size(), 1u) << what << ": " << describe(r);
    if (!lines.empty()) {
      EXPECT_THAT(lines[0], HasSubstr("configuration error")) << what << ": " << describe(r);
      EXPECT_THAT(lines[0], HasSubstr(c.mentions)) << what << ": " << describe(r);
    }
    EXPECT_THAT(r.output, ::testing::Not(HasSubstr("secret"))) << what << ": " << describe(r);
    EXPECT_EQ(postgres.take_connections(), 0) << what << ": connected to PostgreSQL";
    EXPECT_EQ(redis.take_connections(), 0) << what << ": connected to Redis";
  }
}

// F54: stop budgets that cannot add up (a drain plus the clients' closes longer than the whole
// shutdown budget) are refused at start with exit 2 and one line naming the figures, before
// anything connects; a graceful stop would otherwise turn into an immediate one (exit 1).
TEST(ServicesCliConfig, F54_AStopBudgetThatCannotAddUpIsRefusedAtStart) {
  Listener postgres;
  Listener redis;
  const std::vector<std::string> env = {
      "TS_POSTGRES_DSN=host=127.0.0.1 port=" + std::to_string(postgres.port()) +
          " dbname=x user=x connect_timeout=2",
      "TS_REDIS_URL=redis://127.0.0.1:" + std::to_string(redis.port())};
  struct Case {
    const char* program;
    std::vector<std::string> args;
  };
  const std::vector<Case> cases = {
      {kRecorder, {"--drain-timeout", "30s"}},
      {kRecorder, {"--drain-timeout", "9s", "--shutdown-timeout", "12s"}},
      {kExecutor, {"--drain-timeout", "15s"}},
      {kReceiver, {"--drain-timeout", "18s"}},
  };
  for (const Case& c : cases) {
    const ToolRun r = run(c.program, c.args, env, 15s);
    std::string what = c.program;
    for (const auto& a : c.args) what += " " + a;
    const auto lines = lines_of(r.output);
    std::cout << "[ CASE ] " << what << " -> "
              << (r.exited ? "exit " + std::to_string(r.code) : "killed") << " after "
              << r.took.count() << " ms, " << lines.size()
              << " line(s): " << (lines.empty() ? "" : lines[0].substr(0, 200)) << std::endl;
    EXPECT_EQ(r.code, 2) << what << ": " << describe(r);
    EXPECT_EQ(lines.size(), 1u) << what << ": " << describe(r);
    EXPECT_THAT(r.output, HasSubstr("the stop budget does not add up")) << what;
    EXPECT_THAT(r.output, HasSubstr("--shutdown-timeout")) << what;
    EXPECT_EQ(postgres.take_connections() + redis.take_connections(), 0) << what << ": connected";
  }
  // The defaults add up (a run that gets past the settings step connects: killed here).
  Child ok(kRecorder, {"--drain-timeout", "10s"}, env);
  EXPECT_TRUE(tt::poll_until([&] { return postgres.take_connections() > 0; }, 10s))
      << "ts-recorder --drain-timeout 10s (10 + 7 + 3 <= 20) did not get as far as connecting";
}

// The test-only fault switches exist only in a build with the CMake option TS_TEST_FAULTS (the
// default, and what make test / make sanitize build); with -DTS_TEST_FAULTS=OFF (a release)
// the flags are unknown: exit 2, one line, like any other unknown flag.
TEST(ServicesCliConfig, FaultSwitchesExistOnlyInATestFaultsBuild) {
  struct Case {
    const char* program;
    const char* flag;
  };
  const std::vector<Case> cases = {{kRecorder, "--fault-crash-after-commit"},
                                   {kRecorder, "--fault-crash-before-commit"},
                                   {kExecutor, "--fault-crash-after-commit"}};
  for (const Case& c : cases) {
    const ToolRun help = run(c.program, {"--help"}, {}, 15s);
    ASSERT_EQ(help.code, 0) << describe(help);
    // A flag that is set must be refused (release) or accepted (test build) before anything
    // connects: a negative count is a configuration error only where the flag exists.
    const ToolRun set =
        run(c.program, {c.flag, "-1"},
            {"TS_POSTGRES_DSN=host=127.0.0.1 port=1", "TS_REDIS_URL=redis://127.0.0.1:1"}, 15s);
    const auto lines = lines_of(set.output);
    std::cout << "[ CASE ] " << c.program << " " << c.flag << " -1 -> exit " << set.code << ": "
              << (lines.empty() ? "" : lines[0]) << std::endl;
    EXPECT_EQ(set.code, 2) << describe(set);
    EXPECT_EQ(lines.size(), 1u) << describe(set);
    if (TS_TEST_FAULTS) {
      EXPECT_THAT(help.output, HasSubstr(c.flag)) << c.program;
      EXPECT_THAT(set.output, HasSubstr("must be >= 0")) << describe(set);
    } else {
      EXPECT_THAT(help.output, ::testing::Not(HasSubstr("--fault-"))) << c.program;
      EXPECT_THAT(set.output, HasSubstr("unknown option")) << describe(set);
      // Nor is its environment variable read (a stray one is ignored like any unknown one).
      const std::string var =
          std::string(c.program == kRecorder ? "TS_RECORDER_" : "TS_EXECUTOR_") +
          "FAULT_CRASH_AFTER_COMMIT=1";
      const ToolRun env = run(c.program, {"--batch", "0"}, {var}, 15s);
      EXPECT_EQ(env.code, 2) << describe(env);
      EXPECT_THAT(env.output, HasSubstr("--batch")) << describe(env);
    }
  }
}

// ---- tsctl submit-order / load-orders / status -------------------------------------------------

TEST(TsctlSubmitOrder, AddsARequestWithTheFields) {
  Redis redis(1);
  const auto env = env_for("cli_test", 1);
  const ToolRun limit =
      run(kTsctl,
          {"submit-order", "--symbol", "BTCUSDT", "--side", "buy", "--type", "limit", "--qty",
           "0.25", "--limit-price", "65000.5", "--client-order-id", "test-limit-1"},
          env);
  ASSERT_EQ(limit.code, 0) << describe(limit);
  EXPECT_THAT(limit.output, HasSubstr("submitted order test-limit-1 as orders:requests "));
  const ToolRun market = run(
      kTsctl,
      {"submit-order", "--symbol", "ETHUSDT", "--side", "sell", "--type", "market", "--qty", "3"},
      env);
  ASSERT_EQ(market.code, 0) << describe(market);

  const auto entries = redis.command({"XRANGE", "orders:requests", "-", "+"});
  ASSERT_EQ(entries->elements, 2u);
  const redisReply* first = entries->element[0]->element[1];
  EXPECT_EQ(field(first, "client_order_id"), "test-limit-1");
  EXPECT_EQ(field(first, "symbol"), "BTCUSDT");
  EXPECT_EQ(field(first, "side"), "buy");
  EXPECT_EQ(field(first, "type"), "limit");
  EXPECT_EQ(field(first, "qty"), "0.25");
  EXPECT_EQ(field(first, "limit_price"), "65000.5");
  ASSERT_TRUE(field(first, "submitted_at"));
  EXPECT_GT(std::stoll(*field(first, "submitted_at")), 1'600'000'000'000LL);
  // The printed stream id is the entry's.
  const std::string first_id(entries->element[0]->element[0]->str,
                             entries->element[0]->element[0]->len);
  EXPECT_THAT(limit.output, HasSubstr(first_id));

  const redisReply* second = entries->element[1]->element[1];
  ASSERT_TRUE(field(second, "client_order_id"));
  EXPECT_THAT(*field(second, "client_order_id"), ::testing::StartsWith("cli-"));
  EXPECT_EQ(field(second, "type"), "market");
  EXPECT_EQ(field(second, "limit_price"), std::nullopt);
}

TEST(TsctlLoadOrders, SubmitsCountOrdersAtTheRateAndWritesItsSummary) {
  Redis redis(2);
  redis.command(
      {"HSET", ts::services::last_trade_key("BTCUSDT"), "BTCUSDT", "65000.00 1 1700000000000"});
  const std::string summary = next_path("load") + ".json";
  const ToolRun r = run(kTsctl,
                        {"load-orders", "--count", "200", "--rate", "1000", "--seed", "7",
                         "--reject-every", "10", "--summary-file", summary},
                        env_for("cli_test", 2));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_THAT(r.output, HasSubstr("submitted 200 order(s) (20 invalid on purpose)"));
  EXPECT_EQ(redis.integer({"XLEN", "orders:requests"}), 200);
  // The pacing: order k (0-based) is due k / rate after the run started, so 200 at 1000/s
  // cannot end before 199 ms after the spawn (an exact bound: lateness only adds to it). A
  // pacer that sends everything at once takes a few ms.
  EXPECT_GE(r.took, 199ms) << "200 orders at 1000/s sent faster than the rate";
  EXPECT_LT(r.took, 20s);
  {
    // Seen by the server: the stream ids are Redis's own milliseconds. The last order is added
    // at least 199 ms after the first unless the first was late and the run caught up (at most
    // one second's worth per tick): half of it leaves 99 ms for that, a burst takes ~1 ms.
    const auto ids = redis.command({"XRANGE", "orders:requests", "-", "+"});
    ASSERT_EQ(ids->elements, 200u);
    const auto millis = [&](std::size_t i) {
      return std::stoll(std::string(ids->element[i]->element[0]->str));
    };
    EXPECT_GE(millis(199) - millis(0), 100)
        << "the server saw the 200 orders within " << millis(199) - millis(0) << " ms";
  }

  const std::string json = tt::detail::read_text_file(summary);
  EXPECT_THAT(json, HasSubstr("\"submitted\":200"));
  EXPECT_THAT(json, HasSubstr("\"first_id\":\"load-7-1\""));
  EXPECT_THAT(json, HasSubstr("\"last_id\":\"load-7-200\""));
  EXPECT_THAT(json, HasSubstr("\"invalid_sent\":20"));

  // Ids are unique and in order; every 10th is invalid (qty 0 or an unknown symbol); some
  // limit orders on the symbol with a last price; deterministic by seed.
  const auto entries = redis.command({"XRANGE", "orders:requests", "-", "+"});
  ASSERT_EQ(entries->elements, 200u);
  int limits = 0;
  std::vector<std::string> described;
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const redisReply* fields = entries->element[i]->element[1];
    const std::string n = std::to_string(i + 1);
    EXPECT_EQ(field(fields, "client_order_id"), "load-7-" + n);
    const bool invalid = field(fields, "qty") == "0" || field(fields, "symbol") == "UNKNOWN";
    EXPECT_EQ(invalid, (i + 1) % 10 == 0) << "order " << n;
    if (field(fields, "type") == "limit") {
      ++limits;
      EXPECT_TRUE(field(fields, "limit_price")) << "order " << n;
    }
    described.push_back(field(fields, "symbol").value_or("") + field(fields, "side").value_or("") +
                        field(fields, "qty").value_or("") + field(fields, "type").value_or(""));
  }
  EXPECT_GT(limits, 0);
  EXPECT_LT(limits, 100);

  // Same seed, same orders.
  redis.command({"DEL", "orders:requests"});
  const ToolRun again = run(
      kTsctl,
      {"load-orders", "--count", "200", "--rate", "5000", "--seed", "7", "--reject-every", "10"},
      env_for("cli_test", 2));
  ASSERT_EQ(again.code, 0) << describe(again);
  const auto replay = redis.command({"XRANGE", "orders:requests", "-", "+"});
  ASSERT_EQ(replay->elements, 200u);
  for (std::size_t i = 0; i < replay->elements; ++i) {
    const redisReply* fields = replay->element[i]->element[1];
    EXPECT_EQ(field(fields, "symbol").value_or("") + field(fields, "side").value_or("") +
                  field(fields, "qty").value_or("") + field(fields, "type").value_or(""),
              described[i])
        << "order " << i + 1;
  }
}

TEST(TsctlLoadOrders, RidesOutARedisRestart) {
  // Redis goes down in the middle of the run and stays down until load-orders has seen a
  // batch fail (its warning in the log), then comes back. The harness's Redis keeps nothing
  // across a restart (no persistence): what is checked is that load-orders waits the outage
  // out (exit 0, every order submitted, the retries counted) and that the orders from the
  // restart onwards are all in the new server's stream, the last one included.
  Redis redis(3);
  const std::string summary = next_path("load-restart") + ".json";
  Child child(kTsctl,
              {"load-orders", "--count", "3000", "--rate", "1000", "--seed", "9", "--summary-file",
               summary},
              env_for("cli_test", 3));
  // Stop Redis once the run is well under way (about 0.5 s of its 3 s).
  ASSERT_TRUE(tt::poll_until(
      [&] {
        return redis.integer({"XLEN", "orders:requests"}) >= 500;
      },
      20s));
  auto& server = tt::Servers::instance().redis();
  const auto down = std::chrono::steady_clock::now();
  server.stop();
  const bool noticed = tt::poll_until(
      [&] {
        return tt::detail::read_text_file(child.log()).find("retrying with backoff") !=
               std::string::npos;
      },
      20s);
  server.start();
  const auto outage = tt::elapsed_ms(down);
  EXPECT_TRUE(noticed) << "no batch failed while Redis was down";
  const ToolRun r = child.finish(60s);
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_THAT(r.output, HasSubstr("submitted 3000 order(s)")) << describe(r);
  EXPECT_THAT(r.output, HasSubstr("batch retries after transient Redis failures")) << describe(r);

  const std::string json = tt::detail::read_text_file(summary);
  EXPECT_THAT(json, HasSubstr("\"submitted\":3000"));
  EXPECT_THAT(json, HasSubstr("\"first_id\":\"load-9-1\""));
  EXPECT_THAT(json, HasSubstr("\"last_id\":\"load-9-3000\""));
  const std::size_t retries_at = json.find("\"retries\":");
  ASSERT_NE(retries_at, std::string::npos) << json;
  EXPECT_GE(std::stoll(json.substr(retries_at + 10)), 1) << json;

  // The new server holds a contiguous run of orders ending with the last one: nothing after
  // the restart is missing (a retry after an unknown outcome may have added one twice).
  Redis after(3, Redis::Flush::no);
  const auto entries = after.command({"XRANGE", "orders:requests", "-", "+"});
  ASSERT_GT(entries->elements, 0u);
  std::vector<int> numbers;
  for (std::size_t i = 0; i < entries->elements; ++i) {
    const auto id = field(entries->element[i]->element[1], "client_order_id");
    ASSERT_TRUE(id && id->rfind("load-9-", 0) == 0) << id.value_or("(none)");
    numbers.push_back(std::stoi(id->substr(7)));
  }
  EXPECT_EQ(numbers.back(), 3000);
  std::vector<int> distinct = numbers;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  EXPECT_EQ(distinct.back() - distinct.front() + 1, static_cast<int>(distinct.size()))
      << "a gap among the orders after the restart";
  EXPECT_LT(distinct.size(), 3000u) << "the restart did not happen during the run";
  std::cout << "[ INFO ] Redis was down for " << outage.count() << " ms; the new server has "
            << entries->elements << " entries (orders " << distinct.front() << " to "
            << distinct.back() << "); load-orders took " << r.took.count() << " ms; summary "
            << json << std::endl;
}

TEST(TsctlStatus, ReportsStreamsGroupsAndTables) {
  migrate("cli_status");
  Redis redis(4);
  const std::string btc = ts::services::trade_stream("BTCUSDT");
  const std::string eth = ts::services::trade_stream("ETHUSDT");
  ASSERT_NE(btc, eth);
  for (int i = 1; i <= 3; ++i) {
    redis.command({"XADD", btc, std::to_string(i * 1000) + "-0", "t", std::to_string(i)});
  }
  redis.command({"XGROUP", "CREATE", btc, "recorder", "0"});
  redis.command({"XREADGROUP", "GROUP", "recorder", "r1", "COUNT", "1", "STREAMS", btc, ">"});
  Pg pg("cli_status");
  pg.exec(
      "INSERT INTO orders (client_order_id, symbol, side, type, qty, status, reject_reason) "
      "VALUES ('a', 'BTCUSDT', 'buy', 'market', 1, 'rejected', 'test')");

  const auto env = env_for("cli_status", 4);
  const ToolRun json = run(kTsctl, {"status", "--json", "--symbols", "BTCUSDT,ETHUSDT"}, env);
  ASSERT_EQ(json.code, 0) << describe(json);
  const auto lines = lines_of(json.output);
  ASSERT_EQ(lines.size(), 1u) << describe(json);
  EXPECT_THAT(lines[0], HasSubstr("\"" + btc +
                                  "\":{\"length\":3,\"group\":\"recorder\","
                                  "\"group_exists\":true,\"pending\":1,\"lag\":2}"));
  EXPECT_THAT(lines[0], HasSubstr("\"" + eth +
                                  "\":{\"length\":0,\"group\":\"recorder\","
                                  "\"group_exists\":false}"));
  EXPECT_THAT(lines[0], HasSubstr("\"orders:events\":{\"length\":0}"));
  EXPECT_THAT(lines[0], HasSubstr("\"schema_version\":3"));
  EXPECT_THAT(lines[0],
              HasSubstr("\"tables\":{\"ticks\":0,\"orders\":{\"rejected\":1},\"fills\":0}"));

  const ToolRun text = run(kTsctl, {"status", "--symbols", "BTCUSDT"}, env);
  ASSERT_EQ(text.code, 0) << describe(text);
  EXPECT_THAT(text.output, HasSubstr(btc));
  EXPECT_THAT(text.output, Not(HasSubstr(eth)));

  // No symbols: every trade stream.
  const ToolRun all = run(kTsctl, {"status", "--symbols="}, env);
  ASSERT_EQ(all.code, 0) << describe(all);
  for (const auto& stream : ts::services::all_trade_streams()) {
    EXPECT_THAT(all.output, HasSubstr(stream));
  }
  EXPECT_THAT(text.output, HasSubstr("orders (rejected)"));
  EXPECT_THAT(text.output, HasSubstr("schema version 3"));
}

// The move from one stream per symbol to the buckets: what a group still needs of an old
// stream (pending or unread), or all of it when no group reads it, goes to the bucket stream
// of each entry's symbol; the old streams are deleted; dead-letter streams are left alone.
TEST(TsctlMigrateStreams, MovesWhatTheOldStreamsStillHoldIntoTheBuckets) {
  Redis redis(5);
  for (int i = 1; i <= 5; ++i) {
    redis.command(
        {"XADD", "md:trades:AAA", std::to_string(i) + "-0", "s", "AAA", "t", std::to_string(i)});
  }
  // The recorder group read 1 and 2 and acknowledged 1: 2 is pending, 3..5 unread.
  redis.command({"XGROUP", "CREATE", "md:trades:AAA", "recorder", "0"});
  redis.command(
      {"XREADGROUP", "GROUP", "recorder", "r", "COUNT", "2", "STREAMS", "md:trades:AAA", ">"});
  redis.command({"XACK", "md:trades:AAA", "recorder", "1-0"});
  // No group: all of it; one entry names another symbol and goes to that one's bucket.
  redis.command({"XADD", "md:trades:BBB", "*", "s", "BBB", "t", "1"});
  redis.command({"XADD", "md:trades:BBB", "*", "s", "BBB", "t", "2"});
  redis.command({"XADD", "md:trades:BBB", "*", "s", "CCC", "t", "3"});
  redis.command({"XADD", "md:trades:AAA:dead", "*", "s", "AAA", "t", "0"});

  const ToolRun r = run(kTsctl, {"migrate-streams"}, env_for("cli_migrate_streams", 5));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_THAT(r.output, HasSubstr("migrate-streams: 2 stream(s), 7 entrie(s) copied"));
  EXPECT_EQ(redis.integer({"EXISTS", "md:trades:AAA", "md:trades:BBB"}), 0);
  EXPECT_EQ(redis.integer({"XLEN", "md:trades:AAA:dead"}), 1);
  // Count per symbol over every bucket stream (symbols may share one).
  std::map<std::string, std::vector<std::string>> ids;  // symbol -> t in order
  for (const auto& stream : ts::services::all_trade_streams()) {
    const auto entries = redis.command({"XRANGE", stream, "-", "+"});
    for (std::size_t i = 0; i < entries->elements; ++i) {
      const redisReply* fields = entries->element[i]->element[1];
      const auto symbol = field(fields, "s");
      const auto t = field(fields, "t");
      ASSERT_TRUE(symbol && t);
      EXPECT_EQ(stream, ts::services::trade_stream(*symbol)) << *symbol;
      ids[*symbol].push_back(*t);
    }
  }
  EXPECT_EQ(ids["AAA"], (std::vector<std::string>{"2", "3", "4", "5"}));
  EXPECT_EQ(ids["BBB"], (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(ids["CCC"], (std::vector<std::string>{"3"}));

  // Nothing left to move: a second run copies nothing.
  const ToolRun again = run(kTsctl, {"migrate-streams"}, env_for("cli_migrate_streams", 5));
  ASSERT_EQ(again.code, 0) << describe(again);
  EXPECT_THAT(again.output, HasSubstr("migrate-streams: 0 stream(s), 0 entrie(s) copied"));
}

// ---- ts-janitor --------------------------------------------------------------------------------

TEST(Janitor, RemovesOldPartitionsRowsEntriesAndIdleConsumers) {
  migrate("cli_janitor");
  Pg pg("cli_janitor");
  // Two whole old days (dropped), yesterday (straddles the 24 h cut-off: old rows deleted,
  // the partition kept) and today (kept).
  pg.exec("SELECT ts_ensure_tick_partition('2020-01-01'), ts_ensure_tick_partition('2020-01-02')");
  const std::string insert =
      "INSERT INTO ticks (symbol, trade_id, price, qty, trade_time, buyer_is_maker) ";
  pg.exec(insert +
          "SELECT 'BTCUSDT', g, 1, 1, '2020-01-01 10:00+00'::timestamptz, true "
          "FROM generate_series(1, 3) g");
  pg.exec(insert +
          "SELECT 'BTCUSDT', g, 1, 1, '2020-01-02 10:00+00'::timestamptz, true "
          "FROM generate_series(4, 5) g");
  // Yesterday's first seconds: older than now - 24 h (yesterday's partition exists: the
  // migration creates current_date - 1 to + 2).
  pg.exec(insert +
          "SELECT 'BTCUSDT', g, 1, 1, "
          "date_trunc('day', now()) - interval '1 day' + g * interval '1 second', true "
          "FROM generate_series(100, 106) g");
  pg.exec(insert +
          "SELECT 'ETHUSDT', g, 1, 1, now() - g * interval '1 second', false "
          "FROM generate_series(200, 204) g");
  ASSERT_EQ(pg.value("SELECT count(*) FROM ticks"), "17");

  Redis redis(3);
  for (const char* id : {"1000-0", "2000-0", "3000-0", "*", "*"}) {
    redis.command({"XADD", "md:trades:BTCUSDT", id, "t", "1"});
  }
  for (const char* id : {"1000-0", "*"}) {
    redis.command({"XADD", "md:trades:ETHUSDT", id, "t", "1"});
    redis.command({"XADD", "orders:events", id, "status", "filled"});
  }
  for (const char* id : {"5000-0", "6000-0", "*"}) {
    redis.command({"XADD", "orders:requests", id, "qty", "1"});
  }
  // A key that looks like a trade stream but is not one: SCAN ... TYPE stream skips it.
  redis.command({"SET", "md:trades:NOTASTREAM", "x"});
  // recorder: "idle-one" read and acknowledged (nothing pending: removed), "busy-one" read
  // without acknowledging (pending: kept). executor: "gone" never read anything.
  redis.command({"XGROUP", "CREATE", "md:trades:BTCUSDT", "recorder", "0"});
  const auto read = redis.command({"XREADGROUP", "GROUP", "recorder", "idle-one", "COUNT", "1",
                                   "STREAMS", "md:trades:BTCUSDT", ">"});
  ASSERT_EQ(read->elements, 1u);
  const redisReply* read_entry = read->element[0]->element[1]->element[0]->element[0];
  redis.command(
      {"XACK", "md:trades:BTCUSDT", "recorder", std::string(read_entry->str, read_entry->len)});
  redis.command({"XREADGROUP", "GROUP", "recorder", "busy-one", "COUNT", "1", "STREAMS",
                 "md:trades:BTCUSDT", ">"});
  redis.command({"XGROUP", "CREATE", "orders:requests", "executor", "$"});
  redis.command({"XGROUP", "CREATECONSUMER", "orders:requests", "executor", "gone"});

  const std::string summary = next_path("janitor") + ".json";
  const ToolRun r = run(kJanitor,
                        {"--retention", "24h", "--delete-batch", "3", "--consumer-idle", "0ms",
                         "--symbols=", "--deadline", "30s", "--summary-file", summary},
                        env_for("cli_janitor", 3));
  ASSERT_EQ(r.code, 0) << describe(r);
  // md:trades:BTCUSDT (a stream of the first layout, trimmed like the buckets): the group's
  // pending 2000-0 and unread 3000-0 hold its trim back (F53): only 1000-0 goes there.
  EXPECT_THAT(r.output,
              HasSubstr("ts-janitor: dropped 2 partition(s), deleted 7 row(s), trimmed 5 stream "
                        "entrie(s), removed 2 consumer(s), 0 error(s); trimming held back on 1 "
                        "stream(s)"));
  const std::string json = tt::detail::read_text_file(summary);
  EXPECT_THAT(json, HasSubstr("\"partitions_dropped\":2"));
  EXPECT_THAT(json, HasSubstr("\"rows_deleted\":7"));
  EXPECT_THAT(json, HasSubstr("\"entries_trimmed\":5"));
  EXPECT_THAT(json, HasSubstr("\"trims_held_back\":1"));
  EXPECT_THAT(json, HasSubstr("\"consumers_removed\":2"));
  EXPECT_THAT(json, HasSubstr("\"errors\":0"));

  EXPECT_EQ(pg.value("SELECT to_regclass('ticks_20200101') IS NULL AND "
                     "to_regclass('ticks_20200102') IS NULL"),
            "t");
  EXPECT_EQ(pg.value("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ticks'::regclass"), "4");
  EXPECT_EQ(pg.value("SELECT count(*) FROM ticks"), "5");
  EXPECT_EQ(pg.value("SELECT count(*) FROM ticks WHERE symbol = 'ETHUSDT'"), "5");

  EXPECT_EQ(redis.integer({"XLEN", "md:trades:BTCUSDT"}), 4);
  EXPECT_EQ(redis.integer({"XLEN", "md:trades:ETHUSDT"}), 1);
  EXPECT_EQ(redis.integer({"XLEN", "orders:events"}), 1);
  EXPECT_EQ(redis.integer({"XLEN", "orders:requests"}), 1);
  EXPECT_EQ(consumer_names(redis, "md:trades:BTCUSDT", "recorder"),
            std::vector<std::string>{"busy-one"});
  EXPECT_TRUE(consumer_names(redis, "orders:requests", "executor").empty());

  // A second run finds nothing left to do.
  const ToolRun again =
      run(kJanitor, {"--retention", "24h", "--consumer-idle", "1h", "--symbols=BTCUSDT"},
          env_for("cli_janitor", 3));
  ASSERT_EQ(again.code, 0) << describe(again);
  EXPECT_THAT(again.output, HasSubstr("dropped 0 partition(s), deleted 0 row(s), trimmed 0 "
                                      "stream entrie(s), removed 0 consumer(s), 0 error(s)"));
}

TEST(Janitor, RedisDownExitsOneWithinItsDeadlineAfterThePostgresStep) {
  migrate("cli_janitor_down");
  Pg pg("cli_janitor_down");
  pg.exec("SELECT ts_ensure_tick_partition('2020-02-01')");
  const std::uint16_t closed_port = tt::free_loopback_port();  // nothing listens there
  const std::string summary = next_path("janitor-down") + ".json";
  const ToolRun r =
      run(kJanitor, {"--retention", "24h", "--deadline", "3s", "--summary-file", summary},
          {"TS_POSTGRES_DSN=" + pg_dsn("cli_janitor_down"),
           "TS_REDIS_URL=redis://127.0.0.1:" + std::to_string(closed_port)},
          30s);
  EXPECT_TRUE(r.exited) << describe(r);
  EXPECT_EQ(r.code, 1) << describe(r);
  // Within the deadline (3 s), with room for process start-up on a loaded machine.
  EXPECT_LT(r.took, 5s) << describe(r);
  EXPECT_THAT(r.output, HasSubstr("redis step: cannot connect")) << describe(r);
  // The PostgreSQL step ran.
  EXPECT_EQ(pg.value("SELECT to_regclass('ticks_20200201') IS NULL"), "t");
  const std::string json = tt::detail::read_text_file(summary);
  EXPECT_THAT(json, HasSubstr("\"partitions_dropped\":1"));
  EXPECT_THAT(json, HasSubstr("\"errors\":1"));
  EXPECT_THAT(json, HasSubstr("\"completed\":true"));
}

// F53: trimming by age never deletes what a consumer group has not read or not acknowledged,
// unless forced (--force-trim), and then what it deletes unread is counted.
TEST(Janitor, F53_NeverTrimsEntriesTheGroupHasNotReadUnlessForced) {
  migrate("cli_janitor_f53");
  Redis redis(4);
  const std::string stream = ts::services::trade_stream("BTCUSDT");
  for (const char* id : {"1000-0", "2000-0", "3000-0", "*"}) {
    redis.command({"XADD", stream, id, "s", "BTCUSDT", "t", "1"});
  }
  // The group read 1000-0 and acknowledged it, read 2000-0 without acknowledging it (pending),
  // and has not read 3000-0 nor the current entry: only 1000-0 may go.
  redis.command({"XGROUP", "CREATE", stream, "recorder", "0"});
  redis.command({"XREADGROUP", "GROUP", "recorder", "c1", "COUNT", "1", "STREAMS", stream, ">"});
  redis.command({"XACK", stream, "recorder", "1000-0"});
  redis.command({"XREADGROUP", "GROUP", "recorder", "c1", "COUNT", "1", "STREAMS", stream, ">"});

  const std::string summary = next_path("janitor-f53") + ".json";
  const ToolRun r = run(kJanitor,
                        {"--retention", "24h", "--consumer-idle", "1h", "--deadline", "30s",
                         "--summary-file", summary},
                        env_for("cli_janitor_f53", 4));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_EQ(redis.integer({"XLEN", stream}), 3) << describe(r);
  const std::string json = tt::detail::read_text_file(summary);
  EXPECT_THAT(json, HasSubstr("\"trims_held_back\":1")) << json;
  EXPECT_THAT(r.output, HasSubstr("held back")) << describe(r);

  // Forced: the age cut-off wins; the two entries the group still needed are counted.
  const std::string forced_summary = next_path("janitor-f53-forced") + ".json";
  const ToolRun forced = run(kJanitor,
                             {"--retention", "24h", "--consumer-idle", "1h", "--deadline", "30s",
                              "--force-trim", "--summary-file", forced_summary},
                             env_for("cli_janitor_f53", 4));
  ASSERT_EQ(forced.code, 0) << describe(forced);
  EXPECT_EQ(redis.integer({"XLEN", stream}), 1) << describe(forced);
  const std::string forced_json = tt::detail::read_text_file(forced_summary);
  EXPECT_THAT(forced_json, HasSubstr("\"entries_trimmed\":2")) << forced_json;
  EXPECT_THAT(forced_json, HasSubstr("\"trimmed_unacknowledged\":2")) << forced_json;
}

}  // namespace

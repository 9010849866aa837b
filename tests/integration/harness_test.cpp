// Proves every ServerProcess operation of the real-server harness against the real servers,
// and that no server outlives a test binary that crashes.
#include "support/server_harness.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace trading_shared::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

/// How long a request to a paused server is given before we conclude it does not complete.
constexpr milliseconds kPausedDeadline{1000};
/// Generous bound for things that must happen (reconnects, results after resume).
constexpr seconds kMustHappen{15};

struct PgConnDeleter {
  void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

struct RedisContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};

/// DSN with a short connect timeout (libpq's minimum: 2 s).
std::string quick(const std::string& dsn) {
  return dsn + " connect_timeout=2";
}

/// Connects and runs `SELECT 1`; returns the error message, empty on success.
std::string pg_error(const std::string& dsn) {
  PgConn connection(PQconnectdb(quick(dsn).c_str()));
  if (PQstatus(connection.get()) != CONNECTION_OK) {
    return PQerrorMessage(connection.get());
  }
  PgResult result(PQexec(connection.get(), "SELECT 1"));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
    return PQerrorMessage(connection.get());
  }
  return {};
}

bool pg_works(const std::string& dsn) {
  return pg_error(dsn).empty();
}

/// Polls until `condition()` or the deadline.
template <typename Condition>
bool eventually(Condition condition, Clock::duration within = kMustHappen) {
  const auto deadline = Clock::now() + within;
  while (!condition()) {
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

/// A query sent without waiting; its result is awaited with a client-side deadline.
class PendingQuery {
 public:
  PendingQuery(PGconn* connection, const char* sql) : connection_(connection) {
    sent_ = PQsendQuery(connection_, sql) == 1;
    if (sent_) {
      PQflush(connection_);
    }
  }
  bool sent() const { return sent_; }

  /// True when the complete result arrived before the deadline.
  bool wait(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      if (PQconsumeInput(connection_) != 1) {
        return false;
      }
      if (!PQisBusy(connection_)) {
        bool ok = false;
        while (PGresult* result = PQgetResult(connection_)) {
          ok = PQresultStatus(result) == PGRES_TUPLES_OK;
          PQclear(result);
        }
        return ok;
      }
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return false;
      }
      pollfd poll_fd{PQsocket(connection_), POLLIN, 0};
      ::poll(&poll_fd, 1, static_cast<int>(left.count()));
    }
  }

 private:
  PGconn* connection_;
  bool sent_ = false;
};

/// A raw TCP connection to Redis, to send a command and await its reply with a deadline.
class RawRedis {
 public:
  explicit RawRedis(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 &&
                 ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  }
  ~RawRedis() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& command) {
    const std::string line = command + "\r\n";
    return ::send(fd_, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size());
  }
  /// Reads until a full line arrived or the deadline; returns it without CRLF.
  std::optional<std::string> read_line(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (buffer_.find("\r\n") == std::string::npos) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return std::nullopt;
      }
      pollfd poll_fd{fd_, POLLIN, 0};
      if (::poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) {
        continue;
      }
      char chunk[256];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) {
        return std::nullopt;
      }
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
    const auto end = buffer_.find("\r\n");
    std::string line = buffer_.substr(0, end);
    buffer_.erase(0, end + 2);
    return line;
  }

 private:
  int fd_;
  bool connected_ = false;
  std::string buffer_;
};

bool redis_works(std::uint16_t port) {
  std::unique_ptr<redisContext, RedisContextDeleter> context(
      redisConnectWithTimeout("127.0.0.1", port, timeval{1, 0}));
  if (!context || context->err) {
    return false;
  }
  if (redisSetTimeout(context.get(), timeval{1, 0}) != REDIS_OK) {
    return false;
  }
  std::unique_ptr<redisReply, RedisReplyDeleter> reply(
      static_cast<redisReply*>(redisCommand(context.get(), "PING")));
  return reply && reply->type == REDIS_REPLY_STATUS && std::string(reply->str) == "PONG";
}

/// True when a process exists and is not a zombie.
bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) {
    return false;
  }
  const auto paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) {
    return false;
  }
  const char state = line[paren + 2];
  return state != 'Z' && state != 'X';
}

/// Harness processes whose working directory is `directory` or below.
std::vector<pid_t> processes_in(const std::string& directory) {
  std::vector<pid_t> pids;
  for (const pid_t pid : harness_server_processes()) {
    const std::string cwd = process_working_directory(pid);
    if (cwd == directory || cwd.rfind(directory + "/", 0) == 0) {
      pids.push_back(pid);
    }
  }
  return pids;
}

std::string describe_all(const std::vector<pid_t>& pids) {
  std::string text;
  for (const pid_t pid : pids) {
    text += "\n  " + describe_process(pid);
  }
  return text;
}

class HarnessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (servers().external()) {
      GTEST_SKIP() << "external servers: no process handles";
    }
    // Every test leaves the servers running; repair if an earlier one failed half-way.
    for (ServerProcess* server :
         {&servers().postgres(), &servers().redis(), &servers().pgbouncer()}) {
      if (!server->running()) {
        server->start();
      }
    }
  }
  static Servers& servers() { return Servers::instance(); }
};

TEST_F(HarnessTest, HandlesDescribeTheirServers) {
  const std::string root = servers().directory();
  std::vector<std::uint16_t> ports;
  for (ServerProcess* server :
       {&servers().postgres(), &servers().redis(), &servers().pgbouncer()}) {
    EXPECT_TRUE(server->running());
    EXPECT_GT(server->pid(), 0);
    EXPECT_EQ(server->host(), "127.0.0.1");
    EXPECT_EQ(server->directory().rfind(root + "/", 0), 0u) << server->directory();
    const auto in_directory = processes_in(server->directory());
    EXPECT_NE(std::find(in_directory.begin(), in_directory.end(), server->pid()),
              in_directory.end())
        << "harness_server_processes() misses pid " << server->pid();
    ports.push_back(server->port());
  }
  std::sort(ports.begin(), ports.end());
  EXPECT_EQ(std::unique(ports.begin(), ports.end()), ports.end()) << "ports must differ";
  EXPECT_NE(servers().postgres_dsn().find("port=" + std::to_string(servers().postgres().port())),
            std::string::npos);
  EXPECT_EQ(servers().redis_url(), "redis://127.0.0.1:" + std::to_string(servers().redis().port()));
}

// ---- PostgreSQL ------------------------------------------------------------------------------

TEST_F(HarnessTest, PostgresStopStartRestart) {
  ServerProcess& pg = servers().postgres();
  const std::string dsn = servers().postgres_dsn();
  const pid_t first = pg.pid();
  const std::uint16_t port = pg.port();
  ASSERT_TRUE(pg_works(dsn));

  pg.stop();
  EXPECT_FALSE(pg.running());
  EXPECT_EQ(pg.pid(), -1);
  EXPECT_FALSE(alive(first));
  EXPECT_TRUE(processes_in(pg.directory()).empty()) << describe_all(processes_in(pg.directory()));
  EXPECT_FALSE(pg_works(dsn)) << "connect must fail while PostgreSQL is stopped";
  pg.stop();  // idempotent

  pg.start();
  EXPECT_TRUE(pg.running());
  EXPECT_EQ(pg.port(), port) << "start() keeps the port";
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);

  const pid_t before_restart = pg.pid();
  pg.restart();
  EXPECT_NE(pg.pid(), before_restart);
  EXPECT_FALSE(alive(before_restart));
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
}

TEST_F(HarnessTest, PostgresKillTakesBackendsAlong) {
  ServerProcess& pg = servers().postgres();
  const std::string dsn = servers().postgres_dsn();
  PgConn session(PQconnectdb(dsn.c_str()));
  ASSERT_EQ(PQstatus(session.get()), CONNECTION_OK) << PQerrorMessage(session.get());
  PgResult backend(PQexec(session.get(), "SELECT pg_backend_pid()"));
  ASSERT_EQ(PQresultStatus(backend.get()), PGRES_TUPLES_OK);
  const auto backend_pid = static_cast<pid_t>(std::stol(PQgetvalue(backend.get(), 0, 0)));
  const pid_t postmaster = pg.pid();
  ASSERT_TRUE(alive(backend_pid));

  pg.kill();
  EXPECT_FALSE(pg.running());
  EXPECT_FALSE(alive(postmaster)) << "postmaster survived kill()";
  EXPECT_FALSE(alive(backend_pid)) << "backend survived kill()";
  EXPECT_TRUE(processes_in(pg.directory()).empty()) << describe_all(processes_in(pg.directory()));
  EXPECT_FALSE(pg_works(dsn));
  PgResult dead(PQexec(session.get(), "SELECT 1"));
  EXPECT_NE(PQresultStatus(dead.get()), PGRES_TUPLES_OK) << "the old session must be broken";

  pg.start();  // crash recovery on the same data directory and port
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
  PQreset(session.get());
  EXPECT_EQ(PQstatus(session.get()), CONNECTION_OK) << PQerrorMessage(session.get());
}

TEST_F(HarnessTest, PostgresPauseFreezesQueriesUntilResume) {
  ServerProcess& pg = servers().postgres();
  const std::string dsn = servers().postgres_dsn();
  PgConn session(PQconnectdb(dsn.c_str()));
  ASSERT_EQ(PQstatus(session.get()), CONNECTION_OK) << PQerrorMessage(session.get());

  pg.pause();
  EXPECT_TRUE(pg.running());
  PendingQuery query(session.get(), "SELECT 1");
  ASSERT_TRUE(query.sent()) << PQerrorMessage(session.get());
  EXPECT_FALSE(query.wait(kPausedDeadline)) << "a query completed on a paused PostgreSQL";
  EXPECT_FALSE(pg_works(dsn)) << "a new connection completed on a paused PostgreSQL";

  pg.resume();
  EXPECT_TRUE(query.wait(kMustHappen)) << "the frozen query did not complete after resume";
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
}

TEST_F(HarnessTest, StopResumesAPausedServerFirst) {
  ServerProcess& pg = servers().postgres();
  pg.pause();
  const auto started = Clock::now();
  pg.stop();
  EXPECT_LT(Clock::now() - started, seconds(9)) << "stop() of a paused server needed SIGKILL";
  EXPECT_FALSE(pg.running());
  EXPECT_THROW(pg.pause(), std::runtime_error) << "pause() of a stopped server must throw";
  pg.start();
  EXPECT_TRUE(pg_works(servers().postgres_dsn()));
}

// ---- Redis -----------------------------------------------------------------------------------

TEST_F(HarnessTest, RedisStopStartRestart) {
  ServerProcess& redis = servers().redis();
  const std::uint16_t port = redis.port();
  const pid_t first = redis.pid();
  ASSERT_TRUE(redis_works(port));

  redis.stop();
  EXPECT_FALSE(redis.running());
  EXPECT_FALSE(alive(first));
  EXPECT_FALSE(redis_works(port)) << "connect must fail while Redis is stopped";

  redis.start();
  EXPECT_EQ(redis.port(), port);
  EXPECT_TRUE(redis_works(port));

  const pid_t before_restart = redis.pid();
  redis.restart();
  EXPECT_NE(redis.pid(), before_restart);
  EXPECT_TRUE(redis_works(port));
}

TEST_F(HarnessTest, RedisKill) {
  ServerProcess& redis = servers().redis();
  const pid_t pid = redis.pid();
  RawRedis client(redis.port());
  ASSERT_TRUE(client.connected());

  redis.kill();
  EXPECT_FALSE(redis.running());
  EXPECT_FALSE(alive(pid));
  EXPECT_TRUE(processes_in(redis.directory()).empty());
  EXPECT_FALSE(redis_works(redis.port()));
  // The old connection sees the server gone (EOF or reset), not a hang.
  client.send("PING");
  EXPECT_FALSE(client.read_line(milliseconds(5000)));

  redis.start();
  EXPECT_TRUE(redis_works(redis.port()));
}

TEST_F(HarnessTest, RedisPauseFreezesCommandsUntilResume) {
  ServerProcess& redis = servers().redis();
  RawRedis client(redis.port());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send("PING"));
  ASSERT_EQ(client.read_line(kMustHappen), "+PONG");

  redis.pause();
  ASSERT_TRUE(client.send("PING"));
  EXPECT_FALSE(client.read_line(kPausedDeadline)) << "a command completed on a paused Redis";
  EXPECT_FALSE(redis_works(redis.port()));

  redis.resume();
  EXPECT_EQ(client.read_line(kMustHappen), "+PONG") << "the frozen command did not complete";
  EXPECT_TRUE(redis_works(redis.port()));
}

// ---- PgBouncer -------------------------------------------------------------------------------

TEST_F(HarnessTest, PgBouncerStopStartRestart) {
  ServerProcess& bouncer = servers().pgbouncer();
  const std::string dsn = servers().pgbouncer_dsn();
  const pid_t first = bouncer.pid();
  const std::uint16_t port = bouncer.port();
  ASSERT_TRUE(pg_works(dsn)) << pg_error(dsn);

  bouncer.stop();
  EXPECT_FALSE(bouncer.running());
  EXPECT_FALSE(alive(first));
  EXPECT_FALSE(pg_works(dsn)) << "connect must fail while PgBouncer is stopped";
  EXPECT_TRUE(pg_works(servers().postgres_dsn())) << "PostgreSQL itself is unaffected";

  bouncer.start();
  EXPECT_EQ(bouncer.port(), port);
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);

  const pid_t before_restart = bouncer.pid();
  bouncer.restart();
  EXPECT_NE(bouncer.pid(), before_restart);
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
}

TEST_F(HarnessTest, PgBouncerKill) {
  ServerProcess& bouncer = servers().pgbouncer();
  const std::string dsn = servers().pgbouncer_dsn();
  const pid_t pid = bouncer.pid();
  ASSERT_TRUE(pg_works(dsn)) << pg_error(dsn);

  bouncer.kill();
  EXPECT_FALSE(bouncer.running());
  EXPECT_FALSE(alive(pid));
  EXPECT_TRUE(processes_in(bouncer.directory()).empty());
  EXPECT_FALSE(pg_works(dsn));

  bouncer.start();
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
}

TEST_F(HarnessTest, PgBouncerPauseFreezesQueriesUntilResume) {
  ServerProcess& bouncer = servers().pgbouncer();
  const std::string dsn = servers().pgbouncer_dsn();
  PgConn session(PQconnectdb(dsn.c_str()));
  ASSERT_EQ(PQstatus(session.get()), CONNECTION_OK) << PQerrorMessage(session.get());

  bouncer.pause();
  PendingQuery query(session.get(), "SELECT 1");
  ASSERT_TRUE(query.sent());
  EXPECT_FALSE(query.wait(kPausedDeadline)) << "a query completed through a paused PgBouncer";
  EXPECT_TRUE(pg_works(servers().postgres_dsn())) << "PostgreSQL itself is not paused";

  bouncer.resume();
  EXPECT_TRUE(query.wait(kMustHappen)) << "the frozen query did not complete after resume";
  EXPECT_TRUE(pg_works(dsn)) << pg_error(dsn);
}

// ---- no server outlives a crashed binary -----------------------------------------------------

#ifdef TS_CRASH_HELPER
/// Zombie children of ours other than our own servers: while we are a child subreaper, the
/// orphans of the crashed helper (its servers, its guardian) become our children.
void reap_adopted_orphans() {
  const std::vector<pid_t> ours = {Servers::instance().postgres().pid(),
                                   Servers::instance().redis().pid(),
                                   Servers::instance().pgbouncer().pid()};
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const auto pid = static_cast<pid_t>(std::stol(name));
    if (std::find(ours.begin(), ours.end(), pid) != ours.end()) {
      continue;
    }
    siginfo_t info{};
    // WNOWAIT first: only reap what is a dead child of ours.
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG);
    }
  }
}

/// Runs the crash helper (which starts servers, optionally pauses them, then aborts) and
/// checks that none of its server processes survives it and its directory goes away.
void expect_servers_die_with_crashed_helper(bool pause) {
  const std::string report = Servers::instance().directory() + "/crash_helper.out";
  std::string helper = TS_CRASH_HELPER;
  std::string pause_argument = "pause";
  std::vector<char*> argv = {helper.data(), const_cast<char*>(report.c_str())};
  if (pause) {
    argv.push_back(pause_argument.data());
  }
  argv.push_back(nullptr);
  // Orphans of the helper become our children, so that we can reap them (PID 1 of a
  // container may not).
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  struct SubreaperOff {
    ~SubreaperOff() {
      ::prctl(PR_SET_CHILD_SUBREAPER, 0);
      reap_adopted_orphans();
    }
  } subreaper_off;
  pid_t child = -1;
  ASSERT_EQ(::posix_spawn(&child, helper.c_str(), nullptr, nullptr, argv.data(), environ), 0)
      << "posix_spawn " << helper;

  // The helper initdb's and starts three servers, then aborts.
  std::optional<int> status;
  const auto deadline = Clock::now() + seconds(180);
  while (!status) {
    int raw = 0;
    const pid_t result = ::waitpid(child, &raw, WNOHANG);
    if (result == child) {
      status = raw;
    } else if (result < 0 && errno != EINTR) {
      FAIL() << "waitpid: " << std::strerror(errno);
    } else if (Clock::now() >= deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &raw, 0);
      FAIL() << "the crash helper did not finish within 180 s";
    } else {
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
  ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGABRT)
      << "the helper should have aborted; wait status " << *status;

  std::map<std::string, std::string> values;
  std::ifstream in(report);
  for (std::string key, value; in >> key >> value;) {
    values[key] = value;
  }
  ASSERT_EQ(values.size(), 4u) << "incomplete report " << report;
  const std::string directory = values["directory"];
  ASSERT_EQ(directory.rfind(Servers::temp_root() + "/" + Servers::kDirPrefix, 0), 0u) << directory;
  std::vector<pid_t> pids;
  for (const char* name : {"postgres", "redis", "pgbouncer"}) {
    pids.push_back(static_cast<pid_t>(std::stol(values[name])));
    EXPECT_GT(pids.back(), 0) << name;
  }

  const bool all_gone = eventually([&] {
    return std::none_of(pids.begin(), pids.end(), alive) && processes_in(directory).empty();
  });
  EXPECT_TRUE(all_gone) << "servers outlived the crashed helper:"
                        << describe_all(processes_in(directory));
  for (const pid_t pid : pids) {
    EXPECT_FALSE(alive(pid)) << "server pid " << pid << " survived";
  }
  // Its guardian removes its directory (remove_stale_harness_directories() would, too).
  EXPECT_TRUE(eventually([&] { return !std::filesystem::exists(directory); }))
      << directory << " was not removed";
  remove_stale_harness_directories();
  EXPECT_TRUE(std::filesystem::exists(Servers::instance().directory())) << "ours is untouched";
}

TEST_F(HarnessTest, ServersDieWithACrashedBinary) {
  expect_servers_die_with_crashed_helper(false);
}

TEST_F(HarnessTest, PausedServersDieWithACrashedBinary) {
  expect_servers_die_with_crashed_helper(true);
}
#endif

}  // namespace
}  // namespace trading_shared::testing

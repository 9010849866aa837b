// Lifecycle fault tests with the real clients and the real service binaries:
// FAILURE_MODES.md F41 (run-once task with a dependency down) and F40 (SIGTERM mid-batch:
// ts-receiver here; ts-recorder in services_faults_test.cpp).
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

TEST(LifecycleFault, F41_RunOnceWithADependencyDownEndsWithinItsDeadlineAndLeaksNothing) {
  // Redis is up (the harness's); PostgreSQL is "down": nothing listens on port 1, so its
  // start() keeps retrying (startup_timeout 30 s) until the task's 1 s deadline cancels it.
  const std::string redis_url = ts::testing::Servers::instance().redis_url();
  ts::redis::RedisConfig redis_config;
  redis_config.url = redis_url;
  redis_config.client_name = "f41";
  ts::pg::PostgresConfig pg_config;
  pg_config.dsn = "host=127.0.0.1 port=1 dbname=none user=none connect_timeout=1";
  pg_config.startup_timeout = 30s;

  const int fds_before = ts::testing::open_descriptors();
  ts::lifecycle::ServiceOptions options;
  options.name = "f41-task";
  options.deadline = 1s;
  options.shutdown_timeout = 5s;
  options.close_timeout = 2s;
  options.exit_process_on_immediate_stop = false;  // in-process: must return
  bool redis_started = false;
  bool pg_started = false;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = ts::lifecycle::run_once(
      options, [&](ts::lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        co_await ctx.scope().open<ts::redis::RedisClient>("redis", ctx.executor(), redis_config);
        redis_started = true;
        co_await ctx.scope().open<ts::pg::PostgresClient>("pg", ctx.executor(), pg_config);
        pg_started = true;
      });
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 1);
  EXPECT_TRUE(redis_started);
  EXPECT_FALSE(pg_started);
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 4s) << "the deadline (1 s) plus the closes must bound the task";
  // Every socket of both clients is closed: descriptors are back where they were.
  EXPECT_EQ(ts::testing::open_descriptors(), fds_before);
}

// F54 with the real PostgresClient: the scope's bound equals the client's close_timeout, but the
// client's close legitimately takes longer (it waits close_timeout for a query in flight, then
// cancels it on the server and closes its sockets). The scope must stop waiting at its bound
// without cutting that close short, and must not free the client before its close has ended.
struct ClientWatch {
  int destroyed = 0;
  int freed_while_closing = 0;
  bool close_ended = false;
};

class WatchedPostgres {
 public:
  WatchedPostgres(asio::any_io_executor executor, const ts::pg::PostgresConfig& config,
                  ClientWatch& watch)
      : client(std::move(executor), config), watch_(&watch) {}
  ~WatchedPostgres() {
    ++watch_->destroyed;
    if (closing_ && !closed_) ++watch_->freed_while_closing;
  }
  WatchedPostgres(const WatchedPostgres&) = delete;
  WatchedPostgres& operator=(const WatchedPostgres&) = delete;
  asio::awaitable<void> start() { co_await client.start(); }
  asio::awaitable<void> close() {
    closing_ = true;
    co_await client.close();
    closed_ = true;
    watch_->close_ended = true;
  }
  ts::pg::PostgresClient client;

 private:
  ClientWatch* watch_;
  bool closing_ = false;
  bool closed_ = false;
};

TEST(LifecycleFault, F54_APostgresCloseThatOverrunsTheScopeBoundIsNotFreedUntilItEnds) {
  ts::pg::PostgresConfig config;
  config.dsn = ts::testing::Servers::instance().postgres_dsn();
  config.close_timeout = 1500ms;
  config.application_name = "f54";
  ts::lifecycle::ServiceOptions options;
  options.name = "f54-task";
  options.close_timeout = 1500ms;  // = the client's close_timeout: its close takes longer
  options.shutdown_timeout = 10s;
  options.exit_process_on_immediate_stop = false;  // in-process: must return
  ClientWatch watch;
  std::optional<std::string> query_error;
  bool query_done = false;
  const auto t0 = std::chrono::steady_clock::now();
  const int code = ts::lifecycle::run_daemon(
      options, [&](ts::lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        auto* pg =
            co_await ctx.scope().open<WatchedPostgres>("postgres", ctx.executor(), config, watch);
        // A query in flight when the body ends: the client's close waits for it, then cancels it.
        asio::co_spawn(
            ctx.executor(),
            [](ts::pg::PostgresClient& client) -> asio::awaitable<void> {
              (void)co_await client.query_value<std::string>("SELECT pg_sleep(5)::text");
            }(pg->client),
            [&](std::exception_ptr e) {
              query_done = true;
              if (!e) return;
              try {
                std::rethrow_exception(e);
              } catch (const std::exception& x) {
                query_error = x.what();
              }
            });
        asio::steady_timer settle(ctx.executor(), 300ms);
        co_await settle.async_wait(asio::use_awaitable);
        EXPECT_FALSE(query_done);
      });
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 0);
  EXPECT_EQ(watch.freed_while_closing, 0) << "the client was freed with its close cut short";
  EXPECT_TRUE(watch.close_ended);
  EXPECT_EQ(watch.destroyed, 1);
  EXPECT_TRUE(query_done);
  EXPECT_TRUE(query_error.has_value()) << "the query in flight was not failed by the close";
  // Within the budget: 0.3 s of body, 1.5 s of close_timeout, the cancellation, well under 5 s
  // (the query's own length) and the 10 s shutdown budget.
  EXPECT_LT(took, 5s);
}

// ---- the service binaries --------------------------------------------------------------------
#if defined(TS_JANITOR_BIN) && defined(TS_RECEIVER_BIN) && defined(TS_FEED_SIM_BIN)

namespace tsd = trading_shared::testing::detail;
using Clock = std::chrono::steady_clock;

/// A service process of this test: its own process group, log in a temporary directory.
struct Service {
  pid_t pid = -1;
  std::string log;
  std::optional<int> status;

  static Service spawn(const std::string& dir, const std::string& name,
                       std::vector<std::string> argv) {
    Service s;
    s.log = dir + "/" + name + ".log";
    tsd::SpawnRequest request;
    request.argv = std::move(argv);
    request.directory = dir;
    request.log_file = s.log;
    request.extra_env = {"TS_LOG_LEVEL=info"};
    s.pid = tsd::spawn_process(request);
    return s;
  }
  /// Waits for the exit; returns the exit code, or -signal.
  int wait(std::chrono::milliseconds bound) {
    if (!status) status = tsd::wait_child(pid, Clock::now() + bound);
    if (!status) return -1000;
    if (WIFEXITED(*status)) return WEXITSTATUS(*status);
    return -WTERMSIG(*status);
  }
  void signal(int sig) const { ::kill(pid, sig); }
  ~Service() {
    if (pid > 0 && !status) {
      ::kill(pid, SIGKILL);
      status = tsd::wait_child(pid, Clock::now() + 10s);
    }
  }
};

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ts-lifecycle-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string closed_port() {
  return std::to_string(ts::testing::free_loopback_port());
}

long long redis_integer(const std::string& command) {
  auto& servers = ts::testing::Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return -1;
  }
  auto* reply = static_cast<redisReply*>(redisCommand(c, command.c_str()));
  long long value = reply != nullptr && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  return value;
}

/// HSET calls that failed on the server so far (INFO commandstats, Redis 7's failed_calls).
long long failed_hsets() {
  auto& servers = ts::testing::Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return -1;
  }
  auto* reply = static_cast<redisReply*>(redisCommand(c, "INFO commandstats"));
  long long value = 0;  // no line: no HSET yet
  if (reply != nullptr && reply->type == REDIS_REPLY_STRING) {
    const std::string info(reply->str, reply->len);
    const auto line = info.find("cmdstat_hset:");
    const auto field = info.find("failed_calls=", line);
    if (line != std::string::npos && field != std::string::npos && field < info.find('\n', line)) {
      value = std::atoll(info.c_str() + field + 13);
    }
  } else {
    value = -1;
  }
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  return value;
}

TEST(LifecycleFault, F41_JanitorWithEveryDependencyDownExitsOneWithinItsDeadline) {
  const std::string dir = temp_dir("f41");
  const auto t0 = Clock::now();
  Service janitor =
      Service::spawn(dir, "janitor",
                     {TS_JANITOR_BIN, "--postgres-dsn",
                      "host=127.0.0.1 port=" + closed_port() + " dbname=x user=x connect_timeout=1",
                      "--redis-url", "redis://127.0.0.1:" + closed_port(), "--deadline", "2s",
                      "--summary-file", dir + "/janitor.json"});
  const int code = janitor.wait(15s);
  const auto took = Clock::now() - t0;
  // Exactly 1: a crash, a sanitizer report (LeakSanitizer exits 23 or aborts) or a hang fails.
  EXPECT_EQ(code, 1) << tsd::read_text_file(janitor.log);
  EXPECT_LT(took, 6s) << "deadline 2 s plus closes";
  EXPECT_TRUE(tsd::process_group_members(janitor.pid).empty())
      << "a child of the janitor survived it";
  const std::string summary = tsd::read_text_file(dir + "/janitor.json");
  EXPECT_NE(summary.find("\"errors\":"), std::string::npos) << summary;
  std::filesystem::remove_all(dir);
}

// F40 for the receiver: SIGTERM while trades stream in: it stops reading, writes what it had
// received, exits 0; every trade it counted is in Redis. A second SIGTERM during a drain that
// cannot finish (Redis frozen) forces exit 1 at once.
TEST(LifecycleFault, F40_ReceiverStopsGracefullyMidStreamAndASecondSignalForcesExit) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dir = temp_dir("f40");
  // Declared first: removed after the simulator stopped (it writes its summary there).
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string port = closed_port();
  Service sim =
      Service::spawn(dir, "sim",
                     {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", "F40A,F40B",
                      "--rate", "20000", "--summary-file", dir + "/sim.json"});
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  const std::vector<std::string> receiver_argv{
      TS_RECEIVER_BIN,     "--feed-url",     "ws://127.0.0.1:" + port + "/ws",
      "--symbols",         "F40A,F40B",      "--redis-url",
      servers.redis_url(), "--summary-file", dir + "/receiver.json"};
  {
    Service receiver = Service::spawn(dir, "receiver", receiver_argv);
    // Wait until trades flow, then stop it mid-stream.
    const auto flowing_deadline = Clock::now() + 20s;
    while (redis_integer("XLEN md:trades:F40A") < 5000 && Clock::now() < flowing_deadline) {
      tsd::poll_pause(1);
    }
    ASSERT_GE(redis_integer("XLEN md:trades:F40A"), 5000) << tsd::read_text_file(receiver.log);
    const auto t0 = Clock::now();
    receiver.signal(SIGTERM);
    const int code = receiver.wait(15s);
    EXPECT_EQ(code, 0) << tsd::read_text_file(receiver.log);
    EXPECT_LT(Clock::now() - t0, 6s) << "drain (5 s) bounds the stop";
    const std::string summary = tsd::read_text_file(dir + "/receiver.json");
    const auto field = [&](const std::string& key) {
      const auto at = summary.find("\"" + key + "\":");
      return at == std::string::npos ? -1LL : std::atoll(summary.c_str() + at + key.size() + 3);
    };
    const long long in_redis =
        redis_integer("XLEN md:trades:F40A") + redis_integer("XLEN md:trades:F40B");
    EXPECT_GT(field("trades"), 0) << summary;
    EXPECT_EQ(field("written"), field("trades")) << summary;
    EXPECT_EQ(in_redis, field("written")) << summary;
  }
  {
    Service receiver = Service::spawn(dir, "receiver2", receiver_argv);
    const auto flowing_deadline = Clock::now() + 20s;
    const long long before = redis_integer("XLEN md:trades:F40A");
    while (redis_integer("XLEN md:trades:F40A") < before + 2000 &&
           Clock::now() < flowing_deadline) {
      tsd::poll_pause(1);
    }
    servers.redis().pause();  // writes now hang: the drain cannot finish
    ts::testing::ScopeExit resume("resume Redis", [&] { servers.redis().resume(); });
    // Wait until a write is really stuck (its command timeout passed and it is being
    // retried): with nothing in hand, a drain would rightly end at once with exit 0.
    const auto stuck_deadline = Clock::now() + 15s;
    while (tsd::read_text_file(receiver.log).find("failed (retry #") == std::string::npos &&
           Clock::now() < stuck_deadline) {
      tsd::poll_pause(20);
    }
    ASSERT_NE(tsd::read_text_file(receiver.log).find("failed (retry #"), std::string::npos)
        << tsd::read_text_file(receiver.log);
    receiver.signal(SIGTERM);
    ASSERT_EQ(receiver.wait(300ms), -1000)
        << "the first signal must not end a drain that is still writing";
    const auto t0 = Clock::now();
    receiver.signal(SIGTERM);
    EXPECT_EQ(receiver.wait(10s), 1) << tsd::read_text_file(receiver.log);
    EXPECT_LT(Clock::now() - t0, 2s) << "the second signal stops at once";
  }
}

// ts-receiver writes a batch as one request: every symbol's XADDs and its last price (HSET).
// A last-price key of the wrong type makes every HSET fail (WRONGTYPE, permanent): the
// receiver retries the batch, logged as an error, without adding its trades again; once an
// operator fixes the key, the rest of the feed is written exactly once.
TEST(LifecycleFault, ReceiverRetriesAFailedLastPriceWithoutAddingTradesTwice) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dir = temp_dir("lastprice");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  ASSERT_GE(redis_integer("DEL md:trades:LPA md:last:LPA"), 0);
  ASSERT_EQ(redis_integer("RPUSH md:last:LPA not-a-hash"), 1);  // HSET on it: WRONGTYPE
  const long long failed_before = failed_hsets();
  ASSERT_GE(failed_before, 0);
  const std::string port = closed_port();
  constexpr long long kTrades = 3000;
  Service sim = Service::spawn(
      dir, "sim",
      {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", "LPA", "--rate", "2000",
       "--max-messages", std::to_string(kTrades), "--summary-file", dir + "/sim.json"});
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  Service receiver = Service::spawn(
      dir, "receiver",
      {TS_RECEIVER_BIN, "--feed-url", "ws://127.0.0.1:" + port + "/ws", "--symbols", "LPA",
       "--redis-url", servers.redis_url(), "--summary-file", dir + "/receiver.json"});
  // The server counts the failed HSETs: one per attempt at the first batch.
  const auto failures_reach = [&](long long n) {
    const auto deadline = Clock::now() + 20s;
    while (failed_hsets() < failed_before + n && Clock::now() < deadline) tsd::poll_pause(20);
    return failed_hsets() >= failed_before + n;
  };
  ASSERT_TRUE(failures_reach(2)) << tsd::read_text_file(receiver.log);
  // The batch's trades were added once: the length stays put while the HSET is retried.
  const long long added = redis_integer("XLEN md:trades:LPA");
  EXPECT_GT(added, 0);
  EXPECT_LE(added, 512) << "one batch at most (--batch 512)";
  ASSERT_TRUE(failures_reach(5)) << tsd::read_text_file(receiver.log);
  EXPECT_EQ(redis_integer("XLEN md:trades:LPA"), added) << "trades added again by a retry";
  EXPECT_NE(tsd::read_text_file(receiver.log).find("WRONGTYPE"), std::string::npos);
  // The operator fixes the key: the batch completes and everything else follows, once.
  ASSERT_EQ(redis_integer("DEL md:last:LPA"), 1);
  const auto all_deadline = Clock::now() + 30s;
  while (redis_integer("XLEN md:trades:LPA") < kTrades && Clock::now() < all_deadline) {
    tsd::poll_pause(20);
  }
  EXPECT_EQ(redis_integer("XLEN md:trades:LPA"), kTrades) << tsd::read_text_file(receiver.log);
  EXPECT_EQ(redis_integer("HLEN md:last:LPA"), 3);  // p, t, T of the last trade
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  const std::string summary = tsd::read_text_file(dir + "/receiver.json");
  EXPECT_NE(summary.find("\"written\":" + std::to_string(kTrades)), std::string::npos) << summary;
  ASSERT_GE(redis_integer("DEL md:trades:LPA md:last:LPA"), 0);
}

#endif  // the service binaries

}  // namespace

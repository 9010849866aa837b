// Lifecycle fault tests with the real clients and the real service binaries:
// F41 (run-once task with a dependency down), F40 (SIGTERM mid-batch: ts-receiver here;
// ts-recorder in services_faults_test.cpp) and F43 (trade ids going backwards: a restarted
// simulator, an outlier id).
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/keys.hpp"
#include "support/admin_client.hpp"
#include "support/redis_command.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/service_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
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

using Service = trading_shared::testing::ServiceProcess;

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

using trading_shared::testing::redis_command;
using trading_shared::testing::RedisReplyPtr;

/// Entries of `symbol` in its trade stream (field `s`; a stream may hold other symbols too).
long long trades_in_redis(const std::string& symbol) {
  const auto reply = redis_command({"XRANGE", ts::services::trade_stream(symbol), "-", "+"});
  if (!reply || reply->type != REDIS_REPLY_ARRAY) return -1;
  long long count = 0;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      if (std::string_view(fields->element[f]->str, fields->element[f]->len) == "s" &&
          std::string_view(fields->element[f + 1]->str, fields->element[f + 1]->len) == symbol) {
        ++count;
      }
    }
  }
  return count;
}

/// The trade ids (field `t`) of `symbol`'s entries (field `s`) in its bucket stream, in stream
/// order; nullopt when the stream cannot be read or an entry of the symbol has no valid id.
std::optional<std::vector<long long>> trade_ids_in_redis(const std::string& symbol) {
  const auto reply = redis_command({"XRANGE", ts::services::trade_stream(symbol), "-", "+"});
  if (!reply || reply->type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<long long> ids;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    std::optional<std::string_view> s;
    std::optional<std::string_view> t;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      const std::string_view name(fields->element[f]->str, fields->element[f]->len);
      const std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
      if (name == "s") s = value;
      if (name == "t") t = value;
    }
    if (s != symbol) continue;
    long long id = 0;
    if (!t || std::from_chars(t->data(), t->data() + t->size(), id).ec != std::errc()) {
      return std::nullopt;
    }
    ids.push_back(id);
  }
  return ids;
}

/// "" when `ids` are exactly 1, 2, ..., n in any order (contiguous from 1, none repeated, n >=
/// 1); otherwise what is wrong: the first id missing or repeated.
std::string contiguous_from_one(std::vector<long long> ids) {
  if (ids.empty()) return "no trade at all";
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto expected = static_cast<long long>(i + 1);
    if (ids[i] == expected) continue;
    if (i > 0 && ids[i] == ids[i - 1]) return "id " + std::to_string(ids[i]) + " repeated";
    return "id " + std::to_string(expected) +
           " missing (next id present: " + std::to_string(ids[i]) + ", " +
           std::to_string(ids.size()) + " entries, highest " + std::to_string(ids.back()) + ")";
  }
  return "";
}

/// The text of `path`, or "" while it does not exist (a summary not written yet).
std::string text_or_empty(const std::string& path) {
  return tsd::file_size_or_zero(path) > 0 ? tsd::read_text_file(path) : std::string();
}

/// A number of a flat JSON summary (`"key":<n>`), or -1.
long long json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1LL : std::atoll(json.c_str() + at + key.size() + 3);
}

/// How many trades of `symbol` ts-feed-sim generated (its summary's "symbols" object), or -1.
long long sim_count(const std::string& summary, const std::string& symbol) {
  const auto at = summary.find("\"" + symbol + "\":{");
  if (at == std::string::npos) return -1;
  return json_number(summary.substr(at), "count");
}

/// Waits until `condition` holds, at most `bound`.
template <typename Condition>
bool wait_for(Condition condition, std::chrono::milliseconds bound) {
  const auto deadline = Clock::now() + bound;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    tsd::poll_pause(20);
  }
  return true;
}

/// ts-feed-sim on 127.0.0.1:`port`: `trades` trades of `symbols` (comma-separated) at `rate`
/// per second, its summary in `dir`/sim.json.
Service spawn_sim(const std::string& dir, const std::string& port, const std::string& symbols,
                  long long rate, long long trades) {
  return Service::spawn(dir, "sim",
                        {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", symbols,
                         "--rate", std::to_string(rate), "--max-messages", std::to_string(trades),
                         "--summary-file", dir + "/sim.json"});
}

/// ts-receiver on that simulator, writing to the harness's Redis, its summary in
/// `dir`/receiver.json.
Service spawn_receiver(const std::string& dir, const std::string& port, const std::string& symbols,
                       std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{TS_RECEIVER_BIN,
                                "--feed-url",
                                "ws://127.0.0.1:" + port + "/ws",
                                "--symbols",
                                symbols,
                                "--redis-url",
                                ts::testing::Servers::instance().redis_url(),
                                "--summary-file",
                                dir + "/receiver.json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Service::spawn(dir, "receiver", std::move(argv));
}

/// The socket descriptors process `pid` holds now (entries of /proc/<pid>/fd that are
/// sockets), or -1 once it cannot be read (the process is gone).
int socket_descriptors(pid_t pid) {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec);
  if (ec) return -1;
  int sockets = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return -1;
    const auto target = std::filesystem::read_symlink(it->path(), ec);
    if (!ec && target.native().starts_with("socket:")) ++sockets;
  }
  return ec ? -1 : sockets;
}

/// Lines of `log` that contain both `a` and `b`.
long long lines_with(const std::string& log, std::string_view a, std::string_view b) {
  long long n = 0;
  std::size_t at = 0;
  while (at < log.size()) {
    const std::size_t end = std::min(log.find('\n', at), log.size());
    const std::string_view line(log.data() + at, end - at);
    if (line.find(a) != std::string_view::npos && line.find(b) != std::string_view::npos) ++n;
    at = end + 1;
  }
  return n;
}

// F41 with ts-janitor: PostgreSQL and Redis are down (nothing listens on their ports). The
// janitor gives each start-up deadline / 3 of retries (services/janitor, `validate`), one step
// after the other, then exits 1: not at once (it retries both), not after its deadline, and
// without piling up a socket per failed attempt (its descriptors are sampled from /proc while
// it runs: a refused attempt whose socket is not closed would stay there).
TEST(LifecycleFault, F41_JanitorWithEveryDependencyDownExitsOneWithinItsDeadline) {
  const std::string dir = temp_dir("f41");
  constexpr auto kDeadline = 2000ms;
  const auto t0 = Clock::now();
  Service janitor =
      Service::spawn(dir, "janitor",
                     {TS_JANITOR_BIN, "--postgres-dsn",
                      "host=127.0.0.1 port=" + closed_port() + " dbname=x user=x connect_timeout=1",
                      "--redis-url", "redis://127.0.0.1:" + closed_port(), "--deadline", "2s",
                      "--summary-file", dir + "/janitor.json"});
  int code = -1000;
  int samples = 0;
  int max_sockets = 0;
  while (code == -1000 && Clock::now() - t0 < 15s) {
    const int sockets = socket_descriptors(janitor.pid);
    if (sockets >= 0) {
      ++samples;
      max_sockets = std::max(max_sockets, sockets);
    }
    code = janitor.wait(5ms);
  }
  const auto took = Clock::now() - t0;
  const std::string log = tsd::read_text_file(janitor.log);
  // Exactly 1: a crash, a sanitizer report (LeakSanitizer exits 23 or aborts) or a hang fails.
  EXPECT_EQ(code, 1) << log;
  // Each step retries for its whole start-up bound (deadline / 3), the second after the first:
  // a janitor that gives up at the first refusal ends long before (t0 precedes the spawn, so
  // this bound cannot be met early by a slow start).
  EXPECT_GE(took, 2 * (kDeadline / 3)) << "gave up before retrying for its start-up bound\n" << log;
  EXPECT_LT(took, 6s) << "deadline 2 s plus closes";
  EXPECT_GE(lines_with(log, "[pg]", "start-up attempt"), 2) << "PostgreSQL not retried\n" << log;
  EXPECT_GE(lines_with(log, "[redis]", "start-up attempt"), 2) << "Redis not retried\n" << log;
  // Sampled every few ms while it ran (about 1.3 s): one attempt at a time, its socket closed
  // before the next. A leak of one socket per attempt (6 or more attempts per client) shows.
  EXPECT_GE(samples, 20) << "the janitor's descriptors were hardly observed";
  EXPECT_LE(max_sockets, 1) << "the janitor held " << max_sockets
                            << " sockets at once: failed attempts leak their socket";
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
  // Each symbol's stream holds only its trades (they are in different buckets).
  ASSERT_NE(ts::services::trade_stream("F40A"), ts::services::trade_stream("F40B"));
  ASSERT_TRUE(redis_command(
      {"DEL", ts::services::trade_stream("F40A"), ts::services::trade_stream("F40B")}));
  const std::string port = closed_port();
  Service sim =
      Service::spawn(dir, "sim",
                     {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", "F40A,F40B",
                      "--rate", "20000", "--summary-file", dir + "/sim.json",
                      // Never closed as a slow client (at 100 000 queued by default, which an
                      // ASan build of the receiver reaches): its trades would have a real gap.
                      "--queue-limit", "10000000"});
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
    while (redis_integer("XLEN " + ts::services::trade_stream("F40A")) < 5000 &&
           Clock::now() < flowing_deadline) {
      tsd::poll_pause(1);
    }
    ASSERT_GE(redis_integer("XLEN " + ts::services::trade_stream("F40A")), 5000)
        << tsd::read_text_file(receiver.log);
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
    const long long in_redis = redis_integer("XLEN " + ts::services::trade_stream("F40A")) +
                               redis_integer("XLEN " + ts::services::trade_stream("F40B"));
    EXPECT_GT(field("trades"), 0) << summary;
    EXPECT_EQ(field("written"), field("trades")) << summary;
    EXPECT_EQ(in_redis, field("written")) << summary;
    // Nothing was lost before the receiver counted it either (a hand-off drop, a parse failure,
    // a gap on the feed): the receiver is the simulator's only client, so each symbol's ids in
    // its stream are exactly 1..n, and the receiver's own counters of losses are all 0.
    long long ids_in_redis = 0;
    for (const std::string symbol : {"F40A", "F40B"}) {
      const auto ids = trade_ids_in_redis(symbol);
      ASSERT_TRUE(ids.has_value()) << symbol << ": stream unreadable or an entry without an id";
      EXPECT_EQ(contiguous_from_one(*ids), "")
          << symbol << "'s trade ids in " << ts::services::trade_stream(symbol) << " are not 1..n\n"
          << summary;
      ids_in_redis += static_cast<long long>(ids->size());
    }
    EXPECT_EQ(ids_in_redis, field("written")) << summary;
    EXPECT_EQ(field("reconnects"), 0) << "the feed connection was lost: ids 1..n cannot hold\n"
                                      << summary;
    for (const char* loss :
         {"dropped", "gaps", "missing_trades", "malformed", "duplicates", "stalled_dropped"}) {
      EXPECT_EQ(field(loss), 0) << loss << "\n" << summary;
    }
  }
  {
    Service receiver = Service::spawn(dir, "receiver2", receiver_argv);
    const auto flowing_deadline = Clock::now() + 20s;
    const long long before = redis_integer("XLEN " + ts::services::trade_stream("F40A"));
    while (redis_integer("XLEN " + ts::services::trade_stream("F40A")) < before + 2000 &&
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

// ts-receiver writes a batch as one request: every trade's XADD and its bucket's last trades
// (one HSET). A last-trade hash of the wrong type makes every HSET fail (WRONGTYPE,
// permanent): only the last trade waits (F45): the trades keep being written, each once, while
// the HSET is retried (logged as an error); once an operator fixes the key, it is written too.
TEST(LifecycleFault, ReceiverRetriesAFailedLastPriceWithoutAddingTradesTwice) {
  const std::string dir = temp_dir("lastprice");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string stream = ts::services::trade_stream("LPA");
  const std::string last = ts::services::last_trade_key("LPA");
  ASSERT_GE(redis_integer("DEL " + stream + " " + last), 0);
  ASSERT_EQ(redis_integer("RPUSH " + last + " not-a-hash"), 1);  // HSET on it: WRONGTYPE
  const long long failed_before = failed_hsets();
  ASSERT_GE(failed_before, 0);
  const std::string port = closed_port();
  constexpr long long kTrades = 3000;
  Service sim = spawn_sim(dir, port, "LPA", 2000, kTrades);
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  Service receiver = spawn_receiver(dir, port, "LPA");
  // The server counts the failed HSETs.
  const auto failures_reach = [&](long long n) {
    return wait_for([&] { return failed_hsets() >= failed_before + n; }, 20s);
  };
  ASSERT_TRUE(failures_reach(2)) << tsd::read_text_file(receiver.log);
  // Every trade is written, once, while the last price still fails.
  EXPECT_TRUE(wait_for([&] { return redis_integer("XLEN " + stream) >= kTrades; }, 30s))
      << tsd::read_text_file(receiver.log);
  ASSERT_TRUE(failures_reach(5)) << tsd::read_text_file(receiver.log);
  EXPECT_EQ(redis_integer("XLEN " + stream), kTrades) << "trades added again by a retry";
  EXPECT_NE(tsd::read_text_file(receiver.log).find("WRONGTYPE"), std::string::npos);
  // The operator fixes the key: the last price follows, and nothing is added again.
  ASSERT_EQ(redis_integer("DEL " + last), 1);
  const auto last_id = [&]() -> long long {
    const auto reply = redis_command({"HGET", last, "LPA"});
    if (!reply || reply->type != REDIS_REPLY_STRING) return -1;
    const auto trade = ts::services::LastTrade::parse(std::string_view(reply->str, reply->len));
    return trade ? trade->trade_id : -1;
  };
  EXPECT_TRUE(wait_for([&] { return last_id() == kTrades; }, 10s))
      << last_id() << "\n"
      << tsd::read_text_file(receiver.log);
  EXPECT_EQ(redis_integer("XLEN " + stream), kTrades);
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  const std::string summary = tsd::read_text_file(dir + "/receiver.json");
  EXPECT_NE(summary.find("\"written\":" + std::to_string(kTrades)), std::string::npos) << summary;
  ASSERT_GE(redis_integer("DEL " + stream + " " + last), 0);
}

// F45: one symbol's stream is a key of the wrong type (WRONGTYPE on every XADD). The other
// symbols keep flowing meanwhile; the stalled one is reported and readiness drops (in the log and
// on /readyz: F78 for a stalled write path); once an operator fixes the key, its trades follow:
// nothing dropped, and /readyz is 200 again.
TEST(LifecycleFault, F45_AKeyOfTheWrongTypeStallsOnlyItsOwnTrades) {
  const std::string dir = temp_dir("f45");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string bad_stream = ts::services::trade_stream("F45A");
  const std::string good_stream = ts::services::trade_stream("F45B");
  ASSERT_NE(bad_stream, good_stream) << "the two symbols must not share a stream";
  ASSERT_TRUE(redis_command({"DEL", bad_stream, good_stream, ts::services::last_trade_key("F45A"),
                             ts::services::last_trade_key("F45B")}));
  ASSERT_TRUE(redis_command({"SET", bad_stream, "not-a-stream"}));  // XADD on it: WRONGTYPE
  const std::string port = closed_port();
  constexpr long long kTrades = 6000;
  Service sim = spawn_sim(dir, port, "F45A,F45B", 3000, kTrades);
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  // F78 with a real service: its /readyz says the write path is stalled within one check
  // interval (200 ms here), and ready again once the key is fixed.
  const std::string admin_port = closed_port();
  Service receiver = spawn_receiver(
      dir, port, "F45A,F45B",
      {"--admin-listen", "127.0.0.1:" + admin_port, "--admin-check-interval", "200ms"});
  const auto readyz = [&] {
    return ts::testing::admin::http_request(static_cast<std::uint16_t>(std::stoi(admin_port)),
                                            "/readyz", boost::beast::http::verb::get, 2s);
  };
  std::string last_readyz;
  const auto readyz_is = [&](int status, std::string_view with) {
    const auto reply = readyz();
    last_readyz = std::to_string(reply.status) + " " + reply.body + reply.error;
    return reply.status == status && reply.body.find(with) != std::string::npos;
  };
  // The simulator sends everything (2 s at 3000/s), then its summary says what per symbol.
  ASSERT_TRUE(wait_for(
      [&] { return json_number(text_or_empty(dir + "/sim.json"), "total") == kTrades; }, 30s))
      << text_or_empty(dir + "/sim.json");
  const std::string sent = tsd::read_text_file(dir + "/sim.json");
  const long long bad_sent = sim_count(sent, "F45A");
  const long long good_sent = sim_count(sent, "F45B");
  ASSERT_GT(bad_sent, 0) << sent;
  ASSERT_GT(good_sent, 0) << sent;
  // The healthy symbol is all written while the other's key is still broken.
  EXPECT_TRUE(wait_for([&] { return trades_in_redis("F45B") == good_sent; }, 20s))
      << "F45B's trades stalled behind F45A's broken key: " << trades_in_redis("F45B") << " of "
      << good_sent << " written\n"
      << tsd::read_text_file(receiver.log);
  const std::string log = tsd::read_text_file(receiver.log);
  EXPECT_NE(log.find("WRONGTYPE"), std::string::npos) << log;
  EXPECT_NE(log.find("not ready"), std::string::npos) << log;
  EXPECT_EQ(trades_in_redis("F45A"), -1) << "the key is not a stream yet";
  EXPECT_TRUE(wait_for([&] { return readyz_is(503, "write_path:"); }, 2s))
      << "/readyz while F45A's writes fail: " << last_readyz;
  // The operator fixes the key: F45A's trades follow, every one of them.
  ASSERT_TRUE(redis_command({"DEL", bad_stream}));
  EXPECT_TRUE(wait_for([&] { return trades_in_redis("F45A") == bad_sent; }, 20s))
      << trades_in_redis("F45A") << " of " << bad_sent << "\n"
      << tsd::read_text_file(receiver.log);
  EXPECT_TRUE(wait_for(
      [&] { return tsd::read_text_file(receiver.log).find("ready again") != std::string::npos; },
      10s))
      << tsd::read_text_file(receiver.log);
  EXPECT_TRUE(wait_for([&] { return readyz_is(200, "write_path: ok"); }, 2s))
      << "/readyz once the key is fixed: " << last_readyz;
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  const std::string summary = tsd::read_text_file(dir + "/receiver.json");
  EXPECT_EQ(json_number(summary, "written"), kTrades) << summary;
  EXPECT_EQ(json_number(summary, "dropped"), 0) << summary;
  EXPECT_GE(json_number(summary, "stalls"), 1) << summary;
  ASSERT_TRUE(redis_command({"DEL", bad_stream, good_stream}));
}

// F53: --stream-maxlen never trims what the consumer group has not read or acknowledged: the
// group below reads nothing, so every trade stays; once it acknowledged them, the stream is
// trimmed again.
TEST(LifecycleFault, F53_ReceiverTrimmingNeverDeletesWhatTheGroupStillNeeds) {
  const std::string dir = temp_dir("f53");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string stream = ts::services::trade_stream("F53A");
  ASSERT_TRUE(redis_command({"DEL", stream, ts::services::last_trade_key("F53A")}));
  ASSERT_TRUE(redis_command({"XGROUP", "CREATE", stream, "recorder", "0", "MKSTREAM"}));
  const std::string port = closed_port();
  constexpr long long kTrades = 10000;
  Service sim = spawn_sim(dir, port, "F53A", 5000, kTrades);
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  Service receiver = spawn_receiver(dir, port, "F53A", {"--stream-maxlen", "1000"});
  const auto last_id = [&] {
    const auto reply = redis_command({"HGET", ts::services::last_trade_key("F53A"), "F53A"});
    if (!reply || reply->type != REDIS_REPLY_STRING) return 0LL;
    const auto trade = ts::services::LastTrade::parse(std::string_view(reply->str, reply->len));
    return trade ? static_cast<long long>(trade->trade_id) : 0LL;
  };
  ASSERT_TRUE(wait_for([&] { return last_id() == kTrades; }, 30s))
      << tsd::read_text_file(receiver.log);
  // Two seconds more: trimming runs about once a second.
  ASSERT_FALSE(wait_for([&] { return trades_in_redis("F53A") < kTrades; }, 2s))
      << "entries the group never read were trimmed: " << trades_in_redis("F53A") << " of "
      << kTrades << " left\n"
      << tsd::read_text_file(receiver.log);
  // The group reads and acknowledges everything: now the stream may shrink to about 1000.
  const auto read = redis_command(
      {"XREADGROUP", "GROUP", "recorder", "t", "COUNT", "100000", "STREAMS", stream, ">"});
  ASSERT_TRUE(read && read->type == REDIS_REPLY_ARRAY && read->elements == 1);
  std::vector<std::string> ack{"XACK", stream, "recorder"};
  const redisReply* entries = read->element[0]->element[1];
  for (std::size_t i = 0; i < entries->elements; ++i) {
    ack.emplace_back(entries->element[i]->element[0]->str, entries->element[i]->element[0]->len);
  }
  ASSERT_EQ(static_cast<long long>(entries->elements), kTrades);
  ASSERT_TRUE(redis_command(ack));
  EXPECT_TRUE(wait_for([&] { return redis_integer("XLEN " + stream) <= 2000; }, 10s))
      << "XLEN " << redis_integer("XLEN " + stream) << "\n"
      << tsd::read_text_file(receiver.log);
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  ASSERT_TRUE(redis_command({"DEL", stream}));
}

/// The `t` field of the last entry of a stream (XREVRANGE + - COUNT 1), or "" if none.
std::string last_trade_id(const std::string& stream) {
  auto& servers = ts::testing::Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return "";
  }
  auto* reply =
      static_cast<redisReply*>(redisCommand(c, "XREVRANGE %s + - COUNT 1", stream.c_str()));
  std::string value;
  if (reply != nullptr && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
    const redisReply* fields = reply->element[0]->element[1];
    for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
      if (std::string(fields->element[i]->str, fields->element[i]->len) == "t") {
        value.assign(fields->element[i + 1]->str, fields->element[i + 1]->len);
      }
    }
  }
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  return value;
}

/// Polls XLEN of `stream` until it reaches `n` or `bound` passes; returns the last length.
long long wait_for_length(const std::string& stream, long long n, std::chrono::seconds bound) {
  const auto deadline = Clock::now() + bound;
  long long length = redis_integer("XLEN " + stream);
  while (length < n && Clock::now() < deadline) {
    tsd::poll_pause(20);
    length = redis_integer("XLEN " + stream);
  }
  return length;
}

/// A number field of a flat JSON summary, or -1.
long long summary_field(const std::string& summary, const std::string& key) {
  const auto at = summary.find("\"" + key + "\":");
  return at == std::string::npos ? -1LL : std::atoll(summary.c_str() + at + key.size() + 3);
}

// F43: the simulator is restarted while the receiver runs, so the trade ids of its symbol
// start again at 1 (all below the highest id already seen). Every trade of the new run must
// reach the stream: the sequence tracker reports the reset (logged, counted in `id_resets`),
// it does not decide what is written (the recorder's primary key deduplicates).
TEST(LifecycleFault, F43_SimulatorRestartedIdsStartAgainAndEveryTradeIsWritten) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dir = temp_dir("f43r");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string stream = ts::services::trade_stream("F43R");
  ASSERT_GE(redis_integer("DEL " + stream + " " + ts::services::last_trade_key("F43R")), 0);
  const std::string port = closed_port();
  constexpr long long kFirstRun = 3000;
  constexpr long long kSecondRun = 2000;  // ids 1..2000: every one below the first run's 3000
  const auto sim_argv = [&](long long trades, const std::string& name) {
    return std::vector<std::string>{TS_FEED_SIM_BIN,
                                    "--listen",
                                    "127.0.0.1:" + port,
                                    "--symbols",
                                    "F43R",
                                    "--rate",
                                    "5000",
                                    "--max-messages",
                                    std::to_string(trades),
                                    "--summary-file",
                                    dir + "/" + name + ".json"};
  };
  Service sim1 = Service::spawn(dir, "sim1", sim_argv(kFirstRun, "sim1"));
  Service receiver = Service::spawn(
      dir, "receiver",
      {TS_RECEIVER_BIN, "--feed-url", "ws://127.0.0.1:" + port + "/ws", "--symbols", "F43R",
       "--redis-url", servers.redis_url(), "--summary-file", dir + "/receiver.json"});
  ASSERT_EQ(wait_for_length(stream, kFirstRun, 20s), kFirstRun)
      << tsd::read_text_file(receiver.log);
  ASSERT_EQ(last_trade_id(stream), std::to_string(kFirstRun));
  // The venue restarts: a new process on the same port, ids from 1 again.
  sim1.signal(SIGTERM);
  ASSERT_EQ(sim1.wait(15s), 0);
  Service sim2 = Service::spawn(dir, "sim2", sim_argv(kSecondRun, "sim2"));
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim2.signal(SIGTERM);
    EXPECT_EQ(sim2.wait(15s), 0);
  });
  const long long length = wait_for_length(stream, kFirstRun + kSecondRun, 30s);
  EXPECT_EQ(length, kFirstRun + kSecondRun)
      << "trades of the restarted feed were not written: " << length - kFirstRun << " of "
      << kSecondRun << "\n"
      << tsd::read_text_file(receiver.log);
  EXPECT_EQ(last_trade_id(stream), std::to_string(kSecondRun));
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  const std::string summary = tsd::read_text_file(dir + "/receiver.json");
  EXPECT_EQ(summary_field(summary, "written"), kFirstRun + kSecondRun) << summary;
  EXPECT_EQ(summary_field(summary, "id_resets"), 1) << summary;
  EXPECT_NE(tsd::read_text_file(receiver.log).find("trade ids went back"), std::string::npos)
      << "the reset must be logged";
  ASSERT_GE(redis_integer("DEL " + stream + " " + ts::services::last_trade_key("F43R")), 0);
}

// F43: one outlier id (9e18, a venue's bogus value) in the middle of a symbol's trades. The
// trades after it (ids 1001..3000, far below it) must all be written; the outlier is written
// too (the tracker does not decide what is written) and reported as an outlier.
TEST(LifecycleFault, F43_OutlierIdDoesNotStopLaterTrades) {
  auto& servers = ts::testing::Servers::instance();
  const std::string dir = temp_dir("f43o");
  ts::testing::ScopeExit remove_dir("remove " + dir, [&] { std::filesystem::remove_all(dir); });
  const std::string stream = ts::services::trade_stream("F43O");
  ASSERT_GE(redis_integer("DEL " + stream + " " + ts::services::last_trade_key("F43O")), 0);
  const std::string port = closed_port();
  constexpr long long kTrades = 3000;
  Service sim = Service::spawn(
      dir, "sim",
      {TS_FEED_SIM_BIN, "--listen", "127.0.0.1:" + port, "--symbols", "F43O", "--rate", "5000",
       "--max-messages", std::to_string(kTrades), "--fault-outlier-after", "1000",
       "--fault-outlier-id", "9000000000000000000", "--summary-file", dir + "/sim.json"});
  ts::testing::ScopeExit stop_sim("stop the simulator", [&] {
    sim.signal(SIGTERM);
    EXPECT_EQ(sim.wait(15s), 0);
  });
  Service receiver = Service::spawn(
      dir, "receiver",
      {TS_RECEIVER_BIN, "--feed-url", "ws://127.0.0.1:" + port + "/ws", "--symbols", "F43O",
       "--redis-url", servers.redis_url(), "--summary-file", dir + "/receiver.json"});
  const long long length = wait_for_length(stream, kTrades + 1, 30s);
  EXPECT_EQ(length, kTrades + 1) << "trades after the outlier id were not written\n"
                                 << tsd::read_text_file(receiver.log);
  EXPECT_EQ(last_trade_id(stream), std::to_string(kTrades));
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(15s), 0) << tsd::read_text_file(receiver.log);
  const std::string summary = tsd::read_text_file(dir + "/receiver.json");
  EXPECT_EQ(summary_field(summary, "written"), kTrades + 1) << summary;
  EXPECT_EQ(summary_field(summary, "outliers"), 1) << summary;
  // The outlier's jump is taken back: no gap, no missing trades, no reset.
  EXPECT_EQ(summary_field(summary, "gaps"), 0) << summary;
  EXPECT_EQ(summary_field(summary, "missing_trades"), 0) << summary;
  EXPECT_EQ(summary_field(summary, "id_resets"), 0) << summary;
  ASSERT_GE(redis_integer("DEL " + stream + " " + ts::services::last_trade_key("F43O")), 0);
}

#endif  // the service binaries

}  // namespace

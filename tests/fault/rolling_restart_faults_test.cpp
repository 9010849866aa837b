// F80 (docs/failure-modes.md): a rolling restart of ts-recorder and of ts-executor. A new
// release is started beside the old one (a consumer of its own name in the same group), the old
// one is stopped (SIGTERM) once the new one is ready, while work keeps arriving. Nothing may be
// processed twice (no duplicate seen by either process, every effect exactly once) and no entry
// may stay pending longer than the claim interval (plus a slack for a loaded machine): the old
// release leaves nothing pending in its name, since a claim by the new one would have to wait
// claim_min_idle (3 s here, 10 s by default) first.
//
// The real binaries against the harness's PostgreSQL and Redis; the database "rolling_restart"
// gets the services' schema (services/common/migrations.cpp).
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/io_context.hpp>

#include "common/keys.hpp"
#include "common/migrations.hpp"
#include "common/settings.hpp"
#include "services_schema.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef TS_RECORDER_BIN
#error "TS_RECORDER_BIN must name the ts-recorder executable"
#endif
#ifndef TS_EXECUTOR_BIN
#error "TS_EXECUTOR_BIN must name the ts-executor executable"
#endif

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace detail = ts::testing::detail;
using namespace std::chrono_literals;
using ts::redis::FieldView;
using ts::redis::RedisClient;

namespace {

#define CO_ASSERT(cond, message)                                  \
  if (!(cond)) {                                                  \
    ADD_FAILURE() << "assertion failed: " #cond " " << (message); \
    co_return;                                                    \
  }

constexpr const char* kDatabase = "rolling_restart";
// The claim settings both releases run with, and the bound on an entry's time pending.
constexpr std::chrono::milliseconds kClaimMinIdle{3000};
constexpr std::chrono::milliseconds kClaimInterval{500};
constexpr std::chrono::milliseconds kSlack{750};
constexpr std::chrono::milliseconds kPendingBound = kClaimInterval + kSlack;

using ts::testing::apply_schema;

/// A service process of the test: killed and reaped if still running at the end; its log's
/// tail printed when the test failed.
class Release {
 public:
  Release(const std::string& binary, const std::string& directory, const std::string& name,
          std::vector<std::string> args, const std::vector<std::string>& env)
      : name_(name),
        log_(directory + "/" + name + ".log"),
        summary_(directory + "/" + name + ".summary.json") {
    detail::SpawnRequest request;
    request.argv.push_back(binary);
    for (auto& a : args) request.argv.push_back(std::move(a));
    request.argv.push_back("--summary-file=" + summary_);
    request.directory = directory;
    request.log_file = log_;
    request.user = detail::ServerUser{};
    request.extra_env = env;
    pid_ = detail::spawn_process(request);
  }
  ~Release() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      (void)::waitpid(pid_, &status, 0);
    }
    if (::testing::Test::HasFailure()) {
      std::cerr << "---- " << name_ << " log (tail) ----\n"
                << detail::log_tail(log_, 0, 40) << '\n';
    }
  }
  Release(const Release&) = delete;
  Release& operator=(const Release&) = delete;

  void terminate() const { ::kill(pid_, SIGTERM); }
  bool exited() {
    if (status_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_.has_value();
  }
  /// The exit code, or nullopt when it did not exit within `timeout`.
  asio::awaitable<std::optional<int>> wait_exit(std::chrono::milliseconds timeout) {
    co_await ts::testing::eventually([this] { return exited(); }, timeout, 10ms);
    if (!status_) co_return std::nullopt;
    co_return WIFEXITED(*status_) ? WEXITSTATUS(*status_) : 128 + WTERMSIG(*status_);
  }
  /// Whether the log has `text` (the readiness line, e.g.).
  bool logged(const std::string& text) const {
    try {
      return detail::read_text_file(log_).find(text) != std::string::npos;
    } catch (const std::exception&) {
      return false;  // not created yet
    }
  }
  /// A counter of the summary file (written on exit); -1 when absent.
  std::int64_t summary(const std::string& key) const {
    const std::string text = detail::read_text_file(summary_);
    const std::string needle = "\"" + key + "\":";
    const std::size_t at = text.find(needle);
    if (at == std::string::npos) {
      ADD_FAILURE() << name_ << ": summary has no " << key << ": " << text;
      return -1;
    }
    return std::strtoll(text.c_str() + at + needle.size(), nullptr, 10);
  }

 private:
  std::string name_;
  std::string log_;
  std::string summary_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

void flush_redis() {
  auto& servers = ts::testing::Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  ASSERT_TRUE(c != nullptr && c->err == 0) << (c != nullptr ? c->errstr : "out of memory");
  auto* reply = static_cast<redisReply*>(redisCommand(c, "FLUSHALL"));
  const bool ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  ASSERT_TRUE(ok) << "FLUSHALL failed";
}

std::vector<std::string> claim_args() {
  return {"--claim-min-idle=" + std::to_string(kClaimMinIdle.count()) + "ms",
          "--claim-interval=" + std::to_string(kClaimInterval.count()) + "ms"};
}

class RollingRestart : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& servers = ts::testing::Servers::instance();
    servers.create_database(kDatabase);
    apply_schema(servers.postgres_dsn(kDatabase));
    (void)servers.redis_url();
  }
  void SetUp() override {
    TS_SKIP_IF_EXTERNAL();
    flush_redis();
    std::string pattern = ts::testing::Servers::temp_root() + "/ts-rolling-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    directory_ = pattern;
  }
  void TearDown() override {
    if (!directory_.empty() && !HasFailure()) std::filesystem::remove_all(directory_);
  }

  std::unique_ptr<Release> start(const char* binary, const std::string& name,
                                 std::vector<std::string> args) {
    auto& servers = ts::testing::Servers::instance();
    for (auto& a : claim_args()) args.push_back(std::move(a));
    return std::make_unique<Release>(
        binary, directory_, name, std::move(args),
        std::vector<std::string>{"TS_POSTGRES_DSN=" + servers.postgres_dsn(kDatabase),
                                 "TS_REDIS_URL=" + servers.redis_url(), "TS_LOG_LEVEL=info"});
  }

  void with_clients(
      std::function<asio::awaitable<void>(ts::pg::PostgresClient&, RedisClient&)> body) {
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          ts::pg::PostgresConfig pg_config;
          pg_config.dsn = ts::testing::Servers::instance().postgres_dsn(kDatabase);
          pg_config.application_name = "rolling-restart-test";
          ts::redis::RedisConfig redis_config;
          redis_config.url = ts::testing::Servers::instance().redis_url();
          redis_config.client_name = "rolling-restart-test";
          ts::pg::PostgresClient pg(io.get_executor(), pg_config);
          RedisClient redis(io.get_executor(), redis_config);
          co_await pg.start();
          co_await redis.start();
          std::exception_ptr failure;
          try {
            co_await body(pg, redis);
          } catch (...) {
            failure = std::current_exception();
          }
          co_await redis.close();
          co_await pg.close();
          if (failure) std::rethrow_exception(failure);
        },
        180s);
  }

  std::string directory_;
};

/// The longest time an entry of `group` has been pending now (0 when none is).
asio::awaitable<std::chrono::milliseconds> oldest_pending(RedisClient& redis, std::string stream,
                                                          std::string group) {
  ts::redis::PendingQuery query;
  query.count = 100000;
  std::chrono::milliseconds oldest{0};
  const auto groups = co_await redis.xinfo_groups(stream);
  if (groups.empty()) co_return oldest;
  for (const auto& p : co_await redis.xpending_range(stream, group, query)) {
    oldest = std::max(oldest, p.idle);
  }
  co_return oldest;
}

asio::awaitable<std::int64_t> pending(RedisClient& redis, std::string stream, std::string group) {
  for (const auto& g : co_await redis.xinfo_groups(stream)) {
    if (g.name == group) co_return g.pending;
  }
  co_return 0;
}

/// The rolling restart itself, the same for both services: `produce` adds one round of work
/// and `done` says whether everything produced so far has its effect and nothing is pending.
/// Old runs until it did some work, new starts beside it, old is stopped once new is ready,
/// work keeps arriving during and after the stop. The oldest pending entry is sampled every
/// round. Returns false (with a failure recorded) when a step did not happen in time.
struct Rollout {
  std::function<asio::awaitable<void>()> produce;
  std::function<asio::awaitable<std::int64_t>()> progress;  ///< effects so far
  std::function<asio::awaitable<bool>()> done;
  std::string stream;
  std::string group;
  std::string ready_line;
  std::string old_consumer;
  std::chrono::milliseconds max_pending{0};
  std::chrono::milliseconds handover{0};  ///< SIGTERM of old → its exit

  asio::awaitable<bool> run(Release& old_release,
                            const std::function<std::unique_ptr<Release>()>& start_new,
                            std::unique_ptr<Release>& new_release) {
    auto round = [&]() -> asio::awaitable<void> {
      co_await produce();
      const auto oldest = co_await oldest_pending_of();
      max_pending = std::max(max_pending, oldest);
      co_await ts::testing::pause_for(20ms);
    };
    const auto deadline = [] { return std::chrono::steady_clock::now() + 30s; };
    auto until_deadline = deadline();
    for (;;) {
      const std::int64_t effects = co_await progress();
      if (effects >= 500) break;
      if (std::chrono::steady_clock::now() > until_deadline) {
        ADD_FAILURE() << "the old release did no work within 30 s";
        co_return false;
      }
      co_await round();
    }
    new_release = start_new();
    until_deadline = deadline();
    while (!new_release->logged(ready_line)) {
      if (std::chrono::steady_clock::now() > until_deadline) {
        ADD_FAILURE() << "the new release was not ready within 30 s";
        co_return false;
      }
      co_await round();
    }
    for (int i = 0; i < 10; ++i) co_await round();  // both run side by side
    old_release.terminate();
    const auto t0 = std::chrono::steady_clock::now();
    until_deadline = deadline();
    while (!old_release.exited()) {
      if (std::chrono::steady_clock::now() > until_deadline) {
        ADD_FAILURE() << "the old release did not exit within 30 s of SIGTERM";
        co_return false;
      }
      co_await round();
    }
    handover = ts::testing::elapsed_ms(t0);
    // Stopped gracefully: nothing left pending in the old release's name.
    const auto summary = co_await redis->xpending(stream, group);
    for (const auto& [consumer, count] : summary.consumers) {
      if (consumer.rfind(old_consumer, 0) == 0) {
        ADD_FAILURE() << "the old release left " << count << " entries pending as " << consumer
                      << " after a graceful stop (a claim waits claim_min_idle for them)";
      }
    }
    // Work keeps arriving for the new release alone for longer than a claim takes.
    const auto after = std::chrono::steady_clock::now();
    while (ts::testing::elapsed_ms(after) < kPendingBound + 500ms) co_await round();
    until_deadline = deadline();
    for (;;) {
      const bool all_done = co_await done();
      if (all_done) break;
      if (std::chrono::steady_clock::now() > until_deadline) {
        ADD_FAILURE() << "the work was not all done within 30 s after the last of it came";
        co_return false;
      }
      const auto oldest = co_await oldest_pending_of();
      max_pending = std::max(max_pending, oldest);
      co_await ts::testing::pause_for(20ms);
    }
    co_return true;
  }

  asio::awaitable<std::chrono::milliseconds> oldest_pending_of() {
    co_return co_await oldest_pending(*redis, stream, group);
  }
  RedisClient* redis = nullptr;
};

// ---- ts-recorder -------------------------------------------------------------------------------

asio::awaitable<void> add_trades(RedisClient& redis, std::string symbol, std::int64_t first,
                                 std::int64_t count, std::int64_t base_ms) {
  static constexpr std::array<const char*, 8> kNames{"s", "t", "p", "q", "T", "E", "m", "r"};
  std::vector<std::array<std::string, 8>> values;
  values.reserve(static_cast<std::size_t>(count));
  for (std::int64_t id = first; id < first + count; ++id) {
    values.push_back({symbol, std::to_string(id), "100." + std::to_string(id % 100), "0.5",
                      std::to_string(base_ms + id), std::to_string(base_ms + id + 1),
                      id % 2 == 0 ? "1" : "0", std::to_string((base_ms + id + 2) * 1000)});
  }
  std::vector<std::array<FieldView, 8>> entries;
  entries.reserve(values.size());
  for (const auto& v : values) {
    std::array<FieldView, 8> fields;
    for (std::size_t i = 0; i < 8; ++i) fields[i] = FieldView{kNames[i], v[i]};
    entries.push_back(fields);
  }
  (void)co_await redis.xadd_bulk(ts::services::trade_stream(symbol), entries);
}

TEST_F(RollingRestart, F80_RecorderReleaseHandsOverWithNothingTwiceAndNothingStuck) {
  const std::string symbol = "F80REC";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    (void)co_await pg.execute("DELETE FROM ticks WHERE symbol = $1", symbol);
    std::int64_t total = 0;
    auto old_release = start(TS_RECORDER_BIN, "recorder-old", {"--consumer=f80-old"});
    std::unique_ptr<Release> new_release;
    Rollout rollout;
    rollout.redis = &redis;
    rollout.stream = stream;
    rollout.group = "recorder";
    rollout.ready_line = "recording ";
    rollout.old_consumer = "f80-old";
    rollout.produce = [&]() -> asio::awaitable<void> {
      co_await add_trades(redis, symbol, total + 1, 100, base);
      total += 100;
    };
    rollout.progress = [&]() -> asio::awaitable<std::int64_t> {
      co_return co_await pg.query_value<std::int64_t>(
          "SELECT count(*) FROM ticks WHERE symbol = $1", symbol);
    };
    rollout.done = [&]() -> asio::awaitable<bool> {
      const auto ticks = co_await pg.query_value<std::int64_t>(
          "SELECT count(*) FROM ticks WHERE symbol = $1", symbol);
      const std::int64_t left = co_await pending(redis, stream, "recorder");
      co_return ticks == total&& left == 0;
    };
    const bool finished = co_await rollout.run(
        *old_release,
        [&] { return start(TS_RECORDER_BIN, "recorder-new", {"--consumer=f80-new"}); },
        new_release);
    CO_ASSERT(finished, "");
    EXPECT_EQ((co_await old_release->wait_exit(1s)).value_or(-1), 0);
    new_release->terminate();
    EXPECT_EQ((co_await new_release->wait_exit(20s)).value_or(-1), 0);

    const auto row = co_await pg.query_one(
        "SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM ticks "
        "WHERE symbol = $1",
        symbol);
    CO_ASSERT(row.has_value(), "");
    const auto [count, distinct, lo, hi] =
        row->as<std::int64_t, std::int64_t, std::optional<std::int64_t>,
                std::optional<std::int64_t>>();
    EXPECT_EQ(count, total);
    EXPECT_EQ(distinct, total);
    EXPECT_EQ(lo.value_or(-1), 1);
    EXPECT_EQ(hi.value_or(-1), total);
    // Nothing processed twice: no duplicate met by either release, no redelivered batch.
    EXPECT_EQ(old_release->summary("duplicates") + new_release->summary("duplicates"), 0);
    EXPECT_EQ(
        old_release->summary("redelivered_batches") + new_release->summary("redelivered_batches"),
        0);
    EXPECT_EQ(old_release->summary("inserted") + new_release->summary("inserted"), total);
    EXPECT_GT(old_release->summary("inserted"), 0);
    EXPECT_GT(new_release->summary("inserted"), 0);
    EXPECT_EQ(old_release->summary("dead_lettered") + new_release->summary("dead_lettered"), 0);
    EXPECT_LE(rollout.max_pending, kPendingBound)
        << "an entry stayed pending " << rollout.max_pending.count() << " ms";
    std::cout << "F80 recorder: " << total << " trades, old exited " << rollout.handover.count()
              << " ms after SIGTERM, oldest pending seen " << rollout.max_pending.count()
              << " ms (bound " << kPendingBound.count() << " ms)\n";
  });
}

// ---- ts-executor -------------------------------------------------------------------------------

asio::awaitable<void> submit_orders(RedisClient& redis, std::int64_t first, std::int64_t count) {
  for (std::int64_t n = first; n < first + count; ++n) {
    const std::string id = "f80-" + std::to_string(n);
    const std::array<FieldView, 6> fields{FieldView{"client_order_id", id},
                                          FieldView{"symbol", "F80X"},
                                          FieldView{"side", "buy"},
                                          FieldView{"type", "market"},
                                          FieldView{"qty", "1"},
                                          FieldView{"submitted_at", "1700000000000"}};
    (void)co_await redis.xadd("orders:requests", fields);
  }
}

/// orders:events of the F80 orders: id → number of events, and whether any was not a fill.
asio::awaitable<std::map<std::string, int>> events_per_order(RedisClient& redis) {
  std::map<std::string, int> out;
  for (const auto& e : co_await redis.xrange("orders:events")) {
    const auto id = e.field("client_order_id");
    const auto status = e.field("status");
    if (!id || id->rfind("f80-", 0) != 0) continue;
    out[std::string(*id)] += (status && *status == "filled") ? 1 : 1000;
  }
  co_return out;
}

TEST_F(RollingRestart, F80_ExecutorReleaseHandsOverWithNothingTwiceAndNothingStuck) {
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    (void)co_await pg.execute("DELETE FROM fills WHERE client_order_id LIKE 'f80-%'");
    (void)co_await pg.execute("DELETE FROM orders WHERE client_order_id LIKE 'f80-%'");
    const std::array<FieldView, 1> last{FieldView{"F80X", "10 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("F80X"), last);
    std::int64_t total = 0;
    auto old_release =
        start(TS_EXECUTOR_BIN, "executor-old", {"--symbols=F80X", "--consumer=f80-old"});
    std::unique_ptr<Release> new_release;
    auto fills = [&]() -> asio::awaitable<std::int64_t> {
      co_return co_await pg.query_value<std::int64_t>(
          "SELECT count(*) FROM fills WHERE client_order_id LIKE 'f80-%'");
    };
    Rollout rollout;
    rollout.redis = &redis;
    rollout.stream = "orders:requests";
    rollout.group = "executor";
    rollout.ready_line = "executing orders:requests";
    rollout.old_consumer = "f80-old";
    rollout.produce = [&]() -> asio::awaitable<void> {
      co_await submit_orders(redis, total + 1, 20);
      total += 20;
    };
    rollout.progress = fills;
    rollout.done = [&]() -> asio::awaitable<bool> {
      const std::int64_t filled = co_await fills();
      const std::int64_t left = co_await pending(redis, "orders:requests", "executor");
      co_return filled == total&& left == 0;
    };
    const bool finished = co_await rollout.run(
        *old_release,
        [&] {
          return start(TS_EXECUTOR_BIN, "executor-new", {"--symbols=F80X", "--consumer=f80-new"});
        },
        new_release);
    CO_ASSERT(finished, "");
    EXPECT_EQ((co_await old_release->wait_exit(1s)).value_or(-1), 0);
    new_release->terminate();
    EXPECT_EQ((co_await new_release->wait_exit(20s)).value_or(-1), 0);

    const auto row = co_await pg.query_one(
        "SELECT count(*), count(DISTINCT client_order_id) FROM fills "
        "WHERE client_order_id LIKE 'f80-%'");
    CO_ASSERT(row.has_value(), "");
    EXPECT_EQ((row->as<std::int64_t, std::int64_t>()),
              (std::tuple<std::int64_t, std::int64_t>{total, total}));
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT count(*) FROM orders WHERE client_order_id LIKE 'f80-%'"),
              total);
    // One outcome event per order: nothing published twice.
    const auto events = co_await events_per_order(redis);
    EXPECT_EQ(static_cast<std::int64_t>(events.size()), total);
    int twice = 0;
    for (const auto& [id, n] : events) twice += n == 1 ? 0 : 1;
    EXPECT_EQ(twice, 0) << "orders with more than one event (or not a fill)";
    EXPECT_EQ(old_release->summary("duplicates") + new_release->summary("duplicates"), 0);
    EXPECT_EQ(old_release->summary("filled") + new_release->summary("filled"), total);
    EXPECT_GT(old_release->summary("filled"), 0);
    EXPECT_GT(new_release->summary("filled"), 0);
    EXPECT_LE(rollout.max_pending, kPendingBound)
        << "an entry stayed pending " << rollout.max_pending.count() << " ms";
    std::cout << "F80 executor: " << total << " orders, old exited " << rollout.handover.count()
              << " ms after SIGTERM, oldest pending seen " << rollout.max_pending.count()
              << " ms (bound " << kPendingBound.count() << " ms)\n";
  });
}

}  // namespace

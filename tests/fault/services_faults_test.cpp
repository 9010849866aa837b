// Service fault tests (docs/failure-modes.md F26, F27, F40; docs/services.md): the real ts-recorder
// and ts-executor binaries against the harness's PostgreSQL and Redis, crashed on purpose with
// their test-only fault switches and stopped with signals. Also StreamConsumer's batch mode,
// which ts-recorder is built on.
//
// Each test uses symbols (streams) of its own; the database "services_faults" gets schema
// version 1 from services/common/migrations.cpp, applied directly (simple query protocol).
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include "common/keys.hpp"
#include "common/migrations.hpp"
#include "common/settings.hpp"
#include "services_schema.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef TS_RECORDER_BIN
#error "TS_RECORDER_BIN must name the ts-recorder executable"
#endif
#ifndef TS_EXECUTOR_BIN
#error "TS_EXECUTOR_BIN must name the ts-executor executable"
#endif
#ifndef TS_TEST_FAULTS
#error "TS_TEST_FAULTS (0 or 1: the services have their --fault-crash-* switches) must be defined"
#endif

/// The tests that crash a service on purpose need its test-only fault switches.
#define TS_SKIP_WITHOUT_FAULT_SWITCHES()                                                     \
  if (!TS_TEST_FAULTS) {                                                                     \
    GTEST_SKIP() << "built with -DTS_TEST_FAULTS=OFF: the services have no --fault-crash-*"; \
  }

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace detail = ts::testing::detail;
using namespace std::chrono_literals;
using ts::redis::FieldView;
using ts::redis::RedisClient;

namespace {

/// ASSERT_* cannot be used in a coroutine (it expands to `return`): records the failure and
/// leaves the coroutine.
#define CO_ASSERT(cond, message)                                  \
  if (!(cond)) {                                                  \
    ADD_FAILURE() << "assertion failed: " #cond " " << (message); \
    co_return;                                                    \
  }

constexpr const char* kDatabase = "services_faults";

// ---- schema ------------------------------------------------------------------------------------

using ts::testing::apply_schema;

// ---- service processes -------------------------------------------------------------------------

/// A ts-* process spawned by a test: killed (SIGKILL) and reaped if the test leaves it running;
/// its log is printed when the test failed.
class Child {
 public:
  Child(const std::string& binary, const std::string& directory, const std::string& name,
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
    request.user = detail::ServerUser{};  // as the current user
    request.extra_env = env;
    pid_ = detail::spawn_process(request);
  }
  ~Child() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      (void)::waitpid(pid_, &status, 0);
    }
    if (::testing::Test::HasFailure()) {
      std::cerr << "---- " << name_ << " log (tail) ----\n"
                << detail::log_tail(log_, 0, 60) << '\n';
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int number) const {
    ASSERT_FALSE(status_.has_value()) << name_ << " already exited";
    ASSERT_EQ(::kill(pid_, number), 0);
  }
  /// Reaps the process if it exited; true once it has.
  bool poll() {
    if (status_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_.has_value();
  }
  /// Waits (on the test's loop) for the exit; its code (128 + signal when killed), or nullopt
  /// at the deadline.
  asio::awaitable<std::optional<int>> wait_exit(std::chrono::milliseconds timeout) {
    co_await ts::testing::eventually([this] { return poll(); }, timeout, 10ms);
    if (!status_) co_return std::nullopt;
    co_return WIFEXITED(*status_) ? WEXITSTATUS(*status_) : 128 + WTERMSIG(*status_);
  }
  /// A counter of the summary file (written on exit); -1 when absent.
  std::int64_t summary(const std::string& key) const {
    std::string text;
    try {
      text = detail::read_text_file(summary_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << name_ << ": no summary: " << e.what();
      return -1;
    }
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

class ServicesFault : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto& servers = ts::testing::Servers::instance();
    servers.create_database(kDatabase);
    apply_schema(servers.postgres_dsn(kDatabase));
    (void)servers.redis_url();
  }

  void SetUp() override {
    TS_SKIP_IF_EXTERNAL();
    // Every recorder reads every trade stream (a bucket holds several symbols): each test
    // starts from an empty Redis, so that nothing another test left is read, claimed or
    // counted here.
    flush_redis();
    std::string pattern = ts::testing::Servers::temp_root() + "/ts-services-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    directory_ = pattern;
  }
  void TearDown() override {
    if (!directory_.empty() && !HasFailure()) std::filesystem::remove_all(directory_);
  }

  std::vector<std::string> env() const {
    auto& servers = ts::testing::Servers::instance();
    return {"TS_POSTGRES_DSN=" + servers.postgres_dsn(kDatabase),
            "TS_REDIS_URL=" + servers.redis_url(), "TS_LOG_LEVEL=info"};
  }
  std::unique_ptr<Child> recorder(const std::string& name, std::vector<std::string> args) {
    return std::make_unique<Child>(TS_RECORDER_BIN, directory_, name, std::move(args), env());
  }
  std::unique_ptr<Child> executor(const std::string& name, std::vector<std::string> args) {
    return std::make_unique<Child>(TS_EXECUTOR_BIN, directory_, name, std::move(args), env());
  }

  /// Runs `body` with started clients of the test database and Redis.
  void with_clients(
      std::function<asio::awaitable<void>(ts::pg::PostgresClient&, RedisClient&)> body,
      std::chrono::seconds timeout = 120s) {
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          ts::pg::PostgresConfig pg_config;
          pg_config.dsn = ts::testing::Servers::instance().postgres_dsn(kDatabase);
          pg_config.application_name = "services-faults-test";
          ts::redis::RedisConfig redis_config;
          redis_config.url = ts::testing::Servers::instance().redis_url();
          redis_config.client_name = "services-faults-test";
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
        timeout);
  }

  std::string directory_;
};

// ---- data helpers ------------------------------------------------------------------------------

/// XADDs trades `first`..`first + count - 1` of `symbol` (T = base + id ms).
asio::awaitable<void> add_trades(RedisClient& redis, std::string symbol, std::int64_t first,
                                 std::int64_t count, std::int64_t base_ms) {
  const std::string stream = ts::services::trade_stream(symbol);
  for (std::int64_t start = first; start < first + count; start += 1000) {
    const std::int64_t end = std::min(first + count, start + 1000);
    std::vector<std::array<std::string, 8>> values;
    values.reserve(static_cast<std::size_t>(end - start));
    for (std::int64_t id = start; id < end; ++id) {
      values.push_back({symbol, std::to_string(id), "100." + std::to_string(id % 100), "0.5",
                        std::to_string(base_ms + id), std::to_string(base_ms + id + 1),
                        id % 2 == 0 ? "1" : "0", std::to_string((base_ms + id + 2) * 1000)});
    }
    static constexpr std::array<const char*, 8> kNames{"s", "t", "p", "q", "T", "E", "m", "r"};
    std::vector<std::array<FieldView, 8>> entries;
    entries.reserve(values.size());
    for (const auto& v : values) {
      std::array<FieldView, 8> fields;
      for (std::size_t i = 0; i < 8; ++i) fields[i] = FieldView{kNames[i], v[i]};
      entries.push_back(fields);
    }
    (void)co_await redis.xadd_bulk(stream, entries);
  }
}

asio::awaitable<std::int64_t> tick_count(ts::pg::PostgresClient& pg, std::string symbol) {
  co_return co_await pg.query_value<std::int64_t>("SELECT count(*) FROM ticks WHERE symbol = $1",
                                                  symbol);
}

/// Pending entries of the group (0 when the stream or the group does not exist yet).
asio::awaitable<std::int64_t> pending(RedisClient& redis, std::string stream, std::string group) {
  const auto groups = co_await redis.xinfo_groups(stream);
  for (const auto& g : groups) {
    if (g.name == group) co_return g.pending;
  }
  co_return 0;
}

/// Checks that `symbol` has exactly trades 1..n, once each, with the times of add_trades.
asio::awaitable<void> expect_exactly_once(ts::pg::PostgresClient& pg, std::string symbol,
                                          std::int64_t n, std::int64_t base_ms) {
  const auto row = co_await pg.query_one(
      "SELECT count(*), count(DISTINCT trade_id), min(trade_id), max(trade_id) FROM ticks "
      "WHERE symbol = $1",
      symbol);
  CO_ASSERT(row.has_value(), "");
  const auto [count, distinct, lo, hi] =
      row->as<std::int64_t, std::int64_t, std::optional<std::int64_t>,
              std::optional<std::int64_t>>();
  EXPECT_EQ(count, n);
  EXPECT_EQ(distinct, n);
  EXPECT_EQ(lo.value_or(-1), 1);
  EXPECT_EQ(hi.value_or(-1), n);
  // Times are exact: T and E in ms, r in µs, as the stream carried them.
  const auto times = co_await pg.query_one(
      "SELECT (extract(epoch FROM trade_time) * 1000)::bigint, "
      "(extract(epoch FROM event_time) * 1000)::bigint, "
      "(extract(epoch FROM received_at) * 1000000)::bigint, buyer_is_maker, price::text "
      "FROM ticks WHERE symbol = $1 AND trade_id = 7",
      symbol);
  CO_ASSERT(times.has_value(), "");
  const auto [t, e, r, maker, price] =
      times->as<std::int64_t, std::int64_t, std::int64_t, bool, std::string>();
  EXPECT_EQ(t, base_ms + 7);
  EXPECT_EQ(e, base_ms + 8);
  EXPECT_EQ(r, (base_ms + 9) * 1000);
  EXPECT_FALSE(maker);
  EXPECT_EQ(price, std::string("100.7"));
}

/// Polls an asynchronous condition every 20 ms until it holds or `timeout` passes.
template <class F>
asio::awaitable<bool> until(F condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const bool ok = co_await condition();
    if (ok) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    co_await ts::testing::pause_for(20ms);
  }
}

// ---- StreamConsumer batch mode -----------------------------------------------------------------

TEST_F(ServicesFault, BatchHandlerAcknowledgesAllEntriesOrNone) {
  with_clients([](ts::pg::PostgresClient&, RedisClient& redis) -> asio::awaitable<void> {
    const std::string stream = "batch-mode:all-or-none";
    for (int i = 0; i < 10; ++i) {
      const std::string n = std::to_string(i);
      const std::array<FieldView, 1> f{FieldView{"n", n}};
      (void)co_await redis.xadd(stream, f);
    }
    ts::redis::StreamConsumerConfig config;
    config.stream = stream;
    config.group = "g";
    config.consumer = "c";
    config.batch = 100;
    config.block = 50ms;
    config.claim_interval = 100ms;
    std::vector<std::size_t> calls;
    ts::redis::StreamConsumer consumer(
        redis, config,
        ts::redis::StreamConsumer::BatchHandler(
            [&](std::span<const ts::redis::StreamEntry> entries) -> asio::awaitable<void> {
              calls.push_back(entries.size());
              if (calls.size() == 1) throw std::runtime_error("first delivery fails");
              co_return;
            }));
    bool finished = false;
    asio::co_spawn(co_await asio::this_coro::executor, consumer.run(),
                   [&](std::exception_ptr) { finished = true; });
    EXPECT_TRUE(
        co_await ts::testing::eventually([&] { return consumer.stats().acked == 10; }, 10s, 5ms));
    consumer.stop();
    EXPECT_TRUE(co_await ts::testing::eventually([&] { return finished; }, 3s, 5ms));
    // One call with all 10 (thrown: none acknowledged), then one more with the same 10.
    EXPECT_EQ(calls, (std::vector<std::size_t>{10, 10}));
    const auto& stats = consumer.stats();
    EXPECT_EQ(stats.delivered, 20u);
    EXPECT_EQ(stats.handler_errors, 10u);
    EXPECT_EQ(stats.acked, 10u);
    EXPECT_EQ(stats.dead_lettered, 0u);
    EXPECT_EQ(co_await pending(redis, stream, "g"), 0);
  });
}

TEST_F(ServicesFault, BatchHandlerNeverSeesDeadLetteredOrDeletedEntries) {
  with_clients([](ts::pg::PostgresClient&, RedisClient& redis) -> asio::awaitable<void> {
    const std::string stream = "batch-mode:dead-letter";
    std::vector<std::string> ids;
    for (int i = 0; i < 6; ++i) {
      const std::string n = std::to_string(i);
      const std::array<FieldView, 1> f{FieldView{"n", n}};
      ids.push_back(co_await redis.xadd(stream, f));
    }
    ts::redis::StreamConsumerConfig config;
    config.stream = stream;
    config.group = "g";
    config.consumer = "c";
    config.block = 50ms;
    config.claim_interval = 100ms;
    config.max_deliveries = 2;
    std::vector<std::size_t> calls;
    ts::redis::StreamConsumer consumer(
        redis, config,
        ts::redis::StreamConsumer::BatchHandler(
            [&](std::span<const ts::redis::StreamEntry> entries) -> asio::awaitable<void> {
              calls.push_back(entries.size());
              throw std::runtime_error("always fails");
              co_return;
            }));
    bool finished = false;
    asio::co_spawn(co_await asio::this_coro::executor, consumer.run(),
                   [&](std::exception_ptr) { finished = true; });
    // First delivery of all 6 fails; before the second, one entry is deleted from the stream.
    EXPECT_TRUE(co_await ts::testing::eventually([&] { return calls.size() >= 1; }, 5s, 1ms));
    (void)co_await redis.command("XDEL", stream, ids[0]);
    EXPECT_TRUE(co_await ts::testing::eventually(
        [&] { return consumer.stats().dead_lettered == 5; }, 10s, 5ms));
    consumer.stop();
    EXPECT_TRUE(co_await ts::testing::eventually([&] { return finished; }, 3s, 5ms));
    CO_ASSERT((calls.size()) >= (2u), "");
    EXPECT_EQ(calls[0], 6u);
    // Delivery 2 (of 5: the deleted one is acknowledged, never handed over), then delivery 3
    // is past max_deliveries: dead-lettered without a call.
    EXPECT_EQ(calls[1], 5u);
    EXPECT_EQ(calls.size(), 2u);
    const auto& stats = consumer.stats();
    EXPECT_EQ(stats.delivered, 11u);
    EXPECT_EQ(stats.handler_errors, 11u);
    EXPECT_EQ(stats.acked, 0u);
    EXPECT_EQ(stats.deleted, 1u);
    EXPECT_EQ(stats.dead_lettered, 5u);
    EXPECT_EQ(co_await redis.xlen(stream + ":dead"), 5);
    EXPECT_EQ(co_await pending(redis, stream, "g"), 0);
  });
}

// F72: one consumer reads many streams with one blocking XREADGROUP: one dedicated connection
// whatever their number; each entry handed over names its stream; acknowledgements per stream.
TEST_F(ServicesFault, F72_OneConsumerReadsManyStreamsOnOneBlockingConnection) {
  with_clients([](ts::pg::PostgresClient&, RedisClient& redis) -> asio::awaitable<void> {
    constexpr int kStreams = 50;
    constexpr int kEach = 20;
    std::vector<std::string> streams;
    for (int s = 0; s < kStreams; ++s) streams.push_back("many:{s}:" + std::to_string(s));
    ts::redis::StreamConsumerConfig config;
    config.streams = streams;
    config.group = "g";
    config.consumer = "c";
    config.batch = 7;  // per stream and read
    config.block = 50ms;
    config.claim_interval = 100ms;
    std::map<std::string, std::set<std::string>> seen;  // stream -> values
    std::size_t largest = 0;
    ts::redis::StreamConsumer consumer(
        redis, config,
        ts::redis::StreamConsumer::BatchHandler(
            [&](std::span<const ts::redis::StreamEntry> entries) -> asio::awaitable<void> {
              largest = std::max(largest, entries.size());
              for (const auto& e : entries) seen[std::string(e.stream)].insert(*e.field("n"));
              co_return;
            }));
    // Every entry is in its stream before the first read: that read returns `batch` entries
    // of each stream (7 x 50), which shows COUNT applying per stream.
    co_await consumer.ensure_group();
    EXPECT_EQ(consumer.stats().groups_created, static_cast<std::uint64_t>(kStreams));
    for (int i = 0; i < kEach; ++i) {
      for (const auto& stream : streams) {
        const std::string n = stream + "#" + std::to_string(i);
        const std::array<FieldView, 1> f{FieldView{"n", n}};
        (void)co_await redis.xadd(stream, f);
      }
    }
    bool finished = false;
    asio::co_spawn(co_await asio::this_coro::executor, consumer.run(),
                   [&](std::exception_ptr) { finished = true; });
    EXPECT_TRUE(co_await ts::testing::eventually(
        [&] { return consumer.stats().acked == kStreams * kEach; }, 20s, 5ms));
    EXPECT_EQ(redis.stats().blocking_connections, 1u)
        << "one blocking connection reads every stream";
    consumer.stop();
    EXPECT_TRUE(co_await ts::testing::eventually([&] { return finished; }, 3s, 5ms));
    EXPECT_EQ(seen.size(), static_cast<std::size_t>(kStreams));
    for (const auto& [stream, values] : seen) {
      EXPECT_EQ(values.size(), static_cast<std::size_t>(kEach)) << stream;
      for (const auto& v : values) EXPECT_TRUE(v.starts_with(stream + "#")) << stream << " " << v;
    }
    EXPECT_EQ(largest, static_cast<std::size_t>(kStreams * 7)) << "batch applies per stream";
    for (const auto& stream : streams) {
      EXPECT_EQ(co_await pending(redis, stream, "g"), 0) << stream;
    }
  });
}

// F44 at the library level: a batch whose handler fails with a permanent error is split down
// to the entry at fault; the others are acknowledged, that one is dead-lettered in time.
TEST_F(ServicesFault, F44_BatchHandlerSplitsAPermanentFailureDownToTheEntryAtFault) {
  with_clients([](ts::pg::PostgresClient&, RedisClient& redis) -> asio::awaitable<void> {
    const std::string stream = "batch-mode:split";
    for (int i = 0; i < 16; ++i) {
      const std::string n = std::to_string(i);
      const std::array<FieldView, 1> f{FieldView{"n", n}};
      (void)co_await redis.xadd(stream, f);
    }
    ts::redis::StreamConsumerConfig config;
    config.stream = stream;
    config.group = "g";
    config.consumer = "c";
    config.batch = 100;
    config.block = 50ms;
    config.claim_interval = 100ms;
    config.max_deliveries = 2;
    std::set<std::string> handled;
    ts::redis::StreamConsumer consumer(
        redis, config,
        ts::redis::StreamConsumer::BatchHandler(
            [&](std::span<const ts::redis::StreamEntry> entries) -> asio::awaitable<void> {
              for (const auto& e : entries) {
                if (*e.field("n") == "11") {
                  throw ts::Error(make_error_code(ts::errc::invalid_argument), "entry 11 refused");
                }
              }
              for (const auto& e : entries) handled.insert(*e.field("n"));
              co_return;
            }));
    bool finished = false;
    asio::co_spawn(co_await asio::this_coro::executor, consumer.run(),
                   [&](std::exception_ptr) { finished = true; });
    EXPECT_TRUE(co_await ts::testing::eventually(
        [&] { return consumer.stats().dead_lettered == 1; }, 10s, 5ms));
    consumer.stop();
    EXPECT_TRUE(co_await ts::testing::eventually([&] { return finished; }, 3s, 5ms));
    EXPECT_EQ(handled.size(), 15u);
    EXPECT_EQ(handled.count("11"), 0u);
    const auto& stats = consumer.stats();
    EXPECT_EQ(stats.acked, 15u);
    EXPECT_GE(stats.splits, 4u) << "16 -> 8 -> 4 -> 2 -> 1";
    const auto dead = co_await redis.xrange(stream + ":dead");
    CO_ASSERT(dead.size() == 1u, "");
    EXPECT_EQ(*dead[0].field("n"), std::string("11"));
    EXPECT_EQ(co_await pending(redis, stream, "g"), 0);
  });
}

// ---- ts-recorder ---------------------------------------------------------------------------

TEST_F(ServicesFault, F26_RecorderCrashAfterCommitBeforeAckRedeliversAsNoOps) {
  TS_SKIP_WITHOUT_FAULT_SWITCHES();
  const std::string symbol = "F26SYM";
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 1000, base);
    {
      auto crash = recorder("f26-crash", {"--readers=1", "--consumer=f26", "--batch=100",
                                          "--fault-crash-after-commit=1"});
      const auto code = co_await crash->wait_exit(30s);
      CO_ASSERT(code.has_value(), "the recorder did not crash");
      EXPECT_EQ(*code, 137);
    }
    // The first batch is committed, not acknowledged.
    EXPECT_EQ(co_await tick_count(pg, symbol), 100);
    const std::string stream = ts::services::trade_stream(symbol);
    EXPECT_EQ(co_await pending(redis, stream, "recorder"), 100);

    auto second = recorder("f26-second", {"--readers=1", "--consumer=f26", "--batch=100"});
    std::int64_t ticks = 0;
    std::int64_t left = -1;
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          ticks = co_await tick_count(pg, symbol);
          left = co_await pending(redis, stream, "recorder");
          co_return ticks == 1000 && left == 0;
        },
        30s));
    EXPECT_EQ(ticks, 1000);
    EXPECT_EQ(left, 0);
    second->signal(SIGTERM);
    const auto t0 = std::chrono::steady_clock::now();
    const auto code = co_await second->wait_exit(10s);
    CO_ASSERT(code.has_value(), "no exit within 10 s of SIGTERM");
    EXPECT_EQ(*code, 0);
    EXPECT_LT(ts::testing::elapsed_ms(t0), 8s);
    co_await expect_exactly_once(pg, symbol, 1000, base);
    // The redelivered batch was a no-op: 100 duplicates, 900 new rows. Its optimistic insert
    // (no ON CONFLICT) met the recorded trades and it went in again with ON CONFLICT.
    EXPECT_EQ(second->summary("duplicates"), 100);
    EXPECT_EQ(second->summary("redelivered_batches"), 1);
    EXPECT_EQ(second->summary("inserted"), 900);
    EXPECT_EQ(second->summary("acked"), 1000);
    EXPECT_EQ(second->summary("dead_lettered"), 0);
  });
}

TEST_F(ServicesFault, F27_EntriesOfACrashedRecorderAreClaimedByAnother) {
  TS_SKIP_WITHOUT_FAULT_SWITCHES();
  const std::string symbol = "F27SYM";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 1000, base);
    {
      auto crash = recorder("f27-a", {"--readers=1", "--consumer=f27-a", "--batch=200",
                                      "--fault-crash-before-commit=1"});
      const auto code = co_await crash->wait_exit(30s);
      CO_ASSERT(code.has_value(), "the recorder did not crash");
      EXPECT_EQ(*code, 137);
    }
    EXPECT_EQ(co_await tick_count(pg, symbol), 0);
    const auto summary = co_await redis.xpending(stream, "recorder");
    EXPECT_EQ(summary.count, 200);
    CO_ASSERT((summary.consumers.size()) == (1u), "");
    EXPECT_EQ(summary.consumers[0].first, std::string("f27-a"));

    auto b = recorder("f27-b", {"--readers=1", "--consumer=f27-b", "--batch=200",
                                "--claim-min-idle=500ms", "--claim-interval=200ms"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::int64_t ticks = co_await tick_count(pg, symbol);
          const std::int64_t left = co_await pending(redis, stream, "recorder");
          co_return ticks == 1000 && left == 0;
        },
        30s));
    b->signal(SIGTERM);
    const auto code = co_await b->wait_exit(10s);
    CO_ASSERT(code.has_value(), "");
    EXPECT_EQ(*code, 0);
    co_await expect_exactly_once(pg, symbol, 1000, base);
    EXPECT_EQ(b->summary("claimed"), 200);
    EXPECT_EQ(b->summary("inserted"), 1000);
    EXPECT_EQ(b->summary("duplicates"), 0);
    EXPECT_EQ(b->summary("dead_lettered"), 0);
  });
}

TEST_F(ServicesFault, RecorderSkipsAndAcknowledgesMalformedEntries) {
  const std::string symbol = "MALSYM";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 10, base);
    const std::string t = std::to_string(base);
    const std::array<FieldView, 5> no_price{FieldView{"s", symbol}, FieldView{"t", "11"},
                                            FieldView{"q", "1"}, FieldView{"T", t},
                                            FieldView{"m", "0"}};
    const std::array<FieldView, 6> bad_id{FieldView{"s", symbol}, FieldView{"t", "x12"},
                                          FieldView{"p", "1"},    FieldView{"q", "1"},
                                          FieldView{"T", t},      FieldView{"m", "0"}};
    const std::array<FieldView, 6> bad_price{FieldView{"s", symbol}, FieldView{"t", "13"},
                                             FieldView{"p", "1,5"},  FieldView{"q", "1"},
                                             FieldView{"T", t},      FieldView{"m", "0"}};
    const std::array<FieldView, 6> other_symbol{FieldView{"s", "OTHER"}, FieldView{"t", "14"},
                                                FieldView{"p", "1"},     FieldView{"q", "1"},
                                                FieldView{"T", t},       FieldView{"m", "0"}};
    (void)co_await redis.xadd(stream, no_price);
    (void)co_await redis.xadd(stream, bad_id);
    (void)co_await redis.xadd(stream, bad_price);
    (void)co_await redis.xadd(stream, other_symbol);
    co_await add_trades(redis, symbol, 11, 5, base);  // 11..15, after the bad ones
    // 16: a trade of 2020-01-01, whose day has no partition yet: the recorder creates it.
    const std::int64_t old_ms = 1577836800123;
    co_await add_trades(redis, symbol, 16, 1, old_ms - 16);
    auto r = recorder("malformed", {"--consumer=mal"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::int64_t ticks = co_await tick_count(pg, symbol);
          const std::int64_t left = co_await pending(redis, stream, "recorder");
          co_return ticks == 16 && left == 0;
        },
        30s));
    r->signal(SIGTERM);
    const auto code = co_await r->wait_exit(10s);
    CO_ASSERT(code.has_value(), "");
    EXPECT_EQ(*code, 0);
    co_await expect_exactly_once(pg, symbol, 16, base);
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT (extract(epoch FROM trade_time) * 1000)::bigint FROM ticks "
                  "WHERE symbol = $1 AND trade_id = 16",
                  symbol),
              old_ms);
    EXPECT_EQ(r->summary("partitions_created"), 1);
    EXPECT_EQ(r->summary("inserted"), 16);
    EXPECT_EQ(r->summary("malformed"), 4);
    EXPECT_EQ(r->summary("acked"), 20);
    EXPECT_EQ(r->summary("handler_errors"), 0);
    EXPECT_EQ(r->summary("dead_lettered"), 0);
  });
}

// F44: one entry the table refuses (a trigger raises for trade 250) in a batch of 500: only
// that entry fails its deliveries and goes to the dead-letter stream; its 499 batch-mates are
// recorded.
TEST_F(ServicesFault, F44_APermanentErrorIsIsolatedToItsEntry) {
  const std::string symbol = "F44A";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    (void)co_await redis.del(stream);
    (void)co_await redis.del(stream + ":dead");
    (void)co_await pg.execute(
        "CREATE OR REPLACE FUNCTION f44_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.symbol = 'F44A' AND NEW.trade_id = 250 THEN "
        "RAISE EXCEPTION 'poison trade' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$");
    (void)co_await pg.execute(
        "CREATE TRIGGER f44_poison BEFORE INSERT ON ticks FOR EACH ROW EXECUTE FUNCTION "
        "f44_poison()");
    std::exception_ptr failure;
    try {
      co_await add_trades(redis, symbol, 1, 500, base);
      auto r = recorder("f44-poison", {"--consumer=f44", "--batch=500", "--max-deliveries=2",
                                       "--claim-interval=200ms"});
      const bool isolated = co_await until(
          [&]() -> asio::awaitable<bool> {
            co_return co_await tick_count(pg, symbol) == 499 &&
                co_await redis.xlen(stream + ":dead") == 1;
          },
          30s);
      const std::int64_t ticks = co_await tick_count(pg, symbol);
      const std::int64_t dead_count = co_await redis.xlen(stream + ":dead");
      EXPECT_TRUE(isolated) << "ticks " << ticks << " of 499, dead " << dead_count << " (want 1)";
      const auto dead = co_await redis.xrange(stream + ":dead");
      if (dead.size() == 1) {
        EXPECT_EQ(*dead[0].field("t"), std::string("250"));
      }
      r->signal(SIGTERM);
      const auto code = co_await r->wait_exit(10s);
      EXPECT_EQ(code.value_or(-1), 0);
      EXPECT_EQ(r->summary("inserted"), 499);
      EXPECT_EQ(r->summary("dead_lettered"), 1);
    } catch (...) {
      failure = std::current_exception();
    }
    (void)co_await pg.execute("DROP TRIGGER f44_poison ON ticks");
    if (failure) std::rethrow_exception(failure);
  });
}

// F44: times that are not milliseconds (a trade time in nanoseconds or microseconds, an event
// time in nanoseconds, a receive time in nanoseconds) are malformed at parse: skipped and
// counted, no partition for the year 55 000, and their batch-mates recorded.
TEST_F(ServicesFault, F44_TimesOutOfRangeAreMalformedAtParse) {
  const std::string symbol = "F44B";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    (void)co_await redis.del(stream);
    co_await add_trades(redis, symbol, 1, 10, base);
    const std::string ns = std::to_string(base * 1000000);
    const std::string us = std::to_string(base * 1000);
    const std::string ms = std::to_string(base);
    const std::array<FieldView, 6> trade_ns{FieldView{"s", symbol}, FieldView{"t", "11"},
                                            FieldView{"p", "1"},    FieldView{"q", "1"},
                                            FieldView{"T", ns},     FieldView{"m", "0"}};
    const std::array<FieldView, 6> trade_us{FieldView{"s", symbol}, FieldView{"t", "12"},
                                            FieldView{"p", "1"},    FieldView{"q", "1"},
                                            FieldView{"T", us},     FieldView{"m", "0"}};
    const std::array<FieldView, 7> event_ns{
        FieldView{"s", symbol}, FieldView{"t", "13"}, FieldView{"p", "1"}, FieldView{"q", "1"},
        FieldView{"T", ms},     FieldView{"E", ns},   FieldView{"m", "0"}};
    const std::array<FieldView, 7> received_ns{
        FieldView{"s", symbol}, FieldView{"t", "14"}, FieldView{"p", "1"}, FieldView{"q", "1"},
        FieldView{"T", ms},     FieldView{"r", ns},   FieldView{"m", "0"}};
    (void)co_await redis.xadd(stream, trade_ns);
    (void)co_await redis.xadd(stream, trade_us);
    (void)co_await redis.xadd(stream, event_ns);
    (void)co_await redis.xadd(stream, received_ns);
    auto r =
        recorder("f44-times", {"--consumer=f44t", "--max-deliveries=2", "--claim-interval=200ms"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await tick_count(pg, symbol) == 10 &&
              co_await pending(redis, stream, "recorder") == 0;
        },
        30s));
    r->signal(SIGTERM);
    const auto code = co_await r->wait_exit(10s);
    EXPECT_EQ(code.value_or(-1), 0);
    EXPECT_EQ(r->summary("malformed"), 4);
    EXPECT_EQ(r->summary("dead_lettered"), 0);
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT count(*) FROM pg_class WHERE relname ~ '^ticks_[0-9]+$' AND "
                  "(length(relname) > 14 OR substr(relname, 7, 4)::int > 2100)"),
              0)
        << "a partition for a time far in the future was created";
  });
}

/// Runs `sql` (one or more statements, simple query protocol) as the harness's superuser.
void exec_as_superuser(const std::string& database, const std::string& sql) {
  PGconn* conn = PQconnectdb(ts::testing::Servers::instance().postgres_dsn(database).c_str());
  std::string error;
  if (PQstatus(conn) != CONNECTION_OK) {
    error = std::string("connect: ") + PQerrorMessage(conn);
  } else {
    PGresult* r = PQexec(conn, sql.c_str());
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
      error = sql + ": " + PQerrorMessage(conn);
    }
    PQclear(r);
  }
  PQfinish(conn);
  if (!error.empty()) throw std::runtime_error(error);
}

// Issue 14: ts-recorder under a least-privilege role of its own, with exactly the grants
// docs/services.md ("What to provision") lists for it, records trades whose days are outside
// what `tsctl migrate` pre-created (yesterday to +2 days): it must create those partitions.
TEST_F(ServicesFault, RecorderUnderItsOwnLeastPrivilegeRoleCreatesTheDaysPartitions) {
  const std::string role = "ts_recorder_lp";
  exec_as_superuser(kDatabase, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" +
                                   role + "') THEN CREATE ROLE " + role +
                                   " LOGIN PASSWORD 'lp'; END IF; END $$");
  // docs/services.md, "What to provision", ts-recorder:
  exec_as_superuser(
      kDatabase, "GRANT CONNECT ON DATABASE " + std::string(kDatabase) + " TO " + role +
                     "; GRANT USAGE ON SCHEMA public TO " + role + "; GRANT INSERT ON ticks TO " +
                     role + "; GRANT EXECUTE ON FUNCTION ts_ensure_tick_partition(date) TO " +
                     role);
  const std::string symbol = "LPSYM";
  constexpr std::int64_t kDay = 86'400'000;
  const std::int64_t now = ts::services::unix_millis();
  // Ten trades on each of 7 days: 9 and 4 days ago, today, and 3, 4, 5, 30 days ahead.
  const std::vector<std::int64_t> days = {-9, -4, 0, 3, 4, 5, 30};
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    std::string last_id;
    auto add_day = [&](std::int64_t first_id, std::int64_t day) -> asio::awaitable<void> {
      for (int i = 0; i < 10; ++i) {
        const std::string t = std::to_string(first_id + i);
        const std::string time = std::to_string(now + day * kDay + i);
        const std::array<FieldView, 6> fields{FieldView{"s", symbol}, FieldView{"t", t},
                                              FieldView{"p", "10.5"}, FieldView{"q", "1"},
                                              FieldView{"T", time},   FieldView{"m", "1"}};
        last_id = co_await redis.xadd(ts::services::trade_stream(symbol), fields);
      }
    };
    std::int64_t total = 0;
    for (const std::int64_t day : days) {
      co_await add_day(total + 1, day);
      total += 10;
    }
    const std::string dsn =
        ts::testing::Servers::instance().postgres_dsn_for(role, "lp", kDatabase);
    Child r(TS_RECORDER_BIN, directory_, "least-privilege", {"--consumer=lp", "--batch=20"},
            {"TS_POSTGRES_DSN=" + dsn,
             "TS_REDIS_URL=" + ts::testing::Servers::instance().redis_url(), "TS_LOG_LEVEL=info"});
    const bool all = co_await until(
        [&]() -> asio::awaitable<bool> { co_return co_await tick_count(pg, symbol) == total; },
        30s);
    EXPECT_TRUE(all) << "not every trade was recorded; log:\n"
                     << detail::read_text_file(directory_ + "/least-privilege.log");
    // A redelivery (the trades of 4 days ago once more) takes the ON CONFLICT DO NOTHING path,
    // which needs no more than INSERT either.
    co_await add_day(11, -4);
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const auto groups = co_await redis.xinfo_groups(ts::services::trade_stream(symbol));
          co_return groups.size() == 1 &&
              groups[0].last_delivered_id == last_id&& groups[0].pending == 0;
        },
        30s));
    const std::string log = detail::read_text_file(directory_ + "/least-privilege.log");
    EXPECT_EQ(log.find("permission denied"), std::string::npos) << log;
    r.signal(SIGTERM);
    const auto code = co_await r.wait_exit(20s);
    CO_ASSERT(code.has_value(), "no exit within 20 s of SIGTERM");
    EXPECT_EQ(*code, 0);
    EXPECT_EQ(r.summary("inserted"), total);
    EXPECT_EQ(r.summary("duplicates"), 10);
    EXPECT_EQ(r.summary("acked"), total + 10);
    EXPECT_EQ(r.summary("handler_errors"), 0);
    EXPECT_EQ(r.summary("dead_lettered"), 0);
    EXPECT_GE(r.summary("partitions_created"), 4);  // -9, -4, +30 and at least one of +3..+5
    // One partition per day, owned by the schema's owner (created by the definer function),
    // not by the recorder's role.
    const auto owners = co_await pg.query_value<std::int64_t>(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_roles r ON r.oid = c.relowner WHERE i.inhparent = 'ticks'::regclass "
        "AND r.rolname = $1",
        role);
    EXPECT_EQ(owners, 0);
    // Still least privilege: the role cannot read ticks nor create anything in the schema.
    EXPECT_FALSE(
        co_await pg.query_value<bool>("SELECT has_table_privilege($1, 'ticks', 'SELECT') OR "
                                      "has_schema_privilege($1, 'public', 'CREATE')",
                                      role));
  });
}

TEST_F(ServicesFault, F40_RecorderStopsMidStreamWithEveryAckedEntryCommitted) {
  const std::string symbol = "F40SYM";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 20000, base);
    std::int64_t total = 20000;
    auto first = recorder("f40-first", {"--readers=1", "--consumer=f40", "--batch=500"});
    // A steady inflow while it records: 500 more every 10 ms, until the signal.
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_await add_trades(redis, symbol, total + 1, 500, base);
          total += 500;
          co_return co_await tick_count(pg, symbol) >= 5000;
        },
        30s));
    first->signal(SIGTERM);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {  // keeps coming during the drain
      co_await add_trades(redis, symbol, total + 1, 500, base);
      total += 500;
    }
    const auto code = co_await first->wait_exit(10s);
    CO_ASSERT(code.has_value(), "no exit within 10 s of SIGTERM");
    EXPECT_EQ(*code, 0);
    EXPECT_LT(ts::testing::elapsed_ms(t0), 10s);

    // Every entry delivered and no longer pending (acknowledged) has its row.
    const auto groups = co_await redis.xinfo_groups(stream);
    CO_ASSERT((groups.size()) == (1u), "");
    const std::string last_delivered = groups[0].last_delivered_id;
    ts::redis::PendingQuery query;
    query.count = 100000;
    std::set<std::string> still_pending;
    for (const auto& p : co_await redis.xpending_range(stream, "recorder", query)) {
      still_pending.insert(p.id);
    }
    const auto delivered = co_await redis.xrange(stream, "-", last_delivered);
    std::set<std::int64_t> acked_ids;
    for (const auto& e : delivered) {
      if (still_pending.count(e.id) == 0) acked_ids.insert(std::stoll(*e.field("t")));
    }
    const auto rows = co_await pg.query("SELECT trade_id FROM ticks WHERE symbol = $1", symbol);
    std::set<std::int64_t> recorded;
    for (const auto& row : rows) recorded.insert(row.get<std::int64_t>(0));
    std::size_t missing = 0;
    for (const auto id : acked_ids) missing += recorded.count(id) == 0 ? 1 : 0;
    EXPECT_EQ(missing, 0u) << "entries acknowledged without their row";
    EXPECT_GE(static_cast<std::int64_t>(recorded.size()), first->summary("acked"));
    EXPECT_EQ(static_cast<std::int64_t>(acked_ids.size()), first->summary("acked"));
    EXPECT_LT(static_cast<std::int64_t>(recorded.size()), total) << "the stop came too late";

    // A second recorder finishes the rest, exactly once.
    auto second = recorder("f40-second", {"--readers=1", "--consumer=f40", "--batch=500"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::int64_t ticks = co_await tick_count(pg, symbol);
          const std::int64_t left = co_await pending(redis, stream, "recorder");
          co_return ticks == total&& left == 0;
        },
        60s));
    second->signal(SIGTERM);
    const auto code2 = co_await second->wait_exit(10s);
    CO_ASSERT(code2.has_value(), "");
    EXPECT_EQ(*code2, 0);
    co_await expect_exactly_once(pg, symbol, total, base);
  });
}

TEST_F(ServicesFault, F40_SecondSignalDuringAStuckDrainForcesExitOne) {
  const std::string symbol = "F40BSYM";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 100, base);
    auto r = recorder("f40-stuck", {"--readers=1", "--consumer=f40b"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> { co_return co_await tick_count(pg, symbol) == 100; }, 30s));
    auto& postgres = ts::testing::Servers::instance().postgres();
    postgres.pause();
    ts::testing::ScopeExit resume("resume PostgreSQL", [&] { postgres.resume(); });
    co_await add_trades(redis, symbol, 101, 100, base);
    // The recorder has read (some of) them and hangs in their insert. (A blocked reader may be
    // served after the first XADD of the pipeline: not necessarily all 100 at once.)
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await pending(redis, stream, "recorder") > 0;
        },
        10s));
    r->signal(SIGTERM);
    co_await ts::testing::pause_for(500ms);  // fault timing: inside the 5 s drain
    EXPECT_FALSE(r->poll()) << "the drain cannot finish while PostgreSQL is frozen";
    r->signal(SIGTERM);
    const auto t0 = std::chrono::steady_clock::now();
    const auto code = co_await r->wait_exit(5s);
    CO_ASSERT(code.has_value(), "a second SIGTERM must stop it at once");
    EXPECT_EQ(*code, 1);
    EXPECT_LT(ts::testing::elapsed_ms(t0), 2s);
  });
}

TEST_F(ServicesFault, RecorderWaitsOutAPostgresRestartWithoutBurningDeliveries) {
  const std::string symbol = "PGRSYM";
  const std::string stream = ts::services::trade_stream(symbol);
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    co_await add_trades(redis, symbol, 1, 100, base);
    // Two deliveries at most, re-read every 200 ms: had the handler thrown during the outage,
    // the entries would be dead-lettered within a second.
    // One reader: with two, an outage longer than --claim-min-idle lets one claim the other's
    // entries while it is still retrying them (recorded once either way; the one still
    // retrying at the stop counts a handler error), which is not what this test is about.
    auto r = recorder("pg-restart", {"--readers=1", "--consumer=pgr", "--claim-interval=200ms",
                                     "--max-deliveries=2"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> { co_return co_await tick_count(pg, symbol) == 100; }, 30s));
    auto& postgres = ts::testing::Servers::instance().postgres();
    postgres.stop();
    ts::testing::ScopeExit restart("start PostgreSQL", [&] { postgres.start(); });
    co_await add_trades(redis, symbol, 101, 100, base);
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await pending(redis, stream, "recorder") > 0;
        },
        10s));
    // Fault timing: an outage longer than the pool's acquire timeout (5 s: a statement waits
    // that long for a connection before it fails) and than 2 re-read intervals.
    co_await ts::testing::pause_for(7s);
    postgres.start();
    // The test's own client reconnects too: a failed count is "not yet".
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          std::int64_t ticks = -1;
          try {
            ticks = co_await tick_count(pg, symbol);
          } catch (const ts::Error& e) {
            if (e.kind() == ts::ErrorKind::permanent) throw;
          }
          const std::int64_t left = co_await pending(redis, stream, "recorder");
          co_return ticks == 200 && left == 0;
        },
        60s));
    r->signal(SIGTERM);
    const auto code = co_await r->wait_exit(10s);
    CO_ASSERT(code.has_value(), "");
    EXPECT_EQ(*code, 0);
    co_await expect_exactly_once(pg, symbol, 200, base);
    EXPECT_EQ(r->summary("dead_lettered"), 0);
    EXPECT_EQ(r->summary("handler_errors"), 0);
    EXPECT_GT(r->summary("db_retries"), 0);
    EXPECT_EQ(co_await redis.xlen(stream + ":dead"), 0);
  });
}

// ---- ts-executor ---------------------------------------------------------------------------

using Fields = std::vector<std::pair<std::string, std::string>>;

asio::awaitable<void> submit(RedisClient& redis, Fields fields) {
  std::vector<FieldView> views;
  for (const auto& [k, v] : fields) views.emplace_back(k, v);
  (void)co_await redis.xadd("orders:requests", views);
}

Fields order(const std::string& id, const std::string& symbol, const std::string& side,
             const std::string& type, const std::string& qty, const std::string& limit = "") {
  Fields f{{"client_order_id", id}, {"symbol", symbol}, {"side", side},
           {"type", type},          {"qty", qty},       {"submitted_at", "1700000000000"}};
  if (!limit.empty()) f.emplace_back("limit_price", limit);
  return f;
}

/// The events of orders:events for ids starting with `prefix`: id → list of field maps.
asio::awaitable<std::map<std::string, std::vector<std::map<std::string, std::string>>>> events_of(
    RedisClient& redis, std::string prefix) {
  std::map<std::string, std::vector<std::map<std::string, std::string>>> out;
  for (const auto& e : co_await redis.xrange("orders:events")) {
    std::map<std::string, std::string> fields(e.fields.begin(), e.fields.end());
    const std::string id = fields["client_order_id"];
    if (id.rfind(prefix, 0) == 0) out[id].push_back(fields);
  }
  co_return out;
}

asio::awaitable<std::size_t> event_count(RedisClient& redis, std::string prefix) {
  std::size_t n = 0;
  for (const auto& [id, list] : co_await events_of(redis, prefix)) n += list.size();
  co_return n;
}

Fields no_id_request() {
  return Fields{{"symbol", "EXA"}, {"side", "buy"}};
}

using OrderRows = std::map<std::string, std::pair<std::string, std::string>>;

/// What ExecutorRecordsOneTerminalStatePerRequest expects in orders: id → status, reason.
/// (Braced lists are built outside coroutines: GCC 12 cannot keep their arrays in a frame.)
OrderRows expected_orders() {
  return {
      {"ex-1", {"filled", ""}},
      {"ex-2", {"filled", ""}},
      {"ex-3", {"rejected", "limit not marketable"}},
      {"ex-4", {"rejected", "no market price"}},
      {"ex-5", {"rejected", "unknown symbol"}},
      {"ex-6", {"rejected", "invalid side"}},
      {"ex-7", {"rejected", "invalid qty"}},
      {"ex-8", {"rejected", "invalid limit_price"}},
      {"ex-9", {"rejected", "invalid type"}},
      {"ex-10", {"filled", ""}},
  };
}

/// ... and in fills: id → price, qty.
OrderRows expected_fill_rows() {
  return {{"ex-1", {"100.5", "2"}}, {"ex-2", {"100.5", "1"}}, {"ex-10", {"100.5", "3"}}};
}

// ts-executor under a least-privilege role with exactly the grants of docs/services.md ("What to
// provision"): a fill, a rejection and a reused id (its stored outcome read back).
TEST_F(ServicesFault, ExecutorUnderItsOwnLeastPrivilegeRoleRecordsOrders) {
  const std::string role = "ts_executor_lp";
  exec_as_superuser(kDatabase, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" +
                                   role + "') THEN CREATE ROLE " + role +
                                   " LOGIN PASSWORD 'lp'; END IF; END $$");
  exec_as_superuser(kDatabase, "GRANT CONNECT ON DATABASE " + std::string(kDatabase) + " TO " +
                                   role + "; GRANT USAGE ON SCHEMA public TO " + role +
                                   "; GRANT SELECT, INSERT ON orders, fills TO " + role +
                                   "; GRANT USAGE ON SEQUENCE fills_fill_id_seq TO " + role);
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    const std::array<FieldView, 1> last{FieldView{"EXL", "42.5 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("EXL"), last);
    co_await submit(redis, order("lp-1", "EXL", "buy", "market", "2"));
    co_await submit(redis, order("lp-2", "NOPE", "buy", "market", "1"));
    co_await submit(redis, order("lp-1", "EXL", "buy", "market", "5"));  // reused id
    const std::string dsn =
        ts::testing::Servers::instance().postgres_dsn_for(role, "lp", kDatabase);
    Child e(TS_EXECUTOR_BIN, directory_, "executor-least-privilege",
            {"--symbols=EXL", "--consumer=exec-lp"},
            {"TS_POSTGRES_DSN=" + dsn,
             "TS_REDIS_URL=" + ts::testing::Servers::instance().redis_url(), "TS_LOG_LEVEL=info"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::size_t events = co_await event_count(redis, "lp-");
          const std::int64_t left = co_await pending(redis, "orders:requests", "executor");
          co_return events == 3 && left == 0;
        },
        30s))
        << detail::read_text_file(directory_ + "/executor-least-privilege.log");
    e.signal(SIGTERM);
    const auto code = co_await e.wait_exit(20s);
    CO_ASSERT(code.has_value(), "no exit within 20 s of SIGTERM");
    EXPECT_EQ(*code, 0);
    const std::string log = detail::read_text_file(directory_ + "/executor-least-privilege.log");
    EXPECT_EQ(log.find("permission denied"), std::string::npos) << log;
    EXPECT_EQ(e.summary("filled"), 1);
    EXPECT_EQ(e.summary("rejected"), 1);
    EXPECT_EQ(e.summary("duplicates"), 1);
    EXPECT_EQ(e.summary("handler_errors"), 0);
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT count(*) FROM fills WHERE client_order_id = 'lp-1' AND qty = 2"),
              1);
  });
}

TEST_F(ServicesFault, ExecutorRecordsOneTerminalStatePerRequest) {
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    // Last trades as ts-receiver writes them: "<price> <trade id> <trade time>".
    const std::array<FieldView, 1> last{FieldView{"EXA", "100.5 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("EXA"), last);
    (void)co_await redis.command("HDEL", ts::services::last_trade_key("EXB"), "EXB");
    co_await submit(redis, order("ex-1", "EXA", "buy", "market", "2"));
    co_await submit(redis, order("ex-2", "EXA", "sell", "limit", "1", "100"));
    co_await submit(redis, order("ex-3", "EXA", "buy", "limit", "1", "99.99"));
    co_await submit(redis, order("ex-4", "EXB", "buy", "market", "1"));
    co_await submit(redis, order("ex-5", "XYZ", "buy", "market", "1"));
    co_await submit(redis, order("ex-6", "EXA", "hold", "market", "1"));
    co_await submit(redis, order("ex-7", "EXA", "buy", "market", "0.000"));
    co_await submit(redis, order("ex-8", "EXA", "buy", "limit", "1"));
    co_await submit(redis, order("ex-9", "EXA", "buy", "stop", "1"));
    co_await submit(redis, order("ex-10", "EXA", "buy", "limit", "3", "100.50"));
    co_await submit(redis, order("ex-1", "EXA", "buy", "market", "5"));  // reused id
    co_await submit(redis, no_id_request());  // no client_order_id: malformed
    auto e = executor("executor", {"--symbols=EXA,EXB", "--consumer=exec-1"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::size_t events = co_await event_count(redis, "ex-");
          const std::int64_t left = co_await pending(redis, "orders:requests", "executor");
          co_return events == 11 && left == 0;
        },
        30s));
    e->signal(SIGTERM);
    const auto code = co_await e->wait_exit(10s);
    CO_ASSERT(code.has_value(), "");
    EXPECT_EQ(*code, 0);

    std::map<std::string, std::pair<std::string, std::string>> orders;  // id → status, reason
    const ts::pg::Result order_rows = co_await pg.query(
        "SELECT client_order_id, status, coalesce(reject_reason, '') FROM orders "
        "WHERE client_order_id LIKE 'ex-%'");
    for (const auto& row : order_rows) {
      orders[row.get<std::string>(0)] = {row.get<std::string>(1), row.get<std::string>(2)};
    }
    const auto expected = expected_orders();
    EXPECT_EQ(orders, expected);
    std::map<std::string, std::pair<std::string, std::string>> fills;  // id → price, qty
    const ts::pg::Result fill_rows = co_await pg.query(
        "SELECT client_order_id, price::text, qty::text FROM fills "
        "WHERE client_order_id LIKE 'ex-%'");
    for (const auto& row : fill_rows) {
      fills[row.get<std::string>(0)] = {row.get<std::string>(1), row.get<std::string>(2)};
    }
    const auto expected_fills = expected_fill_rows();
    EXPECT_EQ(fills, expected_fills);

    const auto events = co_await events_of(redis, "ex-");
    CO_ASSERT((events.size()) == (10u), "");
    // The reused id gets its stored outcome again (filled, qty 2), never a second fill.
    CO_ASSERT((events.at("ex-1").size()) == (2u), "");
    for (const auto& ev : events.at("ex-1")) {
      EXPECT_EQ(ev.at("status"), std::string("filled"));
      EXPECT_EQ(ev.at("price"), std::string("100.5"));
      EXPECT_EQ(ev.at("qty"), std::string("2"));
    }
    for (const auto& [id, status] : expected) {
      if (id == "ex-1") continue;
      EXPECT_EQ(events.at(id).size(), 1u) << id;
      if (events.at(id).size() != 1) continue;
      EXPECT_EQ(events.at(id)[0].at("status"), status.first) << id;
      if (status.first == "rejected") {
        EXPECT_EQ(events.at(id)[0].at("reason"), status.second);
      }
    }
    EXPECT_EQ(e->summary("filled"), 3);
    EXPECT_EQ(e->summary("rejected"), 7);
    EXPECT_EQ(e->summary("duplicates"), 1);
    EXPECT_EQ(e->summary("malformed"), 1);
    EXPECT_EQ(e->summary("events"), 11);
    EXPECT_EQ(e->summary("acked"), 12);
  });
}

// F44: an order the database refuses (submitted_at far beyond any timestamp: 22008) still gets
// exactly one terminal outcome, published on orders:events, instead of none at all.
TEST_F(ServicesFault, F44_ExecutorPublishesAnOutcomeForAnOrderItCannotRecord) {
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    const std::array<FieldView, 1> last{FieldView{"EXF", "10 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("EXF"), last);
    Fields bad = order("f44x-1", "EXF", "buy", "market", "1");
    for (auto& [k, v] : bad) {
      if (k == "submitted_at") v = "9000000000000000000";
    }
    co_await submit(redis, bad);
    co_await submit(redis, order("f44x-2", "EXF", "buy", "market", "1"));
    // f44x-3: the database refuses its fill (a trigger), so the filled order cannot be
    // recorded: it is recorded as rejected instead, and published so.
    (void)co_await pg.execute(
        "CREATE OR REPLACE FUNCTION f44_refuse_fill() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.client_order_id = 'f44x-3' THEN "
        "RAISE EXCEPTION 'refused fill' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$");
    (void)co_await pg.execute(
        "CREATE TRIGGER f44_refuse_fill BEFORE INSERT ON fills FOR EACH ROW EXECUTE FUNCTION "
        "f44_refuse_fill()");
    std::exception_ptr failure;
    try {
      co_await submit(redis, order("f44x-3", "EXF", "buy", "market", "1"));
      auto e = executor("executor-f44", {"--symbols=EXF", "--consumer=exec-f44",
                                         "--max-deliveries=2", "--claim-interval=200ms"});
      EXPECT_TRUE(co_await until(
          [&]() -> asio::awaitable<bool> { co_return co_await event_count(redis, "f44x-") == 3; },
          30s));
      const auto events = co_await events_of(redis, "f44x-");
      for (const char* id : {"f44x-1", "f44x-3"}) {
        EXPECT_EQ(events.count(id), 1u) << id;
        if (events.count(id) == 1) {
          EXPECT_EQ(events.at(id).size(), 1u) << id;
          EXPECT_EQ(events.at(id)[0].at("status"), std::string("rejected")) << id;
        }
      }
      EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                    "SELECT count(*) FROM orders WHERE client_order_id LIKE 'f44x-%'"),
                3)
          << "each order has its one terminal row";
      EXPECT_EQ(
          co_await pg.query_value<std::string>("SELECT status || ' ' || reject_reason FROM orders "
                                               "WHERE client_order_id = 'f44x-3'"),
          std::string("rejected unprocessable"));
      e->signal(SIGTERM);
      const auto code = co_await e->wait_exit(10s);
      EXPECT_EQ(code.value_or(-1), 0);
      EXPECT_EQ(e->summary("unprocessable"), 1);
    } catch (...) {
      failure = std::current_exception();
    }
    (void)co_await pg.execute("DROP TRIGGER f44_refuse_fill ON fills");
    if (failure) std::rethrow_exception(failure);
  });
}

TEST_F(ServicesFault, ExecutorCrashAfterCommitRedeliversWithoutASecondFill) {
  TS_SKIP_WITHOUT_FAULT_SWITCHES();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    const std::array<FieldView, 1> last{FieldView{"EXC", "50 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("EXC"), last);
    for (int i = 1; i <= 20; ++i) {
      co_await submit(redis, order("redo-" + std::to_string(i), "EXC", "buy", "market", "1"));
    }
    {
      auto crash = executor("executor-crash", {"--symbols=EXC", "--consumer=exec-redo",
                                               "--batch=10", "--fault-crash-after-commit=5"});
      const auto code = co_await crash->wait_exit(30s);
      CO_ASSERT(code.has_value(), "");
      EXPECT_EQ(*code, 137);
    }
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT count(*) FROM fills WHERE client_order_id LIKE 'redo-%'"),
              5);
    EXPECT_EQ(co_await event_count(redis, "redo-"), 4u);  // the 5th crashed before its event
    EXPECT_EQ(co_await pending(redis, "orders:requests", "executor"), 10);

    auto again =
        executor("executor-again", {"--symbols=EXC", "--consumer=exec-redo", "--batch=10"});
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          const std::int64_t fills = co_await pg.query_value<std::int64_t>(
              "SELECT count(*) FROM fills WHERE client_order_id LIKE 'redo-%'");
          const std::int64_t left = co_await pending(redis, "orders:requests", "executor");
          co_return fills == 20 && left == 0;
        },
        30s));
    again->signal(SIGTERM);
    const auto code = co_await again->wait_exit(10s);
    CO_ASSERT(code.has_value(), "");
    EXPECT_EQ(*code, 0);
    const auto row = co_await pg.query_one(
        "SELECT count(*), count(DISTINCT client_order_id) FROM fills "
        "WHERE client_order_id LIKE 'redo-%'");
    CO_ASSERT(row.has_value(), "");
    EXPECT_EQ((row->as<std::int64_t, std::int64_t>()),
              (std::tuple<std::int64_t, std::int64_t>{20, 20}));
    // Redelivered: the 5 committed before the crash (duplicates, stored outcome published);
    // events are at-least-once: redo-1..4 have two, the others one.
    EXPECT_EQ(again->summary("duplicates"), 5);
    EXPECT_EQ(again->summary("filled"), 15);
    const auto events = co_await events_of(redis, "redo-");
    CO_ASSERT((events.size()) == (20u), "");
    for (const auto& [id, list] : events) {
      const int n = std::stoi(id.substr(5));
      EXPECT_EQ(list.size(), n <= 4 ? 2u : 1u) << id;
      for (const auto& ev : list) EXPECT_EQ(ev.at("status"), std::string("filled")) << id;
    }
  });
}

// ---- issue 14: ERROR only for what needs an operator -------------------------------------------

/// The ERROR-level lines of a service's log (text format: "<time> error <service> ...").
std::vector<std::string> error_lines(const std::string& log_file) {
  std::vector<std::string> out;
  const std::string text = detail::read_text_file(log_file);
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if (line.find("Z error ") != std::string::npos) out.push_back(line);
    start = end + 1;
  }
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

/// The port of a keyword DSN ("... port=N ...").
std::uint16_t dsn_port(const std::string& dsn) {
  const std::size_t at = dsn.find("port=");
  if (at == std::string::npos) throw std::runtime_error("no port in " + dsn);
  return static_cast<std::uint16_t>(std::stoi(dsn.substr(at + 5)));
}

// A PgBouncer restart while ts-recorder and ts-executor write through it: both wait it out
// (everything recorded, exit 0), and an operator alerting on ERROR is not paged: a transient
// failure that is retried and then succeeds logs warnings, not errors.
TEST_F(ServicesFault, APgBouncerRestartThatBothServicesRideOutLogsNoError) {
  auto& servers = ts::testing::Servers::instance();
  auto& bouncer = servers.pgbouncer();
  const std::vector<std::string> env = {"TS_POSTGRES_DSN=" + servers.pgbouncer_dsn(kDatabase),
                                        "TS_REDIS_URL=" + servers.redis_url(), "TS_LOG_LEVEL=info"};
  const std::string symbol = "PGBSYM";
  const std::int64_t base = ts::services::unix_millis();
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    const std::array<FieldView, 1> last{FieldView{"PGB", "7.5 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("PGB"), last);
    std::int64_t trades = 500;
    int orders = 0;
    co_await add_trades(redis, symbol, 1, trades, base);
    for (; orders < 10; ++orders) {
      co_await submit(redis,
                      order("pgb-" + std::to_string(orders + 1), "PGB", "buy", "market", "1"));
    }
    Child r(TS_RECORDER_BIN, directory_, "pgb-recorder", {"--consumer=pgb"}, env);
    Child e(TS_EXECUTOR_BIN, directory_, "pgb-executor", {"--symbols=PGB", "--consumer=pgb"}, env);
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await tick_count(pg, symbol) ==
              trades&& co_await event_count(redis, "pgb-") == static_cast<std::size_t>(orders);
        },
        30s));
    // PgBouncer goes away; work keeps coming until both services have seen a failure.
    bouncer.stop();
    ts::testing::ScopeExit restart("start PgBouncer", [&] {
      if (!bouncer.running()) bouncer.start();
    });
    const auto both_failed = [&] {
      const auto has = [](const std::string& file) {
        return detail::read_text_file(file).find("retrying with backoff") != std::string::npos;
      };
      return has(directory_ + "/pgb-recorder.log") && has(directory_ + "/pgb-executor.log");
    };
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_await add_trades(redis, symbol, trades + 1, 50, base);
          trades += 50;
          ++orders;
          co_await submit(redis,
                          order("pgb-" + std::to_string(orders), "PGB", "buy", "market", "1"));
          co_return both_failed();
        },
        20s))
        << "a service did not notice PgBouncer was down";
    bouncer.start();
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await tick_count(pg, symbol) ==
                  trades&& co_await event_count(redis, "pgb-") >=
                      static_cast<std::size_t>(orders) &&
              co_await pending(redis, "orders:requests", "executor") == 0;
        },
        60s))
        << "not everything was recorded after the restart";
    r.signal(SIGTERM);
    e.signal(SIGTERM);
    const auto rc = co_await r.wait_exit(20s);
    const auto ec = co_await e.wait_exit(20s);
    EXPECT_EQ(rc.value_or(-1), 0);
    EXPECT_EQ(ec.value_or(-1), 0);
    EXPECT_EQ(r.summary("handler_errors"), 0);
    EXPECT_EQ(e.summary("filled"), orders);
    const auto recorder_errors = error_lines(directory_ + "/pgb-recorder.log");
    const auto executor_errors = error_lines(directory_ + "/pgb-executor.log");
    EXPECT_TRUE(recorder_errors.empty()) << "ts-recorder ERROR lines:\n" << joined(recorder_errors);
    EXPECT_TRUE(executor_errors.empty()) << "ts-executor ERROR lines:\n" << joined(executor_errors);
  });
}

// A COMMIT whose reply is lost (the connection cut while the server commits): the executor
// retries, finds its own order recorded and reconciles: one fill, counted as filled and
// reconciled, not as a duplicate, one event, and no ERROR line.
TEST_F(ServicesFault, ExecutorReconcilesACommitWithALostReplyWithoutAnErrorOrADuplicate) {
  auto& servers = ts::testing::Servers::instance();
  // The order's commit takes 1.5 s on the server (a deferred trigger), long enough to cut the
  // connection while it is in flight; the server still commits.
  exec_as_superuser(kDatabase, R"sql(
CREATE OR REPLACE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS test_slow_commit ON orders;
CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN (NEW.client_order_id LIKE 'rc-%') EXECUTE FUNCTION test_slow_commit();
)sql");
  ts::testing::ScopeExit drop("drop the trigger", [&] {
    exec_as_superuser(kDatabase, "DROP TRIGGER IF EXISTS test_slow_commit ON orders");
  });
  const std::string direct = servers.postgres_dsn(kDatabase);
  ts::testing::FaultProxy proxy("127.0.0.1", dsn_port(direct));
  proxy.start();
  std::string via_proxy = direct;
  via_proxy.replace(via_proxy.find("port=") + 5, std::to_string(dsn_port(direct)).size(),
                    std::to_string(proxy.port()));
  with_clients([&](ts::pg::PostgresClient& pg, RedisClient& redis) -> asio::awaitable<void> {
    const std::array<FieldView, 1> last{FieldView{"RCX", "11.25 1 1700000000000"}};
    (void)co_await redis.hset(ts::services::last_trade_key("RCX"), last);
    co_await submit(redis, order("rc-1", "RCX", "buy", "market", "3"));
    Child e(TS_EXECUTOR_BIN, directory_, "rc-executor", {"--symbols=RCX", "--consumer=rc"},
            {"TS_POSTGRES_DSN=" + via_proxy, "TS_REDIS_URL=" + servers.redis_url(),
             "TS_LOG_LEVEL=info"});
    // Cut every connection of the proxy while the executor's commit is running (the trigger
    // sleeping in it).
    const bool in_commit = co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await pg.query_value<bool>(
              "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'ts-executor' "
              "AND state = 'active' AND wait_event = 'PgSleep'");
        },
        20s);
    CO_ASSERT(in_commit, "the executor's COMMIT was never seen running");
    proxy.cut_all();
    EXPECT_TRUE(co_await until(
        [&]() -> asio::awaitable<bool> {
          co_return co_await event_count(redis, "rc-") >= 1 &&
              co_await pending(redis, "orders:requests", "executor") == 0;
        },
        30s));
    e.signal(SIGTERM);
    const auto code = co_await e.wait_exit(20s);
    EXPECT_EQ(code.value_or(-1), 0);
    EXPECT_EQ(co_await pg.query_value<std::int64_t>(
                  "SELECT count(*) FROM fills WHERE client_order_id = 'rc-1'"),
              1);
    EXPECT_EQ(co_await event_count(redis, "rc-"), 1u);
    const std::string log = detail::read_text_file(directory_ + "/rc-executor.log");
    for (std::size_t at = log.find("rc-1"); at != std::string::npos;
         at = log.find("rc-1", at + 1)) {
      const std::size_t begin = log.rfind('\n', at) + 1;
      const std::size_t end = log.find('\n', at);
      std::cout << "[ INFO ] " << log.substr(begin, std::min<std::size_t>(end - begin, 240))
                << '\n';
      at = end;
    }
    EXPECT_NE(log.find("outcome_unknown"), std::string::npos)
        << "the COMMIT's outcome was not unknown: the fault did not happen\n"
        << log;
    EXPECT_EQ(e.summary("filled"), 1);
    EXPECT_EQ(e.summary("duplicates"), 0) << "its own commit counted as a duplicate";
    EXPECT_EQ(e.summary("reconciled"), 1);
    const auto errors = error_lines(directory_ + "/rc-executor.log");
    EXPECT_TRUE(errors.empty()) << "ERROR lines:\n" << joined(errors);
  });
}

}  // namespace

// Fault tests F22-F25 and F28-F30 of docs/failure-modes.md for RedisClient and StreamConsumer,
// injected for real against the binary's Redis 7: XREADGROUP BLOCK longer than the command
// timeout, create/close cycles and a thousand CLIENT KILLs (descriptors and server connections
// counted), a pipelined XADD cut mid-batch by the fault proxy, permanent errors (WRONGPASS,
// NOAUTH, OOM, READONLY, WRONGTYPE) produced by ACL, requirepass, maxmemory and REPLICAOF,
// poison messages, pending entries trimmed away, and a consumer group flushed away while it runs.
//
// Tests share one Redis (one binary, F17-F21 in redis_faults_a_test.cpp) and run one after the
// other: each isolates itself by key prefix ("f22:") or database number, and RAII guards put
// every setting back even when an expectation fails or the body throws.
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "redis_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using ts::errc;
using ts::ErrorKind;
using RedisErrorClass = ts::redis::ErrorClass;
using ts::core::CircuitState;
using ts::redis::FieldView;
using ts::redis::ReadGroupOptions;
using ts::redis::RedisClient;
using ts::redis::Reply;
using ts::redis::StreamConsumer;
using ts::redis::StreamConsumerConfig;
using ts::redis::StreamEntry;
using ts::testing::describe;
using ts::testing::Direction;
using ts::testing::elapsed_ms;
using ts::testing::FaultProxy;
using ts::testing::open_descriptors;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::pause_for;
using ts::testing::Servers;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_config;
using ts::testing::fault::redis_url_for_db;
using ts::testing::fault::redis_url_for_port;
using ts::testing::fault::RedisAdmin;
using ts::testing::fault::run_with_client;
using ts::testing::fault::ScopedConfig;
using ts::testing::fault::ScopeExit;

Servers& servers() {
  return Servers::instance();
}

/// A field of a "key:value,key:value" line of INFO (e.g. a commandstats line), or of the
/// "name:value" line itself; 0 when absent.
std::int64_t info_number(RedisAdmin& admin, const std::string& section, const std::string& line,
                         const std::string& field = {}) {
  const std::string info = admin.ok({"INFO", section}).str;
  const std::string prefix = line + ":";
  std::size_t pos = 0;
  for (;;) {
    pos = info.find(prefix, pos);
    if (pos == std::string::npos) return 0;
    if (pos == 0 || info[pos - 1] == '\n') break;
    pos += prefix.size();
  }
  const std::size_t start = pos + prefix.size();
  const std::string value = info.substr(start, info.find_first_of("\r\n", start) - start);
  if (field.empty()) return std::stoll(value);
  // "calls=1,usec=2,...": match whole keys.
  std::size_t at = 0;
  while (at < value.size()) {
    const std::size_t comma = value.find(',', at);
    const std::string item =
        value.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (item.rfind(field + "=", 0) == 0) return std::stoll(item.substr(field.size() + 1));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return 0;
}

/// calls / rejected_calls / failed_calls of one command in INFO commandstats.
std::int64_t command_stat(RedisAdmin& admin, const std::string& command, const std::string& field) {
  return info_number(admin, "commandstats", "cmdstat_" + command, field);
}

/// A StreamConsumer's run() in the background of the test's loop.
struct Running {
  bool done = false;
  std::exception_ptr error;

  void start(asio::io_context& io, StreamConsumer& consumer) {
    asio::co_spawn(io, consumer.run(), [this](std::exception_ptr e) {
      error = e;
      done = true;
    });
  }
  /// stop(), then waits (bounded) for run() to return; fails the test if it threw.
  asio::awaitable<void> stop(StreamConsumer& consumer) {
    consumer.stop();
    EXPECT_TRUE(co_await eventually([this] { return done; }, 5s)) << "run() did not return";
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "run() ended with an error: " << e.what();
      }
    }
  }
};

/// Consumer `consumer` of the group "g" of `stream`, reading new entries with BLOCK `block`.
StreamConsumerConfig consumer_config(std::string stream, std::string consumer, milliseconds block) {
  StreamConsumerConfig cc;
  cc.stream = std::move(stream);
  cc.group = "g";
  cc.consumer = std::move(consumer);
  cc.block = block;
  return cc;
}

std::vector<FieldView> fields_of(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<FieldView> out;
  for (const auto& [k, v] : pairs) out.emplace_back(k, v);
  return out;
}

// ---- F22 -------------------------------------------------------------------------------------

// XREADGROUP BLOCK 1000 ms with a command timeout of 200 ms: the read returns empty after the
// block, without an error; an entry added while it blocks (after the command timeout passed)
// is returned. BLPOP through blocking_command likewise.
TEST(RedisFault, F22_BlockLongerThanCommandTimeoutIsNoTimeout) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_db(0), "f22");
  config.command_timeout = 200ms;
  run_with_client(
      config, 20s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        (void)co_await client.del("f22:s");
        EXPECT_TRUE(co_await client.xgroup_create("f22:s", "g", "$", true));
        ReadGroupOptions options;
        options.count = 10;
        options.block = 1000ms;

        // Nothing arrives: empty after the block, no timeout.
        auto t0 = Clock::now();
        const Outcome empty =
            co_await outcome([&] { return client.xreadgroup("g", "c1", "f22:s", ">", options); });
        EXPECT_FALSE(empty.failed) << describe(empty);
        EXPECT_GE(empty.elapsed, 950ms) << describe(empty);
        EXPECT_LE(empty.elapsed, 1000ms + 200ms + 300ms) << describe(empty);
        const auto again = co_await client.xreadgroup("g", "c1", "f22:s", ">", [] {
          ReadGroupOptions o;
          o.block = 300ms;
          return o;
        }());
        EXPECT_TRUE(again.empty());

        // An entry added while the read blocks, well after the command timeout.
        options.block = 1500ms;
        bool done = false;
        std::optional<std::vector<StreamEntry>> got;
        Outcome read;
        t0 = Clock::now();
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              std::exception_ptr error;
              try {
                got = co_await client.xreadgroup("g", "c1", "f22:s", ">", options);
              } catch (...) {
                error = std::current_exception();
              }
              read = ts::testing::outcome_of(error, t0);
              done = true;
            },
            asio::detached);
        const bool blocked = co_await eventually(
            [&] {
              for (auto& c : admin.clients_named("f22")) {
                if (c["cmd"] == "xreadgroup" && c["flags"].find('b') != std::string::npos) {
                  return true;
                }
              }
              return false;
            },
            2s, 10ms);
        EXPECT_TRUE(blocked) << "the server never showed the read as blocked";
        co_await pause_for(400ms);  // past the command timeout, inside the block
        EXPECT_FALSE(done) << "the blocked read ended early: " << describe(read);
        const std::vector<std::pair<std::string, std::string>> data{{"n", "1"}};
        const auto fields = fields_of(data);
        const std::string id = co_await client.xadd("f22:s", fields);
        EXPECT_TRUE(co_await eventually([&] { return done; }, 3s));
        EXPECT_FALSE(read.failed) << describe(read);
        EXPECT_GE(read.elapsed, 400ms);
        EXPECT_LT(read.elapsed, 1500ms) << "the entry did not wake the read";
        EXPECT_TRUE(got && got->size() == 1u) << "expected the one entry added during the block";
        if (got && got->size() == 1u) {
          EXPECT_EQ(got->front().id, id);
          const std::string* n = got->front().field("n");
          EXPECT_EQ(n ? *n : "none", "1");
        }

        // BLPOP blocking 800 ms through blocking_command: nil after the block, no timeout.
        const Outcome blpop = co_await outcome(
            [&] { return client.blocking_command(800ms, "BLPOP", "f22:list", "0.8"); });
        EXPECT_FALSE(blpop.failed) << describe(blpop);
        EXPECT_GE(blpop.elapsed, 750ms);

        const auto s = client.stats();
        EXPECT_EQ(s.timeouts, 0u) << "spurious timeouts";
        EXPECT_EQ(s.failures, 0u);
        co_await client.close();
      });
}

// ---- F23 -------------------------------------------------------------------------------------

// 50 create/start/use/close cycles (each with a blocking command, hence a dedicated connection
// too), then 1 000 forced reconnects (CLIENT KILL of the client's connection, waiting for the
// reconnect each time): afterwards no connection of ours is left on the server and the
// process has as many open descriptors as before.
TEST(RedisFault, F23_CreateCloseAndReconnectsLeakNothing) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        // Each cycle also opens a dedicated connection: a BLPOP that finds an element at once
        // (an empty list would block for the server's timer resolution, 100 ms).
        auto cycle = [&](std::string name) -> asio::awaitable<void> {
          RedisClient client(io.get_executor(), fast_config(redis_url_for_db(0), name));
          co_await client.start();
          EXPECT_TRUE(co_await client.set("f23:k", name));
          (void)co_await client.command("RPUSH", "f23:list", name);
          const Reply r = co_await client.blocking_command(1000ms, "BLPOP", "f23:list", "1");
          EXPECT_EQ(r.size(), 2u);
          co_await client.close();
        };
        // Lazily created resources of the loop (the resolver's thread, ...) exist from now on.
        co_await cycle("f23-warmup");
        EXPECT_TRUE(
            co_await eventually([&] { return admin.count_clients("f23-warmup") == 0; }, 3s));
        const int fd0 = open_descriptors();

        // While a client runs, its two connections are visible (the filter finds them).
        {
          RedisClient client(io.get_executor(), fast_config(redis_url_for_db(0), "f23-cycle"));
          co_await client.start();
          (void)co_await client.command("RPUSH", "f23:list", "x");
          (void)co_await client.blocking_command(1000ms, "BLPOP", "f23:list", "1");
          EXPECT_EQ(admin.count_clients("f23-cycle"), 2u);
          EXPECT_EQ(open_descriptors(), fd0 + 2);
          co_await client.close();
        }
        for (int i = 0; i < 50; ++i) co_await cycle("f23-cycle");
        EXPECT_TRUE(co_await eventually([&] { return admin.count_clients("f23-cycle") == 0; }, 3s))
            << admin.count_clients("f23-cycle") << " connections left after 50 cycles";
        EXPECT_EQ(open_descriptors(), fd0) << "descriptors leaked by create/close cycles";

        // 1 000 forced reconnects.
        {
          ts::testing::fault::QuietRedisLog quiet;  // 1 000 expected "connection lost" warnings
          auto config = fast_config(redis_url_for_db(0), "f23-reconnect");
          config.reconnect_backoff = {1ms, 4ms, 2.0};
          RedisClient client(io.get_executor(), config);
          co_await client.start();
          constexpr int kKills = 1000;
          int kill_misses = 0;
          int reconnected = 0;
          const auto t0 = Clock::now();
          for (int i = 1; i <= kKills; ++i) {
            const auto connects = client.stats().connects;
            if (admin.kill_clients("f23-reconnect") != 1) ++kill_misses;
            if (!co_await eventually([&] { return client.stats().connects > connects; }, 3s, 1ms)) {
              ADD_FAILURE() << "no reconnect after kill " << i;
              break;
            }
            ++reconnected;
            if (i % 100 == 0) {
              const std::string value = "after-" + std::to_string(i);
              EXPECT_TRUE(co_await client.set("f23:reconnect", value));
              EXPECT_EQ((co_await client.get("f23:reconnect")).value_or("nil"), value);
            }
          }
          EXPECT_EQ(reconnected, kKills);
          EXPECT_EQ(kill_misses, 0);
          const auto s = client.stats();
          EXPECT_EQ(s.disconnects, static_cast<std::uint64_t>(kKills));
          EXPECT_EQ(s.connects, static_cast<std::uint64_t>(kKills + 1));
          EXPECT_EQ(admin.count_clients("f23-reconnect"), 1u);
          std::printf("[ F23 ] %d forced reconnects in %lld ms\n", reconnected,
                      static_cast<long long>(elapsed_ms(t0).count()));
          co_await client.close();
        }
        EXPECT_TRUE(
            co_await eventually([&] { return admin.count_clients("f23-reconnect") == 0; }, 3s))
            << admin.count_clients("f23-reconnect") << " connections left after close()";
        EXPECT_EQ(open_descriptors(), fd0) << "descriptors leaked by forced reconnects";
      },
      60s);
}

// ---- F24 -------------------------------------------------------------------------------------

// A pipelined xadd_bulk of 200 entries is cut by the proxy after half of its bytes: the call
// fails as outcome_unknown, part of the batch ran. The producer retries the whole batch, so the
// stream holds duplicates; every entry carries a dedup key, and an idempotent sink (SADD of the
// key, fed by a StreamConsumer) ends up with each key exactly once, none missing.
TEST(RedisFault, F24_CutMidBatchRetriedHasNoDuplicateEffect) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().redis_port());
  proxy.start();
  ScopeExit clear([&] { proxy.clear_faults(); });
  auto producer_config = fast_config(redis_url_for_port(proxy.port()), "f24-producer");
  producer_config.command_timeout = 2s;
  producer_config.health_check_interval = 10s;  // no PING among the counted bytes
  producer_config.health_check_timeout = 20s;
  const auto sink_config = fast_config(redis_url_for_db(0), "f24-sink");
  constexpr int kEntries = 200;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        RedisClient producer(io.get_executor(), producer_config);
        RedisClient sink(io.get_executor(), sink_config);
        co_await closing(producer, sink, [&]() -> asio::awaitable<void> {
          co_await producer.start();
          co_await sink.start();
          const std::array<std::string_view, 3> old_keys{"f24:s", "f24:s:dead", "f24:sink"};
          (void)co_await sink.del(old_keys);

          std::vector<std::string> keys;
          for (int i = 0; i < kEntries; ++i) keys.push_back("order-" + std::to_string(i));
          const std::string payload(64, 'x');
          std::vector<std::array<FieldView, 2>> entries;
          ts::redis::Request encoded;
          for (const auto& key : keys) {
            entries.push_back({FieldView{"dedup", key}, FieldView{"payload", payload}});
            encoded.push("XADD", "f24:s", "*", "dedup", key, "payload", payload);
          }
          const std::size_t cut = encoded.encoded().size() / 2;

          proxy.cut_after_bytes(cut, Direction::client_to_server);
          const Outcome first =
              co_await outcome([&] { return producer.xadd_bulk("f24:s", entries); });
          proxy.clear_faults();
          EXPECT_TRUE(first.failed) << "the batch was not cut";
          EXPECT_EQ(first.code, ts::make_error_code(errc::connection_lost)) << describe(first);
          EXPECT_EQ(first.kind, ErrorKind::outcome_unknown) << describe(first);
          const std::int64_t ran = co_await sink.xlen("f24:s");
          EXPECT_GT(ran, 0) << "nothing of the batch ran before the cut";
          EXPECT_LT(ran, kEntries) << "all of the batch ran before the cut";

          // The producer cannot know what ran: it retries the whole batch until it succeeds.
          std::vector<std::string> ids;
          for (int attempt = 1; attempt <= 5 && ids.empty(); ++attempt) {
            try {
              ids = co_await producer.xadd_bulk("f24:s", entries);
            } catch (const ts::Error& e) {
              EXPECT_NE(e.kind(), ErrorKind::permanent) << e.what();
            }
          }
          EXPECT_EQ(ids.size(), static_cast<std::size_t>(kEntries));
          const std::int64_t total = co_await sink.xlen("f24:s");
          EXPECT_GT(total, kEntries) << "no duplicates: the scenario was not produced";

          // The idempotent sink.
          std::map<std::string, int> deliveries;
          int effects = 0;
          StreamConsumerConfig cc = consumer_config("f24:s", "c1", 100ms);
          cc.batch = 50;
          StreamConsumer consumer(sink, cc, [&](const StreamEntry& entry) -> asio::awaitable<void> {
            const std::string* key = entry.field("dedup");
            if (key == nullptr) throw std::runtime_error("entry without a dedup key");
            ++deliveries[*key];
            const Reply added = co_await sink.command("SADD", "f24:sink", *key);
            if (added.as_int() == 1) ++effects;
          });
          Running running;
          running.start(io, consumer);
          EXPECT_TRUE(co_await eventually(
              [&] { return consumer.stats().acked == static_cast<std::uint64_t>(total); }, 10s))
              << "acked " << consumer.stats().acked << " of " << total;
          co_await running.stop(consumer);

          EXPECT_EQ(effects, kEntries) << "the sink applied some key twice or missed one";
          const Reply cardinality = co_await sink.command("SCARD", "f24:sink");
          EXPECT_EQ(cardinality.as_int(), kEntries);
          int missing = 0;
          int delivered_twice = 0;
          for (const auto& key : keys) {
            const auto it = deliveries.find(key);
            if (it == deliveries.end()) {
              ++missing;
            } else if (it->second > 1) {
              ++delivered_twice;
            }
          }
          EXPECT_EQ(missing, 0) << "dedup keys never delivered";
          EXPECT_EQ(delivered_twice, total - kEntries) << "duplicates reached the sink, absorbed";
          const auto pending = co_await sink.xpending("f24:s", "g");
          EXPECT_EQ(pending.count, 0);
          co_await producer.close();
          co_await sink.close();
        }());
      },
      30s);
}

// ---- F25 -------------------------------------------------------------------------------------

/// Checks a permanent Redis error: failed once, at once, with the server's prefix and class.
void expect_permanent(const Outcome& o, const std::string& prefix, RedisErrorClass cls,
                      milliseconds bound = 300ms) {
  EXPECT_TRUE(o.failed) << "expected " << prefix;
  EXPECT_EQ(o.code, ts::make_error_code(errc::server_error)) << describe(o);
  EXPECT_EQ(o.server_code, prefix) << describe(o);
  EXPECT_EQ(o.kind, ErrorKind::permanent) << describe(o);
  EXPECT_EQ(ts::redis::error_class(o.server_code), cls) << describe(o);
  EXPECT_LE(o.elapsed, bound) << "not fast: " << describe(o);
}

/// A breaker that would open after 5 counted failures: permanent errors must never count.
ts::redis::RedisConfig f25_config(std::string url, std::string name) {
  auto c = fast_config(std::move(url), std::move(name));
  c.startup_timeout = 5s;
  c.breaker.window_size = 10;
  c.breaker.min_calls = 5;
  return c;
}

std::string url_with_credentials(const std::string& userinfo) {
  return "redis://" + userinfo + "@127.0.0.1:" + std::to_string(servers().redis_port()) + "/0";
}

// WRONGPASS: start() with a wrong password for an ACL user fails at once (one AUTH, no retry
// until the 5 s startup_timeout), permanent, class auth, without the password in the message.
TEST(RedisFault, F25_WrongPassFailsStartAtOnce) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  admin.ok({"ACL", "SETUSER", "f25user", "reset", "on", ">f25-good", "~*", "&*", "+@all"});
  ScopeExit remove([&] { admin.ok({"ACL", "DELUSER", "f25user"}); });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        RedisClient client(io.get_executor(),
                           f25_config(url_with_credentials("f25user:f25-wrong"), "f25-wrongpass"));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          const Outcome o = co_await outcome([&] { return client.start(); });
          expect_permanent(o, "WRONGPASS", RedisErrorClass::auth, 1000ms);
          EXPECT_EQ(o.what.find("f25-wrong"), std::string::npos) << "password in the error";
          EXPECT_EQ(client.stats().connect_failures, 1u) << "start() retried a permanent error";
          EXPECT_EQ(client.stats().connects, 0u);
          co_await client.close();
          // The right password works: the failure above was the password, nothing else.
          RedisClient good(io.get_executor(),
                           f25_config(url_with_credentials("f25user:f25-good"), "f25-goodpass"));
          co_await good.start();
          co_await good.ping();
          co_await good.close();
        }());
      },
      20s);
  // The server's own account: ACL LOG aggregates failed AUTHs per user and reason.
  std::int64_t failed_auths = 0;
  for (const auto& entry : admin.ok({"ACL", "LOG"}).elements) {
    std::map<std::string, std::string> fields;
    for (std::size_t i = 0; i + 1 < entry.elements.size(); i += 2) {
      const auto& value = entry.elements[i + 1];
      fields[entry.elements[i].str] =
          value.type == REDIS_REPLY_INTEGER ? std::to_string(value.integer) : value.str;
    }
    if (fields["username"] == "f25user" && fields["reason"] == "auth") {
      failed_auths += std::stoll(fields["count"]);
    }
  }
  EXPECT_EQ(failed_auths, 1) << "the server saw other than exactly one failed AUTH";
}

// NOAUTH: the server requires a password (requirepass) and the client sends none: start()
// fails at once, permanent, class auth. With the password it starts.
TEST(RedisFault, F25_NoAuthFailsStartAtOnce) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;  // authenticated before requirepass is set: stays usable to restore it
  admin.ok({"PING"});
  ScopedConfig password(admin, "requirepass", "f25-secret");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        RedisClient client(io.get_executor(), f25_config(redis_url_for_db(0), "f25-noauth"));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          const Outcome o = co_await outcome([&] { return client.start(); });
          expect_permanent(o, "NOAUTH", RedisErrorClass::auth, 1000ms);
          EXPECT_EQ(client.stats().connect_failures, 1u) << "start() retried a permanent error";
          co_await client.close();
          RedisClient good(io.get_executor(),
                           f25_config(url_with_credentials(":f25-secret"), "f25-auth"));
          co_await good.start();
          co_await good.ping();
          co_await good.close();
        }());
      },
      20s);
}

// OOM (maxmemory 1 with noeviction): a write fails once, at once, permanent, class
// out_of_memory; the server rejected exactly one SET; 20 more do not open the breaker; reads
// still work.
TEST(RedisFault, F25_OutOfMemoryFailsFastDistinctly) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  run_with_client(
      f25_config(redis_url_for_db(0), "f25-oom"), 20s,
      [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f25:oom:before", "v"));
        {
          ScopedConfig policy(admin, "maxmemory-policy", "noeviction");
          ScopedConfig memory(admin, "maxmemory", "1");
          const auto rejected0 = command_stat(admin, "set", "rejected_calls");
          const auto s0 = client.stats();
          const Outcome o = co_await outcome([&] { return client.set("f25:oom", "v"); });
          expect_permanent(o, "OOM", RedisErrorClass::out_of_memory);
          const auto s1 = client.stats();
          EXPECT_EQ(s1.commands, s0.commands + 1) << "retried";
          EXPECT_EQ(s1.replies, s0.replies + 1);
          EXPECT_EQ(command_stat(admin, "set", "rejected_calls") - rejected0, 1)
              << "the server saw the SET more than once";
          for (int i = 0; i < 20; ++i) {
            const Outcome again = co_await outcome([&] { return client.set("f25:oom", "v"); });
            EXPECT_EQ(again.server_code, "OOM") << describe(again);
          }
          EXPECT_EQ(client.stats().breaker, CircuitState::closed)
              << "permanent errors opened the breaker";
          EXPECT_EQ((co_await client.get("f25:oom:before")).value_or("nil"), "v");
        }
        EXPECT_TRUE(co_await client.set("f25:oom", "after")) << "maxmemory not restored";
        co_await client.close();
      });
}

// READONLY (the server made a replica of a master that does not exist): a write fails once,
// at once, permanent, class read_only (not out_of_memory); reads still work.
TEST(RedisFault, F25_ReadOnlyReplicaFailsFastDistinctly) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  const std::uint16_t nowhere = ts::testing::free_loopback_port();
  run_with_client(f25_config(redis_url_for_db(0), "f25-readonly"), 20s,
                  [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
                    EXPECT_TRUE(co_await client.set("f25:ro", "v"));
                    {
                      admin.ok({"REPLICAOF", "127.0.0.1", std::to_string(nowhere)});
                      ScopeExit master([&] { admin.ok({"REPLICAOF", "NO", "ONE"}); });
                      const auto rejected0 = command_stat(admin, "set", "rejected_calls");
                      const auto s0 = client.stats();
                      const Outcome o = co_await outcome([&] { return client.set("f25:ro", "w"); });
                      expect_permanent(o, "READONLY", RedisErrorClass::read_only);
                      EXPECT_NE(ts::redis::error_class(o.server_code),
                                RedisErrorClass::out_of_memory);
                      EXPECT_EQ(client.stats().commands, s0.commands + 1) << "retried";
                      EXPECT_EQ(command_stat(admin, "set", "rejected_calls") - rejected0, 1);
                      for (int i = 0; i < 20; ++i)
                        (void)co_await outcome([&] { return client.set("f25:ro", "w"); });
                      EXPECT_EQ(client.stats().breaker, CircuitState::closed);
                      EXPECT_EQ((co_await client.get("f25:ro")).value_or("nil"), "v");
                    }
                    EXPECT_TRUE(co_await client.set("f25:ro", "after")) << "still a replica";
                    co_await client.close();
                  });
}

// WRONGTYPE: permanent, class wrong_type, the command ran once (failed_calls), for a plain
// command and for an XADD of xadd_bulk.
TEST(RedisFault, F25_WrongTypeFailsFastDistinctly) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  run_with_client(
      f25_config(redis_url_for_db(0), "f25-wrongtype"), 20s,
      [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f25:str", "v"));
        const auto failed0 = command_stat(admin, "lpush", "failed_calls");
        const auto s0 = client.stats();
        const Outcome o = co_await outcome([&] { return client.command("LPUSH", "f25:str", "x"); });
        expect_permanent(o, "WRONGTYPE", RedisErrorClass::wrong_type);
        EXPECT_EQ(client.stats().commands, s0.commands + 1);
        EXPECT_EQ(command_stat(admin, "lpush", "failed_calls") - failed0, 1);

        const std::vector<std::vector<FieldView>> entries{{{"a", "1"}}, {{"b", "2"}}};
        const Outcome bulk = co_await outcome([&] { return client.xadd_bulk("f25:str", entries); });
        expect_permanent(bulk, "WRONGTYPE", RedisErrorClass::wrong_type);
        for (int i = 0; i < 20; ++i)
          (void)co_await outcome([&] { return client.command("LPUSH", "f25:str", "x"); });
        EXPECT_EQ(client.stats().breaker, CircuitState::closed);
        EXPECT_EQ((co_await client.get("f25:str")).value_or("nil"), "v");
        co_await client.close();
      });
}

// ---- F28 -------------------------------------------------------------------------------------

// A poison message (the handler always throws) among good ones, all first read by a consumer
// that then died ("dead": XREADGROUP, never acknowledged). They are in nobody's reach but by a
// claim: consumer c1 (claim_min_idle 300 ms) takes them over with XAUTOCLAIM once they have
// been idle that long, not before; the good ones are handled once each; the poison message,
// delivered to "dead", claimed by c1 (delivery 2) and retried by c1 from its own pending entries
// (delivery 3), is handled max_deliveries - 1 = 2 times by c1, and at its 4th delivery
// copied to the dead-letter stream with the dlq_* fields and acknowledged; nothing stays
// pending, not even with the dead consumer, and it is not delivered again.
TEST(RedisFault, F28_PoisonMessageIsDeadLettered) {
  TS_SKIP_IF_EXTERNAL();
  run_with_client(
      fast_config(redis_url_for_db(0), "f28"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        const std::array<std::string_view, 2> old_keys{"f28:s", "f28:s:dead"};
        (void)co_await client.del(old_keys);
        EXPECT_TRUE(co_await client.xgroup_create("f28:s", "g", "0", true));
        std::vector<std::string> good_ids;
        std::string poison_id;
        for (int i = 0; i < 6; ++i) {
          const bool poison = i == 2;
          const std::vector<std::pair<std::string, std::string>> data{
              {"kind", poison ? "poison" : "good"}, {"n", std::to_string(i)}};
          const std::string id = co_await client.xadd("f28:s", fields_of(data));
          (poison ? poison_id : good_ids.emplace_back()) = id;
        }
        // Delivery 1 of every entry: to a consumer that dies without acknowledging.
        ReadGroupOptions read;
        read.count = 10;
        EXPECT_EQ((co_await client.xreadgroup("g", "dead", "f28:s", ">", read)).size(), 6u);
        const auto dead_read_at = Clock::now();

        constexpr milliseconds kMinIdle{300};
        StreamConsumerConfig cc = consumer_config("f28:s", "c1", 50ms);
        cc.claim_interval = 100ms;
        cc.claim_min_idle = kMinIdle;
        cc.max_deliveries = 3;
        int poison_calls = 0;
        std::map<std::string, int> handled;
        std::optional<Clock::time_point> first_handled_at;
        StreamConsumer consumer(client, cc, [&](const StreamEntry& entry) -> asio::awaitable<void> {
          if (!first_handled_at) first_handled_at = Clock::now();
          const std::string* kind = entry.field("kind");
          if (kind != nullptr && *kind == "poison") {
            ++poison_calls;
            throw std::runtime_error("poison message");
          }
          ++handled[entry.id];
          co_return;
        });
        Running running;
        running.start(io, consumer);
        EXPECT_TRUE(co_await eventually(
            [&] { return consumer.stats().dead_lettered == 1 && handled.size() == 5; }, 5s))
            << "dead-lettered " << consumer.stats().dead_lettered << ", good handled "
            << handled.size() << ", poison handled " << poison_calls << " times, claimed "
            << consumer.stats().claimed;
        // A few more claim intervals and more than claim_min_idle: the poison message must not
        // come back (a negative check needs a window; it is not a wait for a condition).
        co_await pause_for(kMinIdle + 200ms);
        co_await running.stop(consumer);

        // The claim path, and only after claim_min_idle (a lower bound: load cannot break it).
        EXPECT_GE(first_handled_at.value_or(dead_read_at) - dead_read_at, kMinIdle)
            << "entries of the dead consumer were taken before they were idle claim_min_idle";
        EXPECT_EQ(consumer.stats().claimed, 6u)
            << "the dead consumer's 6 entries are reachable only by XAUTOCLAIM";
        EXPECT_EQ(poison_calls, 2)
            << "deliveries: 1 to the dead consumer, 2 to c1 (claim, own retry), then dead-lettered";
        EXPECT_EQ(consumer.stats().dead_lettered, 1u);
        EXPECT_EQ(consumer.stats().handler_errors, 2u);
        EXPECT_EQ(consumer.stats().acked, 5u);
        for (const auto& id : good_ids) EXPECT_EQ(handled[id], 1) << id;
        const auto dead = co_await client.xrange("f28:s:dead");
        EXPECT_EQ(dead.size(), 1u);
        const auto field = [&](const char* name) {
          const std::string* v = dead.empty() ? nullptr : dead.front().field(name);
          return v ? *v : std::string("<missing>");
        };
        EXPECT_EQ(field("kind"), "poison");
        EXPECT_EQ(field("n"), "2");
        EXPECT_EQ(field("dlq_source"), "f28:s");
        EXPECT_EQ(field("dlq_id"), poison_id);
        EXPECT_EQ(field("dlq_deliveries"), "4");
        EXPECT_EQ(field("dlq_group"), "g");
        const auto pending = co_await client.xpending("f28:s", "g");
        EXPECT_EQ(pending.count, 0) << "the poison message is still pending";
        co_await client.close();
      });
}

// ---- F29 -------------------------------------------------------------------------------------

// Pending entries trimmed or deleted from the stream. Own-pending path: the consumer's own
// pending entries come back from XREADGROUP 0 with nil bodies (XTRIM MINID removed them).
// XAUTOCLAIM path: a dead consumer's pending entries were XDELed; XAUTOCLAIM reports their IDs
// as deleted. Either way: counted in `deleted`, never passed to the handler, nothing pending
// afterwards, no crash, and the consumer goes on with new entries.
TEST(RedisFault, F29_TrimmedPendingEntriesAreCountedNotFatal) {
  TS_SKIP_IF_EXTERNAL();
  run_with_client(
      fast_config(redis_url_for_db(0), "f29"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        const std::array<std::string_view, 2> old_keys{"f29:a", "f29:b"};
        (void)co_await client.del(old_keys);
        auto add = [&](const std::string& stream, int n) -> asio::awaitable<std::string> {
          const std::vector<std::pair<std::string, std::string>> data{{"n", std::to_string(n)}};
          co_return co_await client.xadd(stream, fields_of(data));
        };
        // A handler that records the IDs it is given; a deleted entry must never reach it.
        auto recorder = [](std::vector<std::string>& seen) {
          return [&seen](const StreamEntry& e) -> asio::awaitable<void> {
            if (e.deleted || e.fields.empty())
              ADD_FAILURE() << "a deleted entry reached the handler";
            seen.push_back(e.id);
            co_return;
          };
        };

        // Own-pending path: c1 read 5 entries and "crashed"; the first 3 were trimmed away.
        EXPECT_TRUE(co_await client.xgroup_create("f29:a", "g", "0", true));
        std::vector<std::string> ids;
        for (int i = 0; i < 5; ++i) ids.push_back(co_await add("f29:a", i));
        ReadGroupOptions read;
        read.count = 10;
        EXPECT_EQ((co_await client.xreadgroup("g", "c1", "f29:a", ">", read)).size(), 5u);
        EXPECT_EQ(co_await client.xtrim("f29:a", ts::redis::TrimOptions::min_id(ids[3], false)), 3);
        {
          std::vector<std::string> seen;
          StreamConsumerConfig cc = consumer_config("f29:a", "c1", 50ms);
          cc.claim_interval = 100ms;
          StreamConsumer consumer(client, cc, recorder(seen));
          Running running;
          running.start(io, consumer);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 2; }, 3s));
          const std::string fresh = co_await add("f29:a", 5);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 3; }, 3s))
              << "the consumer stopped after the deleted entries";
          EXPECT_FALSE(running.done) << "run() ended";
          co_await running.stop(consumer);
          EXPECT_EQ(consumer.stats().deleted, 3u);
          EXPECT_EQ(consumer.stats().read_errors, 0u);
          EXPECT_EQ(seen, (std::vector<std::string>{ids[3], ids[4], fresh}));
          EXPECT_EQ((co_await client.xpending("f29:a", "g")).count, 0);
        }

        // XAUTOCLAIM path: "dead" read 4 entries and died; 2 of them were deleted.
        EXPECT_TRUE(co_await client.xgroup_create("f29:b", "g", "0", true));
        ids.clear();
        for (int i = 0; i < 4; ++i) ids.push_back(co_await add("f29:b", i));
        EXPECT_EQ((co_await client.xreadgroup("g", "dead", "f29:b", ">", read)).size(), 4u);
        const std::vector<std::string_view> gone{ids[0], ids[2]};
        EXPECT_EQ((co_await client.command("XDEL", "f29:b", gone)).as_int(), 2);
        {
          std::vector<std::string> seen;
          StreamConsumerConfig cc = consumer_config("f29:b", "c2", 50ms);
          cc.claim_interval = 100ms;
          cc.claim_min_idle = 10ms;
          StreamConsumer consumer(client, cc, recorder(seen));
          Running running;
          running.start(io, consumer);
          EXPECT_TRUE(co_await eventually(
              [&] { return consumer.stats().deleted == 2 && seen.size() == 2; }, 3s))
              << "deleted " << consumer.stats().deleted << ", handled " << seen.size();
          const std::string fresh = co_await add("f29:b", 4);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 3; }, 3s));
          EXPECT_FALSE(running.done) << "run() ended";
          co_await running.stop(consumer);
          EXPECT_EQ(consumer.stats().claimed, 2u);
          EXPECT_EQ(consumer.stats().deleted, 2u);
          EXPECT_EQ(consumer.stats().read_errors, 0u);
          EXPECT_EQ(seen, (std::vector<std::string>{ids[1], ids[3], fresh}));
          EXPECT_EQ((co_await client.xpending("f29:b", "g")).count, 0);
        }
        co_await client.close();
      });
}

// ---- F30 -------------------------------------------------------------------------------------

// Stream and group missing (fresh key): the consumer creates both (XGROUP CREATE MKSTREAM), a
// second consumer's BUSYGROUP is fine. Own pending entries are handled before new ones. After
// FLUSHDB of the (dedicated) database while the consumer runs, it re-creates the group on
// NOGROUP and goes on consuming new entries.
TEST(RedisFault, F30_MissingStreamOrGroupIsRecreated) {
  TS_SKIP_IF_EXTERNAL();
  constexpr std::uint32_t kDb = 3;
  RedisAdmin admin(kDb);
  admin.ok({"FLUSHDB"});
  ScopeExit clean([&] { admin.ok({"FLUSHDB"}); });
  run_with_client(
      fast_config(redis_url_for_db(kDb), "f30"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        auto add = [&](int n) -> asio::awaitable<std::string> {
          const std::vector<std::pair<std::string, std::string>> data{{"n", std::to_string(n)}};
          co_return co_await client.xadd("f30:s", fields_of(data));
        };
        auto config_for = [](const std::string& consumer) {
          StreamConsumerConfig cc = consumer_config("f30:s", consumer, 100ms);
          cc.claim_interval = 200ms;
          cc.error_backoff = 50ms;
          return cc;
        };
        auto ignore = [](const StreamEntry&) -> asio::awaitable<void> { co_return; };

        // Fresh key: created with MKSTREAM; a second consumer meets BUSYGROUP and is fine.
        const Reply exists = co_await client.command("EXISTS", "f30:s");
        EXPECT_EQ(exists.as_int(), 0);
        StreamConsumer first(client, config_for("c1"), ignore);
        co_await first.ensure_group();
        EXPECT_EQ(first.stats().groups_created, 1u);
        StreamConsumer second(client, config_for("c2"), ignore);
        const Outcome busy = co_await outcome([&] { return second.ensure_group(); });
        EXPECT_FALSE(busy.failed) << describe(busy);
        EXPECT_EQ(second.stats().groups_created, 0u);
        const auto groups = co_await client.xinfo_groups("f30:s");
        EXPECT_EQ(groups.size(), 1u);
        EXPECT_EQ(groups.empty() ? std::string() : groups.front().name, "g");

        // Own pending entries first: c3 read e0, e1 and "crashed"; e2, e3 came later.
        std::vector<std::string> ids;
        ids.push_back(co_await add(0));
        ids.push_back(co_await add(1));
        ReadGroupOptions read;
        read.count = 2;
        EXPECT_EQ((co_await client.xreadgroup("g", "c3", "f30:s", ">", read)).size(), 2u);
        ids.push_back(co_await add(2));
        ids.push_back(co_await add(3));
        std::vector<std::string> order;
        StreamConsumer consumer(client, config_for("c3"),
                                [&](const StreamEntry& e) -> asio::awaitable<void> {
                                  order.push_back(e.id);
                                  co_return;
                                });
        Running running;
        running.start(io, consumer);
        EXPECT_TRUE(co_await eventually([&] { return order.size() == 4; }, 3s));
        EXPECT_EQ(order, ids) << "own pending entries must come first, then new ones";

        // FLUSHDB while the consumer runs (blocked in XREADGROUP): the group is gone.
        const auto created_before = consumer.stats().groups_created;
        admin.ok({"FLUSHDB"});
        EXPECT_TRUE(co_await eventually(
            [&] { return consumer.stats().groups_created > created_before; }, 3s))
            << "the group was not re-created; read errors " << consumer.stats().read_errors;
        const std::string after = co_await add(100);
        EXPECT_TRUE(co_await eventually([&] { return order.size() == 5; }, 3s))
            << "no consumption after FLUSHDB";
        if (order.size() >= 5) {
          EXPECT_EQ(order[4], after);
        }
        EXPECT_FALSE(running.done) << "run() ended";
        EXPECT_GE(consumer.stats().read_errors, 1u);  // UNBLOCKED / NOGROUP, logged and counted
        co_await running.stop(consumer);
        EXPECT_EQ((co_await client.xpending("f30:s", "g")).count, 0);
        co_await client.close();
      });
}

}  // namespace

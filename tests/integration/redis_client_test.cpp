// RedisClient and StreamConsumer against a real Redis 7: every public operation, binary-safe
// values, nil and error replies, nested arrays, xadd_bulk of 10 000 entries, lifecycle
// (CLIENT LIST and descriptors back to baseline after close).
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/async_test.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::redis::FieldView;
using ts::redis::RedisClient;
using ts::redis::Reply;

namespace {

using ts::testing::open_descriptors;

/// Polls `condition` every 5 ms until it holds or `timeout` passes (no bare sleeps).
asio::awaitable<bool> eventually(std::function<bool()> condition,
                                 std::chrono::milliseconds timeout = 5s) {
  return ts::testing::eventually(std::move(condition), timeout, 5ms);
}

ts::redis::RedisConfig config_for(const std::string& name) {
  ts::redis::RedisConfig config;
  config.url = ts::testing::Servers::instance().redis_url();
  config.client_name = name;
  return config;
}

/// Number of connections named `name` in CLIENT LIST, asked through `admin`.
asio::awaitable<int> connections_named(RedisClient& admin, const std::string& name) {
  const Reply list = co_await admin.command("CLIENT", "LIST");
  const std::string_view text = list.as_string();
  int n = 0;
  const std::string needle = " name=" + name + " ";
  for (std::size_t pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + 1)) {
    ++n;
  }
  co_return n;
}

class RedisClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { (void)ts::testing::Servers::instance().redis_url(); }

  /// Runs `body` with a started client named after the test; closes it afterwards.
  void with_client(std::function<asio::awaitable<void>(RedisClient&)> body,
                   std::function<void(ts::redis::RedisConfig&)> tweak = {}) {
    ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
      auto config = config_for(test_name());
      if (tweak) tweak(config);
      RedisClient client(io.get_executor(), config);
      co_await client.start();
      std::exception_ptr failure;
      try {
        co_await body(client);
      } catch (...) {
        failure = std::current_exception();
      }
      co_await client.close();
      if (failure) std::rethrow_exception(failure);
    });
  }

  static std::string test_name() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  /// A key prefix unique to the test.
  static std::string key(std::string_view suffix) {
    return test_name() + ":" + std::string(suffix);
  }
};

TEST_F(RedisClientTest, CommandRoundTripsAndTypedAccessors) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto k = key("n");
    EXPECT_EQ((co_await c.command("SET", k, 41)).as_string(), "OK");
    EXPECT_EQ((co_await c.command("INCR", k)).as_int(), 42);
    EXPECT_EQ((co_await c.command("GET", k)).as_int(), 42);  // a bulk string holding an integer
    EXPECT_EQ((co_await c.command("INCRBYFLOAT", k, 0.5)).as_double(), 42.5);
    EXPECT_TRUE((co_await c.command("GET", key("missing"))).is_nil());
    co_await c.ping();
  });
}

TEST_F(RedisClientTest, BinarySafeValues) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    std::string nul_crlf("a\0b\r\nc\r\n\0", 9);
    std::string big(1 << 20, 'x');
    std::string mixed(1 << 20, '\0');
    for (std::size_t i = 0; i < mixed.size(); ++i) mixed[i] = static_cast<char>(i * 31 % 256);
    for (const std::string* value : {&nul_crlf, &big, &mixed}) {
      EXPECT_TRUE(co_await c.set(key("v"), *value));
      const auto got = co_await c.get(key("v"));
      EXPECT_TRUE(got.has_value());
      EXPECT_EQ(got.value_or(""), *value) << "size " << value->size();
    }
    // Binary keys and field names too.
    const std::string bin_key = key(std::string("k\0\r\n", 4));
    const std::array<FieldView, 2> fields{FieldView{std::string_view("f\0", 2), nul_crlf},
                                          FieldView{"g", "\r\n"}};
    EXPECT_EQ(co_await c.hset(bin_key, fields), 2);
    const auto all = co_await c.hgetall(bin_key);
    EXPECT_EQ(all.size(), 2u);
    std::set<std::pair<std::string, std::string>> got(all.begin(), all.end());
    EXPECT_TRUE(got.count({std::string("f\0", 2), nul_crlf}));
    EXPECT_TRUE(got.count({"g", "\r\n"}));
  });
}

TEST_F(RedisClientTest, ErrorRepliesThrowWithPrefixAndLeaveTheConnectionUsable) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    (void)co_await c.command("SET", key("s"), "text");
    try {
      (void)co_await c.command("LPUSH", key("s"), "x");
      ADD_FAILURE() << "WRONGTYPE expected";
    } catch (const ts::Error& e) {
      EXPECT_TRUE(e.server().has_value());
      EXPECT_EQ(e.server().value_or(ts::ServerError{}).code, "WRONGTYPE");
      EXPECT_EQ(e.kind(), ts::ErrorKind::permanent);
      EXPECT_EQ(ts::redis::error_class(e.server()->code), ts::redis::ErrorClass::wrong_type);
      EXPECT_NE(std::string(e.what()).find("LPUSH"), std::string::npos) << e.what();
    }
    try {
      (void)co_await c.command("NOSUCHCOMMAND");
      ADD_FAILURE() << "ERR expected";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.server()->code, "ERR");
    }
    EXPECT_EQ(co_await c.get(key("s")), std::optional<std::string>("text"));
    // Type mismatch on the client side is a clear error, not UB.
    try {
      (void)(co_await c.command("GET", key("s"))).as_int();
      ADD_FAILURE() << "type_mismatch expected";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::type_mismatch));
    }
  });
}

TEST_F(RedisClientTest, PipelineKeepsErrorsInPlaceAndNestedArrays) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    ts::redis::Request req;
    req.push("SET", key("a"), "1")
        .push("INCR", key("a"))
        .push("HSET", key("a"), "f", "v")  // WRONGTYPE
        .push("GET", key("nope"))
        .push("EVAL", "return {1, {2, {'x', false}}, 'y'}", 0);
    const auto replies = co_await c.pipeline(req);
    EXPECT_EQ(replies.size(), 5u);
    if (replies.size() != 5) co_return;
    EXPECT_EQ(replies[0].as_string(), "OK");
    EXPECT_EQ(replies[1].as_int(), 2);
    EXPECT_TRUE(replies[2].is_error());
    EXPECT_EQ(replies[2].error_prefix(), "WRONGTYPE");
    EXPECT_TRUE(replies[3].is_nil());
    const Reply& nested = replies[4];
    EXPECT_EQ(nested.size(), 3u);
    EXPECT_EQ(nested[0].as_int(), 1);
    EXPECT_EQ(nested[1][0].as_int(), 2);
    EXPECT_EQ(nested[1][1][0].as_string(), "x");
    EXPECT_TRUE(nested[1][1][1].is_nil());  // Lua false → nil
    EXPECT_EQ(nested[2].as_string(), "y");
    EXPECT_NE(nested.debug_string().find("\"x\""), std::string::npos) << nested.debug_string();
    // An empty request is a caller bug.
    try {
      (void)co_await c.pipeline(ts::redis::Request{});
      ADD_FAILURE() << "invalid_argument expected";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument));
    }
  });
}

TEST_F(RedisClientTest, KeyValueHelpers) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    EXPECT_TRUE(co_await c.set(key("a"), "1"));
    ts::redis::SetOptions nx;
    nx.condition = ts::redis::SetOptions::Condition::if_not_exists;
    EXPECT_FALSE(co_await c.set(key("a"), "2", nx));
    EXPECT_EQ(co_await c.get(key("a")), std::optional<std::string>("1"));
    ts::redis::SetOptions ttl;
    ttl.ttl = 60s;
    ttl.condition = ts::redis::SetOptions::Condition::if_exists;
    EXPECT_TRUE(co_await c.set(key("a"), "3", ttl));
    const auto pttl = (co_await c.command("PTTL", key("a"))).as_int();
    EXPECT_GT(pttl, 50000);
    EXPECT_LE(pttl, 60000);
    EXPECT_TRUE(co_await c.expire(key("a"), 100s));
    EXPECT_FALSE(co_await c.expire(key("none"), 100s));
    EXPECT_TRUE(co_await c.set(key("b"), "x"));
    const std::array<std::string, 3> names{key("a"), key("b"), key("none")};
    const std::array<std::string_view, 3> keys{names[0], names[1], names[2]};
    EXPECT_EQ(co_await c.del(keys), 2);
    EXPECT_EQ(co_await c.del(key("a")), 0);
    const std::array<FieldView, 2> fields{FieldView{"f1", "v1"}, FieldView{"f2", "v2"}};
    EXPECT_EQ(co_await c.hset(key("h"), fields), 2);
    EXPECT_EQ(co_await c.hset(key("h"), fields), 0);  // updated, not added
    auto all = co_await c.hgetall(key("h"));
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, (std::vector<std::pair<std::string, std::string>>{{"f1", "v1"}, {"f2", "v2"}}));
    EXPECT_TRUE((co_await c.hgetall(key("nohash"))).empty());
  });
}

TEST_F(RedisClientTest, StreamHelpers) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto s = key("s");
    const std::array<FieldView, 2> fields{FieldView{"sym", "BTC"}, FieldView{"px", "1.5"}};
    const std::string id1 = co_await c.xadd(s, fields);
    const std::string id2 = co_await c.xadd(s, fields);
    EXPECT_LT(id1, id2);
    EXPECT_EQ(co_await c.xlen(s), 2);
    auto entries = co_await c.xrange(s);
    EXPECT_EQ(entries.size(), 2u);
    if (entries.size() == 2) {
      EXPECT_EQ(entries[0].id, id1);
      EXPECT_EQ(*entries[0].field("sym"), "BTC");
      EXPECT_EQ(entries[1].field("nope"), nullptr);
    }
    EXPECT_EQ((co_await c.xrange(s, "-", "+", 1)).size(), 1u);

    // Groups: create (MKSTREAM on a missing stream), BUSYGROUP tolerated.
    EXPECT_TRUE(co_await c.xgroup_create(s, "g", "0"));
    EXPECT_FALSE(co_await c.xgroup_create(s, "g", "0"));
    EXPECT_TRUE(co_await c.xgroup_create(key("fresh"), "g", "$", true));
    const auto read = co_await c.xreadgroup("g", "c1", s, ">");
    EXPECT_EQ(read.size(), 2u);
    const auto summary = co_await c.xpending(s, "g");
    EXPECT_EQ(summary.count, 2);
    EXPECT_EQ(summary.min_id, std::optional<std::string>(id1));
    EXPECT_EQ(summary.consumers.size(), 1u);
    ts::redis::PendingQuery q;
    q.consumer = "c1";
    const auto pending = co_await c.xpending_range(s, "g", q);
    EXPECT_EQ(pending.size(), 2u);
    if (!pending.empty()) {
      EXPECT_EQ(pending[0].consumer, "c1");
      EXPECT_EQ(pending[0].deliveries, 1);
    }
    // Own pending entries are re-read with "0"; deleted ones come back with no body.
    const std::array<std::string_view, 1> del_args{id1};
    EXPECT_EQ((co_await c.command("XDEL", s, del_args)).as_int(), 1);
    const auto again = co_await c.xreadgroup("g", "c1", s, "0");
    EXPECT_EQ(again.size(), 2u);
    if (again.size() == 2) {
      EXPECT_TRUE(again[0].deleted);
      EXPECT_FALSE(again[1].deleted);
    }
    // XAUTOCLAIM by another consumer (min idle 0): claims the live one, reports the deleted.
    const auto claimed = co_await c.xautoclaim(s, "g", "c2", 0ms);
    EXPECT_EQ(claimed.entries.size(), 1u);
    EXPECT_EQ(claimed.deleted_ids, std::vector<std::string>{id1});
    EXPECT_EQ(claimed.next_id, "0-0");
    const std::vector<std::string> ack{id2};
    EXPECT_EQ(co_await c.xack(s, "g", ack), 1);
    EXPECT_EQ((co_await c.xpending(s, "g")).count, 0);
    const auto groups = co_await c.xinfo_groups(s);
    EXPECT_EQ(groups.size(), 1u);
    if (!groups.empty()) {
      EXPECT_EQ(groups[0].name, "g");
      EXPECT_EQ(groups[0].pending, 0);
    }
    const Reply info = co_await c.xinfo_stream(s);
    EXPECT_TRUE(info.is_array());
    EXPECT_EQ(co_await c.xtrim(s, ts::redis::TrimOptions::max_length(0, false)), 1);
    EXPECT_EQ(co_await c.xlen(s), 0);
    EXPECT_TRUE(co_await c.xgroup_destroy(s, "g"));
    EXPECT_FALSE(co_await c.xgroup_destroy(s, "g"));
  });
}

TEST_F(RedisClientTest, XaddBulkOfTenThousandVerifiedWithXrange) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto s = key("bulk");
    std::vector<std::string> seqs;
    seqs.reserve(10000);
    for (int i = 0; i < 10000; ++i) seqs.push_back(std::to_string(i));
    std::vector<std::array<FieldView, 2>> entries;
    entries.reserve(seqs.size());
    for (const auto& seq : seqs) {
      entries.push_back({FieldView{"seq", seq}, FieldView{"payload", std::string_view("p\0q", 3)}});
    }
    ts::redis::XAddOptions options;
    options.command.timeout = 10s;
    const auto ids = co_await c.xadd_bulk(s, entries, options);
    EXPECT_EQ(ids.size(), 10000u);
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end(), [](const auto& a, const auto& b) {
      const auto ms = [](const std::string& id) { return std::stoull(id.substr(0, id.find('-'))); };
      const auto sq = [](const std::string& id) {
        return std::stoull(id.substr(id.find('-') + 1));
      };
      return std::pair(ms(a), sq(a)) < std::pair(ms(b), sq(b));
    }));
    const auto read = co_await c.xrange(s, "-", "+", {}, ts::redis::CommandOptions{10s});
    EXPECT_EQ(read.size(), 10000u);
    for (std::size_t i = 0; i < std::min<std::size_t>(read.size(), ids.size()); ++i) {
      if (read[i].id != ids[i] || *read[i].field("seq") != seqs[i] ||
          *read[i].field("payload") != std::string_view("p\0q", 3)) {
        ADD_FAILURE() << "entry " << i << " differs: " << read[i].id << " vs " << ids[i];
        break;
      }
    }
    // Trimming options: MAXLEN = 100 exactly, MINID ~.
    ts::redis::XAddOptions trim;
    trim.trim = ts::redis::TrimOptions::max_length(100, false);
    (void)co_await c.xadd_bulk(s, std::vector<std::array<FieldView, 1>>(5, {FieldView{"a", "b"}}),
                               trim);
    EXPECT_EQ(co_await c.xlen(s), 100);
    ts::redis::XAddOptions minid;
    minid.trim = ts::redis::TrimOptions::min_id(ids.back(), false);
    (void)co_await c.xadd_bulk(s, std::vector<std::array<FieldView, 1>>(1, {FieldView{"a", "b"}}),
                               minid);
    EXPECT_LE(co_await c.xlen(s), 100);
    // One XADD of a bulk failing (WRONGTYPE) fails the call after all replies were read.
    (void)co_await c.set(key("str"), "x");
    try {
      (void)co_await c.xadd_bulk(key("str"), entries);
      ADD_FAILURE() << "WRONGTYPE expected";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.server()->code, "WRONGTYPE");
    }
    EXPECT_EQ(co_await c.get(key("str")), std::optional<std::string>("x"));  // still in sync
    // Empty bulk: no round trip, no IDs.
    EXPECT_TRUE((co_await c.xadd_bulk(s, std::vector<std::array<FieldView, 1>>{})).empty());
  });
}

TEST_F(RedisClientTest, XaddBulkCountAddsWhatXaddBulkWouldAndCountsIt) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto s = key("count");
    std::vector<std::string> seqs;
    for (int i = 0; i < 5000; ++i) seqs.push_back(std::to_string(i));
    std::vector<std::array<FieldView, 2>> entries;
    for (const auto& seq : seqs) {
      entries.push_back({FieldView{"seq", seq}, FieldView{"payload", std::string_view("p\0q", 3)}});
    }
    ts::redis::XAddOptions options;
    options.command.timeout = 10s;
    EXPECT_EQ(co_await c.xadd_bulk_count(s, entries, options), 5000u);
    const auto read = co_await c.xrange(s, "-", "+", {}, ts::redis::CommandOptions{10s});
    EXPECT_EQ(read.size(), 5000u);
    for (std::size_t i = 0; i < read.size(); ++i) {
      if (*read[i].field("seq") != seqs[i] ||
          *read[i].field("payload") != std::string_view("p\0q", 3)) {
        ADD_FAILURE() << "entry " << i << " differs";
        break;
      }
    }
    // Entries of different field counts in one batch (the encoder's shared head changes).
    const std::vector<std::vector<FieldView>> mixed{
        {FieldView{"a", "1"}}, {FieldView{"a", "2"}, FieldView{"b", "3"}}, {FieldView{"a", "4"}}};
    EXPECT_EQ(co_await c.xadd_bulk_count(s, mixed), 3u);
    const auto tail = co_await c.xrange(s, "-", "+", {}, ts::redis::CommandOptions{10s});
    EXPECT_EQ(tail.size(), 5003u);
    if (tail.size() == 5003u) {
      EXPECT_EQ(tail[5001].fields.size(), 2u);
      EXPECT_EQ(*tail[5001].field("b"), "3");
      EXPECT_EQ(*tail[5002].field("a"), "4");
    }
    // Trimming: MAXLEN = 10 exactly.
    ts::redis::XAddOptions trim;
    trim.trim = ts::redis::TrimOptions::max_length(10, false);
    EXPECT_EQ(co_await c.xadd_bulk_count(
                  s, std::vector<std::array<FieldView, 1>>(4, {FieldView{"a", "b"}}), trim),
              4u);
    EXPECT_EQ(co_await c.xlen(s), 10);
    // NOMKSTREAM on a missing stream: nil replies, counted as not added.
    ts::redis::XAddOptions nomk;
    nomk.no_mkstream = true;
    EXPECT_EQ(
        co_await c.xadd_bulk_count(
            key("missing"), std::vector<std::array<FieldView, 1>>(3, {FieldView{"a", "b"}}), nomk),
        0u);
    EXPECT_EQ(co_await c.xlen(key("missing")), 0);
    // A failing XADD (WRONGTYPE) fails the call after all replies were read; in sync after.
    (void)co_await c.set(key("str2"), "x");
    try {
      (void)co_await c.xadd_bulk_count(key("str2"), entries);
      ADD_FAILURE() << "WRONGTYPE expected";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.server()->code, "WRONGTYPE");
    }
    EXPECT_EQ(co_await c.get(key("str2")), std::optional<std::string>("x"));
    // Empty batch: no round trip, 0.
    EXPECT_EQ(co_await c.xadd_bulk_count(s, std::vector<std::array<FieldView, 1>>{}), 0u);
  });
}

TEST_F(RedisClientTest, ConcurrentCallersArePipelinedAndGetTheirOwnReplies) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto executor = co_await asio::this_coro::executor;
    int done = 0;
    int wrong = 0;
    for (int caller = 0; caller < 50; ++caller) {
      asio::co_spawn(
          executor,
          [&c, &done, &wrong, caller]() -> asio::awaitable<void> {
            for (int i = 0; i < 40; ++i) {
              const std::string token = std::to_string(caller) + ":" + std::to_string(i);
              const Reply r = co_await c.command("ECHO", token);
              if (r.as_string() != token) ++wrong;
            }
            ++done;
          },
          asio::detached);
    }
    EXPECT_TRUE(co_await eventually([&] { return done == 50; }, 10s));
    EXPECT_EQ(wrong, 0);
    const auto stats = c.stats();
    EXPECT_GE(stats.commands, 2000u);
    EXPECT_LT(stats.writes, stats.commands / 2) << "commands were not coalesced into batches";
  });
}

TEST_F(RedisClientTest, BlockingCommandsUseTheirOwnConnection) {
  with_client(
      [](RedisClient& c) -> asio::awaitable<void> {
        const auto executor = co_await asio::this_coro::executor;
        bool popped = false;
        asio::co_spawn(
            executor,
            [&]() -> asio::awaitable<void> {
              const Reply r = co_await c.blocking_command(2s, "BLPOP", key("list"), 2);
              popped = !r.is_nil() && r[1].as_string() == "item";
            },
            asio::detached);
        // The shared connection keeps serving while BLPOP blocks.
        for (int i = 0; i < 20; ++i) co_await c.ping();
        (void)co_await c.command("RPUSH", key("list"), "item");
        EXPECT_TRUE(co_await eventually([&] { return popped; }, 3s));
        EXPECT_EQ(c.stats().blocking_connections, 1u);
      },
      [](ts::redis::RedisConfig& config) { config.command_timeout = 500ms; });
}

TEST_F(RedisClientTest, StreamConsumerProcessesPendingFirstThenNew) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    const auto s = key("s");
    EXPECT_TRUE(co_await c.xgroup_create(s, "g", "0"));
    const std::array<FieldView, 1> f{FieldView{"n", "0"}};
    const std::string old_id = co_await c.xadd(s, f);
    (void)co_await c.xreadgroup("g", "me", s, ">");  // pending for "me", as after a crash
    const std::string new_id = co_await c.xadd(s, f);
    ts::redis::StreamConsumerConfig config;
    config.stream = s;
    config.group = "g";
    config.consumer = "me";
    config.block = 100ms;
    std::vector<std::string> seen;
    ts::redis::StreamConsumer consumer(
        c, config, [&](const ts::redis::StreamEntry& e) -> asio::awaitable<void> {
          seen.push_back(e.id);
          co_return;
        });
    bool finished = false;
    asio::co_spawn(co_await asio::this_coro::executor, consumer.run(),
                   [&](std::exception_ptr) { finished = true; });
    EXPECT_TRUE(co_await eventually([&] { return seen.size() >= 2; }));
    consumer.stop();
    EXPECT_TRUE(co_await eventually([&] { return finished; }, 3s));
    EXPECT_EQ(seen, (std::vector<std::string>{old_id, new_id}));
    EXPECT_EQ(consumer.stats().acked, 2u);
    EXPECT_EQ((co_await c.xpending(s, "g")).count, 0);
  });
}

TEST_F(RedisClientTest, LifecycleIsIdempotentAndCloseLeavesNothingBehind) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    RedisClient admin(io.get_executor(), config_for("lifecycle-admin"));
    co_await admin.start();
    const std::string name = "lifecycle-" + std::to_string(::getpid());
    const int fds_before = open_descriptors();
    for (int round = 0; round < 20; ++round) {
      RedisClient client(io.get_executor(), config_for(name));
      // Before start: a clear error, nothing sent.
      try {
        (void)co_await client.get("x");
        ADD_FAILURE() << "not_started expected";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::not_started));
      }
      co_await client.start();
      co_await client.start();  // idempotent
      (void)co_await client.blocking_command(10ms, "BLPOP", "lifecycle:none", 0.01);
      EXPECT_EQ(co_await connections_named(admin, name), 2);  // shared + one blocking
      co_await client.close();
      co_await client.close();  // idempotent
      try {
        (void)co_await client.get("x");
        ADD_FAILURE() << "client_closed expected";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::client_closed));
        EXPECT_EQ(e.kind(), ts::ErrorKind::cancelled);
      }
    }
    // The server notices closed connections asynchronously: poll with a deadline (2 s).
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    int remaining = co_await connections_named(admin, name);
    while (remaining != 0 && std::chrono::steady_clock::now() < deadline) {
      co_await ts::testing::pause_for(10ms);
      remaining = co_await connections_named(admin, name);
    }
    EXPECT_EQ(remaining, 0);
    EXPECT_EQ(open_descriptors(), fds_before);
    co_await admin.close();
  });
}

// close() of a client with nothing in flight returns at once, not after its grace period
// (close_timeout): a GCC 12 miscompilation of `active() > 0 && co_await ...` once made every
// close() wait its whole close_timeout. The same for a client never started and one whose
// start() failed.
TEST_F(RedisClientTest, IdleCloseReturnsPromptly) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    using Clock = std::chrono::steady_clock;
    auto elapsed_ms = [](Clock::time_point since) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
    };
    auto config = config_for(test_name());
    config.close_timeout = 5s;
    {
      RedisClient client(io.get_executor(), config);
      co_await client.start();
      EXPECT_EQ((co_await client.command("PING")).as_string(), "PONG");
      const auto t0 = Clock::now();
      co_await client.close();
      const auto took = elapsed_ms(t0);
      EXPECT_LT(took, 1000) << "an idle close() took " << took << " ms (close_timeout 5000 ms)";
    }
    {
      RedisClient never_started(io.get_executor(), config);
      const auto t0 = Clock::now();
      co_await never_started.close();
      const auto took = elapsed_ms(t0);
      EXPECT_LT(took, 1000) << "close() of a client never started took " << took << " ms";
    }
    {
      auto refused = config;
      refused.url = "redis://127.0.0.1:1";  // nothing listens: start() fails
      refused.startup_timeout = 300ms;
      RedisClient failed(io.get_executor(), refused);
      try {
        co_await failed.start();
        ADD_FAILURE() << "start() succeeded";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::startup_timeout)) << e.what();
      }
      const auto t0 = Clock::now();
      co_await failed.close();
      const auto took = elapsed_ms(t0);
      EXPECT_LT(took, 1000) << "close() after a failed start() took " << took << " ms";
    }
  });
}

TEST_F(RedisClientTest, RefusesCommandsThatWouldBreakFifoMatching) {
  with_client([](RedisClient& c) -> asio::awaitable<void> {
    auto expect_refused = [&](asio::awaitable<Reply> op,
                              const char* what) -> asio::awaitable<void> {
      try {
        (void)co_await std::move(op);
        ADD_FAILURE() << what << " was accepted";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument)) << what;
      }
    };
    const std::vector<std::string> nothing;
    co_await expect_refused(c.command(nothing), "no arguments");
    co_await expect_refused(c.command("subscribe", "ch"), "SUBSCRIBE");
    co_await expect_refused(c.command("SELECT", 1), "SELECT");
    co_await expect_refused(c.command("MONITOR"), "MONITOR");
    co_await expect_refused(c.command("CLIENT", "reply", "OFF"), "CLIENT REPLY");
    co_await expect_refused(c.command("BLPOP", key("l"), 1), "BLPOP");
    co_await expect_refused(
        c.command("XREADGROUP", "GROUP", "g", "c", "block", 10, "STREAMS", key("s"), ">"),
        "XREADGROUP BLOCK");
    ts::redis::Request req;
    EXPECT_THROW(req.push("MONITOR"), ts::Error);
    EXPECT_THROW(req.push(nothing), ts::Error);
    EXPECT_TRUE(req.empty());
    // Nothing of the refused commands reached the connection: replies still match.
    for (int i = 0; i < 3; ++i) {
      const std::string token = "t" + std::to_string(i);
      EXPECT_EQ((co_await c.command("ECHO", token)).as_string(), token);
    }
    EXPECT_EQ(c.stats().in_flight, 0u);
  });
}

TEST_F(RedisClientTest, CancelledStartLeavesAConsistentState) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::redis::RedisConfig config;
    config.url = "redis://127.0.0.1:1";  // nothing listens: start() keeps retrying
    config.startup_timeout = 10s;
    config.connect_timeout = 200ms;
    RedisClient client(io.get_executor(), config);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      co_await ts::core::with_timeout(client.start(), 150ms);
      ADD_FAILURE() << "start() succeeded";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::timeout)) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
    // The client is not stuck in "starting": close() returns at once, start() then refuses.
    const auto t1 = std::chrono::steady_clock::now();
    co_await client.close();
    EXPECT_LT(std::chrono::steady_clock::now() - t1, 1s);
    try {
      co_await client.start();
      ADD_FAILURE() << "start() after close() succeeded";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::client_closed));
    }
  });
}

TEST_F(RedisClientTest, StartFailsClearlyWhenNothingListens) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::redis::RedisConfig config;
    config.url = "redis://127.0.0.1:1";  // nothing listens on port 1
    config.startup_timeout = 300ms;
    RedisClient client(io.get_executor(), config);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      co_await client.start();
      ADD_FAILURE() << "start() succeeded";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::startup_timeout)) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
    co_await client.close();
  });
}

}  // namespace

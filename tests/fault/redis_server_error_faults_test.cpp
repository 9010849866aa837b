// Fault tests of docs/failure-modes.md for RedisClient when the server answers with an error:
// F25 (WRONGPASS, NOAUTH, OOM under noeviction, READONLY replica, WRONGTYPE, produced by ACL,
// requirepass, maxmemory and REPLICAOF): fail fast as permanent, OOM and READONLY classed apart.
// Helpers: redis_fault_fixture.hpp.

#include "redis_fault_fixture.hpp"

using namespace redis_fault_test;

namespace {

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

}  // namespace

// Fault tests of docs/failure-modes.md for RedisClient against a slow or silent server: F19
// (CLIENT PAUSE and DEBUG SLEEP: per-command timeout, no desynchronisation), F20 (a server frozen
// by SIGSTOP, a half-open connection through the fault proxy's black hole: health check,
// breaker, recovery) and F22 (XREADGROUP BLOCK longer than the command timeout is no timeout).
// Helpers: redis_fault_fixture.hpp. The binary's Redis options are set here (once per binary).

#include "redis_fault_fixture.hpp"

using namespace redis_fault_test;

namespace {

// The binary's Redis gets two extra settings (before anything starts it):
// - DEBUG is refused by default since Redis 7; F19 needs DEBUG SLEEP from loopback.
// - Redis answers clients while it loads its data only between chunks of this many bytes
//   (default 2 MiB): F21 needs LOADING replies from a small data set.
[[maybe_unused]] const bool kServerOptionsSet = [] {
  ts::testing::ServerOptions options;
  options.redis_conf = {"enable-debug-command local", "loading-process-events-interval-bytes 1024"};
  Servers::set_options(std::move(options));
  return true;
}();

// ---- F19 -------------------------------------------------------------------------------------

// CLIENT PAUSE: requests written to a paused server time out at their own deadline
// (request_timeout, outcome_unknown) instead of hanging; once the pause ends their replies are
// read and dropped, and the same connection serves correct replies (no desynchronisation).
TEST(RedisFault, F19_ClientPauseTimesOutWithoutDesync) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_db(0), "f19-pause");
  config.command_timeout = 300ms;  // health_check_timeout stays 3 s: longer than the pause
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f19:k", "before"));
        const auto s0 = client.stats();

        admin.ok({"CLIENT", "PAUSE", "1200", "ALL"});
        const auto t0 = Clock::now();
        // Three requests written together to the paused server.
        auto set = client.set("f19:k", "during");
        auto get = client.get("f19:k");
        auto echo = client.command("ECHO", "f19:during");
        std::vector<Outcome> outcomes;
        outcomes.push_back(co_await outcome(std::move(set)));
        outcomes.push_back(co_await outcome(std::move(get)));
        outcomes.push_back(co_await outcome(std::move(echo)));
        const auto all_failed_after = elapsed_ms(t0);
        // Read before anything else can run on the loop: no reply of the three has come yet.
        const auto dropped_at_failure = client.stats().dropped_replies;
        for (const auto& o : outcomes) {
          EXPECT_TRUE(o.failed) << describe(o);
          EXPECT_EQ(o.code, ts::make_error_code(errc::request_timeout)) << describe(o);
          EXPECT_EQ(o.kind, ErrorKind::outcome_unknown) << describe(o);
        }
        // The per-command timeout held: all three failed at their own deadline (not before)
        // and while the server was still paused, before any reply came (an order, not a wall
        // time, so that a loaded machine cannot fail it). Waiting the pause out would be
        // >= 1200 ms and would find the replies.
        EXPECT_GE(all_failed_after, 290ms);
        EXPECT_LT(all_failed_after, 1200ms) << "the per-command timeout did not hold";
        EXPECT_EQ(dropped_at_failure, s0.dropped_replies)
            << "the calls failed only after the paused server answered";

        // After the pause their replies arrive and are dropped, in order.
        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().dropped_replies >= s0.dropped_replies + 3; }, 3s))
            << "dropped replies: " << client.stats().dropped_replies;
        // The SET ran when the pause ended (it had been sent); the next replies are our own.
        const auto value = co_await client.get("f19:k");
        EXPECT_EQ(value.value_or("nil"), "during");
        for (int i = 0; i < 20; ++i) {
          const std::string token = "f19:after:" + std::to_string(i);
          const Reply r = co_await client.command("ECHO", token);
          EXPECT_EQ(r.as_string(), token);
        }
        const auto s = client.stats();
        EXPECT_EQ(s.disconnects, s0.disconnects) << "the connection was replaced";
        EXPECT_GE(s.timeouts, s0.timeouts + 3);
        co_await client.close();
      });
  expect_redis_healthy();
}

// DEBUG SLEEP on the client's own connection: the sleeping command and the one queued behind
// it time out at their deadline; their replies are dropped when the server wakes up, and the
// following replies are correct.
TEST(RedisFault, F19_DebugSleepTimesOutWithoutDesync) {
  TS_SKIP_IF_EXTERNAL();
  auto config = fast_config(redis_url_for_db(0), "f19-sleep");
  config.command_timeout = 300ms;
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f19:sleep", "v1"));
        const auto s0 = client.stats();
        const auto t0 = Clock::now();
        auto sleep = client.command("DEBUG", "SLEEP", "1");
        auto set = client.set("f19:sleep", "v2");
        const Outcome o1 = co_await outcome(std::move(sleep));
        const Outcome o2 = co_await outcome(std::move(set));
        const auto elapsed = elapsed_ms(t0);
        const auto dropped_at_failure = client.stats().dropped_replies;
        EXPECT_EQ(o1.code, ts::make_error_code(errc::request_timeout))
            << describe(o1) << " (is DEBUG enabled? the binary sets enable-debug-command local)";
        EXPECT_EQ(o2.code, ts::make_error_code(errc::request_timeout)) << describe(o2);
        EXPECT_EQ(o2.kind, ErrorKind::outcome_unknown) << describe(o2);
        // At their deadline, and before the sleeping server answered (see F19 CLIENT PAUSE).
        EXPECT_GE(elapsed, 290ms);
        EXPECT_LT(elapsed, 1000ms) << "the per-command timeout did not hold";
        EXPECT_EQ(dropped_at_failure, s0.dropped_replies)
            << "the calls failed only after the sleeping server answered";

        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().dropped_replies >= s0.dropped_replies + 2; }, 3s));
        EXPECT_EQ((co_await client.get("f19:sleep")).value_or("nil"), "v2");
        for (int i = 0; i < 20; ++i) {
          const std::string token = "f19:woke:" + std::to_string(i);
          EXPECT_EQ((co_await client.command("ECHO", token)).as_string(), token);
        }
        EXPECT_EQ(client.stats().disconnects, s0.disconnects);
        co_await client.close();
      });
  expect_redis_healthy();
}

// ---- F20 -------------------------------------------------------------------------------------

RedisConfig f20_config(std::string url, std::string name) {
  auto c = fast_config(std::move(url), std::move(name));
  c.command_timeout = 300ms;
  c.connect_timeout = 300ms;
  c.health_check_interval = 200ms;
  c.health_check_timeout = 600ms;
  c.reconnect_backoff = {20ms, 200ms, 2.0};
  c.breaker.window_size = 10;
  c.breaker.min_calls = 4;
  c.breaker.failure_rate_threshold = 0.5;
  c.breaker.open_backoff = {1000ms, 2000ms, 2.0};  // first open period in [0.5 s, 1 s]
  c.breaker.half_open_probes = 1;
  return c;
}

/// The part of F20 common to a frozen server and a half-open connection: `freeze()` was just
/// called. The in-flight call fails at its deadline, the health check declares the idle
/// connection dead, calls keep failing within their deadline until the breaker opens, then fail
/// at once; after `thaw()` the client recovers by itself.
asio::awaitable<void> frozen_scenario(RedisClient& client, RedisAdmin& admin,
                                      const std::function<void()>& freeze,
                                      const std::function<void()>& thaw) {
  const auto s0 = client.stats();
  freeze();
  // A call written to the frozen peer: its own deadline, outcome unknown.
  const Outcome in_flight = co_await outcome([&] { return client.ping(); });
  EXPECT_EQ(in_flight.code, ts::make_error_code(errc::request_timeout)) << describe(in_flight);
  EXPECT_EQ(in_flight.kind, ErrorKind::outcome_unknown) << describe(in_flight);
  EXPECT_LE(in_flight.elapsed, 550ms) << describe(in_flight);

  // The health check notices that nothing comes back and drops the connection.
  const auto t_detect = Clock::now();
  EXPECT_TRUE(co_await eventually([&] { return client.stats().disconnects > s0.disconnects; }, 3s))
      << "the health check never declared the connection dead";
  EXPECT_LE(elapsed_ms(t_detect), 1500ms);

  // Calls keep failing, each within its deadline, until the breaker opens.
  int failures = 0;
  for (int i = 0; i < 10 && client.stats().breaker != CircuitState::open; ++i) {
    const Outcome o = co_await outcome([&] { return client.ping(); });
    EXPECT_TRUE(o.failed) << "a call succeeded against a frozen server";
    EXPECT_LE(o.elapsed, 550ms) << describe(o);
    EXPECT_NE(o.kind, ErrorKind::permanent) << describe(o);
    ++failures;
  }
  EXPECT_EQ(client.stats().breaker, CircuitState::open)
      << "breaker " << state_name(client.stats().breaker) << " after " << failures
      << " failed calls";
  // Open: calls fail fast.
  const Outcome rejected = co_await outcome([&] { return client.ping(); });
  EXPECT_EQ(rejected.code, ts::make_error_code(errc::circuit_open)) << describe(rejected);
  EXPECT_LE(rejected.elapsed, 50ms) << describe(rejected);

  // Recovery once the peer is back: the breaker lets a probe through, the client reconnects.
  thaw();
  const auto t_thaw = Clock::now();
  const bool recovered = co_await eventually_async(
      [&]() -> asio::awaitable<bool> {
        co_return !(co_await outcome([&] { return client.ping(); })).failed;
      },
      8s, 50ms);
  EXPECT_TRUE(recovered) << "no recovery; breaker " << state_name(client.stats().breaker);
  std::printf("[ F20 ] %s: recovered %lld ms after the fault was lifted\n",
              client.client_name().c_str(), static_cast<long long>(elapsed_ms(t_thaw).count()));
  if (recovered) {
    EXPECT_EQ(client.stats().breaker, CircuitState::closed);
    EXPECT_TRUE(client.stats().connected);
    const Reply r = co_await client.command("ECHO", "f20:back");
    EXPECT_EQ(r.as_string(), "f20:back");
  }
  // The connections abandoned while the peer was frozen do not linger on the server.
  const std::string name = client.client_name();
  EXPECT_TRUE(co_await eventually([&] { return admin.count_clients(name) == 1; }, 5s, 20ms))
      << admin.count_clients(name) << " server connections named " << name;
}

// SIGSTOP: the server process is frozen with its sockets open.
TEST(RedisFault, F20_FrozenServerDetectedBreakerOpensAndRecovers) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  RedisAdmin admin;
  const auto config = f20_config(redis_url_for_db(0), "f20-frozen");
  bool paused = false;
  ScopeExit resume([&] {
    if (paused) redis.resume();
  });
  run_with_client(config, 30s,
                  [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
                    co_await client.ping();
                    co_await frozen_scenario(
                        client, admin,
                        [&] {
                          redis.pause();
                          paused = true;
                        },
                        [&] {
                          redis.resume();
                          paused = false;
                        });
                    co_await client.close();
                  });
  if (paused) {
    redis.resume();
    paused = false;
  }
  expect_redis_healthy();
}

// Half-open TCP: the proxy keeps both sockets open and forwards nothing, in either direction.
TEST(RedisFault, F20_HalfOpenConnectionDetectedBreakerOpensAndRecovers) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().redis_port());
  proxy.start();
  ScopeExit clear([&] { proxy.clear_faults(); });
  RedisAdmin admin;
  const auto config = f20_config(redis_url_for_port(proxy.port()), "f20-halfopen");
  run_with_client(
      config, 30s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        co_await client.ping();
        co_await frozen_scenario(
            client, admin, [&] { proxy.set_blackhole(true); },
            [&] {
              proxy.set_blackhole(false);
              proxy.cut_all();  // the black-holed connections (the server still has them)
            });
        co_await client.close();
      });
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

}  // namespace

// Fault tests of docs/failure-modes.md for RedisClient when its connection is lost: F21 (CLIENT
// KILL, a server restart, a restart that LOADs its data slowly: background reconnect, only
// in-flight calls fail), F23 (create/close cycles and a thousand CLIENT KILLs leak no descriptor
// or server connection) and F24 (a pipelined XADD cut mid-batch by the fault proxy, then
// retried: no duplicate effect). Helpers: redis_fault_fixture.hpp.

#include "redis_fault_fixture.hpp"

using namespace redis_fault_test;

namespace {

// ---- F21 -------------------------------------------------------------------------------------

/// Callers that keep issuing commands (SET of an own key, then GET of it) until told to stop,
/// recording what failed and how.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<bool> marked{false};  ///< set by the test: count successes issued after it.
  std::uint64_t ok = 0;
  std::uint64_t ok_after_mark = 0;
  std::uint64_t mismatches = 0;
  std::map<std::string, std::uint64_t> errors;  ///< by error code message and kind.
  std::vector<std::string> samples;
  int running = 0;
  /// connection_lost failures of requests that cannot have been in flight at a disconnect:
  /// issued while the client knew it had no connection (they must wait for the reconnect),
  /// failed with no disconnect between their issue and their failure, or a second failure of
  /// the same caller at the same disconnect (a caller has one request outstanding at a time).
  std::uint64_t lost_outside_disconnect = 0;
  std::vector<std::string> outside_samples;

  std::uint64_t error_count() const {
    std::uint64_t n = 0;
    for (const auto& [what, count] : errors) n += count;
    return n;
  }
  /// Errors other than connection_lost (the requests in flight when the connection died).
  std::uint64_t unexpected_errors() const {
    std::uint64_t n = 0;
    for (const auto& [what, count] : errors) {
      if (what != ts::make_error_code(errc::connection_lost).message() + " / outcome_unknown") {
        n += count;
      }
    }
    return n;
  }
  /// connection_lost failures (outcome unknown): the requests in flight when a connection died.
  std::uint64_t lost() const {
    const auto it =
        errors.find(ts::make_error_code(errc::connection_lost).message() + " / outcome_unknown");
    return it == errors.end() ? 0 : it->second;
  }
  std::string report() const {
    std::string s = "ok " + std::to_string(ok) + " (after mark " + std::to_string(ok_after_mark) +
                    "), mismatches " + std::to_string(mismatches);
    for (const auto& [what, count] : errors) s += "\n  " + std::to_string(count) + " x " + what;
    for (const auto& x : samples) s += "\n  e.g. " + x;
    for (const auto& x : outside_samples) s += "\n  not in flight at a disconnect: " + x;
    return s;
  }

  asio::awaitable<void> caller(RedisClient& client, int id, std::string prefix) {
    ++running;
    const std::string key = prefix + std::to_string(id);
    std::uint64_t last_lost_at = std::numeric_limits<std::uint64_t>::max();
    for (int i = 0; !stop; ++i) {
      const bool after_mark = marked;
      const std::string token = key + ":" + std::to_string(i);
      bool failed = false;
      // The client's state when the request that may fail was issued.
      auto issued = client.stats();
      try {
        (void)co_await client.set(key, token);
        issued = client.stats();
        const auto value = co_await client.get(key);
        if (value != token) {
          ++mismatches;
        } else {
          ++ok;
          if (after_mark) ++ok_after_mark;
        }
      } catch (const ts::Error& e) {
        ++errors[e.code().message() + " / " + std::string(ts::to_string(e.kind()))];
        if (samples.size() < 5) samples.emplace_back(e.what());
        failed = true;
        if (e.code() == ts::make_error_code(errc::connection_lost)) {
          const auto now = client.stats();
          const bool again = now.disconnects == last_lost_at;
          last_lost_at = now.disconnects;
          if (!issued.connected || now.disconnects == issued.disconnects || again) {
            ++lost_outside_disconnect;
            if (outside_samples.size() < 3) {
              outside_samples.push_back(
                  std::string(e.what()) + " (issued " +
                  (issued.connected ? "connected" : "disconnected") + ", disconnects " +
                  std::to_string(issued.disconnects) + " -> " + std::to_string(now.disconnects) +
                  (again ? ", the caller's second at this disconnect" : "") + ")");
            }
          }
        }
      }
      // Do not spin on a client that fails at once (it must not, but the test must end).
      if (failed) co_await pause_for(5ms);
    }
    --running;
  }
};

// CLIENT KILL of the client's connection, five times, under load: the client notices, reconnects
// in the background (one new connection per kill: no storm), only requests in flight at the
// kill fail (connection_lost, outcome unknown), and requests issued after the loss was noticed
// succeed within their deadline.
TEST(RedisFault, F21_ClientKillReconnectsInBackground) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_db(0), "f21-kill");
  config.reconnect_backoff = RedisConfig{}.reconnect_backoff;  // 50 ms .. 2 s, full jitter
  // Kills in quick succession with 8 callers in flight would trip the default breaker (each
  // request lost counts as a failure); that effect has its own test below.
  tolerant_breaker(config);
  constexpr std::uint64_t kCallers = 8;
  run_with_client(
      config, 30s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        Load load;
        for (int c = 0; c < static_cast<int>(kCallers); ++c) {
          asio::co_spawn(io, load.caller(client, c, "f21:kill:"), asio::detached);
        }
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= 100; }, 5s));
        constexpr int kKills = 5;
        for (int k = 1; k <= kKills; ++k) {
          const auto before = client.stats();
          const auto lost_before = load.lost();
          EXPECT_EQ(admin.kill_clients("f21-kill"), 1u) << "kill " << k;
          EXPECT_TRUE(co_await eventually(
              [&] { return client.stats().disconnects > before.disconnects; }, 3s))
              << "kill " << k << " went unnoticed";
          // Issued after the loss was noticed: waits for the reconnect, then succeeds.
          const Outcome o =
              co_await outcome([&] { return client.set("f21:kill:after", std::to_string(k)); });
          EXPECT_FALSE(o.failed) << "kill " << k << ": " << describe(o);
          EXPECT_LE(o.elapsed, config.command_timeout);
          EXPECT_EQ((co_await client.get("f21:kill:after")).value_or("nil"), std::to_string(k));
          EXPECT_TRUE(
              co_await eventually([&] { return client.stats().connects > before.connects; }, 3s));
          // In flight when the client noticed the kill: at most one request per caller (the
          // requests in flight or queued at the kill, and those written to the dead socket
          // before the loss was read).
          EXPECT_LE(load.lost() - lost_before, kCallers)
              << "kill " << k << ": more requests failed with the connection than can have "
              << "been in flight when it was noticed: " << load.report();
        }
        const auto ok_before = load.ok;
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= ok_before + 100; }, 5s));
        load.stop = true;
        EXPECT_TRUE(co_await eventually([&] { return load.running == 0; }, 5s));

        EXPECT_EQ(load.mismatches, 0u) << load.report();
        EXPECT_EQ(load.unexpected_errors(), 0u)
            << "errors beyond the requests in flight at the kill reached callers: "
            << load.report();
        EXPECT_EQ(load.lost_outside_disconnect, 0u)
            << "requests that were not in flight at a disconnect failed: " << load.report();
        const auto s = client.stats();
        EXPECT_EQ(s.disconnects, static_cast<std::uint64_t>(kKills));
        EXPECT_EQ(s.connects, static_cast<std::uint64_t>(kKills + 1))
            << "one reconnect per kill expected (no storm)";
        EXPECT_EQ(s.connect_failures, 0u);
        EXPECT_EQ(admin.count_clients("f21-kill"), 1u);
        std::printf("[ F21 ] kills: %s\n", load.report().c_str());
        co_await client.close();
      });
}

// One CLIENT KILL while 12 requests are in flight (SETs held by CLIENT PAUSE WRITE), with the
// default breaker and a history of successful calls: the 12 fail as connection_lost, the
// client reconnects, and a request issued after the loss was noticed must succeed. A single
// connection loss is one event: it must not open the breaker and fail the calls that follow
// with circuit_open ("no errors leak to callers beyond in-flight ones").
TEST(RedisFault, F21_KillWithManyInFlightDoesNotFailLaterCalls) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  const auto config = fast_config(redis_url_for_db(0), "f21-inflight");  // default breaker
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        for (int i = 0; i < 50; ++i) co_await client.ping();  // a healthy history
        bool paused = true;
        admin.ok({"CLIENT", "PAUSE", "3000", "WRITE"});
        ScopeExit unpause([&] {
          if (paused) admin.ok({"CLIENT", "UNPAUSE"});
        });
        std::vector<asio::awaitable<bool>> writes;
        for (int i = 0; i < 12; ++i) {
          writes.push_back(client.set("f21:inflight:" + std::to_string(i), "v"));
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == 12; }, 2s));
        EXPECT_TRUE(co_await eventually(
            [&] {
              for (auto& c : admin.clients_named("f21-inflight")) {
                if (c["cmd"] == "set") return true;
              }
              return false;
            },
            2s))
            << "the SETs never reached the paused server";
        EXPECT_EQ(admin.kill_clients("f21-inflight"), 1u);
        admin.ok({"CLIENT", "UNPAUSE"});
        paused = false;
        for (auto& write : writes) {
          const Outcome o = co_await outcome(std::move(write));
          EXPECT_EQ(o.code, ts::make_error_code(errc::connection_lost)) << describe(o);
          EXPECT_EQ(o.kind, ErrorKind::outcome_unknown) << describe(o);
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().disconnects == 1; }, 2s));
        const Outcome after =
            co_await outcome([&] { return client.set("f21:inflight:after", "v"); });
        EXPECT_FALSE(after.failed)
            << "a call issued after the reconnect failed: " << describe(after);
        EXPECT_EQ(client.stats().breaker, CircuitState::closed)
            << "one connection loss with 12 requests in flight opened the breaker";
        const bool served = co_await eventually_async(
            [&]() -> asio::awaitable<bool> {
              co_return !(co_await outcome([&] { return client.ping(); })).failed;
            },
            5s, 50ms);
        EXPECT_TRUE(served);
      });
}

// Server restart (SIGTERM, start again on the same port) under load, the client running on
// its own thread while the main thread restarts the server: in-flight requests fail as
// connection_lost, requests issued while the server is down wait and succeed, the client
// reconnects by itself with backoff (a bounded number of attempts: no storm).
TEST(RedisFault, F21_ServerRestartReconnectsInBackground) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  auto config = fast_config(redis_url_for_db(0), "f21-restart");
  config.command_timeout = 8s;  // longer than the restart: nothing issued meanwhile may fail
  tolerant_breaker(config);     // as in F21_ClientKillReconnectsInBackground
  std::atomic<bool> ready{false};
  std::atomic<bool> restarted{false};
  ts::testing::fault::QuietRedisLog quiet;
  constexpr std::uint64_t kCallers = 8;
  BackgroundLoop loop(
      40s,
      with_client(config, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        Load load;
        for (int c = 0; c < static_cast<int>(kCallers); ++c) {
          asio::co_spawn(io, load.caller(client, c, "f21:restart:"), asio::detached);
        }
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= 100; }, 5s));
        ready = true;
        EXPECT_TRUE(co_await eventually([&] { return restarted.load(); }, 30s, 10ms));
        load.marked = true;
        EXPECT_TRUE(co_await eventually([&] { return load.ok_after_mark >= 100; }, 10s))
            << load.report();
        load.stop = true;
        EXPECT_TRUE(co_await eventually([&] { return load.running == 0; }, 10s));
        EXPECT_EQ(load.mismatches, 0u) << load.report();
        EXPECT_EQ(load.unexpected_errors(), 0u)
            << "errors beyond the requests in flight at the restart reached callers: "
            << load.report();
        const auto s = client.stats();
        EXPECT_GE(s.disconnects, 1u);
        // The restart runs on another thread, so the in-flight count at the disconnect cannot
        // be read at that instant; but each caller has at most one request outstanding, so at
        // most kCallers requests are in flight at any disconnect.
        EXPECT_LE(load.lost(), kCallers * s.disconnects)
            << "connection_lost failures beyond the requests in flight at the " << s.disconnects
            << " disconnect(s): " << load.report();
        EXPECT_EQ(load.lost_outside_disconnect, 0u)
            << "requests that were not in flight at a disconnect failed: " << load.report();
        EXPECT_EQ(s.connects, s.disconnects + 1);
        // A restart of well under 2 s with backoff 10 ms .. 200 ms: a few dozen attempts at
        // most, never a tight loop.
        EXPECT_LE(s.connect_failures, 40u) << "reconnect storm";
        std::printf("[ F21 ] restart: %s; %llu failed reconnect attempts\n", load.report().c_str(),
                    static_cast<unsigned long long>(s.connect_failures));
        co_await client.close();
      }));
  const bool became_ready =
      ts::testing::poll_until([&] { return ready.load() || loop.done(); }, 10s);
  EXPECT_TRUE(became_ready && ready.load());
  const auto t0 = Clock::now();
  if (ready) redis.restart();
  const auto restart_ms = elapsed_ms(t0);
  restarted = true;
  loop.join();
  std::printf("[ F21 ] the restart took %lld ms\n", static_cast<long long>(restart_ms.count()));
  expect_redis_healthy();
}

// Restart while the server LOADs its data (RDB with key-load-delay, answering LOADING in
// between): the client's handshake PING gets LOADING, so the new connection is not used; the
// client retries with backoff and commands issued during the load wait and then succeed with
// the loaded data. LOADING never reaches a caller.
TEST(RedisFault, F21_LoadingIsTransient) {
  TS_SKIP_IF_EXTERNAL();
  constexpr std::uint32_t kDb = 6;
  constexpr int kKeys = 1000;
  ServerProcess& redis = servers().redis();
  RedisAdmin admin;
  RedisAdmin admin_db(kDb);
  const std::string dump = admin.config_get("dir") + "/" + admin.config_get("dbfilename");
  ScopeExit restore([&] {
    // key-load-delay must not slow later restarts; the dump must not come back either.
    admin.config_set("key-load-delay", "0");
    admin.ok({"CONFIG", "REWRITE"});
    admin_db.ok({"FLUSHDB"});
    std::filesystem::remove(dump);
  });
  admin_db.ok({"FLUSHDB"});
  for (int i = 0; i < kKeys; ++i) {
    admin_db.ok({"SET", "f21:load:" + std::to_string(i), "v" + std::to_string(i)});
  }
  // ~1.5 ms per key: the load takes 1.5 s or more. REWRITE: the setting must survive the
  // restart (the harness writes its config only once).
  admin.config_set("key-load-delay", "1500");
  admin.ok({"CONFIG", "REWRITE"});
  admin.ok({"SAVE"});

  auto config = fast_config(redis_url_for_db(kDb), "f21-loading");
  config.command_timeout = 10s;  // longer than restart + load
  config.reconnect_backoff = {20ms, 200ms, 2.0};
  std::atomic<bool> ready{false};
  std::atomic<bool> restarted{false};
  // When the probe saw LOADING first and PONG afterwards (steady clock ns since epoch).
  std::atomic<std::int64_t> loading_since{0};
  std::atomic<std::int64_t> loading_until{0};
  struct Get {
    Clock::time_point issued;
    Outcome result;
    bool correct = false;
    // The client's own view when the GET was issued and when it ended: a GET can only have
    // been in flight at a disconnect if it was issued on a connection and a disconnect came
    // before its end.
    bool issued_connected = false;
    std::uint64_t disconnects_at_issue = 0;
    std::uint64_t disconnects_at_end = 0;
  };
  std::vector<Get> gets;  // touched by the loop thread only until it is joined
  LogCapture logs("redis");
  BackgroundLoop loop(
      60s,
      with_client(config, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_EQ((co_await client.get("f21:load:7")).value_or("nil"), "v7");
        ready = true;
        // A GET every 20 ms until the server is back and one issued after it succeeded, each
        // with its own coroutine (they overlap while the server is away).
        int spawned = 0;
        int done = 0;
        std::mt19937 rng(21);
        std::uniform_int_distribution<int> key_of(0, kKeys - 1);
        std::optional<std::size_t> first_after_restart;
        const auto t_start = Clock::now();
        for (;;) {
          if (restarted && !first_after_restart) first_after_restart = gets.size();
          // Done once a GET issued after the restart completed and nothing is outstanding.
          if (first_after_restart && gets.size() > *first_after_restart && done == spawned) break;
          if (Clock::now() - t_start > 25s) break;  // the checks below fail
          const int k = key_of(rng);
          const auto at_issue = client.stats();
          gets.push_back({Clock::now(), {}, false, at_issue.connected, at_issue.disconnects, 0});
          const std::size_t index = gets.size() - 1;
          ++spawned;
          asio::co_spawn(
              io,
              [&, k, index]() -> asio::awaitable<void> {
                const auto start = Clock::now();
                std::exception_ptr error;
                std::optional<std::string> value;
                try {
                  value = co_await client.get("f21:load:" + std::to_string(k));
                } catch (...) {
                  error = std::current_exception();
                }
                gets[index].result = ts::testing::outcome_of(error, start);
                gets[index].correct = !error && value == "v" + std::to_string(k);
                gets[index].disconnects_at_end = client.stats().disconnects;
                ++done;
              },
              asio::detached);
          co_await pause_for(20ms);
        }
        EXPECT_TRUE(co_await eventually([&] { return done == spawned; }, 15s));
        const auto s = client.stats();
        EXPECT_GE(s.disconnects, 1u);
        EXPECT_GE(s.connect_failures, 1u) << "the client never met the loading server";
        co_await client.close();
      }));
  const bool became_ready =
      ts::testing::poll_until([&] { return ready.load() || loop.done(); }, 10s);
  EXPECT_TRUE(became_ready && ready.load());
  // An independent probe records when the server answered LOADING.
  std::atomic<bool> probing{true};
  std::thread probe([&] {
    while (probing) {
      try {
        RedisAdmin p(0, 200ms);
        const AdminReply r = p.run({"PING"});
        const auto now = Clock::now().time_since_epoch().count();
        if (r.is_error() && r.str.rfind("LOADING", 0) == 0) {
          std::int64_t expected = 0;
          loading_since.compare_exchange_strong(expected, now);
        } else if (r.str == "PONG" && loading_since != 0 && loading_until == 0) {
          loading_until = now;
        }
      } catch (const std::exception&) {
        // down or busy: try again
      }
      std::this_thread::sleep_for(10ms);  // probe pacing, not a wait for a condition
    }
  });
  const auto t0 = Clock::now();
  if (ready) redis.restart();
  const auto restart_ms = elapsed_ms(t0);
  restarted = true;
  loop.join();
  probing = false;
  probe.join();

  // The fault really happened: the server was loading for a while.
  ASSERT_NE(loading_since.load(), 0)
      << "the probe never saw LOADING: the scenario was not produced";
  EXPECT_GE(restart_ms, 1000ms) << "the load was too short to matter";
  EXPECT_GE(logs.count("LOADING"), 1u) << "the client never logged a LOADING handshake";
  std::size_t during_load = 0;
  std::size_t failed = 0;
  std::size_t unexpected = 0;
  std::size_t not_in_flight = 0;  // failed, but not in flight at a disconnect
  std::string first_failure;
  const Clock::time_point since{Clock::duration(loading_since.load())};
  const Clock::time_point until{Clock::duration(loading_until.load())};
  for (const auto& g : gets) {
    if (g.result.failed) {
      ++failed;
      if (g.result.code != ts::make_error_code(errc::connection_lost)) {
        ++unexpected;
        if (first_failure.empty()) first_failure = describe(g.result);
      } else if (!g.issued_connected || g.disconnects_at_end == g.disconnects_at_issue) {
        ++not_in_flight;
        if (first_failure.empty()) {
          first_failure = describe(g.result) + " (issued " +
                          (g.issued_connected ? "on a connection" : "while disconnected") +
                          ", disconnects " + std::to_string(g.disconnects_at_issue) + " -> " +
                          std::to_string(g.disconnects_at_end) + ")";
        }
      }
      continue;
    }
    EXPECT_TRUE(g.correct) << "a GET returned the wrong value";
    if (loading_until != 0 && g.issued >= since && g.issued <= until) ++during_load;
  }
  EXPECT_EQ(unexpected, 0u) << "an error other than connection_lost reached a caller: "
                            << first_failure;
  // connection_lost is allowed only for a GET in flight at a disconnect: issued on a
  // connection, ended by a disconnect. GETs issued while the server was away or loading wait.
  EXPECT_EQ(not_in_flight, 0u) << not_in_flight << " of " << failed
                               << " connection_lost failures were not in flight at a "
                                  "disconnect: "
                               << first_failure;
  // One GET is issued every 20 ms and a GET takes well under that: only the GETs outstanding
  // at the loss can fail, a handful at most, not the GETs of the whole outage.
  EXPECT_LE(failed, 3u) << "more GETs failed than can have been in flight at the restart";
  EXPECT_GE(during_load, 5u) << "commands issued while the server was loading must succeed";
  std::printf(
      "[ F21 ] loading: restart took %lld ms, %zu GETs (%zu issued during the load, %zu "
      "failed in flight)\n",
      static_cast<long long>(restart_ms.count()), gets.size(), during_load, failed);
  expect_redis_healthy();
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

}  // namespace

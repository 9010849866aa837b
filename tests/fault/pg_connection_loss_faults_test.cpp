// Fault tests of docs/failure-modes.md for PostgresClient when the server or its connections go
// away, injected for real on loopback: F01 (nothing listens, a silent listener, the server back
// during start), F02 (57P03 from a smart shutdown, then SIGKILL and crash recovery), F03 (idle
// pooled connections killed by pg_terminate_backend), F04 (backend killed mid-transaction), F05
// (the reply to COMMIT cut by the fault proxy), F06 (server frozen by SIGSTOP) and F15 (the
// server's idle_session_timeout, 57P05). Helpers: pg_fault_fixture.hpp.

#include "pg_fault_fixture.hpp"

using namespace pg_fault_test;

namespace {

// ---- F01 -------------------------------------------------------------------------------------

// Nothing listens on the port: start() retries with backoff until startup_timeout, then fails
// with startup_timeout naming host:port and never the password.
TEST(PgFault, F01_server_down_at_start) {
  TS_SKIP_IF_EXTERNAL();
  const std::uint16_t port = ts::testing::free_loopback_port();
  auto config = fast_config(dsn_for_port(port, "postgres") + " password=secret123", "f01");
  config.startup_timeout = 1500ms;
  config.connect_timeout = 500ms;
  config.reconnect_backoff = ts::pg::PostgresConfig{}.reconnect_backoff;  // 100 ms, x2, 5 s
  LogCapture logs("pg");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        const Outcome o = co_await outcome(client.start());
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.code, ts::make_error_code(errc::startup_timeout)) << describe(o);
        EXPECT_EQ(kind_name(o), "transient_not_sent") << describe(o);
        EXPECT_NE(o.what.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << o.what;
        EXPECT_EQ(o.what.find("secret123"), std::string::npos) << o.what;
        // Retried until the deadline, not given up early, not hung past it.
        EXPECT_GE(o.elapsed, config.startup_timeout - 50ms)
            << "start() gave up before its startup_timeout: " << describe(o);
        EXPECT_LE(o.elapsed, config.startup_timeout + 700ms) << describe(o);
        const auto s = client.stats();
        EXPECT_GE(s.connect_failures, 3u) << "start() must retry with backoff";
        EXPECT_EQ(s.connects, 0u);
        EXPECT_EQ(s.connections, 0u);
        co_await client.close();
      },
      20s);
  EXPECT_GE(logs.count("start-up attempt"), 2u);
  EXPECT_EQ(logs.count("secret123"), 0u) << "the password reached the logger";
}

// The server accepts TCP connections and never answers (a black hole: the "endless connect
// hang" of F01). With the default connect_timeout (5 s) longer than startup_timeout, start()
// must still give up at its own deadline.
TEST(PgFault, F01_server_hangs_at_start) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  proxy.set_blackhole(true);
  auto config = fast_config(dsn_for_port(proxy.port(), "postgres"), "f01h");
  config.startup_timeout = 1500ms;
  config.connect_timeout = ts::pg::PostgresConfig{}.connect_timeout;  // 5 s
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        const Outcome o = co_await outcome(client.start());
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.code, ts::make_error_code(errc::startup_timeout)) << describe(o);
        EXPECT_EQ(kind_name(o), "transient_not_sent") << describe(o);
        EXPECT_LE(o.elapsed, config.startup_timeout + 700ms)
            << "start() overran its startup_timeout: " << describe(o);
        EXPECT_GE(proxy.connections_accepted(), 1u);
        co_await client.close();
      },
      20s);
  EXPECT_TRUE(ts::testing::poll_until([&] { return proxy.active_connections() == 0; }, 5s))
      << "the client left a connection open";
}

// The server is down when start() begins (a listener that is stopped: connections refused) and
// comes back while start() retries: start() succeeds and fills the pool.
TEST(PgFault, F01_server_back_during_start) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  proxy.stop();  // its port now refuses connections, as a server that is down
  auto config = fast_config(dsn_for_port(proxy.port()), "f01b");
  config.min_size = 2;
  config.startup_timeout = 10s;
  config.reconnect_backoff = {50ms, 200ms, 2.0};
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        bool back = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              co_await eventually([&] { return client.stats().connect_failures >= 3; }, 5s);
              proxy.start();  // the server is back
              back = true;
            },
            asio::detached);
        const Outcome o = co_await outcome(client.start());
        EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_TRUE(back);
        EXPECT_LT(o.elapsed, 5s) << describe(o);
        const auto s = client.stats();
        EXPECT_GE(s.connect_failures, 3u);
        EXPECT_EQ(s.connects, 2u);
        EXPECT_EQ(s.connections, 2u);
        if (!o.failed) {
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 42::int8"), 42);
        }
        co_await client.close();
      },
      20s);
}

// ---- F02 -------------------------------------------------------------------------------------

// A real 57P03: PostgreSQL in smart shutdown (SIGTERM while a session is open) refuses new
// connections with "the database system is shutting down" (57P03, as during start-up and
// recovery). start() must treat it as transient and keep retrying; then PostgreSQL crashes
// (SIGKILL) and restarts with crash recovery, and start() succeeds across all of it.
TEST(PgFault, F02_server_recovering_is_transient) {
  TS_SKIP_IF_EXTERNAL();
  for (const char* message :
       {"the database system is starting up", "the database system is in recovery mode",
        "the database system is shutting down",
        "the database system is not yet accepting connections"}) {
    EXPECT_EQ(ts::pg::sqlstate_of_connect_message(message), ts::pg::sqlstate::cannot_connect_now)
        << message;
    EXPECT_EQ(ts::pg::classify_sqlstate(ts::pg::sqlstate::cannot_connect_now, message,
                                        ts::RequestState::not_sent),
              ErrorKind::transient_unavailable)
        << message;
  }
  servers().create_database(kDatabase);
  ServerProcess& pg = servers().postgres();
  const std::string direct_dsn = servers().postgres_dsn();
  // The client connects through a proxy only to count its attempts from this thread.
  FaultProxy proxy("127.0.0.1", pg.port());
  proxy.start();

  struct WorkerResult {
    bool started = false;
    std::string error;
    milliseconds elapsed{0};
    std::int64_t value = 0;
    std::uint64_t connect_failures = 0;
    std::uint64_t connects = 0;
  } result;
  std::atomic<bool> finished{false};
  std::thread worker;
  ScopeExit join([&] {  // destroyed last: after PostgreSQL is back
    if (worker.joinable()) worker.join();
  });
  bool disturbed = false;
  // Restarts PostgreSQL (SIGKILL, start) when the test leaves it disturbed; destroyed first.
  ScopeExit restore([&] {
    if (disturbed || !pg.running()) {
      pg.kill();
      pg.start();
    }
  });
  LogCapture logs("pg");

  std::unique_ptr<PGconn, decltype(&PQfinish)> holder(PQconnectdb(direct_dsn.c_str()), &PQfinish);
  ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK);
  disturbed = true;
  ASSERT_EQ(::kill(pg.pid(), SIGTERM), 0);  // smart shutdown: waits for the holder's session
  std::string refusal;
  EXPECT_TRUE(ts::testing::poll_until(
      [&] {
        PGconn* probe = PQconnectdb(direct_dsn.c_str());
        const bool refused = PQstatus(probe) != CONNECTION_OK;
        refusal = PQerrorMessage(probe);
        PQfinish(probe);
        return refused && refusal.find("shutting down") != std::string::npos;
      },
      5s))
      << "no 57P03 from the server: " << refusal;

  auto config = fast_config(dsn_for_port(proxy.port()), "f02");
  config.startup_timeout = 20s;
  config.reconnect_backoff = {50ms, 250ms, 2.0};
  const auto started_at = Clock::now();
  worker = std::thread([&] {
    asio::io_context io;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          try {
            co_await client.start();
            result.started = true;
            result.elapsed = elapsed_ms(started_at);
            result.value = co_await client.query_value<std::int64_t>("SELECT 42::int8");
          } catch (const std::exception& e) {
            result.error = e.what();
            result.elapsed = elapsed_ms(started_at);
          }
          const auto s = client.stats();
          result.connect_failures = s.connect_failures;
          result.connects = s.connects;
          co_await client.close();
        },
        [&](std::exception_ptr) { finished = true; });
    io.run_for(40s);
  });

  // While every attempt gets 57P03, start() keeps retrying.
  EXPECT_TRUE(ts::testing::poll_until([&] { return proxy.connections_accepted() >= 4; }, 10s))
      << proxy.connections_accepted() << " connection attempts";
  EXPECT_FALSE(finished.load()) << "start() gave up while the server answered 57P03";
  // Crash, then start with crash recovery; the client is still in start().
  pg.kill();
  holder.reset();
  pg.start();
  disturbed = false;
  worker.join();

  EXPECT_TRUE(result.started) << result.error;
  EXPECT_EQ(result.value, 42);
  EXPECT_GE(result.connect_failures, 4u);
  EXPECT_GE(result.connects, 1u);
  EXPECT_LT(result.elapsed, 20s);
  EXPECT_GE(logs.count("shutting down"), 3u) << "the client never saw a 57P03";
  expect_servers_healthy();
}

// ---- F03 -------------------------------------------------------------------------------------

// Idle pooled connections killed by pg_terminate_backend: detected without a caller, replaced,
// the pool back to full size; a read issued right after the kill (before the client could
// notice) is retried by execute_resiliently and succeeds.
TEST(PgFault, F03_idle_connections_killed) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f03");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin("postgres");
        const auto first = client.backend_pids();
        EXPECT_EQ(first.size(), 2u);
        for (const int pid : first) EXPECT_TRUE(admin.terminate(pid)) << pid;
        const auto killed_at = Clock::now();
        auto replaced = [&](const std::vector<int>& old) {
          const auto pids = client.backend_pids();
          return pids.size() == 2 && std::none_of(pids.begin(), pids.end(), [&](int p) {
                   return std::find(old.begin(), old.end(), p) != old.end();
                 });
        };
        const bool refilled = co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.discarded >= 2 && s.connections == 2 && replaced(first);
            },
            5s);
        EXPECT_TRUE(refilled) << "discarded " << client.stats().discarded << ", connections "
                              << client.stats().connections;
        EXPECT_LT(elapsed_ms(killed_at), 2s);
        EXPECT_EQ(client.stats().connects, 4u);
        EXPECT_EQ(client.stats().failures, 0u) << "an error reached a caller";
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 2; }, 5s));

        // Killed right before a read: terminate() waits until the backends exited, and the
        // loop has not run since, so the client cannot have noticed yet.
        const auto second = client.backend_pids();
        for (const int pid : second) EXPECT_TRUE(admin.terminate(pid)) << pid;
        int attempts = 0;
        const auto read_at = Clock::now();
        const auto value = co_await client.execute_resiliently(
            [&](PostgresClient& c) -> asio::awaitable<std::int64_t> {
              ++attempts;
              co_return co_await c.query_value<std::int64_t>("SELECT 7::int8");
            },
            Idempotent::yes, fast_retry(3));
        EXPECT_EQ(value, 7);
        EXPECT_GE(attempts, 2) << "the first attempt should have met a dead connection";
        EXPECT_LE(attempts, 3);
        EXPECT_LT(elapsed_ms(read_at), 3s);
        EXPECT_TRUE(co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.discarded >= 4 && s.connections == 2 && replaced(second);
            },
            5s))
            << "pool not back to full size: " << client.stats().connections;
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 2; }, 5s));
        co_await client.close();
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f03") == 0; }, 5s));
      },
      30s);
}

// ---- F04 -------------------------------------------------------------------------------------

// The transaction's backend is terminated after its INSERT; the next statement fails. The
// transaction is rolled back (the row is absent), a non-idempotent body is not run again, an
// idempotent one is retried from the start and commits once.
TEST(PgFault, F04_killed_mid_transaction) {
  TS_SKIP_IF_EXTERNAL();
  create_tables("DROP TABLE IF EXISTS f04; CREATE TABLE f04 (id int PRIMARY KEY)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f04");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        // Inserts `id`; on its first run, gets its backend terminated from outside (and, with
        // `wait_for_detection`, lets the client notice the loss); then one more statement.
        auto body = [&](int id, int& runs, bool wait_for_detection) {
          return [&client, &admin, &runs, id,
                  wait_for_detection](Transaction& tx) -> asio::awaitable<void> {
            const int run = ++runs;
            const auto pid = co_await tx.query_value<std::int32_t>("SELECT pg_backend_pid()");
            co_await tx.execute("INSERT INTO f04 VALUES ($1)", id);
            if (run == 1) {
              const auto discarded = client.stats().discarded;
              EXPECT_TRUE(admin.terminate(pid));
              if (wait_for_detection) {
                EXPECT_TRUE(
                    co_await eventually([&] { return client.stats().discarded > discarded; }, 3s));
              }
            }
            co_await tx.query("SELECT 1");
          };
        };
        auto rows = [&](int id) {
          return admin.count("SELECT count(*) FROM f04 WHERE id = " + std::to_string(id));
        };
        auto pool_full = [&] {
          const auto s = client.stats();
          return s.connections == 1 && s.exclusive == 0;
        };
        TransactionOptions not_idempotent;
        not_idempotent.retry = fast_retry(3);
        TransactionOptions idempotent = not_idempotent;
        idempotent.idempotent = Idempotent::yes;

        // a) The next statement goes out on the dead connection: outcome unknown, no retry.
        int runs_a = 0;
        const Outcome a =
            co_await outcome(client.transaction(body(1, runs_a, false), not_idempotent));
        EXPECT_TRUE(a.failed);
        EXPECT_EQ(runs_a, 1) << "a non-idempotent transaction was run again";
        EXPECT_EQ(kind_name(a), "outcome_unknown") << describe(a);
        EXPECT_LT(a.elapsed, 3s);
        EXPECT_EQ(rows(1), 0) << "partial work kept";
        EXPECT_TRUE(co_await eventually(pool_full, 5s));

        // b) The client noticed the loss before the next statement: still not run again.
        int runs_b = 0;
        const Outcome b =
            co_await outcome(client.transaction(body(2, runs_b, true), not_idempotent));
        EXPECT_TRUE(b.failed) << "the body was retried and committed: " << describe(b);
        EXPECT_EQ(runs_b, 1) << "a non-idempotent transaction was run again after its "
                                "connection died mid-transaction";
        EXPECT_TRUE(kind_name(b) == "outcome_unknown" || kind_name(b) == "transient_not_sent")
            << describe(b);
        EXPECT_LT(b.elapsed, 3s);
        EXPECT_EQ(rows(2), b.failed ? 0 : 1);
        EXPECT_TRUE(co_await eventually(pool_full, 5s));

        // c) Declared idempotent: retried from the start, committed exactly once.
        int runs_c = 0;
        const Outcome c = co_await outcome(client.transaction(body(3, runs_c, false), idempotent));
        EXPECT_FALSE(c.failed) << describe(c);
        EXPECT_EQ(runs_c, 2);
        EXPECT_LT(c.elapsed, 3s);
        EXPECT_EQ(rows(3), 1);
        EXPECT_TRUE(co_await eventually(pool_full, 5s));
        EXPECT_GE(client.stats().discarded, 3u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT count(*) FROM f04"),
                  b.failed ? 1 : 2);
        co_await client.close();
      },
      30s);
}

// ---- F05 -------------------------------------------------------------------------------------

// COMMIT reaches the server, its reply is cut off by the proxy: commit_outcome_unknown
// (outcome_unknown), the non-idempotent body ran exactly once. The server did commit, which is
// why a blind retry would have written the payment twice. Declared idempotent, the body is
// retried and its effect stays single.
TEST(PgFault, F05_connection_lost_during_commit) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f05_ledger, f05_keyed;"
      "CREATE TABLE f05_ledger (k text NOT NULL, amount int NOT NULL);"
      "CREATE TABLE f05_keyed (k text PRIMARY KEY, amount int NOT NULL)");
  FaultProxy proxy("127.0.0.1", servers().postgres().port());
  proxy.start();
  auto config = fast_config(dsn_for_port(proxy.port()), "f05");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.retry = fast_retry(3);

        int runs = 0;
        const Outcome lost = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs;
              co_await tx.execute("INSERT INTO f05_ledger VALUES ('payment-1', 100)");
              // COMMIT goes out next; the first byte of its reply resets the connection.
              proxy.cut_after_bytes(0, Direction::server_to_client);
            },
            options));
        proxy.clear_faults();
        EXPECT_TRUE(lost.failed);
        EXPECT_EQ(lost.code, ts::make_error_code(errc::commit_outcome_unknown)) << describe(lost);
        EXPECT_EQ(kind_name(lost), "outcome_unknown");
        EXPECT_EQ(runs, 1) << "retried blindly";
        EXPECT_LT(lost.elapsed, 2s);
        // The server answered, so it had committed: only the answer was lost.
        EXPECT_EQ(admin.count("SELECT count(*) FROM f05_ledger WHERE k = 'payment-1'"), 1);
        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().connections == 1 && client.stats().exclusive == 0; }, 5s));
        EXPECT_GE(client.stats().discarded, 1u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);

        // Idempotent (ON CONFLICT DO NOTHING): retried after the lost COMMIT, effect single.
        options.idempotent = Idempotent::yes;
        const auto discarded_before = client.stats().discarded;
        bool cleared = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              co_await eventually([&] { return client.stats().discarded > discarded_before; }, 5s);
              proxy.clear_faults();  // the cut happened: let the pool reconnect
              cleared = true;
            },
            asio::detached);
        int runs_idempotent = 0;
        const Outcome retried = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs_idempotent;
              co_await tx.execute(
                  "INSERT INTO f05_keyed VALUES ('payment-2', 200) ON CONFLICT (k) DO NOTHING");
              if (runs_idempotent == 1) proxy.cut_after_bytes(0, Direction::server_to_client);
            },
            options));
        EXPECT_FALSE(retried.failed) << describe(retried);
        EXPECT_TRUE(cleared);
        EXPECT_EQ(runs_idempotent, 2);
        EXPECT_LT(retried.elapsed, 3s);
        EXPECT_EQ(admin.count("SELECT count(*) FROM f05_keyed WHERE k = 'payment-2'"), 1);
        EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 1; }, 5s));
        co_await client.close();
      },
      30s);
}

// ---- F06 -------------------------------------------------------------------------------------

// PostgreSQL frozen (SIGSTOP): the client deadline (statement_timeout + margin) fires, the
// connections are discarded, the slots freed, the breaker counts the timeouts and opens; after
// SIGCONT the pool refills, a probe closes the breaker. Then the same with PgBouncer frozen.
TEST(PgFault, F06_server_frozen) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  ServerProcess& pg = servers().postgres();
  ServerProcess& bouncer = servers().pgbouncer();
  auto frozen_config = [](std::string dsn, std::string application_name) {
    auto c = fast_config(std::move(dsn), std::move(application_name));
    c.statement_timeout = 300ms;
    c.network_timeout_margin = 200ms;
    c.connect_timeout = 300ms;
    c.acquire_timeout = 300ms;
    c.reconnect_backoff = {50ms, 300ms, 2.0};
    return c;
  };
  auto expect_timed_out = [](const Outcome& o) {
    EXPECT_TRUE(o.failed);
    EXPECT_EQ(o.code, ts::make_error_code(errc::request_timeout)) << describe(o);
    EXPECT_EQ(kind_name(o), "outcome_unknown") << describe(o);
    EXPECT_GE(o.elapsed, 450ms) << describe(o);
    EXPECT_LE(o.elapsed, 2s) << describe(o);
  };

  {
    auto config = frozen_config(servers().postgres_dsn(kDatabase), "f06");
    config.min_size = 2;
    config.max_size = 2;
    config.breaker.window_size = 4;
    config.breaker.min_calls = 2;
    config.breaker.failure_rate_threshold = 0.5;
    config.breaker.open_backoff = {200ms, 400ms, 2.0};
    ScopeExit resume([&] { pg.resume(); });  // SIGCONT, whatever happens
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          co_await client.start();
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
          pg.pause();
          // Two statements, one on each connection, against the frozen server.
          std::vector<Outcome> frozen;
          for (int i = 0; i < 2; ++i) {
            asio::co_spawn(io, outcome(client.query("SELECT 1")),
                           [&](std::exception_ptr, Outcome o) { frozen.push_back(o); });
          }
          EXPECT_TRUE(co_await eventually([&] { return frozen.size() == 2; }, 3s));
          for (const auto& o : frozen) expect_timed_out(o);
          auto s = client.stats();
          EXPECT_EQ(s.timeouts, 2u);
          EXPECT_GE(s.discarded, 2u);
          EXPECT_EQ(s.in_flight, 0u);
          EXPECT_EQ(s.exclusive, 0u);
          EXPECT_EQ(ts::core::to_string(s.breaker), "open");
          // The open breaker fails fast.
          const Outcome fast = co_await outcome(client.query("SELECT 1"));
          EXPECT_EQ(fast.code, ts::make_error_code(errc::circuit_open)) << describe(fast);
          EXPECT_EQ(kind_name(fast), "transient_not_sent");
          EXPECT_LT(fast.elapsed, 100ms);

          pg.resume();
          EXPECT_TRUE(co_await eventually(
              [&] {
                s = client.stats();
                return s.connections == 2 && s.breaker != ts::core::CircuitState::open;
              },
              10s))
              << "connections " << s.connections << ", breaker " << ts::core::to_string(s.breaker);
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 2::int8"), 2);
          EXPECT_EQ(ts::core::to_string(client.stats().breaker), "closed");
          co_await client.close();
        },
        40s);
  }

  {
    auto config = frozen_config(servers().pgbouncer_dsn(kDatabase), "f06b");
    ScopeExit resume([&] { bouncer.resume(); });  // SIGCONT, whatever happens
    ts::testing::run_coroutine_test(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          PostgresClient client(io.get_executor(), config);
          co_await client.start();
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
          bouncer.pause();
          expect_timed_out(co_await outcome(client.query("SELECT 1")));
          const auto s = client.stats();
          EXPECT_EQ(s.timeouts, 1u);
          EXPECT_GE(s.discarded, 1u);
          EXPECT_EQ(s.in_flight, 0u);
          bouncer.resume();
          EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 1; }, 10s));
          EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 3::int8"), 3);
          co_await client.close();
        },
        40s);
  }
  expect_servers_healthy();
}

// ---- F15 idle-session timeout (57P05) -------------------------------------------------------

TEST(PgFault, F15_idle_session_timeout_connections_replaced) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f15");
  const std::string admin_dsn = servers.postgres_dsn("postgres");
  const std::string server_log = servers.postgres().directory() + "/server.log";
  ASSERT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " SET idle_session_timeout = '1s'"), "");
  ScopeExit restore([&] {
    EXPECT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " RESET idle_session_timeout"), "");
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        // One connection: after a kill, the pool's only connection is the fresh replacement.
        // (With two, their idle clocks drift apart as queries touch one of them, and a query
        // right after one kill can land on the other just as its own second runs out: a race
        // the test would lose now and then, seen under ASan.)
        auto config = config_for(servers.postgres_dsn(db), "ts_f15");
        config.min_size = 1;
        config.max_size = 1;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::string>("SHOW idle_session_timeout"), "1s");

        // Idle past the timeout (1 s): the server ends the session with 57P05, and the client
        // notices. Waited for, not slept: the backends the pool had are gone from
        // pg_stat_activity and the client counted the discards. At the end, the server's log
        // must name the idle-session timeout (57P05) as the cause for each of those backends
        // (checked last, so that nothing delays the queries after a kill: the pool's fresh
        // connections start idling at the kill, and a query must come well within 1 s).
        std::vector<std::string> killed;
        auto idle_kill = [&](const std::vector<std::string>& pids,
                             std::uint64_t discarded_before) -> asio::awaitable<void> {
          const bool gone = co_await eventually(
              [&] {
                return client.stats().discarded >= discarded_before + pids.size() &&
                       std::none_of(pids.begin(), pids.end(),
                                    [&](const std::string& pid) { return backend_alive(pid); });
              },
              5s, 10ms);
          EXPECT_TRUE(gone) << "the client noticed no idle-session kill within 5 s: discarded "
                            << client.stats().discarded - discarded_before << " of " << pids.size();
          killed.insert(killed.end(), pids.begin(), pids.end());
        };
        auto pids = backend_pids("ts_f15");
        EXPECT_EQ(pids.size(), 1u);
        co_await idle_kill(pids, 0);

        // The first plain query after the idle period. Decision: it MAY fail. The server
        // keeps ending any session idle for 1 s and the pool keeps replacing them, so a
        // query can always meet a connection whose 1 s ran out the instant it was sent;
        // no client can rule that out without a round trip per query. It then fails as the
        // server said: 57P05, transient_not_sent (the query never ran), never as anything a
        // caller could mistake for a lost write, even when the client read the FATAL before
        // it sent the query and found the connection closed only afterwards (made
        // deterministic in F15_fatal_read_while_idle_reported_as_57P05). A plain query is
        // not retried; execute_resiliently() (below) hides it for idempotent work.
        const auto first = co_await error_of(client.query_value<std::int32_t>("SELECT 1"));
        if (first) {
          EXPECT_EQ(sqlstate(first), ts::pg::sqlstate::idle_session_timeout) << describe(first);
          EXPECT_EQ(first->kind(), ts::ErrorKind::transient_not_sent) << describe(first);
          std::printf("[ F15 ] the first query raced an idle kill: %s\n", describe(first).c_str());
        }

        // Same again through execute_resiliently: it succeeds, normally at the first attempt;
        // a second one only when the first raced the server's next idle kill, as above.
        pids = backend_pids("ts_f15");
        EXPECT_GE(pids.size(), 1u);
        co_await idle_kill(pids, client.stats().discarded);
        int attempts = 0;
        const auto value = co_await client.execute_resiliently(
            [&](PostgresClient& c) {
              ++attempts;
              return c.query_value<std::int32_t>("SELECT 2");
            },
            ts::core::Idempotent::yes);
        EXPECT_EQ(value, 2);
        EXPECT_GE(attempts, 1);
        EXPECT_LE(attempts, 2);

        // And many callers at once after an idle period.
        pids = backend_pids("ts_f15");
        EXPECT_GE(pids.size(), 1u);
        co_await idle_kill(pids, client.stats().discarded);
        int done = 0, failed = 0;
        for (int c = 0; c < 20; ++c) {
          asio::co_spawn(
              io,
              [&, c]() -> asio::awaitable<void> {
                if (co_await client.query_value<std::int32_t>("SELECT $1::int4", c) != c) {
                  ++failed;
                }
              },
              [&](std::exception_ptr e) {
                if (e) ++failed;
                ++done;
              });
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 20; }, 5s));
        EXPECT_EQ(failed, 0);
        const auto s = client.stats();
        EXPECT_GE(s.discarded, 3u);
        EXPECT_GE(s.connects, 4u);
        EXPECT_EQ(s.breaker, ts::core::CircuitState::closed);
        EXPECT_TRUE(co_await pool_full(client, 1, 5s));
        for (const auto& pid : killed) {
          EXPECT_TRUE(
              co_await eventually([&] { return idle_timeout_logged(server_log, pid); }, 2s, 20ms))
              << "backend " << pid << " did not end by the idle-session timeout (57P05)";
        }
        std::printf("[ F15 ] discarded %llu, connects %llu, failures %llu\n",
                    static_cast<unsigned long long>(s.discarded),
                    static_cast<unsigned long long>(s.connects),
                    static_cast<unsigned long long>(s.failures));
        co_await client.close();
      },
      30s);
}

// The race F15's first query can lose, made deterministic: the server's FATAL (57P05) reaches
// the client while its connection is idle, the close that follows is held back by a proxy, the
// client sends a query on the connection, then the close arrives. The query never ran, and the
// client holds the server's word for why: it must fail as 57P05 (transient_not_sent), not as a
// connection lost after sending (outcome_unknown), which a caller would have to treat as a
// possibly-lost write.
TEST(PgFault, F15_fatal_read_while_idle_reported_as_57P05) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f15f");
  const std::string admin_dsn = servers.postgres_dsn("postgres");
  ASSERT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " SET idle_session_timeout = '1s'"), "");
  ts::testing::FaultProxy proxy("127.0.0.1", servers.postgres().port());
  proxy.start();
  ScopeExit restore([&] {
    proxy.clear_faults();
    EXPECT_EQ(run_sql(admin_dsn, "ALTER DATABASE " + db + " RESET idle_session_timeout"), "");
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = ts::testing::fault::pg_dsn_for_port(proxy.port(), db);
        // 1. The size of the server's FATAL: the bytes it sends through the proxy to an idle
        // session of a plain libpq connection when it ends it.
        std::uint64_t fatal_size = 0;
        {
          PgConn raw(dsn);
          EXPECT_TRUE(raw.ok()) << raw.error();
          const std::string raw_pid = std::to_string(PQbackendPID(raw.get()));
          co_await pause_for(100ms);  // the proxy counts after its write: let the count settle
          const auto s2c_before = proxy.bytes_server_to_client();
          EXPECT_TRUE(co_await eventually([&] { return !backend_alive(raw_pid); }, 5s, 10ms));
          co_await pause_for(100ms);
          fatal_size = proxy.bytes_server_to_client() - s2c_before;
        }
        EXPECT_GT(fatal_size, 20u);
        EXPECT_LT(fatal_size, 300u);
        auto config = config_for(dsn, "ts_f15f");
        config.min_size = 1;
        config.max_size = 1;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 2"), 2);
        co_await pause_for(100ms);
        // 2. The next FATAL is let through, the close that follows it held back.
        proxy.hold_after_bytes(fatal_size, ts::testing::Direction::server_to_client, true);
        const auto pid = backend_pids("ts_f15f");
        EXPECT_EQ(pid.size(), 1u);
        if (pid.size() != 1) co_return;
        EXPECT_TRUE(co_await eventually([&] { return !backend_alive(pid.front()); }, 5s, 10ms));
        co_await pause_for(100ms);  // the FATAL reaches the client
        EXPECT_EQ(client.stats().discarded, 0u) << "the client saw the close: nothing held back";
        const auto c2s_before = proxy.bytes_client_to_server();
        std::optional<ts::Error> error;
        bool done = false;
        asio::co_spawn(io, error_of(client.query_value<std::int32_t>("SELECT 3")),
                       [&](std::exception_ptr, std::optional<ts::Error> e) {
                         error = std::move(e);
                         done = true;
                       });
        EXPECT_TRUE(co_await eventually(
            [&] { return proxy.bytes_client_to_server() > c2s_before || done; }, 2s));
        proxy.release_hold();
        EXPECT_TRUE(co_await eventually([&] { return done; }, 10s));
        EXPECT_TRUE(error.has_value()) << "the query succeeded on a connection the server ended";
        if (error) {
          EXPECT_EQ(sqlstate(error), ts::pg::sqlstate::idle_session_timeout) << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::transient_not_sent) << describe(error);
        }
        std::printf("[ F15 ] FATAL %llu bytes; the query after it: %s\n",
                    static_cast<unsigned long long>(fatal_size), describe(error).c_str());
        co_await client.close();
      },
      30s);
  proxy.stop();
}

}  // namespace

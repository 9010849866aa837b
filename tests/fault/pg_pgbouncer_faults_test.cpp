// Fault tests of docs/failure-modes.md for PostgresClient behind PgBouncer (transaction
// pooling): F11 (the same statements from many callers), F12 (session-level SET refused, SET
// LOCAL does not leak), F13 (query_wait_timeout with a saturated pool) and F14 (PAUSE/RESUME and
// restarts of PgBouncer). Helpers: pg_fault_fixture.hpp.

#include "pg_fault_fixture.hpp"

using namespace pg_fault_test;

namespace {

// ---- F11 PgBouncer transaction mode: repeated identical statements ------------------------

TEST(PgFault, F11_pgbouncer_repeated_identical_statements) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f11");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = servers.pgbouncer_dsn(db);
        PostgresClient a(io.get_executor(), config_for(dsn, "ts_f11_a"));
        PostgresClient b(io.get_executor(), config_for(dsn, "ts_f11_b"));
        co_await a.start();
        co_await b.start();

        constexpr int kCallersPerClient = 50;
        constexpr int kRounds = 20;
        int done = 0, wrong = 0, transactions = 0;
        std::vector<std::string> errors;
        const auto start = Clock::now();
        for (PostgresClient* client : {&a, &b}) {
          for (int c = 0; c < kCallersPerClient; ++c) {
            asio::co_spawn(
                io,
                [&, client, c]() -> asio::awaitable<void> {
                  for (int i = 0; i < kRounds; ++i) {
                    const std::int64_t v = c * 1000 + i;
                    try {
                      // The same three statement texts from every caller of both clients.
                      if (co_await client->query_value<std::int64_t>("SELECT $1::int8 * 2", v) !=
                          v * 2) {
                        ++wrong;
                      }
                      const std::string text = "v" + std::to_string(v);
                      if (co_await client->query_value<std::string>("SELECT $1::text", text) !=
                          text) {
                        ++wrong;
                      }
                      auto row = co_await client->query_one("SELECT $1::int8 + 1, $2::text || 'x'",
                                                            v, text);
                      if (!row || row->get<std::int64_t>(0) != v + 1 ||
                          row->get<std::string>(1) != text + "x") {
                        ++wrong;
                      }
                      if (i % 5 == 0) {
                        const auto in_tx = co_await client->transaction(
                            [&](ts::pg::Transaction& tx) -> asio::awaitable<std::int64_t> {
                              co_return co_await tx.query_value<std::int64_t>("SELECT $1::int8 * 2",
                                                                              v);
                            });
                        if (in_tx != v * 2) ++wrong;
                        ++transactions;
                      }
                    } catch (const ts::Error& e) {
                      errors.push_back(describe(e));
                    }
                  }
                },
                [&](std::exception_ptr e) {
                  if (e) errors.emplace_back("caller failed");
                  ++done;
                });
          }
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 2 * kCallersPerClient; }, 20s));
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 15s);
        EXPECT_EQ(wrong, 0);
        EXPECT_TRUE(errors.empty()) << errors.size() << " errors, first: " << errors.front();
        EXPECT_EQ(transactions, 2 * kCallersPerClient * (kRounds / 5));
        for (PostgresClient* client : {&a, &b}) {
          const auto s = client->stats();
          EXPECT_EQ(s.failures, 0u);
          EXPECT_EQ(s.discarded, 0u);
          EXPECT_EQ(s.queries, static_cast<std::uint64_t>(kCallersPerClient * kRounds * 3 +
                                                          kCallersPerClient * (kRounds / 5)));
          EXPECT_TRUE(co_await pool_full(*client, 2, 5s));
        }
        co_await a.close();
        co_await b.close();
      },
      40s);
}

// ---- F12 session state under transaction pooling -------------------------------------------

// Session-level SET is refused before anything is sent (a proxy in front of PgBouncer counts
// the bytes; that client `a` goes through it is asserted from the proxy's counters); SET LOCAL
// inside transaction() works and does not leak to other clients. The leak probe is shown able
// to fire: a session-level SET sent on purpose through PgBouncer by a plain libpq connection
// (bypassing the client's refusal) must be seen by it.
TEST(PgFault, F12_session_set_refused_set_local_does_not_leak) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f12");
  // The positive control leaves a session-level SET on a server connection of this database:
  // drop them at the end (KILL closes them, RESUME lets clients in again).
  ScopeExit cleanup([&] {
    ensure_servers_running();
    for (const std::string& command : {"KILL " + db, "RESUME " + db}) {
      const auto error = pgbouncer_admin(command);
      if (!error.empty()) ADD_FAILURE() << command << ": " << error;
    }
  });
  const auto default_timeout = scalar(servers.postgres_dsn(db), "SHOW statement_timeout");
  const auto default_path = scalar(servers.postgres_dsn(db), "SHOW search_path");
  ASSERT_TRUE(default_timeout && default_path);
  auto& bouncer = servers.pgbouncer();
  ts::testing::FaultProxy proxy(bouncer.host(), bouncer.port());
  proxy.start();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        // libpq: the last `port` wins.
        PostgresClient a(io.get_executor(), config_for(servers.pgbouncer_dsn(db) +
                                                           " port=" + std::to_string(proxy.port()),
                                                       "ts_f12_a"));
        PostgresClient b(io.get_executor(), config_for(servers.pgbouncer_dsn(db), "ts_f12_b"));
        co_await a.start();
        co_await b.start();
        EXPECT_TRUE(co_await pool_full(a, 2, 5s));
        // `a` goes through the proxy: its two connections were accepted there and their
        // startup crossed it (a client connected directly would leave both at zero).
        EXPECT_TRUE(co_await eventually(
            [&] { return proxy.connections_accepted() == 2 && proxy.active_connections() == 2; },
            2s))
            << "accepted " << proxy.connections_accepted() << ", active "
            << proxy.active_connections() << ": client a does not go through the proxy";
        EXPECT_EQ(co_await a.query_value<std::int32_t>("SELECT 1"), 1);
        co_await pause_for(50ms);  // the proxy's counters settle

        const auto stats_before = a.stats();
        const auto bytes_before = proxy.bytes_client_to_server();
        const auto bytes_back_before = proxy.bytes_server_to_client();
        EXPECT_GT(bytes_before, 0u) << "nothing of client a crossed the proxy";
        EXPECT_GT(bytes_back_before, 0u) << "nothing came back to client a through the proxy";
        for (const char* sql :
             {"SET search_path = x", "set search_path to x", "  SET\tstatement_timeout = 4321",
              "SET SESSION statement_timeout = 1", "SET\nwork_mem = '1MB'"}) {
          const auto error = co_await error_of(a.execute(sql));
          EXPECT_TRUE(error.has_value()) << sql << " was accepted";
          if (!error) continue;
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::invalid_argument))
              << sql << ": " << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::permanent) << sql;
          EXPECT_EQ(error->request_state(), ts::RequestState::not_sent) << sql;
        }
        co_await pause_for(100ms);
        EXPECT_EQ(proxy.bytes_client_to_server(), bytes_before) << "a refused SET was sent";
        EXPECT_EQ(a.stats().queries, stats_before.queries);
        EXPECT_EQ(a.stats().failures, stats_before.failures);
        EXPECT_EQ(a.stats().breaker, ts::core::CircuitState::closed);

        // SET LOCAL inside a transaction works for that transaction...
        const auto inside = co_await a.transaction(
            [&](ts::pg::Transaction& tx) -> asio::awaitable<std::pair<std::string, std::string>> {
              co_await tx.execute("SET LOCAL statement_timeout = 4321");
              co_await tx.execute("SET LOCAL search_path = f12_private, public");
              auto timeout = co_await tx.query_value<std::string>("SHOW statement_timeout");
              auto path =
                  co_await tx.query_value<std::string>("SELECT current_setting('search_path')");
              co_return std::make_pair(std::move(timeout), std::move(path));
            });
        EXPECT_EQ(inside.first, "4321ms");
        EXPECT_EQ(inside.second, "f12_private, public");
        // The same counter that showed the refused SETs were not sent moves for a's traffic.
        EXPECT_GT(proxy.bytes_client_to_server(), bytes_before)
            << "client a's transaction did not cross the proxy";
        EXPECT_EQ(proxy.connections_accepted(), 2u);

        // ... and nothing of it is left on any server connection: the other client (and this
        // one) see the defaults, from many concurrent callers spread over PgBouncer's pool.
        // The probe returns how many of its 200 reads saw anything but the defaults.
        auto probe = [&]() -> asio::awaitable<int> {
          int done = 0, leaked = 0, failed = 0;
          for (PostgresClient* client : {&a, &b}) {
            for (int c = 0; c < 20; ++c) {
              asio::co_spawn(
                  io,
                  [&, client]() -> asio::awaitable<void> {
                    for (int i = 0; i < 5; ++i) {
                      auto row = co_await client->query_one(
                          "SELECT current_setting('statement_timeout'), "
                          "current_setting('search_path')");
                      if (!row || row->get<std::string>(0) != *default_timeout ||
                          row->get<std::string>(1) != *default_path) {
                        ++leaked;
                      }
                    }
                  },
                  [&](std::exception_ptr e) {
                    if (e) ++failed;
                    ++done;
                  });
            }
          }
          EXPECT_TRUE(co_await eventually([&] { return done == 40; }, 10s));
          EXPECT_EQ(failed, 0);
          co_return leaked;
        };
        EXPECT_EQ(co_await probe(), 0) << "SET LOCAL leaked to a server connection";

        // Positive control: the probe can see a leak. A plain libpq connection through
        // PgBouncer (not our client: it would refuse) leaves a session-level SET on the server
        // connection it used; PgBouncer hands that connection to the probe's callers next.
        {
          PgConn raw(servers.pgbouncer_dsn(db));
          EXPECT_TRUE(raw.ok()) << raw.error();
          EXPECT_TRUE(raw.exec("SET statement_timeout = 4321").has_value()) << raw.last_error();
        }
        const int leaked_on_purpose = co_await probe();
        EXPECT_GT(leaked_on_purpose, 0)
            << "the probe did not see a session-level SET left on a PgBouncer server connection";
        std::printf("[ F12 ] positive control: %d of 200 reads saw the leaked SET\n",
                    leaked_on_purpose);
        co_await a.close();
        co_await b.close();
      },
      30s);
  proxy.stop();
}

// Session-level SET hidden behind a leading SQL comment (query tags, ORMs) must be refused
// just the same: sent to PgBouncer it would stay on a shared server connection.
TEST(PgFault, F12_session_set_behind_comment_refused) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f12c");
  // Whatever this test leaks stays on this database's server connections: drop them at the
  // end (KILL closes them, RESUME lets clients in again).
  ScopeExit cleanup([&] {
    ensure_servers_running();
    for (const std::string& command : {"KILL " + db, "RESUME " + db}) {
      const auto error = pgbouncer_admin(command);
      if (!error.empty()) ADD_FAILURE() << command << ": " << error;
    }
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.pgbouncer_dsn(db), "ts_f12c"));
        co_await client.start();
        for (const char* sql : {"-- tag: job=42\nSET statement_timeout = 4321",
                                "/* tag */ SET statement_timeout = 4321"}) {
          const auto error = co_await error_of(client.execute(sql));
          EXPECT_TRUE(error.has_value()) << "session-level SET accepted: " << sql;
          if (!error) continue;
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::invalid_argument))
              << describe(error);
          EXPECT_EQ(error->request_state(), ts::RequestState::not_sent);
        }
        co_await client.close();
      },
      20s);
}

// ---- F13 PgBouncer query_wait_timeout / pool saturation -----------------------------------

TEST(PgFault, F13_pgbouncer_query_wait_timeout_is_transient) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f13");
  const auto original = pgbouncer_setting("query_wait_timeout");
  ASSERT_TRUE(original.has_value()) << "SHOW CONFIG has no query_wait_timeout";
  const auto pool_size = pgbouncer_setting("default_pool_size");
  ASSERT_TRUE(pool_size.has_value());
  const int sleepers_needed = std::stoi(*pool_size);
  std::vector<std::unique_ptr<PgConn>> sleepers;
  ScopeExit restore([&] {
    cancel_all(sleepers);  // normally done already
    sleepers.clear();
    ensure_servers_running();
    const auto error = pgbouncer_admin("SET query_wait_timeout = " + *original);
    if (!error.empty()) ADD_FAILURE() << "cannot restore query_wait_timeout: " << error;
    EXPECT_EQ(pgbouncer_setting("query_wait_timeout"), original);
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const std::string dsn = servers.pgbouncer_dsn(db);
        PostgresClient client(io.get_executor(), config_for(dsn, "ts_f13"));
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);

        const auto set_error = pgbouncer_admin("SET query_wait_timeout = 1");
        EXPECT_EQ(set_error, "");
        EXPECT_EQ(pgbouncer_setting("query_wait_timeout"), std::optional<std::string>("1"));

        // Saturate the database's pool: every server connection busy until cancelled (60 s).
        for (int i = 0; i < sleepers_needed; ++i) {
          auto conn = std::make_unique<PgConn>(dsn);
          EXPECT_TRUE(conn->ok()) << conn->error();
          if (!conn->ok()) co_return;
          EXPECT_EQ(PQsendQuery(conn->get(), "SELECT pg_sleep(60)"), 1);
          sleepers.push_back(std::move(conn));
        }
        const bool saturated = co_await eventually(
            [&] { return pool_value(pgbouncer_pool(db), "sv_active") >= sleepers_needed; }, 2s,
            20ms);
        EXPECT_TRUE(saturated) << "sv_active = " << pool_value(pgbouncer_pool(db), "sv_active");
        if (!saturated) co_return;

        const auto before = client.stats();
        const auto start = Clock::now();
        const auto error = co_await error_of(client.query("SELECT 1"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value()) << "the query did not wait for a server connection";
        if (error) {
          EXPECT_EQ(error->kind(), ts::ErrorKind::transient_unavailable) << describe(error);
          EXPECT_EQ(sqlstate(error), ts::pg::sqlstate::protocol_violation) << describe(error);
          EXPECT_NE(std::string(error->what()).find("query_wait_timeout"), std::string::npos)
              << describe(error);
        }
        EXPECT_GE(took, 800ms);
        EXPECT_LT(took, 4s);
        // Order, not wall time: the pool was still saturated when the error came back (every
        // sleeper still busy), so the error is PgBouncer's wait timeout, not an accident of
        // the sleepers ending.
        int busy = 0;
        for (auto& s : sleepers) {
          PQconsumeInput(s->get());
          if (PQisBusy(s->get()) != 0) ++busy;
        }
        EXPECT_EQ(busy, sleepers_needed) << "sleepers ended before the error came back";
        const auto after = client.stats();
        EXPECT_EQ(after.failures, before.failures + 1);
        EXPECT_EQ(after.timeouts, before.timeouts);  // PgBouncer's timeout, not ours

        // The sleepers are cancelled; then queries succeed again and the pool is back to full size.
        cancel_all(sleepers);
        const bool sleepers_done = co_await eventually(
            [&] {
              for (auto& s : sleepers) {
                PQconsumeInput(s->get());
                if (PQisBusy(s->get()) != 0) return false;
              }
              return true;
            },
            5s, 20ms);
        EXPECT_TRUE(sleepers_done);
        sleepers.clear();
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
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        co_await client.close();
      },
      30s);
}

// ---- F14 PgBouncer PAUSE/RESUME and restart -----------------------------------------------

TEST(PgFault, F14_pgbouncer_pause_resume_deadline_holds) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  bool paused = false;
  ScopeExit restore([&] {
    ensure_servers_running();
    if (paused) {
      const auto error = pgbouncer_admin("RESUME " + db);
      if (!error.empty()) ADD_FAILURE() << "RESUME " << db << ": " << error;
    }
  });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.pgbouncer_dsn(db), "ts_f14_pause");
        config.network_timeout_margin = 200ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        const auto pause_error = pgbouncer_admin("PAUSE " + db);
        EXPECT_EQ(pause_error, "");
        paused = pause_error.empty();
        const auto before = client.stats();
        const auto start = Clock::now();
        const auto error = co_await error_of(client.query(ts::pg::QueryOptions{300ms}, "SELECT 1"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value()) << "a query went through a paused PgBouncer";
        if (error) {
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::request_timeout))
              << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::outcome_unknown);
        }
        EXPECT_GE(took, 450ms);
        EXPECT_LT(took, 1500ms) << "300 ms + 200 ms margin";
        EXPECT_EQ(client.stats().timeouts, before.timeouts + 1);

        const auto resume_error = pgbouncer_admin("RESUME " + db);
        EXPECT_EQ(resume_error, "");
        paused = !resume_error.empty();
        const auto resumed = Clock::now();
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 2"), 2);
        EXPECT_LT(elapsed_ms(resumed), 2000ms);
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        co_await client.close();
      },
      30s);
}

TEST(PgFault, F14_pgbouncer_restart_reconnects_with_backoff) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  ScopeExit restore([] { ensure_servers_running(); });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.pgbouncer_dsn(db), "ts_f14_restart");
        config.acquire_timeout = 1s;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        ts::core::RetryPolicy policy;
        policy.max_attempts = 10;
        policy.total_deadline = 10s;
        policy.backoff = {50ms, 500ms, 2.0};

        // Down for a while (part 1, a restart met by a running client, is
        // F14_pgbouncer_restart_met_by_the_running_client): the caller retries, the pool
        // reconnects with backoff, and the work succeeds soon after PgBouncer is back.
        auto start = Clock::now();
        servers.pgbouncer().stop();
        const auto failures_before = client.stats().connect_failures;
        bool done = false;
        std::optional<std::int32_t> got;
        int down_attempts = 0;
        asio::co_spawn(io,
                       client.execute_resiliently(
                           [&](PostgresClient& c) {
                             ++down_attempts;
                             return c.query_value<std::int32_t>("SELECT 8");
                           },
                           ts::core::Idempotent::yes, policy),
                       [&](std::exception_ptr e, std::int32_t v) {
                         done = true;
                         if (!e) got = v;
                       });
        co_await pause_for(700ms);
        EXPECT_FALSE(done);
        servers.pgbouncer().start();
        start = Clock::now();
        EXPECT_TRUE(co_await eventually([&] { return done; }, 5s));
        EXPECT_EQ(got, std::optional<std::int32_t>(8));
        EXPECT_LT(elapsed_ms(start), 3000ms);
        const auto connect_failures = client.stats().connect_failures - failures_before;
        EXPECT_GE(connect_failures, 1u);
        EXPECT_LT(connect_failures, 30u) << "reconnect storm";
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        std::printf("[ F14 ] outage: %d attempt(s), %llu failed reconnects\n", down_attempts,
                    static_cast<unsigned long long>(connect_failures));
        co_await client.close();
      },
      40s);
}

// PgBouncer restarted (stop, then start once the client saw a reconnect refused) while the
// client runs on a loop of its own and keeps querying: the loop is shown to run during the
// restart (a 2 ms ticker ticks at least once), the client sees the outage (both connections
// discarded, at least one reconnect refused while PgBouncer is down), no query hangs (each ends
// within 3 s, a failure is transient), and it recovers with backoff: the pool is full again,
// reconnect failures stay few (no storm), and queries succeed within 3 s of PgBouncer being back.
TEST(PgFault, F14_pgbouncer_restart_met_by_the_running_client) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f14");
  const std::string dsn = servers.pgbouncer_dsn(db);  // starts PgBouncer from the main thread
  ScopeExit restore([] { ensure_servers_running(); });
  std::atomic<bool> ready{false}, restarting{false}, restarted{false}, saw_refusal{false};
  std::atomic<Clock::rep> back_at{0};
  ts::testing::fault::BackgroundLoop loop(40s, [&](asio::io_context& io) -> asio::awaitable<void> {
    auto config = config_for(dsn, "ts_f14_running");
    config.acquire_timeout = 1s;
    PostgresClient client(io.get_executor(), config);
    co_await ts::testing::fault::closing(client, [&]() -> asio::awaitable<void> {
      co_await client.start();
      EXPECT_TRUE(co_await pool_full(client, 2, 5s));
      const auto before = client.stats();
      // The ticker: counts its ticks while the main thread is inside restart().
      int ticks_during = 0;
      bool stop_ticking = false;
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            while (!stop_ticking) {
              co_await pause_for(2ms);
              if (restarting && !restarted) {
                ++ticks_during;
                if (client.stats().connect_failures > before.connect_failures) saw_refusal = true;
              }
            }
          },
          asio::detached);
      ready = true;
      // Query until PgBouncer has been back for 10 successes.
      int ok = 0, failed = 0, ok_after = 0, slow = 0;
      std::vector<std::string> failures;
      std::optional<Clock::time_point> first_ok_after;
      const auto deadline = Clock::now() + 30s;
      while (ok_after < 10 && Clock::now() < deadline) {
        const bool was_back = restarted.load();
        const auto o = co_await ts::testing::outcome(client.query_value<std::int32_t>("SELECT 7"));
        if (o.elapsed > 3s) ++slow;
        if (!o.failed) {
          ++ok;
          if (was_back) {
            ++ok_after;
            if (!first_ok_after) first_ok_after = Clock::now();
          }
        } else {
          ++failed;
          failures.push_back(describe(o));
          EXPECT_NE(o.kind, ts::ErrorKind::permanent) << describe(o);
          co_await pause_for(20ms);  // a caller's pause after a failure
        }
      }
      stop_ticking = true;
      const auto after = client.stats();
      EXPECT_GE(ticks_during, 1) << "the client's loop did not run during the restart";
      EXPECT_GE(after.discarded, before.discarded + 2)
          << "the client did not see its connections die";
      EXPECT_GE(after.connect_failures, before.connect_failures + 1)
          << "the client never tried to reconnect while PgBouncer was down";
      EXPECT_LT(after.connect_failures - before.connect_failures, 30u) << "reconnect storm";
      EXPECT_EQ(slow, 0) << "a query hung for more than 3 s";
      EXPECT_EQ(ok_after, 10) << failed
                              << " failures, last: " << (failures.empty() ? "" : failures.back());
      const Clock::time_point back{Clock::duration{back_at.load()}};
      EXPECT_TRUE(first_ok_after && *first_ok_after - back < 3s)
          << "no success within 3 s of PgBouncer being back";
      EXPECT_TRUE(co_await pool_full(client, 2, 5s));
      std::printf(
          "[ F14 ] restart met by the running client: %d ticks during it, %d ok, %d failed, "
          "%llu discarded, %llu failed reconnects%s%s\n",
          ticks_during, ok, failed,
          static_cast<unsigned long long>(after.discarded - before.discarded),
          static_cast<unsigned long long>(after.connect_failures - before.connect_failures),
          failures.empty() ? "" : "; first failure: ",
          failures.empty() ? "" : failures.front().c_str());
      co_await pause_for(20ms);  // the ticker sees stop_ticking
    }());
  });
  EXPECT_TRUE(ts::testing::poll_until([&] { return ready || loop.done(); }, 20s));
  if (ready) {
    restarting = true;
    const auto start = Clock::now();
    // stop() then start(), PgBouncer kept down until the client saw a reconnect refused (a
    // condition, so that a loaded machine cannot hide the outage from the client).
    servers.pgbouncer().stop();
    EXPECT_TRUE(ts::testing::poll_until([&] { return saw_refusal || loop.done(); }, 10s))
        << "the client saw no refused reconnect within 10 s of PgBouncer going down";
    servers.pgbouncer().start();
    back_at = Clock::now().time_since_epoch().count();
    restarted = true;
    std::printf("[ F14 ] PgBouncer restart took %lld ms\n",
                static_cast<long long>(elapsed_ms(start).count()));
  }
  loop.join();
}

}  // namespace

// Fault tests of docs/failure-modes.md for PostgresClient when the server answers with an
// error: F07 (real deadlocks 40P01 and serialization failures 40001, retried whole with backoff,
// attempts capped) and F16 (syntax error, unique violation, bad password, directly and through
// PgBouncer: one attempt, permanent, breaker unaffected). Helpers: pg_fault_fixture.hpp.

#include "pg_fault_fixture.hpp"

using namespace pg_fault_test;

namespace {

// ---- F07 -------------------------------------------------------------------------------------

// A real deadlock: T1 locks row 1, T2 row 2, then each wants the other's (T2 goes on only once
// pg_locks shows T1 waiting). The loser gets 40P01 and its whole body runs again; both
// increments land exactly once.
TEST(PgFault, F07_deadlock_retried) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f07; CREATE TABLE f07 (id int PRIMARY KEY, v int NOT NULL);"
      "INSERT INTO f07 VALUES (1, 0), (2, 0)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.retry = fast_retry(3);
        int runs1 = 0, runs2 = 0, pid1 = 0, done = 0;
        bool t2_holds_row2 = false;
        std::vector<std::string> conflicts;
        std::vector<Outcome> results;
        auto on_done = [&](std::exception_ptr, Outcome o) {
          results.push_back(o);
          ++done;
        };
        const auto start = Clock::now();
        asio::co_spawn(io,
                       outcome(client.transaction(
                           [&](Transaction& tx) -> asio::awaitable<void> {
                             const int run = ++runs1;
                             co_await tx.execute("SET LOCAL deadlock_timeout = '100ms'");
                             co_await tx.execute("UPDATE f07 SET v = v + 1 WHERE id = 1");
                             if (run == 1) {
                               pid1 =
                                   co_await tx.query_value<std::int32_t>("SELECT pg_backend_pid()");
                               EXPECT_TRUE(co_await eventually([&] { return t2_holds_row2; }, 5s));
                             }
                             try {
                               co_await tx.execute("UPDATE f07 SET v = v + 1 WHERE id = 2");
                             } catch (const ts::Error& e) {
                               conflicts.push_back(e.server() ? e.server()->code : e.what());
                               throw;
                             }
                           },
                           options)),
                       on_done);
        asio::co_spawn(io,
                       outcome(client.transaction(
                           [&](Transaction& tx) -> asio::awaitable<void> {
                             const int run = ++runs2;
                             co_await tx.execute("SET LOCAL deadlock_timeout = '100ms'");
                             co_await tx.execute("UPDATE f07 SET v = v + 10 WHERE id = 2");
                             if (run == 1) {
                               t2_holds_row2 = true;
                               EXPECT_TRUE(co_await eventually(
                                   [&] {
                                     return pid1 != 0 && admin.count(
                                                             "SELECT count(*) FROM pg_locks WHERE "
                                                             "NOT granted AND pid = " +
                                                             std::to_string(pid1)) > 0;
                                   },
                                   5s))
                                   << "T1 never waited for row 2";
                             }
                             try {
                               co_await tx.execute("UPDATE f07 SET v = v + 10 WHERE id = 1");
                             } catch (const ts::Error& e) {
                               conflicts.push_back(e.server() ? e.server()->code : e.what());
                               throw;
                             }
                           },
                           options)),
                       on_done);
        EXPECT_TRUE(co_await eventually([&] { return done == 2; }, 10s));
        for (const auto& o : results) EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_LT(elapsed_ms(start), 5s);
        EXPECT_EQ(conflicts,
                  std::vector<std::string>{std::string(ts::pg::sqlstate::deadlock_detected)});
        EXPECT_EQ(runs1 + runs2, 3) << "T1 ran " << runs1 << " times, T2 " << runs2;
        EXPECT_TRUE((runs1 == 2 && runs2 == 1) || (runs1 == 1 && runs2 == 2));
        EXPECT_EQ(admin.value("SELECT string_agg(v::text, ',' ORDER BY id) FROM f07"), "11,11");
        const auto s = client.stats();
        EXPECT_EQ(s.failures, 1u);
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.connections, 2u);
        EXPECT_EQ(ts::core::to_string(s.breaker), "closed");
        co_await client.close();
      },
      30s);
}

// A real serialization failure: write skew under SERIALIZABLE (both read how many are on call,
// both take themselves off). One of them gets 40001 and runs again, now seeing one on call.
TEST(PgFault, F07_serialization_failure_retried) {
  TS_SKIP_IF_EXTERNAL();
  create_tables(
      "DROP TABLE IF EXISTS f07_on_call;"
      "CREATE TABLE f07_on_call (name text PRIMARY KEY, on_call bool NOT NULL);"
      "INSERT INTO f07_on_call VALUES ('alice', true), ('bob', true)");
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07s");
  config.min_size = 2;
  config.max_size = 2;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin;
        TransactionOptions options;
        options.isolation = ts::pg::IsolationLevel::serializable;
        options.retry = fast_retry(3);
        int readers = 0, done = 0;
        std::array<int, 2> runs{0, 0};
        std::vector<Outcome> results;
        const std::array<std::string, 2> names{"alice", "bob"};
        for (std::size_t i = 0; i < 2; ++i) {
          asio::co_spawn(io,
                         outcome(client.transaction(
                             [&, i](Transaction& tx) -> asio::awaitable<void> {
                               const int run = ++runs[i];
                               const auto on_call = co_await tx.query_value<std::int64_t>(
                                   "SELECT count(*) FROM f07_on_call WHERE on_call");
                               if (run == 1) {
                                 ++readers;  // both read before either writes
                                 EXPECT_TRUE(co_await eventually([&] { return readers >= 2; }, 5s));
                               }
                               if (on_call >= 2) {
                                 co_await tx.execute(
                                     "UPDATE f07_on_call SET on_call = false WHERE name = $1",
                                     names[i]);
                               }
                             },
                             options)),
                         [&](std::exception_ptr, Outcome o) {
                           results.push_back(o);
                           ++done;
                         });
        }
        EXPECT_TRUE(co_await eventually([&] { return done == 2; }, 10s));
        for (const auto& o : results) EXPECT_FALSE(o.failed) << describe(o);
        EXPECT_EQ(runs[0] + runs[1], 3) << "alice ran " << runs[0] << " times, bob " << runs[1];
        EXPECT_EQ(admin.count("SELECT count(*) FROM f07_on_call WHERE on_call"), 1);
        EXPECT_EQ(client.stats().failures, 1u);
        EXPECT_EQ(client.stats().exclusive, 0u);
        co_await client.close();
      },
      30s);
}

// A conflict that never resolves (the server raises 40001 on every run): the body runs exactly
// max_attempts times with backoff, then the 40001 reaches the caller as transient_conflict.
TEST(PgFault, F07_conflict_retries_capped) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f07c");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        TransactionOptions options;
        options.retry = fast_retry(4);
        int runs = 0;
        const Outcome o = co_await outcome(client.transaction(
            [&](Transaction& tx) -> asio::awaitable<void> {
              ++runs;
              co_await tx.execute(
                  "DO $$BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = "
                  "'serialization_failure'; END$$");
            },
            options));
        EXPECT_TRUE(o.failed);
        EXPECT_EQ(o.server_code, ts::pg::sqlstate::serialization_failure) << describe(o);
        EXPECT_EQ(kind_name(o), "transient_conflict");
        EXPECT_EQ(runs, 4);
        EXPECT_LT(o.elapsed, 2s);
        const auto s = client.stats();
        EXPECT_EQ(s.failures, 4u);
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.discarded, 0u) << "a conflict does not break the connection";
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 1::int8"), 1);
        co_await client.close();
      },
      30s);
}

// ---- F16 permanent errors --------------------------------------------------------------------

TEST(PgFault, F16_permanent_errors_one_attempt_breaker_unaffected) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f16");
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.postgres_dsn(db), "ts_f16"));
        co_await client.start();
        co_await client.execute("DROP TABLE IF EXISTS f16_unique");
        co_await client.execute("CREATE TABLE f16_unique (id int PRIMARY KEY)");
        co_await client.execute("INSERT INTO f16_unique VALUES (1)");

        int attempts = 0;
        auto syntax = [&](PostgresClient& c) {
          ++attempts;
          return c.execute("SELEC 1");
        };
        auto duplicate = [&](PostgresClient& c) {
          ++attempts;
          return c.execute("INSERT INTO f16_unique VALUES (1)");
        };
        const auto start = Clock::now();
        const auto e1 =
            co_await error_of(client.execute_resiliently(syntax, ts::core::Idempotent::yes));
        EXPECT_EQ(attempts, 1);
        EXPECT_TRUE(e1 && e1->kind() == ts::ErrorKind::permanent) << describe(e1);
        EXPECT_EQ(sqlstate(e1), ts::pg::sqlstate::syntax_error);
        attempts = 0;
        const auto e2 =
            co_await error_of(client.execute_resiliently(duplicate, ts::core::Idempotent::yes));
        EXPECT_EQ(attempts, 1);
        EXPECT_TRUE(e2 && e2->kind() == ts::ErrorKind::permanent) << describe(e2);
        EXPECT_EQ(sqlstate(e2), ts::pg::sqlstate::unique_violation);

        // A transaction failing with 23505, declared idempotent: its body runs once.
        int bodies = 0;
        ts::pg::TransactionOptions idempotent_tx;
        idempotent_tx.idempotent = ts::core::Idempotent::yes;
        const auto e3 = co_await error_of(client.transaction(
            [&](ts::pg::Transaction& tx) -> asio::awaitable<void> {
              ++bodies;
              co_await tx.execute("INSERT INTO f16_unique VALUES (1)");
            },
            idempotent_tx));
        EXPECT_EQ(bodies, 1);
        EXPECT_TRUE(e3 && e3->kind() == ts::ErrorKind::permanent) << describe(e3);
        EXPECT_EQ(sqlstate(e3), ts::pg::sqlstate::unique_violation);

        // 50 more: far past the breaker's min_calls (10) at 100 % "failure", yet it stays
        // closed, and nothing waited for a backoff.
        attempts = 0;
        int permanent = 0;
        for (int i = 0; i < 50; ++i) {
          const auto e = co_await error_of(client.execute_resiliently(
              i % 2 == 0 ? std::function<asio::awaitable<std::int64_t>(PostgresClient&)>(syntax)
                         : std::function<asio::awaitable<std::int64_t>(PostgresClient&)>(duplicate),
              ts::core::Idempotent::yes));
          if (e && e->kind() == ts::ErrorKind::permanent) ++permanent;
        }
        EXPECT_EQ(attempts, 50);
        EXPECT_EQ(permanent, 50);
        EXPECT_LT(elapsed_ms(start), 2000ms);
        const auto s = client.stats();
        EXPECT_EQ(s.breaker, ts::core::CircuitState::closed);
        EXPECT_EQ(s.discarded, 0u);
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT count(*) FROM f16_unique"), 1);
        EXPECT_TRUE(co_await pool_full(client, 2, 1s));
        co_await client.close();
      },
      30s);
}

TEST(PgFault, F16_bad_credentials_fail_start_at_once) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string bad_password = "f16-not-the-password";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config =
            config_for(servers.postgres_dsn_for(ts::testing::kSecureRole, bad_password, "postgres"),
                       "ts_f16_auth");
        config.startup_timeout = 10s;
        config.connect_timeout = 5s;
        PostgresClient bad(io.get_executor(), config);
        const auto start = Clock::now();
        const auto error = co_await error_of(bad.start());
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 1000ms) << "start() took " << took.count() << " ms";
        EXPECT_TRUE(error.has_value());
        if (error) {
          EXPECT_EQ(error->kind(), ts::ErrorKind::permanent) << describe(error);
          EXPECT_EQ(sqlstate(error), ts::pg::sqlstate::invalid_password) << describe(error);
          EXPECT_EQ(std::string(error->what()).find(bad_password), std::string::npos)
              << "the password is in the message";
        }
        EXPECT_EQ(bad.stats().connect_failures, 1u) << "start() made more than one attempt";
        EXPECT_EQ(bad.stats().connects, 0u);
        EXPECT_EQ(bad.stats().connections, 0u);
        co_await bad.close();

        config.dsn = servers.postgres_dsn_for(ts::testing::kSecureRole,
                                              ts::testing::kSecurePassword, "postgres");
        PostgresClient good(io.get_executor(), config);
        co_await good.start();
        EXPECT_EQ(co_await good.query_value<std::string>("SELECT current_user::text"),
                  ts::testing::kSecureRole);
        EXPECT_EQ(good.stats().connect_failures, 0u);
        co_await good.close();
      },
      30s);
}

}  // namespace

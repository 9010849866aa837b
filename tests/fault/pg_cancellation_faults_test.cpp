// Fault tests of docs/failure-modes.md for PostgresClient when callers give up or the client
// closes under load: F08 (pool exhausted; waiters time out or are cancelled), F09 (a query
// cancelled by its caller or timed out mid-flight: cancelled on the server, no stale result) and
// F10 (close() while a connection is checked out). Helpers: pg_fault_fixture.hpp.

#include "pg_fault_fixture.hpp"

using namespace pg_fault_test;

namespace {

// ---- F08 -------------------------------------------------------------------------------------

// Both connections held by long transactions; 20 waiters time out (acquire_timeout), 20 are
// cancelled by their callers and fail at once; nothing leaks: no waiter left, the pool full,
// queries work, close() prompt, no server connection left. "At once" is asserted by order,
// not by a wall-time window a loaded machine could miss: the 40 waiters are all queued before
// any of them ended, and every cancelled waiter ended (as cancelled) before the first timed
// waiter's acquire_timeout (1 s, started earlier) expired.
TEST(PgFault, F08_pool_exhausted_waiters) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  auto config = fast_config(servers().postgres_dsn(kDatabase), "f08");
  config.min_size = 2;
  config.max_size = 2;
  config.acquire_timeout = 1s;
  // Acquire timeouts are transient_not_sent, which the endpoint's breaker counts as failures
  // (docs/core.md): with the default breaker, the 20 timeouts below open it and
  // the next query fails fast although the server is fine. This test is about the pool, so its
  // breaker needs more calls than the test makes to trip.
  config.breaker.window_size = 100;
  config.breaker.min_calls = 100;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        Direct admin("postgres");
        TransactionOptions once;
        once.retry = fast_retry(1);
        int holders_done = 0, holders_failed = 0, bodies = 0;
        for (int i = 0; i < 2; ++i) {
          asio::co_spawn(io,
                         client.transaction(
                             [](Transaction& tx) -> asio::awaitable<void> {
                               co_await tx.execute("SELECT pg_sleep(3)");
                             },
                             once),
                         [&](std::exception_ptr e) {
                           if (e) ++holders_failed;
                           ++holders_done;
                         });
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().exclusive == 2; }, 2s));
        auto waiter = [&](int i) {
          if (i % 2 == 0) return outcome(client.query("SELECT 1"));
          return outcome(client.transaction(
              [&](Transaction& tx) -> asio::awaitable<void> {
                ++bodies;
                co_await tx.execute("SELECT 1");
              },
              once));
        };
        std::vector<Outcome> timed, cancelled;
        for (int i = 0; i < 20; ++i) {
          asio::co_spawn(io, waiter(i), [&](std::exception_ptr, Outcome o) { timed.push_back(o); });
        }
        std::array<asio::cancellation_signal, 20> signals;
        std::vector<std::size_t> timed_when_cancelled;
        for (int i = 0; i < 20; ++i) {
          asio::co_spawn(
              io, waiter(i),
              asio::bind_cancellation_slot(signals[static_cast<std::size_t>(i)].slot(),
                                           [&](std::exception_ptr, Outcome o) {
                                             cancelled.push_back(o);
                                             timed_when_cancelled.push_back(timed.size());
                                           }));
        }
        // All 40 queued, none ended: the cancellations below meet waiting waiters.
        EXPECT_TRUE(co_await eventually([&] { return client.stats().waiters == 40; }, 5s))
            << client.stats().waiters << " waiters";
        EXPECT_TRUE(timed.empty() && cancelled.empty())
            << timed.size() << " timed and " << cancelled.size()
            << " cancelled waiters ended before the cancellations";
        for (auto& signal : signals) signal.emit(asio::cancellation_type::terminal);
        EXPECT_TRUE(co_await eventually([&] { return cancelled.size() == 20; }, 5s));
        for (const auto& o : cancelled) {
          EXPECT_EQ(o.code, ts::make_error_code(errc::cancelled)) << describe(o);
          EXPECT_EQ(kind_name(o), "cancelled");
          EXPECT_LT(o.elapsed, config.acquire_timeout) << describe(o);
        }
        // At once: every cancelled waiter ended before the first timed one timed out.
        for (const auto n : timed_when_cancelled) {
          EXPECT_EQ(n, 0u) << "a cancelled waiter ended after a timed one's acquire_timeout";
        }
        EXPECT_TRUE(co_await eventually([&] { return timed.size() == 20; }, 5s));
        for (const auto& o : timed) {
          EXPECT_EQ(o.code, ts::make_error_code(errc::acquire_timeout)) << describe(o);
          EXPECT_EQ(kind_name(o), "transient_not_sent");
          EXPECT_GE(o.elapsed, 990ms) << describe(o);
          EXPECT_LE(o.elapsed, 2500ms) << describe(o);
        }
        EXPECT_EQ(bodies, 0);
        EXPECT_EQ(client.stats().waiters, 0u);
        EXPECT_TRUE(co_await eventually([&] { return holders_done == 2; }, 5s));
        EXPECT_EQ(holders_failed, 0);
        const auto s = client.stats();
        EXPECT_EQ(s.exclusive, 0u);
        EXPECT_EQ(s.connections, 2u);
        EXPECT_EQ(s.in_flight, 0u);
        EXPECT_EQ(s.cancellations, 20u);
        EXPECT_EQ(ts::core::to_string(s.breaker), "closed");
        EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT 5::int8"), 5);
        EXPECT_EQ(admin.connections_of("f08"), 2);
        const auto closing = Clock::now();
        co_await client.close();
        EXPECT_LT(elapsed_ms(closing), 500ms);
        EXPECT_TRUE(co_await eventually([&] { return admin.connections_of("f08") == 0; }, 5s));
      },
      30s);
}

// ---- F09 query cancelled by the caller mid-flight ---------------------------------------------

// A caller cancels (terminal) a long query: it returns at once with `cancelled`; many other
// callers then each get their own result, never the cancelled query's (-1); and the cancelled
// statement must not keep running on the server (F09 in docs/failure-modes.md: a server-side cancel
// is sent or the connection discarded), else every statement pipelined behind it waits for it.
TEST(PgFault, F09_cancelled_query_no_stale_result) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f09");
  const std::string app = "ts_f09_cancel";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), config_for(servers.postgres_dsn(db), app));
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        asio::cancellation_signal signal;
        bool finished = false;
        std::optional<ts::Error> cancel_error;
        bool got_result = false;
        Clock::time_point finished_at{};
        asio::co_spawn(
            io, client.query("SELECT -1::int4 FROM pg_sleep(2)"),
            asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, ts::pg::Result) {
              finished = true;
              finished_at = Clock::now();
              got_result = !e;
              try {
                if (e) std::rethrow_exception(e);
              } catch (const ts::Error& error) {
                cancel_error = error;
              } catch (...) {
                ADD_FAILURE() << "unexpected exception type";
              }
            }));
        // The statement runs on the server before the caller gives up.
        EXPECT_TRUE(co_await eventually([&] { return backends(app, "pg_sleep(2)") == 1; }, 3s));
        co_await pause_for(100ms);
        const auto cancelled_at = Clock::now();
        signal.emit(asio::cancellation_type::terminal);
        EXPECT_TRUE(co_await eventually([&] { return finished; }, 1s, 1ms));
        EXPECT_FALSE(got_result);
        EXPECT_LT(finished_at - cancelled_at, 500ms);
        EXPECT_TRUE(cancel_error.has_value());
        if (cancel_error) {
          EXPECT_EQ(cancel_error->kind(), ts::ErrorKind::cancelled) << describe(cancel_error);
        }
        EXPECT_EQ(client.stats().cancellations, 1u);

        // Many other callers, each checking its own value, right after the cancellation.
        constexpr int kCallers = 100;
        constexpr int kPerCaller = 5;
        int done = 0, wrong = 0, errors = 0;
        Clock::duration slowest{};
        for (int c = 0; c < kCallers; ++c) {
          asio::co_spawn(
              io,
              [&, c]() -> asio::awaitable<void> {
                for (int i = 0; i < kPerCaller; ++i) {
                  const std::int32_t value = c * 100 + i;
                  const auto start = Clock::now();
                  const auto got =
                      co_await client.query_value<std::int32_t>("SELECT $1::int4", value);
                  slowest = std::max(slowest, Clock::now() - start);
                  if (got != value) ++wrong;
                }
              },
              [&](std::exception_ptr e) {
                if (e) ++errors;
                ++done;
              });
        }
        // F09 in docs/failure-modes.md: the cancelled statement is cancelled on the server (or its
        // connection closed), well before its 2 s would be up.
        const bool stopped_on_server =
            co_await eventually([&] { return backends(app, "pg_sleep(2)") == 0; }, 1s, 20ms);
        EXPECT_TRUE(stopped_on_server)
            << "the cancelled statement still runs on the server "
            << elapsed_ms(cancelled_at).count() << " ms after the caller cancelled it";
        EXPECT_TRUE(co_await eventually([&] { return done == kCallers; }, 5s));
        EXPECT_EQ(wrong, 0);
        EXPECT_EQ(errors, 0);
        // Nobody waits for the abandoned statement (it would take up to 2 s).
        EXPECT_LT(slowest, 1s)
            << "slowest caller after the cancellation: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count() << " ms";
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 5"), 5);
        co_await client.close();
      },
      30s);
}

// A client-side timeout (QueryOptions::timeout + network margin): the caller gets
// request_timeout within bound, the connection is discarded and replaced, and the statement
// is cancelled on the server (no backend still runs it), later queries get their own results.
TEST(PgFault, F09_timed_out_query_cancelled_on_server) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f09");
  const std::string app = "ts_f09_timeout";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(servers.postgres_dsn(db), app);
        config.network_timeout_margin = 100ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        const auto before = client.stats();

        const auto start = Clock::now();
        const auto error = co_await error_of(
            client.query(ts::pg::QueryOptions{200ms}, "SELECT -1::int4 FROM pg_sleep(5)"));
        const auto took = elapsed_ms(start);
        EXPECT_TRUE(error.has_value());
        if (error) {
          EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::request_timeout))
              << describe(error);
          EXPECT_EQ(error->kind(), ts::ErrorKind::outcome_unknown) << describe(error);
        }
        EXPECT_GE(took, 250ms);
        EXPECT_LT(took, 1000ms);
        const auto after = client.stats();
        EXPECT_EQ(after.timeouts, before.timeouts + 1);
        EXPECT_EQ(after.failures, before.failures + 1);
        EXPECT_GE(after.discarded, before.discarded + 1);

        // The server-side statement was cancelled: no backend of ours runs it any more.
        EXPECT_TRUE(
            co_await eventually([&] { return backends(app, "pg_sleep(5)") == 0; }, 2s, 20ms))
            << "pg_sleep(5) still running on the server";
        // The pool replaced the discarded connection; the server sees exactly the pool.
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));
        EXPECT_TRUE(co_await eventually([&] { return backends(app) == 2; }, 3s, 20ms))
            << "backends of the client: " << backends(app);

        int wrong = 0;
        for (std::int32_t v = 0; v < 50; ++v) {
          if (co_await client.query_value<std::int32_t>("SELECT $1::int4", v) != v) ++wrong;
        }
        EXPECT_EQ(wrong, 0);
        co_await client.close();
      },
      30s);
}

// ---- F10 shutdown while a connection is checked out ---------------------------------------

struct F10Outcome {
  bool done = false;
  std::optional<ts::Error> error;
  bool other_exception = false;
};

/// Starts a transaction whose body runs `body`, waits until the connection is checked out,
/// closes the client (close_timeout 300 ms) and checks that close() returns within ~1 s, the
/// transaction caller gets a cancellation error, and nothing is left (descriptors, server
/// connections).
void run_f10(const std::string& app,
             std::function<asio::awaitable<void>(ts::pg::Transaction&)> body,
             const std::string& running_like) {
  auto& servers = Servers::instance();
  const std::string db = servers.create_database("ts_fault_f10");
  const std::string dsn = servers.postgres_dsn(db);
  // Nothing of an earlier run is left; the descriptor baseline is taken before the client.
  EXPECT_TRUE(wait_backends(app, 0, 5s));
  const int fds_before = open_descriptors();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = config_for(dsn, app);
        config.close_timeout = 300ms;
        PostgresClient client(io.get_executor(), config);
        co_await client.start();
        EXPECT_TRUE(co_await pool_full(client, 2, 5s));

        auto outcome = std::make_shared<F10Outcome>();
        asio::co_spawn(io, client.transaction(body), [outcome](std::exception_ptr e) {
          outcome->done = true;
          try {
            if (e) std::rethrow_exception(e);
          } catch (const ts::Error& error) {
            outcome->error = error;
          } catch (...) {
            outcome->other_exception = true;
          }
        });
        EXPECT_TRUE(co_await eventually([&] { return client.stats().exclusive == 1; }, 3s));
        if (!running_like.empty()) {
          EXPECT_TRUE(
              co_await eventually([&] { return backends(app, running_like) == 1; }, 3s, 20ms));
        }
        co_await pause_for(100ms);

        const auto start = Clock::now();
        co_await client.close();
        const auto took = elapsed_ms(start);
        EXPECT_LT(took, 1000ms) << "close() took " << took.count() << " ms (close_timeout 300)";
        EXPECT_TRUE(co_await eventually([&] { return outcome->done; }, 5s));
        EXPECT_FALSE(outcome->other_exception);
        EXPECT_TRUE(outcome->error.has_value()) << "the transaction did not fail";
        if (outcome->error) {
          EXPECT_EQ(outcome->error->kind(), ts::ErrorKind::cancelled) << describe(outcome->error);
          const auto code = outcome->error->code();
          EXPECT_TRUE(code == ts::make_error_code(ts::errc::client_closed) ||
                      code == ts::make_error_code(ts::errc::cancelled))
              << describe(outcome->error);
        }
        EXPECT_EQ(client.stats().connections, 0u);
        EXPECT_EQ(client.stats().exclusive, 0u);
      },
      30s);
  EXPECT_EQ(open_descriptors(), fds_before);
  // No server connection is left, and the statement in flight was cancelled on the server
  // (a backend in pg_sleep would outlive its closed socket until the sleep ends).
  EXPECT_TRUE(wait_backends(app, 0, 2s)) << "backends left: " << backends(app);
}

TEST(PgFault, F10_close_cancels_checked_out_statement) {
  TS_SKIP_IF_EXTERNAL();
  run_f10(
      "ts_f10_statement",
      [](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT pg_sleep(10)");
      },
      "pg_sleep(10)");
}

// The body awaits something that is not the client's (an Asio timer of 3 s): close() must
// still return within its timeout, the body's caller failing with a cancellation error.
TEST(PgFault, F10_close_cancels_transaction_body_awaiting_timer) {
  TS_SKIP_IF_EXTERNAL();
  run_f10(
      "ts_f10_timer",
      [](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT 1");
        co_await pause_for(3s);
        co_await tx.execute("SELECT 2");
      },
      "");
}

}  // namespace

// PostgresClient against a real PostgreSQL 15, directly and through PgBouncer in transaction
// pooling mode (every test runs on both).
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>

#include "support/async_test.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::pg::PostgresClient;

namespace {

enum class Route { direct, pgbouncer };

std::string route_name(Route r) {
  return r == Route::direct ? "direct" : "pgbouncer";
}

using ts::testing::open_descriptors;

/// Polls `condition` every 5 ms until it holds or 5 s pass (no bare sleeps).
asio::awaitable<bool> eventually(std::function<bool()> condition) {
  return ts::testing::eventually(std::move(condition), 5s, 5ms);
}

class PostgresClientTest : public ::testing::TestWithParam<Route> {
 protected:
  static void SetUpTestSuite() {
    auto& servers = ts::testing::Servers::instance();
    servers.create_database("pg_client_test");
  }

  ts::pg::PostgresConfig config(const std::string& app = "pg_client_test") const {
    auto& servers = ts::testing::Servers::instance();
    ts::pg::PostgresConfig c;
    c.dsn = GetParam() == Route::direct ? servers.postgres_dsn("pg_client_test")
                                        : servers.pgbouncer_dsn("pg_client_test");
    c.application_name = app;
    c.statement_timeout = 10s;
    c.startup_timeout = 10s;
    return c;
  }

  /// Connections with this application_name seen by the server (direct connection).
  static long server_connections(const std::string& app) {
    auto& servers = ts::testing::Servers::instance();
    PGconn* c = PQconnectdb(servers.postgres_dsn("postgres").c_str());
    const std::string sql =
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app + "'";
    PGresult* r = PQexec(c, sql.c_str());
    long n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) n = std::stol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
  }

  static bool wait_server_connections(const std::string& app, long expected,
                                      std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (server_connections(app) == expected) return true;
      std::this_thread::sleep_for(20ms);  // polling a condition with a deadline
    }
    return server_connections(app) == expected;
  }
};

TEST_P(PostgresClientTest, StartQueryClose) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    co_await client.start();  // idempotent
    EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT $1::int8 + 1", std::int64_t{41}),
              42);
    auto row = co_await client.query_one("SELECT 'a'::text AS x, 2::int4 AS y");
    EXPECT_TRUE(row.has_value());
    if (row) {
      EXPECT_EQ(row->get<std::string>("x"), "a");
      EXPECT_EQ(row->get<std::int32_t>(1), 2);
    }
    EXPECT_FALSE((co_await client.query_one("SELECT 1 WHERE false")).has_value());
    co_await client.close();
    co_await client.close();  // idempotent
    EXPECT_THROW(co_await client.query("SELECT 1"), ts::Error);
  });
}

TEST_P(PostgresClientTest, EveryParameterTypeRoundTrips) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::string table = "types_" + route_name(GetParam());
    co_await client.execute(ts::pg::Sql(("DROP TABLE IF EXISTS " + table).c_str()));
    const std::string create = "CREATE TABLE " + table +
                               " (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, b bool, t "
                               "text, n numeric, by bytea, ts timestamptz)";
    co_await client.execute(create);
    const auto now =
        std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
    const std::string bytes("a\0b\r\n\xff", 6);
    const std::string insert = "INSERT INTO " + table + " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)";
    EXPECT_EQ(
        co_await client.execute(insert, std::int16_t{-7}, std::int32_t{123456},
                                std::int64_t{-9000000000LL}, 1.5f, 2.25, true, std::string("héllo"),
                                ts::pg::Numeric{"12345.6789"}, ts::pg::Bytea{bytes}, now),
        1);
    const std::string select = "SELECT * FROM " + table;
    auto row = co_await client.query_one(select);
    EXPECT_TRUE(row.has_value());
    if (row) {
      EXPECT_EQ(row->get<std::int16_t>("i2"), -7);
      EXPECT_EQ(row->get<std::int32_t>("i4"), 123456);
      EXPECT_EQ(row->get<std::int64_t>("i8"), -9000000000LL);
      EXPECT_EQ(row->get<float>("f4"), 1.5f);
      EXPECT_EQ(row->get<double>("f8"), 2.25);
      EXPECT_EQ(row->get<bool>("b"), true);
      EXPECT_EQ(row->get<std::string>("t"), "héllo");
      EXPECT_EQ(row->get<std::string>("n"), "12345.6789");
      EXPECT_EQ(row->get<ts::pg::Bytea>("by").as_string_view(), bytes);
      EXPECT_EQ(row->get<std::chrono::system_clock::time_point>("ts"), now);
    }
    // NULLs: optional parameters and results.
    const std::string insert_nulls = "INSERT INTO " + table + " (i4, t) VALUES ($1, $2)";
    co_await client.execute(insert_nulls, std::optional<std::int32_t>{},
                            std::optional<std::string>{});
    const std::string select_nulls = "SELECT i4, t FROM " + table + " WHERE i4 IS NULL";
    auto nulls = co_await client.query_one(select_nulls);
    EXPECT_TRUE(nulls.has_value());
    if (nulls) {
      EXPECT_FALSE(nulls->get<std::optional<std::int32_t>>(0).has_value());
      EXPECT_FALSE(nulls->get<std::optional<std::string>>(1).has_value());
      EXPECT_THROW((void)nulls->get<std::int32_t>(0), ts::Error);
    }
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, EmptyAndLargeResults) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    auto empty = co_await client.query("SELECT 1 WHERE false");
    EXPECT_TRUE(empty.empty());
    auto large =
        co_await client.query("SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g");
    EXPECT_EQ(large.size(), 200000u);
    std::int64_t sum = 0;
    for (auto r : large) sum += r.get<std::int32_t>(0);
    EXPECT_EQ(sum, 200000LL * 200001LL / 2);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, ErrorsArePermanentAndCarryServerData) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    try {
      co_await client.query("SELEC 1");
      ADD_FAILURE() << "expected a syntax error";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.kind(), ts::ErrorKind::permanent);
      EXPECT_EQ(e.server().value_or(ts::ServerError{}).code, ts::pg::sqlstate::syntax_error);
    }
    // The connection is still usable afterwards.
    EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 7"), 7);
    // Session state is refused under transaction pooling (F12).
    EXPECT_THROW(co_await client.execute("SET search_path = public"), ts::Error);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, ConcurrentCallersGetTheirOwnResults) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    int done = 0, wrong = 0;
    asio::steady_timer all_done(io, std::chrono::steady_clock::time_point::max());
    constexpr int kCallers = 50, kPerCaller = 40;
    for (int c = 0; c < kCallers; ++c) {
      asio::co_spawn(
          io,
          [&, c]() -> asio::awaitable<void> {
            for (int i = 0; i < kPerCaller; ++i) {
              const std::int64_t v = c * 1000 + i;
              if (co_await client.query_value<std::int64_t>("SELECT $1::int8", v) != v) ++wrong;
            }
          },
          [&](std::exception_ptr e) {
            if (e) ++wrong;
            if (++done == kCallers) all_done.cancel();
          });
    }
    boost::system::error_code ec;
    co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(client.stats().queries, static_cast<std::uint64_t>(kCallers * kPerCaller));
    EXPECT_LE(client.stats().connections, 2u);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, TransactionCommitsAndRollsBack) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::string table = "tx_" + route_name(GetParam());
    const std::string drop = "DROP TABLE IF EXISTS " + table;
    const std::string create = "CREATE TABLE " + table + " (id int primary key)";
    const std::string insert = "INSERT INTO " + table + " VALUES ($1)";
    const std::string count = "SELECT count(*) FROM " + table;
    co_await client.execute(drop);
    co_await client.execute(create);
    const int committed =
        co_await client.transaction([&](ts::pg::Transaction& tx) -> asio::awaitable<int> {
          co_await tx.execute(insert, 1);
          co_await tx.execute(insert, 2);
          co_await tx.execute("SET LOCAL lock_timeout = 1000");  // transaction-scoped: allowed
          co_return 2;
        });
    EXPECT_EQ(committed, 2);
    EXPECT_THROW(co_await client.transaction([&](ts::pg::Transaction& tx) -> asio::awaitable<void> {
      co_await tx.execute(insert, 3);
      co_await tx.execute(insert, 1);  // duplicate key: the whole transaction rolls back
    }),
                 ts::Error);
    EXPECT_THROW(co_await client.transaction([&](ts::pg::Transaction& tx) -> asio::awaitable<void> {
      co_await tx.execute(insert, 4);
      throw std::runtime_error("business rule failed");
    }),
                 std::runtime_error);
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), 2);
    EXPECT_EQ(client.stats().exclusive, 0u);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, PipelineWithFailingMiddleStatement) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::string table = "pipe_" + route_name(GetParam());
    co_await client.execute(ts::pg::Sql(("DROP TABLE IF EXISTS " + table).c_str()));
    const std::string create = "CREATE TABLE " + table + " (id int primary key)";
    co_await client.execute(create);
    const std::string insert = "INSERT INTO " + table + " VALUES ($1)";
    const std::string count = "SELECT count(*) FROM " + table;

    ts::pg::Pipeline independent;
    independent.add(insert, 1).add("SELECT 1/0").add(insert, 2);
    auto results = co_await client.pipeline(independent);
    EXPECT_EQ(results.size(), 3u);
    EXPECT_TRUE(results[0].ok());
    EXPECT_FALSE(results[1].ok());
    EXPECT_TRUE(results[2].ok());
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), 2);

    ts::pg::Pipeline atomic;
    atomic.add(insert, 10).add("SELECT 1/0").add(insert, 11);
    auto atomic_results = co_await client.pipeline(atomic, ts::pg::PipelineMode::atomic);
    EXPECT_EQ(atomic_results.size(), 3u);
    EXPECT_FALSE(atomic_results[1].ok());
    EXPECT_FALSE(atomic_results[2].ok());
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), 2);  // 10 rolled back
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, CloseLeavesNoSocketEvenWithWorkInFlight) {
  const int fds_before = open_descriptors();
  const std::string app = "pg_close_" + route_name(GetParam());
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    auto c = config(app);
    c.close_timeout = 300ms;
    c.acquire_timeout = 5s;
    PostgresClient client(io.get_executor(), c);
    co_await client.start();
    int finished = 0;
    // Long queries in flight, a transaction holding a connection, and waiters queued.
    for (int i = 0; i < 4; ++i) {
      asio::co_spawn(io, client.query("SELECT pg_sleep(5)"),
                     [&](std::exception_ptr, ts::pg::Result) { ++finished; });
    }
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(io, client.transaction([](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT pg_sleep(5)");
      }),
                     [&](std::exception_ptr) { ++finished; });
    }
    // Wait (bounded) until the work is really in place: both connections busy with
    // statements or leased, and the remaining transactions queued as waiters.
    const bool in_place = co_await eventually([&] {
      const auto s = client.stats();
      return s.in_flight + s.exclusive >= 2 && s.waiters >= 1;
    });
    EXPECT_TRUE(in_place) << "work never got in flight";
    const auto start = std::chrono::steady_clock::now();
    co_await client.close();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_TRUE(co_await eventually([&] { return finished == 7; }))
        << finished << " of 7 callers finished";
  });
  EXPECT_EQ(open_descriptors(), fds_before);
  if (GetParam() == Route::direct) {
    EXPECT_TRUE(wait_server_connections(app, 0, 10s));
  }
}

TEST_P(PostgresClientTest, ExecuteResilientlyAndPerCallTimeout) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    auto cfg = config();
    cfg.network_timeout_margin = 100ms;
    PostgresClient client(io.get_executor(), cfg);
    co_await client.start();
    int attempts = 0;
    const auto value = co_await client.execute_resiliently(
        [&](PostgresClient& c) {
          ++attempts;
          return c.query_value<std::int64_t>("SELECT $1::int8 * 2", std::int64_t{21});
        },
        ts::core::Idempotent::yes);
    EXPECT_EQ(value, 42);
    EXPECT_EQ(attempts, 1);
    // A per-call timeout overrides the configured statement timeout.
    const auto start = std::chrono::steady_clock::now();
    try {
      co_await client.query(ts::pg::QueryOptions{200ms}, "SELECT pg_sleep(3)");
      ADD_FAILURE() << "expected a timeout";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::errc::request_timeout);
      EXPECT_EQ(e.kind(), ts::ErrorKind::outcome_unknown);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);  // 200 ms + 100 ms margin
    EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 3"), 3);
    const auto stats = client.stats();
    EXPECT_EQ(stats.timeouts, 1u);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, CopyInManyRowsWithEveryType) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::string table = "copy_" + route_name(GetParam());
    co_await client.execute(ts::pg::Sql(("DROP TABLE IF EXISTS " + table).c_str()));
    const std::string create = "CREATE TABLE " + table +
                               " (ts timestamptz, symbol text, price float8, qty float8, id int8,"
                               " flag bool, note text)";
    co_await client.execute(create);
    using Row = std::tuple<std::chrono::system_clock::time_point, std::string, double, double,
                           std::int64_t, bool, std::optional<std::string>>;
    std::vector<Row> rows;
    const auto t0 =
        std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
    constexpr int kRows = 300000;  // several 1 MiB chunks
    rows.reserve(kRows);
    for (int i = 0; i < kRows; ++i) {
      rows.emplace_back(
          t0 + std::chrono::microseconds(i), std::string(i % 2 ? "BTCUSDT" : "ETHUSDT"),
          100.0 + i * 0.01, 0.5, std::int64_t{i}, i % 3 == 0,
          i % 5 == 0 ? std::optional<std::string>{} : std::optional<std::string>{"n"});
    }
    // Column lists are locals: GCC 12 cannot put a braced list inside a co_await expression.
    const std::vector<std::string_view> columns{"ts", "symbol", "price", "qty",
                                                "id", "flag",   "note"};
    EXPECT_EQ(co_await client.copy_in(table, columns, rows), kRows);
    const std::string check = "SELECT count(*), sum(id), count(note), min(ts) FROM " + table;
    auto row = co_await client.query_one(check);
    EXPECT_TRUE(row.has_value());
    if (row) {
      EXPECT_EQ(row->get<std::int64_t>(0), kRows);
      EXPECT_EQ(row->get<std::int64_t>(1), std::int64_t{kRows} * (kRows - 1) / 2);
      EXPECT_EQ(row->get<std::int64_t>(2), kRows - kRows / 5);
      EXPECT_EQ(row->get<std::chrono::system_clock::time_point>(3), t0);
    }
    // A COPY into a missing table fails permanently and leaves the client usable.
    try {
      const std::vector<std::tuple<std::int32_t>> one_row{std::tuple<std::int32_t>{1}};
      const std::vector<std::string_view> one_column{"a"};
      co_await client.copy_in("no_such_table", one_column, one_row);
      ADD_FAILURE() << "expected an error";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.kind(), ts::ErrorKind::permanent);
      EXPECT_EQ(e.server().value_or(ts::ServerError{}).code, ts::pg::sqlstate::undefined_table);
    }
    EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 5"), 5);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, CopyIntoStagingTableInsideTransaction) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::string table = "stage_target_" + route_name(GetParam());
    co_await client.execute(ts::pg::Sql(("DROP TABLE IF EXISTS " + table).c_str()));
    const std::string create = "CREATE TABLE " + table + " (id int8 primary key, name text)";
    co_await client.execute(create);
    const std::string seed = "INSERT INTO " + table + " VALUES (1, 'old')";
    co_await client.execute(seed);
    const std::string merge =
        "INSERT INTO " + table + " SELECT * FROM stage ON CONFLICT DO NOTHING";
    std::vector<std::tuple<std::int64_t, std::string>> rows;
    for (std::int64_t i = 0; i < 1000; ++i) rows.emplace_back(i, "n" + std::to_string(i));
    const std::vector<std::string_view> columns = {"id", "name"};
    const auto inserted =
        co_await client.transaction([&](ts::pg::Transaction& tx) -> asio::awaitable<std::int64_t> {
          co_await tx.execute("CREATE TEMP TABLE stage (id int8, name text) ON COMMIT DROP");
          const std::int64_t copied = co_await tx.copy_in("stage", columns, rows);
          EXPECT_EQ(copied, 1000);
          co_return co_await tx.execute(merge);
        });
    EXPECT_EQ(inserted, 999);  // id 1 was there
    const std::string count = "SELECT count(*) FROM " + table;
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), 1000);
    // A COPY the server refuses (no such table) fails the transaction with its error; the
    // client goes on.
    try {
      co_await client.transaction([&](ts::pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.copy_in("no_such_stage", columns, rows);
      });
      ADD_FAILURE() << "expected 42P01";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.server().value_or(ts::ServerError{}).code, ts::pg::sqlstate::undefined_table);
    }
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), 1000);
    EXPECT_EQ(client.stats().exclusive, 0u);
    co_await client.close();
  });
}

TEST_P(PostgresClientTest, ArrayParametersRoundTrip) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), config());
    co_await client.start();
    const std::vector<std::int64_t> ids = {1, -2, 3000000000};
    auto row = co_await client.query_one(
        "SELECT cardinality($1), ($1)[2], ($1)[3], pg_typeof($1)::text", ids);
    EXPECT_TRUE(row.has_value());
    if (row) {
      EXPECT_EQ(row->get<std::int32_t>(0), 3);
      EXPECT_EQ(row->get<std::int64_t>(1), -2);
      EXPECT_EQ(row->get<std::int64_t>(2), 3000000000);
      EXPECT_EQ(row->get<std::string>(3), "bigint[]");
    }
    const std::vector<std::string> texts = {"a", "b\"c,{}", ""};
    EXPECT_EQ(co_await client.query_value<std::string>("SELECT ($1::text[])[2]", texts), "b\"c,{}");
    EXPECT_EQ(co_await client.query_value<std::string>("SELECT ($1::text[])[3]", texts), "");
    const std::vector<std::string_view> views = {"x", "y"};
    EXPECT_EQ(co_await client.query_value<std::string>("SELECT array_to_string($1, '+')", views),
              "x+y");
    const std::vector<double> doubles = {1.5, -0.25};
    EXPECT_EQ(co_await client.query_value<double>("SELECT ($1::float8[])[2]", doubles), -0.25);
    const std::vector<std::int32_t> ints = {7, 8};
    const std::vector<std::int16_t> shorts = {9};
    const std::vector<bool> bools = {true, false};
    EXPECT_EQ(co_await client.query_value<std::int64_t>(
                  "SELECT ($1::int4[])[2] + ($2::int2[])[1] + (CASE WHEN ($3::bool[])[1] AND NOT "
                  "($3::bool[])[2] THEN 100 ELSE 0 END)",
                  ints, shorts, bools),
              117);
    const auto t = std::chrono::sys_seconds{std::chrono::seconds(1704067200)} +
                   std::chrono::microseconds(123456);
    const std::vector<std::chrono::system_clock::time_point> times = {
        std::chrono::time_point_cast<std::chrono::system_clock::duration>(t)};
    EXPECT_EQ(co_await client.query_value<std::string>(
                  "SELECT to_char(($1::timestamptz[])[1] AT TIME ZONE 'UTC', "
                  "'YYYY-MM-DD HH24:MI:SS.US')",
                  times),
              "2024-01-01 00:00:00.123456");
    const std::vector<std::int64_t> none;
    EXPECT_EQ(
        co_await client.query_value<std::int64_t>("SELECT coalesce(cardinality($1), -1)", none), 0);
    const std::span<const std::int64_t> span(ids.data(), 2);
    EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT sum(x) FROM unnest($1) AS x", span),
              -1);
    co_await client.close();
  });
}

// ---- statement cache (PostgresConfig::statement_cache_size; direct connections only) -------

ts::pg::PostgresConfig cache_config(std::size_t cache_size) {
  auto& servers = ts::testing::Servers::instance();
  servers.create_database("pg_client_test");
  ts::pg::PostgresConfig c;
  c.dsn = servers.postgres_dsn("pg_client_test");
  c.application_name = "pg_cache_test";
  c.statement_timeout = 10s;
  c.startup_timeout = 10s;
  c.min_size = 1;
  c.max_size = 1;  // one session: pg_prepared_statements shows the cache
  c.pgbouncer_transaction_mode = false;
  c.statement_cache_size = cache_size;
  return c;
}

std::string server_code(const ts::Error& e) {
  return e.server().value_or(ts::ServerError{}).code;
}

TEST(PostgresStatementCache, StatementsArePreparedOnceAndErrorsStayTheirs) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), cache_config(8));
    co_await client.start();
    for (std::int64_t i = 0; i < 5; ++i) {
      EXPECT_EQ(co_await client.query_value<std::int64_t>("SELECT $1::int8 + 1", i), i + 1);
    }
    // Same text, other parameter types: another statement.
    EXPECT_EQ(co_await client.query_value<std::string>("SELECT $1::text", std::string("x")), "x");
    EXPECT_EQ(co_await client.query_value<std::string>("SELECT $1::text", std::int32_t{7}), "7");
    // The two SELECT $1::text, the int8 one and this one (prepared before it runs).
    EXPECT_EQ(co_await client.query_value<std::int64_t>(
                  "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'ts\\_%'"),
              4);
    // A statement that does not parse fails with its own error, every time, and the
    // connection stays usable.
    for (int i = 0; i < 2; ++i) {
      try {
        co_await client.query("SELEC 1");
        ADD_FAILURE() << "expected a syntax error";
      } catch (const ts::Error& e) {
        EXPECT_EQ(server_code(e), ts::pg::sqlstate::syntax_error);
      }
    }
    EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 7"), 7);
    // An atomic pipeline whose first statement fails: the Parse of the next one is skipped,
    // and the statement is prepared on its next use.
    ts::pg::Pipeline atomic;
    atomic.add("SELECT 1/0").add("SELECT $1::int4 * 3", 5);
    auto results = co_await client.pipeline(atomic, ts::pg::PipelineMode::atomic);
    EXPECT_FALSE(results[0].ok());
    EXPECT_FALSE(results[1].ok());
    EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT $1::int4 * 3", 5), 15);
    EXPECT_EQ(client.stats().discarded, 0u);
    co_await client.close();
  });
}

TEST(PostgresStatementCache, RefusedWithPgBouncerTransactionMode) {
  auto config = cache_config(8);
  config.pgbouncer_transaction_mode = true;
  asio::io_context io;
  EXPECT_THROW(PostgresClient(io.get_executor(), config), ts::Error);
}

TEST(PostgresStatementCache, FullCacheAndConcurrentCallers) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), cache_config(4));
    co_await client.start();
    // More statements than the cache holds: the others run unnamed.
    std::vector<std::string> texts;
    for (int k = 0; k < 10; ++k) texts.push_back("SELECT $1::int8 + " + std::to_string(k));
    for (int round = 0; round < 2; ++round) {
      for (int k = 0; k < 10; ++k) {
        EXPECT_EQ(co_await client.query_value<std::int64_t>(texts[k], std::int64_t{100}), 100 + k);
      }
    }
    // Many callers pipelined while the first Parse of their statement is in flight.
    int done = 0, wrong = 0;
    asio::steady_timer all_done(io, std::chrono::steady_clock::time_point::max());
    constexpr int kCallers = 50, kPerCaller = 20;
    for (int c = 0; c < kCallers; ++c) {
      asio::co_spawn(
          io,
          [&, c]() -> asio::awaitable<void> {
            for (int i = 0; i < kPerCaller; ++i) {
              const std::int64_t v = c * 1000 + i;
              if (co_await client.query_value<std::int64_t>("SELECT $1::int8 - 0", v) != v) {
                ++wrong;
              }
            }
          },
          [&](std::exception_ptr e) {
            if (e) ++wrong;
            if (++done == kCallers) all_done.cancel();
          });
    }
    boost::system::error_code ec;
    co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(co_await client.query_value<std::int64_t>(
                  "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'ts\\_%'"),
              4);
    co_await client.close();
  });
}

TEST(PostgresStatementCache, ResultTypeChangeFailsOnceThenPreparesAnew) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), cache_config(8));
    co_await client.start();
    co_await client.execute("DROP TABLE IF EXISTS cache_alter");
    co_await client.execute("CREATE TABLE cache_alter (a int4)");
    co_await client.execute("INSERT INTO cache_alter VALUES ($1)", std::int32_t{1});
    const char* select = "SELECT * FROM cache_alter WHERE a = $1";
    EXPECT_EQ((co_await client.query(select, std::int32_t{1})).columns(), 1u);
    co_await client.execute("ALTER TABLE cache_alter ADD COLUMN b int4");
    try {
      co_await client.query(select, std::int32_t{1});
      ADD_FAILURE() << "expected 0A000 (cached plan must not change result type)";
    } catch (const ts::Error& e) {
      EXPECT_EQ(server_code(e), ts::pg::sqlstate::feature_not_supported);
    }
    EXPECT_EQ((co_await client.query(select, std::int32_t{1})).columns(), 2u);
    EXPECT_EQ(client.stats().discarded, 0u);
    co_await client.execute("DROP TABLE cache_alter");
    co_await client.close();
  });
}

// The application's DEALLOCATE ALL drops the cached names (26000 once, then prepared anew);
// an unrelated 0A000 ("FOR UPDATE is not allowed with aggregate functions") leaves the cache
// alone: no statement is prepared again.
TEST(PostgresStatementCache, DroppedNamesArePreparedAnewUnrelatedErrorsKeepTheCache) {
  ts::testing::run_coroutine_test([&](asio::io_context& io) -> asio::awaitable<void> {
    PostgresClient client(io.get_executor(), cache_config(8));
    co_await client.start();
    const char* select = "SELECT $1::int4 + 1";
    const char* count = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'ts\\_%'";
    EXPECT_EQ(co_await client.query_value<std::int32_t>(select, std::int32_t{1}), 2);
    const auto prepared = co_await client.query_value<std::int64_t>(count);
    EXPECT_GE(prepared, 1);
    try {
      co_await client.query("SELECT count(*) FROM pg_class WHERE oid > $1::oid FOR UPDATE",
                            std::int32_t{0});
      ADD_FAILURE() << "expected 0A000 (FOR UPDATE with an aggregate)";
    } catch (const ts::Error& e) {
      EXPECT_EQ(server_code(e), ts::pg::sqlstate::feature_not_supported);
    }
    EXPECT_EQ(co_await client.query_value<std::int32_t>(select, std::int32_t{2}), 3);
    EXPECT_EQ(co_await client.query_value<std::int64_t>(count), prepared)
        << "an unrelated 0A000 made the connection prepare its statements again";
    co_await client.execute("DEALLOCATE ALL");
    try {
      co_await client.query_value<std::int32_t>(select, std::int32_t{3});
      ADD_FAILURE() << "expected 26000 (prepared statement does not exist)";
    } catch (const ts::Error& e) {
      EXPECT_EQ(server_code(e), ts::pg::sqlstate::invalid_sql_statement_name);
    }
    EXPECT_EQ(co_await client.query_value<std::int32_t>(select, std::int32_t{4}), 5);
    EXPECT_EQ(client.stats().discarded, 0u);
    co_await client.close();
  });
}

INSTANTIATE_TEST_SUITE_P(Routes, PostgresClientTest,
                         ::testing::Values(Route::direct, Route::pgbouncer),
                         [](const auto& p) { return route_name(p.param); });

}  // namespace

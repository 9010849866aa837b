// Fault tests of PostgresClient's connection set-up, against the harness's PostgreSQL and
// PgBouncer: a malformed DSN carrying a password (F50), a host list whose first address is
// refused or a black hole (F51), and a wrong password given to PgBouncer, which answers with
// its own authentication failure (F16 through PgBouncer).
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::ErrorKind;
using ts::pg::PostgresClient;
using ts::testing::describe;
using ts::testing::FaultProxy;
using ts::testing::LogCapture;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::Servers;
using ts::testing::fault::closing;
using ts::testing::fault::ScopeExit;

ts::pg::PostgresConfig connect_config(std::string dsn, std::string app) {
  auto c = ts::testing::fault::fast_pg_config(std::move(dsn), std::move(app));
  c.min_size = 2;
  c.connect_timeout = 2s;
  c.startup_timeout = 2s;
  c.reconnect_backoff = {50ms, 200ms, 2.0};
  c.retry = {};
  return c;
}

// ---- F50 no secret in errors or logs ---------------------------------------------------------

// DSNs that libpq cannot parse, each carrying the password where libpq's parse message would
// quote it (a token after the password, a URI it echoes whole, a bad percent-encoding in the
// password). Must hold: start() fails at once as invalid_argument (permanent), and neither
// its error nor anything the client logs contains the password.
TEST(PgFault, F50_malformed_dsn_never_shows_the_password) {
  TS_SKIP_IF_EXTERNAL();
  const std::string secret = "F50secretPW";
  const std::string port = std::to_string(Servers::instance().postgres().port());
  const std::vector<std::string> dsns = {
      "host=127.0.0.1 port=" + port + " user=postgres password=" + secret + " " + secret + "x",
      "postgresql://postgres:" + secret + "@[::1:" + port + "/postgres",
      "postgresql://postgres:" + secret + "%zz@127.0.0.1:" + port + "/postgres",
      "postgresql://postgres:" + secret + "@127.0.0.1:" + port + "/postgres?" + secret + "=1",
  };
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        for (const auto& dsn : dsns) {
          LogCapture log("pg");
          PostgresClient client(io.get_executor(), connect_config(dsn, "ts_f50"));
          const Outcome start = co_await outcome(client.start());
          EXPECT_TRUE(start.failed);
          EXPECT_EQ(start.code, ts::make_error_code(ts::errc::invalid_argument)) << describe(start);
          EXPECT_EQ(start.kind, ErrorKind::permanent) << describe(start);
          EXPECT_EQ(start.what.find(secret), std::string::npos)
              << "the password is in the error: " << start.what;
          co_await client.close();
          EXPECT_EQ(log.count(secret), 0u) << "the password was logged (DSN " << dsn << ")";
        }
      },
      30s);
}

// ---- F51 every address tried -----------------------------------------------------------------

// A host list whose first address refuses (PostgreSQL listens on 127.0.0.1 only, not on ::1):
// "host=::1,127.0.0.1". Must hold: start() succeeds, in under 1 s, with both connections on
// the second address; no connect attempt counted as failed.
TEST(PgFault, F51_next_address_tried_when_the_first_refuses) {
  TS_SKIP_IF_EXTERNAL();
  const std::string port = std::to_string(Servers::instance().postgres().port());
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(
            io.get_executor(),
            connect_config("host=::1,127.0.0.1 port=" + port + " user=postgres dbname=postgres",
                           "ts_f51_refused"));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          const Outcome start = co_await outcome(client.start());
          EXPECT_FALSE(start.failed) << describe(start);
          EXPECT_LT(start.elapsed, 1s) << describe(start);
          if (start.failed) co_return;
          EXPECT_EQ(co_await client.query_value<std::string>("SELECT host(inet_server_addr())"),
                    "127.0.0.1");
          EXPECT_EQ(client.stats().connections, 2u);
          EXPECT_EQ(client.stats().connect_failures, 0u);
        }());
      },
      30s);
}

// A host list whose first address is a black hole (a proxy that accepts and never answers),
// connect_timeout 2 s. Must hold: the second address is still tried within the connect
// deadline: start() (startup_timeout 2 s) succeeds in under 2.2 s.
TEST(PgFault, F51_next_address_tried_within_the_deadline_when_the_first_hangs) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy hole("127.0.0.1", Servers::instance().postgres().port());
  hole.start();
  hole.set_blackhole(true);
  ScopeExit restore([&] {
    hole.clear_faults();
    hole.cut_all();
  });
  const std::string dsn = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(hole.port()) + "," +
                          std::to_string(Servers::instance().postgres().port()) +
                          " user=postgres dbname=postgres";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = connect_config(dsn, "ts_f51_hole");
        config.min_size = 1;
        PostgresClient client(io.get_executor(), config);
        co_await closing(client, [&]() -> asio::awaitable<void> {
          const Outcome start = co_await outcome(client.start());
          EXPECT_FALSE(start.failed) << describe(start);
          EXPECT_LT(start.elapsed, 2200ms) << describe(start);
          if (start.failed) co_return;
          EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
          EXPECT_GE(hole.connections_accepted(), 1u) << "the first address was not tried";
        }());
      },
      30s);
}

// ---- F16 through PgBouncer: bad credentials --------------------------------------------------

// A wrong password for a role that PgBouncer authenticates itself (SCRAM; the harness's
// PgBouncer knows ts_secure's password): PgBouncer answers with its own failure ("SASL
// authentication failed", SQLSTATE 08P01). Must hold: start() fails as permanent in under 1 s
// after one attempt, without the password in its message, as the same mistake does directly
// against PostgreSQL (28P01); the right password then works through PgBouncer.
TEST(PgFault, F16_bad_password_through_pgbouncer_fails_start_at_once) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  const std::string bad_password = "f16-pgbouncer-not-the-password";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = connect_config(
            servers.pgbouncer_dsn_for(ts::testing::kSecureRole, bad_password, "postgres"),
            "ts_f16_pgbouncer_auth");
        config.startup_timeout = 10s;
        config.connect_timeout = 5s;
        PostgresClient bad(io.get_executor(), config);
        const Outcome start = co_await outcome(bad.start());
        EXPECT_TRUE(start.failed);
        EXPECT_LT(start.elapsed, 1s) << describe(start);
        EXPECT_EQ(start.kind, ErrorKind::permanent) << describe(start);
        EXPECT_EQ(start.what.find(bad_password), std::string::npos)
            << "the password is in the message";
        EXPECT_EQ(bad.stats().connect_failures, 1u) << "start() made more than one attempt";
        co_await bad.close();

        config.dsn = servers.pgbouncer_dsn_for(ts::testing::kSecureRole,
                                               ts::testing::kSecurePassword, "postgres");
        PostgresClient good(io.get_executor(), config);
        co_await closing(good, [&]() -> asio::awaitable<void> {
          co_await good.start();
          EXPECT_EQ(co_await good.query_value<std::string>("SELECT current_user::text"),
                    ts::testing::kSecureRole);
        }());
      },
      30s);
}

}  // namespace

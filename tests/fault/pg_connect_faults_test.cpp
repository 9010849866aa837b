// Fault tests of PostgresClient's connection set-up, against the harness's PostgreSQL and
// PgBouncer: a malformed DSN carrying a password (F50), a host list whose first address is
// refused or a black hole (F51), and a wrong password given to PgBouncer, which answers with
// its own authentication failure (F16 through PgBouncer), and a PostgreSQL restart met by 30
// clients whose reconnects must be capped and spread by jitter (F34).
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
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
using ts::testing::fault::expect_reconnects_capped_and_spread;
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

// ---- F34 server restart with many clients ------------------------------------------------------

namespace {

/// F34 for PostgresClient: 30 clients of one connection each, reconnect backoff base 25 ms
/// doubling to an 800 ms cap (full jitter: uniform in [0, ceiling]).
constexpr std::size_t kF34Clients = 30;
constexpr std::chrono::milliseconds kF34Base{25};
constexpr std::chrono::milliseconds kF34Cap{800};
/// The bound every reconnect must meet after the server is back: the cap + a margin for
/// PostgreSQL's startup and 30 backend forks on a loaded machine.
constexpr std::chrono::milliseconds kF34Bound{kF34Cap + std::chrono::milliseconds(700)};
/// The server stays down until every client has failed this many reconnects. The wait after
/// failure n has the ceiling base * 2^(n-1): 9 failures put every client in a wait whose
/// UNCAPPED ceiling would be 6.4 s, four times the bound, so without the cap about half of
/// the clients would reconnect after the bound (all 30 within it: odds below 1e-8). A missing
/// cap fails by design, not by chance.
constexpr std::uint64_t kF34Failures = 9;

struct F34Shared {
  std::atomic<bool> ready{false};
  std::atomic<bool> stopped{false};
  std::atomic<bool> deep_enough{false};
  std::atomic<bool> up{false};
  std::atomic<Clock::rep> up_at{0};
};

asio::awaitable<void> f34_body(std::vector<std::unique_ptr<PostgresClient>>& clients,
                               F34Shared& shared) {
  using ts::testing::fault::eventually;
  for (auto& c : clients) co_await c->start();
  for (auto& c : clients) EXPECT_EQ(co_await c->query_value<std::int32_t>("SELECT 1"), 1);
  shared.ready = true;
  EXPECT_TRUE(co_await eventually([&] { return shared.stopped.load(); }, 30s));
  const bool deep = co_await eventually(
      [&] {
        return std::all_of(clients.begin(), clients.end(), [](const auto& c) {
          const auto s = c->stats();
          return s.discarded >= 1 && s.connect_failures >= kF34Failures;
        });
      },
      20s);
  EXPECT_TRUE(deep) << "not every client failed " << kF34Failures << " reconnects";
  // The server is down: nobody can reconnect before the main thread starts it again, so
  // polling starts now and catches the first reconnects however soon they come.
  std::vector<std::uint64_t> connects_before;
  for (const auto& c : clients) connects_before.push_back(c->stats().connects);
  shared.deep_enough = true;
  std::vector<std::optional<Clock::time_point>> reconnected(clients.size());
  const bool all = co_await eventually(
      [&] {
        const auto now = Clock::now();
        bool every = true;
        for (std::size_t i = 0; i < clients.size(); ++i) {
          if (!reconnected[i] && clients[i]->stats().connects > connects_before[i]) {
            reconnected[i] = now;
          }
          every = every && reconnected[i].has_value();
        }
        return every;
      },
      40s, 1ms);
  EXPECT_TRUE(all) << "not every client reconnected within 40 s";
  EXPECT_TRUE(co_await eventually([&] { return shared.up.load(); }, 5s));
  const Clock::time_point back{Clock::duration{shared.up_at.load()}};
  std::vector<double> times;
  for (const auto& t : reconnected) {
    if (t) times.push_back(std::chrono::duration<double, std::milli>(*t - back).count());
  }
  EXPECT_EQ(times.size(), clients.size());
  expect_reconnects_capped_and_spread(std::move(times), static_cast<double>(kF34Cap.count()),
                                      static_cast<double>(kF34Bound.count()), "PostgresClients");
  // Every client serves again.
  for (auto& c : clients) {
    const Outcome o = co_await outcome(c->query_value<std::int32_t>("SELECT 2"));
    EXPECT_FALSE(o.failed) << describe(o);
  }
}

}  // namespace

// 30 PostgresClients (one connection each) on one loop, connected directly to PostgreSQL; the
// server is stopped (fast shutdown: every session ends at once, 57P01) and kept down until
// every client has failed 9 reconnects, then started again. Each client's reconnect time is
// when its `connects` counter moves (polled every millisecond), relative to the moment start()
// returned (the server accepts connections).
// - Capped: every client reconnects within cap (800 ms) + 700 ms after the server is back. At 9
//   failures an uncapped ceiling would be 6.4 s: about half the clients would miss the bound.
// - Spread: the reconnect times span at least cap/4 (200 ms) with a standard deviation of at
//   least cap/16 (50 ms). Without jitter the clients, which lost their connections in the same
//   instant and fail in lockstep against a refused port, would reconnect within milliseconds
//   of each other.
TEST(PgFault, F34_postgres_restart_reconnects_spread_by_jitter_and_capped) {
  TS_SKIP_IF_EXTERNAL();
  auto& servers = Servers::instance();
  auto& postgres = servers.postgres();
  const std::string dsn = servers.postgres_dsn("postgres");
  F34Shared shared;
  ScopeExit restart([&] {
    if (!postgres.running()) postgres.start();
  });
  // 30 clients x 9+ failures would log some 300 warnings.
  auto logger = ts::core::logger("pg");
  const auto old_level = logger->level();
  logger->set_level(spdlog::level::err);
  ScopeExit loud([&] { logger->set_level(old_level); });
  ts::testing::fault::BackgroundLoop loop(60s, [&](asio::io_context& io) -> asio::awaitable<void> {
    std::vector<std::unique_ptr<PostgresClient>> clients;
    for (std::size_t i = 0; i < kF34Clients; ++i) {
      auto config = ts::testing::fault::fast_pg_config(dsn, "ts_f34_" + std::to_string(i));
      config.min_size = 1;
      config.max_size = 1;
      config.reconnect_backoff = {kF34Base, kF34Cap, 2.0};
      clients.push_back(std::make_unique<PostgresClient>(io.get_executor(), config));
    }
    co_await closing(clients, f34_body(clients, shared));
  });
  const bool became_ready =
      ts::testing::poll_until([&] { return shared.ready || loop.done(); }, 30s);
  EXPECT_TRUE(became_ready && shared.ready);
  if (shared.ready) {
    postgres.stop();
    shared.stopped = true;
    EXPECT_TRUE(ts::testing::poll_until([&] { return shared.deep_enough || loop.done(); }, 25s));
    postgres.start();
    shared.up_at = Clock::now().time_since_epoch().count();
    shared.up = true;
  }
  loop.join();
}

// PostgreSQL over TLS (binary tls_fault_test, whose servers are TLS-only: ServerOptions::tls):
// PostgresClient with libpq's TLS (sslmode=verify-full, sslrootcert, client certificates),
// direct and through PgBouncer with TLS on both hops, against the harness's servers.
//
// F61 a wrong CA, a wrong host name, an expired certificate: start() fails at once with
//     tls_failed (permanent) naming the check; a running client's reconnects that fail so are
//     never counted by its breaker.
// F62 a TLS handshake that never completes: bounded by connect_timeout, the socket closed.
// F63 plaintext against the TLS-only server, TLS against a server with ssl=off: a clear error
//     saying which side wants what.
// F66 certificate rotation: a new server certificate (and CA, the client's sslrootcert file
//     replaced) is picked up by the pool's next connection, without restarting the client.
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/io_context.hpp>

#include "pg_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"
#include "support/tls_certs.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ts::ErrorKind;
using ts::pg::PostgresClient;
using ts::testing::describe;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::Servers;
using ts::testing::TestCertificates;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;
using ts::testing::fault::PgConn;
using ts::testing::fault::ScopeExit;

Servers& servers() {
  return Servers::instance();
}

const TestCertificates& certs() {
  return servers().tls_certificates();
}

/// Short timeouts: a refused handshake must end start() in well under a second.
ts::pg::PostgresConfig tls_config(std::string dsn, std::string app) {
  auto c = ts::testing::fault::fast_pg_config(std::move(dsn), std::move(app));
  c.connect_timeout = 2s;
  c.startup_timeout = 5s;
  c.reconnect_backoff = {20ms, 100ms, 2.0};
  c.retry = {};
  return c;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// start() of a client with `dsn` must fail at once (one attempt, well within the 5 s
/// start-up deadline) with a permanent error; returns how it failed.
asio::awaitable<Outcome> failed_start(asio::io_context& io, const std::string& dsn,
                                      const std::string& app) {
  PostgresClient client(io.get_executor(), tls_config(dsn, app));
  const Outcome start = co_await outcome(client.start());
  EXPECT_TRUE(start.failed) << "start() succeeded with " << dsn;
  EXPECT_EQ(start.kind, ErrorKind::permanent) << describe(start);
  EXPECT_LT(start.elapsed, 1500ms) << "retried instead of failing at once: " << describe(start);
  EXPECT_EQ(client.stats().connect_failures, 1u) << "start() made more than one attempt";
  EXPECT_EQ(client.stats().breaker, ts::core::CircuitState::closed);
  EXPECT_EQ(client.stats().breaker_trips, 0u);
  co_await client.close();
  co_return start;
}

/// Whether the session behind `client` (direct: its own backend; through PgBouncer: PgBouncer's
/// server connection) is TLS, as PostgreSQL's pg_stat_ssl says.
asio::awaitable<bool> session_is_tls(PostgresClient& client) {
  const auto ssl =
      co_await client.query_value<bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  co_return ssl;
}

/// The server certificate of the harness's PostgreSQL switched (and reloaded) for one test;
/// back to the harness's own when the test ends.
class ServerCertificate {
 public:
  ServerCertificate(const std::string& cert, const std::string& key) {
    servers().set_postgres_settings({{"ssl_cert_file", servers().postgres_tls_file(cert)},
                                     {"ssl_key_file", servers().postgres_tls_file(key)}});
  }
  ~ServerCertificate() {
    try {
      servers().set_postgres_settings({{"ssl_cert_file", ""}, {"ssl_key_file", ""}});
    } catch (const std::exception& e) {
      ADD_FAILURE() << "restoring the server certificate: " << e.what();
    }
  }
  ServerCertificate(const ServerCertificate&) = delete;
  ServerCertificate& operator=(const ServerCertificate&) = delete;
};

// ---- TLS works ---------------------------------------------------------------------------------

// The harness's DSNs (sslmode=verify-full, sslrootcert = the test CA). Must hold: a query
// works directly and through PgBouncer; the direct session is TLS, and so is PgBouncer's
// connection to PostgreSQL (its server_tls hop: pg_stat_ssl of the backend that runs the
// query sent through PgBouncer), and PgBouncer reports its client connection as TLS.
TEST(TlsPg, verify_full_works_direct_and_through_pgbouncer_on_both_hops) {
  TS_SKIP_IF_EXTERNAL();
  const std::string direct_dsn = servers().postgres_dsn();
  const std::string bouncer_dsn = servers().pgbouncer_dsn();
  EXPECT_TRUE(contains(direct_dsn, "sslmode=verify-full")) << direct_dsn;
  EXPECT_TRUE(contains(bouncer_dsn, "sslmode=verify-full")) << bouncer_dsn;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient direct(io.get_executor(), tls_config(direct_dsn, "ts_tls_direct"));
        auto bouncer_config = tls_config(bouncer_dsn, "ts_tls_bouncer");
        bouncer_config.pgbouncer_transaction_mode = true;
        PostgresClient bouncer(io.get_executor(), bouncer_config);
        co_await closing(direct, bouncer, [&]() -> asio::awaitable<void> {
          co_await direct.start();
          co_await bouncer.start();
          EXPECT_EQ(co_await direct.query_value<std::int32_t>("SELECT 41 + 1"), 42);
          EXPECT_TRUE(co_await session_is_tls(direct)) << "the direct session is not TLS";
          EXPECT_EQ(co_await bouncer.query_value<std::int32_t>("SELECT 41 + 1"), 42);
          EXPECT_TRUE(co_await session_is_tls(bouncer))
              << "PgBouncer's connection to PostgreSQL (server_tls) is not TLS";
        }());
      },
      30s);
  // PgBouncer's own view: its client connections (ours, and this console's) are TLS.
  PgConn console(servers().pgbouncer_admin_dsn());
  ASSERT_TRUE(console.ok()) << console.error();
  const auto clients = console.exec("SHOW CLIENTS");
  ASSERT_TRUE(clients) << console.last_error();
  const auto& columns = console.columns();
  const auto tls_column = std::find(columns.begin(), columns.end(), "tls") - columns.begin();
  ASSERT_LT(static_cast<std::size_t>(tls_column), columns.size()) << "no tls column";
  ASSERT_FALSE(clients->empty());
  for (const auto& row : *clients) {
    EXPECT_TRUE(contains(row[static_cast<std::size_t>(tls_column)], "TLS"))
        << "a client connection of PgBouncer is not TLS: '"
        << row[static_cast<std::size_t>(tls_column)] << "'";
  }
}

// ---- F61 ---------------------------------------------------------------------------------------

// sslrootcert = a CA that did not sign the server's certificate (libpq: the last keyword
// wins). Must hold, directly and through PgBouncer: start() fails at once, tls_failed
// (permanent), naming the certificate check and the root file, with libpq's text; the
// breaker untouched.
TEST(TlsPg, F61_wrong_ca_fails_start_at_once_naming_the_check) {
  TS_SKIP_IF_EXTERNAL();
  const std::string other_ca = " sslrootcert=" + certs().other_ca_cert;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        for (const auto& [dsn, app] :
             {std::pair{servers().postgres_dsn() + other_ca, std::string("ts_tls_f61_ca")},
              std::pair{servers().pgbouncer_dsn() + other_ca,
                        std::string("ts_tls_f61_ca_bouncer")}}) {
          const Outcome start = co_await failed_start(io, dsn, app);
          EXPECT_EQ(start.code, ts::make_error_code(ts::errc::tls_failed)) << describe(start);
          EXPECT_TRUE(contains(start.what, "TLS certificate check failed")) << start.what;
          EXPECT_TRUE(contains(start.what, "sslrootcert=" + certs().other_ca_cert)) << start.what;
          EXPECT_TRUE(contains(start.what, "certificate verify failed")) << start.what;
        }
      },
      30s);
}

// The server's certificate is for localhost and 127.0.0.1; the client connects to 127.0.0.1
// under another name (hostaddr=127.0.0.1 host=wrong.example). Must hold: host=localhost works;
// wrong.example fails at once with tls_failed naming the host name check and the name.
TEST(TlsPg, F61_wrong_host_name_fails_start_at_once_naming_the_check) {
  TS_SKIP_IF_EXTERNAL();
  const std::string base = servers().postgres_dsn();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient by_name(io.get_executor(),
                               tls_config(base + " host=localhost", "ts_tls_f61_localhost"));
        co_await closing(by_name, [&]() -> asio::awaitable<void> {
          co_await by_name.start();
          EXPECT_EQ(co_await by_name.query_value<std::int32_t>("SELECT 1"), 1);
        }());
        const Outcome start = co_await failed_start(
            io, base + " hostaddr=127.0.0.1 host=wrong.example", "ts_tls_f61_host");
        EXPECT_EQ(start.code, ts::make_error_code(ts::errc::tls_failed)) << describe(start);
        EXPECT_TRUE(contains(start.what, "TLS host name check failed")) << start.what;
        EXPECT_TRUE(contains(start.what, "\"wrong.example\"")) << start.what;
      },
      30s);
}

// The server switched to a certificate for wrong.example only (ALTER SYSTEM + reload). Must
// hold: the harness's DSN (127.0.0.1, verify-full) fails at once naming the host name check.
TEST(TlsPg, F61_server_certificate_for_another_name_is_refused) {
  TS_SKIP_IF_EXTERNAL();
  ServerCertificate wrong(certs().wrong_host_cert, certs().wrong_host_key);
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const Outcome start =
            co_await failed_start(io, servers().postgres_dsn(), "ts_tls_f61_wrong_cert");
        EXPECT_EQ(start.code, ts::make_error_code(ts::errc::tls_failed)) << describe(start);
        EXPECT_TRUE(contains(start.what, "TLS host name check failed")) << start.what;
        EXPECT_TRUE(contains(start.what, "wrong.example")) << start.what;
      },
      30s);
}

// The server switched to an expired certificate (signed by the trusted CA). Must hold: start()
// fails at once with tls_failed naming the check and the reason: expired.
TEST(TlsPg, F61_expired_server_certificate_fails_start_at_once) {
  TS_SKIP_IF_EXTERNAL();
  ServerCertificate expired(certs().expired_cert, certs().expired_key);
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const Outcome start =
            co_await failed_start(io, servers().postgres_dsn(), "ts_tls_f61_expired");
        EXPECT_EQ(start.code, ts::make_error_code(ts::errc::tls_failed)) << describe(start);
        EXPECT_TRUE(contains(start.what, "TLS certificate check failed")) << start.what;
        EXPECT_TRUE(contains(start.what, "certificate has expired (valid from ")) << start.what;
      },
      30s);
}

// A running client whose server certificate is replaced by an expired one: its connection is
// ended (pg_terminate_backend) and every reconnect now fails the certificate check. Must hold:
// 20 queries fail with tls_failed (permanent; a caller waiting for a connection gets the
// connect error, not a transient connect_failed), the breaker never opens (it counts none of
// them), and once the certificate is good again the pool reconnects by itself.
TEST(TlsPg, F61_failing_certificate_check_on_reconnect_is_not_counted_by_the_breaker) {
  TS_SKIP_IF_EXTERNAL();
  const std::string app = "ts_tls_f61_breaker";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = tls_config(servers().postgres_dsn(), app);
        config.breaker.min_calls = 4;
        config.breaker.window_size = 8;
        PostgresClient client(io.get_executor(), config);
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
          {
            ServerCertificate expired(certs().expired_cert, certs().expired_key);
            // (The Unix socket: the test's own connection needs no certificate.)
            ts::testing::fault::DirectPg(servers().postgres_socket_dsn())
                .value(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE "
                    "application_name = '" +
                    app + "'");
            std::size_t tls_failures = 0;
            for (int i = 0; i < 20; ++i) {
              const Outcome q = co_await outcome(client.query_value<std::int32_t>("SELECT 1"));
              EXPECT_TRUE(q.failed);
              if (q.code == ts::make_error_code(ts::errc::tls_failed)) {
                ++tls_failures;
                EXPECT_EQ(q.kind, ErrorKind::permanent) << describe(q);
                EXPECT_TRUE(contains(q.what, "expired")) << q.what;
              } else {
                // The one caller that met the dying connection (its 57P01, or connection_lost)
                // is fine; anything else is not.
                EXPECT_TRUE(q.code == ts::make_error_code(ts::errc::connection_lost) ||
                            q.server_code == "57P01")
                    << describe(q);
              }
            }
            EXPECT_GE(tls_failures, 19u);
            EXPECT_EQ(client.stats().breaker, ts::core::CircuitState::closed);
            EXPECT_EQ(client.stats().breaker_trips, 0u);
          }
          // The harness's certificate is back: the pool heals by itself.
          EXPECT_TRUE(co_await eventually([&] { return client.stats().connections >= 1; }, 10s));
          EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 1"), 1);
        }());
      },
      60s);
}

// ---- F62 ---------------------------------------------------------------------------------------

/// A loopback listener that accepts one connection, answers PostgreSQL's SSLRequest with 'S'
/// ("go ahead with TLS") and then says nothing: a TLS handshake that never completes. Records
/// when the client closed the socket.
class SilentTlsListener {
 public:
  SilentTlsListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("SilentTlsListener: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~SilentTlsListener() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  SilentTlsListener(const SilentTlsListener&) = delete;
  SilentTlsListener& operator=(const SilentTlsListener&) = delete;

  std::uint16_t port() const { return port_; }
  bool answered_ssl_request() const { return answered_; }
  bool peer_closed() const { return closed_; }

 private:
  bool wait_readable(int fd) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }
  void serve() {
    if (!wait_readable(fd_)) return;
    const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    unsigned char request[8];
    std::size_t got = 0;
    while (got < sizeof request && wait_readable(client)) {
      const auto n = ::recv(client, request + got, sizeof request - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    // SSLRequest: length 8, code 80877103 (0x04d2162f).
    if (got == sizeof request && request[4] == 0x04 && request[5] == 0xd2 && request[6] == 0x16 &&
        request[7] == 0x2f) {
      const char yes = 'S';
      answered_ = ::send(client, &yes, 1, MSG_NOSIGNAL) == 1;
    }
    // Then silence: read (and drop) the ClientHello until the client gives up and closes.
    char buffer[4096];
    while (wait_readable(client)) {
      const auto n = ::recv(client, buffer, sizeof buffer, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
    }
    ::close(client);
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> answered_{false};
  std::atomic<bool> closed_{false};
  std::thread thread_;
};

// The server accepts TLS ('S') and then never sends its ServerHello. Must hold: start() ends
// within connect_timeout (1 s; start-up deadline 1 s) plus a margin, as a timeout (transient:
// a hang may be a network fault), and the client closed its socket.
TEST(TlsPg, F62_handshake_that_never_completes_is_bounded_by_the_connect_timeout) {
  SilentTlsListener listener;
  const std::string dsn =
      "host=127.0.0.1 port=" + std::to_string(listener.port()) +
      " user=postgres dbname=postgres sslmode=verify-full sslrootcert=" + certs().ca_cert;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = tls_config(dsn, "ts_tls_f62");
        config.connect_timeout = 1s;
        config.startup_timeout = 1s;
        PostgresClient client(io.get_executor(), config);
        const Outcome start = co_await outcome(client.start());
        EXPECT_TRUE(start.failed);
        EXPECT_GE(start.elapsed, 900ms) << describe(start);
        EXPECT_LT(start.elapsed, 1800ms) << describe(start);
        EXPECT_TRUE(start.code == ts::make_error_code(ts::errc::startup_timeout) ||
                    start.code == ts::make_error_code(ts::errc::connect_timeout))
            << describe(start);
        EXPECT_TRUE(contains(start.what, "timed out") || contains(start.what, "timeout"))
            << start.what;
        co_await client.close();
        EXPECT_TRUE(listener.answered_ssl_request()) << "libpq never asked for TLS";
        EXPECT_TRUE(co_await eventually([&] { return listener.peer_closed(); }, 2s))
            << "the client did not close its socket";
      },
      30s);
}

// PostgreSQL frozen (SIGSTOP): the TCP connect succeeds (the kernel's backlog), the SSLRequest
// is never answered. Must hold: start() ends within connect_timeout plus a margin.
TEST(TlsPg, F62_frozen_server_handshake_is_bounded_by_the_connect_timeout) {
  TS_SKIP_IF_EXTERNAL();
  auto& postgres = servers().postgres();
  const std::string dsn = servers().postgres_dsn();
  postgres.pause();
  ScopeExit resume([&] { postgres.resume(); });
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = tls_config(dsn, "ts_tls_f62_frozen");
        config.connect_timeout = 1s;
        config.startup_timeout = 1s;
        PostgresClient client(io.get_executor(), config);
        const Outcome start = co_await outcome(client.start());
        EXPECT_TRUE(start.failed);
        EXPECT_LT(start.elapsed, 1800ms) << describe(start);
        EXPECT_NE(start.kind, ErrorKind::permanent) << describe(start);
        co_await client.close();
      },
      30s);
}

// ---- F63 ---------------------------------------------------------------------------------------

// Plaintext (sslmode=disable) against the TLS-only PostgreSQL (pg_hba: hostssl only,
// hostnossl rejected). Must hold: start() fails at once, permanent (28000), with a hint that
// the server requires TLS and what to set.
TEST(TlsPg, F63_plaintext_client_against_tls_only_server_is_told_to_use_tls) {
  TS_SKIP_IF_EXTERNAL();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const Outcome start = co_await failed_start(
            io, servers().postgres_dsn() + " sslmode=disable", "ts_tls_f63_plain");
        EXPECT_EQ(start.server_code, "28000") << describe(start);
        EXPECT_TRUE(contains(start.what, "no encryption")) << start.what;
        EXPECT_TRUE(contains(start.what,
                             "the server requires TLS: set sslmode=require or "
                             "verify-full"))
            << start.what;
      },
      30s);
}

// Plaintext against PgBouncer, which requires TLS from its clients (client_tls_sslmode =
// require). Must hold: start() fails at once, permanent, and the error says TLS is required.
TEST(TlsPg, F63_plaintext_client_against_pgbouncer_requiring_tls_is_refused_clearly) {
  TS_SKIP_IF_EXTERNAL();
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const Outcome start = co_await failed_start(
            io, servers().pgbouncer_dsn() + " sslmode=disable", "ts_tls_f63_plain_bouncer");
        EXPECT_TRUE(contains(start.what, "SSL") || contains(start.what, "TLS")) << start.what;
        EXPECT_TRUE(contains(start.what, "sslmode=require")) << start.what;
      },
      30s);
}

// The reverse: the server's TLS switched off (ssl = off + reload); the client asks for TLS
// (sslmode=require). Must hold: start() fails at once with tls_failed saying that the server
// does not speak TLS and that the DSN asks for it.
TEST(TlsPg, F63_tls_client_against_plaintext_server_says_which_side_wants_what) {
  TS_SKIP_IF_EXTERNAL();
  servers().set_postgres_settings({{"ssl", "off"}});
  ScopeExit restore([] { servers().set_postgres_settings({{"ssl", ""}}); });
  const std::string dsn = "host=127.0.0.1 port=" + std::to_string(servers().postgres().port()) +
                          " user=postgres dbname=postgres sslmode=require";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        const Outcome start = co_await failed_start(io, dsn, "ts_tls_f63_reverse");
        EXPECT_EQ(start.code, ts::make_error_code(ts::errc::tls_failed)) << describe(start);
        EXPECT_TRUE(contains(start.what,
                             "the server does not speak TLS (ssl=off); the DSN asks "
                             "for it (sslmode=require)"))
            << start.what;
      },
      30s);
}

// ---- client certificates -----------------------------------------------------------------------

// The role kCertRole (ts-client) may log in only with a client certificate issued by the test
// CA for its name (hostssl ... clientcert=verify-full). Must hold: with sslcert/sslkey the
// client connects as ts-client; without them start() fails at once, permanent (28000), with a
// hint to give sslcert and sslkey.
TEST(TlsPg, client_certificate_is_required_and_accepted) {
  TS_SKIP_IF_EXTERNAL();
  const std::string as_role =
      servers().postgres_dsn() + " user=" + std::string(ts::testing::kCertRole);
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient with_cert(io.get_executor(),
                                 tls_config(as_role + " sslcert=" + certs().client_cert +
                                                " sslkey=" + certs().client_key,
                                            "ts_tls_client_cert"));
        co_await closing(with_cert, [&]() -> asio::awaitable<void> {
          co_await with_cert.start();
          EXPECT_EQ(co_await with_cert.query_value<std::string>("SELECT current_user::text"),
                    ts::testing::kCertRole);
          EXPECT_EQ(co_await with_cert.query_value<std::string>(
                        "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
                    "/CN=" + std::string(ts::testing::kCertRole));
        }());
        const Outcome start = co_await failed_start(io, as_role, "ts_tls_no_client_cert");
        EXPECT_EQ(start.server_code, "28000") << describe(start);
        EXPECT_TRUE(contains(start.what, "set sslcert and sslkey")) << start.what;
      },
      30s);
}

// ---- F66 rotation ------------------------------------------------------------------------------

// Certificate rotation with a new CA: the server switches to a certificate of another CA
// (ALTER SYSTEM + reload), the client's sslrootcert file still holds the old CA. Must hold:
// the running client keeps working on its open connection; once that connection is ended,
// the pool's reconnects fail the certificate check (tls_failed); once the sslrootcert file is
// replaced by the new CA (renamed into place), the pool's next reconnect succeeds and queries
// work again, without restarting the client (libpq reads the files on every connection).
TEST(TlsPg, F66_rotated_server_certificate_and_root_file_picked_up_on_reconnect) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dir = servers().directory() + "/tls-rotation";
  fs::create_directories(dir);
  const std::string root_file = dir + "/root.crt";
  fs::copy_file(certs().ca_cert, root_file, fs::copy_options::overwrite_existing);
  // A second, unrelated certificate set: its CA is the "new" CA.
  const TestCertificates rotated = ts::testing::make_test_certificates(dir + "/new");
  const std::string app = "ts_tls_f66_rotation";
  const std::string dsn = servers().postgres_dsn() + " sslrootcert=" + root_file;
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto config = tls_config(dsn, app);
        config.reconnect_backoff = {20ms, 50ms, 2.0};
        PostgresClient client(io.get_executor(), config);
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          const auto first_pid =
              co_await client.query_value<std::int32_t>("SELECT pg_backend_pid()");
          ServerCertificate server(rotated.server_cert, rotated.server_key);
          // The open connection is not affected by the server's new certificate.
          EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT pg_backend_pid()"),
                    first_pid);
          // A new connection must verify the new certificate with the old root: it fails.
          ts::testing::fault::DirectPg(servers().postgres_socket_dsn())
              .value("SELECT pg_terminate_backend(" + std::to_string(first_pid) + ", 5000)");
          EXPECT_TRUE(co_await eventually([&] { return client.stats().connect_failures >= 1; }, 5s))
              << "no reconnect failed the certificate check";
          // (A query sent before the client noticed the end of its connection gets that
          // connection's error, 57P01; the ones after wait for a reconnect, which fails.)
          Outcome refused;
          for (int i = 0; i < 3 && refused.code != ts::make_error_code(ts::errc::tls_failed); ++i) {
            refused = co_await outcome(client.query_value<std::int32_t>("SELECT 1"));
            EXPECT_TRUE(refused.failed);
          }
          EXPECT_EQ(refused.code, ts::make_error_code(ts::errc::tls_failed)) << describe(refused);
          EXPECT_TRUE(contains(refused.what, "unable to get local issuer certificate"))
              << refused.what;
          // The client's root file replaced in one step (rename): the next reconnect works.
          fs::copy_file(rotated.ca_cert, root_file + ".new", fs::copy_options::overwrite_existing);
          fs::rename(root_file + ".new", root_file);
          EXPECT_TRUE(co_await eventually([&] { return client.stats().connections >= 1; }, 10s))
              << "the pool did not reconnect with the new root certificate";
          const auto new_pid = co_await client.query_value<std::int32_t>("SELECT pg_backend_pid()");
          EXPECT_NE(new_pid, first_pid);
          EXPECT_TRUE(co_await session_is_tls(client));
        }());
      },
      60s);
  // The harness's certificate is back (ServerCertificate): the harness's DSN works again.
  EXPECT_TRUE(PgConn(servers().postgres_dsn()).ok());
}

/// CN of the certificate the harness's PostgreSQL presents to a new connection (the test's own
/// libpq connection; libpq's SSL* seen through PQsslStruct).
std::string server_certificate_cn() {
  PgConn conn(servers().postgres_dsn());
  if (!conn.ok()) return "connect failed: " + conn.error();
  auto* ssl = static_cast<SSL*>(PQsslStruct(conn.get(), "OpenSSL"));
  if (ssl == nullptr) return "not TLS";
  std::unique_ptr<X509, decltype(&X509_free)> certificate(SSL_get1_peer_certificate(ssl),
                                                          &X509_free);
  if (!certificate) return "no certificate";
  std::array<char, 256> cn{};
  X509_NAME_get_text_by_NID(X509_get_subject_name(certificate.get()), NID_commonName, cn.data(),
                            static_cast<int>(cn.size()));
  return cn.data();
}

// Certificate renewal by the same CA: the server switches to a newly issued certificate
// (issue_server_certificate, reload). Must hold: new connections see the new certificate
// (its CN), the client's open connection keeps working, and once it is ended the pool's next
// connection verifies the new certificate with the unchanged sslrootcert: no restart.
TEST(TlsPg, F66_renewed_server_certificate_picked_up_on_reconnect) {
  TS_SKIP_IF_EXTERNAL();
  const std::string dir = servers().directory() + "/tls-renewal";
  fs::create_directories(dir);
  ts::testing::issue_server_certificate(certs(), dir + "/renewed.crt", dir + "/renewed.key",
                                        "ts-renewed-1");
  const std::string app = "ts_tls_f66_renewal";
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient client(io.get_executor(), tls_config(servers().postgres_dsn(), app));
        co_await closing(client, [&]() -> asio::awaitable<void> {
          co_await client.start();
          const auto first_pid =
              co_await client.query_value<std::int32_t>("SELECT pg_backend_pid()");
          EXPECT_NE(server_certificate_cn(), "ts-renewed-1");
          ServerCertificate renewed(dir + "/renewed.crt", dir + "/renewed.key");
          EXPECT_EQ(server_certificate_cn(), "ts-renewed-1");
          EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT pg_backend_pid()"),
                    first_pid);
          ts::testing::fault::DirectPg(servers().postgres_socket_dsn())
              .value("SELECT pg_terminate_backend(" + std::to_string(first_pid) + ", 5000)");
          EXPECT_TRUE(co_await eventually(
              [&] { return client.stats().connects >= 2 && client.stats().connections >= 1; }, 10s))
              << "the pool did not reconnect";
          // (A query sent before the client noticed the end gets that connection's error.)
          Outcome pid;
          for (int i = 0; i < 3; ++i) {
            pid = co_await outcome(client.query_value<std::int32_t>("SELECT pg_backend_pid()"));
            if (!pid.failed) break;
          }
          EXPECT_FALSE(pid.failed) << describe(pid);
          EXPECT_EQ(client.stats().connect_failures, 0u);
          EXPECT_TRUE(co_await session_is_tls(client));
        }());
      },
      60s);
  EXPECT_NE(server_certificate_cn(), "ts-renewed-1") << "the harness's certificate is not back";
}

}  // namespace

// TLS fault tests of RedisClient (F61-F63, rotation, mutual TLS) against the harness's
// TLS-only Redis (tls_main.cpp sets ServerOptions::tls: Redis listens on a TLS port only, with
// the harness's throwaway certificates, `tls-auth-clients optional`).
//
// The server's TLS settings are changed with CONFIG SET (tls-cert-file, tls-key-file,
// tls-auth-clients, port) through an admin client of the test's own (a RedisClient over TLS
// with the client certificate: hiredis is built without TLS here), and always set back, also
// when the test fails.

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "redis_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"
#include "support/tls_certs.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ts::errc;
using ts::core::CircuitState;
using ts::redis::RedisClient;
using ts::redis::RedisConfig;
using ts::redis::RedisStats;
using ts::redis::Reply;
using ts::testing::elapsed_ms;
using ts::testing::LogCapture;
using ts::testing::pause_for;
using ts::testing::run_coroutine_test;
using ts::testing::Servers;
using ts::testing::TestCertificates;
using ts::testing::fault::closing;
using ts::testing::fault::fast_config;
using ts::testing::fault::finally;

#define TS_SKIP_IF_EXTERNAL_TLS()                                                    \
  do {                                                                               \
    if (Servers::instance().external()) GTEST_SKIP() << "external servers: skipped"; \
  } while (false)

Servers& servers() {
  return Servers::instance();
}
const TestCertificates& certs() {
  return servers().tls_certificates();
}

/// rediss:// of the harness's Redis, trusting the harness's CA.
RedisConfig tls_config(std::string client_name) {
  auto c = fast_config(servers().redis_url() + "/0", std::move(client_name));
  c.tls.ca_file = certs().ca_cert;
  return c;
}

/// The admin client: with the client certificate (it keeps working under tls-auth-clients yes).
RedisConfig admin_config() {
  auto c = tls_config("tls-admin");
  c.tls.cert_file = certs().client_cert;
  c.tls.key_file = certs().client_key;
  return c;
}

/// How a start() ended.
struct StartResult {
  std::optional<ts::Error> error;
  RedisStats stats;
  long long elapsed_ms = 0;
};

asio::awaitable<StartResult> try_start(asio::io_context& io, RedisConfig config) {
  RedisClient client(io.get_executor(), std::move(config));
  StartResult result;
  const auto t0 = Clock::now();
  try {
    co_await client.start();
  } catch (const ts::Error& e) {
    result.error = e;
  }
  result.elapsed_ms = elapsed_ms(t0).count();
  result.stats = client.stats();
  co_await client.close();
  co_return result;
}

/// CONFIG SET name value [name value ...] through `admin`; fails the test on an error reply.
template <class... Args>
asio::awaitable<void> config_set(RedisClient& admin, const Args&... args) {
  const Reply reply = co_await admin.command("CONFIG", "SET", args...);
  if (reply.is_error()) {
    ADD_FAILURE() << "CONFIG SET: " << reply.error_message();
  }
}

/// The id of the connection named `client_name` (CLIENT LIST), or empty.
asio::awaitable<std::string> client_id(RedisClient& admin, const std::string& client_name) {
  const Reply list = co_await admin.command("CLIENT", "LIST");
  const std::string text(list.as_string());
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    auto line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    const std::string line = text.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    if (line.find(" name=" + client_name + " ") == std::string::npos) continue;
    const auto id_at = line.find("id=");
    if (id_at == std::string::npos) continue;
    co_return line.substr(id_at + 3, line.find(' ', id_at) - id_at - 3);
  }
  co_return std::string();
}

/// Kills the connection of `client_name`; fails the test when there is none.
asio::awaitable<void> kill_client(RedisClient& admin, const std::string& client_name) {
  const std::string id = co_await client_id(admin, client_name);
  if (id.empty()) {
    ADD_FAILURE() << "no connection named " << client_name;
    co_return;
  }
  co_await admin.command("CLIENT", "KILL", "ID", id);
}

/// Runs `body` with a started admin client, then sets the server's TLS settings back.
void with_admin(std::function<asio::awaitable<void>(asio::io_context&, RedisClient&)> body,
                std::chrono::seconds timeout = 60s) {
  run_coroutine_test(
      [&body](asio::io_context& io) -> asio::awaitable<void> {
        RedisClient admin(io.get_executor(), admin_config());
        co_await admin.start();
        co_await closing(admin, finally(body(io, admin), [&admin]() -> asio::awaitable<void> {
                           co_await config_set(admin, "tls-cert-file", certs().server_cert,
                                               "tls-key-file", certs().server_key,
                                               "tls-auth-clients", "optional");
                         }));
      },
      timeout);
}

void expect_refused_fast(const StartResult& r, const char* check) {
  ASSERT_TRUE(r.error.has_value()) << "start() succeeded";
  EXPECT_EQ(r.error->code(), ts::make_error_code(errc::tls_failed)) << r.error->what();
  EXPECT_EQ(r.error->kind(), ts::ErrorKind::permanent);
  EXPECT_THAT(r.error->what(), HasSubstr(check));
  EXPECT_THAT(r.error->what(), HasSubstr("certificate verify failed"));
  // Refused at the first attempt: no retries until the startup timeout (3 s).
  EXPECT_EQ(r.stats.connect_failures, 1u) << "a permanent TLS error was retried";
  EXPECT_LT(r.elapsed_ms, 1500) << "start() did not fail fast";
  EXPECT_EQ(r.stats.breaker, CircuitState::closed);
  EXPECT_EQ(r.stats.breaker_trips, 0u);
}

}  // namespace

// The harness's Redis of this binary listens on a TLS port only.
TEST(TlsRedis, HarnessRedisIsTlsOnly) {
  TS_SKIP_IF_EXTERNAL_TLS();
  const std::string url = servers().redis_url();
  EXPECT_EQ(url.rfind("rediss://", 0), 0u) << url;
}

// Basic commands and 10 000 pipelined commands over TLS: every reply the caller's own.
TEST(TlsRedis, CommandsAndPipeliningOverTls) {
  TS_SKIP_IF_EXTERNAL_TLS();
  ts::testing::fault::run_with_client(
      tls_config("tls-basic"), 60s,
      [](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        co_await client.ping();
        EXPECT_TRUE(co_await client.set("tls:basic", "value"));
        EXPECT_EQ(co_await client.get("tls:basic"), std::optional<std::string>("value"));
        ts::redis::Request request;
        constexpr int kCommands = 10000;
        for (int i = 0; i < kCommands; ++i) request.push("SET", "tls:p:" + std::to_string(i), i);
        const auto sets = co_await client.pipeline(request);
        EXPECT_EQ(sets.size(), std::size_t{kCommands});
        request.clear();
        for (int i = 0; i < kCommands; ++i) request.push("GET", "tls:p:" + std::to_string(i));
        const auto gets = co_await client.pipeline(request);
        EXPECT_EQ(gets.size(), std::size_t{kCommands});
        if (gets.size() != std::size_t{kCommands}) co_return;
        int wrong = 0;
        for (int i = 0; i < kCommands; ++i) {
          if (gets[static_cast<std::size_t>(i)].as_string() != std::to_string(i)) ++wrong;
        }
        EXPECT_EQ(wrong, 0);
        // Concurrent callers on the shared connection (automatic pipelining through TLS).
        int done = 0;
        int mismatches = 0;
        for (int i = 0; i < 2000; ++i) {
          asio::co_spawn(
              client.get_executor(),
              [&, i]() -> asio::awaitable<void> {
                const auto value = co_await client.get("tls:p:" + std::to_string(i));
                if (value != std::to_string(i)) ++mismatches;
                ++done;
              },
              asio::detached);
        }
        const auto deadline = Clock::now() + 10s;
        while (done < 2000 && Clock::now() < deadline) co_await pause_for(5ms);
        EXPECT_EQ(done, 2000);
        EXPECT_EQ(mismatches, 0);
        const auto stats = client.stats();
        EXPECT_EQ(stats.tls_context_builds, 1u);
        EXPECT_EQ(stats.connects, 1u);
      });
}

// A blocking command (XREADGROUP BLOCK) on a dedicated TLS connection, while the shared TLS
// connection adds the entry it waits for.
TEST(TlsRedis, BlockingCommandOverTls) {
  TS_SKIP_IF_EXTERNAL_TLS();
  ts::testing::fault::run_with_client(
      tls_config("tls-blocking"), 60s,
      [](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        const std::string stream = "tls:blocking";
        co_await client.command("DEL", stream);
        const Reply created =
            co_await client.command("XGROUP", "CREATE", stream, "g", "$", "MKSTREAM");
        EXPECT_FALSE(created.is_error()) << created.debug_string();
        bool added = false;
        asio::co_spawn(
            client.get_executor(),
            [&]() -> asio::awaitable<void> {
              co_await pause_for(200ms);
              added = true;  // before the reply: the blocked reader is answered first
              co_await client.command("XADD", stream, "*", "field", "tls-value");
            },
            asio::detached);
        const auto t0 = Clock::now();
        const Reply reply = co_await client.blocking_command(
            3000ms, "XREADGROUP", "GROUP", "g", "c", "BLOCK", "3000", "STREAMS", stream, ">");
        EXPECT_TRUE(added);
        EXPECT_GE(elapsed_ms(t0).count(), 150);
        EXPECT_FALSE(reply.is_nil()) << "XREADGROUP BLOCK timed out";
        EXPECT_THAT(reply.debug_string(), HasSubstr("tls-value"));
        EXPECT_EQ(client.stats().blocking_connections, 1u);
      });
}

// ---- F61: verification failures are permanent, named, not retried, not counted -------------

TEST(TlsRedis, F61_WrongCaIsRefusedAtOnce) {
  TS_SKIP_IF_EXTERNAL_TLS();
  run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    auto config = tls_config("tls-wrong-ca");
    config.tls.ca_file = certs().other_ca_cert;
    const auto r = co_await try_start(io, config);
    // "unable to get local issuer certificate" or, when the server sends its CA along,
    // "self-signed certificate in certificate chain".
    expect_refused_fast(r, "unknown CA");
  });
}

TEST(TlsRedis, F61_WrongHostNameIsRefusedAtOnce) {
  TS_SKIP_IF_EXTERNAL_TLS();
  run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    // The name the client verifies is not in the server's certificate.
    auto config = tls_config("tls-wrong-name");
    config.tls.server_name = "wrong.example";
    const auto r = co_await try_start(io, config);
    expect_refused_fast(r, "hostname mismatch");
    if (r.error) {
      EXPECT_THAT(r.error->what(), HasSubstr("not wrong.example"));
    }
  });
  // The server presents a certificate for another name; the client checks 127.0.0.1.
  with_admin([](asio::io_context& io, RedisClient& admin) -> asio::awaitable<void> {
    co_await config_set(admin, "tls-cert-file", certs().wrong_host_cert, "tls-key-file",
                        certs().wrong_host_key);
    const auto r = co_await try_start(io, tls_config("tls-wrong-host-cert"));
    expect_refused_fast(r, "mismatch");
    if (r.error) {
      EXPECT_THAT(r.error->what(),
                  HasSubstr("the certificate is for wrong.example, not 127.0.0.1"));
    }
  });
}

// An expired server certificate: start() refused at once; and a running client whose
// reconnect meets it fails its commands with tls_failed without opening its breaker, then
// recovers by itself once the certificate is fixed.
TEST(TlsRedis, F61_ExpiredCertificateIsRefusedAndNotCountedByTheBreaker) {
  TS_SKIP_IF_EXTERNAL_TLS();
  with_admin([](asio::io_context& io, RedisClient& admin) -> asio::awaitable<void> {
    auto running_config = tls_config("tls-expired-running");
    RedisClient running(io.get_executor(), running_config);
    co_await running.start();
    co_await closing(running, [&]() -> asio::awaitable<void> {
      co_await config_set(admin, "tls-cert-file", certs().expired_cert, "tls-key-file",
                          certs().expired_key);
      const auto r = co_await try_start(io, tls_config("tls-expired"));
      expect_refused_fast(r, "certificate has expired");

      co_await kill_client(admin, "tls-expired-running");
      int tls_failures = 0;
      std::string last;
      for (int i = 0; i < 10; ++i) {
        try {
          co_await running.command(ts::redis::CommandOptions{.timeout = 500ms}, "PING");
        } catch (const ts::Error& e) {
          if (e.code() == ts::make_error_code(errc::tls_failed)) ++tls_failures;
          last = e.what();
        }
      }
      EXPECT_GE(tls_failures, 5) << "last error: " << last;
      EXPECT_THAT(last, HasSubstr("certificate has expired"));
      const auto stats = running.stats();
      EXPECT_EQ(stats.breaker, CircuitState::closed) << "the breaker counted a TLS refusal";
      EXPECT_EQ(stats.breaker_trips, 0u);

      co_await config_set(admin, "tls-cert-file", certs().server_cert, "tls-key-file",
                          certs().server_key);
      bool recovered = false;
      const auto deadline = Clock::now() + 10s;
      while (!recovered && Clock::now() < deadline) {
        try {
          co_await running.ping(ts::redis::CommandOptions{.timeout = 500ms});
          recovered = true;
        } catch (const ts::Error&) {
          recovered = false;  // not yet: the reconnect is paced by the backoff
        }
        if (!recovered) co_await pause_for(50ms);
      }
      EXPECT_TRUE(recovered) << "the client did not reconnect once the certificate was fixed";
    }());
  });
}

// ---- F62: a handshake that never completes -------------------------------------------------

// A loopback listener that accepts and never answers the ClientHello: start() ends within the
// connect timeout (plus a margin), naming the TLS handshake; the client closes its socket.
TEST(TlsRedis, F62_HandshakeThatNeverCompletesIsBoundedByTheConnectTimeout) {
  run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    std::vector<std::unique_ptr<asio::ip::tcp::socket>> accepted;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          for (;;) {
            auto socket = std::make_unique<asio::ip::tcp::socket>(io);
            boost::system::error_code ec;
            co_await acceptor.async_accept(*socket, asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return;
            accepted.push_back(std::move(socket));
          }
        },
        asio::detached);
    auto config = fast_config(
        "rediss://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()), "tls-silent");
    config.tls.ca_file = certs().ca_cert;
    config.connect_timeout = 300ms;
    config.startup_timeout = 1000ms;
    const auto r = co_await try_start(io, config);
    if (!r.error) {
      ADD_FAILURE() << "start() succeeded";
      co_return;
    }
    // Every attempt ended at its connect deadline (a hang would be one attempt, no error until
    // the global timeout); start() gave up at its own deadline.
    EXPECT_EQ(r.error->code(), ts::make_error_code(errc::startup_timeout)) << r.error->what();
    EXPECT_THAT(r.error->what(), HasSubstr("the TLS handshake did not complete within"));
    EXPECT_GE(r.stats.connect_failures, 2u);
    EXPECT_LT(r.elapsed_ms, 1000 + 500) << r.error->what();
    EXPECT_GE(r.elapsed_ms, 950);
    EXPECT_EQ(accepted.size(), r.stats.connect_failures);
    // Each attempt's socket is closed: the listener reads its ClientHello, then EOF.
    for (auto& socket : accepted) {
      std::array<char, 4096> buffer{};
      boost::system::error_code ec;
      const auto deadline = Clock::now() + 2s;
      while (!ec && Clock::now() < deadline) {
        co_await ts::core::with_timeout(
            [&]() -> asio::awaitable<void> {
              co_await socket->async_read_some(asio::buffer(buffer),
                                               asio::redirect_error(asio::use_awaitable, ec));
            }(),
            2s);
      }
      EXPECT_EQ(ec, asio::error::eof) << ec.message();
    }
    acceptor.close();
  });
}

// ---- F63: plaintext against TLS and the reverse --------------------------------------------

// A plaintext client (redis://) against the TLS-only port: Redis 7 resets the connection at the
// first plaintext bytes, without a byte of reply. The error says the server may require TLS.
TEST(TlsRedis, F63_PlaintextClientAgainstTlsPort) {
  TS_SKIP_IF_EXTERNAL_TLS();
  LogCapture redis_log("redis");
  run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    auto config = fast_config("redis://127.0.0.1:" + std::to_string(servers().redis_port()) + "/0",
                              "tls-plain-client");
    config.startup_timeout = 1000ms;
    const auto r = co_await try_start(io, config);
    if (!r.error) {
      ADD_FAILURE() << "start() succeeded";
      co_return;
    }
    // Transient (a reset has other causes too): retried until the startup timeout. Its error
    // quotes the last attempt's, unless the deadline cut that one short (then the log has it).
    EXPECT_EQ(r.error->code(), ts::make_error_code(errc::startup_timeout)) << r.error->what();
    EXPECT_GE(r.stats.connect_failures, 2u);
    EXPECT_EQ(r.stats.breaker, CircuitState::closed);
  });
  EXPECT_GE(redis_log.count("the server closed the connection during the handshake"), 1u);
  EXPECT_GE(redis_log.count("does it require TLS? use rediss://"), 1u);
}

// A TLS client (rediss://) against a plaintext port of a real Redis (CONFIG SET port opens one
// beside the TLS port): the ClientHello is no Redis command; the client names the mismatch.
TEST(TlsRedis, F63_TlsClientAgainstPlaintextPort) {
  TS_SKIP_IF_EXTERNAL_TLS();
  const std::uint16_t plain_port = ts::testing::free_loopback_port();
  with_admin([plain_port](asio::io_context& io, RedisClient& admin) -> asio::awaitable<void> {
    co_await config_set(admin, "port", std::to_string(plain_port));
    co_await finally(
        [&]() -> asio::awaitable<void> {
          auto config = fast_config("rediss://127.0.0.1:" + std::to_string(plain_port) + "/0",
                                    "tls-to-plain");
          config.tls.ca_file = certs().ca_cert;
          config.connect_timeout = 500ms;
          config.startup_timeout = 1000ms;
          const auto r = co_await try_start(io, config);
          if (!r.error) {
            ADD_FAILURE() << "start() succeeded";
            co_return;
          }
          // Redis answers the ClientHello with an error (does not speak TLS) or waits for the
          // end of an inline command that never comes (the handshake does not complete).
          EXPECT_THAT(r.error->what(), AnyOf(HasSubstr("the server does not speak TLS"),
                                             HasSubstr("the TLS handshake did not complete"),
                                             HasSubstr("a plaintext port?")));
          EXPECT_THAT(r.error->what(), HasSubstr("plaintext port"));
          EXPECT_EQ(r.stats.breaker, CircuitState::closed);
        }(),
        [&]() -> asio::awaitable<void> { co_await config_set(admin, "port", "0"); });
  });
}

// ---- mutual TLS ------------------------------------------------------------------------------

TEST(TlsRedis, MutualTlsNeedsTheClientCertificate) {
  TS_SKIP_IF_EXTERNAL_TLS();
  with_admin([](asio::io_context& io, RedisClient& admin) -> asio::awaitable<void> {
    co_await config_set(admin, "tls-auth-clients", "yes");
    const auto without = co_await try_start(io, tls_config("tls-no-client-cert"));
    if (!without.error) {
      ADD_FAILURE() << "a client without certificate was accepted";
      co_return;
    }
    // Under TLS 1.3 the server's alert ("certificate required") comes after the client's side
    // of the handshake; the reset that the client's first write causes can lose it, and that
    // attempt is a transient connect_failed naming the likely cause. An attempt that reads the
    // alert ends start() at once (tls_failed).
    EXPECT_THAT(without.error->what(), HasSubstr("client certificate"));
    if (without.error->code() == ts::make_error_code(errc::tls_failed)) {
      EXPECT_THAT(without.error->what(), HasSubstr("alert \"certificate required\""));
    } else {
      EXPECT_EQ(without.error->code(), ts::make_error_code(errc::startup_timeout))
          << without.error->what();
    }
    EXPECT_GE(without.stats.connect_failures, 1u);
    EXPECT_EQ(without.stats.breaker, CircuitState::closed);

    auto config = tls_config("tls-client-cert");
    config.tls.cert_file = certs().client_cert;
    config.tls.key_file = certs().client_key;
    RedisClient client(io.get_executor(), config);
    co_await client.start();
    co_await closing(client, [&]() -> asio::awaitable<void> {
      co_await client.ping();
      EXPECT_TRUE(co_await client.set("tls:mtls", "ok"));
    }());
  });
}

// ---- rotation --------------------------------------------------------------------------------

// The server moves to a certificate of a new CA; the client's connection is killed. Its
// reconnects fail verification (its CA file is the old one) until the CA file on disk is
// replaced: the next attempt builds a new context from it and connects, without a restart.
TEST(TlsRedis, CertificateRotationIsPickedUpByTheNextConnection) {
  TS_SKIP_IF_EXTERNAL_TLS();
  const std::string dir = servers().directory() + "/tls-rotation";
  const TestCertificates next = ts::testing::make_test_certificates(dir);
  // The server runs as another user: the throwaway files readable by it.
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);
  for (const auto& entry : fs::directory_iterator(dir)) {
    fs::permissions(entry.path(), fs::perms::owner_read | fs::perms::owner_write |
                                      fs::perms::group_read | fs::perms::others_read);
  }
  const std::string client_ca = dir + "/client-ca.pem";
  fs::copy_file(certs().ca_cert, client_ca, fs::copy_options::overwrite_existing);
  LogCapture tls_log("tls");
  with_admin([&](asio::io_context& io, RedisClient& admin) -> asio::awaitable<void> {
    auto config = tls_config("tls-rotation");
    config.tls.ca_file = client_ca;
    RedisClient client(io.get_executor(), config);
    co_await client.start();
    co_await closing(client, [&]() -> asio::awaitable<void> {
      co_await client.ping();
      EXPECT_EQ(client.stats().tls_context_builds, 1u);

      // A new server certificate, issued by the new CA.
      const std::string server_cert = dir + "/rotated-server.crt";
      const std::string server_key = dir + "/rotated-server.key";
      ts::testing::issue_server_certificate(next, server_cert, server_key, "localhost");
      fs::permissions(server_key, fs::perms::owner_read | fs::perms::owner_write |
                                      fs::perms::group_read | fs::perms::others_read);
      co_await config_set(admin, "tls-cert-file", server_cert, "tls-key-file", server_key);
      co_await kill_client(admin, "tls-rotation");
      // Its reconnects are refused: the old CA file does not know the new CA.
      const auto failing_deadline = Clock::now() + 5s;
      while (client.stats().connect_failures == 0 && Clock::now() < failing_deadline) {
        co_await pause_for(10ms);
      }
      EXPECT_GE(client.stats().connect_failures, 1u);
      EXPECT_EQ(client.stats().connects, 1u);

      // The CA file replaced on disk (written beside it, renamed over it).
      fs::copy_file(next.ca_cert, client_ca + ".tmp", fs::copy_options::overwrite_existing);
      fs::rename(client_ca + ".tmp", client_ca);
      const auto deadline = Clock::now() + 10s;
      while (client.stats().connects < 2 && Clock::now() < deadline) co_await pause_for(10ms);
      EXPECT_EQ(client.stats().connects, 2u) << "the new CA file was not used";
      co_await client.ping();
      EXPECT_EQ(client.stats().tls_context_builds, 2u);
      EXPECT_EQ(client.stats().breaker, CircuitState::closed);
    }());
  });
  EXPECT_GE(tls_log.count("reloaded TLS files for Redis"), 1u);
}

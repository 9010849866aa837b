// F61-F63 for wss:// and https:// (docs/websocket.md, docs/http.md): WebSocketClient and
// HttpClient against ts-feed-sim serving TLS in-process on loopback (its sources are compiled in),
// with the throwaway certificates of tests/support/tls_certs.hpp. No database server is used.
#include <trading_shared/core/error.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "feed_sim/feed_sim.hpp"
#include "support/async_test.hpp"
#include "support/test_helpers.hpp"
#include "support/tls_certs.hpp"
#include "venue_rest_support.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace {

namespace asio = boost::asio;
namespace feed = trading_shared::services::feed_sim;
namespace http = trading_shared::http;
namespace ws = trading_shared::ws;
using namespace std::chrono_literals;
using trading_shared::errc;
using trading_shared::Error;
using trading_shared::make_error_code;
using trading_shared::testing::eventually;
using trading_shared::testing::TestCertificates;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

/// A failed expectation inside a coroutine (ASSERT_* cannot return from one).
void require(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("requirement failed: " + what);
}

/// The certificates of this run, in a directory of its own, removed at exit.
const TestCertificates& certs() {
  struct Made {
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("ts_tls_ws_test_" + std::to_string(::getpid()));
    TestCertificates certs = trading_shared::testing::make_test_certificates(dir.string());
    ~Made() {
      std::error_code ignored;  // best effort: a leftover directory in /tmp is harmless
      std::filesystem::remove_all(dir, ignored);
    }
  };
  static const Made made;
  return made.certs;
}

std::string dir_of_test() {
  const auto dir = std::filesystem::path(certs().dir) / "ws";
  std::filesystem::create_directories(dir);
  return dir.string();
}

void copy_file_atomically(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp";
  std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(tmp, to);
}

feed::FeedSimConfig sim_config(const std::string& cert, const std::string& key) {
  feed::FeedSimConfig config;
  config.listen = "127.0.0.1:0";
  config.symbols = {"BTCUSDT"};
  config.seed = 19;
  config.rate = 2000;
  config.close_timeout = 500ms;
  config.tls_cert_file = cert;
  config.tls_key_file = key;
  return config;
}

feed::FeedSimConfig tls_sim() {
  return sim_config(certs().server_cert, certs().server_key);
}

ws::WebSocketConfig wss_config(std::uint16_t port, const std::string& ca_file,
                               const std::string& scheme = "wss") {
  ws::WebSocketConfig c;
  c.url = scheme + "://127.0.0.1:" + std::to_string(port) + "/ws";
  if (scheme == "wss") c.tls.ca_file = ca_file;
  c.connect_timeout = 2s;
  c.startup_timeout = 8s;
  c.idle_timeout = 3s;
  c.reconnect_backoff = {10ms, 100ms, 2.0};
  c.close_timeout = 1s;
  c.on_connect = {R"({"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1})"};
  return c;
}

/// The simulator's test runner of venue_rest_support.hpp, stopping the loop when the body ends
/// (a silent TLS peer of a test would keep it busy).
void run_sim_test(feed::FeedSimConfig config,
                  std::function<asio::awaitable<void>(feed::FeedSimulator&)> body,
                  Clock::duration timeout = 60s) {
  venue_rest_test::run_sim_test(std::move(config), std::move(body), timeout,
                                /*stop_when_done=*/true);
}

/// Receives until `n` trades arrived; returns the connection number of the last one.
asio::awaitable<std::uint64_t> receive_trades(ws::WebSocketClient& client, int n) {
  ws::Message m;
  int trades = 0;
  while (trades < n) {
    const bool got = co_await client.receive(m);
    require(got, "the client ended before " + std::to_string(n) + " trades");
    if (m.data.find(R"("e":"trade")") != std::string::npos) ++trades;
  }
  co_return m.connection;
}

struct StartFailure {
  std::error_code code;
  std::string message;
  Clock::duration took{};
};

/// start() of a client that must fail: its error and how long it took.
asio::awaitable<StartFailure> start_failure(ws::WebSocketConfig config) {
  const auto ex = co_await asio::this_coro::executor;
  ws::WebSocketClient client(ex, std::move(config));
  const auto t0 = Clock::now();
  StartFailure f;
  try {
    co_await client.start();
    f.message = "start() succeeded";
  } catch (const Error& e) {
    f.code = e.code();
    f.message = e.what();
  }
  f.took = Clock::now() - t0;
  co_await client.close();
  co_return f;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// ---- wss:// works ----------------------------------------------------------------------------

TEST(TlsWs, WssCarriesTheFeedVerifiedAndReconnects) {
  auto config = tls_sim();
  config.fault_connections = 1;
  config.fault_drop_after = 50;  // the first connection is reset after 50 trades
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    auto c = wss_config(sim.port(), certs().ca_cert);
    c.tls.server_name = "localhost";  // SNI and the name checked: the certificate's DNS SAN
    const auto ex = co_await asio::this_coro::executor;
    ws::WebSocketClient client(ex, c);
    co_await client.start();
    EXPECT_EQ(client.stats().tls_contexts, 1U);
    const auto connection = co_await receive_trades(client, 200);  // across the reset
    EXPECT_GE(connection, 2U) << "reconnected after the reset, over TLS again";
    EXPECT_GE(client.stats().connects, 2U);
    EXPECT_EQ(client.stats().tls_contexts, 1U) << "files unchanged: the context is reused";
    co_await client.close();
  });
}

TEST(TlsWs, CloseIsBoundedWhenTheTlsPeerNeverAnswers) {
  auto config = tls_sim();
  config.fault_connections = 1;
  config.fault_stall_after = 20;  // then it neither reads frames nor writes (no close, no TLS)
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    auto c = wss_config(sim.port(), certs().ca_cert);
    c.close_timeout = 800ms;
    c.idle_timeout = 10s;  // the silence is not detected before the close
    const auto ex = co_await asio::this_coro::executor;
    ws::WebSocketClient client(ex, c);
    co_await client.start();
    (void)co_await receive_trades(client, 20);
    const auto t0 = Clock::now();
    co_await client.close();
    const auto took = Clock::now() - t0;
    EXPECT_GE(took, 700ms) << "the stalled server did not answer the close frame";
    EXPECT_LT(took, 800ms + 1000ms) << "close() is bounded by close_timeout";
  });
}

TEST(TlsWs, UrlSchemesAndValidation) {
  const auto u = ws::parse_websocket_url("wss://venue.example/ws");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, "443");
  EXPECT_FALSE(ws::parse_websocket_url("ws://venue.example/ws").tls);
  ws::WebSocketConfig plain;
  plain.url = "ws://127.0.0.1:1/";
  plain.tls.ca_file = "/some/ca.pem";
  EXPECT_THROW(ws::validate(plain), Error) << "TLS settings with a ws:// URL are refused";
  plain.tls = {};
  plain.tls.enabled = true;
  EXPECT_THROW(ws::validate(plain), Error);
  const auto h = http::parse_http_url("https://venue.example");
  EXPECT_TRUE(h.tls);
  EXPECT_EQ(h.port, "443");
}

TEST(TlsWs, MutualTlsClientCertificateRequiredByTheServer) {
  auto config = tls_sim();
  config.tls_ca_file = certs().ca_cert;  // --tls-ca-file: client certificates required
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    const auto f = co_await start_failure(wss_config(sim.port(), certs().ca_cert));
    EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << "no client certificate: " << f.message;
    EXPECT_LT(f.took, 4s);
    auto c = wss_config(sim.port(), certs().ca_cert);
    c.tls.cert_file = certs().client_cert;
    c.tls.key_file = certs().client_key;
    const auto ex = co_await asio::this_coro::executor;
    ws::WebSocketClient client(ex, c);
    co_await client.start();
    (void)co_await receive_trades(client, 5);
    co_await client.close();
    // https:// likewise: refused without the client certificate, served with it.
    http::HttpClientConfig rest_config{.base_url =
                                           "https://127.0.0.1:" + std::to_string(sim.port())};
    rest_config.tls.ca_file = certs().ca_cert;
    const std::string target = "/api/v3/historicalTrades?symbol=BTCUSDT&limit=5";
    std::error_code code;
    {
      http::HttpClient rest(ex, rest_config);
      try {
        (void)co_await rest.get(target);
      } catch (const Error& e) {
        code = e.code();
      }
      co_await rest.close();
    }
    EXPECT_EQ(code, make_error_code(errc::tls_failed));
    rest_config.tls.cert_file = certs().client_cert;
    rest_config.tls.key_file = certs().client_key;
    http::HttpClient rest(ex, rest_config);
    const auto answer = co_await rest.get(target);
    EXPECT_EQ(answer.status, 200U) << answer.body;
    co_await rest.close();
  });
}

// ---- F61: refused certificates, permanent, start() fails at once ----------------------------

TEST(TlsWs, F61_WrongCaIsRefusedAtOnceNamingTheCheck) {
  run_sim_test(sim_config(certs().other_server_cert, certs().other_server_key),
               [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
                 const auto f = co_await start_failure(wss_config(sim.port(), certs().ca_cert));
                 EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
                 EXPECT_TRUE(contains(f.message, "verify failed")) << f.message;
                 EXPECT_LT(f.took, 4s) << "fails fast, not after startup_timeout (8 s)";
               });
}

TEST(TlsWs, F61_WrongHostNameIsRefused) {
  run_sim_test(sim_config(certs().wrong_host_cert, certs().wrong_host_key),
               [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
                 const auto f = co_await start_failure(wss_config(sim.port(), certs().ca_cert));
                 EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
                 EXPECT_TRUE(contains(f.message, "mismatch")) << f.message;
                 EXPECT_TRUE(contains(f.message, "wrong.example")) << f.message;
                 EXPECT_LT(f.took, 4s);
               });
  // The right certificate, but the client expects another name.
  run_sim_test(tls_sim(), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    auto c = wss_config(sim.port(), certs().ca_cert);
    c.tls.server_name = "wrong.example";
    const auto f = co_await start_failure(c);
    EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
    EXPECT_TRUE(contains(f.message, "hostname mismatch")) << f.message;
    EXPECT_TRUE(contains(f.message, "not wrong.example")) << f.message;
  });
}

TEST(TlsWs, F61_ExpiredCertificateIsRefused) {
  run_sim_test(sim_config(certs().expired_cert, certs().expired_key),
               [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
                 const auto f = co_await start_failure(wss_config(sim.port(), certs().ca_cert));
                 EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
                 EXPECT_TRUE(contains(f.message, "expired")) << f.message;
                 EXPECT_LT(f.took, 4s);
               });
}

// ---- F62: a handshake that never completes ---------------------------------------------------

TEST(TlsWs, F62_AServerThatNeverAnswersTheClientHelloIsBoundedByConnectTimeout) {
  trading_shared::testing::run_coroutine_test(
      [](asio::io_context& io) -> asio::awaitable<void> {
        tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
        std::optional<tcp::socket> held;  // accepted, never answered
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
              held.emplace(std::move(s));
            },
            asio::detached);
        auto c = wss_config(acceptor.local_endpoint().port(), certs().ca_cert);
        // The first attempt ends at connect_timeout; start() gives up at startup_timeout with
        // that attempt's failure (the second attempt is cut by the start-up deadline).
        c.connect_timeout = 700ms;
        c.startup_timeout = 1000ms;
        const auto f = co_await start_failure(c);
        EXPECT_EQ(f.code, make_error_code(errc::startup_timeout)) << f.message;
        EXPECT_TRUE(contains(f.message, "TLS handshake not completed within connect_timeout"))
            << f.message;
        EXPECT_LT(f.took, 1000ms + 1500ms);
        require(held.has_value(), "the server accepted the connection");
        // The client closed its socket: the server reads EOF (after the ClientHello).
        std::array<char, 4096> sink{};
        boost::system::error_code ec;
        for (int i = 0; i < 16 && !ec; ++i) {
          co_await held->async_read_some(asio::buffer(sink),
                                         asio::redirect_error(asio::use_awaitable, ec));
        }
        EXPECT_EQ(ec, asio::error::eof) << ec.message();
      },
      20s, /*stop_when_done=*/true);
}

// ---- F63: each side says what it wants -------------------------------------------------------

TEST(TlsWs, F63_PlaintextClientAgainstTheTlsPortIsToldToUseWss) {
  run_sim_test(tls_sim(), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    auto c = wss_config(sim.port(), "", "ws");
    c.startup_timeout = 1s;
    const auto f = co_await start_failure(c);
    EXPECT_TRUE(contains(f.message, "use wss://")) << f.message;
  });
}

TEST(TlsWs, F63_PlaintextClientGettingATlsAlertFailsAtOnce) {
  trading_shared::testing::run_coroutine_test(
      [](asio::io_context& io) -> asio::awaitable<void> {
        tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              for (;;) {
                tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
                std::array<char, 4096> request{};
                (void)co_await s.async_read_some(asio::buffer(request), asio::use_awaitable);
                // A TLS alert record (fatal, protocol_version), as some TLS servers answer.
                static constexpr std::array<unsigned char, 7> kAlert = {0x15, 0x03, 0x03, 0x00,
                                                                        0x02, 0x02, 0x46};
                co_await asio::async_write(s, asio::buffer(kAlert), asio::use_awaitable);
                boost::system::error_code ignored;
                s.shutdown(tcp::socket::shutdown_send, ignored);
              }
            },
            asio::detached);
        auto c = wss_config(acceptor.local_endpoint().port(), "", "ws");
        const auto f = co_await start_failure(c);
        EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
        EXPECT_TRUE(contains(f.message, "the server speaks TLS: use wss://")) << f.message;
        EXPECT_LT(f.took, 4s);
      },
      20s, /*stop_when_done=*/true);
}

TEST(TlsWs, F63_TlsClientAgainstAPlaintextServerIsToldItDoesNotSpeakTls) {
  run_sim_test(sim_config("", ""), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    const auto f = co_await start_failure(wss_config(sim.port(), certs().ca_cert));
    EXPECT_EQ(f.code, make_error_code(errc::tls_failed)) << f.message;
    EXPECT_TRUE(contains(f.message, "does not speak TLS")) << f.message;
    EXPECT_LT(f.took, 4s);
  });
}

// ---- rotation: new files, the next connection uses them -------------------------------------

TEST(TlsWs, RotatedCertificatesTakeEffectOnTheNextReconnect) {
  const std::string ca_file = dir_of_test() + "/rotating-ca.pem";
  copy_file_atomically(certs().ca_cert, ca_file);
  trading_shared::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto first = std::make_unique<feed::FeedSimulator>(io.get_executor(), tls_sim());
        co_await first->start();
        const auto port = first->port();
        auto c = wss_config(port, ca_file);
        ws::WebSocketClient client(io.get_executor(), c);
        co_await client.start();
        (void)co_await receive_trades(client, 10);
        EXPECT_EQ(client.stats().tls_contexts, 1U);
        // The server is replaced by one whose certificate comes from another CA; the client's
        // CA file is replaced with that CA. Same client object throughout.
        co_await first->close();
        first.reset();
        copy_file_atomically(certs().other_ca_cert, ca_file);
        auto next_config = sim_config(certs().other_server_cert, certs().other_server_key);
        next_config.listen = "127.0.0.1:" + std::to_string(port);
        feed::FeedSimulator second(io.get_executor(), next_config);
        co_await second.start();
        const bool reconnected = co_await eventually(
            [&] { return client.stats().connected && client.stats().connection >= 2; }, 15s, 20ms);
        EXPECT_TRUE(reconnected) << "connects " << client.stats().connects;
        EXPECT_EQ(client.stats().tls_contexts, 2U) << "a new context for the new CA file";
        if (reconnected) {
          const auto connection = co_await receive_trades(client, 10);
          EXPECT_GE(connection, 2U);
        }
        co_await client.close();
        co_await second.close();
      },
      60s, /*stop_when_done=*/true);
}

// ---- https:// -------------------------------------------------------------------------------

TEST(TlsHttp, HttpsGetIsVerifiedAndReusesTheConnection) {
  run_sim_test(tls_sim(), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    const std::string base = "https://127.0.0.1:" + std::to_string(sim.port());
    const auto ex = co_await asio::this_coro::executor;
    http::HttpClientConfig good{.base_url = base};
    good.tls.ca_file = certs().ca_cert;
    http::HttpClient rest(ex, good);
    const std::string target = "/api/v3/historicalTrades?symbol=BTCUSDT&limit=5";
    const auto a = co_await rest.get(target);
    EXPECT_EQ(a.status, 200U) << a.body;
    const auto b = co_await rest.get(target);
    EXPECT_EQ(b.status, 200U) << b.body;
    EXPECT_EQ(rest.stats().connects, 1U);
    EXPECT_EQ(rest.stats().reused, 1U) << "keep-alive over TLS";
    EXPECT_EQ(rest.stats().tls_contexts, 1U);
    co_await rest.close();

    // Another CA: refused, permanent, naming the check.
    http::HttpClientConfig other{.base_url = base};
    other.tls.ca_file = certs().other_ca_cert;
    http::HttpClient wrong(ex, other);
    std::string message;
    std::error_code code;
    try {
      (void)co_await wrong.get(target);
    } catch (const Error& e) {
      code = e.code();
      message = e.what();
    }
    EXPECT_EQ(code, make_error_code(errc::tls_failed)) << message;
    EXPECT_TRUE(contains(message, "verify failed")) << message;
    co_await wrong.close();

    // http:// to the TLS port: the simulator answers a plaintext 400 saying so.
    http::HttpClientConfig plain_config{.base_url =
                                            "http://127.0.0.1:" + std::to_string(sim.port())};
    http::HttpClient plain(ex, plain_config);
    const auto p = co_await plain.get(target);
    EXPECT_EQ(p.status, 400U);
    EXPECT_TRUE(contains(p.body, "use wss:// or https://")) << p.body;
    co_await plain.close();
  });
}

TEST(TlsHttp, HttpsAgainstAPlaintextServerSaysItDoesNotSpeakTls) {
  run_sim_test(sim_config("", ""), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    http::HttpClientConfig config{.base_url = "https://127.0.0.1:" + std::to_string(sim.port())};
    config.tls.ca_file = certs().ca_cert;
    const auto ex = co_await asio::this_coro::executor;
    http::HttpClient rest(ex, config);
    std::string message;
    std::error_code code;
    try {
      (void)co_await rest.get("/api/v3/historicalTrades?symbol=BTCUSDT&limit=5");
    } catch (const Error& e) {
      code = e.code();
      message = e.what();
    }
    EXPECT_EQ(code, make_error_code(errc::tls_failed)) << message;
    EXPECT_TRUE(contains(message, "does not speak TLS")) << message;
    co_await rest.close();
  });
}

// A TLS server that closes an idle kept-alive connection without close_notify (its socket
// simply closed, as many do on their idle timeout): the client's next GET on that connection
// reads "stream truncated" before any byte of an answer. Nothing was processed, so the GET goes
// again once on a new connection, as it does over plaintext (a stale connection).
TEST(TlsHttp, AKeptAliveConnectionClosedWithoutCloseNotifyIsRetriedOnANewOne) {
  using SslStream = asio::ssl::stream<tcp::socket>;
  auto server_context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  server_context->use_certificate_chain_file(certs().server_cert);
  server_context->use_private_key_file(certs().server_key, asio::ssl::context::pem);
  int accepted = 0;
  trading_shared::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
        const auto port = acceptor.local_endpoint().port();
        // Each connection: one request answered as keep-alive, then the socket closed at once
        // (no TLS shutdown), while the client still holds the connection as reusable.
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              for (;;) {
                auto stream = std::make_shared<SslStream>(io, *server_context);
                co_await acceptor.async_accept(stream->next_layer(), asio::use_awaitable);
                ++accepted;
                co_await stream->async_handshake(asio::ssl::stream_base::server,
                                                 asio::use_awaitable);
                std::array<char, 4096> request{};
                boost::system::error_code ec;
                (void)co_await stream->async_read_some(
                    asio::buffer(request), asio::redirect_error(asio::use_awaitable, ec));
                if (ec) continue;
                const std::string answer =
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
                co_await asio::async_write(*stream, asio::buffer(answer), asio::use_awaitable);
                stream->next_layer().close();  // no close_notify
              }
            },
            asio::detached);
        http::HttpClientConfig config{.base_url = "https://127.0.0.1:" + std::to_string(port)};
        config.tls.ca_file = certs().ca_cert;
        http::HttpClient client(co_await asio::this_coro::executor, config);
        const auto first = co_await client.get("/a");
        EXPECT_EQ(first.status, 200U);
        // The server closed that connection (whether its FIN has arrived yet or not, the next
        // GET on it meets a closed TLS stream before any byte of an answer).
        std::string failure;
        try {
          const auto second = co_await client.get("/b");
          EXPECT_EQ(second.status, 200U);
        } catch (const Error& e) {
          failure = e.what();
        }
        EXPECT_TRUE(failure.empty()) << "the stale TLS connection failed the GET: " << failure;
        EXPECT_EQ(accepted, 2) << "the GET went again on a new connection";
        co_await client.close();
        acceptor.close();
      },
      10s, true);
}

}  // namespace

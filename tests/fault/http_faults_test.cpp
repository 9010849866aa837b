// HttpClient (ts_http) against a scripted HTTP server on loopback (tests/support/
// http_test_server.hpp): deadline, truncated and oversized bodies, a kept-alive connection
// closed by the server, cancellation, close(), refused connections, status classification
// (docs/http.md; F58's transport half).
#include <trading_shared/core/error.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/http/http_status.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/async_test.hpp"
#include "support/http_test_server.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::testing::HttpAnswer;
using ts::testing::HttpSeen;
using ts::testing::HttpTestServer;
using Clock = std::chrono::steady_clock;

/// ASSERT_* for coroutine bodies (gtest's ASSERT returns void): records the failure, ends the body.
#define CO_ASSERT(condition)                \
  if (!(condition)) {                       \
    ADD_FAILURE() << "failed: " #condition; \
    co_return;                              \
  }

namespace {

/// Runs `op`, returns the Error it throws (fails the test when it does not throw one).
template <typename Op>
asio::awaitable<std::optional<ts::Error>> error_of(Op op) {
  try {
    co_await op();
  } catch (const ts::Error& e) {
    co_return e;
  }
  ADD_FAILURE() << "no ts::Error thrown";
  co_return std::nullopt;
}

ts::http::HttpClientConfig config_for(const HttpTestServer& server) {
  ts::http::HttpClientConfig config;
  config.base_url = server.url();
  config.request_timeout = 5s;
  return config;
}

TEST(HttpClient, GetsAnswersOnOneKeptAliveConnectionWithTheHeadersAsked) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen& r, int) {
      HttpAnswer a;
      a.headers = {{"X-MBX-USED-WEIGHT-1M", "25"}};
      a.body = "[" + r.target + "]";
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    ts::http::HttpRequestOptions options;
    options.headers.push_back({"X-MBX-APIKEY", "k1"});
    for (int i = 0; i < 3; ++i) {
      const auto answer = co_await client.get("/api/v3/ping?n=" + std::to_string(i), options);
      EXPECT_EQ(answer.status, 200u);
      EXPECT_EQ(answer.body, "[/api/v3/ping?n=" + std::to_string(i) + "]");
      EXPECT_EQ(answer.header("x-mbx-used-weight-1m").value_or(""), "25");
    }
    EXPECT_EQ(server.connections(), 1) << "keep-alive: one connection for three requests";
    EXPECT_EQ(client.stats().reused, 2u);
    bool key_sent = false;
    for (const auto& [name, value] : server.requests().at(0).headers) {
      if (name == "X-MBX-APIKEY" && value == "k1") key_sent = true;
    }
    EXPECT_TRUE(key_sent);
    co_await client.close();
  });
}

TEST(HttpFaults, F58_ASlowAnswerHitsTheRequestDeadline) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int) {
      HttpAnswer a;
      a.delay = 3s;
      a.body = "late";
      return a;
    });
    auto config = config_for(server);
    config.request_timeout = 300ms;
    ts::http::HttpClient client(io.get_executor(), config);
    const auto t0 = Clock::now();
    const auto e =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/slow"); });
    const auto took = Clock::now() - t0;
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 2s) << "the deadline (300 ms) must end the request, not the answer (3 s)";
    CO_ASSERT(e);
    EXPECT_EQ(e->code(), ts::make_error_code(ts::errc::request_timeout)) << e->what();
    EXPECT_EQ(e->kind(), ts::ErrorKind::outcome_unknown) << "sent, no answer: a GET may be retried";
    // A shorter per-request deadline wins over the client's.
    config.request_timeout = 10s;
    ts::http::HttpClient client2(io.get_executor(), config);
    const auto t1 = Clock::now();
    const auto e2 = co_await error_of([&]() -> asio::awaitable<void> {
      (void)co_await client2.get("/slow", {.headers = {}, .timeout = 200ms});
    });
    EXPECT_LT(Clock::now() - t1, 2s);
    CO_ASSERT(e2);
    EXPECT_EQ(e2->code(), ts::make_error_code(ts::errc::request_timeout));
    server.stop();
  });
}

TEST(HttpFaults, F58_ATruncatedBodyIsATransientLostConnection) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int) {
      HttpAnswer a;
      a.body = std::string(10000, 'x');
      a.truncate_at = 4000;
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    const auto e =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/t"); });
    CO_ASSERT(e);
    EXPECT_EQ(e->code(), ts::make_error_code(ts::errc::connection_lost)) << e->what();
    EXPECT_EQ(e->kind(), ts::ErrorKind::outcome_unknown);
    EXPECT_NE(std::string(e->what()).find("middle of the answer"), std::string::npos) << e->what();
    EXPECT_EQ(server.requests().size(), 1u)
        << "an answer cut short is not sent again by the client";
  });
}

TEST(HttpFaults, AnOversizedBodyIsRefused) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int) {
      HttpAnswer a;
      a.body = std::string(5000, 'y');
      return a;
    });
    auto config = config_for(server);
    config.max_body_size = 1000;
    ts::http::HttpClient client(io.get_executor(), config);
    const auto e =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/big"); });
    CO_ASSERT(e);
    EXPECT_EQ(e->code(), ts::make_error_code(ts::errc::response_too_large)) << e->what();
    EXPECT_EQ(e->kind(), ts::ErrorKind::permanent);
    EXPECT_EQ(client.stats().too_large, 1u);
  });
}

TEST(HttpFaults, AKeptAliveConnectionClosedByTheServerIsReplacedForTheNextGet) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int index) {
      HttpAnswer a;
      a.body = "answer " + std::to_string(index);
      a.close_after_keep_alive = index == 0;  // its idle timeout, right after the answer
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    EXPECT_EQ((co_await client.get("/a")).body, "answer 0");
    // Let the server's close reach us, so that the connection is stale when reused.
    asio::steady_timer settle(io, 100ms);
    co_await settle.async_wait(asio::use_awaitable);
    EXPECT_EQ((co_await client.get("/b")).body, "answer 1");
    EXPECT_EQ(server.connections(), 2);
    EXPECT_EQ(server.requests().size(), 2u) << "the stale connection never delivered /b";
    EXPECT_EQ(client.stats().stale_retries + client.stats().connects, 3u)
        << "either reused-then-retried (stale_retries 1) or found closed before reuse";
  });
}

TEST(HttpFaults, AFreshConnectionClosedWithoutAnAnswerIsNotSentAgain) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int) {
      HttpAnswer a;
      a.close_without_answer = true;
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    const auto e =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/x"); });
    CO_ASSERT(e);
    EXPECT_EQ(e->code(), ts::make_error_code(ts::errc::connection_lost)) << e->what();
    EXPECT_EQ(e->kind(), ts::ErrorKind::outcome_unknown);
    EXPECT_EQ(server.requests().size(), 1u);
    EXPECT_EQ(client.stats().stale_retries, 0u);
  });
}

TEST(HttpFaults, CancellationEndsARequestPromptly) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen&, int) {
      HttpAnswer a;
      a.delay = 5s;
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    asio::cancellation_signal signal;
    std::optional<ts::Error> error;
    bool done = false;
    asio::co_spawn(io, client.get("/never"),
                   asio::bind_cancellation_slot(signal.slot(),
                                                [&](std::exception_ptr e, ts::http::HttpResponse) {
                                                  done = true;
                                                  try {
                                                    if (e) std::rethrow_exception(e);
                                                  } catch (const ts::Error& x) {
                                                    error = x;
                                                  }
                                                }));
    asio::steady_timer timer(io, 200ms);
    co_await timer.async_wait(asio::use_awaitable);
    EXPECT_FALSE(done);
    const auto t0 = Clock::now();
    signal.emit(asio::cancellation_type::terminal);
    while (!done && Clock::now() - t0 < 3s) {
      timer.expires_after(5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    EXPECT_TRUE(done);
    EXPECT_LT(Clock::now() - t0, 500ms) << "cancellation must end the request at once";
    CO_ASSERT(error);
    EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::cancelled)) << error->what();
    EXPECT_EQ(error->kind(), ts::ErrorKind::cancelled);
    // close() fails a request in flight with client_closed, and later ones at once.
    done = false;
    error.reset();
    asio::co_spawn(io, client.get("/never2"), [&](std::exception_ptr e, ts::http::HttpResponse) {
      done = true;
      try {
        if (e) std::rethrow_exception(e);
      } catch (const ts::Error& x) {
        error = x;
      }
    });
    timer.expires_after(100ms);
    co_await timer.async_wait(asio::use_awaitable);
    co_await client.close();
    const auto t1 = Clock::now();
    while (!done && Clock::now() - t1 < 3s) {
      timer.expires_after(5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    CO_ASSERT(error);
    EXPECT_EQ(error->code(), ts::make_error_code(ts::errc::client_closed)) << error->what();
    const auto e3 =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/after"); });
    CO_ASSERT(e3);
    EXPECT_EQ(e3->code(), ts::make_error_code(ts::errc::client_closed));
    server.stop();
  });
}

TEST(HttpFaults, ARefusedConnectionIsTransientNotSent) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    ts::http::HttpClientConfig config;
    config.base_url = "http://127.0.0.1:" + std::to_string(ts::testing::free_loopback_port());
    ts::http::HttpClient client(io.get_executor(), config);
    const auto e =
        co_await error_of([&]() -> asio::awaitable<void> { (void)co_await client.get("/"); });
    CO_ASSERT(e);
    EXPECT_EQ(e->code(), ts::make_error_code(ts::errc::connect_failed)) << e->what();
    EXPECT_EQ(e->kind(), ts::ErrorKind::transient_not_sent);
  });
}

TEST(HttpFaults, StatusAnswersAreClassifiedWithTheirRetryAfter) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [](const HttpSeen& r, int) {
      HttpAnswer a;
      a.status = static_cast<unsigned>(std::stoi(r.target.substr(1)));
      if (a.status == 429 || a.status == 418) a.headers = {{"Retry-After", "3"}};
      a.body = R"({"code":-1003,"msg":"Too many requests."})";
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), config_for(server));
    struct Case {
      unsigned status;
      ts::ErrorKind kind;
      std::optional<std::chrono::milliseconds> retry_after;
    };
    for (const Case c : {Case{429, ts::ErrorKind::transient_unavailable, 3000ms},
                         Case{418, ts::ErrorKind::transient_unavailable, 3000ms},
                         Case{503, ts::ErrorKind::transient_unavailable, std::nullopt},
                         Case{500, ts::ErrorKind::transient_unavailable, std::nullopt},
                         Case{408, ts::ErrorKind::transient_unavailable, std::nullopt},
                         Case{400, ts::ErrorKind::permanent, std::nullopt},
                         Case{404, ts::ErrorKind::permanent, std::nullopt}}) {
      const auto answer = co_await client.get("/" + std::to_string(c.status));
      EXPECT_EQ(answer.status, c.status);
      try {
        ts::http::throw_for_status(answer, "test");
        ADD_FAILURE() << c.status << " did not throw";
      } catch (const ts::Error& e) {
        EXPECT_EQ(e.kind(), c.kind) << c.status << ": " << e.what();
        EXPECT_EQ(ts::http::http_status(e), c.status);
        EXPECT_EQ(e.retry_after(), c.retry_after) << c.status;
        EXPECT_NE(std::string(e.what()).find("HTTP " + std::to_string(c.status)), std::string::npos)
            << e.what();
      }
    }
  });
}

}  // namespace

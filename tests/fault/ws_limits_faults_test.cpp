// F60 (docs/failure-modes.md): the venue pings and closes a connection whose pong does not come
// in time. WebSocketClient answers pings from its read loop, which never waits for the
// consumer: pongs go out while the consumer is stalled and the hand-off queue is full. Also the
// hooks FeedSet (ts-receiver) is built on: on_ready, intercept, on_readable, try_receive_batch.
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "support/async_test.hpp"
#include "support/test_helpers.hpp"
#include "support/ws_test_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using namespace std::chrono_literals;
using trading_shared::testing::eventually;
using trading_shared::testing::WsTestServer;
namespace ws = trading_shared::ws;
using Clock = std::chrono::steady_clock;

/// Runs `body` on a fresh io_context; fails the test after `timeout`.
void run_ws_test(std::function<asio::awaitable<void>(asio::io_context&)> body,
                 std::chrono::seconds timeout = 30s) {
  trading_shared::testing::run_coroutine_test(std::move(body), timeout, /*stop_when_done=*/true);
}

ws::WebSocketConfig config_for(const WsTestServer& server) {
  ws::WebSocketConfig c;
  c.url = server.url();
  c.connect_timeout = 2s;
  c.startup_timeout = 5s;
  c.idle_timeout = 5s;
  c.reconnect_backoff = {10ms, 100ms, 2.0};
  c.close_timeout = 1s;
  return c;
}

// F60: the server fills the client's queue (the consumer never reads), then pings 10 times,
// each time waiting for the pong, and sends more messages in between (overflow). Every ping is
// answered, each within 500 ms (the venue allows a minute), the connection is never lost.
TEST(WsFaults, F60_PongsAreSentWhileTheConsumerIsStalled) {
  constexpr int kPings = 10;
  int pings = 0;
  int pongs = 0;
  Clock::duration slowest{};
  bool server_done = false;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      for (int i = 0; i < 50; ++i) {
        if (!co_await WsTestServer::write_text(s, "fill " + std::to_string(i))) co_return;
      }
      Clock::time_point pinged_at{};
      s.control_callback([&](beast::websocket::frame_type kind, beast::string_view) {
        if (kind != beast::websocket::frame_type::pong) return;
        ++pongs;
        slowest = std::max(slowest, Clock::now() - pinged_at);
      });
      // Beast sees the pongs while it reads: one read in the background (the client sends
      // nothing else).
      asio::co_spawn(
          s.get_executor(),
          [&s]() -> asio::awaitable<void> {
            beast::flat_buffer buffer;
            boost::system::error_code ec;
            co_await s.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
          },
          asio::detached);
      asio::steady_timer step(s.get_executor());
      for (int i = 0; i < kPings; ++i) {
        pinged_at = Clock::now();
        boost::system::error_code ec;
        co_await s.async_ping({}, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
        ++pings;
        const auto deadline = Clock::now() + 2s;
        while (pongs < pings && Clock::now() < deadline) {
          step.expires_after(5ms);
          co_await step.async_wait(asio::use_awaitable);
        }
        if (pongs < pings) break;
        for (int j = 0; j < 10; ++j) {
          if (!co_await WsTestServer::write_text(s, "more " + std::to_string(j))) co_return;
        }
      }
      server_done = true;
      co_await WsTestServer::stall(s);
    });
    auto cfg = config_for(server);
    cfg.queue_capacity = 8;  // full after the first 8 messages: the consumer is stalled
    cfg.overflow = ws::OverflowPolicy::drop_newest;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    EXPECT_TRUE(co_await eventually([&] { return server_done; }, 25s, 10ms));
    const auto st = client.stats();
    EXPECT_EQ(st.queued, 8U) << "the consumer never read: the queue stayed full";
    EXPECT_GT(st.dropped, 0U);
    EXPECT_EQ(st.disconnects, 0U);
    co_await client.close();
    server.stop();
  });
  EXPECT_EQ(pings, kPings);
  EXPECT_EQ(pongs, kPings) << "pings not answered while the consumer was stalled";
  EXPECT_LT(slowest, 500ms);
}

// The hooks of a consumer that subscribes by itself and reads several clients (FeedSet):
// on_ready once per connection, intercept takes a reply out of the stream (also while nobody
// reads), on_readable announces each queued message and the end, try_receive_batch never waits.
TEST(WsClient, HooksReadyInterceptReadableAndTryReceive) {
  std::vector<std::uint64_t> ready;
  std::vector<std::string> intercepted;
  int readable = 0;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      const std::string request = co_await WsTestServer::read_text(s);
      if (request != "SUB") co_return;
      if (!co_await WsTestServer::write_text(s, R"({"result":null,"id":1})")) co_return;
      if (!co_await WsTestServer::write_text(s, "t1")) co_return;
      if (!co_await WsTestServer::write_text(s, "t2")) co_return;
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.on_ready = [&](std::uint64_t connection) { ready.push_back(connection); };
    cfg.intercept = [&](std::string_view text, std::uint64_t) {
      if (!text.starts_with(R"({"result")")) return false;
      intercepted.emplace_back(text);
      return true;
    };
    cfg.on_readable = [&] { ++readable; };
    ws::WebSocketClient client(io.get_executor(), cfg);
    std::vector<ws::Message> out;
    EXPECT_EQ(client.try_receive_batch(out, 0, 10), std::optional<std::size_t>(0));
    co_await client.start();
    EXPECT_EQ(ready, std::vector<std::uint64_t>{1});
    co_await client.send("SUB");
    std::size_t n = 0;
    const auto deadline = Clock::now() + 5s;
    asio::steady_timer step(io);
    while (n < 2 && Clock::now() < deadline) {
      const auto got = client.try_receive_batch(out, n, 10);
      if (!got) break;
      n += *got;
      step.expires_after(5ms);
      co_await step.async_wait(asio::use_awaitable);
    }
    EXPECT_EQ(n, 2U);
    if (n == 2) {
      EXPECT_EQ(out[0].data, "t1");
      EXPECT_EQ(out[1].data, "t2");
      EXPECT_EQ(out[1].connection, 1U);
    }
    EXPECT_EQ(intercepted, std::vector<std::string>{R"({"result":null,"id":1})"});
    EXPECT_EQ(readable, 2) << "one per queued message (the intercepted reply is not queued)";
    co_await client.close();
    EXPECT_EQ(client.try_receive_batch(out, 0, 10), std::nullopt) << "closed and empty";
    EXPECT_GE(readable, 3) << "the end is announced too";
    server.stop();
  });
}

}  // namespace

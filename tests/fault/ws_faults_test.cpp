// Fault tests F35-F39 (docs/failure-modes.md) for WebSocketClient, against a real Beast server in
// the test (tests/support/ws_test_server.hpp) on loopback, misbehaving on purpose.
#include <trading_shared/core/error.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "support/async_test.hpp"
#include "support/test_helpers.hpp"
#include "support/ws_test_server.hpp"

#include <gtest/gtest.h>

#if !defined(__SANITIZE_ADDRESS__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer's allocator statistics (its runtime exports them; GCC ships no header).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using namespace std::chrono_literals;
using trading_shared::errc;
using trading_shared::Error;
using trading_shared::testing::eventually;
using trading_shared::testing::WsTestServer;
namespace ws = trading_shared::ws;
using Clock = std::chrono::steady_clock;

/// Runs `body` on a fresh io_context; stops the loop (servers, stalls) when the body ends;
/// fails the test after `timeout`.
void run_ws_test(std::function<asio::awaitable<void>(asio::io_context&)> body,
                 std::chrono::seconds timeout = 30s) {
  trading_shared::testing::run_coroutine_test(std::move(body), timeout, /*stop_when_done=*/true);
}

ws::WebSocketConfig config_for(const WsTestServer& server) {
  ws::WebSocketConfig c;
  c.url = server.url();
  c.connect_timeout = 2s;
  c.startup_timeout = 5s;
  c.idle_timeout = 2s;
  c.reconnect_backoff = {10ms, 100ms, 2.0};
  c.close_timeout = 1s;
  return c;
}

/// A configuration whose URL names a loopback port nothing listens on (a listener's, closed).
ws::WebSocketConfig config_nothing_listening(asio::io_context& io) {
  asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto port = probe.local_endpoint().port();
  probe.close();
  ws::WebSocketConfig c;
  c.url = "ws://127.0.0.1:" + std::to_string(port) + "/";
  return c;
}

/// Bytes of heap memory in use by the whole process (the allocator's own count: glibc's, or
/// AddressSanitizer's in the sanitizer build).
std::size_t heap_in_use() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#else
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;  // arenas, and chunks of their own (large ones are mmapped)
#endif
}

/// Sends "<seq>" messages 1..n on the connection.
asio::awaitable<void> send_sequence(WsTestServer::Stream& s, int from, int n) {
  for (int i = from; i < from + n; ++i) {
    const bool ok = co_await WsTestServer::write_text(s, std::to_string(i));
    if (!ok) co_return;
  }
}

TEST(WsUrl, ParsesAndRefuses) {
  const auto u = ws::parse_websocket_url("ws://[::1]:9443/ws?x=1");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, "9443");
  EXPECT_EQ(u.target, "/ws?x=1");
  const auto d = ws::parse_websocket_url("ws://example.org");
  EXPECT_EQ(d.port, "80");
  EXPECT_EQ(d.target, "/");
  const auto tls = ws::parse_websocket_url("wss://example.org/ws");
  EXPECT_TRUE(tls.tls);
  EXPECT_EQ(tls.port, "443");
  for (const char* bad :
       {"wss://", "http://h/", "ws://", "ws://h:0/", "ws://h:70000", "ws://u:p@h/", "ws://[::1/"}) {
    EXPECT_THROW((void)ws::parse_websocket_url(bad), Error) << bad;
  }
  ws::WebSocketConfig c;
  c.url = "ws://127.0.0.1:1/";
  c.queue_capacity = 0;
  EXPECT_THROW(ws::validate(c), Error);
}

TEST(WsClient, SubscribesReceivesAndClosesCleanly) {
  std::vector<std::string> first_messages;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      first_messages.push_back(co_await WsTestServer::read_text(s));
      co_await send_sequence(s, 1, 100);
      // Stay open until the client closes (its close frame ends this read).
      (void)co_await WsTestServer::read_text(s);
    });
    ws::WebSocketClient client(io.get_executor(), config_for(server));
    client.add_on_connect(R"({"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1})");
    co_await client.start();
    ws::Message m;
    for (int i = 1; i <= 100; ++i) {
      const bool got = co_await client.receive(m);
      EXPECT_TRUE(got);
      EXPECT_EQ(m.data, std::to_string(i));
      EXPECT_EQ(m.connection, 1U);
    }
    co_await client.close();
    const bool more = co_await client.receive(m);
    EXPECT_FALSE(more);
    const auto st = client.stats();
    EXPECT_EQ(st.connects, 1U);
    EXPECT_EQ(st.disconnects, 0U);
    EXPECT_EQ(st.messages, 100U);
    EXPECT_THROW(co_await client.send("x"), Error);
    server.stop();
  });
  ASSERT_EQ(first_messages.size(), 1U);
  EXPECT_NE(first_messages[0].find("SUBSCRIBE"), std::string::npos);
}

TEST(WsClient, StartFailsWithinStartupTimeoutWhenNothingListens) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ws::WebSocketConfig c = config_nothing_listening(io);
    c.startup_timeout = 300ms;
    c.reconnect_backoff = {10ms, 50ms, 2.0};
    ws::WebSocketClient client(io.get_executor(), c);
    const auto t0 = Clock::now();
    try {
      co_await client.start();
      ADD_FAILURE() << "start() succeeded with nothing listening";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), make_error_code(errc::startup_timeout)) << e.what();
    }
    EXPECT_LT(Clock::now() - t0, 2s);
    EXPECT_GE(client.stats().connect_failures, 1U);
  });
}

/// start() must fail with `code`.
asio::awaitable<void> expect_start_error(ws::WebSocketClient& client, errc code) {
  try {
    co_await client.start();
    ADD_FAILURE() << "start() succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), make_error_code(code)) << e.what();
  }
}

// A start() that failed closes the client (it does not return to idle): a later start() is
// refused with client_closed, the consumer sees the end, close() returns.
TEST(WsClient, AFailedStartClosesTheClient) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ws::WebSocketConfig c = config_nothing_listening(io);
    c.startup_timeout = 200ms;
    ws::WebSocketClient client(io.get_executor(), c);
    co_await expect_start_error(client, errc::startup_timeout);
    co_await expect_start_error(client, errc::client_closed);  // not idle again
    ws::Message m;
    const bool any = co_await client.receive(m);
    EXPECT_FALSE(any);
    co_await client.close();
  });
}

// Two close() calls at once: both return once the client is closed.
TEST(WsClient, ConcurrentClosesBothEnd) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      for (;;) {
        const std::string text = co_await WsTestServer::read_text(s);
        if (text.empty()) co_return;
      }
    });
    ws::WebSocketClient client(io.get_executor(), config_for(server));
    co_await client.start();
    int closed = 0;
    for (int i = 0; i < 2; ++i) {
      asio::co_spawn(io, client.close(), [&](std::exception_ptr e) {
        EXPECT_FALSE(e);
        ++closed;
      });
    }
    const bool both = co_await eventually([&] { return closed == 2; }, 5s, 2ms);
    EXPECT_TRUE(both);
    EXPECT_FALSE(client.stats().connected);
    ws::Message m;
    const bool any = co_await client.receive(m);
    EXPECT_FALSE(any);
    server.stop();
  });
}

// F35: the server sends the next message only after the client acknowledged the previous
// one. The client acknowledges from its message handler: with writes independent of the read
// loop this cannot deadlock.
TEST(WsFaults, F35_HandlerWaitingForTheServerCannotDeadlock) {
  constexpr int kMessages = 500;
  int acks_seen = 0;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      for (int i = 1; i <= kMessages; ++i) {
        const bool ok = co_await WsTestServer::write_text(s, std::to_string(i));
        if (!ok) co_return;
        const std::string ack = co_await WsTestServer::read_text(s);
        if (ack != "ack " + std::to_string(i)) co_return;
        ++acks_seen;
      }
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.idle_timeout = 500ms;  // pings run during the whole exchange
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    ws::Message m;
    for (int i = 1; i <= kMessages; ++i) {
      const bool got = co_await client.receive(m);
      if (!got) break;
      co_await client.send("ack " + m.data);  // the handler awaits a write: never the read loop
    }
    EXPECT_EQ(client.stats().disconnects, 0U);
    co_await client.close();
    server.stop();
  });
  EXPECT_EQ(acks_seen, kMessages);
}

// F36: many coroutines send at once; every message arrives whole, each sender's in order.
TEST(WsFaults, F36_ConcurrentSendersAreSerialised) {
  constexpr int kSenders = 40;
  // 4 000 messages of 4 000 bytes: enough for partial socket writes and interleaving (250 each
  // took 16 s of the 20 s poll in the sanitizer build on a loaded machine).
  constexpr int kEach = 100;
  std::map<int, std::vector<int>> received;  // sender -> sequence numbers in arrival order
  int malformed = 0;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      for (;;) {
        const std::string text = co_await WsTestServer::read_text(s);
        if (text.empty()) co_return;
        int sender = -1;
        int seq = -1;
        std::string padding;
        if (std::sscanf(text.c_str(), "%d:%d:", &sender, &seq) != 2 || text.size() != 4000) {
          ++malformed;
          continue;
        }
        received[sender].push_back(seq);
      }
    });
    auto cfg = config_for(server);
    cfg.max_pending_sends = kSenders;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    int finished = 0;
    int failures = 0;
    for (int sender = 0; sender < kSenders; ++sender) {
      asio::co_spawn(
          io,
          [&, sender]() -> asio::awaitable<void> {
            for (int i = 0; i < kEach; ++i) {
              std::string text = std::to_string(sender) + ":" + std::to_string(i) + ":";
              text.resize(4000, 'x');  // large enough for partial socket writes
              co_await client.send(text);
            }
          },
          [&](std::exception_ptr e) {
            if (e) ++failures;
            ++finished;
          });
    }
    const bool all_sent = co_await eventually([&] { return finished == kSenders; }, 20s, 5ms);
    EXPECT_TRUE(all_sent);
    const bool all_arrived = co_await eventually(
        [&] {
          std::size_t n = 0;
          for (const auto& [k, v] : received) n += v.size();
          return n == static_cast<std::size_t>(kSenders * kEach);
        },
        20s, 5ms);
    EXPECT_TRUE(all_arrived);
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(client.stats().sends, static_cast<std::uint64_t>(kSenders * kEach));
    co_await client.close();
    server.stop();
  });
  EXPECT_EQ(malformed, 0);
  ASSERT_EQ(received.size(), static_cast<std::size_t>(kSenders));
  for (const auto& [sender, seqs] : received) {
    ASSERT_EQ(seqs.size(), static_cast<std::size_t>(kEach)) << "sender " << sender;
    for (int i = 0; i < kEach; ++i)
      EXPECT_EQ(seqs[static_cast<std::size_t>(i)], i) << "sender " << sender;
  }
}

// F37: a consumer that does not read while the server floods: the read loop keeps reading
// (pings answered, no idle timeout), the queue stays bounded, the overflow is counted, and
// the freshest messages are kept (drop_oldest).
TEST(WsFaults, F37_SlowConsumerDoesNotStallReadsAndOverflowIsCounted) {
  constexpr int kSent = 20000;
  constexpr std::size_t kCapacity = 1000;
  bool server_done = false;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      co_await send_sequence(s, 1, kSent);
      server_done = true;
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.queue_capacity = kCapacity;
    cfg.idle_timeout = 300ms;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    // The consumer does nothing until everything has been read, and then for several idle
    // timeouts more: the connection must stay up (keep-alive pings are answered).
    const bool read_all =
        co_await eventually([&] { return client.stats().messages == kSent; }, 20s, 5ms);
    EXPECT_TRUE(read_all);
    EXPECT_TRUE(server_done);
    const auto later = Clock::now() + 4 * cfg.idle_timeout;
    const bool stayed = co_await eventually(
        [&] { return Clock::now() >= later && client.stats().disconnects == 0; }, 5s, 20ms);
    EXPECT_TRUE(stayed);
    const auto st = client.stats();
    EXPECT_EQ(st.disconnects, 0U);
    EXPECT_EQ(st.dropped, kSent - kCapacity);
    EXPECT_EQ(st.queued, kCapacity);
    EXPECT_LE(st.max_queued, kCapacity);
    std::vector<ws::Message> batch;
    const std::size_t n = co_await client.receive_batch(batch, 5000);
    EXPECT_EQ(n, kCapacity);
    EXPECT_EQ(batch.front().data, std::to_string(kSent - static_cast<int>(kCapacity) + 1));
    EXPECT_EQ(batch[n - 1].data, std::to_string(kSent));
    co_await client.close();
    server.stop();
  });
}

// OverflowPolicy::drop_newest by the message bound: a consumer that does not read while the
// server sends 5 000 messages into a queue of 100: the first 100 are kept, the 4 900 that
// arrive after are discarded and counted, and the connection stays up.
TEST(WsFaults, F37_DropNewestKeepsTheFirstMessagesAndCountsTheRest) {
  constexpr int kSent = 5000;
  constexpr std::size_t kCapacity = 100;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      co_await send_sequence(s, 1, kSent);
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.queue_capacity = kCapacity;
    cfg.overflow = ws::OverflowPolicy::drop_newest;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    const bool read_all =
        co_await eventually([&] { return client.stats().messages == kSent; }, 20s, 5ms);
    EXPECT_TRUE(read_all) << client.stats().messages << " of " << kSent << " read";
    const auto st = client.stats();
    EXPECT_EQ(st.dropped, kSent - kCapacity) << "every discarded message is counted";
    EXPECT_EQ(st.queued, kCapacity);
    EXPECT_EQ(st.max_queued, kCapacity);
    EXPECT_EQ(st.disconnects, 0U);
    std::vector<ws::Message> batch;
    const std::size_t n = co_await client.receive_batch(batch, 1000);
    EXPECT_EQ(n, kCapacity);
    std::size_t out_of_place = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (batch[i].data != std::to_string(i + 1)) ++out_of_place;
    }
    EXPECT_EQ(out_of_place, 0U) << "drop_newest keeps messages 1.." << kCapacity << " in order";
    // Room again: the next message is taken.
    EXPECT_EQ(client.stats().queued, 0U);
    co_await client.close();
    server.stop();
  });
}

// send() failures (docs/websocket.md): with one send blocked in its write (a 16 MiB message to
// a server that reads nothing) and max_pending_sends (2) waiting, the next send fails at once
// with queue_full; when the server resets the connection, the blocked write fails with
// connection_lost (outcome unknown: part of it went out); once the client is back, a send goes
// through; with no server at all, a send fails at once with connection_lost (not connected).
TEST(WsClient, SendFailsWithQueueFullAndConnectionLost) {
  const std::string big(std::size_t{16} << 20, 'x');  // far more than loopback buffers hold
  bool cut = false;
  std::vector<std::string> later_received;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
      if (index == 0) {
        // Reads nothing, so the client's write of `big` cannot complete; then a reset.
        (void)co_await eventually([&] { return cut; }, 20s, 2ms);
        auto& socket = beast::get_lowest_layer(s).socket();
        boost::system::error_code ec;
        socket.set_option(asio::socket_base::linger(true, 0), ec);
        socket.close(ec);
        co_return;
      }
      for (;;) {
        std::string m = co_await WsTestServer::read_text(s);
        if (m.empty()) co_return;
        later_received.push_back(std::move(m));
      }
    });
    auto cfg = config_for(server);
    cfg.max_pending_sends = 2;
    cfg.idle_timeout = 10s;  // the blocked write must end by the reset, not by the idle timeout
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();

    constexpr std::size_t kSends = 4;
    std::vector<trading_shared::testing::Outcome> results(kSends);
    std::vector<bool> done(kSends, false);
    for (std::size_t i = 0; i < kSends; ++i) {
      asio::co_spawn(
          io, trading_shared::testing::outcome(client.send(big)),
          [&results, &done, i](std::exception_ptr e, trading_shared::testing::Outcome o) {
            if (e) ADD_FAILURE() << "outcome() threw";
            results[i] = std::move(o);
            done[i] = true;
          });
    }
    // One writing, two waiting: the fourth is refused.
    EXPECT_TRUE(co_await eventually([&] { return done[3]; }, 5s, 2ms));
    EXPECT_EQ(results[3].code, make_error_code(errc::queue_full))
        << trading_shared::testing::describe(results[3]);
    EXPECT_FALSE(done[0] || done[1] || done[2])
        << "a send finished although the server reads nothing";
    EXPECT_EQ(client.stats().sends, 0U);

    // The reset breaks the blocked write.
    cut = true;
    EXPECT_TRUE(co_await eventually([&] { return done[0] && done[1] && done[2]; }, 5s, 2ms));
    EXPECT_EQ(results[0].code, make_error_code(errc::connection_lost))
        << trading_shared::testing::describe(results[0]);
    EXPECT_EQ(results[0].kind, trading_shared::ErrorKind::outcome_unknown)
        << trading_shared::testing::describe(results[0]);
    // The two that waited get the turn after the loss: refused with connection_lost, or, if a
    // new connection was already up, sent on it. Nothing else.
    for (std::size_t i = 1; i < 3; ++i) {
      EXPECT_TRUE(!results[i].failed || results[i].code == make_error_code(errc::connection_lost))
          << i << ": " << trading_shared::testing::describe(results[i]);
    }
    EXPECT_GE(client.stats().send_failures, 1U);

    // Back on a new connection: a send goes through and the server reads it.
    EXPECT_TRUE(co_await eventually([&] { return client.stats().connects >= 2; }, 5s, 2ms));
    co_await client.send("after the reset");
    EXPECT_TRUE(co_await eventually(
        [&] {
          return std::find(later_received.begin(), later_received.end(), "after the reset") !=
                 later_received.end();
        },
        5s, 2ms));

    // No server at all: not connected, the send fails at once.
    server.stop();
    EXPECT_TRUE(co_await eventually([&] { return !client.stats().connected; }, 5s, 2ms));
    const auto failures_before = client.stats().send_failures;
    const auto down = co_await trading_shared::testing::outcome(client.send("nobody"));
    EXPECT_EQ(down.code, make_error_code(errc::connection_lost))
        << trading_shared::testing::describe(down);
    EXPECT_EQ(client.stats().send_failures, failures_before + 1);
    co_await client.close();
  });
}

TEST(WsFaults, F37_DisconnectPolicyReconnectsVisibly) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
      co_await send_sequence(s, 1, index == 0 ? 500 : 10);
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.queue_capacity = 100;
    cfg.overflow = ws::OverflowPolicy::disconnect;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    const bool reconnected =
        co_await eventually([&] { return client.stats().connects >= 2; }, 10s, 5ms);
    EXPECT_TRUE(reconnected);
    const auto st = client.stats();
    // The queue is still full when the next connection delivers: it is refused again.
    EXPECT_GE(st.reasons.slow_consumer, 1U);
    EXPECT_EQ(st.reasons.slow_consumer, st.disconnects);
    EXPECT_GE(st.dropped, 1U);
    std::vector<ws::Message> batch;
    const std::size_t n = co_await client.receive_batch(batch, 1000);
    EXPECT_GE(n, 100U);
    if (n >= 100) {
      EXPECT_EQ(batch[0].connection, 1U);
      EXPECT_EQ(batch[99].data, "100");
    }  // the first 100 were kept, the rest refused
    co_await client.close();
    server.stop();
  });
}

// F55: a burst of 1 MiB frames while the consumer does not read. The hand-off queue is
// bounded in bytes (16 MiB here) as well as in messages (65 536, the default, never reached):
// the bytes queued never pass the bound, the overflow policy (drop_oldest) drops and counts
// the rest, and the process's heap grows by at most twice the bound (the queued messages,
// plus spare capacity kept for reuse) and the read buffer, not by the size of the burst.
// Reading 128 MiB of text frames (each validated as UTF-8) took more than 20 s in the
// sanitizer build on a loaded machine ("106 of 128 frames read"): the wait is a deadline for a
// condition, not a speed claim, so it is generous (90 s, the test's own timeout 120 s).
TEST(WsFaults, F55_BurstOfLargeFramesStaysWithinTheQueuesByteBound) {
  constexpr int kFrames = 128;                    // 128 MiB in all
  constexpr std::size_t kFrame = 1U << 20;        // 1 MiB, the default max_message_size
  constexpr std::size_t kBound = 16U << 20;       // queue_max_bytes
  constexpr std::size_t kSlack = 4U << 20;        // the read buffer, Beast's and the test's own
  constexpr std::size_t kKept = kBound / kFrame;  // 16 frames fit
  std::string frame(kFrame, 'x');                 // one buffer for every frame the server sends
  run_ws_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
          for (int i = 1; i <= kFrames; ++i) {
            std::snprintf(frame.data(), 9, "%08d", i);  // the frame's number, in its first bytes
            frame[8] = ' ';
            if (!co_await WsTestServer::write_text(s, frame)) co_return;
          }
          (void)co_await WsTestServer::read_text(s);
        });
        auto cfg = config_for(server);
        cfg.queue_max_bytes = kBound;
        ws::WebSocketClient client(io.get_executor(), cfg);
        co_await client.start();
        const std::size_t before = heap_in_use();
        std::size_t peak = before;
        const bool read_all = co_await eventually(
            [&] {
              peak = std::max(peak, heap_in_use());
              return client.stats().messages == kFrames;
            },
            90s, 1ms);
        EXPECT_TRUE(read_all) << client.stats().messages << " of " << kFrames << " frames read";
        peak = std::max(peak, heap_in_use());
        const auto st = client.stats();
        const auto mib = [](std::size_t bytes) { return static_cast<double>(bytes) / (1U << 20); };
        EXPECT_LE(peak - before, 2 * kBound + kSlack)
            << "the heap grew by " << mib(peak - before) << " MiB during a burst of " << kFrames
            << " MiB with nobody reading; bound " << mib(2 * kBound + kSlack) << " MiB ("
            << st.queued << " message(s) queued, " << st.dropped << " dropped)";
        std::printf(
            "F55: heap grew by %.1f MiB (bound %.1f MiB); queue: %.1f MiB queued at most, "
            "%.1f MiB of string capacity held\n",
            mib(peak - before), mib(2 * kBound + kSlack), mib(st.max_queued_bytes),
            mib(st.held_bytes));
        EXPECT_LE(st.max_queued_bytes, kBound);
        EXPECT_LE(st.queued_bytes, kBound);
        EXPECT_LE(st.held_bytes, 2 * kBound);
        EXPECT_EQ(st.queued, kKept);
        EXPECT_EQ(st.dropped, kFrames - kKept) << "every dropped frame is counted";
        EXPECT_EQ(st.disconnects, 0U);
        // The consumer gets the freshest frames, whole.
        std::vector<ws::Message> batch;
        const std::size_t n = co_await client.receive_batch(batch, 1000);
        EXPECT_EQ(n, kKept);
        for (std::size_t i = 0; i < n; ++i) {
          char expected[16];
          std::snprintf(expected, sizeof expected, "%08d",
                        kFrames - static_cast<int>(kKept) + 1 + static_cast<int>(i));
          EXPECT_EQ(batch[i].data.substr(0, 8), expected);
          EXPECT_EQ(batch[i].data.size(), kFrame);
        }
        EXPECT_EQ(client.stats().queued_bytes, 0U);
        co_await client.close();
        server.stop();
      },
      120s);
}

// F55: the byte bound applies every overflow policy: drop_newest keeps the first frames that
// fit, disconnect reconnects (counted as slow_consumer). 256 KiB frames, a 1 MiB bound.
TEST(WsFaults, F55_ByteBoundAppliesTheOverflowPolicy) {
  constexpr std::size_t kFrame = 256U << 10;
  constexpr std::size_t kBound = 1U << 20;
  for (const auto policy : {ws::OverflowPolicy::drop_newest, ws::OverflowPolicy::disconnect}) {
    SCOPED_TRACE(std::string(ws::to_string(policy)));
    std::string frame(kFrame, 'y');
    run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
      WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
        for (int i = 1; i <= (index == 0 ? 20 : 2); ++i) {
          std::snprintf(frame.data(), 9, "%08d", i);
          frame[8] = ' ';
          if (!co_await WsTestServer::write_text(s, frame)) co_return;
        }
        (void)co_await WsTestServer::read_text(s);
      });
      auto cfg = config_for(server);
      cfg.max_message_size = kFrame;
      cfg.queue_max_bytes = kBound;
      cfg.overflow = policy;
      ws::WebSocketClient client(io.get_executor(), cfg);
      co_await client.start();
      if (policy == ws::OverflowPolicy::drop_newest) {
        EXPECT_TRUE(co_await eventually([&] { return client.stats().messages == 20; }, 10s, 2ms));
        EXPECT_EQ(client.stats().dropped, 16U);
      } else {
        EXPECT_TRUE(co_await eventually([&] { return client.stats().connects >= 2; }, 10s, 2ms));
        EXPECT_GE(client.stats().reasons.slow_consumer, 1U);
        EXPECT_GE(client.stats().dropped, 1U);
      }
      const auto st = client.stats();
      EXPECT_EQ(st.queued, 4U);
      EXPECT_LE(st.max_queued_bytes, kBound);
      std::vector<ws::Message> batch;
      const std::size_t n = co_await client.receive_batch(batch, 100);
      EXPECT_EQ(n, 4U);
      if (n == 4) {
        EXPECT_EQ(batch[0].data.substr(0, 8), "00000001");  // the first ones were kept
        EXPECT_EQ(batch[3].data.substr(0, 8), "00000004");
      }
      co_await client.close();
      server.stop();
    });
  }
  ws::WebSocketConfig c;
  c.url = "ws://127.0.0.1:1/";
  c.queue_max_bytes = c.max_message_size - 1;  // a message could never fit
  EXPECT_THROW(ws::validate(c), Error);
}

// F55: receive_batch_for hands messages out through the same bookkeeping as receive_batch:
// the queue's byte count goes down as messages leave. 400 messages of 1 000 bytes through a
// 16 KiB queue, read 4 at a time: at the end nothing is queued, every message was read or
// counted as dropped. (receive_batch_for used to swap messages out without lowering
// queued_bytes: once the bound's worth had passed, every new message was an overflow.)
TEST(WsFaults, F55_ReceiveBatchForReleasesTheQueuesBytes) {
  constexpr int kSent = 400;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      const std::string payload(1000, 'p');
      for (int i = 0; i < kSent; ++i) {
        if (!co_await WsTestServer::write_text(s, payload)) co_return;
      }
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.max_message_size = 16 * 1024;
    cfg.queue_max_bytes = 16 * 1024;  // 16 messages' worth
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    int received = 0;
    std::vector<ws::Message> batch;
    while (received + static_cast<int>(client.stats().dropped) < kSent) {
      const auto n = co_await client.receive_batch_for(batch, 4, 5s);
      if (!n || *n == 0) break;
      received += static_cast<int>(*n);
    }
    const auto st = client.stats();
    EXPECT_EQ(st.queued_bytes, 0U);
    EXPECT_EQ(st.queued, 0U);
    EXPECT_EQ(received + static_cast<int>(st.dropped), kSent);
    EXPECT_LE(st.max_queued_bytes, cfg.queue_max_bytes);
    co_await client.close();
    server.stop();
  });
}

// F38: the server stops reading and writing without closing. The client detects it within
// the idle timeout (pings unanswered), reconnects, subscribes again, and the consumer sees
// the gap in the sequence numbers.
TEST(WsFaults, F38_SilentServerDetectedWithinIdleTimeoutThenResubscribedWithGapReported) {
  std::vector<std::string> subscriptions;
  Clock::time_point stalled_at{};
  Clock::time_point reconnected_at{};
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
      subscriptions.push_back(co_await WsTestServer::read_text(s));
      if (index == 0) {
        co_await send_sequence(s, 1, 50);
        stalled_at = Clock::now();
        co_await WsTestServer::stall(s);  // half-open: socket open, nothing read or written
        co_return;
      }
      reconnected_at = Clock::now();
      co_await send_sequence(s, 81, 20);  // trades 51..80 happened while we were away
      (void)co_await WsTestServer::read_text(s);
    });
    auto cfg = config_for(server);
    cfg.idle_timeout = 600ms;
    trading_shared::testing::LogCapture logs("ws");
    ws::WebSocketClient client(io.get_executor(), cfg);
    client.add_on_connect("SUBSCRIBE trades");
    co_await client.start();
    // What the client reports, message by message: the connection each one arrived on. The
    // ids are the test's own script; the break in continuity is the client's report.
    std::vector<std::pair<long long, std::uint64_t>> received;  // (id, connection)
    ws::Message m;
    while (received.size() < 70) {
      const bool got = co_await client.receive(m);
      if (!got) break;
      received.emplace_back(std::stoll(m.data), m.connection);
    }
    EXPECT_EQ(received.size(), 70U);
    std::size_t first_of_second = received.size();
    std::size_t wrong = 0;
    std::string first_wrong;
    for (std::size_t i = 0; i < received.size(); ++i) {
      const auto [id, connection] = received[i];
      const std::uint64_t expected_connection = id <= 50 ? 1U : 2U;
      if (connection != expected_connection && wrong++ == 0) {
        first_wrong = "message " + std::to_string(id) + " reported on connection " +
                      std::to_string(connection) + ", not " + std::to_string(expected_connection);
      }
      if (connection == 2U && first_of_second == received.size()) first_of_second = i;
    }
    EXPECT_EQ(wrong, 0U) << "messages reported on the wrong connection, first: " << first_wrong;
    EXPECT_EQ(first_of_second, 50U)
        << "the client reported the new connection at the wrong message";
    // The gap as a consumer sees it from the client's report (SequenceTracker, given the
    // connection number the client attached): one gap of 30, on the first message of the new
    // connection.
    ws::SequenceTracker tracker;
    for (std::size_t i = 0; i < received.size(); ++i) {
      const auto r = tracker.observe("S", received[i].first, received[i].second);
      if (r.kind == ws::SequenceTracker::Result::gap) {
        EXPECT_EQ(i, first_of_second) << "the gap is not where the client reported a reconnect";
        EXPECT_EQ(r.missing, 30U);
      }
    }
    EXPECT_EQ(tracker.gaps(), 1U);
    // The client's own account of the outage: one disconnect, for the idle timeout (not an
    // EOF or a close: the server never closed), logged once with its reason, one reconnect.
    const auto st = client.stats();
    EXPECT_EQ(st.disconnects, 1U);
    EXPECT_EQ(st.reasons.idle_timeout, 1U);
    EXPECT_EQ(st.reasons.eof + st.reasons.closed_by_peer + st.reasons.other, 0U);
    EXPECT_EQ(st.connects, 2U);
    EXPECT_EQ(st.connection, 2U);
    EXPECT_EQ(st.messages, 70U);
    EXPECT_EQ(st.dropped, 0U);
    EXPECT_EQ(logs.count("connection 1 lost after"), 1U);
    EXPECT_EQ(logs.count("nothing received within the idle timeout"), 1U);
    co_await client.close();
    server.stop();
  });
  ASSERT_EQ(subscriptions.size(), 2U);
  EXPECT_EQ(subscriptions[1], "SUBSCRIBE trades");
  const auto detection = reconnected_at - stalled_at;
  // Detected within the idle timeout (600 ms), plus reconnect backoff (<= 100 ms) and slack.
  EXPECT_LT(detection, 1500ms)
      << std::chrono::duration_cast<std::chrono::milliseconds>(detection).count();
  EXPECT_GT(detection, 250ms);  // not before half the idle timeout: the ping had to go unanswered
}

// F39: killed without a close frame, garbage bytes, invalid UTF-8, an oversized frame: each
// connection ends with its reason counted, the client reconnects, the process goes on.
TEST(WsFaults, F39_DropsGarbageAndOversizedFramesAreCountedAndSurvived) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
      co_await send_sequence(s, 1, 3);
      auto& socket = beast::get_lowest_layer(s).socket();
      boost::system::error_code ec;
      switch (index) {
        case 0: {  // killed: RST, no close frame
          socket.set_option(asio::socket_base::linger(true, 0), ec);
          socket.close(ec);
          co_return;
        }
        case 1: {  // garbage bytes where a frame header should be
          const std::string garbage = "GARBAGE\r\n\x01\x02\x03 not a frame";
          co_await asio::async_write(socket, asio::buffer(garbage),
                                     asio::redirect_error(asio::use_awaitable, ec));
          co_await WsTestServer::stall(s);
          co_return;
        }
        case 2: {  // a text frame that is not UTF-8
          (void)co_await WsTestServer::write_text(s, std::string("\xff\xfe\xfd", 3));
          co_await WsTestServer::stall(s);
          co_return;
        }
        case 3: {  // a frame above max_message_size
          (void)co_await WsTestServer::write_text(s, std::string(64 * 1024, 'x'));
          co_await WsTestServer::stall(s);
          co_return;
        }
        default:
          (void)co_await WsTestServer::read_text(s);
          co_return;
      }
    });
    auto cfg = config_for(server);
    cfg.max_message_size = 16 * 1024;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    const bool fifth = co_await eventually([&] { return client.stats().connects >= 5; }, 15s, 5ms);
    EXPECT_TRUE(fifth);
    const auto st = client.stats();
    EXPECT_EQ(st.reasons.eof, 1U);
    EXPECT_EQ(st.reasons.protocol_error, 2U);
    EXPECT_EQ(st.reasons.oversized, 1U);
    EXPECT_EQ(st.disconnects, 4U);
    // 3 good messages on each connection; those before the RST may be discarded with it.
    EXPECT_GE(st.messages, 12U);
    EXPECT_LE(st.messages, 15U);
    co_await client.close();
    server.stop();
  });
}

TEST(WsClient, CloseDuringReconnectBackoffAndDestructionWithoutCloseAreClean) {
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      co_await send_sequence(s, 1, 1);
      beast::close_socket(beast::get_lowest_layer(s));
    });
    auto cfg = config_for(server);
    cfg.reconnect_backoff = {2s, 2s, 1.0};
    {
      ws::WebSocketClient client(io.get_executor(), cfg);
      co_await client.start();
      const bool lost =
          co_await eventually([&] { return client.stats().disconnects >= 1; }, 5s, 5ms);
      EXPECT_TRUE(lost);
      const auto t0 = Clock::now();
      co_await client.close();  // in the middle of a 2 s backoff
      EXPECT_LT(Clock::now() - t0, 500ms);
    }
    {
      ws::WebSocketClient client(io.get_executor(), cfg);
      co_await client.start();
    }  // destroyed while connected: abandoned, the socket closed
    server.stop();
  });
}

// Review findings: a send cancelled while waiting for its turn must not wedge later sends;
// a cancelled start() closes the client and says so; on_connect added during a reconnect's
// subscription is sent once, in order; close() is bounded by close_timeout even when the peer
// never answers the close frame.
TEST(WsClient, CancelledSendsAndStartLeaveTheClientUsable) {
  std::vector<std::string> received;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int) -> asio::awaitable<void> {
      for (;;) {
        const std::string text = co_await WsTestServer::read_text(s);
        if (text.empty()) co_return;
        received.push_back(text);
      }
    });
    ws::WebSocketClient client(io.get_executor(), config_for(server));
    co_await client.start();
    // Many sends at once, every other one cancelled while it waits for its turn.
    std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
    int done = 0;
    int cancelled = 0;
    for (int i = 0; i < 20; ++i) {
      signals.push_back(std::make_unique<asio::cancellation_signal>());
      // Parameters, not captures: they live in the coroutine frame (the closure does not).
      auto send_owned = [](ws::WebSocketClient& c, std::string text) -> asio::awaitable<void> {
        co_await c.send(text);
      };
      asio::co_spawn(
          io, send_owned(client, std::string(100000, static_cast<char>('a' + i))),
          asio::bind_cancellation_slot(signals.back()->slot(), [&](std::exception_ptr e) {
            ++done;
            if (e) {
              try {
                std::rethrow_exception(e);
              } catch (const Error& error) {
                EXPECT_EQ(error.code(), make_error_code(errc::cancelled)) << error.what();
                ++cancelled;
              }
            }
          }));
    }
    for (std::size_t i = 1; i < signals.size(); i += 2)
      signals[i]->emit(asio::cancellation_type::terminal);
    const bool all_done = co_await eventually([&] { return done == 20; }, 10s, 2ms);
    EXPECT_TRUE(all_done);
    EXPECT_GE(cancelled, 1);
    co_await client.send("after");  // the turn is free again
    const bool arrived = co_await eventually(
        [&] { return !received.empty() && received.back() == "after"; }, 10s, 2ms);
    EXPECT_TRUE(arrived);
    EXPECT_EQ(received.size(), static_cast<std::size_t>(20 - cancelled + 1));
    co_await client.close();
    server.stop();
  });
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    ws::WebSocketConfig c = config_nothing_listening(io);
    c.reconnect_backoff = {10ms, 20ms, 2.0};
    ws::WebSocketClient client(io.get_executor(), c);
    asio::cancellation_signal stop;
    bool finished = false;
    asio::co_spawn(io, client.start(),
                   asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                     finished = true;
                     ASSERT_TRUE(e);
                     try {
                       std::rethrow_exception(e);
                     } catch (const Error& error) {
                       EXPECT_EQ(error.code(), make_error_code(errc::cancelled)) << error.what();
                     }
                   }));
    const bool tried =
        co_await eventually([&] { return client.stats().connect_failures >= 2; }, 5s, 2ms);
    EXPECT_TRUE(tried);
    stop.emit(asio::cancellation_type::terminal);
    const bool ended = co_await eventually([&] { return finished; }, 5s, 2ms);
    EXPECT_TRUE(ended);
    const auto failures = client.stats().connect_failures;
    const auto later = Clock::now() + 200ms;
    (void)co_await eventually([&] { return Clock::now() >= later; }, 1s, 20ms);
    EXPECT_EQ(client.stats().connect_failures, failures)
        << "a cancelled start() must stop reconnecting";
  });
}

TEST(WsClient, OnConnectAddedLaterIsSentOnceInOrderAndCloseIsBounded) {
  std::vector<std::vector<std::string>> per_connection;
  run_ws_test([&](asio::io_context& io) -> asio::awaitable<void> {
    WsTestServer server(io, [&](WsTestServer::Stream& s, int index) -> asio::awaitable<void> {
      per_connection.emplace_back();
      for (;;) {
        const std::string text = co_await WsTestServer::read_text(s);
        if (text.empty()) co_return;
        per_connection[static_cast<std::size_t>(index)].push_back(text);
        if (index == 0 && text == "third") beast::close_socket(beast::get_lowest_layer(s));
        if (index == 1 && per_connection[1].size() == 3)
          co_await WsTestServer::stall(s);  // never answers close
      }
    });
    auto cfg = config_for(server);
    cfg.on_connect = {"first"};
    cfg.close_timeout = 300ms;
    ws::WebSocketClient client(io.get_executor(), cfg);
    co_await client.start();
    client.add_on_connect("second");
    client.add_on_connect("third");  // the server drops connection 0 when it sees this
    const bool reconnected = co_await eventually(
        [&] { return per_connection.size() == 2 && per_connection[1].size() == 3; }, 10s, 2ms);
    EXPECT_TRUE(reconnected);
    const auto t0 = Clock::now();
    co_await client.close();
    EXPECT_LT(Clock::now() - t0, 1500ms) << "close_timeout 300 ms (+ the final 500 ms grace)";
    server.stop();
  });
  ASSERT_EQ(per_connection.size(), 2U);
  EXPECT_EQ(per_connection[0], (std::vector<std::string>{"first", "second", "third"}));
  EXPECT_EQ(per_connection[1], (std::vector<std::string>{"first", "second", "third"}));
}

}  // namespace

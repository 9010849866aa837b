#pragma once
// The state of one WebSocketClient (private to src/ws). The client is one object, `Core`,
// shared by the public handle and the coroutines it spawns; its parts live in one file each:
// - websocket_client.cpp: lifecycle (construction, start, close, cut, stats);
// - websocket_connection.cpp: connecting (TCP + handshake), the supervisor (core::reconnect
//   with backoff), the on_connect messages of a new connection, the read loop and why a
//   connection ended;
// - websocket_send.cpp: the write turn (one write at a time, FIFO) and send / add_on_connect;
// - websocket_receive_queue.cpp: the bounded hand-off queue (ring of messages whose strings'
//   capacity circulates), the overflow policy and the receive* calls of the single consumer.
// The start/close state is a core::RunState; the start-up is the supervisor's first
// connection. Everything runs on the client's executor (single-threaded): no locks.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/run_state.hpp>
#include <trading_shared/core/tls_context.hpp>
#include <trading_shared/ws/tls_stream.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::ws {

namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
/// ws:// or wss:// (TLS chosen per connection: one predictable branch per read/write).
using Stream = websocket::stream<MaybeTlsStream<beast::tcp_stream>>;

inline std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("ws");
  return logger;
}

enum class WaitEnd : std::uint8_t { notified, deadline, cancelled };

/// One wait on `event` until `deadline`. The caller's cancellation ends it as `cancelled`
/// (returned, not thrown: the caller turns it into its own error).
inline asio::awaitable<WaitEnd> wait_on(core::AsyncEvent& event, Clock::time_point deadline) {
  // No co_await inside a condition or a co_return expression: GCC 12 miscompiles some.
  bool notified = false;
  bool cancelled = false;
  try {
    notified = co_await event.wait_until(deadline);
  } catch (const boost::system::system_error& e) {
    if (e.code() != asio::error::operation_aborted) throw;
    cancelled = true;
  }
  if (cancelled) co_return WaitEnd::cancelled;
  co_return notified ? WaitEnd::notified : WaitEnd::deadline;
}

struct Connection {
  /// `tls`: the context of a wss:// connection (null: ws://), kept for its lifetime.
  Connection(const asio::any_io_executor& executor, std::shared_ptr<asio::ssl::context> tls)
      : tls_context(std::move(tls)), ws(executor, tls_context.get()), resolver(executor) {}
  std::shared_ptr<asio::ssl::context> tls_context;
  Stream ws;
  tcp::resolver resolver;
  std::uint64_t number = 0;
  Clock::time_point opened{};
  bool ready = false;          // its on_connect messages are written: sends may go
  bool slow_consumer = false;  // ended by the overflow policy
  bool send_failed = false;    // ended because an on_connect message could not be written
  bool write_overrun = false;  // ended because a write did not complete within idle_timeout
};

/// A send waiting for the write turn (single-threaded executor), woken on its own (the turn
/// goes to one waiter, in FIFO order). It registers itself in a list and removes itself when
/// destroyed, so that no list ever holds a pointer to a frame that is gone (also when frames
/// are destroyed without resuming, at shutdown).
struct Waiter {
  Waiter(const asio::any_io_executor& executor, std::deque<Waiter*>& list, bool front = false)
      : event(executor), list_(&list) {
    if (front) {
      list.push_front(this);
    } else {
      list.push_back(this);
    }
  }
  ~Waiter() { std::erase(*list_, this); }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  core::AsyncEvent event;
  bool woken = false;
  bool granted = false;  // the write turn was handed to it
  void wake() {
    woken = true;
    event.notify_all();
  }

 private:
  std::deque<Waiter*>* list_;
};

/// Wakes and forgets every waiter of a list.
inline void wake_all(std::deque<Waiter*>& list) {
  auto waiters = std::move(list);
  list.clear();
  for (auto* w : waiters) w->wake();
}

}  // namespace detail

struct WebSocketClient::Core : std::enable_shared_from_this<WebSocketClient::Core> {
  using Connection = detail::Connection;
  using Waiter = detail::Waiter;

  Core(boost::asio::any_io_executor executor, WebSocketConfig cfg)
      : ex(std::move(executor)), config(std::move(cfg)), url(parse_websocket_url(config.url)) {
    ring.resize(config.queue_capacity);
    on_connect = config.on_connect;
    if (url.tls) {
      core::TlsConfig tls = config.tls;
      tls.enabled = true;
      tls_source.emplace(std::move(tls), "WebSocket " + config.url);
    }
  }

  boost::asio::any_io_executor ex;
  WebSocketConfig config;
  WebSocketUrl url;
  /// wss://: the TLS context of new connections (rebuilt when certificate files change).
  std::optional<core::TlsContextSource> tls_source;
  std::vector<std::string> on_connect;
  /// idle -> starting (start() spawned the supervisor) -> running (its first connection is
  /// ready) -> closing -> closed. A start() that fails closes the client: no idle again.
  /// `state.changed()` is also notified when the connection is cut and when the supervisor
  /// has ended: start(), close() and the supervisor's backoff wait look again.
  core::RunState state{ex};
  std::shared_ptr<Connection> connection;  // up and handshaken
  std::shared_ptr<Connection> connecting;  // being connected (close() cuts it)
  std::uint64_t next_number = 1;
  core::DefaultRandom random;
  WebSocketStats stats;
  std::string last_failure = "no attempt yet";
  /// A TLS refusal (errc::tls_failed) during the start-up: start() fails with it at once
  /// instead of waiting out startup_timeout (the supervisor keeps retrying, for a daemon).
  std::exception_ptr startup_refusal;

  // hand-off queue (websocket_receive_queue.cpp)
  std::vector<Message> ring;
  std::size_t head = 0;
  std::size_t count = 0;
  std::size_t queued_bytes = 0;   // payload of the `count` queued messages
  std::size_t held_bytes = 0;     // heap capacity of every slot's string, queued or spare
  core::AsyncEvent readable{ex};  // notified when a message is queued and when the client ends
  bool consumer_active = false;
  std::uint64_t dropped_logged = 0;

  // sends (websocket_send.cpp): `writing` is the write turn; waiters get it in FIFO order
  bool writing = false;
  std::deque<Waiter*> send_waiters;

  // supervisor (websocket_connection.cpp)
  bool supervisor_running = false;

  /// Closed, or closing with the supervisor gone: no message will come any more.
  bool ended() const {
    return state.is(core::RunPhase::closed) ||
           (state.is(core::RunPhase::closing) && !supervisor_running);
  }
  std::string what(const char* text) const { return "WebSocket " + config.url + ": " + text; }

  // ---- queue (websocket_receive_queue.cpp)
  // ----------------------------------------------------------
  static std::size_t heap_of(const std::string& s) noexcept;
  void spare(Message& slot) noexcept;
  void take(Message& out) noexcept;
  bool deliver(const boost::beast::flat_buffer& buffer, bool binary, std::uint64_t number);
  boost::asio::awaitable<bool> wait_for_messages(
      std::optional<boost::asio::steady_timer::time_point> deadline = std::nullopt,
      bool* timed_out = nullptr);

  // ---- the write turn (websocket_send.cpp)
  // ----------------------------------------------------------
  boost::asio::awaitable<boost::system::error_code> write_frame(std::shared_ptr<Connection> c,
                                                                std::string_view text);
  boost::asio::awaitable<void> acquire_write();
  void release_write();
  /// Holds the write turn until destroyed.
  struct Turn {
    Core* core;
    ~Turn() { core->release_write(); }
  };

  // ---- connections and the supervisor (websocket_connection.cpp)
  // ------------------------------------
  enum class Ending : std::uint8_t {
    closed_by_peer,
    eof,
    idle_timeout,
    oversized,
    protocol_error,
    slow_consumer,
    send_failed,
    other
  };
  boost::asio::awaitable<void> connect(std::shared_ptr<Connection> c,
                                       std::chrono::milliseconds budget);
  Error handshake_error(const boost::system::error_code& ec, std::string_view sniffed,
                        const boost::beast::websocket::response_type& answer) const;
  static boost::asio::awaitable<void> subscribe(std::shared_ptr<Core> self,
                                                std::shared_ptr<Connection> c);
  static Ending ending_of(const Connection& c, const boost::system::error_code& ec);
  boost::asio::awaitable<boost::system::error_code> read_loop(std::shared_ptr<Connection> c);
  void count_ending(Ending ending);
  static const char* describe(Ending ending);
  static boost::asio::awaitable<void> supervise(std::shared_ptr<Core> self);

  // ---- lifecycle (websocket_client.cpp) ------------------------------------------------------
  void cut();
  void begin_closing();
  boost::asio::awaitable<void> close();
};

}  // namespace trading_shared::ws

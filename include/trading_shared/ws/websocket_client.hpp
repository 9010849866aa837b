#pragma once
/// @file
/// `WebSocketClient`: a market-data WebSocket connection that stays up (docs/websocket.md;
/// docs/failure-modes.md F35-F39).
///
/// - **One read loop** per connection. It only reads a frame, copies it into the hand-off
///   queue and reads the next one: it never waits for a consumer, so a slow or blocked
///   consumer cannot stall reads, keep-alive or close handling (F35, F37).
/// - **Bounded hand-off**, in messages (`queue_capacity`) and in bytes (`queue_max_bytes`),
///   with an explicit `OverflowPolicy`; every message it drops is counted (`stats().dropped`)
///   and logged (first, then every 10 000th). The memory its strings hold stays within twice
///   `queue_max_bytes` (queued messages, plus spare capacity kept for reuse).
/// - **One write at a time**: `send()` calls are serialised in arrival order (Beast allows one
///   write in flight, F36); the message is written by the caller's own coroutine.
/// - **Idle timeout with keep-alive pings**: Beast pings after `idle_timeout / 2` of silence
///   and gives up after `idle_timeout`: a silent half-open peer is detected within
///   `idle_timeout` (F38).
/// - **Reconnect** with capped exponential backoff and full jitter; after every connect the
///   `on_connect` messages (e.g. SUBSCRIBE) are sent again, in order. Every disconnect is
///   logged once with its reason and counted by kind (F39). Each message carries the number
///   of the connection it arrived on, so a consumer can see continuity break (see
///   `SequenceTracker` for gap detection).
///
/// Threading: the client and its awaitables run on one executor that is not used from other
/// threads concurrently (an io_context run by one thread, or a strand). One consumer at a
/// time may wait in `receive`/`receive_batch`. The client must outlive the awaitables it
/// returns; destroying it without `close()` abandons the connection (closed at once).
///
/// @code
/// ws::WebSocketClient feed(executor, {.url = "wss://127.0.0.1:9443/ws",
///                                     .tls = {.ca_file = "/etc/ts/ca.pem"}});
/// feed.add_on_connect(R"({"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1})");
/// co_await feed.start();
/// std::vector<ws::Message> batch;
/// while (co_await feed.receive_batch(batch, 512) > 0) { ... }
/// co_await feed.close();
/// @endcode

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/build_config.hpp>  // the ODR guard
#include <trading_shared/core/tls.hpp>
#include <trading_shared/ws/sequence_tracker.hpp>  // continuity checks of what is received

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::ws {

/// What the hand-off does with a message when the queue is full.
enum class OverflowPolicy : std::uint8_t {
  drop_oldest,  ///< discard the oldest queued message (keeps the freshest data). Default.
  drop_newest,  ///< discard the arriving message.
  disconnect,   ///< discard the arriving message and reconnect (the consumer sees a new
                ///< connection number: continuity is visibly broken).
};
std::string_view to_string(OverflowPolicy policy) noexcept;
/// `drop_oldest`, `drop_newest` or `disconnect`; throws std::invalid_argument otherwise.
OverflowPolicy parse_overflow_policy(std::string_view text);

/// A parsed `ws[s]://host[:port][/path][?query]` URL.
struct WebSocketUrl {
  std::string host;    ///< without brackets for IPv6.
  std::string port;    ///< default "80" (ws://) or "443" (wss://).
  std::string target;  ///< path and query; default "/".
  bool tls = false;    ///< `wss://`.
};
/// Parses a `ws://` or `wss://` URL. Malformed URLs are refused with
/// `Error(errc::invalid_argument)` naming the problem.
WebSocketUrl parse_websocket_url(std::string_view url);

struct WebSocketConfig {
  std::string url;  ///< `ws://host[:port][/path]` or `wss://...` (TLS, see `tls`).
  /// TLS of a `wss://` URL (`enabled` follows the scheme): CA file/dir (empty: the system
  /// store), client certificate and key, the name sent as SNI and verified (default: the
  /// URL's host). Certificate files are read again for the next connection when they change
  /// (rotation without a restart). Settings given with a `ws://` URL are refused.
  core::TlsConfig tls{};
  /// Resolve + TCP connect + TLS handshake (wss://) + WebSocket handshake, all within it; and
  /// the closing handshake. Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  /// How long `start()` keeps trying to connect. Default 10 s.
  std::chrono::milliseconds startup_timeout{10000};
  /// Silence after which the peer is declared dead; a ping is sent at half of it. Default 10 s.
  std::chrono::milliseconds idle_timeout{10000};
  /// Largest message accepted; a larger one ends the connection (counted as `oversized`).
  /// Default 1 MiB.
  std::size_t max_message_size = std::size_t{1} << 20;
  /// Messages held for the consumer. Default 65 536.
  std::size_t queue_capacity = 65536;
  /// Bytes of messages held for the consumer (their payload); a message that would pass it is
  /// an overflow like one beyond `queue_capacity`. At least `max_message_size`. Default 64 MiB.
  std::size_t queue_max_bytes = std::size_t{64} << 20;
  OverflowPolicy overflow = OverflowPolicy::drop_oldest;
  /// `send()` calls waiting for their turn; beyond it `send()` fails with `queue_full`.
  std::size_t max_pending_sends = 1024;
  core::BackoffConfig reconnect_backoff{std::chrono::milliseconds{100},
                                        std::chrono::milliseconds{5000}, 2.0};
  /// Bound of `close()` (closing handshake included). Default 2 s.
  std::chrono::milliseconds close_timeout{2000};
  /// Messages sent after every connect, in order, before anything else (subscriptions);
  /// `add_on_connect` appends to them.
  std::vector<std::string> on_connect;

  // Hooks for a consumer that manages subscriptions itself or reads several clients (e.g.
  // ts-receiver's FeedSet). They run on the client's executor, must be quick and must not
  // throw; none may destroy the client.

  /// Called once per connection when it is up and its on_connect messages are written
  /// (`send()` may go now), with the connection's number: send subscriptions from here,
  /// e.g. paced, in a coroutine it spawns.
  std::function<void(std::uint64_t connection)> on_ready;
  /// Called by the read loop for every text message before it is queued, with the number of
  /// the connection it arrived on; returning true takes it out of the stream (not queued,
  /// not counted as dropped). For replies to the consumer's own requests (subscription
  /// confirmations), which are then seen at once even while the consumer is stalled.
  std::function<bool(std::string_view text, std::uint64_t connection)> intercept;
  /// Called when a message was queued, and when the client has ended (closed, supervisor
  /// done): `try_receive_batch` has something to report. For a consumer waiting on several
  /// clients.
  std::function<void()> on_readable;
};

/// Checks a configuration; throws `Error(errc::invalid_argument)` naming the bad field.
void validate(const WebSocketConfig& config);

/// One received message. Moved or swapped out of the queue, so that the string's capacity
/// circulates between the queue and the consumer instead of being allocated per message.
struct Message {
  std::string data;
  bool binary = false;
  std::uint64_t connection = 0;  ///< 1 for the first connection, +1 per reconnect.
  std::chrono::steady_clock::time_point received_at{};
};

/// Why connections ended (each one counted once).
struct DisconnectCounts {
  std::uint64_t closed_by_peer = 0;  ///< a close frame from the server.
  std::uint64_t eof = 0;             ///< TCP closed or reset without a close frame.
  std::uint64_t idle_timeout = 0;    ///< nothing received (pings included), or a write not
                                     ///< completed, within idle_timeout.
  std::uint64_t oversized = 0;       ///< a message above max_message_size.
  std::uint64_t protocol_error = 0;  ///< an invalid frame (bad opcode, bad UTF-8, ...).
  std::uint64_t slow_consumer = 0;   ///< OverflowPolicy::disconnect.
  std::uint64_t send_failed = 0;     ///< an on_connect message could not be sent.
  std::uint64_t other = 0;
};

struct WebSocketStats {
  bool connected = false;
  std::uint64_t connection = 0;  ///< number of the current (or last) connection.
  std::uint64_t connects = 0;
  std::uint64_t connect_failures = 0;
  std::uint64_t disconnects = 0;  ///< connections lost (each followed by a reconnect).
  DisconnectCounts reasons;
  std::uint64_t messages = 0;  ///< messages read.
  std::uint64_t bytes = 0;
  std::uint64_t dropped = 0;         ///< messages discarded by the overflow policy (either bound).
  std::size_t queued = 0;            ///< messages waiting for the consumer now.
  std::size_t max_queued = 0;        ///< high-water mark of `queued`.
  std::size_t queued_bytes = 0;      ///< their payload bytes (<= queue_max_bytes).
  std::size_t max_queued_bytes = 0;  ///< high-water mark of `queued_bytes`.
  /// String capacity held by the queue's slots, queued or spare (<= 2 x queue_max_bytes).
  std::size_t held_bytes = 0;
  std::uint64_t sends = 0;
  std::uint64_t send_failures = 0;
  /// wss://: TLS contexts built (1 after the first connect; +1 for a connection after the
  /// certificate files changed). 0 for ws://.
  std::uint64_t tls_contexts = 0;
};

class WebSocketClient {
 public:
  /// Throws `Error(errc::invalid_argument)` on a bad config.
  WebSocketClient(boost::asio::any_io_executor executor, WebSocketConfig config);
  ~WebSocketClient();
  WebSocketClient(const WebSocketClient&) = delete;
  WebSocketClient& operator=(const WebSocketClient&) = delete;

  /// A message sent after every connect, before anything else, in the order added
  /// (subscriptions). Added after `start()`, it is also sent on the current connection.
  void add_on_connect(std::string message);

  /// Connects (retrying within `startup_timeout`) and starts the background read loop and
  /// reconnects. Completes once the first connection is up and its on_connect messages are
  /// written. Idempotent. Throws `startup_timeout` (with the last failure) or `client_closed`.
  boost::asio::awaitable<void> start();

  /// Closes: sends a close frame (bounded by `close_timeout`), stops reconnecting, fails
  /// waiting senders with `client_closed`. Queued messages stay readable: `receive` returns
  /// them, then reports the end. Idempotent; never throws.
  boost::asio::awaitable<void> close();

  /// Sends one text message on the current connection, after the sends before it. Throws
  /// `connection_lost` when no connection is up or it breaks during the write (the message may
  /// or may not have been sent), `queue_full`, `client_closed`, `not_started`.
  boost::asio::awaitable<void> send(std::string_view text);

  /// Waits for the next message and swaps it into `out`. Returns false once the client is
  /// closed and the queue is empty. One consumer at a time (`std::logic_error` otherwise).
  boost::asio::awaitable<bool> receive(Message& out);
  /// Waits for at least one message, then takes up to `max` (swapped into `out`, which is
  /// resized; its elements' strings are reused). Returns the count; 0 once closed and empty.
  boost::asio::awaitable<std::size_t> receive_batch(std::vector<Message>& out, std::size_t max);
  /// `receive_batch`, waiting at most `max_wait` for the first message: returns 0 when none
  /// came in that time (nothing is taken), nullopt once closed and empty. For a consumer that
  /// has other work due at a known time (ts-receiver retrying a stalled key).
  boost::asio::awaitable<std::optional<std::size_t>> receive_batch_for(
      std::vector<Message>& out, std::size_t max, std::chrono::milliseconds max_wait);

  /// Takes up to `max` queued messages without waiting, into `out[first]`, `out[first + 1]`,
  /// ... (`out` is grown as needed). Returns how many (0: none queued now), or nullopt once
  /// the client is closed and its queue is empty. Not while a `receive*` waits (logic_error).
  std::optional<std::size_t> try_receive_batch(std::vector<Message>& out, std::size_t first,
                                               std::size_t max);

  WebSocketStats stats() const noexcept;
  const WebSocketConfig& config() const noexcept;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace trading_shared::ws

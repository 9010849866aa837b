#pragma once
// The shared connection of a RedisClient (docs/redis.md): connect and handshake, the reader
// (bytes -> Multiplexer::feed/deliver_next), the writer (Multiplexer::prepare_write -> socket,
// automatic pipelining), the health check and the supervisor that reconnects (core::reconnect).
// What is matched to what lives in the Multiplexer; this file only moves bytes and reacts to
// the socket. TLS (rediss://) is the RedisStream's (stream.hpp): the handshake runs in
// `open_connection`, within the connect timeout; one connection per cluster node is one
// Connection (and Multiplexer) per node.

#include <trading_shared/core/async_event.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "client_context.hpp"
#include "multiplexer.hpp"
#include "reply_builder.hpp"
#include "stream.hpp"

#include <cstdint>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

namespace trading_shared::redis::detail {

/// Makes `stream` a new connection to the context's endpoint (TLS for rediss://: handshake,
/// SNI and host-name check, the context's current TlsContextSource context) and runs the
/// handshake ([AUTH] [SELECT] CLIENT SETNAME PING) with `parser`. Throws the server's error
/// (AUTH, SELECT), core::tls_handshake_error() for a refused TLS handshake (tls_failed), a
/// tls_failed naming TLS when a plaintext connection gets TLS bytes back, or the socket's
/// error. Shared by the shared connection and the blocking ones.
boost::asio::awaitable<void> open_connection(ClientContext& context, RedisStream& stream,
                                             ReplyBuilder& parser);

/// open_connection() bounded by the connect timeout (errc::connect_timeout, `what`; a TLS
/// handshake that did not complete is named: F62, or a plaintext port behind rediss://).
/// `timeout` zero: the connect timeout.
boost::asio::awaitable<void> open_connection_within(
    ClientContext& context, RedisStream& stream, ReplyBuilder& parser, const std::string& what,
    std::chrono::steady_clock::duration timeout = {});

class Connection {
 public:
  Connection(ClientContext& context, Multiplexer& mux);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// What the connection's handlers keep alive while they are pending (the client core).
  void set_owner(std::weak_ptr<void> owner) noexcept { owner_ = std::move(owner); }

  /// Connects (bounded by `connect_timeout`, or by `budget` when shorter and not zero) and
  /// writes the requests that waited for it.
  boost::asio::awaitable<void> connect(std::chrono::steady_clock::duration budget = {});
  /// `connect()` spawned with the connect cancellation slot: `interrupt()` cuts it short.
  boost::asio::awaitable<void> connect_interruptible(std::chrono::steady_clock::duration budget);
  /// Cuts a connect attempt short (close()).
  void interrupt() noexcept;
  /// Reads, health-checks and reconnects (core::reconnect, after a jittered pause) until the
  /// client is no longer running (closing: until the connection is gone). Spawned once by
  /// start().
  boost::asio::awaitable<void> supervise();

  /// Writes the queued requests once the current handler is done (automatic pipelining).
  void schedule_flush() noexcept;
  /// Closes the connection: the requests in flight on it fail as `connection_lost`.
  void drop(std::error_code ec, std::string_view what);
  /// Closes the connection and the socket and stops the timers (close, abandon).
  void shut_down() noexcept;
  /// Closes the socket of a start-up that is given up (no request has used it).
  void discard() noexcept;
  bool connected() const noexcept { return connected_; }

 private:
  void flush(Clock::time_point now = {}) noexcept;
  void write_done(std::uint64_t generation, boost::system::error_code ec,
                  Clock::time_point now) noexcept;
  void start_read(std::uint64_t generation);
  void on_read(std::uint64_t generation, boost::system::error_code ec, std::size_t n) noexcept;
  void reader_stopped() noexcept;
  boost::asio::awaitable<void> health_loop(std::uint64_t generation);

  ClientContext& context_;
  Multiplexer& mux_;
  std::weak_ptr<void> owner_;
  RedisStream stream_;
  bool connected_ = false;
  std::uint64_t generation_ = 0;    // incremented on every connect and drop
  bool write_in_progress_ = false;  // an async write of the multiplexer's write buffer runs
  bool flush_scheduled_ = false;    // a posted flush() is pending
  bool in_delivery_ = false;        // the reader is delivering replies (it flushes after)
  bool reading_ = false;            // a read of the connection is outstanding
  core::AsyncEvent reader_done_;    // supervise(): notified when the reader stops
  boost::asio::steady_timer health_timer_;
  boost::asio::cancellation_signal connect_cancel_;
  std::vector<char> read_buffer_;
  Clock::time_point last_write_{};
};

}  // namespace trading_shared::redis::detail

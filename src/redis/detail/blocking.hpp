#pragma once
// The dedicated connections of RedisClient::blocking_command (BLPOP, XREADGROUP BLOCK, WAIT):
// one command at a time each, opened on demand up to `max_blocking_connections`, discarded
// after any failure, so that a command that may block for seconds never stalls the shared
// connection (docs/redis.md).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "client_context.hpp"
#include "multiplexer.hpp"
#include "reply_builder.hpp"
#include "stream.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace trading_shared::redis::detail {

class BlockingConnections {
 public:
  /// `events.request_finished()` is told when a command ends (close() waits for them).
  BlockingConnections(ClientContext& context, MultiplexerEvents& events);
  ~BlockingConnections();
  BlockingConnections(const BlockingConnections&) = delete;
  BlockingConnections& operator=(const BlockingConnections&) = delete;

  /// Runs one encoded command on a free connection; the deadline is `block` + the command
  /// timeout (F22).
  boost::asio::awaitable<Reply> run(std::string encoded, std::chrono::milliseconds block);
  /// Closes every socket: the commands running end at once (close, abandon).
  void close_sockets() noexcept;
  /// Forgets the connections (after close, once `active()` is zero).
  void clear() noexcept { connections_.clear(); }
  std::size_t size() const noexcept { return connections_.size(); }
  /// Commands running.
  std::size_t active() const noexcept { return active_; }

 private:
  struct Dedicated {
    explicit Dedicated(const boost::asio::any_io_executor& ex) : stream(ex) {}
    RedisStream stream;  // TCP, or TLS over it (rediss://)
    ReplyBuilder parser;
    std::array<char, std::size_t{16} * 1024> buffer{};
    bool busy = false;
    bool wrote = false;  // the current command was (partly) written
  };
  boost::asio::awaitable<Reply> exchange(Dedicated& connection, const std::string& encoded);

  ClientContext& context_;
  MultiplexerEvents& events_;
  std::vector<std::unique_ptr<Dedicated>> connections_;
  std::size_t active_ = 0;
};

}  // namespace trading_shared::redis::detail

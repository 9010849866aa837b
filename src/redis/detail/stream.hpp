#pragma once
// The byte stream of one Redis connection: the TCP socket, or TLS over it (rediss://). One
// predictable branch per operation; a plaintext connection never touches OpenSSL.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <memory>
#include <utility>

namespace trading_shared::redis::detail {

class RedisStream {
 public:
  using tcp = boost::asio::ip::tcp;
  using tls_stream = boost::asio::ssl::stream<tcp::socket>;

  explicit RedisStream(const boost::asio::any_io_executor& executor) : socket_(executor) {}
  /// A TLS stream with `context` (kept alive with it: rotation builds a new one for later
  /// connections while this one keeps its own).
  RedisStream(const boost::asio::any_io_executor& executor,
              std::shared_ptr<boost::asio::ssl::context> context)
      : socket_(executor),
        context_(std::move(context)),
        tls_(std::make_shared<tls_stream>(executor, *context_)) {}

  bool tls() const noexcept { return tls_ != nullptr; }
  /// Set while the TLS handshake runs (a connect timeout then says so).
  bool handshaking = false;
  tls_stream& tls_layer() noexcept { return *tls_; }
  /// What a completion handler of a TLS operation keeps alive: Asio's SSL operations use the
  /// stream until their handler runs, so a stream replaced (reconnect) while a write of it is
  /// pending must outlive that write.
  const std::shared_ptr<tls_stream>& tls_holder() const noexcept { return tls_; }
  /// The plaintext socket (no TLS): the hot path's synchronous writes.
  tcp::socket& plain_socket() noexcept { return socket_; }
  /// The TCP socket (under TLS: the TLS stream's).
  tcp::socket& socket() noexcept { return tls_ ? tls_->next_layer() : socket_; }
  bool is_open() const noexcept { return tls_ ? tls_->next_layer().is_open() : socket_.is_open(); }
  void close(boost::system::error_code& ec) noexcept { socket().close(ec); }

  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
    return socket_.async_read_some(buffers, std::forward<Token>(token));
  }
  /// The whole buffer (boost::asio::async_write).
  template <typename Buffers, typename Token>
  auto async_write(const Buffers& buffers, Token&& token) {
    if (tls_) return boost::asio::async_write(*tls_, buffers, std::forward<Token>(token));
    return boost::asio::async_write(socket_, buffers, std::forward<Token>(token));
  }

 private:
  tcp::socket socket_;  // plaintext (unused under TLS)
  std::shared_ptr<boost::asio::ssl::context> context_;
  std::shared_ptr<tls_stream> tls_;
};

}  // namespace trading_shared::redis::detail

#pragma once
/// @file
/// `MaybeTlsStream<NextLayer>`: the byte stream under a WebSocket (or HTTP) connection that is
/// either plain `NextLayer` (`beast::tcp_stream`, `tcp::socket`) or TLS over it
/// (`beast::ssl_stream<NextLayer>`), chosen per connection at construction. One type for both,
/// so that `websocket::stream<MaybeTlsStream<...>>` serves ws:// and wss:// with one code path;
/// the plaintext path costs one predictable branch per read or write.
///
/// Used by ws::WebSocketClient (wss://) and ts-feed-sim (serving wss:// and https://).
/// `beast::get_lowest_layer()` reaches the TCP layer in both modes (`next_layer()` is the TCP
/// stream), so timeouts and `close_socket` work unchanged.

#include <boost/asio/async_result.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string_view>
#include <utility>

namespace trading_shared::ws {

template <class NextLayer>
class MaybeTlsStream {
 public:
  using next_layer_type = NextLayer;
  using tls_stream_type = boost::beast::ssl_stream<NextLayer>;
  using executor_type = typename NextLayer::executor_type;

  /// Plain: `NextLayer` built from `arg` (an executor, a socket).
  template <class Arg>
  explicit MaybeTlsStream(Arg&& arg) : plain_(std::in_place, std::forward<Arg>(arg)) {}
  /// TLS with `context` when it is not null, plain otherwise.
  template <class Arg>
  MaybeTlsStream(Arg&& arg, boost::asio::ssl::context* context) {
    if (context != nullptr) {
      tls_.emplace(std::forward<Arg>(arg), *context);
      mode_ = Mode::tls;
    } else {
      plain_.emplace(std::forward<Arg>(arg));
    }
  }

  bool is_tls() const noexcept { return tls_.has_value(); }
  /// The TLS stream (only when `is_tls()`).
  tls_stream_type& tls() noexcept { return *tls_; }
  /// The TCP layer, in both modes.
  NextLayer& next_layer() noexcept { return tls_ ? tls_->next_layer() : *plain_; }
  const NextLayer& next_layer() const noexcept { return tls_ ? tls_->next_layer() : *plain_; }
  executor_type get_executor() noexcept { return next_layer().get_executor(); }

  /// Plain mode: keeps the first bytes read (up to 16) until `stop_sniffing()`, for telling a
  /// TLS server apart when a plaintext client gets an unexpected answer (F63).
  void start_sniffing() noexcept {
    if (!tls_) mode_ = Mode::sniffing;
  }
  void stop_sniffing() noexcept {
    if (mode_ == Mode::sniffing) mode_ = Mode::plain;
  }
  std::string_view sniffed() const noexcept { return {sniffed_.data(), sniffed_size_}; }

  template <class MutableBufferSequence,
            class Token = boost::asio::default_completion_token_t<executor_type>>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token = Token()) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& b) {
          if (mode_ == Mode::plain) [[likely]] {
            plain_->async_read_some(b, std::move(handler));
          } else if (tls_) {
            tls_->async_read_some(b, std::move(handler));
          } else {
            plain_->async_read_some(b, [this, b, h = std::move(handler)](
                                           boost::system::error_code ec, std::size_t n) mutable {
              sniff(b, n);
              std::move(h)(ec, n);
            });
          }
        },
        token, buffers);
  }

  template <class ConstBufferSequence,
            class Token = boost::asio::default_completion_token_t<executor_type>>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token = Token()) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const ConstBufferSequence& b) {
          if (tls_) {
            tls_->async_write_some(b, std::move(handler));
          } else {
            plain_->async_write_some(b, std::move(handler));
          }
        },
        token, buffers);
  }

 private:
  enum class Mode : unsigned char { plain, tls, sniffing };

  template <class MutableBufferSequence>
  void sniff(const MutableBufferSequence& buffers, std::size_t n) noexcept {
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers) && n > 0; ++it) {
      const boost::asio::mutable_buffer piece = *it;
      const std::size_t take = std::min({n, piece.size(), sniffed_.size() - sniffed_size_});
      std::memcpy(sniffed_.data() + sniffed_size_, piece.data(), take);
      sniffed_size_ += take;
      n -= piece.size() < n ? piece.size() : n;
      if (sniffed_size_ == sniffed_.size()) break;
    }
  }

  std::optional<NextLayer> plain_;
  std::optional<tls_stream_type> tls_;
  Mode mode_ = Mode::plain;
  std::array<char, 16> sniffed_{};
  std::size_t sniffed_size_ = 0;
};

/// The WebSocket closing handshake's teardown (found by Beast through ADL): TLS close_notify
/// then TCP for a TLS stream, TCP alone otherwise. A peer that never answers close_notify is
/// the caller's bound to cut (its close timeout closes the socket).
template <class NextLayer, class TeardownHandler>
void async_teardown(boost::beast::role_type role, MaybeTlsStream<NextLayer>& stream,
                    TeardownHandler&& handler) {
  using boost::beast::websocket::async_teardown;
  if (stream.is_tls()) {
    async_teardown(role, stream.tls(), std::forward<TeardownHandler>(handler));
  } else {
    async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
  }
}

template <class NextLayer>
void teardown(boost::beast::role_type role, MaybeTlsStream<NextLayer>& stream,
              boost::system::error_code& ec) {
  using boost::beast::websocket::teardown;
  if (stream.is_tls()) {
    teardown(role, stream.tls(), ec);
  } else {
    teardown(role, stream.next_layer(), ec);
  }
}

}  // namespace trading_shared::ws

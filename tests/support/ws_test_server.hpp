#pragma once
/// @file
/// A scriptable WebSocket server for the WebSocketClient tests (F35-F39): a Beast server on
/// 127.0.0.1 with a kernel-chosen port, running on the test's io_context. Each accepted
/// connection runs the test's handler coroutine; the server can misbehave in every way the
/// handler likes (stall, drop without close frame, garbage bytes, oversized frames).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace trading_shared::testing {

class WsTestServer {
 public:
  using Stream = boost::beast::websocket::stream<boost::beast::tcp_stream>;
  /// Runs for each connection (index 0, 1, ...) after the WebSocket handshake. When it returns,
  /// the connection is closed with a close frame (if still open).
  using Handler = std::function<boost::asio::awaitable<void>(Stream& ws, int index)>;

  WsTestServer(boost::asio::io_context& io, Handler handler)
      : io_(&io),
        acceptor_(io,
                  boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)),
        handler_(std::move(handler)) {
    boost::asio::co_spawn(io, accept_loop(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
  }

  std::string url() const {
    return "ws://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/ws";
  }
  int connections() const { return accepted_; }

  /// Closes the acceptor and every live connection (abruptly).
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& weak : streams_) {
      if (auto s = weak.lock()) boost::beast::close_socket(boost::beast::get_lowest_layer(*s));
    }
  }

  /// Receives the next text message (helper for handlers); empty on error.
  static boost::asio::awaitable<std::string> read_text(Stream& ws) {
    boost::beast::flat_buffer buffer;
    boost::system::error_code ec;
    co_await ws.async_read(buffer, boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec) co_return std::string();
    co_return boost::beast::buffers_to_string(buffer.data());
  }

  /// Sends a text message; false on error.
  static boost::asio::awaitable<bool> write_text(Stream& ws, const std::string& text) {
    boost::system::error_code ec;
    ws.text(true);
    co_await ws.async_write(boost::asio::buffer(text),
                            boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    co_return !ec;
  }

  /// Suspends until the connection is closed under it (a stalled server: reads nothing,
  /// writes nothing, keeps the socket open).
  static boost::asio::awaitable<void> stall(Stream& ws) {
    // Wait on the raw socket for readability is not possible without reading; a timer that
    // only stop() or test teardown ends does it.
    boost::asio::steady_timer t(ws.get_executor(), std::chrono::hours(1));
    boost::system::error_code ec;
    co_await t.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  }

 private:
  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      auto socket = co_await acceptor_.async_accept(
          boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      auto ws = std::make_shared<Stream>(std::move(socket));
      streams_.push_back(ws);
      const int index = accepted_++;
      boost::asio::co_spawn(*io_, serve(ws, index), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    }
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<Stream> ws, int index) {
    ws->set_option(
        boost::beast::websocket::stream_base::timeout::suggested(boost::beast::role_type::server));
    boost::system::error_code ec;
    co_await ws->async_accept(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec) co_return;
    co_await handler_(*ws, index);
    if (ws->is_open()) {
      co_await ws->async_close(boost::beast::websocket::close_code::normal,
                               boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    }
  }

  boost::asio::io_context* io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  Handler handler_;
  int accepted_ = 0;
  std::vector<std::weak_ptr<Stream>> streams_;
};

}  // namespace trading_shared::testing

#pragma once
/// @file
/// A scriptable HTTP/1.1 server for the HttpClient and backfill tests: a Beast server on
/// 127.0.0.1 with a kernel-chosen port, on the test's io_context. Each request is answered as
/// the test's script says: after a delay, with a status, headers and a body, or cut short
/// (a truncated body, a close without an answer, a close after a keep-alive answer).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::testing {

struct HttpAnswer {
  std::chrono::milliseconds delay{0};  ///< before anything is sent.
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Content-Length says the whole body, but only this many bytes are sent; then close.
  std::optional<std::size_t> truncate_at;
  /// Answer with "Connection: close" and close.
  bool close = false;
  /// Close without answering (the request was read).
  bool close_without_answer = false;
  /// Answer as keep-alive, then close the connection anyway (a server's idle timeout).
  bool close_after_keep_alive = false;
};

struct HttpSeen {
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  int connection = 0;  ///< 0 for the first connection accepted.
};

class HttpTestServer {
 public:
  /// `index` counts requests over all connections from 0.
  using Script = std::function<HttpAnswer(const HttpSeen& request, int index)>;

  HttpTestServer(boost::asio::io_context& io, Script script)
      : io_(&io),
        acceptor_(io,
                  boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)),
        script_(std::move(script)) {
    boost::asio::co_spawn(io, accept_loop(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
  }

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  int connections() const { return accepted_; }
  const std::vector<HttpSeen>& requests() const { return seen_; }

  /// Closes the acceptor and every live connection (abruptly).
  void stop() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& weak : sockets_) {
      if (auto s = weak.lock()) s->socket().close(ignored);
    }
  }

 private:
  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      auto socket = co_await acceptor_.async_accept(
          boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (ec) co_return;
      auto stream = std::make_shared<boost::beast::tcp_stream>(std::move(socket));
      sockets_.push_back(stream);
      const int number = accepted_++;
      boost::asio::co_spawn(*io_, serve(stream, number), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
    }
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<boost::beast::tcp_stream> stream, int number) {
    namespace http = boost::beast::http;
    using boost::asio::redirect_error;
    using boost::asio::use_awaitable;
    boost::beast::flat_buffer buffer;
    boost::system::error_code ec;
    for (;;) {
      http::request<http::string_body> request;
      co_await http::async_read(*stream, buffer, request, redirect_error(use_awaitable, ec));
      if (ec) co_return;
      HttpSeen seen;
      seen.target = std::string(request.target());
      for (const auto& f : request) {
        seen.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      }
      seen.connection = number;
      const int index = static_cast<int>(seen_.size());
      seen_.push_back(seen);
      const HttpAnswer answer = script_(seen, index);
      if (answer.delay > std::chrono::milliseconds::zero()) {
        boost::asio::steady_timer timer(*io_, answer.delay);
        co_await timer.async_wait(redirect_error(use_awaitable, ec));
      }
      if (answer.close_without_answer) {
        stream->socket().close(ec);
        co_return;
      }
      http::response<http::string_body> response{static_cast<http::status>(answer.status), 11};
      for (const auto& [name, value] : answer.headers) response.set(name, value);
      response.body() = answer.body;
      response.keep_alive(!answer.close);
      response.prepare_payload();
      if (answer.truncate_at) {
        http::response_serializer<http::string_body> serializer(response);
        co_await http::async_write_header(*stream, serializer, redirect_error(use_awaitable, ec));
        const std::size_t n = std::min(*answer.truncate_at, answer.body.size());
        co_await boost::asio::async_write(stream->socket(), boost::asio::buffer(answer.body, n),
                                          redirect_error(use_awaitable, ec));
        stream->socket().close(ec);
        co_return;
      }
      co_await http::async_write(*stream, response, redirect_error(use_awaitable, ec));
      if (ec || answer.close || answer.close_after_keep_alive) {
        stream->socket().close(ec);
        co_return;
      }
    }
  }

  boost::asio::io_context* io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  Script script_;
  int accepted_ = 0;
  std::vector<HttpSeen> seen_;
  std::vector<std::weak_ptr<boost::beast::tcp_stream>> sockets_;
};

}  // namespace trading_shared::testing

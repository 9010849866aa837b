// A blocking HTTP/1.1 client for the tests of the admin endpoint (lifecycle::AdminServer):
// one request per connection, bounded in time, run from a test thread (never the service loop).
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::testing::admin {

struct HttpReply {
  int status = 0;  ///< 0: no answer (see error)
  std::string body;
  std::string content_type;
  std::string allow;
  std::string content_length;
  std::string error;
  std::chrono::milliseconds took{0};
};

/// `method target` to 127.0.0.1:port; the whole exchange within `timeout`.
inline HttpReply http_request(std::uint16_t port, std::string_view target,
                              boost::beast::http::verb method = boost::beast::http::verb::get,
                              std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  const auto start = std::chrono::steady_clock::now();
  HttpReply reply;
  asio::io_context io(1);
  beast::tcp_stream stream(io);
  http::request<http::empty_body> request(method, std::string(target), 11);
  request.set(http::field::host, "127.0.0.1");
  request.keep_alive(false);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.skip(method == http::verb::head);
  parser.body_limit(64 * 1024 * 1024);
  auto fail = [&](const char* step, boost::system::error_code ec) {
    if (reply.error.empty()) reply.error = std::string(step) + ": " + ec.message();
  };
  stream.expires_after(timeout);
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  stream.async_connect(endpoint, [&](boost::system::error_code ec) {
    if (ec) return fail("connect", ec);
    http::async_write(stream, request, [&](boost::system::error_code wec, std::size_t) {
      if (wec) return fail("write", wec);
      http::async_read(stream, buffer, parser, [&](boost::system::error_code rec, std::size_t) {
        if (rec) return fail("read", rec);
        const auto& r = parser.get();
        reply.status = static_cast<int>(r.result_int());
        reply.body = r.body();
        auto field = [&](http::field f) {
          const auto it = r.find(f);
          return it == r.end() ? std::string() : std::string(it->value());
        };
        reply.content_type = field(http::field::content_type);
        reply.allow = field(http::field::allow);
        reply.content_length = field(http::field::content_length);
      });
    });
  });
  io.run();
  reply.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return reply;
}

inline HttpReply http_get(std::uint16_t port, std::string_view target) {
  return http_request(port, target);
}

}  // namespace trading_shared::testing::admin

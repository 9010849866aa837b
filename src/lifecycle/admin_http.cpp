// The admin endpoint's HTTP side: Beast HTTP/1.1 on a thread of its own (admin_server.hpp).
#include "admin_http.hpp"

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <charconv>

namespace trading_shared::lifecycle {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("admin");
  return logger;
}

/// A scrape's request line and headers; the admin endpoint takes no request body.
constexpr std::uint32_t kHeaderLimit = 8 * 1024;
/// After an accept error (descriptors exhausted, for instance), before the next accept.
constexpr std::chrono::milliseconds kAcceptPause{100};

struct Listen {
  std::string host;
  std::uint16_t port = 0;
};

/// "host:port", "[v6]:port", ":port" or "port" (loopback).
Listen parse_listen(const std::string& listen) {
  auto bad = [&](std::string_view why) -> Listen {
    throw core::ConfigError(fmt::format(
        "invalid admin listen address '{}': {} (expected host:port, e.g. 127.0.0.1:9101)", listen,
        why));
  };
  Listen out;
  std::string_view text = listen;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    out.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("no port after ']'");
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      port_text = text;
    } else {
      if (text.find(':') != colon) return bad("an IPv6 address must be in brackets");
      out.host = std::string(text.substr(0, colon));
      port_text = text.substr(colon + 1);
    }
  }
  if (out.host.empty() || out.host == "localhost") out.host = "127.0.0.1";
  unsigned port = 0;
  const auto [ptr, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || ptr != port_text.data() + port_text.size() ||
      port > 65535) {
    return bad("the port must be a number from 0 to 65535");
  }
  out.port = static_cast<std::uint16_t>(port);
  return out;
}

std::string_view view(beast::string_view s) {
  return {s.data(), s.size()};
}

}  // namespace

AdminServer::Server::Server(const AdminOptions& options, std::shared_ptr<Shared> shared)
    : options_(options), shared_(std::move(shared)) {
  const auto listen = parse_listen(options_.listen);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(listen.host, ec);
  if (ec) {
    throw core::ConfigError(
        fmt::format("invalid admin listen address '{}': '{}' is not an IP address (or localhost)",
                    options_.listen, listen.host));
  }
  const tcp::endpoint endpoint(address, listen.port);
  auto fail = [&](const char* step) {
    throw core::ConfigError(fmt::format("cannot listen on {} for the admin endpoint: {}: {}",
                                        options_.listen, step, ec.message()));
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) fail("socket");
  acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec) fail("SO_REUSEADDR");
  acceptor_.bind(endpoint, ec);
  if (ec) fail("bind");
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen");
  port_ = acceptor_.local_endpoint().port();
  host_ = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();

  auto& r = *shared_->registry;
  constexpr std::string_view kRequests = "ts_service_admin_requests_total";
  constexpr std::string_view kRequestsHelp = "Requests answered by the admin endpoint, by path";
  requests_metrics_ =
      &r.counter(core::metric_name(kRequests, {{"path", "/metrics"}}), kRequestsHelp);
  requests_healthz_ =
      &r.counter(core::metric_name(kRequests, {{"path", "/healthz"}}), kRequestsHelp);
  requests_readyz_ = &r.counter(core::metric_name(kRequests, {{"path", "/readyz"}}), kRequestsHelp);
  requests_other_ = &r.counter(core::metric_name(kRequests, {{"path", "other"}}), kRequestsHelp);
  refused_ = &r.counter("ts_service_admin_connections_refused_total",
                        "Admin connections closed at accept (max_connections reached)");
  bad_requests_ = &r.counter("ts_service_admin_bad_requests_total",
                             "Admin requests that could not be parsed (answered 400, closed)");
}

AdminServer::Server::~Server() {
  stop();
}

void AdminServer::Server::start() {
  asio::co_spawn(io_, accept_loop(), [](const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      log()->error("admin endpoint: the accept loop failed: {}", x.what());
    }
  });
  thread_ = std::thread([this] { io_.run(); });
}

void AdminServer::Server::stop() {
  if (!thread_.joinable()) return;
  io_.stop();  // open connections are dropped; their frames are destroyed with io_
  thread_.join();
  boost::system::error_code ignored;  // closing an acceptor that ran cannot fail usefully
  acceptor_.close(ignored);
}

AdminServer::Server::Answer AdminServer::Server::answer(std::string_view method,
                                                        std::string_view target) {
  Answer a;
  const std::string_view path = target.substr(0, target.find('?'));
  core::Counter* counter = path == "/metrics"   ? requests_metrics_
                           : path == "/healthz" ? requests_healthz_
                           : path == "/readyz"  ? requests_readyz_
                                                : requests_other_;
  counter->add();
  if (counter == requests_other_) {
    a.status = 404;
    a.body = "not found: the admin endpoint serves /metrics, /healthz and /readyz\n";
    return a;
  }
  if (method != "GET" && method != "HEAD") {
    a.status = 405;
    a.allow_header = true;
    a.body = "method not allowed: GET or HEAD\n";
    return a;
  }
  if (counter == requests_metrics_) {
    a.content_type = "text/plain; version=0.0.4; charset=utf-8";
    a.body.reserve(metrics_size_ + metrics_size_ / 4);
    shared_->registry->write_prometheus(a.body);
    metrics_size_ = a.body.size();
  } else if (counter == requests_healthz_) {
    const auto age = std::chrono::steady_clock::now() - shared_->heartbeat();
    if (age > options_.stuck_after) {
      a.status = 503;
      a.body = fmt::format("event loop stuck for {} ms\n",
                           std::chrono::duration_cast<std::chrono::milliseconds>(age).count());
    } else {
      a.body = "ok\n";
    }
  } else {
    const auto readiness = shared_->snapshot();
    if (readiness) {
      a.status = readiness->ready ? 200 : 503;
      a.body = readiness->body;
    } else {
      a.status = 503;
      a.body = "not ready\nstarting\n";
    }
  }
  return a;
}

asio::awaitable<void> AdminServer::Server::accept_loop() {
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      log()->warn("admin endpoint: accept failed: {}; retrying in {} ms", ec.message(),
                  kAcceptPause.count());
      asio::steady_timer pause(io_, kAcceptPause);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections_ >= options_.max_connections) {
      refused_->add();
      boost::system::error_code ignored;  // the peer sees the connection closed either way
      socket.close(ignored);
      continue;
    }
    ++connections_;
    asio::co_spawn(io_, serve(std::move(socket)), [](const std::exception_ptr& e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        log()->error("admin endpoint: a connection failed: {}", x.what());
      }
    });
  }
}

asio::awaitable<void> AdminServer::Server::serve(tcp::socket socket) {
  // The connection's place is given back however serve() ends (an exception included).
  struct Release {
    std::size_t& count;
    ~Release() { --count; }
  } release{connections_};
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(kHeaderLimit);
  for (;;) {
    // One request, from waiting for it to the last byte of the answer, within request_timeout.
    stream.expires_after(options_.request_timeout);
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kHeaderLimit);
    boost::system::error_code ec;
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    http::response<http::string_body> response;
    if (ec) {
      // The client left, or was too slow (beast::error::timeout): nothing to answer.
      const bool malformed =
          ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message;
      if (!malformed) break;
      bad_requests_->add();
      response.result(http::status::bad_request);
      response.set(http::field::content_type, "text/plain; charset=utf-8");
      response.body() = "bad request: " + ec.message() + "\n";
      response.keep_alive(false);
      response.prepare_payload();
    } else {
      const auto& request = parser.get();
      auto a = answer(view(request.method_string()), view(request.target()));
      response.version(request.version());
      response.result(static_cast<http::status>(a.status));
      response.set(http::field::content_type, a.content_type);
      if (a.allow_header) response.set(http::field::allow, "GET, HEAD");
      response.keep_alive(request.keep_alive());
      if (request.method() == http::verb::head) {
        response.content_length(a.body.size());  // the headers of a GET, no body
      } else {
        response.body() = std::move(a.body);
        response.prepare_payload();
      }
    }
    co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !response.keep_alive()) break;
  }
  boost::system::error_code ignored;  // the peer may be gone already
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

}  // namespace trading_shared::lifecycle

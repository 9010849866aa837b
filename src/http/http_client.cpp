#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/core/tls_context.hpp>
#include <trading_shared/http/http_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace trading_shared::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("http");
  return logger;
}

/// The completion token of every operation of a request: the error as a code (never thrown),
/// and no cancellation slot of its own: the request's cancellation is handled by closing its
/// connection (see `get`), which ends any operation on it at once.
auto op_token(boost::system::error_code& ec) {
  return asio::bind_cancellation_slot(asio::cancellation_slot(),
                                      asio::redirect_error(asio::use_awaitable, ec));
}

/// The bytes of a connection: plain TCP (http://) or TLS over it (https://, whose handshake is
/// part of `connect`).
class Transport {
 public:
  virtual ~Transport() = default;
  virtual asio::awaitable<void> connect(const tcp::resolver::results_type& endpoints,
                                        Clock::time_point deadline,
                                        boost::system::error_code& ec) = 0;
  virtual asio::awaitable<void> write(bhttp::request<bhttp::empty_body>& request,
                                      Clock::time_point deadline,
                                      boost::system::error_code& ec) = 0;
  virtual asio::awaitable<void> read(beast::flat_buffer& buffer,
                                     bhttp::response_parser<bhttp::string_body>& parser,
                                     Clock::time_point deadline, boost::system::error_code& ec) = 0;
  /// Closes the socket: every operation on it ends (operation_aborted). Never throws.
  virtual void close() noexcept = 0;
  /// TLS: the refusal of the peer (a failed verification, an alert such as TLS 1.3's
  /// "certificate required", which comes after the client's handshake, with the first read)
  /// as a tls_failed Error; null when none (always for plain TCP).
  virtual const Error* tls_refusal() const noexcept { return nullptr; }
  virtual bool is_open() const noexcept = 0;
};

class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(const asio::any_io_executor& executor) : stream_(executor) {}
  asio::awaitable<void> connect(const tcp::resolver::results_type& endpoints,
                                Clock::time_point deadline,
                                boost::system::error_code& ec) override {
    stream_.expires_at(deadline);
    co_await stream_.async_connect(endpoints, op_token(ec));
  }
  asio::awaitable<void> write(bhttp::request<bhttp::empty_body>& request,
                              Clock::time_point deadline, boost::system::error_code& ec) override {
    stream_.expires_at(deadline);
    co_await bhttp::async_write(stream_, request, op_token(ec));
  }
  asio::awaitable<void> read(beast::flat_buffer& buffer,
                             bhttp::response_parser<bhttp::string_body>& parser,
                             Clock::time_point deadline, boost::system::error_code& ec) override {
    stream_.expires_at(deadline);
    co_await bhttp::async_read(stream_, buffer, parser, op_token(ec));
  }
  void close() noexcept override {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }
  bool is_open() const noexcept override { return stream_.socket().is_open(); }

 private:
  beast::tcp_stream stream_;
};

/// https://: `beast::ssl_stream<beast::tcp_stream>`. The handshake (SNI, chain and host-name
/// verification) is part of connect, under the connect deadline. close() closes the socket at
/// once (no close_notify exchange: never waits on the peer; the answer was read in full).
class TlsTransport final : public Transport {
 public:
  TlsTransport(const asio::any_io_executor& executor, std::shared_ptr<asio::ssl::context> context,
               const core::TlsConfig& config, const std::string& host, std::string what)
      : context_(std::move(context)),
        stream_(executor, *context_),
        config_(&config),
        host_(&host),
        what_(std::move(what)) {}
  asio::awaitable<void> connect(const tcp::resolver::results_type& endpoints,
                                Clock::time_point deadline,
                                boost::system::error_code& ec) override {
    auto& tcp_layer = beast::get_lowest_layer(stream_);
    tcp_layer.expires_at(deadline);
    co_await tcp_layer.async_connect(endpoints, op_token(ec));
    if (ec) co_return;
    core::prepare_client(stream_.native_handle(), *config_, *host_);
    co_await stream_.async_handshake(asio::ssl::stream_base::client, op_token(ec));
    if (ec && ec != beast::error::timeout && ec != asio::error::operation_aborted) {
      refusal_ = core::tls_handshake_error(ec, stream_.native_handle(), what_);
    }
  }
  const Error* tls_refusal() const noexcept override {
    if (!refusal_ || refusal_->code() != make_error_code(errc::tls_failed)) return nullptr;
    return &*refusal_;
  }
  asio::awaitable<void> write(bhttp::request<bhttp::empty_body>& request,
                              Clock::time_point deadline, boost::system::error_code& ec) override {
    beast::get_lowest_layer(stream_).expires_at(deadline);
    co_await bhttp::async_write(stream_, request, op_token(ec));
    note_refusal(ec);
  }
  asio::awaitable<void> read(beast::flat_buffer& buffer,
                             bhttp::response_parser<bhttp::string_body>& parser,
                             Clock::time_point deadline, boost::system::error_code& ec) override {
    beast::get_lowest_layer(stream_).expires_at(deadline);
    co_await bhttp::async_read(stream_, buffer, parser, op_token(ec));
    note_refusal(ec);
  }
  void close() noexcept override {
    boost::system::error_code ignored;
    auto& socket = beast::get_lowest_layer(stream_).socket();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }
  bool is_open() const noexcept override {
    return beast::get_lowest_layer(stream_).socket().is_open();
  }
  /// The handshake's failure as an Error (tls_failed: refused; connect_failed: cut), if any.
  const std::optional<Error>& refusal() const noexcept { return refusal_; }

 private:
  void note_refusal(const boost::system::error_code& ec) {
    if (ec && !refusal_ && core::is_tls_error(ec)) {
      refusal_ = core::tls_handshake_error(ec, stream_.native_handle(), what_);
    }
  }

  std::shared_ptr<asio::ssl::context> context_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  const core::TlsConfig* config_;
  const std::string* host_;
  std::string what_;
  std::optional<Error> refusal_;
};

struct Connection {
  std::unique_ptr<Transport> transport;
  beast::flat_buffer buffer;  // bytes read past an answer stay with its connection
  Clock::time_point idle_since{};
  bool closed_by_us = false;
};

/// A request in flight: what the caller's cancellation (or close()) must cut.
struct InFlight {
  Connection* connection = nullptr;
  bool cancelled = false;  // by the caller
  bool closed = false;     // by close()
  void cut() noexcept {
    if (connection != nullptr) connection->transport->close();
  }
};

}  // namespace

struct HttpClient::Core {
  Core(asio::any_io_executor executor, HttpClientConfig cfg)
      : ex(std::move(executor)), config(std::move(cfg)), url(parse_http_url(config.base_url)) {
    validate(config);
    if (url.target == "/") url.target.clear();  // the prefix of every target
    const bool default_port = url.port == (url.tls ? "443" : "80");
    host_header = default_port ? url.host : url.host + ":" + url.port;
    if (url.host.find(':') != std::string::npos) {  // IPv6 literal
      host_header = default_port ? "[" + url.host + "]" : "[" + url.host + "]:" + url.port;
    }
    if (url.tls) {
      tls_config = config.tls;
      tls_config.enabled = true;
      tls_source.emplace(tls_config, "HTTP client " + config.base_url);
    }
  }
  /// https://: the TLS settings and the context of new connections (rebuilt when the
  /// certificate files change).
  core::TlsConfig tls_config;
  std::optional<core::TlsContextSource> tls_source;
  asio::any_io_executor ex;
  HttpClientConfig config;
  HttpUrl url;
  std::string host_header;
  std::optional<tcp::resolver::results_type> endpoints;
  std::vector<std::unique_ptr<Connection>> idle;
  std::vector<InFlight*> in_flight;
  bool closed = false;
  HttpStats stats;

  std::string what(std::string_view target, std::string_view text) const {
    return "HTTP GET " + url.host + ":" + url.port + std::string(target) + ": " + std::string(text);
  }

  /// A kept-alive connection still worth using, or null.
  std::unique_ptr<Connection> take_idle() {
    const auto now = Clock::now();
    while (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      if (c->transport->is_open() && now - c->idle_since < config.idle_timeout) return c;
      c->transport->close();
    }
    return nullptr;
  }

  void give_back(std::unique_ptr<Connection> c) {
    if (closed || idle.size() >= config.max_idle_connections || !c->transport->is_open()) {
      c->transport->close();
      return;
    }
    c->idle_since = Clock::now();
    idle.push_back(std::move(c));
  }
};

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientConfig config)
    : core_(std::make_shared<Core>(std::move(executor), std::move(config))) {}

HttpClient::~HttpClient() {
  for (auto& c : core_->idle) c->transport->close();
}

asio::awaitable<void> HttpClient::start() {
  co_return;
}

asio::awaitable<void> HttpClient::close() {
  core_->closed = true;
  for (auto& c : core_->idle) c->transport->close();
  core_->idle.clear();
  for (InFlight* r : core_->in_flight) {
    r->closed = true;
    r->cut();
  }
  co_return;
}

HttpStats HttpClient::stats() const noexcept {
  return core_->stats;
}
const HttpClientConfig& HttpClient::config() const noexcept {
  return core_->config;
}

asio::awaitable<HttpResponse> HttpClient::get(std::string_view target_in,
                                              const HttpRequestOptions& options) {
  Core& c = *core_;
  auto keep = core_;  // the state outlives a client destroyed while this frame unwinds
  ++c.stats.requests;
  const std::string target = c.url.target + std::string(target_in);
  const auto deadline = Clock::now() + (options.timeout > std::chrono::milliseconds::zero()
                                            ? options.timeout
                                            : c.config.request_timeout);
  auto fail = [&](errc code, std::string_view text, RequestState state) -> Error {
    ++c.stats.failures;
    if (code == errc::request_timeout || code == errc::connect_timeout) ++c.stats.timeouts;
    if (code == errc::response_too_large) ++c.stats.too_large;
    return Error(make_error_code(code), c.what(target, text), state);
  };
  if (c.closed) throw fail(errc::client_closed, "the client is closed", RequestState::not_sent);
  if (target.empty() || target.front() != '/') {
    throw fail(errc::invalid_argument, "the target must start with /", RequestState::not_sent);
  }

  // The caller's cancellation closes the connection in use: every operation on it ends. Asio
  // clears the coroutine's cancellation slot whenever an operation of it completes, so the
  // handler is installed again before each operation (arm()).
  InFlight request;
  c.in_flight.push_back(&request);
  auto cs = co_await asio::this_coro::cancellation_state;
  asio::cancellation_slot slot = cs.slot();
  auto arm = [&] {
    if (!slot.is_connected()) return;
    slot.assign([r = &request](asio::cancellation_type type) {
      if (type == asio::cancellation_type::none) return;
      r->cancelled = true;
      r->cut();
    });
  };
  struct Cleanup {
    Core* core;
    InFlight* request;
    asio::cancellation_slot slot;
    ~Cleanup() {
      if (slot.is_connected()) slot.clear();
      std::erase(core->in_flight, request);
    }
  } cleanup{&c, &request, slot};
  auto interrupted = [&](RequestState state) -> std::optional<Error> {
    if (request.closed) return fail(errc::client_closed, "the client was closed", state);
    if (request.cancelled || cs.cancelled() != asio::cancellation_type::none) {
      return fail(errc::cancelled, "cancelled", state);
    }
    return std::nullopt;
  };

  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, c.host_header);
  req.set(bhttp::field::user_agent, c.config.user_agent);
  req.keep_alive(true);
  for (const auto& h : options.headers) req.set(h.name, h.value);

  boost::system::error_code ec;
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Connection> conn = c.take_idle();
    const bool reused = conn != nullptr;
    if (!conn) {
      if (!c.endpoints) {
        tcp::resolver resolver(c.ex);
        arm();
        auto results = co_await resolver.async_resolve(c.url.host, c.url.port, op_token(ec));
        if (auto e = interrupted(RequestState::not_sent)) throw *e;
        if (ec) {
          throw fail(errc::connect_failed, "resolving the host failed: " + ec.message(),
                     RequestState::not_sent);
        }
        c.endpoints = std::move(results);
      }
      conn = std::make_unique<Connection>();
      TlsTransport* tls = nullptr;
      if (c.tls_source) {
        std::shared_ptr<asio::ssl::context> context;
        try {
          context = c.tls_source->get();  // a new one when the certificate files changed
        } catch (const Error& e) {
          ++c.stats.failures;
          ++c.stats.connect_failures;
          throw Error(e.code(), c.what(target, e.what()), RequestState::not_sent);
        }
        c.stats.tls_contexts = c.tls_source->builds();
        auto transport =
            std::make_unique<TlsTransport>(c.ex, std::move(context), c.tls_config, c.url.host,
                                           "HTTP GET " + c.url.host + ":" + c.url.port + target);
        tls = transport.get();
        conn->transport = std::move(transport);
      } else {
        conn->transport = std::make_unique<PlainTransport>(c.ex);
      }
      request.connection = conn.get();
      const auto connect_deadline = std::min(deadline, Clock::now() + c.config.connect_timeout);
      if (auto e = interrupted(RequestState::not_sent)) throw *e;
      arm();
      co_await conn->transport->connect(*c.endpoints, connect_deadline, ec);
      if (auto e = interrupted(RequestState::not_sent)) throw *e;
      if (ec) {
        ++c.stats.connect_failures;
        conn->transport->close();
        if (ec == beast::error::timeout) {
          throw fail(
              Clock::now() >= deadline ? errc::request_timeout : errc::connect_timeout,
              tls != nullptr ? "connect (TCP + TLS handshake) timed out" : "connect timed out",
              RequestState::not_sent);
        }
        if (tls != nullptr && tls->refusal()) {
          ++c.stats.failures;
          throw Error(*tls->refusal());  // names the check that failed (tls_failed), F61/F63
        }
        throw fail(errc::connect_failed, "connect failed: " + ec.message(), RequestState::not_sent);
      }
      ++c.stats.connects;
    } else {
      ++c.stats.reused;
      request.connection = conn.get();
    }

    if (auto e = interrupted(RequestState::not_sent)) throw *e;
    arm();
    co_await conn->transport->write(req, deadline, ec);
    if (auto e = interrupted(RequestState::sent)) throw *e;
    bool stale = false;
    if (ec) {
      conn->transport->close();
      // Only a new connection's handshake can be refused (a TLS 1.3 server's alert arrives
      // with the first read); an error on a reused, verified connection is not a refusal.
      if (const Error* refused = reused ? nullptr : conn->transport->tls_refusal()) {
        ++c.stats.failures;
        throw Error(*refused);  // e.g. the server requires a client certificate (TLS 1.3)
      }
      if (ec == beast::error::timeout) {
        throw fail(errc::request_timeout, "timed out writing the request", RequestState::sent);
      }
      stale = reused;
      if (!stale || attempt > 0) {
        throw fail(errc::connection_lost, "writing the request failed: " + ec.message(),
                   RequestState::sent);
      }
    }
    if (!stale) {
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(c.config.max_body_size);
      parser.header_limit(static_cast<std::uint32_t>(c.config.max_header_size));
      arm();
      co_await conn->transport->read(conn->buffer, parser, deadline, ec);
      if (auto e = interrupted(RequestState::sent)) throw *e;
      if (!ec) {
        auto& message = parser.get();
        HttpResponse response;
        response.status = message.result_int();
        response.reason = std::string(message.reason());
        for (const auto& field : message) {
          response.headers.push_back(
              {std::string(field.name_string()), std::string(field.value())});
        }
        response.body = std::move(message.body());
        ++c.stats.responses;
        if (parser.keep_alive()) {
          c.give_back(std::move(conn));
        } else {
          conn->transport->close();
        }
        co_return response;
      }
      conn->transport->close();
      // Only a new connection's handshake can be refused (a TLS 1.3 server's alert arrives
      // with the first read); an error on a reused, verified connection is not a refusal.
      if (const Error* refused = reused ? nullptr : conn->transport->tls_refusal()) {
        ++c.stats.failures;
        throw Error(*refused);  // e.g. the server requires a client certificate (TLS 1.3)
      }
      if (ec == bhttp::error::body_limit) {
        throw fail(errc::response_too_large,
                   "the answer's body is larger than max_body_size (" +
                       std::to_string(c.config.max_body_size) + " bytes)",
                   RequestState::sent);
      }
      if (ec == bhttp::error::header_limit) {
        throw fail(errc::response_too_large, "the answer's header is larger than max_header_size",
                   RequestState::sent);
      }
      if (ec == beast::error::timeout) {
        throw fail(errc::request_timeout, "no (complete) answer within the deadline",
                   RequestState::sent);
      }
      // The server closed a kept-alive connection before answering anything (its idle
      // timeout): nothing was processed; a GET goes again once, on a new connection.
      const bool nothing_read = !parser.got_some();
      // A TLS server closing an idle kept-alive connection without close_notify: truncated.
      const bool closed_early = ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                                ec == asio::error::connection_reset ||
                                ec == asio::ssl::error::stream_truncated;
      if (!c.url.tls && !reused) {  // F63: a plaintext request to a TLS port
        const auto data = conn->buffer.cdata();
        if (core::looks_like_tls(
                std::string_view(static_cast<const char*>(data.data()), data.size()))) {
          throw fail(errc::tls_failed, "the server speaks TLS: use https://", RequestState::sent);
        }
        if (closed_early && nothing_read) {
          throw fail(errc::connection_lost,
                     "the connection closed before an answer (" + ec.message() +
                         "); if it is a TLS port, use https://",
                     RequestState::sent);
        }
      }
      stale = reused && nothing_read && closed_early;
      if (!stale || attempt > 0) {
        if (ec == bhttp::error::partial_message || ec == asio::error::eof ||
            ec == bhttp::error::end_of_stream || ec == asio::error::connection_reset) {
          throw fail(errc::connection_lost,
                     nothing_read ? "the connection closed before an answer"
                                  : "the connection closed in the middle of the answer",
                     RequestState::sent);
        }
        if (ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category() ||
            ec == bhttp::error::bad_version) {
          throw fail(errc::protocol_error, "malformed answer: " + ec.message(), RequestState::sent);
        }
        throw fail(errc::connection_lost, "reading the answer failed: " + ec.message(),
                   RequestState::sent);
      }
    }
    ++c.stats.stale_retries;
    log()->debug("{}", c.what(target, "kept-alive connection closed by the server; sent again"));
    request.connection = nullptr;
    if (Clock::now() >= deadline) {
      throw fail(errc::request_timeout, "deadline passed", RequestState::sent);
    }
  }
}

}  // namespace trading_shared::http

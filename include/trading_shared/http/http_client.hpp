#pragma once
/// @file
/// `HttpClient`: an HTTP/1.1 client on Boost.Beast for REST endpoints (docs/http.md).
///
/// - **Per-request deadline**: connect, write and read of one request end within
///   `request_timeout` (or the request's own `timeout`): `Error(errc::request_timeout)`.
/// - **Cancellation**: a request honours its caller's cancellation slot (terminal, partial,
///   total): the connection it uses is closed at once and the request fails with
///   `errc::cancelled`; `close()` fails every request in flight with `errc::client_closed`.
/// - **Classified errors** (core/error.hpp): connection refused / reset / timeout are transient;
///   a non-2xx answer is returned as is, and `throw_for_status()` turns it into an `Error` of a
///   `ServerKind::http` server error classified by `classify_http_status()` (http_status.hpp:
///   4xx permanent except 408/429/418; 429/418 carry Retry-After in `Error::retry_after()`;
///   5xx transient).
///   A body above `max_body_size` is refused (`errc::response_too_large`, permanent); a body
///   cut short (the peer closed mid-answer) is `errc::connection_lost` after sending
///   (`outcome_unknown`: a GET may be retried).
/// - **Keep-alive**: connections are reused (up to `max_idle_connections` idle ones, none older
///   than `idle_timeout`). A reused connection that the server closed in between (EOF or reset
///   before any byte of the answer) is replaced and the request sent once more on a new
///   connection: only GET is offered, and a GET is idempotent.
/// - **No blocking call**: the host is resolved asynchronously (once, then cached).
/// - **TLS** (`https://`): the handshake (SNI, chain and host-name verification) is part of the
///   connect, bounded by `connect_timeout`; kept-alive TLS connections are reused like plain
///   ones. A refused certificate is `errc::tls_failed` (permanent) naming the check.
///
/// Threading: the client and its awaitables run on one executor that is not used from other
/// threads concurrently. Several requests may be in flight at once (each on its own
/// connection). The client must outlive the awaitables it returns.
///
/// @code
/// http::HttpClient rest(executor, {.base_url = "http://127.0.0.1:9443"});
/// auto answer = co_await rest.get("/api/v3/historicalTrades?symbol=BTCUSDT&limit=10");
/// http::throw_for_status(answer, "historicalTrades");
/// @endcode

#include <trading_shared/core/tls.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::http {

/// A parsed `http[s]://host[:port][/path][?query]` URL.
struct HttpUrl {
  std::string host;    ///< without brackets for IPv6.
  std::string port;    ///< default "80" (http://) or "443" (https://).
  std::string target;  ///< path and query; default "/".
  bool tls = false;    ///< `https://`.
};
/// Parses an `http://` or `https://` URL. Credentials in the URL, a fragment and malformed
/// URLs are refused with `Error(errc::invalid_argument)` naming the problem.
HttpUrl parse_http_url(std::string_view url);

struct HttpClientConfig {
  /// `http://host[:port]` or `https://...` (a path, if any, is prefixed to every request's
  /// target).
  std::string base_url;
  /// TLS of an `https://` URL (`enabled` follows the scheme): CA file/dir (empty: the system
  /// store), client certificate and key, SNI / verified name (default: the URL's host).
  /// Certificate files are read again for the next connection when they change. Settings
  /// given with an `http://` URL are refused.
  core::TlsConfig tls{};
  /// TCP connect plus the TLS handshake of https:// (part of the request's deadline too).
  /// Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  /// Default deadline of a request: connect (if needed), write, read. Default 10 s.
  std::chrono::milliseconds request_timeout{10000};
  /// Largest body accepted (bigger: `errc::response_too_large`). Default 16 MiB.
  std::size_t max_body_size = std::size_t{16} << 20;
  /// Largest header block accepted. Default 64 KiB.
  std::size_t max_header_size = std::size_t{64} << 10;
  /// Idle keep-alive connections kept for reuse. Default 4.
  std::size_t max_idle_connections = 4;
  /// An idle connection older than this is closed instead of reused. Default 30 s.
  std::chrono::milliseconds idle_timeout{30000};
  std::string user_agent = "trading_shared-http/1";
};

/// Checks a configuration; throws `Error(errc::invalid_argument)` naming the bad field.
void validate(const HttpClientConfig& config);

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpResponse {
  unsigned status = 0;
  std::string reason;
  std::vector<HttpHeader> headers;
  std::string body;
  /// The first header called `name` (case-insensitive), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const noexcept;
  bool ok() const noexcept { return status >= 200 && status <= 299; }
};

struct HttpRequestOptions {
  std::vector<HttpHeader> headers;
  /// The request's deadline; zero: the client's `request_timeout`.
  std::chrono::milliseconds timeout{0};
};

struct HttpStats {
  std::uint64_t requests = 0;   ///< get() calls.
  std::uint64_t responses = 0;  ///< answers read (any status).
  std::uint64_t connects = 0;   ///< connections opened.
  std::uint64_t connect_failures = 0;
  std::uint64_t reused = 0;         ///< requests sent on a kept-alive connection.
  std::uint64_t stale_retries = 0;  ///< sent again: the kept-alive connection was closed.
  std::uint64_t timeouts = 0;
  std::uint64_t failures = 0;  ///< requests that ended with an error (any).
  std::uint64_t too_large = 0;
  std::uint64_t tls_contexts = 0;  ///< https://: TLS contexts built (rotation adds one).
};

/// Delay of a `Retry-After` value in seconds ("120"); an HTTP date or junk: nullopt.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value) noexcept;

/// Throws, for an answer that is not 2xx, the classified `Error`: a `ServerKind::http` server
/// error (code = the status, message = the start of the body), its Retry-After (if any) in
/// `retry_after()`. `context` says what was asked. Does nothing for 2xx.
void throw_for_status(const HttpResponse& response, const std::string& context);

class HttpClient {
 public:
  /// Throws `Error(errc::invalid_argument)` on a bad config.
  HttpClient(boost::asio::any_io_executor executor, HttpClientConfig config);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Nothing to do (connections are opened on demand); for lifecycle::ResourceScope.
  boost::asio::awaitable<void> start();
  /// Closes the idle connections and fails the requests in flight with `client_closed`; later
  /// requests fail with `client_closed`. Idempotent; never throws.
  boost::asio::awaitable<void> close();

  /// GET `target` (a path and query, e.g. "/api/v3/ping"). Returns the answer whatever its
  /// status; throws `Error` on a transport failure (see the file comment).
  boost::asio::awaitable<HttpResponse> get(std::string_view target,
                                           const HttpRequestOptions& options = {});

  HttpStats stats() const noexcept;
  const HttpClientConfig& config() const noexcept;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace trading_shared::http

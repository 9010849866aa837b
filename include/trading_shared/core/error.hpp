#pragma once
/// @file
/// The one error model of trading_shared (docs/core.md).
///
/// Failures are `std::error_code` values of our own categories, thrown as
/// `trading_shared::Error` (a `std::system_error`) from awaitables. Server errors carry their
/// data (SQLSTATE or Redis prefix, message, detail, hint) and the `ErrorKind` the layer that
/// built them computed: core knows no server. The servers' knowledge lives in their layer:
/// pg/sql_state.hpp (SQLSTATEs, PgBouncer), redis/error_class.hpp (Redis error prefixes),
/// http/http_status.hpp (HTTP statuses). `classify()` maps any failure to one `ErrorKind`,
/// which alone decides whether a retry may help.

#include <trading_shared/core/build_config.hpp>  // the ODR guard

#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace trading_shared {

/// Client-side error codes of trading_shared (category "trading_shared").
/// One code per failed phase, so that logs and metrics say where it failed.
enum class errc : int {
  // 0 is reserved for "no error".
  connect_failed = 1,      ///< TCP connect or TLS/protocol handshake failed (refused, reset, ...).
  connect_timeout,         ///< connecting took longer than the connect timeout.
  startup_timeout,         ///< `start()` kept failing until its startup deadline.
  acquire_timeout,         ///< no pooled connection became free within the acquire timeout.
  circuit_open,            ///< the endpoint's circuit breaker rejected the call (fail fast).
  queue_full,              ///< the bounded request queue is full (backpressure).
  write_timeout,           ///< the request could not be written within its timeout.
  request_timeout,         ///< no reply within the request timeout (the request may have run).
  connection_lost,         ///< the connection broke (EOF, reset, broken pipe).
  commit_outcome_unknown,  ///< the connection was lost while COMMIT was in flight.
  server_error,            ///< the server answered with an error: see `Error::server()`.
  protocol_error,          ///< the peer sent something we cannot parse; the connection is closed.
  client_closed,           ///< the client is closing or closed; the request was not run.
  not_started,             ///< the client was used before `start()` completed.
  cancelled,               ///< the caller cancelled the operation.
  invalid_argument,        ///< the request itself is malformed (caller's bug).
  timeout,                 ///< a generic deadline passed (see the context for which one).
  type_mismatch,           ///< a value cannot be converted to or from the requested type.
  response_too_large,      ///< a reply (HTTP body) above the client's size limit; refused.
  /// TLS refused by configuration, not by the network: a certificate that fails verification
  /// (unknown CA, wrong host name, expired), no common protocol version, or one side speaking
  /// TLS to a plaintext peer. Permanent: retrying cannot help until the configuration or the
  /// certificate is fixed (F61, F63); never counted by a circuit breaker.
  tls_failed,
};

/// The category of `errc` codes.
const std::error_category& client_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), client_category()};
}

/// What kind of failure an error is; decides retries and circuit-breaker accounting.
enum class ErrorKind : std::uint8_t {
  transient_not_sent,     ///< failed before the request left us: retry is always safe.
  transient_conflict,     ///< the server rolled the work back: retry the whole transaction.
  transient_unavailable,  ///< the server cannot serve now and did nothing: retry after backoff.
  outcome_unknown,  ///< sent, then the connection died or timed out: retry only if idempotent.
  permanent,        ///< retrying cannot help (caller's bug, bad credentials, constraint).
  cancelled,        ///< the caller cancelled or the client shut down: never retried or counted.
};

std::string_view to_string(ErrorKind kind) noexcept;

/// Whether the request had left this process when it failed. The same connection failure
/// is `transient_not_sent` before sending and `outcome_unknown` after.
enum class RequestState : std::uint8_t {
  not_sent,  ///< nothing of the request was written.
  sent,      ///< some or all of it was written; the server may have acted on it.
};

/// Which server produced a server error.
/// `http`: an HTTP answer with a status that is not 2xx (ts_http); `code` is the status as
/// decimal text ("429"), `message` the start of the body.
enum class ServerKind : std::uint8_t { postgres, redis, http };

/// A server's error reply, kept as data.
struct ServerError {
  ServerKind server = ServerKind::postgres;
  /// PostgreSQL: the 5-character SQLSTATE. Redis: the error prefix (first word, e.g. "WRONGTYPE").
  std::string code;
  std::string message;  ///< primary message (Redis: the whole error line).
  std::string detail;   ///< PostgreSQL DETAIL, empty otherwise.
  std::string hint;     ///< PostgreSQL HINT, empty otherwise.
};

/// The exception every trading_shared awaitable throws.
class Error : public std::system_error {
 public:
  /// A client-side failure. `context` says what was being done (no secrets).
  Error(std::error_code ec, const std::string& context,
        RequestState state = RequestState::not_sent);
  /// A server's error reply, of the kind its layer classified it as (`pg::make_server_error`,
  /// `redis::make_server_error` and `http::throw_for_status` build these).
  Error(ServerError server, ErrorKind kind, const std::string& context,
        RequestState state = RequestState::sent);

  const std::optional<ServerError>& server() const noexcept { return server_; }
  RequestState request_state() const noexcept { return state_; }
  /// The classification of this error (see `classify`).
  ErrorKind kind() const noexcept { return kind_; }
  /// For `circuit_open`: how long until the breaker admits a probe. For an HTTP 429/418
  /// answer: its Retry-After.
  std::optional<std::chrono::milliseconds> retry_after() const noexcept { return retry_after_; }
  Error& with_retry_after(std::chrono::milliseconds d) {
    retry_after_ = d;
    return *this;
  }

 private:
  std::optional<ServerError> server_;
  RequestState state_;
  ErrorKind kind_;
  std::optional<std::chrono::milliseconds> retry_after_;
};

// ---- classification ------------------------------------------------------------------------

/// Classifies an error code (ours, Asio/system, or generic) given whether the request was sent.
ErrorKind classify(std::error_code ec, RequestState state) noexcept;

/// Classifies any exception: `Error` by its kind, Asio/system errors by their code
/// (operation_aborted = cancelled), anything else as `permanent` (never retried blindly).
ErrorKind classify(const std::exception_ptr& error) noexcept;

/// True for the kinds the circuit breaker counts as failures of the endpoint:
/// `transient_not_sent`, `transient_unavailable` and `outcome_unknown`. Not
/// `transient_conflict`: a serialization failure, a deadlock, a lock that is not available
/// (40001, 40P01, 55P03) or Redis TRYAGAIN are the workload's contention, answered by a
/// healthy server; counting them would open the breaker against it (F49). Nor `permanent` or
/// `cancelled` (F31, F33).
constexpr bool counts_as_endpoint_failure(ErrorKind kind) noexcept {
  return kind == ErrorKind::transient_not_sent || kind == ErrorKind::transient_unavailable ||
         kind == ErrorKind::outcome_unknown;
}

}  // namespace trading_shared

namespace std {
template <>
struct is_error_code_enum<trading_shared::errc> : true_type {};
}  // namespace std

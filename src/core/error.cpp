#include <trading_shared/core/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

namespace trading_shared {
namespace {

class ClientCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "trading_shared"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::connect_failed:
        return "connect failed";
      case errc::connect_timeout:
        return "connect timed out";
      case errc::startup_timeout:
        return "client start-up timed out";
      case errc::acquire_timeout:
        return "timed out waiting for a pooled connection";
      case errc::circuit_open:
        return "circuit breaker open";
      case errc::queue_full:
        return "request queue full";
      case errc::write_timeout:
        return "write timed out";
      case errc::request_timeout:
        return "request timed out";
      case errc::connection_lost:
        return "connection lost";
      case errc::commit_outcome_unknown:
        return "connection lost during COMMIT: outcome unknown";
      case errc::server_error:
        return "server error";
      case errc::protocol_error:
        return "protocol error";
      case errc::client_closed:
        return "client closed";
      case errc::not_started:
        return "client not started";
      case errc::cancelled:
        return "operation cancelled";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::timeout:
        return "timed out";
      case errc::type_mismatch:
        return "type mismatch";
      case errc::response_too_large:
        return "response too large";
    }
    return "unknown trading_shared error";
  }
};

std::string what_of(std::string_view context, const ServerError& server) {
  std::string text(context);
  if (!text.empty()) text += ": ";
  if (server.server == ServerKind::http) {
    text += "HTTP ";
    text += server.code;
    if (!server.message.empty()) {
      text += ": ";
      text += server.message;
    }
    return text;
  }
  text += server.server == ServerKind::postgres ? "PostgreSQL error " : "Redis error ";
  if (server.server == ServerKind::postgres) {
    text += server.code;
    text += ' ';
  }
  text += server.message;
  if (!server.detail.empty()) {
    text += " (detail: ";
    text += server.detail;
    text += ')';
  }
  if (!server.hint.empty()) {
    text += " (hint: ";
    text += server.hint;
    text += ')';
  }
  return text;
}

constexpr ErrorKind by_state(RequestState state) noexcept {
  return state == RequestState::not_sent ? ErrorKind::transient_not_sent
                                         : ErrorKind::outcome_unknown;
}

// Asio's own codes (eof, host_not_found, ...) as std::error_code, for comparisons.
template <class E>
std::error_code asio_code(E value) {
  return std::error_code(boost::system::error_code(value));
}

bool contains(std::string_view haystack, std::string_view needle) noexcept {
  return haystack.find(needle) != std::string_view::npos;
}

// PgBouncer reports its own conditions with SQLSTATE 08P01 and a distinctive message.
struct PgBouncerMessage {
  std::string_view text;
  ErrorKind kind;
  bool by_state;  // the kind depends on whether our request had been sent
};
constexpr std::array kPgBouncerMessages = {
    // The query waited in PgBouncer's queue and was never sent to a server (F13).
    PgBouncerMessage{"query_wait_timeout", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"no more connections allowed", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"pgbouncer cannot connect to server", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"server login has been failing", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"pgbouncer is shutting down", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"database shutting down", ErrorKind::transient_unavailable, false},
    PgBouncerMessage{"client_idle_timeout", ErrorKind::transient_not_sent, true},
    PgBouncerMessage{"client_login_timeout", ErrorKind::transient_not_sent, false},
    // The query reached a server and then PgBouncer gave up on it.
    PgBouncerMessage{"query_timeout", ErrorKind::outcome_unknown, false},
    PgBouncerMessage{"server conn crashed", ErrorKind::outcome_unknown, true},
};

}  // namespace

const std::error_category& client_category() noexcept {
  static const ClientCategory category;
  return category;
}

std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::transient_not_sent:
      return "transient_not_sent";
    case ErrorKind::transient_conflict:
      return "transient_conflict";
    case ErrorKind::transient_unavailable:
      return "transient_unavailable";
    case ErrorKind::outcome_unknown:
      return "outcome_unknown";
    case ErrorKind::permanent:
      return "permanent";
    case ErrorKind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

Error::Error(std::error_code ec, const std::string& context, RequestState state)
    : std::system_error(ec, context), state_(state), kind_(classify(ec, state)) {}

Error::Error(ServerError server, const std::string& context, RequestState state)
    : std::system_error(make_error_code(errc::server_error), what_of(context, server)),
      server_(std::move(server)),
      state_(state),
      kind_(classify(*server_, state)) {}

// ---- classification tables -------------------------------------------------------------

ErrorKind classify(std::error_code ec, RequestState state) noexcept {
  if (!ec) return ErrorKind::permanent;  // "no error" thrown is a bug, never retried.
  if (ec.category() == client_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::connect_failed:
      case errc::connect_timeout:
      case errc::startup_timeout:
      case errc::acquire_timeout:
      case errc::circuit_open:
      case errc::queue_full:
        return ErrorKind::transient_not_sent;
      case errc::write_timeout:
      case errc::request_timeout:
      case errc::connection_lost:
      case errc::protocol_error:
      case errc::timeout:
        return by_state(state);
      case errc::commit_outcome_unknown:
        return ErrorKind::outcome_unknown;
      case errc::server_error:
        return ErrorKind::permanent;  // without data: cannot judge
      case errc::client_closed:
      case errc::cancelled:
        return ErrorKind::cancelled;
      case errc::not_started:
      case errc::invalid_argument:
      case errc::type_mismatch:
      case errc::response_too_large:  // the same request gets the same answer
        return ErrorKind::permanent;
    }
    return ErrorKind::permanent;
  }
  // Asio's and the OS's codes (boost::system codes convert to std::error_code).
  if (ec == std::errc::operation_canceled ||
      ec == asio_code(boost::asio::error::operation_aborted)) {
    return ErrorKind::cancelled;
  }
  if (ec == std::errc::connection_refused || ec == std::errc::host_unreachable ||
      ec == std::errc::network_unreachable || ec == std::errc::address_not_available ||
      ec == asio_code(boost::asio::error::host_not_found) ||
      ec == asio_code(boost::asio::error::host_not_found_try_again)) {
    return ErrorKind::transient_not_sent;
  }
  if (ec == std::errc::connection_reset || ec == std::errc::connection_aborted ||
      ec == std::errc::broken_pipe || ec == std::errc::timed_out ||
      ec == std::errc::not_connected || ec == asio_code(boost::asio::error::eof) ||
      ec == std::errc::network_down || ec == std::errc::network_reset) {
    return by_state(state);
  }
  return ErrorKind::permanent;
}

ErrorKind classify_sqlstate(std::string_view sqlstate, std::string_view message,
                            RequestState state) noexcept {
  if (sqlstate.size() != 5) return by_state(state);  // no SQLSTATE: a connection-level failure
  const std::string_view cls = sqlstate.substr(0, 2);

  if (cls == "08") {  // connection exception
    if (sqlstate == "08001" || sqlstate == "08004") return ErrorKind::transient_not_sent;
    if (sqlstate == "08007") return ErrorKind::outcome_unknown;  // transaction resolution unknown
    if (sqlstate == "08P01") {  // protocol violation, also PgBouncer's own errors
      for (const auto& entry : kPgBouncerMessages) {
        if (contains(message, entry.text)) return entry.by_state ? by_state(state) : entry.kind;
      }
      return ErrorKind::permanent;
    }
    return by_state(state);  // 08000, 08003, 08006 and others
  }
  if (cls == "23") return ErrorKind::permanent;  // integrity constraint violation
  if (cls == "25") {                             // invalid transaction state
    // The server timed out the idle transaction and rolled it back: nothing was kept.
    if (sqlstate == "25P03") return ErrorKind::transient_conflict;
    return ErrorKind::permanent;
  }
  if (cls == "28") return ErrorKind::permanent;                  // invalid authorization
  if (cls == "40") {                                             // transaction rollback
    if (sqlstate == "40003") return ErrorKind::outcome_unknown;  // statement completion unknown
    if (sqlstate == "40002") return ErrorKind::permanent;        // integrity violation at commit
    return ErrorKind::transient_conflict;                        // 40000, 40001, 40P01
  }
  if (cls == "42") return ErrorKind::permanent;            // syntax error or access rule violation
  if (cls == "53") {                                       // insufficient resources
    if (sqlstate == "53400") return ErrorKind::permanent;  // configuration limit exceeded
    return ErrorKind::transient_unavailable;  // 53000, 53100 disk full, 53200 OOM, 53300
  }
  if (cls == "55") {  // object not in prerequisite state
    if (sqlstate == "55P03") return ErrorKind::transient_conflict;     // lock not available
    if (sqlstate == "55006") return ErrorKind::transient_unavailable;  // object in use
    return ErrorKind::permanent;                                       // 55000, 55P02, 55P04
  }
  if (cls == "57") {  // operator intervention
    // statement_timeout or cancel request: the statement was rolled back, nothing kept.
    if (sqlstate == "57014") return ErrorKind::transient_unavailable;
    if (sqlstate == "57P03") return ErrorKind::transient_unavailable;  // cannot connect now
    if (sqlstate == "57P04") return ErrorKind::permanent;              // database dropped
    // The server ended a session that was idle: nothing of ours was running on it.
    if (sqlstate == "57P05") return ErrorKind::transient_not_sent;
    // 57P01 admin shutdown, 57P02 crash shutdown, 57000: the connection is gone; whether
    // our request ran depends on when it was sent.
    return by_state(state);
  }
  if (cls == "58") {  // system error (external to PostgreSQL)
    if (sqlstate == "58000" || sqlstate == "58030") return ErrorKind::transient_unavailable;
    return ErrorKind::permanent;  // 58P01 undefined file, 58P02 duplicate file
  }
  // Every other class (0A feature not supported, 22 data exception, 3D, 3F, 44, P0, XX, ...):
  // retrying the same request cannot help.
  return ErrorKind::permanent;
}

RedisErrorClass redis_error_class(std::string_view prefix) noexcept {
  if (prefix == "WRONGTYPE") return RedisErrorClass::wrong_type;
  if (prefix == "NOAUTH" || prefix == "WRONGPASS" || prefix == "NOPERM") {
    return RedisErrorClass::auth;
  }
  if (prefix == "OOM") return RedisErrorClass::out_of_memory;
  if (prefix == "READONLY") return RedisErrorClass::read_only;
  if (prefix == "LOADING") return RedisErrorClass::loading;
  if (prefix == "BUSY") return RedisErrorClass::busy;
  if (prefix == "MOVED" || prefix == "ASK") return RedisErrorClass::redirect;
  if (prefix == "TRYAGAIN") return RedisErrorClass::try_again;
  if (prefix == "MASTERDOWN" || prefix == "CLUSTERDOWN" || prefix == "NOREPLICAS") {
    return RedisErrorClass::unavailable;
  }
  return RedisErrorClass::generic;
}

ErrorKind classify_redis_error(std::string_view prefix) noexcept {
  switch (redis_error_class(prefix)) {
    case RedisErrorClass::loading:
    case RedisErrorClass::busy:
    case RedisErrorClass::unavailable:
      return ErrorKind::transient_unavailable;
    case RedisErrorClass::try_again:
      return ErrorKind::transient_conflict;
    // Redirects need cluster routing (a later issue); until then a redirect cannot succeed.
    case RedisErrorClass::redirect:
    case RedisErrorClass::generic:
    case RedisErrorClass::wrong_type:
    case RedisErrorClass::auth:
    case RedisErrorClass::out_of_memory:
    case RedisErrorClass::read_only:
      return ErrorKind::permanent;
  }
  return ErrorKind::permanent;
}

ErrorKind classify_http_status(unsigned status) noexcept {
  if (status == 408 || is_throttle_status(status)) return ErrorKind::transient_unavailable;
  if (status >= 500 && status <= 599) return ErrorKind::transient_unavailable;
  return ErrorKind::permanent;
}

unsigned http_status(const Error& error) noexcept {
  const auto& server = error.server();
  if (!server || server->server != ServerKind::http) return 0;
  unsigned status = 0;
  const auto r =
      std::from_chars(server->code.data(), server->code.data() + server->code.size(), status);
  return r.ec == std::errc() ? status : 0;
}

ErrorKind classify(const ServerError& error, RequestState state) noexcept {
  switch (error.server) {
    case ServerKind::postgres:
      return classify_sqlstate(error.code, error.message, state);
    case ServerKind::redis:
      return classify_redis_error(error.code);
    case ServerKind::http: {
      unsigned status = 0;
      const auto r =
          std::from_chars(error.code.data(), error.code.data() + error.code.size(), status);
      return r.ec == std::errc() ? classify_http_status(status) : ErrorKind::permanent;
    }
  }
  return ErrorKind::permanent;
}

ErrorKind classify(const std::exception_ptr& error) noexcept {
  if (!error) return ErrorKind::permanent;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.kind();
  } catch (const boost::system::system_error& e) {
    return classify(std::error_code(e.code()), RequestState::sent);
  } catch (const std::system_error& e) {
    return classify(e.code(), RequestState::sent);
  } catch (...) {
    // Unknown failures are never retried blindly; the retry helper logs them with context.
    return ErrorKind::permanent;
  }
}

}  // namespace trading_shared

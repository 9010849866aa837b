#include <trading_shared/core/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

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
      case errc::tls_failed:
        return "TLS failed";
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

Error::Error(ServerError server, ErrorKind kind, const std::string& context, RequestState state)
    : std::system_error(make_error_code(errc::server_error), what_of(context, server)),
      server_(std::move(server)),
      state_(state),
      kind_(kind) {}

// ---- classification of error codes and exceptions
// -------------------------------------------------------------

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
      case errc::tls_failed:          // a certificate or TLS setting to fix, not a network blip
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

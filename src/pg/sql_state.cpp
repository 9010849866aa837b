#include <trading_shared/pg/sql_state.hpp>

#include <array>
#include <utility>

namespace trading_shared::pg {
namespace {

constexpr ErrorKind by_state(RequestState state) noexcept {
  return state == RequestState::not_sent ? ErrorKind::transient_not_sent
                                         : ErrorKind::outcome_unknown;
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

// libpq reports connection-time server errors only as text; map the ones whose kind matters
// (authentication must be permanent, "starting up" transient) to their SQLSTATE.
struct ConnectMessage {
  std::string_view text;
  std::string_view sqlstate;
};
constexpr std::array kConnectMessages = {
    ConnectMessage{"password authentication failed", sqlstate::invalid_password},
    ConnectMessage{"no pg_hba.conf entry", sqlstate::invalid_authorization_specification},
    // a `reject` line of pg_hba.conf (e.g. `hostnossl ... reject`: plaintext refused)
    ConnectMessage{"pg_hba.conf rejects connection", sqlstate::invalid_authorization_specification},
    // PgBouncer with client_tls_sslmode = require (or verify-*), a plaintext client
    ConnectMessage{"FATAL:  SSL required", sqlstate::invalid_authorization_specification},
    // clientcert=verify-ca/verify-full without a client certificate
    ConnectMessage{"requires a valid client certificate",
                   sqlstate::invalid_authorization_specification},
    // role "x" does not exist
    ConnectMessage{"role \"", sqlstate::invalid_authorization_specification},
    ConnectMessage{"SCRAM authentication", sqlstate::invalid_password},
    // PgBouncer authenticating the client itself (auth_type scram-sha-256 / md5 / hba) sends
    // its own FATAL (SQLSTATE 08P01 on the wire, only the text reaches us): a wrong password
    // is as permanent as PostgreSQL's 28P01.
    ConnectMessage{"SASL authentication failed", sqlstate::invalid_password},
    // "trust" / "cert" authentication failed for user "x" (a client certificate whose CN is
    // not the user); after the password entries above, which are 28P01.
    ConnectMessage{"authentication failed for user", sqlstate::invalid_authorization_specification},
    // PgBouncer: hba `reject`
    ConnectMessage{"login rejected", sqlstate::invalid_authorization_specification},
    // database "x" does not exist
    ConnectMessage{"database \"", sqlstate::invalid_catalog_name},
    // PgBouncer
    ConnectMessage{"no such database", sqlstate::invalid_catalog_name},
    ConnectMessage{"the database system is starting up", sqlstate::cannot_connect_now},
    ConnectMessage{"the database system is shutting down", sqlstate::cannot_connect_now},
    ConnectMessage{"the database system is in recovery mode", sqlstate::cannot_connect_now},
    ConnectMessage{"the database system is not yet accepting connections",
                   sqlstate::cannot_connect_now},
    ConnectMessage{"too many clients already", sqlstate::too_many_connections},
    ConnectMessage{"remaining connection slots are reserved", sqlstate::too_many_connections},
    ConnectMessage{"pgbouncer cannot connect to server", sqlstate::protocol_violation},
    ConnectMessage{"server login has been failing", sqlstate::protocol_violation},
    ConnectMessage{"no more connections allowed", sqlstate::protocol_violation},
};

}  // namespace

ErrorKind classify_sqlstate(std::string_view code, std::string_view message,
                            RequestState state) noexcept {
  if (code.size() != 5) return by_state(state);  // no SQLSTATE: a connection-level failure
  const std::string_view cls = code.substr(0, 2);

  if (cls == "08") {  // connection exception
    if (code == sqlstate::sqlclient_unable_to_establish_sqlconnection ||
        code == sqlstate::sqlserver_rejected_establishment_of_sqlconnection) {
      return ErrorKind::transient_not_sent;
    }
    if (code == sqlstate::transaction_resolution_unknown) return ErrorKind::outcome_unknown;
    if (code == sqlstate::protocol_violation) {  // also PgBouncer's own errors
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
    if (code == sqlstate::idle_in_transaction_session_timeout) {
      return ErrorKind::transient_conflict;
    }
    return ErrorKind::permanent;
  }
  if (cls == "28") return ErrorKind::permanent;  // invalid authorization
  if (cls == "40") {                             // transaction rollback
    if (code == sqlstate::statement_completion_unknown) return ErrorKind::outcome_unknown;
    // integrity violation at commit
    if (code == sqlstate::transaction_integrity_constraint_violation) return ErrorKind::permanent;
    return ErrorKind::transient_conflict;  // 40000, 40001, 40P01
  }
  if (cls == "42") return ErrorKind::permanent;  // syntax error or access rule violation
  if (cls == "53") {                             // insufficient resources
    if (code == sqlstate::configuration_limit_exceeded) return ErrorKind::permanent;
    return ErrorKind::transient_unavailable;  // 53000, 53100 disk full, 53200 OOM, 53300
  }
  if (cls == "55") {  // object not in prerequisite state
    if (code == sqlstate::lock_not_available) return ErrorKind::transient_conflict;
    if (code == sqlstate::object_in_use) return ErrorKind::transient_unavailable;
    return ErrorKind::permanent;  // 55000, 55P02, 55P04
  }
  if (cls == "57") {  // operator intervention
    // statement_timeout or cancel request: the statement was rolled back, nothing kept.
    if (code == sqlstate::query_canceled) return ErrorKind::transient_unavailable;
    if (code == sqlstate::cannot_connect_now) return ErrorKind::transient_unavailable;
    if (code == sqlstate::database_dropped) return ErrorKind::permanent;
    // The server ended a session that was idle: nothing of ours was running on it.
    if (code == sqlstate::idle_session_timeout) return ErrorKind::transient_not_sent;
    // 57P01 admin shutdown, 57P02 crash shutdown, 57000: the connection is gone; whether
    // our request ran depends on when it was sent.
    return by_state(state);
  }
  if (cls == "58") {  // system error (external to PostgreSQL)
    if (code == sqlstate::system_error || code == sqlstate::io_error) {
      return ErrorKind::transient_unavailable;
    }
    return ErrorKind::permanent;  // 58P01 undefined file, 58P02 duplicate file
  }
  // Every other class (0A feature not supported, 22 data exception, 3D, 3F, 44, P0, XX, ...):
  // retrying the same request cannot help.
  return ErrorKind::permanent;
}

std::string_view sqlstate_of_connect_message(std::string_view message) noexcept {
  for (const auto& entry : kConnectMessages) {
    // An entry ending in a quote ("role \"", "database \"") names an object: it matches only
    // when the message says that object does not exist.
    if (contains(message, entry.text) &&
        (entry.text.back() != '"' || contains(message, "does not exist"))) {
      return entry.sqlstate;
    }
  }
  return {};
}

Error make_server_error(ServerError server, const std::string& context, RequestState state) {
  const ErrorKind kind = classify_sqlstate(server.code, server.message, state);
  return Error(std::move(server), kind, context, state);
}

}  // namespace trading_shared::pg

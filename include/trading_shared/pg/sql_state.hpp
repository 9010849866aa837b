#pragma once
/// @file
/// What the client knows of PostgreSQL's (and PgBouncer's) errors (docs/postgres.md):
///
/// - `pg::sqlstate::*`: named SQLSTATEs, to compare `Error::server()->code` with
///   (`e.server()->code == pg::sqlstate::unique_violation`) instead of raw strings.
/// - `pg::classify_sqlstate()`: the SQLSTATE (and PgBouncer message) -> `ErrorKind` table, the
///   one place that decides how a PostgreSQL error is retried and counted by the breaker.
/// - `pg::sqlstate_of_connect_message()`: libpq reports connect-time errors only as text; the
///   messages whose kind matters are mapped to their SQLSTATE.
/// - `pg::make_server_error()`: the `Error` of a server error, with the kind classified here.

#include <trading_shared/core/error.hpp>

#include <string>
#include <string_view>

namespace trading_shared::pg {

/// SQLSTATEs the client and the services use, named as in PostgreSQL's errcodes.txt.
namespace sqlstate {
// Class 08: connection exception.
inline constexpr std::string_view connection_exception = "08000";
inline constexpr std::string_view sqlclient_unable_to_establish_sqlconnection = "08001";
inline constexpr std::string_view connection_does_not_exist = "08003";
inline constexpr std::string_view sqlserver_rejected_establishment_of_sqlconnection = "08004";
inline constexpr std::string_view connection_failure = "08006";
inline constexpr std::string_view transaction_resolution_unknown = "08007";
/// Also every error of PgBouncer's own (told apart by their message).
inline constexpr std::string_view protocol_violation = "08P01";
// Class 0A: feature not supported (also "cached plan must not change result type").
inline constexpr std::string_view feature_not_supported = "0A000";
// Class 23: integrity constraint violation.
inline constexpr std::string_view integrity_constraint_violation = "23000";
inline constexpr std::string_view not_null_violation = "23502";
inline constexpr std::string_view foreign_key_violation = "23503";
inline constexpr std::string_view unique_violation = "23505";
/// Also "no partition of relation found for row" on a partitioned table.
inline constexpr std::string_view check_violation = "23514";
inline constexpr std::string_view exclusion_violation = "23P01";
// Class 25: invalid transaction state.
inline constexpr std::string_view invalid_transaction_state = "25000";
inline constexpr std::string_view read_only_sql_transaction = "25006";
inline constexpr std::string_view in_failed_sql_transaction = "25P02";
inline constexpr std::string_view idle_in_transaction_session_timeout = "25P03";
// Class 26: invalid SQL statement name (a prepared statement that is gone).
inline constexpr std::string_view invalid_sql_statement_name = "26000";
// Class 28: invalid authorization specification.
inline constexpr std::string_view invalid_authorization_specification = "28000";
inline constexpr std::string_view invalid_password = "28P01";
// Class 3D: invalid catalog name (no such database).
inline constexpr std::string_view invalid_catalog_name = "3D000";
// Class 40: transaction rollback.
inline constexpr std::string_view transaction_rollback = "40000";
inline constexpr std::string_view serialization_failure = "40001";
inline constexpr std::string_view transaction_integrity_constraint_violation = "40002";
inline constexpr std::string_view statement_completion_unknown = "40003";
inline constexpr std::string_view deadlock_detected = "40P01";
// Class 42: syntax error or access rule violation.
inline constexpr std::string_view syntax_error = "42601";
inline constexpr std::string_view undefined_table = "42P01";
inline constexpr std::string_view duplicate_database = "42P04";
// Class 53: insufficient resources.
inline constexpr std::string_view insufficient_resources = "53000";
inline constexpr std::string_view disk_full = "53100";
inline constexpr std::string_view out_of_memory = "53200";
inline constexpr std::string_view too_many_connections = "53300";
inline constexpr std::string_view configuration_limit_exceeded = "53400";
// Class 55: object not in prerequisite state.
inline constexpr std::string_view object_not_in_prerequisite_state = "55000";
inline constexpr std::string_view object_in_use = "55006";
inline constexpr std::string_view lock_not_available = "55P03";
// Class 57: operator intervention.
inline constexpr std::string_view operator_intervention = "57000";
/// statement_timeout or a cancel request.
inline constexpr std::string_view query_canceled = "57014";
inline constexpr std::string_view admin_shutdown = "57P01";
inline constexpr std::string_view crash_shutdown = "57P02";
/// The server is starting up, shutting down or in recovery.
inline constexpr std::string_view cannot_connect_now = "57P03";
inline constexpr std::string_view database_dropped = "57P04";
inline constexpr std::string_view idle_session_timeout = "57P05";
// Class 58: system error (external to PostgreSQL).
inline constexpr std::string_view system_error = "58000";
inline constexpr std::string_view io_error = "58030";
}  // namespace sqlstate

/// Classifies a PostgreSQL SQLSTATE (5 characters; empty: no SQLSTATE, a connection-level
/// failure). PgBouncer's errors reuse 08P01 with distinctive messages, so the message is
/// consulted for those. `state`: whether our request had been sent when the error came.
ErrorKind classify_sqlstate(std::string_view code, std::string_view message,
                            RequestState state) noexcept;

/// The SQLSTATE of a connect-time error that libpq reports only as text (authentication
/// failed: permanent; the server is starting up: transient; PgBouncer cannot connect: ...);
/// empty if the message is none of those.
std::string_view sqlstate_of_connect_message(std::string_view message) noexcept;

/// The `Error` of a PostgreSQL server error (`server.server` is `ServerKind::postgres`), of
/// the kind `classify_sqlstate()` gives it.
Error make_server_error(ServerError server, const std::string& context,
                        RequestState state = RequestState::sent);

}  // namespace trading_shared::pg

#pragma once
/// @file
/// The session-state check of `pgbouncer_transaction_mode` (internal): a statement that would
/// leave state on a server connection PgBouncer then hands to other clients (F12) is refused.

namespace trading_shared::pg::detail {

/// Throws `Error(invalid_argument)` when `sql` is a session-level SET (SET LOCAL, SET
/// TRANSACTION and SET CONSTRAINTS are transaction-scoped and allowed), a LISTEN or a PREPARE.
/// Leading white space and comments are skipped; the common statement (SELECT, INSERT ...)
/// is recognised from its first characters, without a scan.
void check_no_session_state(const char* sql);

}  // namespace trading_shared::pg::detail

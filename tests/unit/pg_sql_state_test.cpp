#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <gtest/gtest.h>

#include <cctype>
#include <string>

// The SQLSTATE -> ErrorKind table of pg/sql_state.hpp (PgBouncer's messages included), the
// connect-time messages and the Error pg::make_server_error builds.

namespace ts = trading_shared;
namespace pg = trading_shared::pg;
using ts::ErrorKind;
using ts::RequestState;

namespace {

struct SqlStateRow {
  const char* sqlstate;
  const char* message;
  ErrorKind not_sent;  // kind when the request had not been sent
  ErrorKind sent;      // kind when it had
};

// Every SQLSTATE the tables name explicitly, one row each (classes 08, 23, 25, 28, 40, 42,
// 53, 55, 57, 58), plus representatives of the "everything else is permanent" rule.
const SqlStateRow kSqlStateRows[] = {
    // 08 connection exception
    {"08000", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"08003", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"08006", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"08001", "", ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {"08004", "", ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {"08007", "", ErrorKind::outcome_unknown, ErrorKind::outcome_unknown},
    {"08P01", "invalid message format", ErrorKind::permanent, ErrorKind::permanent},
    // PgBouncer's own errors, all SQLSTATE 08P01
    {"08P01", "query_wait_timeout", ErrorKind::transient_unavailable,
     ErrorKind::transient_unavailable},
    {"08P01", "no more connections allowed (max_client_conn)", ErrorKind::transient_unavailable,
     ErrorKind::transient_unavailable},
    {"08P01", "pgbouncer cannot connect to server", ErrorKind::transient_unavailable,
     ErrorKind::transient_unavailable},
    {"08P01", "server login has been failing, try again later (server_login_retry)",
     ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"08P01", "pgbouncer is shutting down", ErrorKind::transient_unavailable,
     ErrorKind::transient_unavailable},
    {"08P01", "database shutting down", ErrorKind::transient_unavailable,
     ErrorKind::transient_unavailable},
    {"08P01", "client_idle_timeout", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"08P01", "client_login_timeout", ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {"08P01", "query_timeout", ErrorKind::outcome_unknown, ErrorKind::outcome_unknown},
    {"08P01", "server conn crashed?", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    // 23 integrity constraint violation
    {"23000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"23502", "", ErrorKind::permanent, ErrorKind::permanent},
    {"23503", "", ErrorKind::permanent, ErrorKind::permanent},
    {"23505", "", ErrorKind::permanent, ErrorKind::permanent},
    {"23514", "", ErrorKind::permanent, ErrorKind::permanent},
    {"23P01", "", ErrorKind::permanent, ErrorKind::permanent},
    // 25 invalid transaction state
    {"25000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"25001", "", ErrorKind::permanent, ErrorKind::permanent},
    {"25006", "", ErrorKind::permanent, ErrorKind::permanent},
    {"25P02", "", ErrorKind::permanent, ErrorKind::permanent},
    {"25P03", "", ErrorKind::transient_conflict, ErrorKind::transient_conflict},
    // 28 invalid authorization specification
    {"28000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"28P01", "", ErrorKind::permanent, ErrorKind::permanent},
    // 40 transaction rollback
    {"40000", "", ErrorKind::transient_conflict, ErrorKind::transient_conflict},
    {"40001", "", ErrorKind::transient_conflict, ErrorKind::transient_conflict},
    {"40P01", "", ErrorKind::transient_conflict, ErrorKind::transient_conflict},
    {"40002", "", ErrorKind::permanent, ErrorKind::permanent},
    {"40003", "", ErrorKind::outcome_unknown, ErrorKind::outcome_unknown},
    // 42 syntax error or access rule violation
    {"42000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42601", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42501", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42P01", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42703", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42P05", "", ErrorKind::permanent, ErrorKind::permanent},
    {"42P07", "", ErrorKind::permanent, ErrorKind::permanent},
    // 53 insufficient resources
    {"53000", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"53100", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"53200", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"53300", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"53400", "", ErrorKind::permanent, ErrorKind::permanent},
    // 55 object not in prerequisite state
    {"55000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"55006", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"55P02", "", ErrorKind::permanent, ErrorKind::permanent},
    {"55P03", "", ErrorKind::transient_conflict, ErrorKind::transient_conflict},
    {"55P04", "", ErrorKind::permanent, ErrorKind::permanent},
    // 57 operator intervention
    {"57000", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"57014", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"57P01", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"57P02", "", ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {"57P03", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"57P04", "", ErrorKind::permanent, ErrorKind::permanent},
    {"57P05", "", ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    // 58 system error
    {"58000", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"58030", "", ErrorKind::transient_unavailable, ErrorKind::transient_unavailable},
    {"58P01", "", ErrorKind::permanent, ErrorKind::permanent},
    {"58P02", "", ErrorKind::permanent, ErrorKind::permanent},
    // every other class is permanent
    {"0A000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"22001", "", ErrorKind::permanent, ErrorKind::permanent},
    {"22P02", "", ErrorKind::permanent, ErrorKind::permanent},
    {"3D000", "", ErrorKind::permanent, ErrorKind::permanent},
    {"P0001", "", ErrorKind::permanent, ErrorKind::permanent},
    {"XX000", "", ErrorKind::permanent, ErrorKind::permanent},
    // no SQLSTATE at all: a connection-level failure
    {"", "server closed the connection unexpectedly", ErrorKind::transient_not_sent,
     ErrorKind::outcome_unknown},
};

class SqlStateTable : public ::testing::TestWithParam<SqlStateRow> {};

TEST_P(SqlStateTable, ClassifiesBeforeAndAfterSending) {
  const auto& row = GetParam();
  EXPECT_EQ(pg::classify_sqlstate(row.sqlstate, row.message, RequestState::not_sent), row.not_sent)
      << row.sqlstate << " " << row.message;
  EXPECT_EQ(pg::classify_sqlstate(row.sqlstate, row.message, RequestState::sent), row.sent)
      << row.sqlstate << " " << row.message;
  // The same through a server error and through Error::kind().
  ts::ServerError server{ts::ServerKind::postgres, row.sqlstate, row.message, "", ""};
  EXPECT_EQ(pg::make_server_error(server, "query", RequestState::sent).kind(), row.sent);
}

std::string sanitize_name(std::string text) {
  for (auto& c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return text;
}

INSTANTIATE_TEST_SUITE_P(AllRows, SqlStateTable, ::testing::ValuesIn(kSqlStateRows),
                         [](const auto& p) {
                           return sanitize_name(
                               std::to_string(p.index) + "_" +
                               (p.param.sqlstate[0] != '\0' ? p.param.sqlstate : "none") + "_" +
                               std::string(p.param.message).substr(0, 20));
                         });

TEST(PgServerError, CarriesServerDataAndContext) {
  ts::ServerError server{ts::ServerKind::postgres, "23505", "duplicate key value",
                         "Key (id)=(1) already exists.", "use ON CONFLICT"};
  const ts::Error error = pg::make_server_error(server, "insert into orders");
  EXPECT_EQ(error.code(), ts::errc::server_error);
  ASSERT_TRUE(error.server().has_value());
  EXPECT_EQ(error.server()->code, "23505");
  EXPECT_EQ(error.kind(), ErrorKind::permanent);
  EXPECT_EQ(error.request_state(), RequestState::sent);
  const std::string what = error.what();
  EXPECT_NE(what.find("insert into orders"), std::string::npos) << what;
  EXPECT_NE(what.find("23505"), std::string::npos) << what;
  EXPECT_NE(what.find("already exists"), std::string::npos) << what;
  EXPECT_NE(what.find("ON CONFLICT"), std::string::npos) << what;
}

TEST(PgSqlState, NamedConstantsAreTheCodes) {
  EXPECT_EQ(pg::sqlstate::unique_violation, "23505");
  EXPECT_EQ(pg::sqlstate::check_violation, "23514");
  EXPECT_EQ(pg::sqlstate::serialization_failure, "40001");
  EXPECT_EQ(pg::sqlstate::deadlock_detected, "40P01");
  EXPECT_EQ(pg::sqlstate::lock_not_available, "55P03");
  EXPECT_EQ(pg::sqlstate::admin_shutdown, "57P01");
  EXPECT_EQ(pg::sqlstate::cannot_connect_now, "57P03");
  EXPECT_EQ(pg::sqlstate::idle_session_timeout, "57P05");
  EXPECT_EQ(pg::sqlstate::protocol_violation, "08P01");
  EXPECT_EQ(pg::sqlstate::invalid_password, "28P01");
}

struct ConnectRow {
  const char* message;
  const char* sqlstate;  // "" = not a known connect message
};

const ConnectRow kConnectRows[] = {
    {"FATAL:  password authentication failed for user \"x\"", "28P01"},
    {"FATAL:  no pg_hba.conf entry for host \"1.2.3.4\"", "28000"},
    {"FATAL:  role \"nobody\" does not exist", "28000"},
    {"FATAL:  SASL authentication failed", "28P01"},
    {"FATAL:  database \"nodb\" does not exist", "3D000"},
    {"ERROR:  no such database: nodb", "3D000"},
    {"FATAL:  the database system is starting up", "57P03"},
    {"FATAL:  sorry, too many clients already", "53300"},
    {"ERROR:  pgbouncer cannot connect to server", "08P01"},
    // TLS-only servers (F63): a `hostnossl ... reject` line, or no hostnossl line at all.
    {"FATAL:  pg_hba.conf rejects connection for host \"127.0.0.1\", user \"u\", database "
     "\"d\", no encryption",
     "28000"},
    {"FATAL:  no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no "
     "encryption",
     "28000"},
    // PgBouncer with client_tls_sslmode = require.
    {"FATAL:  SSL required", "28000"},
    // clientcert=verify-full: no client certificate, or one for another user.
    {"FATAL:  connection requires a valid client certificate", "28000"},
    {"FATAL:  \"trust\" authentication failed for user \"u\"", "28000"},
    {"FATAL:  certificate authentication failed for user \"u\"", "28000"},
    {"connection to server at \"127.0.0.1\", port 1 failed: Connection refused", ""},
    // A quoted name alone is not enough: only "... does not exist" says it is missing.
    {"FATAL:  database \"x\" is being accessed by other users", ""},
};

class PgConnectMessages : public ::testing::TestWithParam<ConnectRow> {};

TEST_P(PgConnectMessages, MapsToItsSqlState) {
  EXPECT_EQ(pg::sqlstate_of_connect_message(GetParam().message), GetParam().sqlstate)
      << GetParam().message;
}

INSTANTIATE_TEST_SUITE_P(AllRows, PgConnectMessages, ::testing::ValuesIn(kConnectRows));

}  // namespace

#include <trading_shared/core/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <gtest/gtest.h>

#include <cctype>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>

namespace ts = trading_shared;
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
  EXPECT_EQ(ts::classify_sqlstate(row.sqlstate, row.message, RequestState::not_sent), row.not_sent)
      << row.sqlstate << " " << row.message;
  EXPECT_EQ(ts::classify_sqlstate(row.sqlstate, row.message, RequestState::sent), row.sent)
      << row.sqlstate << " " << row.message;
  // The same through a server error and through Error::kind().
  ts::ServerError server{ts::ServerKind::postgres, row.sqlstate, row.message, "", ""};
  EXPECT_EQ(ts::Error(server, "query", RequestState::sent).kind(), row.sent);
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

struct RedisRow {
  const char* prefix;
  ErrorKind kind;
  ts::RedisErrorClass error_class;
};

const RedisRow kRedisRows[] = {
    {"ERR", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"WRONGTYPE", ErrorKind::permanent, ts::RedisErrorClass::wrong_type},
    {"NOAUTH", ErrorKind::permanent, ts::RedisErrorClass::auth},
    {"WRONGPASS", ErrorKind::permanent, ts::RedisErrorClass::auth},
    {"NOPERM", ErrorKind::permanent, ts::RedisErrorClass::auth},
    {"OOM", ErrorKind::permanent, ts::RedisErrorClass::out_of_memory},
    {"READONLY", ErrorKind::permanent, ts::RedisErrorClass::read_only},
    {"LOADING", ErrorKind::transient_unavailable, ts::RedisErrorClass::loading},
    {"BUSY", ErrorKind::transient_unavailable, ts::RedisErrorClass::busy},
    {"MASTERDOWN", ErrorKind::transient_unavailable, ts::RedisErrorClass::unavailable},
    {"CLUSTERDOWN", ErrorKind::transient_unavailable, ts::RedisErrorClass::unavailable},
    {"NOREPLICAS", ErrorKind::transient_unavailable, ts::RedisErrorClass::unavailable},
    {"TRYAGAIN", ErrorKind::transient_conflict, ts::RedisErrorClass::try_again},
    {"MOVED", ErrorKind::permanent, ts::RedisErrorClass::redirect},
    {"ASK", ErrorKind::permanent, ts::RedisErrorClass::redirect},
    {"NOSCRIPT", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"EXECABORT", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"NOGROUP", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"BUSYGROUP", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"BUSYKEY", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"CROSSSLOT", ErrorKind::permanent, ts::RedisErrorClass::generic},
    {"SOMETHINGNEW", ErrorKind::permanent, ts::RedisErrorClass::generic},
};

class RedisTable : public ::testing::TestWithParam<RedisRow> {};

TEST_P(RedisTable, ClassifiesPrefix) {
  const auto& row = GetParam();
  EXPECT_EQ(ts::classify_redis_error(row.prefix), row.kind) << row.prefix;
  EXPECT_EQ(ts::redis_error_class(row.prefix), row.error_class) << row.prefix;
  ts::ServerError server{ts::ServerKind::redis, row.prefix, std::string(row.prefix) + " x", "", ""};
  // A Redis error reply is the same kind whether or not "sent" (it is always a reply).
  EXPECT_EQ(ts::classify(server, RequestState::sent), row.kind);
  EXPECT_EQ(ts::classify(server, RequestState::not_sent), row.kind);
}

INSTANTIATE_TEST_SUITE_P(AllRows, RedisTable, ::testing::ValuesIn(kRedisRows),
                         [](const auto& p) { return std::string(p.param.prefix); });

struct ClientRow {
  ts::errc code;
  ErrorKind not_sent;
  ErrorKind sent;
};

const ClientRow kClientRows[] = {
    {ts::errc::connect_failed, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::connect_timeout, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::startup_timeout, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::acquire_timeout, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::circuit_open, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::queue_full, ErrorKind::transient_not_sent, ErrorKind::transient_not_sent},
    {ts::errc::write_timeout, ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {ts::errc::request_timeout, ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {ts::errc::connection_lost, ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {ts::errc::protocol_error, ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {ts::errc::timeout, ErrorKind::transient_not_sent, ErrorKind::outcome_unknown},
    {ts::errc::commit_outcome_unknown, ErrorKind::outcome_unknown, ErrorKind::outcome_unknown},
    {ts::errc::server_error, ErrorKind::permanent, ErrorKind::permanent},
    {ts::errc::client_closed, ErrorKind::cancelled, ErrorKind::cancelled},
    {ts::errc::cancelled, ErrorKind::cancelled, ErrorKind::cancelled},
    {ts::errc::not_started, ErrorKind::permanent, ErrorKind::permanent},
    {ts::errc::invalid_argument, ErrorKind::permanent, ErrorKind::permanent},
    {ts::errc::type_mismatch, ErrorKind::permanent, ErrorKind::permanent},
};

class ClientTable : public ::testing::TestWithParam<ClientRow> {};

TEST_P(ClientTable, ClassifiesOwnCodes) {
  const auto& row = GetParam();
  EXPECT_EQ(ts::classify(make_error_code(row.code), RequestState::not_sent), row.not_sent)
      << make_error_code(row.code).message();
  EXPECT_EQ(ts::classify(make_error_code(row.code), RequestState::sent), row.sent)
      << make_error_code(row.code).message();
  const ts::Error error(row.code, "ctx", RequestState::sent);
  EXPECT_EQ(error.kind(), row.sent);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(error)), row.sent);
}

INSTANTIATE_TEST_SUITE_P(AllRows, ClientTable, ::testing::ValuesIn(kClientRows), [](const auto& p) {
  return sanitize_name(make_error_code(p.param.code).message());
});

TEST(ErrorCategory, EveryCodeHasItsOwnMessage) {
  std::set<std::string> messages;
  for (const auto& row : kClientRows) {
    const auto message = make_error_code(row.code).message();
    EXPECT_NE(message, "unknown trading_shared error");
    EXPECT_TRUE(messages.insert(message).second) << "duplicate message: " << message;
  }
  EXPECT_STREQ(ts::client_category().name(), "trading_shared");
  EXPECT_EQ(std::error_code(ts::errc::circuit_open).category(), ts::client_category());
}

TEST(Classify, SystemAndAsioCodes) {
  using RS = RequestState;
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::connection_refused), RS::not_sent),
            ErrorKind::transient_not_sent);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::connection_refused), RS::sent),
            ErrorKind::transient_not_sent);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::connection_reset), RS::sent),
            ErrorKind::outcome_unknown);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::connection_reset), RS::not_sent),
            ErrorKind::transient_not_sent);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::broken_pipe), RS::sent),
            ErrorKind::outcome_unknown);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::timed_out), RS::sent),
            ErrorKind::outcome_unknown);
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::operation_canceled), RS::sent),
            ErrorKind::cancelled);
  const std::error_code eof = boost::system::error_code(boost::asio::error::eof);
  EXPECT_EQ(ts::classify(eof, RS::sent), ErrorKind::outcome_unknown);
  EXPECT_EQ(ts::classify(eof, RS::not_sent), ErrorKind::transient_not_sent);
  const std::error_code aborted = boost::system::error_code(boost::asio::error::operation_aborted);
  EXPECT_EQ(ts::classify(aborted, RS::sent), ErrorKind::cancelled);
  const std::error_code not_found = boost::system::error_code(boost::asio::error::host_not_found);
  EXPECT_EQ(ts::classify(not_found, RS::not_sent), ErrorKind::transient_not_sent);
  // Unknown codes are never retried blindly.
  EXPECT_EQ(ts::classify(std::make_error_code(std::errc::invalid_argument), RS::not_sent),
            ErrorKind::permanent);
  EXPECT_EQ(ts::classify(std::error_code(), RS::not_sent), ErrorKind::permanent);
}

TEST(Classify, Exceptions) {
  EXPECT_EQ(ts::classify(std::make_exception_ptr(std::runtime_error("boom"))),
            ErrorKind::permanent);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(42)), ErrorKind::permanent);
  EXPECT_EQ(ts::classify(std::exception_ptr()), ErrorKind::permanent);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(
                boost::system::system_error(boost::asio::error::operation_aborted))),
            ErrorKind::cancelled);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(
                std::system_error(std::make_error_code(std::errc::connection_reset)))),
            ErrorKind::outcome_unknown);
}

TEST(ErrorType, CarriesServerDataAndContext) {
  ts::ServerError server{ts::ServerKind::postgres, "23505", "duplicate key value",
                         "Key (id)=(1) already exists.", "use ON CONFLICT"};
  const ts::Error error(server, "insert into orders");
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

TEST(ErrorType, RetryAfter) {
  ts::Error error(ts::errc::circuit_open, "pg 127.0.0.1:5432");
  EXPECT_FALSE(error.retry_after().has_value());
  error.with_retry_after(std::chrono::milliseconds(1500));
  EXPECT_EQ(error.retry_after(), std::chrono::milliseconds(1500));
  EXPECT_EQ(error.kind(), ErrorKind::transient_not_sent);
}

TEST(ErrorKindNames, AllDistinct) {
  std::set<std::string_view> names;
  for (auto kind : {ErrorKind::transient_not_sent, ErrorKind::transient_conflict,
                    ErrorKind::transient_unavailable, ErrorKind::outcome_unknown,
                    ErrorKind::permanent, ErrorKind::cancelled}) {
    EXPECT_TRUE(names.insert(ts::to_string(kind)).second);
  }
  EXPECT_TRUE(ts::counts_as_endpoint_failure(ErrorKind::outcome_unknown));
  EXPECT_TRUE(ts::counts_as_endpoint_failure(ErrorKind::transient_unavailable));
  EXPECT_TRUE(ts::counts_as_endpoint_failure(ErrorKind::transient_not_sent));
  // F49: contention (40001, 40P01, 55P03, TRYAGAIN) is the workload's, not the server's.
  EXPECT_FALSE(ts::counts_as_endpoint_failure(ErrorKind::transient_conflict));
  EXPECT_FALSE(ts::counts_as_endpoint_failure(ErrorKind::permanent));
  EXPECT_FALSE(ts::counts_as_endpoint_failure(ErrorKind::cancelled));
}

}  // namespace

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

std::string sanitize_name(std::string text) {
  for (auto& c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return text;
}

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

TEST(ErrorType, ServerErrorCarriesItsDataAndTheKindItsLayerGave) {
  ts::ServerError server{ts::ServerKind::postgres, "23505", "duplicate key value",
                         "Key (id)=(1) already exists.", "use ON CONFLICT"};
  const ts::Error error(server, ErrorKind::transient_conflict, "insert into orders");
  EXPECT_EQ(error.code(), ts::errc::server_error);
  ASSERT_TRUE(error.server().has_value());
  EXPECT_EQ(error.server()->code, "23505");
  EXPECT_EQ(error.kind(), ErrorKind::transient_conflict);  // as given: core judges no server
  EXPECT_EQ(error.request_state(), RequestState::sent);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(error)), ErrorKind::transient_conflict);
  const std::string what = error.what();
  EXPECT_NE(what.find("insert into orders"), std::string::npos) << what;
  EXPECT_NE(what.find("PostgreSQL error 23505"), std::string::npos) << what;
  EXPECT_NE(what.find("already exists"), std::string::npos) << what;
  EXPECT_NE(what.find("ON CONFLICT"), std::string::npos) << what;
  const ts::Error not_sent(ts::ServerError{ts::ServerKind::redis, "ERR", "ERR x", "", ""},
                           ErrorKind::permanent, "cmd", RequestState::not_sent);
  EXPECT_EQ(not_sent.request_state(), RequestState::not_sent);
  EXPECT_NE(std::string(not_sent.what()).find("cmd: Redis error ERR x"), std::string::npos)
      << not_sent.what();
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

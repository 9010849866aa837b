#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/error_class.hpp>

#include <gtest/gtest.h>

#include <exception>
#include <string>

// The Redis error prefix -> ErrorClass -> ErrorKind table of redis/error_class.hpp and the
// Error redis::make_server_error builds.

namespace ts = trading_shared;
namespace redis = trading_shared::redis;
using ts::ErrorKind;
using ts::RequestState;

namespace {

struct RedisRow {
  const char* prefix;
  ErrorKind kind;
  redis::ErrorClass error_class;
};

const RedisRow kRedisRows[] = {
    {"ERR", ErrorKind::permanent, redis::ErrorClass::generic},
    {"WRONGTYPE", ErrorKind::permanent, redis::ErrorClass::wrong_type},
    {"NOAUTH", ErrorKind::permanent, redis::ErrorClass::auth},
    {"WRONGPASS", ErrorKind::permanent, redis::ErrorClass::auth},
    {"NOPERM", ErrorKind::permanent, redis::ErrorClass::auth},
    {"OOM", ErrorKind::permanent, redis::ErrorClass::out_of_memory},
    {"READONLY", ErrorKind::permanent, redis::ErrorClass::read_only},
    {"LOADING", ErrorKind::transient_unavailable, redis::ErrorClass::loading},
    {"BUSY", ErrorKind::transient_unavailable, redis::ErrorClass::busy},
    {"MASTERDOWN", ErrorKind::transient_unavailable, redis::ErrorClass::unavailable},
    {"CLUSTERDOWN", ErrorKind::transient_unavailable, redis::ErrorClass::unavailable},
    {"NOREPLICAS", ErrorKind::transient_unavailable, redis::ErrorClass::unavailable},
    {"TRYAGAIN", ErrorKind::transient_conflict, redis::ErrorClass::try_again},
    {"MOVED", ErrorKind::permanent, redis::ErrorClass::redirect},
    {"ASK", ErrorKind::permanent, redis::ErrorClass::redirect},
    {"NOSCRIPT", ErrorKind::permanent, redis::ErrorClass::generic},
    {"EXECABORT", ErrorKind::permanent, redis::ErrorClass::generic},
    {"NOGROUP", ErrorKind::permanent, redis::ErrorClass::generic},
    {"BUSYGROUP", ErrorKind::permanent, redis::ErrorClass::generic},
    {"BUSYKEY", ErrorKind::permanent, redis::ErrorClass::generic},
    {"CROSSSLOT", ErrorKind::permanent, redis::ErrorClass::generic},
    {"SOMETHINGNEW", ErrorKind::permanent, redis::ErrorClass::generic},
};

class RedisTable : public ::testing::TestWithParam<RedisRow> {};

TEST_P(RedisTable, ClassifiesPrefix) {
  const auto& row = GetParam();
  EXPECT_EQ(redis::classify_error_prefix(row.prefix), row.kind) << row.prefix;
  EXPECT_EQ(redis::error_class(row.prefix), row.error_class) << row.prefix;
  EXPECT_EQ(redis::error_kind(row.error_class), row.kind) << row.prefix;
  // The Error of the error line: the prefix as its code, the line as its message.
  const std::string line = std::string(row.prefix) + " x";
  const ts::Error sent = redis::make_server_error(line, "cmd", RequestState::sent);
  ASSERT_TRUE(sent.server().has_value());
  EXPECT_EQ(sent.server()->server, ts::ServerKind::redis);
  EXPECT_EQ(sent.server()->code, row.prefix);
  EXPECT_EQ(sent.server()->message, line);
  // A Redis error reply is the same kind whether or not "sent" (it is always a reply).
  EXPECT_EQ(sent.kind(), row.kind);
  EXPECT_EQ(redis::make_server_error(line, "cmd", RequestState::not_sent).kind(), row.kind);
  EXPECT_EQ(ts::classify(std::make_exception_ptr(sent)), row.kind);
}

INSTANTIATE_TEST_SUITE_P(AllRows, RedisTable, ::testing::ValuesIn(kRedisRows),
                         [](const auto& p) { return std::string(p.param.prefix); });

TEST(RedisServerError, PrefixOfALineWithoutMessage) {
  const ts::Error error = redis::make_server_error("LOADING", "GET k");
  EXPECT_EQ(error.server()->code, "LOADING");
  EXPECT_EQ(error.kind(), ErrorKind::transient_unavailable);
  EXPECT_EQ(error.request_state(), RequestState::sent);
  EXPECT_NE(std::string(error.what()).find("GET k"), std::string::npos) << error.what();
}

}  // namespace

// Fault test F50 for RedisClient: a malformed URL that carries a password must not show it in
// the error (the same guarantee for PostgreSQL DSNs: tests/fault/pg_connect_faults_test.cpp).
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/io_context.hpp>

#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;

// URLs that cannot be parsed, each with the password where a parse message quoting the
// offending text would show it: the host forgotten (the password then reads as a port), a
// password in the database number's place, a bad percent-encoding in the password. Must hold:
// constructing the client fails as invalid_argument (permanent), and the error does not contain
// the password; nothing is logged with it.
TEST(RedisFault, F50_malformed_url_never_shows_the_password) {
  const std::string secret = "F50secretPW";
  const std::vector<std::string> urls = {
      "redis://admin:" + secret,
      "redis://:" + secret,
      "redis://127.0.0.1:6379/" + secret,
      "redis://admin:" + secret + "%zz@127.0.0.1:6379",
      "redis://admin:" + secret + "@127.0.0.1:" + secret,
  };
  asio::io_context io;
  for (const auto& url : urls) {
    ts::testing::LogCapture log("redis");
    ts::redis::RedisConfig config;
    config.url = url;
    try {
      ts::redis::RedisClient client(io.get_executor(), config);
      ADD_FAILURE() << "a malformed URL was accepted";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument)) << e.what();
      EXPECT_EQ(e.kind(), ts::ErrorKind::permanent) << e.what();
      EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos)
          << "the password is in the error: " << e.what();
    }
    EXPECT_EQ(log.count(secret), 0u) << "the password was logged";
  }
}

}  // namespace

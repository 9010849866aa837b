// RESP encoding, reply parsing (hiredis reader + our reply tree), Reply accessors, Redis URLs.
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/reply.hpp>
#include <trading_shared/redis/resp.hpp>

#include "detail/reply_builder.hpp"

#include <gtest/gtest.h>

#include <array>
#include <limits>
#include <string>
#include <vector>

namespace ts = trading_shared;
using ts::redis::Reply;
using ts::redis::ReplyType;

namespace {

std::vector<Reply> parse(std::string_view wire, std::size_t chunk = 0) {
  ts::redis::detail::ReplyBuilder builder;
  std::vector<Reply> out;
  Reply reply;
  if (chunk == 0) chunk = wire.size();
  for (std::size_t pos = 0; pos < wire.size(); pos += chunk) {
    const auto piece = wire.substr(pos, chunk);
    builder.feed(piece.data(), piece.size());
    while (builder.next(reply)) out.push_back(std::move(reply));
  }
  return out;
}

}  // namespace

TEST(RespEncode, StringsNumbersAndRanges) {
  std::string out;
  ts::redis::encode_command(out, "SET", std::string("k"), std::string_view("v\r\n\0x", 5));
  EXPECT_EQ(out, std::string("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\0x\r\n", 31));
  out.clear();
  ts::redis::encode_command(out, "INCRBY", "n", -42, std::uint64_t{18446744073709551615ULL});
  EXPECT_EQ(out, "*4\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$3\r\n-42\r\n$20\r\n18446744073709551615\r\n");
  out.clear();
  const std::vector<std::string> keys{"a", "bb"};
  ts::redis::encode_command(out, "DEL", keys);
  EXPECT_EQ(out, "*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$2\r\nbb\r\n");
  out.clear();
  ts::redis::encode_command(out, "X", 0.5, "");
  EXPECT_EQ(out, "*3\r\n$1\r\nX\r\n$3\r\n0.5\r\n$0\r\n\r\n");
}

TEST(RespEncode, CommandWriterCountsMatch) {
  std::string out;
  ts::redis::CommandWriter w(out, 3);
  w.arg(std::string_view("XADD")).arg(std::string_view("s")).arg(7);
  EXPECT_EQ(out, "*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n7\r\n");
}

TEST(RespParse, ScalarsNilAndErrors) {
  const auto replies =
      parse("+OK\r\n:-7\r\n$-1\r\n$0\r\n\r\n-WRONGTYPE Operation against a key\r\n*-1\r\n");
  ASSERT_EQ(replies.size(), 6u);
  EXPECT_EQ(replies[0].type(), ReplyType::status);
  EXPECT_EQ(replies[0].as_string(), "OK");
  EXPECT_EQ(replies[1].as_int(), -7);
  EXPECT_TRUE(replies[2].is_nil());
  EXPECT_FALSE(replies[2].as_optional_string().has_value());
  EXPECT_EQ(replies[3].as_string(), "");
  EXPECT_TRUE(replies[4].is_error());
  EXPECT_EQ(replies[4].error_prefix(), "WRONGTYPE");
  EXPECT_TRUE(replies[5].is_nil());
  EXPECT_EQ(replies[5].size(), 0u);
}

TEST(RespParse, NestedArraysByteByByte) {
  // XRANGE-like: [[id, [f, v]], [id2, [f, v, g, nil]]] plus an empty array.
  static constexpr char kWire[] =
      "*3\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
      "*2\r\n$3\r\n2-0\r\n*4\r\n$1\r\nf\r\n$2\r\nw\0\r\n$1\r\ng\r\n$-1\r\n*0\r\n";
  const std::string wire_fixed(kWire, sizeof kWire - 1);
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{0}}) {
    const auto replies = parse(wire_fixed, chunk);
    ASSERT_EQ(replies.size(), 1u) << "chunk " << chunk;
    const Reply& r = replies[0];
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0][0].as_string(), "1-0");
    EXPECT_EQ(r[0][1][1].as_string(), "v");
    EXPECT_EQ(r[1][1][1].as_string(), std::string_view("w\0", 2));
    EXPECT_TRUE(r[1][1][3].is_nil());
    EXPECT_TRUE(r[2].is_array());
    EXPECT_EQ(r[2].size(), 0u);
    std::size_t n = 0;
    for (const auto element : r) {
      (void)element;
      ++n;
    }
    EXPECT_EQ(n, 3u);
  }
}

TEST(RespParse, ScalarsAndArraysInAnyChunking) {
  // Scalars take the fast path when whole and hiredis holds nothing; arrays, split scalars
  // and what follows them go through hiredis. Every chunking must give the same replies.
  static constexpr char kWire[] =
      ":1\r\n$3\r\nabc\r\n*2\r\n:2\r\n$1\r\nx\r\n+OK\r\n$-1\r\n-ERR bad\r\n"
      "$5\r\na\r\n\0b\r\n:-12\r\n$0\r\n\r\n";
  const std::string wire(kWire, sizeof kWire - 1);
  for (std::size_t chunk = 0; chunk <= 9; ++chunk) {
    const auto r = parse(wire, chunk);
    ASSERT_EQ(r.size(), 9u) << "chunk " << chunk;
    EXPECT_EQ(r[0].as_int(), 1);
    EXPECT_EQ(r[1].as_string(), "abc");
    EXPECT_EQ(r[2][0].as_int(), 2);
    EXPECT_EQ(r[2][1].as_string(), "x");
    EXPECT_EQ(r[3].type(), ReplyType::status);
    EXPECT_TRUE(r[4].is_nil());
    EXPECT_EQ(r[5].error_message(), "ERR bad");
    EXPECT_EQ(r[6].as_string(), std::string_view("a\r\n\0b", 5));
    EXPECT_EQ(r[7].as_int(), -12);
    EXPECT_EQ(r[8].as_string(), "");
  }
}

TEST(RespParse, BorrowedBytesAreKeptWhenAsked) {
  ts::redis::detail::ReplyBuilder builder;
  Reply reply;
  {
    std::string first = ":7\r\n$4\r\nab";  // one whole reply, then half of the next
    builder.feed(first.data(), first.size());
    ASSERT_TRUE(builder.next(reply));
    EXPECT_EQ(reply.as_int(), 7);
    builder.keep_rest();  // `first` goes away now
  }
  const std::string second = "cd\r\n";
  builder.feed(second.data(), second.size());
  ASSERT_TRUE(builder.next(reply));
  EXPECT_EQ(reply.as_string(), "abcd");
  EXPECT_FALSE(builder.next(reply));
}

TEST(RespParse, ProtocolErrorIsReported) {
  ts::redis::detail::ReplyBuilder builder;
  Reply reply;
  builder.feed("?bogus\r\n", 8);
  try {
    (void)builder.next(reply);
    FAIL() << "no error";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::protocol_error));
  }
}

TEST(ReplyAccess, TypeMismatchesThrowClearErrors) {
  const auto replies = parse("$3\r\nabc\r\n:5\r\n$2\r\n12\r\n*1\r\n:1\r\n");
  ASSERT_EQ(replies.size(), 4u);
  EXPECT_THROW((void)replies[0].as_int(), ts::Error);
  EXPECT_THROW((void)replies[1].as_string(), ts::Error);
  EXPECT_EQ(replies[2].as_int(), 12);
  EXPECT_THROW((void)replies[3][1], ts::Error);
  EXPECT_THROW((void)replies[0][0], ts::Error);
  try {
    (void)replies[1].as_string();
  } catch (const ts::Error& e) {
    EXPECT_NE(std::string(e.what()).find("integer"), std::string::npos) << e.what();
  }
  const Reply moved_from = [&] {
    Reply a = replies[0];
    Reply b = std::move(a);
    EXPECT_EQ(b.as_string(), "abc");
    return a;  // NOLINT(bugprone-use-after-move): a moved-from reply is nil by contract
  }();
  EXPECT_TRUE(moved_from.is_nil());
}

TEST(RedisUrl, ParsesEveryPart) {
  auto e = ts::redis::parse_redis_url("redis://user:p%40ss@db.example:6380/3");
  EXPECT_EQ(e.host, "db.example");
  EXPECT_EQ(e.port, 6380);
  EXPECT_EQ(e.user, "user");
  EXPECT_EQ(e.password, "p@ss");
  EXPECT_EQ(e.db, 3u);
  EXPECT_EQ(e.describe(), "db.example:6380/3");
  e = ts::redis::parse_redis_url("redis://[::1]:7000");
  EXPECT_EQ(e.host, "::1");
  EXPECT_EQ(e.port, 7000);
  EXPECT_EQ(e.describe(), "[::1]:7000/0");
  e = ts::redis::parse_redis_url("redis://secret@localhost");
  EXPECT_EQ(e.password, "secret");
  EXPECT_EQ(e.user, "");
  EXPECT_EQ(e.port, 6379);
  EXPECT_FALSE(e.tls);
}

TEST(RedisUrl, RedissIsTls) {
  auto e = ts::redis::parse_redis_url("rediss://u:pw@cache.example:6380/2");
  EXPECT_TRUE(e.tls);
  EXPECT_EQ(e.host, "cache.example");
  EXPECT_EQ(e.port, 6380);
  EXPECT_EQ(e.user, "u");
  EXPECT_EQ(e.password, "pw");
  EXPECT_EQ(e.db, 2u);
  EXPECT_EQ(e.describe(), "cache.example:6380/2");
  e = ts::redis::parse_redis_url("rediss://[::1]");
  EXPECT_TRUE(e.tls);
  EXPECT_EQ(e.host, "::1");
}

// TLS settings must match the scheme: a CA file with a redis:// URL is a mistake (the
// connection would be plaintext), as is tls.enabled with redis://; a certificate needs its key.
TEST(RedisConfig, ValidateChecksTlsSettingsAgainstTheScheme) {
  auto refused = [](const ts::redis::RedisConfig& config, const char* needle) {
    try {
      ts::redis::validate(config);
      ADD_FAILURE() << "accepted; expected an error naming " << needle;
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument));
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  ts::redis::RedisConfig config;
  config.tls.ca_file = "/etc/ca.pem";
  refused(config, "ca_file");
  config.url = "rediss://127.0.0.1:6380";
  EXPECT_NO_THROW(ts::redis::validate(config));
  config.tls.cert_file = "client.crt";
  refused(config, "key_file");
  config = {};
  config.tls.enabled = true;
  refused(config, "rediss://");
  config.url = "rediss://127.0.0.1";
  EXPECT_NO_THROW(ts::redis::validate(config));
}

TEST(RedisUrl, RefusesWhatItCannotDo) {
  for (const char* bad : {"redis:/h:1", "http://h", "redis://", "redis://h:0", "redis://h:x",
                          "redis://h:1/x", "redis://h:1?timeout=1", "redis://[::1", "unix:///s"}) {
    try {
      (void)ts::redis::parse_redis_url(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument)) << bad;
    }
  }
}

TEST(RedisConfig, ValidateNamesTheField) {
  ts::redis::RedisConfig config;
  config.client_name = "has space";
  try {
    ts::redis::validate(config);
    FAIL();
  } catch (const ts::Error& e) {
    EXPECT_NE(std::string(e.what()).find("client_name"), std::string::npos);
  }
  config = {};
  config.max_queued = 0;
  EXPECT_THROW(ts::redis::validate(config), ts::Error);
  config = {};
  EXPECT_NO_THROW(ts::redis::validate(config));
}

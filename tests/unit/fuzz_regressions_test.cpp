// Regression tests for the bugs the fuzzers of fuzz/ found, each with its reproducer's bytes
// (also in fuzz/corpus/<target>/, so the fuzzers replay them on every run).
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/types.hpp>
#include <trading_shared/redis/reply.hpp>

#include "detail/reply_builder.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ts = trading_shared;
using ts::redis::Reply;

namespace {

/// What the parser made of `wire` fed in chunks ending at `cuts`: each reply's debug string,
/// then "error" if it stopped on a protocol error.
std::vector<std::string> parse(std::string_view wire, const std::vector<std::size_t>& cuts) {
  ts::redis::detail::ReplyBuilder builder;
  std::vector<std::string> out;
  Reply reply;
  std::size_t begin = 0;
  try {
    for (std::size_t i = 0; i <= cuts.size(); ++i) {
      const std::size_t end = i < cuts.size() ? cuts[i] : wire.size();
      const std::string chunk(wire.substr(begin, end - begin));  // dies after the read
      builder.feed(chunk.data(), chunk.size());
      while (builder.next(reply)) out.push_back(reply.debug_string());
      begin = end;
    }
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::protocol_error)) << e.what();
    out.emplace_back("error");
  }
  return out;
}

std::vector<std::size_t> every_byte(std::string_view wire) {
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < wire.size(); ++i) cuts.push_back(i);
  return cuts;
}

}  // namespace

// fuzz_resp: the scalar fast path took "$-0" as an empty bulk string where hiredis (which
// parses the same bytes when they arrive split) refuses it, so a reply depended on how TCP
// cut the stream. The reproducer, payload only.
TEST(FuzzRegressions, RespFastPathAgreesWithHiredisOnNonCanonicalIntegers) {
  const std::string_view reproducer("$-0\r\n$)\r\nbar/\r\r\0:100-\0\0\0\0\0\0\r\n:-1\r\n:0\r\n",
                                    38);
  EXPECT_EQ(parse(reproducer, {}), parse(reproducer, {1, 32}));
  EXPECT_EQ(parse(reproducer, {}), (std::vector<std::string>{"error"}));

  // Every form hiredis refuses is refused whole too, and each canonical one still parses.
  for (const std::string_view wire :
       {"$-0\r\n\r\n", ":-0\r\n", ":007\r\n", ":-01\r\n", ":+1\r\n", "$-2\r\n", "$01\r\nx\r\n",
        ":9223372036854775808\r\n", ":\r\n", ":-\r\n"}) {
    SCOPED_TRACE(std::string(wire));
    EXPECT_EQ(parse(wire, {}), (std::vector<std::string>{"error"}));
    EXPECT_EQ(parse(wire, every_byte(wire)), (std::vector<std::string>{"error"}));
  }
  EXPECT_EQ(parse(":0\r\n:-1\r\n:10\r\n:-9223372036854775808\r\n$-1\r\n$0\r\n\r\n", {}),
            (std::vector<std::string>{"(integer) 0", "(integer) -1", "(integer) 10",
                                      "(integer) -9223372036854775808", "(nil)", "\"\""}));
}

// fuzz_pg_result: a finite timestamp whose microseconds since 1970 are exactly INT64_MAX
// (294247-01-10 04:00:54.775807 UTC, inside PostgreSQL's range) was read as time_point::max(),
// which means infinity, and written back as 'infinity'. It does not fit instead.
TEST(FuzzRegressions, PgFiniteTimestampNeverReadsAsInfinity) {
  namespace pg = ts::pg;
  using std::chrono::microseconds;
  constexpr std::int64_t kCollides = 9'222'425'352'054'775'807;  // INT64_MAX - epoch offset
  EXPECT_EQ(pg::from_postgres_timestamp<microseconds>(kCollides), std::nullopt);
  EXPECT_TRUE(pg::from_postgres_timestamp<microseconds>(kCollides - 1).has_value());
  EXPECT_EQ(pg::from_postgres_timestamp<microseconds>(pg::kTimestampInfinity),
            pg::SysTime<microseconds>::max());
  // A 32-bit count of minutes reaches its maximum (year 6053) inside PostgreSQL's range.
  using Minutes32 = std::chrono::duration<std::int32_t, std::ratio<60>>;
  const std::int64_t max_minutes_us =
      std::int64_t{std::numeric_limits<std::int32_t>::max()} * 60'000'000 -
      pg::kPostgresEpochUnixMicros;
  EXPECT_EQ(pg::from_postgres_timestamp<Minutes32>(max_minutes_us), std::nullopt);
  EXPECT_TRUE(pg::from_postgres_timestamp<Minutes32>(max_minutes_us - 60'000'000).has_value());

  // Through the getter, on a binary timestamptz value as the server sends it.
  PGresult* raw = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
  ASSERT_NE(raw, nullptr);
  const pg::Result result(raw);
  std::array<PGresAttDesc, 1> attrs{};
  attrs[0].name = const_cast<char*>("ts");
  attrs[0].typid = pg::oid::kTimestamptz;
  attrs[0].format = 1;
  attrs[0].typlen = 8;
  attrs[0].atttypmod = -1;
  ASSERT_NE(PQsetResultAttrs(raw, 1, attrs.data()), 0);
  std::array<char, 8> value{};
  pg::detail::store_be(static_cast<std::uint64_t>(kCollides), value.data());
  ASSERT_NE(PQsetvalue(raw, 0, 0, value.data(), 8), 0);
  try {
    (void)result.front().get<pg::SysTime<microseconds>>(0);
    ADD_FAILURE() << "a finite timestamp was read as infinity";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::type_mismatch)) << e.what();
  }
}

// fuzz_url: libpq reads a URI's userinfo up to the first '/', so a user name holding '?', '#'
// or a quote still has a password after its ':'; the redaction stopped there and logged it.
TEST(FuzzRegressions, RedactionMasksUriPasswordsAfterOddUserNames) {
  using ts::core::redact_dsn;
  EXPECT_EQ(redact_dsn("postgresql://rec?order:s3cretpw@[1:d2001:db8::1]:6432/trades?sslmode=x"),
            "postgresql://rec?order:***@[1:d2001:db8::1]:6432/trades?sslmode=x");
  EXPECT_EQ(redact_dsn("postgresql://rechost'ddr=127.0.0.1okder:s3cretp@w[2001::b18:d]:6432/a"),
            "postgresql://rechost'ddr=127.0.0.1okder:***@w[2001::b18:d]:6432/a");
  EXPECT_EQ(redact_dsn("postgres://u#x:pw@h/db"), "postgres://u#x:***@h/db");
  EXPECT_EQ(redact_dsn(R"({"dsn": "postgresql://u:pw@h"})"), R"({"dsn": "postgresql://u:***@h"})");
}

// fuzz_resp: an array header made the parser allocate its element slots up front, so 13 bytes
// ("*1444444444\r\n") from a server cost 5.8 GB (bad_alloc thrown through hiredis, or the OOM
// killer). Slots now cost memory only as the elements arrive.
TEST(FuzzRegressions, RespArrayCountAllocatesNothingUntilElementsArrive) {
  EXPECT_TRUE(parse("*1444444444\r\n*1\r\n-92\"33720\r\n", {}).empty());  // the reproducer
  EXPECT_TRUE(
      parse("*2147483647\r\n:1\r\n:2\r\n", every_byte("*2147483647\r\n:1\r\n:2\r\n")).empty());
  // Nested counts adding up to more than 2^32 slots are refused.
  EXPECT_EQ(parse("*2147483647\r\n*2147483647\r\n*2147483647\r\n", {}),
            (std::vector<std::string>{"error"}));
  // Nested arrays still come out in order, however they are split.
  const std::string_view nested = "*3\r\n*2\r\n:1\r\n*1\r\n$1\r\na\r\n*0\r\n+x\r\n*-1\r\n";
  const std::vector<std::string> expected{"[[(integer) 1, [\"a\"]], [], x]", "(nil)"};
  EXPECT_EQ(parse(nested, {}), expected);
  EXPECT_EQ(parse(nested, every_byte(nested)), expected);
}

// fuzz_url: libpq skips any white space around a keyword's '=' ("password=\fsecret" has the
// password "secret"); the redaction skipped only blanks and logged it.
TEST(FuzzRegressions, RedactionMasksKeywordPasswordsAfterAnyWhiteSpace) {
  using ts::core::redact_dsn;
  EXPECT_EQ(redact_dsn("password=\fqrr/\x1brr/\x1b"), "password=\f***");  // the reproducer
  EXPECT_EQ(redact_dsn("host=h password=\nsecret dbname=d"), "host=h password=\n*** dbname=d");
  EXPECT_EQ(redact_dsn("password\v=\r'se cret'"), "password\v=\r***");
}

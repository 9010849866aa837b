// The services' pure parsing and generation code, without servers: ts-receiver's trade parser
// (untrusted input: never throws, never crashes), tsctl's SQL script splitter (with the real
// migration), and ts-feed-sim's deterministic generator, JSON rendering and pacer.
#include "common/keys.hpp"
#include "common/migrations.hpp"
#include "common/scram.hpp"
#include "common/stream_trim.hpp"
#include "feed_sim/generator.hpp"
#include "receiver/trade_parser.hpp"
#include "tsctl/sql_split.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace svc = trading_shared::services;
namespace feed = trading_shared::services::feed_sim;
using svc::ParseOutcome;
using svc::tsctl::split_sql;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

namespace {

// ---- ts-receiver: parse_trade ----------------------------------------------------------------

struct Parsed {
  ParseOutcome outcome = ParseOutcome::malformed;
  svc::Trade trade;
  const char* error = nullptr;
};

Parsed parse(std::string data) {
  simdjson::ondemand::parser parser;
  Parsed p;
  p.outcome = svc::parse_trade(parser, data, p.trade, p.error);
  return p;
}

const char* describe(ParseOutcome outcome) {
  switch (outcome) {
    case ParseOutcome::trade:
      return "trade";
    case ParseOutcome::control:
      return "control";
    case ParseOutcome::malformed:
      return "malformed";
  }
  return "?";
}

constexpr std::string_view kValidTrade =
    R"({"e":"trade","E":1700000000123,"s":"BTCUSDT","t":12345,"p":"65000.50","q":"0.00100000",)"
    R"("T":1700000000120,"m":true})";

TEST(TradeParser, ParsesAValidTrade) {
  const Parsed p = parse(std::string(kValidTrade));
  ASSERT_EQ(p.outcome, ParseOutcome::trade) << (p.error ? p.error : "");
  EXPECT_EQ(p.trade.symbol.view(), "BTCUSDT");
  EXPECT_EQ(p.trade.trade_id, 12345);
  EXPECT_EQ(p.trade.price.view(), "65000.50");
  EXPECT_EQ(p.trade.qty.view(), "0.00100000");
  EXPECT_EQ(p.trade.trade_time, 1700000000120);
  EXPECT_EQ(p.trade.event_time, 1700000000123);
  EXPECT_TRUE(p.trade.buyer_is_maker);
}

TEST(TradeParser, AcceptsFieldsInAnyOrderAndIgnoresExtraFields) {
  // Reversed order, Binance's "M", unknown one-letter and long keys, nested values, spaces.
  const Parsed p = parse(
      R"( { "m" : false, "M": true, "T": 1700000000005, "x": [1, {"y": "z"}], "q": "2", "extra": {"a": [1, 2, 3]},)"
      R"( "p": "0.01", "t": 0, "ignored": null, "s": "ETHUSDT", "E": 1700000000006, "e": "trade" } )");
  ASSERT_EQ(p.outcome, ParseOutcome::trade) << (p.error ? p.error : "");
  EXPECT_EQ(p.trade.symbol.view(), "ETHUSDT");
  EXPECT_EQ(p.trade.trade_id, 0);
  EXPECT_EQ(p.trade.price.view(), "0.01");
  EXPECT_EQ(p.trade.qty.view(), "2");
  EXPECT_EQ(p.trade.trade_time, 1700000000005);
  EXPECT_EQ(p.trade.event_time, 1700000000006);
  EXPECT_FALSE(p.trade.buyer_is_maker);
}

TEST(TradeParser, MaximalSymbolAndPriceLengthsFit) {
  const std::string symbol(20, 'S');
  const std::string price = "1." + std::string(30, '0');  // 32 characters
  const Parsed p = parse(R"({"e":"trade","E":1700000000001,"s":")" + symbol + R"(","t":1,"p":")" +
                         price + R"(","q":"1","T":1700000000001,"m":false})");
  ASSERT_EQ(p.outcome, ParseOutcome::trade) << (p.error ? p.error : "");
  EXPECT_EQ(p.trade.symbol.view(), symbol);
  EXPECT_EQ(p.trade.price.view(), price);
}

// F44: times that are not milliseconds of 2000-2099 (nanoseconds, microseconds, seconds,
// negative) are malformed: a trade time in nanoseconds would fail its whole batch's insert, one
// in microseconds would create a partition for the year 55 000.
TEST(TradeParser, F44_TimesOutsideTheRangeOfMillisecondsAreMalformed) {
  const auto trade = [](const std::string& t, const std::string& e) {
    return R"({"e":"trade","E":)" + e + R"(,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":)" + t +
           R"(,"m":true})";
  };
  for (const std::string bad : {"1700000000000000000", "1700000000000000", "1700000000", "-1", "0",
                                "4102444800000", "946684799999"}) {
    const Parsed as_t = parse(trade(bad, "1700000000000"));
    EXPECT_EQ(as_t.outcome, ParseOutcome::malformed) << "T " << bad;
    const Parsed as_e = parse(trade("1700000000000", bad));
    EXPECT_EQ(as_e.outcome, ParseOutcome::malformed) << "E " << bad;
  }
  for (const std::string good : {"946684800000", "4102444799999", "1700000000000"}) {
    const Parsed p = parse(trade(good, good));
    EXPECT_EQ(p.outcome, ParseOutcome::trade) << good << ": " << (p.error ? p.error : "");
  }
}

TEST(TradeParser, ParsesTheSameBufferRepeatedlyWithOneParser) {
  simdjson::ondemand::parser parser;
  std::string data(kValidTrade);
  for (int i = 0; i < 3; ++i) {
    svc::Trade trade;
    const char* error = nullptr;
    ASSERT_EQ(svc::parse_trade(parser, data, trade, error), ParseOutcome::trade);
    EXPECT_EQ(trade.trade_id, 12345);
  }
  std::string garbage = "{]";
  svc::Trade trade;
  const char* error = nullptr;
  EXPECT_EQ(svc::parse_trade(parser, garbage, trade, error), ParseOutcome::malformed);
  // The parser is still usable after a malformed message.
  EXPECT_EQ(svc::parse_trade(parser, data, trade, error), ParseOutcome::trade);
}

TEST(TradeParser, ControlRepliesAreControl) {
  for (const std::string input : {
           R"({"result":null,"id":1})",
           R"({"id":1,"result":null})",
           R"({"result":["btcusdt@trade"],"id":3})",
           R"({"error":{"code":2,"msg":"Invalid request: unknown method"},"id":1})",
           R"({"id":7,"error":{"code":1,"msg":"x"}})",
       }) {
    const Parsed p = parse(input);
    EXPECT_EQ(p.outcome, ParseOutcome::control) << input << ": " << describe(p.outcome);
  }
}

std::string valid_trade_without(std::string_view key) {
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"e", R"("trade")"}, {"E", "1"}, {"s", R"("BTCUSDT")"}, {"t", "1"}, {"p", R"("1.5")"},
      {"q", R"("2")"},     {"T", "1"}, {"m", "true"}};
  std::string out = "{";
  for (const auto& [name, value] : fields) {
    if (name == key) continue;
    if (out.size() > 1) out += ',';
    out += '"' + name + "\":" + value;
  }
  return out + "}";
}

TEST(TradeParser, EveryMissingFieldIsMalformed) {
  for (const char* key : {"e", "E", "s", "t", "p", "q", "T", "m"}) {
    const std::string input = valid_trade_without(key);
    const Parsed p = parse(input);
    EXPECT_EQ(p.outcome, ParseOutcome::malformed) << input;
    EXPECT_NE(p.error, nullptr) << input;
  }
}

TEST(TradeParser, MalformedInputsAreMalformedAndNeverThrow) {
  const std::string long_symbol(21, 'S');
  const std::string long_price = "1." + std::string(31, '0');  // 33 characters
  const std::vector<std::string> inputs = {
      // not JSON, empty, truncated
      "",
      " ",
      "not json",
      "{",
      "}",
      "{]",
      R"({"e":"trade")",
      R"({"e":"trade","E":1700000000001,)",
      R"({"e":"tra)",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":tru})",
      R"({"e" "trade"})",
      R"({"e":"trade",,"E":1})",
      R"({e:"trade"})",
      R"({'e':'trade'})",
      // not an object
      "[]",
      R"([{"e":"trade"}])",
      "null",
      "true",
      "42",
      R"("trade")",
      // an object without an event type, or another event
      "{}",
      R"({"x":1})",
      // symbols become part of Redis key names: upper-case letters and digits only
      R"({"e":"trade","E":1700000000001,"s":"btcusdt","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BT\u0000C","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTC:USDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"aggTrade","E":1700000000001,"s":"BTCUSDT","a":1,"p":"1","q":"1","f":1,"l":1,"T":1700000000001,"m":true})",
      R"({"e":"aggTrade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"TRADE","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      // wrong types
      R"({"e":1,"E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":null,"E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":"1","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1.5,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":7,"t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":["BTCUSDT"],"t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":"1","p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1.0,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":1.5,"q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":2,"T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":"1","m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":"true"})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":1})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":null})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":{},"q":"1","T":1700000000001,"m":true})",
      // bad values
      R"({"e":"trade","E":1700000000001,"s":"","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":")" + long_symbol +
          R"(","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":")" + long_price +
          R"(","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":")" + long_price +
          R"(","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":-1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":-1,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"-1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":".","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1.2.3","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1e5","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":" 1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"abc","T":1700000000001,"m":true})",
      // huge numbers
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":99999999999999999999,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":9223372036854775808,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1e300,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1700000000001,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1)" +
          std::string(400, '0') + R"(,"m":true})",
      R"({"e":"trade","E":1700000000001,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1e999,"m":true})",
      // NUL bytes outside strings
      std::string("\0", 1),
      std::string("{\"e\":\"trade\"\0,\"E\":1}", 20),
      std::string("\0{\"result\":null,\"id\":1}", 24),
      // a raw NUL inside a string, trailing garbage
      std::string(
          "{\"e\":\"trade\",\"E\":1,\"s\":\"BT\0C\",\"t\":1,\"p\":\"1\",\"q\":\"1\",\"T\":1,"
          "\"m\":true}",
          62),
      std::string(kValidTrade) + "garbage",
  };
  for (const std::string& input : inputs) {
    Parsed p;
    EXPECT_NO_THROW(p = parse(input)) << input;
    EXPECT_EQ(p.outcome, ParseOutcome::malformed) << input << ": " << describe(p.outcome);
    EXPECT_NE(p.error, nullptr) << input;
  }
}

TEST(TradeParser, EveryTruncationOfATradeIsNotATrade) {
  for (std::size_t n = 0; n < kValidTrade.size(); ++n) {
    const std::string input(kValidTrade.substr(0, n));
    Parsed p;
    EXPECT_NO_THROW(p = parse(input)) << input;
    EXPECT_EQ(p.outcome, ParseOutcome::malformed) << input << ": " << describe(p.outcome);
  }
}

TEST(TradeParser, ArbitraryBytesNeverThrow) {
  // Every single-byte corruption of a valid trade (a cheap, deterministic fuzz): whatever
  // the outcome, no exception, and a trade comes out only with fields that still check.
  std::string base(kValidTrade);
  for (std::size_t i = 0; i < base.size(); ++i) {
    for (const char c : {'\0', '"', '{', '}', ',', ':', '\\', 'x', '9', '\x80', '\xff'}) {
      std::string input = base;
      input[i] = c;
      Parsed p;
      ASSERT_NO_THROW(p = parse(input)) << i;
      if (p.outcome == ParseOutcome::trade) {
        EXPECT_FALSE(p.trade.symbol.view().empty()) << input;
        EXPECT_TRUE(svc::is_decimal(p.trade.price.view())) << input;
        EXPECT_TRUE(svc::is_decimal(p.trade.qty.view())) << input;
        EXPECT_GE(p.trade.trade_id, 0) << input;
        EXPECT_GE(p.trade.trade_time, 0) << input;
      } else if (p.outcome == ParseOutcome::malformed) {
        EXPECT_NE(p.error, nullptr) << input;
      }
    }
  }
}

TEST(TradeParser, IsDecimal) {
  for (const char* yes : {"0", "1", "65000.50", "0.001", "1.", ".5", "007"}) {
    EXPECT_TRUE(svc::is_decimal(yes)) << yes;
  }
  for (const char* no : {"", ".", "-1", "+1", "1.2.3", "1e5", " 1", "1 ", "abc", "1,5", "..1"}) {
    EXPECT_FALSE(svc::is_decimal(no)) << no;
  }
  EXPECT_FALSE(svc::is_decimal(std::string_view("1\0", 2)));
}

// ---- tsctl: split_sql --------------------------------------------------------------------------

TEST(SqlSplit, SplitsAtTopLevelSemicolonsAndTrims) {
  EXPECT_THAT(split_sql("SELECT 1;  SELECT 2 ;\n\nSELECT 3"),
              ElementsAre("SELECT 1", "SELECT 2", "SELECT 3"));
  EXPECT_THAT(split_sql(""), ElementsAre());
  EXPECT_THAT(split_sql(" ;; ;\n"), ElementsAre());
  EXPECT_THAT(split_sql("SELECT 1"), ElementsAre("SELECT 1"));
}

TEST(SqlSplit, SemicolonsInsideQuotesDoNotSplit) {
  EXPECT_THAT(split_sql("SELECT 'a;b'; SELECT 2"), ElementsAre("SELECT 'a;b'", "SELECT 2"));
  // '' is an escaped quote.
  EXPECT_THAT(split_sql("SELECT 'it''s; fine'; SELECT 2"),
              ElementsAre("SELECT 'it''s; fine'", "SELECT 2"));
  // Quoted identifiers, with "" inside.
  EXPECT_THAT(split_sql(R"(SELECT 1 AS "a;""b"; SELECT 2)"),
              ElementsAre(R"(SELECT 1 AS "a;""b")", "SELECT 2"));
  // A standard string ends at the quote after a backslash.
  EXPECT_THAT(split_sql(R"(SELECT 'a\'; SELECT 2)"), ElementsAre(R"(SELECT 'a\')", "SELECT 2"));
}

TEST(SqlSplit, EscapeStringsTakeBackslashEscapes) {
  EXPECT_THAT(split_sql(R"(SELECT E'a\';b'; SELECT 2)"),
              ElementsAre(R"(SELECT E'a\';b')", "SELECT 2"));
  EXPECT_THAT(split_sql(R"(SELECT e'\\'; SELECT 2)"), ElementsAre(R"(SELECT e'\\')", "SELECT 2"));
  // \' then '' (both escaped quotes), then the closing quote.
  EXPECT_THAT(split_sql(R"(SELECT E'x\''';y'; SELECT 2)"),
              ElementsAre(R"(SELECT E'x\''';y')", "SELECT 2"));
  // E'x\'' is "x'": what follows the semicolon opens a string that never ends.
  EXPECT_THROW((void)split_sql(R"(SELECT E'x\'';y')"), std::invalid_argument);
  // An identifier ending in E before a quote is not an E'' prefix ('...' is standard).
  EXPECT_THAT(split_sql(R"(SELECT typE'a\'; SELECT 2)"),
              ElementsAre(R"(SELECT typE'a\')", "SELECT 2"));
}

TEST(SqlSplit, DollarQuotesWithAndWithoutTags) {
  EXPECT_THAT(split_sql("SELECT $$a;b$$; SELECT 2"), ElementsAre("SELECT $$a;b$$", "SELECT 2"));
  // A tagged body containing $$ and another tag.
  const std::string body = "DO $fn$ BEGIN PERFORM $$x;$$; PERFORM $q$;$q$; END $fn$";
  EXPECT_THAT(split_sql(body + "; SELECT 2"), ElementsAre(body, "SELECT 2"));
  // $1 is a parameter, a$b part of an identifier: neither opens a quote.
  EXPECT_THAT(split_sql("SELECT $1; SELECT a$b; SELECT 3"),
              ElementsAre("SELECT $1", "SELECT a$b", "SELECT 3"));
  // Quotes and comments inside a dollar quote are plain text.
  EXPECT_THAT(split_sql("SELECT $t$ ' -- /* ; $t$; SELECT 2"),
              ElementsAre("SELECT $t$ ' -- /* ; $t$", "SELECT 2"));
}

TEST(SqlSplit, CommentsAreSkipped) {
  const auto statements = split_sql(
      "-- leading; comment\n"
      "SELECT 1; -- trailing; comment\n"
      "/* block; /* nested; */ still inside; */ SELECT 2;\n"
      "-- only a comment;\n"
      "/* only; a block */;\n"
      "SELECT '--not a comment;'");
  ASSERT_EQ(statements.size(), 3u) << ::testing::PrintToString(statements);
  // A comment before a statement stays part of it (the server skips it).
  EXPECT_THAT(statements[0], StartsWith("-- leading; comment\n"));
  EXPECT_THAT(statements[0], ::testing::EndsWith("SELECT 1"));
  EXPECT_THAT(statements[1], HasSubstr("/* block; /* nested; */ still inside; */"));
  EXPECT_THAT(statements[1], ::testing::EndsWith("SELECT 2"));
  EXPECT_EQ(statements[2], "SELECT '--not a comment;'");
  // A comment at the end without a newline.
  EXPECT_THAT(split_sql("SELECT 1 -- end"), ElementsAre("SELECT 1 -- end"));
}

TEST(SqlSplit, UnterminatedConstructsThrow) {
  for (const char* script : {"SELECT 'abc", R"(SELECT E'abc\')", R"(SELECT "abc)", "SELECT $$abc",
                             "SELECT $t$abc$$", "SELECT 1 /* a /* b */"}) {
    EXPECT_THROW((void)split_sql(script), std::invalid_argument) << script;
  }
}

TEST(SqlSplit, MigrationV1SplitsIntoItsStatementsWithTheFunctionWhole) {
  const auto all = svc::migrations();
  ASSERT_FALSE(all.empty());
  ASSERT_EQ(all[0].version, 1);
  const auto statements = split_sql(all[0].sql);
  // CREATE TABLE ticks, CREATE FUNCTION, SELECT (partitions), CREATE TABLE orders, fills.
  ASSERT_EQ(statements.size(), 5u) << ::testing::PrintToString(statements);
  EXPECT_THAT(statements[0], StartsWith("CREATE TABLE ticks"));
  EXPECT_THAT(statements[1], StartsWith("CREATE FUNCTION ts_ensure_tick_partition"));
  EXPECT_THAT(statements[1], HasSubstr("EXCEPTION WHEN duplicate_table OR unique_violation"));
  EXPECT_THAT(statements[1], ::testing::EndsWith("END $$"));
  // The function body keeps its own semicolons.
  EXPECT_GE(std::count(statements[1].begin(), statements[1].end(), ';'), 5);
  EXPECT_THAT(statements[2], StartsWith("SELECT ts_ensure_tick_partition"));
  EXPECT_THAT(statements[3], StartsWith("CREATE TABLE orders"));
  EXPECT_THAT(statements[4], StartsWith("CREATE TABLE fills"));
  // Every migration splits without error, in version order.
  int version = 0;
  for (const auto& migration : all) {
    EXPECT_GT(migration.version, version);
    version = migration.version;
    EXPECT_FALSE(split_sql(migration.sql).empty()) << migration.name;
  }
}

// ---- tsctl migrate --roles-create: SCRAM-SHA-256 verifiers ----------------------------------

// The verifier of "pencil" with RFC 7677's salt, computed independently (Python's hashlib
// pbkdf2_hmac / hmac, PostgreSQL's algorithm); the security fault test also matches one the
// server computed itself.
TEST(ScramVerifier, MatchesAKnownVector) {
  constexpr std::string_view kKnown =
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
  constexpr unsigned char kSalt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                     0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
  const std::string salt(reinterpret_cast<const char*>(kSalt), sizeof kSalt);
  EXPECT_EQ(svc::scram_sha256_verifier("pencil", salt, 4096), kKnown);
  EXPECT_TRUE(svc::scram_sha256_verifier_matches(kKnown, "pencil"));
  EXPECT_FALSE(svc::scram_sha256_verifier_matches(kKnown, "pencil "));
  EXPECT_FALSE(svc::scram_sha256_verifier_matches("md5abc", "pencil"));
}

TEST(ScramVerifier, FreshSaltEachTimeAndOnlyPrintableAscii) {
  const std::string a = svc::scram_sha256_verifier("s3cret-pw");
  const std::string b = svc::scram_sha256_verifier("s3cret-pw");
  EXPECT_NE(a, b);
  EXPECT_THAT(a, ::testing::StartsWith("SCRAM-SHA-256$4096:"));
  EXPECT_EQ(a.find("s3cret-pw"), std::string::npos);
  EXPECT_TRUE(svc::scram_sha256_verifier_matches(a, "s3cret-pw"));
  EXPECT_TRUE(svc::scram_sha256_verifier_matches(b, "s3cret-pw"));
  EXPECT_THROW((void)svc::scram_sha256_verifier("caf\xc3\xa9"), std::invalid_argument);
  EXPECT_THROW((void)svc::scram_sha256_verifier("tab\there"), std::invalid_argument);
}

// ---- ts-feed-sim: generator, JSON, pacer ------------------------------------------------------

std::vector<feed::Trade> generate(std::string_view symbol, std::uint64_t seed, int n) {
  feed::SymbolGenerator generator(symbol, seed);
  std::vector<feed::Trade> trades;
  for (int i = 0; i < n; ++i) trades.push_back(generator.next());
  return trades;
}

bool same(const feed::Trade& a, const feed::Trade& b) {
  return a.id == b.id && a.price_cents == b.price_cents && a.qty_units == b.qty_units &&
         a.qty_decimals == b.qty_decimals && a.buyer_maker == b.buyer_maker;
}

bool same(const std::vector<feed::Trade>& a, const std::vector<feed::Trade>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](const auto& x, const auto& y) { return same(x, y); });
}

TEST(FeedGenerator, SameSeedAndSymbolGiveTheSameSequence) {
  EXPECT_TRUE(same(generate("BTCUSDT", 42, 2000), generate("BTCUSDT", 42, 2000)));
  EXPECT_TRUE(same(generate("XYZ", 0, 500), generate("XYZ", 0, 500)));
  // A symbol's sequence does not depend on another symbol's generator running alongside.
  feed::SymbolGenerator btc("BTCUSDT", 42);
  feed::SymbolGenerator eth("ETHUSDT", 42);
  std::vector<feed::Trade> interleaved;
  for (int i = 0; i < 2000; ++i) {
    interleaved.push_back(btc.next());
    (void)eth.next();
  }
  EXPECT_TRUE(same(interleaved, generate("BTCUSDT", 42, 2000)));
}

TEST(FeedGenerator, DifferentSeedOrSymbolGivesADifferentSequence) {
  const auto base = generate("BTCUSDT", 42, 100);
  EXPECT_FALSE(same(base, generate("BTCUSDT", 43, 100)));
  EXPECT_FALSE(same(base, generate("BTCUSDT", 0, 100)));
  // Same start price, other symbol name: another sequence.
  EXPECT_FALSE(same(generate("AAA", 42, 100), generate("BBB", 42, 100)));
}

TEST(FeedGenerator, IsStableAcrossRunsAndPlatforms) {
  // mt19937_64 and the generator's integer arithmetic are fully specified (no
  // std::*_distribution): the first trades of a seed are fixed values on every platform.
  const std::vector<feed::Trade> btc = {{1, 6'000'076, 9'456, 4, true},
                                        {2, 6'000'626, 170'017, 5, false},
                                        {3, 6'001'219, 539'152, 8, true}};
  EXPECT_TRUE(same(generate("BTCUSDT", 1, 3), btc));
  const std::vector<feed::Trade> eth = {{1, 299'999, 795'971, 6, true},
                                        {2, 300'016, 18'638'580, 7, true}};
  EXPECT_TRUE(same(generate("ETHUSDT", 42, 2), eth));
}

TEST(FeedGenerator, IdsAreContiguousFromOneAndValuesInRange) {
  for (const std::string_view symbol : {"BTCUSDT", "ETHUSDT", "DOGEUSDT"}) {
    feed::SymbolGenerator generator(symbol, 7);
    EXPECT_EQ(generator.last_id(), 0u);
    const std::int64_t max_step =
        std::max<std::int64_t>(1, feed::start_price_cents(symbol) / 10000);
    std::int64_t previous = feed::start_price_cents(symbol);
    bool makers = false;
    bool takers = false;
    for (std::uint64_t i = 1; i <= 5000; ++i) {
      const feed::Trade t = generator.next();
      ASSERT_EQ(t.id, i) << symbol;
      ASSERT_EQ(generator.last_id(), i) << symbol;
      ASSERT_GE(t.price_cents, 1) << symbol;
      ASSERT_LE(std::abs(t.price_cents - previous), max_step) << symbol << " trade " << i;
      previous = t.price_cents;
      ASSERT_GE(t.qty_decimals, 3);
      ASSERT_LE(t.qty_decimals, 8);
      std::uint64_t scale = 1;
      for (int d = 0; d < t.qty_decimals; ++d) scale *= 10;
      ASSERT_GE(t.qty_units, 1u);
      ASSERT_LE(t.qty_units, 2 * scale);  // (0, 2]
      (t.buyer_maker ? makers : takers) = true;
    }
    EXPECT_TRUE(makers && takers) << symbol;
  }
  EXPECT_EQ(feed::start_price_cents("BTCUSDT"), 6'000'000);
  EXPECT_EQ(feed::start_price_cents("ETHUSDT"), 300'000);
  EXPECT_EQ(feed::start_price_cents("OTHER"), 10'000);
}

TEST(FeedGenerator, PriceStaysPositiveOnALongWalk) {
  feed::SymbolGenerator generator("LOW", 3);  // starts at 100.00, steps of at most 1 cent
  for (int i = 0; i < 100'000; ++i) ASSERT_GE(generator.next().price_cents, 1);
}

std::string expected_price(std::int64_t cents) {
  return fmt::format("{}.{:02}", cents / 100, cents % 100);
}

std::string expected_qty(const feed::Trade& t) {
  std::uint64_t scale = 1;
  for (int d = 0; d < t.qty_decimals; ++d) scale *= 10;
  return fmt::format("{}.{:0{}}", t.qty_units / scale, t.qty_units % scale, t.qty_decimals);
}

TEST(FeedGenerator, TradeJsonParsesWithTheReceiversParserIntoTheSameValues) {
  for (const std::string_view symbol : {"BTCUSDT", "ETHUSDT", "SOLUSDT"}) {
    feed::SymbolGenerator generator(symbol, 11);
    simdjson::ondemand::parser parser;
    std::string json;
    for (int i = 0; i < 2000; ++i) {
      const feed::Trade t = generator.next();
      const std::int64_t trade_ms = 1'700'000'000'000 + i;
      const std::int64_t event_ms = trade_ms + 3;
      json.clear();
      feed::append_trade_json(json, symbol, t, event_ms, trade_ms);
      svc::Trade parsed;
      const char* error = nullptr;
      ASSERT_EQ(svc::parse_trade(parser, json, parsed, error), ParseOutcome::trade)
          << json << ": " << (error ? error : "");
      EXPECT_EQ(parsed.symbol.view(), symbol);
      EXPECT_EQ(parsed.trade_id, static_cast<std::int64_t>(t.id));
      EXPECT_EQ(parsed.price.view(), expected_price(t.price_cents)) << json;
      EXPECT_EQ(parsed.qty.view(), expected_qty(t)) << json;
      EXPECT_EQ(parsed.trade_time, trade_ms);
      EXPECT_EQ(parsed.event_time, event_ms);
      EXPECT_EQ(parsed.buyer_is_maker, t.buyer_maker);
    }
  }
}

TEST(FeedGenerator, TradeJsonHasTheDocumentedShape) {
  feed::Trade t;
  t.id = 5;
  t.price_cents = 6'000'005;
  t.qty_units = 1'234;
  t.qty_decimals = 3;
  t.buyer_maker = true;
  std::string json = "prefix:";  // appends
  feed::append_trade_json(json, "BTCUSDT", t, 20, 10);
  EXPECT_EQ(json, R"(prefix:{"e":"trade","E":20,"s":"BTCUSDT","t":5,"p":"60000.05","q":"1.234",)"
                  R"("T":10,"m":true})");
  t.qty_units = 7;
  t.qty_decimals = 8;
  t.price_cents = 1;
  t.buyer_maker = false;
  json.clear();
  feed::append_trade_json(json, "X", t, 0, 0);
  EXPECT_EQ(json,
            R"({"e":"trade","E":0,"s":"X","t":5,"p":"0.01","q":"0.00000007","T":0,"m":false})");
}

// The digest ts-pipeline compares with the rows in ticks: FNV-1a 64 over canonical lines
// (expected values computed independently from the documented line format).
TEST(FeedGenerator, TradeDigestHashesTheCanonicalLineOfEveryField) {
  feed::TradeDigest digest;
  EXPECT_EQ(digest.hex(), "cbf29ce484222325");  // FNV-1a offset basis: no trade yet
  feed::Trade t;
  t.id = 5;
  t.price_cents = 6'000'005;
  t.qty_units = 1234;
  t.qty_decimals = 3;
  t.buyer_maker = true;
  digest.add(t, 20, 10);  // "5|60000.05|1.234|10|20|1\n"
  EXPECT_EQ(digest.hex(), "ebf1465665aa6e6d");
  feed::Trade u;
  u.id = 6;
  u.price_cents = 10;
  u.qty_units = 10;
  u.qty_decimals = 8;
  u.buyer_maker = false;
  digest.add(u, 21, 11);  // "6|0.1|0.0000001|11|21|0\n": trailing zeros dropped
  EXPECT_EQ(digest.hex(), "5733af6343732120");

  // No fraction: no point ("6|60000|2|11|21|0\n").
  feed::TradeDigest whole;
  u.price_cents = 6'000'000;
  u.qty_units = 200'000'000;
  whole.add(u, 21, 11);
  EXPECT_EQ(whole.hex(), "856c2cf5307c5410");

  // Each field counts: the same trade with one field changed gives another digest.
  const auto of = [](const feed::Trade& trade, std::int64_t event_ms, std::int64_t trade_ms) {
    feed::TradeDigest d;
    d.add(trade, event_ms, trade_ms);
    return d.value();
  };
  const auto base = of(t, 20, 10);
  auto changed = t;
  changed.price_cents += 1;
  EXPECT_NE(of(changed, 20, 10), base);
  changed = t;
  changed.qty_units += 1;
  EXPECT_NE(of(changed, 20, 10), base);
  changed = t;
  changed.buyer_maker = false;
  EXPECT_NE(of(changed, 20, 10), base);
  changed = t;
  changed.id += 1;
  EXPECT_NE(of(changed, 20, 10), base);
  EXPECT_NE(of(t, 21, 10), base);
  EXPECT_NE(of(t, 20, 11), base);
}

using PacerClock = feed::Pacer::Clock;

TEST(FeedPacer, BatchSizesSumToRateTimesElapsed) {
  for (const double rate : {1000.0, 333.0, 2.5, 50'000.0}) {
    feed::Pacer pacer(rate);
    const auto start = PacerClock::time_point{} + std::chrono::hours(1);
    pacer.restart(start);
    EXPECT_EQ(pacer.take_due(start), 0u) << rate;
    std::uint64_t sum = 0;
    auto now = start;
    // Irregular wake-ups, all within the backlog limit (1 s).
    const std::chrono::microseconds steps[] = {
        std::chrono::microseconds(700), std::chrono::microseconds(13'000),
        std::chrono::microseconds(5'000), std::chrono::microseconds(250'000)};
    for (int i = 0; i < 400; ++i) {
      now += steps[i % 4];
      sum += pacer.take_due(now);
      const double elapsed = std::chrono::duration<double>(now - start).count();
      ASSERT_EQ(sum, static_cast<std::uint64_t>(std::floor(rate * elapsed)))
          << "rate " << rate << " after " << elapsed << " s";
    }
    EXPECT_EQ(pacer.skipped(), 0u);
  }
}

TEST(FeedPacer, NextDueIsWhenTheNextEventIsDue) {
  feed::Pacer pacer(1000.0);
  const auto start = PacerClock::time_point{} + std::chrono::hours(1);
  pacer.restart(start);
  EXPECT_EQ(pacer.next_due(), start + std::chrono::milliseconds(1));
  EXPECT_EQ(pacer.take_due(pacer.next_due() - std::chrono::nanoseconds(1)), 0u);
  EXPECT_EQ(pacer.take_due(pacer.next_due()), 1u);
  EXPECT_EQ(pacer.next_due(), start + std::chrono::milliseconds(2));
  // Asking again at the same time gives nothing more; going back in time gives nothing.
  EXPECT_EQ(pacer.take_due(start + std::chrono::milliseconds(1)), 0u);
  EXPECT_EQ(pacer.take_due(start), 0u);
  EXPECT_EQ(pacer.take_due(start + std::chrono::milliseconds(10)), 9u);
}

TEST(FeedPacer, ABacklogBeyondTheLimitIsSkippedAndCounted) {
  feed::Pacer pacer(1000.0, std::chrono::seconds(1));
  const auto start = PacerClock::time_point{} + std::chrono::hours(1);
  pacer.restart(start);
  EXPECT_EQ(pacer.take_due(start + std::chrono::seconds(5)), 1000u);
  EXPECT_EQ(pacer.skipped(), 4000u);
  // The schedule goes on from there: no burst afterwards.
  EXPECT_EQ(pacer.take_due(start + std::chrono::seconds(5) + std::chrono::milliseconds(10)), 10u);
  // restart() after an idle period: nothing due at once.
  const auto later = start + std::chrono::seconds(60);
  pacer.restart(later);
  EXPECT_EQ(pacer.take_due(later), 0u);
  EXPECT_EQ(pacer.take_due(later + std::chrono::milliseconds(3)), 3u);
  EXPECT_EQ(pacer.skipped(), 4000u);
}

// ---- key layout (F72) and stream IDs (F53) ---------------------------------------------------

TEST(KeyLayout, EverySymbolHasOneOfSixteenBucketStreams) {
  EXPECT_EQ(svc::kTradeBuckets, 16u);
  EXPECT_EQ(svc::trade_stream("BTCUSDT"), "md:{t02}:trades");
  EXPECT_EQ(svc::trade_stream("ETHUSDT"), "md:{t14}:trades");
  EXPECT_EQ(svc::bucket_stream(0), "md:{t00}:trades");
  EXPECT_EQ(svc::bucket_stream(15), "md:{t15}:trades");
  const auto all = svc::all_trade_streams();
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), svc::kTradeBuckets);
  // 500 generated symbols (names that differ in a few digits: a linear hash such as CRC16
  // spreads them badly) use every bucket, each within half and one and a half of its share.
  std::array<int, svc::kTradeBuckets> counts{};
  for (int i = 1; i <= 500; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "S%04dUSDT", i);
    ++counts[svc::trade_bucket(name)];
  }
  const int share = 500 / static_cast<int>(svc::kTradeBuckets);
  for (const int n : counts) {
    EXPECT_GT(n, share / 2);
    EXPECT_LT(n, share * 3 / 2);
  }
}

TEST(StreamId, ParsesComparesAndSteps) {
  const auto id = svc::StreamId::parse("1700000000000-5");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->ms, 1700000000000u);
  EXPECT_EQ(id->seq, 5u);
  EXPECT_EQ(id->next().text(), "1700000000000-6");
  EXPECT_EQ(svc::StreamId::parse("42")->text(), "42-0");
  EXPECT_LT(*svc::StreamId::parse("1-9"), *svc::StreamId::parse("2-0"));
  EXPECT_LT(*svc::StreamId::parse("2-9"), *svc::StreamId::parse("2-10"));
  const svc::StreamId last{7, UINT64_MAX};
  EXPECT_EQ(last.next().text(), "8-0");
  for (const char* bad :
       {"", "-", "1-", "-1", "a-1", "1-b", "1-2-3", " 1-2", "18446744073709551616-0"}) {
    EXPECT_FALSE(svc::StreamId::parse(bad).has_value()) << bad;
  }
}

}  // namespace

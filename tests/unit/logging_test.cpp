#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace trading_shared::core {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- a tiny JSON validator: one object per line, strings decoded
// ----------------------------------

/// Digits only, at least one.
bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// JSON number grammar: -?digits(.digits)?([eE][+-]?digits)? (std::regex trips GCC 12 warnings
/// under ASan, so by hand).
bool is_number(std::string_view s) {
  if (!s.empty() && s.front() == '-') {
    s.remove_prefix(1);
  }
  const std::size_t exp = s.find_first_of("eE");
  std::string_view mantissa = s.substr(0, exp);
  if (exp != std::string_view::npos) {
    std::string_view e = s.substr(exp + 1);
    if (!e.empty() && (e.front() == '+' || e.front() == '-')) {
      e.remove_prefix(1);
    }
    if (!is_digits(e)) {
      return false;
    }
  }
  const std::size_t dot = mantissa.find('.');
  if (dot == std::string_view::npos) {
    return is_digits(mantissa);
  }
  return is_digits(mantissa.substr(0, dot)) && is_digits(mantissa.substr(dot + 1));
}

/// `2026-05-01T12:34:56.789Z`: '0' in the pattern stands for a digit.
bool is_timestamp(std::string_view s) {
  constexpr std::string_view kPattern = "0000-00-00T00:00:00.000Z";
  if (s.size() != kPattern.size()) {
    return false;
  }
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool ok = kPattern[i] == '0' ? (s[i] >= '0' && s[i] <= '9') : s[i] == kPattern[i];
    if (!ok) {
      return false;
    }
  }
  return true;
}

/// Parses exactly one JSON value per call; records the top-level object's string members.
class JsonLine {
 public:
  /// Returns the string members of the object if `line` is exactly one JSON object.
  static std::optional<std::map<std::string, std::string>> parse_object(std::string_view line) {
    JsonLine p(line);
    std::map<std::string, std::string> members;
    if (!p.object(&members)) {
      return std::nullopt;
    }
    p.ws();
    if (p.pos_ != line.size()) {
      return std::nullopt;
    }
    return members;
  }

 private:
  explicit JsonLine(std::string_view s) : s_(s) {}

  void ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) {
      ++pos_;
    }
  }
  bool eat(char c) {
    ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  static void put_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  bool hex4(std::uint32_t& v) {
    if (s_.size() - pos_ < 4) {
      return false;
    }
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  bool string(std::string* out) {
    if (!eat('"')) {
      return false;
    }
    std::string value;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') {
        if (out != nullptr) {
          *out = std::move(value);
        }
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return false;  // raw control character
      }
      if (c != '\\') {
        value += c;
        continue;
      }
      if (pos_ >= s_.size()) {
        return false;
      }
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          value += '"';
          break;
        case '\\':
          value += '\\';
          break;
        case '/':
          value += '/';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'n':
          value += '\n';
          break;
        case 'r':
          value += '\r';
          break;
        case 't':
          value += '\t';
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!hex4(cp)) {
            return false;
          }
          put_utf8(value, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool scalar() {
    ws();
    const std::size_t start = pos_;
    while (pos_ < s_.size() &&
           std::string_view("-+.0123456789eEtruefalsn").find(s_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
    const std::string_view token = s_.substr(start, pos_ - start);
    if (token == "true" || token == "false" || token == "null") {
      return true;
    }
    return is_number(token);
  }
  bool value() {
    ws();
    if (pos_ >= s_.size()) {
      return false;
    }
    if (s_[pos_] == '"') {
      return string(nullptr);
    }
    if (s_[pos_] == '{') {
      return object(nullptr);
    }
    if (s_[pos_] == '[') {
      ++pos_;
      if (eat(']')) {
        return true;
      }
      do {
        if (!value()) {
          return false;
        }
      } while (eat(','));
      return eat(']');
    }
    return scalar();
  }
  bool object(std::map<std::string, std::string>* members) {
    if (!eat('{')) {
      return false;
    }
    if (eat('}')) {
      return true;
    }
    do {
      std::string key;
      if (!string(&key) || !eat(':')) {
        return false;
      }
      ws();
      if (pos_ < s_.size() && s_[pos_] == '"') {
        std::string v;
        if (!string(&v)) {
          return false;
        }
        if (members != nullptr) {
          if (members->count(key) != 0) {
            return false;  // duplicate member
          }
          (*members)[key] = std::move(v);
        }
      } else if (!value()) {
        return false;
      }
    } while (eat(','));
    return eat('}');
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

TEST(LogJsonValidatorTest, SelfCheck) {
  EXPECT_TRUE(JsonLine::parse_object(R"({"a":"b\n\u0001","c":1,"d":[true,null],"e":{}})"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"a":"b"} {"c":"d"})"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"a":"b)"));
  EXPECT_FALSE(JsonLine::parse_object("{\"a\":\"b\nc\"}"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"a":"\q"})"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"a":"1","a":"2"})"));
  EXPECT_TRUE(JsonLine::parse_object(R"({"n":-1.5e+3,"m":0})"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"n":1.})"));
  EXPECT_FALSE(JsonLine::parse_object(R"({"n":tru})"));
}

// ---- redaction
// ---------------------------------------------------------------------------------------

TEST(RedactTest, LibpqKeywordPasswords) {
  EXPECT_EQ(redact_secrets("host=db user=app password=secret dbname=x"),
            "host=db user=app password=*** dbname=x");
  EXPECT_EQ(redact_secrets("password=secret"), "password=***");
  EXPECT_EQ(redact_secrets("host=db PASSWORD = secret port=5432"),
            "host=db PASSWORD = *** port=5432");
  EXPECT_EQ(redact_secrets("host=db password='se cret' port=1"), "host=db password=*** port=1");
  EXPECT_EQ(redact_secrets(R"(password='it\'s secret' x=1)"), "password=*** x=1");
  EXPECT_EQ(redact_secrets(R"(password="a b")"), "password=***");
  EXPECT_EQ(redact_secrets("password='unterminated secret"), "password=***");
  EXPECT_EQ(redact_secrets("PGPASSWORD=secret psql"), "PGPASSWORD=*** psql");
  EXPECT_EQ(redact_secrets("db_password=secret"), "db_password=***");
  EXPECT_EQ(redact_secrets(R"({"user":"app","password": "secret"})"),
            R"({"user":"app","password": ***})");
  // libpq reads the value after blanks: "password= x" means the password is "x".
  EXPECT_EQ(redact_secrets("password= hunter2 host=db"), "password= *** host=db");
  // A backslash escapes the next character of an unquoted value, white space included:
  // libpq reads "password=\\ hunter2" as the password " hunter2" (found by fuzz/fuzz_url).
  EXPECT_EQ(redact_secrets("password=\\ hunter2 host=db"), "password=*** host=db");
  EXPECT_EQ(redact_secrets("password=\\\fhunter2 host=db"), "password=*** host=db");
  EXPECT_EQ(redact_secrets("password=a\\ b\\\\ c"), "password=*** c");
}

TEST(RedactTest, UriPasswords) {
  EXPECT_EQ(redact_secrets("postgresql://user:secret@host:5432/db"),
            "postgresql://user:***@host:5432/db");
  EXPECT_EQ(redact_secrets("connecting to redis://user:secret@h:6379/0 now"),
            "connecting to redis://user:***@h:6379/0 now");
  EXPECT_EQ(redact_secrets("redis://:secret@h"), "redis://:***@h");
  EXPECT_EQ(redact_secrets("rediss://default:p%40ss@cache"), "rediss://default:***@cache");
  EXPECT_EQ(redact_secrets("postgres://u:p@ss@h1:5432,h2:5432/db?sslmode=require"),
            "postgres://u:***@h1:5432,h2:5432/db?sslmode=require");
  EXPECT_EQ(redact_secrets("a redis://:x@h and postgresql://u:y@h"),
            "a redis://:***@h and postgresql://u:***@h");
  // A user name alone is not a secret.
  EXPECT_EQ(redact_secrets("postgresql://app@host/db"), "postgresql://app@host/db");
  EXPECT_EQ(redact_secrets("postgresql://host:5432/db"), "postgresql://host:5432/db");
}

TEST(RedactTest, RedisAuth) {
  EXPECT_EQ(redact_secrets("AUTH secret"), "AUTH ***");
  EXPECT_EQ(redact_secrets("command AUTH default secret failed"), "command AUTH *** *** failed");
  EXPECT_EQ(redact_secrets("auth secret"), "auth ***");
  EXPECT_EQ(redact_secrets("HELLO 3 AUTH app secret SETNAME x"), "HELLO 3 AUTH *** *** SETNAME x");
  EXPECT_EQ(redact_secrets("AUTH secret\nnext line"), "AUTH ***\nnext line");
  EXPECT_EQ(redact_secrets("*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n"),
            "*2\r\n$4\r\nAUTH\r\n$6\r\n***\r\n");
  EXPECT_EQ(redact_secrets("*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$6\r\nsecret\r\n*1\r\n$4\r\nPING\r\n"),
            "*3\r\n$4\r\nAUTH\r\n$3\r\n***\r\n$6\r\n***\r\n*1\r\n$4\r\nPING\r\n");
  EXPECT_EQ(redact_secrets(R"(*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n)"),
            R"(*2\r\n$4\r\nAUTH\r\n$6\r\n***\r\n)");
}

TEST(RedactTest, NoFalsePositives) {
  for (const char* text : {
           "passwords are redacted",
           "password: wrong (see the server log)",
           "the password is never logged",
           "password=",
           "authentication failed",
           "OAuth token refresh",
           "auth:ok",
           "AUTH",
           "http://example.com/path?q=1",
           "mail user@example.com about host:5432",
           "ratio 3:2 at 12:00://",
           "",
       }) {
    EXPECT_EQ(redact_secrets(text), text) << text;
  }
}

TEST(RedactTest, AliasAndBufferForm) {
  EXPECT_EQ(redact_dsn("host=h password=x"), "host=h password=***");
  spdlog::memory_buf_t buf;
  redact_secrets_to("a password=x b", buf);
  EXPECT_EQ(std::string(buf.data(), buf.size()), "a password=*** b");
}

// ---- JSON escaping
// -----------------------------------------------------------------------------------

TEST(LogJsonEscapeTest, Escapes) {
  EXPECT_EQ(json_escape("plain"), "plain");
  EXPECT_EQ(json_escape(R"(say "hi")"), R"(say \"hi\")");
  EXPECT_EQ(json_escape(R"(C:\path)"), R"(C:\\path)");
  EXPECT_EQ(json_escape("a\nb\rc\td\be\ff"), R"(a\nb\rc\td\be\ff)");
  EXPECT_EQ(json_escape(std::string_view("\x01\x1f\0", 3)), R"(\u0001\u001f\u0000)");
  EXPECT_EQ(json_escape("\x7f"), "\x7f");
  EXPECT_EQ(json_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80");
  EXPECT_EQ(json_escape("bad \xff byte"), R"(bad \ufffd byte)");
  EXPECT_EQ(json_escape("truncated \xe2\x82"), R"(truncated \ufffd\ufffd)");
  EXPECT_EQ(json_escape("overlong \xc0\xaf"), R"(overlong \ufffd\ufffd)");
  EXPECT_EQ(json_escape("surrogate \xed\xa0\x80"), R"(surrogate \ufffd\ufffd\ufffd)");
}

// ---- levels and formats
// ------------------------------------------------------------------------------

TEST(LogLevelTest, ParsesLevels) {
  EXPECT_EQ(parse_log_level("trace"), spdlog::level::trace);
  EXPECT_EQ(parse_log_level("DEBUG"), spdlog::level::debug);
  EXPECT_EQ(parse_log_level("info"), spdlog::level::info);
  EXPECT_EQ(parse_log_level("warn"), spdlog::level::warn);
  EXPECT_EQ(parse_log_level("Warning"), spdlog::level::warn);
  EXPECT_EQ(parse_log_level("error"), spdlog::level::err);
  EXPECT_EQ(parse_log_level("err"), spdlog::level::err);
  EXPECT_EQ(parse_log_level("critical"), spdlog::level::critical);
  EXPECT_EQ(parse_log_level("off"), spdlog::level::off);
  EXPECT_EQ(log_level_name(spdlog::level::err), "error");
  EXPECT_EQ(log_level_name(spdlog::level::warn), "warn");
  for (const char* bad : {"", "verbose", "info ", "5"}) {
    try {
      parse_log_level(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_STREQ(e.what(), "expected one of trace, debug, info, warn, error, critical, off");
    }
  }
  EXPECT_EQ(parse_log_format("JSON"), LogFormat::json);
  EXPECT_EQ(parse_log_format("text"), LogFormat::text);
  EXPECT_THROW(parse_log_format("xml"), std::invalid_argument);
}

TEST(LogLevelTest, ConfigSettings) {
  LogConfig config;
  ConfigLoader loader("prog", "");
  add_log_settings(loader, config);
  const char* argv[] = {"prog", "--log-format=json", nullptr};
  const EnvLookup env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "TS_LOG_LEVEL") {
      return "debug";
    }
    return std::nullopt;
  };
  loader.load(2, argv, env);
  EXPECT_EQ(config.level, spdlog::level::debug);
  EXPECT_EQ(config.format, LogFormat::json);
  EXPECT_EQ(loader.effective_config_summary(), "log.level=debug log.format=json");
  EXPECT_THAT(loader.help_text(),
              HasSubstr("--log-level trace|debug|info|warn|error|critical|off"));

  const char* bad[] = {"prog", "--log-level", "loud", nullptr};
  try {
    loader.load(3, bad, env);
    ADD_FAILURE() << "accepted a bad level";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "invalid value \"loud\" for --log-level (from command line): expected one of "
                 "trace, debug, info, warn, error, critical, off");
  }
}

// ---- formatters and setup
// ----------------------------------------------------------------------------

std::string format_one(const LogConfig& config, std::string_view logger_name,
                       spdlog::level::level_enum level, std::string_view payload,
                       std::chrono::system_clock::time_point time) {
  auto formatter = make_log_formatter(config);
  const spdlog::details::log_msg msg(time, spdlog::source_loc{},
                                     spdlog::string_view_t(logger_name.data(), logger_name.size()),
                                     level, spdlog::string_view_t(payload.data(), payload.size()));
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  return {out.data(), out.size()};
}

std::chrono::system_clock::time_point fixed_time() {
  // 2026-05-01T12:34:56.789Z
  return std::chrono::system_clock::time_point(std::chrono::seconds(1777638896)) +
         std::chrono::milliseconds(789);
}

TEST(LogFormatterTest, JsonRecordIsExact) {
  const LogConfig config{spdlog::level::info, LogFormat::json, "ts-recorder"};
  EXPECT_EQ(format_one(config, "pg", spdlog::level::warn, "connect to \"db\" failed: password=x\n",
                       fixed_time()),
            R"({"ts":"2026-05-01T12:34:56.789Z","level":"warn","service":"ts-recorder",)"
            R"("component":"pg","msg":"connect to \"db\" failed: password=***\n"})"
            "\n");
  // The default logger has no component.
  EXPECT_EQ(format_one(config, "", spdlog::level::info, "up", fixed_time()),
            R"({"ts":"2026-05-01T12:34:56.789Z","level":"info","service":"ts-recorder","msg":"up"})"
            "\n");
}

TEST(LogFormatterTest, TextRecordIsExact) {
  const LogConfig config{spdlog::level::info, LogFormat::text, "ts-recorder"};
  EXPECT_EQ(
      format_one(config, "redis", spdlog::level::err, "AUTH secret\nrejected\x01", fixed_time()),
      "2026-05-01T12:34:56.789Z error ts-recorder [redis] AUTH ***\\nrejected\\x01\n");
  const LogConfig anonymous{spdlog::level::info, LogFormat::text, ""};
  EXPECT_EQ(format_one(anonymous, "", spdlog::level::info, "up", fixed_time()),
            "2026-05-01T12:34:56.789Z info  up\n");
  EXPECT_EQ(format_one(anonymous, "", spdlog::level::info, "before",
                       std::chrono::system_clock::time_point{} - std::chrono::milliseconds(1)),
            "1969-12-31T23:59:59.999Z info  before\n");
}

class LoggingTest : public ::testing::Test {
 protected:
  void TearDown() override { setup_logging(LogConfig{}); }

  void setup(LogFormat format, spdlog::level::level_enum level = spdlog::level::info) {
    setup_logging(LogConfig{level, format, "ts-test"},
                  std::make_shared<spdlog::sinks::ostream_sink_mt>(out_, true));
  }
  std::ostringstream out_;
};

TEST_F(LoggingTest, JsonLinesParseAsOneObjectEach) {
  auto early = logger("logtest-pg");  // created before setup: must follow the new config
  setup(LogFormat::json);
  const std::string nasty = "quote \" backslash \\ newline \n tab \t bell \x07 end";
  early->info("{}", nasty);
  logger("logtest-redis")->warn("reconnecting to redis://:hunter2@cache:6379");
  spdlog::error("default logger with password='a b'");
  logger("logtest-pg")->debug("filtered out at info");

  const auto lines = lines_of(out_.str());
  ASSERT_EQ(lines.size(), 3U) << out_.str();
  std::vector<std::map<std::string, std::string>> records;
  for (const auto& line : lines) {
    auto record = JsonLine::parse_object(line);
    ASSERT_TRUE(record.has_value()) << line;
    EXPECT_TRUE(is_timestamp((*record)["ts"])) << line;
    EXPECT_EQ((*record)["service"], "ts-test");
    records.push_back(std::move(*record));
  }
  EXPECT_EQ(records[0]["component"], "logtest-pg");
  EXPECT_EQ(records[0]["level"], "info");
  EXPECT_EQ(records[0]["msg"], nasty);
  EXPECT_EQ(records[1]["component"], "logtest-redis");
  EXPECT_EQ(records[1]["level"], "warn");
  EXPECT_EQ(records[1]["msg"], "reconnecting to redis://:***@cache:6379");
  EXPECT_EQ(records[2].count("component"), 0U);
  EXPECT_EQ(records[2]["level"], "error");
  EXPECT_EQ(records[2]["msg"], "default logger with password=***");
  EXPECT_THAT(out_.str(), Not(HasSubstr("hunter2")));
}

TEST_F(LoggingTest, TextLinesAreOneRecordEach) {
  setup(LogFormat::text, spdlog::level::debug);
  logger("logtest-ws")->debug("line one\nline two password=x");
  const auto lines = lines_of(out_.str());
  ASSERT_EQ(lines.size(), 1U) << out_.str();
  ASSERT_GT(lines[0].size(), 24U);
  EXPECT_TRUE(is_timestamp(lines[0].substr(0, 24))) << lines[0];
  EXPECT_EQ(lines[0].substr(24), R"( debug ts-test [logtest-ws] line one\nline two password=***)");
}

TEST_F(LoggingTest, ComponentLoggersAreSharedAndFollowTheLevel) {
  setup(LogFormat::json, spdlog::level::warn);
  auto a = logger("logtest-shared");
  EXPECT_EQ(a, logger("logtest-shared"));
  EXPECT_EQ(logger(""), spdlog::default_logger());
  a->info("dropped");
  a->warn("kept");
  setup(LogFormat::json, spdlog::level::off);
  a->critical("dropped too");
  const auto lines = lines_of(out_.str());
  ASSERT_EQ(lines.size(), 1U) << out_.str();
  EXPECT_THAT(lines[0], HasSubstr(R"("msg":"kept")"));
}

}  // namespace
}  // namespace trading_shared::core

#include <trading_shared/core/config.hpp>

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace trading_shared::core {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::Not;

/// argv built from strings (argv[0] is the program).
class Args {
 public:
  Args(std::initializer_list<std::string> args) : storage_{"prog"} {
    storage_.insert(storage_.end(), args.begin(), args.end());
    for (const auto& s : storage_) {
      pointers_.push_back(s.c_str());
    }
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(storage_.size()); }
  const char* const* argv() const { return pointers_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<const char*> pointers_;
};

/// A fake environment.
EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) {
      return std::nullopt;
    }
    return it->second;
  };
}

/// A TOML file in the test's temporary directory, removed at the end.
class TempFile {
 public:
  explicit TempFile(const std::string& content, const std::string& suffix = ".toml") {
    static std::atomic<int> counter{0};
    path_ = ::testing::TempDir() + "ts_config_test_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++) + suffix;
    std::ofstream out(path_, std::ios::binary);
    out << content;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Runs `load` and returns the ConfigError message (fails the test if nothing was thrown).
std::string load_error(ConfigLoader& loader, const Args& args, const EnvLookup& env = env_of({})) {
  try {
    loader.load(args.argc(), args.argv(), env);
  } catch (const ConfigError& e) {
    std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

ConfigSource source_of(const ConfigLoader& loader, const std::string& key) {
  for (const auto& s : loader.effective_config()) {
    if (s.key == key) {
      return s.source;
    }
  }
  ADD_FAILURE() << "no key " << key;
  return ConfigSource::default_value;
}

// ---- precedence
// ------------------------------------------------------------------------------------

struct PrecedenceCase {
  bool flag;
  bool env;
  bool file;
  const char* expected;
  ConfigSource source;
};

TEST(ConfigLoaderTest, PrecedenceFlagOverEnvOverFileOverDefault) {
  const PrecedenceCase cases[] = {
      {false, false, false, "default", ConfigSource::default_value},
      {false, false, true, "file", ConfigSource::config_file},
      {false, true, false, "env", ConfigSource::environment},
      {true, false, false, "flag", ConfigSource::command_line},
      {false, true, true, "env", ConfigSource::environment},    // env > file
      {true, false, true, "flag", ConfigSource::command_line},  // flag > file
      {true, true, false, "flag", ConfigSource::command_line},  // flag > env
      {true, true, true, "flag", ConfigSource::command_line},
  };
  TempFile file("[redis]\nurl = \"file\"\n");
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "flag=" << c.flag << " env=" << c.env << " file=" << c.file);
    std::string url = "default";
    ConfigLoader loader("prog", "");
    loader.add(url, {"redis.url", "Redis URL."});
    std::map<std::string, std::string> vars;
    if (c.env) {
      vars["TS_REDIS_URL"] = "env";
    }
    if (c.file) {
      vars["TS_CONFIG"] = file.path();
    }
    const Args args = c.flag ? Args{"--redis-url", "flag"} : Args{};
    const LoadResult result = loader.load(args.argc(), args.argv(), env_of(vars));
    EXPECT_FALSE(result.help_requested);
    EXPECT_EQ(url, c.expected);
    EXPECT_EQ(source_of(loader, "redis.url"), c.source);
    EXPECT_EQ(result.config_file.has_value(), c.file);
  }
}

TEST(ConfigLoaderTest, ConfigFlagBeatsConfigEnv) {
  TempFile from_flag("name = \"from-flag\"\n");
  TempFile from_env("name = \"from-env\"\n");
  std::string name;
  ConfigLoader loader("prog", "");
  loader.add(name, {"name", ""});
  const Args args{"--config=" + from_flag.path()};
  const auto result =
      loader.load(args.argc(), args.argv(), env_of({{"TS_CONFIG", from_env.path()}}));
  EXPECT_EQ(name, "from-flag");
  EXPECT_EQ(result.config_file, from_flag.path());
}

TEST(ConfigLoaderTest, EmptyEnvironmentVariableCountsAsUnset) {
  TempFile file("pool_size = 7\nname = \"file\"\n");
  int pool_size = 1;
  std::string name = "default";
  ConfigLoader loader("prog", "");
  loader.add(pool_size, {"pool_size", ""}).add(name, {"name", ""});
  const Args args{"--config", file.path()};
  loader.load(args.argc(), args.argv(), env_of({{"TS_POOL_SIZE", ""}, {"TS_NAME", ""}}));
  EXPECT_EQ(pool_size, 7);
  EXPECT_EQ(name, "file");
  // An empty TS_CONFIG names no file either.
  ConfigLoader other("prog", "");
  int n = 1;
  other.add(n, {"n", ""});
  const Args none{};
  EXPECT_FALSE(other.load(none.argc(), none.argv(), env_of({{"TS_CONFIG", ""}})).config_file);
}

TEST(ConfigLoaderTest, EmptyValueFromFlagOrFileSetsEmptyString) {
  TempFile file("b = \"\"\n");
  std::string a = "x";
  std::string b = "y";
  std::optional<std::string> c;
  ConfigLoader loader("prog", "");
  loader.add(a, {"a", ""}).add(b, {"b", ""}).add(c, {"c", ""});
  const Args args{"--a=", "--c=", "--config", file.path()};
  loader.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(a, "");
  EXPECT_EQ(b, "");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(*c, "");
}

TEST(ConfigLoaderTest, CustomEnvPrefix) {
  int port = 0;
  ConfigLoader loader("prog", "");
  loader.env_prefix("APP_").add(port, {"http.port", ""});
  EXPECT_EQ(loader.env_var_for("http.port"), "APP_HTTP_PORT");
  const Args args{};
  loader.load(args.argc(), args.argv(), env_of({{"APP_HTTP_PORT", "8080"}, {"TS_HTTP_PORT", "1"}}));
  EXPECT_EQ(port, 8080);
}

TEST(ConfigLoaderTest, DerivedNames) {
  EXPECT_EQ(ConfigLoader::flag_for("postgres.pool_size"), "--postgres-pool-size");
  ConfigLoader loader("prog", "");
  EXPECT_EQ(loader.env_var_for("postgres.pool_size"), "TS_POSTGRES_POOL_SIZE");
  EXPECT_EQ(loader.env_var_for("feed.max-lag"), "TS_FEED_MAX_LAG");
}

TEST(ConfigLoaderTest, RepeatedFlagTakesTheLastValue) {
  int n = 0;
  ConfigLoader loader("prog", "");
  loader.add(n, {"n", ""});
  const Args args{"--n", "1", "--n=2"};
  loader.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(n, 2);
}

TEST(ConfigLoaderTest, EveryPresentSourceIsValidatedEvenWhenOverridden) {
  TempFile file("n = \"ten\"\n");
  int n = 0;
  ConfigLoader loader("prog", "");
  loader.add(n, {"n", ""});
  const std::string message = load_error(loader, Args{"--n", "3", "--config", file.path()});
  EXPECT_THAT(message, HasSubstr("config file"));
}

// ---- types
// -------------------------------------------------------------------------------------------

/// Loads one setting of type T from the command line.
template <class T>
T from_flag(const std::string& value, T initial = T{}) {
  T target = initial;
  ConfigLoader loader("prog", "");
  loader.add(target, {"v", ""});
  const Args args{"--v=" + value};
  loader.load(args.argc(), args.argv(), env_of({}));
  return target;
}

/// The error of loading `value` into a setting of type T from the environment.
template <class T>
std::string env_error(const std::string& value) {
  T target{};
  ConfigLoader loader("prog", "");
  loader.add(target, {"v", ""});
  return load_error(loader, Args{}, env_of({{"TS_V", value}}));
}

/// Loads one setting of type T from a TOML value.
template <class T>
T from_toml(const std::string& toml_value, T initial = T{}) {
  TempFile file("v = " + toml_value + "\n");
  T target = initial;
  ConfigLoader loader("prog", "");
  loader.add(target, {"v", ""});
  const Args args{"--config", file.path()};
  loader.load(args.argc(), args.argv(), env_of({}));
  return target;
}

template <class T>
std::string toml_error(const std::string& toml_value) {
  TempFile file("\nv = " + toml_value + "\n");
  T target{};
  ConfigLoader loader("prog", "");
  loader.add(target, {"v", ""});
  return load_error(loader, Args{"--config", file.path()});
}

TEST(ConfigTypesTest, Strings) {
  EXPECT_EQ(from_flag<std::string>("a b=c"), "a b=c");
  EXPECT_EQ(from_toml<std::string>("\"x y\""), "x y");
  EXPECT_THAT(toml_error<std::string>("5"), HasSubstr("invalid value 5 for v"));
  EXPECT_THAT(toml_error<std::string>("5"), HasSubstr("expected a string"));
}

TEST(ConfigTypesTest, OptionalString) {
  std::optional<std::string> unset;
  ConfigLoader loader("prog", "");
  loader.add(unset, {"v", ""});
  const Args none{};
  loader.load(none.argc(), none.argv(), env_of({}));
  EXPECT_FALSE(unset.has_value());
  EXPECT_EQ(loader.effective_config_summary(), "v=<unset>");
  EXPECT_EQ(from_flag<std::optional<std::string>>("x"), std::optional<std::string>("x"));
  EXPECT_EQ(from_toml<std::optional<std::string>>("\"y\""), std::optional<std::string>("y"));
}

TEST(ConfigTypesTest, Booleans) {
  for (const char* t : {"true", "TRUE", "1", "yes", "on", "On"}) {
    EXPECT_TRUE(from_flag<bool>(t)) << t;
  }
  for (const char* f : {"false", "False", "0", "no", "off"}) {
    EXPECT_FALSE(from_flag<bool>(f, true)) << f;
  }
  EXPECT_THAT(env_error<bool>("maybe"), HasSubstr("expected a boolean"));
  EXPECT_TRUE(from_toml<bool>("true"));
  EXPECT_THAT(toml_error<bool>("\"true\""), HasSubstr("expected a boolean"));

  // A bare flag means true; its value cannot be the next argument.
  bool b = false;
  ConfigLoader loader("prog", "");
  loader.add(b, {"dry_run", ""});
  const Args bare{"--dry-run"};
  loader.load(bare.argc(), bare.argv(), env_of({}));
  EXPECT_TRUE(b);
  EXPECT_THAT(load_error(loader, Args{"--dry-run", "false"}),
              HasSubstr("unexpected argument \"false\" (boolean flags take a value only as "
                        "--dry-run=false)"));
}

TEST(ConfigTypesTest, SignedIntegers) {
  EXPECT_EQ(from_flag<int>("-42"), -42);
  EXPECT_EQ(from_flag<int>("+7"), 7);
  EXPECT_EQ(from_flag<std::int64_t>("-9223372036854775808"),
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(from_toml<int>("12"), 12);
  EXPECT_EQ(from_toml<std::int64_t>("-5"), -5);
  EXPECT_EQ(env_error<int>("abc"),
            "invalid value \"abc\" for --v (from environment variable TS_V): expected an integer");
  for (const char* bad : {"", " 1", "1 ", "1.5", "0x10", "1e3", "--1", "+-1", "12abc"}) {
    if (std::string(bad).empty()) {
      continue;  // empty env = unset
    }
    EXPECT_THAT(env_error<int>(bad), HasSubstr("expected an integer")) << bad;
  }
  EXPECT_THAT(env_error<int>("2147483648"),
              HasSubstr("expected an integer between -2147483648 and 2147483647"));
  EXPECT_THAT(env_error<std::int64_t>("9223372036854775808"),
              HasSubstr("expected an integer between -9223372036854775808"));
  EXPECT_THAT(toml_error<int>("1.5"), HasSubstr("expected an integer"));
  EXPECT_THAT(toml_error<int>("3000000000"), HasSubstr("between -2147483648 and 2147483647"));
}

TEST(ConfigTypesTest, UnsignedIntegers) {
  EXPECT_EQ(from_flag<std::uint16_t>("65535"), 65535);
  EXPECT_EQ(from_flag<std::uint32_t>("4294967295"), 4294967295U);
  EXPECT_EQ(from_flag<std::uint64_t>("18446744073709551615"),
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(from_flag<std::size_t>("3"), 3U);
  EXPECT_EQ(from_toml<std::uint16_t>("8080"), 8080);
  EXPECT_EQ(env_error<std::uint16_t>("65536"),
            "invalid value \"65536\" for --v (from environment variable TS_V): expected an integer "
            "between 0 and 65535");
  EXPECT_THAT(env_error<std::uint16_t>("-1"), HasSubstr("between 0 and 65535"));
  EXPECT_THAT(env_error<std::uint32_t>("-0"), HasSubstr("between 0 and 4294967295"));
  EXPECT_THAT(env_error<std::uint64_t>("18446744073709551616"),
              HasSubstr("between 0 and 18446744073709551615"));
  EXPECT_THAT(toml_error<std::uint16_t>("-1"), HasSubstr("between 0 and 65535"));
  EXPECT_THAT(toml_error<std::uint64_t>("-1"), HasSubstr("between 0 and 18446744073709551615"));
}

TEST(ConfigTypesTest, Doubles) {
  EXPECT_DOUBLE_EQ(from_flag<double>("0.25"), 0.25);
  EXPECT_DOUBLE_EQ(from_flag<double>("-3e2"), -300.0);
  EXPECT_DOUBLE_EQ(from_toml<double>("1.5"), 1.5);
  EXPECT_DOUBLE_EQ(from_toml<double>("2"), 2.0);
  for (const char* bad : {"abc", "1.5x", "nan", "inf", "1,5"}) {
    EXPECT_THAT(env_error<double>(bad), HasSubstr("expected a number")) << bad;
  }
  EXPECT_THAT(toml_error<double>("nan"), HasSubstr("expected a number"));
  EXPECT_THAT(toml_error<double>("\"1.5\""), HasSubstr("expected a number"));
}

TEST(ConfigTypesTest, Durations) {
  EXPECT_EQ(from_flag<milliseconds>("250ms"), milliseconds(250));
  EXPECT_EQ(from_flag<milliseconds>("2s"), milliseconds(2000));
  EXPECT_EQ(from_flag<milliseconds>("1m"), milliseconds(60'000));
  EXPECT_EQ(from_flag<milliseconds>("1h"), milliseconds(3'600'000));
  EXPECT_EQ(from_flag<milliseconds>("1500"), milliseconds(1500));
  EXPECT_EQ(from_flag<milliseconds>("0"), milliseconds(0));
  EXPECT_EQ(from_toml<milliseconds>("750"), milliseconds(750));
  EXPECT_EQ(from_toml<milliseconds>("\"5s\""), milliseconds(5000));
  for (const char* bad : {"2x", "-5s", "1.5s", "s", "2 s", "5sec", "1d", "ms"}) {
    EXPECT_THAT(env_error<milliseconds>(bad), HasSubstr("expected a duration such as 250ms"))
        << bad;
  }
  EXPECT_THAT(env_error<milliseconds>("9223372036854775807h"), HasSubstr("fits in 64-bit"));
  EXPECT_THAT(toml_error<milliseconds>("-1"), HasSubstr("expected a duration"));
  EXPECT_THAT(toml_error<milliseconds>("1.5"), HasSubstr("expected a duration"));
  EXPECT_THAT(toml_error<milliseconds>("\"soon\""), HasSubstr("expected a duration"));
}

TEST(ConfigTypesTest, DurationsAreRenderedInTheLargestExactUnit) {
  milliseconds a{250}, b{2000}, c{90'000}, d{7'200'000}, e{0};
  ConfigLoader loader("prog", "");
  loader.add(a, {"a", ""}).add(b, {"b", ""}).add(c, {"c", ""}).add(d, {"d", ""}).add(e, {"e", ""});
  EXPECT_EQ(loader.effective_config_summary(), "a=250ms b=2s c=90s d=2h e=0ms");
}

TEST(ConfigTypesTest, Lists) {
  using List = std::vector<std::string>;
  EXPECT_EQ(from_flag<List>("BTCUSDT,ETHUSDT"), (List{"BTCUSDT", "ETHUSDT"}));
  EXPECT_EQ(from_flag<List>(" a , b ,, c,"), (List{"a", "b", "c"}));
  EXPECT_EQ(from_flag<List>("", List{"x"}), List{});
  EXPECT_EQ(from_toml<List>("[\"a\", \"b c\"]"), (List{"a", "b c"}));
  EXPECT_EQ(from_toml<List>("[]", List{"x"}), List{});
  EXPECT_THAT(toml_error<List>("\"a,b\""), HasSubstr("expected an array of strings"));
  EXPECT_THAT(toml_error<List>("[\"a\", 1]"), HasSubstr("expected an array of strings"));

  List symbols;
  ConfigLoader loader("prog", "");
  loader.add(symbols, {"symbols", ""});
  const Args none{};
  loader.load(none.argc(), none.argv(), env_of({{"TS_SYMBOLS", "BTCUSDT, SOLUSDT"}}));
  EXPECT_EQ(symbols, (List{"BTCUSDT", "SOLUSDT"}));
  EXPECT_EQ(loader.effective_config_summary(), "symbols=BTCUSDT,SOLUSDT");
}

TEST(ConfigTypesTest, CustomSettings) {
  enum class Mode { fast, safe };
  Mode mode = Mode::safe;
  const auto parse = [&mode](std::string_view v) {
    if (v == "fast") {
      mode = Mode::fast;
    } else if (v == "safe") {
      mode = Mode::safe;
    } else {
      throw std::invalid_argument("expected fast or safe");
    }
  };
  const auto format = [&mode] { return std::string(mode == Mode::fast ? "fast" : "safe"); };
  ConfigLoader loader("prog", "");
  loader.add_custom({"mode", "Mode."}, {"fast|safe", parse, format});
  EXPECT_THAT(loader.help_text(), HasSubstr("--mode fast|safe"));
  EXPECT_THAT(loader.help_text(), HasSubstr("default: safe"));
  const Args args{"--mode", "fast"};
  loader.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(mode, Mode::fast);
  EXPECT_EQ(load_error(loader, Args{"--mode=slow"}),
            "invalid value \"slow\" for --mode (from command line): expected fast or safe");
  TempFile file("mode = 1\n");
  EXPECT_THAT(load_error(loader, Args{"--config", file.path()}), HasSubstr("expected a string"));
}

// ---- errors
// ----------------------------------------------------------------------------------------

class ConfigErrorTest : public ::testing::Test {
 protected:
  ConfigErrorTest() {
    loader_.add(dsn_, {"postgres.dsn", "DSN.", true})
        .add(pool_size_, {"postgres.pool_size", "Pool size."})
        .add(port_, {"http.port", "Port."});
  }
  std::string dsn_ = "host=h password=hunter2";
  int pool_size_ = 2;
  std::uint16_t port_ = 80;
  ConfigLoader loader_{"prog", ""};
};

TEST_F(ConfigErrorTest, UnknownOptionWithHint) {
  EXPECT_EQ(load_error(loader_, Args{"--foo"}), "unknown option --foo");
  EXPECT_EQ(load_error(loader_, Args{"--foo=bar"}), "unknown option --foo");
  EXPECT_EQ(load_error(loader_, Args{"--postgres-pool-sise=3"}),
            "unknown option --postgres-pool-sise; did you mean --postgres-pool-size?");
  EXPECT_EQ(load_error(loader_, Args{"-x"}), "unknown option -x");
}

TEST_F(ConfigErrorTest, MissingValue) {
  EXPECT_EQ(load_error(loader_, Args{"--http-port"}), "option --http-port requires a value");
  EXPECT_EQ(load_error(loader_, Args{"--http-port", "--postgres-pool-size=1"}),
            "option --http-port requires a value");
  EXPECT_EQ(load_error(loader_, Args{"--config"}), "option --config requires a value");
  EXPECT_EQ(load_error(loader_, Args{"--config="}), "option --config requires a file name");
}

TEST_F(ConfigErrorTest, NegativeNumbersAreValuesNotOptions) {
  EXPECT_THAT(load_error(loader_, Args{"--http-port", "-1"}),
              HasSubstr("invalid value \"-1\" for --http-port (from command line): expected an "
                        "integer between 0 and 65535"));
  const Args args{"--postgres-pool-size", "-1"};
  loader_.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(pool_size_, -1);
}

TEST_F(ConfigErrorTest, PositionalArguments) {
  EXPECT_EQ(load_error(loader_, Args{"migrate"}), "unexpected argument \"migrate\"");
  EXPECT_EQ(load_error(loader_, Args{""}), "unexpected argument \"\"");
  loader_.allow_positional("COMMAND");
  const Args args{"migrate", "--http-port", "81", "--", "--not-an-option"};
  const auto result = loader_.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(result.positional, (std::vector<std::string>{"migrate", "--not-an-option"}));
  EXPECT_EQ(port_, 81);
  EXPECT_THAT(loader_.help_text(), HasSubstr("Usage: prog [OPTIONS] [--] COMMAND..."));
}

TEST_F(ConfigErrorTest, ValueFromEachSourceNamesTheSource) {
  EXPECT_EQ(load_error(loader_, Args{"--postgres-pool-size", "abc"}),
            "invalid value \"abc\" for --postgres-pool-size (from command line): expected an "
            "integer");
  EXPECT_EQ(load_error(loader_, Args{}, env_of({{"TS_POSTGRES_POOL_SIZE", "abc"}})),
            "invalid value \"abc\" for --postgres-pool-size (from environment variable "
            "TS_POSTGRES_POOL_SIZE): expected an integer");
  TempFile file("[postgres]\npool_size = \"abc\"\n");
  EXPECT_EQ(load_error(loader_, Args{"--config", file.path()}),
            "invalid value \"abc\" for postgres.pool_size (from config file " + file.path() +
                ", line 2, column 13): expected an integer");
}

TEST_F(ConfigErrorTest, ValuesAreQuotedOnOneLine) {
  const std::string message = load_error(loader_, Args{"--http-port=1\n2"});
  EXPECT_EQ(message,
            "invalid value \"1\\n2\" for --http-port (from command line): expected an integer");
}

TEST_F(ConfigErrorTest, ConfigFileCannotBeOpened) {
  const std::string missing = ::testing::TempDir() + "ts_config_test_missing.toml";
  EXPECT_EQ(load_error(loader_, Args{"--config", missing}),
            "config file " + missing + ": cannot open: No such file or directory");
  EXPECT_THAT(load_error(loader_, Args{}, env_of({{"TS_CONFIG", missing}})),
              HasSubstr("cannot open"));
  EXPECT_THAT(load_error(loader_, Args{"--config", ::testing::TempDir()}),
              HasSubstr("cannot read: Is a directory"));
}

TEST_F(ConfigErrorTest, ConfigFileSyntaxErrorHasLineAndColumn) {
  TempFile file("[postgres]\npool_size = 3\nhttp port = 1\n");
  const std::string message = load_error(loader_, Args{"--config", file.path()});
  EXPECT_THAT(message, HasSubstr("config file " + file.path() + ": line 3, column 6: "));
}

TEST_F(ConfigErrorTest, UnknownKeysAreErrors) {
  TempFile typo("[postgres]\ndsnn = \"x\"\n");
  EXPECT_EQ(load_error(loader_, Args{"--config", typo.path()}),
            "unknown key \"postgres.dsnn\" in config file " + typo.path() +
                " (line 2, column 1); did you mean \"postgres.dsn\"?");
  // The first unknown key in the file is reported, with a count of the others.
  TempFile several("zzz = 1\n[http]\nport = 8080\naaa = 2\n[other]\nx = 1\n");
  const std::string message = load_error(loader_, Args{"--config", several.path()});
  EXPECT_THAT(message, HasSubstr("unknown key \"zzz\""));
  EXPECT_THAT(message, HasSubstr("(and 2 more unknown keys)"));
  // A known key as a table, or a table where a value belongs, is not accepted either.
  TempFile table_for_value("[postgres.dsn]\nx = 1\n");
  EXPECT_THAT(load_error(loader_, Args{"--config", table_for_value.path()}),
              HasSubstr("for postgres.dsn"));
  TempFile value_for_table("postgres = 1\n");
  EXPECT_THAT(load_error(loader_, Args{"--config", value_for_table.path()}),
              HasSubstr("unknown key \"postgres\""));
  TempFile quoted_dotted_key("\"postgres.dsn\" = \"x\"\n");
  EXPECT_THAT(load_error(loader_, Args{"--config", quoted_dotted_key.path()}),
              HasSubstr("unknown key"));
}

TEST_F(ConfigErrorTest, DottedAndInlineTablesAreAccepted) {
  TempFile file("postgres.pool_size = 5\nhttp = { port = 8081 }\n");
  const Args args{"--config", file.path()};
  loader_.load(args.argc(), args.argv(), env_of({}));
  EXPECT_EQ(pool_size_, 5);
  EXPECT_EQ(port_, 8081);
}

TEST_F(ConfigErrorTest, SecretValuesNeverAppearInErrors) {
  std::uint32_t secret_number = 0;
  loader_.add(secret_number, {"pin", "", true});
  EXPECT_EQ(load_error(loader_, Args{"--pin", "12x34"}),
            "invalid value (secret, not shown) for --pin (from command line): expected an integer");
  EXPECT_THAT(load_error(loader_, Args{}, env_of({{"TS_PIN", "12x34"}})), Not(HasSubstr("12x34")));
  TempFile file("pin = \"12x34\"\n");
  EXPECT_THAT(load_error(loader_, Args{"--config", file.path()}), Not(HasSubstr("12x34")));
}

TEST(ConfigLoaderTest, ProgrammingErrorsInKeysAreLogicErrors) {
  int a = 0;
  int b = 0;
  ConfigLoader loader("prog", "");
  EXPECT_THROW(loader.add(a, {"", ""}), std::invalid_argument);
  EXPECT_THROW(loader.add(a, {"Upper", ""}), std::invalid_argument);
  EXPECT_THROW(loader.add(a, {"a..b", ""}), std::invalid_argument);
  EXPECT_THROW(loader.add(a, {"a.", ""}), std::invalid_argument);
  EXPECT_THROW(loader.add(a, {"help", ""}), std::invalid_argument);
  EXPECT_THROW(loader.add(a, {"config", ""}), std::invalid_argument);
  loader.add(a, {"x.pool_size", ""});
  EXPECT_THROW(loader.add(b, {"x.pool-size", ""}), std::invalid_argument);  // same flag and env
  EXPECT_THROW(loader.add(b, {"x", ""}), std::invalid_argument);            // value vs table
  EXPECT_THROW(loader.add(b, {"x.pool_size.y", ""}), std::invalid_argument);
}

TEST(ConfigLoaderTest, ConfigErrorIsAlwaysOneLine) {
  const ConfigError e("a\nb\rc\td");
  EXPECT_STREQ(e.what(), "a b c d");
}

// ---- help and summary
// ----------------------------------------------------------------------------

class ConfigHelpTest : public ::testing::Test {
 protected:
  ConfigHelpTest() {
    loader_.add(dsn_, {"postgres.dsn", "PostgreSQL connection string.", true})
        .add(url_, {"redis.url", "Redis URL."})
        .add(empty_secret_, {"redis.password", "Redis password.", true})
        .add(timeout_, {"postgres.timeout", "Statement timeout."})
        .add(verbose_, {"verbose", "Chatty."})
        .add(symbols_, {"symbols", "Symbols."})
        .add(note_, {"note", "A note."});
  }
  std::string dsn_ = "host=db user=app password=hunter2";
  std::string url_ = "redis://app:s3cr3t@cache:6379/0";
  std::string empty_secret_;
  milliseconds timeout_{2500};
  bool verbose_ = false;
  std::vector<std::string> symbols_{"BTCUSDT", "ETHUSDT"};
  std::string note_ = "two words";
  ConfigLoader loader_{"ts-test", "Does test things."};
};

TEST_F(ConfigHelpTest, HelpListsFlagEnvKeyAndDefault) {
  const std::string help = loader_.help_text();
  EXPECT_THAT(help, HasSubstr("Usage: ts-test [OPTIONS]"));
  EXPECT_THAT(help, HasSubstr("Does test things."));
  EXPECT_THAT(help, HasSubstr("  --config FILE\n"));
  EXPECT_THAT(help, HasSubstr("env: TS_CONFIG"));
  EXPECT_THAT(help,
              HasSubstr("  --postgres-dsn TEXT, --postgres-dsn-file FILE\n"
                        "      PostgreSQL connection string. (secret)\n"
                        "      env: TS_POSTGRES_DSN or TS_POSTGRES_DSN_FILE | file: postgres.dsn | "
                        "default: ***\n"));
  EXPECT_THAT(help, HasSubstr("--postgres-timeout DURATION\n"));
  EXPECT_THAT(help, HasSubstr("file: postgres.timeout | default: 2500ms\n"));
  EXPECT_THAT(help, HasSubstr("  --verbose[=BOOL]\n"));
  EXPECT_THAT(help, HasSubstr("default: BTCUSDT,ETHUSDT\n"));
  EXPECT_THAT(help, HasSubstr("file: redis.password | default: \"\"\n"));
  EXPECT_THAT(help, HasSubstr("default: \"two words\"\n"));
}

TEST_F(ConfigHelpTest, HelpNeverShowsSecrets) {
  const std::string help = loader_.help_text();
  EXPECT_THAT(help, Not(HasSubstr("hunter2")));
  EXPECT_THAT(help, Not(HasSubstr("s3cr3t")));  // not a secret setting, but redacted anyway
  EXPECT_THAT(help, HasSubstr("redis://app:***@cache:6379/0"));
}

TEST_F(ConfigHelpTest, HelpWinsAndReadsNoEnvironmentNorFile) {
  const EnvLookup exploding = [](const std::string& name) -> std::optional<std::string> {
    ADD_FAILURE() << "environment read: " << name;
    return std::nullopt;
  };
  for (const Args& args : {Args{"--help"}, Args{"-h"}, Args{"--bogus", "--help"},
                           Args{"--config", "/nonexistent.toml", "-h"}}) {
    const LoadResult result = loader_.load(args.argc(), args.argv(), exploding);
    EXPECT_TRUE(result.help_requested);
    EXPECT_EQ(result.help_text, loader_.help_text());
  }
}

TEST_F(ConfigHelpTest, SummaryRedactsSecretsAndQuotes) {
  const Args args{"--postgres-dsn", "host=db password=other-secret", "--verbose"};
  loader_.load(args.argc(), args.argv(), env_of({{"TS_REDIS_PASSWORD", "pw-from-env"}}));
  const std::string summary = loader_.effective_config_summary();
  EXPECT_EQ(summary,
            "postgres.dsn=*** redis.url=redis://app:***@cache:6379/0 redis.password=*** "
            "postgres.timeout=2500ms verbose=true symbols=BTCUSDT,ETHUSDT note=\"two words\"");
  EXPECT_THAT(summary, Not(HasSubstr("secret")));
  EXPECT_THAT(summary, Not(HasSubstr("pw-from-env")));
  const auto effective = loader_.effective_config();
  ASSERT_EQ(effective.size(), 7U);
  EXPECT_EQ(effective[0].source, ConfigSource::command_line);
  EXPECT_EQ(effective[1].source, ConfigSource::default_value);
  EXPECT_EQ(effective[2].source, ConfigSource::environment);
  EXPECT_EQ(to_string(effective[2].source), "environment");
}

TEST_F(ConfigHelpTest, LoadOrExitCode) {
  std::ostringstream out;
  std::ostringstream err;
  const Args help{"--help"};
  EXPECT_EQ(load_or_exit_code(loader_, help.argc(), help.argv(), err, out, env_of({})), 0);
  EXPECT_EQ(out.str(), loader_.help_text());
  EXPECT_EQ(err.str(), "");

  out.str("");
  const Args bad{"--verbose=perhaps"};
  EXPECT_EQ(load_or_exit_code(loader_, bad.argc(), bad.argv(), err, out, env_of({})),
            kExitBadConfig);
  EXPECT_EQ(err.str(),
            "ts-test: configuration error: invalid value \"perhaps\" for --verbose (from command "
            "line): expected a boolean (true/false, yes/no, on/off, 1/0)\n");
  EXPECT_EQ(out.str(), "");

  err.str("");
  const Args good{"--verbose"};
  EXPECT_EQ(load_or_exit_code(loader_, good.argc(), good.argv(), err, out, env_of({})),
            std::nullopt);
  EXPECT_EQ(err.str(), "");
}

// ---- the probe: a real process, real environment, real exit codes
// ----------------------------------

struct ProbeRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Runs the probe with exactly `env` as its environment.
ProbeRun run_probe(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
  static std::atomic<int> counter{0};
  const std::string base = ::testing::TempDir() + "ts_config_probe_" + std::to_string(::getpid()) +
                           "_" + std::to_string(counter++);
  const std::string out_path = base + ".out";
  const std::string err_path = base + ".err";
  args.insert(args.begin(), TS_CONFIG_PROBE);
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  envp.reserve(env_copy.size() + 1);
  for (auto& e : env_copy) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ProbeRun run;
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn failed: " << rc;
    return run;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.out = slurp(out_path);
  run.err = slurp(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  return run;
}

void expect_one_error_line(const ProbeRun& run, const std::string& fragment) {
  EXPECT_EQ(run.exit_code, kExitBadConfig);
  EXPECT_EQ(run.out, "");
  ASSERT_FALSE(run.err.empty());
  EXPECT_EQ(run.err.back(), '\n');
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_THAT(run.err, ::testing::StartsWith("ts-config-probe: configuration error: "));
  EXPECT_THAT(run.err, HasSubstr(fragment));
}

TEST(ConfigProbeTest, LoadsFromEverySource) {
  TempFile file("[postgres]\ntimeout = \"3s\"\npool_size = 4\n");
  const ProbeRun run = run_probe({"--symbols", "BTCUSDT,ETHUSDT", "--dry-run"},
                                 {"TS_CONFIG=" + file.path(), "TS_POSTGRES_POOL_SIZE=6",
                                  "TS_POSTGRES_DSN=host=db password=from-env"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err, "");
  EXPECT_EQ(run.out,
            "postgres.dsn=host=db password=from-env\n"
            "postgres.pool_size=6\n"
            "postgres.timeout=3000\n"
            "dry_run=true\n"
            "symbols=BTCUSDT,ETHUSDT\n"
            "summary=postgres.dsn=*** postgres.pool_size=6 postgres.timeout=3s dry_run=true "
            "symbols=BTCUSDT,ETHUSDT\n");
}

TEST(ConfigProbeTest, HelpExitsZero) {
  const ProbeRun run = run_probe({"--help"}, {"TS_POSTGRES_POOL_SIZE=broken"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.err, "");
  EXPECT_THAT(run.out, HasSubstr("--postgres-pool-size INT"));
  EXPECT_THAT(run.out, HasSubstr("env: TS_POSTGRES_POOL_SIZE"));
  EXPECT_THAT(run.out, Not(HasSubstr("default-secret")));
}

TEST(ConfigProbeTest, BadConfigurationExitsTwoWithOneLine) {
  expect_one_error_line(run_probe({"--foo"}), "unknown option --foo");
  expect_one_error_line(run_probe({"--postgres-pool-size"}), "requires a value");
  expect_one_error_line(run_probe({}, {"TS_POSTGRES_POOL_SIZE=abc"}),
                        "invalid value \"abc\" for --postgres-pool-size (from environment "
                        "variable TS_POSTGRES_POOL_SIZE): expected an integer");
  expect_one_error_line(run_probe({"--postgres-timeout=2 s"}), "expected a duration");
  expect_one_error_line(run_probe({"--config", "/nonexistent/ts.toml"}),
                        "config file /nonexistent/ts.toml: cannot open");
  TempFile syntax("[postgres\npool_size = 1\n");
  expect_one_error_line(run_probe({"--config", syntax.path()}), ": line 1, column ");
  TempFile unknown("[postgres]\ndsnn = \"host=x password=leak\"\n");
  const ProbeRun run = run_probe({"--config", unknown.path()});
  expect_one_error_line(run, "unknown key \"postgres.dsnn\"");
  EXPECT_THAT(run.err, Not(HasSubstr("leak")));
  expect_one_error_line(run_probe({"--postgres-dsn=x", "extra\nline"}), "unexpected argument");
}

}  // namespace
}  // namespace trading_shared::core

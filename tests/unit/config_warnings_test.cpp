// The loader's warning for a secret given on the command line (F66): recorded by load(),
// taken once by the program (take_config_warnings), naming the flag and never the value. A
// secret setting whose value is a URL or a libpq DSN is warned about only when that value
// really holds a password (a password-less `--redis-url redis://127.0.0.1:6379` is not);
// any other secret (an API key) always is.
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/config_warnings.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using trading_shared::core::ConfigLoader;
using trading_shared::core::EnvLookup;
using trading_shared::core::take_config_warnings;

constexpr const char* kSecret = "pw-Zk81-dsn-secret";

struct Loaded {
  std::string dsn;
  std::string url;
  std::string api_key;
  std::vector<std::string> warnings;
};

Loaded load(std::vector<std::string> args,
            std::vector<std::pair<std::string, std::string>> env = {}) {
  (void)take_config_warnings();  // nothing left by another test
  Loaded out;
  ConfigLoader loader("ts-test", "test");
  loader.add(out.dsn, {"postgres.dsn", "DSN.", true})
      .add(out.url, {"redis.url", "URL.", true})
      .add(out.api_key, {"rest.api_key", "API key.", true});
  args.insert(args.begin(), "ts-test");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  const EnvLookup lookup = [env](const std::string& name) -> std::optional<std::string> {
    for (const auto& [k, v] : env) {
      if (k == name) return v;
    }
    return std::nullopt;
  };
  (void)loader.load(static_cast<int>(argv.size()), argv.data(), lookup);
  out.warnings = take_config_warnings();
  return out;
}

TEST(ConfigWarnings, ASecretOnTheCommandLineIsWarnedAboutByFlagNeverByValue) {
  const Loaded r = load({std::string("--postgres-dsn=host=x password=") + kSecret});
  EXPECT_THAT(r.warnings,
              ElementsAre("--postgres-dsn carries a secret on the command line, visible in ps: "
                          "use --postgres-dsn-file or TS_POSTGRES_DSN_FILE"));
  EXPECT_THAT(r.warnings[0], Not(HasSubstr(kSecret)));
  EXPECT_TRUE(take_config_warnings().empty()) << "taken once";
}

TEST(ConfigWarnings, NoWarningForAFileTheEnvironmentOrANonSecret) {
  char path[] = "/tmp/ts-config-warnings-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, kSecret, 18), 18);
  ::close(fd);
  EXPECT_TRUE(load({std::string("--postgres-dsn-file=") + path}).warnings.empty());
  EXPECT_EQ(load({std::string("--postgres-dsn-file=") + path}).dsn, kSecret);
  std::remove(path);
  EXPECT_TRUE(load({}, {{"TS_POSTGRES_DSN", kSecret}}).warnings.empty());
  EXPECT_TRUE(load({"--redis-url=redis://127.0.0.1:6379"}).warnings.empty());
  EXPECT_TRUE(load({"--postgres-dsn="}).warnings.empty()) << "an empty value is no secret";
}

TEST(ConfigWarnings, AUrlOrADsnIsWarnedAboutOnlyWhenItHoldsAPassword) {
  // Password-less: no warning (the password comes from a file or the environment).
  for (const std::string args :
       {"--redis-url=redis://127.0.0.1:6379", "--redis-url=rediss://ts_recorder:@localhost:6380/2",
        "--redis-url=redis://ts_recorder@127.0.0.1:6379/0",
        "--postgres-dsn=host=127.0.0.1 port=5432 dbname=ts user=ts",
        "--postgres-dsn=host=db passfile=/run/secrets/pgpass",
        "--postgres-dsn=postgresql://ts@127.0.0.1:5432/ts"}) {
    const Loaded r = load({args});
    EXPECT_TRUE(r.warnings.empty()) << args << ": " << ::testing::PrintToString(r.warnings);
  }
  // With a password: warned about, by flag, never by value.
  const std::vector<std::pair<std::string, std::string>> with_secret{
      {"--redis-url=redis://:" + std::string(kSecret) + "@127.0.0.1:6379", "redis-url"},
      {"--redis-url=rediss://ts_recorder:" + std::string(kSecret) + "@localhost/0", "redis-url"},
      {"--postgres-dsn=postgresql://ts:" + std::string(kSecret) + "@127.0.0.1/ts", "postgres-dsn"},
      {"--postgres-dsn=postgresql://ts@127.0.0.1/ts?password=" + std::string(kSecret),
       "postgres-dsn"},
      {"--postgres-dsn=host=x password='" + std::string(kSecret) + "'", "postgres-dsn"}};
  for (const auto& [args, flag] : with_secret) {
    const Loaded r = load({args});
    ASSERT_EQ(r.warnings.size(), 1u) << args;
    EXPECT_THAT(r.warnings[0], HasSubstr("--" + flag + " carries a secret")) << args;
    EXPECT_THAT(r.warnings[0], Not(HasSubstr(kSecret)));
  }
}

TEST(ConfigWarnings, AnApiKeyIsAlwaysWarnedAbout) {
  // An API key is a secret whatever it looks like (base64 padding is no DSN).
  for (const std::string key : {"vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91",
                                "dGVzdC1rZXk=", "c2VjcmV0LWtleS0x=="}) {
    const Loaded r = load({"--rest-api-key=" + key});
    EXPECT_THAT(r.warnings, ElementsAre("--rest-api-key carries a secret on the command line, "
                                        "visible in ps: use --rest-api-key-file or "
                                        "TS_REST_API_KEY_FILE"))
        << key;
  }
}

}  // namespace

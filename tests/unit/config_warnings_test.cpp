// The loader's warning for a secret given on the command line (F66): recorded by load(),
// taken once by the program (take_config_warnings), naming the flag and never the value.
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/config_warnings.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
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
  std::vector<std::string> warnings;
};

Loaded load(std::vector<std::string> args,
            std::vector<std::pair<std::string, std::string>> env = {}) {
  (void)take_config_warnings();  // nothing left by another test
  Loaded out;
  ConfigLoader loader("ts-test", "test");
  loader.add(out.dsn, {"postgres.dsn", "DSN.", true}).add(out.url, {"redis.url", "URL."});
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

}  // namespace

// The --redis-tls-* settings of the services (services/common/settings.cpp, checks.cpp): flags
// and environment variables map to RedisConfig::tls, and check_redis_settings refuses them
// with a plaintext URL, a certificate without its key, and unreadable files, naming the flag.

#include <trading_shared/core/config.hpp>
#include <trading_shared/redis/config.hpp>

#include "common/settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace core = trading_shared::core;
namespace services = trading_shared::services;
using ::testing::HasSubstr;

void load(core::ConfigLoader& loader, std::vector<std::string> args,
          std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), "prog");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  loader.load(static_cast<int>(args.size()), argv.data(),
              [env](const std::string& name) -> std::optional<std::string> {
                const auto it = env.find(name);
                if (it == env.end()) return std::nullopt;
                return it->second;
              });
}

std::string config_error(const std::function<void()>& check) {
  try {
    check();
  } catch (const core::ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

// Files that exist and are readable (their content is not read by the check).
const char* const kReadable = "/proc/self/cmdline";

TEST(RedisTlsSettings, FlagsAndEnvironmentFillTheTlsConfig) {
  trading_shared::redis::RedisConfig config;
  core::ConfigLoader loader("prog", "");
  services::add_redis_settings(loader, config);
  load(loader,
       {"--redis-url", "rediss://cache.example:6380/0", "--redis-tls-ca-file", kReadable,
        "--redis-tls-cert-file", kReadable, "--redis-tls-server-name", "cache.internal",
        "--redis-tls-verify=false"},
       {{"TS_REDIS_TLS_KEY_FILE", kReadable}});
  EXPECT_EQ(config.tls.ca_file, kReadable);
  EXPECT_EQ(config.tls.cert_file, kReadable);
  EXPECT_EQ(config.tls.key_file, kReadable);
  EXPECT_EQ(config.tls.server_name, "cache.internal");
  EXPECT_FALSE(config.tls.verify_peer);
  EXPECT_EQ(loader.env_var_for("redis.tls.ca_file"), "TS_REDIS_TLS_CA_FILE");
  services::check_redis_settings(config);
}

TEST(RedisTlsSettings, InconsistentTlsSettingsNameTheirFlags) {
  trading_shared::redis::RedisConfig config;
  config.tls.ca_file = kReadable;
  EXPECT_THAT(config_error([&] { services::check_redis_settings(config); }),
              HasSubstr("--redis-tls-ca-file given but --redis-url is redis://"));
  config = {};
  config.tls.server_name = "x";
  EXPECT_THAT(config_error([&] { services::check_redis_settings(config); }),
              HasSubstr("--redis-tls-server-name"));
  config = {};
  config.url = "rediss://127.0.0.1:6380";
  config.tls.cert_file = kReadable;
  EXPECT_THAT(config_error([&] { services::check_redis_settings(config); }),
              HasSubstr("--redis-tls-key-file"));
  config.tls.cert_file.clear();
  config.tls.ca_file = "/nonexistent/ca.pem";
  const std::string missing = config_error([&] { services::check_redis_settings(config); });
  EXPECT_THAT(missing, HasSubstr("--redis-tls-ca-file /nonexistent/ca.pem: cannot read it"));
}

}  // namespace

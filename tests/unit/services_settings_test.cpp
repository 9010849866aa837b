// The settings every service shares (services/common/settings.*): the PostgreSQL retry policy
// is an operator's setting (F48).
#include <trading_shared/core/config.hpp>
#include <trading_shared/pg/config.hpp>

#include "common/settings.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace core = trading_shared::core;
using namespace std::chrono_literals;

core::LoadResult load(core::ConfigLoader& loader, std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  return loader.load(static_cast<int>(args.size()), argv.data(),
                     [](const std::string&) { return std::optional<std::string>(); });
}

TEST(ServicesSettings, PostgresRetryPolicyDefaultsToTheLibrarys) {
  trading_shared::pg::PostgresConfig config;
  core::ConfigLoader loader("prog", "");
  trading_shared::services::add_postgres_settings(loader, config);
  load(loader, {});
  EXPECT_EQ(config.retry.max_attempts, core::kDefaultMaxAttempts);
  EXPECT_EQ(config.retry.total_deadline, core::kDefaultRetryDeadline);
}

TEST(ServicesSettings, PostgresRetryPolicyFromFlags_F48) {
  trading_shared::pg::PostgresConfig config;
  core::ConfigLoader loader("prog", "");
  trading_shared::services::add_postgres_settings(loader, config);
  load(loader, {"--postgres-retry-attempts", "5", "--postgres-retry-budget", "90s"});
  EXPECT_EQ(config.retry.max_attempts, 5u);
  EXPECT_EQ(config.retry.total_deadline, 90s);
}

}  // namespace

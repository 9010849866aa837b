// tsctl migrate: applies the migrations of common/migrations.hpp that are not recorded in
// schema_migrations, each in one transaction with its schema_migrations row, under a
// transaction-scoped advisory lock so that concurrent migrates serialise.
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include "common/migrations.hpp"
#include "tsctl/roles.hpp"
#include "tsctl/sql_split.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

/// Key of the advisory lock every migrate takes ("tsmigrat" in ASCII).
constexpr std::int64_t kMigrationLock = 0x74736d6967726174;

constexpr const char* kLock = "SELECT pg_advisory_xact_lock($1)";
constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version int PRIMARY KEY,"
    " name text,"
    " applied_at timestamptz DEFAULT now())";

}  // namespace

asio::awaitable<void> run_migrate(lifecycle::ServiceContext& ctx, const Settings& settings) {
  auto log = core::logger("tsctl");
  auto* pg =
      co_await ctx.scope().open<pg::PostgresClient>("postgres", ctx.executor(), settings.postgres);
  // Every body checks under the lock before it changes anything: running it twice is harmless.
  pg::TransactionOptions options;
  options.idempotent = core::Idempotent::yes;

  // The table first, in a transaction of its own under the lock: two concurrent
  // CREATE TABLE IF NOT EXISTS may otherwise both try to create it.
  co_await pg->transaction(
      [&](pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute(kLock, kMigrationLock);
        co_await tx.execute(kCreateTable);
      },
      options);

  int applied = 0;
  for (const Migration& migration : migrations()) {
    const std::vector<std::string> statements = split_sql(migration.sql);
    bool applied_now = false;
    co_await pg->transaction(
        [&](pg::Transaction& tx) -> asio::awaitable<void> {
          applied_now = false;
          co_await tx.execute(kLock, kMigrationLock);
          const auto recorded = co_await tx.query_one(
              "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version);
          if (recorded) co_return;
          for (const std::string& statement : statements) co_await tx.execute(statement);
          co_await tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                              migration.version, migration.name);
          applied_now = true;
        },
        options);
    if (applied_now) {
      ++applied;
      log->info("applied migration {} ({}, {} statements)", migration.version, migration.name,
                statements.size());
    }
  }
  if (settings.roles.create) co_await create_roles(*pg, settings.roles, kMigrationLock);
  const auto version = co_await pg->query_value<std::optional<std::int32_t>>(
      "SELECT max(version) FROM schema_migrations");
  fmt::print("applied {} migration(s), schema at version {}\n", applied, version.value_or(0));
  std::fflush(stdout);
}

}  // namespace trading_shared::services::tsctl

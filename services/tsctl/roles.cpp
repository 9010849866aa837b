// tsctl migrate --roles: the services' PostgreSQL roles, least privilege (docs/services.md,
// "What to provision"), created or updated in one transaction under migrate's lock.
#include "tsctl/roles.hpp"

#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

/// A role's password from `dir/<role>`: nullopt when `dir` has no such file.
std::optional<std::string> role_password(const std::string& dir, const std::string& role) {
  const std::string path = dir + "/" + role;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read the password file {}", path));
  std::string password{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty())
    throw std::runtime_error(fmt::format("the password file {} is empty", path));
  return password;
}

}  // namespace

std::vector<std::string> role_grants(const RoleNames& r) {
  // Unqualified names resolve in the search_path, like the migrations that created them; the
  // schema is the one ticks is in.
  return {
      fmt::format("DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {}, {}, {}', "
                  "(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.oid = 'ticks'::regclass)); END $$",
                  r.recorder, r.executor, r.status),
      fmt::format("GRANT INSERT ON ticks TO {}", r.recorder),
      fmt::format("GRANT EXECUTE ON FUNCTION ts_ensure_tick_partition(date) TO {}", r.recorder),
      fmt::format("GRANT SELECT, INSERT ON orders, fills TO {}", r.executor),
      fmt::format("GRANT USAGE ON SEQUENCE fills_fill_id_seq TO {}", r.executor),
      fmt::format("GRANT SELECT ON schema_migrations, ticks, orders, fills TO {}", r.status),
      // Dropping a partition needs its ownership, and deleting old rows from a partition
      // itself needs rights the partitions' owner alone has: the janitor is a member of the
      // owner (the role running migrate).
      fmt::format("DO $$ BEGIN EXECUTE format('GRANT %I TO {}', current_user); END $$", r.janitor),
  };
}

asio::awaitable<void> create_roles(pg::PostgresClient& pg, const RoleSettings& settings,
                                   std::int64_t lock_key) {
  auto log = core::logger("tsctl");
  const RoleNames names{settings.prefix + "recorder", settings.prefix + "executor",
                        settings.prefix + "janitor", settings.prefix + "status"};
  std::vector<std::pair<std::string, std::optional<std::string>>> roles;
  for (const std::string& role : {names.recorder, names.executor, names.janitor, names.status}) {
    roles.emplace_back(role, settings.password_dir.empty()
                                 ? std::nullopt
                                 : role_password(settings.password_dir, role));
  }
  pg::TransactionOptions options;
  options.idempotent = core::Idempotent::yes;
  co_await pg.transaction(
      [&](pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SELECT pg_advisory_xact_lock($1)", lock_key);
        const bool superuser = co_await tx.query_value<bool>(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user");
        if (superuser) {
          throw std::runtime_error(
              "migrate --roles: run it as the schema's owner role (a role with CREATEROLE, "
              "e.g. ts_owner), not as a superuser: the janitor's role becomes a member of the "
              "owner, and a member of a superuser would own every object of the cluster");
        }
        for (const auto& [role, password] : roles) {
          const std::string create = fmt::format(
              "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{0}') THEN "
              "CREATE ROLE {0} LOGIN; END IF; END $$",
              role);
          co_await tx.execute(create);
          if (settings.password_dir.empty()) continue;
          // The password travels as a bound parameter (a transaction-local setting), never in
          // a statement's text, which errors and the server's statement log may show.
          const std::string value = password.value_or("");
          co_await tx.execute("SELECT set_config('ts.role_password', $1, true)", value);
          const std::string set_password = fmt::format(
              "DO $$ BEGIN IF current_setting('ts.role_password') = '' THEN "
              "ALTER ROLE {0} PASSWORD NULL; ELSE EXECUTE format('ALTER ROLE {0} PASSWORD %L', "
              "current_setting('ts.role_password')); END IF; END $$",
              role);
          co_await tx.execute(set_password);
          co_await tx.execute("SELECT set_config('ts.role_password', '', true)");
        }
        for (const std::string& grant : role_grants(names)) co_await tx.execute(grant);
      },
      options);
  log->info("roles {}, {}, {}, {} created or updated, with their grants", names.recorder,
            names.executor, names.janitor, names.status);
}

}  // namespace trading_shared::services::tsctl

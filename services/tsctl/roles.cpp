// tsctl migrate --roles: the services' PostgreSQL roles, least privilege (docs/services.md,
// "What to provision"), created or updated in one transaction under migrate's lock.
#include "tsctl/roles.hpp"

#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include "common/scram.hpp"
#include "tsctl/tsctl.hpp"

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
  return read_password_file(path);
}

}  // namespace

std::vector<std::string> role_grants(const RoleNames& r) {
  // Unqualified names resolve in the search_path, like the migrations that created them; the
  // schema is the one ticks is in.
  return {
      fmt::format("DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO {}, {}, {}, {}', "
                  "(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.oid = 'ticks'::regclass)); END $$",
                  r.recorder, r.executor, r.janitor, r.status),
      fmt::format("GRANT INSERT ON ticks TO {}", r.recorder),
      fmt::format("GRANT EXECUTE ON FUNCTION ts_ensure_tick_partition(date) TO {}", r.recorder),
      fmt::format("GRANT SELECT, INSERT ON orders, fills TO {}", r.executor),
      fmt::format("GRANT USAGE ON SEQUENCE fills_fill_id_seq TO {}", r.executor),
      fmt::format("GRANT SELECT ON schema_migrations, ticks, orders, fills TO {}", r.status),
      // The janitor owns nothing and is a member of no role: it drops old partitions of ticks
      // and deletes their old rows through the owner's functions (migration 3), which act on
      // partitions of ticks only. A janitor made a member of the owner by an earlier tsctl is
      // removed from it.
      fmt::format("GRANT EXECUTE ON FUNCTION ts_drop_tick_partition(regclass), "
                  "ts_delete_old_ticks(regclass, timestamptz, bigint) TO {}",
                  r.janitor),
      fmt::format("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_auth_members m "
                  "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
                  "WHERE g.rolname = current_user AND u.rolname = '{0}') THEN "
                  "EXECUTE format('REVOKE %I FROM {0}', current_user); END IF; END $$",
                  r.janitor),
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
              "e.g. ts_owner), not as a superuser: the functions the recorder and the janitor "
              "call run as their owner, and a superuser's would run with every right of the "
              "cluster");
        }
        for (const auto& [role, password] : roles) {
          const std::string create = fmt::format(
              "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{0}') THEN "
              "CREATE ROLE {0} LOGIN; END IF; END $$",
              role);
          co_await tx.execute(create);
          if (settings.password_dir.empty()) continue;
          // The password never reaches the server: only its SCRAM-SHA-256 verifier, computed
          // here (as psql's \password does), which the server stores as it is; tsctl logs
          // neither.
          const std::string set_password = password
                                               ? fmt::format("ALTER ROLE {} PASSWORD '{}'", role,
                                                             scram_sha256_verifier(*password))
                                               : fmt::format("ALTER ROLE {} PASSWORD NULL", role);
          co_await tx.execute(set_password);
        }
        for (const std::string& grant : role_grants(names)) co_await tx.execute(grant);
      },
      options);
  log->info("roles {}, {}, {}, {} created or updated, with their grants", names.recorder,
            names.executor, names.janitor, names.status);
}

}  // namespace trading_shared::services::tsctl

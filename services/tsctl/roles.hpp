#pragma once
/// @file
/// `tsctl migrate --roles`: the services' PostgreSQL roles and their grants (roles.cpp).

#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/awaitable.hpp>

#include "tsctl/tsctl.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

struct RoleNames {
  std::string recorder;  ///< INSERT on ticks, EXECUTE on ts_ensure_tick_partition(date).
  std::string executor;  ///< SELECT, INSERT on orders and fills; the fills sequence.
  std::string janitor;   ///< EXECUTE on ts_drop_tick_partition, ts_delete_old_ticks (owns nothing).
  std::string status;    ///< SELECT on the tables (tsctl status).
};

/// The GRANT statements of the roles (after the migrations).
std::vector<std::string> role_grants(const RoleNames& names);

/// Creates the roles that do not exist (LOGIN, nothing else), sets or clears their passwords
/// (when `settings.password_dir` is set) and grants each what it needs, in one transaction
/// under `lock_key` (migrate's advisory lock). Refuses to run as a superuser.
boost::asio::awaitable<void> create_roles(pg::PostgresClient& pg, const RoleSettings& settings,
                                          std::int64_t lock_key);

}  // namespace trading_shared::services::tsctl

#pragma once
/// @file
/// The database schema, as versioned migrations applied by `tsctl migrate` (docs/services.md).

#include <span>
#include <string_view>

namespace trading_shared::services {

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;  ///< one or more statements, run in one transaction.
};

/// Every migration, in version order.
std::span<const Migration> migrations();

}  // namespace trading_shared::services

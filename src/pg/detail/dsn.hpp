#pragma once
/// @file
/// A DSN's description for messages (internal).

#include <libpq-fe.h>

#include <string>

namespace trading_shared::pg::detail {

/// Frees what PQconninfoParse returned (for std::unique_ptr).
struct ConninfoDeleter {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};

/// "host:port/dbname as user" from a DSN (keyword or URI form): for messages and logs; never
/// contains the password. "<malformed dsn>" when libpq cannot parse it.
std::string describe_dsn(const std::string& dsn);

}  // namespace trading_shared::pg::detail

#pragma once
// The services' schema for the fault tests that run real services (services, rolling restart,
// readiness): one copy of the set-up they share.
#include "common/migrations.hpp"

#include <libpq-fe.h>

#include <stdexcept>
#include <string>

namespace trading_shared::testing {

/// Applies the migrations once (blocking libpq: the multi-statement SQL needs the simple query
/// protocol, which PostgresClient does not speak). @throws std::runtime_error.
inline void apply_schema(const std::string& dsn) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  auto fail = [&](const std::string& what) {
    const std::string message = what + ": " + PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error(message);
  };
  if (PQstatus(conn) != CONNECTION_OK) fail("connect");
  PGresult* check = PQexec(conn, "SELECT to_regclass('ticks') IS NULL");
  const bool missing =
      PQresultStatus(check) == PGRES_TUPLES_OK && PQgetvalue(check, 0, 0)[0] == 't';
  PQclear(check);
  if (missing) {
    for (const auto& migration : services::migrations()) {
      const std::string sql = "BEGIN;\n" + std::string(migration.sql) + "\nCOMMIT;";
      PGresult* r = PQexec(conn, sql.c_str());
      const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
      PQclear(r);
      if (!ok) fail("migration " + std::to_string(migration.version));
    }
  }
  PQfinish(conn);
}

}  // namespace trading_shared::testing

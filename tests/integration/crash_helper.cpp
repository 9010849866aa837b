// Starts all three servers through the harness, holds a connection through each, writes their
// PIDs and its harness directory to the file named by argv[1], then crashes (std::abort), so
// that harness_test can check that none of its servers survives it. With "pause" as argv[2],
// it pauses every server first (stopped processes ignore all but SIGKILL and SIGCONT).
#include "support/server_harness.hpp"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

namespace {

using trading_shared::testing::Servers;

PGconn* connect_or_die(const std::string& dsn) {
  PGconn* connection = PQconnectdb(dsn.c_str());
  if (PQstatus(connection) != CONNECTION_OK) {
    std::fprintf(stderr, "crash_helper: connect %s: %s\n", dsn.c_str(), PQerrorMessage(connection));
    std::exit(2);
  }
  return connection;
}

}  // namespace

int main(int argc, char** argv) {
  const bool pause = argc == 3 && std::string(argv[2]) == "pause";
  if (argc != 2 && !pause) {
    std::fprintf(stderr, "usage: %s OUTPUT_FILE [pause]\n", argv[0]);
    return 2;
  }
  // The crash is on purpose: no core file.
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  try {
    Servers& servers = Servers::instance();
    // Backends and server connections exist at the time of the crash, too.
    PGconn* direct = connect_or_die(servers.postgres_dsn());
    PGconn* pooled = connect_or_die(servers.pgbouncer_dsn());
    PGresult* result = PQexec(pooled, "SELECT 1");
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
      std::fprintf(stderr, "crash_helper: query through PgBouncer: %s\n", PQerrorMessage(pooled));
      return 2;
    }
    PQclear(result);
    redisContext* redis = redisConnect(servers.redis_host().c_str(), servers.redis_port());
    if (redis == nullptr || redis->err) {
      std::fprintf(stderr, "crash_helper: redis connect failed\n");
      return 2;
    }
    if (pause) {
      servers.postgres().pause();
      servers.pgbouncer().pause();
      servers.redis().pause();
    }
    std::ofstream out(argv[1], std::ios::trunc);
    out << "postgres " << servers.postgres().pid() << "\n"
        << "redis " << servers.redis().pid() << "\n"
        << "pgbouncer " << servers.pgbouncer().pid() << "\n"
        << "directory " << servers.directory() << "\n";
    out.close();
    if (!out) {
      std::fprintf(stderr, "crash_helper: cannot write %s\n", argv[1]);
      return 2;
    }
    static_cast<void>(direct);
    static_cast<void>(redis);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash_helper: %s\n", e.what());
    return 2;
  }
  std::abort();
}

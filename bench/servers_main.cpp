// ts-bench-servers: starts the benchmark servers once for a whole `make bench` run, through
// the test harness (tests/support/server_harness.hpp), with durable PostgreSQL (fsync on).
//
// Usage: ts-bench-servers [--postgres] [--pgbouncer] [--redis] [--database NAME]... [--tls]
// (no server flag: all three). --tls: TLS beside plaintext on the same servers
// (ServerOptions::tls_also: Redis's second port, PostgreSQL ssl = on), for T1; adds the
// REDIS_TLS_PORT, REDIS_TLS_URL and TLS_CA (the test CA's PEM file) lines. Prints KEY=VALUE lines
// on stdout, then `READY`, then waits until its stdin closes: the driver (bench/run-bench) owns its
// lifetime by holding the pipe. The servers are stopped on EOF, on SIGTERM/SIGINT/SIGHUP, and by
// the harness's guardian if this process dies in any other way.
#include "support/server_harness.hpp"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using trading_shared::testing::ServerOptions;
using trading_shared::testing::Servers;

std::atomic<int> stop_signal{0};

extern "C" void on_signal(int signal_number) {
  stop_signal.store(signal_number);
}

void print(const std::string& key, const std::string& value) {
  std::printf("%s=%s\n", key.c_str(), value.c_str());
}

/// Blocks until stdin reaches EOF (or fails) or a stop signal arrives.
void wait_for_stdin_eof() {
  char buffer[256];
  while (stop_signal.load() == 0) {
    pollfd fd{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&fd, 1, 500);
    if (ready < 0) continue;  // EINTR: check the flag
    if (ready == 0) continue;
    const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n <= 0) return;  // EOF or error: the driver is gone
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool postgres = false;
  bool pgbouncer = false;
  bool redis = false;
  bool tls = false;
  std::vector<std::string> databases;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--postgres") {
      postgres = true;
    } else if (arg == "--pgbouncer") {
      pgbouncer = true;
    } else if (arg == "--redis") {
      redis = true;
    } else if (arg == "--tls") {
      tls = true;
    } else if (arg == "--database" && i + 1 < argc) {
      databases.emplace_back(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--postgres] [--pgbouncer] [--redis] [--database NAME]... "
                   "[--tls]\n",
                   argv[0]);
      return 2;
    }
  }
  if (!postgres && !pgbouncer && !redis) postgres = pgbouncer = redis = true;
  if (pgbouncer) postgres = true;

  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  int status = 0;
  try {
    ServerOptions options;
    options.durable = true;  // benchmarks run with PostgreSQL's default durability
    options.tls_also = tls;  // T1: TLS and plaintext on the same servers
    Servers::set_options(options);
    Servers& servers = Servers::instance();
    if (postgres) {
      print("POSTGRES_DSN", servers.postgres_dsn());
      print("POSTGRES_HOST", "127.0.0.1");
      print("POSTGRES_PORT", std::to_string(servers.postgres().port()));
      print("POSTGRES_USER", "postgres");
      for (const auto& database : databases) {
        servers.create_database(database);
        print("DATABASE", database);
      }
    }
    if (pgbouncer) {
      print("PGBOUNCER_DSN", servers.pgbouncer_dsn());
      print("PGBOUNCER_PORT", std::to_string(servers.pgbouncer().port()));
    }
    if (redis) {
      print("REDIS_URL", servers.redis_url());
      print("REDIS_HOST", servers.redis_host());
      print("REDIS_PORT", std::to_string(servers.redis_port()));
      if (tls) {
        print("REDIS_TLS_PORT", std::to_string(servers.redis_tls_port()));
        print("REDIS_TLS_URL", servers.redis_tls_url());
      }
    }
    if (tls) print("TLS_CA", servers.tls_certificates().ca_cert);
    print("DIRECTORY", servers.directory());
    std::printf("READY\n");
    std::fflush(stdout);
    wait_for_stdin_eof();
    servers.shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ts-bench-servers: %s\n", e.what());
    std::fflush(stdout);
    status = 1;
  }
  return status;
}

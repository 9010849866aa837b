/// @file
/// A minimal service main() for config_test.cpp: declares a few settings, loads them with
/// `load_or_exit_code` and prints the effective values as `key=value` lines on stdout.
/// The test spawns it with bad flags, environment and files and checks the exit code and
/// that stderr holds exactly one line. It prints the raw DSN so that the test can check
/// precedence end to end; a real service logs only `effective_config_summary()`.

#include <trading_shared/core/config.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

namespace core = trading_shared::core;

int main(int argc, char** argv) {
  std::string dsn = "host=localhost password=default-secret";
  int pool_size = 2;
  std::chrono::milliseconds timeout{2500};
  bool dry_run = false;
  std::vector<std::string> symbols{"BTCUSDT"};

  core::ConfigLoader loader("ts-config-probe", "Configuration probe for the unit tests.");
  loader.add(dsn, {"postgres.dsn", "PostgreSQL connection string.", true})
      .add(pool_size, {"postgres.pool_size", "Connections in the pool."})
      .add(timeout, {"postgres.timeout", "Statement timeout."})
      .add(dry_run, {"dry_run", "Do not write anything."})
      .add(symbols, {"symbols", "Symbols to subscribe to."});
  if (auto code = core::load_or_exit_code(loader, argc, argv)) {
    return *code;
  }

  std::cout << "postgres.dsn=" << dsn << '\n'
            << "postgres.pool_size=" << pool_size << '\n'
            << "postgres.timeout=" << timeout.count() << '\n'
            << "dry_run=" << (dry_run ? "true" : "false") << '\n'
            << "symbols=";
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    std::cout << (i ? "," : "") << symbols[i];
  }
  std::cout << '\n' << "summary=" << loader.effective_config_summary() << '\n';
  return 0;
}

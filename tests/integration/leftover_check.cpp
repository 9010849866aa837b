// Runs after every test that used servers (ctest FIXTURES_CLEANUP): fails when a server
// process started by the harness outlived its test binary.
//
// Only servers whose test binary is gone count: a harness directory of a live binary (another
// build tree's tests running at the same time, say) is reported but is not a leftover.
#include "support/server_harness.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <thread>
#include <vector>

int main() {
  namespace ts = trading_shared::testing;
  using Clock = std::chrono::steady_clock;
  try {
    // Servers of binaries that just exited may need a moment to notice (PR_SET_PDEATHSIG
    // is immediate; PostgreSQL backends follow their postmaster shortly after).
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    std::vector<pid_t> leftovers = ts::orphaned_harness_server_processes();
    while (!leftovers.empty() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      leftovers = ts::orphaned_harness_server_processes();
    }
    if (!leftovers.empty()) {
      std::printf("%zu leftover server process(es) outlived their test binary:\n",
                  leftovers.size());
      for (const pid_t pid : leftovers) {
        std::printf("  %s\n", ts::describe_process(pid).c_str());
      }
      return 1;
    }
    const std::vector<pid_t> live = ts::harness_server_processes();
    for (const pid_t pid : live) {
      std::printf("note: server of a still-running test binary: %s\n",
                  ts::describe_process(pid).c_str());
    }
    const std::size_t removed = ts::remove_stale_harness_directories();
    if (removed > 0) {
      std::printf("removed %zu stale harness director(ies)\n", removed);
    }
    std::printf("no leftover servers\n");
    return 0;
  } catch (const std::exception& e) {
    std::printf("leftover check failed: %s\n", e.what());
    return 1;
  }
}

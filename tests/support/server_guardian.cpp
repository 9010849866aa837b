#include "support/server_guardian.hpp"

#include "support/server_harness.hpp"
#include "support/server_process.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace trading_shared::testing::detail {
namespace {

namespace fs = std::filesystem;

/// Set only in the environment of a guardian: the harness directory it guards.
constexpr const char* kGuardianEnv = "TS_HARNESS_GUARDIAN_ROOT";
constexpr std::chrono::seconds kCleanupTimeout{30};
constexpr std::chrono::seconds kFinishTimeout{40};

/// Refuses anything but an absolute, normalised path to a harness directory: the guardian
/// removes what it is given.
bool is_harness_directory(const std::string& root) {
  const fs::path path(root);
  return path.is_absolute() && path.lexically_normal() == path &&
         path.filename().string().rfind(Servers::kDirPrefix, 0) == 0;
}

/// Kills what is left in `root` and removes it. Returns the process exit code.
int clean_up(const std::string& root) {
  const auto deadline = Clock::now() + kCleanupTimeout;
  std::size_t killed = 0;
  for (int attempt = 0;; ++attempt) {
    const std::vector<pid_t> pids = processes_in_directory(root);
    if (pids.empty()) {
      break;
    }
    if (Clock::now() >= deadline) {
      std::fprintf(stderr, "[server_harness guardian] processes still run in %s after %lld s\n",
                   root.c_str(), static_cast<long long>(kCleanupTimeout.count()));
      return 1;
    }
    for (const pid_t pid : pids) {
      // SIGKILL also ends a process stopped by pause().
      if (signal_process_in_directory(pid, root, SIGKILL) && attempt == 0) {
        ++killed;
      }
    }
    poll_pause(attempt);
  }
  if (killed > 0) {
    std::fprintf(stderr,
                 "[server_harness guardian] the test binary of %s ended without stopping its "
                 "servers; killed %zu process(es) still running there\n",
                 root.c_str(), killed);
  }
  release_stale_postgres_shared_memory(root + "/pg/data");
  std::error_code error;
  fs::remove_all(root, error);
  if (error && error != std::errc::no_such_file_or_directory) {
    std::fprintf(stderr, "[server_harness guardian] removing %s: %s\n", root.c_str(),
                 error.message().c_str());
    return 1;
  }
  return 0;
}

[[noreturn]] void run_guardian(const std::string& root) {
  if (!is_harness_directory(root)) {
    std::fprintf(stderr, "[server_harness guardian] refusing to guard '%s'\n", root.c_str());
    ::_exit(2);
  }
  // Terminal signals for the test's process group must not end us before the cleanup
  // (spawn_process gave us our own process group already).
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);
  std::signal(SIGPIPE, SIG_IGN);
  char byte = 0;
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, &byte, 1);
    if (n == 0 || (n < 0 && errno != EINTR)) {
      break;  // EOF: the test binary closed the pipe or died
    }
  }
  int code = 1;
  try {
    code = clean_up(root);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[server_harness guardian] cleaning up %s: %s\n", root.c_str(), e.what());
  }
  std::fflush(stderr);
  ::_exit(code);
}

/// Runs before main() in every binary that links the harness: a binary re-executed with the
/// variable set is a guardian and never gets to main().
[[maybe_unused]] const bool guardian_mode = [] {
  if (const char* root = std::getenv(kGuardianEnv)) {
    run_guardian(root);
  }
  return false;
}();

}  // namespace

Guardian start_guardian(const std::string& root) {
  if (!is_harness_directory(root)) {
    throw std::invalid_argument("start_guardian: not a harness directory: " + root);
  }
  int pipe_fds[2];
  // Close-on-exec: no server, helper or other exec'd child may hold the write end, or the
  // guardian would not see EOF when the test binary dies.
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("start_guardian: pipe2: ") + std::strerror(errno));
  }
  SpawnRequest request;
  request.argv = {"ts-harness-guardian", root};
  request.executable = "/proc/self/exe";
  request.directory = "/";  // not in the directory it cleans up
  request.parent_death_signal = false;
  request.stdin_fd = pipe_fds[0];
  request.extra_env = {std::string(kGuardianEnv) + "=" + root};
  Guardian guardian;
  try {
    guardian.pid = spawn_process(request);
  } catch (...) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw;
  }
  ::close(pipe_fds[0]);
  guardian.pipe_fd = pipe_fds[1];
  return guardian;
}

void finish_guardian(Guardian& guardian) {
  if (guardian.pipe_fd >= 0) {
    ::close(guardian.pipe_fd);
    guardian.pipe_fd = -1;
  }
  if (guardian.pid <= 0) {
    return;
  }
  const pid_t pid = guardian.pid;
  guardian.pid = -1;
  const auto status = wait_child(pid, Clock::now() + kFinishTimeout);
  if (!status) {
    ::kill(pid, SIGKILL);
    wait_child(pid, Clock::now() + std::chrono::seconds(10));
    throw std::runtime_error("server_harness: the guardian (pid " + std::to_string(pid) +
                             ") did not finish within " + std::to_string(kFinishTimeout.count()) +
                             " s");
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    throw std::runtime_error("server_harness: the guardian (pid " + std::to_string(pid) +
                             ") failed: " + describe_wait_status(*status));
  }
}

}  // namespace trading_shared::testing::detail

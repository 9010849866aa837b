// A service binary (ts-receiver, ts-feed-sim, ts-janitor, ...) run by a fault test as a real
// process: its own process group, stdout and stderr in a log file of the test's directory,
// TS_LOG_LEVEL=info. Ended only by the test (stop, signal) or, if still running when the object
// goes, killed (SIGKILL) and reaped by its destructor: no process outlives its test.
#pragma once

#include "support/server_process.hpp"

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::testing {

struct ServiceProcess {
  pid_t pid = -1;
  std::string log;            ///< the log file's path
  std::optional<int> status;  ///< the waitpid status, once reaped

  ServiceProcess() = default;
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;
  ServiceProcess(ServiceProcess&& other) noexcept
      : pid(std::exchange(other.pid, -1)), log(std::move(other.log)), status(other.status) {}
  ServiceProcess& operator=(ServiceProcess&& other) noexcept {
    if (this != &other) {
      reap();
      pid = std::exchange(other.pid, -1);
      log = std::move(other.log);
      status = other.status;
    }
    return *this;
  }
  ~ServiceProcess() { reap(); }

  /// Starts `argv` (argv[0] an absolute path) in `dir`, its output in `<dir>/<name>.log`.
  static ServiceProcess spawn(const std::string& dir, const std::string& name,
                              std::vector<std::string> argv) {
    ServiceProcess s;
    s.log = dir + "/" + name + ".log";
    detail::SpawnRequest request;
    request.argv = std::move(argv);
    request.directory = dir;
    request.log_file = s.log;
    request.extra_env = {"TS_LOG_LEVEL=info"};
    s.pid = detail::spawn_process(request);
    return s;
  }

  /// SIGTERM, then the exit code (or -signal; -1000 when it did not exit within `bound`).
  int stop(std::chrono::milliseconds bound = std::chrono::seconds(15)) {
    if (!status) ::kill(pid, SIGTERM);
    return wait(bound);
  }
  /// The exit code once it exits by itself (or -signal; -1000 when not within `bound`).
  int wait(std::chrono::milliseconds bound) {
    if (!status) status = detail::wait_child(pid, detail::Clock::now() + bound);
    if (!status) return -1000;
    if (WIFEXITED(*status)) return WEXITSTATUS(*status);
    return -WTERMSIG(*status);
  }
  void signal(int sig) const { ::kill(pid, sig); }
  /// The log's text so far.
  std::string text() const { return detail::read_text_file(log); }

 private:
  void reap() {
    if (pid > 0 && !status) {
      ::kill(pid, SIGKILL);
      status = detail::wait_child(pid, detail::Clock::now() + std::chrono::seconds(10));
    }
  }
};

}  // namespace trading_shared::testing

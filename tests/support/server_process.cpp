#include "support/server_process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace trading_shared::testing::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::seconds kStopTimeout{10};
constexpr std::chrono::seconds kKillTimeout{10};
constexpr std::chrono::seconds kSignalTimeout{5};
constexpr std::chrono::seconds kExecReportTimeout{10};
constexpr int kMaxStartAttempts = 5;
constexpr std::uintmax_t kMaxLogRead = 64 * 1024;

std::string errno_text(int error) { return std::string(std::strerror(error)); }

[[noreturn]] void throw_errno(const std::string& what, int error = errno) {
  throw std::runtime_error(what + ": " + errno_text(error));
}

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

/// Steps of the child between fork and exec, reported to the parent through a pipe when one
/// fails.
enum class ChildStep : int {
  dup_report,
  setpgid,
  chdir,
  setgroups,
  setgid,
  setuid,
  pdeathsig,
  open_stdin,
  open_log,
  dup2,
  exec
};

const char* child_step_name(ChildStep step) {
  switch (step) {
    case ChildStep::dup_report:
      return "dup(report pipe)";
    case ChildStep::setpgid:
      return "setpgid";
    case ChildStep::chdir:
      return "chdir";
    case ChildStep::setgroups:
      return "setgroups";
    case ChildStep::setgid:
      return "setgid";
    case ChildStep::setuid:
      return "setuid";
    case ChildStep::pdeathsig:
      return "prctl(PR_SET_PDEATHSIG)";
    case ChildStep::open_stdin:
      return "open(/dev/null)";
    case ChildStep::open_log:
      return "open(log file)";
    case ChildStep::dup2:
      return "dup2";
    case ChildStep::exec:
      return "execv";
  }
  return "?";
}

struct ChildReport {
  ChildStep step;
  int error;
};

/// Everything the child needs, prepared before fork: the child only makes async-signal-safe
/// calls (the parent may have other threads).
struct ChildArgs {
  std::vector<char*> argv;
  const char* directory = nullptr;
  const char* log_file = nullptr;
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t parent = 0;
};

void write_report(int fd, ChildStep step, int error) {
  const ChildReport report{step, error};
  // Best effort: the child exits with 127 whether or not the parent gets the details.
  [[maybe_unused]] const ssize_t written = ::write(fd, &report, sizeof report);
}

[[noreturn]] void run_child(const ChildArgs& args, int report_pipe) {
  // A copy of the report pipe above the standard descriptors, so that setting up
  // stdin/stdout/stderr cannot clobber it (the test binary might run with one closed).
  const int report = ::fcntl(report_pipe, F_DUPFD_CLOEXEC, 3);
  if (report < 0) {
    write_report(report_pipe, ChildStep::dup_report, errno);
    ::_exit(127);
  }
  const auto fail = [report](ChildStep step) {
    write_report(report, step, errno);
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) fail(ChildStep::setpgid);
  if (::chdir(args.directory) != 0) fail(ChildStep::chdir);
  if (args.switch_user) {
    const gid_t groups[] = {args.gid};
    if (::setgroups(1, groups) != 0) fail(ChildStep::setgroups);
    if (::setgid(args.gid) != 0) fail(ChildStep::setgid);
    if (::setuid(args.uid) != 0) fail(ChildStep::setuid);
  }
  // After setuid, which clears the parent-death signal.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(ChildStep::pdeathsig);
  // The parent may have died before prctl took effect: then nobody would kill us.
  if (::getppid() != args.parent) ::_exit(126);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) fail(ChildStep::open_stdin);
  const int log_fd = ::open(args.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log_fd < 0) fail(ChildStep::open_log);
  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
      ::dup2(log_fd, STDERR_FILENO) < 0) {
    fail(ChildStep::dup2);
  }
  // No other descriptor of the test binary (client sockets, ...) may leak into a server.
  if (report > 3) ::close_range(3, static_cast<unsigned>(report) - 1, 0);
  ::close_range(static_cast<unsigned>(report) + 1, ~0U, 0);
  // Ignored signals and the signal mask survive exec: give the server a clean slate.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int signal_number = 1; signal_number < NSIG; ++signal_number) {
    if (signal_number != SIGKILL && signal_number != SIGSTOP) {
      ::sigaction(signal_number, &default_action, nullptr);
    }
  }
  sigset_t empty_mask;
  ::sigemptyset(&empty_mask);
  ::sigprocmask(SIG_SETMASK, &empty_mask, nullptr);
  ::execv(args.argv[0], args.argv.data());
  fail(ChildStep::exec);
  ::_exit(127);  // not reached
}

/// Fields 3.. of /proc/PID/stat (after "pid (comm)"), or nullopt when it cannot be read.
std::optional<std::vector<std::string>> stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  const auto close_paren = line.rfind(')');
  if (close_paren == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close_paren + 1));
  std::vector<std::string> fields;
  std::string field;
  while (rest >> field) fields.push_back(field);
  if (fields.size() < 20) return std::nullopt;
  return fields;
}

bool is_dead_state(char state) { return state == 'Z' || state == 'X' || state == 'x'; }

/// Waits until every live member of the group satisfies `condition(state)`.
template <typename Condition>
bool wait_group_states(pid_t pgid, Clock::time_point deadline, Condition condition) {
  for (int attempt = 0;; ++attempt) {
    bool all = true;
    for (const pid_t member : process_group_members(pgid)) {
      const auto state = process_state(member);
      if (state && !is_dead_state(*state) && !condition(*state)) {
        all = false;
        break;
      }
    }
    if (all) return true;
    if (Clock::now() >= deadline) return false;
    poll_pause(attempt);
  }
}

}  // namespace

ServerUser server_user() {
  ServerUser user;
  if (::geteuid() != 0) return user;
  for (const char* name : {"postgres", "nobody"}) {
    if (const passwd* entry = ::getpwnam(name)) {
      user.switch_user = true;
      user.uid = entry->pw_uid;
      user.gid = entry->pw_gid;
      user.name = name;
      return user;
    }
  }
  throw std::runtime_error(
      "server_harness: running as root, but neither the 'postgres' nor the 'nobody' user "
      "exists to run the servers as (PostgreSQL and PgBouncer refuse to run as root)");
}

void chown_to(const ServerUser& user, const std::string& path) {
  if (!user.switch_user) return;
  if (::chown(path.c_str(), user.uid, user.gid) != 0) {
    throw_errno("server_harness: chown " + path + " to " + user.name);
  }
}

pid_t spawn_process(const SpawnRequest& request) {
  if (request.argv.empty()) throw std::invalid_argument("spawn_process: empty argv");
  if (::gettid() != ::getpid()) {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits, not the process.
    throw std::logic_error("server_harness: servers must be started from the main thread (" +
                           request.argv[0] + ")");
  }
  ChildArgs args;
  for (const auto& arg : request.argv) args.argv.push_back(const_cast<char*>(arg.c_str()));
  args.argv.push_back(nullptr);
  args.directory = request.directory.c_str();
  args.log_file = request.log_file.c_str();
  args.switch_user = request.user.switch_user;
  args.uid = request.user.uid;
  args.gid = request.user.gid;
  args.parent = ::getpid();

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("spawn_process: pipe2");
  const pid_t child = ::fork();
  if (child < 0) {
    const int error = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    throw_errno("spawn_process: fork for " + request.argv[0], error);
  }
  if (child == 0) {
    ::close(pipe_fds[0]);
    run_child(args, pipe_fds[1]);
  }
  ::close(pipe_fds[1]);

  // The pipe closes (EOF) when exec succeeds; a report arrives when a step failed.
  ChildReport report{};
  std::size_t received = 0;
  bool timed_out = false;
  const auto deadline = Clock::now() + kExecReportTimeout;
  while (received < sizeof report) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                            Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd poll_fd{pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&poll_fd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      const int error = errno;
      ::close(pipe_fds[0]);
      throw_errno("spawn_process: poll", error);
    }
    if (ready == 0) continue;
    const ssize_t n =
        ::read(pipe_fds[0], reinterpret_cast<char*>(&report) + received, sizeof report - received);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    received += static_cast<std::size_t>(n);
  }
  ::close(pipe_fds[0]);

  if (timed_out) {
    ::kill(child, SIGKILL);
    wait_child(child, Clock::now() + kKillTimeout);
    throw std::runtime_error("spawn_process: " + request.argv[0] + " did not exec within " +
                             std::to_string(kExecReportTimeout.count()) + " s");
  }
  if (received == sizeof report) {
    const auto status = wait_child(child, Clock::now() + kKillTimeout);
    throw std::runtime_error("spawn_process: starting " + request.argv[0] + " in " +
                             request.directory + (request.user.switch_user
                                                      ? " as user " + request.user.name
                                                      : std::string()) +
                             ": " + child_step_name(report.step) +
                             " failed: " + errno_text(report.error) +
                             (status ? " (" + describe_wait_status(*status) + ")" : ""));
  }
  if (received != 0) {
    ::kill(child, SIGKILL);
    wait_child(child, Clock::now() + kKillTimeout);
    throw std::runtime_error("spawn_process: truncated report from the child of " +
                             request.argv[0]);
  }
  return child;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    const char* name = ::strsignal(signal_number);
    return "signal " + std::to_string(signal_number) + " (" + (name ? name : "?") + ")";
  }
  return "wait status " + std::to_string(status);
}

std::optional<int> wait_child(pid_t pid, Clock::time_point deadline) {
  for (int attempt = 0;; ++attempt) {
    int status = 0;
    const pid_t result = ::waitpid(pid, &status, WNOHANG);
    if (result == pid) return status;
    if (result < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) return 0;  // reaped elsewhere (e.g. SIGCHLD ignored): it is gone
      throw_errno("waitpid(" + std::to_string(pid) + ")");
    }
    if (Clock::now() >= deadline) return std::nullopt;
    poll_pause(attempt);
  }
}

std::optional<char> process_state(pid_t pid) {
  const auto fields = stat_fields(pid);
  if (!fields || (*fields)[0].empty()) return std::nullopt;
  return (*fields)[0][0];
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  const auto state = process_state(pid);
  return state && !is_dead_state(*state);
}

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  const auto fields = stat_fields(pid);
  if (!fields) return std::nullopt;
  return std::stoull((*fields)[19]);  // field 22 of /proc/PID/stat
}

std::vector<pid_t> process_group_members(pid_t pgid) {
  std::vector<pid_t> members;
  std::error_code error;
  for (fs::directory_iterator it("/proc", error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    const auto fields = stat_fields(pid);  // state ppid pgrp ...
    if (!fields || is_dead_state((*fields)[0][0])) continue;
    if (std::stol((*fields)[2]) == pgid) members.push_back(pid);
  }
  if (error) throw std::runtime_error("server_harness: listing /proc: " + error.message());
  return members;
}

bool wait_group_gone(pid_t pgid, Clock::time_point deadline) {
  for (int attempt = 0;; ++attempt) {
    if (process_group_members(pgid).empty()) return true;
    if (Clock::now() >= deadline) return false;
    poll_pause(attempt);
  }
}

void kill_process_group(pid_t pgid, Clock::time_point deadline, const std::string& what) {
  if (::killpg(pgid, SIGKILL) != 0 && errno != ESRCH) {
    throw_errno("server_harness: killpg(" + std::to_string(pgid) + ", SIGKILL) for " + what);
  }
  if (!wait_group_gone(pgid, deadline)) {
    std::string pids;
    for (const pid_t member : process_group_members(pgid)) pids += " " + std::to_string(member);
    throw std::runtime_error("server_harness: processes of " + what + " (process group " +
                             std::to_string(pgid) + ") survived SIGKILL:" + pids);
  }
}

std::uintmax_t file_size_or_zero(const std::string& path) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  return error ? 0 : size;
}

std::string log_tail(const std::string& path, std::uintmax_t offset, std::size_t max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(no log file " + path + ")";
  const std::uintmax_t size = file_size_or_zero(path);
  std::uintmax_t start = std::min(offset, size);
  if (size - start > kMaxLogRead) start = size - kMaxLogRead;
  in.seekg(static_cast<std::streamoff>(start));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  const std::size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string tail;
  for (std::size_t i = first; i < lines.size(); ++i) tail += "  | " + lines[i] + "\n";
  return tail.empty() ? "(log " + path + " is empty)\n" : tail;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("server_harness: cannot read " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("server_harness: cannot write " + path);
}

std::string find_program(const std::string& name, const std::vector<std::string>& candidates) {
  for (const auto& candidate : candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  if (const char* path = std::getenv("PATH")) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      if (dir.empty()) continue;
      const std::string candidate = dir + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  throw std::runtime_error("server_harness: program '" + name +
                           "' not found (install it: scripts/install-deps)");
}

void poll_pause(int attempt) {
  const int ms = std::min(50, 2 << std::min(attempt, 5));
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// ---- ManagedServer -------------------------------------------------------------------------

ManagedServer::ManagedServer(std::string name, std::string directory, ServerUser user,
                             std::chrono::milliseconds start_timeout)
    : name_(std::move(name)),
      directory_(std::move(directory)),
      user_(std::move(user)),
      start_timeout_(start_timeout) {}

ManagedServer::~ManagedServer() {
  // Derived destructors stop gracefully (stop_signal() is theirs); this is the last resort.
  try {
    if (pid_ > 0) {
      ::killpg(pid_, SIGKILL);
      wait_child(pid_, Clock::now() + kKillTimeout);
      forget_process();
    }
    clear_leftover_group();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[server_harness] killing %s failed: %s\n", name_.c_str(), e.what());
  }
}

void ManagedServer::stop_noexcept() noexcept {
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[server_harness] stopping %s failed: %s\n", name_.c_str(), e.what());
  }
}

void ManagedServer::refresh() const {
  if (pid_ <= 0) return;
  int status = 0;
  const pid_t result = ::waitpid(pid_, &status, WNOHANG);
  if (result == pid_ || (result < 0 && errno == ECHILD)) {
    std::fprintf(stderr, "[server_harness] %s (pid %d) exited by itself: %s\n", name_.c_str(),
                 pid_, result == pid_ ? describe_wait_status(status).c_str() : "reaped elsewhere");
    forget_process();
  }
}

void ManagedServer::forget_process() const {
  leftover_pgid_ = pid_;
  pid_ = -1;
  paused_ = false;
}

void ManagedServer::clear_leftover_group() {
  if (leftover_pgid_ <= 0) return;
  const pid_t pgid = leftover_pgid_;
  if (!process_group_members(pgid).empty()) {
    ::killpg(pgid, SIGCONT);  // stopped members must run to die in order
    kill_process_group(pgid, Clock::now() + kKillTimeout, name_);
  }
  leftover_pgid_ = -1;
}

bool ManagedServer::running() const {
  refresh();
  return pid_ > 0;
}

pid_t ManagedServer::pid() const {
  refresh();
  return pid_;
}

void ManagedServer::start() {
  refresh();
  if (pid_ > 0) {
    if (paused_) resume();
    return;
  }
  clear_leftover_group();
  if (!prepared_) {
    prepare();
    prepared_ = true;
  }
  // Only the first start may move to another port: later starts keep the address that
  // clients (and PgBouncer's configuration) already know.
  const bool first_start = !started_once_;
  for (int attempt = 1;; ++attempt) {
    if (first_start) {
      port_ = free_loopback_port();
      write_config();
    }
    const LaunchResult result = launch_once(first_start, attempt < kMaxStartAttempts);
    if (result == LaunchResult::ready) break;
    std::fprintf(stderr, "[server_harness] %s: start attempt %d on port %u failed (%s); retrying\n",
                 name_.c_str(), attempt, static_cast<unsigned>(port_),
                 result == LaunchResult::port_in_use ? "port taken" : "repaired");
  }
  if (!started_once_) {
    started_once_ = true;
    after_first_start();
  }
}

ManagedServer::LaunchResult ManagedServer::launch_once(bool may_change_port, bool may_retry) {
  const std::uintmax_t log_offset = file_size_or_zero(log_path());
  const auto deadline = Clock::now() + start_timeout_;
  pid_ = spawn_process(SpawnRequest{command(), directory_, log_path(), user_});
  paused_ = false;
  std::string probe_error = "not probed yet";
  const auto where = [&] {
    return name_ + " (pid " + std::to_string(pid_) + ", port " + std::to_string(port_) + ", " +
           directory_ + ")";
  };
  for (int attempt = 0;; ++attempt) {
    std::optional<int> exit_status = wait_child(pid_, Clock::now());
    if (!exit_status && probe_ready(probe_error)) {
      // The probe also checked that it talked to *our* server; make sure it is still up.
      exit_status = wait_child(pid_, Clock::now());
      if (!exit_status) return LaunchResult::ready;
    }
    if (exit_status) {
      const std::string description = where();
      forget_process();
      clear_leftover_group();
      const std::string log = log_tail(log_path(), log_offset, 400);
      if (may_retry && may_change_port && log.find("Address already in use") != std::string::npos) {
        return LaunchResult::port_in_use;
      }
      if (may_retry && repair_after_failed_start(log)) return LaunchResult::repaired;
      throw std::runtime_error("server_harness: " + description + " exited during startup (" +
                               describe_wait_status(*exit_status) + "); log " + log_path() +
                               ":\n" + log_tail(log_path(), log_offset));
    }
    if (Clock::now() >= deadline) {
      const std::string description = where();
      ::killpg(pid_, SIGKILL);
      wait_child(pid_, Clock::now() + kKillTimeout);
      forget_process();
      clear_leftover_group();
      throw std::runtime_error("server_harness: " + description + " was not ready within " +
                               ms_text(start_timeout_) + " (last probe: " + probe_error +
                               "); log " + log_path() + ":\n" + log_tail(log_path(), log_offset));
    }
    poll_pause(attempt);
  }
}

void ManagedServer::stop() {
  refresh();
  if (pid_ <= 0) {
    clear_leftover_group();
    return;
  }
  if (paused_) resume();  // a stopped process cannot shut down
  const pid_t pid = pid_;
  const int signal_number = stop_signal();
  if (::kill(pid, signal_number) != 0 && errno != ESRCH) {
    throw_errno("server_harness: kill(" + std::to_string(pid) + ", " +
                std::to_string(signal_number) + ") for " + name_);
  }
  auto status = wait_child(pid, Clock::now() + kStopTimeout);
  if (!status) {
    std::fprintf(stderr,
                 "[server_harness] %s (pid %d) did not stop within %lld s after signal %d; "
                 "sending SIGKILL to its process group\n",
                 name_.c_str(), pid, static_cast<long long>(kStopTimeout.count()),
                 signal_number);
    ::killpg(pid, SIGKILL);
    status = wait_child(pid, Clock::now() + kKillTimeout);
    if (!status) {
      throw std::runtime_error("server_harness: " + name_ + " (pid " + std::to_string(pid) +
                               ") survived SIGKILL for " + std::to_string(kKillTimeout.count()) +
                               " s");
    }
  }
  forget_process();
  clear_leftover_group();
}

void ManagedServer::kill() {
  refresh();
  if (pid_ <= 0) {
    clear_leftover_group();
    return;
  }
  const pid_t pid = pid_;
  if (::killpg(pid, SIGKILL) != 0 && errno != ESRCH) {
    throw_errno("server_harness: killpg(" + std::to_string(pid) + ", SIGKILL) for " + name_);
  }
  if (!wait_child(pid, Clock::now() + kKillTimeout)) {
    throw std::runtime_error("server_harness: " + name_ + " (pid " + std::to_string(pid) +
                             ") survived SIGKILL for " + std::to_string(kKillTimeout.count()) +
                             " s");
  }
  forget_process();
  clear_leftover_group();  // e.g. PostgreSQL backends: wait until they are gone too
}

void ManagedServer::pause() {
  refresh();
  if (pid_ <= 0) throw std::runtime_error("server_harness: cannot pause " + name_ + ": not running");
  if (::killpg(pid_, SIGSTOP) != 0) {
    throw_errno("server_harness: killpg(" + std::to_string(pid_) + ", SIGSTOP) for " + name_);
  }
  paused_ = true;
  const bool stopped = wait_group_states(pid_, Clock::now() + kSignalTimeout,
                                         [](char state) { return state == 'T' || state == 't'; });
  if (!stopped) {
    throw std::runtime_error("server_harness: " + name_ + " did not stop on SIGSTOP within " +
                             std::to_string(kSignalTimeout.count()) + " s");
  }
}

void ManagedServer::resume() {
  refresh();
  if (pid_ <= 0) return;
  if (::killpg(pid_, SIGCONT) != 0 && errno != ESRCH) {
    throw_errno("server_harness: killpg(" + std::to_string(pid_) + ", SIGCONT) for " + name_);
  }
  paused_ = false;
  const bool continued = wait_group_states(pid_, Clock::now() + kSignalTimeout,
                                           [](char state) { return state != 'T'; });
  if (!continued) {
    throw std::runtime_error("server_harness: " + name_ + " did not continue on SIGCONT within " +
                             std::to_string(kSignalTimeout.count()) + " s");
  }
}

}  // namespace trading_shared::testing::detail

#include "support/server_process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
#include <string_view>
#include <thread>

namespace trading_shared::testing::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::seconds kStopTimeout{10};
constexpr std::chrono::seconds kKillTimeout{10};
constexpr std::chrono::seconds kSignalTimeout{5};
constexpr std::chrono::seconds kStopGrace{2};
constexpr std::chrono::seconds kExecReportTimeout{10};
constexpr int kMaxStartAttempts = 5;
constexpr std::uintmax_t kMaxLogRead = std::uintmax_t{64} * 1024;

std::string errno_text(int error) {
  return std::string(std::strerror(error));
}

[[noreturn]] void throw_errno(const std::string& what, int error = errno) {
  throw std::runtime_error(what + ": " + errno_text(error));
}

std::string ms_text(std::chrono::milliseconds ms) {
  return std::to_string(ms.count()) + " ms";
}

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
  const char* executable = nullptr;
  std::vector<char*> argv;
  std::vector<char*> envp;
  const char* directory = nullptr;
  const char* log_file = nullptr;  // nullptr: keep stdout/stderr
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
  bool parent_death_signal = true;
  int stdin_fd = -1;
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
  if (::setpgid(0, 0) != 0) {
    fail(ChildStep::setpgid);
  }
  if (::chdir(args.directory) != 0) {
    fail(ChildStep::chdir);
  }
  if (args.switch_user) {
    const gid_t groups[] = {args.gid};
    if (::setgroups(1, groups) != 0) {
      fail(ChildStep::setgroups);
    }
    if (::setgid(args.gid) != 0) {
      fail(ChildStep::setgid);
    }
    if (::setuid(args.uid) != 0) {
      fail(ChildStep::setuid);
    }
  }
  if (args.parent_death_signal) {
    // After setuid, which clears the parent-death signal.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
      fail(ChildStep::pdeathsig);
    }
    // The parent may have died before prctl took effect: then nobody would kill us.
    if (::getppid() != args.parent) {
      ::_exit(126);
    }
  }
  const int input = args.stdin_fd >= 0 ? ::fcntl(args.stdin_fd, F_DUPFD_CLOEXEC, 3)
                                       : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (input < 0) {
    fail(ChildStep::open_stdin);
  }
  if (::dup2(input, STDIN_FILENO) < 0) {
    fail(ChildStep::dup2);
  }
  if (args.log_file != nullptr) {
    const int log_fd = ::open(args.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) {
      fail(ChildStep::open_log);
    }
    if (::dup2(log_fd, STDOUT_FILENO) < 0 || ::dup2(log_fd, STDERR_FILENO) < 0) {
      fail(ChildStep::dup2);
    }
  }
  // No other descriptor of the test binary (client sockets, ...) may leak into a server.
  if (report > 3) {
    ::close_range(3, static_cast<unsigned>(report) - 1, 0);
  }
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
  ::execve(args.executable, args.argv.data(), args.envp.data());
  fail(ChildStep::exec);
  ::_exit(127);  // not reached
}

/// Fields 3.. of /proc/PID/stat (after "pid (comm)"), or nullopt when it cannot be read.
std::optional<std::vector<std::string>> stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) {
    return std::nullopt;
  }
  const auto close_paren = line.rfind(')');
  if (close_paren == std::string::npos) {
    return std::nullopt;
  }
  std::istringstream rest(line.substr(close_paren + 1));
  std::vector<std::string> fields;
  std::string field;
  while (rest >> field) {
    fields.push_back(field);
  }
  if (fields.size() < 20) {
    return std::nullopt;
  }
  return fields;
}

bool is_dead_state(char state) {
  return state == 'Z' || state == 'X' || state == 'x';
}

bool in_directory(const std::string& path, const std::string& directory) {
  return !path.empty() &&
         (path == directory ||
          (path.size() > directory.size() && path.compare(0, directory.size(), directory) == 0 &&
           path[directory.size()] == '/'));
}

}  // namespace

ServerUser server_user() {
  ServerUser user;
  if (::geteuid() != 0) {
    return user;
  }
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
  if (!user.switch_user) {
    return;
  }
  if (::chown(path.c_str(), user.uid, user.gid) != 0) {
    throw_errno("server_harness: chown " + path + " to " + user.name);
  }
}

pid_t spawn_process(const SpawnRequest& request) {
  if (request.argv.empty()) {
    throw std::invalid_argument("spawn_process: empty argv");
  }
  if (request.parent_death_signal && ::gettid() != ::getpid()) {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits, not the process.
    throw std::logic_error("server_harness: servers must be started from the main thread (" +
                           request.argv[0] + ")");
  }
  // Everything the child touches is prepared here: after fork it only makes system calls.
  ChildArgs args;
  args.executable =
      request.executable.empty() ? request.argv[0].c_str() : request.executable.c_str();
  for (const auto& arg : request.argv) {
    args.argv.push_back(const_cast<char*>(arg.c_str()));
  }
  args.argv.push_back(nullptr);
  const auto replaced = [&request](const char* entry) {
    const std::string_view view(entry);
    return std::any_of(request.extra_env.begin(), request.extra_env.end(),
                       [view](const std::string& extra) {
                         const auto name = extra.substr(0, extra.find('=') + 1);
                         return view.substr(0, name.size()) == name;
                       });
  };
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (!replaced(*entry)) {
      args.envp.push_back(*entry);
    }
  }
  for (const auto& extra : request.extra_env) {
    args.envp.push_back(const_cast<char*>(extra.c_str()));
  }
  args.envp.push_back(nullptr);
  args.directory = request.directory.c_str();
  args.log_file = request.log_file.empty() ? nullptr : request.log_file.c_str();
  args.switch_user = request.user.switch_user;
  args.uid = request.user.uid;
  args.gid = request.user.gid;
  args.parent_death_signal = request.parent_death_signal;
  args.stdin_fd = request.stdin_fd;
  args.parent = ::getpid();

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw_errno("spawn_process: pipe2");
  }
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
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd poll_fd{pipe_fds[0], POLLIN, 0};
    const int ready = ::poll(&poll_fd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready < 0) {
      const int error = errno;
      ::close(pipe_fds[0]);
      throw_errno("spawn_process: poll", error);
    }
    if (ready == 0) {
      continue;
    }
    const ssize_t n =
        ::read(pipe_fds[0], reinterpret_cast<char*>(&report) + received, sizeof report - received);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
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
    throw std::runtime_error(
        "spawn_process: starting " + request.argv[0] + " in " + request.directory +
        (request.user.switch_user ? " as user " + request.user.name : std::string()) + ": " +
        child_step_name(report.step) + " failed: " + errno_text(report.error) +
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
  if (WIFEXITED(status)) {
    return "exit status " + std::to_string(WEXITSTATUS(status));
  }
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
    if (result == pid) {
      return status;
    }
    if (result < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == ECHILD) {
        return 0;  // reaped elsewhere (e.g. SIGCHLD ignored): it is gone
      }
      throw_errno("waitpid(" + std::to_string(pid) + ")");
    }
    if (Clock::now() >= deadline) {
      return std::nullopt;
    }
    poll_pause(attempt);
  }
}

bool is_pid_text(const std::string& text) {
  return !text.empty() && text.size() <= 9 &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<char> process_state(pid_t pid) {
  const auto fields = stat_fields(pid);
  if (!fields || (*fields)[0].empty()) {
    return std::nullopt;
  }
  return (*fields)[0][0];
}

bool process_alive(pid_t pid) {
  if (pid <= 0) {
    return false;
  }
  const auto state = process_state(pid);
  return state && !is_dead_state(*state);
}

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  const auto fields = stat_fields(pid);
  if (!fields) {
    return std::nullopt;
  }
  return std::stoull((*fields)[19]);  // field 22 of /proc/PID/stat
}

std::vector<pid_t> process_group_members(pid_t pgid) {
  std::vector<pid_t> members;
  std::error_code error;
  for (fs::directory_iterator it("/proc", error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!is_pid_text(name)) {
      continue;
    }
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    const auto fields = stat_fields(pid);  // state ppid pgrp ...
    if (!fields || is_dead_state((*fields)[0][0])) {
      continue;
    }
    if (std::stol((*fields)[2]) == pgid) {
      members.push_back(pid);
    }
  }
  if (error) {
    throw std::runtime_error("server_harness: listing /proc: " + error.message());
  }
  return members;
}

bool wait_group_gone(pid_t pgid, Clock::time_point deadline) {
  for (int attempt = 0;; ++attempt) {
    if (process_group_members(pgid).empty()) {
      return true;
    }
    if (Clock::now() >= deadline) {
      return false;
    }
    poll_pause(attempt);
  }
}

void kill_process_group(pid_t pgid, Clock::time_point deadline, const std::string& what) {
  if (::killpg(pgid, SIGKILL) != 0 && errno != ESRCH) {
    throw_errno("server_harness: killpg(" + std::to_string(pgid) + ", SIGKILL) for " + what);
  }
  if (!wait_group_gone(pgid, deadline)) {
    std::string pids;
    for (const pid_t member : process_group_members(pgid)) {
      pids += " " + std::to_string(member);
    }
    throw std::runtime_error("server_harness: processes of " + what + " (process group " +
                             std::to_string(pgid) + ") survived SIGKILL:" + pids);
  }
}

std::vector<pid_t> processes_in_directory(const std::string& directory) {
  const pid_t self = ::getpid();
  std::vector<pid_t> pids;
  std::error_code error;
  for (fs::directory_iterator it("/proc", error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!is_pid_text(name)) {
      continue;
    }
    const auto pid = static_cast<pid_t>(std::stol(name));
    if (pid != self && in_directory(process_working_directory(pid), directory)) {
      pids.push_back(pid);
    }
  }
  if (error) {
    throw std::runtime_error("server_harness: listing /proc: " + error.message());
  }
  return pids;
}

bool signal_process_in_directory(pid_t pid, const std::string& directory, int signal_number) {
  // Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks extern "C".
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    return false;  // gone
  }
  // The pidfd pins the process; if it is still alive after the check, the PID was its own
  // all along and the working directory we read was its own too.
  const bool ours = in_directory(process_working_directory(pid), directory) &&
                    ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0;
  const bool sent = ours && ::syscall(SYS_pidfd_send_signal, pidfd, signal_number, nullptr, 0) == 0;
  ::close(pidfd);
  return sent;
}

std::uintmax_t file_size_or_zero(const std::string& path) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  return error ? 0 : size;
}

std::string log_tail(const std::string& path, std::uintmax_t offset, std::size_t max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return "(no log file " + path + ")";
  }
  const std::uintmax_t size = file_size_or_zero(path);
  std::uintmax_t start = std::min(offset, size);
  if (size - start > kMaxLogRead) {
    start = size - kMaxLogRead;
  }
  in.seekg(static_cast<std::streamoff>(start));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    lines.push_back(line);
  }
  const std::size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string tail;
  for (std::size_t i = first; i < lines.size(); ++i) {
    tail += "  | " + lines[i] + "\n";
  }
  return tail.empty() ? "(log " + path + " is empty)\n" : tail;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("server_harness: cannot read " + path);
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    throw std::runtime_error("server_harness: cannot write " + path);
  }
}

std::string find_program(const std::string& name, const std::vector<std::string>& candidates) {
  for (const auto& candidate : candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  if (const char* path = std::getenv("PATH")) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      if (dir.empty()) {
        continue;
      }
      std::string candidate = dir;
      candidate += "/";
      candidate += name;
      if (::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
    }
  }
  throw std::runtime_error("server_harness: program '" + name +
                           "' not found (install it: scripts/install-deps)");
}

void release_stale_postgres_shared_memory(const std::string& data_directory) {
  const std::string pid_file = data_directory + "/postmaster.pid";
  std::ifstream in(pid_file);
  if (!in) {
    return;  // clean shutdown: no pid file, nothing to release
  }
  // Line 7 of postmaster.pid: "<shared memory key> <shared memory id>".
  std::string line;
  for (int number = 1; number <= 7; ++number) {
    if (!std::getline(in, line)) {
      return;
    }
  }
  std::istringstream fields(line);
  unsigned long key = 0;
  int shm_id = 0;
  if (!(fields >> key >> shm_id)) {
    return;
  }
  shmid_ds info{};
  if (::shmctl(shm_id, IPC_STAT, &info) != 0) {
    return;  // already gone
  }
  if (static_cast<unsigned long>(info.shm_perm.__key) != key || info.shm_nattch != 0) {
    return;  // not that segment any more, or still in use
  }
  if (::shmctl(shm_id, IPC_RMID, nullptr) != 0) {
    std::fprintf(stderr, "[server_harness] releasing shared memory %d of %s: %s\n", shm_id,
                 data_directory.c_str(), std::strerror(errno));
  }
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
    std::vector<pid_t> killed;
    if (pid_ > 0) {
      killed = signal_all(SIGKILL);
      wait_child(pid_, Clock::now() + kKillTimeout);
      forget_process();
    }
    end_remaining(Clock::duration::zero(), killed);
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
  if (pid_ <= 0) {
    return;
  }
  int status = 0;
  const pid_t result = ::waitpid(pid_, &status, WNOHANG);
  if (result == pid_ || (result < 0 && errno == ECHILD)) {
    std::fprintf(stderr, "[server_harness] %s (pid %d) exited by itself: %s\n", name_.c_str(), pid_,
                 result == pid_ ? describe_wait_status(status).c_str() : "reaped elsewhere");
    forget_process();
  }
}

void ManagedServer::forget_process() const {
  leftover_pgid_ = pid_;
  pid_ = -1;
  paused_ = false;
}

std::vector<pid_t> ManagedServer::server_processes() const {
  std::vector<pid_t> pids = processes_in_directory(directory_);
  const pid_t pgid = pid_ > 0 ? pid_ : leftover_pgid_;
  if (pgid > 0) {
    for (const pid_t member : process_group_members(pgid)) {
      if (std::find(pids.begin(), pids.end(), member) == pids.end()) {
        pids.push_back(member);
      }
    }
  }
  return pids;
}

std::vector<pid_t> ManagedServer::signal_all(int signal_number) const {
  std::vector<pid_t> targets = server_processes();
  const pid_t pgid = pid_ > 0 ? pid_ : leftover_pgid_;
  if (pgid > 0 && ::killpg(pgid, signal_number) != 0 && errno != ESRCH) {
    throw_errno("server_harness: killpg(" + std::to_string(pgid) + ", " +
                std::to_string(signal_number) + ") for " + name_);
  }
  for (const pid_t pid : processes_in_directory(directory_)) {
    signal_process_in_directory(pid, directory_, signal_number);
  }
  return targets;
}

void ManagedServer::end_remaining(Clock::duration grace, const std::vector<pid_t>& known) {
  // Processes are tracked by PID and start time once seen: a dying process loses its working
  // directory (so server_processes() no longer lists it) before it is gone.
  struct Tracked {
    pid_t pid;
    std::uint64_t start_time;
  };
  std::vector<Tracked> tracked;
  const auto track = [&tracked](const std::vector<pid_t>& pids) {
    for (const pid_t pid : pids) {
      const bool known_pid = std::any_of(tracked.begin(), tracked.end(),
                                         [pid](const Tracked& t) { return t.pid == pid; });
      const auto start_time = known_pid ? std::nullopt : process_start_time(pid);
      if (start_time) {
        tracked.push_back({pid, *start_time});
      }
    }
  };
  const auto any_left = [&] {
    track(server_processes());
    std::erase_if(tracked, [](const Tracked& t) {
      return !process_alive(t.pid) || process_start_time(t.pid) != t.start_time;
    });
    return !tracked.empty();
  };
  track(known);
  const auto grace_deadline = Clock::now() + grace;
  for (int attempt = 0; Clock::now() < grace_deadline && any_left(); ++attempt) {
    poll_pause(attempt);
  }
  const auto deadline = Clock::now() + kKillTimeout;
  for (int attempt = 0; any_left(); ++attempt) {
    if (Clock::now() >= deadline) {
      std::string pids;
      for (const Tracked& t : tracked) {
        pids += " " + std::to_string(t.pid);
      }
      throw std::runtime_error("server_harness: processes of " + name_ + " survived SIGKILL for " +
                               std::to_string(kKillTimeout.count()) + " s:" + pids);
    }
    track(signal_all(SIGKILL));  // again each round: also reaches processes forked meanwhile
    poll_pause(attempt);
  }
  leftover_pgid_ = -1;
}

template <typename Done>
void ManagedServer::signal_until(int signal_number, Done done, const char* what) {
  const auto deadline = Clock::now() + kSignalTimeout;
  for (int attempt = 0;; ++attempt) {
    // Again each round: a process forked before its parent stopped needs the signal too.
    signal_all(signal_number);
    bool all_done = true;
    for (const pid_t pid : server_processes()) {
      const auto state = process_state(pid);
      if (state && !is_dead_state(*state) && !done(*state)) {
        all_done = false;
      }
    }
    if (all_done) {
      return;
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error("server_harness: " + name_ + " did not " + what + " within " +
                               std::to_string(kSignalTimeout.count()) + " s");
    }
    poll_pause(attempt);
  }
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
    if (paused_) {
      resume();
    }
    return;
  }
  // Debris of a main process that died by itself (e.g. PostgreSQL backends still attached
  // to the old shared memory) would keep the new server from starting.
  end_remaining(Clock::duration::zero());
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
    if (result == LaunchResult::ready) {
      break;
    }
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
  pid_ = spawn_process(server_spawn_request(command(), directory_, log_path(), user_));
  paused_ = false;
  std::string probe_error = "not probed yet";
  const auto where = [&] {
    return name_ + " (pid " + std::to_string(pid_) + ", port " + std::to_string(port_) + ", " +
           directory_ + ")";
  };
  // "server_harness: <where> <what>; log <path>:\n<tail of this attempt's log>"
  const auto failure = [&](const std::string& description, const std::string& what) {
    return std::runtime_error("server_harness: " + description + " " + what + "; log " +
                              log_path() + ":\n" + log_tail(log_path(), log_offset));
  };
  for (int attempt = 0;; ++attempt) {
    std::optional<int> exit_status = wait_child(pid_, Clock::now());
    if (!exit_status && probe_ready(probe_error)) {
      // The probe also checked that it talked to *our* server; make sure it is still up.
      exit_status = wait_child(pid_, Clock::now());
      if (!exit_status) {
        return LaunchResult::ready;
      }
    }
    if (exit_status) {
      const std::string description = where();
      forget_process();
      end_remaining(Clock::duration::zero());
      const std::string log = log_tail(log_path(), log_offset, 400);
      if (may_retry && may_change_port && log.find("Address already in use") != std::string::npos) {
        return LaunchResult::port_in_use;
      }
      if (may_retry && repair_after_failed_start(log)) {
        return LaunchResult::repaired;
      }
      throw failure(description,
                    "exited during startup (" + describe_wait_status(*exit_status) + ")");
    }
    if (Clock::now() >= deadline) {
      const std::string description = where();
      const std::vector<pid_t> killed = signal_all(SIGKILL);
      wait_child(pid_, Clock::now() + kKillTimeout);
      forget_process();
      end_remaining(Clock::duration::zero(), killed);
      throw failure(description, "was not ready within " + ms_text(start_timeout_) +
                                     " (last probe: " + probe_error + ")");
    }
    poll_pause(attempt);
  }
}

void ManagedServer::stop() {
  refresh();
  if (pid_ <= 0) {
    end_remaining(Clock::duration::zero());
    return;
  }
  if (paused_) {
    resume();  // a stopped process cannot shut down
  }
  const pid_t pid = pid_;
  const int signal_number = stop_signal();
  if (::kill(pid, signal_number) != 0 && errno != ESRCH) {
    throw_errno("server_harness: kill(" + std::to_string(pid) + ", " +
                std::to_string(signal_number) + ") for " + name_);
  }
  auto status = wait_child(pid, Clock::now() + kStopTimeout);
  std::vector<pid_t> killed;
  if (!status) {
    std::fprintf(stderr,
                 "[server_harness] %s (pid %d) did not stop within %lld s after signal %d; "
                 "sending SIGKILL\n",
                 name_.c_str(), pid, static_cast<long long>(kStopTimeout.count()), signal_number);
    killed = signal_all(SIGKILL);
    status = wait_child(pid, Clock::now() + kKillTimeout);
    if (!status) {
      throw std::runtime_error("server_harness: " + name_ + " (pid " + std::to_string(pid) +
                               ") survived SIGKILL for " + std::to_string(kKillTimeout.count()) +
                               " s");
    }
  }
  forget_process();
  // After a clean shutdown nothing is left; anything else gets a moment, then SIGKILL.
  end_remaining(kStopGrace, killed);
}

void ManagedServer::kill() {
  refresh();
  if (pid_ <= 0) {
    end_remaining(Clock::duration::zero());
    return;
  }
  const pid_t pid = pid_;
  const std::vector<pid_t> killed = signal_all(SIGKILL);
  if (!wait_child(pid, Clock::now() + kKillTimeout)) {
    throw std::runtime_error("server_harness: " + name_ + " (pid " + std::to_string(pid) +
                             ") survived SIGKILL for " + std::to_string(kKillTimeout.count()) +
                             " s");
  }
  forget_process();
  end_remaining(Clock::duration::zero(), killed);  // e.g. PostgreSQL backends: until gone
}

void ManagedServer::pause() {
  refresh();
  if (pid_ <= 0) {
    throw std::runtime_error("server_harness: cannot pause " + name_ + ": not running");
  }
  paused_ = true;
  signal_until(
      SIGSTOP, [](char state) { return state == 'T' || state == 't'; }, "stop on SIGSTOP");
}

void ManagedServer::resume() {
  refresh();
  if (pid_ <= 0) {
    return;
  }
  signal_until(
      SIGCONT, [](char state) { return state != 'T' && state != 't'; }, "continue on SIGCONT");
  paused_ = false;
}

}  // namespace trading_shared::testing::detail

#pragma once
/// @file
/// Private helpers of the real-server harness (server_harness.cpp): spawning a server in its
/// own process group as an unprivileged user, waiting for processes with deadlines, reading
/// log tails, and `ManagedServer`, the generic `ServerProcess` implementation that the
/// PostgreSQL, Redis and PgBouncer handles specialise.
///
/// Not thread-safe: the harness drives every handle from the main thread.

#include "support/server_harness.hpp"

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::testing::detail {

using Clock = std::chrono::steady_clock;

/// The unprivileged account servers run as when the harness runs as root.
struct ServerUser {
  bool switch_user = false;  ///< false when not root: servers run as the current user
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;
};

/// `postgres` (or `nobody`) when running as root, else "no switch".
ServerUser server_user();

/// Gives `path` to the server user (no-op when not switching users).
void chown_to(const ServerUser& user, const std::string& path);

/// What to run, where, as whom.
struct SpawnRequest {
  std::vector<std::string> argv;  ///< argv[0] is the absolute path of the program
  std::string directory;          ///< working directory of the child
  std::string log_file;           ///< stdout and stderr are appended here; empty: inherited
  ServerUser user;
  /// PR_SET_PDEATHSIG(SIGKILL); only the guardian, which must outlive us, goes without.
  bool parent_death_signal = true;
  /// Becomes the child's stdin; -1: /dev/null.
  int stdin_fd = -1;
  /// Executed instead of argv[0] when not empty (argv[0] then only names the process).
  std::string executable;
  /// "NAME=value" entries added to (or replacing in) the inherited environment.
  std::vector<std::string> extra_env;
};

/// A server's request: pdeathsig, /dev/null as stdin, the log as stdout/stderr.
inline SpawnRequest server_spawn_request(std::vector<std::string> argv, std::string directory,
                                         std::string log_file, ServerUser user) {
  SpawnRequest request;
  request.argv = std::move(argv);
  request.directory = std::move(directory);
  request.log_file = std::move(log_file);
  request.user = std::move(user);
  return request;
}

/// fork + exec: the child gets its own process group, the working directory, the server
/// user, PR_SET_PDEATHSIG(SIGKILL), /dev/null as stdin and the log as stdout/stderr, and no
/// other inherited file descriptor. Returns once exec succeeded; throws (with the failing
/// step and errno) when it did not. With parent_death_signal, must be called from the main
/// thread.
pid_t spawn_process(const SpawnRequest& request);

/// How a child ended (waitpid status) in words: "exit status 1", "signal 9 (Killed)".
std::string describe_wait_status(int status);

/// Waits (polling waitpid WNOHANG) until `pid`, a child of ours, exits. Returns its wait
/// status, or nullopt at the deadline. A child that somebody else reaped counts as exited
/// (status 0).
std::optional<int> wait_child(pid_t pid, Clock::time_point deadline);

/// True when `text` is a plausible PID: 1 to 9 decimal digits.
bool is_pid_text(const std::string& text);

/// True when a process with this PID exists and is not a zombie.
bool process_alive(pid_t pid);

/// PIDs of the live (non-zombie) members of process group `pgid`.
std::vector<pid_t> process_group_members(pid_t pgid);

/// Single-letter state of a process from /proc/PID/stat ('R', 'S', 'T', 'Z', ...), or
/// nullopt when it does not exist.
std::optional<char> process_state(pid_t pid);

/// Start time of a process (clock ticks since boot, /proc/PID/stat field 22), to tell a
/// process from a later one that reused its PID.
std::optional<std::uint64_t> process_start_time(pid_t pid);

/// Sends SIGKILL to the whole group and waits until none of its members is alive; throws at
/// the deadline.
void kill_process_group(pid_t pgid, Clock::time_point deadline, const std::string& what);

/// Live processes (other than this one) whose working directory is `directory` or below.
std::vector<pid_t> processes_in_directory(const std::string& directory);

/// Sends a signal to `pid` if it is alive and works in `directory` or below. Safe against PID
/// reuse: the check and the signal go through one pidfd. Returns whether it was sent.
bool signal_process_in_directory(pid_t pid, const std::string& directory, int signal_number);

/// Waits until no member of the group is alive; false at the deadline.
bool wait_group_gone(pid_t pgid, Clock::time_point deadline);

/// Size of a file, 0 when it does not exist.
std::uintmax_t file_size_or_zero(const std::string& path);

/// The last `max_lines` lines of a file, read from byte `offset` on (bounded in size).
std::string log_tail(const std::string& path, std::uintmax_t offset = 0,
                     std::size_t max_lines = 40);

/// Reads a whole (small) text file; throws when it cannot.
std::string read_text_file(const std::string& path);
/// Writes a text file (truncating); throws when it cannot.
void write_text_file(const std::string& path, const std::string& text);

/// Absolute path of an executable: the first of `candidates` that exists, else `name` looked
/// up in PATH; throws when not found.
std::string find_program(const std::string& name, const std::vector<std::string>& candidates);

/// Releases the System V shared memory segment that a PostgreSQL killed with SIGKILL left
/// behind in `data_directory` (a new postmaster there would reuse and release it): only when
/// its key matches postmaster.pid and nothing is attached. Call only when no process of that
/// server is left.
void release_stale_postgres_shared_memory(const std::string& data_directory);

/// Sleeps for a polling step that grows from 2 ms to 50 ms with `attempt`.
void poll_pause(int attempt);

/// Generic server process: start with readiness polling (and a new port when the first start
/// lost a port race), graceful stop with a SIGKILL fallback, kill, pause and resume.
///
/// "The server" is every process of its process group plus every process working in its
/// directory: PostgreSQL backends call setsid() and so leave the postmaster's group, but
/// they keep its working directory (the data directory), also after the postmaster died.
class ManagedServer : public ServerProcess {
 public:
  ManagedServer(std::string name, std::string directory, ServerUser user,
                std::chrono::milliseconds start_timeout);
  ~ManagedServer() override;
  ManagedServer(const ManagedServer&) = delete;
  ManagedServer& operator=(const ManagedServer&) = delete;

  void start() override;
  void stop() override;
  void kill() override;
  void pause() override;
  void resume() override;

  bool running() const override;
  pid_t pid() const override;
  std::uint16_t port() const override { return port_; }
  const std::string& host() const override { return host_; }
  const std::string& directory() const override { return directory_; }

  const std::string& name() const { return name_; }
  bool paused() const { return paused_; }
  /// The file that receives the server's stdout and stderr.
  std::string log_path() const { return directory_ + "/server.log"; }

 protected:
  /// Once, before the first start: directories, initdb, static files.
  virtual void prepare() {}
  /// Writes the configuration for port_ (called before each first-start attempt).
  virtual void write_config() = 0;
  /// argv of the server, argv[0] absolute.
  virtual std::vector<std::string> command() const = 0;
  /// One bounded readiness probe: true when the server (ours, on port_) accepts work. On
  /// false, sets `error` to why, for the timeout message.
  virtual bool probe_ready(std::string& error) = 0;
  /// Signal for a graceful stop.
  virtual int stop_signal() const { return SIGTERM; }
  /// Called after a start attempt failed because the process exited; returns true when it
  /// repaired something and the start should be tried again on the same port.
  virtual bool repair_after_failed_start(const std::string& /*log*/) { return false; }
  /// Called once after the first successful start.
  virtual void after_first_start() {}

  /// For the destructors of derived classes, which must stop while stop_signal() is theirs.
  void stop_noexcept() noexcept;

  const ServerUser& user() const { return user_; }
  std::chrono::milliseconds start_timeout() const { return start_timeout_; }

 private:
  enum class LaunchResult { ready, port_in_use, repaired };
  /// One spawn + readiness wait. Returns port_in_use / repaired only when `may_retry`;
  /// throws (with the log tail) on any other failure.
  LaunchResult launch_once(bool may_change_port, bool may_retry);
  /// Reaps the server when it exited by itself (mutable state: also from const getters).
  void refresh() const;
  /// Clears the handle after the main process was reaped; remembers its group, whose
  /// remaining members are cleaned up by end_remaining().
  void forget_process() const;
  /// The live processes of the server (see the class comment).
  std::vector<pid_t> server_processes() const;
  /// Sends a signal to every process of the server; returns the processes it found.
  std::vector<pid_t> signal_all(int signal_number) const;
  /// Waits up to `grace` for what is left of the server (once its main process is gone) to
  /// exit, then SIGKILLs it and waits until every process is gone (including `known` ones,
  /// seen earlier); throws when something survives.
  void end_remaining(Clock::duration grace, const std::vector<pid_t>& known = {});
  /// Repeats `signal_number` to all server processes until all satisfy `done(state)`.
  template <typename Done>
  void signal_until(int signal_number, Done done, const char* what);

  std::string name_;
  std::string directory_;
  std::string host_ = "127.0.0.1";
  ServerUser user_;
  std::chrono::milliseconds start_timeout_;
  std::uint16_t port_ = 0;
  bool prepared_ = false;
  bool started_once_ = false;
  mutable pid_t pid_ = -1;
  mutable pid_t leftover_pgid_ = -1;
  mutable bool paused_ = false;
};

}  // namespace trading_shared::testing::detail

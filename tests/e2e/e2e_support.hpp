#pragma once
/// @file
/// The pieces of ts-pipeline (tests/e2e/pipeline.cpp) that are not the scenario itself:
/// interruption by SIGINT/SIGTERM, polling with a deadline, the child processes it runs
/// (spawned through the harness, stopped and reaped on every path), a small blocking libpq
/// wrapper, a small blocking Redis (RESP2) connection for the soak mode's faults and samples,
/// the memory and descriptors of a process, and JSON files.
///
/// Everything here is driven from the main thread: children are spawned with
/// PR_SET_PDEATHSIG, which follows the forking thread.

#include <boost/json/value.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct pg_conn;
struct ssl_st;

namespace trading_shared::e2e {

using Clock = std::chrono::steady_clock;

// ---- interruption ---------------------------------------------------------------------------

/// Thrown by the polling helpers once ts-pipeline received SIGINT or SIGTERM.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// First SIGINT/SIGTERM: remembered; the orchestrator notices it at its next poll, stops its
/// children and servers and exits 1. Second: immediate _exit(1); the children and servers
/// then die by their PR_SET_PDEATHSIG, and the harness's guardian removes what is left.
void install_signal_handlers();
/// The signal received (0: none yet).
int received_signal();
/// Throws Interrupted when a signal was received.
void throw_if_interrupted();

/// Seconds since `since`.
double seconds_since(Clock::time_point since);

/// Waits one polling step; throws Interrupted when a signal was received.
void pause_step(std::chrono::milliseconds step);

/// Polls `condition` every `step` until it holds or `deadline` passes; returns its last value.
/// Throws Interrupted when a signal was received.
bool poll_until(const std::function<bool()>& condition, Clock::time_point deadline,
                std::chrono::milliseconds step = std::chrono::milliseconds(50));

// ---- child processes ------------------------------------------------------------------------

struct ChildSpec {
  std::string name;     ///< for messages: "ts-receiver", "tsctl migrate"
  std::string program;  ///< absolute path
  std::vector<std::string> args;
  std::vector<std::string> env;  ///< "NAME=value", added to the inherited environment
  std::string log_file;          ///< stdout and stderr
  std::string summary_file;      ///< empty when it writes none
};

/// One process that ts-pipeline started (as the current user, in its own process group, with
/// PR_SET_PDEATHSIG(SIGKILL)).
class Child {
 public:
  explicit Child(ChildSpec spec, pid_t pid) : spec_(std::move(spec)), pid_(pid) {}

  const ChildSpec& spec() const { return spec_; }
  const std::string& name() const { return spec_.name; }
  pid_t pid() const { return pid_; }

  /// Reaps the child when it exited; true while it runs.
  bool running();
  /// Exit code when it exited by itself (0-255); nullopt while it runs or when a signal
  /// ended it.
  std::optional<int> exit_code() const;
  bool exited() const { return status_.has_value(); }
  /// "running", "exit status 0", "signal 9 (Killed), after SIGTERM was not obeyed within
  /// 15000 ms".
  std::string describe() const;
  /// Set by Children::stop when SIGTERM was not obeyed in time and SIGKILL followed.
  bool killed() const { return killed_; }
  /// Set by Children::kill: ended by a fault on purpose (its signal is not a failure).
  bool killed_on_purpose() const { return killed_on_purpose_; }
  /// How long it took to exit after SIGTERM (when Children::stop sent one).
  std::optional<std::chrono::milliseconds> stop_time() const { return stop_time_; }

 private:
  friend class Children;
  ChildSpec spec_;
  pid_t pid_;
  std::optional<int> status_;
  bool killed_ = false;
  bool killed_on_purpose_ = false;
  std::optional<std::chrono::milliseconds> kill_after_;
  std::optional<std::chrono::milliseconds> stop_time_;
};

/// Every child of ts-pipeline. The destructor stops (SIGTERM, then SIGKILL) and reaps every
/// child still running, in reverse order of start, so that no path leaves one behind.
class Children {
 public:
  /// `directory`: the working directory of every child.
  explicit Children(std::string directory) : directory_(std::move(directory)) {}
  ~Children();
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;

  /// Starts a child; throws (with the failing step) when it cannot be executed.
  Child& spawn(ChildSpec spec);
  /// Waits until the child exits or `deadline` passes; returns whether it exited. Throws
  /// Interrupted.
  bool wait(Child& child, Clock::time_point deadline);
  /// SIGTERM, then waits up to `timeout`; SIGKILL to its process group after that. Returns
  /// once it is reaped. Never throws for a child that already exited.
  void stop(Child& child, std::chrono::milliseconds timeout);
  /// A fault: SIGKILL to the child's PID (not its group), then reaps it. Throws when it is
  /// not running (it ended by itself first) or survives SIGKILL for 10 s.
  void kill(Child& child);
  /// stop() for every running child, in reverse order of start; never throws.
  void stop_all(std::chrono::milliseconds timeout) noexcept;

  std::deque<Child>& all() { return children_; }

 private:
  std::string directory_;
  std::deque<Child> children_;  // stable references
};

// ---- PostgreSQL -----------------------------------------------------------------------------

/// A blocking libpq connection for the checks (text results). Throws std::runtime_error with
/// the server's message on any failure.
class PgConnection {
 public:
  using Row = std::vector<std::optional<std::string>>;

  /// Connects with a 5 s connect timeout and a 30 s statement timeout.
  explicit PgConnection(const std::string& dsn);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  std::vector<Row> query(const std::string& sql, const std::vector<std::string>& params = {});
  /// The first column of the only row as an integer (0 when NULL).
  std::int64_t query_int(const std::string& sql, const std::vector<std::string>& params = {});

 private:
  pg_conn* connection_ = nullptr;
};

/// A NULL-aware numeric cell.
std::optional<std::int64_t> cell_int(const std::optional<std::string>& cell);
std::optional<double> cell_double(const std::optional<std::string>& cell);

// ---- Redis ----------------------------------------------------------------------------------

/// One RESP2 reply.
struct RedisReply {
  enum class Type { simple, error, integer, bulk, nil, array };
  Type type = Type::nil;
  std::string text;  ///< simple string, error message or bulk string
  std::int64_t integer = 0;
  std::vector<RedisReply> items;  ///< array elements
};

/// A blocking Redis connection (loopback, for the orchestrator's own commands: CLIENT KILL,
/// INFO, HGET, XLEN). Every send and receive is bounded by `timeout` (a stopped server makes a
/// command fail, never hang); any failure throws std::runtime_error and leaves the connection
/// unusable (make a new one).
///
/// After use_tls(): every new connection speaks TLS (ts-pipeline --tls), the server's
/// certificate verified against the CA file for the IP address connected to.
class RedisConnection {
 public:
  /// From now on, new connections speak TLS and trust `ca_file` (PEM). Main thread, before
  /// the first connection. Throws when the file cannot be loaded.
  static void use_tls(const std::string& ca_file);

  RedisConnection(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  /// Sends one command and reads its reply; throws on an error reply too.
  RedisReply command(const std::vector<std::string>& args);

 private:
  RedisReply read_reply();
  std::string read_line();
  void fill();

  void close_connection();
  void send_all(const std::string& request);

  int fd_ = -1;
  ssl_st* ssl_ = nullptr;  ///< with use_tls()
  std::string buffer_;
  std::size_t position_ = 0;
};

/// The value of `key` in the text of INFO ("key:value" lines); nullopt when absent.
std::optional<std::string> info_field(const std::string& info, std::string_view key);

// ---- trade digests ---------------------------------------------------------------------------

/// A decimal as PostgreSQL prints a numeric ("60000.050", "0.10000000", "1765083170123.000")
/// without trailing zeros in the fraction and without a trailing point ("60000.05", "0.1",
/// "1765083170123"): the form ts-feed-sim's digest uses, whatever scale a column kept.
std::string canonical_decimal(std::string_view text);

/// FNV-1a, 64 bit, fed line by line: the digest of a symbol's trades that ts-feed-sim reports
/// in its summary (services/feed_sim/generator.hpp, TradeDigest; written again here so that
/// the check does not share the simulator's code).
class TradeDigest {
 public:
  /// Adds `<id>|<price>|<qty>|<trade_ms>|<event_ms>|<m>\n` (every value canonical already).
  void add_line(std::string_view id, std::string_view price, std::string_view qty,
                std::string_view trade_ms, std::string_view event_ms, bool buyer_maker);
  /// 16 lower-case hex digits, as in the simulator's summary.
  std::string hex() const;

 private:
  void feed(std::string_view text);
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// ---- processes ------------------------------------------------------------------------------

/// Resident memory and open descriptors of a process, read from /proc; a field is nullopt when
/// it could not be read (the process exited).
struct ProcessStats {
  std::optional<std::int64_t> rss_kib;  ///< VmRSS of /proc/<pid>/status
  std::optional<std::int64_t> fds;      ///< entries of /proc/<pid>/fd
  std::optional<double> cpu_seconds;    ///< utime + stime of /proc/<pid>/stat (user + system)
};
ProcessStats read_process_stats(pid_t pid);

// ---- JSON -----------------------------------------------------------------------------------

/// The parsed contents of a JSON file; nullopt when the file does not exist. Throws
/// std::runtime_error when it exists but is not valid JSON.
std::optional<boost::json::value> read_json_file(const std::string& path);
/// Writes `value` (pretty-printed, trailing newline) to `path` via a temporary file and a
/// rename; throws on failure.
void write_json_file(const std::string& path, const boost::json::value& value);
/// `object[key]` as an integer, when `value` is an object and the member is a number.
std::optional<std::int64_t> json_int(const boost::json::value& value, std::string_view key);
/// `object[key]` as text: a string as it is, a number in decimal; nullopt otherwise.
std::optional<std::string> json_text(const boost::json::value& value, std::string_view key);
/// Member `key` of an object, or nullptr.
const boost::json::value* json_member(const boost::json::value& value, std::string_view key);

}  // namespace trading_shared::e2e

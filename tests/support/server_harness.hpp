#pragma once
/// @file
/// Real-server test harness: throwaway PostgreSQL 15, Redis 7 and PgBouncer (transaction
/// pooling, in front of that PostgreSQL) on free loopback ports, in temporary directories,
/// one set per test binary.
///
/// - When run as root, servers run as an unprivileged system user (`postgres`), since
///   PostgreSQL and PgBouncer refuse to run as root.
/// - No server outlives its test binary: each server is started with PR_SET_PDEATHSIG
///   (SIGKILL) in its own process group, and is stopped by `~Servers()` / at exit. Servers
///   must therefore be started from the main thread (pdeathsig follows the forking thread).
/// - `TS_TEST_POSTGRES_DSN`, `TS_TEST_REDIS_URL`, `TS_TEST_PGBOUNCER_DSN` point the tests at
///   existing servers instead; then no process handle is available (`external() == true`)
///   and fault tests skip themselves.

#include "support/tls_certs.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::testing {

/// Handle to one server process that the harness started. All operations are synchronous
/// and bounded in time; they throw std::runtime_error on failure. Not thread-safe: drive it
/// from the main thread.
///
/// "The whole process group" below means the server's process group plus every process
/// working in its directory(): PostgreSQL backends call setsid() and so leave the
/// postmaster's group, but keep its working directory.
class ServerProcess {
 public:
  virtual ~ServerProcess() = default;

  /// Starts the server (same port, same data directory) and waits until it accepts work.
  /// No-op when it runs (a paused server is resumed). What is left of a server whose main
  /// process died by itself is killed first.
  virtual void start() = 0;
  /// Graceful stop (SIGTERM / PostgreSQL fast shutdown; a paused server is resumed first);
  /// SIGKILL after a deadline (10 s). Waits until no process of the server is left. No-op
  /// when not running.
  virtual void stop() = 0;
  /// stop() then start().
  void restart() {
    stop();
    start();
  }
  /// SIGKILL to the whole process group (server and its children), then reaps it and waits
  /// until none of its processes is left. No-op when not running.
  virtual void kill() = 0;
  /// SIGSTOP to the whole process group: the server freezes, its sockets stay open. Returns
  /// once every process is stopped; throws when the server is not running.
  virtual void pause() = 0;
  /// SIGCONT to the whole process group; returns once every process runs again.
  virtual void resume() = 0;

  /// False once the main process exited, whoever caused it (it is then reaped).
  virtual bool running() const = 0;
  /// PID of the main server process, or -1 when not running.
  virtual pid_t pid() const = 0;
  virtual std::uint16_t port() const = 0;
  virtual const std::string& host() const = 0;
  /// The directory the server runs in (data, config, logs).
  virtual const std::string& directory() const = 0;
};

/// Options for the servers of one test binary.
struct ServerOptions {
  /// fsync=off etc. for speed in tests; benchmarks set durable = true.
  bool durable = false;
  /// Extra lines for postgresql.conf / redis.conf / pgbouncer.ini ([pgbouncer] section).
  std::vector<std::string> postgres_conf;
  std::vector<std::string> redis_conf;
  std::vector<std::string> pgbouncer_conf;
  std::chrono::milliseconds start_timeout{30000};
  /// Every server of the binary TLS-only, with the certificates of
  /// Servers::tls_certificates(): Redis listens on a TLS port only (`tls-auth-clients
  /// optional`) and redis_url() is rediss://127.0.0.1:PORT (the test sets the CA in
  /// RedisConfig::tls).
  bool tls = false;
  /// Redis keeps its ACL users in a file: an empty `users.acl` in its directory (made before
  /// the first start) and `aclfile <path>` in redis.conf. Users made with ACL SETUSER then
  /// survive a restart once saved with ACL SAVE (without a file they vanish with the process).
  bool redis_aclfile = false;
  /// TLS beside plaintext (benchmarks: both on the same servers in one run), with the same
  /// certificates: Redis also listens on a TLS port (redis_tls_port(), `tls-auth-clients
  /// no`) beside its plain port; PostgreSQL has ssl = on with plaintext `host` lines, so
  /// both sslmode=require (or verify-full with the test CA) and plaintext connect. The DSNs
  /// and redis_url() stay plaintext. Ignored when `tls` is set.
  bool tls_also = false;
};

class PostgresServer;
class RedisServer;
class PgBouncerServer;

/// The servers of one test binary. Servers start lazily on first access (postgres_dsn() and
/// postgres() start PostgreSQL; the PgBouncer accessors start PostgreSQL and PgBouncer; the
/// Redis accessors start Redis), later accesses never restart a stopped server. A failed
/// first start is not retried: later accesses rethrow its error at once. Thread-safe, but
/// servers must be started from the main thread.
class Servers {
 public:
  /// The process-wide instance (created on first use, destroyed at exit, stopping servers).
  static Servers& instance();
  /// Configure before first access to instance(); ignored (with a warning) afterwards.
  static void set_options(ServerOptions options);

  /// libpq keyword DSN of PostgreSQL, direct (superuser `postgres`, trust auth on loopback).
  /// With ServerOptions::tls, PostgreSQL is TLS-only (ssl = on; pg_hba.conf: hostssl lines,
  /// hostnossl rejected, kCertRole needs a client certificate) and this DSN and every other
  /// PostgreSQL / PgBouncer DSN below end in `sslmode=verify-full sslrootcert=<test CA>`
  /// (a keyword appended later wins: tests append their own). PgBouncer then requires TLS
  /// from its clients (client_tls_sslmode = require) and verifies PostgreSQL's certificate
  /// (server_tls_sslmode = verify-full).
  std::string postgres_dsn(const std::string& database = "postgres");
  /// Direct libpq keyword DSN for another role (e.g. kSecureRole, whose pg_hba line requires
  /// SCRAM on 127.0.0.1), for authentication tests.
  std::string postgres_dsn_for(const std::string& user, const std::string& password,
                               const std::string& database = "postgres");
  /// libpq keyword DSN of the same PostgreSQL through PgBouncer (transaction pooling).
  std::string pgbouncer_dsn(const std::string& database = "postgres");
  /// The same through PgBouncer for another role: kSecureRole authenticates to PgBouncer with
  /// SCRAM (its password is in PgBouncer's auth file), every other role is trusted.
  std::string pgbouncer_dsn_for(const std::string& user, const std::string& password,
                                const std::string& database = "postgres");
  /// DSN of PgBouncer's admin console (database `pgbouncer`), for PAUSE/RESUME/SHOW.
  std::string pgbouncer_admin_dsn();
  /// redis://127.0.0.1:PORT (rediss:// when ServerOptions::tls)
  std::string redis_url();
  std::string redis_host();
  std::uint16_t redis_port();
  /// ServerOptions::tls_also: Redis's TLS port and rediss://127.0.0.1:TLSPORT. Throw
  /// std::logic_error without tls_also (or with an external Redis).
  std::uint16_t redis_tls_port();
  std::string redis_tls_url();

  /// Creates a database (if it does not exist) for test isolation; returns its name.
  std::string create_database(const std::string& name);

  /// libpq keyword DSN of PostgreSQL's Unix socket (superuser, trust, never TLS): reaches the
  /// harness's PostgreSQL whatever its certificate or TLS settings are at the moment. Throws
  /// when PostgreSQL is external.
  std::string postgres_socket_dsn(const std::string& database = "postgres");
  /// PostgreSQL's settings changed at run time: ALTER SYSTEM SET name = value (an empty value:
  /// RESET), pg_reload_conf(), and back once a new session sees every value (the postmaster
  /// has reloaded, its TLS context included). Works through the Unix socket, whatever the TLS
  /// settings are (e.g. {"ssl", "off"} on a TLS-only server). ALTER SYSTEM outlives a
  /// restart: reset what a test set. Throws when PostgreSQL is external.
  void set_postgres_settings(const std::vector<std::pair<std::string, std::string>>& settings);
  /// A copy of a certificate or key file that the harness's PostgreSQL can use as
  /// ssl_cert_file / ssl_key_file (owned by the server user, mode 0600; PostgreSQL refuses a
  /// key others can read), in its directory under a new name each time; returns its path.
  std::string postgres_tls_file(const std::string& path);

  /// Process handles; each throws when its server is external (its variable is set).
  ServerProcess& postgres();
  ServerProcess& redis();
  ServerProcess& pgbouncer();

  /// The temporary directory of this binary's servers (temp_root()/ts-test-PID-XXXXXX),
  /// created on first use.
  std::string directory();

  /// The throwaway certificates of this binary (tls_certs.hpp), made on first use in
  /// directory()/tls and owned by the servers' user (a server copies a key it needs with
  /// other owner or mode). The servers of a ServerOptions::tls binary use server_cert/key.
  const TestCertificates& tls_certificates();
  /// True when the binary's servers are TLS-only (ServerOptions::tls).
  bool tls() const;

  /// True when the environment points the tests at existing servers.
  bool external() const;
  /// Stops every server this harness started and removes its directory (also done at exit,
  /// but not in a child forked from a test). Handles obtained before become invalid; a later
  /// access starts new servers. Throws, after doing all it can, when something failed.
  void shutdown();

  /// Root under which every harness temporary directory is created (TMPDIR or /tmp,
  /// canonical, as /proc/PID/cwd shows it).
  static std::string temp_root();
  /// Prefix of every harness temporary directory name ("ts-test-").
  static constexpr const char* kDirPrefix = "ts-test-";

  ~Servers();
  Servers(const Servers&) = delete;
  Servers& operator=(const Servers&) = delete;

 private:
  Servers();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Role with a password whose pg_hba line requires scram-sha-256 on 127.0.0.1 (created in the
/// harness's PostgreSQL; not in external servers unless created there).
inline constexpr const char* kSecureRole = "ts_secure";
inline constexpr const char* kSecurePassword = "ts_secure_pw";
/// In TLS mode (ServerOptions::tls): a role whose pg_hba line (hostssl, trust,
/// clientcert=verify-full) requires a client certificate issued by the test CA with its name
/// as CN: the client certificate of Servers::tls_certificates() (CN=ts-client).
inline constexpr const char* kCertRole = "ts-client";

/// A free TCP port on 127.0.0.1 (checked by binding it, then released). Chosen below the
/// kernel's ephemeral range (net.ipv4.ip_local_port_range) when there is room, so that a
/// server restarted on its port cannot find it taken by an outgoing connection (or a client
/// connected to itself while the server was down); else a kernel-chosen port (bind to 0).
std::uint16_t free_loopback_port();

/// PIDs of live processes whose working directory lies under a harness temporary directory
/// (temp_root()/ts-test-*). Used to prove that no server outlives its test binary.
std::vector<pid_t> harness_server_processes();

/// The subset of harness_server_processes() whose test binary (the PID in the directory
/// name, checked against its start time) is gone: servers that outlived their binary.
std::vector<pid_t> orphaned_harness_server_processes();

/// Working directory of a process (without a " (deleted)" suffix); empty when unreadable.
std::string process_working_directory(pid_t pid);

/// "PID cwd=... cmd=..." for diagnostics.
std::string describe_process(pid_t pid);

/// Removes harness directories (temp_root()/ts-test-PID-*) whose test binary is gone and in
/// which no process runs any more (left by crashed binaries), releasing the shared memory of
/// a killed PostgreSQL in them. Never touches the directory of a live binary. Returns how
/// many were removed. Also done when Servers is constructed.
std::size_t remove_stale_harness_directories();

}  // namespace trading_shared::testing

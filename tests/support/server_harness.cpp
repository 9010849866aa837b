#include "support/server_harness.hpp"

#include <trading_shared/pg/sql_state.hpp>

#include "support/server_guardian.hpp"
#include "support/server_process.hpp"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

namespace trading_shared::testing {
namespace {

namespace fs = std::filesystem;
using detail::Clock;
using detail::ServerUser;

constexpr const char* kPostgresEnv = "TS_TEST_POSTGRES_DSN";
constexpr const char* kRedisEnv = "TS_TEST_REDIS_URL";
constexpr const char* kPgBouncerEnv = "TS_TEST_PGBOUNCER_DSN";
constexpr const char* kLoopback = "127.0.0.1";
constexpr const char* kSuperuser = "postgres";
/// Seconds; libpq treats anything below 2 as 2.
constexpr int kProbeConnectTimeout = 2;
constexpr int kClientConnectTimeout = 5;
constexpr std::chrono::seconds kMinInitdbTimeout{120};
constexpr std::uint16_t kLowestPort = 20000;
constexpr const char* kOwnerFile = "owner";

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

std::string canonical_path(const std::string& path) {
  std::error_code error;
  const auto canonical = fs::weakly_canonical(path, error);
  return error ? path : canonical.string();
}

bool same_path(const std::string& a, const std::string& b) {
  return a == b || canonical_path(a) == canonical_path(b);
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

/// A value for a libpq keyword/value connection string.
std::string conninfo_value(const std::string& value) {
  const bool plain = !value.empty() && value.find_first_of(" '\\\t\n") == std::string::npos;
  if (plain) {
    return value;
  }
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') {
      quoted += '\\';
    }
    quoted += c;
  }
  return quoted + "'";
}

/// A SQL string literal ('...' with quotes doubled).
std::string sql_literal(const std::string& value) {
  std::string quoted = "'";
  for (const char c : value) {
    quoted += c;
    if (c == '\'') {
      quoted += '\'';
    }
  }
  return quoted + "'";
}

std::string keyword_dsn(std::uint16_t port, const std::string& user, const std::string& database,
                        int connect_timeout) {
  return std::string("host=") + kLoopback + " port=" + std::to_string(port) +
         " user=" + conninfo_value(user) + " dbname=" + conninfo_value(database) +
         " connect_timeout=" + std::to_string(connect_timeout);
}

/// `dsn` (from the environment) pointed at another database and, optionally, role. Keyword
/// DSNs get keywords appended (libpq: the last occurrence wins); URIs get their path and
/// user replaced.
std::string with_database(const std::string& dsn, const std::string& database,
                          const std::string& user = {}, const std::string& password = {}) {
  const bool uri = starts_with(dsn, "postgresql://") || starts_with(dsn, "postgres://");
  if (!uri) {
    std::string result = dsn + " dbname=" + conninfo_value(database);
    if (!user.empty()) {
      result += " user=" + conninfo_value(user);
    }
    if (!password.empty()) {
      result += " password=" + conninfo_value(password);
    }
    return result;
  }
  if (!user.empty()) {
    throw std::runtime_error(
        "server_harness: cannot set a role in URI DSN from the environment;"
        " use a keyword/value DSN");
  }
  const auto authority = dsn.find("://") + 3;
  const auto path = dsn.find_first_of("/?", authority);
  if (path == std::string::npos) {
    return dsn + "/" + database;
  }
  const auto query = dsn.find('?', path);
  return dsn.substr(0, path) + "/" + database +
         (query == std::string::npos ? std::string() : dsn.substr(query));
}

struct PgConnDeleter {
  void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  return text;
}

/// Connects and runs one query; returns its rows (text), or nullopt with `error` set.
std::optional<std::vector<std::vector<std::string>>> query_rows(const std::string& dsn,
                                                                const std::string& sql,
                                                                std::string& error) {
  PgConnPtr connection(PQconnectdb(dsn.c_str()));
  if (!connection || PQstatus(connection.get()) != CONNECTION_OK) {
    error = connection ? trimmed(PQerrorMessage(connection.get())) : "PQconnectdb: out of memory";
    return std::nullopt;
  }
  PgResultPtr result(PQexec(connection.get(), sql.c_str()));
  const auto status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    error = "'" + sql + "': " + trimmed(PQerrorMessage(connection.get()));
    return std::nullopt;
  }
  std::vector<std::vector<std::string>> rows;
  for (int row = 0; row < PQntuples(result.get()); ++row) {
    std::vector<std::string> values;
    values.reserve(static_cast<std::size_t>(PQnfields(result.get())));
    for (int column = 0; column < PQnfields(result.get()); ++column) {
      values.emplace_back(PQgetvalue(result.get(), row, column));
    }
    rows.push_back(std::move(values));
  }
  return rows;
}

std::optional<std::string> query_value(const std::string& dsn, const std::string& sql,
                                       std::string& error) {
  auto rows = query_rows(dsn, sql, error);
  if (!rows) {
    return std::nullopt;
  }
  if (rows->empty() || rows->front().empty()) {
    error = "'" + sql + "' returned no value";
    return std::nullopt;
  }
  return rows->front().front();
}

/// Runs a command on a fresh connection; throws with context on failure.
void execute(const std::string& dsn, const std::string& sql, const std::string& what) {
  std::string error;
  if (!query_rows(dsn, sql, error)) {
    throw std::runtime_error("server_harness: " + what + ": " + error);
  }
}

void make_server_directory(const std::string& path, const ServerUser& user) {
  std::error_code error;
  fs::create_directories(path, error);
  if (error) {
    throw std::runtime_error("server_harness: mkdir " + path + ": " + error.message());
  }
  fs::permissions(path, fs::perms::owner_all, fs::perm_options::replace, error);
  if (error) {
    throw std::runtime_error("server_harness: chmod " + path + ": " + error.message());
  }
  detail::chown_to(user, path);
}

void write_owned_file(const std::string& path, const std::string& text, const ServerUser& user) {
  detail::write_text_file(path, text);
  detail::chown_to(user, path);
}

/// A copy of a certificate or key file at `target` that the server user owns and alone can
/// read (PostgreSQL refuses a key file others can read or that another user owns). An
/// existing copy is replaced.
void server_file_copy(const std::string& source, const std::string& target,
                      const ServerUser& user) {
  std::error_code error;
  fs::copy_file(source, target, fs::copy_options::overwrite_existing, error);
  if (error) {
    throw std::runtime_error("server_harness: copying " + source + " to " + target + ": " +
                             error.message());
  }
  fs::permissions(target, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace,
                  error);
  if (error) {
    throw std::runtime_error("server_harness: chmod " + target + ": " + error.message());
  }
  detail::chown_to(user, target);
}

/// What a libpq DSN needs to reach a TLS-only server of the harness: the server's certificate
/// verified against the test CA, host name included (the certificate has IP SAN 127.0.0.1).
std::string tls_dsn_suffix(const TestCertificates* certificates) {
  if (certificates == nullptr) {
    return {};
  }
  return " sslmode=verify-full sslrootcert=" + conninfo_value(certificates->ca_cert);
}

std::string postgres_bin_dir() {
  const std::string initdb = detail::find_program("initdb", {"/usr/lib/postgresql/15/bin/initdb"});
  return fs::path(initdb).parent_path().string();
}

std::uint16_t port_from_ephemeral_gap() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  unsigned low = 0;
  unsigned high = 0;
  if (!(in >> low >> high) || low <= kLowestPort + 1000u || low > 65535) {
    return 0;
  }
  static thread_local std::mt19937 engine(std::random_device{}() ^
                                          static_cast<unsigned>(::getpid()));
  std::uniform_int_distribution<unsigned> distribution(kLowestPort, low - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const auto candidate = static_cast<std::uint16_t>(distribution(engine));
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      throw std::runtime_error(std::string("free_loopback_port: socket: ") + std::strerror(errno));
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(candidate);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
    ::close(fd);
    if (bound == 0) {
      return candidate;
    }
  }
  return 0;
}

std::uint16_t kernel_chosen_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw std::runtime_error(std::string("free_loopback_port: socket: ") + std::strerror(errno));
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error(std::string("free_loopback_port: ") + std::strerror(error));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

/// The harness directory (temp_root()/ts-test-PID-XXXXXX) a path lies in, or empty.
std::string harness_directory_of(const std::string& path) {
  const std::string prefix = Servers::temp_root() + "/" + Servers::kDirPrefix;
  if (!starts_with(path, prefix)) {
    return {};
  }
  const auto slash = path.find('/', prefix.size());
  return slash == std::string::npos ? path : path.substr(0, slash);
}

/// True when the test binary that owns a harness directory still runs: the PID in its name
/// is alive (not a zombie) and, when the owner file is there, has the recorded start time
/// (PIDs get reused).
bool harness_owner_alive(const std::string& directory) {
  const std::string name = fs::path(directory).filename().string();
  const std::string prefix = Servers::kDirPrefix;
  if (!starts_with(name, prefix)) {
    return false;
  }
  const auto dash = name.find('-', prefix.size());
  const std::string digits = name.substr(prefix.size(), dash - prefix.size());
  if (!detail::is_pid_text(digits)) {
    return true;
  }
  const auto pid = static_cast<pid_t>(std::stol(digits));
  if (!detail::process_alive(pid)) {
    return false;
  }
  std::ifstream in(directory + "/" + kOwnerFile);
  long owner_pid = 0;
  std::uint64_t start_time = 0;
  if (in >> owner_pid >> start_time) {
    const auto actual = detail::process_start_time(pid);
    if (actual && *actual != start_time) {
      return false;
    }
  }
  return true;
}

}  // namespace

// ---- PostgreSQL ------------------------------------------------------------------------------

class PostgresServer final : public detail::ManagedServer {
 public:
  /// `certificates`: TLS-only mode (ServerOptions::tls) with these certificates; null:
  /// plaintext, as always.
  /// `also`: TLS beside plaintext (ServerOptions::tls_also) with these certificates: ssl = on,
  /// plaintext `host` lines (they match TLS and plaintext connections alike); DSNs stay
  /// plaintext.
  PostgresServer(std::string directory, ServerUser user, const ServerOptions& options,
                 const TestCertificates* certificates = nullptr,
                 const TestCertificates* also = nullptr)
      : ManagedServer("postgres", std::move(directory), std::move(user), options.start_timeout),
        options_(options),
        certificates_(certificates),
        also_certificates_(certificates == nullptr ? also : nullptr),
        bin_dir_(postgres_bin_dir()) {}
  ~PostgresServer() override {
    stop_noexcept();
    if (!running()) {
      detail::release_stale_postgres_shared_memory(data_directory());
    }
  }
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  std::string data_directory() const { return directory() + "/data"; }
  std::string dsn(const std::string& database) const {
    return keyword_dsn(port(), kSuperuser, database, kClientConnectTimeout) +
           tls_dsn_suffix(certificates_);
  }
  std::string dsn_for(const std::string& user, const std::string& password,
                      const std::string& database) const {
    return keyword_dsn(port(), user, database, kClientConnectTimeout) +
           " password=" + conninfo_value(password) + tls_dsn_suffix(certificates_);
  }
  /// The superuser through the Unix socket in directory() (trust, never TLS): reaches the
  /// server whatever its TLS settings are (switching them in tests).
  std::string socket_dsn(const std::string& database) const {
    return "host=" + conninfo_value(directory()) + " port=" + std::to_string(port()) +
           " user=" + kSuperuser + " dbname=" + conninfo_value(database) +
           " connect_timeout=" + std::to_string(kClientConnectTimeout);
  }
  /// The directory of the server's TLS files (TLS mode).
  std::string tls_directory() const { return directory() + "/tls"; }
  /// A copy of `path` the server can use as ssl_cert_file / ssl_key_file (owned by the server
  /// user, mode 0600), in tls_directory() under a name of its own ("copy-N-<name>": never the
  /// server's own files); returns its path.
  std::string tls_file_copy(const std::string& path) {
    make_server_directory(tls_directory(), user());
    const std::string target = tls_directory() + "/copy-" + std::to_string(++copies_) + "-" +
                               fs::path(path).filename().string();
    server_file_copy(path, target, user());
    return target;
  }

  /// ALTER SYSTEM SET (empty value: RESET) each setting, reload, and wait until a new session
  /// sees every value: the postmaster has reloaded (its TLS context included) by then.
  void set_settings(const std::vector<std::pair<std::string, std::string>>& settings) {
    const std::string socket = socket_dsn("postgres");
    for (const auto& [name, value] : settings) {  // one by one: not in a transaction block
      execute(socket,
              value.empty() ? "ALTER SYSTEM RESET " + name
                            : "ALTER SYSTEM SET " + name + " = " + sql_literal(value),
              "ALTER SYSTEM");
    }
    // The value each must show once reloaded; a RESET one: the last line of the files for it
    // (postgresql.auto.conf no longer has it), else the built-in default.
    std::string check = "SELECT true";
    for (const auto& [name, value] : settings) {
      std::string wanted = value;
      std::string error;
      if (wanted.empty()) {
        const auto from_file =
            query_rows(socket,
                       "SELECT setting FROM pg_file_settings WHERE name = " + sql_literal(name) +
                           " AND error IS NULL ORDER BY seqno DESC LIMIT 1",
                       error);
        const auto built_in = query_value(
            socket, "SELECT boot_val FROM pg_settings WHERE name = " + sql_literal(name), error);
        if (!from_file || !built_in) {
          throw std::runtime_error("server_harness: RESET " + name + ": " + error);
        }
        wanted = from_file->empty() ? *built_in : from_file->front().front();
      }
      check += " AND current_setting(" + sql_literal(name) + ") = " + sql_literal(wanted);
    }
    execute(socket, "SELECT pg_reload_conf()", "pg_reload_conf()");
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    for (int attempt = 0;; ++attempt) {
      std::string error;
      const auto applied = query_value(socket, check, error);
      if (applied && *applied == "t") {
        return;
      }
      if (Clock::now() > deadline) {
        throw std::runtime_error(
            "server_harness: PostgreSQL did not apply the new settings within 10 s (" +
            (applied ? check : error) + "); log " + log_path() + ":\n" +
            detail::log_tail(log_path()));
      }
      detail::poll_pause(attempt);
    }
  }

 protected:
  void prepare() override {
    make_server_directory(directory(), user());
    run_initdb();
    // Our settings live in an included file, rewritten when the port changes.
    std::ofstream conf(data_directory() + "/postgresql.conf", std::ios::app);
    conf << "\n# Added by the test harness (tests/support/server_harness.cpp).\n"
         << "include 'ts_harness.conf'\n";
    conf.close();
    if (!conf) {
      throw std::runtime_error("server_harness: cannot append to postgresql.conf");
    }
    if (certificates_ != nullptr) {
      prepare_tls();
      return;
    }
    if (also_certificates_ != nullptr) {
      copy_tls_files(*also_certificates_);
    }
    write_owned_file(data_directory() + "/pg_hba.conf",
                     "# Written by the test harness (tests/support/server_harness.cpp).\n"
                     "# ts_secure must authenticate with SCRAM (bad-credential tests): its lines\n"
                     "# come before the trust lines.\n"
                     "host    all          ts_secure  127.0.0.1/32  scram-sha-256\n"
                     "host    all          ts_secure  ::1/128       scram-sha-256\n"
                     "local   all          all                      trust\n"
                     "host    all          all        127.0.0.1/32  trust\n"
                     "host    all          all        ::1/128       trust\n"
                     "local   replication  all                      trust\n"
                     "host    replication  all        127.0.0.1/32  trust\n",
                     user());
  }

  void write_config() override {
    std::string conf = "# Written by the test harness (tests/support/server_harness.cpp).\n";
    conf += "listen_addresses = '" + std::string(kLoopback) + "'\n";
    conf += "port = " + std::to_string(port()) + "\n";
    conf += "unix_socket_directories = '" + directory() + "'\n";
    conf += "max_connections = 300\n";
    if (!options_.durable) {
      conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n";
    }
    if (certificates_ != nullptr || also_certificates_ != nullptr) {
      // TLS-only (pg_hba.conf has hostssl lines and rejects hostnossl), or TLS beside
      // plaintext (tls_also: `host` lines); the CA file lets the server verify client
      // certificates (clientcert=verify-full for kCertRole).
      conf += "ssl = on\n";
      conf += "ssl_cert_file = " + sql_literal(tls_directory() + "/server.crt") + "\n";
      conf += "ssl_key_file = " + sql_literal(tls_directory() + "/server.key") + "\n";
      conf += "ssl_ca_file = " + sql_literal(tls_directory() + "/ca.crt") + "\n";
    }
    conf += "# ServerOptions::postgres_conf\n";
    for (const auto& line : options_.postgres_conf) {
      conf += line + "\n";
    }
    write_owned_file(data_directory() + "/ts_harness.conf", conf, user());
  }

  std::vector<std::string> command() const override {
    return {bin_dir_ + "/postgres", "-D", data_directory()};
  }

  bool probe_ready(std::string& error) override {
    const auto data_dir =
        query_value(keyword_dsn(port(), kSuperuser, "postgres", kProbeConnectTimeout) +
                        tls_dsn_suffix(certificates_),
                    "SELECT current_setting('data_directory')", error);
    if (!data_dir) {
      return false;
    }
    if (!same_path(*data_dir, data_directory())) {
      error =
          "port " + std::to_string(port()) + " is served by another PostgreSQL (" + *data_dir + ")";
      return false;
    }
    return true;
  }

  int stop_signal() const override { return SIGINT; }  // fast shutdown

  bool repair_after_failed_start(const std::string& log) override {
    // Our previous postmaster is gone (its whole process group was waited out), but its PID
    // now belongs to another process of the server user: PostgreSQL then refuses the stale
    // lock file. It is ours and stale, so remove it.
    const std::string pid_file = data_directory() + "/postmaster.pid";
    if (log.find("postmaster.pid\" already exists") == std::string::npos) {
      return false;
    }
    std::error_code error;
    if (!fs::remove(pid_file, error) || error) {
      return false;
    }
    std::fprintf(stderr, "[server_harness] removed the stale %s\n", pid_file.c_str());
    return true;
  }

  void after_first_start() override {
    execute(dsn("postgres"),
            "SET password_encryption = 'scram-sha-256';"
            "DO $$ BEGIN"
            "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" +
                std::string(kSecureRole) +
                "') THEN"
                "    CREATE ROLE " +
                kSecureRole + " LOGIN PASSWORD '" + kSecurePassword +
                "';"
                "  END IF;"
                "END $$;",
            "creating role " + std::string(kSecureRole));
    if (certificates_ != nullptr) {
      execute(dsn("postgres"),
              "DO $$ BEGIN"
              "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" +
                  std::string(kCertRole) +
                  "') THEN"
                  "    CREATE ROLE \"" +
                  kCertRole +
                  "\" LOGIN;"
                  "  END IF;"
                  "END $$;",
              "creating role " + std::string(kCertRole));
    }
  }

 private:
  /// TLS mode: the server's certificate, key and CA copied where it can read them, and a
  /// pg_hba.conf of hostssl lines only (plaintext TCP is rejected: F63).
  void prepare_tls() {
    copy_tls_files(*certificates_);
    const std::string cert_role = std::string("\"") + kCertRole + "\"";
    write_owned_file(
        data_directory() + "/pg_hba.conf",
        "# Written by the test harness (tests/support/server_harness.cpp), TLS-only mode.\n"
        "# ts_secure must authenticate with SCRAM, the certificate role with a client\n"
        "# certificate whose CN is its name; their lines come before the trust lines.\n"
        "hostssl    all          ts_secure  127.0.0.1/32  scram-sha-256\n"
        "hostssl    all          ts_secure  ::1/128       scram-sha-256\n"
        "hostssl    all          " +
            cert_role + "  127.0.0.1/32  trust  clientcert=verify-full\n" +
            "hostssl    all          " + cert_role +
            "  ::1/128       trust  clientcert=verify-full\n"
            "local      all          all                      trust\n"
            "hostssl    all          all        127.0.0.1/32  trust\n"
            "hostssl    all          all        ::1/128       trust\n"
            "local      replication  all                      trust\n"
            "hostssl    replication  all        127.0.0.1/32  trust\n"
            "# Plaintext over TCP: refused (\"... no encryption\").\n"
            "hostnossl  all          all        0.0.0.0/0     reject\n"
            "hostnossl  all          all        ::/0          reject\n",
        user());
  }

  /// The server's certificate, key and CA copied into tls_directory(), where the server can
  /// read them (ssl_cert_file, ssl_key_file, ssl_ca_file).
  void copy_tls_files(const TestCertificates& certificates) {
    make_server_directory(tls_directory(), user());
    const auto copy_as = [&](const std::string& source, const std::string& name) {
      server_file_copy(source, tls_directory() + "/" + name, user());
    };
    copy_as(certificates.server_cert, "server.crt");
    copy_as(certificates.server_key, "server.key");
    copy_as(certificates.ca_cert, "ca.crt");
  }

  void run_initdb() {
    std::vector<std::string> argv = {
        bin_dir_ + "/initdb", "-D", data_directory(), "-U",         kSuperuser,
        "--auth=trust",       "-E", "UTF8",           "--locale=C", "--no-instructions"};
    if (!options_.durable) {
      argv.emplace_back("--no-sync");
    }
    const std::string log = directory() + "/initdb.log";
    const pid_t pid =
        detail::spawn_process(detail::server_spawn_request(argv, directory(), log, user()));
    const auto timeout = std::max<std::chrono::milliseconds>(start_timeout(), kMinInitdbTimeout);
    const auto status = detail::wait_child(pid, Clock::now() + timeout);
    if (!status) {
      detail::kill_process_group(pid, Clock::now() + std::chrono::seconds(10), "initdb");
      detail::wait_child(pid, Clock::now() + std::chrono::seconds(10));
      throw std::runtime_error("server_harness: initdb did not finish within " +
                               std::to_string(timeout.count()) + " ms; log " + log + ":\n" +
                               detail::log_tail(log));
    }
    detail::wait_group_gone(pid, Clock::now() + std::chrono::seconds(10));
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      throw std::runtime_error("server_harness: initdb failed (" +
                               detail::describe_wait_status(*status) + "); log " + log + ":\n" +
                               detail::log_tail(log));
    }
  }

  ServerOptions options_;
  const TestCertificates* certificates_;
  const TestCertificates* also_certificates_;  // tls_also
  int copies_ = 0;                             // tls_file_copy()
  std::string bin_dir_;
};

// ---- Redis -----------------------------------------------------------------------------------

namespace {

struct RedisContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

}  // namespace

class RedisServer final : public detail::ManagedServer {
 public:
  /// `certs`: TLS-only (port 0, tls-port), else plaintext; `also`: a TLS port beside the
  /// plaintext one (ServerOptions::tls_also), with these certificates.
  RedisServer(std::string directory, ServerUser user, const ServerOptions& options,
              const TestCertificates* certs, const TestCertificates* also = nullptr)
      : ManagedServer("redis", std::move(directory), std::move(user), options.start_timeout),
        options_(options),
        certs_(certs),
        also_certs_(certs == nullptr ? also : nullptr),
        program_(detail::find_program("redis-server", {"/usr/bin/redis-server"})) {}
  ~RedisServer() override { stop_noexcept(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string config_path() const { return directory() + "/redis.conf"; }
  /// The TLS port beside the plaintext one (tls_also); 0 otherwise.
  std::uint16_t tls_port() const { return tls_port_; }

 protected:
  void prepare() override { make_server_directory(directory(), user()); }

  void write_config() override {
    std::string conf = "# Written by the test harness (tests/support/server_harness.cpp).\n";
    conf += "bind " + std::string(kLoopback) + "\n";
    if (certs_ != nullptr) {
      // TLS-only: no plaintext port; a client certificate is checked when one is sent.
      conf += "port 0\ntls-port " + std::to_string(port()) + "\n";
      conf += "tls-cert-file " + certs_->server_cert + "\ntls-key-file " + certs_->server_key +
              "\ntls-ca-cert-file " + certs_->ca_cert + "\ntls-auth-clients optional\n";
    } else {
      conf += "port " + std::to_string(port()) + "\n";
    }
    if (also_certs_ != nullptr) {
      // TLS beside plaintext (tls_also): a second port, on the same certificates; no client
      // certificate asked for. Written on each first-start attempt, as the plain port is.
      tls_port_ = free_loopback_port();
      conf += "tls-port " + std::to_string(tls_port_) + "\n";
      conf += "tls-cert-file " + also_certs_->server_cert + "\ntls-key-file " +
              also_certs_->server_key + "\ntls-ca-cert-file " + also_certs_->ca_cert +
              "\ntls-auth-clients no\n";
    }
    conf += "dir " + directory() + "\n";
    conf += "save \"\"\nappendonly no\ndaemonize no\nprotected-mode no\nlogfile \"\"\n";
    if (options_.redis_aclfile) {
      // Empty at first (Redis refuses to start when the file is missing); ACL SAVE fills it.
      const std::string acl_path = directory() + "/users.acl";
      if (!fs::exists(acl_path)) write_owned_file(acl_path, "", user());
      conf += "aclfile " + acl_path + "\n";
    }
    conf += "# ServerOptions::redis_conf\n";
    for (const auto& line : options_.redis_conf) {
      conf += line + "\n";
    }
    write_owned_file(config_path(), conf, user());
  }

  std::vector<std::string> command() const override { return {program_, config_path()}; }

  bool probe_ready(std::string& error) override {
    if (certs_ != nullptr) return probe_ready_tls(error);
    const timeval timeout{1, 0};
    RedisContextPtr context(redisConnectWithTimeout(kLoopback, port(), timeout));
    if (!context || context->err) {
      error = context ? std::string("connect: ") + context->errstr : "redisConnect: out of memory";
      return false;
    }
    if (redisSetTimeout(context.get(), timeout) != REDIS_OK) {
      error = std::string("redisSetTimeout: ") + context->errstr;
      return false;
    }
    RedisReplyPtr pong(static_cast<redisReply*>(redisCommand(context.get(), "PING")));
    if (!pong || pong->type != REDIS_REPLY_STATUS || std::string(pong->str) != "PONG") {
      error = pong ? "PING: unexpected reply" + (pong->str ? ": " + std::string(pong->str) : "")
                   : std::string("PING: ") + context->errstr;
      return false;
    }
    RedisReplyPtr dir(static_cast<redisReply*>(redisCommand(context.get(), "CONFIG GET dir")));
    if (!dir || dir->type != REDIS_REPLY_ARRAY || dir->elements != 2) {
      error = dir ? "CONFIG GET dir: unexpected reply"
                  : std::string("CONFIG GET dir: ") + context->errstr;
      return false;
    }
    const std::string served = dir->element[1]->str ? dir->element[1]->str : "";
    if (!same_path(served, directory())) {
      error = "port " + std::to_string(port()) + " is served by another Redis (dir " + served + ")";
      return false;
    }
    return true;
  }

 private:
  // hiredis is built here without TLS: redis-cli --tls asks the same questions (bounded by
  // timeout(1)).
  bool probe_ready_tls(std::string& error) {
    const std::string command = "timeout 3 redis-cli --tls --cacert '" + certs_->ca_cert + "' -h " +
                                kLoopback + " -p " + std::to_string(port()) +
                                " CONFIG GET dir </dev/null 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
      error = "popen redis-cli: " + std::string(std::strerror(errno));
      return false;
    }
    std::string output;
    char buffer[1024];
    while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) {
      output.append(buffer, n);
    }
    const int status = ::pclose(pipe);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      error = "redis-cli --tls CONFIG GET dir: " + output;
      return false;
    }
    // "dir\n<path>\n"
    std::istringstream lines(output);
    std::string key;
    std::string served;
    std::getline(lines, key);
    std::getline(lines, served);
    if (key != "dir") {
      error = "redis-cli --tls CONFIG GET dir: unexpected reply: " + output;
      return false;
    }
    if (!same_path(served, directory())) {
      error = "port " + std::to_string(port()) + " is served by another Redis (dir " + served + ")";
      return false;
    }
    return true;
  }

  ServerOptions options_;
  const TestCertificates* certs_;
  const TestCertificates* also_certs_;  // tls_also
  std::uint16_t tls_port_ = 0;          // tls_also
  std::string program_;
};

// ---- PgBouncer -------------------------------------------------------------------------------

class PgBouncerServer final : public detail::ManagedServer {
 public:
  /// `certificates`: TLS on both hops (ServerOptions::tls); null: plaintext, as always.
  PgBouncerServer(std::string directory, ServerUser user, const ServerOptions& options,
                  const PostgresServer& postgres, const TestCertificates* certificates = nullptr)
      : ManagedServer("pgbouncer", std::move(directory), std::move(user), options.start_timeout),
        options_(options),
        postgres_(postgres),
        certificates_(certificates),
        program_(detail::find_program("pgbouncer", {"/usr/sbin/pgbouncer"})) {}
  ~PgBouncerServer() override { stop_noexcept(); }
  PgBouncerServer(const PgBouncerServer&) = delete;
  PgBouncerServer& operator=(const PgBouncerServer&) = delete;

  std::string dsn(const std::string& database) const {
    return keyword_dsn(port(), kSuperuser, database, kClientConnectTimeout) +
           tls_dsn_suffix(certificates_);
  }
  std::string dsn_for(const std::string& user, const std::string& password,
                      const std::string& database) const {
    return keyword_dsn(port(), user, database, kClientConnectTimeout) +
           " password=" + conninfo_value(password) + tls_dsn_suffix(certificates_);
  }
  std::string admin_dsn() const { return dsn("pgbouncer"); }
  std::string config_path() const { return directory() + "/pgbouncer.ini"; }
  std::string logfile() const { return directory() + "/pgbouncer.log"; }

 protected:
  void prepare() override {
    make_server_directory(directory(), user());
    // ts_secure authenticates to PgBouncer itself with SCRAM (bad-credential tests through
    // PgBouncer); PgBouncer logs in to PostgreSQL with the same password. Everyone else is
    // trusted, as on the direct path.
    write_owned_file(
        directory() + "/userlist.txt",
        "\"postgres\" \"\"\n\"" + std::string(kSecureRole) + "\" \"" + kSecurePassword + "\"\n",
        user());
    // TLS mode: clients must come with TLS (client_tls_sslmode = require), so only hostssl.
    const std::string host = certificates_ != nullptr ? "hostssl" : "host";
    write_owned_file(directory() + "/pgbouncer_hba.conf",
                     "# Written by the test harness (tests/support/server_harness.cpp).\n" + host +
                         "  all  " + kSecureRole + "  127.0.0.1/32  scram-sha-256\n" + host +
                         "  all  all  127.0.0.1/32  trust\n",
                     user());
    if (certificates_ != nullptr) {
      server_file_copy(certificates_->server_cert, directory() + "/server.crt", user());
      server_file_copy(certificates_->server_key, directory() + "/server.key", user());
      server_file_copy(certificates_->ca_cert, directory() + "/ca.crt", user());
    }
  }

  void write_config() override {
    std::string conf = ";; Written by the test harness (tests/support/server_harness.cpp).\n";
    conf += "[databases]\n";
    conf +=
        "* = host=" + std::string(kLoopback) + " port=" + std::to_string(postgres_.port()) + "\n\n";
    conf += "[pgbouncer]\n";
    conf += "listen_addr = " + std::string(kLoopback) + "\n";
    conf += "listen_port = " + std::to_string(port()) + "\n";
    conf += "unix_socket_dir =\n";
    conf += "auth_type = hba\n";
    conf += "auth_hba_file = " + directory() + "/pgbouncer_hba.conf\n";
    conf += "auth_file = " + directory() + "/userlist.txt\n";
    conf += "admin_users = postgres\n";
    conf += "pool_mode = transaction\n";
    conf += "max_client_conn = 1000\n";
    conf += "default_pool_size = 20\n";
    conf += "ignore_startup_parameters = extra_float_digits\n";
    conf += "logfile = " + logfile() + "\n";
    if (certificates_ != nullptr) {
      // Clients must speak TLS to PgBouncer; PgBouncer speaks TLS to PostgreSQL and verifies
      // its certificate, host name included (host=127.0.0.1 above: the IP SAN).
      conf += "client_tls_sslmode = require\n";
      conf += "client_tls_cert_file = " + directory() + "/server.crt\n";
      conf += "client_tls_key_file = " + directory() + "/server.key\n";
      conf += "client_tls_ca_file = " + directory() + "/ca.crt\n";
      conf += "server_tls_sslmode = verify-full\n";
      conf += "server_tls_ca_file = " + directory() + "/ca.crt\n";
    }
    conf += ";; ServerOptions::pgbouncer_conf\n";
    for (const auto& line : options_.pgbouncer_conf) {
      conf += line + "\n";
    }
    write_owned_file(config_path(), conf, user());
  }

  std::vector<std::string> command() const override { return {program_, config_path()}; }

  bool probe_ready(std::string& error) override {
    // Our PgBouncer (its logfile is ours) ...
    const auto config =
        query_rows(keyword_dsn(port(), kSuperuser, "pgbouncer", kProbeConnectTimeout) +
                       tls_dsn_suffix(certificates_),
                   "SHOW CONFIG", error);
    if (!config) {
      return false;
    }
    const auto row = std::find_if(config->begin(), config->end(), [](const auto& values) {
      return values.size() >= 2 && values[0] == "logfile";
    });
    if (row == config->end() || !same_path((*row)[1], logfile())) {
      error = "port " + std::to_string(port()) + " is served by another PgBouncer";
      return false;
    }
    // ... and a real query through it, when its PostgreSQL runs.
    if (!postgres_.running()) {
      return true;
    }
    const auto data_dir =
        query_value(keyword_dsn(port(), kSuperuser, "postgres", kProbeConnectTimeout) +
                        tls_dsn_suffix(certificates_),
                    "SELECT current_setting('data_directory')", error);
    if (!data_dir) {
      return false;
    }
    if (!same_path(*data_dir, postgres_.data_directory())) {
      error = "PgBouncer reached another PostgreSQL (" + *data_dir + ")";
      return false;
    }
    return true;
  }

 private:
  ServerOptions options_;
  const PostgresServer& postgres_;
  const TestCertificates* certificates_;
  std::string program_;
};

// ---- Servers ---------------------------------------------------------------------------------

namespace {

ServerOptions& pending_options() {
  static ServerOptions options;
  return options;
}

/// Set once instance() constructed the servers: later set_options() calls have no effect.
std::atomic<bool> instance_created{false};

}  // namespace

struct Servers::Impl {
  ServerOptions options;
  pid_t owner_pid = ::getpid();
  std::string external_postgres = env_or_empty(kPostgresEnv);
  std::string external_redis = env_or_empty(kRedisEnv);
  std::string external_pgbouncer = env_or_empty(kPgBouncerEnv);
  std::recursive_mutex mutex;
  std::string root;           // created on first use
  detail::Guardian guardian;  // of root
  std::optional<ServerUser> user;
  // Declaration order = reverse teardown order: PgBouncer goes before its PostgreSQL.
  std::unique_ptr<RedisServer> redis;
  std::unique_ptr<PostgresServer> postgres;
  std::unique_ptr<PgBouncerServer> pgbouncer;
  std::optional<TestCertificates> certs;  // made on first use
  // A failed first start is not retried by every later test: they get the same error fast.
  std::string redis_failure;
  std::string postgres_failure;
  std::string pgbouncer_failure;

  const ServerUser& server_user() {
    if (!user) {
      user = detail::server_user();
    }
    return *user;
  }

  const std::string& ensure_root() {
    if (!root.empty()) {
      return root;
    }
    std::string pattern = temp_root() + "/" + kDirPrefix + std::to_string(::getpid()) + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("server_harness: mkdtemp " + pattern + ": " + std::strerror(errno));
    }
    try {
      const auto start_time = detail::process_start_time(::getpid());
      detail::write_text_file(
          pattern + "/" + kOwnerFile,
          std::to_string(::getpid()) + " " + std::to_string(start_time ? *start_time : 0) + "\n");
      detail::chown_to(server_user(), pattern);  // the servers must traverse it
      guardian = detail::start_guardian(pattern);
    } catch (...) {
      std::error_code ignored;  // the error that matters is being thrown
      fs::remove_all(pattern, ignored);
      throw;
    }
    root = pattern;
    return root;
  }

  const TestCertificates& ensure_certs() {
    if (certs) {
      return *certs;
    }
    const std::string dir = ensure_root() + "/tls";
    TestCertificates made = make_test_certificates(dir);
    // The servers read them as their own user; the test (root or that user) still can.
    detail::chown_to(server_user(), dir);
    for (const auto& entry : fs::directory_iterator(dir)) {
      detail::chown_to(server_user(), entry.path().string());
    }
    certs = std::move(made);
    return *certs;
  }

  template <typename Server, typename Factory>
  Server& ensure(std::unique_ptr<Server>& server, std::string& failure, Factory factory) {
    if (server) {
      return *server;
    }
    if (!failure.empty()) {
      throw std::runtime_error(failure);
    }
    try {
      auto created = factory();
      created->start();
      server = std::move(created);
    } catch (const std::exception& e) {
      failure = std::string(e.what()) + " (first start failed; not retried)";
      throw;
    }
    return *server;
  }

  PostgresServer& ensure_postgres() {
    if (!external_postgres.empty()) {
      throw std::runtime_error(std::string("server_harness: ") + kPostgresEnv +
                               " is set: the harness runs no PostgreSQL");
    }
    const TestCertificates* tls = options.tls ? &ensure_certs() : nullptr;
    const TestCertificates* also = options.tls_also ? &ensure_certs() : nullptr;
    return ensure(postgres, postgres_failure, [&] {
      return std::make_unique<PostgresServer>(ensure_root() + "/pg", server_user(), options, tls,
                                              also);
    });
  }

  RedisServer& ensure_redis() {
    if (!external_redis.empty()) {
      throw std::runtime_error(std::string("server_harness: ") + kRedisEnv +
                               " is set: the harness runs no Redis");
    }
    const TestCertificates* tls = options.tls ? &ensure_certs() : nullptr;
    const TestCertificates* also = options.tls_also ? &ensure_certs() : nullptr;
    return ensure(redis, redis_failure, [&] {
      return std::make_unique<RedisServer>(ensure_root() + "/redis", server_user(), options, tls,
                                           also);
    });
  }

  PgBouncerServer& ensure_pgbouncer() {
    if (!external_pgbouncer.empty()) {
      throw std::runtime_error(std::string("server_harness: ") + kPgBouncerEnv +
                               " is set: the harness runs no PgBouncer");
    }
    if (!external_postgres.empty()) {
      throw std::runtime_error(std::string("server_harness: ") + kPostgresEnv + " is set but " +
                               kPgBouncerEnv +
                               " is not: point the tests at an external PgBouncer too");
    }
    PostgresServer& pg = ensure_postgres();
    const TestCertificates* tls = options.tls ? &ensure_certs() : nullptr;
    return ensure(pgbouncer, pgbouncer_failure, [&] {
      return std::make_unique<PgBouncerServer>(ensure_root() + "/pgbouncer", server_user(), options,
                                               pg, tls);
    });
  }
};

Servers& Servers::instance() {
  static Servers servers;
  return servers;
}

void Servers::set_options(ServerOptions options) {
  if (instance_created) {
    std::fprintf(stderr,
                 "[server_harness] set_options() after Servers::instance(): ignored (call it "
                 "before the first use of the servers)\n");
    return;
  }
  pending_options() = std::move(options);
}

Servers::Servers() : impl_(std::make_unique<Impl>()) {
  instance_created = true;
  impl_->options = pending_options();
  remove_stale_harness_directories();
}

Servers::~Servers() {
  if (::getpid() != impl_->owner_pid) {
    // A child forked from a test (without exec) is exiting: the servers are its parent's.
    // Destroying the handles would stop them, so they are deliberately leaked.
    static_cast<void>(impl_.release());
    return;
  }
  try {
    shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[server_harness] shutdown: %s\n", e.what());
  }
}

std::string Servers::postgres_dsn(const std::string& database) {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_postgres.empty()) {
    return with_database(impl_->external_postgres, database);
  }
  return impl_->ensure_postgres().dsn(database);
}

std::string Servers::postgres_dsn_for(const std::string& user, const std::string& password,
                                      const std::string& database) {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_postgres.empty()) {
    return with_database(impl_->external_postgres, database, user, password);
  }
  return impl_->ensure_postgres().dsn_for(user, password, database);
}

std::string Servers::pgbouncer_dsn(const std::string& database) {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_pgbouncer.empty()) {
    return with_database(impl_->external_pgbouncer, database);
  }
  return impl_->ensure_pgbouncer().dsn(database);
}

std::string Servers::pgbouncer_dsn_for(const std::string& user, const std::string& password,
                                       const std::string& database) {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_pgbouncer.empty()) {
    return with_database(impl_->external_pgbouncer, database, user, password);
  }
  return impl_->ensure_pgbouncer().dsn_for(user, password, database);
}

std::string Servers::pgbouncer_admin_dsn() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_pgbouncer.empty()) {
    return with_database(impl_->external_pgbouncer, "pgbouncer");
  }
  return impl_->ensure_pgbouncer().admin_dsn();
}

std::string Servers::redis_url() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_redis.empty()) {
    return impl_->external_redis;
  }
  const std::uint16_t port = impl_->ensure_redis().port();
  return std::string(impl_->options.tls ? "rediss://" : "redis://") + kLoopback + ":" +
         std::to_string(port);
}

const TestCertificates& Servers::tls_certificates() {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_certs();
}

bool Servers::tls() const {
  return impl_->options.tls;
}

namespace {

/// host and port of redis://[user[:password]@]host[:port][/db]
std::pair<std::string, std::uint16_t> parse_redis_url(const std::string& url) {
  const std::string scheme = "redis://";
  if (!starts_with(url, scheme)) {
    throw std::runtime_error(std::string("server_harness: ") + kRedisEnv +
                             " must be redis://host:port, not '" + url + "'");
  }
  std::string authority = url.substr(scheme.size());
  authority = authority.substr(0, authority.find('/'));
  if (const auto at = authority.rfind('@'); at != std::string::npos) {
    authority = authority.substr(at + 1);
  }
  std::uint16_t port = 6379;
  const auto colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    const std::string digits = authority.substr(colon + 1);
    if (digits.empty() || digits.size() > 5 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoul(digits) > 65535) {
      throw std::runtime_error(std::string("server_harness: bad port in ") + kRedisEnv + " '" +
                               url + "'");
    }
    port = static_cast<std::uint16_t>(std::stoul(digits));
    authority = authority.substr(0, colon);
  }
  if (authority.size() > 2 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  return {authority, port};
}

}  // namespace

std::string Servers::redis_host() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_redis.empty()) {
    return parse_redis_url(impl_->external_redis).first;
  }
  return impl_->ensure_redis().host();
}

std::uint16_t Servers::redis_port() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->external_redis.empty()) {
    return parse_redis_url(impl_->external_redis).second;
  }
  return impl_->ensure_redis().port();
}

std::uint16_t Servers::redis_tls_port() {
  std::lock_guard lock(impl_->mutex);
  if (!impl_->options.tls_also || impl_->options.tls || !impl_->external_redis.empty()) {
    throw std::logic_error(
        "server_harness: redis_tls_port() needs ServerOptions::tls_also (without tls) and the "
        "harness's own Redis");
  }
  return impl_->ensure_redis().tls_port();
}

std::string Servers::redis_tls_url() {
  const std::uint16_t port = redis_tls_port();
  return std::string("rediss://") + kLoopback + ":" + std::to_string(port);
}

std::string Servers::create_database(const std::string& name) {
  const std::string dsn = postgres_dsn("postgres");
  PgConnPtr connection(PQconnectdb(dsn.c_str()));
  if (!connection || PQstatus(connection.get()) != CONNECTION_OK) {
    throw std::runtime_error("server_harness: create_database(" + name + "): connect: " +
                             (connection ? trimmed(PQerrorMessage(connection.get())) : "OOM"));
  }
  const char* params[] = {name.c_str()};
  PgResultPtr exists(PQexecParams(connection.get(), "SELECT 1 FROM pg_database WHERE datname = $1",
                                  1, nullptr, params, nullptr, nullptr, 0));
  if (!exists || PQresultStatus(exists.get()) != PGRES_TUPLES_OK) {
    throw std::runtime_error("server_harness: create_database(" + name +
                             "): " + trimmed(PQerrorMessage(connection.get())));
  }
  if (PQntuples(exists.get()) > 0) {
    return name;
  }
  std::unique_ptr<char, decltype(&PQfreemem)> identifier(
      PQescapeIdentifier(connection.get(), name.c_str(), name.size()), &PQfreemem);
  if (!identifier) {
    throw std::runtime_error("server_harness: create_database(" + name +
                             "): " + trimmed(PQerrorMessage(connection.get())));
  }
  const std::string sql = "CREATE DATABASE " + std::string(identifier.get());
  PgResultPtr created(PQexec(connection.get(), sql.c_str()));
  if (!created || PQresultStatus(created.get()) != PGRES_COMMAND_OK) {
    const char* state = created ? PQresultErrorField(created.get(), PG_DIAG_SQLSTATE) : nullptr;
    // Created concurrently since our check: fine.
    if (state && state == trading_shared::pg::sqlstate::duplicate_database) {
      return name;
    }
    throw std::runtime_error("server_harness: " + sql + ": " +
                             trimmed(PQerrorMessage(connection.get())));
  }
  return name;
}

std::string Servers::postgres_socket_dsn(const std::string& database) {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_postgres().socket_dsn(database);
}

void Servers::set_postgres_settings(
    const std::vector<std::pair<std::string, std::string>>& settings) {
  std::lock_guard lock(impl_->mutex);
  impl_->ensure_postgres().set_settings(settings);
}

std::string Servers::postgres_tls_file(const std::string& path) {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_postgres().tls_file_copy(path);
}

ServerProcess& Servers::postgres() {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_postgres();
}

ServerProcess& Servers::redis() {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_redis();
}

ServerProcess& Servers::pgbouncer() {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_pgbouncer();
}

std::string Servers::directory() {
  std::lock_guard lock(impl_->mutex);
  return impl_->ensure_root();
}

bool Servers::external() const {
  return !impl_->external_postgres.empty() || !impl_->external_redis.empty() ||
         !impl_->external_pgbouncer.empty();
}

void Servers::shutdown() {
  std::lock_guard lock(impl_->mutex);
  // A child forked from a test (without exec) must not stop its parent's servers at exit.
  if (::getpid() != impl_->owner_pid) {
    return;
  }
  std::vector<std::string> errors;
  const auto stop = [&errors](auto& server) {
    if (!server) {
      return;
    }
    try {
      server->stop();
    } catch (const std::exception& e) {
      errors.emplace_back(e.what());
    }
    server.reset();  // the destructor kills whatever stop() could not end
  };
  stop(impl_->pgbouncer);
  stop(impl_->postgres);
  stop(impl_->redis);
  impl_->redis_failure.clear();
  impl_->postgres_failure.clear();
  impl_->pgbouncer_failure.clear();
  if (!impl_->root.empty()) {
    const std::string root = impl_->root;
    impl_->root.clear();
    impl_->certs.reset();  // they were in root
    std::string survivors;
    for (const pid_t pid : harness_server_processes()) {
      if (harness_directory_of(process_working_directory(pid)) == root) {
        survivors += "\n  " + describe_process(pid);
      }
    }
    if (!survivors.empty()) {
      errors.push_back("processes still ran in " + root + " (left to the guardian):" + survivors);
    } else {
      std::error_code error;
      fs::remove_all(root, error);
      if (error) {
        errors.push_back("removing " + root + ": " + error.message());
      }
    }
    // Nothing left for it to do, normally; else it kills the survivors and removes root.
    try {
      detail::finish_guardian(impl_->guardian);
    } catch (const std::exception& e) {
      errors.emplace_back(e.what());
    }
  }
  if (!errors.empty()) {
    std::string message = "server_harness: shutdown failed:";
    for (const auto& error : errors) {
      message += "\n  " + error;
    }
    throw std::runtime_error(message);
  }
}

std::string Servers::temp_root() {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string root = (tmpdir && *tmpdir) ? tmpdir : "/tmp";
  // /proc/PID/cwd shows canonical paths: compare like with like.
  root = canonical_path(root);
  while (root.size() > 1 && root.back() == '/') {
    root.pop_back();
  }
  return root;
}

// ---- free functions --------------------------------------------------------------------------

std::uint16_t free_loopback_port() {
  if (const std::uint16_t port = port_from_ephemeral_gap()) {
    return port;
  }
  return kernel_chosen_port();
}

std::string process_working_directory(pid_t pid) {
  std::error_code error;
  const auto cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", error);
  if (error) {
    return {};
  }
  std::string path = cwd.string();
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() &&
      path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0) {
    path.resize(path.size() - deleted.size());
  }
  return path;
}

std::string describe_process(pid_t pid) {
  std::string cmdline;
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  for (char c; in.get(c);) {
    cmdline += c == '\0' ? ' ' : c;
  }
  return std::to_string(pid) + " cwd=" + process_working_directory(pid) +
         " cmd=" + trimmed(cmdline);
}

std::vector<pid_t> harness_server_processes() {
  const std::string prefix = Servers::temp_root() + "/" + Servers::kDirPrefix;
  const pid_t self = ::getpid();
  std::vector<pid_t> pids;
  std::error_code error;
  for (fs::directory_iterator it("/proc", error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!detail::is_pid_text(name)) {
      continue;
    }
    const auto pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) {
      continue;
    }
    const std::string cwd = process_working_directory(pid);  // empty: gone or unreadable
    if (!cwd.empty() && starts_with(cwd, prefix)) {
      pids.push_back(pid);
    }
  }
  if (error) {
    throw std::runtime_error("harness_server_processes: /proc: " + error.message());
  }
  return pids;
}

std::vector<pid_t> orphaned_harness_server_processes() {
  std::vector<pid_t> orphans;
  for (const pid_t pid : harness_server_processes()) {
    const std::string directory = harness_directory_of(process_working_directory(pid));
    if (!directory.empty() && !harness_owner_alive(directory)) {
      orphans.push_back(pid);
    }
  }
  return orphans;
}

std::size_t remove_stale_harness_directories() {
  const std::string root = Servers::temp_root();
  std::vector<std::string> stale;
  std::error_code error;
  for (fs::directory_iterator it(root, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!starts_with(name, Servers::kDirPrefix)) {
      continue;
    }
    std::error_code type_error;
    if (!it->is_directory(type_error) || it->is_symlink(type_error)) {
      continue;
    }
    if (!harness_owner_alive(it->path().string())) {
      stale.push_back(it->path().string());
    }
  }
  if (error) {
    throw std::runtime_error("remove_stale_harness_directories: " + root + ": " + error.message());
  }
  if (stale.empty()) {
    return 0;
  }
  std::vector<std::string> busy;
  for (const pid_t pid : harness_server_processes()) {
    busy.push_back(harness_directory_of(process_working_directory(pid)));
  }
  std::size_t removed = 0;
  for (const auto& directory : stale) {
    if (std::find(busy.begin(), busy.end(), directory) != busy.end()) {
      std::fprintf(stderr,
                   "[server_harness] not removing %s: its binary is gone but processes still "
                   "run in it\n",
                   directory.c_str());
      continue;
    }
    detail::release_stale_postgres_shared_memory(directory + "/pg/data");
    std::error_code remove_error;
    fs::remove_all(directory, remove_error);
    if (remove_error && remove_error != std::errc::no_such_file_or_directory) {
      std::fprintf(stderr, "[server_harness] removing stale %s: %s\n", directory.c_str(),
                   remove_error.message().c_str());
      continue;
    }
    ++removed;
  }
  return removed;
}

}  // namespace trading_shared::testing

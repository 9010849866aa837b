#include "e2e_support.hpp"

#include <boost/json.hpp>

#include "support/server_process.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

namespace trading_shared::e2e {

namespace detail = trading_shared::testing::detail;

// ---- interruption ---------------------------------------------------------------------------

namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_signal(int signal_number) {
  if (g_signal != 0) {
    constexpr char kMessage[] =
        "ts-pipeline: second signal: exiting now (children and servers die with it)\n";
    if (::write(STDERR_FILENO, kMessage, sizeof kMessage - 1) < 0) {
      // Nothing else can be done in a signal handler.
    }
    ::_exit(1);
  }
  g_signal = signal_number;
}

}  // namespace

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // the harness's blocking calls must not see EINTR
  for (const int signal_number : {SIGINT, SIGTERM}) {
    if (::sigaction(signal_number, &action, nullptr) != 0) {
      throw std::runtime_error(
          fmt::format("sigaction({}): {}", signal_number, std::strerror(errno)));
    }
  }
}

int received_signal() {
  return g_signal;
}

void throw_if_interrupted() {
  if (const int signal_number = g_signal; signal_number != 0) {
    throw Interrupted(
        fmt::format("interrupted by signal {} ({})", signal_number, ::strsignal(signal_number)));
  }
}

double seconds_since(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void pause_step(std::chrono::milliseconds step) {
  throw_if_interrupted();
  std::this_thread::sleep_for(step);
  throw_if_interrupted();
}

bool poll_until(const std::function<bool()>& condition, Clock::time_point deadline,
                std::chrono::milliseconds step) {
  for (;;) {
    throw_if_interrupted();
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    pause_step(step);
  }
}

// ---- child processes ------------------------------------------------------------------------

bool Child::running() {
  if (status_) return false;
  status_ = detail::wait_child(pid_, Clock::now());  // one waitpid(WNOHANG)
  return !status_;
}

std::optional<int> Child::exit_code() const {
  if (!status_ || !WIFEXITED(*status_)) return std::nullopt;
  return WEXITSTATUS(*status_);
}

std::string Child::describe() const {
  if (!status_) return "running";
  std::string text = detail::describe_wait_status(*status_);
  if (killed_ && kill_after_) {
    text += fmt::format(", killed: SIGTERM not obeyed within {} ms", kill_after_->count());
  }
  if (killed_on_purpose_) text += ", killed on purpose (a fault)";
  return text;
}

Children::~Children() {
  stop_all(std::chrono::seconds(10));
}

Child& Children::spawn(ChildSpec spec) {
  detail::SpawnRequest request;
  request.argv.push_back(spec.program);
  request.argv.insert(request.argv.end(), spec.args.begin(), spec.args.end());
  request.directory = directory_;
  request.log_file = spec.log_file;
  request.user = detail::ServerUser{};  // the current user
  request.extra_env = spec.env;
  const pid_t pid = detail::spawn_process(request);
  return children_.emplace_back(std::move(spec), pid);
}

bool Children::wait(Child& child, Clock::time_point deadline) {
  return poll_until([&child] { return !child.running(); }, deadline, std::chrono::milliseconds(20));
}

void Children::stop(Child& child, std::chrono::milliseconds timeout) {
  if (!child.running()) return;
  const auto start = Clock::now();
  ::kill(child.pid(), SIGTERM);  // not reaped yet, so the PID is still ours
  if (auto status = detail::wait_child(child.pid(), start + timeout)) {
    child.status_ = status;
    child.stop_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    return;
  }
  child.killed_ = true;
  child.kill_after_ = timeout;
  ::kill(-child.pid(), SIGKILL);  // its own process group (spawn_process made it a leader)
  ::kill(child.pid(), SIGKILL);
  child.status_ = detail::wait_child(child.pid(), Clock::now() + std::chrono::seconds(10));
  if (!child.status_) {
    throw std::runtime_error(
        fmt::format("{} (pid {}) survived SIGKILL for 10 s", child.name(), child.pid()));
  }
}

void Children::kill(Child& child) {
  if (!child.running()) {
    throw std::runtime_error(fmt::format("{} (pid {}) was to be killed but had already ended ({})",
                                         child.name(), child.pid(), child.describe()));
  }
  child.killed_on_purpose_ = true;
  ::kill(child.pid(), SIGKILL);  // not reaped yet, so the PID is still ours
  child.status_ = detail::wait_child(child.pid(), Clock::now() + std::chrono::seconds(10));
  if (!child.status_) {
    throw std::runtime_error(
        fmt::format("{} (pid {}) survived SIGKILL for 10 s", child.name(), child.pid()));
  }
}

void Children::stop_all(std::chrono::milliseconds timeout) noexcept {
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    try {
      stop(*it, timeout);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ts-pipeline: stopping %s: %s\n", it->name().c_str(), e.what());
    }
  }
}

// ---- PostgreSQL -----------------------------------------------------------------------------

namespace {

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

}  // namespace

PgConnection::PgConnection(const std::string& dsn) {
  const std::string full = dsn + " connect_timeout=5 options='-c statement_timeout=30000'";
  connection_ = PQconnectdb(full.c_str());
  if (connection_ == nullptr || PQstatus(connection_) != CONNECTION_OK) {
    const std::string message =
        connection_ != nullptr ? trimmed(PQerrorMessage(connection_)) : "out of memory";
    PQfinish(connection_);
    connection_ = nullptr;
    throw std::runtime_error("connecting to PostgreSQL: " + message);
  }
}

PgConnection::~PgConnection() {
  PQfinish(connection_);
}

std::vector<PgConnection::Row> PgConnection::query(const std::string& sql,
                                                   const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& param : params) values.push_back(param.c_str());
  ResultPtr result(PQexecParams(connection_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), nullptr, nullptr, 0));
  const auto status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    throw std::runtime_error(
        fmt::format("query failed: {} (query: {})", trimmed(PQerrorMessage(connection_)), sql));
  }
  std::vector<Row> rows;
  const int row_count = PQntuples(result.get());
  const int column_count = PQnfields(result.get());
  rows.reserve(static_cast<std::size_t>(row_count));
  for (int r = 0; r < row_count; ++r) {
    Row row;
    row.reserve(static_cast<std::size_t>(column_count));
    for (int c = 0; c < column_count; ++c) {
      if (PQgetisnull(result.get(), r, c)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(result.get(), r, c),
                                     static_cast<std::size_t>(PQgetlength(result.get(), r, c))));
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::int64_t PgConnection::query_int(const std::string& sql,
                                     const std::vector<std::string>& params) {
  const auto rows = query(sql, params);
  if (rows.size() != 1 || rows[0].empty()) {
    throw std::runtime_error(fmt::format("expected one row, got {} (query: {})", rows.size(), sql));
  }
  return cell_int(rows[0][0]).value_or(0);
}

std::optional<std::int64_t> cell_int(const std::optional<std::string>& cell) {
  if (!cell) return std::nullopt;
  return std::stoll(*cell);
}

std::optional<double> cell_double(const std::optional<std::string>& cell) {
  if (!cell) return std::nullopt;
  return std::stod(*cell);
}

// ---- Redis ----------------------------------------------------------------------------------

namespace {

/// The context of RedisConnection::use_tls() (null: plaintext); lives until exit.
SSL_CTX* g_redis_tls = nullptr;

std::string openssl_reason() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL reason";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

}  // namespace

void RedisConnection::use_tls(const std::string& ca_file) {
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  if (context == nullptr) throw std::runtime_error("SSL_CTX_new: " + openssl_reason());
  SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(context, ca_file.c_str(), nullptr) != 1) {
    const std::string reason = openssl_reason();
    SSL_CTX_free(context);
    throw std::runtime_error("Redis TLS: cannot load the CA file " + ca_file + ": " + reason);
  }
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  if (g_redis_tls != nullptr) SSL_CTX_free(g_redis_tls);
  g_redis_tls = context;
}

void RedisConnection::close_connection() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RedisConnection::RedisConnection(const std::string& host, std::uint16_t port,
                                 std::chrono::milliseconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  const int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // also bounds connect()
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    ::close(fd_);
    throw std::runtime_error("Redis host " + host + " is not an IPv4 address");
  }
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(fd_);
    throw std::runtime_error(
        fmt::format("connecting to Redis {}:{}: {}", host, port, std::strerror(error)));
  }
  if (g_redis_tls == nullptr) return;
  // TLS: the handshake is bounded by the socket's timeouts (a blocking SSL_connect).
  ssl_ = SSL_new(g_redis_tls);
  if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1 ||
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str()) != 1) {
    const std::string reason = openssl_reason();
    close_connection();
    throw std::runtime_error(fmt::format("Redis {}:{}: TLS setup: {}", host, port, reason));
  }
  if (SSL_connect(ssl_) != 1) {
    const long verify = SSL_get_verify_result(ssl_);
    std::string reason =
        verify != X509_V_OK ? X509_verify_cert_error_string(verify) : openssl_reason();
    close_connection();
    throw std::runtime_error(fmt::format("Redis {}:{}: TLS handshake: {}", host, port, reason));
  }
}

RedisConnection::~RedisConnection() {
  close_connection();
}

void RedisConnection::send_all(const std::string& request) {
  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = 0;
    if (ssl_ != nullptr) {
      n = SSL_write(ssl_, request.data() + sent, static_cast<int>(request.size() - sent));
    } else {
      n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
    }
    if (n <= 0) {
      const std::string reason = ssl_ != nullptr ? "TLS write failed: " + openssl_reason()
                                                 : std::string(std::strerror(errno));
      close_connection();
      throw std::runtime_error("sending to Redis: " + reason);
    }
    sent += static_cast<std::size_t>(n);
  }
}

RedisReply RedisConnection::command(const std::vector<std::string>& args) {
  if (fd_ < 0) throw std::runtime_error("Redis connection unusable after an earlier failure");
  std::string request = fmt::format("*{}\r\n", args.size());
  for (const auto& arg : args) request += fmt::format("${}\r\n{}\r\n", arg.size(), arg);
  send_all(request);
  RedisReply reply = read_reply();
  if (reply.type == RedisReply::Type::error) {
    throw std::runtime_error(fmt::format("Redis {}: {}", args.empty() ? "" : args[0], reply.text));
  }
  return reply;
}

void RedisConnection::fill() {
  if (position_ > 0) {
    buffer_.erase(0, position_);
    position_ = 0;
  }
  char chunk[16384];
  for (;;) {
    if (ssl_ != nullptr) {
      const int n = SSL_read(ssl_, chunk, static_cast<int>(sizeof chunk));
      if (n <= 0) {
        const int error = SSL_get_error(ssl_, n);
        const std::string reason =
            error == SSL_ERROR_ZERO_RETURN ? std::string("connection closed by the server")
            : (errno == EAGAIN || errno == EWOULDBLOCK) ? std::string("timed out")
                                                        : "TLS read failed: " + openssl_reason();
        close_connection();
        throw std::runtime_error("reading from Redis: " + reason);
      }
      buffer_.append(chunk, static_cast<std::size_t>(n));
      return;
    }
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string reason = n == 0 ? std::string("connection closed by the server")
                                 : (errno == EAGAIN || errno == EWOULDBLOCK)
                                     ? std::string("timed out")
                                     : std::string(std::strerror(errno));
      close_connection();
      throw std::runtime_error("reading from Redis: " + reason);
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return;
  }
}

std::string RedisConnection::read_line() {
  for (;;) {
    const auto end = buffer_.find("\r\n", position_);
    if (end != std::string::npos) {
      std::string line = buffer_.substr(position_, end - position_);
      position_ = end + 2;
      return line;
    }
    fill();
  }
}

RedisReply RedisConnection::read_reply() {
  const std::string line = read_line();
  if (line.empty()) throw std::runtime_error("Redis: empty reply line");
  RedisReply reply;
  const std::string rest = line.substr(1);
  switch (line[0]) {
    case '+':
      reply.type = RedisReply::Type::simple;
      reply.text = rest;
      return reply;
    case '-':
      reply.type = RedisReply::Type::error;
      reply.text = rest;
      return reply;
    case ':':
      reply.type = RedisReply::Type::integer;
      reply.integer = std::stoll(rest);
      return reply;
    case '$': {
      const long long length = std::stoll(rest);
      if (length < 0) return reply;  // nil
      const auto size = static_cast<std::size_t>(length);
      while (buffer_.size() - position_ < size + 2) fill();
      reply.type = RedisReply::Type::bulk;
      reply.text = buffer_.substr(position_, size);
      position_ += size + 2;
      return reply;
    }
    case '*': {
      const long long count = std::stoll(rest);
      if (count < 0) return reply;  // nil
      reply.type = RedisReply::Type::array;
      for (long long i = 0; i < count; ++i) reply.items.push_back(read_reply());
      return reply;
    }
    default:
      close_connection();
      throw std::runtime_error("Redis: unexpected reply line: " + line);
  }
}

std::optional<std::string> info_field(const std::string& info, std::string_view key) {
  std::size_t start = 0;
  while (start < info.size()) {
    auto end = info.find('\n', start);
    if (end == std::string::npos) end = info.size();
    std::string_view line(info.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ':') {
      return std::string(line.substr(key.size() + 1));
    }
    start = end + 1;
  }
  return std::nullopt;
}

// ---- processes ------------------------------------------------------------------------------

ProcessStats read_process_stats(pid_t pid) {
  ProcessStats stats;
  {
    std::ifstream status(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("VmRSS:")) {
        stats.rss_kib = std::stoll(line.substr(6));  // "VmRSS:\t  12345 kB"
        break;
      }
    }
  }
  {
    // "pid (comm) state ppid ..." : utime and stime are fields 14 and 15, in clock ticks; the
    // command name may hold spaces and parentheses, so the fields are counted after the last ')'.
    std::ifstream stat_file(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(text.substr(close + 1));
      std::string field;
      long long utime = -1, stime = -1;
      for (int index = 3; fields >> field && index <= 15; ++index) {
        if (index == 14) utime = std::stoll(field);
        if (index == 15) stime = std::stoll(field);
      }
      const long ticks = ::sysconf(_SC_CLK_TCK);
      if (utime >= 0 && stime >= 0 && ticks > 0) {
        stats.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
      }
    }
  }
  if (DIR* dir = ::opendir(fmt::format("/proc/{}/fd", pid).c_str())) {
    std::int64_t count = 0;
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    ::closedir(dir);
    stats.fds = count;
  }
  return stats;
}

// ---- JSON -----------------------------------------------------------------------------------

std::optional<boost::json::value> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  boost::system::error_code error;
  boost::json::value value = boost::json::parse(text.str(), error);
  if (error) {
    throw std::runtime_error(fmt::format("{} is not valid JSON: {}", path, error.message()));
  }
  return value;
}

namespace {

void pretty(std::string& out, const boost::json::value& value, int indent) {
  const std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
  if (value.is_object() && !value.get_object().empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& member : value.get_object()) {
      if (!first) out += ",\n";
      first = false;
      out += pad + "  " + boost::json::serialize(boost::json::value(member.key())) + ": ";
      pretty(out, member.value(), indent + 1);
    }
    out += "\n" + pad + "}";
  } else if (value.is_array() && !value.get_array().empty()) {
    out += "[\n";
    bool first = true;
    for (const auto& item : value.get_array()) {
      if (!first) out += ",\n";
      first = false;
      out += pad + "  ";
      pretty(out, item, indent + 1);
    }
    out += "\n" + pad + "]";
  } else {
    out += boost::json::serialize(value);
  }
}

}  // namespace

void write_json_file(const std::string& path, const boost::json::value& value) {
  std::string text;
  pretty(text, value, 0);
  text += "\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    out << text;
    out.flush();
    if (!out) {
      throw std::runtime_error(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(
        fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
}

const boost::json::value* json_member(const boost::json::value& value, std::string_view key) {
  if (!value.is_object()) return nullptr;
  return value.get_object().if_contains(key);
}

std::optional<std::int64_t> json_int(const boost::json::value& value, std::string_view key) {
  const auto* member = json_member(value, key);
  if (member == nullptr) return std::nullopt;
  if (member->is_int64()) return member->get_int64();
  if (member->is_uint64()) return static_cast<std::int64_t>(member->get_uint64());
  if (member->is_double()) return static_cast<std::int64_t>(member->get_double());
  return std::nullopt;
}

std::optional<std::string> json_text(const boost::json::value& value, std::string_view key) {
  const auto* member = json_member(value, key);
  if (member == nullptr) return std::nullopt;
  if (member->is_string()) return std::string(member->get_string());
  if (member->is_int64() || member->is_uint64()) return boost::json::serialize(*member);
  return std::nullopt;
}

// ---- trade digests ---------------------------------------------------------------------------

std::string canonical_decimal(std::string_view text) {
  std::string out(text);
  if (out.find('.') == std::string::npos) return out;
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out;
}

void TradeDigest::feed(std::string_view text) {
  for (const char c : text) {
    hash_ ^= static_cast<unsigned char>(c);
    hash_ *= 0x100000001b3ULL;
  }
}

void TradeDigest::add_line(std::string_view id, std::string_view price, std::string_view qty,
                           std::string_view trade_ms, std::string_view event_ms, bool buyer_maker) {
  feed(id);
  feed("|");
  feed(price);
  feed("|");
  feed(qty);
  feed("|");
  feed(trade_ms);
  feed("|");
  feed(event_ms);
  feed(buyer_maker ? "|1\n" : "|0\n");
}

std::string TradeDigest::hex() const {
  return fmt::format("{:016x}", hash_);
}

}  // namespace trading_shared::e2e

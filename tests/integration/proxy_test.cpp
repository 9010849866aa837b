/// @file
/// The fault-injecting proxy (tests/support/fault_proxy.hpp) proven mode by mode against the
/// real Redis and PostgreSQL of the harness: later fault tests trust it to inject exactly the
/// fault they name, so each mode is checked here from the client's side and the server's.
///
/// Clients are hiredis (synchronous, with socket timeouts) and plain sockets read with
/// poll(): every wait has a deadline, and no sleep stands in for a condition.

#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace trading_shared::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Generous upper bound of any single wait in these tests (a loaded CI machine is slow, a
/// hang is infinitely slow: the bound only has to tell them apart).
constexpr milliseconds kWait{5000};

/// hiredis writes with write(): a peer reset must fail the call, not kill the binary.
[[maybe_unused]] const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

milliseconds elapsed_since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

timeval to_timeval(milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

// ---- hiredis ----------------------------------------------------------------------------

struct RedisContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using RedisContext = std::unique_ptr<redisContext, RedisContextDeleter>;

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

/// A hiredis connection whose connect, reads and writes all time out after `timeout`.
RedisContext redis_connect(const std::string& host, std::uint16_t port,
                           milliseconds timeout = kWait) {
  RedisContext context{redisConnectWithTimeout(host.c_str(), port, to_timeval(timeout))};
  if (!context) ADD_FAILURE() << "redisConnectWithTimeout: out of memory";
  if (context && context->err == 0) redisSetTimeout(context.get(), to_timeval(timeout));
  return context;
}

RedisContext redis_direct() {
  auto& servers = Servers::instance();
  return redis_connect(servers.redis_host(), servers.redis_port());
}

RedisContext redis_via(const FaultProxy& proxy, milliseconds timeout = kWait) {
  return redis_connect(proxy.host(), proxy.port(), timeout);
}

/// Runs one command (argv form, so values may hold anything); nullptr on an I/O error.
RedisReply redis_command(redisContext* context, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return RedisReply{static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(args.size()), argv.data(), lengths.data()))};
}

/// The string of a status or bulk reply, "<nil>" for nil, "<error: ...>" for errors.
std::string reply_text(const redisReply* reply) {
  if (reply == nullptr) return "<no reply>";
  switch (reply->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(reply->str, reply->len);
    case REDIS_REPLY_INTEGER:
      return std::to_string(reply->integer);
    case REDIS_REPLY_NIL:
      return "<nil>";
    case REDIS_REPLY_ERROR:
      return "<error: " + std::string(reply->str, reply->len) + ">";
    default:
      return "<type " + std::to_string(reply->type) + ">";
  }
}

std::string redis_get_text(redisContext* context, const std::vector<std::string>& args) {
  auto reply = redis_command(context, args);
  return reply ? reply_text(reply.get()) : "<io error: " + std::string(context->errstr) + ">";
}

/// Writes out everything hiredis has buffered, without waiting for replies.
bool redis_flush(redisContext* context) {
  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(context, &done) != REDIS_OK) return false;
  }
  return true;
}

// ---- plain sockets ----------------------------------------------------------------------

/// A blocking loopback TCP client whose reads all have deadlines (poll), for the tests that
/// must see exactly which bytes, EOF or reset arrive.
class RawSocket {
 public:
  enum class Status { data, eof, reset, timeout };

  explicit RawSocket(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // A loopback connect completes or is refused at once; it cannot hang.
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
      connect_errno_ = errno;
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawSocket() { close(); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return fd_ >= 0; }
  int connect_errno() const { return connect_errno_; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_all(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  /// One read, waiting at most `timeout`; appends what it got to `out`.
  Status read_some(std::string& out, milliseconds timeout) {
    pollfd pfd{fd_, POLLIN, 0};
    int ready = 0;
    do {
      ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0) return Status::timeout;
    char buffer[65536];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
      return Status::data;
    }
    if (n == 0) return Status::eof;
    return Status::reset;
  }

  /// Reads until `out` ends with "\r\n", EOF, reset or the deadline.
  Status read_line(std::string& out, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return Status::timeout;
      const Status status = read_some(out, left);
      if (status != Status::data) return status;
    }
    return Status::data;
  }

  /// Reads until EOF, reset or the deadline; returns how it ended.
  Status read_until_closed(std::string& out, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left <= 0ms) return Status::timeout;
      const Status status = read_some(out, left);
      if (status != Status::data) return status;
    }
  }

 private:
  int fd_ = -1;
  int connect_errno_ = 0;
};

const char* status_name(RawSocket::Status status) {
  switch (status) {
    case RawSocket::Status::data:
      return "data";
    case RawSocket::Status::eof:
      return "eof";
    case RawSocket::Status::reset:
      return "reset";
    case RawSocket::Status::timeout:
      return "timeout";
  }
  return "?";
}

/// Sends an inline PING and expects +PONG within the deadline.
void expect_ping(RawSocket& socket) {
  ASSERT_TRUE(socket.send_all("PING\r\n"));
  std::string reply;
  const auto status = socket.read_line(reply, kWait);
  EXPECT_EQ(status, RawSocket::Status::data) << status_name(status);
  EXPECT_EQ(reply, "+PONG\r\n");
}

/// Open file descriptors of this process.
std::size_t open_fd_count() {
  std::size_t count = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the descriptor of the directory being read
}

// ---- PostgreSQL -------------------------------------------------------------------------

/// Host and port of the harness PostgreSQL, and the DSN keywords to reach it through a
/// proxy (everything of the harness DSN but its host and port).
struct PostgresTarget {
  std::string host;
  std::uint16_t port = 0;
  std::string dsn_without_address;
};

std::string quote_dsn_value(const std::string& value) {
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

/// Parsed with libpq itself, so that keyword and URI DSNs from the environment both work.
std::optional<PostgresTarget> postgres_target() {
  auto& servers = Servers::instance();
  const std::string dsn = servers.postgres_dsn();
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(dsn.c_str(), &error);
  if (options == nullptr) {
    ADD_FAILURE() << "cannot parse the harness DSN: " << (error ? error : "out of memory");
    PQfreemem(error);
    return std::nullopt;
  }
  PostgresTarget target;
  std::string port;
  for (const PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (option->val == nullptr || *option->val == '\0') continue;
    const std::string keyword = option->keyword;
    if (keyword == "host") {
      target.host = option->val;
    } else if (keyword == "hostaddr") {
      if (target.host.empty() || target.host[0] == '/') target.host = option->val;
    } else if (keyword == "port") {
      port = option->val;
    } else {
      target.dsn_without_address += keyword + "=" + quote_dsn_value(option->val) + " ";
    }
  }
  PQconninfoFree(options);
  if (!servers.external()) {
    target.port = servers.postgres().port();
    target.host = servers.postgres().host();
  } else {
    target.port = static_cast<std::uint16_t>(std::stoi(port.empty() ? "5432" : port));
  }
  if (target.host.empty() || target.host[0] == '/') target.host = "127.0.0.1";
  return target;
}

// ---- tests ------------------------------------------------------------------------------

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto& servers = Servers::instance();
    proxy_ = std::make_unique<FaultProxy>(servers.redis_host(), servers.redis_port());
    proxy_->start();
  }
  void TearDown() override {
    proxy_->stop();
    EXPECT_EQ(proxy_->active_connections(), 0u);
  }

  std::unique_ptr<FaultProxy> proxy_;
};

TEST_F(ProxyTest, ForwardsRedisBothWays) {
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0) << (redis ? redis->errstr : "");
  EXPECT_EQ(redis_get_text(redis.get(), {"SET", "proxy:forward", "hello"}), "OK");
  EXPECT_EQ(redis_get_text(redis.get(), {"GET", "proxy:forward"}), "hello");

  EXPECT_EQ(proxy_->connections_accepted(), 1u);
  EXPECT_EQ(proxy_->active_connections(), 1u);
  EXPECT_GT(proxy_->bytes_client_to_server(), 0u);
  EXPECT_GT(proxy_->bytes_server_to_client(), 0u);
  EXPECT_EQ(proxy_->connection_errors(), 0u);

  // The client's close reaches the server and the proxy lets go of the connection.
  redis.reset();
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));
}

TEST_F(ProxyTest, ForwardsPostgres) {
  const auto target = postgres_target();
  ASSERT_TRUE(target);
  FaultProxy pg_proxy{target->host, target->port};
  pg_proxy.start();

  const std::string dsn = target->dsn_without_address +
                          "host=127.0.0.1 port=" + std::to_string(pg_proxy.port()) +
                          " connect_timeout=5 options='-c statement_timeout=5000'";
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn{PQconnectdb(dsn.c_str()), &PQfinish};
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK) << PQerrorMessage(conn.get());
  std::unique_ptr<PGresult, decltype(&PQclear)> result{PQexec(conn.get(), "SELECT 40 + 2"),
                                                       &PQclear};
  ASSERT_EQ(PQresultStatus(result.get()), PGRES_TUPLES_OK) << PQerrorMessage(conn.get());
  EXPECT_STREQ(PQgetvalue(result.get(), 0, 0), "42");
  EXPECT_EQ(pg_proxy.connections_accepted(), 1u);
  EXPECT_GT(pg_proxy.bytes_server_to_client(), 0u);

  conn.reset();
  EXPECT_TRUE(poll_until([&] { return pg_proxy.active_connections() == 0; }, kWait));
  pg_proxy.stop();
}

TEST_F(ProxyTest, LatencyDelaysEachRoundTrip) {
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  ASSERT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");

  proxy_->set_latency(0ms, 150ms);
  auto start = Clock::now();
  EXPECT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");
  auto took = elapsed_since(start);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1500ms);

  // The other direction, on the same connection: latency changes at run time.
  proxy_->set_latency(150ms, 0ms);
  start = Clock::now();
  EXPECT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");
  took = elapsed_since(start);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1500ms);

  proxy_->clear_faults();
  start = Clock::now();
  EXPECT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");
  EXPECT_LT(elapsed_since(start), 150ms);
}

// Twenty pipelined commands behind 150 ms take about 150 ms, not 20 x 150 ms (3 s): the
// upper bound of 1.5 s leaves room for a slow machine and still tells the two apart.
TEST_F(ProxyTest, LatencyIsNotSerializedAndKeepsOrder) {
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  proxy_->set_latency(0ms, 150ms);

  constexpr int kCommands = 20;
  for (int i = 0; i < kCommands; ++i) {
    const std::string value = "echo-" + std::to_string(i);
    ASSERT_EQ(redisAppendCommand(redis.get(), "ECHO %b", value.data(), value.size()), REDIS_OK);
  }
  const auto start = Clock::now();
  ASSERT_TRUE(redis_flush(redis.get()));
  for (int i = 0; i < kCommands; ++i) {
    void* raw = nullptr;
    ASSERT_EQ(redisGetReply(redis.get(), &raw), REDIS_OK) << redis->errstr;
    RedisReply reply{static_cast<redisReply*>(raw)};
    EXPECT_EQ(reply_text(reply.get()), "echo-" + std::to_string(i));
  }
  const auto took = elapsed_since(start);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1500ms);
}

// The same with the commands sent 10 ms apart, so that the replies cross the proxy as
// separate chunks, each delayed on its own: every reply arrives no sooner than 150 ms after
// its command, and the last about 150 ms after the last command.
TEST_F(ProxyTest, LatencyDelaysEachChunkIndependently) {
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  proxy_->set_latency(0ms, 150ms);

  constexpr int kCommands = 20;
  std::vector<Clock::time_point> sent;
  const auto start = Clock::now();
  for (int i = 0; i < kCommands; ++i) {
    const std::string value = "spread-" + std::to_string(i);
    ASSERT_EQ(redisAppendCommand(redis.get(), "ECHO %b", value.data(), value.size()), REDIS_OK);
    sent.push_back(Clock::now());
    ASSERT_TRUE(redis_flush(redis.get()));
    std::this_thread::sleep_for(10ms);  // traffic shaping, not a wait for a condition
  }
  for (int i = 0; i < kCommands; ++i) {
    void* raw = nullptr;
    ASSERT_EQ(redisGetReply(redis.get(), &raw), REDIS_OK) << redis->errstr;
    const auto received = Clock::now();
    RedisReply reply{static_cast<redisReply*>(raw)};
    EXPECT_EQ(reply_text(reply.get()), "spread-" + std::to_string(i));
    EXPECT_GE(received - sent[static_cast<std::size_t>(i)], 150ms) << "reply " << i;
  }
  EXPECT_LT(elapsed_since(start), 1500ms);
}

// The shape of F17: many concurrent connections behind a delaying proxy, each checking that
// it gets its own reply; the delay is paid once, in parallel, not once per connection.
TEST_F(ProxyTest, ManyConcurrentConnectionsUnderLatency) {
  constexpr int kClients = 100;
  proxy_->set_latency(20ms, 50ms);
  std::vector<std::unique_ptr<RawSocket>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<RawSocket>(proxy_->port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
  }
  const auto start = Clock::now();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[static_cast<std::size_t>(i)]->send_all("ECHO client-" + std::to_string(i) +
                                                               "\r\n"));
  }
  for (int i = 0; i < kClients; ++i) {
    const std::string value = "client-" + std::to_string(i);
    std::string reply;
    auto& client = *clients[static_cast<std::size_t>(i)];
    // "$<len>\r\n<value>\r\n": two lines.
    ASSERT_EQ(client.read_line(reply, kWait), RawSocket::Status::data) << i;
    if (reply.find("\r\n") == reply.size() - 2) {
      ASSERT_EQ(client.read_line(reply, kWait), RawSocket::Status::data) << i;
    }
    EXPECT_EQ(reply, "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n");
  }
  const auto took = elapsed_since(start);
  EXPECT_GE(took, 70ms);
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ(proxy_->active_connections(), static_cast<std::uint64_t>(kClients));

  proxy_->cut_all();
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));
  EXPECT_EQ(proxy_->connections_accepted(), static_cast<std::uint64_t>(kClients));
}

// A value several times larger than the proxy's per-direction queue cap crosses it intact
// both ways under latency: the cap pauses reading (TCP back-pressure), it never drops data.
TEST_F(ProxyTest, LargeTransferUnderLatencyIsIntact) {
  proxy_->set_latency(5ms, 5ms);
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  std::string value(4 * FaultProxy::kMaxQueuedBytes, '\0');
  for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + i % 26);
  EXPECT_EQ(redis_get_text(redis.get(), {"SET", "proxy:large", value}), "OK");
  EXPECT_TRUE(redis_get_text(redis.get(), {"GET", "proxy:large"}) == value);
  EXPECT_EQ(redis_get_text(redis.get(), {"DEL", "proxy:large"}), "1");
  EXPECT_GT(proxy_->bytes_client_to_server(), value.size());
  EXPECT_GT(proxy_->bytes_server_to_client(), value.size());
  EXPECT_EQ(proxy_->connection_errors(), 0u);
  EXPECT_LE(proxy_->peak_queued_bytes(), FaultProxy::kMaxQueuedBytes + FaultProxy::kReadChunkBytes);
}

TEST_F(ProxyTest, BlackholeAcceptsButNeverAnswers) {
  proxy_->set_blackhole(true);
  RawSocket socket{proxy_->port()};
  ASSERT_TRUE(socket.connected()) << socket.connect_errno();
  ASSERT_TRUE(poll_until([&] { return proxy_->active_connections() == 1; }, kWait));
  ASSERT_TRUE(socket.send_all("PING\r\n"));
  std::string reply;
  EXPECT_EQ(socket.read_some(reply, 300ms), RawSocket::Status::timeout) << reply;

  // hiredis sees the same: connect succeeds, the command times out.
  auto redis = redis_via(*proxy_, 300ms);
  ASSERT_TRUE(redis && redis->err == 0) << (redis ? redis->errstr : "");
  const auto start = Clock::now();
  EXPECT_EQ(redis_command(redis.get(), {"PING"}), nullptr);
  EXPECT_GE(elapsed_since(start), 250ms);
  EXPECT_EQ(proxy_->bytes_client_to_server(), 0u);
  EXPECT_EQ(proxy_->bytes_server_to_client(), 0u);
  // Both sockets stay open: a half-open connection, not a closed one.
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 2; }, kWait));

  proxy_->clear_faults();
  RawSocket fresh{proxy_->port()};
  ASSERT_TRUE(fresh.connected());
  expect_ping(fresh);
  // The blackholed connection stays dead (documented): nothing arrives on it.
  reply.clear();
  EXPECT_EQ(socket.read_some(reply, 100ms), RawSocket::Status::timeout) << reply;
}

TEST_F(ProxyTest, BlackholeFreezesExistingConnections) {
  RawSocket socket{proxy_->port()};
  ASSERT_TRUE(socket.connected());
  expect_ping(socket);
  const auto delivered = proxy_->bytes_client_to_server();

  proxy_->set_blackhole(true);
  ASSERT_TRUE(socket.send_all("PING\r\n"));
  std::string reply;
  EXPECT_EQ(socket.read_some(reply, 300ms), RawSocket::Status::timeout) << reply;
  EXPECT_EQ(proxy_->bytes_client_to_server(), delivered);
  EXPECT_EQ(proxy_->active_connections(), 1u);

  proxy_->set_blackhole(false);
  RawSocket fresh{proxy_->port()};
  ASSERT_TRUE(fresh.connected());
  expect_ping(fresh);
}

TEST_F(ProxyTest, RefuseResetsNewConnections) {
  proxy_->set_refuse(true);
  RawSocket socket{proxy_->port()};
  ASSERT_TRUE(socket.connected());
  std::string data;
  const auto status = socket.read_until_closed(data, kWait);
  EXPECT_TRUE(status == RawSocket::Status::reset || status == RawSocket::Status::eof)
      << status_name(status);
  EXPECT_TRUE(data.empty());
  EXPECT_EQ(proxy_->connections_accepted(), 1u);

  proxy_->clear_faults();
  RawSocket fresh{proxy_->port()};
  ASSERT_TRUE(fresh.connected());
  expect_ping(fresh);
}

TEST_F(ProxyTest, CutAllResetsOpenConnections) {
  RawSocket first{proxy_->port()};
  RawSocket second{proxy_->port()};
  ASSERT_TRUE(first.connected() && second.connected());
  expect_ping(first);
  expect_ping(second);
  ASSERT_EQ(proxy_->active_connections(), 2u);

  proxy_->cut_all();
  for (RawSocket* socket : {&first, &second}) {
    std::string data;
    const auto status = socket->read_until_closed(data, kWait);
    EXPECT_TRUE(status == RawSocket::Status::reset || status == RawSocket::Status::eof)
        << status_name(status);
    EXPECT_TRUE(data.empty()) << data;
  }
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));

  // New connections are accepted and forwarded as before.
  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  EXPECT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");
  EXPECT_EQ(proxy_->connections_accepted(), 3u);
}

TEST_F(ProxyTest, CutAfterBytesClientToServerDropsTheIncompleteCommand) {
  auto direct = redis_direct();
  ASSERT_TRUE(direct && direct->err == 0);
  ASSERT_NE(redis_get_text(direct.get(), {"DEL", "proxy:cut:c2s", "proxy:cut:c2s:new"})[0], '<');

  auto redis = redis_via(*proxy_);
  ASSERT_TRUE(redis && redis->err == 0);
  ASSERT_EQ(redis_get_text(redis.get(), {"PING"}), "PONG");
  const auto before = proxy_->bytes_client_to_server();

  // Current connection: n counts from the call.
  proxy_->cut_after_bytes(1000, Direction::client_to_server);
  const std::string value(100 * 1000, 'v');
  EXPECT_EQ(redis_command(redis.get(), {"SET", "proxy:cut:c2s", value}), nullptr);
  EXPECT_NE(redis->err, 0);
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));
  EXPECT_EQ(proxy_->bytes_client_to_server(), before + 1000);
  EXPECT_EQ(redis_get_text(direct.get(), {"GET", "proxy:cut:c2s"}), "<nil>");

  // New connection: n counts from its first byte; the limit stays in force.
  auto again = redis_via(*proxy_);
  ASSERT_TRUE(again && again->err == 0);
  EXPECT_EQ(redis_command(again.get(), {"SET", "proxy:cut:c2s:new", value}), nullptr);
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));
  EXPECT_EQ(proxy_->bytes_client_to_server(), before + 2000);
  EXPECT_EQ(redis_get_text(direct.get(), {"GET", "proxy:cut:c2s:new"}), "<nil>");

  // clear_faults() lifts the limit.
  proxy_->clear_faults();
  auto clean = redis_via(*proxy_);
  ASSERT_TRUE(clean && clean->err == 0);
  EXPECT_EQ(redis_get_text(clean.get(), {"SET", "proxy:cut:c2s", value}), "OK");
  EXPECT_EQ(redis_get_text(direct.get(), {"STRLEN", "proxy:cut:c2s"}), "100000");
  EXPECT_EQ(redis_get_text(direct.get(), {"DEL", "proxy:cut:c2s"}), "1");
}

TEST_F(ProxyTest, CutAfterBytesServerToClientDeliversExactlyTheLimit) {
  auto direct = redis_direct();
  ASSERT_TRUE(direct && direct->err == 0);
  const std::string value(100 * 1000, 'w');
  ASSERT_EQ(redis_get_text(direct.get(), {"SET", "proxy:cut:s2c", value}), "OK");

  proxy_->cut_after_bytes(1000, Direction::server_to_client);
  RawSocket socket{proxy_->port()};
  ASSERT_TRUE(socket.connected());
  ASSERT_TRUE(socket.send_all("GET proxy:cut:s2c\r\n"));
  std::string received;
  const auto status = socket.read_until_closed(received, kWait);
  EXPECT_TRUE(status == RawSocket::Status::reset || status == RawSocket::Status::eof)
      << status_name(status);
  EXPECT_LE(received.size(), 1000u);
  // The proxy drains its send buffer before the reset, and Linux delivers queued data
  // before the reset: the client gets exactly the limit.
  EXPECT_EQ(received.size(), 1000u);
  EXPECT_EQ(received.rfind("$100000\r\nwww", 0), 0u) << received.substr(0, 20);
  EXPECT_EQ(proxy_->bytes_server_to_client(), 1000u);
  EXPECT_TRUE(poll_until([&] { return proxy_->active_connections() == 0; }, kWait));

  EXPECT_EQ(redis_get_text(direct.get(), {"DEL", "proxy:cut:s2c"}), "1");
}

TEST(ProxyLifecycleTest, StopClosesEverySocket) {
  auto& servers = Servers::instance();
  const std::string redis_host = servers.redis_host();
  const std::uint16_t redis_port = servers.redis_port();  // servers up before the baseline
  const std::size_t baseline = open_fd_count();
  {
    FaultProxy proxy{redis_host, redis_port};
    proxy.start();
    proxy.set_latency(0ms, 50ms);  // some connections with queued data and armed timers
    std::vector<std::unique_ptr<RawSocket>> clients;
    for (int i = 0; i < 3; ++i) {
      clients.push_back(std::make_unique<RawSocket>(proxy.port()));
      ASSERT_TRUE(clients.back()->connected());
      expect_ping(*clients.back());
    }
    ASSERT_TRUE(clients[0]->send_all("PING\r\n"));  // reply still in flight at stop()
    ASSERT_EQ(proxy.active_connections(), 3u);

    proxy.stop();
    EXPECT_FALSE(proxy.running());
    EXPECT_EQ(proxy.active_connections(), 0u);
    for (auto& client : clients) {
      std::string data;
      const auto status = client->read_until_closed(data, kWait);
      EXPECT_TRUE(status == RawSocket::Status::reset || status == RawSocket::Status::eof)
          << status_name(status);
    }
    // The port refuses connections while stopped.
    RawSocket refused{proxy.port()};
    EXPECT_FALSE(refused.connected());
    EXPECT_EQ(refused.connect_errno(), ECONNREFUSED);
    proxy.stop();  // idempotent
    clients.clear();
    EXPECT_EQ(open_fd_count(), baseline);

    // start() after stop() listens on the same port again.
    const std::uint16_t port = proxy.port();
    proxy.start();
    EXPECT_EQ(proxy.port(), port);
    RawSocket again{proxy.port()};
    ASSERT_TRUE(again.connected());
    expect_ping(again);
  }
  EXPECT_EQ(open_fd_count(), baseline);
}

TEST(ProxyLifecycleTest, UpstreamDownResetsTheClient) {
  // A port nobody listens on: the proxy accepts, fails to connect, resets the client.
  FaultProxy proxy{"127.0.0.1", free_loopback_port()};
  proxy.start();
  RawSocket socket{proxy.port()};
  ASSERT_TRUE(socket.connected());
  std::string data;
  const auto status = socket.read_until_closed(data, kWait);
  EXPECT_TRUE(status == RawSocket::Status::reset || status == RawSocket::Status::eof)
      << status_name(status);
  EXPECT_TRUE(poll_until([&] { return proxy.connection_errors() == 1; }, kWait));
  EXPECT_TRUE(poll_until([&] { return proxy.active_connections() == 0; }, kWait));
}

}  // namespace
}  // namespace trading_shared::testing

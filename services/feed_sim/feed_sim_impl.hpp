#pragma once
// ts-feed-sim's simulator (private to services/feed_sim): `FeedSimulator::Impl` and the state of
// one connection. Its parts live in one file each:
// - feed_sim.cpp: configuration, lifecycle (start, shutdown, close), tasks, the summary;
// - feed_sim_server.cpp: accepting, one connection's session, read loop and writer, ending it;
// - feed_sim_protocol.cpp: the client's control messages (SUBSCRIBE, UNSUBSCRIBE, LIST_...),
//   replies, and the per-connection send queue;
// - feed_sim_faults.cpp: the fault switches (stall, drop, malformed, oversized, outlier);
// - feed_sim_limits.cpp: the venue's WebSocket limits (limits.hpp) applied to connections;
// - feed_sim_generation.cpp: paced trade generation and its fan-out to subscribers.
// Not thread-safe: everything runs on the simulator's executor (one thread).

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/logging.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "common/settings.hpp"
#include "feed_sim/feed_sim.hpp"
#include "feed_sim/generator.hpp"
#include "feed_sim/limits.hpp"
#include "feed_sim/rest.hpp"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <stdexcept>
#include <utility>

namespace trading_shared::services::feed_sim {

namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

inline std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("feed-sim");
  return logger;
}

/// Largest control message a client may send; beyond it Beast closes the connection (1009).
inline constexpr std::size_t kMaxClientMessage = 64 * 1024;
/// Generation wakes up at most this often (trades are generated in batches).
inline constexpr std::chrono::milliseconds kTick{5};
/// Bad client messages logged at warn level per connection; the rest at debug.
inline constexpr std::uint64_t kBadMessagesLogged = 10;
inline constexpr std::size_t kOversizedBytes = 2 * 1024 * 1024;

/// The garbage of `--fault-malformed-every`, in rotation.
inline constexpr std::array<std::string_view, 4> kGarbage = {
    R"({"e":"trade","E":1700000000000,"s":"BTCUSDT","t":)",  // truncated JSON
    "this is not JSON at all",                               // not JSON
    R"({"e":"trade","E":"soon","s":"BTCUSDT","t":"abc","p":60000,"q":null,"T":"x","m":"no"})",
    "{}",
};

inline std::string describe(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), endpoint.port())
                         : fmt::format("{}:{}", address.to_string(), endpoint.port());
}

inline void write_file_atomically(const std::string& path, std::string_view contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream file(tmp, std::ios::trunc);
    file << contents;
    file.flush();
    if (!file) {
      throw std::runtime_error(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(
        fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
}

/// TCP_CORK as an Asio socket option. While a burst of queued messages is written the
/// socket is corked, so that the kernel sends full segments instead of one per frame (most
/// of the CPU cost at 100 000 trades/s); it is uncorked as soon as the queue is empty, so a
/// lone message is not delayed.
class TcpCork {
 public:
  explicit TcpCork(bool on) : value_(on ? 1 : 0) {}
  template <class Protocol>
  int level(const Protocol& /*protocol*/) const {
    return IPPROTO_TCP;
  }
  template <class Protocol>
  int name(const Protocol& /*protocol*/) const {
    return TCP_CORK;
  }
  template <class Protocol>
  const void* data(const Protocol& /*protocol*/) const {
    return &value_;
  }
  template <class Protocol>
  std::size_t size(const Protocol& /*protocol*/) const {
    return sizeof(value_);
  }

 private:
  int value_;
};

enum class ConnState : std::uint8_t {
  handshake,  ///< TCP accepted, WebSocket handshake in progress.
  open,
  closing,  ///< the server is stopping: the writer sends a close frame.
  stalled,  ///< fault: neither reads nor writes any more (until the client goes away).
  rest,     ///< a REST connection (rest.hpp): no WebSocket.
  ended,    ///< socket closed; the coroutines are finishing.
};

enum class MsgKind : std::uint8_t { trade, control };

/// A message waiting in a connection's queue: a slice of a shared buffer (one serialized
/// batch of trades is shared by every subscriber).
struct Outgoing {
  std::shared_ptr<const std::string> owner;
  const char* data = nullptr;
  std::size_t size = 0;
  MsgKind kind = MsgKind::trade;
};

struct Connection {
  /// `tls`: the server's TLS context (--tls-cert-file), null for plaintext.
  Connection(tcp::socket socket, asio::ssl::context* tls, std::uint64_t number, std::string remote,
             bool with_faults, std::size_t symbols, const VenueLimits& limits)
      : ws(std::move(socket), tls),
        wake(ws.get_executor()),
        id(number),
        peer(std::move(remote)),
        faulty(with_faults),
        subscribed(symbols, false),
        rate(limits.max_control_messages_per_second),
        clock(limits, Clock::now()),
        keeper(ws.get_executor()) {}

  websocket::stream<SimStream> ws;  // next_layer(): TLS or not; get_lowest_layer(): the socket
  core::AsyncEvent wake;            // the writer waits on it for the queue (or a ping, or the end)
  bool corked = false;
  std::uint64_t id;
  std::string peer;
  bool faulty;
  ConnState state = ConnState::handshake;
  std::string reason;  // why it ended
  std::deque<Outgoing> queue;
  std::vector<bool> subscribed;  // by symbol index
  int tasks = 0;                 // session and writer
  std::uint64_t trades_sent = 0;
  std::uint64_t data_sent = 0;  // trades and garbage (the count --fault-malformed-every uses)
  std::uint64_t garbage_sent = 0;
  std::uint64_t bad_messages = 0;
  bool oversized_sent = false;
  bool outlier_sent = false;
  // venue limits (limits.hpp)
  MessageRate rate;
  ConnectionClock clock;
  core::AsyncEvent keeper;  // keep_limits waits on it; end() notifies it
  bool ping_due = false;    // the writer sends a ping
  std::string close_text = "server stopping";
};

}  // namespace detail

class FeedSimulator::Impl : public std::enable_shared_from_this<FeedSimulator::Impl> {
  using Connection = detail::Connection;
  using Outgoing = detail::Outgoing;
  using tcp = detail::tcp;
  using Clock = detail::Clock;

 public:
  Impl(boost::asio::any_io_executor executor, FeedSimConfig config);
  ~Impl();

  /// Started (or starting) and not closed: something may still be running.
  bool needs_close() const noexcept { return !closed_ && (tasks_ > 0 || !connections_.empty()); }
  std::uint16_t port() const noexcept { return port_; }
  boost::asio::awaitable<void> start();
  void stop_generating();
  boost::asio::awaitable<void> shutdown();
  boost::asio::awaitable<void> close();
  void abort();
  Summary summary() const;
  void write_summary();

 private:
  struct SymbolState {
    std::string name;    // BTCUSDT
    std::string stream;  // btcusdt@trade
    SymbolGenerator generator;
    std::vector<std::shared_ptr<Connection>> subscribers;  // ended ones removed at finalize
    std::uint64_t active = 0;      // subscribers not ended: generation runs while > 0
    bool subscribed_once = false;  // with --keep-trading, generation runs from then on
    std::uint64_t count = 0;
    std::uint64_t first_id = 0;
    std::uint64_t last_id = 0;
    TradeDigest digest;  // of the trades generated (the summary's "digest")
  };
  void spawn(boost::asio::awaitable<void> task, std::shared_ptr<Connection> c, const char* name);
  void task_done(const std::exception_ptr& error, const std::shared_ptr<Connection>& c,
                 const char* name);
  void stop_accepting();
  boost::asio::awaitable<void> accept_loop();
  void on_accept(tcp::socket socket);
  boost::asio::awaitable<void> session(std::shared_ptr<Connection> c);
  boost::asio::awaitable<bool> tls_handshake(std::shared_ptr<Connection> c);
  void load_tls();
  boost::asio::awaitable<void> read_loop(std::shared_ptr<Connection> c);
  boost::asio::awaitable<void> discard_while_stalled(std::shared_ptr<Connection> c);
  boost::asio::awaitable<void> writer(std::shared_ptr<Connection> c);
  void set_cork(Connection& c, bool on);
  boost::asio::awaitable<bool> write_text(std::shared_ptr<Connection> c, const char* data,
                                          std::size_t size);
  boost::asio::awaitable<void> apply_faults(std::shared_ptr<Connection> c);
  void stall(Connection& c);
  boost::asio::awaitable<void> close_gracefully(std::shared_ptr<Connection> c);
  boost::asio::awaitable<void> keep_limits(std::shared_ptr<Connection> c);
  boost::asio::awaitable<bool> send_ping(std::shared_ptr<Connection> c);
  void end(Connection& c, std::string reason);
  void finalize(const std::shared_ptr<Connection>& c);
  void handle_client_message(const std::shared_ptr<Connection>& c, std::string_view text);
  std::string resolve_streams(const boost::json::value* params,
                              std::vector<std::size_t>& indices) const;
  void subscribe(const std::shared_ptr<Connection>& c, const std::vector<std::size_t>& indices);
  void unsubscribe(const std::shared_ptr<Connection>& c, const std::vector<std::size_t>& indices);
  void bad_client_message(Connection& c, std::string_view problem, std::string_view text);
  void reply_error(Connection& c, int code, std::string_view message, const boost::json::value& id);
  void reply(Connection& c, std::string text);
  void push(Connection& c, Outgoing&& message);
  bool any_active() const noexcept;
  bool trading(const SymbolState& s) const noexcept;
  boost::asio::awaitable<void> generate_loop();
  std::size_t pick_symbol() noexcept;
  void generate(std::uint64_t due);

  struct Slice {
    std::size_t symbol;
    std::size_t begin;
    std::size_t size;
  };

  boost::asio::any_io_executor executor_;
  FeedSimConfig config_;
  tcp::acceptor acceptor_;
  core::AsyncEvent generator_wake_;  // stop_generating() and a first subscriber notify it
  Pacer pacer_;
  core::AsyncEvent connections_changed_;
  core::AsyncEvent tasks_changed_;
  std::vector<SymbolState> symbols_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::vector<Slice> slices_;
  std::shared_ptr<const std::string> oversized_;
  std::unique_ptr<RestVenue> rest_;
  std::optional<boost::asio::ssl::context> tls_;  // --tls-cert-file: wss:// and https://
  std::uint64_t tls_handshake_failures_ = 0;
  std::uint64_t ws_connections_ = 0;  // fault switches: the first --fault-connections of them
  std::size_t next_symbol_ = 0;
  std::uint16_t port_ = 0;
  bool faults_enabled_ = false;
  bool started_ = false;
  bool accepting_ = false;
  bool generating_ = false;
  bool generator_idle_ = false;
  bool stopping_ = false;
  bool shutdown_started_ = false;
  bool final_summary_written_ = false;
  bool closed_ = false;
  int tasks_ = 0;
  std::uint64_t accepted_ = 0;
  std::uint64_t total_ = 0;
  std::uint64_t trades_sent_ = 0;
  std::uint64_t malformed_sent_ = 0;
  std::uint64_t dropped_for_stalled_ = 0;
  std::uint64_t slow_clients_closed_ = 0;
  std::uint64_t stalled_connections_ = 0;
  std::uint64_t dropped_connections_ = 0;
  std::uint64_t oversized_sent_ = 0;
  std::uint64_t outliers_sent_ = 0;
  std::uint64_t bad_client_messages_ = 0;
  std::uint64_t accept_errors_ = 0;
  std::uint64_t internal_errors_ = 0;
  std::uint64_t summary_errors_ = 0;
  LimitCounters limit_counts_;
  void watch_limits(const std::shared_ptr<Connection>& c);
  bool admit_incoming(Connection& c);
  void close_over_rate(Connection& c);
  bool over_stream_limit(Connection& c, const std::vector<std::size_t>& indices,
                         const boost::json::value& id);
};

}  // namespace trading_shared::services::feed_sim

#include "feed_sim/feed_sim.hpp"

#include <trading_shared/core/logging.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "common/event.hpp"
#include "common/settings.hpp"
#include "feed_sim/generator.hpp"
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

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("feed-sim");
  return logger;
}

/// Largest control message a client may send; beyond it Beast closes the connection (1009).
constexpr std::size_t kMaxClientMessage = 64 * 1024;
/// Generation wakes up at most this often (trades are generated in batches).
constexpr std::chrono::milliseconds kTick{5};
/// Bad client messages logged at warn level per connection; the rest at debug.
constexpr std::uint64_t kBadMessagesLogged = 10;
constexpr std::size_t kOversizedBytes = 2 * 1024 * 1024;

/// The garbage of `--fault-malformed-every`, in rotation.
constexpr std::array<std::string_view, 4> kGarbage = {
    R"({"e":"trade","E":1700000000000,"s":"BTCUSDT","t":)",  // truncated JSON
    "this is not JSON at all",                               // not JSON
    R"({"e":"trade","E":"soon","s":"BTCUSDT","t":"abc","p":60000,"q":null,"T":"x","m":"no"})",
    "{}",
};

std::string describe(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  return address.is_v6() ? fmt::format("[{}]:{}", address.to_string(), endpoint.port())
                         : fmt::format("{}:{}", address.to_string(), endpoint.port());
}

void write_file_atomically(const std::string& path, std::string_view contents) {
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

}  // namespace

// ---- configuration -------------------------------------------------------------------------

void add_feed_sim_settings(core::ConfigLoader& loader, FeedSimConfig& config) {
  loader
      .add(config.listen,
           {"listen", "address to listen on: host:port or [v6]:port; port 0 picks a free port"})
      .add(config.port_file, {"port_file", "write the bound port (decimal) to this file"})
      .add(config.symbols, {"symbols", "symbols served, comma-separated"})
      .add(config.seed, {"seed", "seed of the deterministic trade generator"})
      .add(config.rate, {"rate", "trades per second over all subscribed symbols"})
      .add(config.max_messages, {"max_messages", "total trades to generate; 0 = unlimited"})
      .add(config.queue_limit,
           {"queue_limit", "messages waiting per connection before it is closed as too slow"})
      .add(config.close_timeout,
           {"close_timeout", "on stop, time allowed for the close handshakes"})
      .add(config.summary_file,
           {"summary_file", "JSON summary, written at --max-messages and on exit"})
      .add(config.fault_connections,
           {"fault.connections",
            "fault switches apply to the first N WebSocket connections; 0 = all"})
      .add(config.fault_stall_after,
           {"fault.stall_after", "after N trades, stop reading and writing (-1 = off)"})
      .add(config.fault_drop_after,
           {"fault.drop_after", "after N trades, reset the TCP connection (-1 = off)"})
      .add(config.fault_malformed_every,
           {"fault.malformed_every", "every Nth message is garbage, N >= 2 (0 = off)"})
      .add(config.fault_oversized_after,
           {"fault.oversized_after", "after N trades, send one 2 MiB text frame (-1 = off)"})
      .add(config.fault_outlier_after,
           {"fault.outlier_after",
            "after N trades, send one extra trade with id --fault-outlier-id (-1 = off)"})
      .add(config.fault_outlier_id,
           {"fault.outlier_id", "the trade id of --fault-outlier-after (a bogus venue id)"});
  add_rest_settings(loader, config);
  add_limits_settings(loader, config.limits);
}

ListenAddress parse_listen(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    throw core::ConfigError(fmt::format("invalid value \"{}\" for --listen: {}", text, why));
  };
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) bad("missing ']'");
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.starts_with(':')) bad("expected [host]:port");
    port = rest.substr(1);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) bad("expected host:port");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      bad("an IPv6 address must be in brackets, e.g. [::1]:9443");
    }
    port = text.substr(colon + 1);
  }
  if (host.empty()) bad("empty host (0.0.0.0 or [::] listens on every interface)");
  unsigned value = 0;
  const auto* end = port.data() + port.size();
  const auto [ptr, ec] = std::from_chars(port.data(), end, value);
  if (port.empty() || ec != std::errc{} || ptr != end || value > 65535) {
    bad("the port must be a number from 0 to 65535");
  }
  return ListenAddress{std::string(host), static_cast<std::uint16_t>(value)};
}

void check_config(FeedSimConfig& config) {
  parse_listen(config.listen);
  check_symbols(config.symbols);
  if (!std::isfinite(config.rate) || config.rate <= 0 || config.rate > 10'000'000) {
    throw core::ConfigError(
        fmt::format("invalid value {} for --rate: expected 0 < rate <= 10000000", config.rate));
  }
  if (config.queue_limit == 0) throw core::ConfigError("--queue-limit must be at least 1");
  if (config.close_timeout <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--close-timeout must be positive");
  }
  if (config.fault_malformed_every == 1) {
    throw core::ConfigError(
        "--fault-malformed-every must be 0 (off) or at least 2: garbage comes in addition to "
        "the trades");
  }
  const auto check_after = [](std::int64_t value, std::string_view flag) {
    if (value < -1) {
      throw core::ConfigError(
          fmt::format("invalid value {} for {}: expected -1 (off) or a count", value, flag));
    }
  };
  check_after(config.fault_stall_after, "--fault-stall-after");
  check_after(config.fault_drop_after, "--fault-drop-after");
  check_after(config.fault_oversized_after, "--fault-oversized-after");
  check_after(config.fault_outlier_after, "--fault-outlier-after");
  check_rest_config(config);
  check_limits(config.limits);
}

// ---- the simulator -------------------------------------------------------------------------

namespace {

struct Connection {
  Connection(tcp::socket socket, std::uint64_t number, std::string remote, bool with_faults,
             std::size_t symbols, const VenueLimits& limits)
      : ws(std::move(socket)),
        wake(ws.get_executor()),
        id(number),
        peer(std::move(remote)),
        faulty(with_faults),
        subscribed(symbols, false),
        rate(limits.max_control_messages_per_second),
        clock(limits, Clock::now()),
        keeper(ws.get_executor()) {}

  websocket::stream<tcp::socket> ws;
  asio::steady_timer wake;  // the writer waits on it for the queue
  bool writer_waiting = false;
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
  asio::steady_timer keeper;  // keep_limits waits on it
  bool ping_due = false;      // the writer sends a ping
  std::string close_text = "server stopping";
};

}  // namespace

class FeedSimulator::Impl : public std::enable_shared_from_this<FeedSimulator::Impl> {
 public:
  Impl(asio::any_io_executor executor, FeedSimConfig config)
      : executor_(std::move(executor)),
        config_(std::move(config)),
        acceptor_(executor_),
        generator_timer_(executor_),
        pacer_(config_.rate),
        connections_changed_(executor_),
        tasks_changed_(executor_) {
    check_config(config_);
    symbols_.reserve(config_.symbols.size());
    for (const auto& name : config_.symbols) {
      std::string stream;
      for (const char c : name) {
        stream.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
      }
      stream += "@trade";
      symbols_.push_back(SymbolState{
          name, std::move(stream), SymbolGenerator(name, config_.seed), {}, 0, false, 0, 0, 0, {}});
    }
    rest_ = std::make_unique<RestVenue>(executor_, config_, config_.symbols);
    faults_enabled_ = config_.fault_stall_after >= 0 || config_.fault_drop_after >= 0 ||
                      config_.fault_malformed_every > 0 || config_.fault_oversized_after >= 0 ||
                      config_.fault_outlier_after >= 0;
    if (config_.fault_oversized_after >= 0) {
      oversized_ = std::make_shared<const std::string>(kOversizedBytes, 'x');
    }
  }

  ~Impl() {
    if (tasks_ > 0) {
      log()->error("FeedSimulator destroyed with {} coroutine(s) still running", tasks_);
    }
  }

  /// Started (or starting) and not closed: something may still be running.
  bool needs_close() const noexcept { return !closed_ && (tasks_ > 0 || !connections_.empty()); }
  std::uint16_t port() const noexcept { return port_; }

  asio::awaitable<void> start() {
    if (started_) throw std::logic_error("FeedSimulator::start called twice");
    started_ = true;
    const ListenAddress address = parse_listen(config_.listen);
    tcp::resolver resolver(executor_);
    boost::system::error_code ec;
    const auto results =
        co_await resolver.async_resolve(address.host, std::to_string(address.port),
                                        tcp::resolver::passive | tcp::resolver::numeric_service,
                                        asio::redirect_error(asio::use_awaitable, ec));
    if (ec || results.empty()) {
      throw std::runtime_error(fmt::format("cannot resolve the listen address {}: {}",
                                           config_.listen,
                                           ec ? ec.message() : std::string("no address")));
    }
    const tcp::endpoint endpoint = results.begin()->endpoint();
    const auto fail = [&](const char* what) {
      throw std::runtime_error(
          fmt::format("cannot listen on {}: {}: {}", describe(endpoint), what, ec.message()));
    };
    acceptor_.open(endpoint.protocol(), ec);
    if (ec) fail("open");
    acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) fail("SO_REUSEADDR");
    acceptor_.bind(endpoint, ec);
    if (ec) fail("bind");
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) fail("listen");
    const tcp::endpoint bound = acceptor_.local_endpoint(ec);
    if (ec) fail("getsockname");
    port_ = bound.port();
    log()->info("listening on ws://{} ({} symbol(s), seed {}, {} trades/s, max {} trades{})",
                describe(bound), symbols_.size(), config_.seed, config_.rate, config_.max_messages,
                faults_enabled_ ? fmt::format(", fault switches on for {}",
                                              config_.fault_connections == 0
                                                  ? std::string("every connection")
                                                  : fmt::format("the first {} ws connection(s)",
                                                                config_.fault_connections))
                                : std::string());
    if (!config_.port_file.empty()) {
      write_file_atomically(config_.port_file, fmt::format("{}\n", port_));
    }
    accepting_ = true;
    generating_ = true;
    spawn(accept_loop(), nullptr, "accept loop");
    spawn(generate_loop(), nullptr, "generator");
  }

  void stop_generating() {
    if (!generating_) return;
    generating_ = false;
    generator_timer_.cancel();
    log()->info("generation stopped after {} trade(s)", total_);
  }

  asio::awaitable<void> shutdown() {
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    stopping_ = true;
    stop_generating();
    stop_accepting();
    rest_->stop();
    if (!shutdown_started_) {
      shutdown_started_ = true;
      if (!connections_.empty()) {
        log()->info("closing {} connection(s)", connections_.size());
      }
      for (const auto& c : connections_) {
        if (c->state == ConnState::open) {
          c->state = ConnState::closing;
          if (c->writer_waiting) c->wake.cancel();
        } else if (c->state != ConnState::closing) {  // handshake or stalled: no close frame
          end(*c, "server stopping");
        }
      }
    }
    const auto deadline = Clock::now() + config_.close_timeout;
    while (!connections_.empty() && Clock::now() < deadline) {
      co_await connections_changed_.wait_until(deadline);
    }
    if (!connections_.empty()) {
      log()->warn("{} connection(s) did not finish the close handshake within {} ms: closing them",
                  connections_.size(), config_.close_timeout.count());
      const auto left = connections_;  // end() does not erase, but be safe against it
      for (const auto& c : left) end(*c, "server stopping: close handshake timed out");
    }
    while (!connections_.empty())
      co_await connections_changed_.wait_until(Clock::time_point::max());
    co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  }

  asio::awaitable<void> close() {
    if (closed_) co_return;
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await shutdown();
    while (tasks_ > 0) co_await tasks_changed_.wait_until(Clock::time_point::max());
    closed_ = true;
    log()->info("closed: {} trade(s) generated, {} sent, {} connection(s) served", total_,
                trades_sent_, accepted_);
    co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    if (!final_summary_written_) write_summary();
  }

  /// Without close(): stop everything at once; the coroutines finish by themselves.
  void abort() {
    stopping_ = true;
    stop_generating();
    stop_accepting();
    rest_->stop();
    for (const auto& c : connections_) end(*c, "simulator destroyed");
  }

  Summary summary() const {
    Summary symbols;
    for (const auto& s : symbols_) {
      Summary one;
      one.add("count", s.count)
          .add("first_trade_id", s.first_id)
          .add("last_trade_id", s.last_id)
          .add("digest", std::string_view(s.digest.hex()));
      symbols.add(s.name, one);
    }
    Summary out;
    out.add("total", total_)
        .add("symbols", symbols)
        .add("connections", accepted_)
        .add("malformed_sent", malformed_sent_)
        .add("dropped_for_stalled", dropped_for_stalled_)
        .add("slow_clients_closed", slow_clients_closed_)
        .add("trades_sent", trades_sent_)
        .add("stalled_connections", stalled_connections_)
        .add("dropped_connections", dropped_connections_)
        .add("oversized_sent", oversized_sent_)
        .add("outliers_sent", outliers_sent_)
        .add("bad_client_messages", bad_client_messages_)
        .add("generation_skipped", pacer_.skipped())
        .add("max_messages_reached", config_.max_messages > 0 && total_ >= config_.max_messages);
    rest_->add_summary(out);
    limit_counts_.add_to(out);
    return out;
  }

  void write_summary() {
    if (stopping_) final_summary_written_ = true;
    if (config_.summary_file.empty()) return;
    summary().write_file(config_.summary_file);
    log()->info("summary written to {}", config_.summary_file);
  }

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

  // ---- tasks ----

  void spawn(asio::awaitable<void> task, std::shared_ptr<Connection> c, const char* name) {
    ++tasks_;
    if (c) ++c->tasks;
    asio::co_spawn(executor_, std::move(task),
                   [self = shared_from_this(), c = std::move(c), name](std::exception_ptr error) {
                     self->task_done(error, c, name);
                   });
  }

  void task_done(const std::exception_ptr& error, const std::shared_ptr<Connection>& c,
                 const char* name) {
    if (error) {
      ++internal_errors_;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        log()->error("{}{} failed: {}", c ? fmt::format("connection #{}: ", c->id) : "", name,
                     e.what());
      }
      if (c) end(*c, fmt::format("internal error in {}", name));
    }
    if (c && --c->tasks == 0) finalize(c);
    if (--tasks_ == 0) tasks_changed_.notify();
  }

  void stop_accepting() {
    if (!accepting_) return;
    accepting_ = false;
    boost::system::error_code ignored;  // closing an open acceptor cannot fail in a way we
    acceptor_.close(ignored);           // could act on; the accept loop ends either way
  }

  // ---- accepting ----

  asio::awaitable<void> accept_loop() {
    asio::steady_timer backoff(executor_);
    for (;;) {
      tcp::socket socket(executor_);
      boost::system::error_code ec;
      co_await acceptor_.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
      if (!accepting_) break;
      if (ec) {
        // EMFILE and friends: log, wait a little, try again (the listener stays up).
        ++accept_errors_;
        log()->warn("accept failed: {} ({} so far); retrying in 100 ms", ec.message(),
                    accept_errors_);
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (!accepting_) break;
        continue;
      }
      on_accept(std::move(socket));
    }
  }

  void on_accept(tcp::socket socket) {
    const std::uint64_t id = ++accepted_;
    boost::system::error_code ec;
    const auto remote = socket.remote_endpoint(ec);
    const std::string peer = ec ? std::string("unknown peer") : describe(remote);
    socket.set_option(tcp::no_delay(true), ec);
    if (ec) log()->debug("connection #{}: TCP_NODELAY: {}", id, ec.message());
    auto c = std::make_shared<Connection>(std::move(socket), id, peer, false, symbols_.size(),
                                          config_.limits);
    connections_.push_back(c);
    spawn(session(c), c, "session");
  }

  // ---- one connection ----

  asio::awaitable<void> session(std::shared_ptr<Connection> c) {
    auto& ws = c->ws;
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
      response.set(beast::http::field::server, "ts-feed-sim");
    }));
    ws.read_message_max(kMaxClientMessage);
    ws.auto_fragment(false);    // the oversized fault must be one frame
    beast::flat_buffer buffer;  // a plain GET (no Upgrade) is REST (rest.hpp)
    std::string error;
    auto request = co_await rest_->read_first(ws.next_layer(), buffer, c, error);
    if (c->state != ConnState::handshake) co_return;  // ended meanwhile (server stopping)
    if (!request) {
      end(*c, std::move(error));
      co_return;
    }
    if (!websocket::is_upgrade(*request)) {
      c->state = ConnState::rest;
      end(*c, co_await rest_->serve(ws.next_layer(), buffer, std::move(*request), c));
      co_return;
    }
    const std::uint64_t n = ++ws_connections_;  // fault switches count WebSocket connections
    c->faulty =
        faults_enabled_ && (config_.fault_connections == 0 || n <= config_.fault_connections);
    boost::system::error_code ec;
    co_await ws.async_accept(*request, asio::redirect_error(asio::use_awaitable, ec));
    if (c->state != ConnState::handshake) co_return;  // ended meanwhile (server stopping)
    if (ec) {
      end(*c, "WebSocket handshake failed: " + ec.message());
      co_return;
    }
    ws.text(true);
    c->state = ConnState::open;
    log()->info("connection #{} from {} open{}", c->id, c->peer,
                c->faulty ? " (fault switches apply)" : "");
    spawn(writer(c), c, "writer");
    watch_limits(c);
    co_await read_loop(c);
  }

  asio::awaitable<void> read_loop(std::shared_ptr<Connection> c) {
    beast::flat_buffer buffer;
    for (;;) {
      boost::system::error_code ec;
      co_await c->ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (c->state == ConnState::stalled) {
        co_await discard_while_stalled(c);
        co_return;
      }
      if (c->state == ConnState::ended) co_return;
      if (ec) {
        if (c->state == ConnState::closing) {
          end(*c, "server stopping: closed with a close frame");
        } else if (ec == websocket::error::closed) {
          const auto& why = c->ws.reason();
          end(*c, fmt::format("client closed the connection (code {}{}{})",
                              static_cast<unsigned>(why.code), why.reason.empty() ? "" : " ",
                              std::string_view(why.reason.data(), why.reason.size())));
        } else {
          end(*c, "read failed: " + ec.message());
        }
        co_return;
      }
      const auto data = buffer.cdata();
      const std::string_view text(static_cast<const char*>(data.data()), data.size());
      if (!admit_incoming(*c)) co_return;
      if (c->ws.got_text()) {
        handle_client_message(c, text);
      } else {
        bad_client_message(*c, "binary frame", text);
        reply_error(*c, 3, "binary frames are not supported", json::value(nullptr));
      }
      buffer.consume(buffer.size());
    }
  }

  /// A stalled connection neither reads WebSocket frames (pings go unanswered) nor writes;
  /// raw bytes are read and thrown away only to notice when the client goes away.
  asio::awaitable<void> discard_while_stalled(std::shared_ptr<Connection> c) {
    std::array<char, 4096> sink{};
    boost::system::error_code ec;
    while (c->state == ConnState::stalled) {
      co_await c->ws.next_layer().async_read_some(asio::buffer(sink),
                                                  asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
    }
    end(*c, "stalled connection: the client went away (" + ec.message() + ")");
  }

  asio::awaitable<void> writer(std::shared_ptr<Connection> c) {
    for (;;) {
      if (c->state == ConnState::ended || c->state == ConnState::stalled) co_return;
      if (c->state == ConnState::closing) {
        co_await close_gracefully(c);
        co_return;
      }
      if (c->ping_due) {
        if (!co_await send_ping(c)) co_return;
        continue;
      }
      if (c->queue.empty()) {
        if (c->corked) set_cork(*c, false);
        c->writer_waiting = true;
        c->wake.expires_at(Clock::time_point::max());
        boost::system::error_code ec;  // aborted = woken
        co_await c->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        c->writer_waiting = false;
        continue;
      }
      if (!c->corked && c->queue.size() > 1) set_cork(*c, true);
      Outgoing message = std::move(c->queue.front());
      c->queue.pop_front();
      if (message.kind == MsgKind::control) {
        co_await write_text(c, message.data, message.size);
        continue;
      }
      if (c->faulty) {
        if (c->trades_sent == 0) {
          co_await apply_faults(c);
          if (c->state != ConnState::open) {
            if (c->state == ConnState::stalled) ++dropped_for_stalled_;
            continue;
          }
        }
        if (config_.fault_malformed_every > 0 &&
            (c->data_sent + 1) % config_.fault_malformed_every == 0) {
          const auto garbage = kGarbage[c->garbage_sent % kGarbage.size()];
          const bool ok = co_await write_text(c, garbage.data(), garbage.size());
          if (!ok) co_return;
          ++c->garbage_sent;
          ++c->data_sent;
          ++malformed_sent_;
        }
      }
      const bool ok = co_await write_text(c, message.data, message.size);
      if (!ok) co_return;
      ++c->trades_sent;
      ++c->data_sent;
      ++trades_sent_;
      if (c->faulty) co_await apply_faults(c);
    }
  }

  void set_cork(Connection& c, bool on) {
    c.corked = on;
    boost::system::error_code ec;
    c.ws.next_layer().set_option(TcpCork(on), ec);
    if (ec) log()->debug("connection #{}: TCP_CORK: {}", c.id, ec.message());
  }

  /// Writes one text frame; false (and the connection ended) on failure.
  asio::awaitable<bool> write_text(std::shared_ptr<Connection> c, const char* data,
                                   std::size_t size) {
    boost::system::error_code ec;
    co_await c->ws.async_write(asio::buffer(data, size),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      end(*c, "write failed: " + ec.message());
      co_return false;
    }
    co_return c->state == ConnState::open || c->state == ConnState::closing;
  }

  /// The fault switches, checked before the first trade and after each trade sent.
  asio::awaitable<void> apply_faults(std::shared_ptr<Connection> c) {
    const auto sent = static_cast<std::int64_t>(c->trades_sent);
    if (config_.fault_oversized_after >= 0 && !c->oversized_sent &&
        sent == config_.fault_oversized_after) {
      c->oversized_sent = true;
      log()->info("connection #{}: fault: sending a {} byte frame after {} trade(s)", c->id,
                  oversized_->size(), sent);
      const bool ok = co_await write_text(c, oversized_->data(), oversized_->size());
      if (!ok) co_return;
      ++oversized_sent_;
    }
    if (config_.fault_outlier_after >= 0 && !c->outlier_sent &&
        sent == config_.fault_outlier_after) {
      c->outlier_sent = true;
      const auto subscribed = std::find(c->subscribed.begin(), c->subscribed.end(), true);
      if (subscribed != c->subscribed.end()) {
        const auto& symbol = symbols_[static_cast<std::size_t>(subscribed - c->subscribed.begin())];
        Trade outlier;
        outlier.id = config_.fault_outlier_id;
        outlier.price_cents = start_price_cents(symbol.name);
        outlier.qty_units = 1;
        std::string json;
        const std::int64_t now_ms = unix_millis();
        append_trade_json(json, symbol.name, outlier, now_ms, now_ms);
        log()->info("connection #{}: fault: a {} trade with id {} after {} trade(s)", c->id,
                    symbol.name, outlier.id, sent);
        const bool ok = co_await write_text(c, json.data(), json.size());
        if (!ok) co_return;
        ++outliers_sent_;
      }
    }
    if (config_.fault_stall_after >= 0 && sent == config_.fault_stall_after) {
      if (c->corked) set_cork(*c, false);  // what was written reaches the client
      stall(*c);
      co_return;
    }
    if (config_.fault_drop_after >= 0 && sent == config_.fault_drop_after) {
      ++dropped_connections_;
      if (c->corked) set_cork(*c, false);  // the reset discards what is still unsent
      boost::system::error_code ec;
      c->ws.next_layer().set_option(asio::socket_base::linger(true, 0), ec);
      if (ec) log()->warn("connection #{}: SO_LINGER: {}", c->id, ec.message());
      end(*c, fmt::format("fault: TCP connection reset after {} trade(s)", sent));
    }
  }

  void stall(Connection& c) {
    c.state = ConnState::stalled;
    ++stalled_connections_;
    for (const auto& m : c.queue) {
      if (m.kind == MsgKind::trade) ++dropped_for_stalled_;
    }
    c.queue.clear();
    log()->info("connection #{}: fault: stalled after {} trade(s): no more reads or writes", c.id,
                c.trades_sent);
    // Beast's idle timer would send a keep-alive ping and later time the connection out.
    c.ws.set_option(websocket::stream_base::timeout{websocket::stream_base::none(),
                                                    websocket::stream_base::none(), false});
    // The pending WebSocket read ends (operation_aborted); the reader then only watches for
    // the client going away.
    boost::system::error_code ec;
    c.ws.next_layer().cancel(ec);
    if (ec) log()->warn("connection #{}: cancel: {}", c.id, ec.message());
  }

  asio::awaitable<void> close_gracefully(std::shared_ptr<Connection> c) {
    c->queue.clear();
    if (c->corked) set_cork(*c, false);
    boost::system::error_code ec;
    co_await c->ws.async_close(
        websocket::close_reason(websocket::close_code::going_away, c->close_text),
        asio::redirect_error(asio::use_awaitable, ec));
    end(*c, ec ? c->close_text + ": close handshake failed: " + ec.message()
               : c->close_text + ": closed with a close frame");
  }

  // ---- venue limits (the rest in limits_impl.inc; coroutines here: GCC's subobject-linkage
  // check refuses coroutine frames of this file's anonymous types defined in another file) ----

  /// Server pings every --ping-interval; no pong within --pong-timeout, or the connection's
  /// age at --max-connection-lifetime: it is closed.
  asio::awaitable<void> keep_limits(std::shared_ptr<Connection> c) {
    while (c->state == ConnState::open) {
      const auto now = Clock::now();
      switch (c->clock.due(now)) {
        case ConnectionClock::Due::lifetime:
          ++limit_counts_.lifetime_closes;
          log()->info("connection #{}: --max-connection-lifetime ({} ms) reached: closing it",
                      c->id, config_.limits.max_connection_lifetime.count());
          c->close_text = "connection lifetime reached";
          c->state = ConnState::closing;  // the writer sends the close frame (going away)
          if (c->writer_waiting) c->wake.cancel();
          co_return;
        case ConnectionClock::Due::pong_timeout:
          ++limit_counts_.pong_timeouts;
          log()->warn("connection #{}: no pong within --pong-timeout ({} ms): closing it", c->id,
                      config_.limits.pong_timeout.count());
          end(*c, "no pong within --pong-timeout");
          co_return;
        case ConnectionClock::Due::ping:
          c->clock.pinged(now);
          c->ping_due = true;
          if (c->writer_waiting) c->wake.cancel();
          continue;
        case ConnectionClock::Due::nothing:
          break;
      }
      c->keeper.expires_at(c->clock.next(now));
      boost::system::error_code ec;  // aborted: the connection ended
      co_await c->keeper.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  /// The writer's ping (writes are the writer's alone); false once the connection ended.
  asio::awaitable<bool> send_ping(std::shared_ptr<Connection> c) {
    c->ping_due = false;
    if (c->corked) set_cork(*c, false);
    boost::system::error_code ec;
    co_await c->ws.async_ping({}, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      end(*c, "ping failed: " + ec.message());
      co_return false;
    }
    ++limit_counts_.pings_sent;
    co_return c->state == ConnState::open || c->state == ConnState::closing;
  }

  /// Ends a connection at once: closes its socket (pending operations complete with errors),
  /// stops routing trades to it. Idempotent; the first reason is kept.
  void end(Connection& c, std::string reason) {
    if (c.state == ConnState::ended) return;
    c.state = ConnState::ended;
    c.reason = std::move(reason);
    for (std::size_t i = 0; i < symbols_.size(); ++i) {
      if (c.subscribed[i]) {
        c.subscribed[i] = false;
        --symbols_[i].active;
      }
    }
    c.queue.clear();
    c.keeper.cancel();
    boost::system::error_code ignored;  // already closed or never connected: nothing to do
    c.ws.next_layer().close(ignored);
    if (c.writer_waiting) c.wake.cancel();
  }

  /// The connection's last coroutine finished.
  void finalize(const std::shared_ptr<Connection>& c) {
    end(*c, "session ended");
    std::erase(connections_, c);
    for (auto& s : symbols_) std::erase(s.subscribers, c);
    log()->info("connection #{} ({}) closed: {}; {} trade(s) sent{}", c->id, c->peer, c->reason,
                c->trades_sent,
                c->garbage_sent > 0 ? fmt::format(", {} garbage message(s)", c->garbage_sent)
                                    : std::string());
    connections_changed_.notify();
  }

  // ---- control messages ----

  void handle_client_message(const std::shared_ptr<Connection>& c, std::string_view text) {
    log()->debug("connection #{}: received {}", c->id, text);
    boost::system::error_code ec;
    json::value doc = json::parse(text, ec);
    if (ec || !doc.is_object()) {
      bad_client_message(*c, ec ? "invalid JSON: " + ec.message() : "not a JSON object", text);
      reply_error(*c, 3, "Invalid JSON", json::value(nullptr));
      return;
    }
    const auto& request = doc.get_object();
    const json::value* id_field = request.if_contains("id");
    const json::value id = id_field != nullptr ? *id_field : json::value(nullptr);
    const json::value* method_field = request.if_contains("method");
    if (method_field == nullptr || !method_field->is_string()) {
      bad_client_message(*c, "no \"method\" string", text);
      reply_error(*c, 2, "Invalid request: \"method\" must be a string", id);
      return;
    }
    const std::string_view method = method_field->get_string();
    if (method == "SUBSCRIBE" || method == "UNSUBSCRIBE") {
      std::vector<std::size_t> indices;
      const std::string problem = resolve_streams(request.if_contains("params"), indices);
      if (!problem.empty()) {
        bad_client_message(*c, problem, text);
        reply_error(*c, 2, problem, id);
        return;
      }
      if (method == "SUBSCRIBE" && over_stream_limit(*c, indices, id)) return;
      reply(*c, "{\"result\":null,\"id\":" + json::serialize(id) + "}");
      if (method == "SUBSCRIBE") {
        subscribe(c, indices);
      } else {
        unsubscribe(c, indices);
      }
      return;
    }
    if (method == "LIST_SUBSCRIPTIONS") {
      std::string result = "{\"result\":[";
      bool first = true;
      for (std::size_t i = 0; i < symbols_.size(); ++i) {
        if (!c->subscribed[i]) continue;
        if (!first) result += ',';
        first = false;
        result += json_quote(symbols_[i].stream);
      }
      result += "],\"id\":" + json::serialize(id) + "}";
      reply(*c, std::move(result));
      return;
    }
    bad_client_message(*c, fmt::format("unknown method {}", method), text);
    reply_error(*c, 2, fmt::format("Unknown method {}", method), id);
  }

  /// Fills `indices` from `params` (an array of `<symbol>@trade`); returns a problem or "".
  std::string resolve_streams(const json::value* params, std::vector<std::size_t>& indices) const {
    if (params == nullptr || !params->is_array())
      return "Invalid request: \"params\" must be an array";
    for (const auto& item : params->get_array()) {
      if (!item.is_string()) return "Invalid request: stream names must be strings";
      const std::string_view stream = item.get_string();
      const auto at = stream.find('@');
      if (at == std::string_view::npos || stream.substr(at + 1) != "trade") {
        return fmt::format("Invalid request: unsupported stream {} (only <symbol>@trade)", stream);
      }
      std::string symbol(stream.substr(0, at));
      for (char& ch : symbol) {
        if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
      }
      const auto it = std::find_if(symbols_.begin(), symbols_.end(),
                                   [&](const SymbolState& s) { return s.name == symbol; });
      if (it == symbols_.end()) {
        return fmt::format("Invalid request: unknown symbol {}", stream.substr(0, at));
      }
      indices.push_back(static_cast<std::size_t>(it - symbols_.begin()));
    }
    return {};
  }

  void subscribe(const std::shared_ptr<Connection>& c, const std::vector<std::size_t>& indices) {
    bool woke = false;
    for (const auto i : indices) {
      if (c->subscribed[i]) continue;
      c->subscribed[i] = true;
      auto& s = symbols_[i];
      if (std::find(s.subscribers.begin(), s.subscribers.end(), c) == s.subscribers.end()) {
        s.subscribers.push_back(c);
      }
      s.subscribed_once = true;
      if (s.active++ == 0) woke = true;
      log()->info("connection #{}: subscribed to {}", c->id, s.stream);
    }
    if (woke && generator_idle_) generator_timer_.cancel();
  }

  void unsubscribe(const std::shared_ptr<Connection>& c, const std::vector<std::size_t>& indices) {
    for (const auto i : indices) {
      if (!c->subscribed[i]) continue;
      c->subscribed[i] = false;
      auto& s = symbols_[i];
      --s.active;
      std::erase(s.subscribers, c);
      log()->info("connection #{}: unsubscribed from {}", c->id, s.stream);
    }
  }

  void bad_client_message(Connection& c, std::string_view problem, std::string_view text) {
    ++bad_client_messages_;
    ++c.bad_messages;
    const auto shown = text.substr(0, 200);
    if (c.bad_messages <= kBadMessagesLogged) {
      log()->warn("connection #{}: bad client message ({}): {}{}", c.id, problem, shown,
                  c.bad_messages == kBadMessagesLogged ? " (further ones at debug level)" : "");
    } else {
      log()->debug("connection #{}: bad client message ({}): {}", c.id, problem, shown);
    }
  }

  void reply_error(Connection& c, int code, std::string_view message, const json::value& id) {
    reply(c, fmt::format(R"({{"error":{{"code":{},"msg":{}}},"id":{}}})", code, json_quote(message),
                         json::serialize(id)));
  }

  void reply(Connection& c, std::string text) {
    auto owner = std::make_shared<const std::string>(std::move(text));
    const char* data = owner->data();
    const std::size_t size = owner->size();
    push(c, Outgoing{std::move(owner), data, size, MsgKind::control});
  }

  void push(Connection& c, Outgoing&& message) {
    switch (c.state) {
      case ConnState::open:
        break;
      case ConnState::stalled:
        if (message.kind == MsgKind::trade) ++dropped_for_stalled_;
        return;
      case ConnState::handshake:
      case ConnState::rest:
      case ConnState::closing:
      case ConnState::ended:
        return;
    }
    if (c.queue.size() >= config_.queue_limit) {
      ++slow_clients_closed_;
      log()->warn("connection #{}: slow client: {} messages waiting to be written; closing it",
                  c.id, c.queue.size());
      end(c, fmt::format("slow client: write queue over {} messages", config_.queue_limit));
      return;
    }
    c.queue.push_back(std::move(message));
    if (c.writer_waiting) c.wake.cancel();
  }

  // ---- generation ----

  bool any_active() const noexcept {
    return std::any_of(symbols_.begin(), symbols_.end(),
                       [this](const SymbolState& s) { return trading(s); });
  }
  bool trading(const SymbolState& s) const noexcept {
    return s.active > 0 || (config_.keep_trading && s.subscribed_once);
  }

  asio::awaitable<void> generate_loop() {
    bool was_active = false;
    while (generating_) {
      const auto now = Clock::now();
      const bool active = any_active();
      if (active && !was_active) pacer_.restart(now);
      was_active = active;
      if (active) generate(pacer_.take_due(now));
      if (!generating_) break;
      if (active) {
        generator_timer_.expires_at(std::max(pacer_.next_due(), now + kTick));
      } else {
        generator_timer_.expires_at(Clock::time_point::max());  // subscribe() wakes it
      }
      generator_idle_ = !active;
      boost::system::error_code ec;  // aborted = woken
      co_await generator_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      generator_idle_ = false;
    }
  }

  std::size_t pick_symbol() noexcept {
    for (std::size_t k = 0; k < symbols_.size(); ++k) {
      const std::size_t i = (next_symbol_ + k) % symbols_.size();
      if (trading(symbols_[i])) {
        next_symbol_ = (i + 1) % symbols_.size();
        return i;
      }
    }
    return symbols_.size();
  }

  void generate(std::uint64_t due) {
    if (config_.max_messages > 0) due = std::min(due, config_.max_messages - total_);
    if (due == 0) return;
    auto batch = std::make_shared<std::string>();
    batch->reserve(static_cast<std::size_t>(due) * 160);
    slices_.clear();
    const std::int64_t now_ms = unix_millis();
    for (std::uint64_t n = 0; n < due; ++n) {
      const std::size_t i = pick_symbol();
      if (i == symbols_.size()) break;
      auto& s = symbols_[i];
      const Trade trade = s.generator.next();
      if (s.count++ == 0) s.first_id = trade.id;
      s.last_id = trade.id;
      ++total_;
      const std::size_t begin = batch->size();
      append_trade_json(*batch, s.name, trade, now_ms, now_ms);
      s.digest.add(trade, now_ms, now_ms);
      rest_->record(i, trade, now_ms);
      slices_.push_back(Slice{i, begin, batch->size() - begin});
    }
    const std::shared_ptr<const std::string> shared = std::move(batch);
    for (const auto& slice : slices_) {
      // Subscribers are only added or removed by control messages and finalize, never by
      // push() (which may end a connection: it then ignores further trades).
      for (const auto& subscriber : symbols_[slice.symbol].subscribers) {
        push(*subscriber,
             Outgoing{shared, shared->data() + slice.begin, slice.size, MsgKind::trade});
      }
    }
    if (config_.max_messages > 0 && total_ >= config_.max_messages) {
      log()->info("--max-messages reached: {} trade(s) generated", total_);
      stop_generating();
      try {
        write_summary();
      } catch (const std::exception& e) {
        ++summary_errors_;
        log()->error("cannot write the summary at --max-messages: {}", e.what());
      }
    }
  }

  struct Slice {
    std::size_t symbol;
    std::size_t begin;
    std::size_t size;
  };

  asio::any_io_executor executor_;
  FeedSimConfig config_;
  tcp::acceptor acceptor_;
  asio::steady_timer generator_timer_;
  Pacer pacer_;
  Event connections_changed_;
  Event tasks_changed_;
  std::vector<SymbolState> symbols_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::vector<Slice> slices_;
  std::shared_ptr<const std::string> oversized_;
  std::unique_ptr<RestVenue> rest_;
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

#include "feed_sim/limits_impl.inc"
};

// ---- FeedSimulator -------------------------------------------------------------------------

FeedSimulator::FeedSimulator(asio::any_io_executor executor, FeedSimConfig config)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(config))) {}

FeedSimulator::~FeedSimulator() {
  if (impl_ && impl_->needs_close()) {
    log()->error("FeedSimulator destroyed without close(): dropping its connections");
    impl_->abort();
  }
}

asio::awaitable<void> FeedSimulator::start() {
  return impl_->start();
}
asio::awaitable<void> FeedSimulator::close() {
  return impl_->close();
}
void FeedSimulator::stop_generating() {
  impl_->stop_generating();
}
asio::awaitable<void> FeedSimulator::shutdown() {
  return impl_->shutdown();
}
Summary FeedSimulator::summary() const {
  return impl_->summary();
}
void FeedSimulator::write_summary() {
  impl_->write_summary();
}
std::uint16_t FeedSimulator::port() const noexcept {
  return impl_->port();
}

}  // namespace trading_shared::services::feed_sim

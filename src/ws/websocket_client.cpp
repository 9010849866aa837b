#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/websocket.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <stdexcept>
#include <utility>

namespace trading_shared::ws {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using trading_shared::errc;
using trading_shared::Error;
using trading_shared::RequestState;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("ws");
  return logger;
}

/// Awaits `timer` without the caller's cancellation slot (for waits that must not be cut
/// short: close()). Returns the wait's error code.
asio::awaitable<boost::system::error_code> shielded_wait(asio::steady_timer& timer) {
  boost::system::error_code ec;
  co_await timer.async_wait(asio::bind_cancellation_slot(
      asio::cancellation_slot(), asio::redirect_error(asio::use_awaitable, ec)));
  co_return ec;
}

}  // namespace

// ---- the client's state ----------------------------------------------------------------------

namespace {

using Stream = websocket::stream<beast::tcp_stream>;

struct Connection {
  explicit Connection(const asio::any_io_executor& executor) : ws(executor), resolver(executor) {}
  Stream ws;
  tcp::resolver resolver;
  std::uint64_t number = 0;
  Clock::time_point opened{};
  bool ready = false;          // its on_connect messages are written: sends may go
  bool slow_consumer = false;  // ended by the overflow policy
  bool send_failed = false;    // ended because an on_connect message could not be written
  bool write_overrun = false;  // ended because a write did not complete within idle_timeout
};

enum class State : std::uint8_t { idle, starting, running, closing, closed };

/// A wake-up for one waiting coroutine (single-threaded executor). It registers itself in a
/// list (or a slot) and removes itself when destroyed, so that no list ever holds a pointer
/// to a frame that is gone (also when frames are destroyed without resuming, at shutdown).
struct Waiter {
  Waiter(const asio::any_io_executor& executor, std::deque<Waiter*>& list, bool front = false)
      : timer(executor, asio::steady_timer::time_point::max()), list_(&list) {
    if (front) {
      list.push_front(this);
    } else {
      list.push_back(this);
    }
  }
  Waiter(const asio::any_io_executor& executor, Waiter*& slot)
      : timer(executor, asio::steady_timer::time_point::max()), slot_(&slot) {
    slot = this;
  }
  ~Waiter() {
    if (list_ != nullptr) std::erase(*list_, this);
    if (slot_ != nullptr && *slot_ == this) *slot_ = nullptr;
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  asio::steady_timer timer;
  bool woken = false;
  bool granted = false;  // the write turn was handed to it
  void wake() {
    woken = true;
    timer.cancel();
  }

 private:
  std::deque<Waiter*>* list_ = nullptr;
  Waiter** slot_ = nullptr;
};

/// Wakes and forgets every waiter of a list.
void wake_all(std::deque<Waiter*>& list) {
  auto waiters = std::move(list);
  list.clear();
  for (auto* w : waiters) w->wake();
}

}  // namespace

struct WebSocketClient::Core : std::enable_shared_from_this<WebSocketClient::Core> {
  Core(asio::any_io_executor executor, WebSocketConfig cfg)
      : ex(std::move(executor)), config(std::move(cfg)), url(parse_websocket_url(config.url)) {
    ring.resize(config.queue_capacity);
    on_connect = config.on_connect;
  }

  asio::any_io_executor ex;
  WebSocketConfig config;
  WebSocketUrl url;
  std::vector<std::string> on_connect;
  State state = State::idle;
  std::shared_ptr<Connection> connection;  // up and handshaken
  std::shared_ptr<Connection> connecting;  // being connected (close() cuts it)
  std::uint64_t next_number = 1;
  core::DefaultRandom random;
  WebSocketStats stats;
  std::string last_failure = "no attempt yet";

  // hand-off queue
  std::vector<Message> ring;
  std::size_t head = 0;
  std::size_t count = 0;
  std::size_t queued_bytes = 0;  // payload of the `count` queued messages
  std::size_t held_bytes = 0;    // heap capacity of every slot's string, queued or spare
  Waiter* consumer = nullptr;
  bool consumer_active = false;
  std::uint64_t dropped_logged = 0;

  // sends: `writing` is the write turn; waiters get it in FIFO order
  bool writing = false;
  std::deque<Waiter*> send_waiters;

  // supervisor
  bool supervisor_running = false;
  bool first_ready = false;
  asio::steady_timer* backoff_timer = nullptr;
  std::deque<Waiter*> start_waiters;
  std::deque<Waiter*> stop_waiters;  // woken when the supervisor has ended

  bool open_for_work() const { return state == State::starting || state == State::running; }
  bool ended() const {
    return state == State::closed || (state == State::closing && !supervisor_running);
  }
  std::string what(const char* text) const { return "WebSocket " + config.url + ": " + text; }

  // ---- queue ---------------------------------------------------------------------------------

  /// Heap bytes a string holds (none while its text fits in the string object itself).
  static std::size_t heap_of(const std::string& s) noexcept {
    constexpr std::size_t inline_capacity = std::string().capacity();
    return s.capacity() > inline_capacity ? s.capacity() : 0;
  }

  /// A slot that no longer holds a queued message keeps its string's capacity for reuse (no
  /// allocation per message at steady state) while the queue's strings hold at most
  /// queue_max_bytes; beyond that it is freed. So spare capacity stays at most queue_max_bytes,
  /// and everything held within twice that (queued payload <= queue_max_bytes, plus spare and
  /// carried-over capacity <= queue_max_bytes).
  void spare(Message& slot) noexcept {
    if (held_bytes <= config.queue_max_bytes) return;
    held_bytes -= heap_of(slot.data);
    std::string().swap(slot.data);
  }

  /// Takes the oldest queued message into `out` (swapping strings: capacity circulates).
  void take(Message& out) noexcept {
    Message& slot = ring[head];
    queued_bytes -= slot.data.size();
    held_bytes -= heap_of(slot.data);
    std::swap(out, slot);
    held_bytes += heap_of(slot.data);
    spare(slot);
    head = (head + 1) % ring.size();
    --count;
  }

  /// Hands a received frame to the queue; false when the overflow policy says disconnect.
  /// Full means `queue_capacity` messages or `queue_max_bytes` bytes (a message always fits
  /// an empty queue: validate() keeps queue_max_bytes >= max_message_size).
  bool deliver(const beast::flat_buffer& buffer, bool binary, std::uint64_t number) {
    const std::size_t capacity = ring.size();
    const auto data = buffer.cdata();
    const std::size_t size = data.size();
    while (count == capacity || queued_bytes + size > config.queue_max_bytes) {
      ++stats.dropped;
      if (stats.dropped == 1 || stats.dropped - dropped_logged >= 10000) {
        dropped_logged = stats.dropped;
        log()->warn(
            "{}: consumer too slow: hand-off queue full ({} of {} messages, {} of {} bytes), "
            "policy {}: {} message(s) dropped so far",
            config.url, count, capacity, queued_bytes, config.queue_max_bytes,
            to_string(config.overflow), stats.dropped);
      }
      switch (config.overflow) {
        case OverflowPolicy::drop_newest:
          return true;
        case OverflowPolicy::disconnect:
          return false;
        case OverflowPolicy::drop_oldest: {
          Message& oldest = ring[head];
          queued_bytes -= oldest.data.size();
          spare(oldest);
          head = (head + 1) % capacity;
          --count;
          break;
        }
      }
    }
    Message& slot = ring[(head + count) % capacity];
    held_bytes -= heap_of(slot.data);
    if (size > slot.data.capacity()) {
      // Free first and allocate exactly: assigning would grow it geometrically (up to 2x).
      std::string().swap(slot.data);
      slot.data.reserve(size);
    }
    slot.data.assign(static_cast<const char*>(data.data()), size);
    held_bytes += heap_of(slot.data);
    slot.binary = binary;
    slot.connection = number;
    slot.received_at = Clock::now();
    ++count;
    queued_bytes += size;
    stats.max_queued = std::max(stats.max_queued, count);
    stats.max_queued_bytes = std::max(stats.max_queued_bytes, queued_bytes);
    if (consumer != nullptr) consumer->wake();
    if (config.on_readable) config.on_readable();
    return true;
  }

  // ---- connecting ----------------------------------------------------------------------------

  asio::awaitable<void> connect(std::shared_ptr<Connection> c) {
    // Boost 1.81's resolver runs in a background thread; cancelling it completes our wait at
    // once (the lookup itself may go on). The connect deadline covers it.
    asio::steady_timer deadline(ex);
    deadline.expires_after(config.connect_timeout);
    deadline.async_wait([c](boost::system::error_code ec) {
      if (!ec) c->resolver.cancel();
    });
    const auto endpoints =
        co_await c->resolver.async_resolve(url.host, url.port, asio::use_awaitable);
    deadline.cancel();
    if (!open_for_work())
      throw Error(make_error_code(errc::client_closed), what("closed while connecting"));
    auto& socket = beast::get_lowest_layer(c->ws);
    socket.expires_after(config.connect_timeout);
    co_await socket.async_connect(endpoints, asio::use_awaitable);
    socket.socket().set_option(tcp::no_delay(true));
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = config.connect_timeout;
    timeouts.idle_timeout = config.idle_timeout;
    timeouts.keep_alive_pings = true;
    socket.expires_never();  // the websocket timeouts replace the tcp_stream's
    c->ws.set_option(timeouts);
    c->ws.read_message_max(config.max_message_size);
    c->ws.auto_fragment(false);
    c->ws.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
      request.set(beast::http::field::user_agent, "trading_shared-ws");
    }));
    const bool v6 = url.host.find(':') != std::string::npos;
    const std::string host_header = (v6 ? "[" + url.host + "]" : url.host) + ":" + url.port;
    co_await c->ws.async_handshake(host_header, url.target, asio::use_awaitable);
  }

  /// Writes one text frame on `c` as the holder of the write turn. Not cancellable (a write
  /// cut in the middle leaves half a frame on the wire); bounded instead: a write that has not
  /// completed within idle_timeout (a peer that stopped reading) closes the socket.
  asio::awaitable<boost::system::error_code> write_frame(std::shared_ptr<Connection> c,
                                                         std::string_view text) {
    asio::steady_timer bound(ex);
    bound.expires_after(config.idle_timeout);
    bound.async_wait([c](boost::system::error_code ec) {
      if (ec) return;
      c->write_overrun = true;
      beast::close_socket(beast::get_lowest_layer(c->ws));
    });
    boost::system::error_code ec;
    c->ws.text(true);
    co_await c->ws.async_write(
        asio::buffer(text.data(), text.size()),
        asio::bind_cancellation_slot(asio::cancellation_slot(),
                                     asio::redirect_error(asio::use_awaitable, ec)));
    bound.cancel();
    co_return ec;
  }

  // ---- the write turn --------------------------------------------------------------------------

  /// Takes the write turn (FIFO); on return the caller holds it and must `release_write()`
  /// (use `Turn`). Throws client_closed, queue_full, or cancelled (the caller's cancellation;
  /// a turn granted to a cancelled caller is passed on).
  asio::awaitable<void> acquire_write() {
    auto self = shared_from_this();
    if (!open_for_work()) throw Error(make_error_code(errc::client_closed), what("closed"));
    if (!writing && send_waiters.empty()) {
      writing = true;
      co_return;
    }
    if (send_waiters.size() >= config.max_pending_sends) {
      throw Error(make_error_code(errc::queue_full), what("too many sends waiting") + " (" +
                                                         std::to_string(send_waiters.size()) + ")");
    }
    Waiter waiter(ex, send_waiters);
    boost::system::error_code ec;
    co_await waiter.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    const auto cancelled = (co_await asio::this_coro::cancellation_state).cancelled();
    if (waiter.granted) {
      if (!open_for_work() || cancelled != asio::cancellation_type::none) {
        release_write();
        if (!open_for_work()) throw Error(make_error_code(errc::client_closed), what("closed"));
        throw Error(make_error_code(errc::cancelled), what("send cancelled"));
      }
      co_return;
    }
    if (waiter.woken) throw Error(make_error_code(errc::client_closed), what("closed"));
    throw Error(make_error_code(errc::cancelled), what("send cancelled"));
  }

  void release_write() {
    if (send_waiters.empty()) {
      writing = false;
      return;
    }
    Waiter* next = send_waiters.front();
    send_waiters.pop_front();
    next->granted = true;  // the turn passes on: `writing` stays true
    next->wake();
  }

  /// Holds the write turn until destroyed.
  struct Turn {
    Core* core;
    ~Turn() { core->release_write(); }
  };

  // ---- supervisor --------------------------------------------------------------------------

  /// Sends the on_connect messages on a new connection (taking the write turn like any send,
  /// so never during another write); then sends may use it, and start() completes.
  static asio::awaitable<void> subscribe(std::shared_ptr<Core> self,
                                         std::shared_ptr<Connection> c) {
    std::string failure;
    try {
      co_await self->acquire_write();
      Turn turn{self.get()};
      // By index, copying each message: add_on_connect may append while we write.
      for (std::size_t i = 0; i < self->on_connect.size() && self->connection == c; ++i) {
        const std::string message = self->on_connect[i];
        const auto ec = co_await self->write_frame(c, message);
        if (ec) {
          failure = ec.message();
          break;
        }
        ++self->stats.sends;
      }
      if (failure.empty() && self->connection == c) c->ready = true;
    } catch (const Error& e) {
      failure = e.what();
    }
    if (!failure.empty()) {
      if (self->connection == c && self->open_for_work()) {
        ++self->stats.send_failures;
        log()->warn("{}: connection {}: sending the on_connect messages failed ({}): reconnecting",
                    self->config.url, c->number, failure);
        c->send_failed = true;
        beast::close_socket(beast::get_lowest_layer(c->ws));
      }
      co_return;
    }
    if (c->ready && !self->first_ready) {
      self->first_ready = true;
      if (self->state == State::starting) self->state = State::running;
      wake_all(self->start_waiters);
    }
    // After the state is running: the hook may send at once.
    if (c->ready && self->connection == c && self->config.on_ready) {
      self->config.on_ready(c->number);
    }
  }

  enum class Ending : std::uint8_t {
    closed_by_peer,
    eof,
    idle_timeout,
    oversized,
    protocol_error,
    slow_consumer,
    send_failed,
    other
  };

  static Ending ending_of(const Connection& c, const boost::system::error_code& ec) {
    if (c.slow_consumer) return Ending::slow_consumer;
    if (c.send_failed) return Ending::send_failed;
    if (c.write_overrun) return Ending::idle_timeout;  // the peer stopped reading
    if (ec == websocket::error::closed) return Ending::closed_by_peer;
    if (ec == beast::error::timeout) return Ending::idle_timeout;
    if (ec == websocket::error::message_too_big || ec == websocket::error::buffer_overflow) {
      return Ending::oversized;
    }
    if (ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::broken_pipe || ec == asio::error::connection_aborted) {
      return Ending::eof;
    }
    if (ec == websocket::condition::protocol_violation) return Ending::protocol_error;
    // Beast fails a connection on a protocol violation by sending a close frame and waiting
    // (up to the handshake timeout) for the peer to close; when the misbehaving peer does not,
    // Beast closes the socket and reports the teardown's error instead of the violation. We
    // close sockets ourselves only when closing, on a slow consumer or a failed on_connect
    // send, or on a write that overran (all flagged above).
    if (ec == asio::error::bad_descriptor) return Ending::protocol_error;
    return Ending::other;
  }

  asio::awaitable<boost::system::error_code> read_loop(std::shared_ptr<Connection> c) {
    beast::flat_buffer buffer;
    for (;;) {
      boost::system::error_code ec;
      const std::size_t n =
          co_await c->ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return ec;
      ++stats.messages;
      stats.bytes += n;
      if (config.intercept && c->ws.got_text()) {
        const auto data = buffer.cdata();
        if (config.intercept(std::string_view(static_cast<const char*>(data.data()), data.size()),
                             c->number)) {
          buffer.consume(buffer.size());
          continue;
        }
      }
      if (!deliver(buffer, c->ws.got_binary(), c->number)) {
        c->slow_consumer = true;
        beast::close_socket(beast::get_lowest_layer(c->ws));
        co_return asio::error::operation_aborted;
      }
      buffer.consume(buffer.size());
    }
  }

  void count_ending(Ending ending) {
    auto& r = stats.reasons;
    switch (ending) {
      case Ending::closed_by_peer:
        ++r.closed_by_peer;
        break;
      case Ending::eof:
        ++r.eof;
        break;
      case Ending::idle_timeout:
        ++r.idle_timeout;
        break;
      case Ending::oversized:
        ++r.oversized;
        break;
      case Ending::protocol_error:
        ++r.protocol_error;
        break;
      case Ending::slow_consumer:
        ++r.slow_consumer;
        break;
      case Ending::send_failed:
        ++r.send_failed;
        break;
      case Ending::other:
        ++r.other;
        break;
    }
  }

  static const char* describe(Ending ending) {
    switch (ending) {
      case Ending::closed_by_peer:
        return "closed by the server";
      case Ending::eof:
        return "TCP connection closed without a close frame";
      case Ending::idle_timeout:
        return "nothing received within the idle timeout (silent peer)";
      case Ending::oversized:
        return "message above max_message_size";
      case Ending::protocol_error:
        return "WebSocket protocol violation";
      case Ending::slow_consumer:
        return "consumer too slow (overflow policy disconnect)";
      case Ending::send_failed:
        return "on_connect message could not be sent";
      case Ending::other:
        return "connection error";
    }
    return "?";
  }

  static asio::awaitable<void> supervise(std::shared_ptr<Core> self) {
    core::Backoff backoff(self->config.reconnect_backoff, self->random);
    asio::steady_timer pause(self->ex);
    struct ForgetTimer {
      Core* core;
      ~ForgetTimer() { core->backoff_timer = nullptr; }
    } forget{self.get()};
    while (self->open_for_work()) {
      auto c = std::make_shared<Connection>(self->ex);
      self->connecting = c;
      std::string failure;
      try {
        co_await self->connect(c);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      self->connecting.reset();
      if (!self->open_for_work()) break;
      if (failure.empty()) {
        c->number = self->next_number++;
        c->opened = Clock::now();
        self->connection = c;
        ++self->stats.connects;
        self->stats.connection = c->number;
        self->stats.connected = true;
        log()->info("{}: connection {} up", self->config.url, c->number);
        asio::co_spawn(self->ex, subscribe(self, c), [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);  // subscribe catches every error it can meet
        });
        const auto ec = co_await self->read_loop(c);
        self->connection.reset();
        self->stats.connected = false;
        if (!self->open_for_work()) break;
        const Ending ending = ending_of(*c, ec);
        ++self->stats.disconnects;
        self->count_ending(ending);
        std::string detail = ec.message();
        if (ending == Ending::closed_by_peer) {
          const auto& reason = c->ws.reason();
          detail = "close code " + std::to_string(reason.code) +
                   (reason.reason.empty() ? std::string()
                                          : " \"" + std::string(reason.reason.c_str()) + "\"");
        }
        log()->warn(
            "{}: connection {} lost after {} ms: {} ({}); reconnecting", self->config.url,
            c->number,
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c->opened).count(),
            describe(ending), detail);
        self->last_failure = describe(ending);
        if (Clock::now() - c->opened >= self->config.idle_timeout) backoff.reset();
      } else {
        ++self->stats.connect_failures;
        self->last_failure = failure;
        if (self->stats.connect_failures == 1 || backoff.attempts() % 10 == 0) {
          log()->warn("{}: connect failed (attempt {}): {}", self->config.url,
                      backoff.attempts() + 1, failure);
        }
      }
      pause.expires_after(backoff.next());
      self->backoff_timer = &pause;
      (void)co_await shielded_wait(pause);
      self->backoff_timer = nullptr;
    }
    self->supervisor_running = false;
    wake_all(self->stop_waiters);
    wake_all(self->start_waiters);
    if (self->consumer != nullptr) self->consumer->wake();
    if (self->config.on_readable) self->config.on_readable();
  }

  /// Stops everything at once (destruction without close, close overrun).
  void cut() {
    if (connecting) {
      connecting->resolver.cancel();
      beast::close_socket(beast::get_lowest_layer(connecting->ws));
    }
    if (connection) beast::close_socket(beast::get_lowest_layer(connection->ws));
    if (backoff_timer != nullptr) backoff_timer->cancel();
  }

  void begin_closing() {
    state = State::closing;
    if (backoff_timer != nullptr) backoff_timer->cancel();
    if (connecting) {
      connecting->resolver.cancel();
      beast::close_socket(beast::get_lowest_layer(connecting->ws));
    }
    wake_all(send_waiters);  // not granted: they throw client_closed
    wake_all(start_waiters);
    if (!supervisor_running && consumer != nullptr) consumer->wake();
  }

  asio::awaitable<void> close() {
    auto self = shared_from_this();
    if (state == State::idle) {
      state = State::closed;
      co_return;
    }
    if (state == State::closed) co_return;
    const auto deadline = Clock::now() + config.close_timeout;
    if (state != State::closing) {
      begin_closing();
      if (auto c = connection) {
        // Take the write turn (Beast allows one write at a time, and nothing may follow our
        // close frame): at once, or after the send in flight, bounded by the deadline.
        bool have_turn = !writing;
        if (have_turn) {
          writing = true;
        } else {
          Waiter waiter(ex, send_waiters, true);
          waiter.timer.expires_at(deadline);
          (void)co_await shielded_wait(waiter.timer);
          have_turn = waiter.granted;
        }
        if (have_turn && connection == c) {
          asio::steady_timer bound(ex);
          bound.expires_at(deadline);
          bound.async_wait([self](boost::system::error_code ec) {
            if (!ec) self->cut();  // the peer does not answer our close frame
          });
          boost::system::error_code ec;
          co_await c->ws.async_close(
              websocket::close_code::normal,
              asio::bind_cancellation_slot(asio::cancellation_slot(),
                                           asio::redirect_error(asio::use_awaitable, ec)));
          bound.cancel();
          if (ec && ec != asio::error::operation_aborted) {
            log()->info("{}: close handshake of connection {}: {}", config.url, c->number,
                        ec.message());
          }
        } else if (connection == c) {
          log()->warn("{}: a send did not finish within close_timeout: cutting connection {}",
                      config.url, c->number);
          cut();
        }
      }
    }
    if (supervisor_running) {
      Waiter waiter(ex, stop_waiters);
      waiter.timer.expires_at(deadline);
      (void)co_await shielded_wait(waiter.timer);
      if (!waiter.woken) {
        log()->warn("{}: close did not finish within {} ms: cutting the connection", config.url,
                    config.close_timeout.count());
        cut();
        Waiter last(ex, stop_waiters);
        last.timer.expires_after(std::chrono::milliseconds(500));
        (void)co_await shielded_wait(last.timer);
      }
    }
    state = State::closed;
    if (consumer != nullptr) consumer->wake();
    if (config.on_readable) config.on_readable();
  }

  /// Waits for at least one queued message; false once closed and drained. Throws cancelled.
  /// Waits until a message is queued (true) or the client ended with nothing queued (false).
  /// With a deadline, also returns false when it passes first (`timed_out` is then set).
  asio::awaitable<bool> wait_for_messages(
      std::optional<asio::steady_timer::time_point> deadline = std::nullopt,
      bool* timed_out = nullptr) {
    while (count == 0) {
      if (ended() || state == State::idle) co_return false;
      Waiter waiter(ex, consumer);
      if (deadline) waiter.timer.expires_at(*deadline);
      boost::system::error_code ec;
      co_await waiter.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (waiter.woken) continue;
      if (deadline && !ec) {  // the deadline passed: nothing was taken
        if (timed_out != nullptr) *timed_out = true;
        co_return false;
      }
      throw Error(make_error_code(errc::cancelled), what("receive cancelled"));
    }
    co_return true;
  }
};

// ---- the public API --------------------------------------------------------------------------

WebSocketClient::WebSocketClient(asio::any_io_executor executor, WebSocketConfig config) {
  validate(config);
  core_ = std::make_shared<Core>(std::move(executor), std::move(config));
}

WebSocketClient::~WebSocketClient() {
  if (core_ && core_->state != State::closed && core_->state != State::idle) {
    if (core_->state != State::closing) {
      log()->warn("{}: WebSocketClient destroyed without close(): cutting the connection",
                  core_->config.url);
    }
    core_->begin_closing();
    core_->cut();
  }
}

void WebSocketClient::add_on_connect(std::string message) {
  core_->on_connect.push_back(std::move(message));
  auto c = core_->connection;
  // A connection whose subscribe is still running picks the new message up itself (it walks
  // the list by index); a ready one gets it now, through the write turn like any send.
  if (!c || !c->ready) return;
  asio::co_spawn(
      core_->ex,
      [](std::shared_ptr<Core> s, std::shared_ptr<Connection> conn,
         std::string text) -> asio::awaitable<void> {
        std::string failure;
        try {
          co_await s->acquire_write();
          Core::Turn turn{s.get()};
          if (s->connection != conn) co_return;  // the next connection sends it with the rest
          const auto ec = co_await s->write_frame(conn, text);
          if (ec) {
            failure = ec.message();
          } else {
            ++s->stats.sends;
          }
        } catch (const Error& e) {
          failure = e.what();
        }
        if (!failure.empty()) {
          ++s->stats.send_failures;
          log()->warn("{}: on_connect message not sent on connection {}: {}", s->config.url,
                      conn->number, failure);
        }
      }(core_, c, core_->on_connect.back()),
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);  // the coroutine catches every error it can meet
      });
}

asio::awaitable<void> WebSocketClient::start() {
  auto self = core_;
  if (self->state == State::running) co_return;
  if (self->state == State::closing || self->state == State::closed) {
    throw Error(make_error_code(errc::client_closed), self->what("closed"));
  }
  if (self->state == State::idle) {
    self->state = State::starting;
    self->supervisor_running = true;
    asio::co_spawn(self->ex, Core::supervise(self), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // the supervisor handles every error it can meet
    });
  }
  {
    Waiter waiter(self->ex, self->start_waiters);
    waiter.timer.expires_after(self->config.startup_timeout);
    boost::system::error_code ec;
    co_await waiter.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (self->state == State::running) co_return;
  if (self->state == State::closing || self->state == State::closed) {
    throw Error(make_error_code(errc::client_closed), self->what("closed during start"));
  }
  // Cancelled or timed out: the client closes before the error reaches the caller.
  const auto cancelled = (co_await asio::this_coro::cancellation_state).cancelled();
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  const std::string failure = self->last_failure;
  co_await self->close();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  if (cancelled != asio::cancellation_type::none) {
    throw Error(make_error_code(errc::cancelled), self->what("start cancelled"));
  }
  throw Error(make_error_code(errc::startup_timeout),
              self->what("not connected within the startup timeout") + " (" +
                  std::to_string(self->config.startup_timeout.count()) +
                  " ms); last failure: " + failure);
}

asio::awaitable<void> WebSocketClient::close() {
  auto self = core_;
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await self->close();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
}

asio::awaitable<void> WebSocketClient::send(std::string_view text) {
  auto self = core_;
  if (self->state == State::idle || self->state == State::starting) {
    throw Error(make_error_code(errc::not_started), self->what("send before start()"));
  }
  co_await self->acquire_write();
  Core::Turn turn{self.get()};
  auto c = self->connection;
  if (!c || !c->ready) {
    ++self->stats.send_failures;
    throw Error(make_error_code(errc::connection_lost), self->what("not connected (reconnecting)"));
  }
  const auto ec = co_await self->write_frame(c, text);
  if (ec) {
    ++self->stats.send_failures;
    throw Error(make_error_code(errc::connection_lost),
                self->what("send failed") + " on connection " + std::to_string(c->number) + ": " +
                    ec.message(),
                RequestState::sent);
  }
  ++self->stats.sends;
}

namespace {
/// Marks the single consumer as active for the duration of a receive.
struct ConsumerTurn {
  bool* active;
  explicit ConsumerTurn(bool& flag) : active(&flag) {
    if (flag) throw std::logic_error("WebSocketClient: concurrent receive");
    flag = true;
  }
  ~ConsumerTurn() { *active = false; }
  ConsumerTurn(const ConsumerTurn&) = delete;
  ConsumerTurn& operator=(const ConsumerTurn&) = delete;
};
}  // namespace

asio::awaitable<bool> WebSocketClient::receive(Message& out) {
  auto self = core_;
  ConsumerTurn turn(self->consumer_active);
  const bool any = co_await self->wait_for_messages();
  if (!any) co_return false;
  self->take(out);
  co_return true;
}

asio::awaitable<std::size_t> WebSocketClient::receive_batch(std::vector<Message>& out,
                                                            std::size_t max) {
  auto self = core_;
  if (max == 0) throw std::invalid_argument("WebSocketClient::receive_batch: max must be > 0");
  ConsumerTurn turn(self->consumer_active);
  const bool any = co_await self->wait_for_messages();
  if (!any) co_return 0;
  const std::size_t n = std::min(max, self->count);
  if (out.size() < n) out.resize(n);
  for (std::size_t i = 0; i < n; ++i) self->take(out[i]);
  co_return n;
}

asio::awaitable<std::optional<std::size_t>> WebSocketClient::receive_batch_for(
    std::vector<Message>& out, std::size_t max, std::chrono::milliseconds max_wait) {
  auto self = core_;
  if (max == 0) {
    throw std::invalid_argument("WebSocketClient::receive_batch_for: max must be > 0");
  }
  ConsumerTurn turn(self->consumer_active);
  bool timed_out = false;
  const bool any = co_await self->wait_for_messages(
      asio::steady_timer::clock_type::now() + std::max(max_wait, std::chrono::milliseconds{0}),
      &timed_out);
  if (!any) {
    if (timed_out) co_return std::size_t{0};
    co_return std::nullopt;
  }
  const std::size_t n = std::min(max, self->count);
  if (out.size() < n) out.resize(n);
  // Through take(), as receive_batch: the queue's byte count goes down with each message.
  for (std::size_t i = 0; i < n; ++i) self->take(out[i]);
  co_return n;
}

std::optional<std::size_t> WebSocketClient::try_receive_batch(std::vector<Message>& out,
                                                              std::size_t first, std::size_t max) {
  auto& self = *core_;
  if (self.consumer_active) throw std::logic_error("WebSocketClient: concurrent receive");
  if (self.count == 0) {
    if (self.ended()) return std::nullopt;
    return std::size_t{0};
  }
  const std::size_t n = std::min(max, self.count);
  if (out.size() < first + n) out.resize(first + n);
  for (std::size_t i = 0; i < n; ++i) self.take(out[first + i]);
  return n;
}

WebSocketStats WebSocketClient::stats() const noexcept {
  WebSocketStats s = core_->stats;
  s.queued = core_->count;
  s.queued_bytes = core_->queued_bytes;
  s.held_bytes = core_->held_bytes;
  return s;
}

const WebSocketConfig& WebSocketClient::config() const noexcept {
  return core_->config;
}

}  // namespace trading_shared::ws

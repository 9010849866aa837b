#include "support/fault_proxy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <deque>
#include <exception>
#include <future>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trading_shared::testing {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

namespace {

/// Only the first errors are logged: a fault test that resets a hundred clients on purpose
/// must not bury the one line that explains a real failure.
constexpr std::uint64_t kMaxLoggedErrors = 20;
/// Pause after a failed accept (EMFILE and friends), so that the loop does not spin.
constexpr std::chrono::milliseconds kAcceptRetryDelay{10};
/// Poll interval of the drain wait before a byte-exact cut.
constexpr std::chrono::milliseconds kDrainPollInterval{1};

/// Waits until `signal` is cancelled (notified) or its owner closes. A steady_timer that
/// never expires is the usual single-threaded Asio condition variable: no wake-up can be lost
/// because the condition is checked and the wait started without a suspension in between.
asio::awaitable<void> wait_signal(asio::steady_timer& signal) {
  signal.expires_at(Clock::time_point::max());
  error_code ignored;
  co_await signal.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

/// Closes a socket with a TCP RST: SO_LINGER with a zero timeout makes close() abort the
/// connection instead of sending FIN (see the class comment for why cuts are resets).
void reset_socket(tcp::socket& socket) {
  if (!socket.is_open()) return;
  error_code ignored;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

/// Bytes written to `socket` that the kernel has not sent yet.
int unsent_bytes(tcp::socket& socket) {
  int pending = 0;
  if (::ioctl(socket.native_handle(), SIOCOUTQNSD, &pending) != 0) return 0;
  return pending;
}

bool applies(Direction fault, Direction pipe) {
  return fault == Direction::both || fault == pipe;
}

/// One read-ahead unit of a direction: what one read returned, and when to deliver it.
struct Chunk {
  std::string data;
  Clock::time_point deliver_at;
  /// The source half-closed: deliver a FIN (shutdown of the sending side) at this point.
  bool eof = false;
  /// The cut limit was reached with this chunk: reset the connection after delivering it.
  bool cut = false;
};

}  // namespace

/// One direction of a connection: a reader that fills a queue of timestamped chunks and a
/// writer that delivers each when it is due. Reading ahead while the writer waits is what
/// keeps latency from being serialized.
struct FaultProxy::Pipe {
  Pipe(const asio::any_io_executor& executor, tcp::socket& source, tcp::socket& sink,
       Direction direction)
      : from(source),
        to(sink),
        dir(direction),
        data_signal(executor),
        space_signal(executor),
        delay_timer(executor) {}

  tcp::socket& from;
  tcp::socket& to;
  const Direction dir;
  std::deque<Chunk> queue;
  std::size_t queued_bytes = 0;
  /// Bytes read from `from` and accepted for forwarding; the cut limit is an offset in it.
  std::uint64_t read_total = 0;
  std::optional<std::uint64_t> cut_at;
  /// hold_after_bytes(): nothing past this offset of `read_total` is delivered while set.
  std::optional<std::uint64_t> hold_at;
  /// hold_after_bytes(..., including_close): the peer's close (FIN) is held back too.
  bool hold_close = false;
  /// Bytes taken off the queue by the writer (delivered or being delivered).
  std::uint64_t taken_total = 0;
  bool reader_done = false;

  /// Bytes queued beyond the hold point.
  std::uint64_t held() const {
    if (!hold_at) return 0;
    const std::uint64_t queued_end = taken_total + queued_bytes;
    return queued_end > *hold_at ? queued_end - std::max(*hold_at, taken_total) : 0;
  }
  /// Notified when the queue gains an entry or the reader ends (the writer waits on it).
  asio::steady_timer data_signal;
  /// Notified when the queue shrinks (the reader waits on it when over kMaxQueuedBytes).
  asio::steady_timer space_signal;
  asio::steady_timer delay_timer;

  void cancel_waits() {
    data_signal.cancel();
    space_signal.cancel();
    delay_timer.cancel();
  }
};

/// Everything that exists only while the proxy runs, on the proxy thread.
struct FaultProxy::Impl {
  explicit Impl(FaultProxy& owner) : proxy(owner) {}

  FaultProxy& proxy;
  /// Weak: each connection is owned by its own coroutine; this index only lets control calls
  /// reach the live ones. Touched on the proxy thread only.
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  tcp::acceptor acceptor{io};
  std::vector<tcp::endpoint> upstream;
  std::uint64_t next_id = 1;
  bool shutting_down = false;
  std::promise<void> run_done;

  void open_acceptor(std::uint16_t port) {
    acceptor.open(tcp::v4());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(tcp::endpoint(asio::ip::address_v4::loopback(), port));
    acceptor.listen();
  }

  template <typename F>
  void for_each_connection(F&& fn) {
    // Copy first: fn may close a connection, whose coroutine may then unregister it.
    std::vector<std::shared_ptr<Connection>> live;
    live.reserve(connections.size());
    for (auto& [id, weak] : connections) {
      if (auto conn = weak.lock()) live.push_back(std::move(conn));
    }
    for (auto& conn : live) fn(*conn);
  }

  asio::awaitable<void> accept_loop();
  void shutdown();
};

/// One proxied connection: the client socket, the upstream socket and the two directions.
/// Lives as long as its run() coroutine (which holds the only owning pointer).
struct FaultProxy::Connection : std::enable_shared_from_this<Connection> {
  Connection(Impl& owner, std::uint64_t connection_id, tcp::socket accepted)
      : impl(owner),
        proxy(owner.proxy),
        id(connection_id),
        client(std::move(accepted)),
        server(owner.io),
        connect_timer(owner.io),
        c2s(owner.io.get_executor(), client, server, Direction::client_to_server),
        s2c(owner.io.get_executor(), server, client, Direction::server_to_client) {}

  Impl& impl;
  FaultProxy& proxy;
  const std::uint64_t id;
  tcp::socket client;
  tcp::socket server;
  asio::steady_timer connect_timer;
  Pipe c2s;
  Pipe s2c;
  bool closed = false;
  bool blackholed = false;
  bool error_logged = false;
  bool connect_timed_out = false;

  /// Takes its owner by value: the coroutine frame then keeps the connection alive.
  static asio::awaitable<void> run(std::shared_ptr<Connection> self);
  asio::awaitable<bool> connect_upstream();
  asio::awaitable<void> pipe_loop(Pipe& pipe);
  asio::awaitable<void> read_loop(Pipe& pipe);
  asio::awaitable<void> write_loop(Pipe& pipe);
  asio::awaitable<void> drain(Pipe& pipe);

  /// Resets both sides and wakes every waiting loop, which then ends.
  void reset() {
    if (closed) return;
    closed = true;
    reset_socket(client);
    reset_socket(server);
    connect_timer.cancel();
    c2s.cancel_waits();
    s2c.cancel_waits();
  }

  /// Both directions ended normally (FINs already passed on): a plain close.
  void close_gracefully() {
    if (closed) return;
    closed = true;
    error_code ignored;
    client.close(ignored);
    server.close(ignored);
  }

  /// Turns this connection into a black hole for good: queued bytes are dropped, and the
  /// loops read and discard from now on.
  void blackhole() {
    blackholed = true;
    for (Pipe* pipe : {&c2s, &s2c}) {
      pipe->queue.clear();
      pipe->queued_bytes = 0;
      pipe->cancel_waits();
    }
  }

  /// Cut after n more bytes in `dir` (counted from what has been read so far).
  void limit(std::size_t n, Direction dir) {
    for (Pipe* pipe : {&c2s, &s2c}) {
      if (applies(dir, pipe->dir)) pipe->cut_at = pipe->read_total + n;
    }
  }

  void clear_limits() {
    c2s.cut_at.reset();
    s2c.cut_at.reset();
    release_hold();
  }

  /// Hold back everything after n more bytes in `dir` (counted from what has been read).
  void hold(std::size_t n, Direction dir, bool including_close) {
    for (Pipe* pipe : {&c2s, &s2c}) {
      if (applies(dir, pipe->dir)) {
        pipe->hold_at = pipe->read_total + n;
        pipe->hold_close = including_close;
      }
    }
  }

  void release_hold() {
    for (Pipe* pipe : {&c2s, &s2c}) {
      pipe->hold_at.reset();
      pipe->hold_close = false;
      pipe->data_signal.cancel();  // the writer may wait at the hold point
    }
  }

  void report(const char* phase, const error_code& ec) {
    ++proxy.errors_;
    if (error_logged) return;
    error_logged = true;
    if (proxy.logged_errors_++ >= kMaxLoggedErrors) return;
    std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u -> %s:%u] connection %llu: %s: %s\n",
                 static_cast<unsigned>(proxy.port_), proxy.upstream_host_.c_str(),
                 static_cast<unsigned>(proxy.upstream_port_), static_cast<unsigned long long>(id),
                 phase, ec.message().c_str());
  }
};

asio::awaitable<void> FaultProxy::Connection::run(std::shared_ptr<Connection> self) {
  error_code ignored;
  self->client.set_option(tcp::no_delay(true), ignored);
  if (!self->blackholed) {
    if (co_await self->connect_upstream()) {
      co_await (self->pipe_loop(self->c2s) && self->pipe_loop(self->s2c));
    } else {
      self->reset();
    }
  } else {
    // Never connected upstream: only the client's bytes exist, and they are discarded.
    co_await self->pipe_loop(self->c2s);
  }
  self->close_gracefully();
  self->impl.connections.erase(self->id);
  --self->proxy.active_;
}

asio::awaitable<bool> FaultProxy::Connection::connect_upstream() {
  // The timeout closes the socket rather than racing the connect in a parallel group: that
  // ends the connect whatever cancellation it supports, and the handler (owned by the timer,
  // cancelled below) keeps the connection alive only until then.
  connect_timer.expires_after(kUpstreamConnectTimeout);
  connect_timer.async_wait([self = shared_from_this()](const error_code& ec) {
    if (ec || self->closed || self->connect_timed_out) return;
    self->connect_timed_out = true;
    error_code ignored;
    self->server.close(ignored);
  });
  auto [ec, endpoint] =
      co_await asio::async_connect(server, impl.upstream, asio::as_tuple(asio::use_awaitable));
  connect_timer.cancel();
  if (closed) co_return false;
  if (connect_timed_out) {
    report("connect upstream", asio::error::timed_out);
    co_return false;
  }
  if (ec) {
    report("connect upstream", ec);
    co_return false;
  }
  error_code ignored;
  server.set_option(tcp::no_delay(true), ignored);
  co_return true;
}

asio::awaitable<void> FaultProxy::Connection::pipe_loop(Pipe& pipe) {
  co_await (read_loop(pipe) && write_loop(pipe));
}

asio::awaitable<void> FaultProxy::Connection::read_loop(Pipe& pipe) {
  std::array<char, kReadChunkBytes> buffer{};
  const bool c2s_pipe = pipe.dir == Direction::client_to_server;
  for (;;) {
    while (!closed && pipe.queued_bytes > kMaxQueuedBytes) co_await wait_signal(pipe.space_signal);
    if (closed) break;
    auto [ec, n] = co_await pipe.from.async_read_some(asio::buffer(buffer),
                                                      asio::as_tuple(asio::use_awaitable));
    if (closed) break;
    if (ec == asio::error::eof) {
      pipe.queue.push_back(
          Chunk{{},
                Clock::now() + std::chrono::milliseconds{c2s_pipe ? proxy.latency_c2s_ms_.load()
                                                                  : proxy.latency_s2c_ms_.load()},
                true,
                false});
      break;
    }
    if (ec) {
      report(c2s_pipe ? "read from client" : "read from server", ec);
      reset();
      break;
    }
    if (blackholed) continue;
    std::size_t take = n;
    bool cut = false;
    if (pipe.cut_at) {
      const std::uint64_t remaining =
          *pipe.cut_at > pipe.read_total ? *pipe.cut_at - pipe.read_total : 0;
      if (n >= remaining) {
        take = static_cast<std::size_t>(remaining);
        cut = true;
      }
    }
    const std::chrono::milliseconds latency{c2s_pipe ? proxy.latency_c2s_ms_.load()
                                                     : proxy.latency_s2c_ms_.load()};
    // A chunk that crosses the hold point is split there, so that the writer can stop at it.
    std::size_t first = take;
    if (pipe.hold_at && *pipe.hold_at > pipe.read_total && *pipe.hold_at < pipe.read_total + take) {
      first = static_cast<std::size_t>(*pipe.hold_at - pipe.read_total);
    }
    pipe.read_total += take;
    pipe.queue.push_back(Chunk{std::string(buffer.data(), first), Clock::now() + latency, false,
                               cut && first == take});
    if (first < take) {
      pipe.queue.push_back(Chunk{std::string(buffer.data() + first, take - first),
                                 Clock::now() + latency, false, cut});
    }
    pipe.queued_bytes += take;
    if (pipe.queued_bytes > proxy.peak_queued_.load()) proxy.peak_queued_ = pipe.queued_bytes;
    pipe.data_signal.cancel();
    if (cut) break;  // nothing after the cut point is ever forwarded
  }
  pipe.reader_done = true;
  pipe.data_signal.cancel();
}

asio::awaitable<void> FaultProxy::Connection::write_loop(Pipe& pipe) {
  const bool c2s_pipe = pipe.dir == Direction::client_to_server;
  for (;;) {
    while (!closed && pipe.queue.empty() && !pipe.reader_done)
      co_await wait_signal(pipe.data_signal);
    if (closed || pipe.queue.empty()) co_return;
    if (pipe.hold_at && pipe.taken_total >= *pipe.hold_at &&
        (pipe.hold_close || !pipe.queue.front().eof)) {
      co_await wait_signal(pipe.data_signal);  // release_hold() or a reset wakes us
      continue;
    }
    const auto due = pipe.queue.front().deliver_at;
    if (due > Clock::now()) {
      pipe.delay_timer.expires_at(due);
      error_code ignored;
      co_await pipe.delay_timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      continue;  // re-examine: the connection may have been closed or blackholed meanwhile
    }
    Chunk chunk = std::move(pipe.queue.front());
    pipe.queue.pop_front();
    pipe.queued_bytes -= chunk.data.size();
    pipe.taken_total += chunk.data.size();
    pipe.space_signal.cancel();
    if (blackholed) continue;
    if (chunk.eof) {
      error_code ignored;
      pipe.to.shutdown(tcp::socket::shutdown_send, ignored);
      continue;
    }
    if (!chunk.data.empty()) {
      auto [ec, written] = co_await asio::async_write(pipe.to, asio::buffer(chunk.data),
                                                      asio::as_tuple(asio::use_awaitable));
      if (closed) co_return;
      if (ec) {
        report(c2s_pipe ? "write to server" : "write to client", ec);
        reset();
        co_return;
      }
      (c2s_pipe ? proxy.bytes_c2s_ : proxy.bytes_s2c_) += written;
    }
    if (chunk.cut) {
      co_await drain(pipe);
      reset();
      co_return;
    }
  }
}

asio::awaitable<void> FaultProxy::Connection::drain(Pipe& pipe) {
  const auto deadline = Clock::now() + kCutDrainTimeout;
  while (!closed && unsent_bytes(pipe.to) > 0 && Clock::now() < deadline) {
    pipe.delay_timer.expires_after(kDrainPollInterval);
    error_code ignored;
    co_await pipe.delay_timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

asio::awaitable<void> FaultProxy::Impl::accept_loop() {
  for (;;) {
    tcp::socket socket(io);
    error_code ec;
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (shutting_down || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      ++proxy.errors_;
      if (proxy.logged_errors_++ < kMaxLoggedErrors) {
        std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] accept: %s\n",
                     static_cast<unsigned>(proxy.port_), ec.message().c_str());
      }
      asio::steady_timer pause(io, kAcceptRetryDelay);
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    ++proxy.accepted_;
    Faults faults;
    {
      std::lock_guard lock(proxy.faults_mutex_);
      faults = proxy.faults_;
    }
    if (faults.refuse) {
      reset_socket(socket);
      continue;
    }
    auto conn = std::make_shared<Connection>(*this, next_id++, std::move(socket));
    conn->blackholed = faults.blackhole;
    if (faults.cut_bytes) conn->limit(*faults.cut_bytes, faults.cut_direction);
    connections.emplace(conn->id, conn);
    ++proxy.active_;
    asio::co_spawn(
        io, Connection::run(conn), [this, id = conn->id](const std::exception_ptr& error) {
          if (!error) return;
          // Only bad_alloc and the like get here; the loops report socket errors themselves.
          ++proxy.errors_;
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] connection %llu: %s\n",
                         static_cast<unsigned>(proxy.port_), static_cast<unsigned long long>(id),
                         e.what());
          } catch (...) {
            std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] connection %llu: unknown exception\n",
                         static_cast<unsigned>(proxy.port_), static_cast<unsigned long long>(id));
          }
        });
  }
}

void FaultProxy::Impl::shutdown() {
  shutting_down = true;
  error_code ignored;
  acceptor.close(ignored);
  for_each_connection([](Connection& conn) { conn.reset(); });
  // Without the guard, run() returns as soon as the last connection coroutine has ended.
  work.reset();
}

FaultProxy::FaultProxy(std::string upstream_host, std::uint16_t upstream_port)
    : upstream_host_(std::move(upstream_host)), upstream_port_(upstream_port) {
  impl_ = std::make_unique<Impl>(*this);
  impl_->open_acceptor(0);
  port_ = impl_->acceptor.local_endpoint().port();
}

FaultProxy::~FaultProxy() {
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] stop: %s\n", static_cast<unsigned>(port_),
                 e.what());
  }
}

std::string FaultProxy::endpoint() const {
  return host() + ":" + std::to_string(port_);
}

void FaultProxy::start() {
  std::lock_guard lock(lifecycle_mutex_);
  if (running_) return;
  if (!impl_) {
    impl_ = std::make_unique<Impl>(*this);
    impl_->open_acceptor(port_);
  }
  tcp::resolver resolver(impl_->io);
  for (const auto& entry : resolver.resolve(upstream_host_, std::to_string(upstream_port_))) {
    impl_->upstream.push_back(entry.endpoint());
  }
  if (impl_->upstream.empty()) {
    throw std::runtime_error("fault proxy: upstream host " + upstream_host_ + " did not resolve");
  }
  Impl* impl = impl_.get();
  asio::co_spawn(impl->io, impl->accept_loop(), [impl](const std::exception_ptr& error) {
    if (error) {
      ++impl->proxy.errors_;
      std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] accept loop ended by an exception\n",
                   static_cast<unsigned>(impl->proxy.port_));
    }
  });
  thread_ = std::thread([impl] {
    // An exception escaping a handler must not end the thread (it would terminate the
    // test binary) nor the proxy: log it and keep running.
    for (;;) {
      try {
        impl->io.run();
        break;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] handler threw: %s\n",
                     static_cast<unsigned>(impl->proxy.port_), e.what());
      } catch (...) {
        std::fprintf(stderr, "[fault_proxy 127.0.0.1:%u] handler threw\n",
                     static_cast<unsigned>(impl->proxy.port_));
      }
    }
    impl->run_done.set_value();
  });
  running_ = true;
}

void FaultProxy::stop() {
  std::lock_guard lock(lifecycle_mutex_);
  if (!running_) {
    impl_.reset();  // never started: just release the listening socket
    return;
  }
  auto done = impl_->run_done.get_future();
  asio::post(impl_->io, [impl = impl_.get()] { impl->shutdown(); });
  if (done.wait_for(kStopTimeout) != std::future_status::ready) {
    // Some coroutine did not end after its sockets were closed (a bug): abandon it rather
    // than hang the test; destroying the io_context below destroys it.
    std::fprintf(stderr,
                 "[fault_proxy 127.0.0.1:%u] stop: connections did not wind down in %llds\n",
                 static_cast<unsigned>(port_), static_cast<long long>(kStopTimeout.count()));
    impl_->io.stop();
  }
  thread_.join();
  impl_.reset();
  active_ = 0;
  running_ = false;
}

void FaultProxy::run_on_proxy(const std::function<void(Impl*)>& fn) {
  std::lock_guard lock(lifecycle_mutex_);
  if (!running_) {
    fn(nullptr);
    return;
  }
  auto done = std::make_shared<std::promise<void>>();
  auto result = done->get_future();
  asio::post(impl_->io, [fn, done, impl = impl_.get()] {
    try {
      fn(impl);
      done->set_value();
    } catch (...) {
      done->set_exception(std::current_exception());
    }
  });
  if (result.wait_for(kStopTimeout) != std::future_status::ready) {
    throw std::runtime_error("fault proxy: the proxy thread did not run a control call in time");
  }
  result.get();
}

void FaultProxy::set_latency(std::chrono::milliseconds client_to_server,
                             std::chrono::milliseconds server_to_client) {
  latency_c2s_ms_ = client_to_server.count();
  latency_s2c_ms_ = server_to_client.count();
}

void FaultProxy::set_blackhole(bool on) {
  run_on_proxy([this, on](Impl* impl) {
    {
      std::lock_guard lock(faults_mutex_);
      faults_.blackhole = on;
    }
    if (impl && on) impl->for_each_connection([](Connection& conn) { conn.blackhole(); });
  });
}

void FaultProxy::set_refuse(bool on) {
  std::lock_guard lock(faults_mutex_);
  faults_.refuse = on;
}

void FaultProxy::cut_all() {
  run_on_proxy([](Impl* impl) {
    if (impl) impl->for_each_connection([](Connection& conn) { conn.reset(); });
  });
}

void FaultProxy::cut_after_bytes(std::size_t n, Direction dir) {
  run_on_proxy([this, n, dir](Impl* impl) {
    {
      std::lock_guard lock(faults_mutex_);
      faults_.cut_bytes = n;
      faults_.cut_direction = dir;
    }
    if (impl) impl->for_each_connection([n, dir](Connection& conn) { conn.limit(n, dir); });
  });
}

void FaultProxy::hold_after_bytes(std::size_t n, Direction dir, bool including_close) {
  run_on_proxy([n, dir, including_close](Impl* impl) {
    if (impl) {
      impl->for_each_connection(
          [n, dir, including_close](Connection& conn) { conn.hold(n, dir, including_close); });
    }
  });
}

void FaultProxy::release_hold() {
  run_on_proxy([](Impl* impl) {
    if (impl) impl->for_each_connection([](Connection& conn) { conn.release_hold(); });
  });
}

std::uint64_t FaultProxy::held_bytes() {
  auto total = std::make_shared<std::uint64_t>(0);
  run_on_proxy([total](Impl* impl) {
    if (impl) {
      impl->for_each_connection(
          [&](Connection& conn) { *total += conn.c2s.held() + conn.s2c.held(); });
    }
  });
  return *total;
}

void FaultProxy::clear_faults() {
  set_latency(std::chrono::milliseconds{0}, std::chrono::milliseconds{0});
  run_on_proxy([this](Impl* impl) {
    {
      std::lock_guard lock(faults_mutex_);
      faults_ = Faults{};
    }
    if (impl) impl->for_each_connection([](Connection& conn) { conn.clear_limits(); });
  });
}

bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
}

}  // namespace trading_shared::testing

#pragma once
/// @file
/// A fault-injecting TCP proxy for tests: it sits on loopback between our clients and a real
/// server (PostgreSQL, Redis, PgBouncer) and forwards bytes unchanged, late, never, or only up
/// to a point, so that the fault scenarios of docs/failure-modes.md (F17 delaying proxy, F20
/// half-open TCP, F06 frozen peer, F24 cut mid-batch, ...) can be injected for real.
///
/// Why a proxy of our own rather than signals to the server: a SIGSTOPped server freezes every
/// connection at once, including the test's own inspection connection, whereas a proxy
/// freezes, delays or cuts only the connections of the client under test, at a byte-exact
/// point, and can be switched back at run time.
///
/// @par Threading
/// The proxy runs on its own thread with its own io_context, so it keeps forwarding while a
/// test thread blocks in a synchronous call (libpq, hiredis, a test body running its own
/// io_context). Every public member function is thread-safe. Control functions that act on
/// live connections (`cut_all`, `cut_after_bytes`, `set_blackhole`, `clear_faults`) return
/// only once the change is in effect on the proxy thread, so that the next byte the test sends
/// is already subject to it. None of them may be called from the proxy's own thread (there is
/// no way to get there from outside anyway).
///
/// @par Example
/// @code
/// FaultProxy proxy{"127.0.0.1", redis_port};
/// proxy.start();
/// proxy.set_latency(std::chrono::milliseconds{0}, std::chrono::milliseconds{150});
/// // ... point the client at proxy.port(), assert deadlines hold ...
/// proxy.clear_faults();
/// @endcode

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace trading_shared::testing {

/// The direction(s) of traffic a fault applies to.
enum class Direction {
  client_to_server,  ///< bytes the client sends, forwarded to the server
  server_to_client,  ///< bytes the server sends, forwarded to the client
  both,              ///< each direction independently; the first to reach the limit cuts
};

/// A TCP proxy on 127.0.0.1 that injects faults into the connections it forwards.
///
/// Modes (all can change at run time; see each function for what happens to connections
/// that already exist):
/// - forward (default): bytes both ways unchanged, half-closes (FIN) propagated.
/// - latency: every chunk read is delivered a fixed delay later, order preserved.
/// - blackhole: accepted, never forwarded, sockets kept open (half-open / frozen peer).
/// - refuse: accepted connections are reset at once.
/// - cut: every connection reset now (`cut_all`), or after n more bytes (`cut_after_bytes`).
///
/// Connections are cut with a TCP RST (SO_LINGER 0, then close): that is what a crashed
/// peer or a middlebox that dropped the connection looks like, it frees the sockets at once
/// (no TIME_WAIT on the proxy's side), and a client reading at that moment sees
/// ECONNRESET or EOF rather than a polite close it could mistake for the server's intent.
class FaultProxy {
 public:
  /// Above this many bytes queued (read but not yet delivered) in one direction of one
  /// connection, the proxy stops reading that direction until the queue drains: with a long
  /// latency and a fast sender the queue would otherwise grow without bound. The sender then
  /// sees TCP back-pressure, as it would behind a slow link.
  static constexpr std::size_t kMaxQueuedBytes = 4 * 1024 * 1024;
  /// Size of one read, hence of the largest chunk: a queue never holds more than
  /// kMaxQueuedBytes + kReadChunkBytes.
  static constexpr std::size_t kReadChunkBytes = 64 * 1024;
  /// Upper bound of a connect to the upstream server; on timeout the client is reset.
  static constexpr std::chrono::seconds kUpstreamConnectTimeout{10};
  /// Upper bound of the wait, before a byte-exact cut, for the last bytes to leave the
  /// proxy's send buffer (a reset discards unsent data; see cut_after_bytes).
  static constexpr std::chrono::milliseconds kCutDrainTimeout{500};
  /// stop() waits this long for connections to wind down before abandoning them.
  static constexpr std::chrono::seconds kStopTimeout{5};

  /// Binds and listens on 127.0.0.1 on a free port at once, so that port() is known before
  /// start(). Connections made before start() wait in the listen backlog.
  /// @param upstream_host host name or address of the real server (resolved by start()).
  /// @param upstream_port its TCP port.
  /// @throws boost::system::system_error when the listening socket cannot be created.
  FaultProxy(std::string upstream_host, std::uint16_t upstream_port);
  /// Calls stop().
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;
  FaultProxy(FaultProxy&&) = delete;
  FaultProxy& operator=(FaultProxy&&) = delete;

  /// Resolves the upstream host and starts accepting and forwarding on the proxy thread.
  /// No effect when already running. After stop(), start() listens again on the same port
  /// (that is how a test simulates a server that goes away and comes back).
  /// @throws std::runtime_error / boost::system::system_error when the upstream host does not
  /// resolve or the port cannot be bound again.
  void start();
  /// Stops accepting, resets every connection (both sides), cancels every pending
  /// operation and joins the proxy thread. Afterwards no socket and no coroutine of the
  /// proxy is left, and its port refuses connections. Idempotent; fault settings and
  /// counters are kept.
  void stop();
  bool running() const { return running_.load(); }

  /// The port the proxy listens on (127.0.0.1).
  std::uint16_t port() const { return port_; }
  /// "127.0.0.1".
  std::string host() const { return "127.0.0.1"; }
  /// "127.0.0.1:<port>", e.g. for a Redis URL or a libpq `hostaddr`/`port` pair.
  std::string endpoint() const;

  /// Delays every chunk read by the given amount per direction; zero means none. Applies to
  /// bytes read after the call, on current and new connections. Latency is not serialized:
  /// a stream of chunks each delayed by D arrives D later as a whole, not N*D later; order is
  /// preserved per direction, including the half-close (FIN), which is delayed like data.
  void set_latency(std::chrono::milliseconds client_to_server,
                   std::chrono::milliseconds server_to_client);

  /// On: new connections are accepted and never connected upstream; every current connection
  /// stops forwarding in both directions, including bytes already queued. Data that arrives
  /// on either side is read and discarded, FINs are not passed on, and every socket stays
  /// open: to each peer, the other end looks alive but silent (half-open TCP, frozen peer).
  /// Such a connection ends only when both peers have closed their side, or at cut_all() or
  /// stop().
  /// Off: new connections are forwarded again. A connection that was blackholed stays a
  /// black hole until it is closed (cut_all() or stop() close it): resuming it would splice
  /// two halves of a byte stream with a gap in the middle, which no real network produces.
  void set_blackhole(bool on);

  /// On: every new connection is accepted and reset at once (a server that is "up" at the
  /// TCP level but drops every client). Current connections are not affected.
  void set_refuse(bool on);

  /// Resets every current connection, both sides, now. New connections are accepted and
  /// forwarded afterwards as usual (with whatever faults are set).
  void cut_all();

  /// After `n` more bytes forwarded in `dir`, forwards exactly those n bytes, then resets the
  /// connection (both sides). For current connections, n counts from this call (bytes
  /// already read but still delayed by latency are delivered in addition); for new
  /// connections, from their first byte. n == 0 cuts a connection when its next byte arrives
  /// in `dir` (that byte is not forwarded). With Direction::both, each direction may carry n
  /// bytes and the first to reach its limit cuts. Stays in force (also for connections made
  /// later) until clear_faults() or another call replaces it.
  ///
  /// The last bytes are written, then the proxy waits (up to kCutDrainTimeout) until the
  /// kernel has sent them before it resets: a reset discards unsent data, which would make
  /// the cut point inexact.
  void cut_after_bytes(std::size_t n, Direction dir);

  /// After `n` more bytes forwarded in `dir` on the current connections, forwards exactly those
  /// n bytes and then holds back everything later in that direction: it is read and queued but
  /// not delivered, and the sockets stay open, until release_hold() or clear_faults(). A peer
  /// that stalls at a byte-exact point, e.g. between two messages of one protocol exchange
  /// (a server frozen between an error and its ReadyForQuery). New connections are not
  /// affected. With Direction::both, each direction is held after its own n bytes.
  /// A close (FIN) reaching the hold point is delivered unless `including_close`: then it is
  /// held back too, until release_hold() or clear_faults() (a peer whose last message arrived
  /// but whose close has not yet).
  void hold_after_bytes(std::size_t n, Direction dir, bool including_close = false);
  /// Delivers what hold_after_bytes() held back and forwards normally again.
  void release_hold();
  /// Bytes read and held back by hold_after_bytes(), over all connections.
  std::uint64_t held_bytes();

  /// Back to plain forwarding: no latency, no blackhole, no refuse, no cut limit, no hold.
  /// Cuts already triggered still happen and blackholed connections stay dead (see
  /// set_blackhole).
  void clear_faults();

  /// Connections accepted since construction (including refused ones).
  std::uint64_t connections_accepted() const { return accepted_.load(); }
  /// Connections currently open on the client side.
  std::uint64_t active_connections() const { return active_.load(); }
  /// Bytes delivered to the server / to the client since construction.
  std::uint64_t bytes_client_to_server() const { return bytes_c2s_.load(); }
  std::uint64_t bytes_server_to_client() const { return bytes_s2c_.load(); }
  /// Unexpected errors on connections (resets by a peer, upstream connect failures, ...).
  /// Each is counted; the first few are logged to stderr with the connection id and phase.
  std::uint64_t connection_errors() const { return errors_.load(); }
  /// The most bytes ever queued in one direction of one connection (proves the cap holds).
  std::uint64_t peak_queued_bytes() const { return peak_queued_.load(); }

 private:
  struct Faults {
    bool blackhole = false;
    bool refuse = false;
    std::optional<std::size_t> cut_bytes;
    Direction cut_direction = Direction::both;
  };
  struct Impl;
  struct Connection;
  struct Pipe;

  /// Runs `fn` on the proxy thread and waits for it, so that a control call is in effect when
  /// it returns; when the proxy is not running, runs it right here with nullptr. `fn` is
  /// copied (it must capture by value: on a timeout the caller returns before it runs).
  void run_on_proxy(const std::function<void(Impl*)>& fn);

  const std::string upstream_host_;
  const std::uint16_t upstream_port_;
  std::uint16_t port_ = 0;

  /// Serializes start(), stop() and run_on_proxy(), so that a control call never races with
  /// the io_context going away.
  mutable std::mutex lifecycle_mutex_;
  std::atomic<bool> running_{false};

  /// Fault settings read by the proxy thread when it accepts a connection; latency is read
  /// per chunk, hence atomics of its own.
  mutable std::mutex faults_mutex_;
  Faults faults_;
  std::atomic<std::int64_t> latency_c2s_ms_{0};
  std::atomic<std::int64_t> latency_s2c_ms_{0};

  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> active_{0};
  std::atomic<std::uint64_t> bytes_c2s_{0};
  std::atomic<std::uint64_t> bytes_s2c_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> logged_errors_{0};
  std::atomic<std::uint64_t> peak_queued_{0};

  /// The io_context, acceptor and live connections; destroyed and rebuilt around each
  /// stop()/start(), which is what guarantees that nothing of a stopped proxy survives.
  /// Declared after everything its coroutines touch, so that it goes first.
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns its
/// last value. For tests that wait on a proxy counter: a deadline instead of a sleep.
bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace trading_shared::testing

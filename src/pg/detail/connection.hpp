#pragma once
/// @file
/// One libpq connection in non-blocking pipeline mode, driven on an Asio executor.
///
/// The connection is an actor with two coroutines of its own: a writer that flushes what
/// libpq's output buffer still holds when the socket was full (libpq 14-16 push every request
/// out in PQpipelineSync; `send` wakes the writer only when some is left) and a reader that
/// consumes input and hands each request its results, in FIFO order. Every request is sent as
/// its statements followed by one Sync, so that a failure stays with its request.
///
/// A caller that is cancelled after its request was written keeps its FIFO slot; the reader
/// drops that request's results when they come. A caller whose deadline passes poisons the
/// connection: it is closed (with a cancel request sent to the server off the loop), every
/// other request in flight fails with `connection_lost` (`outcome_unknown`), and the pool
/// replaces it. A connection with a result still pending is never reused.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/params.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/sql.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "detail/cancel_sender.hpp"
#include "detail/dsn.hpp"
#include "detail/statement_cache.hpp"

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::pg::detail {

using Executor = boost::asio::any_io_executor;
using Clock = std::chrono::steady_clock;

/// One address to connect to: what libpq gets as `host`, `hostaddr` and `port`.
struct ConnectTarget {
  std::string host;      ///< the name (TLS verification, messages); empty when only an address
  std::string hostaddr;  ///< the resolved address; empty for a Unix socket directory
  std::string port;
  /// "host[ (address)]:port/dbname as user" — for messages; never contains the password.
  std::string description;
};

/// Connection parameters after DSN parsing and host name resolution.
struct ConnectParams {
  /// Every keyword of the DSN but host, hostaddr and port (those are per target).
  std::vector<std::string> keywords;
  std::vector<std::string> values;
  /// The addresses to try, in order: each host of the DSN's host list (`host=a,b`, with one
  /// port or one per host), each with every address it resolves to (F51).
  std::vector<ConnectTarget> targets;
  /// "host:port/dbname as user" — for messages; never contains the password.
  std::string description;
};

/// Parses `dsn` (keyword or URI form) and resolves its hosts with Asio (libpq would block the
/// loop in getaddrinfo); each resolved address becomes a target. Throws
/// `Error(invalid_argument)` for a malformed DSN (its message never quotes the DSN: libpq's
/// parse message would, password included, F50), `Error(connect_failed)` when no host can
/// be resolved.
boost::asio::awaitable<ConnectParams> resolve_dsn(const std::string& dsn,
                                                  const std::string& application_name,
                                                  std::chrono::milliseconds timeout);

/// A request waiting for its results. Lives on the caller's coroutine frame.
struct Request {
  const Statement* statements = nullptr;
  std::size_t count = 0;
  /// The result of statement `i` (after the request is done).
  Result& result(std::size_t i) noexcept { return count == 1 ? single : results[i]; }
  /// A single statement's result lives here, not in `results`: no allocation per query.
  Result single;
  /// Results, one per statement, when there are several.
  std::vector<Result> results;
  /// First error of the request (a server error, or the connection's failure).
  std::exception_ptr error;
  std::size_t received = 0;  // statements whose results have been read
  bool done = false;
  boost::asio::steady_timer* notifier = nullptr;
};

/// libpq's message without trailing line breaks, on one line (for errors and logs).
std::string trim_message(const char* message);
/// The `Error` of a failed result: its SQLSTATE, message, detail and hint.
std::exception_ptr server_error(const PGresult* result, RequestState state);

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(Executor executor);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Connects to `target`, authenticates and enters pipeline mode; then starts the reader and
  /// writer.
  boost::asio::awaitable<void> connect(const ConnectParams& params, const ConnectTarget& target,
                                       std::chrono::milliseconds timeout);

  /// Sends the request's statements and one Sync, then waits for the results until
  /// `deadline`. On deadline the connection is poisoned (see the file comment) and
  /// `Error(request_timeout)` is thrown. On cancellation the request keeps its slot and
  /// `Error(cancelled)` is thrown.
  boost::asio::awaitable<void> run(Request& request, Clock::time_point deadline) {
    send(request);
    co_await await(request, deadline);
  }
  /// Queues the request's statements and its Sync (written by the writer, coalesced with
  /// other callers' requests). Throws when the connection is not open.
  void send(Request& request);
  /// Waits for a request queued with `send`; see `run`.
  boost::asio::awaitable<void> await(Request& request, Clock::time_point deadline);
  /// COPY ... FROM STDIN on this connection (which must have nothing in flight): leaves
  /// pipeline mode and waits for the server to accept data. On any failure the connection
  /// is closed (it would be left in COPY state).
  boost::asio::awaitable<void> copy_start(const char* copy_sql, Clock::time_point deadline);
  /// Sends one chunk of COPY data (flow-controlled by the socket).
  boost::asio::awaitable<void> copy_send(std::string_view data, Clock::time_point deadline);
  /// Ends the COPY, reads its result, re-enters pipeline mode; returns the rows copied.
  boost::asio::awaitable<std::int64_t> copy_end(Clock::time_point deadline);

  /// Asks the server (off the loop) to cancel what this connection is running.
  void send_cancel_request() noexcept;
  /// Bound of a cancel request (default 5 s): one that has not completed by then is given up
  /// and the connection discarded (see `watchdog`); the pool passes its `connect_timeout`
  /// (a cancel request is a connection of its own).
  void set_cancel_timeout(std::chrono::milliseconds timeout) noexcept { cancel_timeout_ = timeout; }
  /// Gives up a request's slot: its results will be read and dropped.
  void abandon(Request& request) noexcept;
  /// Keeps up to `size` statements (with parameters) prepared under a name on this
  /// connection, so that the server parses and plans each of them once (0: off, every
  /// statement unnamed). See `PostgresConfig::statement_cache_size`.
  void set_statement_cache(std::size_t size) noexcept { statements_.set_capacity(size); }

  /// Closes the socket at once: fails every request in flight with `error`, stops the reader
  /// and writer. Idempotent.
  void close(std::error_code error = make_error_code(errc::client_closed)) noexcept;
  /// Awaits the end of the reader and writer after close().
  boost::asio::awaitable<void> wait_closed();

  bool open() const noexcept { return conn_ != nullptr && !broken_; }
  bool broken() const noexcept { return broken_; }
  std::size_t in_flight() const noexcept { return inflight_.size(); }
  /// A cancel request was sent and has not completed (nor been given up) yet.
  bool cancel_in_progress() const noexcept { return cancel_ && !cancel_->done.load(); }
  /// A COPY is under way (between copy_start and the end of copy_end).
  bool copying() const noexcept { return copying_; }
  /// Backend PID (for pg_terminate_backend in tests and cancel requests).
  int backend_pid() const noexcept { return backend_pid_; }
  const std::string& description() const noexcept { return description_; }
  /// Bumped on every completed request: lets the pool tell a busy connection from a stuck one.
  std::uint64_t completed() const noexcept { return completed_; }

 private:
  boost::asio::awaitable<void> wait(boost::asio::posix::stream_descriptor::wait_type type,
                                    Clock::time_point deadline);
  /// Waits for readiness until `deadline` (Error(request_timeout) after it).
  boost::asio::awaitable<void> wait_io(boost::asio::posix::stream_descriptor::wait_type type,
                                       Clock::time_point deadline);
  boost::asio::awaitable<void> flush_all(Clock::time_point deadline);
  /// Reads the rest of a command's results after its error (up to the NULL that ends them)
  /// without blocking: waits for the socket, never in PQgetResult (F52).
  boost::asio::awaitable<void> drain_command(Clock::time_point deadline);
  boost::asio::awaitable<void> reader();
  boost::asio::awaitable<void> watchdog();
  /// Level-triggered readiness check (poll with zero timeout).
  bool readable_now() const noexcept;
  boost::asio::awaitable<void> writer();
  void start_io();
  void wake_writer() noexcept;
  /// Reads every result available without blocking; false when the connection broke.
  bool drain_results() noexcept;
  /// After the connection failed: gives the request at the front a server error libpq had
  /// already read (buffered) but not parsed, if there is one.
  void keep_buffered_server_error() noexcept;
  void complete_front() noexcept;
  /// When every request in flight was abandoned, the server is running one of them: cancel
  /// it (once), so that it does not run to its end for nobody (F09).
  void cancel_if_only_abandoned() noexcept;
  /// Called by the watchdog: a cancel request still pending after `cancel_timeout_` (a black
  /// hole, a frozen server), or one that failed or was dropped while an abandoned statement
  /// still runs, leaves the connection unable to take work: it is discarded (the pool
  /// replaces it) instead of being kept, taking nothing, for as long as the request hangs.
  void check_cancel() noexcept;
  void fail(std::error_code error, RequestState state, std::string_view what) noexcept;
  std::exception_ptr connection_error(std::error_code code, RequestState state,
                                      std::string_view what) const;

  /// Sends the statements (named through the cache, or unnamed) and recognises the cache's
  /// Parse results among the results read.
  StatementCache statements_;

  Executor executor_;
  PGconn* conn_ = nullptr;
  std::optional<boost::asio::posix::stream_descriptor> socket_;
  core::AsyncEvent writer_wake_;
  /// Notified when the connection fails: ends the watchdog's period at once.
  core::AsyncEvent broken_event_;
  static constexpr std::chrono::milliseconds kWatchdogPeriod{100};
  bool reader_waiting_ = false;
  std::uint64_t watchdog_wakeups_ = 0;
  core::AsyncEvent io_done_;  // notified when the last I/O coroutine ends
  int io_running_ = 0;
  bool flush_needed_ = false;
  std::size_t abandoned_ = 0;             // null entries in inflight_
  std::shared_ptr<CancelTicket> cancel_;  // the last cancel request sent, if any
  Clock::time_point cancel_sent_at_{};
  std::chrono::milliseconds cancel_timeout_{5000};
  bool copying_ = false;
  bool broken_ = false;
  int backend_pid_ = 0;
  std::uint64_t completed_ = 0;
  std::string description_;
  /// Requests sent and not yet answered, in order; null = abandoned by its caller.
  std::deque<Request*> inflight_;
  /// Consecutive NULLs from PQgetResult: a second one means "nothing more buffered".
  bool last_was_null_ = false;
  std::function<void()> on_broken_;
  std::function<void()> on_ready_;
  bool cancel_done_reported_ = false;  // on_ready_ was called for the current cancel_
  /// Calls on_ready_ when the connection takes work (again).
  void notify_ready() noexcept;

 public:
  /// Called once when the connection breaks or is poisoned (the pool replaces it).
  void set_on_broken(std::function<void()> f) { on_broken_ = std::move(f); }
  /// Called when the connection may take work again after it could not (an abandoned
  /// statement ended, a cancel request completed): the pool hands it to waiting callers.
  void set_on_ready(std::function<void()> f) { on_ready_ = std::move(f); }
  /// Whether new statements may be routed here: open, and no abandoned request is still
  /// running (a caller that gave up on a slow statement must not hold up the next ones),
  /// and no cancel request is still on its way (it could hit the next statement).
  bool accepting() const noexcept {
    return open() && abandoned_ == 0 && (!cancel_ || cancel_->done.load());
  }
};

}  // namespace trading_shared::pg::detail

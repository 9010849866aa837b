#pragma once
/// @file
/// The connection pool of a `PostgresClient` (internal): acquire, dispatch to waiters,
/// reservations for waiting transactions, maintenance (refill, replacement of broken
/// connections) and the opening of connections.
///
/// `BasicPool` is a template over its slot type, so that its logic runs without a server: the
/// client instantiates it with `Slot` (a libpq `Connection`, src/pg/detail/pool.cpp), the unit
/// tests with a fake connection (tests/unit/pg_pool_test.cpp). What a slot's connection must
/// offer: `open()`, `accepting()`, `in_flight()`, `cancel_in_progress()`, `backend_pid()`,
/// `close(std::error_code)`, `awaitable<void> wait_closed()`, `send_cancel_request()`,
/// `set_on_broken(std::function<void()>)`, `set_on_ready(std::function<void()>)`.
///
/// Shared statements share a connection (pipelined, up to `max_pipeline_depth` in flight);
/// a transaction or COPY leases one exclusively. Callers that find no capacity wait in one
/// FIFO queue (bounded by `max_waiters`) until `dispatch` grants them a connection, their
/// deadline passes (`acquire_timeout`, or the connect error when the pool has no open
/// connection at all), the pool is closed (`client_closed`), or they are cancelled. While an
/// exclusive caller waits, one connection is kept free of new shared statements so that it
/// drains (F47).

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "detail/connection.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::pg::detail {

/// One connection of the client's pool.
struct Slot {
  std::shared_ptr<Connection> connection;
  /// Leased to a transaction or COPY.
  bool exclusive = false;
  /// Reserved by one waiting transaction or COPY (its waiter's `reserved`): no new shared
  /// statements, so that it drains. Ends when that waiter stops waiting, however it stops.
  bool draining = false;
  std::optional<core::CircuitBreakerPermit> copy_permit;  // held while a COPY runs
};

template <class SlotT>
class BasicPool {
 public:
  using Clock = std::chrono::steady_clock;
  using Conn = typename decltype(std::declval<SlotT&>().connection)::element_type;
  /// Opens one connection within the timeout (throws on failure).
  using Connector =
      std::function<boost::asio::awaitable<std::shared_ptr<Conn>>(std::chrono::milliseconds)>;

  /// `config` and `random` (the reconnect backoff's jitter) must outlive the pool (the
  /// client's). `description` names the server in messages (never the password).
  BasicPool(boost::asio::any_io_executor executor, const PostgresConfig& config,
            core::RandomSource& random, std::string description, Connector connector);
  ~BasicPool();
  BasicPool(const BasicPool&) = delete;
  BasicPool& operator=(const BasicPool&) = delete;

  /// The object whose lifetime the connections' callbacks check before they touch the pool
  /// (a connection may outlive it: its I/O coroutines hold it). Set before `adopt`.
  void set_owner(std::weak_ptr<void> owner) noexcept { owner_ = std::move(owner); }

  // ---- opening
  /// Opens one connection through the connector (counted in `connects`/`connect_failures`).
  boost::asio::awaitable<std::shared_ptr<Conn>> open(std::chrono::milliseconds timeout);
  /// Takes an open connection into the pool.
  void adopt(std::shared_ptr<Conn> connection);

  // ---- maintenance
  /// Whether the pool serves (the client is running): the maintenance runs while it does,
  /// and a connection lost meanwhile is counted as discarded.
  void set_running(bool running) noexcept { running_ = running; }
  bool running() const noexcept { return running_; }
  /// Keeps `min_size` connections open, opens more (up to `max_size`) while callers wait,
  /// closes retired connections. Opens through `core::reconnect`: a failed connect is
  /// followed by a backoff delay that only `stop_maintenance` cuts short (F34). Returns when
  /// the pool stops running and it is woken (`stop_maintenance`).
  boost::asio::awaitable<void> maintain();
  /// Cuts the maintenance's waits short (it ends when the pool no longer runs).
  void stop_maintenance() noexcept;

  // ---- leasing
  /// A connection for one shared statement (`exclusive` false) or a lease (true), waiting
  /// until `deadline` at most. Throws `queue_full`, `acquire_timeout`, `client_closed`,
  /// `cancelled` or the connect error (no open connection: the server is unreachable).
  /// `granted_at` (optional): set to the time of the grant when the caller had to wait (left
  /// alone when a connection was free at once).
  boost::asio::awaitable<SlotT*> acquire(bool exclusive, Clock::time_point deadline,
                                         Clock::time_point* granted_at = nullptr);
  /// Where each acquire's wait goes, in seconds (0 when a connection was free at once); null:
  /// not timed.
  void set_acquire_wait(core::Histogram* histogram) noexcept { acquire_wait_ = histogram; }
  /// Grants free capacity to the waiters, in order.
  void dispatch() noexcept;
  /// Ends a lease (a connection that broke meanwhile leaves the pool).
  void release_exclusive(SlotT* slot) noexcept;
  /// Closes a connection whose state is unknown (cancelled transaction, failed COPY).
  void discard(SlotT* slot, std::string_view why) noexcept;

  // ---- closing
  /// Fails every waiter with `client_closed`.
  void fail_all_waiters_closed() noexcept;
  /// Closes every connection now (in-flight work fails with `client_closed`).
  void close_all_connections() noexcept;
  /// Every connection, in the pool or retired (close awaits their I/O).
  std::vector<std::shared_ptr<Conn>> all_connections() const;
  /// Forgets every connection (after they were closed).
  void clear() noexcept;

  // ---- observation
  std::size_t size() const noexcept { return slots_.size(); }
  std::size_t waiting() const noexcept { return waiters_.size(); }
  bool has_open_connection() const noexcept;
  /// Fills the pool's part of `stats` (connections, leases, waiters, counters).
  void add_stats(PostgresStats& stats) const;
  std::vector<int> backend_pids() const;
  const std::vector<std::unique_ptr<SlotT>>& slots() const noexcept { return slots_; }

 private:
  /// A caller waiting for a connection (on its own coroutine frame).
  struct Waiter {
    bool exclusive = false;
    SlotT* granted = nullptr;
    /// The connection this (exclusive) waiter keeps free of new shared statements, if any.
    SlotT* reserved = nullptr;
    bool closed = false;
    /// Set when the waiter is failed before its deadline (the server is unreachable).
    std::exception_ptr failure;
    boost::asio::steady_timer* notifier = nullptr;
  };

  SlotT* pick(bool exclusive) noexcept;
  /// Removes `waiter` from the queue (if there) and ends its reservation.
  void forget(Waiter& waiter) noexcept;
  /// Gives a reservation to the first exclusive waiter when none holds one.
  void reserve_for_next() noexcept;
  /// Ends the reservation of `slot` (it leaves the pool or is granted to another waiter).
  void unreserve(SlotT* slot) noexcept;
  void retire(SlotT* slot) noexcept;
  /// Whether the maintenance should open a connection: fewer than `min_size` (at least one),
  /// or callers wait and the pool is below `max_size` (counting the connection being opened).
  bool connection_needed() const noexcept;
  /// Closes the retired connections and waits for their I/O to end.
  boost::asio::awaitable<void> close_retired();
  /// One attempt of the maintenance's `core::reconnect`: opens connections (`timeout` each)
  /// while they are needed; throws the first connect error. Resets `backoff` after each
  /// connection opened.
  boost::asio::awaitable<void> open_needed(std::chrono::milliseconds timeout,
                                           core::Backoff& backoff);
  std::exception_ptr unreachable_error() const;
  void fail_waiters_if_unreachable() noexcept;
  /// Ends every wait: with `failure`, or with `client_closed` when it is null.
  void fail_waiters(const std::exception_ptr& failure) noexcept;
  void on_broken(Conn* connection) noexcept;

  boost::asio::any_io_executor executor_;
  const PostgresConfig& config_;
  core::RandomSource& random_;
  std::string description_;
  Connector connector_;
  std::weak_ptr<void> owner_;
  bool running_ = false;
  /// Notified when the maintenance may have work: a connection retired, a caller waits.
  core::AsyncEvent maintain_wake_;
  /// Notified by stop_maintenance(): `core::reconnect`'s wake, so that it ends the reconnect
  /// backoff, which nothing else cuts (F34).
  core::AsyncEvent maintain_stop_;
  std::size_t opening_ = 0;
  std::vector<std::unique_ptr<SlotT>> slots_;
  std::vector<std::shared_ptr<Conn>> retired_;
  std::deque<Waiter*> waiters_;
  core::Histogram* acquire_wait_ = nullptr;
  std::size_t exclusive_waiting_ = 0;  // exclusive waiters in waiters_
  std::size_t shared_waiting_ = 0;     // shared waiters in waiters_
  /// The maintenance's last failed connect attempt; null after a successful one.
  std::exception_ptr last_connect_failure_;
  std::uint64_t connects_ = 0;
  std::uint64_t connect_failures_ = 0;
  std::uint64_t discarded_ = 0;
};

/// The client's pool.
using Pool = BasicPool<Slot>;
extern template class BasicPool<Slot>;

/// Opens one libpq connection to `config.dsn`, trying every address of the DSN within
/// `timeout` (F51); the pool's connector.
boost::asio::awaitable<std::shared_ptr<Connection>> open_connection(
    boost::asio::any_io_executor executor, const PostgresConfig& config,
    const std::string& description, std::chrono::milliseconds timeout);

}  // namespace trading_shared::pg::detail

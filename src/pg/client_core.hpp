#pragma once
/// @file
/// The state of a `PostgresClient` and the work on it (internal).
///
/// The public `PostgresClient` holds a `std::shared_ptr<ClientCore>`; everything that can run
/// after a call returns holds one too: the pool's maintenance task (through its completion
/// handler), every operation a caller started (a keep-alive parameter of each coroutine, taken
/// when the call is made), and the connections' callbacks (a weak pointer: a connection may
/// outlive the core). So a client destroyed without a completed `close()` (a failed start, a
/// close cut short by its caller's timeout) leaves nothing that touches freed memory:
/// `~PostgresClient` calls `abandon()`, which fails what waits, cancels what runs, closes every
/// socket, and the core goes when the last of that work has ended (F42).

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>
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
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::pg::detail {

/// One connection of the pool.
struct Slot {
  std::shared_ptr<Connection> connection;
  /// Leased to a transaction or COPY.
  bool exclusive = false;
  /// Reserved by one waiting transaction or COPY (its `Waiter::reserved`): no new shared
  /// statements, so that it drains. Ends when that waiter stops waiting, however it stops.
  bool draining = false;
  std::optional<core::CircuitBreakerPermit> copy_permit;  // held while a COPY runs
};

/// A caller waiting for a connection (on its own coroutine frame).
struct Waiter {
  bool exclusive = false;
  Slot* granted = nullptr;
  /// The connection this (exclusive) waiter keeps free of new shared statements, if any.
  Slot* reserved = nullptr;
  bool closed = false;
  /// Set when the waiter is failed before its deadline (the server is unreachable).
  std::exception_ptr failure;
  boost::asio::steady_timer* notifier = nullptr;
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  using Clock = std::chrono::steady_clock;
  /// Every coroutine of the core takes one as a parameter: its frame keeps the core alive
  /// from the call until it ends, whatever happens to the PostgresClient.
  using Keep = std::shared_ptr<ClientCore>;
  enum class State : std::uint8_t { created, starting, running, closing, closed };

  ClientCore(boost::asio::any_io_executor executor, PostgresConfig config);
  ~ClientCore();
  ClientCore(const ClientCore&) = delete;
  ClientCore& operator=(const ClientCore&) = delete;

  /// The PostgresClient is being destroyed: when it was not closed, fail the waiters, cancel
  /// transaction bodies and the maintenance, and close every socket now (logged).
  void abandon() noexcept;
  /// Fails the waiters, cancels transaction bodies, the maintenance and server-side work,
  /// closes every socket; the client is closed. Nothing awaited (abandon(), a cut close()).
  void shut_down_now() noexcept;

  // ---- lifecycle
  boost::asio::awaitable<void> start(Keep keep);
  boost::asio::awaitable<void> close(Keep keep);

  // ---- statements
  boost::asio::awaitable<Result> run_single(Keep keep, QueryOptions options, Sql sql,
                                            ParamBuffer params);
  boost::asio::awaitable<std::vector<PipelineResult>> pipeline(Keep keep, const Pipeline& batch,
                                                               PipelineMode mode,
                                                               QueryOptions options);
  boost::asio::awaitable<Slot*> begin_copy(Keep keep, std::string sql, QueryOptions options);
  boost::asio::awaitable<void> copy_chunk(Keep keep, Slot* slot, const CopyBuffer& buffer,
                                          QueryOptions options);
  boost::asio::awaitable<std::int64_t> end_copy(Keep keep, Slot* slot, QueryOptions options);
  void finish_copy(Slot* slot, const std::exception_ptr& failure) noexcept;

  // ---- transactions
  boost::asio::awaitable<Slot*> begin_transaction(Keep keep, const TransactionOptions& options);
  boost::asio::awaitable<void> commit_transaction(Keep keep, Slot* slot,
                                                  const TransactionOptions& options);
  boost::asio::awaitable<void> rollback_transaction(Keep keep, Slot* slot);
  void discard(Slot* slot, std::string_view why) noexcept;
  void release_exclusive(Slot* slot) noexcept;

  // ---- accounting
  void check_running() const;
  void check_session_state(Sql sql) const;
  void record(core::CircuitBreakerPermit& permit, const std::exception_ptr& error) noexcept;
  void enter() noexcept;  // an operation enters the client (close waits for it to leave)
  void leave() noexcept;
  [[noreturn]] void throw_closed_during_body() const;
  std::chrono::milliseconds statement_timeout(std::chrono::milliseconds requested) const noexcept {
    return requested.count() > 0 ? requested : config_.statement_timeout;
  }
  Clock::time_point deadline_for(std::chrono::milliseconds timeout) const;
  /// `given` (or the config's policy) with every attempt given at least one statement's
  /// deadline (`statement_timeout` of the call + network margin), F48.
  core::RetryPolicy retry_policy(const std::optional<core::RetryPolicy>& given,
                                 std::chrono::milliseconds statement_timeout) const;

  PostgresStats stats() const;
  std::vector<int> backend_pids() const;

  // ---- state (the core is internal: PostgresClient and Transaction use it directly)
  boost::asio::any_io_executor executor_;
  PostgresConfig config_;
  core::DefaultRandom random_;
  /// `mutable`: reading the state may move it from open to half-open (lazily, by time).
  mutable core::CircuitBreaker breaker_;
  State state_ = State::created;
  std::exception_ptr start_error_;
  boost::asio::steady_timer state_changed_;  // cancelled on every state change
  boost::asio::steady_timer maintain_wake_;
  boost::asio::steady_timer maintain_backoff_;
  /// Cancelled by close() when close_timeout has passed (or by abandon()): ends transaction
  /// bodies that are still running (they may wait on anything, not only on the database).
  boost::asio::steady_timer hard_stop_;
  boost::asio::steady_timer idle_changed_;  // cancelled when active work drops
  bool maintain_running_ = false;
  std::size_t opening_ = 0;
  std::size_t active_ = 0;  // operations inside the client (close waits for them)
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::shared_ptr<Connection>> retired_;
  std::deque<Waiter*> waiters_;
  std::size_t exclusive_waiting_ = 0;  // exclusive waiters in waiters_
  std::size_t shared_waiting_ = 0;     // shared waiters in waiters_
  /// The maintenance's last failed connect attempt; null after a successful one.
  std::exception_ptr last_connect_failure_;
  PostgresStats counters_;
  std::string description_;

 private:
  boost::asio::awaitable<void> start_once();
  boost::asio::awaitable<void> maintain(Keep keep);
  /// close() after it refused new work: waits for in-flight work, then closes in order.
  boost::asio::awaitable<void> close_in_order();
  /// Opens one connection, trying every address of the DSN within `timeout` (F51).
  boost::asio::awaitable<std::shared_ptr<Connection>> open_connection(
      std::chrono::milliseconds timeout);
  void adopt(std::shared_ptr<Connection> connection);
  boost::asio::awaitable<Slot*> acquire(bool exclusive, Clock::time_point deadline);
  Slot* pick(bool exclusive) noexcept;
  void dispatch() noexcept;
  /// Removes `waiter` from the queue (if there) and ends its reservation.
  void forget(Waiter& waiter) noexcept;
  /// Gives a reservation to the first exclusive waiter when none holds one.
  void reserve_for_next() noexcept;
  /// Ends the reservation of `slot` (it leaves the pool or is granted to another waiter).
  void unreserve(Slot* slot) noexcept;
  void retire(Slot* slot) noexcept;
  bool has_open_connection() const noexcept;
  std::exception_ptr unreachable_error() const;
  void fail_waiters_if_unreachable() noexcept;
  void fail_all_waiters_closed() noexcept;
  void on_broken(Connection* connection) noexcept;
  /// Closes every connection now (a copy of the list: closing one calls on_broken, which
  /// removes it from slots_).
  void close_all_connections() noexcept;
};

}  // namespace trading_shared::pg::detail

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
///
/// Where the work lives: lifecycle, single statements and pipelines in postgres_client.cpp,
/// COPY in copy.cpp, transactions in transaction.cpp; the connections themselves (acquire,
/// waiters, maintenance, opening) in the pool (detail/pool.hpp), one libpq connection in
/// detail/connection.hpp.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/run_state.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "detail/connection.hpp"
#include "detail/pool.hpp"

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::pg::detail {

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  using Clock = std::chrono::steady_clock;
  /// Every coroutine of the core takes one as a parameter: its frame keeps the core alive
  /// from the call until it ends, whatever happens to the PostgresClient.
  using Keep = std::shared_ptr<ClientCore>;

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

  // ---- state (the core is internal: PostgresClient and Transaction use it directly)
  boost::asio::any_io_executor executor_;
  PostgresConfig config_;
  std::string description_;
  core::DefaultRandom random_;
  /// `mutable`: reading the state may move it from open to half-open (lazily, by time).
  mutable core::CircuitBreaker breaker_;
  /// idle -> starting -> running -> closing -> closed; its event is also notified when the
  /// maintenance ends.
  core::RunState state_;
  /// Notified by close() when close_timeout has passed (or by abandon()): ends transaction
  /// bodies that are still running (they may wait on anything, not only on the database).
  core::AsyncEvent hard_stop_;
  core::AsyncEvent idle_changed_;  // notified when active work drops to none
  bool maintain_running_ = false;
  std::size_t active_ = 0;  // operations inside the client (close waits for them)
  /// The client's counters (the pool keeps its own: connections, connects, discarded).
  PostgresStats counters_;
  Pool pool_;
  core::Histogram* round_trip_ = nullptr;  // PostgresClient::set_histograms

 private:
  boost::asio::awaitable<void> start_once();
  /// close() after it refused new work: waits for in-flight work, then closes in order.
  boost::asio::awaitable<void> close_in_order();
};

}  // namespace trading_shared::pg::detail

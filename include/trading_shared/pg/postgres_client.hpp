#pragma once
/// @file
/// `PostgresClient`: asynchronous, PgBouncer-safe, resilient PostgreSQL client over libpq
/// in non-blocking pipeline mode (docs/postgres.md).
///
/// Bound to one executor and not thread-safe: a multi-threaded service uses one client per
/// thread (or a strand). Every operation is an `awaitable`, has a timeout (defaulted from
/// the config, overridable per call with `QueryOptions`) and honours terminal cancellation.
///
/// Lifecycle is explicit and symmetric: `start()` (idempotent, single-flight, retries until
/// `startup_timeout`) and `close()` (idempotent: refuses new work at once, fails waiters, lets
/// in-flight work finish within `close_timeout`, then cancels it and closes every socket).
/// Services do not call them directly: `lifecycle::ResourceScope` does.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/pg/copy.hpp>
#include <trading_shared/pg/params.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/sql.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace trading_shared::pg {

template <class T>
struct IsOptionalValue : std::false_type {};
template <class T>
struct IsOptionalValue<std::optional<T>> : std::true_type {};

namespace detail {
class Connection;
struct Request;
struct Statement;
/// The client's state, shared with the work it runs (src/pg/client_core.hpp).
class ClientCore;
/// One connection of the pool (src/pg/detail/pool.hpp).
struct Slot;
/// How the inline templates of this header reach the core (below; not for users).
struct ClientAccess;
}  // namespace detail

/// Per-call overrides.
struct QueryOptions {
  /// Statement timeout for this call; zero = the config's `statement_timeout`. The client
  /// gives up after this plus `network_timeout_margin`.
  std::chrono::milliseconds timeout{0};
};

enum class IsolationLevel : std::uint8_t { read_committed, repeatable_read, serializable };

struct TransactionOptions {
  IsolationLevel isolation = IsolationLevel::read_committed;
  bool read_only = false;
  /// Whether running the body twice is harmless. Conflicts (40001, 40P01) and failures
  /// before anything was sent are retried either way; a lost connection (outcome unknown,
  /// including during COMMIT) only when idempotent.
  core::Idempotent idempotent = core::Idempotent::no;
  /// Retry policy of the whole transaction; empty = the config's `retry`.
  std::optional<core::RetryPolicy> retry;
  /// Server-side statement timeout (`SET LOCAL statement_timeout`) and client deadline per
  /// statement; zero = the config's.
  std::chrono::milliseconds statement_timeout{0};
};

/// A row that owns its result (what `query_one` returns).
class OwnedRow {
 public:
  explicit OwnedRow(Result result) noexcept : result_(std::move(result)) {}
  Row row() const { return result_.front(); }
  template <class T>
  T get(std::size_t column) const {
    return row().get<T>(column);
  }
  template <class T>
  T get(std::string_view column) const {
    return row().get<T>(column);
  }
  template <class... T>
  std::tuple<T...> as() const {
    return row().as<T...>();
  }
  const Result& result() const noexcept { return result_; }

 private:
  Result result_;
};

/// How the statements of a `pipeline` relate.
enum class PipelineMode : std::uint8_t {
  /// Each statement has its own Sync: its own implicit transaction and its own outcome;
  /// a failure stays with its statement.
  independent,
  /// One Sync at the end: one implicit transaction. A failure rolls back the statements
  /// before it and aborts those after it.
  atomic,
};

/// A batch of statements sent in one round trip (libpq pipeline mode).
class Pipeline {
 public:
  template <class... Args>
  Pipeline& add(Sql sql, const Args&... args) {
    auto& entry = entries_.emplace_back(sql, ParamBuffer{});
    entry.second.set(args...);
    return *this;
  }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  void clear() noexcept { entries_.clear(); }

 private:
  friend class detail::ClientCore;
  std::vector<std::pair<Sql, ParamBuffer>> entries_;
};

/// The outcome of one statement of a pipeline: a result or an error.
struct PipelineResult {
  Result result;
  std::exception_ptr error;
  bool ok() const noexcept { return !error; }
};

struct PostgresStats {
  std::size_t connections = 0;  ///< open connections in the pool.
  std::size_t exclusive = 0;    ///< connections leased to a transaction.
  std::size_t waiters = 0;      ///< callers waiting for a connection.
  /// Connections kept free of new shared statements for a waiting transaction or COPY (so
  /// that they drain); at most one per such waiter, released when it stops waiting.
  std::size_t reserved = 0;
  std::size_t in_flight = 0;  ///< requests sent and not yet answered.
  /// Open connections with a cancel request on its way to the server (sent off the loop, not
  /// completed yet). Such a connection takes no new statement until the request completes or
  /// is given up after connect_timeout (then the connection is discarded).
  std::size_t cancels_in_progress = 0;
  std::uint64_t connects = 0;  ///< connections opened since start.
  std::uint64_t connect_failures = 0;
  std::uint64_t discarded = 0;      ///< connections discarded as broken or poisoned.
  std::uint64_t queries = 0;        ///< requests completed successfully.
  std::uint64_t failures = 0;       ///< requests that failed (any kind but cancelled).
  std::uint64_t timeouts = 0;       ///< requests that hit their client-side deadline.
  std::uint64_t cancellations = 0;  ///< requests cancelled by their caller.
  /// `failures` by `ErrorKind` (indexed by its value; `cancelled` stays 0).
  std::array<std::uint64_t, 6> failures_by_kind{};
  core::CircuitState breaker = core::CircuitState::closed;
  std::uint64_t breaker_trips = 0;  ///< times the breaker opened since start.
};

namespace detail {
inline boost::asio::awaitable<std::int64_t> affected_rows_of(boost::asio::awaitable<Result> q) {
  const Result result = co_await std::move(q);
  co_return result.affected_rows();
}
inline boost::asio::awaitable<std::optional<OwnedRow>> first_row_of(
    boost::asio::awaitable<Result> q) {
  Result result = co_await std::move(q);
  if (result.empty()) co_return std::nullopt;
  co_return OwnedRow(std::move(result));
}
template <class T>
T first_value(const Result& result) {
  if (result.empty() || result.columns() == 0) {
    if constexpr (IsOptionalValue<T>::value) {
      return std::nullopt;
    } else {
      throw Error(make_error_code(errc::type_mismatch), "query_value: the query returned no rows",
                  RequestState::sent);
    }
  }
  return result.front().template get<T>(std::size_t{0});
}
template <class T>
boost::asio::awaitable<T> first_value_of(boost::asio::awaitable<Result> q) {
  const Result result = co_await std::move(q);
  co_return first_value<T>(result);
}
}  // namespace detail

/// The handle a `transaction` body gets: statements on the transaction's own connection.
class Transaction {
 public:
  // Parameters are encoded when the call is made, not when the awaitable is first resumed:
  // an awaitable may be returned and awaited later (execute_resiliently), after temporary
  // arguments are gone. The same holds for every statement method of PostgresClient.
  template <class... Args>
  boost::asio::awaitable<Result> query(Sql sql, const Args&... args) {
    return run(sql, make_params(args...));
  }
  template <class... Args>
  boost::asio::awaitable<std::int64_t> execute(Sql sql, const Args&... args) {
    return detail::affected_rows_of(run(sql, make_params(args...)));
  }
  template <class... Args>
  boost::asio::awaitable<std::optional<OwnedRow>> query_one(Sql sql, const Args&... args) {
    return detail::first_row_of(run(sql, make_params(args...)));
  }
  template <class T, class... Args>
  boost::asio::awaitable<T> query_value(Sql sql, const Args&... args) {
    return detail::first_value_of<T>(run(sql, make_params(args...)));
  }
  /// COPY ... FROM STDIN (BINARY) inside the transaction, e.g. into a temporary staging table
  /// (`CREATE TEMP TABLE ... ON COMMIT DROP`) that an `INSERT ... SELECT` then merges. Rows
  /// as for `PostgresClient::copy_in`. A server error leaves the transaction to roll back as
  /// usual; any other failure while copying closes the connection (it would be left in COPY
  /// state), so the server rolls the transaction back. `rows` must outlive the call.
  template <class Range>
  boost::asio::awaitable<std::int64_t> copy_in(std::string_view table,
                                               const std::vector<std::string_view>& columns,
                                               const Range& rows);

 private:
  friend struct detail::ClientAccess;
  template <class Range>
  boost::asio::awaitable<std::int64_t> copy_rows(std::string sql, const Range& rows);
  boost::asio::awaitable<void> copy_start(std::string sql);
  boost::asio::awaitable<void> copy_chunk(const CopyBuffer& buffer);
  boost::asio::awaitable<std::int64_t> copy_end();
  void copy_failed(const std::exception_ptr& failure) noexcept;
  std::chrono::steady_clock::time_point copy_deadline() const;
  Transaction(detail::ClientCore& core, detail::Connection& connection,
              std::chrono::milliseconds timeout) noexcept
      : core_(&core), connection_(&connection), timeout_(timeout) {}
  boost::asio::awaitable<Result> run(Sql sql, ParamBuffer params);

  detail::ClientCore* core_;  // kept alive by the transaction that runs the body
  detail::Connection* connection_;
  std::chrono::milliseconds timeout_;
};

namespace detail {

/// What the inline templates of `PostgresClient` and `Transaction` (transaction, copy_in,
/// execute_resiliently) need of the client's core; defined in src/pg, where the core is
/// complete. The templates run on a copy of the client's `core_` taken when the call is made
/// and reach the core only through these functions: an operation never touches the
/// `PostgresClient` after its first suspension (F42).
struct ClientAccess {
  using Core = ClientCore;
  using CorePtr = std::shared_ptr<Core>;

  static core::RandomSource& random(Core& core) noexcept;
  static const PostgresConfig& config_of(const Core& core) noexcept;
  static boost::asio::any_io_executor executor_of(const Core& core) noexcept;
  static core::RetryPolicy retry_policy(const Core& core,
                                        const std::optional<core::RetryPolicy>& given,
                                        std::chrono::milliseconds statement_timeout = {});
  /// check_running(), a breaker permit (or circuit_open), and the operation enters the client.
  static core::CircuitBreakerPermit begin_operation(Core& core);
  /// Records the outcome with the breaker and leaves the client.
  static void end_operation(Core& core, core::CircuitBreakerPermit& permit,
                            const std::exception_ptr& failure) noexcept;
  static boost::asio::awaitable<Slot*> begin_transaction(const CorePtr& core,
                                                         const TransactionOptions& options);
  static boost::asio::awaitable<void> commit_transaction(const CorePtr& core, Slot* slot,
                                                         const TransactionOptions& options);
  static boost::asio::awaitable<void> rollback_transaction(const CorePtr& core, Slot* slot);
  static void discard(Core& core, Slot* slot, std::string_view why) noexcept;
  static void release_exclusive(Core& core, Slot* slot) noexcept;
  static detail::Connection& slot_connection(Slot* slot) noexcept;
  static std::chrono::milliseconds statement_timeout(const Core& core,
                                                     std::chrono::milliseconds requested) noexcept;
  static core::AsyncEvent& hard_stop(Core& core) noexcept;
  static bool closing(const Core& core) noexcept;
  [[noreturn]] static void throw_closed_during_body(const Core& core);
  static boost::asio::awaitable<Slot*> begin_copy(const CorePtr& core, std::string sql,
                                                  QueryOptions options);
  static boost::asio::awaitable<void> copy_chunk(const CorePtr& core, Slot* slot,
                                                 const CopyBuffer& buffer, QueryOptions options);
  static boost::asio::awaitable<std::int64_t> end_copy(const CorePtr& core, Slot* slot,
                                                       QueryOptions options);
  static void finish_copy(Core& core, Slot* slot, const std::exception_ptr& failure) noexcept;

  static constexpr std::size_t kCopyChunkBytes = 1 << 20;
  static std::string copy_statement(std::string_view table,
                                    const std::vector<std::string_view>& columns);

  /// Awaits `op`, cancelling it when close() gives up waiting (close_timeout passed) or the
  /// client is destroyed.
  template <class T>
  static boost::asio::awaitable<T> until_hard_stop(const CorePtr& core,
                                                   boost::asio::awaitable<T> op) {
    namespace asio = boost::asio;
    auto group = asio::experimental::make_parallel_group(
        asio::co_spawn(executor_of(*core), std::move(op), asio::deferred),
        asio::co_spawn(executor_of(*core), hard_stop(*core).wait(), asio::deferred));
    if constexpr (std::is_void_v<T>) {
      auto [order, error, stop_error] =
          co_await group.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
      if (order[0] == 1 && closing(*core)) throw_closed_during_body(*core);
      (void)stop_error;
      if (error) std::rethrow_exception(error);
    } else {
      auto [order, error, value, stop_error] =
          co_await group.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
      if (order[0] == 1 && closing(*core)) throw_closed_during_body(*core);
      (void)stop_error;
      if (error) std::rethrow_exception(error);
      co_return std::move(value);
    }
  }

  template <class F>
  static auto run_transaction(CorePtr core, F fn, TransactionOptions options)
      -> std::invoke_result_t<F, Transaction&>;
  /// One transaction attempt.
  template <class F>
  static auto transaction_attempt(const CorePtr& core, F& fn, const TransactionOptions& options)
      -> std::invoke_result_t<F, Transaction&>;

  template <class Range>
  static boost::asio::awaitable<std::int64_t> copy_rows(CorePtr core, std::string sql,
                                                        const Range& rows, QueryOptions options) {
    Slot* slot = co_await begin_copy(core, std::move(sql), options);
    std::exception_ptr failure;
    std::int64_t copied = 0;
    try {
      CopyBuffer buffer;
      buffer.append_header();
      for (const auto& row : rows) {
        buffer.append_row(row);
        if (buffer.size() >= kCopyChunkBytes) {
          co_await copy_chunk(core, slot, buffer, options);
          buffer.clear();
        }
      }
      buffer.append_trailer();
      co_await copy_chunk(core, slot, buffer, options);
      copied = co_await end_copy(core, slot, options);
    } catch (...) {
      failure = std::current_exception();
    }
    finish_copy(*core, slot, failure);
    if (failure) std::rethrow_exception(failure);
    co_return copied;
  }
};

}  // namespace detail

class PostgresClient {
 public:
  using executor_type = boost::asio::any_io_executor;

  PostgresClient(executor_type executor, PostgresConfig config);
  /// A client still open here fails what waits, cancels what runs and closes its sockets at
  /// once, and logs a warning: call `close()` (or let a `ResourceScope` do it). Its state
  /// lives on until the last of its work has ended, so that destroying a client whose start
  /// failed or whose close was cut short is safe (F42). An operation started before (a
  /// statement, a pipeline, a COPY, a transaction) then ends with `client_closed`; only
  /// `execute_resiliently`, which hands the client itself to its function, must not outlive it.
  ~PostgresClient();
  PostgresClient(const PostgresClient&) = delete;
  PostgresClient& operator=(const PostgresClient&) = delete;

  /// Opens `min_size` connections (at least one), retrying with backoff until
  /// `startup_timeout`; then throws `Error(startup_timeout)` naming host, port and the last
  /// cause (never the password). Bad credentials (directly or through PgBouncer) or a missing
  /// database fail at once (`permanent`). Each connection attempt tries every address of the
  /// DSN (a host list, or a name with several addresses) within `connect_timeout`.
  /// Idempotent; concurrent callers share one start-up.
  /// @par Per-operation cancellation
  /// terminal.
  boost::asio::awaitable<void> start();

  /// Refuses new work at once, fails waiters (`client_closed`), lets in-flight work finish
  /// within `close_timeout`, then fails what is left and closes every socket. Idempotent;
  /// nothing of the client runs after it returns.
  boost::asio::awaitable<void> close();

  /// Runs one statement (pipelined with other callers' statements on a shared connection).
  /// @par Per-operation cancellation
  /// terminal: the caller returns at once with `cancelled`; the statement keeps its place
  /// in the pipeline and its result is dropped.
  template <class... Args>
  boost::asio::awaitable<Result> query(Sql sql, const Args&... args) {
    return run_single(QueryOptions{}, sql, make_params(args...));
  }
  template <class... Args>
  boost::asio::awaitable<Result> query(QueryOptions options, Sql sql, const Args&... args) {
    return run_single(options, sql, make_params(args...));
  }
  /// Runs one statement; returns the number of rows affected.
  template <class... Args>
  boost::asio::awaitable<std::int64_t> execute(Sql sql, const Args&... args) {
    return detail::affected_rows_of(run_single(QueryOptions{}, sql, make_params(args...)));
  }
  template <class... Args>
  boost::asio::awaitable<std::int64_t> execute(QueryOptions options, Sql sql, const Args&... args) {
    return detail::affected_rows_of(run_single(options, sql, make_params(args...)));
  }
  /// The first row, or nothing when the query returned no rows.
  template <class... Args>
  boost::asio::awaitable<std::optional<OwnedRow>> query_one(Sql sql, const Args&... args) {
    return detail::first_row_of(run_single(QueryOptions{}, sql, make_params(args...)));
  }
  /// The first column of the first row. With `T = std::optional<U>`, no row or NULL gives
  /// nullopt; otherwise they throw `Error(type_mismatch)`.
  template <class T, class... Args>
  boost::asio::awaitable<T> query_value(Sql sql, const Args&... args) {
    return detail::first_value_of<T>(run_single(QueryOptions{}, sql, make_params(args...)));
  }

  /// Runs `fn(Transaction&)` between BEGIN and COMMIT on a connection of its own. Rolls
  /// back on any exception; on cancellation the connection is discarded (the server rolls
  /// back). Retries the whole body on `transient_conflict` (40001, 40P01) and on failures
  /// before anything was sent; a connection lost while COMMIT was in flight raises
  /// `commit_outcome_unknown` (`outcome_unknown`), retried only when `idempotent`. Each
  /// attempt gets at least one statement's deadline (`statement_timeout` + network margin)
  /// whatever its share of the retry policy's total budget (F48).
  template <class F>
  auto transaction(F fn, TransactionOptions options = {}) -> std::invoke_result_t<F, Transaction&> {
    // Not a coroutine: the core is taken when the call is made.
    return detail::ClientAccess::run_transaction(core_, std::move(fn), std::move(options));
  }

  /// Runs `fn(PostgresClient&)` under the retry policy: the only place (with `transaction`)
  /// where the client retries. Idempotency is the caller's statement. Each attempt gets at
  /// least one statement's deadline (the config's `statement_timeout` + network margin)
  /// whatever its share of the policy's total budget (F48); a function whose statements use
  /// a longer per-call timeout passes a policy with a `min_attempt_budget` to match.
  /// `fn` gets this client: the client must outlive the call.
  template <class F>
  auto execute_resiliently(F fn, core::Idempotent idempotent,
                           std::optional<core::RetryPolicy> policy = std::nullopt)
      -> std::invoke_result_t<F, PostgresClient&> {
    using Access = detail::ClientAccess;
    co_return co_await core::retry([&](const core::AttemptContext&) { return fn(*this); },
                                   idempotent, Access::retry_policy(*core_, policy),
                                   Access::random(*core_), {"pg.execute_resiliently"});
  }

  /// Bulk load with COPY ... FROM STDIN (BINARY) on a connection of its own; works through
  /// PgBouncer in transaction mode (COPY is one statement). Each element of `rows` is a
  /// `std::tuple` of supported values (bool, int16/32/64, float, double, strings, Bytea,
  /// system_clock time points, std::optional of those). Rows are encoded and sent in chunks
  /// of about 1 MiB. Returns the number of rows copied. Not retried (not idempotent).
  /// `table` and `columns` are identifiers: quoted here, never taken from untrusted input
  /// without care.
  /// Not a coroutine itself: the statement is built before the first suspension, so that
  /// `table` and `columns` need not outlive the call; `rows` must (await the result at
  /// once). GCC 12 cannot keep a braced list inside a `co_await` expression: build `columns`
  /// as a local first.
  template <class Range>
  boost::asio::awaitable<std::int64_t> copy_in(std::string_view table,
                                               const std::vector<std::string_view>& columns,
                                               const Range& rows, QueryOptions options = {}) {
    return detail::ClientAccess::copy_rows(
        core_, detail::ClientAccess::copy_statement(table, columns), rows, options);
  }

  /// Sends every statement of `pipeline` in one round trip on one connection.
  /// Per-statement errors are returned, not thrown (connection-level failures throw).
  boost::asio::awaitable<std::vector<PipelineResult>> pipeline(
      const Pipeline& pipeline, PipelineMode mode = PipelineMode::independent,
      QueryOptions options = {});

  PostgresStats stats() const;
  /// Where the client's timings go, in seconds (e.g. `PostgresMetrics`); null: not timed.
  /// `round_trip`: each statement, pipeline and transaction statement from the moment it has
  /// a connection to its result (failed ones included, once they had a connection).
  /// `acquire_wait`: each wait for a connection (0 when one was free at once). The histograms
  /// must outlive the client or be unset first; call on the client's executor.
  void set_histograms(core::Histogram* round_trip, core::Histogram* acquire_wait) noexcept;
  const PostgresConfig& config() const noexcept;
  executor_type get_executor() const noexcept;
  /// Backend PIDs of the pool's connections (tests use them with pg_terminate_backend).
  std::vector<int> backend_pids() const;

 private:
  boost::asio::awaitable<Result> run_single(QueryOptions options, Sql sql, ParamBuffer params);

  std::shared_ptr<detail::ClientCore> core_;
};

// ---- templates -----------------------------------------------------------------------------

template <class Range>
boost::asio::awaitable<std::int64_t> Transaction::copy_in(
    std::string_view table, const std::vector<std::string_view>& columns, const Range& rows) {
  // Not a coroutine: the statement is built before the first suspension (see copy_in above).
  return copy_rows(detail::ClientAccess::copy_statement(table, columns), rows);
}

template <class Range>
boost::asio::awaitable<std::int64_t> Transaction::copy_rows(std::string sql, const Range& rows) {
  std::exception_ptr failure;
  std::int64_t copied = 0;
  try {
    co_await copy_start(std::move(sql));
    CopyBuffer buffer;
    buffer.append_header();
    for (const auto& row : rows) {
      buffer.append_row(row);
      if (buffer.size() >= detail::ClientAccess::kCopyChunkBytes) {
        co_await copy_chunk(buffer);
        buffer.clear();
      }
    }
    buffer.append_trailer();
    co_await copy_chunk(buffer);
    copied = co_await copy_end();
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    copy_failed(failure);
    std::rethrow_exception(failure);
  }
  co_return copied;
}

template <class F>
auto detail::ClientAccess::run_transaction(CorePtr core, F fn, TransactionOptions options)
    -> std::invoke_result_t<F, Transaction&> {
  co_return co_await core::retry(
      [&](const core::AttemptContext&) { return transaction_attempt(core, fn, options); },
      options.idempotent, retry_policy(*core, options.retry, options.statement_timeout),
      random(*core), {"pg.transaction"});
}

template <class F>
auto detail::ClientAccess::transaction_attempt(const CorePtr& core, F& fn,
                                               const TransactionOptions& options)
    -> std::invoke_result_t<F, Transaction&> {
  using R = typename std::invoke_result_t<F, Transaction&>::value_type;
  core::CircuitBreakerPermit permit = begin_operation(*core);
  Slot* slot = nullptr;
  try {
    slot = co_await begin_transaction(core, options);
  } catch (...) {
    end_operation(*core, permit, std::current_exception());
    throw;
  }
  std::exception_ptr failure;
  bool committed = false;
  std::optional<std::conditional_t<std::is_void_v<R>, int, R>> value;
  try {
    Transaction tx(*core, slot_connection(slot),
                   statement_timeout(*core, options.statement_timeout));
    if constexpr (std::is_void_v<R>) {
      co_await until_hard_stop(core, fn(tx));
    } else {
      value.emplace(co_await until_hard_stop(core, fn(tx)));
    }
    co_await commit_transaction(core, slot, options);
    committed = true;
  } catch (...) {
    failure = std::current_exception();
  }
  if (!committed) {
    if (classify(failure) == ErrorKind::cancelled) {
      // The coroutine is cancelled: nothing more can be awaited. Closing the connection
      // makes the server roll back.
      discard(*core, slot, "transaction cancelled");
    } else {
      try {
        co_await rollback_transaction(core, slot);
      } catch (const std::exception& e) {
        discard(*core, slot, e.what());  // logged there; the body's error is what the caller gets
      }
    }
  }
  release_exclusive(*core, slot);
  end_operation(*core, permit, failure);
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<R>) co_return std::move(*value);
}

}  // namespace trading_shared::pg

#pragma once
/// @file
/// Configuration of `PostgresClient` (docs/postgres.md). An aggregate with
/// documented defaults; the library reads no environment and no files.

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/retry.hpp>

#include <chrono>
#include <cstddef>
#include <string>

namespace trading_shared::pg {

inline constexpr std::size_t kDefaultMinSize = 1;
/// Two connections per process is right behind PgBouncer: throughput comes from
/// pipelining on each connection, not from more connections (the brief's `max_size=2`).
inline constexpr std::size_t kDefaultMaxSize = 2;
inline constexpr std::size_t kDefaultMaxWaiters = 10000;
inline constexpr std::size_t kDefaultMaxPipelineDepth = 256;
inline constexpr std::chrono::milliseconds kDefaultConnectTimeout{5000};
inline constexpr std::chrono::milliseconds kDefaultStartupTimeout{30000};
inline constexpr std::chrono::milliseconds kDefaultAcquireTimeout{5000};
inline constexpr std::chrono::milliseconds kDefaultStatementTimeout{30000};
inline constexpr std::chrono::milliseconds kDefaultNetworkTimeoutMargin{5000};
inline constexpr std::chrono::milliseconds kDefaultCloseTimeout{5000};

struct PostgresConfig {
  /// libpq connection string, keyword form (`host=... port=... dbname=... user=...`) or URI
  /// (`postgresql://user:pass@host:port/db`). Host names are resolved with Asio before
  /// connecting (libpq would resolve them synchronously, blocking the loop). Never logged
  /// with its password.
  std::string dsn;
  /// Connections opened by `start()` and kept open (refilled in the background when lost).
  std::size_t min_size = kDefaultMinSize;
  /// Upper bound on connections.
  std::size_t max_size = kDefaultMaxSize;
  /// Bound on callers waiting for a connection; beyond it `acquire` fails at once with
  /// `queue_full` (backpressure instead of unbounded memory).
  std::size_t max_waiters = kDefaultMaxWaiters;
  /// Single statements from concurrent callers share a connection in pipeline mode, at most
  /// this many in flight per connection.
  std::size_t max_pipeline_depth = kDefaultMaxPipelineDepth;
  /// One TCP connect + startup + authentication.
  std::chrono::milliseconds connect_timeout = kDefaultConnectTimeout;
  /// `start()` retries with backoff until this passes, then throws `startup_timeout`.
  std::chrono::milliseconds startup_timeout = kDefaultStartupTimeout;
  /// Longest wait for a free connection (transactions, COPY) or pipeline slot.
  std::chrono::milliseconds acquire_timeout = kDefaultAcquireTimeout;
  /// Default per-statement timeout (overridable per call). The client gives up after
  /// `statement_timeout + network_timeout_margin`, cancels the query on the server and
  /// discards the connection: a connection with a result still pending is never reused.
  std::chrono::milliseconds statement_timeout = kDefaultStatementTimeout;
  std::chrono::milliseconds network_timeout_margin = kDefaultNetworkTimeoutMargin;
  /// `close()` lets in-flight work finish for this long, then cancels it.
  std::chrono::milliseconds close_timeout = kDefaultCloseTimeout;
  /// Reconnect/refill delays.
  core::BackoffConfig reconnect_backoff{std::chrono::milliseconds(100),
                                        std::chrono::milliseconds(5000), 2.0};
  /// Default policy of `execute_resiliently` and of `transaction` retries.
  core::RetryPolicy retry{};
  /// The endpoint's circuit breaker.
  core::CircuitBreakerConfig breaker{};
  /// Safe behind PgBouncer in transaction mode (the default): unnamed statements only and
  /// no session state: `SET` outside a transaction is refused (use `SET LOCAL` inside
  /// `transaction`), no LISTEN. `false` allows session-level state on direct connections.
  bool pgbouncer_transaction_mode = true;
  /// Statements with parameters (every `query`/`execute`/`pipeline` statement) prepared
  /// under a name and kept, per connection, up to this many: the server parses and plans each
  /// once per connection instead of on every call (pgbench's `-M prepared`; about twice the
  /// select-only throughput on a busy server). 0 (the default): every statement unnamed.
  /// Named statements are session state: needs `pgbouncer_transaction_mode = false` (the
  /// constructor throws `invalid_argument` otherwise), i.e. a direct connection (PgBouncer
  /// 1.18 in transaction mode would hand the statement's server session to other clients).
  /// A statement whose result columns change under it (ALTER TABLE) fails with 0A000
  /// ("cached plan must not change result type") once per connection (and for calls already
  /// queued with the old name); the connection then prepares every statement anew under new
  /// names. The same after the application's DEALLOCATE ALL / DISCARD ALL (26000). The
  /// client's own statements (BEGIN, COMMIT, SET LOCAL) stay unnamed. No eviction: the first
  /// N distinct statements stay named.
  std::size_t statement_cache_size = 0;
  /// `application_name` sent to the server (visible in pg_stat_activity).
  std::string application_name = "trading_shared";
};

}  // namespace trading_shared::pg

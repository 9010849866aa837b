#pragma once
/// @file
/// `AdminServer`: a service's admin HTTP endpoint (docs/lifecycle.md, docs/operations.md).
///
/// - `GET /metrics`: the registry in the Prometheus text format 0.0.4.
/// - `GET /healthz`: 200 `ok` while the service loop's heartbeat is younger than
///   `AdminOptions::stuck_after`, else 503 `event loop stuck for N ms`.
/// - `GET /readyz`: 200 `ready` + one line `name: ok` per readiness check; 503 `not ready` + the
///   service's own state (`starting`, `stopping`) and `name: <reason>` per check.
/// - 404 for any other path, 405 for a method other than GET and HEAD.
///
/// Two threads, nothing shared but atomics and one small snapshot:
/// - The server runs on a thread of its own (its own io_context): a slow or stuck scraper
///   never stalls the service loop. It reads only the heartbeat (an atomic), the readiness
///   snapshot (a string swapped under a mutex once per check interval) and the registry (whose
///   metrics are atomics; its lock is taken to render, never by an update).
/// - On the service loop (the executor given to the constructor), a timer every
///   `check_interval` beats the heartbeat, measures its own lateness
///   (`ts_service_loop_lag_seconds`), runs the samplers and the readiness checks, and publishes
///   the result. The samplers and checks run only there, so they may read loop-owned state.
///
/// `run_daemon` / `run_once` build one when `ServiceOptions::admin.listen` is set; a program
/// with its own loop can build one itself:
///
/// ```cpp
/// lifecycle::AdminServer admin(options, registry, io.get_executor());
/// admin.add_readiness_check("redis", [&] { return redis.stats().connected ? "" : "disconnected";
/// });
/// ...
/// admin.close();  // before the loop ends (its timer keeps io.run() going until then)
/// ```

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace trading_shared::lifecycle {

/// Checks the options of the admin endpoint (a listen address, positive durations,
/// `stuck_after` longer than `check_interval`, at least one connection).
/// @throws core::ConfigError, one line naming the option.
void check_admin_options(const AdminOptions& options);

class AdminServer {
 public:
  /// Binds `options.listen`, starts the server thread and the check timer on `loop`.
  /// @throws core::ConfigError when the options are invalid (`check_admin_options`), the
  /// address is not `host:port` with an IP literal or `localhost`, or it cannot be bound
  /// (in use, not local): one line with the address and the reason.
  AdminServer(const AdminOptions& options, core::MetricsRegistry& registry,
              boost::asio::any_io_executor loop);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  /// `close()`. Must run on the loop's thread, or after the loop has stopped.
  ~AdminServer();

  /// The bound port (useful with port 0).
  std::uint16_t port() const noexcept;
  /// `http://127.0.0.1:PORT` (IPv6 hosts in brackets).
  std::string url() const;

  // ---- on the loop's thread only ------------------------------------------------------------

  /// Runs `sample` on the loop every check interval (copy a client's stats into the registry).
  /// It must not block; an exception is logged (first of a run of failures) and counted in
  /// `ts_service_sampler_failures_total`.
  void add_sampler(std::function<void()> sample);
  /// A dependency of `/readyz`: `check` returns "" when fine, else the reason. Must not block;
  /// an exception counts as not ready, with its message as the reason.
  void add_readiness_check(std::string name, std::function<std::string()> check);
  /// The service's own state, judged before the checks: "" when up, else the line `/readyz`
  /// shows ("starting", "stopping"). Unset: up.
  void set_state(std::function<std::string()> state);
  /// Drops every sampler, readiness check and the state function (their owner is going away);
  /// `/readyz` then answers "not ready" with `stopping` until closed.
  void clear_checks();
  /// Runs the samplers and checks and publishes at once (e.g. when a stop begins, so that
  /// `/readyz` says `stopping` without waiting for the next tick).
  void check_now();
  /// Stops the check timer (the loop can then run out of work), stops the server thread and
  /// joins it; open admin connections are dropped. Idempotent.
  void close();

 private:
  struct Shared;
  class Server;
  void schedule();
  void tick();
  void publish();

  struct Loop;
  std::shared_ptr<Shared> shared_;  ///< what both threads see
  std::unique_ptr<Loop> loop_;      ///< the loop's side: timer, samplers, checks
  std::unique_ptr<Server> server_;  ///< the server thread
};

}  // namespace trading_shared::lifecycle

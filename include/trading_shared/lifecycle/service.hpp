#pragma once
/// @file
/// `run_daemon` and `run_once`: the `main()` of every service (docs/lifecycle.md).
///
/// They build the io_context, give the body a `ServiceContext` whose `scope()` starts and
/// closes the resources, install SIGINT/SIGTERM handlers, run the body, close everything in
/// reverse order and return the process exit code:
///
/// | how it ended | run_daemon | run_once |
/// |---|---|---|
/// | the body returned | 0 | 0 |
/// | first SIGINT/SIGTERM: the body is cancelled, resources closed (graceful) | 0 | 1 |
/// | second signal, or the graceful stop overran `shutdown_timeout`: immediate | 1 | 1 |
/// | the options' budgets cannot add up (`check_budgets`), found before anything runs | 2 | 2 |
/// | run_once's `deadline` passed: cancelled, then as a signal | - | 1 |
/// | the body threw `core::ConfigError` (bad configuration) | 2 | 2 |
/// | the body threw anything else (logged once, with the service name) | 1 | 1 |
///
/// An immediate stop abandons what is still running: by default the process exits at once
/// (`ServiceOptions::exit_process_on_immediate_stop`).

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/lifecycle/resource_scope.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace trading_shared::lifecycle {

/// One resource the body will open, with the longest its close may legitimately take (its
/// own close bound: e.g. a client's close_timeout plus what it does after it). For the stop
/// budget (`check_budgets`).
struct CloseBudget {
  std::string name;
  std::chrono::milliseconds bound{0};
};

/// The admin HTTP endpoint of a service (docs/operations.md): `/metrics` (Prometheus text
/// format), `/healthz` (the event loop answers), `/readyz` (dependencies confirmed, no write
/// path stalled, not stopping). It runs on a thread of its own, so a slow scraper never stalls
/// the service's loop; what it serves comes from atomics the loop updates.
struct AdminOptions {
  /// "host:port" to listen on ("127.0.0.1:9101", "[::1]:9101"); port 0 picks a free port
  /// (`ServiceContext::admin_port()`). Empty: no endpoint.
  std::string listen;
  /// How often the loop runs the samplers and readiness checks and beats its heartbeat:
  /// `/readyz` follows a dependency within one interval.
  std::chrono::milliseconds check_interval{500};
  /// `/healthz` fails (503) when the loop's heartbeat is older than this.
  std::chrono::milliseconds stuck_after{3000};
  /// Bound of one admin request (reading it and writing the answer).
  std::chrono::milliseconds request_timeout{2000};
  /// Admin connections served at once; more are closed at accept.
  std::size_t max_connections = 16;
};

struct ServiceOptions {
  std::string name;  ///< for logs.
  /// The admin endpoint (off unless `admin.listen` is set).
  AdminOptions admin;
  /// Where the service's metrics live; null: `core::MetricsRegistry::global()`.
  core::MetricsRegistry* metrics = nullptr;
  /// Bound of each resource's close (ResourceScope). Default 5 s. A close that passes it is
  /// no longer waited for, but its resource is freed only when the close has ended.
  std::chrono::milliseconds close_timeout{5000};
  /// After the first signal (or run_once's deadline), how long the body and the closes may
  /// take before the stop becomes immediate; also the bound of the closes after a body that
  /// ended by itself. Default 10 s.
  std::chrono::milliseconds shutdown_timeout{10000};
  /// run_once only: overall deadline of the task; zero = none.
  std::chrono::milliseconds deadline{0};
  /// Drain phase of a graceful stop: after the first signal the body is told to stop
  /// (`ServiceContext::stopping()`, `on_stop` callbacks, `until_stopped()` completes) and gets
  /// this long to return by itself (finishing its current batch) before it is cancelled.
  /// Zero (the default): the body is cancelled at once. Counts against `shutdown_timeout`.
  std::chrono::milliseconds drain_timeout{0};
  /// An immediate stop (second signal, overrun shutdown) ends the process at once with
  /// `std::_Exit(1)` after flushing the logs: the work it abandons (suspended coroutines, open
  /// clients) is not unwound, since unwinding abandoned frames in arbitrary order is exactly
  /// what an immediate stop cannot do safely. False (tests that run the runner in-process):
  /// `run_*` returns 1 and the abandoned frames are destroyed with the io_context.
  bool exit_process_on_immediate_stop = true;
  /// The resources the body opens, each with its close bound. run_daemon / run_once check
  /// at start that the budgets add up (`check_budgets`) and return 2 when they do not.
  std::vector<CloseBudget> closes;
};

/// Checks that a stop can succeed within its budgets (F54): every duration positive (drain
/// and deadline may be zero), each close bound in `closes` within `close_timeout` (the scope
/// would stop waiting for a close that may legitimately take longer), `drain_timeout` below
/// `shutdown_timeout`, and `drain_timeout` plus every close bound within `shutdown_timeout`
/// (otherwise a graceful stop that takes its full budgets becomes an immediate one, exit 1).
/// @throws core::ConfigError, one line with the figures.
void check_budgets(const ServiceOptions& options);

/// Readiness and liveness, for a health endpoint (set by the service's body).
struct HealthState {
  std::atomic<bool> ready{false};  ///< resources started, taking work.
  std::atomic<bool> live{true};    ///< the loop is making progress.
};

class AdminServer;

class ServiceContext {
 public:
  ServiceContext(boost::asio::any_io_executor executor, ResourceScope& scope,
                 core::MetricsRegistry* metrics = nullptr)
      : executor_(std::move(executor)),
        scope_(&scope),
        metrics_(metrics != nullptr ? metrics : &core::MetricsRegistry::global()),
        stopped_(executor_) {}
  ServiceContext(const ServiceContext&) = delete;
  ServiceContext& operator=(const ServiceContext&) = delete;
  /// Drops its samplers and readiness checks from the admin endpoint (they refer to the body).
  ~ServiceContext();
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
  /// Start resources here: `co_await ctx.scope().enter(client, "redis")`.
  ResourceScope& scope() noexcept { return *scope_; }
  /// A stop was requested (signal or deadline): finish or abandon the current step.
  bool stopping() const noexcept { return stopping_; }
  HealthState& health() noexcept { return health_; }
  /// The registry `/metrics` renders.
  core::MetricsRegistry& metrics() noexcept { return *metrics_; }
  /// Runs `sample` on the loop every `AdminOptions::check_interval` while the admin endpoint
  /// is on (copying a client's stats into the registry, for instance). It must not block.
  void add_sampler(std::function<void()> sample);
  /// A dependency of `/readyz`, checked on the loop every check interval: `check` returns an
  /// empty string when the dependency is fine, else why not ("breaker open"). Must not block.
  void add_readiness_check(std::string name, std::function<std::string()> check);
  /// The admin endpoint's bound port (set before the body starts); 0 when it is off.
  std::uint16_t admin_port() const noexcept { return admin_port_; }
  /// Registers a callback run once when a stop begins (e.g. `consumer.stop()`), before the
  /// drain phase. Runs at once when the stop has already begun.
  void on_stop(std::function<void()> callback);
  /// Completes when a stop begins (at once if it has begun). For bodies that only wait.
  boost::asio::awaitable<void> until_stopped();

 private:
  friend class ServiceRunner;
  void begin_stop();
  boost::asio::any_io_executor executor_;
  ResourceScope* scope_;
  bool stopping_ = false;
  HealthState health_;
  core::MetricsRegistry* metrics_;
  std::uint16_t admin_port_ = 0;
  AdminServer* admin_ = nullptr;  ///< the runner's, when the endpoint is on
  std::vector<std::function<void()>> samplers_;
  std::vector<std::pair<std::string, std::function<std::string()>>> readiness_checks_;
  std::vector<std::function<void()>> stop_callbacks_;
  core::AsyncEvent stopped_;  ///< notified when the stop begins (until_stopped)
};

using ServiceBody = std::function<boost::asio::awaitable<void>(ServiceContext&)>;

/// Runs a long-lived service until its body returns or a signal stops it.
int run_daemon(const ServiceOptions& options, ServiceBody body);
/// Runs a task once, under `options.deadline`.
int run_once(const ServiceOptions& options, ServiceBody body);

}  // namespace trading_shared::lifecycle

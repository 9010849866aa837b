// Exporter of PostgresStats (pg/metrics.hpp).
#include <trading_shared/pg/metrics.hpp>

#include <cstddef>
#include <cstdint>

namespace trading_shared::pg {

namespace {

std::string name(std::string_view family, std::string_view client) {
  return core::metric_name(family, {{"client", client}});
}

std::int64_t as_gauge(std::size_t value) noexcept {
  return static_cast<std::int64_t>(value);
}

}  // namespace

PostgresMetrics::PostgresMetrics(core::MetricsRegistry& registry, std::string_view client)
    : connections_(registry.gauge(name("ts_pg_connections", client),
                                  "Open connections in the client's pool.")),
      leased_(registry.gauge(name("ts_pg_connections_leased", client),
                             "Connections leased to a transaction or COPY now.")),
      waiters_(
          registry.gauge(name("ts_pg_waiters", client), "Callers waiting for a connection now.")),
      in_flight_(
          registry.gauge(name("ts_pg_in_flight", client), "Requests sent and not yet answered.")),
      queries_(registry.counter(name("ts_pg_queries_total", client),
                                "Requests (statements, pipelines, transaction steps) that "
                                "completed successfully.")),
      timeouts_(registry.counter(name("ts_pg_timeouts_total", client),
                                 "Requests that reached their client-side deadline.")),
      cancellations_(registry.counter(name("ts_pg_cancellations_total", client),
                                      "Requests cancelled by their caller.")),
      connects_(registry.counter(name("ts_pg_connects_total", client),
                                 "Connections opened by the pool.")),
      connect_failures_(registry.counter(name("ts_pg_connect_failures_total", client),
                                         "Failed connect attempts of the pool.")),
      reconnects_(registry.counter(name("ts_pg_reconnects_total", client),
                                   "Connections lost or discarded as broken; the pool opens a "
                                   "replacement when one is needed.")),
      breaker_state_(
          registry.gauge(name("ts_pg_breaker_state", client),
                         "The client's circuit breaker: 0 closed, 1 half-open, 2 open.")),
      breaker_trips_(registry.counter(name("ts_pg_breaker_trips_total", client),
                                      "Times the client's circuit breaker opened.")),
      round_trip_(registry.histogram(name("ts_pg_round_trip_seconds", client),
                                     "A statement's time on its connection: from the moment it "
                                     "has one to its result.")),
      acquire_wait_(registry.histogram(name("ts_pg_acquire_wait_seconds", client),
                                       "Wait for a pool connection (0 when one was free).")) {
  for (std::size_t i = 0; i < kErrorKinds.size(); ++i) {
    errors_[i] = &registry.counter(
        core::metric_name(
            "ts_pg_errors_total",
            {{"client", client}, {"kind", trading_shared::to_string(kErrorKinds[i])}}),
        "Requests that failed, by error kind (cancellations excluded).");
  }
}

void PostgresMetrics::sample(const PostgresStats& stats) noexcept {
  connections_.set(as_gauge(stats.connections));
  leased_.set(as_gauge(stats.exclusive));
  waiters_.set(as_gauge(stats.waiters));
  in_flight_.set(as_gauge(stats.in_flight));
  queries_.set(stats.queries);
  for (std::size_t i = 0; i < kErrorKinds.size(); ++i) {
    errors_[i]->set(stats.failures_by_kind[static_cast<std::size_t>(kErrorKinds[i])]);
  }
  timeouts_.set(stats.timeouts);
  cancellations_.set(stats.cancellations);
  connects_.set(stats.connects);
  connect_failures_.set(stats.connect_failures);
  reconnects_.set(stats.discarded);
  breaker_state_.set(core::gauge_value(stats.breaker));
  breaker_trips_.set(stats.breaker_trips);
}

std::string PostgresReadiness::check(const PostgresStats& stats) {
  if (stats.connections > 0 || stats.connects > connects_) {
    failing_ = false;
  } else if (stats.connect_failures > connect_failures_) {
    failing_ = true;
  }
  connects_ = stats.connects;
  connect_failures_ = stats.connect_failures;
  if (stats.breaker == core::CircuitState::open) return "breaker open";
  if (failing_) return "cannot connect: no open connection";
  return {};
}

}  // namespace trading_shared::pg

// Exporters of RedisStats and StreamConsumerStats (redis/metrics.hpp).
#include <trading_shared/redis/metrics.hpp>

namespace trading_shared::redis {

namespace {

core::Counter& counter(core::MetricsRegistry& registry, std::string_view family,
                       std::string_view label, std::string_view value, std::string_view help) {
  return registry.counter(core::metric_name(family, {{label, value}}), help);
}

core::Gauge& gauge(core::MetricsRegistry& registry, std::string_view family, std::string_view label,
                   std::string_view value, std::string_view help) {
  return registry.gauge(core::metric_name(family, {{label, value}}), help);
}

std::int64_t as_gauge(std::size_t value) noexcept {
  return static_cast<std::int64_t>(value);
}

}  // namespace

RedisMetrics::RedisMetrics(core::MetricsRegistry& registry, std::string_view client)
    : connected_(gauge(registry, "ts_redis_connected", "client", client,
                       "1 while the client's shared connection is up, else 0.")),
      in_flight_(gauge(registry, "ts_redis_in_flight", "client", client,
                       "Requests written and not yet answered (abandoned ones included).")),
      queued_(gauge(registry, "ts_redis_queued", "client", client,
                    "Requests admitted and not yet written to the connection.")),
      blocking_connections_(gauge(registry, "ts_redis_blocking_connections", "client", client,
                                  "Dedicated connections of blocking commands open now.")),
      commands_(counter(registry, "ts_redis_commands_total", "client", client,
                        "Requests submitted (a pipeline counts once).")),
      replies_(counter(registry, "ts_redis_replies_total", "client", client,
                       "Replies read (each reply of a pipeline counts).")),
      failures_(counter(registry, "ts_redis_failures_total", "client", client,
                        "Requests failed with any error but cancellation (timeouts included).")),
      timeouts_(counter(registry, "ts_redis_timeouts_total", "client", client,
                        "Requests that reached their deadline.")),
      rejected_(counter(registry, "ts_redis_rejected_total", "client", client,
                        "Requests refused at once: queue full, breaker open, client closed.")),
      dropped_replies_(counter(registry, "ts_redis_dropped_replies_total", "client", client,
                               "Replies of abandoned requests, read and dropped.")),
      reconnects_(counter(registry, "ts_redis_reconnects_total", "client", client,
                          "Losses of the shared connection, each followed by a reconnect.")),
      connect_failures_(counter(registry, "ts_redis_connect_failures_total", "client", client,
                                "Failed connect attempts of the shared connection.")),
      breaker_state_(gauge(registry, "ts_redis_breaker_state", "client", client,
                           "The client's circuit breaker: 0 closed, 1 half-open, 2 open.")),
      breaker_trips_(counter(registry, "ts_redis_breaker_trips_total", "client", client,
                             "Times the client's circuit breaker opened.")),
      round_trip_(registry.histogram(
          core::metric_name("ts_redis_round_trip_seconds", {{"client", client}}),
          "Round trip of a request of the shared connection: from its write to the read of "
          "its last reply.")) {}

void RedisMetrics::sample(const RedisStats& stats) noexcept {
  connected_.set(stats.connected ? 1 : 0);
  in_flight_.set(as_gauge(stats.in_flight));
  queued_.set(as_gauge(stats.queued));
  blocking_connections_.set(as_gauge(stats.blocking_connections));
  commands_.set(stats.commands);
  replies_.set(stats.replies);
  failures_.set(stats.failures);
  timeouts_.set(stats.timeouts);
  rejected_.set(stats.rejected);
  dropped_replies_.set(stats.dropped_replies);
  reconnects_.set(stats.disconnects);
  connect_failures_.set(stats.connect_failures);
  breaker_state_.set(core::gauge_value(stats.breaker));
  breaker_trips_.set(stats.breaker_trips);
}

std::string readiness(const RedisStats& stats) {
  if (stats.breaker == core::CircuitState::open) return "breaker open";
  if (!stats.connected) return "not connected";
  return {};
}

StreamConsumerMetrics::StreamConsumerMetrics(core::MetricsRegistry& registry,
                                             std::string_view group)
    : delivered_(counter(registry, "ts_stream_consumer_delivered_total", "group", group,
                         "Entries passed to the handler (each delivery counts).")),
      acked_(counter(registry, "ts_stream_consumer_acked_total", "group", group,
                     "Entries acknowledged after the handler succeeded.")),
      handler_errors_(counter(registry, "ts_stream_consumer_handler_errors_total", "group", group,
                              "Handler failures (the entries stay pending).")),
      claimed_(counter(registry, "ts_stream_consumer_claimed_total", "group", group,
                       "Entries taken over from other consumers (XAUTOCLAIM).")),
      dead_lettered_(counter(registry, "ts_stream_consumer_dead_lettered_total", "group", group,
                             "Entries moved to the dead-letter stream.")),
      deleted_(counter(registry, "ts_stream_consumer_deleted_total", "group", group,
                       "Pending entries found trimmed or deleted.")),
      read_errors_(counter(registry, "ts_stream_consumer_read_errors_total", "group", group,
                           "Failed reads or acknowledgements (retried after a pause).")),
      pending_(gauge(registry, "ts_stream_consumer_pending", "group", group,
                     "Entries delivered to the group and not acknowledged (server's count).")),
      lag_(gauge(registry, "ts_stream_consumer_lag", "group", group,
                 "Entries of the group's streams not yet delivered to it (-1: unknown).")) {
  lag_.set(-1);
}

void StreamConsumerMetrics::sample(const StreamConsumerStats& stats) noexcept {
  delivered_.set(stats.delivered);
  acked_.set(stats.acked);
  handler_errors_.set(stats.handler_errors);
  claimed_.set(stats.claimed);
  dead_lettered_.set(stats.dead_lettered);
  deleted_.set(stats.deleted);
  read_errors_.set(stats.read_errors);
}

void StreamConsumerMetrics::set_group_state(std::int64_t pending,
                                            std::optional<std::int64_t> lag) noexcept {
  pending_.set(pending);
  lag_.set(lag.value_or(-1));
}

}  // namespace trading_shared::redis

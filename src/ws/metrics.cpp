// Exporter of WebSocketStats (ws/metrics.hpp).
#include <trading_shared/ws/metrics.hpp>

#include <cstdint>

namespace trading_shared::ws {

namespace {

constexpr std::string_view kDisconnectsHelp =
    "Connections lost, by reason (each followed by a reconnect).";

core::Counter& disconnects(core::MetricsRegistry& registry, std::string_view client,
                           std::string_view reason) {
  return registry.counter(
      core::metric_name("ts_ws_disconnects_total", {{"client", client}, {"reason", reason}}),
      kDisconnectsHelp);
}

std::string name(std::string_view family, std::string_view client) {
  return core::metric_name(family, {{"client", client}});
}

}  // namespace

WebSocketMetrics::WebSocketMetrics(core::MetricsRegistry& registry, std::string_view client)
    : connected_(registry.gauge(name("ts_ws_connected", client),
                                "1 while the client's connection is up, else 0.")),
      messages_(registry.counter(name("ts_ws_messages_total", client), "Messages read.")),
      bytes_(registry.counter(name("ts_ws_bytes_total", client), "Payload bytes read.")),
      dropped_(registry.counter(
          core::metric_name("ts_ws_dropped_total", {{"client", client}, {"reason", "overflow"}}),
          "Messages discarded, by reason (overflow: the receive queue's bound, by its "
          "overflow policy).")),
      reconnects_(registry.counter(name("ts_ws_reconnects_total", client),
                                   "Connections lost, each followed by a reconnect.")),
      connect_failures_(registry.counter(name("ts_ws_connect_failures_total", client),
                                         "Failed connect attempts.")),
      closed_by_peer_(disconnects(registry, client, "closed_by_peer")),
      eof_(disconnects(registry, client, "eof")),
      idle_timeout_(disconnects(registry, client, "idle_timeout")),
      oversized_(disconnects(registry, client, "oversized")),
      protocol_error_(disconnects(registry, client, "protocol_error")),
      slow_consumer_(disconnects(registry, client, "slow_consumer")),
      send_failed_(disconnects(registry, client, "send_failed")),
      other_(disconnects(registry, client, "other")),
      queued_(
          registry.gauge(name("ts_ws_queued", client), "Messages waiting for the consumer now.")),
      queued_bytes_(registry.gauge(name("ts_ws_queued_bytes", client),
                                   "Payload bytes of the messages waiting now.")),
      sends_(registry.counter(name("ts_ws_sends_total", client), "Messages sent.")),
      send_failures_(registry.counter(name("ts_ws_send_failures_total", client),
                                      "Messages that could not be sent.")) {}

void WebSocketMetrics::sample(const WebSocketStats& stats) noexcept {
  connected_.set(stats.connected ? 1 : 0);
  messages_.set(stats.messages);
  bytes_.set(stats.bytes);
  dropped_.set(stats.dropped);
  reconnects_.set(stats.disconnects);
  connect_failures_.set(stats.connect_failures);
  closed_by_peer_.set(stats.reasons.closed_by_peer);
  eof_.set(stats.reasons.eof);
  idle_timeout_.set(stats.reasons.idle_timeout);
  oversized_.set(stats.reasons.oversized);
  protocol_error_.set(stats.reasons.protocol_error);
  slow_consumer_.set(stats.reasons.slow_consumer);
  send_failed_.set(stats.reasons.send_failed);
  other_.set(stats.reasons.other);
  queued_.set(static_cast<std::int64_t>(stats.queued));
  queued_bytes_.set(static_cast<std::int64_t>(stats.queued_bytes));
  sends_.set(stats.sends);
  send_failures_.set(stats.send_failures);
}

}  // namespace trading_shared::ws

#pragma once
/// @file
/// Exporter of the WebSocket client's figures into a `core::MetricsRegistry`
/// (docs/operations.md, "Metrics"). The series are resolved once, at construction; `sample()`
/// copies a stats snapshot into them (relaxed atomic stores, no allocation, no lock): run it
/// from a `ServiceContext::add_sampler` on the client's loop.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <string_view>

namespace trading_shared::ws {

/// `ts_ws_*{client="<client>"}`: connection, messages, drops, reconnects by reason, queue.
class WebSocketMetrics {
 public:
  /// `client`: the label value, a fixed name of the client in its service ("feed-0").
  WebSocketMetrics(core::MetricsRegistry& registry, std::string_view client);
  WebSocketMetrics(const WebSocketMetrics&) = delete;
  WebSocketMetrics& operator=(const WebSocketMetrics&) = delete;

  void sample(const WebSocketStats& stats) noexcept;

 private:
  core::Gauge& connected_;
  core::Counter& messages_;
  core::Counter& bytes_;
  core::Counter& dropped_;  // reason="overflow"
  core::Counter& reconnects_;
  core::Counter& connect_failures_;
  // ts_ws_disconnects_total{client,reason}, DisconnectCounts' fields in order.
  core::Counter& closed_by_peer_;
  core::Counter& eof_;
  core::Counter& idle_timeout_;
  core::Counter& oversized_;
  core::Counter& protocol_error_;
  core::Counter& slow_consumer_;
  core::Counter& send_failed_;
  core::Counter& other_;
  core::Gauge& queued_;
  core::Gauge& queued_bytes_;
  core::Counter& sends_;
  core::Counter& send_failures_;
};

}  // namespace trading_shared::ws

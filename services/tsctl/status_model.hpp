#pragma once
/// @file
/// What `tsctl status-page` shows, computed from the services' scrapes (pure code, unit-tested):
/// rates from counter deltas between the oldest and the newest scrape of a sliding window,
/// latency percentiles from histogram bucket deltas over the same window, breaker states,
/// connections and reconnects, consumer lag, readiness. Rendered as the JSON of `/api/status`.

#include "tsctl/prom_text.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::tsctl {

using SteadyTime = std::chrono::steady_clock::time_point;

/// One scrape of a service's /metrics, indexed by series.
struct MetricsSnapshot {
  SteadyTime at{};
  PromScrape scrape;
  std::map<std::string, double, std::less<>> values;  ///< series_key -> value

  static MetricsSnapshot from(PromScrape scrape, SteadyTime at);
  std::optional<double> value(std::string_view name, const PromLabels& labels) const;
  /// The family's type (`# TYPE`), "" when not declared.
  std::string_view type_of(std::string_view family) const noexcept;
};

/// A cumulative histogram bucket: observations <= `le`.
struct HistogramBucket {
  double le = 0;
  double count = 0;
};

/// The q-quantile (0..1) of cumulative buckets sorted by `le` (the last one +Inf), by linear
/// interpolation inside the bucket that holds it (as Prometheus' histogram_quantile does). In
/// the +Inf bucket: the highest finite bound. nullopt without observations.
std::optional<double> histogram_quantile(double q, std::span<const HistogramBucket> buckets);

/// A counter's increase from `older` to `newer`; a decrease means the service restarted (the
/// counter started again from zero): the increase is then `newer`.
double counter_increase(double older, double newer) noexcept;

struct SymbolRow {
  std::string service;
  std::string symbol;
  std::optional<double> received_rate;  ///< per second, over the window
  std::optional<double> written_rate;
  double received_total = 0;
  double written_total = 0;
  double backfilled_total = 0;
  double gaps_total = 0;
};

struct ConsumerRow {
  std::string service;
  std::string group;
  std::optional<double> lag;
  std::optional<double> pending;
  std::optional<double> delivered_rate;
  std::optional<double> acked_rate;
  double claimed_total = 0;
  double dead_lettered_total = 0;
};

struct LatencyRow {
  std::string service;
  std::string metric;         ///< the histogram family
  std::string labels;         ///< `stage=feed_to_redis`, comma-separated
  std::optional<double> p50;  ///< seconds
  std::optional<double> p99;
  std::optional<double> rate;  ///< observations per second over the window
  double count = 0;            ///< observations since the service started
  bool windowed = false;       ///< percentiles over the window (false: since start)
};

struct BreakerRow {
  std::string service;
  std::string kind;  ///< redis, pg, ...
  std::string client;
  double state = 0;  ///< 0 closed, 1 half-open, 2 open
  double trips = 0;
};

struct ConnectionRow {
  std::string service;
  std::string kind;  ///< redis, pg, ws
  std::string client;
  double connected = 0;  ///< connected (0/1), or open connections (pg)
  double reconnects = 0;
  std::optional<double> reconnect_rate;
};

struct CounterRow {
  std::string service;
  std::string metric;
  std::string labels;
  std::optional<double> rate;
  double total = 0;
};

struct MetricsView {
  std::vector<SymbolRow> symbols;
  std::vector<ConsumerRow> consumers;
  std::vector<LatencyRow> latency;
  std::vector<BreakerRow> breakers;
  std::vector<ConnectionRow> connections;
  std::vector<CounterRow> counters;  ///< the services' own counters (ts_receiver_ ...)
};

/// The view of one service from its newest scrape and, for rates and windowed percentiles, an
/// older one (null: only totals and percentiles since start).
MetricsView compute_view(const std::string& service, const MetricsSnapshot* older,
                         const MetricsSnapshot& newer);

/// One line of /readyz after the first: `name: ok` or `name: <reason>`.
struct ReadinessCheck {
  std::string name;
  bool ok = false;
  std::string detail;
};
std::vector<ReadinessCheck> parse_readyz(std::string_view body);

/// What the poller knows of one service.
struct ServiceStatus {
  std::string name;
  std::string address;  ///< host:port of its admin endpoint
  bool polled = false;  ///< at least one poll finished
  bool metrics_ok = false;
  unsigned readyz_status = 0;  ///< 0: /readyz did not answer
  std::string readyz_body;
  std::string error;  ///< why the last poll failed, "" when it did not
  std::uint64_t polls = 0;
  std::uint64_t failures = 0;
  std::optional<double> scrape_ms;  ///< duration of the last /metrics request
  std::optional<SteadyTime> last_ok;
  std::deque<MetricsSnapshot> window;  ///< oldest first

  /// "pending" (not polled yet), "down" (no answer), "not-ready" (/readyz not 200), "up".
  std::string_view state() const noexcept;
  /// Adds a scrape and drops those older than `span` (keeping at least two).
  void add_snapshot(MetricsSnapshot snapshot, std::chrono::milliseconds span);
};

/// The JSON of `/api/status`.
std::string render_status_json(const std::vector<const ServiceStatus*>& services, SteadyTime now,
                               std::chrono::milliseconds refresh, std::string_view version);

}  // namespace trading_shared::services::tsctl

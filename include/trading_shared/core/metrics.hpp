#pragma once
/// @file
/// Metrics: counters, gauges and histograms in a registry that renders the Prometheus text
/// exposition format (version 0.0.4) for a `/metrics` endpoint (docs/operations.md).
///
/// - A metric is named `family{labels}`: `ts_redis_commands_total{client="main"}`. All series of
///   a family share one type and one help text (`# HELP`, `# TYPE`). Counters end in `_total`,
///   durations are `_seconds` histograms (base units).
/// - Updates are lock-free (relaxed atomics) and may come from any thread; the registry's lock
///   is taken only to register a metric and to render. Resolve a metric once and keep the
///   reference (references stay valid for the registry's lifetime).
/// - Label values are bounded: a family holds at most `max_series_per_family` series (at
///   least 2), the last place kept for its overflow series; a registration beyond it gets the
///   family's shared overflow series (`{overflow="true"}`) and is counted in
///   `ts_metrics_series_refused_total`, so a label fed from outside (a symbol, a peer) cannot grow
///   a scrape without bound (F79).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::core {

/// A monotonically increasing count; increments are lock-free and may come from any thread.
class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  /// Mirrors a cumulative count kept elsewhere (a client's stats, copied by a sampler).
  void set(std::uint64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down.
class Gauge {
 public:
  void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(std::int64_t d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

/// Observations counted into fixed buckets (cumulative `le` buckets when rendered), with their
/// sum and count. `observe` is lock-free: one relaxed increment of its bucket and of the sum.
class Histogram {
 public:
  /// Latency buckets in seconds: 50 µs to 10 s.
  static constexpr double kLatencyBounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                              0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                              0.5,     1.0,    2.5,     5.0,    10.0};
  /// Size buckets (batch sizes, message counts): 1 to 10 000.
  static constexpr double kSizeBounds[] = {1,   2,   5,    10,   20,   50,   100,
                                           200, 500, 1000, 2000, 5000, 10000};
  /// `bounds`: the buckets' upper bounds, strictly increasing, at most 32.
  /// @throws std::invalid_argument otherwise.
  explicit Histogram(std::span<const double> bounds);
  /// Counts `value` in the first bucket whose bound is >= it (+Inf beyond); NaN is ignored.
  void observe(double value) noexcept;
  /// A duration, in seconds.
  template <class Rep, class Period>
  void observe(std::chrono::duration<Rep, Period> d) noexcept {
    observe(std::chrono::duration<double>(d).count());
  }
  std::span<const double> bounds() const noexcept { return {bounds_.data(), bounds_.size()}; }
  /// Observations in bucket `i` alone (not cumulative); `i == bounds().size()` is +Inf.
  std::uint64_t bucket(std::size_t i) const noexcept;
  /// Observations in all buckets.
  std::uint64_t count() const noexcept;
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

/// One label: `{"client", "main"}`.
using Label = std::pair<std::string_view, std::string_view>;

/// `family{k="v",...}` with each value escaped as the text format requires (`\\`, `\"`, `\n`).
/// No labels: `family` alone.
std::string metric_name(std::string_view family, std::initializer_list<Label> labels);
std::string metric_name(std::string_view family, std::span<const Label> labels);

/// Named counters, gauges and histograms.
class MetricsRegistry {
 public:
  static constexpr std::size_t kDefaultMaxSeriesPerFamily = 1000;
  explicit MetricsRegistry(std::size_t max_series_per_family = kDefaultMaxSeriesPerFamily);
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;
  ~MetricsRegistry();

  /// The metric `name` (`family{labels}`, see `metric_name`), created on first use. `help` is
  /// the family's `# HELP` text; the first non-empty one is kept.
  /// @throws std::logic_error when the family is already registered with another type, or the
  /// name is not a valid Prometheus metric name (with optional `{...}`).
  Counter& counter(std::string_view name, std::string_view help = {});
  Gauge& gauge(std::string_view name, std::string_view help = {});
  /// `bounds` apply when the series is created (later calls get the existing series).
  Histogram& histogram(std::string_view name, std::string_view help = {},
                       std::span<const double> bounds = Histogram::kLatencyBounds);
  /// Name/value pairs of every counter and gauge (full names, labels included), sorted.
  std::vector<std::pair<std::string, std::int64_t>> snapshot() const;
  /// Appends every family in the Prometheus text exposition format 0.0.4, families sorted by
  /// name, each with `# HELP` and `# TYPE`; histograms as `_bucket{le=...}`, `_sum`, `_count`.
  void write_prometheus(std::string& out) const;
  std::string prometheus_text() const {
    std::string out;
    write_prometheus(out);
    return out;
  }
  std::size_t max_series_per_family() const noexcept { return max_series_; }
  /// The process-wide registry used when a component is given none.
  static MetricsRegistry& global();

 private:
  struct Family;
  Family& family_locked(std::string_view family, int type, std::string_view help);
  std::string series_key_locked(Family& family, std::string_view labels);

  std::size_t max_series_;
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
  Counter* refused_ = nullptr;  ///< ts_metrics_series_refused_total
};

}  // namespace trading_shared::core

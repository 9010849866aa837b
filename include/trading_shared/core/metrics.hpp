#pragma once
/// @file
/// A minimal metrics registry: named monotonically increasing counters and gauges.
/// Retries, give-ups, breaker trips and reconnects are counted here; a later exporter
/// (the services' metrics endpoint) reads `snapshot()`.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::core {

/// A counter; increments are lock-free and may come from any thread.
class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A gauge (a value that goes up and down).
class Gauge {
 public:
  void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(std::int64_t d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

/// Named counters and gauges. Look-ups take a lock: resolve a metric once and keep the
/// reference (references stay valid for the registry's lifetime).
class MetricsRegistry {
 public:
  /// `name` in Prometheus style, labels included: `ts_retries_total{op="pg.query"}`.
  Counter& counter(std::string_view name);
  Gauge& gauge(std::string_view name);
  /// Name/value pairs of every metric, sorted by name.
  std::vector<std::pair<std::string, std::int64_t>> snapshot() const;
  /// The process-wide registry used when a component is given none.
  static MetricsRegistry& global();

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Counter>, std::less<>> counters_;
  std::map<std::string, std::unique_ptr<Gauge>, std::less<>> gauges_;
};

}  // namespace trading_shared::core

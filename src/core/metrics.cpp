#include <trading_shared/core/metrics.hpp>

#include <algorithm>

namespace trading_shared::core {

Counter& MetricsRegistry::counter(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = counters_.find(name);
  if (it == counters_.end()) {
    it = counters_.emplace(std::string(name), std::make_unique<Counter>()).first;
  }
  return *it->second;
}

Gauge& MetricsRegistry::gauge(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = gauges_.find(name);
  if (it == gauges_.end()) it = gauges_.emplace(std::string(name), std::make_unique<Gauge>()).first;
  return *it->second;
}

std::vector<std::pair<std::string, std::int64_t>> MetricsRegistry::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::int64_t>> out;
  out.reserve(counters_.size() + gauges_.size());
  for (const auto& [name, c] : counters_)
    out.emplace_back(name, static_cast<std::int64_t>(c->value()));
  for (const auto& [name, g] : gauges_) out.emplace_back(name, g->value());
  std::sort(out.begin(), out.end());
  return out;
}

MetricsRegistry& MetricsRegistry::global() {
  static MetricsRegistry registry;
  return registry;
}

}  // namespace trading_shared::core

#include <trading_shared/core/metrics.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace trading_shared::core {

namespace {

enum Type : int { kCounter = 0, kGauge = 1, kHistogram = 2 };

constexpr std::string_view kTypeNames[] = {"counter", "gauge", "histogram"};

bool valid_family_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

void append_escaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  out.append(buffer, ec == std::errc() ? end : buffer);
}

void append_integer(std::string& out, auto v) {
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  out.append(buffer, ec == std::errc() ? end : buffer);
}

/// `{a="b"}` + `extra` (e.g. `le="0.5"`) merged into one label set.
void append_labels(std::string& out, std::string_view labels, std::string_view extra = {}) {
  // `labels` is "" or "{...}".
  std::string_view inner =
      labels.empty() ? std::string_view{} : labels.substr(1, labels.size() - 2);
  if (inner.empty() && extra.empty()) return;
  out += '{';
  out += inner;
  if (!inner.empty() && !extra.empty()) out += ',';
  out += extra;
  out += '}';
}

}  // namespace

// ---- Histogram ------------------------------------------------------------------------------

Histogram::Histogram(std::span<const double> bounds) : bounds_(bounds.begin(), bounds.end()) {
  if (bounds_.size() > 32) throw std::invalid_argument("a histogram has at most 32 buckets");
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      throw std::invalid_argument("histogram bounds must be finite and strictly increasing");
  }
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double value) noexcept {
  if (std::isnan(value)) return;  // it would make the sum NaN for good
  // A linear scan: the buckets are few (at most 32) and most observations land in the first
  // ones; it cost fewer instructions than a binary search on a Redis GET's round trip.
  std::size_t i = 0;
  const std::size_t n = bounds_.size();
  while (i < n && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::uint64_t Histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i)
    total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

std::uint64_t Histogram::bucket(std::size_t i) const noexcept {
  return i <= bounds_.size() ? buckets_[i].load(std::memory_order_relaxed) : 0;
}

// ---- names ----------------------------------------------------------------------------------

std::string metric_name(std::string_view family, std::span<const Label> labels) {
  std::string out(family);
  if (labels.empty()) return out;
  out += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += key;
    out += "=\"";
    append_escaped(out, value);
    out += '"';
  }
  out += '}';
  return out;
}

std::string metric_name(std::string_view family, std::initializer_list<Label> labels) {
  return metric_name(family, std::span<const Label>(labels.begin(), labels.size()));
}

// ---- registry -------------------------------------------------------------------------------

struct MetricsRegistry::Family {
  int type = kCounter;
  std::string help;
  // Key: the label part of the name ("" or "{...}").
  std::map<std::string, std::unique_ptr<Counter>, std::less<>> counters;
  std::map<std::string, std::unique_ptr<Gauge>, std::less<>> gauges;
  std::map<std::string, std::unique_ptr<Histogram>, std::less<>> histograms;
  std::size_t size() const { return counters.size() + gauges.size() + histograms.size(); }
};

MetricsRegistry::MetricsRegistry(std::size_t max_series_per_family)
    : max_series_(std::max<std::size_t>(max_series_per_family, 2)) {}

MetricsRegistry::~MetricsRegistry() = default;

namespace {
std::pair<std::string_view, std::string_view> split_name(std::string_view name) {
  const auto brace = name.find('{');
  if (brace == std::string_view::npos) return {name, {}};
  if (name.back() != '}') throw std::logic_error("bad metric name: " + std::string(name));
  return {name.substr(0, brace), name.substr(brace)};
}
}  // namespace

MetricsRegistry::Family& MetricsRegistry::family_locked(std::string_view family, int type,
                                                        std::string_view help) {
  if (!valid_family_name(family)) throw std::logic_error("bad metric name: " + std::string(family));
  auto it = families_.find(family);
  if (it == families_.end()) {
    it = families_.emplace(std::string(family), std::make_unique<Family>()).first;
    it->second->type = type;
  } else if (it->second->type != type) {
    throw std::logic_error("metric " + std::string(family) + " is a " +
                           std::string(kTypeNames[it->second->type]) + ", not a " +
                           std::string(kTypeNames[type]));
  }
  if (it->second->help.empty() && !help.empty()) it->second->help = std::string(help);
  return *it->second;
}

std::string MetricsRegistry::series_key_locked(Family& family, std::string_view labels) {
  // The last place of the bound is the overflow series'.
  if (family.size() + 1 < max_series_) return std::string(labels);
  if (refused_ == nullptr) {  // created on the first refusal
    Family& refused = family_locked("ts_metrics_series_refused_total", kCounter,
                                    "Metric series not created because their family reached its "
                                    "bound of label sets (counted into its overflow series).");
    auto& slot = refused.counters[""];
    if (!slot) slot = std::make_unique<Counter>();
    refused_ = slot.get();
  }
  refused_->add();
  return "{overflow=\"true\"}";
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help) {
  const auto [family_name, labels] = split_name(name);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(family_name, kCounter, help);
  auto it = family.counters.find(labels);
  if (it != family.counters.end()) return *it->second;
  auto key = series_key_locked(family, labels);
  auto& slot = family.counters[key];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help) {
  const auto [family_name, labels] = split_name(name);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(family_name, kGauge, help);
  auto it = family.gauges.find(labels);
  if (it != family.gauges.end()) return *it->second;
  auto key = series_key_locked(family, labels);
  auto& slot = family.gauges[key];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      std::span<const double> bounds) {
  const auto [family_name, labels] = split_name(name);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(family_name, kHistogram, help);
  auto it = family.histograms.find(labels);
  if (it != family.histograms.end()) return *it->second;
  // Built before anything is inserted: bad bounds throw and leave the registry as it was.
  auto made = std::make_unique<Histogram>(bounds);
  auto key = series_key_locked(family, labels);
  auto& slot = family.histograms[key];
  if (!slot) slot = std::move(made);
  return *slot;
}

std::vector<std::pair<std::string, std::int64_t>> MetricsRegistry::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::int64_t>> out;
  for (const auto& [name, family] : families_) {
    for (const auto& [labels, c] : family->counters)
      out.emplace_back(name + labels, static_cast<std::int64_t>(c->value()));
    for (const auto& [labels, g] : family->gauges) out.emplace_back(name + labels, g->value());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void MetricsRegistry::write_prometheus(std::string& out) const {
  std::lock_guard lock(mutex_);
  for (const auto& [name, family] : families_) {
    if (family->size() == 0) continue;
    out += "# HELP ";
    out += name;
    out += ' ';
    append_help(out, family->help.empty() ? std::string_view(name) : family->help);
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += kTypeNames[family->type];
    out += '\n';
    for (const auto& [labels, c] : family->counters) {
      out += name;
      out += labels;
      out += ' ';
      append_integer(out, c->value());
      out += '\n';
    }
    for (const auto& [labels, g] : family->gauges) {
      out += name;
      out += labels;
      out += ' ';
      append_integer(out, g->value());
      out += '\n';
    }
    for (const auto& [labels, h] : family->histograms) {
      std::uint64_t cumulative = 0;
      const auto bounds = h->bounds();
      std::string le;
      for (std::size_t i = 0; i <= bounds.size(); ++i) {
        cumulative += h->bucket(i);
        le = "le=\"";
        if (i < bounds.size()) {
          append_number(le, bounds[i]);
        } else {
          le += "+Inf";
        }
        le += '"';
        out += name;
        out += "_bucket";
        append_labels(out, labels, le);
        out += ' ';
        append_integer(out, cumulative);
        out += '\n';
      }
      out += name;
      out += "_sum";
      out += labels;
      out += ' ';
      append_number(out, h->sum());
      out += '\n';
      out += name;
      out += "_count";
      out += labels;
      out += ' ';
      // The count rendered is the buckets' total, so that _count equals the +Inf bucket even
      // while observations land concurrently.
      append_integer(out, cumulative);
      out += '\n';
    }
  }
}

MetricsRegistry& MetricsRegistry::global() {
  static MetricsRegistry registry;
  return registry;
}

}  // namespace trading_shared::core

// tsctl status-page's model: views of the services' scrapes and the JSON of /api/status
// (status_model.hpp).
#include "tsctl/status_model.hpp"

#include "common/summary.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>

namespace trading_shared::services::tsctl {

namespace {

constexpr std::string_view kBucketSuffix = "_bucket";

double seconds_between(const MetricsSnapshot& older, const MetricsSnapshot& newer) {
  return std::chrono::duration<double>(newer.at - older.at).count();
}

/// The rate of a series between the two snapshots; nullopt without an older one.
std::optional<double> rate_of(const MetricsSnapshot* older, const MetricsSnapshot& newer,
                              std::string_view name, const PromLabels& labels) {
  if (older == nullptr) return std::nullopt;
  const double seconds = seconds_between(*older, newer);
  if (seconds <= 0) return std::nullopt;
  const std::optional<double> now = newer.value(name, labels);
  if (!now) return std::nullopt;
  return counter_increase(older->value(name, labels).value_or(0), *now) / seconds;
}

std::string labels_text(const PromLabels& labels) {
  std::string out;
  for (const auto& [name, value] : labels) {
    if (!out.empty()) out += ',';
    out += name;
    out += '=';
    out += value;
  }
  return out;
}

bool ends_with(std::string_view text, std::string_view suffix) noexcept {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}
bool starts_with(std::string_view text, std::string_view prefix) noexcept {
  return text.substr(0, prefix.size()) == prefix;
}

/// The cumulative buckets of one histogram series (labels without `le`) in a snapshot.
std::vector<HistogramBucket> buckets_of(const MetricsSnapshot& snapshot, const std::string& family,
                                        const PromLabels& labels) {
  std::vector<HistogramBucket> buckets;
  const std::string bucket_name = family + std::string(kBucketSuffix);
  for (const PromSample& s : snapshot.scrape.samples) {
    if (s.name != bucket_name) continue;
    PromLabels rest;
    std::string_view le;
    for (const auto& pair : s.labels) {
      if (pair.first == "le") {
        le = pair.second;
      } else {
        rest.push_back(pair);
      }
    }
    if (rest != labels || le.empty()) continue;
    const double bound = le == "+Inf" ? INFINITY : std::strtod(std::string(le).c_str(), nullptr);
    buckets.push_back({bound, s.value});
  }
  std::sort(buckets.begin(), buckets.end(),
            [](const HistogramBucket& a, const HistogramBucket& b) { return a.le < b.le; });
  return buckets;
}

void add_latency(MetricsView& view, const std::string& service, const MetricsSnapshot* older,
                 const MetricsSnapshot& newer) {
  std::set<std::pair<std::string, PromLabels>> series;
  for (const PromSample& s : newer.scrape.samples) {
    if (!ends_with(s.name, kBucketSuffix)) continue;
    const std::string family = s.name.substr(0, s.name.size() - kBucketSuffix.size());
    if (!ends_with(family, "_seconds")) continue;
    PromLabels rest;
    for (const auto& pair : s.labels) {
      if (pair.first != "le") rest.push_back(pair);
    }
    series.emplace(family, std::move(rest));
  }
  for (const auto& [family, labels] : series) {
    LatencyRow row;
    row.service = service;
    row.metric = family;
    row.labels = labels_text(labels);
    std::vector<HistogramBucket> buckets = buckets_of(newer, family, labels);
    row.count = buckets.empty() ? 0 : buckets.back().count;
    if (older != nullptr) {
      const std::vector<HistogramBucket> before = buckets_of(*older, family, labels);
      // Same bounds and no reset: the window's own observations.
      const bool comparable = before.size() == buckets.size() &&
                              std::equal(before.begin(), before.end(), buckets.begin(),
                                         [](const HistogramBucket& a, const HistogramBucket& b) {
                                           return a.le == b.le && a.count <= b.count;
                                         });
      if (comparable) {
        for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i].count -= before[i].count;
        row.windowed = true;
        const double seconds = seconds_between(*older, newer);
        if (seconds > 0 && !buckets.empty()) row.rate = buckets.back().count / seconds;
      }
    }
    row.p50 = histogram_quantile(0.5, buckets);
    row.p99 = histogram_quantile(0.99, buckets);
    view.latency.push_back(std::move(row));
  }
}

void add_symbols(MetricsView& view, const std::string& service, const MetricsSnapshot* older,
                 const MetricsSnapshot& newer) {
  for (const PromSample& s : newer.scrape.samples) {
    if (s.name != "ts_receiver_trades_total") continue;
    const std::string_view symbol = label_of(s.labels, "symbol");
    if (symbol.empty()) continue;
    SymbolRow row;
    row.service = service;
    row.symbol = std::string(symbol);
    row.received_total = s.value;
    row.received_rate = rate_of(older, newer, s.name, s.labels);
    row.written_total = newer.value("ts_receiver_trades_written_total", s.labels).value_or(0);
    row.written_rate = rate_of(older, newer, "ts_receiver_trades_written_total", s.labels);
    row.backfilled_total = newer.value("ts_receiver_backfilled_total", s.labels).value_or(0);
    row.gaps_total = newer.value("ts_receiver_gaps_total", s.labels).value_or(0);
    view.symbols.push_back(std::move(row));
  }
}

void add_consumers(MetricsView& view, const std::string& service, const MetricsSnapshot* older,
                   const MetricsSnapshot& newer) {
  constexpr std::string_view kPrefix = "ts_stream_consumer_";
  std::set<PromLabels> groups;
  for (const PromSample& s : newer.scrape.samples) {
    if (starts_with(s.name, kPrefix) && !label_of(s.labels, "group").empty()) {
      groups.insert(s.labels);
    }
  }
  for (const PromLabels& labels : groups) {
    ConsumerRow row;
    row.service = service;
    row.group = std::string(label_of(labels, "group"));
    row.lag = newer.value("ts_stream_consumer_lag", labels);
    row.pending = newer.value("ts_stream_consumer_pending", labels);
    row.delivered_rate = rate_of(older, newer, "ts_stream_consumer_delivered_total", labels);
    row.acked_rate = rate_of(older, newer, "ts_stream_consumer_acked_total", labels);
    row.claimed_total = newer.value("ts_stream_consumer_claimed_total", labels).value_or(0);
    row.dead_lettered_total =
        newer.value("ts_stream_consumer_dead_lettered_total", labels).value_or(0);
    view.consumers.push_back(std::move(row));
  }
}

void add_clients(MetricsView& view, const std::string& service, const MetricsSnapshot* older,
                 const MetricsSnapshot& newer) {
  constexpr std::string_view kBreaker = "_breaker_state";
  for (const PromSample& s : newer.scrape.samples) {
    if (!starts_with(s.name, "ts_")) continue;
    if (ends_with(s.name, kBreaker)) {
      BreakerRow row;
      row.service = service;
      row.kind = s.name.substr(3, s.name.size() - 3 - kBreaker.size());
      row.client = labels_text(s.labels);
      row.state = s.value;
      row.trips = newer.value("ts_" + row.kind + "_breaker_trips_total", s.labels).value_or(0);
      view.breakers.push_back(std::move(row));
      continue;
    }
    std::string kind;
    if (s.name == "ts_redis_connected") kind = "redis";
    if (s.name == "ts_ws_connected") kind = "ws";
    if (s.name == "ts_pg_connections") kind = "pg";
    if (kind.empty()) continue;
    ConnectionRow row;
    row.service = service;
    row.kind = kind;
    row.client = labels_text(s.labels);
    row.connected = s.value;
    const std::string reconnects = "ts_" + kind + "_reconnects_total";
    row.reconnects = newer.value(reconnects, s.labels).value_or(0);
    row.reconnect_rate = rate_of(older, newer, reconnects, s.labels);
    view.connections.push_back(std::move(row));
  }
}

void add_counters(MetricsView& view, const std::string& service, const MetricsSnapshot* older,
                  const MetricsSnapshot& newer) {
  for (const PromSample& s : newer.scrape.samples) {
    const bool own = starts_with(s.name, "ts_receiver_") || starts_with(s.name, "ts_recorder_") ||
                     starts_with(s.name, "ts_executor_");
    if (!own || !ends_with(s.name, "_total") || !label_of(s.labels, "symbol").empty()) continue;
    CounterRow row;
    row.service = service;
    row.metric = s.name;
    row.labels = labels_text(s.labels);
    row.total = s.value;
    row.rate = rate_of(older, newer, s.name, s.labels);
    view.counters.push_back(std::move(row));
  }
}

// --- JSON ---

std::string num(std::optional<double> value) {
  if (!value || !std::isfinite(*value)) return "null";
  return fmt::format("{:.6g}", *value);
}

class JsonObject {
 public:
  JsonObject& raw(std::string_view key, std::string_view json) {
    out_ += out_.empty() ? "{" : ",";
    out_ += json_quote(key);
    out_ += ':';
    out_ += json;
    return *this;
  }
  JsonObject& str(std::string_view key, std::string_view value) {
    return raw(key, json_quote(value));
  }
  JsonObject& number(std::string_view key, std::optional<double> value) {
    return raw(key, num(value));
  }
  JsonObject& boolean(std::string_view key, bool value) {
    return raw(key, value ? "true" : "false");
  }
  std::string done() { return out_.empty() ? "{}" : out_ + "}"; }

 private:
  std::string out_;
};

template <class T, class F>
std::string json_array(const std::vector<T>& items, F&& render) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += render(items[i]);
  }
  return out + "]";
}

}  // namespace

MetricsSnapshot MetricsSnapshot::from(PromScrape scrape, SteadyTime at) {
  MetricsSnapshot snapshot;
  snapshot.at = at;
  for (const PromSample& s : scrape.samples) {
    snapshot.values[series_key(s.name, s.labels)] = s.value;
  }
  snapshot.scrape = std::move(scrape);
  return snapshot;
}

std::optional<double> MetricsSnapshot::value(std::string_view name,
                                             const PromLabels& labels) const {
  const auto it = values.find(series_key(name, labels));
  if (it == values.end()) return std::nullopt;
  return it->second;
}

std::string_view MetricsSnapshot::type_of(std::string_view family) const noexcept {
  const auto it = scrape.types.find(family);
  return it == scrape.types.end() ? std::string_view{} : std::string_view(it->second);
}

std::optional<double> histogram_quantile(double q, std::span<const HistogramBucket> buckets) {
  if (buckets.empty()) return std::nullopt;
  const double total = buckets.back().count;
  if (!(total > 0)) return std::nullopt;
  const double rank = std::clamp(q, 0.0, 1.0) * total;
  double lower = 0;
  double below = 0;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const HistogramBucket& b = buckets[i];
    if (b.count >= rank && b.count > below) {
      if (std::isinf(b.le)) return i == 0 ? std::nullopt : std::optional<double>(lower);
      const double in_bucket = b.count - below;
      return lower + (b.le - lower) * (rank - below) / in_bucket;
    }
    lower = b.le;
    below = b.count;
  }
  return std::isinf(lower) ? std::nullopt : std::optional<double>(lower);
}

double counter_increase(double older, double newer) noexcept {
  return newer >= older ? newer - older : newer;
}

MetricsView compute_view(const std::string& service, const MetricsSnapshot* older,
                         const MetricsSnapshot& newer) {
  MetricsView view;
  add_symbols(view, service, older, newer);
  add_consumers(view, service, older, newer);
  add_latency(view, service, older, newer);
  add_clients(view, service, older, newer);
  add_counters(view, service, older, newer);
  return view;
}

std::vector<ReadinessCheck> parse_readyz(std::string_view body) {
  std::vector<ReadinessCheck> checks;
  bool first = true;
  while (!body.empty()) {
    const std::size_t eol = body.find('\n');
    std::string_view line = body.substr(0, eol);
    body = eol == std::string_view::npos ? std::string_view{} : body.substr(eol + 1);
    if (first) {  // "ready" / "not ready"
      first = false;
      continue;
    }
    if (line.empty()) continue;
    ReadinessCheck check;
    const std::size_t colon = line.find(": ");
    if (colon == std::string_view::npos) {
      check.name = std::string(line);  // "stopping", "starting"
      check.detail = std::string(line);
    } else {
      check.name = std::string(line.substr(0, colon));
      check.detail = std::string(line.substr(colon + 2));
      check.ok = check.detail == "ok";
    }
    checks.push_back(std::move(check));
  }
  return checks;
}

std::string_view ServiceStatus::state() const noexcept {
  if (!polled) return "pending";
  if (!metrics_ok || readyz_status == 0) return "down";
  if (readyz_status != 200) return "not-ready";
  return "up";
}

void ServiceStatus::add_snapshot(MetricsSnapshot snapshot, std::chrono::milliseconds span) {
  window.push_back(std::move(snapshot));
  const SteadyTime newest = window.back().at;
  while (window.size() > 2 && newest - window[1].at >= span) window.pop_front();
}

std::string render_status_json(const std::vector<const ServiceStatus*>& services, SteadyTime now,
                               std::chrono::milliseconds refresh, std::string_view version) {
  MetricsView all;
  std::vector<std::string> service_objects;
  for (const ServiceStatus* entry : services) {
    const ServiceStatus& service = *entry;
    const MetricsSnapshot* newer = service.window.empty() ? nullptr : &service.window.back();
    const MetricsSnapshot* older = service.window.size() < 2 ? nullptr : &service.window.front();
    // A service that does not answer shows no stale figures.
    if (newer != nullptr && service.metrics_ok) {
      MetricsView view = compute_view(service.name, older, *newer);
      auto append = [](auto& to, auto& from) {
        std::move(from.begin(), from.end(), std::back_inserter(to));
      };
      append(all.symbols, view.symbols);
      append(all.consumers, view.consumers);
      append(all.latency, view.latency);
      append(all.breakers, view.breakers);
      append(all.connections, view.connections);
      append(all.counters, view.counters);
    }
    std::optional<double> age;
    if (service.last_ok) age = std::chrono::duration<double>(now - *service.last_ok).count();
    const std::string checks = json_array(parse_readyz(service.readyz_body), [](const auto& c) {
      return JsonObject().str("name", c.name).boolean("ok", c.ok).str("detail", c.detail).done();
    });
    std::optional<double> window_s;
    if (older != nullptr) window_s = std::chrono::duration<double>(newer->at - older->at).count();
    service_objects.push_back(
        JsonObject()
            .str("name", service.name)
            .str("address", service.address)
            .str("state", service.state())
            .boolean("metrics_ok", service.metrics_ok)
            .number("readyz_status", service.readyz_status)
            .raw("checks", checks)
            .str("error", service.error)
            .number("polls", static_cast<double>(service.polls))
            .number("failures", static_cast<double>(service.failures))
            .number("scrape_ms", service.scrape_ms)
            .number("last_ok_age_s", age)
            .number("window_s", window_s)
            .number("series", newer == nullptr ? 0.0 : static_cast<double>(newer->values.size()))
            .done());
  }
  std::string services_json = "[";
  for (std::size_t i = 0; i < service_objects.size(); ++i) {
    if (i > 0) services_json += ',';
    services_json += service_objects[i];
  }
  services_json += ']';
  return JsonObject()
             .str("version", version)
             .number("refresh_ms", static_cast<double>(refresh.count()))
             .raw("services", services_json)
             .raw("symbols", json_array(all.symbols,
                                        [](const SymbolRow& r) {
                                          return JsonObject()
                                              .str("service", r.service)
                                              .str("symbol", r.symbol)
                                              .number("received_rate", r.received_rate)
                                              .number("written_rate", r.written_rate)
                                              .number("received_total", r.received_total)
                                              .number("written_total", r.written_total)
                                              .number("backfilled_total", r.backfilled_total)
                                              .number("gaps_total", r.gaps_total)
                                              .done();
                                        }))
             .raw("consumers", json_array(all.consumers,
                                          [](const ConsumerRow& r) {
                                            return JsonObject()
                                                .str("service", r.service)
                                                .str("group", r.group)
                                                .number("lag", r.lag)
                                                .number("pending", r.pending)
                                                .number("delivered_rate", r.delivered_rate)
                                                .number("acked_rate", r.acked_rate)
                                                .number("claimed_total", r.claimed_total)
                                                .number("dead_lettered_total",
                                                        r.dead_lettered_total)
                                                .done();
                                          }))
             .raw("latency", json_array(all.latency,
                                        [](const LatencyRow& r) {
                                          return JsonObject()
                                              .str("service", r.service)
                                              .str("metric", r.metric)
                                              .str("labels", r.labels)
                                              .number("p50_s", r.p50)
                                              .number("p99_s", r.p99)
                                              .number("rate", r.rate)
                                              .number("count", r.count)
                                              .boolean("windowed", r.windowed)
                                              .done();
                                        }))
             .raw("breakers", json_array(all.breakers,
                                         [](const BreakerRow& r) {
                                           return JsonObject()
                                               .str("service", r.service)
                                               .str("kind", r.kind)
                                               .str("client", r.client)
                                               .number("state", r.state)
                                               .number("trips", r.trips)
                                               .done();
                                         }))
             .raw("connections", json_array(all.connections,
                                            [](const ConnectionRow& r) {
                                              return JsonObject()
                                                  .str("service", r.service)
                                                  .str("kind", r.kind)
                                                  .str("client", r.client)
                                                  .number("connected", r.connected)
                                                  .number("reconnects", r.reconnects)
                                                  .number("reconnect_rate", r.reconnect_rate)
                                                  .done();
                                            }))
             .raw("counters", json_array(all.counters,
                                         [](const CounterRow& r) {
                                           return JsonObject()
                                               .str("service", r.service)
                                               .str("metric", r.metric)
                                               .str("labels", r.labels)
                                               .number("rate", r.rate)
                                               .number("total", r.total)
                                               .done();
                                         }))
             .done() +
         "\n";
}

}  // namespace trading_shared::services::tsctl

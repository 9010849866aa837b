// Exporter of HttpStats (http/metrics.hpp).
#include <trading_shared/http/metrics.hpp>

#include <string>

namespace trading_shared::http {

namespace {

core::Counter& counter(core::MetricsRegistry& registry, std::string_view family,
                       std::string_view client, std::string_view help) {
  return registry.counter(core::metric_name(family, {{"client", client}}), help);
}

}  // namespace

HttpMetrics::HttpMetrics(core::MetricsRegistry& registry, std::string_view client)
    : requests_(counter(registry, "ts_http_requests_total", client, "Requests (get() calls).")),
      responses_(counter(registry, "ts_http_responses_total", client,
                         "Answers read, whatever their status.")),
      connects_(counter(registry, "ts_http_connects_total", client, "Connections opened.")),
      connect_failures_(
          counter(registry, "ts_http_connect_failures_total", client, "Failed connect attempts.")),
      reused_(counter(registry, "ts_http_reused_total", client,
                      "Requests sent on a kept-alive connection.")),
      stale_retries_(counter(registry, "ts_http_stale_retries_total", client,
                             "Requests sent again: the kept-alive connection had been closed.")),
      timeouts_(counter(registry, "ts_http_timeouts_total", client,
                        "Requests that reached their deadline.")),
      failures_(counter(registry, "ts_http_failures_total", client,
                        "Requests that ended with an error (timeouts included).")),
      too_large_(counter(registry, "ts_http_too_large_total", client,
                         "Answers refused as larger than the client's bound.")) {}

void HttpMetrics::sample(const HttpStats& stats) noexcept {
  requests_.set(stats.requests);
  responses_.set(stats.responses);
  connects_.set(stats.connects);
  connect_failures_.set(stats.connect_failures);
  reused_.set(stats.reused);
  stale_retries_.set(stats.stale_retries);
  timeouts_.set(stats.timeouts);
  failures_.set(stats.failures);
  too_large_.set(stats.too_large);
}

}  // namespace trading_shared::http

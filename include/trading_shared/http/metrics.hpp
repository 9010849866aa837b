#pragma once
/// @file
/// Exporter of the HTTP client's figures into a `core::MetricsRegistry` (docs/operations.md,
/// "Metrics"). The series are resolved once, at construction; `sample()` copies a stats
/// snapshot into them (relaxed atomic stores, no allocation, no lock): run it from a
/// `ServiceContext::add_sampler` on the client's loop.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/http/http_client.hpp>

#include <string_view>

namespace trading_shared::http {

/// `ts_http_*{client="<client>"}`: requests, answers, connections, failures.
class HttpMetrics {
 public:
  /// `client`: the label value, a fixed name of the client in its service ("rest").
  HttpMetrics(core::MetricsRegistry& registry, std::string_view client);
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  void sample(const HttpStats& stats) noexcept;

 private:
  core::Counter& requests_;
  core::Counter& responses_;
  core::Counter& connects_;
  core::Counter& connect_failures_;
  core::Counter& reused_;
  core::Counter& stale_retries_;
  core::Counter& timeouts_;
  core::Counter& failures_;
  core::Counter& too_large_;
};

}  // namespace trading_shared::http

#pragma once
/// @file
/// Exporter of the PostgreSQL client's figures into a `core::MetricsRegistry`
/// (docs/operations.md, "Metrics"). The series are resolved once, at construction; `sample()`
/// copies a stats snapshot into them (relaxed atomic stores, no allocation, no lock): run it
/// from a `ServiceContext::add_sampler` on the client's loop.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::pg {

/// `ts_pg_*{client="<client>"}`: pool, statements, errors by kind, reconnects, breaker, and
/// the round-trip and acquire-wait histograms the client fills itself once `attach`ed.
class PostgresMetrics {
 public:
  /// `client`: the label value, a fixed name of the client in its service ("main").
  PostgresMetrics(core::MetricsRegistry& registry, std::string_view client);
  PostgresMetrics(const PostgresMetrics&) = delete;
  PostgresMetrics& operator=(const PostgresMetrics&) = delete;

  void sample(const PostgresStats& stats) noexcept;
  core::Histogram& round_trip() noexcept { return round_trip_; }
  core::Histogram& acquire_wait() noexcept { return acquire_wait_; }
  /// The client times its statements and acquires into these (`set_histograms`). Call on the
  /// client's executor; the registry must outlive the client.
  void attach(PostgresClient& client) noexcept {
    client.set_histograms(&round_trip_, &acquire_wait_);
  }

  /// The `kind` label values of `ts_pg_errors_total`: `ErrorKind`'s names but
  /// `cancelled` (cancellations are `ts_pg_cancellations_total`).
  static constexpr std::array<ErrorKind, 5> kErrorKinds{
      ErrorKind::transient_not_sent, ErrorKind::transient_conflict,
      ErrorKind::transient_unavailable, ErrorKind::outcome_unknown, ErrorKind::permanent};

 private:
  core::Gauge& connections_;
  core::Gauge& leased_;
  core::Gauge& waiters_;
  core::Gauge& in_flight_;
  core::Counter& queries_;
  std::array<core::Counter*, kErrorKinds.size()> errors_{};
  core::Counter& timeouts_;
  core::Counter& cancellations_;
  core::Counter& connects_;
  core::Counter& connect_failures_;
  core::Counter& reconnects_;
  core::Gauge& breaker_state_;
  core::Counter& breaker_trips_;
  core::Histogram& round_trip_;
  core::Histogram& acquire_wait_;
};

/// The `/readyz` check of a PostgreSQL client, run on successive snapshots (one per check
/// interval). Not ready ("breaker open", "cannot connect: no open connection") while the
/// breaker is open, or while the pool has no open connection and its connect attempts failed
/// since the previous check with none succeeding (an idle pool of `min_size` 0 stays ready).
class PostgresReadiness {
 public:
  /// "" when ready, else why not.
  std::string check(const PostgresStats& stats);

 private:
  std::uint64_t connects_ = 0;
  std::uint64_t connect_failures_ = 0;
  bool failing_ = false;
};

}  // namespace trading_shared::pg

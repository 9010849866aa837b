#pragma once
/// @file
/// ts-pipeline's time series (docs/testing.md, reports): the progress line it prints every
/// few seconds while the pipeline runs (received and persisted trades, their rates, the lag
/// between them, the tick-to-row latency of the last interval, the faults so far), and the
/// per-second series of the JSON report, read from `ticks` once the run is over (trades sent
/// by the venue's trade time, rows persisted by recorded_at, tick-to-row latency percentiles of
/// each second's rows, the faults active in each second). The HTML report (report_html.hpp)
/// draws them.

#include <boost/json/object.hpp>

#include "e2e_support.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace trading_shared::e2e {

/// A fault as the charts mark it: from `start_s` to `end_s` after the start of the run.
struct FaultSpan {
  double start_s = 0, end_s = 0;
  std::string kind;   ///< "redis-restart", "receiver-kill", "venue-drop", ...
  std::string label;  ///< "Redis restart at 10.0 s"
};

/// One second of the run (t_s = 0: the second after the start).
struct SecondPoint {
  std::int64_t t_s = 0;
  std::int64_t sent = 0;       ///< rows whose trade_time (the venue's) falls in the second
  std::int64_t persisted = 0;  ///< rows whose recorded_at falls in the second
  /// recorded_at - event_time of the rows recorded in the second, ms (none: no such row).
  std::optional<double> p50_ms, p90_ms, p99_ms, max_ms;
  std::int64_t faults = 0;  ///< faults active at some point of the second
};

/// The per-second series from `ticks`, dense from second 0 (or the first row) to the last row;
/// `start_unix_ms`: the start of the run. Throws on a failed query.
std::vector<SecondPoint> query_seconds(PgConnection& pg, std::int64_t start_unix_ms);
/// Sets SecondPoint::faults from the spans.
void mark_faults(std::vector<SecondPoint>& seconds, const std::vector<FaultSpan>& faults);

/// One progress line's figures.
struct ProgressSample {
  double t_s = 0;
  /// Sum over the symbols of the last trade id ts-receiver wrote (ids count from 1).
  std::optional<std::int64_t> received;
  std::optional<std::int64_t> persisted;                  ///< rows in ticks
  std::optional<double> received_per_s, persisted_per_s;  ///< since the previous sample
  /// Tick-to-row latency of the rows recorded since the previous sample, ms.
  std::optional<double> p50_ms, p99_ms;
  std::int64_t faults = 0;  ///< faults injected so far
  std::string last_fault;   ///< the latest one's kind
  std::string error;        ///< what could not be read ("" when everything was)

  /// received - persisted: trades ts-receiver has written that are not rows yet.
  std::optional<std::int64_t> lag() const {
    if (!received || !persisted) return std::nullopt;
    return *received - *persisted;
  }
  /// "progress  12.0s | received 11950 (1000/s) | persisted 11800 (985/s) | lag 150 | ..."
  std::string line() const;
};

/// Takes the progress samples: Redis (the last trade ids ts-receiver wrote, every bucket) and
/// PostgreSQL (rows in ticks, the latency of the rows since the previous sample). A server
/// that cannot be read leaves its fields empty (a fault may be on): never throws for that.
class ProgressProbe {
 public:
  ProgressProbe(std::string redis_host, std::uint16_t redis_port, std::string dsn)
      : redis_host_(std::move(redis_host)), redis_port_(redis_port), dsn_(std::move(dsn)) {}

  /// A sample `t_s` after the start (`now_unix_ms`: the same moment in Unix ms), with the
  /// faults injected so far and the latest one's kind.
  ProgressSample take(double t_s, std::int64_t now_unix_ms, std::int64_t faults,
                      std::string last_fault);

  const std::vector<ProgressSample>& samples() const { return samples_; }

 private:
  std::string redis_host_;
  std::uint16_t redis_port_;
  std::string dsn_;
  std::optional<std::int64_t> previous_unix_ms_;
  std::vector<ProgressSample> samples_;
};

/// The report's "series" member: {"interval_s": 1, "start_unix_ms", "seconds": [...],
/// "faults": [...], "progress": [...]}.
boost::json::object series_json(std::int64_t start_unix_ms, const std::vector<SecondPoint>& seconds,
                                const std::vector<FaultSpan>& faults,
                                const std::vector<ProgressSample>& progress);

}  // namespace trading_shared::e2e

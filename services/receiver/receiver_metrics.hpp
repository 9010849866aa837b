#pragma once
/// @file
/// ts-receiver's own series (docs/operations.md, "Metrics"): per symbol (label values from the
/// configuration only), per stage, and the counters the summary also reports, mirrored by a
/// sampler. Every series is resolved once; the write path only adds to counters and observes
/// histograms (relaxed atomics: no allocation, no lock).

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/ws/sequence_tracker.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include "common/summary.hpp"
#include "receiver/backfill.hpp"
#include "receiver/feed_set.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::services {

/// A symbol's series.
struct SymbolMetrics {
  SymbolMetrics(core::MetricsRegistry& registry, std::string_view symbol);
  core::Counter& trades;      ///< ts_receiver_trades_total{symbol}
  core::Counter& written;     ///< ts_receiver_trades_written_total{symbol}
  core::Counter& backfilled;  ///< ts_receiver_backfilled_total{symbol}
  core::Counter& gaps;        ///< ts_receiver_gaps_total{symbol}
  core::Counter& missing;     ///< ts_receiver_missing_trades_total{symbol}
};

/// The receiver's counters (its summary, and the sampler's source).
struct ReceiverCounters {
  std::uint64_t received = 0;
  std::uint64_t trades = 0;
  std::uint64_t control = 0;
  std::uint64_t malformed = 0;
  std::uint64_t unknown_symbol = 0;
  std::uint64_t id_jumps = 0;  // resets and outliers seen (for the log's rate limit)
  std::uint64_t written = 0;
  std::uint64_t batches = 0;
  std::uint64_t write_retries = 0;
  std::uint64_t stalls = 0;           // a key started failing
  std::uint64_t stalled_dropped = 0;  // trades dropped: a failing stream's backlog was full
  std::uint64_t unwritten = 0;        // trades still held when the service stopped
  std::uint64_t trimmed = 0;          // entries removed by --stream-maxlen
  std::uint64_t trims_held_back = 0;  // a stream over --stream-maxlen kept for a lagging group
};

/// The receiver's series that are not per symbol.
class ReceiverMetrics {
 public:
  explicit ReceiverMetrics(core::MetricsRegistry& registry);

  /// Mirrors the counters, the trades held now (the stall buffers in use), the sequence
  /// tracker's and the feed's figures.
  void sample(const ReceiverCounters& counters, std::uint64_t held,
              const ws::SequenceTracker& sequence, const FeedSetStats& feed) noexcept;

  /// ts_receiver_stage_seconds{stage="feed_to_redis"}: a batch, from its receipt from the
  /// feed to its write to Redis completed (retries included).
  core::Histogram& feed_to_redis;
  /// ts_receiver_stage_seconds{stage="event_to_redis"}: a batch's oldest live trade, from the
  /// venue's event time (its clock) to the batch's write completed.
  core::Histogram& event_to_redis;
  /// ts_receiver_batch_size: messages taken from the feed per batch (one Redis request).
  core::Histogram& batch_size;

 private:
  core::Counter& messages_;
  core::Counter& malformed_;
  core::Counter& unknown_symbol_;
  core::Counter& batches_;
  core::Counter& duplicates_;
  core::Counter& out_of_order_;
  core::Counter& id_resets_;
  core::Counter& write_retries_;
  core::Counter& stalls_;
  core::Counter& stalled_dropped_;
  core::Counter& trimmed_;
  core::Gauge& held_;
  core::Gauge& feed_connections_;
  core::Gauge& unconfirmed_symbols_;
  core::Counter& subscriptions_refused_;
  core::Counter& subscribe_timeouts_;
  core::Counter& rotations_;
};

/// The "write_path" readiness check of the receiver, run once per check interval: not ready
/// while keys fail (their trades held in the stall buffers), or while one write (retried
/// while Redis is unavailable) has been in progress for at least one check interval, so a
/// stuck write shows at the first check one interval after it began. The reasons are fixed
/// texts (the admin endpoint logs each change of a reason; the counts are in
/// ts_receiver_held_trades and ts_receiver_write_retries_total).
class WritePathReadiness {
 public:
  using Clock = std::chrono::steady_clock;
  explicit WritePathReadiness(std::chrono::milliseconds interval) : interval_(interval) {}
  /// `failing_keys`: the writer's now; `writing`, `write_started`: whether a write is in
  /// progress and when it began.
  std::string check(std::size_t failing_keys, bool writing, Clock::time_point write_started,
                    Clock::time_point now) const;

 private:
  std::chrono::milliseconds interval_;
};

/// The summary's figures (logged and written at exit), in their order.
void add_receiver_summary(Summary& s, const ReceiverCounters& c, const BackfillCounters& b,
                          const ws::SequenceTracker& seq, const ws::WebSocketStats& fs,
                          const FeedSetStats& fl, const redis::RedisStats& rs);

}  // namespace trading_shared::services

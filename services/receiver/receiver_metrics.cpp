#include "receiver/receiver_metrics.hpp"

namespace trading_shared::services {

namespace {

core::Counter& per_symbol(core::MetricsRegistry& r, std::string_view family,
                          std::string_view symbol, std::string_view help) {
  return r.counter(core::metric_name(family, {{"symbol", symbol}}), help);
}

constexpr std::string_view kStageHelp =
    "Latency of a stage of the receiver's path: feed_to_redis (a batch, from its receipt to "
    "its write completed), event_to_redis (a batch's oldest live trade, from the venue's event "
    "time to the batch's write completed).";

}  // namespace

SymbolMetrics::SymbolMetrics(core::MetricsRegistry& r, std::string_view symbol)
    : trades(per_symbol(r, "ts_receiver_trades_total", symbol,
                        "Trades received from the feed (parsed, of a configured symbol).")),
      written(per_symbol(r, "ts_receiver_trades_written_total", symbol,
                         "Trades written to their Redis stream (live and backfilled).")),
      backfilled(per_symbol(r, "ts_receiver_backfilled_total", symbol,
                            "Trades fetched from the venue's REST endpoint to fill a gap, "
                            "taken for writing.")),
      gaps(per_symbol(r, "ts_receiver_gaps_total", symbol, "Gaps in the live trade ids.")),
      missing(per_symbol(r, "ts_receiver_missing_trades_total", symbol,
                         "Trade ids skipped by the gaps of the live feed.")) {}

ReceiverMetrics::ReceiverMetrics(core::MetricsRegistry& r)
    : feed_to_redis(
          r.histogram(core::metric_name("ts_receiver_stage_seconds", {{"stage", "feed_to_redis"}}),
                      kStageHelp)),
      event_to_redis(
          r.histogram(core::metric_name("ts_receiver_stage_seconds", {{"stage", "event_to_redis"}}),
                      kStageHelp)),
      batch_size(r.histogram("ts_receiver_batch_size",
                             "Messages taken from the feed per batch (one Redis request).",
                             core::Histogram::kSizeBounds)),
      messages_(r.counter("ts_receiver_messages_total",
                          "Messages taken from the feed (trades, control, malformed).")),
      malformed_(r.counter("ts_receiver_malformed_total", "Feed messages skipped as malformed.")),
      unknown_symbol_(r.counter("ts_receiver_unknown_symbol_total",
                                "Trades of a symbol not configured, skipped.")),
      batches_(r.counter("ts_receiver_batches_total", "Batches written (Redis requests).")),
      duplicates_(
          r.counter("ts_receiver_duplicates_total", "Live trades whose id was seen already.")),
      out_of_order_(r.counter("ts_receiver_out_of_order_total",
                              "Live trades older than the symbol's last id.")),
      id_resets_(r.counter("ts_receiver_id_resets_total",
                           "Trade ids that went back (a restarted feed or venue).")),
      write_retries_(r.counter("ts_receiver_write_retries_total",
                               "Batch writes retried after a Redis failure.")),
      stalls_(r.counter("ts_receiver_stalls_total",
                        "Times a Redis key started failing with an error reply.")),
      stalled_dropped_(r.counter("ts_receiver_stalled_dropped_total",
                                 "Trades dropped: a failing stream's stall buffer was full.")),
      trimmed_(
          r.counter("ts_receiver_trimmed_total", "Stream entries removed by --stream-maxlen.")),
      held_(r.gauge("ts_receiver_held_trades",
                    "Trades held now for streams whose writes fail (the stall buffers in use).")),
      feed_connections_(
          r.gauge("ts_receiver_feed_connections", "Feed connections (shards) held now.")),
      unconfirmed_symbols_(r.gauge("ts_receiver_feed_unconfirmed_symbols",
                                   "Configured symbols whose subscription is not confirmed now.")),
      subscriptions_refused_(r.counter("ts_receiver_feed_subscriptions_refused_total",
                                       "Subscriptions the venue answered with an error.")),
      subscribe_timeouts_(r.counter("ts_receiver_feed_subscribe_timeouts_total",
                                    "Subscriptions not confirmed in time.")),
      rotations_(r.counter(
          "ts_receiver_feed_rotations_total",
          "Planned rotations of feed connections completed (before the venue's age limit).")) {}

void ReceiverMetrics::sample(const ReceiverCounters& f, std::uint64_t held,
                             const ws::SequenceTracker& sequence,
                             const FeedSetStats& feed) noexcept {
  messages_.set(f.received);
  malformed_.set(f.malformed);
  unknown_symbol_.set(f.unknown_symbol);
  batches_.set(f.batches);
  duplicates_.set(sequence.duplicates());
  out_of_order_.set(sequence.out_of_order());
  id_resets_.set(sequence.resets());
  write_retries_.set(f.write_retries);
  stalls_.set(f.stalls);
  stalled_dropped_.set(f.stalled_dropped);
  trimmed_.set(f.trimmed);
  held_.set(static_cast<std::int64_t>(held));
  feed_connections_.set(static_cast<std::int64_t>(feed.connections));
  unconfirmed_symbols_.set(static_cast<std::int64_t>(feed.unconfirmed_symbols));
  subscriptions_refused_.set(feed.subscriptions_refused);
  subscribe_timeouts_.set(feed.subscribe_timeouts);
  rotations_.set(feed.rotations);
}

std::string WritePathReadiness::check(std::size_t failing_keys, bool writing,
                                      Clock::time_point write_started,
                                      Clock::time_point now) const {
  if (failing_keys > 0) return "Redis keys failing, their trades held";
  if (writing && now - write_started >= interval_) {
    return "a batch write has been in progress for over a check interval";
  }
  return {};
}

void add_receiver_summary(Summary& s, const ReceiverCounters& c, const BackfillCounters& b,
                          const ws::SequenceTracker& seq, const ws::WebSocketStats& fs,
                          const FeedSetStats& fl, const redis::RedisStats& rs) {
  s.add("received", c.received)
      .add("trades", c.trades)
      .add("control", c.control)
      .add("malformed", c.malformed)
      .add("unknown_symbol", c.unknown_symbol)
      .add("duplicates", seq.duplicates())
      .add("out_of_order", seq.out_of_order())
      .add("id_resets", seq.resets())
      .add("outliers", seq.outliers())
      .add("gaps", seq.gaps())
      .add("missing_trades", seq.missing())
      .add("written", c.written)
      .add("batches", c.batches)
      .add("write_retries", c.write_retries)
      .add("stalls", c.stalls)
      .add("stalled_dropped", c.stalled_dropped)
      .add("unwritten", c.unwritten)
      .add("trimmed", c.trimmed)
      .add("trims_held_back", c.trims_held_back)
      .add("reconnects", fs.disconnects)
      .add("dropped", fs.dropped)
      .add("max_queued", static_cast<std::uint64_t>(fs.max_queued))
      .add("max_queued_bytes", static_cast<std::uint64_t>(fs.max_queued_bytes))
      .add("idle_timeouts", fs.reasons.idle_timeout)
      .add("protocol_errors", fs.reasons.protocol_error + fs.reasons.oversized)
      .add("redis_reconnects", rs.disconnects)
      .add("redis_breaker_trips", rs.breaker_trips)
      .add("connections", fl.connections)
      .add("subscriptions_confirmed", fl.subscriptions_confirmed)
      .add("subscriptions_refused", fl.subscriptions_refused)
      .add("subscribe_timeouts", fl.subscribe_timeouts)
      .add("unconfirmed_symbols", fl.unconfirmed_symbols)
      .add("rotations", fl.rotations)
      .add("rotation_failures", fl.rotation_failures)
      .add("backfilled", b.backfilled)
      .add("backfill_requests", b.requests)
      .add("backfill_ranges", b.ranges)
      .add("backfill_unrecoverable", b.unrecoverable)
      .add("backfill_failed", b.failed)
      .add("backfill_retries", b.retries)
      .add("backfill_throttled", b.throttled)
      .add("backfill_not_done", b.not_backfilled)
      .add("duplicates_dropped", b.duplicates_dropped);
}

}  // namespace trading_shared::services

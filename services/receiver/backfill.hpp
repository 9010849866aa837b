#pragma once
/// @file
/// ts-receiver's backfill: the merge of the live trade stream and the trades fetched from the
/// venue's REST endpoint (docs/services.md, docs/decisions.md "Live and backfill").
///
/// Per symbol:
/// - `hwm`, the high-water mark: the highest id taken (live or by an id reset).
/// - the missing ranges: ids below `hwm` not written yet (queued, being fetched, fetched and
///   not yet written), and the one range of the last jump until it is confirmed.
/// - "complete through" = min(hwm, lowest missing id - 1): every id <= it has been written (or
///   reported unrecoverable). Persisted in `md:{tNN}:tape` after the writes it covers, read on
///   start.
///
/// A live trade: `hwm + 1` is taken; above it, taken and [hwm + 1, id - 1] becomes missing; at
/// or below it, dropped (`duplicates_dropped`) unless the tracker calls it an id reset (more
/// than its reorder window below) on a newer feed connection than the high-water mark's (a
/// restarted venue numbering), or the end of an outlier. Far below on the same or an older
/// connection (a lagging connection during a rotation, a replay) is dropped too. A
/// jump is fetched once the symbol's next live trade confirms it (a lone outlier id such as
/// 9e18 is taken back by the tracker on that next trade: nothing is fetched for it).

#include <trading_shared/http/http_client.hpp>
#include <trading_shared/ws/sequence_tracker.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "receiver/historical_trades.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trading_shared::redis {
class RedisClient;
}

namespace trading_shared::services {

struct BackfillConfig {
  bool enabled = true;
  std::string rest_url;  ///< empty: derived from the feed URL (rest_url_from_feed).
  std::size_t concurrency = 2;
  std::chrono::milliseconds rest_timeout{10000};
  HistoricalTradesConfig fetch;
};

/// `ws://host:port/...` → `http://host:port`. Throws Error(invalid_argument) for a bad URL.
std::string rest_url_from_feed(std::string_view feed_url);

struct BackfillCounters : FetchCounters {
  std::uint64_t backfilled = 0;     ///< trades written from REST.
  std::uint64_t ranges = 0;         ///< missing ranges fetched.
  std::uint64_t unrecoverable = 0;  ///< ids the venue no longer has (reported).
  /// ids left missing because the venue refused the request (a 401, another permanent 4xx):
  /// "complete through" stays below them; the next start fetches them.
  std::uint64_t failed = 0;
  std::uint64_t duplicates_dropped = 0;  ///< live trades at or below the high-water mark.
  std::uint64_t not_backfilled = 0;      ///< ids still missing when the service stopped.
  std::uint64_t tape_write_failures = 0;
};

class Backfill {
 public:
  /// `client` null: backfill disabled (every live trade is taken, no tape).
  Backfill(boost::asio::any_io_executor executor, const BackfillConfig& config,
           const std::vector<std::string>& symbols, http::HttpClient* client,
           BackfillCounters& counters);
  ~Backfill();
  Backfill(const Backfill&) = delete;
  Backfill& operator=(const Backfill&) = delete;

  bool enabled() const noexcept { return client_ != nullptr; }
  /// A symbol's "complete through" id read from Redis on start.
  void set_stored(std::string_view symbol, std::int64_t complete_through);
  /// A symbol's stored gaps (field `<symbol>:gaps`, `tape_gaps()`): the highest id written and
  /// the ranges below it still missing. Used when it agrees with the stored "complete through";
  /// false (nothing kept) when `value` is not in that format.
  bool set_stored_gaps(std::string_view symbol, std::string_view value);

  /// Decides about a live trade of `symbol` (after the tracker's verdict `seen`): true = take.
  bool on_live(std::string_view symbol, std::int64_t id, const ws::SequenceTracker::Result& seen,
               std::uint64_t connection);

  /// Hands fetched trades to `take` (at most `max`); they count as written after `written()`.
  std::size_t take(std::size_t max, const std::function<void(const Trade&)>& take);
  /// The loop's write of everything taken succeeded: the missing ranges move on.
  void written();
  /// Symbols whose "complete through" changed since the last call, with that value (also
  /// when ids above a range still missing were written: their gaps are persisted too).
  std::vector<std::pair<std::string, std::int64_t>> tape_updates();
  /// `<highest id taken>[ <lo>-<hi>]...`: the ids below the high-water mark not written yet
  /// (at most kMaxStoredGaps ranges; beyond them the value claims less, never more).
  std::string tape_gaps(std::string_view symbol) const;
  /// Their write failed: they are offered again by the next `tape_updates()`.
  void tape_failed(const std::vector<std::pair<std::string, std::int64_t>>& updates);
  /// Fetching or holding fetched trades (the loop should not wait long for the feed).
  bool busy() const noexcept;

  /// Starts the workers (`concurrency` of them).
  void start();
  /// Cancels the workers and waits for them; reports what is still missing (logged, counted).
  boost::asio::awaitable<void> stop();

  struct State;

 private:
  std::shared_ptr<State> state_;
  http::HttpClient* client_;
};

/// Logs the tracker's verdict on a live trade (rate-limited). `id_jumps` counts resets and
/// outliers; `dropping`: duplicates are dropped (backfill on) rather than written.
void report_sequence(const ws::SequenceTracker& tracker, const ws::SequenceTracker::Result& seen,
                     std::string_view symbol, std::int64_t id, std::uint64_t connection,
                     std::uint64_t& id_jumps, bool dropping);

/// Reads every symbol's stored "complete through" id (`md:{tNN}:tape`) into `backfill`.
boost::asio::awaitable<void> load_tape(redis::RedisClient& redis, Backfill& backfill,
                                       const std::vector<std::string>& symbols);
/// Writes the "complete through" ids that changed (one HSET per bucket); a failure is logged,
/// counted and tried again after the next batch.
boost::asio::awaitable<void> persist_tape(redis::RedisClient& redis, Backfill& backfill,
                                          BackfillCounters& counters);

}  // namespace trading_shared::services

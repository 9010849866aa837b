#pragma once
/// @file
/// The trades a symbol generated, kept for ts-feed-sim's REST endpoint (`GET
/// /api/v3/historicalTrades`): a ring of the newest `capacity` trades, 24 bytes each, ids
/// implicit (a symbol's ids are 1, 2, 3, ... without gaps).
///
/// Not thread-safe (the simulator's one thread).

#include "feed_sim/generator.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace trading_shared::services::feed_sim {

/// A trade as the REST endpoint serves it: the generator's `Trade` and its time.
struct HistoryTrade {
  Trade trade;
  std::int64_t time_ms = 0;  ///< the stream's `T` (and `E`), the REST answer's `time`.
};

class TradeHistory {
 public:
  /// `capacity` >= 1 trades are kept; the storage grows as trades come (never beyond it).
  explicit TradeHistory(std::size_t capacity);

  /// Adds the next trade. @throws std::logic_error if `trade.id` is not `newest_id() + 1`
  /// (the first one may have any id >= 1).
  void add(const Trade& trade, std::int64_t time_ms);

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  /// 0 while empty.
  std::uint64_t oldest_id() const noexcept { return size_ == 0 ? 0 : newest_id_ - size_ + 1; }
  /// 0 while empty.
  std::uint64_t newest_id() const noexcept { return newest_id_; }

  /// Up to `limit` trades from `from_id` on, ascending (from the oldest kept if `from_id` is
  /// older; nothing if it is newer than the newest), appended to `out`. Returns how many.
  std::size_t copy_from(std::uint64_t from_id, std::size_t limit,
                        std::vector<HistoryTrade>& out) const;
  /// The newest `limit` trades (fewer if fewer are kept), ascending, appended to `out`.
  std::size_t copy_newest(std::size_t limit, std::vector<HistoryTrade>& out) const;

 private:
  /// 24 bytes: the generator's quantities fit 32 bits (at most 2 * 10^8 units).
  struct Stored {
    std::int64_t price_cents;
    std::int64_t time_ms;
    std::uint32_t qty_units;
    std::uint8_t qty_decimals;
    bool buyer_maker;
  };

  HistoryTrade at(std::uint64_t id) const noexcept;

  std::size_t capacity_;
  std::vector<Stored> ring_;  // slot of id: (id - 1) % capacity_ (ids never wrap 2^64)
  std::size_t size_ = 0;
  std::uint64_t newest_id_ = 0;
};

}  // namespace trading_shared::services::feed_sim

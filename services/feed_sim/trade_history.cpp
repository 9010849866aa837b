#include "feed_sim/trade_history.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace trading_shared::services::feed_sim {

TradeHistory::TradeHistory(std::size_t capacity) : capacity_(capacity) {
  if (capacity_ == 0) throw std::invalid_argument("TradeHistory: capacity must be at least 1");
}

void TradeHistory::add(const Trade& trade, std::int64_t time_ms) {
  if (trade.id == 0 || (size_ > 0 && trade.id != newest_id_ + 1)) {
    throw std::logic_error(fmt::format(
        "TradeHistory: trade id {} after {} (ids must be contiguous)", trade.id, newest_id_));
  }
  if (trade.qty_units > std::numeric_limits<std::uint32_t>::max() || trade.qty_decimals < 0 ||
      trade.qty_decimals > 8) {
    throw std::logic_error(
        fmt::format("TradeHistory: trade {} has a quantity of {} units with {} "
                    "decimals: not storable",
                    trade.id, trade.qty_units, trade.qty_decimals));
  }
  const Stored stored{trade.price_cents, time_ms, static_cast<std::uint32_t>(trade.qty_units),
                      static_cast<std::uint8_t>(trade.qty_decimals), trade.buyer_maker};
  const auto slot = static_cast<std::size_t>((trade.id - 1) % capacity_);
  // The storage grows as trades come. (The first id is > 1 only in tests: the slots before
  // it are never read, they are older than oldest_id().)
  if (ring_.size() <= slot) ring_.resize(slot + 1);
  ring_[slot] = stored;
  newest_id_ = trade.id;
  size_ = std::min(size_ + 1, capacity_);
}

HistoryTrade TradeHistory::at(std::uint64_t id) const noexcept {
  const auto& s = ring_[static_cast<std::size_t>((id - 1) % capacity_)];
  HistoryTrade out;
  out.trade.id = id;
  out.trade.price_cents = s.price_cents;
  out.trade.qty_units = s.qty_units;
  out.trade.qty_decimals = s.qty_decimals;
  out.trade.buyer_maker = s.buyer_maker;
  out.time_ms = s.time_ms;
  return out;
}

std::size_t TradeHistory::copy_from(std::uint64_t from_id, std::size_t limit,
                                    std::vector<HistoryTrade>& out) const {
  if (size_ == 0 || from_id > newest_id_) return 0;
  const std::uint64_t first = std::max(from_id, oldest_id());
  const std::uint64_t count = std::min<std::uint64_t>(limit, newest_id_ - first + 1);
  for (std::uint64_t id = first; id < first + count; ++id) out.push_back(at(id));
  return static_cast<std::size_t>(count);
}

std::size_t TradeHistory::copy_newest(std::size_t limit, std::vector<HistoryTrade>& out) const {
  if (size_ == 0 || limit == 0) return 0;
  const std::uint64_t count = std::min<std::uint64_t>(limit, size_);
  return copy_from(newest_id_ - count + 1, limit, out);
}

}  // namespace trading_shared::services::feed_sim

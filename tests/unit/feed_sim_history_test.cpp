// ts-feed-sim's trade history ring (services/feed_sim/trade_history.hpp), the store of its REST
// endpoint.
#include "feed_sim/generator.hpp"
#include "feed_sim/trade_history.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace {

namespace feed = trading_shared::services::feed_sim;

/// `n` trades of the generator for BTCUSDT, times 1000 + id.
std::vector<feed::Trade> generate(std::size_t n) {
  feed::SymbolGenerator generator("BTCUSDT", 7);
  std::vector<feed::Trade> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(generator.next());
  return out;
}

std::vector<std::uint64_t> ids(const std::vector<feed::HistoryTrade>& trades) {
  std::vector<std::uint64_t> out;
  out.reserve(trades.size());
  for (const auto& t : trades) out.push_back(t.trade.id);
  return out;
}

TEST(FeedSimHistory, KeepsEveryFieldOfTheTrades) {
  const auto trades = generate(50);
  feed::TradeHistory history(100);
  for (const auto& t : trades) history.add(t, 1000 + static_cast<std::int64_t>(t.id));
  EXPECT_EQ(history.size(), 50U);
  EXPECT_EQ(history.oldest_id(), 1U);
  EXPECT_EQ(history.newest_id(), 50U);
  std::vector<feed::HistoryTrade> out;
  ASSERT_EQ(history.copy_from(1, 1000, out), 50U);
  for (std::size_t i = 0; i < trades.size(); ++i) {
    EXPECT_EQ(out[i].trade.id, trades[i].id);
    EXPECT_EQ(out[i].trade.price_cents, trades[i].price_cents);
    EXPECT_EQ(out[i].trade.qty_units, trades[i].qty_units);
    EXPECT_EQ(out[i].trade.qty_decimals, trades[i].qty_decimals);
    EXPECT_EQ(out[i].trade.buyer_maker, trades[i].buyer_maker);
    EXPECT_EQ(out[i].time_ms, 1000 + static_cast<std::int64_t>(trades[i].id));
  }
}

TEST(FeedSimHistory, PagesFromAnIdAndTheNewest) {
  feed::TradeHistory history(1000);
  for (const auto& t : generate(30)) history.add(t, 0);
  std::vector<feed::HistoryTrade> out;
  EXPECT_EQ(history.copy_from(11, 5, out), 5U);
  EXPECT_EQ(ids(out), (std::vector<std::uint64_t>{11, 12, 13, 14, 15}));
  out.clear();
  EXPECT_EQ(history.copy_from(28, 10, out), 3U);  // up to the newest
  EXPECT_EQ(ids(out), (std::vector<std::uint64_t>{28, 29, 30}));
  out.clear();
  EXPECT_EQ(history.copy_from(31, 10, out), 0U);  // newer than the newest: nothing
  EXPECT_EQ(history.copy_newest(3, out), 3U);
  EXPECT_EQ(ids(out), (std::vector<std::uint64_t>{28, 29, 30}));
  out.clear();
  EXPECT_EQ(history.copy_newest(100, out), 30U);
  EXPECT_EQ(out.front().trade.id, 1U);
}

TEST(FeedSimHistory, EvictsTheOldestAndStartsThereForOlderIds) {
  const auto trades = generate(25);
  feed::TradeHistory history(10);
  for (const auto& t : trades) history.add(t, static_cast<std::int64_t>(t.id));
  EXPECT_EQ(history.size(), 10U);
  EXPECT_EQ(history.oldest_id(), 16U);
  EXPECT_EQ(history.newest_id(), 25U);
  std::vector<feed::HistoryTrade> out;
  EXPECT_EQ(history.copy_from(1, 4, out), 4U);  // evicted ids: from the oldest kept
  EXPECT_EQ(ids(out), (std::vector<std::uint64_t>{16, 17, 18, 19}));
  EXPECT_EQ(out[2].trade.price_cents, trades[17].price_cents);  // the ring's wrapped slots
  EXPECT_EQ(out[2].time_ms, 18);
  out.clear();
  EXPECT_EQ(history.copy_newest(10, out), 10U);
  EXPECT_EQ(out.back().trade.qty_units, trades[24].qty_units);
}

TEST(FeedSimHistory, RefusesAGapInTheIds) {
  feed::TradeHistory history(10);
  feed::Trade t;
  t.id = 1;
  t.price_cents = 100;
  t.qty_units = 1;
  history.add(t, 0);
  t.id = 3;
  EXPECT_THROW(history.add(t, 0), std::logic_error);
  t.id = 2;
  t.qty_units = 1ULL << 40U;  // does not fit the compact record
  EXPECT_THROW(history.add(t, 0), std::logic_error);
  EXPECT_THROW(feed::TradeHistory(0), std::invalid_argument);
  EXPECT_EQ(history.newest_id(), 1U);
}

}  // namespace

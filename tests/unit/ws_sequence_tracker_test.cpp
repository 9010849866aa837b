// ws::SequenceTracker (include/trading_shared/ws/sequence_tracker.hpp): the verdicts on
// per-key sequence numbers, the counts, ids going backwards (F43: a restarted feed, a venue
// reset, one outlier id) and the extremes of int64 (no signed overflow: UBSan build).
#include <trading_shared/ws/sequence_tracker.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace {

using trading_shared::ws::SequenceTracker;
using Kind = SequenceTracker::Result::Kind;
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

TEST(SequenceTracker, InOrderGapsDuplicatesAndLateNumbers) {
  SequenceTracker t;
  EXPECT_EQ(t.observe("A", 5).kind, Kind::first);
  EXPECT_EQ(t.observe("A", 6).kind, Kind::in_order);
  const auto gap = t.observe("A", 10);
  EXPECT_EQ(gap.kind, Kind::gap);
  EXPECT_EQ(gap.missing, 3U);
  EXPECT_EQ(gap.previous, 6);
  EXPECT_EQ(t.observe("A", 10).kind, Kind::duplicate);
  const auto late = t.observe("A", 9);
  EXPECT_EQ(late.kind, Kind::out_of_order);
  EXPECT_EQ(late.behind, 1U);
  EXPECT_EQ(t.observe("A", 11).kind, Kind::in_order);  // a late number does not move it
  EXPECT_EQ(t.observe("B", 1).kind, Kind::first);      // keys are independent
  EXPECT_EQ(t.observe("B", 2).kind, Kind::in_order);
  EXPECT_EQ(t.gaps(), 1U);
  EXPECT_EQ(t.missing(), 3U);
  EXPECT_EQ(t.duplicates(), 1U);
  EXPECT_EQ(t.out_of_order(), 1U);
  EXPECT_EQ(t.resets(), 0U);
  EXPECT_EQ(t.last("A"), 11);
  EXPECT_EQ(t.last("C"), -1);
}

// The old tracker kept the highest id forever: after a restart every lower id was
// "duplicate_or_old" and the receiver dropped the trades until the ids passed the old maximum.
TEST(SequenceTracker, F43_RestartOnANewConnectionIsAResetAndTheTrackerFollows) {
  SequenceTracker t;
  for (std::int64_t id = 1; id <= 3000; ++id) (void)t.observe("S", id, 1);
  const auto r = t.observe("S", 1, 2);  // the feed restarted: ids from 1 on connection 2
  EXPECT_EQ(r.kind, Kind::reset);
  EXPECT_EQ(r.previous, 3000);
  EXPECT_EQ(r.behind, 2999U);
  for (std::int64_t id = 2; id <= 100; ++id) {
    ASSERT_EQ(t.observe("S", id, 2).kind, Kind::in_order) << id;
  }
  EXPECT_EQ(t.resets(), 1U);
  EXPECT_EQ(t.last("S"), 100);
  // On a new connection any step back is a reset, however small.
  SequenceTracker small;
  (void)small.observe("S", 10, 1);
  EXPECT_EQ(small.observe("S", 9, 2).kind, Kind::reset);
  // ... but the same number again is a duplicate (a replay of the last trade).
  EXPECT_EQ(small.observe("S", 9, 3).kind, Kind::duplicate);
}

TEST(SequenceTracker, F43_FarBackOnTheSameConnectionIsAReset) {
  SequenceTracker t(100);
  (void)t.observe("S", 5000);
  EXPECT_EQ(t.observe("S", 4900).kind, Kind::out_of_order);  // within the window
  const auto r = t.observe("S", 4899);                       // beyond it
  EXPECT_EQ(r.kind, Kind::reset);
  EXPECT_EQ(r.behind, 101U);
  EXPECT_EQ(t.observe("S", 4900).kind, Kind::in_order);
  EXPECT_EQ(t.resets(), 1U);
  EXPECT_EQ(t.out_of_order(), 1U);
}

TEST(SequenceTracker, F43_OneOutlierIdIsTakenBackAndLaterIdsAreInOrder) {
  SequenceTracker t;
  for (std::int64_t id = 1; id <= 1000; ++id) (void)t.observe("S", id);
  const auto jump = t.observe("S", 9'000'000'000'000'000'000LL);
  EXPECT_EQ(jump.kind, Kind::gap);
  const auto back = t.observe("S", 1001);
  EXPECT_EQ(back.kind, Kind::after_outlier);
  EXPECT_EQ(back.previous, 9'000'000'000'000'000'000LL);
  EXPECT_EQ(t.observe("S", 1002).kind, Kind::in_order);
  EXPECT_EQ(t.gaps(), 0U);
  EXPECT_EQ(t.missing(), 0U);
  EXPECT_EQ(t.outliers(), 1U);
  // A low outlier (a reset that the next id takes back) too.
  (void)t.observe("S", 3);
  EXPECT_EQ(t.observe("S", 1003).kind, Kind::after_outlier);
  EXPECT_EQ(t.resets(), 0U);
  EXPECT_EQ(t.outliers(), 2U);
  EXPECT_EQ(t.last("S"), 1003);
}

TEST(SequenceTracker, F43_ExtremesOfInt64WithoutOverflow) {
  SequenceTracker t;
  (void)t.observe("S", kMax - 1);
  EXPECT_EQ(t.observe("S", kMax).kind, Kind::in_order);
  EXPECT_EQ(t.observe("S", kMax).kind, Kind::duplicate);  // last + 1 would overflow
  const auto back = t.observe("S", 1);
  EXPECT_EQ(back.kind, Kind::reset);
  EXPECT_EQ(back.behind, static_cast<std::uint64_t>(kMax) - 1);
  const auto full = t.observe("S", kMin, 7);
  EXPECT_EQ(full.kind, Kind::reset);
  const auto widest = t.observe("S", kMax, 7);  // the whole range in one gap
  EXPECT_EQ(widest.kind, Kind::gap);
  EXPECT_EQ(widest.missing, std::numeric_limits<std::uint64_t>::max() - 1);
  const auto again = t.observe("S", kMin + 5, 7);
  EXPECT_EQ(again.kind, Kind::reset);
  EXPECT_EQ(again.behind, std::numeric_limits<std::uint64_t>::max() - 5);
  (void)t.observe("S", kMax, 7);  // another huge gap: the count saturates, never wraps
  EXPECT_EQ(t.missing(), std::numeric_limits<std::uint64_t>::max());
}

}  // namespace

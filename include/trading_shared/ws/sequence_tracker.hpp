#pragma once
/// @file
/// `SequenceTracker`: reports what per-key sequence numbers (trade ids per symbol, update
/// ids) do: in order, a gap, a duplicate, a late (out-of-order) number, a reset (numbers
/// starting again lower: a restarted feed, a venue's id reset), or a lone outlier.
///
/// It reports; it never decides what a caller keeps. ts-receiver writes every trade whatever
/// the verdict (the recorder's primary key deduplicates) and logs and counts the verdicts.
///
/// Rules, for a key whose last number is `last` (seen on connection `c`):
/// - `first`: the key's first number.
/// - `in_order`: `last + 1`.
/// - `gap`: above `last + 1`; `missing` numbers were skipped. The tracker moves to it.
/// - `duplicate`: equal to `last`.
/// - `out_of_order`: below `last` by at most `reorder_window`, on the same connection (a late
///   or repeated number); the tracker stays at `last`.
/// - `reset`: below `last` on a new connection (the feed restarted its numbering), or below it
///   by more than `reorder_window` on the same connection. The tracker moves to it.
/// - `after_outlier`: the number right after the one before the previous jump (gap or reset):
///   that jump was one bogus number (e.g. 9e18 among ids near 1000). Its gap or reset is taken
///   back out of the counts and counted as an outlier instead; the tracker moves on from here.
///
/// Arithmetic is done on unsigned differences: any int64 values, INT64_MAX included, are
/// handled without signed overflow. Allocation-free after a key's first sighting; a key is
/// found in constant time (a hash table looked up by `string_view`), whatever the number of
/// keys (F72: 500 symbols cost a trade what 2 do).
///
/// Threading: none (one owner).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace trading_shared::ws {

class SequenceTracker {
 public:
  struct Result {
    enum Kind : std::uint8_t {
      first,
      in_order,
      gap,
      duplicate,
      out_of_order,
      reset,
      after_outlier
    } kind = first;
    /// `gap`: how many numbers were skipped.
    std::uint64_t missing = 0;
    /// `out_of_order`, `reset`: how far below the last number this one is.
    std::uint64_t behind = 0;
    /// The key's last number before this one (`first`: this one).
    std::int64_t previous = 0;
  };

  /// Late numbers within this distance below the last one, on the same connection, are
  /// `out_of_order`; farther below, a `reset`.
  static constexpr std::uint64_t kDefaultReorderWindow = 100;

  explicit SequenceTracker(std::uint64_t reorder_window = kDefaultReorderWindow) noexcept
      : reorder_window_(reorder_window) {}

  /// Observes `sequence` for `key`, received on `connection` (any number that changes when
  /// the feed reconnects; 0 when there is only one).
  Result observe(std::string_view key, std::int64_t sequence, std::uint64_t connection = 0);

  std::uint64_t gaps() const noexcept { return gaps_; }
  /// Numbers skipped by the gaps (saturates at UINT64_MAX).
  std::uint64_t missing() const noexcept { return missing_; }
  std::uint64_t duplicates() const noexcept { return duplicates_; }
  std::uint64_t out_of_order() const noexcept { return out_of_order_; }
  std::uint64_t resets() const noexcept { return resets_; }
  std::uint64_t outliers() const noexcept { return outliers_; }
  /// Last sequence the tracker moved to for `key`, or -1.
  std::int64_t last(std::string_view key) const noexcept;

 private:
  struct Key {
    std::int64_t last = 0;
    std::uint64_t connection = 0;
    /// The previous observation moved the tracker by a jump (gap or reset) from `before`.
    Result::Kind jump = Result::first;
    std::int64_t before = 0;
    std::uint64_t jump_missing = 0;
  };

  /// Heterogeneous lookup: a `string_view` finds its key without building a string.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept {
      return std::hash<std::string_view>{}(key);
    }
  };
  std::unordered_map<std::string, Key, Hash, std::equal_to<>> keys_;
  std::uint64_t reorder_window_;
  std::uint64_t gaps_ = 0;
  std::uint64_t missing_ = 0;
  std::uint64_t duplicates_ = 0;
  std::uint64_t out_of_order_ = 0;
  std::uint64_t resets_ = 0;
  std::uint64_t outliers_ = 0;
};

}  // namespace trading_shared::ws

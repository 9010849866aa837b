#include <trading_shared/ws/sequence_tracker.hpp>

#include <limits>

namespace trading_shared::ws {

namespace {

/// `to - from` for `to >= from`, exact for any int64 values (no signed overflow).
std::uint64_t distance(std::int64_t from, std::int64_t to) noexcept {
  return static_cast<std::uint64_t>(to) - static_cast<std::uint64_t>(from);
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) noexcept {
  return a > std::numeric_limits<std::uint64_t>::max() - b
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

}  // namespace

SequenceTracker::Result SequenceTracker::observe(std::string_view key, std::int64_t sequence,
                                                 std::uint64_t connection) {
  if (const auto it = keys_.find(key); it != keys_.end()) {
    Key& k = it->second;
    Result r;
    r.previous = k.last;
    const Result::Kind jump = k.jump;
    k.jump = Result::first;  // only the very next number can take a jump back
    const bool same_connection = connection == k.connection;
    k.connection = connection;
    if (jump != Result::first && sequence > k.before && distance(k.before, sequence) == 1) {
      // The numbers go on from where they were before the jump: the jump was one outlier.
      if (jump == Result::gap) {
        --gaps_;
        missing_ = missing_ >= k.jump_missing ? missing_ - k.jump_missing : 0;
      } else {
        --resets_;
      }
      ++outliers_;
      k.last = sequence;
      r.kind = Result::after_outlier;
      return r;
    }
    if (sequence > k.last) {
      const std::uint64_t ahead = distance(k.last, sequence);
      if (ahead == 1) {
        r.kind = Result::in_order;
      } else {
        r.kind = Result::gap;
        r.missing = ahead - 1;
        ++gaps_;
        missing_ = saturating_add(missing_, r.missing);
        k.jump = Result::gap;
        k.before = k.last;
        k.jump_missing = r.missing;
      }
      k.last = sequence;
      return r;
    }
    if (sequence == k.last) {
      r.kind = Result::duplicate;
      ++duplicates_;
      return r;
    }
    r.behind = distance(sequence, k.last);
    if (same_connection && r.behind <= reorder_window_) {
      r.kind = Result::out_of_order;
      ++out_of_order_;
      return r;
    }
    r.kind = Result::reset;
    ++resets_;
    k.jump = Result::reset;
    k.before = k.last;
    k.last = sequence;
    return r;
  }
  keys_.emplace(std::string(key), Key{sequence, connection, Result::first, 0, 0});
  Result r;
  r.previous = sequence;
  return r;
}

std::int64_t SequenceTracker::last(std::string_view key) const noexcept {
  const auto it = keys_.find(key);
  return it == keys_.end() ? -1 : it->second.last;
}

}  // namespace trading_shared::ws

#pragma once
/// @file
/// ts-feed-sim: the venue's WebSocket limits (docs/services.md, docs/failure-modes.md F59,
/// F60): streams per connection, incoming messages per second, the server's ping/pong
/// contract and the maximum connection lifetime. The pure pieces live here (testable with a
/// fake clock); feed_sim_limits.cpp applies them to its connections.

#include <trading_shared/core/config.hpp>

#include "common/summary.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace trading_shared::services::feed_sim {

struct VenueLimits {
  /// A SUBSCRIBE that would take a connection past it is refused (error reply, nothing
  /// subscribed).
  std::uint64_t max_streams_per_connection = 1024;
  /// More incoming messages (text, binary, ping and pong frames, as Binance counts them) than
  /// this in any 1 s: the connection is closed.
  std::uint64_t max_control_messages_per_second = 5;
  /// The server pings every connection this often (0 = off).
  std::chrono::milliseconds ping_interval{20000};
  /// A ping not answered by a pong within this: the connection is closed.
  std::chrono::milliseconds pong_timeout{60000};
  /// A connection is closed (close frame, going away) at this age (0 = off).
  std::chrono::milliseconds max_connection_lifetime{0};
};

/// Registers the limits' settings (flags, `TS_*` variables, TOML keys).
void add_limits_settings(core::ConfigLoader& loader, VenueLimits& limits);
/// @throws core::ConfigError naming the flag.
void check_limits(const VenueLimits& limits);

/// Incoming messages of one connection against "at most `limit` in any 1 s".
class MessageRate {
 public:
  using Clock = std::chrono::steady_clock;
  explicit MessageRate(std::uint64_t limit) : limit_(limit) {}
  /// Records a message arriving at `at`; false when it makes more than `limit` within 1 s.
  bool admit(Clock::time_point at);

 private:
  std::uint64_t limit_;
  std::deque<Clock::time_point> recent_;  // the last `limit` arrivals
};

/// The ping/pong contract and the lifetime of one connection.
class ConnectionClock {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Due : std::uint8_t { nothing, ping, pong_timeout, lifetime };
  ConnectionClock(const VenueLimits& limits, Clock::time_point opened);
  /// Whether anything is to be watched at all (pings or a lifetime).
  bool active() const noexcept;
  /// What is due at `now` (the lifetime first, then a missing pong, then a ping).
  Due due(Clock::time_point now) const noexcept;
  /// When to look again (after `now`).
  Clock::time_point next(Clock::time_point now) const noexcept;
  /// A ping is on its way (sent at `now`).
  void pinged(Clock::time_point now) noexcept;
  /// A pong arrived: every ping so far is answered.
  void ponged() noexcept;

 private:
  VenueLimits limits_;
  Clock::time_point opened_;
  Clock::time_point next_ping_;
  Clock::time_point unanswered_since_{};  // the oldest ping not answered
  bool awaiting_ = false;
};

/// Streams a connection would carry after subscribing `indices` (duplicates and streams it
/// already has count once).
std::size_t streams_after(const std::vector<bool>& subscribed,
                          const std::vector<std::size_t>& indices);

/// The limits' counters (the summary's fields).
struct LimitCounters {
  std::uint64_t pings_sent = 0;
  std::uint64_t pong_timeouts = 0;
  std::uint64_t control_rate_closes = 0;
  std::uint64_t stream_limit_refusals = 0;
  std::uint64_t lifetime_closes = 0;
  void add_to(Summary& summary) const;
};

}  // namespace trading_shared::services::feed_sim

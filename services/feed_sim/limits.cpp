#include "feed_sim/limits.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace trading_shared::services::feed_sim {

using std::chrono::milliseconds;

void add_limits_settings(core::ConfigLoader& loader, VenueLimits& limits) {
  loader
      .add(limits.max_streams_per_connection,
           {"max_streams_per_connection",
            "streams one connection may subscribe to; a SUBSCRIBE past it is refused"})
      .add(limits.max_control_messages_per_second,
           {"max_control_messages_per_second",
            "incoming messages (ping and pong frames included) per connection in any 1 s; "
            "more: the connection is closed"})
      .add(limits.ping_interval,
           {"ping_interval", "the server pings each connection this often (0 = off)"})
      .add(limits.pong_timeout,
           {"pong_timeout", "a ping not answered by a pong within this closes the connection"})
      .add(limits.max_connection_lifetime,
           {"max_connection_lifetime",
            "a connection is closed (close frame, going away) at this age (0 = off)"});
}

void check_limits(const VenueLimits& limits) {
  if (limits.max_streams_per_connection == 0) {
    throw core::ConfigError("--max-streams-per-connection must be at least 1");
  }
  if (limits.max_control_messages_per_second == 0) {
    throw core::ConfigError("--max-control-messages-per-second must be at least 1");
  }
  if (limits.ping_interval < milliseconds::zero()) {
    throw core::ConfigError("--ping-interval must be >= 0 (0: no pings)");
  }
  if (limits.pong_timeout <= milliseconds::zero()) {
    throw core::ConfigError("--pong-timeout must be positive");
  }
  if (limits.max_connection_lifetime < milliseconds::zero()) {
    throw core::ConfigError("--max-connection-lifetime must be >= 0 (0: unlimited)");
  }
}

bool MessageRate::admit(Clock::time_point at) {
  if (recent_.size() == limit_ && at - recent_.front() < std::chrono::seconds(1)) return false;
  recent_.push_back(at);
  while (recent_.size() > limit_) recent_.pop_front();
  return true;
}

ConnectionClock::ConnectionClock(const VenueLimits& limits, Clock::time_point opened)
    : limits_(limits), opened_(opened), next_ping_(opened + limits.ping_interval) {}

bool ConnectionClock::active() const noexcept {
  return limits_.ping_interval > milliseconds::zero() ||
         limits_.max_connection_lifetime > milliseconds::zero();
}

ConnectionClock::Due ConnectionClock::due(Clock::time_point now) const noexcept {
  if (limits_.max_connection_lifetime > milliseconds::zero() &&
      now >= opened_ + limits_.max_connection_lifetime) {
    return Due::lifetime;
  }
  if (awaiting_ && now >= unanswered_since_ + limits_.pong_timeout) return Due::pong_timeout;
  if (limits_.ping_interval > milliseconds::zero() && now >= next_ping_) return Due::ping;
  return Due::nothing;
}

ConnectionClock::Clock::time_point ConnectionClock::next(Clock::time_point now) const noexcept {
  auto at = Clock::time_point::max();
  if (limits_.max_connection_lifetime > milliseconds::zero()) {
    at = std::min(at, opened_ + limits_.max_connection_lifetime);
  }
  if (awaiting_) at = std::min(at, unanswered_since_ + limits_.pong_timeout);
  if (limits_.ping_interval > milliseconds::zero()) at = std::min(at, next_ping_);
  return std::max(at, now);
}

void ConnectionClock::pinged(Clock::time_point now) noexcept {
  if (!awaiting_) {
    awaiting_ = true;
    unanswered_since_ = now;
  }
  next_ping_ = now + limits_.ping_interval;
}

void ConnectionClock::ponged() noexcept {
  awaiting_ = false;
}

std::size_t streams_after(const std::vector<bool>& subscribed,
                          const std::vector<std::size_t>& indices) {
  std::vector<bool> after = subscribed;
  for (const auto i : indices) {
    if (i < after.size()) after[i] = true;
  }
  return static_cast<std::size_t>(std::count(after.begin(), after.end(), true));
}

void LimitCounters::add_to(Summary& summary) const {
  summary.add("pings_sent", pings_sent)
      .add("pong_timeouts", pong_timeouts)
      .add("control_rate_closes", control_rate_closes)
      .add("stream_limit_refusals", stream_limit_refusals)
      .add("lifetime_closes", lifetime_closes);
}

}  // namespace trading_shared::services::feed_sim

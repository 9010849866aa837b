// ts-feed-sim: the venue's WebSocket limits (limits.hpp) applied to its connections: incoming
// message rate, streams per connection, server pings and pongs, connection lifetime. The parts
// of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

/// Watches a connection that has just opened: ping and pong frames count as incoming
/// messages (as Binance counts them), a pong answers the pings; pings and the lifetime are
/// kept by keep_limits.
void FeedSimulator::Impl::watch_limits(const std::shared_ptr<Connection>& c) {
  const std::weak_ptr<Connection> weak = c;
  c->ws.control_callback([this, weak](websocket::frame_type kind, beast::string_view) {
    const auto conn = weak.lock();
    if (!conn || kind == websocket::frame_type::close) return;
    if (kind == websocket::frame_type::pong) conn->clock.ponged();
    // Not inside Beast's read: end() closes the socket the read is using.
    if (!conn->rate.admit(Clock::now())) {
      asio::post(executor_, [self = shared_from_this(), conn] { self->close_over_rate(*conn); });
    }
  });
  if (c->clock.active()) spawn(keep_limits(c), c, "limits");
}

/// Counts one incoming message; false when it was over the rate and ended the connection.
bool FeedSimulator::Impl::admit_incoming(Connection& c) {
  if (c.rate.admit(Clock::now())) return true;
  close_over_rate(c);
  return c.state != ConnState::ended;
}

void FeedSimulator::Impl::close_over_rate(Connection& c) {
  if (c.state != ConnState::open) return;
  ++limit_counts_.control_rate_closes;
  log()->warn("connection #{}: more than {} incoming message(s) in 1 s: closing it", c.id,
              config_.limits.max_control_messages_per_second);
  end(c, fmt::format("over --max-control-messages-per-second ({})",
                     config_.limits.max_control_messages_per_second));
}

/// Refuses a SUBSCRIBE that would take `c` past --max-streams-per-connection.
bool FeedSimulator::Impl::over_stream_limit(Connection& c, const std::vector<std::size_t>& indices,
                                            const json::value& id) {
  const std::size_t after = streams_after(c.subscribed, indices);
  if (after <= config_.limits.max_streams_per_connection) return false;
  ++limit_counts_.stream_limit_refusals;
  log()->warn("connection #{}: SUBSCRIBE refused: {} stream(s) would pass the limit of {}", c.id,
              after, config_.limits.max_streams_per_connection);
  reply_error(c, -1,
              fmt::format("Too many streams: {} would pass the limit of {} per connection", after,
                          config_.limits.max_streams_per_connection),
              id);
  return true;
}

// ---- venue limits (limits.hpp) ----

/// Server pings every --ping-interval; no pong within --pong-timeout, or the connection's
/// age at --max-connection-lifetime: it is closed.
asio::awaitable<void> FeedSimulator::Impl::keep_limits(std::shared_ptr<Connection> c) {
  while (c->state == ConnState::open) {
    const auto now = Clock::now();
    switch (c->clock.due(now)) {
      case ConnectionClock::Due::lifetime:
        ++limit_counts_.lifetime_closes;
        log()->info("connection #{}: --max-connection-lifetime ({} ms) reached: closing it", c->id,
                    config_.limits.max_connection_lifetime.count());
        c->close_text = "connection lifetime reached";
        c->state = ConnState::closing;  // the writer sends the close frame (going away)
        c->wake.notify_all();
        co_return;
      case ConnectionClock::Due::pong_timeout:
        ++limit_counts_.pong_timeouts;
        log()->warn("connection #{}: no pong within --pong-timeout ({} ms): closing it", c->id,
                    config_.limits.pong_timeout.count());
        end(*c, "no pong within --pong-timeout");
        co_return;
      case ConnectionClock::Due::ping:
        c->clock.pinged(now);
        c->ping_due = true;
        c->wake.notify_all();
        continue;
      case ConnectionClock::Due::nothing:
        break;
    }
    (void)co_await c->keeper.wait_until(c->clock.next(now));  // notified: the connection ended
  }
}

/// The writer's ping (writes are the writer's alone); false once the connection ended.
asio::awaitable<bool> FeedSimulator::Impl::send_ping(std::shared_ptr<Connection> c) {
  c->ping_due = false;
  if (c->corked) set_cork(*c, false);
  boost::system::error_code ec;
  co_await c->ws.async_ping({}, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    end(*c, "ping failed: " + ec.message());
    co_return false;
  }
  ++limit_counts_.pings_sent;
  co_return c->state == ConnState::open || c->state == ConnState::closing;
}

}  // namespace trading_shared::services::feed_sim

// ts-feed-sim: the fault switches (--fault-*): a stalled connection, a dropped one, malformed,
// oversized and outlier messages. The parts of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

/// The fault switches, checked before the first trade and after each trade sent.
asio::awaitable<void> FeedSimulator::Impl::apply_faults(std::shared_ptr<Connection> c) {
  const auto sent = static_cast<std::int64_t>(c->trades_sent);
  if (config_.fault_oversized_after >= 0 && !c->oversized_sent &&
      sent == config_.fault_oversized_after) {
    c->oversized_sent = true;
    log()->info("connection #{}: fault: sending a {} byte frame after {} trade(s)", c->id,
                oversized_->size(), sent);
    const bool ok = co_await write_text(c, oversized_->data(), oversized_->size());
    if (!ok) co_return;
    ++oversized_sent_;
  }
  if (config_.fault_outlier_after >= 0 && !c->outlier_sent && sent == config_.fault_outlier_after) {
    c->outlier_sent = true;
    const auto subscribed = std::find(c->subscribed.begin(), c->subscribed.end(), true);
    if (subscribed != c->subscribed.end()) {
      const auto& symbol = symbols_[static_cast<std::size_t>(subscribed - c->subscribed.begin())];
      Trade outlier;
      outlier.id = config_.fault_outlier_id;
      outlier.price_cents = start_price_cents(symbol.name);
      outlier.qty_units = 1;
      std::string json;
      const std::int64_t now_ms = unix_millis();
      append_trade_json(json, symbol.name, outlier, now_ms, now_ms);
      log()->info("connection #{}: fault: a {} trade with id {} after {} trade(s)", c->id,
                  symbol.name, outlier.id, sent);
      const bool ok = co_await write_text(c, json.data(), json.size());
      if (!ok) co_return;
      ++outliers_sent_;
    }
  }
  if (config_.fault_stall_after >= 0 && sent == config_.fault_stall_after) {
    if (c->corked) set_cork(*c, false);  // what was written reaches the client
    stall(*c);
    co_return;
  }
  if (config_.fault_drop_after >= 0 && sent == config_.fault_drop_after) {
    ++dropped_connections_;
    if (c->corked) set_cork(*c, false);  // the reset discards what is still unsent
    boost::system::error_code ec;
    beast::get_lowest_layer(c->ws).set_option(asio::socket_base::linger(true, 0), ec);
    if (ec) log()->warn("connection #{}: SO_LINGER: {}", c->id, ec.message());
    end(*c, fmt::format("fault: TCP connection reset after {} trade(s)", sent));
  }
}

void FeedSimulator::Impl::stall(Connection& c) {
  c.state = ConnState::stalled;
  ++stalled_connections_;
  for (const auto& m : c.queue) {
    if (m.kind == MsgKind::trade) ++dropped_for_stalled_;
  }
  c.queue.clear();
  log()->info("connection #{}: fault: stalled after {} trade(s): no more reads or writes", c.id,
              c.trades_sent);
  // Beast's idle timer would send a keep-alive ping and later time the connection out.
  c.ws.set_option(websocket::stream_base::timeout{websocket::stream_base::none(),
                                                  websocket::stream_base::none(), false});
  // The pending WebSocket read ends (operation_aborted); the reader then only watches for
  // the client going away.
  boost::system::error_code ec;
  beast::get_lowest_layer(c.ws).cancel(ec);
  if (ec) log()->warn("connection #{}: cancel: {}", c.id, ec.message());
}

/// A stalled connection neither reads WebSocket frames (pings go unanswered) nor writes;
/// raw bytes are read and thrown away only to notice when the client goes away.
asio::awaitable<void> FeedSimulator::Impl::discard_while_stalled(std::shared_ptr<Connection> c) {
  std::array<char, 4096> sink{};
  boost::system::error_code ec;
  while (c->state == ConnState::stalled) {
    co_await c->ws.next_layer().async_read_some(asio::buffer(sink),
                                                asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
  }
  end(*c, "stalled connection: the client went away (" + ec.message() + ")");
}

}  // namespace trading_shared::services::feed_sim

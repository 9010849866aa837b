// ts-feed-sim: trade generation, paced (Pacer, generator.hpp) in ticks, serialized once per batch
// and shared by every subscriber. The parts of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

// ---- generation ----

bool FeedSimulator::Impl::any_active() const noexcept {
  return std::any_of(symbols_.begin(), symbols_.end(),
                     [this](const SymbolState& s) { return trading(s); });
}

bool FeedSimulator::Impl::trading(const SymbolState& s) const noexcept {
  return s.active > 0 || (config_.keep_trading && s.subscribed_once);
}

asio::awaitable<void> FeedSimulator::Impl::generate_loop() {
  bool was_active = false;
  while (generating_) {
    const auto now = Clock::now();
    const bool active = any_active();
    if (active && !was_active) pacer_.restart(now);
    was_active = active;
    if (active) generate(pacer_.take_due(now));
    if (!generating_) break;
    // Idle: until subscribe() or stop_generating() notifies.
    const auto next = active ? std::max(pacer_.next_due(), now + kTick) : Clock::time_point::max();
    generator_idle_ = !active;
    (void)co_await generator_wake_.wait_until(next);  // false: the next tick is due
    generator_idle_ = false;
  }
}

std::size_t FeedSimulator::Impl::pick_symbol() noexcept {
  for (std::size_t k = 0; k < symbols_.size(); ++k) {
    const std::size_t i = (next_symbol_ + k) % symbols_.size();
    if (trading(symbols_[i])) {
      next_symbol_ = (i + 1) % symbols_.size();
      return i;
    }
  }
  return symbols_.size();
}

void FeedSimulator::Impl::generate(std::uint64_t due) {
  if (config_.max_messages > 0) due = std::min(due, config_.max_messages - total_);
  if (due == 0) return;
  auto batch = std::make_shared<std::string>();
  batch->reserve(static_cast<std::size_t>(due) * 160);
  slices_.clear();
  const std::int64_t now_ms = unix_millis();
  for (std::uint64_t n = 0; n < due; ++n) {
    const std::size_t i = pick_symbol();
    if (i == symbols_.size()) break;
    auto& s = symbols_[i];
    const Trade trade = s.generator.next();
    if (s.count++ == 0) s.first_id = trade.id;
    s.last_id = trade.id;
    ++total_;
    const std::size_t begin = batch->size();
    append_trade_json(*batch, s.name, trade, now_ms, now_ms);
    s.digest.add(trade, now_ms, now_ms);
    rest_->record(i, trade, now_ms);
    slices_.push_back(Slice{i, begin, batch->size() - begin});
  }
  const std::shared_ptr<const std::string> shared = std::move(batch);
  for (const auto& slice : slices_) {
    // Subscribers are only added or removed by control messages and finalize, never by
    // push() (which may end a connection: it then ignores further trades).
    for (const auto& subscriber : symbols_[slice.symbol].subscribers) {
      push(*subscriber, Outgoing{shared, shared->data() + slice.begin, slice.size, MsgKind::trade});
    }
  }
  if (config_.max_messages > 0 && total_ >= config_.max_messages) {
    log()->info("--max-messages reached: {} trade(s) generated", total_);
    stop_generating();
    try {
      write_summary();
    } catch (const std::exception& e) {
      ++summary_errors_;
      log()->error("cannot write the summary at --max-messages: {}", e.what());
    }
  }
}

}  // namespace trading_shared::services::feed_sim

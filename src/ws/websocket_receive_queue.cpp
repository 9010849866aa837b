// WebSocketClient: the bounded hand-off queue between the read loop and the single consumer (a
// ring of messages whose strings' capacity circulates), the overflow policy, and the receive
// calls. The parts of the client: client_core.hpp.
#include <trading_shared/core/error.hpp>

#include "client_core.hpp"

#include <stdexcept>

namespace trading_shared::ws {

using namespace detail;  // the client's connection state, waiters, aliases

/// Heap bytes a string holds (none while its text fits in the string object itself).
std::size_t WebSocketClient::Core::heap_of(const std::string& s) noexcept {
  constexpr std::size_t inline_capacity = std::string().capacity();
  return s.capacity() > inline_capacity ? s.capacity() : 0;
}

/// A slot that no longer holds a queued message keeps its string's capacity for reuse (no
/// allocation per message at steady state) while the queue's strings hold at most
/// queue_max_bytes; beyond that it is freed. So spare capacity stays at most queue_max_bytes,
/// and everything held within twice that (queued payload <= queue_max_bytes, plus spare and
/// carried-over capacity <= queue_max_bytes).
void WebSocketClient::Core::spare(Message& slot) noexcept {
  if (held_bytes <= config.queue_max_bytes) return;
  held_bytes -= heap_of(slot.data);
  std::string().swap(slot.data);
}

/// Takes the oldest queued message into `out` (swapping strings: capacity circulates).
void WebSocketClient::Core::take(Message& out) noexcept {
  Message& slot = ring[head];
  queued_bytes -= slot.data.size();
  held_bytes -= heap_of(slot.data);
  std::swap(out, slot);
  held_bytes += heap_of(slot.data);
  spare(slot);
  head = (head + 1) % ring.size();
  --count;
}

/// Hands a received frame to the queue; false when the overflow policy says disconnect.
/// Full means `queue_capacity` messages or `queue_max_bytes` bytes (a message always fits
/// an empty queue: validate() keeps queue_max_bytes >= max_message_size).
bool WebSocketClient::Core::deliver(const beast::flat_buffer& buffer, bool binary,
                                    std::uint64_t number) {
  const std::size_t capacity = ring.size();
  const auto data = buffer.cdata();
  const std::size_t size = data.size();
  while (count == capacity || queued_bytes + size > config.queue_max_bytes) {
    ++stats.dropped;
    if (stats.dropped == 1 || stats.dropped - dropped_logged >= 10000) {
      dropped_logged = stats.dropped;
      log()->warn(
          "{}: consumer too slow: hand-off queue full ({} of {} messages, {} of {} bytes), "
          "policy {}: {} message(s) dropped so far",
          config.url, count, capacity, queued_bytes, config.queue_max_bytes,
          to_string(config.overflow), stats.dropped);
    }
    switch (config.overflow) {
      case OverflowPolicy::drop_newest:
        return true;
      case OverflowPolicy::disconnect:
        return false;
      case OverflowPolicy::drop_oldest: {
        Message& oldest = ring[head];
        queued_bytes -= oldest.data.size();
        spare(oldest);
        head = (head + 1) % capacity;
        --count;
        break;
      }
    }
  }
  Message& slot = ring[(head + count) % capacity];
  held_bytes -= heap_of(slot.data);
  if (size > slot.data.capacity()) {
    // Free first and allocate exactly: assigning would grow it geometrically (up to 2x).
    std::string().swap(slot.data);
    slot.data.reserve(size);
  }
  slot.data.assign(static_cast<const char*>(data.data()), size);
  held_bytes += heap_of(slot.data);
  slot.binary = binary;
  slot.connection = number;
  slot.received_at = Clock::now();
  ++count;
  queued_bytes += size;
  stats.max_queued = std::max(stats.max_queued, count);
  stats.max_queued_bytes = std::max(stats.max_queued_bytes, queued_bytes);
  readable.notify_all();
  if (config.on_readable) config.on_readable();
  return true;
}

/// Waits for at least one queued message; false once closed and drained. Throws cancelled.
/// Waits until a message is queued (true) or the client ended with nothing queued (false).
/// With a deadline, also returns false when it passes first (`timed_out` is then set).
asio::awaitable<bool> WebSocketClient::Core::wait_for_messages(
    std::optional<asio::steady_timer::time_point> deadline, bool* timed_out) {
  while (count == 0) {
    if (ended() || state.is(core::RunPhase::idle)) co_return false;
    const WaitEnd end = co_await wait_on(readable, deadline.value_or(Clock::time_point::max()));
    switch (end) {
      case WaitEnd::notified:
        continue;
      case WaitEnd::deadline:  // nothing was taken
        if (timed_out != nullptr) *timed_out = true;
        co_return false;
      case WaitEnd::cancelled:
        break;
    }
    throw Error(make_error_code(errc::cancelled), what("receive cancelled"));
  }
  co_return true;
}

// ---- the public API --------------------------------------------------------------------------

namespace {
/// Marks the single consumer as active for the duration of a receive.
struct ConsumerTurn {
  bool* active;
  explicit ConsumerTurn(bool& flag) : active(&flag) {
    if (flag) throw std::logic_error("WebSocketClient: concurrent receive");
    flag = true;
  }
  ~ConsumerTurn() { *active = false; }
  ConsumerTurn(const ConsumerTurn&) = delete;
  ConsumerTurn& operator=(const ConsumerTurn&) = delete;
};
}  // namespace

asio::awaitable<bool> WebSocketClient::receive(Message& out) {
  auto self = core_;
  ConsumerTurn turn(self->consumer_active);
  const bool any = co_await self->wait_for_messages();
  if (!any) co_return false;
  self->take(out);
  co_return true;
}

asio::awaitable<std::size_t> WebSocketClient::receive_batch(std::vector<Message>& out,
                                                            std::size_t max) {
  auto self = core_;
  if (max == 0) throw std::invalid_argument("WebSocketClient::receive_batch: max must be > 0");
  ConsumerTurn turn(self->consumer_active);
  const bool any = co_await self->wait_for_messages();
  if (!any) co_return 0;
  const std::size_t n = std::min(max, self->count);
  if (out.size() < n) out.resize(n);
  for (std::size_t i = 0; i < n; ++i) self->take(out[i]);
  co_return n;
}

asio::awaitable<std::optional<std::size_t>> WebSocketClient::receive_batch_for(
    std::vector<Message>& out, std::size_t max, std::chrono::milliseconds max_wait) {
  auto self = core_;
  if (max == 0) {
    throw std::invalid_argument("WebSocketClient::receive_batch_for: max must be > 0");
  }
  ConsumerTurn turn(self->consumer_active);
  bool timed_out = false;
  const bool any = co_await self->wait_for_messages(
      asio::steady_timer::clock_type::now() + std::max(max_wait, std::chrono::milliseconds{0}),
      &timed_out);
  if (!any) {
    if (timed_out) co_return std::size_t{0};
    co_return std::nullopt;
  }
  const std::size_t n = std::min(max, self->count);
  if (out.size() < n) out.resize(n);
  // Through take(), as receive_batch: the queue's byte count goes down with each message.
  for (std::size_t i = 0; i < n; ++i) self->take(out[i]);
  co_return n;
}

std::optional<std::size_t> WebSocketClient::try_receive_batch(std::vector<Message>& out,
                                                              std::size_t first, std::size_t max) {
  auto& self = *core_;
  if (self.consumer_active) throw std::logic_error("WebSocketClient: concurrent receive");
  if (self.count == 0) {
    if (self.ended()) return std::nullopt;
    return std::size_t{0};
  }
  const std::size_t n = std::min(max, self.count);
  if (out.size() < first + n) out.resize(first + n);
  for (std::size_t i = 0; i < n; ++i) self.take(out[first + i]);
  return n;
}

}  // namespace trading_shared::ws

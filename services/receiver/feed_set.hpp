#pragma once
/// @file
/// FeedSet: ts-receiver's market-data connections within the venue's WebSocket limits
/// (docs/websocket.md, docs/failure-modes.md F59, F60).
///
/// - **Sharding**: the symbols' streams (`<symbol>@trade`) are split over connections so that
///   none carries more than `max_streams_per_connection`; one `ws::WebSocketClient` per shard.
/// - **Subscriptions** are sent by the FeedSet itself after each (re)connect of a shard
///   (`WebSocketConfig::on_ready`), paced per connection to stay below
///   `max_control_messages_per_second` (`ControlPacer`), a shard's streams split over several
///   SUBSCRIBE messages when one would pass `max_subscribe_bytes`, each with its own id.
/// - **Confirmation**: every SUBSCRIBE is confirmed by its reply id (`{"result":null,"id":N}`),
///   seen in the read loop (`WebSocketConfig::intercept`: also while the consumer is stalled).
///   A refusal (`{"error":...,"id":N}`) or no reply within `subscribe_timeout` is logged as an
///   error and counted; the symbols stay unconfirmed (`FeedSetStats::unconfirmed_symbols`).
/// - **Rotation** (`connection_lifetime` > 0): at lifetime - `rotate_before`, a new connection
///   of the shard is opened, subscribed and confirmed, then the old one is closed (make before
///   break). Trades of the overlap arrive twice: the consumer drops them by trade id.
/// - **Reading**: `receive_batch` / `receive_batch_for` / `close` / `stats` as one
///   `WebSocketClient`; `Message::connection` is unique across the set (a new number per
///   connection of any shard).
///
/// Threading: one executor (one thread), as WebSocketClient. One consumer at a time.

#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services {

/// The venue's WebSocket limits as the receiver is told them (its flags).
struct FeedLimits {
  std::uint64_t max_streams_per_connection = 1024;
  std::uint64_t max_control_messages_per_second = 5;
  std::chrono::milliseconds subscribe_timeout{10000};
  std::chrono::milliseconds connection_lifetime{0};  ///< 0 = no planned rotation.
  std::chrono::milliseconds rotate_before{600000};
  /// Largest SUBSCRIBE message; a shard's streams are split over several beyond it.
  std::size_t max_subscribe_bytes = 4096;
};

/// Throws core::ConfigError naming the flag.
void check_feed_limits(const FeedLimits& limits);

struct FeedSetConfig {
  ws::WebSocketConfig feed;  ///< every connection's (its on_connect must be empty).
  std::vector<std::string> symbols;
  FeedLimits limits;
};

/// The streams of `symbols` (`<symbol lower-case>@trade`) in shards of at most `per_connection`.
std::vector<std::vector<std::string>> shard_streams(const std::vector<std::string>& symbols,
                                                    std::size_t per_connection);

/// A SUBSCRIBE message and the streams it carries.
struct SubscribeRequest {
  std::uint64_t id = 0;
  std::size_t streams = 0;
  std::string text;
};
/// SUBSCRIBE messages for `streams`, ids from `first_id` on, each at most `max_bytes` long
/// (a single stream per message if one alone is longer).
std::vector<SubscribeRequest> subscribe_requests(const std::vector<std::string>& streams,
                                                 std::uint64_t first_id, std::size_t max_bytes);

/// A reply to a request: `{"result":...,"id":N}` or `{"error":...,"id":N}`.
struct Reply {
  std::uint64_t id = 0;
  bool error = false;
};
/// nullopt when `text` is not such a reply (a trade, anything else).
std::optional<Reply> parse_reply(std::string_view text);

/// Paces the control messages of one connection below the venue's limit of `per_second` in
/// any 1 s: at most `per_second - 1` (1 if the limit is 1) in any window of 1.1 s: one message
/// of the second is left for the pong the venue also counts, and 100 ms for jitter.
class ControlPacer {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ControlPacer(std::uint64_t per_second);
  /// The earliest time the next message may go (`now` or later).
  Clock::time_point next(Clock::time_point now) const;
  /// Records a message sent at `at`.
  void sent(Clock::time_point at);
  std::uint64_t budget() const noexcept { return budget_; }
  static constexpr std::chrono::milliseconds kWindow{1100};

 private:
  std::uint64_t budget_;
  std::deque<Clock::time_point> sent_;
};

/// The FeedSet's own counters (the receiver's summary).
struct FeedSetStats {
  std::uint64_t connections = 0;  ///< shards: connections held at once (rotation overlap aside).
  std::uint64_t subscriptions_confirmed = 0;  ///< SUBSCRIBE messages confirmed.
  std::uint64_t subscriptions_refused = 0;    ///< SUBSCRIBE messages answered with an error.
  std::uint64_t subscribe_timeouts = 0;       ///< SUBSCRIBE messages not answered in time.
  /// Symbols not confirmed on their shard's current connection (refused, not answered in time,
  /// or still waiting) when asked.
  std::uint64_t unconfirmed_symbols = 0;
  std::uint64_t rotations = 0;          ///< planned rotations completed.
  std::uint64_t rotation_failures = 0;  ///< rotations abandoned (the old connection kept).
};

class FeedSet {
 public:
  /// Throws `Error(errc::invalid_argument)` on a bad feed config, core::ConfigError on bad limits.
  FeedSet(boost::asio::any_io_executor executor, FeedSetConfig config);
  ~FeedSet();
  FeedSet(const FeedSet&) = delete;
  FeedSet& operator=(const FeedSet&) = delete;

  /// Starts every shard's connection (as WebSocketClient::start); subscriptions are sent and
  /// confirmed in the background from there.
  boost::asio::awaitable<void> start();
  /// Closes every connection (in parallel, each bounded by the feed's close_timeout); queued
  /// messages stay readable. Idempotent; never throws.
  boost::asio::awaitable<void> close();

  boost::asio::awaitable<std::size_t> receive_batch(std::vector<ws::Message>& out, std::size_t max);
  boost::asio::awaitable<std::optional<std::size_t>> receive_batch_for(
      std::vector<ws::Message>& out, std::size_t max, std::chrono::milliseconds max_wait);

  /// Summed over every connection of the set, past ones included (`connection` is the number
  /// of connections made, `connected` true while every shard is up).
  ws::WebSocketStats stats() const;
  FeedSetStats limits() const;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace trading_shared::services

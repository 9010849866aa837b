#pragma once
/// @file
/// ts-receiver: market-data feed (WebSocket) → parse → batch → the Redis trade streams
/// `md:{tNN}:trades` (one entry per trade, trade id included; a bucket of symbols per stream)
/// and each symbol's last trade in its bucket's `md:{tNN}:last` hash.

#include <trading_shared/http/http_client.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/awaitable.hpp>

#include "receiver/backfill.hpp"
#include "receiver/feed_set.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace trading_shared::services {

struct ReceiverConfig {
  ws::WebSocketConfig feed;
  /// The venue's WebSocket limits: sharding, subscription pacing, rotation (feed_set.hpp).
  FeedLimits feed_limits;
  redis::RedisConfig redis;
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  /// Most messages taken from the feed per Redis round trip.
  std::uint64_t batch = 512;
  /// About once a second, a trade stream longer than this is trimmed of the entries no
  /// consumer group still needs (0: no trimming; ts-janitor trims by age). Never past an entry
  /// a group has not read or acknowledged (F53).
  std::uint64_t stream_maxlen = 0;
  /// Trades kept per trade stream while its writes fail with an error reply (F45); beyond it,
  /// the oldest are dropped (counted, logged).
  std::uint64_t stall_buffer = 100000;
  /// Pause between attempts to write a batch while Redis is unavailable (capped backoff).
  core::BackoffConfig write_backoff{std::chrono::milliseconds{20}, std::chrono::milliseconds{1000},
                                    2.0};
  /// Gaps in the live stream repaired from the venue's REST endpoint (receiver/backfill.hpp).
  BackfillConfig backfill;
  std::string summary_file;
  /// The admin endpoint's check interval (`--admin-check-interval`): a batch write in
  /// progress for longer makes the "write_path" readiness check fail.
  std::chrono::milliseconds check_interval{500};
};

/// The REST client's configuration: `--rest-url`, `--rest-timeout`, and the feed's TLS
/// settings (`--feed-tls-*`) for an https:// URL.
http::HttpClientConfig rest_client_config(const ReceiverConfig& config);

/// The service body (run under lifecycle::run_daemon).
boost::asio::awaitable<void> run_receiver(lifecycle::ServiceContext& ctx,
                                          const ReceiverConfig& config);

}  // namespace trading_shared::services

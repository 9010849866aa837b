#pragma once
/// @file
/// ts-receiver: market-data feed (WebSocket) → parse → batch → Redis streams
/// `md:trades:{SYMBOL}` (one entry per trade, trade id included) and `md:last:{SYMBOL}`.

#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace trading_shared::services {

struct ReceiverConfig {
  ws::WebSocketConfig feed;
  redis::RedisConfig redis;
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  /// Most messages taken from the feed per Redis round trip.
  std::uint64_t batch = 512;
  /// Approximate MAXLEN of each trade stream (0: no trimming; ts-janitor trims by age).
  std::uint64_t stream_maxlen = 0;
  /// Pause between attempts to write a batch while Redis is unavailable (capped backoff).
  core::BackoffConfig write_backoff{std::chrono::milliseconds{20}, std::chrono::milliseconds{1000},
                                    2.0};
  std::string summary_file;
};

/// Builds the feed's SUBSCRIBE message for `symbols` (`<symbol lower-case>@trade`).
std::string subscribe_message(const std::vector<std::string>& symbols);

/// The service body (run under lifecycle::run_daemon).
boost::asio::awaitable<void> run_receiver(lifecycle::ServiceContext& ctx,
                                          const ReceiverConfig& config);

}  // namespace trading_shared::services

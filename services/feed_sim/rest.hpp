#pragma once
/// @file
/// ts-feed-sim's REST endpoint (docs/services.md): `GET /api/v3/historicalTrades` answered
/// from the trades the simulator generated, on the WebSocket's port (a request without
/// `Upgrade` is REST), with the venue's limits (request weight, 429 / 418 bans, API key) and
/// fault switches (503 every N, short pages, slow answers).
///
/// Not thread-safe: everything runs on the simulator's executor.

#include <trading_shared/core/config.hpp>
#include <trading_shared/ws/tls_stream.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "common/summary.hpp"
#include "feed_sim/feed_sim.hpp"
#include "feed_sim/trade_history.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::feed_sim {

/// Registers the REST settings of `config` (`--rest-*`, `--keep-trading`).
void add_rest_settings(core::ConfigLoader& loader, FeedSimConfig& config);
/// Validates them. @throws core::ConfigError naming the flag.
void check_rest_config(const FeedSimConfig& config);

using RestRequest = boost::beast::http::request<boost::beast::http::string_body>;
using RestResponse = boost::beast::http::response<boost::beast::http::string_body>;
/// A connection's bytes: plain TCP, or TLS over it with --tls-cert-file (wss://, https://).
using SimStream = ws::MaybeTlsStream<boost::asio::ip::tcp::socket>;

/// Appends the Binance `historicalTrades` array of `trades` to `out` (8-decimal strings).
void append_rest_trades_json(std::string& out, const std::vector<HistoryTrade>& trades,
                             std::size_t count);

class RestVenue {
 public:
  /// `symbols`: the simulator's symbols, in its order (the index of `record`).
  RestVenue(boost::asio::any_io_executor executor, const FeedSimConfig& config,
            std::vector<std::string> symbols);

  /// A generated trade of symbol `symbol` (index), with its time (the stream's `T`).
  void record(std::size_t symbol, const Trade& trade, std::int64_t time_ms) {
    histories_[symbol].add(trade, time_ms);
  }

  /// The first request of a new connection (WebSocket upgrade or REST), read within a fixed
  /// timeout. `owner` keeps `socket` alive (the timer's handler closes it on expiry).
  /// nullopt with `error` set on failure (a malformed request gets a 400 first).
  boost::asio::awaitable<std::optional<RestRequest>> read_first(SimStream& socket,
                                                                boost::beast::flat_buffer& buffer,
                                                                std::shared_ptr<void> owner,
                                                                std::string& error);

  /// Serves a REST connection whose first request is `first`, keep-alive, until the client
  /// closes, asks to close, stays idle too long, or the socket is closed under it (the
  /// simulator stopping). Returns why it ended.
  boost::asio::awaitable<std::string> serve(SimStream& socket, boost::beast::flat_buffer& buffer,
                                            RestRequest first, std::shared_ptr<void> owner);

  /// Ends the `--rest-fault-slow` delays at once (the simulator is stopping). Idempotent.
  void stop();

  /// Adds the rest_* counters to the summary.
  void add_summary(Summary& out) const;

  struct Answer;  ///< one HTTP answer (rest.cpp).

 private:
  Answer answer(const RestRequest& request);
  Answer historical_trades(std::string_view query);
  void throttle_headers(Answer& a, std::chrono::steady_clock::time_point now) const;
  boost::asio::awaitable<void> delay(std::chrono::milliseconds d);

  boost::asio::any_io_executor executor_;
  const FeedSimConfig& config_;
  std::vector<std::string> symbols_;
  std::vector<TradeHistory> histories_;
  std::vector<HistoryTrade> page_;  // scratch
  std::vector<boost::asio::steady_timer*> delays_;
  bool stopped_ = false;

  // Weight: fixed windows of --rest-weight-window from the first request after the last one.
  std::chrono::steady_clock::time_point window_end_{};
  std::uint64_t used_weight_ = 0;
  std::chrono::steady_clock::time_point retry_after_until_{};  // of the last 429
  std::chrono::steady_clock::time_point banned_until_{};

  std::uint64_t connections_ = 0;
  std::uint64_t requests_ = 0;
  std::uint64_t trades_served_ = 0;
  std::uint64_t answered_429_ = 0;
  std::uint64_t answered_418_ = 0;
  std::uint64_t answered_5xx_ = 0;
  std::uint64_t answered_401_ = 0;
  std::uint64_t answered_4xx_ = 0;  // other client errors (400, 404, 405)
  std::uint64_t partial_ = 0;
  std::uint64_t partial_candidates_ = 0;  // answers of >= 2 trades (--rest-fault-partial-every)
};

}  // namespace trading_shared::services::feed_sim

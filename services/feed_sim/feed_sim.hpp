#pragma once
/// @file
/// ts-feed-sim: a local exchange simulator serving a Binance-style trade stream over plain
/// WebSocket, or TLS (wss://, https://) with a certificate (docs/services.md). `FeedSimulator` is a
/// resource (start/close) entered in the service's ResourceScope; the generation logic lives in
/// generator.hpp.
///
/// Not thread-safe: everything runs on the executor given to the constructor (one thread).

#include <trading_shared/core/config.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "common/summary.hpp"
#include "feed_sim/limits.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::feed_sim {

struct FeedSimConfig {
  /// `host:port` or `[v6]:port`; port 0 = any free port.
  std::string listen = "127.0.0.1:9443";
  /// If set, the bound port (decimal and a newline) is written there, atomically.
  std::string port_file;
  /// Symbols served (upper-case; `check_config` upper-cases them).
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  std::uint64_t seed = 1;
  /// Trades per second over all subscribed symbols.
  double rate = 1000.0;
  /// Total trades to generate; 0 = unlimited.
  std::uint64_t max_messages = 0;
  /// Messages a connection may have waiting to be written; beyond it the client is too slow
  /// and the connection is closed.
  std::uint64_t queue_limit = 100000;
  /// On stop: how long connections get to finish the close handshake before their sockets
  /// are closed.
  std::chrono::milliseconds close_timeout{2000};
  std::string summary_file;
  /// TLS (wss:// and https:// on the same port) when set: certificate chain and key (PEM);
  /// `tls_ca_file` also requires client certificates signed by those CAs (mutual TLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  /// The venue's WebSocket limits (limits.hpp).
  VenueLimits limits;

  // Fault switches, for the first `fault_connections` WebSocket connections (0 = all), in the
  // order of their upgrade requests; REST requests are not counted.
  std::uint64_t fault_connections = 1;
  std::int64_t fault_stall_after = -1;      ///< -1 = off.
  std::int64_t fault_drop_after = -1;       ///< -1 = off.
  std::uint64_t fault_malformed_every = 0;  ///< 0 = off; else >= 2.
  std::int64_t fault_oversized_after = -1;  ///< -1 = off.
  /// After N trades, one extra trade of the connection's first subscribed symbol whose id is
  /// `fault_outlier_id` (a venue's bogus id); the generated ids then go on as before.
  std::int64_t fault_outlier_after = -1;  ///< -1 = off.
  std::uint64_t fault_outlier_id = 9'000'000'000'000'000'000ULL;

  /// Once subscribed, a symbol keeps trading while no connection subscribes to it.
  bool keep_trading = false;
  // REST endpoint (rest.hpp): GET /api/v3/historicalTrades on the same port.
  std::uint64_t rest_history = 1'000'000;  ///< trades kept per symbol.
  std::string rest_api_key;                ///< required X-MBX-APIKEY; empty = none.
  std::uint64_t rest_weight_per_call = 25;
  std::uint64_t rest_weight_limit = 6000;  ///< per rest_weight_window, over all clients.
  std::chrono::milliseconds rest_weight_window{60000};
  std::chrono::milliseconds rest_ban{120000};  ///< 418 for a request during a 429's Retry-After.
  std::uint64_t rest_fault_5xx_every = 0;      ///< 0 = off; else >= 2.
  std::uint64_t rest_fault_partial_every = 0;  ///< 0 = off.
  std::chrono::milliseconds rest_fault_slow{0};
};

/// Registers every setting of `config` (flag, `TS_*` variable, TOML key).
void add_feed_sim_settings(core::ConfigLoader& loader, FeedSimConfig& config);

/// Validates `config` and normalises it (symbols upper-cased).
/// @throws core::ConfigError naming the setting.
void check_config(FeedSimConfig& config);

struct ListenAddress {
  std::string host;  ///< without brackets.
  std::uint16_t port = 0;
};
/// Parses `host:port` or `[v6]:port`. @throws core::ConfigError.
ListenAddress parse_listen(std::string_view text);

class FeedSimulator {
 public:
  /// `config` must have passed `check_config` (the constructor calls it again).
  FeedSimulator(boost::asio::any_io_executor executor, FeedSimConfig config);
  FeedSimulator(const FeedSimulator&) = delete;
  FeedSimulator& operator=(const FeedSimulator&) = delete;
  ~FeedSimulator();

  /// Binds and listens, writes the port file, starts accepting and generating.
  boost::asio::awaitable<void> start();
  /// `shutdown()`, then waits for every coroutine of the simulator, then writes the summary
  /// if `write_summary()` has not been called since the stop. Idempotent.
  boost::asio::awaitable<void> close();

  /// Stops generating trades (at once; idempotent). Connections stay open.
  void stop_generating();
  /// Stops generating and accepting, closes every connection with a close frame (going
  /// away), and after `close_timeout` closes the sockets of those still open. Returns when
  /// every connection is gone. Idempotent.
  boost::asio::awaitable<void> shutdown();

  /// The summary of what was generated and sent so far (see docs/services.md).
  Summary summary() const;
  /// Writes `summary()` to `--summary-file` (if set). @throws std::runtime_error.
  void write_summary();

  /// The port actually bound (after `start()`).
  std::uint16_t port() const noexcept;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace trading_shared::services::feed_sim

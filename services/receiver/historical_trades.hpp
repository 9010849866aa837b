#pragma once
/// @file
/// Fetching trades of a symbol by id from the venue's REST endpoint
/// `GET /api/v3/historicalTrades?symbol=S&fromId=N&limit=L` (Binance format), within the
/// venue's limits: a client-side weight budget (each call costs `weight_per_call` against
/// `weight_limit` per `weight_window`, and the venue's own count from `X-MBX-USED-WEIGHT-1M`),
/// 429/418 answers honoured (nothing is sent until their Retry-After has passed), 5xx and
/// timeouts retried with capped backoff (core::retry_until_stopped). docs/services.md
/// (ts-receiver, backfill).

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/http/http_client.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "receiver/trade_parser.hpp"

#include <simdjson.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services {

struct HistoricalTradesConfig {
  std::uint64_t page = 1000;  ///< `limit` of a call (the venue's maximum is 1000).
  std::uint64_t weight_limit = 6000;
  std::chrono::milliseconds weight_window{60000};
  std::uint64_t weight_per_call = 25;  ///< Binance's weight of historicalTrades.
  std::string api_key;                 ///< sent as X-MBX-APIKEY when not empty.
  /// Pause between attempts after a 5xx, a timeout or a lost connection.
  core::BackoffConfig retry_backoff{std::chrono::milliseconds{100}, std::chrono::milliseconds{5000},
                                    2.0};
  /// Pause after a 429/418 without a (valid) Retry-After.
  std::chrono::milliseconds default_retry_after{1000};
};

/// What the fetching did (the receiver's summary fields backfill_*).
struct FetchCounters {
  std::uint64_t requests = 0;      ///< REST calls sent.
  std::uint64_t retries = 0;       ///< calls sent again after a 5xx, timeout, lost connection.
  std::uint64_t throttled = 0;     ///< 429/418 answers.
  std::uint64_t budget_waits = 0;  ///< calls held back by the client-side weight budget.
};

/// Parses a historicalTrades answer (a JSON array of `{"id","price","qty","time",
/// "isBuyerMaker",...}`) into `out` (cleared first), each trade of `symbol`, event time = trade
/// time. False (with `error`) on anything else: the answer is then not used.
bool parse_historical_trades(simdjson::ondemand::parser& parser, std::string& body,
                             std::string_view symbol, std::vector<Trade>& out, std::string& error);

/// The client-side weight budget: calls within the last `window`, and the venue's own count
/// (X-MBX-USED-WEIGHT-1M of the last answer).
class WeightBudget {
 public:
  using Clock = std::chrono::steady_clock;
  WeightBudget(std::uint64_t limit, std::chrono::milliseconds window, std::uint64_t per_call)
      : limit_(limit), window_(window), per_call_(per_call) {}
  /// How long to wait before a call may be sent (zero: now).
  Clock::duration wait(Clock::time_point now);
  /// A call is being sent now.
  void spend(Clock::time_point now);
  /// The venue reported `used` weight in its window.
  void reported(std::uint64_t used, Clock::time_point now);

 private:
  void expire(Clock::time_point now);
  std::uint64_t limit_;
  std::chrono::milliseconds window_;
  std::uint64_t per_call_;
  std::deque<Clock::time_point> calls_;
  std::uint64_t reported_ = 0;
  Clock::time_point reported_at_{};
};

/// One page of a range: the trades with ids in [from, to] the venue returned (ascending).
struct TradePage {
  std::vector<Trade> trades;
  std::int64_t first_returned = -1;  ///< id of the first trade the venue returned (-1: none).
};

/// Fetches pages; shared by the backfill's workers (one executor), so that the budget and a
/// 429's Retry-After hold for all of them.
class HistoricalTrades {
 public:
  HistoricalTrades(boost::asio::any_io_executor executor, http::HttpClient& client,
                   HistoricalTradesConfig config, FetchCounters& counters);

  /// One page of `symbol` from `from` (at most min(page, to - from + 1) trades, none above
  /// `to`). Waits for the budget and any Retry-After; retries transient failures (5xx,
  /// timeouts, lost connections, an unparsable answer) with capped backoff until it succeeds or
  /// is cancelled. Throws `Error` on a permanent failure (a 4xx: unknown symbol, bad key).
  boost::asio::awaitable<TradePage> page(const std::string& symbol, std::int64_t from,
                                         std::int64_t to);

 private:
  /// One attempt of `page`: the GET once admitted; a transient failure is thrown as an `Error`.
  boost::asio::awaitable<TradePage> fetch(const std::string& symbol, const std::string& target,
                                          const http::HttpRequestOptions& options,
                                          std::int64_t from, std::int64_t to);
  /// Sends the GET when the budget and any Retry-After allow, again after each 429/418 (a
  /// throttle is a wait, not a failure); returns the first answer that is not one.
  boost::asio::awaitable<http::HttpResponse> admitted_get(const std::string& symbol,
                                                          const std::string& target,
                                                          const http::HttpRequestOptions& options);
  boost::asio::awaitable<void> pause(std::chrono::steady_clock::duration d);
  boost::asio::any_io_executor executor_;
  http::HttpClient* client_;
  HistoricalTradesConfig config_;
  FetchCounters* n_;
  WeightBudget budget_;
  std::chrono::steady_clock::time_point not_before_{};  // a 429/418's Retry-After
  core::DefaultRandom random_;
  simdjson::ondemand::parser parser_;
};

}  // namespace trading_shared::services

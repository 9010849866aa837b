#pragma once
/// @file
/// Names shared by the services: Redis keys, stream fields, consumer groups (docs/services.md).

#include <string>
#include <string_view>

namespace trading_shared::services {

/// Stream of one symbol's trades, written by ts-receiver, read by ts-recorder.
/// Fields of each entry: `s` symbol, `t` trade id, `p` price, `q` quantity (decimal strings
/// as the exchange sent them), `T` trade time (ms since epoch), `E` event time (ms), `m` buyer
/// is maker (`1`/`0`), `r` time the receiver read the message (microseconds since epoch).
inline std::string trade_stream(std::string_view symbol) {
  return "md:trades:" + std::string(symbol);
}
/// Hash of one symbol's last trade, written by ts-receiver: fields `p`, `t`, `T`.
inline std::string last_price_key(std::string_view symbol) {
  return "md:last:" + std::string(symbol);
}
inline constexpr std::string_view kTradeStreamPrefix = "md:trades:";

/// Order requests (tsctl submit-order / load-orders → ts-executor). Fields: `client_order_id`,
/// `symbol`, `side` (`buy`|`sell`), `type` (`market`|`limit`), `qty`, `limit_price` (limit
/// orders), `submitted_at` (ms since epoch).
inline constexpr std::string_view kOrderRequests = "orders:requests";
/// Order outcomes written by ts-executor. Fields: `client_order_id`, `status`
/// (`filled`|`rejected`), `reason` (rejected), `price` and `qty` (filled).
inline constexpr std::string_view kOrderEvents = "orders:events";

inline constexpr std::string_view kRecorderGroup = "recorder";
inline constexpr std::string_view kExecutorGroup = "executor";

}  // namespace trading_shared::services

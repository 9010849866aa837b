#pragma once
/// @file
/// Parses one Binance-style trade event (`{"e":"trade","E":..,"s":..,"t":..,"p":"..",
/// "q":"..","T":..,"m":..}`) with simdjson's on-demand API into a fixed-size `Trade`:
/// no allocation per message. Anything else is `control` (a reply such as
/// `{"result":null,"id":1}`) or `malformed` (never an exception: the feed is untrusted input).

#include "common/text.hpp"

#include <simdjson.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::services {

/// A short string held inline (symbols, decimal prices and quantities).
template <std::size_t N>
struct InlineText {
  std::array<char, N> bytes{};
  std::uint8_t size = 0;
  std::string_view view() const noexcept { return {bytes.data(), size}; }
  /// False when `text` does not fit.
  bool assign(std::string_view text) noexcept {
    if (text.size() > N) return false;
    for (std::size_t i = 0; i < text.size(); ++i) bytes[i] = text[i];
    size = static_cast<std::uint8_t>(text.size());
    return true;
  }
};

struct Trade {
  InlineText<20> symbol;
  std::int64_t trade_id = 0;
  InlineText<32> price;
  InlineText<32> qty;
  std::int64_t trade_time = 0;  ///< T, ms since epoch.
  std::int64_t event_time = 0;  ///< E, ms since epoch.
  bool buyer_is_maker = false;
};

enum class ParseOutcome : std::uint8_t { trade, control, malformed };

/// `data` must have `simdjson::SIMDJSON_PADDING` bytes of capacity beyond its size (the
/// function reserves them when missing; a string that circulates keeps them).
/// On `malformed`, `error` names what was wrong (a static string).
ParseOutcome parse_trade(simdjson::ondemand::parser& parser, std::string& data, Trade& out,
                         const char*& error);

}  // namespace trading_shared::services

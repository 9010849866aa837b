// Fuzzes the receiver's trade parser (services/receiver/trade_parser.cpp, simdjson on-demand)
// on feed messages. The input is one WebSocket text message, held in a std::string as the
// WebSocket client hands it over (ws::Message::data): parse_trade adds the SIMDJSON_PADDING
// itself when the string's capacity lacks it, so both cases are run: a string whose capacity
// is exactly its size, and one that already has the padding.
#include "common/text.hpp"
#include "receiver/trade_parser.hpp"

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace services = trading_shared::services;
using services::ParseOutcome;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_trade: %s\n", what);
  std::abort();
}

bool same(const services::Trade& a, const services::Trade& b) {
  return a.symbol.view() == b.symbol.view() && a.trade_id == b.trade_id &&
         a.price.view() == b.price.view() && a.qty.view() == b.qty.view() &&
         a.trade_time == b.trade_time && a.event_time == b.event_time &&
         a.buyer_is_maker == b.buyer_is_maker;
}

void check(ParseOutcome outcome, const services::Trade& trade, const char* error) {
  switch (outcome) {
    case ParseOutcome::trade:
      // What the receiver then writes to Redis keys and streams without further checks.
      if (!services::is_symbol(trade.symbol.view())) fail("trade with a bad symbol");
      if (!services::is_decimal(trade.price.view())) fail("trade with a bad price");
      if (!services::is_decimal(trade.qty.view())) fail("trade with a bad quantity");
      if (trade.trade_id < 0 || trade.trade_time < 0) fail("trade with a negative id or time");
      break;
    case ParseOutcome::control:
      break;
    case ParseOutcome::malformed:
      if (error == nullptr || std::strlen(error) == 0) fail("malformed without a reason");
      break;
    default:
      fail("unknown outcome");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // One parser for the whole run, like the receiver (its buffers grow and are reused).
  static simdjson::ondemand::parser parser;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. Capacity == size (as far as std::string allows): parse_trade must reserve the padding.
  std::string tight(input);
  tight.shrink_to_fit();
  services::Trade first;
  const char* first_error = "";
  const ParseOutcome outcome = services::parse_trade(parser, tight, first, first_error);
  check(outcome, first, first_error);
  if (tight != input) fail("parse_trade changed the message");

  // 2. A string that already has the padding, and a Trade reused from the previous message.
  static services::Trade reused;
  std::string padded;
  padded.reserve(size + simdjson::SIMDJSON_PADDING);
  padded.assign(input);
  const char* second_error = "";
  const ParseOutcome again = services::parse_trade(parser, padded, reused, second_error);
  check(again, reused, second_error);
  if (again != outcome) fail("the outcome depends on the string's capacity or on history");
  if (outcome == ParseOutcome::trade && !same(first, reused)) fail("the trade depends on history");
  if (outcome == ParseOutcome::malformed && std::strcmp(first_error, second_error) != 0) {
    fail("the error depends on the string's capacity or on history");
  }
  return 0;
}

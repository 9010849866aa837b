#include "receiver/trade_parser.hpp"

namespace trading_shared::services {

ParseOutcome parse_trade(simdjson::ondemand::parser& parser, std::string& data, Trade& out,
                         const char*& error) {
  if (data.capacity() < data.size() + simdjson::SIMDJSON_PADDING) {
    data.reserve(data.size() + simdjson::SIMDJSON_PADDING);
  }
  simdjson::padded_string_view input(data.data(), data.size(), data.capacity());
  simdjson::ondemand::document doc;
  if (parser.iterate(input).get(doc) != simdjson::SUCCESS) {
    error = "not JSON";
    return ParseOutcome::malformed;
  }
  simdjson::ondemand::object object;
  if (doc.get_object().get(object) != simdjson::SUCCESS) {
    error = "not a JSON object";
    return ParseOutcome::malformed;
  }
  enum : unsigned {
    kE = 1,
    kEventTime = 2,
    kS = 4,
    kT = 8,
    kP = 16,
    kQ = 32,
    kTradeTime = 64,
    kM = 128
  };
  unsigned seen = 0;
  bool control = false;
  bool is_trade = false;
  for (auto field : object) {
    std::string_view key;
    if (field.unescaped_key().get(key) != simdjson::SUCCESS) {
      error = "bad key";
      return ParseOutcome::malformed;
    }
    auto value = field.value();
    if (key.size() != 1) {
      if (key == "result" || key == "id" || key == "error") control = true;
      continue;  // other fields (Binance's "M") are ignored
    }
    std::string_view text;
    switch (key[0]) {
      case 'e':
        if (value.get_string().get(text) != simdjson::SUCCESS) {
          error = "e is not a string";
          return ParseOutcome::malformed;
        }
        is_trade = text == "trade";
        seen |= kE;
        break;
      case 'E':
        if (value.get_int64().get(out.event_time) != simdjson::SUCCESS) {
          error = "E is not an integer";
          return ParseOutcome::malformed;
        }
        if (!is_plausible_millis(out.event_time)) {
          error = "E is not a time in milliseconds (2000-2099)";
          return ParseOutcome::malformed;
        }
        seen |= kEventTime;
        break;
      case 's':
        if (value.get_string().get(text) != simdjson::SUCCESS || !is_symbol(text) ||
            !out.symbol.assign(text)) {
          error = "s is not a symbol";
          return ParseOutcome::malformed;
        }
        seen |= kS;
        break;
      case 't':
        if (value.get_int64().get(out.trade_id) != simdjson::SUCCESS || out.trade_id < 0) {
          error = "t is not a trade id";
          return ParseOutcome::malformed;
        }
        seen |= kT;
        break;
      case 'p':
        if (value.get_string().get(text) != simdjson::SUCCESS || !is_decimal(text) ||
            !out.price.assign(text)) {
          error = "p is not a decimal string";
          return ParseOutcome::malformed;
        }
        seen |= kP;
        break;
      case 'q':
        if (value.get_string().get(text) != simdjson::SUCCESS || !is_decimal(text) ||
            !out.qty.assign(text)) {
          error = "q is not a decimal string";
          return ParseOutcome::malformed;
        }
        seen |= kQ;
        break;
      case 'T':
        if (value.get_int64().get(out.trade_time) != simdjson::SUCCESS) {
          error = "T is not a time";
          return ParseOutcome::malformed;
        }
        if (!is_plausible_millis(out.trade_time)) {
          error = "T is not a time in milliseconds (2000-2099)";
          return ParseOutcome::malformed;
        }
        seen |= kTradeTime;
        break;
      case 'm':
        if (value.get_bool().get(out.buyer_is_maker) != simdjson::SUCCESS) {
          error = "m is not a boolean";
          return ParseOutcome::malformed;
        }
        seen |= kM;
        break;
      default:
        break;
    }
  }
  if (seen == 0 && control) return ParseOutcome::control;
  if (!is_trade) {
    if (control && (seen & kE) == 0) return ParseOutcome::control;
    error = (seen & kE) != 0 ? "event type is not trade" : "no event type";
    return ParseOutcome::malformed;
  }
  if (seen != (kE | kEventTime | kS | kT | kP | kQ | kTradeTime | kM)) {
    error = "missing field";
    return ParseOutcome::malformed;
  }
  return ParseOutcome::trade;
}

}  // namespace trading_shared::services

#include "receiver/historical_trades.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/http/http_status.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/text.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

namespace trading_shared::services {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("backfill");
  return logger;
}

}  // namespace

bool parse_historical_trades(simdjson::ondemand::parser& parser, std::string& body,
                             std::string_view symbol, std::vector<Trade>& out, std::string& error) {
  out.clear();
  if (body.capacity() < body.size() + simdjson::SIMDJSON_PADDING) {
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
  }
  simdjson::padded_string_view input(body.data(), body.size(), body.capacity());
  simdjson::ondemand::document doc;
  simdjson::ondemand::array array;
  if (parser.iterate(input).get(doc) != simdjson::SUCCESS ||
      doc.get_array().get(array) != simdjson::SUCCESS) {
    error = "not a JSON array";
    return false;
  }
  Trade trade;
  if (!trade.symbol.assign(symbol)) {
    error = "symbol too long";
    return false;
  }
  for (auto element : array) {
    simdjson::ondemand::object object;
    if (element.get_object().get(object) != simdjson::SUCCESS) {
      error = "an element is not an object";
      return false;
    }
    unsigned seen = 0;
    for (auto field : object) {
      std::string_view key;
      if (field.unescaped_key().get(key) != simdjson::SUCCESS) {
        error = "bad key";
        return false;
      }
      auto value = field.value();
      std::string_view text;
      if (key == "id") {
        if (value.get_int64().get(trade.trade_id) != simdjson::SUCCESS || trade.trade_id < 0) {
          error = "id is not a trade id";
          return false;
        }
        seen |= 1;
      } else if (key == "price") {
        if (value.get_string().get(text) != simdjson::SUCCESS || !is_decimal(text) ||
            !trade.price.assign(text)) {
          error = "price is not a decimal string";
          return false;
        }
        seen |= 2;
      } else if (key == "qty") {
        if (value.get_string().get(text) != simdjson::SUCCESS || !is_decimal(text) ||
            !trade.qty.assign(text)) {
          error = "qty is not a decimal string";
          return false;
        }
        seen |= 4;
      } else if (key == "time") {
        if (value.get_int64().get(trade.trade_time) != simdjson::SUCCESS ||
            !is_plausible_millis(trade.trade_time)) {
          error = "time is not a time in milliseconds";
          return false;
        }
        trade.event_time = trade.trade_time;
        seen |= 8;
      } else if (key == "isBuyerMaker") {
        if (value.get_bool().get(trade.buyer_is_maker) != simdjson::SUCCESS) {
          error = "isBuyerMaker is not a boolean";
          return false;
        }
        seen |= 16;
      }
    }
    if (seen != 31) {
      error = "a trade misses a field";
      return false;
    }
    if (!out.empty() && trade.trade_id <= out.back().trade_id) {
      error = "ids not ascending";
      return false;
    }
    out.push_back(trade);
  }
  return true;
}

// ---- weight budget ---------------------------------------------------------------------------

void WeightBudget::expire(Clock::time_point now) {
  while (!calls_.empty() && now - calls_.front() >= window_) calls_.pop_front();
  if (reported_ > 0 && now - reported_at_ >= window_) reported_ = 0;
}

Clock::duration WeightBudget::wait(Clock::time_point now) {
  expire(now);
  const std::uint64_t ours = calls_.size() * per_call_;
  if (std::max(ours, reported_) + per_call_ <= limit_) return Clock::duration::zero();
  Clock::time_point until = now;
  if (ours + per_call_ > limit_ && !calls_.empty()) until = calls_.front() + window_;
  // The venue counts more than we sent (other clients, a restart): its window ends at most one
  // window after its report.
  if (reported_ + per_call_ > limit_) until = std::max(until, reported_at_ + window_);
  return std::max(until - now, Clock::duration(std::chrono::milliseconds(1)));
}

void WeightBudget::spend(Clock::time_point now) {
  expire(now);
  calls_.push_back(now);
  if (reported_ > 0) reported_ += per_call_;  // until the next report
}

void WeightBudget::reported(std::uint64_t used, Clock::time_point now) {
  reported_ = used;
  reported_at_ = now;
}

// ---- pages -----------------------------------------------------------------------------------

HistoricalTrades::HistoricalTrades(asio::any_io_executor executor, http::HttpClient& client,
                                   HistoricalTradesConfig config, FetchCounters& counters)
    : executor_(std::move(executor)),
      client_(&client),
      config_(std::move(config)),
      n_(&counters),
      budget_(config_.weight_limit, config_.weight_window, config_.weight_per_call) {}

asio::awaitable<void> HistoricalTrades::pause(Clock::duration d) {
  asio::steady_timer timer(executor_, d);
  co_await timer.async_wait(asio::use_awaitable);
}

asio::awaitable<http::HttpResponse> HistoricalTrades::admitted_get(
    const std::string& symbol, const std::string& target, const http::HttpRequestOptions& options) {
  for (;;) {
    // Never send during a Retry-After, nor beyond the weight budget; both are re-checked after
    // every wait (another worker may have been throttled meanwhile).
    for (;;) {
      const auto now = Clock::now();
      if (now < not_before_) {
        co_await pause(not_before_ - now);
        continue;
      }
      const auto wait = budget_.wait(now);
      if (wait == Clock::duration::zero()) break;
      ++n_->budget_waits;
      if (n_->budget_waits <= 5 || n_->budget_waits % 100 == 0) {
        log()->info("{}: weight budget ({} per {} ms) spent: next call in {} ms", symbol,
                    config_.weight_limit, config_.weight_window.count(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
      }
      co_await pause(wait);
    }
    budget_.spend(Clock::now());
    ++n_->requests;
    http::HttpResponse answer = co_await client_->get(target, options);
    if (const auto used = answer.header("X-MBX-USED-WEIGHT-1M")) {
      std::uint64_t value = 0;
      const auto r = std::from_chars(used->data(), used->data() + used->size(), value);
      if (r.ec == std::errc()) budget_.reported(value, Clock::now());
    }
    if (!http::is_throttle_status(answer.status)) co_return answer;
    // Throttled: not a failure of the call; nothing is sent until the Retry-After has passed.
    ++n_->throttled;
    std::chrono::milliseconds delay = config_.default_retry_after;
    if (const auto header = answer.header("Retry-After")) {
      if (const auto d = http::parse_retry_after(*header)) delay = *d;
    }
    not_before_ = std::max(not_before_, Clock::now() + delay);
    log()->warn("{}: the venue throttles (HTTP {}): nothing sent for {} ms (Retry-After)", symbol,
                answer.status, delay.count());
  }
}

asio::awaitable<TradePage> HistoricalTrades::fetch(const std::string& symbol,
                                                   const std::string& target,
                                                   const http::HttpRequestOptions& options,
                                                   std::int64_t from, std::int64_t to) {
  http::HttpResponse answer = co_await admitted_get(symbol, target, options);
  // A 4xx is permanent (unknown symbol, bad key), a 5xx transient: see classify_http_status.
  http::throw_for_status(answer, "historicalTrades " + symbol);
  TradePage page;
  std::string error;
  if (!parse_historical_trades(parser_, answer.body, symbol, page.trades, error)) {
    throw Error(make_error_code(errc::protocol_error),
                "historicalTrades " + symbol + ": unusable answer (" + error +
                    "): " + answer.body.substr(0, 200),
                RequestState::sent);
  }
  if (!page.trades.empty()) page.first_returned = page.trades.front().trade_id;
  std::erase_if(page.trades, [&](const Trade& t) { return t.trade_id < from || t.trade_id > to; });
  co_return page;
}

asio::awaitable<TradePage> HistoricalTrades::page(const std::string& symbol, std::int64_t from,
                                                  std::int64_t to) {
  const auto span = static_cast<std::uint64_t>(to - from) + 1;
  const std::uint64_t limit = std::min<std::uint64_t>(config_.page, span);
  const std::string target = "/api/v3/historicalTrades?symbol=" + symbol +
                             "&fromId=" + std::to_string(from) + "&limit=" + std::to_string(limit);
  http::HttpRequestOptions options;
  if (!config_.api_key.empty()) options.headers.push_back({"X-MBX-APIKEY", config_.api_key});
  // A 5xx, a timeout, a lost connection or an unusable answer is retried (a GET is idempotent)
  // until it succeeds; a cancellation or a permanent error (a 4xx) ends it. The retries of all
  // pages are numbered together: the first 10 and every 100th are logged as warnings.
  const core::UntilStopped policy{.stop = nullptr,
                                  .backoff = config_.retry_backoff,
                                  .random = &random_,
                                  .retries = &n_->retries,
                                  .log = log(),
                                  .warn_first = 10,
                                  .retry_permanent = false,
                                  .number_by_total = true};
  auto attempt = [&] { return fetch(symbol, target, options, from, to); };
  co_return co_await core::retry_until_stopped(
      attempt, core::Idempotent::yes, policy,
      "historicalTrades " + symbol + " fromId=" + std::to_string(from));
}

}  // namespace trading_shared::services

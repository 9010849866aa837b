// tsctl submit-order and load-orders: order requests on orders:requests (common/keys.hpp).
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/keys.hpp"
#include "common/settings.hpp"
#include "common/summary.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

std::string fresh_client_order_id() {
  static std::atomic<std::uint64_t> counter{0};
  return fmt::format("cli-{}-{}-{}", unix_millis(), ::getpid(), ++counter);
}

/// An order request as the stream fields of orders:requests.
struct OrderRequest {
  std::string client_order_id;
  std::string symbol;
  std::string side;
  std::string type;
  std::string qty;
  std::string limit_price;  ///< empty for market orders.
  bool invalid = false;     ///< load-orders: invalid on purpose.

  /// Appends `XADD orders:requests * field value ...` to `request`.
  void push_xadd(redis::Request& request, std::string_view submitted_at) const {
    if (limit_price.empty()) {
      request.push("XADD", kOrderRequests, "*", "client_order_id", client_order_id, "symbol",
                   symbol, "side", side, "type", type, "qty", qty, "submitted_at", submitted_at);
    } else {
      request.push("XADD", kOrderRequests, "*", "client_order_id", client_order_id, "symbol",
                   symbol, "side", side, "type", type, "qty", qty, "limit_price", limit_price,
                   "submitted_at", submitted_at);
    }
  }
};

/// A price as a short decimal string (at most 8 decimals, trailing zeros removed).
std::string format_price(double price) {
  std::string text = fmt::format("{:.8f}", price);
  while (!text.empty() && text.back() == '0') text.pop_back();
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

/// The deterministic mix of load-orders: order n (1-based) depends only on the seed, n and
/// the last prices. Four draws per order whatever its kind, so that --reject-every does not
/// shift the other orders.
class OrderMix {
 public:
  OrderMix(const LoadSettings& settings, std::vector<std::string> symbols,
           std::map<std::string, double> last_prices)
      : settings_(settings),
        symbols_(std::move(symbols)),
        last_prices_(std::move(last_prices)),
        random_(settings.seed) {}

  OrderRequest next(std::uint64_t n) {
    const std::uint64_t symbol_draw = random_();
    const std::uint64_t side_draw = random_();
    const std::uint64_t type_draw = random_();
    const std::uint64_t qty_draw = random_();
    OrderRequest order;
    order.client_order_id = fmt::format("load-{}-{}", settings_.seed, n);
    order.symbol = symbols_[symbol_draw % symbols_.size()];
    order.side = side_draw % 2 == 0 ? "buy" : "sell";
    order.type = "market";
    order.qty = fmt::format("0.{:03}", 1 + qty_draw % 100);  // 0.001 .. 0.100
    // One in five is a limit order priced 1 % through the last price (marketable), when the
    // last price is known.
    if (type_draw % 5 == 0) {
      if (const auto it = last_prices_.find(order.symbol); it != last_prices_.end()) {
        order.type = "limit";
        const double factor = order.side == "buy" ? 1.01 : 0.99;
        order.limit_price = format_price(it->second * factor);
      }
    }
    if (settings_.reject_every > 0 && n % settings_.reject_every == 0) {
      order.invalid = true;
      if ((n / settings_.reject_every) % 2 == 1) {
        order.qty = "0";  // the executor rejects a zero quantity
      } else {
        order.symbol = "UNKNOWN";  // ... and a symbol it has no price for
      }
    }
    return order;
  }

 private:
  LoadSettings settings_;
  std::vector<std::string> symbols_;
  std::map<std::string, double> last_prices_;
  std::mt19937_64 random_;
};

/// An order of load-orders with its number (1-based).
struct Planned {
  std::uint64_t n = 0;
  OrderRequest order;
};

/// Most XADDs in one pipeline (catching up after an outage at a high rate).
constexpr std::uint64_t kMaxBatch = 50'000;

std::optional<double> parse_price(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value > 0) ||
      !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

asio::awaitable<void> run_submit_order(lifecycle::ServiceContext& ctx, const Settings& settings) {
  auto* redis =
      co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  OrderRequest order;
  order.client_order_id = settings.order.client_order_id.empty() ? fresh_client_order_id()
                                                                 : settings.order.client_order_id;
  order.symbol = settings.order.symbol;
  order.side = settings.order.side;
  order.type = settings.order.type;
  order.qty = settings.order.qty;
  order.limit_price = settings.order.limit_price;
  const std::string submitted_at = std::to_string(unix_millis());
  redis::Request request;
  order.push_xadd(request, submitted_at);
  const std::vector<redis::Reply> replies = co_await redis->pipeline(request);
  const redis::Reply& reply = replies.at(0);
  reply.view().throw_if_error("XADD orders:requests");
  fmt::print("submitted order {} as {} {}\n", order.client_order_id, kOrderRequests,
             reply.as_string());
  std::fflush(stdout);
}

asio::awaitable<void> run_load_orders(lifecycle::ServiceContext& ctx, const Settings& settings,
                                      LoadReport& report) {
  auto log = core::logger("tsctl");
  // Transient Redis failures (a restart, a lost connection, an open breaker) are waited out
  // with capped backoff until the batch goes through or the deadline or a signal stops the
  // run; only permanent failures end it at once.
  core::StopSignal stop(ctx.executor());
  ctx.on_stop([&stop] { stop.request_stop(); });
  core::DefaultRandom random;
  core::UntilStopped retry;
  retry.stop = &stop;
  retry.backoff =
      core::BackoffConfig{std::chrono::milliseconds(50), std::chrono::milliseconds(1000), 2.0};
  retry.random = &random;
  retry.retries = &report.retries;
  retry.log = log;

  auto* redis =
      co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  // Last prices (the symbol's field in its bucket's md:{tNN}:last, written by ts-receiver)
  // make the limit orders marketable; without one a symbol gets market orders only.
  std::map<std::string, double> last_prices;
  for (const auto& symbol : settings.symbols) {
    const std::string key = last_trade_key(symbol);
    auto read = [&]() { return redis->command("HGET", key, symbol); };
    std::string what = "HGET " + key + " " + symbol;
    const redis::Reply last =
        co_await core::retry_until_stopped(read, core::Idempotent::yes, retry, std::move(what));
    if (const auto text = last.as_optional_string()) {
      if (const auto trade = LastTrade::parse(*text)) {
        if (const auto value = parse_price(trade->price)) last_prices.emplace(symbol, *value);
      }
    }
  }
  if (last_prices.size() < settings.symbols.size()) {
    log->warn("no last price for {} of {} symbol(s): their orders are market orders",
              settings.symbols.size() - last_prices.size(), settings.symbols.size());
  }
  OrderMix mix(settings.load, settings.symbols, std::move(last_prices));

  const std::uint64_t count = settings.load.count;
  const double rate = settings.load.rate;
  // One pipeline of XADDs per tick: as many as are due by then, so that the average rate holds
  // whatever the tick.
  const auto tick = std::clamp<std::chrono::steady_clock::duration>(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(1.0 / rate)),
      std::chrono::milliseconds(5), std::chrono::milliseconds(100));
  // After an outage the run catches up, but one tick sends at most one second's worth (and
  // never more than kMaxBatch), so that a long outage is not followed by one huge pipeline.
  const auto max_batch =
      std::clamp<std::uint64_t>(static_cast<std::uint64_t>(std::ceil(rate)), 1, kMaxBatch);
  const auto start = std::chrono::steady_clock::now();
  asio::steady_timer timer(ctx.executor());
  std::uint64_t planned = 0;
  std::uint64_t ticks = 0;
  std::uint64_t last_n = 0;  // the highest order number submitted so far
  redis::Request request;
  std::vector<Planned> pending;  // the batch's orders not yet added (in order)
  std::vector<Planned> failed;
  // Sends what is pending; records each order that was added; keeps the ones whose XADD
  // failed and throws the first failure (retry_until_stopped decides whether to try again).
  auto send = [&]() -> asio::awaitable<void> {
    request.clear();
    const std::string submitted_at = std::to_string(unix_millis());
    for (const Planned& p : pending) p.order.push_xadd(request, submitted_at);
    const std::vector<redis::Reply> replies = co_await redis->pipeline(request);
    failed.clear();
    std::exception_ptr first_failure;
    for (std::size_t i = 0; i < replies.size() && i < pending.size(); ++i) {
      if (replies[i].is_error()) {
        if (!first_failure) {
          try {
            replies[i].view().throw_if_error("XADD orders:requests");
          } catch (...) {
            first_failure = std::current_exception();
          }
        }
        failed.push_back(std::move(pending[i]));
        continue;
      }
      const std::string_view stream_id = replies[i].as_string();
      if (report.submitted == 0) {
        report.first_id = pending[i].order.client_order_id;
        report.first_stream_id = std::string(stream_id);
      }
      if (pending[i].n > last_n) {
        last_n = pending[i].n;
        report.last_id = pending[i].order.client_order_id;
        report.last_stream_id = std::string(stream_id);
      }
      ++report.submitted;
      if (pending[i].order.invalid) ++report.invalid_sent;
    }
    pending.swap(failed);
    if (first_failure) std::rethrow_exception(first_failure);
  };
  while (planned < count) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // The first order goes at once; order k (0-based) is due at k / rate.
    const auto due = std::min<std::uint64_t>(
        {count, static_cast<std::uint64_t>(std::floor(elapsed * rate)) + 1, planned + max_batch});
    if (due > planned) {
      pending.clear();
      for (; planned < due; ++planned) pending.push_back({planned + 1, mix.next(planned + 1)});
      // A retry after an unknown outcome (the connection broke after sending) may add some
      // requests twice: harmless, ts-executor is idempotent by client order id; counted in
      // "retries".
      std::string what = fmt::format("XADD {} (orders {} to {})", kOrderRequests, pending.front().n,
                                     pending.back().n);
      co_await core::retry_until_stopped(send, core::Idempotent::yes, retry, std::move(what));
    }
    // The schedule goes on from now: after a slow batch or an outage the next tick is in the
    // future, not a run of ticks that passed meanwhile (each would send max_batch at once).
    const auto since_start = std::chrono::steady_clock::now() - start;
    ticks = std::max<std::uint64_t>(ticks, static_cast<std::uint64_t>(since_start / tick));
    if (planned >= count) break;
    ++ticks;
    timer.expires_at(start + ticks * tick);
    co_await timer.async_wait(asio::use_awaitable);
  }
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string retried =
      report.retries == 0
          ? std::string()
          : fmt::format("; {} batch retries after transient Redis failures", report.retries);
  fmt::print("submitted {} order(s) ({} invalid on purpose) to {} in {:.3f} s ({:.1f}/s){}\n",
             report.submitted, report.invalid_sent, kOrderRequests, took,
             took > 0 ? static_cast<double>(report.submitted) / took : 0.0, retried);
  std::fflush(stdout);
}

bool write_load_summary(const std::string& path, const LoadReport& report) {
  Summary summary;
  summary.add("submitted", report.submitted)
      .add("first_id", std::string_view(report.first_id))
      .add("last_id", std::string_view(report.last_id))
      .add("invalid_sent", report.invalid_sent)
      .add("first_stream_id", std::string_view(report.first_stream_id))
      .add("last_stream_id", std::string_view(report.last_stream_id))
      .add("retries", report.retries);
  try {
    summary.write_file(path);
    return true;
  } catch (const std::exception& e) {
    core::logger("tsctl")->error("{}", e.what());
    return false;
  }
}

}  // namespace trading_shared::services::tsctl

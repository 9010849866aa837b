#include "feed_sim/rest.hpp"

#include <trading_shared/core/logging.hpp>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/beast/http/write.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace trading_shared::services::feed_sim {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("feed-sim");
  return logger;
}

constexpr std::string_view kHistoricalTrades = "/api/v3/historicalTrades";
constexpr std::uint64_t kDefaultLimit = 500;
constexpr std::uint64_t kMaxLimit = 1000;
/// A REST request carries no body worth the name; a WebSocket upgrade none at all.
constexpr std::uint64_t kBodyLimit = std::uint64_t{64} * 1024;
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
/// The first request of a connection (as Beast's suggested WebSocket handshake timeout).
constexpr std::chrono::seconds kFirstRequestTimeout{30};
/// A keep-alive connection idle that long is closed.
constexpr std::chrono::seconds kIdleTimeout{60};
/// Writing one answer (a client that does not read).
constexpr std::chrono::seconds kWriteTimeout{30};

/// Wide enough for price * quantity in units (GCC and Clang; __extension__ for -Wpedantic).
__extension__ using U128 = unsigned __int128;

constexpr std::array<std::uint64_t, 9> kPow10 = {1,      10,      100,      1000,     10000,
                                                 100000, 1000000, 10000000, 100000000};

/// Closes the socket when it expires; `owner` keeps the socket alive for the handler.
class Deadline {
 public:
  Deadline(SimStream& stream, std::shared_ptr<void> owner)
      : socket_(stream.next_layer()), owner_(std::move(owner)), timer_(socket_.get_executor()) {}
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  ~Deadline() { timer_.cancel(); }

  void arm(Clock::duration d) {
    timer_.expires_after(d);
    timer_.async_wait(
        [&socket = socket_, owner = owner_, expired = expired_](boost::system::error_code ec) {
          if (ec) return;  // disarmed
          *expired = true;
          boost::system::error_code ignored;  // already closed: nothing to do
          socket.close(ignored);
        });
  }
  void disarm() { timer_.cancel(); }
  bool expired() const noexcept { return *expired_; }

 private:
  tcp::socket& socket_;
  std::shared_ptr<void> owner_;
  asio::steady_timer timer_;
  std::shared_ptr<bool> expired_ = std::make_shared<bool>(false);
};

void append_uint(std::string& out, U128 value) {
  std::array<char, 40> digits{};
  std::size_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + static_cast<int>(value % 10));
    value /= 10;
  } while (value != 0);
  while (n > 0) out.push_back(digits[--n]);
}

/// `units / 10^decimals` (decimals <= 8) with exactly 8 decimals.
void append_8_decimals(std::string& out, U128 units, int decimals) {
  const auto scaled = units * kPow10[static_cast<std::size_t>(8 - decimals)];
  append_uint(out, scaled / kPow10[8]);
  out.push_back('.');
  std::array<char, 8> fraction{};
  auto rest = static_cast<std::uint64_t>(scaled % kPow10[8]);
  for (int i = 7; i >= 0; --i) {
    fraction[static_cast<std::size_t>(i)] = static_cast<char>('0' + rest % 10);
    rest /= 10;
  }
  out.append(fraction.data(), fraction.size());
}

/// Percent-decoding of a query value ('+' is a blank); nullopt if malformed.
std::optional<std::string> url_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      unsigned value = 0;
      const auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
      if (ec != std::errc{} || ptr != text.data() + i + 3) return std::nullopt;
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<std::uint64_t> parse_uint(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

std::int64_t ceil_seconds(Clock::duration d) {
  return std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(d).count());
}

}  // namespace

void append_rest_trades_json(std::string& out, const std::vector<HistoryTrade>& trades,
                             std::size_t count) {
  out.push_back('[');
  for (std::size_t k = 0; k < count; ++k) {
    const auto& t = trades[k].trade;
    if (k > 0) out.push_back(',');
    out += R"({"id":)";
    append_uint(out, t.id);
    out += R"(,"price":")";
    append_8_decimals(out, static_cast<U128>(t.price_cents), 2);
    out += R"(","qty":")";
    append_8_decimals(out, t.qty_units, t.qty_decimals);
    out += R"(","quoteQty":")";
    // price * qty = price_cents * qty_units / 10^(2 + decimals); rounded half up to 8 decimals.
    const auto product = static_cast<U128>(t.price_cents) * static_cast<U128>(t.qty_units);
    const int decimals = 2 + t.qty_decimals;  // 5..10
    if (decimals <= 8) {
      append_8_decimals(out, product, decimals);
    } else {
      const auto divisor = kPow10[static_cast<std::size_t>(decimals - 8)];
      append_8_decimals(out, (product + divisor / 2) / divisor, 8);
    }
    out += R"(","time":)";
    out += fmt::format("{}", trades[k].time_ms);
    out += t.buyer_maker ? R"(,"isBuyerMaker":true,"isBestMatch":true})"
                         : R"(,"isBuyerMaker":false,"isBestMatch":true})";
  }
  out.push_back(']');
}

struct RestVenue::Answer {
  http::status status = http::status::ok;
  std::string body;
  std::int64_t retry_after = 0;  ///< seconds; 0 = no header.
};

namespace {

RestVenue::Answer error_answer(http::status status, int code, std::string_view message) {
  RestVenue::Answer a;
  a.status = status;
  a.body = fmt::format(R"({{"code":{},"msg":{}}})", code, json_quote(message));
  return a;
}

struct ReadResult {
  std::optional<RestRequest> request;
  std::string error;           ///< why there is no request.
  bool client_closed = false;  ///< the client closed the connection between requests.
};

/// Reads one request within `timeout`; a malformed one is answered with a 400 (and the
/// connection is to be closed).
asio::awaitable<ReadResult> read_request(SimStream& socket, beast::flat_buffer& buffer,
                                         Deadline& deadline, Clock::duration timeout) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  parser.header_limit(kHeaderLimit);
  deadline.arm(timeout);
  boost::system::error_code ec;
  co_await http::async_read(socket, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  deadline.disarm();
  ReadResult result;
  if (!ec) {
    result.request = parser.release();
    co_return result;
  }
  if (deadline.expired()) {
    result.error = fmt::format("no HTTP request within {} s",
                               std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
  } else if (ec == http::error::end_of_stream) {
    result.error = "the client closed the connection";
    result.client_closed = true;
  } else if (ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
             ec != http::error::partial_message) {
    result.error = "malformed HTTP request: " + ec.message();
    RestResponse response{http::status::bad_request, 11};
    response.set(http::field::server, "ts-feed-sim");
    response.set(http::field::content_type, "application/json;charset=UTF-8");
    response.body() = fmt::format(R"({{"code":-1,"msg":{}}})", json_quote(result.error));
    response.keep_alive(false);
    response.prepare_payload();
    deadline.arm(kWriteTimeout);
    boost::system::error_code ignored;  // the connection ends either way
    co_await http::async_write(socket, response,
                               asio::redirect_error(asio::use_awaitable, ignored));
    deadline.disarm();
  } else {
    result.error = "reading the HTTP request: " + ec.message();
  }
  co_return result;
}

}  // namespace

RestVenue::RestVenue(asio::any_io_executor executor, const FeedSimConfig& config,
                     std::vector<std::string> symbols)
    : executor_(std::move(executor)), config_(config), symbols_(std::move(symbols)) {
  histories_.reserve(symbols_.size());
  for (std::size_t i = 0; i < symbols_.size(); ++i) {
    histories_.emplace_back(static_cast<std::size_t>(config_.rest_history));
  }
}

asio::awaitable<std::optional<RestRequest>> RestVenue::read_first(SimStream& socket,
                                                                  beast::flat_buffer& buffer,
                                                                  std::shared_ptr<void> owner,
                                                                  std::string& error) {
  Deadline deadline(socket, std::move(owner));
  auto result = co_await read_request(socket, buffer, deadline, kFirstRequestTimeout);
  if (!result.request) error = std::move(result.error);
  co_return std::move(result.request);
}

asio::awaitable<std::string> RestVenue::serve(SimStream& socket, beast::flat_buffer& buffer,
                                              RestRequest first, std::shared_ptr<void> owner) {
  ++connections_;
  Deadline deadline(socket, std::move(owner));
  RestRequest request = std::move(first);
  std::uint64_t answered = 0;
  for (;;) {
    Answer a = answer(request);
    if (config_.rest_fault_slow > std::chrono::milliseconds::zero()) {
      co_await delay(config_.rest_fault_slow);
      if (stopped_ || !socket.next_layer().is_open())
        co_return "closed while an answer was delayed";
    }
    RestResponse response{a.status, request.version()};
    response.set(http::field::server, "ts-feed-sim");
    response.set(http::field::content_type, "application/json;charset=UTF-8");
    response.set("X-MBX-USED-WEIGHT-1M", std::to_string(used_weight_));
    if (a.retry_after > 0) response.set(http::field::retry_after, std::to_string(a.retry_after));
    response.body() = std::move(a.body);
    response.keep_alive(request.keep_alive() && !stopped_);
    response.prepare_payload();
    deadline.arm(kWriteTimeout);
    boost::system::error_code ec;
    co_await http::async_write(socket, response, asio::redirect_error(asio::use_awaitable, ec));
    deadline.disarm();
    if (ec) {
      co_return deadline.expired()
          ? fmt::format("REST: the client read no answer within {} s", kWriteTimeout.count())
          : "REST: write failed: " + ec.message();
    }
    ++answered;
    if (!response.keep_alive()) {
      boost::system::error_code ignored;  // the socket is closed next anyway
      socket.next_layer().shutdown(tcp::socket::shutdown_send, ignored);
      co_return fmt::format("REST: {} answer(s); closed as asked", answered);
    }
    auto next = co_await read_request(socket, buffer, deadline, kIdleTimeout);
    if (!next.request) co_return fmt::format("REST: {} answer(s); {}", answered, next.error);
    request = std::move(*next.request);
  }
}

void RestVenue::stop() {
  stopped_ = true;
  for (auto* timer : delays_) timer->cancel();
}

asio::awaitable<void> RestVenue::delay(std::chrono::milliseconds d) {
  asio::steady_timer timer(executor_, d);
  delays_.push_back(&timer);
  boost::system::error_code ec;  // aborted = stop()
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::erase(delays_, &timer);
}

RestVenue::Answer RestVenue::answer(const RestRequest& request) {
  ++requests_;
  const auto now = Clock::now();
  if (now >= window_end_) {
    used_weight_ = 0;
    window_end_ = now + config_.rest_weight_window;
  }
  if (config_.rest_fault_5xx_every > 0 && requests_ % config_.rest_fault_5xx_every == 0) {
    ++answered_5xx_;
    return error_answer(http::status::service_unavailable, -1008,
                        "Service unavailable (fault: --rest-fault-5xx-every).");
  }
  const std::string_view target(request.target().data(), request.target().size());
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view() : target.substr(question + 1);
  if (path != kHistoricalTrades) {
    ++answered_4xx_;
    return error_answer(
        http::status::not_found, -1,
        fmt::format("Unknown path {} (only {}).", path.substr(0, 200), kHistoricalTrades));
  }
  if (request.method() != http::verb::get) {
    ++answered_4xx_;
    return error_answer(http::status::method_not_allowed, -1,
                        fmt::format("Method {} not allowed (only GET).",
                                    std::string_view(request.method_string().data(),
                                                     request.method_string().size())));
  }
  if (!config_.rest_api_key.empty()) {
    const auto key = request.find("X-MBX-APIKEY");
    if (key == request.end()) {
      ++answered_401_;
      return error_answer(http::status::unauthorized, -2014, "API-key format invalid.");
    }
    if (std::string_view(key->value().data(), key->value().size()) != config_.rest_api_key) {
      ++answered_401_;
      return error_answer(http::status::unauthorized, -2015,
                          "Invalid API-key, IP, or permissions for action.");
    }
  }
  if (now < banned_until_) {
    ++answered_418_;
    auto a = error_answer(static_cast<http::status>(418), -1003,
                          fmt::format("Way too many requests; IP banned for {} more second(s).",
                                      ceil_seconds(banned_until_ - now)));
    a.retry_after = ceil_seconds(banned_until_ - now);
    return a;
  }
  if (now < retry_after_until_) {
    // A request while a 429's Retry-After is running: banned.
    banned_until_ = now + config_.rest_ban;
    ++answered_418_;
    log()->info(
        "REST: a request {} ms before the end of its 429's Retry-After: banned for {} ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(retry_after_until_ - now).count(),
        config_.rest_ban.count());
    auto a = error_answer(static_cast<http::status>(418), -1003,
                          fmt::format("Way too many requests; IP banned for {} second(s).",
                                      ceil_seconds(config_.rest_ban)));
    a.retry_after = ceil_seconds(config_.rest_ban);
    return a;
  }
  if (used_weight_ + config_.rest_weight_per_call > config_.rest_weight_limit) {
    ++answered_429_;
    const auto seconds = ceil_seconds(window_end_ - now);
    retry_after_until_ = now + std::chrono::seconds(seconds);
    auto a = error_answer(
        http::status::too_many_requests, -1003,
        fmt::format("Too many requests; current limit is {} request weight per {} ms. Please use "
                    "the websocket for live updates to avoid polling the API.",
                    config_.rest_weight_limit, config_.rest_weight_window.count()));
    a.retry_after = seconds;
    return a;
  }
  used_weight_ += config_.rest_weight_per_call;
  return historical_trades(query);
}

RestVenue::Answer RestVenue::historical_trades(std::string_view query) {
  std::optional<std::string> symbol;
  std::optional<std::string> from_id;
  std::optional<std::string> limit;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    const std::string_view name = item.substr(0, eq);
    auto value =
        url_decode(eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1));
    if (!value) {
      ++answered_4xx_;
      return error_answer(
          http::status::bad_request, -1100,
          fmt::format("Illegal characters found in parameter '{}'.", name.substr(0, 50)));
    }
    std::optional<std::string>* slot = name == "symbol"   ? &symbol
                                       : name == "fromId" ? &from_id
                                       : name == "limit"  ? &limit
                                                          : nullptr;
    if (slot == nullptr) continue;  // other parameters are ignored
    if (slot->has_value()) {
      ++answered_4xx_;
      return error_answer(http::status::bad_request, -1101,
                          "Duplicate values for a parameter detected.");
    }
    *slot = std::move(*value);
  }
  if (!symbol || symbol->empty()) {
    ++answered_4xx_;
    return error_answer(http::status::bad_request, -1102,
                        "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.");
  }
  const auto it = std::find(symbols_.begin(), symbols_.end(), *symbol);
  if (it == symbols_.end()) {
    ++answered_4xx_;
    return error_answer(http::status::bad_request, -1121, "Invalid symbol.");
  }
  std::uint64_t count_wanted = kDefaultLimit;
  if (limit) {
    const auto value = parse_uint(*limit);
    if (!value || *value == 0 || *value > kMaxLimit) {
      ++answered_4xx_;
      return error_answer(http::status::bad_request, -1100,
                          "Illegal characters found in parameter 'limit'; legal range is "
                          "'1 - 1000'.");
    }
    count_wanted = *value;
  }
  std::optional<std::uint64_t> from;
  if (from_id) {
    from = parse_uint(*from_id);
    if (!from) {
      ++answered_4xx_;
      return error_answer(http::status::bad_request, -1100,
                          "Illegal characters found in parameter 'fromId'; legal range is "
                          "'^[0-9]{1,20}$'.");
    }
  }
  const auto& history = histories_[static_cast<std::size_t>(it - symbols_.begin())];
  page_.clear();
  std::size_t count = from ? history.copy_from(*from, count_wanted, page_)
                           : history.copy_newest(count_wanted, page_);
  if (config_.rest_fault_partial_every > 0 && count >= 2 &&
      ++partial_candidates_ % config_.rest_fault_partial_every == 0) {
    ++partial_;
    log()->info("REST: fault: a short page of {} of {} {} trade(s) from id {}", count / 2, count,
                *symbol, page_.front().trade.id);
    count /= 2;
  }
  trades_served_ += count;
  Answer a;
  a.body.reserve(count * 160 + 2);
  append_rest_trades_json(a.body, page_, count);
  return a;
}

void RestVenue::add_summary(Summary& out) const {
  out.add("rest_connections", connections_)
      .add("rest_requests", requests_)
      .add("rest_trades", trades_served_)
      .add("rest_429", answered_429_)
      .add("rest_418", answered_418_)
      .add("rest_5xx", answered_5xx_)
      .add("rest_401", answered_401_)
      .add("rest_partial", partial_)
      .add("rest_client_errors", answered_4xx_);
}

// ---- configuration -------------------------------------------------------------------------

void add_rest_settings(core::ConfigLoader& loader, FeedSimConfig& config) {
  loader
      .add(config.keep_trading,
           {"keep_trading",
            "a symbol once subscribed keeps trading while no connection subscribes to it"})
      .add(config.rest_history, {"rest.history", "REST: trades kept per symbol"})
      .add(config.rest_api_key,
           {"rest.api_key", "REST: the X-MBX-APIKEY header required (empty = none)", true})
      .add(config.rest_weight_per_call,
           {"rest.weight_per_call", "REST: weight of one historicalTrades request"})
      .add(config.rest_weight_limit,
           {"rest.weight_limit", "REST: weight allowed per --rest-weight-window (all clients)"})
      .add(config.rest_weight_window, {"rest.weight_window", "REST: the weight window"})
      .add(config.rest_ban,
           {"rest.ban", "REST: ban (HTTP 418) for a request during a 429's Retry-After"})
      .add(config.rest_fault_5xx_every,
           {"rest.fault_5xx_every", "REST: every Nth request is answered 503 (0 = off)"})
      .add(config.rest_fault_partial_every,
           {"rest.fault_partial_every",
            "REST: every Nth page of 2 or more trades has only its first half (0 = off)"})
      .add(config.rest_fault_slow,
           {"rest.fault_slow", "REST: every answer is delayed by this (0 = off)"});
}

void check_rest_config(const FeedSimConfig& config) {
  if (config.rest_history == 0 || config.rest_history > 100'000'000) {
    throw core::ConfigError(fmt::format(
        "invalid value {} for --rest-history: expected 1 to 100000000 trades per symbol",
        config.rest_history));
  }
  if (config.rest_weight_per_call == 0) {
    throw core::ConfigError("--rest-weight-per-call must be at least 1");
  }
  if (config.rest_weight_limit < config.rest_weight_per_call) {
    throw core::ConfigError(fmt::format(
        "--rest-weight-limit ({}) must be at least --rest-weight-per-call ({}): no request "
        "could ever be served",
        config.rest_weight_limit, config.rest_weight_per_call));
  }
  if (config.rest_weight_window <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--rest-weight-window must be positive");
  }
  if (config.rest_ban <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--rest-ban must be positive");
  }
  if (config.rest_fault_5xx_every == 1) {
    throw core::ConfigError(
        "--rest-fault-5xx-every must be 0 (off) or at least 2: with 1 no request succeeds");
  }
  if (config.rest_fault_slow < std::chrono::milliseconds::zero() ||
      config.rest_fault_slow > std::chrono::minutes(10)) {
    throw core::ConfigError("--rest-fault-slow must be from 0 (off) to 10 minutes");
  }
  for (const char c : config.rest_api_key) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) {
      throw core::ConfigError(
          "--rest-api-key must be printable ASCII without blanks (it is an HTTP header value)");
    }
  }
}

}  // namespace trading_shared::services::feed_sim

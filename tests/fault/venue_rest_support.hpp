#pragma once
/// @file
/// What venue_rest_test and venue_rest_limits_test share: ts-feed-sim in-process on the test's
/// loop, a raw Beast HTTP/1.1 client and a raw Beast WebSocket client on loopback.
#include <trading_shared/core/config.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "feed_sim/feed_sim.hpp"
#include "feed_sim/generator.hpp"
#include "support/async_test.hpp"
#include "support/test_helpers.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace venue_rest_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace json = boost::json;
namespace feed = trading_shared::services::feed_sim;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using trading_shared::testing::eventually;
using trading_shared::testing::pause_for;
using trading_shared::testing::run_coroutine_test;

/// A failed expectation inside a coroutine (ASSERT_* cannot return from one).
inline void require(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error("requirement failed: " + what);
}

inline feed::FeedSimConfig base_config() {
  feed::FeedSimConfig config;
  config.listen = "127.0.0.1:0";
  config.symbols = {"BTCUSDT"};
  config.seed = 16;
  config.rate = 5000;
  return config;
}

/// Starts the simulator, runs `body`, closes the simulator (also when `body` failed).
/// `stop_when_done`: stop the loop when the body ends (run_coroutine_test), for tests whose
/// peers would keep it busy.
inline void run_sim_test(feed::FeedSimConfig config,
                         std::function<asio::awaitable<void>(feed::FeedSimulator&)> body,
                         Clock::duration timeout = 45s, bool stop_when_done = false) {
  run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        feed::FeedSimulator sim(io.get_executor(), config);
        co_await sim.start();
        std::exception_ptr error;
        try {
          co_await body(sim);
        } catch (...) {
          error = std::current_exception();  // rethrown below, once the simulator is closed
        }
        co_await sim.close();
        if (error) std::rethrow_exception(error);
      },
      timeout, stop_when_done);
}

inline json::value summary_of(const feed::FeedSimulator& sim) {
  return json::parse(sim.summary().json());
}
inline std::uint64_t summary_field(const feed::FeedSimulator& sim, std::string_view key) {
  return summary_of(sim).at(key).to_number<std::uint64_t>();
}
inline std::uint64_t symbol_field(const feed::FeedSimulator& sim, std::string_view symbol,
                                  std::string_view key) {
  return summary_of(sim).at("symbols").at(symbol).at(key).to_number<std::uint64_t>();
}

// ---- HTTP ----------------------------------------------------------------------------------

using Response = http::response<http::string_body>;
using Headers = std::vector<std::pair<std::string, std::string>>;

/// One keep-alive HTTP/1.1 connection.
class HttpClient {
 public:
  explicit HttpClient(const asio::any_io_executor& executor) : socket_(executor) {}

  asio::awaitable<void> connect(std::uint16_t port) {
    co_await socket_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                   asio::use_awaitable);
  }

  /// GET `target`; `headers` added. Throws on a transport error.
  asio::awaitable<Response> get(std::string target, Headers headers = {}, bool close = false) {
    http::request<http::empty_body> request{http::verb::get, target, 11};
    request.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    request.keep_alive(!close);
    co_await http::async_write(socket_, request, asio::use_awaitable);
    Response response;
    co_await http::async_read(socket_, buffer_, response, asio::use_awaitable);
    co_return response;
  }

  /// True when the server has closed the connection (the next read ends at once).
  asio::awaitable<bool> closed_by_server() {
    Response response;
    boost::system::error_code ec;
    co_await http::async_read(socket_, buffer_, response,
                              asio::redirect_error(asio::use_awaitable, ec));
    co_return ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset;
  }

  tcp::socket& socket() { return socket_; }

 private:
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

inline asio::awaitable<Response> get_once(std::uint16_t port, std::string target,
                                          Headers headers = {}) {
  HttpClient client(co_await asio::this_coro::executor);
  co_await client.connect(port);
  co_return co_await client.get(std::move(target), std::move(headers), true);
}

inline std::string trades_url(std::string_view symbol, std::optional<std::uint64_t> from_id,
                              std::optional<std::uint64_t> limit) {
  std::string url = fmt::format("/api/v3/historicalTrades?symbol={}", symbol);
  if (from_id) url += fmt::format("&fromId={}", *from_id);
  if (limit) url += fmt::format("&limit={}", *limit);
  return url;
}

inline int error_code_of(const Response& r) {
  return static_cast<int>(json::parse(r.body()).at("code").to_number<std::int64_t>());
}

inline std::string header(const Response& r, std::string_view name) {
  const auto it = r.find(name);
  return it == r.end() ? std::string() : std::string(it->value());
}

// ---- trades --------------------------------------------------------------------------------

/// A trade as seen by the test: decimals without trailing zeros (so "60000.10" of the stream
/// and "60000.10000000" of REST compare equal).
struct SeenTrade {
  std::uint64_t id = 0;
  std::string price;
  std::string qty;
  std::int64_t time = 0;
  bool maker = false;
  bool operator==(const SeenTrade&) const = default;
};

inline std::string canonical(std::string_view decimal) {
  std::string out(decimal);
  if (out.find('.') == std::string::npos) return out;
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out;
}

inline std::string show(const SeenTrade& t) {
  return fmt::format("{{id {} price {} qty {} time {} maker {}}}", t.id, t.price, t.qty, t.time,
                     t.maker);
}

/// Parses a historicalTrades answer; checks the fixed fields and quoteQty = price * qty.
inline std::vector<SeenTrade> parse_rest_trades(const Response& response) {
  require(response.result() == http::status::ok,
          fmt::format("HTTP {} {}", response.result_int(), response.body()));
  std::vector<SeenTrade> out;
  const json::value doc = json::parse(response.body());
  for (const auto& item : doc.as_array()) {
    const auto& o = item.as_object();
    SeenTrade t;
    t.id = o.at("id").to_number<std::uint64_t>();
    const std::string price(o.at("price").as_string());
    const std::string qty(o.at("qty").as_string());
    const std::string quote(o.at("quoteQty").as_string());
    const std::array<const std::string*, 3> decimals{&price, &qty, &quote};
    for (const auto* s : decimals) {
      require(s->size() > 9 && (*s)[s->size() - 9] == '.', "8 decimals: " + *s);
    }
    const long double expected = std::stold(price) * std::stold(qty);
    require(std::fabs(std::stold(quote) - expected) < 1e-7L,
            fmt::format("quoteQty {} of price {} x qty {}", quote, price, qty));
    t.price = canonical(price);
    t.qty = canonical(qty);
    t.time = o.at("time").to_number<std::int64_t>();
    t.maker = o.at("isBuyerMaker").as_bool();
    require(o.at("isBestMatch").as_bool(), "isBestMatch");
    out.push_back(std::move(t));
  }
  return out;
}

/// Reads every page from `from_id` until `[]`; checks that the ids are contiguous.
inline asio::awaitable<std::vector<SeenTrade>> read_all_pages(HttpClient& client,
                                                              std::string_view symbol,
                                                              std::uint64_t from_id) {
  std::vector<SeenTrade> all;
  for (std::uint64_t next = from_id;;) {
    const auto page = parse_rest_trades(co_await client.get(trades_url(symbol, next, 1000)));
    if (page.empty()) break;
    for (const auto& t : page) {
      require(t.id == next,
              fmt::format("page from {}: id {} where {} was due", from_id, t.id, next));
      ++next;
      all.push_back(t);
    }
  }
  co_return all;
}

/// A raw Beast WebSocket client subscribed to `streams`.
class WsClient {
 public:
  explicit WsClient(const asio::any_io_executor& executor) : ws_(executor) {}

  /// `streams`: comma-separated (a braced list in a co_await trips GCC 12's coroutines).
  asio::awaitable<void> subscribe(std::uint16_t port, std::string streams) {
    co_await ws_.next_layer().async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), asio::use_awaitable);
    co_await ws_.async_handshake("127.0.0.1", "/ws", asio::use_awaitable);
    json::array params;
    for (std::size_t at = 0; at <= streams.size();) {
      const auto comma = std::min(streams.find(',', at), streams.size());
      params.emplace_back(streams.substr(at, comma - at));
      at = comma + 1;
    }
    const std::string request =
        json::serialize(json::object{{"method", "SUBSCRIBE"}, {"params", params}, {"id", 1}});
    co_await ws_.async_write(asio::buffer(request), asio::use_awaitable);
    const auto reply = co_await read();
    require(reply == R"({"result":null,"id":1})", "subscribe reply: " + reply);
  }

  asio::awaitable<std::string> read() {
    buffer_.consume(buffer_.size());
    co_await ws_.async_read(buffer_, asio::use_awaitable);
    co_return beast::buffers_to_string(buffer_.cdata());
  }

  /// Reads trade events until `count` trades have come; by symbol. Checks E == T.
  asio::awaitable<std::map<std::string, std::vector<SeenTrade>>> read_trades(std::size_t count) {
    std::map<std::string, std::vector<SeenTrade>> out;
    for (std::size_t n = 0; n < count; ++n) {
      const auto text = co_await read();
      const auto doc = json::parse(text).as_object();
      SeenTrade t;
      t.id = doc.at("t").to_number<std::uint64_t>();
      t.price = canonical(doc.at("p").as_string());
      t.qty = canonical(doc.at("q").as_string());
      t.time = doc.at("T").to_number<std::int64_t>();
      t.maker = doc.at("m").as_bool();
      require(doc.at("E").to_number<std::int64_t>() == t.time, "E == T: " + text);
      out[std::string(doc.at("s").as_string())].push_back(std::move(t));
    }
    co_return out;
  }

  asio::awaitable<void> close() {
    co_await ws_.async_close(websocket::close_code::normal, asio::use_awaitable);
  }

 private:
  websocket::stream<tcp::socket> ws_;
  beast::flat_buffer buffer_;
};

/// The digest of the summary, computed from trades served by REST (time = E = T).
inline std::string digest_of(const std::vector<SeenTrade>& trades) {
  feed::TradeDigest digest;
  for (const auto& t : trades) {
    const auto units = [](const std::string& decimal, int decimals) {
      const auto point = decimal.find('.');
      std::string whole = decimal.substr(0, point);
      std::string fraction = point == std::string::npos ? "" : decimal.substr(point + 1);
      fraction.resize(static_cast<std::size_t>(decimals), '0');
      return std::stoull(whole + fraction);
    };
    feed::Trade trade;
    trade.id = t.id;
    trade.price_cents = static_cast<std::int64_t>(units(t.price, 2));
    trade.qty_decimals = 8;  // the digest renders without trailing zeros: any scale will do
    trade.qty_units = units(t.qty, 8);
    trade.buyer_maker = t.maker;
    digest.add(trade, t.time, t.time);
  }
  return digest.hex();
}

}  // namespace venue_rest_test

// ts-feed-sim's REST endpoint: the venue's limits (request weight: 429 + Retry-After, then a
// 418 ban; the API key), its fault switches (503 every N, short pages, slow answers), HTTP
// edges (keep-alive, unknown path, bad parameters, malformed requests) and the flags' checks.
#include <boost/asio/detached.hpp>

#include "venue_rest_support.hpp"

namespace {

using namespace venue_rest_test;

std::int64_t retry_after_of(const Response& r) {
  return std::stoll(header(r, "Retry-After"));
}

TEST(VenueRestLimits, WeightLimitAnswers429ThenBans418AndServesAfterRetryAfter) {
  auto config = base_config();
  config.rest_weight_limit = 100;  // 4 calls of 25
  config.rest_weight_per_call = 25;
  config.rest_weight_window = 2s;
  config.rest_ban = 3s;  // longer than the window: after the ban the window has rolled
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    const auto url = trades_url("BTCUSDT", 1, 10);
    for (int used = 25; used <= 100; used += 25) {
      const auto r = co_await client.get(url);
      EXPECT_EQ(r.result(), http::status::ok);
      EXPECT_EQ(header(r, "X-MBX-USED-WEIGHT-1M"), std::to_string(used));
    }
    const auto limited = co_await client.get(url);
    require(limited.result() == http::status::too_many_requests,
            fmt::format("the 5th call: HTTP {} {}", limited.result_int(), limited.body()));
    EXPECT_EQ(error_code_of(limited), -1003);
    EXPECT_EQ(header(limited, "X-MBX-USED-WEIGHT-1M"), "100");
    const auto retry = retry_after_of(limited);
    EXPECT_GE(retry, 1);
    EXPECT_LE(retry, 2);
    // Ignoring the Retry-After: banned.
    const auto banned = co_await client.get(url);
    require(banned.result_int() == 418, fmt::format("a call during Retry-After: HTTP {} {}",
                                                    banned.result_int(), banned.body()));
    EXPECT_EQ(error_code_of(banned), -1003);
    EXPECT_EQ(retry_after_of(banned), 3);
    const auto still = co_await client.get(url);
    EXPECT_EQ(still.result_int(), 418) << "the ban holds";
    EXPECT_LE(retry_after_of(still), 3);
    co_await pause_for(std::chrono::seconds(retry_after_of(banned)));  // as the venue says
    const auto after_ban = co_await client.get(url);
    EXPECT_EQ(after_ban.result(), http::status::ok) << after_ban.body();
    EXPECT_EQ(header(after_ban, "X-MBX-USED-WEIGHT-1M"), "25");
    // The well-behaved client: 429, waits its Retry-After, is served.
    for (int i = 0; i < 3; ++i) co_await client.get(url);
    const auto again = co_await client.get(url);
    require(again.result() == http::status::too_many_requests,
            fmt::format("over the limit again: HTTP {}", again.result_int()));
    co_await pause_for(std::chrono::seconds(retry_after_of(again)));
    const auto served = co_await client.get(url);
    EXPECT_EQ(served.result(), http::status::ok) << served.body();
    EXPECT_EQ(summary_field(sim, "rest_429"), 2U);
    EXPECT_EQ(summary_field(sim, "rest_418"), 2U);
  });
}

TEST(VenueRestLimits, ApiKeyRequiredWhenSet) {
  auto config = base_config();
  config.rest_api_key = "k3y-for-the-test";
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    const auto url = trades_url("BTCUSDT", 1, 10);
    const auto none = co_await get_once(sim.port(), url);
    EXPECT_EQ(none.result(), http::status::unauthorized);
    EXPECT_EQ(error_code_of(none), -2014);
    const Headers wrong_key{{"X-MBX-APIKEY", "other"}};
    const Headers right_key{{"X-MBX-APIKEY", "k3y-for-the-test"}};
    const auto wrong = co_await get_once(sim.port(), url, wrong_key);
    EXPECT_EQ(wrong.result(), http::status::unauthorized);
    EXPECT_EQ(error_code_of(wrong), -2015);
    const auto right = co_await get_once(sim.port(), url, right_key);
    EXPECT_EQ(right.result(), http::status::ok) << right.body();
    EXPECT_EQ(right.body(), "[]") << "nothing subscribed: nothing generated";
  });
}

TEST(VenueRestFaults, EveryNthRequestIs503) {
  auto config = base_config();
  config.rest_fault_5xx_every = 3;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    std::vector<unsigned> statuses;
    for (int i = 0; i < 7; ++i) {
      const auto r = co_await client.get(trades_url("BTCUSDT", 1, 10));
      statuses.push_back(r.result_int());
      if (r.result_int() == 503) {
        EXPECT_EQ(error_code_of(r), -1008);
      }
    }
    EXPECT_EQ(statuses, (std::vector<unsigned>{200, 200, 503, 200, 200, 503, 200}));
    EXPECT_EQ(summary_field(sim, "rest_5xx"), 2U);
    EXPECT_EQ(summary_field(sim, "rest_connections"), 1U) << "a 503 keeps the connection";
  });
}

TEST(VenueRestFaults, EveryNthPageIsShort) {
  auto config = base_config();
  config.rest_fault_partial_every = 2;
  config.max_messages = 100;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    WsClient ws(co_await asio::this_coro::executor);
    co_await ws.subscribe(sim.port(), "btcusdt@trade");
    co_await ws.read_trades(100);
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    std::vector<std::size_t> sizes;
    for (std::uint64_t from = 1; from <= 100;) {
      const auto page = parse_rest_trades(co_await client.get(trades_url("BTCUSDT", from, 10)));
      require(!page.empty() && page.front().id == from, fmt::format("a page from {}", from));
      sizes.push_back(page.size());
      from += page.size();
    }
    EXPECT_EQ(sizes, (std::vector<std::size_t>{10, 5, 10, 5, 10, 5, 10, 5, 10, 5, 10, 5, 10}));
    EXPECT_EQ(summary_field(sim, "rest_partial"), 6U);
    co_await ws.close();
  });
}

TEST(VenueRestFaults, SlowAnswersAndAStopDuringTheDelay) {
  auto config = base_config();
  config.rest_fault_slow = 400ms;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    const auto start = Clock::now();
    const auto r = co_await get_once(sim.port(), trades_url("BTCUSDT", 1, 10));
    EXPECT_EQ(r.result(), http::status::ok);
    EXPECT_GE(Clock::now() - start, 400ms) << "the answer was not delayed";
  });
  // A stop does not wait for a delayed answer: the connection is closed at once.
  config.rest_fault_slow = 30s;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    auto client = std::make_shared<HttpClient>(executor);
    co_await client->connect(sim.port());
    auto ended = std::make_shared<std::optional<bool>>();
    asio::co_spawn(
        executor,
        [client, ended]() -> asio::awaitable<void> {
          http::request<http::empty_body> request{http::verb::get, trades_url("BTCUSDT", 1, 10),
                                                  11};
          co_await http::async_write(client->socket(), request, asio::use_awaitable);
          *ended = co_await client->closed_by_server();
        },
        asio::detached);
    require(co_await eventually([&] { return summary_field(sim, "rest_requests") == 1; }, 5s, 5ms),
            "the request reached the simulator");
    const auto start = Clock::now();
    co_await sim.close();
    EXPECT_LT(Clock::now() - start, 5s) << "close() waited for the slow answer";
    require(co_await eventually([&] { return ended->has_value(); }, 5s, 5ms), "client ended");
    EXPECT_TRUE(**ended) << "the client saw the connection closed";
  });
}

TEST(VenueRestHttp, KeepAliveErrorsAndMalformedRequests) {
  run_sim_test(base_config(), [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    const auto expect_error = [&](const Response& r, unsigned status, int code) {
      EXPECT_EQ(r.result_int(), status) << r.body();
      EXPECT_EQ(error_code_of(r), code) << r.body();
      EXPECT_FALSE(header(r, "X-MBX-USED-WEIGHT-1M").empty()) << "every answer carries it";
    };
    expect_error(co_await client.get("/api/v3/trades?symbol=BTCUSDT"), 404, -1);
    expect_error(co_await client.get("/api/v3/historicalTrades"), 400, -1102);
    expect_error(co_await client.get(trades_url("NOPE", 1, 10)), 400, -1121);
    expect_error(co_await client.get(trades_url("BTCUSDT", 1, 1001)), 400, -1100);
    expect_error(co_await client.get(trades_url("BTCUSDT", 1, 0)), 400, -1100);
    expect_error(co_await client.get("/api/v3/historicalTrades?symbol=BTCUSDT&fromId=x1"), 400,
                 -1100);
    expect_error(co_await client.get("/api/v3/historicalTrades?symbol=BTCUSDT&symbol=BTCUSDT"), 400,
                 -1101);
    const auto ok = co_await client.get(trades_url("BTCUSDT", 1, 1000), {}, true);
    EXPECT_EQ(ok.result(), http::status::ok);
    EXPECT_TRUE(co_await client.closed_by_server()) << "Connection: close is honoured";
    EXPECT_EQ(summary_field(sim, "rest_connections"), 1U);
    EXPECT_EQ(summary_field(sim, "rest_requests"), 8U);
    // Not HTTP: a 400, then the connection is closed.
    HttpClient garbage(co_await asio::this_coro::executor);
    co_await garbage.connect(sim.port());
    co_await asio::async_write(garbage.socket(), asio::buffer(std::string_view("NOT HTTP\r\n\r\n")),
                               asio::use_awaitable);
    beast::flat_buffer buffer;
    Response response;
    co_await http::async_read(garbage.socket(), buffer, response, asio::use_awaitable);
    EXPECT_EQ(response.result(), http::status::bad_request);
    EXPECT_TRUE(co_await garbage.closed_by_server());
  });
}

TEST(VenueRestLimits, FaultSwitchesCountWebSocketConnectionsOnly) {
  auto config = base_config();
  config.fault_connections = 1;
  config.fault_drop_after = 5;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    // A REST client first (a receiver backfilling on start) must not take the fault's slot.
    co_await get_once(sim.port(), trades_url("BTCUSDT", 1, 10));
    WsClient ws(co_await asio::this_coro::executor);
    co_await ws.subscribe(sim.port(), "btcusdt@trade");
    co_await ws.read_trades(5);
    bool dropped = false;
    try {
      co_await ws.read();
    } catch (const boost::system::system_error& e) {
      dropped = true;  // the fault: TCP reset after 5 trades
      EXPECT_EQ(e.code(), asio::error::connection_reset) << e.what();
    }
    EXPECT_TRUE(dropped) << "the first WebSocket connection did not get --fault-drop-after";
    EXPECT_EQ(summary_field(sim, "dropped_connections"), 1U);
  });
}

TEST(VenueRestConfig, EveryRestFlagIsChecked) {
  const auto rejects = [](const std::function<void(feed::FeedSimConfig&)>& change,
                          std::string_view flag) {
    auto config = base_config();
    change(config);
    try {
      feed::check_config(config);
      ADD_FAILURE() << flag << ": accepted";
    } catch (const trading_shared::core::ConfigError& e) {
      EXPECT_NE(std::string_view(e.what()).find(flag), std::string_view::npos) << e.what();
    }
  };
  rejects([](auto& c) { c.rest_history = 0; }, "--rest-history");
  rejects([](auto& c) { c.rest_weight_per_call = 0; }, "--rest-weight-per-call");
  rejects([](auto& c) { c.rest_weight_limit = 10; }, "--rest-weight-limit");
  rejects([](auto& c) { c.rest_weight_window = 0ms; }, "--rest-weight-window");
  rejects([](auto& c) { c.rest_ban = 0ms; }, "--rest-ban");
  rejects([](auto& c) { c.rest_fault_5xx_every = 1; }, "--rest-fault-5xx-every");
  rejects([](auto& c) { c.rest_fault_slow = -1ms; }, "--rest-fault-slow");
  rejects([](auto& c) { c.rest_api_key = "a key"; }, "--rest-api-key");
  auto fine = base_config();
  fine.keep_trading = true;
  fine.rest_fault_partial_every = 1;
  EXPECT_NO_THROW(feed::check_config(fine));
}

}  // namespace

// ts-feed-sim's REST endpoint (services/feed_sim/rest.hpp, docs/services.md): the REST trades
// are the streamed ones, field by field, in contiguous pages; history eviction; --keep-trading.
// The limits and faults: venue_rest_limits_test.cpp.
#include "venue_rest_support.hpp"

namespace {

using namespace venue_rest_test;

// ---- the trades ----------------------------------------------------------------------------

TEST(VenueRest, ServesTheStreamedTradesFieldByFieldInContiguousPages) {
  auto config = base_config();
  config.symbols = {"BTCUSDT", "ETHUSDT"};
  config.max_messages = 3000;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    WsClient ws(co_await asio::this_coro::executor);
    co_await ws.subscribe(sim.port(), "btcusdt@trade,ethusdt@trade");
    auto streamed = co_await ws.read_trades(3000);  // --max-messages: then generation stops
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    const std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
    for (const auto& symbol : symbols) {
      const auto& live = streamed[symbol];
      require(live.size() > 1000, fmt::format("{} streamed {} trades", symbol, live.size()));
      const auto rest = co_await read_all_pages(client, symbol, 1);
      EXPECT_EQ(rest.size(), live.size()) << symbol;
      for (std::size_t i = 0; i < std::min(rest.size(), live.size()); ++i) {
        if (!(rest[i] == live[i])) {
          ADD_FAILURE() << symbol << ": REST " << show(rest[i]) << " streamed " << show(live[i]);
          break;
        }
      }
      EXPECT_EQ(symbol_field(sim, symbol, "last_trade_id"), live.back().id);
      EXPECT_EQ(std::string(summary_of(sim).at("symbols").at(symbol).at("digest").as_string()),
                digest_of(rest))
          << "the summary's digest is that of the trades REST serves";
      // Without fromId: the newest `limit`; past the newest: [].
      const auto newest = parse_rest_trades(co_await client.get(trades_url(symbol, {}, 7)));
      EXPECT_EQ(newest.size(), 7U);
      EXPECT_EQ(newest.back(), live.back());
      EXPECT_EQ(newest.front().id, live.back().id - 6);
      const auto beyond = co_await client.get(trades_url(symbol, live.back().id + 1, 10));
      EXPECT_EQ(beyond.result(), http::status::ok);
      EXPECT_EQ(beyond.body(), "[]");
    }
    const auto default_limit = parse_rest_trades(co_await client.get(trades_url("BTCUSDT", 1, {})));
    EXPECT_EQ(default_limit.size(), 500U) << "limit defaults to 500";
    EXPECT_EQ(summary_field(sim, "rest_connections"), 1U) << "keep-alive: one connection";
    EXPECT_GE(summary_field(sim, "rest_trades"), 3000U);
    co_await ws.close();
  });
}

TEST(VenueRest, AfterEvictionAnswersStartAtTheOldestKept) {
  auto config = base_config();
  config.rest_history = 100;
  config.max_messages = 350;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    WsClient ws(co_await asio::this_coro::executor);
    co_await ws.subscribe(sim.port(), "btcusdt@trade");
    auto streamed = co_await ws.read_trades(350);
    const auto& live = streamed["BTCUSDT"];
    auto all = parse_rest_trades(co_await get_once(sim.port(), trades_url("BTCUSDT", 1, 1000)));
    require(all.size() == 100, fmt::format("{} trades kept", all.size()));
    EXPECT_EQ(all.front(), live[250]) << "fromId 1 is evicted: the answer starts at id 251";
    EXPECT_EQ(all.back(), live[349]);
    auto some = parse_rest_trades(co_await get_once(sim.port(), trades_url("BTCUSDT", 300, 5)));
    require(some.size() == 5, "5 trades from 300");
    EXPECT_EQ(some.front(), live[299]);
    co_await ws.close();
  });
}

TEST(VenueRest, KeepTradingGeneratesWithoutSubscriberAndRestServesIt) {
  auto config = base_config();
  config.keep_trading = true;
  config.rate = 2000;
  run_sim_test(config, [](feed::FeedSimulator& sim) -> asio::awaitable<void> {
    std::uint64_t last_streamed = 0;
    {
      WsClient ws(co_await asio::this_coro::executor);
      co_await ws.subscribe(sim.port(), "btcusdt@trade");
      last_streamed = (co_await ws.read_trades(10))["BTCUSDT"].back().id;
      co_await ws.close();
    }
    // No connection left (the close handshake is done): the symbol keeps trading.
    const bool traded = co_await eventually(
        [&] { return symbol_field(sim, "BTCUSDT", "count") >= last_streamed + 500; }, 10s, 10ms);
    EXPECT_TRUE(traded) << "no trades without a subscriber: count "
                        << symbol_field(sim, "BTCUSDT", "count") << " after id " << last_streamed;
    sim.stop_generating();
    HttpClient client(co_await asio::this_coro::executor);
    co_await client.connect(sim.port());
    const auto rest = co_await read_all_pages(client, "BTCUSDT", 1);
    require(!rest.empty(), "REST served nothing");
    EXPECT_EQ(rest.back().id, symbol_field(sim, "BTCUSDT", "last_trade_id"));
    EXPECT_EQ(rest.size(), symbol_field(sim, "BTCUSDT", "count"));
    EXPECT_GT(rest.size(), last_streamed + 100) << "the unsubscribed trades are in the history";
    EXPECT_EQ(std::string(summary_of(sim).at("symbols").at("BTCUSDT").at("digest").as_string()),
              digest_of(rest))
        << "the summary's digest covers the trades made while nobody subscribed";
  });
}

}  // namespace

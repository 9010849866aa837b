// The venue's WebSocket limits (docs/failure-modes.md F59, F60), pure parts with a fake clock:
// ts-receiver's sharding, SUBSCRIBE splitting, reply parsing and pacing (receiver/feed_set.hpp)
// and ts-feed-sim's rate window, ping/pong/lifetime clock and stream count (feed_sim/limits.hpp).
#include "feed_sim/limits.hpp"
#include "receiver/feed_set.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
namespace services = trading_shared::services;
namespace sim = trading_shared::services::feed_sim;
using Clock = std::chrono::steady_clock;

std::vector<std::string> symbols(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back("SYM" + std::to_string(i));
  return out;
}

TEST(FeedSetShards, NoShardPassesTheLimitAndEverySymbolIsInExactlyOne) {
  const auto shards = services::shard_streams(symbols(10), 4);
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0].size(), 4u);
  EXPECT_EQ(shards[1].size(), 4u);
  EXPECT_EQ(shards[2].size(), 2u);
  EXPECT_EQ(shards[0][0], "sym0@trade");
  EXPECT_EQ(shards[2][1], "sym9@trade");
  EXPECT_EQ(services::shard_streams(symbols(1024), 1024).size(), 1u);
  EXPECT_EQ(services::shard_streams(symbols(1025), 1024).size(), 2u);
}

TEST(FeedSetShards, SubscribeMessagesAreSplitBySizeEachWithItsOwnId) {
  const auto shards = services::shard_streams(symbols(300), 1024);
  const auto requests = services::subscribe_requests(shards[0], 7, 512);
  ASSERT_GT(requests.size(), 1u);
  std::size_t streams = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].id, 7 + i);
    EXPECT_LE(requests[i].text.size(), 512u) << requests[i].text;
    EXPECT_NE(requests[i].text.find(",\"id\":" + std::to_string(7 + i) + "}"), std::string::npos);
    streams += requests[i].streams;
  }
  EXPECT_EQ(streams, 300u);
  // One message when it fits; the old single-message format.
  const auto one = services::subscribe_requests({"btcusdt@trade", "ethusdt@trade"}, 1, 4096);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].text,
            R"({"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1})");
}

TEST(FeedSetReplies, ResultAndErrorRepliesAreRecognisedTradesAreNot) {
  auto r = services::parse_reply(R"({"result":null,"id":12})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, 12u);
  EXPECT_FALSE(r->error);
  r = services::parse_reply(R"({"error":{"code":-1,"msg":"Too many streams"},"id":3})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, 3u);
  EXPECT_TRUE(r->error);
  EXPECT_FALSE(services::parse_reply(
      R"({"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.0","q":"1.0","T":1,"m":true,"M":true})"));
  EXPECT_FALSE(services::parse_reply(R"({"result":null})"));
  EXPECT_FALSE(services::parse_reply("garbage"));
}

// At most limit - 1 messages in any window of 1.1 s: below the venue's "limit in any 1 s" with
// a pong and 100 ms of jitter to spare.
TEST(FeedSetPacer, NeverMoreThanTheBudgetInAnyWindow) {
  for (const std::uint64_t limit : {1u, 2u, 5u, 10u}) {
    services::ControlPacer pacer(limit);
    const std::uint64_t budget = limit > 1 ? limit - 1 : 1;
    EXPECT_EQ(pacer.budget(), budget);
    Clock::time_point now{};
    std::vector<Clock::time_point> sent;
    for (int i = 0; i < 40; ++i) {
      now = pacer.next(now);  // the fake clock jumps to when the pacer allows
      pacer.sent(now);
      sent.push_back(now);
    }
    for (std::size_t i = 0; i < sent.size(); ++i) {
      std::uint64_t in_window = 0;
      for (std::size_t j = i; j < sent.size() && sent[j] - sent[i] < 1100ms; ++j) ++in_window;
      EXPECT_LE(in_window, budget) << "limit " << limit << " at message " << i;
    }
    // Not slower than needed: 40 messages take about 40 / budget windows.
    EXPECT_LE(sent.back() - sent.front(), 1100ms * (40 / budget + 1)) << "limit " << limit;
  }
}

TEST(FeedSimLimits, RateWindowClosesOnTheMessageOverTheLimitInAnySecond) {
  sim::MessageRate rate(5);
  const Clock::time_point t0{};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rate.admit(t0 + i * 100ms));
  EXPECT_FALSE(rate.admit(t0 + 900ms));  // the 6th within 1 s
  sim::MessageRate paced(5);
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(paced.admit(t0 + i * 220ms)) << i;
}

TEST(FeedSimLimits, PingsPongTimeoutAndLifetime) {
  sim::VenueLimits limits;
  limits.ping_interval = 1s;
  limits.pong_timeout = 3s;
  limits.max_connection_lifetime = 10s;
  const Clock::time_point t0{};
  sim::ConnectionClock clock(limits, t0);
  using Due = sim::ConnectionClock::Due;
  EXPECT_EQ(clock.due(t0 + 500ms), Due::nothing);
  EXPECT_EQ(clock.next(t0 + 500ms), t0 + 1s);
  EXPECT_EQ(clock.due(t0 + 1s), Due::ping);
  clock.pinged(t0 + 1s);
  EXPECT_EQ(clock.due(t0 + 1500ms), Due::nothing);
  clock.ponged();
  clock.pinged(t0 + 2s);  // not answered: neither is the next one
  clock.pinged(t0 + 3s);
  EXPECT_NE(clock.due(t0 + 4900ms), Due::pong_timeout)
      << "the pong timeout runs from the oldest ping";
  EXPECT_EQ(clock.due(t0 + 5s), Due::pong_timeout);
  clock.ponged();
  EXPECT_EQ(clock.due(t0 + 10s), Due::lifetime);
  sim::VenueLimits off;
  off.ping_interval = 0ms;
  EXPECT_FALSE(sim::ConnectionClock(off, t0).active());
}

TEST(FeedSimLimits, StreamsAfterCountsEachStreamOnce) {
  const std::vector<bool> subscribed{true, false, false, true};
  EXPECT_EQ(sim::streams_after(subscribed, {}), 2u);
  EXPECT_EQ(sim::streams_after(subscribed, {0, 3}), 2u);
  EXPECT_EQ(sim::streams_after(subscribed, {1, 1, 2}), 4u);
}

}  // namespace

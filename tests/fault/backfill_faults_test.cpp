// Backfill of trade id gaps (docs/failure-modes.md F56-F58):
// - the fetcher (receiver/historical_trades) and the live/backfill merge (receiver/backfill)
//   against the scripted HTTP server: pages, partial pages, 5xx, 429 + Retry-After, the weight
//   budget, unrecoverable ids;
// - ts-receiver and ts-feed-sim (its REST endpoint) as real processes with the harness's Redis:
//   F56 kill -9 and restart, F57 the venue drops the connection, F58 the venue's limits and
//   faults, and a gap the venue no longer has (reported as unrecoverable).
#include <trading_shared/core/error.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/http/http_status.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "backfill_process.hpp"
#include "common/keys.hpp"
#include "receiver/backfill.hpp"
#include "receiver/historical_trades.hpp"
#include "support/async_test.hpp"
#include "support/http_test_server.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ts = trading_shared;
namespace svc = trading_shared::services;
namespace asio = boost::asio;
namespace tsd = trading_shared::testing::detail;
using namespace std::chrono_literals;
using ts::testing::HttpAnswer;
using ts::testing::HttpSeen;
using ts::testing::HttpTestServer;
using Clock = std::chrono::steady_clock;
using Verdict = ts::ws::SequenceTracker::Result;

/// ASSERT_* for coroutine bodies (gtest's ASSERT returns void): records the failure, ends the body.
#define CO_ASSERT(condition)                \
  if (!(condition)) {                       \
    ADD_FAILURE() << "failed: " #condition; \
    co_return;                              \
  }

namespace {

// ---- a scripted venue ------------------------------------------------------------------------

/// A venue that has trades `oldest`..`newest` of one symbol; answers historicalTrades.
std::string trades_json(std::int64_t from, std::int64_t count, std::int64_t oldest,
                        std::int64_t newest) {
  std::string body = "[";
  const std::int64_t first = std::max(from, oldest);
  for (std::int64_t id = first; id < first + count && id <= newest; ++id) {
    if (body.size() > 1) body += ',';
    body += R"({"id":)" + std::to_string(id) + R"(,"price":"100.5","qty":"0.1","quoteQty":"10",)" +
            R"("time":)" + std::to_string(1700000000000 + id) + R"(,"isBuyerMaker":)" +
            (id % 2 == 0 ? "true" : "false") + R"(,"isBestMatch":true})";
  }
  return body + "]";
}

std::int64_t query_number(const std::string& target, const std::string& name) {
  const auto at = target.find(name + "=");
  if (at == std::string::npos) return -1;
  return std::atoll(target.c_str() + at + name.size() + 1);
}

Verdict verdict(Verdict::Kind kind, std::uint64_t behind = 0) {
  Verdict v;
  v.kind = kind;
  v.behind = behind;
  return v;
}

// ---- the merge ------------------------------------------------------------------------------

TEST(BackfillMerge, LiveTradesAboveTheHighWaterMarkAreTakenAndJumpsBecomeRanges) {
  asio::io_context io;
  ts::http::HttpClient client(io.get_executor(), {.base_url = "http://127.0.0.1:9"});
  svc::BackfillCounters n;
  svc::Backfill b(io.get_executor(), svc::BackfillConfig{}, {"AAA"}, &client, n);
  ts::ws::SequenceTracker tracker;
  auto live = [&](std::int64_t id, std::uint64_t connection = 1) {
    return b.on_live("AAA", id, tracker.observe("AAA", id, connection), connection);
  };
  EXPECT_TRUE(live(100));  // fresh start, nothing stored: the tape starts here
  EXPECT_TRUE(live(101));
  auto updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].second, 101);
  EXPECT_TRUE(live(105, 2));  // a reconnect: 102..104 missing
  EXPECT_FALSE(b.busy()) << "a jump waits for the next trade (it could be an outlier)";
  updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u) << "ids written above a gap: the gaps are stored again";
  EXPECT_EQ(updates[0].second, 101) << "complete through stays at 101";
  EXPECT_EQ(b.tape_gaps("AAA"), "105 102-104");
  EXPECT_FALSE(live(105, 2)) << "a repeated id is dropped";
  EXPECT_TRUE(b.busy()) << "the next trade confirmed the jump: 102..104 queued";
  EXPECT_TRUE(live(106, 2));
  EXPECT_FALSE(live(103, 3)) << "an id of the range coming late (rotation overlap) is dropped";
  // An older connection lagging far behind (a rotation's old connection): dropped, not a reset.
  for (std::int64_t id = 107; id <= 400; ++id) ASSERT_TRUE(live(id, 3));
  EXPECT_FALSE(live(200, 2)) << "ids far below on an older connection are not an id reset";
  EXPECT_EQ(n.duplicates_dropped, 3u);
  EXPECT_EQ(n.ranges, 1u);
  updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].second, 101) << "still missing 102..104";
  EXPECT_EQ(b.tape_gaps("AAA"), "400 102-104");
  EXPECT_TRUE(b.tape_updates().empty()) << "nothing changed since";
}

TEST(BackfillMerge, AnOutlierIsNotFetchedAndAnIdResetStartsTheTapeAgain) {
  asio::io_context io;
  ts::http::HttpClient client(io.get_executor(), {.base_url = "http://127.0.0.1:9"});
  svc::BackfillCounters n;
  svc::Backfill b(io.get_executor(), svc::BackfillConfig{}, {"AAA"}, &client, n);
  ts::ws::SequenceTracker tracker;
  auto live = [&](std::int64_t id, std::uint64_t connection = 1) {
    return b.on_live("AAA", id, tracker.observe("AAA", id, connection), connection);
  };
  for (std::int64_t id = 1; id <= 1000; ++id) ASSERT_TRUE(live(id));
  EXPECT_TRUE(live(9000000000000000000));  // the outlier is written (as before)
  EXPECT_TRUE(live(1001)) << "the tracker takes the outlier back: ids go on at 1001";
  EXPECT_FALSE(b.busy()) << "nothing fetched for the outlier's jump";
  EXPECT_EQ(n.ranges, 0u);
  EXPECT_TRUE(live(1002));
  auto updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].second, 1002);
  // The venue restarts its numbering on a new connection: far below, an id reset, taken.
  EXPECT_TRUE(live(1, 2));
  EXPECT_TRUE(live(2, 2));
  EXPECT_EQ(n.duplicates_dropped, 0u);
  updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].second, 2);
}

TEST(BackfillMerge, ARestartBackfillsFromTheStoredCompleteThroughId) {
  asio::io_context io;
  ts::http::HttpClient client(io.get_executor(), {.base_url = "http://127.0.0.1:9"});
  svc::BackfillCounters n;
  svc::Backfill b(io.get_executor(), svc::BackfillConfig{}, {"AAA", "BBB"}, &client, n);
  b.set_stored("AAA", 500);
  b.set_stored("BBB", 800);
  EXPECT_TRUE(b.on_live("AAA", 700, verdict(Verdict::first), 1));
  EXPECT_TRUE(b.on_live("AAA", 701, verdict(Verdict::in_order), 1));
  EXPECT_EQ(n.ranges, 1u) << "501..699 queued";
  auto first = b.tape_updates();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0], std::make_pair(std::string("AAA"), std::int64_t{500}))
      << "AAA complete through stays 500 until 501..699 are in";
  EXPECT_EQ(b.tape_gaps("AAA"), "701 501-699");
  // BBB's first live trade was already written before the restart (a replay): dropped.
  EXPECT_FALSE(b.on_live("BBB", 799, verdict(Verdict::first), 1));
  EXPECT_FALSE(b.on_live("BBB", 800, verdict(Verdict::in_order), 1));
  EXPECT_TRUE(b.on_live("BBB", 801, verdict(Verdict::in_order), 1));
  EXPECT_EQ(n.duplicates_dropped, 2u);
  const auto updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0], std::make_pair(std::string("BBB"), std::int64_t{801}));
}

TEST(BackfillMerge, ARestartFetchesTheStoredGapsAndWhatCameAfterNothingWrittenAgain) {
  asio::io_context io;
  ts::http::HttpClient client(io.get_executor(), {.base_url = "http://127.0.0.1:9"});
  svc::BackfillCounters n;
  svc::Backfill b(io.get_executor(), svc::BackfillConfig{}, {"AAA", "BBB"}, &client, n);
  EXPECT_FALSE(b.set_stored_gaps("AAA", "x"));
  EXPECT_FALSE(b.set_stored_gaps("AAA", "500 200-101"));
  EXPECT_FALSE(b.set_stored_gaps("AAA", "500 101-500")) << "a range must end below 500";
  EXPECT_FALSE(b.set_stored_gaps("AAA", "500 101-200 150-160")) << "overlapping";
  b.set_stored("AAA", 100);
  ASSERT_TRUE(b.set_stored_gaps("AAA", "500 101-200 301-350"));
  b.set_stored("BBB", 90);  // does not match its gaps (first range at 101): they are ignored
  ASSERT_TRUE(b.set_stored_gaps("BBB", "500 101-200"));
  EXPECT_TRUE(b.on_live("AAA", 600, verdict(Verdict::first), 1));
  EXPECT_TRUE(b.on_live("AAA", 601, verdict(Verdict::in_order), 1));
  EXPECT_EQ(n.ranges, 3u) << "101..200, 301..350 stored, 501..599 the outage";
  EXPECT_FALSE(b.on_live("AAA", 601, verdict(Verdict::duplicate), 1));
  const auto updates = b.tape_updates();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].second, 100);
  EXPECT_EQ(b.tape_gaps("AAA"), "601 101-200 301-350 501-599");
  EXPECT_TRUE(b.on_live("BBB", 700, verdict(Verdict::first), 1));
  EXPECT_TRUE(b.on_live("BBB", 701, verdict(Verdict::in_order), 1));
  EXPECT_EQ(n.ranges, 4u) << "BBB: 91..699 from its complete-through id";
  EXPECT_EQ(b.tape_gaps("BBB"), "701 91-699");
}

// ---- the fetcher against the scripted venue -----------------------------------------------

TEST(BackfillFetch, F58_PagesResumeAfterShortPagesAndRetryA5xxAndHonourRetryAfter) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    std::vector<Clock::time_point> at;
    HttpTestServer server(io, [&](const HttpSeen& r, int index) {
      at.push_back(Clock::now());
      HttpAnswer a;
      a.headers = {{"X-MBX-USED-WEIGHT-1M", std::to_string(25 * (index + 1))}};
      if (index == 1) {
        a.status = 503;
        a.body = "unavailable";
      } else if (index == 2) {
        a.status = 429;
        a.headers.emplace_back("Retry-After", "1");
        a.body = R"({"code":-1003,"msg":"Too many requests"})";
      } else {
        const auto from = query_number(r.target, "fromId");
        const auto limit = query_number(r.target, "limit");
        // Every answer is short: half of what was asked (a partial page).
        a.body = trades_json(from, std::max<std::int64_t>(limit / 2, 1), 1, 100000);
      }
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), {.base_url = server.url()});
    svc::FetchCounters n;
    svc::HistoricalTradesConfig config;
    config.page = 40;
    config.retry_backoff = {10ms, 50ms, 2.0};
    svc::HistoricalTrades fetch(io.get_executor(), client, config, n);
    std::vector<std::int64_t> ids;
    std::int64_t from = 1001;
    while (from <= 1100) {
      const auto page = co_await fetch.page("BTCUSDT", from, 1100);
      EXPECT_FALSE(page.trades.empty());
      if (page.trades.empty()) break;
      for (const auto& t : page.trades) {
        ids.push_back(t.trade_id);
        EXPECT_EQ(t.event_time, t.trade_time);
        EXPECT_EQ(t.symbol.view(), "BTCUSDT");
      }
      from = page.trades.back().trade_id + 1;
    }
    CO_ASSERT(ids.size() == 100u);
    for (std::size_t i = 0; i < ids.size(); ++i)
      EXPECT_EQ(ids[i], 1001 + static_cast<std::int64_t>(i));
    EXPECT_EQ(n.retries, 1u) << "the 503";
    EXPECT_EQ(n.throttled, 1u) << "the 429";
    CO_ASSERT(at.size() >= 4u);
    EXPECT_GE(at[3] - at[2], 990ms) << "a request was sent during the 429's Retry-After (1 s)";
    // The limit of a call never asks past the range's end.
    EXPECT_LE(query_number(server.requests().back().target, "limit"), 40);
    co_await client.close();
  });
}

TEST(BackfillFetch, F58_TheClientSideWeightBudgetSpacesCalls) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [&](const HttpSeen& r, int) {
      HttpAnswer a;
      a.body =
          trades_json(query_number(r.target, "fromId"), query_number(r.target, "limit"), 1, 100000);
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), {.base_url = server.url()});
    svc::FetchCounters n;
    svc::HistoricalTradesConfig config;
    config.page = 10;
    config.weight_limit = 50;      // two calls ...
    config.weight_window = 700ms;  // ... per 700 ms
    svc::HistoricalTrades fetch(io.get_executor(), client, config, n);
    const auto t0 = Clock::now();
    for (std::int64_t from = 1; from <= 50; from += 10) (void)co_await fetch.page("X", from, 50);
    const auto took = Clock::now() - t0;
    // Five calls, two per window: the 3rd waits a window, the 5th two.
    EXPECT_GE(took, 1350ms);
    EXPECT_LT(took, 5s);
    EXPECT_GE(n.budget_waits, 2u);
    EXPECT_EQ(n.requests, 5u);
  });
}

TEST(BackfillFetch, F58_TimeoutsAreRetriedAndAPermanentAnswerEndsTheRange) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [&](const HttpSeen& r, int index) {
      HttpAnswer a;
      if (r.target.find("symbol=BAD") != std::string::npos) {
        a.status = 400;
        a.body = R"({"code":-1121,"msg":"Invalid symbol."})";
        return a;
      }
      if (index == 0) a.delay = 2s;  // slower than the client's deadline
      a.body =
          trades_json(query_number(r.target, "fromId"), query_number(r.target, "limit"), 1, 100000);
      return a;
    });
    ts::http::HttpClient client(io.get_executor(),
                                {.base_url = server.url(), .request_timeout = 200ms});
    svc::FetchCounters n;
    svc::HistoricalTradesConfig config;
    config.retry_backoff = {10ms, 50ms, 2.0};
    svc::HistoricalTrades fetch(io.get_executor(), client, config, n);
    const auto page = co_await fetch.page("OK", 5, 9);
    EXPECT_EQ(page.trades.size(), 5u);
    EXPECT_EQ(n.retries, 1u) << "the slow answer timed out and was asked again";
    try {
      (void)co_await fetch.page("BAD", 1, 10);
      ADD_FAILURE() << "a 400 must not be retried";
    } catch (const ts::Error& e) {
      EXPECT_EQ(e.kind(), ts::ErrorKind::permanent) << e.what();
      EXPECT_EQ(ts::http::http_status(e), 400u);
    }
    server.stop();
  });
}

TEST(BackfillFetch, RangesAreFetchedByTheWorkersAndIdsTheVenueLostAreReported) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    // The venue keeps ids 150 and above only.
    HttpTestServer server(io, [&](const HttpSeen& r, int) {
      HttpAnswer a;
      a.body = trades_json(query_number(r.target, "fromId"), query_number(r.target, "limit"), 150,
                           100000);
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), {.base_url = server.url()});
    svc::BackfillCounters n;
    svc::BackfillConfig config;
    config.fetch.page = 30;
    svc::Backfill b(io.get_executor(), config, {"AAA"}, &client, n);
    b.set_stored("AAA", 100);
    EXPECT_TRUE(b.on_live("AAA", 301, verdict(Verdict::first), 1));
    EXPECT_TRUE(b.on_live("AAA", 302, verdict(Verdict::in_order), 1));
    b.start();
    std::vector<std::int64_t> ids;
    const auto t0 = Clock::now();
    asio::steady_timer timer(io);
    while (b.busy() && Clock::now() - t0 < 20s) {
      b.take(64, [&](const svc::Trade& t) { ids.push_back(t.trade_id); });
      b.written();
      timer.expires_after(5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    co_await b.stop();
    EXPECT_EQ(ids.size(), 151u);  // 150..300
    CO_ASSERT(ids.size() == 151u);
    for (std::size_t i = 0; i < ids.size(); ++i)
      EXPECT_EQ(ids[i], 150 + static_cast<std::int64_t>(i));
    EXPECT_EQ(n.unrecoverable, 49u) << "101..149";
    EXPECT_EQ(n.backfilled, 151u);
    EXPECT_EQ(n.not_backfilled, 0u);
    const auto updates = b.tape_updates();
    CO_ASSERT(updates.size() == 1u);
    EXPECT_EQ(updates[0].second, 302) << "complete through passes the reported ids";
    co_await client.close();
  });
}

TEST(BackfillFetch, ARefusedRequestLeavesTheRangeMissingNotUnrecoverable) {
  ts::testing::run_coroutine_test([](asio::io_context& io) -> asio::awaitable<void> {
    HttpTestServer server(io, [&](const HttpSeen&, int) {
      HttpAnswer a;
      a.status = 401;
      a.body = R"({"code":-2014,"msg":"API-key format invalid."})";
      return a;
    });
    ts::http::HttpClient client(io.get_executor(), {.base_url = server.url()});
    svc::BackfillCounters n;
    svc::Backfill b(io.get_executor(), svc::BackfillConfig{}, {"AAA"}, &client, n);
    b.set_stored("AAA", 100);
    EXPECT_TRUE(b.on_live("AAA", 301, verdict(Verdict::first), 1));
    EXPECT_TRUE(b.on_live("AAA", 302, verdict(Verdict::in_order), 1));
    b.start();
    const auto t0 = Clock::now();
    asio::steady_timer timer(io);
    while (b.busy() && Clock::now() - t0 < 10s) {
      timer.expires_after(5ms);
      co_await timer.async_wait(asio::use_awaitable);
    }
    EXPECT_EQ(n.failed, 200u) << "101..300";
    EXPECT_EQ(n.unrecoverable, 0u);
    EXPECT_EQ(n.requests, 1u) << "a refusal is not retried";
    const auto updates = b.tape_updates();
    CO_ASSERT(updates.size() == 1u);
    EXPECT_EQ(updates[0].second, 100) << "complete through stays below the refused ids";
    EXPECT_EQ(b.tape_gaps("AAA"), "302 101-300");
    co_await b.stop();
    EXPECT_EQ(n.not_backfilled, 200u);
    co_await client.close();
  });
}

// ---- ts-receiver and ts-feed-sim (backfill_process.hpp) ---------------------------------

using namespace ts_backfill_test;

TEST(BackfillFault, F56_AReceiverKilledAndRestartedLeavesNoIdMissing) {
  Venue v("f56", {"FSA", "FSB"});
  constexpr long long kTrades = 16000;  // 2000/s over both symbols: 8 s of trading
  Service sim = v.sim({"--rate", "2000", "--max-messages", std::to_string(kTrades)});
  Service first = v.receiver("receiver1");
  ASSERT_TRUE(complete_through(v, 500, 20s)) << tsd::read_text_file(first.log);
  first.signal(SIGKILL);
  ASSERT_EQ(first.wait(10s), -SIGKILL);
  const long long before = tape_of(v.symbols[0]).last;
  // The venue keeps trading while the receiver is down (3 s: about 3000 trades per symbol).
  std::this_thread::sleep_for(3s);  // the outage itself, not a wait for a condition
  Service second = v.receiver("receiver2");
  ASSERT_TRUE(wait_for([&] { return tape_of(v.symbols[0]).last > before + 2000; }, 30s))
      << tsd::read_text_file(second.log);
  // Every trade generated (all of kTrades) reaches the streams.
  ASSERT_TRUE(wait_for(
      [&] {
        long long distinct = 0;
        for (const auto& s : v.symbols) distinct += tape_of(s).distinct;
        return distinct >= kTrades;
      },
      40s))
      << v.symbols[0] << ": " << describe(tape_of(v.symbols[0])) << "; " << v.symbols[1] << ": "
      << describe(tape_of(v.symbols[1])) << "\n"
      << tsd::read_text_file(second.log);
  // The kill may fall between a batch's XADD and the HSET of the tape that covers it, and a
  // loaded machine may time out a write that Redis applied: up to two batches (512) again.
  check_tapes(v, second, sim, "receiver2", /*max_repeated=*/1024);
  const std::string summary = v.summary("receiver2");
  std::cout << "F56 restarted receiver: " << summary << "\n";
  EXPECT_GT(json_number(summary, "backfilled"), 2000) << summary;
  EXPECT_GE(json_number(summary, "backfill_ranges"), 2) << summary;
  EXPECT_EQ(json_number(summary, "backfill_unrecoverable"), 0) << summary;
}

TEST(BackfillFault, F57_TheVenueDroppingTheConnectionLeavesNoIdMissingNorRepeated) {
  Venue v("f57", {"FDA"});
  constexpr long long kTrades = 6000;
  Service sim = v.sim({"--rate", "2000", "--max-messages", std::to_string(kTrades),
                       "--fault-drop-after", "1500", "--fault-connections", "2"});
  Service receiver = v.receiver("receiver");
  ASSERT_TRUE(wait_for([&] { return tape_of(v.symbols[0]).distinct >= kTrades; }, 40s))
      << describe(tape_of(v.symbols[0])) << "\n"
      << tsd::read_text_file(receiver.log);
  check_tapes(v, receiver, sim, "receiver");
  const std::string summary = v.summary("receiver");
  std::cout << "F57 receiver: " << summary << "\n";
  EXPECT_GE(json_number(summary, "reconnects"), 2) << summary;
  EXPECT_GT(json_number(summary, "backfilled"), 0) << summary;
  EXPECT_GE(json_number(summary, "gaps"), 1) << summary;
}

TEST(BackfillFault, F58_TheVenuesLimitsAndFaultsStillCloseTheGap) {
  Venue v("f58", {"FLA"});
  constexpr long long kTrades = 4000;
  // The venue allows 4 calls a second; every 3rd REST answer is a 503, every 2nd a short page.
  Service sim = v.sim({"--rate", "1000", "--max-messages", std::to_string(kTrades),
                       "--rest-weight-limit", "100", "--rest-weight-window", "1s",
                       "--rest-fault-5xx-every", "3", "--rest-fault-partial-every", "2"});
  // Small pages and a client budget above the venue's: the venue's 429s must be honoured.
  const std::vector<std::string> flags{
      "--backfill-page", "100", "--backfill-weight-limit", "100000", "--backfill-concurrency", "2"};
  // A gap of about 1000 ids (the receiver stopped for 1 s while the venue trades): 10 pages and
  // more, so that the venue's 429, 503 and short pages all show (a reconnect after a drop is
  // too quick for that: a gap of ~20 ids, 1-2 calls).
  Service first = v.receiver("receiver1", flags);
  ASSERT_TRUE(complete_through(v, 500, 20s)) << tsd::read_text_file(first.log);
  first.signal(SIGTERM);
  ASSERT_EQ(first.wait(20s), 0) << tsd::read_text_file(first.log);
  std::this_thread::sleep_for(1s);  // the outage itself, not a wait for a condition
  Service receiver = v.receiver("receiver", flags);
  ASSERT_TRUE(wait_for([&] { return tape_of(v.symbols[0]).distinct >= kTrades; }, 50s))
      << describe(tape_of(v.symbols[0])) << "\n"
      << tsd::read_text_file(receiver.log);
  check_tapes(v, receiver, sim, "receiver");
  const std::string summary = v.summary("receiver");
  const std::string sim_summary = v.summary("sim");
  std::cout << "F58 receiver: " << summary << "\nF58 venue: " << sim_summary << "\n";
  EXPECT_GT(json_number(summary, "backfilled"), 500) << summary;
  EXPECT_GT(json_number(summary, "backfill_retries"), 0) << summary;
  EXPECT_GT(json_number(summary, "backfill_throttled"), 0) << summary;
  EXPECT_GT(json_number(sim_summary, "rest_5xx"), 0) << sim_summary;
  EXPECT_GT(json_number(sim_summary, "rest_partial"), 0) << sim_summary;
  EXPECT_GT(json_number(sim_summary, "rest_429"), 0) << sim_summary;
  EXPECT_EQ(json_number(sim_summary, "rest_418"), 0) << "a Retry-After was not honoured\n"
                                                     << sim_summary;
}

TEST(BackfillFault, F58_IdsTheVenueNoLongerHasAreReportedUnrecoverable) {
  Venue v("f58u", {"FUA"});
  Service sim = v.sim({"--rate", "1000", "--max-messages", "8000", "--rest-history", "300"});
  Service first = v.receiver("receiver1");
  ASSERT_TRUE(complete_through(v, 300, 20s)) << tsd::read_text_file(first.log);
  first.signal(SIGKILL);
  ASSERT_EQ(first.wait(10s), -SIGKILL);
  std::this_thread::sleep_for(2s);  // the outage: ~2000 trades, the venue keeps 300
  Service second = v.receiver("receiver2");
  ASSERT_TRUE(wait_for(
      [&] {
        return tsd::read_text_file(second.log).find("cannot be backfilled") != std::string::npos;
      },
      20s))
      << tsd::read_text_file(second.log);
  second.signal(SIGTERM);
  EXPECT_EQ(second.wait(20s), 0);
  const std::string summary = v.summary("receiver2");
  std::cout << "F58 unrecoverable: " << summary << "\n";
  EXPECT_GT(json_number(summary, "backfill_unrecoverable"), 1000) << summary;
  EXPECT_GT(json_number(summary, "backfilled"), 0) << "the ids the venue still has" << summary;
  const std::string log = tsd::read_text_file(second.log);
  EXPECT_NE(log.find(v.symbols[0] + ": trade ids "), std::string::npos) << log;
  sim.signal(SIGTERM);
  EXPECT_EQ(sim.wait(20s), 0);
}

TEST(BackfillFault, F58_ARefusedRequestLeavesTheIdsMissingForTheNextStart) {
  Venue v("f58k", {"FKA"});
  constexpr long long kTrades = 8000;  // 8 s of trading: the third run still sees live trades
  Service sim =
      v.sim({"--rate", "1000", "--max-messages", std::to_string(kTrades), "--rest-api-key", "K"});
  // A first run stores its "complete through" id; the venue trades on while none runs.
  Service first = v.receiver("receiver1", {"--rest-api-key", "K"});
  ASSERT_TRUE(complete_through(v, 300, 20s)) << tsd::read_text_file(first.log);
  first.signal(SIGTERM);
  ASSERT_EQ(first.wait(20s), 0) << tsd::read_text_file(first.log);
  std::this_thread::sleep_for(500ms);  // the outage itself, not a wait for a condition
  // The second run has a wrong key: the venue refuses (401) the backfill of the outage's ids.
  Service second = v.receiver("receiver2", {"--rest-api-key", "WRONG"});
  ASSERT_TRUE(wait_for(
      [&] { return tsd::read_text_file(second.log).find("backfilled: ") != std::string::npos; },
      20s))
      << tsd::read_text_file(second.log);
  const long long before = tape_of(v.symbols[0]).last;
  ASSERT_TRUE(wait_for([&] { return tape_of(v.symbols[0]).last > before + 300; }, 20s))
      << "live trades go on above the refused range\n"
      << tsd::read_text_file(second.log);
  second.signal(SIGTERM);
  ASSERT_EQ(second.wait(20s), 0) << tsd::read_text_file(second.log);
  const std::string refused = v.summary("receiver2");
  std::cout << "F58 refused: " << refused << "\n";
  EXPECT_GT(json_number(refused, "backfill_failed"), 0) << refused;
  EXPECT_EQ(json_number(refused, "backfill_unrecoverable"), 0) << refused;
  EXPECT_GE(json_number(refused, "backfill_not_done"), json_number(refused, "backfill_failed"))
      << refused;
  const std::string log = tsd::read_text_file(second.log);
  EXPECT_NE(log.find("HTTP 401"), std::string::npos) << log;
  EXPECT_EQ(log.find("reported as unrecoverable"), std::string::npos) << log;
  // The key fixed, the next start fetches the refused ids (and the outages'): every id once.
  Service third = v.receiver("receiver3", {"--rest-api-key", "K"});
  ASSERT_TRUE(wait_for([&] { return tape_of(v.symbols[0]).distinct >= kTrades; }, 40s))
      << describe(tape_of(v.symbols[0])) << "\n"
      << tsd::read_text_file(third.log);
  check_tapes(v, third, sim, "receiver3");
  const std::string fixed = v.summary("receiver3");
  std::cout << "F58 key fixed: " << fixed << "\n";
  EXPECT_GT(json_number(v.summary("sim"), "rest_401"), 0) << v.summary("sim");
  EXPECT_GE(json_number(fixed, "backfilled"), json_number(refused, "backfill_failed")) << fixed;
  EXPECT_EQ(json_number(fixed, "backfill_failed"), 0) << fixed;
  EXPECT_EQ(json_number(fixed, "backfill_unrecoverable"), 0) << fixed;
}

}  // namespace

// Fault test F46 for RedisClient against the binary's Redis 7: transactions (MULTI, EXEC,
// DISCARD, WATCH) on the shared connection, whose replies are matched to callers in FIFO
// order. Issued as separate commands, a MULTI would put every other caller's commands into
// the transaction (they would get `QUEUED`, and the EXEC would get their results). They are
// refused; a transaction is accepted only as one balanced `Request` for `pipeline()` (MULTI
// first, EXEC or DISCARD last, no WATCH), which is written as one block: no other caller's
// command can come between its commands. See docs/redis.md, "Transactions".
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "redis_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using ts::errc;
using ts::redis::RedisClient;
using ts::redis::Reply;
using ts::redis::ReplyType;
using ts::redis::Request;
using ts::testing::outcome;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_config;
using ts::testing::fault::redis_url_for_db;
using ts::testing::fault::RedisAdmin;
using ts::testing::fault::run_with_client;

/// The reply as text, for failure messages.
std::string shown(const Reply& reply) {
  return reply.debug_string();
}

/// A status or bulk string reply equal to `text`.
bool is_text(const Reply& reply, std::string_view text) {
  return (reply.type() == ReplyType::status || reply.type() == ReplyType::string) &&
         reply.as_string() == text;
}

// Eight callers each INCR their own counter 200 times on the shared connection while a ninth
// caller tries transactions command by command (refused) and as balanced requests (accepted,
// atomic). Every caller must get its own counter's next value every time: never `QUEUED`,
// never another caller's reply; each balanced transaction's replies are OK, QUEUED, QUEUED and
// its two increments, consecutive.
TEST(RedisFault, F46_TransactionsNeverInterleaveWithOtherCallersOnTheSharedConnection) {
  run_with_client(
      fast_config(redis_url_for_db(0), "f46"), 30s,
      [](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        RedisAdmin admin;
        constexpr int kCallers = 8;
        constexpr int kIncrements = 200;
        constexpr int kTransactions = 50;
        std::vector<std::string> keys;
        for (int i = 0; i < kCallers; ++i) keys.push_back("f46:caller:" + std::to_string(i));
        for (const auto& k : keys) admin.ok({"DEL", k});
        admin.ok({"DEL", "f46:split", "f46:atomic"});

        int finished = 0;
        std::vector<std::string> wrong;  // every reply that was not the caller's own
        for (int i = 0; i < kCallers; ++i) {
          asio::co_spawn(
              io,
              [&, i]() -> asio::awaitable<void> {
                for (int n = 1; n <= kIncrements; ++n) {
                  const Reply r = co_await client.command("INCR", keys[i]);
                  if (r.type() != ReplyType::integer || r.as_int() != n) {
                    wrong.push_back("caller " + std::to_string(i) + " INCR #" + std::to_string(n) +
                                    " got " + shown(r));
                  }
                }
                ++finished;
              },
              [&](std::exception_ptr e) {
                if (e) {
                  wrong.push_back("caller " + std::to_string(i) + " failed: " +
                                  ts::testing::describe(ts::testing::outcome_of(
                                      e, std::chrono::steady_clock::now())));
                  ++finished;
                }
              });
        }
        int refused = 0;
        int accepted_split = 0;
        std::vector<std::string> bad_transactions;
        for (int t = 0; t < kTransactions; ++t) {
          // Command by command: each must be refused before anything is sent.
          std::vector<ts::testing::Outcome> split;
          split.push_back(co_await outcome(client.command("MULTI")));
          split.push_back(co_await outcome(client.command("INCR", "f46:split")));
          split.push_back(co_await outcome(client.command("EXEC")));
          for (const auto* o : {&split[0], &split[2]}) {  // the INCR alone is ordinary
            if (o->failed && o->code == ts::make_error_code(errc::invalid_argument)) {
              ++refused;
            } else if (!o->failed) {
              ++accepted_split;
            }
          }
          // One balanced request: atomic, and its replies are its own.
          Request request;
          request.push("MULTI").push("INCR", "f46:atomic").push("INCR", "f46:atomic").push("EXEC");
          const std::vector<Reply> replies = co_await client.pipeline(request);
          const bool ok =
              replies.size() == 4 && is_text(replies[0], "OK") && is_text(replies[1], "QUEUED") &&
              is_text(replies[2], "QUEUED") && replies[3].is_array() && replies[3].size() == 2 &&
              replies[3][0].as_int() == 2 * t + 1 && replies[3][1].as_int() == 2 * t + 2;
          if (!ok) {
            std::string all;
            for (const auto& r : replies) all += shown(r) + " | ";
            bad_transactions.push_back("transaction " + std::to_string(t) + ": " + all);
          }
        }
        EXPECT_TRUE(co_await eventually([&] { return finished == kCallers; }, 20s));
        EXPECT_TRUE(wrong.empty())
            << wrong.size() << " reply(ies) went to the wrong caller; first: "
            << (wrong.empty() ? "" : wrong.front());
        EXPECT_TRUE(bad_transactions.empty())
            << bad_transactions.size() << " balanced transaction(s) interleaved; first: "
            << (bad_transactions.empty() ? "" : bad_transactions.front());
        EXPECT_EQ(accepted_split, 0)
            << "MULTI/INCR/EXEC sent as separate commands on the shared connection";
        // MULTI and EXEC refused each time (the INCR between them is an ordinary command).
        EXPECT_EQ(refused, 2 * kTransactions);
        for (const auto& k : keys) {
          EXPECT_EQ(admin.ok({"GET", k}).str, std::to_string(kIncrements)) << k;
        }
        EXPECT_EQ(admin.ok({"GET", "f46:atomic"}).str, std::to_string(2 * kTransactions));
        // The connection is in a clean state: a reply is still its request's.
        for (int i = 0; i < 3; ++i) {
          const std::string token = "f46-" + std::to_string(i);
          const Reply echo = co_await client.command("ECHO", token);
          EXPECT_TRUE(is_text(echo, token)) << shown(echo);
        }
        for (const auto& k : keys) admin.ok({"DEL", k});
        admin.ok({"DEL", "f46:split", "f46:atomic"});
      });
}

// The other transaction commands alone, and requests that are not one balanced transaction,
// are refused before anything is sent; a transaction that the server aborts (EXECABORT) or
// that is discarded still answers once per command, and the connection stays clean.
TEST(RedisFault, F46_UnbalancedTransactionsAreRefusedAndNothingIsSent) {
  run_with_client(
      fast_config(redis_url_for_db(0), "f46-refused"), 20s,
      [](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        RedisAdmin admin;
        admin.ok({"DEL", "f46:r"});
        const auto refused = [&](const ts::testing::Outcome& o, const char* what) {
          EXPECT_TRUE(o.failed) << what << " was accepted";
          EXPECT_EQ(o.code, ts::make_error_code(errc::invalid_argument)) << what << ": " << o.what;
        };
        refused(co_await outcome(client.command("multi")), "MULTI");
        refused(co_await outcome(client.command("EXEC")), "EXEC");
        refused(co_await outcome(client.command("DISCARD")), "DISCARD");
        refused(co_await outcome(client.command("WATCH", "f46:r")), "WATCH");
        refused(co_await outcome(client.command("UNWATCH")), "UNWATCH");
        refused(co_await outcome(client.blocking_command(10ms, "MULTI")), "blocking MULTI");
        const auto push_refused = [&](Request& r, auto... args) {
          try {
            r.push(args...);
            ADD_FAILURE() << "push accepted";
          } catch (const ts::Error& e) {
            EXPECT_EQ(e.code(), ts::make_error_code(errc::invalid_argument)) << e.what();
          }
        };
        {
          Request r;  // EXEC without MULTI
          r.push("INCR", "f46:r");
          push_refused(r, "EXEC");
          EXPECT_EQ(r.size(), 1u);
        }
        {
          Request r;  // MULTI not first
          r.push("INCR", "f46:r");
          push_refused(r, "MULTI");
        }
        {
          Request r;  // nested MULTI, WATCH inside, anything after EXEC
          r.push("MULTI");
          push_refused(r, "MULTI");
          push_refused(r, "WATCH", "f46:r");
          r.push("INCR", "f46:r").push("EXEC");
          push_refused(r, "INCR", "f46:r");
          push_refused(r, "MULTI");
          EXPECT_EQ(r.size(), 3u);
        }
        {
          Request r;  // MULTI without EXEC/DISCARD: refused by pipeline(), nothing sent
          r.push("MULTI").push("INCR", "f46:r");
          refused(co_await outcome(client.pipeline(r)), "MULTI without EXEC");
        }
        EXPECT_EQ(admin.ok({"EXISTS", "f46:r"}).integer, 0) << "a refused request ran";
        {
          Request r;  // DISCARD: nothing runs
          r.push("MULTI").push("INCR", "f46:r").push("DISCARD");
          const auto replies = co_await client.pipeline(r);
          EXPECT_EQ(replies.size(), 3u);
          if (replies.size() == 3) {
            EXPECT_TRUE(is_text(replies[2], "OK")) << shown(replies[2]);
          }
        }
        {
          Request r;  // a command the server refuses while queueing: EXECABORT, nothing runs
          r.push("MULTI").push("INCR", "f46:r").push("INCR").push("EXEC");
          const auto replies = co_await client.pipeline(r);
          EXPECT_EQ(replies.size(), 4u);
          if (replies.size() == 4) {
            EXPECT_TRUE(replies[2].is_error()) << shown(replies[2]);
            EXPECT_TRUE(replies[3].is_error()) << shown(replies[3]);
            if (replies[3].is_error()) {
              EXPECT_EQ(replies[3].error_prefix(), "EXECABORT");
            }
          }
        }
        EXPECT_EQ(admin.ok({"EXISTS", "f46:r"}).integer, 0);
        const Reply echo = co_await client.command("ECHO", "clean");
        EXPECT_EQ(echo.as_string(), "clean");
        EXPECT_EQ(client.stats().in_flight, 0u);
      });
}

}  // namespace

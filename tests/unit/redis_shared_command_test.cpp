// detail::check_shared_command and Request's transaction rules (F46): which commands may go on
// the shared, FIFO-matched connection, and the only form a transaction may take there (one
// Request: MULTI first, EXEC or DISCARD last, no WATCH). Pure logic: nothing is sent.
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/resp.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace ts = trading_shared;
namespace detail = ts::redis::detail;
using detail::TransactionCommand;
using ts::redis::Request;

std::string encoded(const std::vector<std::string>& args) {
  std::string out;
  ts::redis::encode_command(out, args);
  return out;
}

/// The check's verdict: "" (accepted) or the error's text.
std::string verdict(const std::vector<std::string>& args, bool blocking_allowed = false,
                    TransactionCommand* transaction = nullptr) {
  const auto error = detail::check_shared_command(encoded(args), blocking_allowed, transaction);
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument)) << e.what();
    return e.what();
  }
}

TEST(SharedCommandCheck, OrdinaryCommandsPass) {
  for (const std::vector<std::string>& c :
       std::vector<std::vector<std::string>>{{"GET", "k"},
                                             {"set", "k", "v"},
                                             {"HSET", "h", "f", "v"},
                                             {"XADD", "s", "*", "f", "v"},
                                             {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"},
                                             {"EXISTS", "k"},
                                             {"EXPIRE", "k", "1"},
                                             {"DEL", "k"},
                                             {"DECR", "k"},
                                             {"MGET", "a", "b"},
                                             {"WATCHX"},
                                             {"EXECUTE"},
                                             {"CLIENT", "SETNAME", "x"},
                                             {"PING"}}) {
    EXPECT_EQ(verdict(c), "") << c[0];
  }
}

TEST(SharedCommandCheck, RefusesWhatWouldBreakFifoMatching) {
  for (const std::vector<std::string>& c :
       std::vector<std::vector<std::string>>{{"SUBSCRIBE", "ch"},
                                             {"psubscribe", "p*"},
                                             {"SSUBSCRIBE", "ch"},
                                             {"UNSUBSCRIBE"},
                                             {"PUNSUBSCRIBE"},
                                             {"SUNSUBSCRIBE"},
                                             {"MONITOR"},
                                             {"RESET"},
                                             {"QUIT"},
                                             {"SELECT", "1"},
                                             {"AUTH", "p"},
                                             {"HELLO", "3"},
                                             {"CLIENT", "reply", "OFF"}}) {
    EXPECT_NE(verdict(c), "") << c[0];
    EXPECT_NE(verdict(c, true), "") << c[0] << " (blocking connection)";
  }
  EXPECT_NE(verdict({"BLPOP", "l", "1"}), "");
  EXPECT_EQ(verdict({"BLPOP", "l", "1"}, true), "");
  EXPECT_NE(verdict({"WAITAOF", "1", "0", "0"}), "");
  EXPECT_NE(verdict({"XREAD", "COUNT", "1", "block", "10", "STREAMS", "s", "$"}), "");
  EXPECT_EQ(verdict({"XREAD", "COUNT", "1", "block", "10", "STREAMS", "s", "$"}, true), "");
  EXPECT_NE(verdict({}), "");
}

// F46: alone on the shared connection, a transaction command would pull every other caller's
// commands into the transaction (they would get QUEUED, the EXEC their results).
TEST(SharedCommandCheck, F46_TransactionCommandsAloneAreRefused) {
  for (const std::vector<std::string>& c : std::vector<std::vector<std::string>>{
           {"MULTI"}, {"exec"}, {"Discard"}, {"WATCH", "k"}, {"UNWATCH"}}) {
    const std::string why = verdict(c);
    EXPECT_NE(why, "") << c[0];
    EXPECT_NE(why.find("shared connection"), std::string::npos) << why;
    EXPECT_NE(verdict(c, true), "") << c[0] << " (blocking connection)";
  }
  // Reported (not refused) to a Request, which checks the balance; WATCH stays refused.
  TransactionCommand t = TransactionCommand::none;
  EXPECT_EQ(verdict({"multi"}, false, &t), "");
  EXPECT_EQ(t, TransactionCommand::multi);
  t = TransactionCommand::none;
  EXPECT_EQ(verdict({"EXEC"}, false, &t), "");
  EXPECT_EQ(t, TransactionCommand::end);
  t = TransactionCommand::none;
  EXPECT_EQ(verdict({"DISCARD"}, false, &t), "");
  EXPECT_EQ(t, TransactionCommand::end);
  t = TransactionCommand::none;
  EXPECT_NE(verdict({"WATCH", "k"}, false, &t), "");
  EXPECT_NE(verdict({"UNWATCH"}, false, &t), "");
  EXPECT_EQ(verdict({"GET", "k"}, false, &t), "");
  EXPECT_EQ(t, TransactionCommand::none);
}

TEST(SharedCommandCheck, F46_RequestAcceptsOnlyOneBalancedTransaction) {
  Request ok;
  ok.push("MULTI").push("INCR", "k").push("SET", "a", "b").push("EXEC");
  EXPECT_EQ(ok.size(), 4U);
  EXPECT_FALSE(ok.transaction_open());
  Request discarded;
  discarded.push("multi").push("INCR", "k");
  EXPECT_TRUE(discarded.transaction_open());
  discarded.push("DISCARD");
  EXPECT_FALSE(discarded.transaction_open());

  const auto refused = [](Request& r, const std::vector<std::string>& c) {
    const std::size_t before = r.size();
    const std::string bytes(r.encoded());
    EXPECT_THROW(r.push(c), ts::Error) << c[0];
    EXPECT_EQ(r.size(), before) << "a refused command is not added";
    EXPECT_EQ(std::string(r.encoded()), bytes);
  };
  Request late;  // MULTI not first
  late.push("GET", "k");
  refused(late, {"MULTI"});
  Request orphan;  // EXEC or DISCARD without MULTI
  refused(orphan, {"EXEC"});
  orphan.push("GET", "k");
  refused(orphan, {"DISCARD"});
  Request nested;
  nested.push("MULTI");
  refused(nested, {"MULTI"});
  refused(nested, {"WATCH", "k"});
  refused(nested, {"SUBSCRIBE", "ch"});
  refused(nested, {"BLPOP", "l", "0"});
  nested.push("EXEC");
  refused(nested, {"GET", "k"});  // nothing after the transaction
  refused(nested, {"MULTI"});     // not a second one either
  refused(nested, {"EXEC"});
  nested.clear();  // clear() starts afresh
  nested.push("GET", "k").push("SET", "k", "v");
  EXPECT_FALSE(nested.transaction_open());
  nested.clear();
  nested.push("MULTI").push("EXEC");
  EXPECT_EQ(nested.size(), 2U);
}

}  // namespace

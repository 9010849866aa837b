// Fault tests F17-F21 of docs/failure-modes.md for RedisClient, injected for real on loopback:
// the fault proxy (latency for many concurrent callers that give up mid-flight, a black hole
// for half-open TCP), CLIENT PAUSE and DEBUG SLEEP (slow server), SIGSTOP/SIGCONT (frozen
// server), CLIENT KILL, a server restart, and a restart that LOADs its data slowly.
//
// The tests of this binary (F22-F30 live in redis_faults_b_test.cpp) share one Redis and run
// one after the other: every test leaves the server running, unpaused and with its settings
// back when it ends, also when it fails (RAII guards). Isolation: one key prefix per test
// ("f17:"), one client name per client (so that CLIENT LIST can be filtered), dedicated
// database numbers where a test must load or flush data.
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "redis_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using ts::errc;
using ts::ErrorKind;
using ts::core::CircuitState;
using ts::redis::CommandOptions;
using ts::redis::FieldView;
using ts::redis::RedisClient;
using ts::redis::RedisConfig;
using ts::redis::Reply;
using ts::testing::describe;
using ts::testing::elapsed_ms;
using ts::testing::FaultProxy;
using ts::testing::LogCapture;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::pause_for;
using ts::testing::ServerProcess;
using ts::testing::Servers;
using ts::testing::fault::AdminReply;
using ts::testing::fault::BackgroundLoop;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_config;
using ts::testing::fault::redis_url_for_db;
using ts::testing::fault::redis_url_for_port;
using ts::testing::fault::RedisAdmin;
using ts::testing::fault::run_with_client;
using ts::testing::fault::ScopeExit;
using ts::testing::fault::with_client;

namespace {

// The binary's Redis gets two extra settings (before anything starts it):
// - DEBUG is refused by default since Redis 7; F19 needs DEBUG SLEEP from loopback.
// - Redis answers clients while it loads its data only between chunks of this many bytes
//   (default 2 MiB): F21 needs LOADING replies from a small data set.
[[maybe_unused]] const bool kServerOptionsSet = [] {
  ts::testing::ServerOptions options;
  options.redis_conf = {"enable-debug-command local", "loading-process-events-interval-bytes 1024"};
  Servers::set_options(std::move(options));
  return true;
}();

Servers& servers() {
  return Servers::instance();
}

std::string state_name(CircuitState s) {
  return std::string(ts::core::to_string(s));
}

/// The next test finds Redis serving (the server is shared).
void expect_redis_healthy() {
  EXPECT_TRUE(ts::testing::poll_until([] { return ts::testing::fault::redis_serves(); }, 20s))
      << "Redis left unhealthy";
}

/// Polls an asynchronous condition until it holds or `timeout` passes.
asio::awaitable<bool> eventually_async(std::function<asio::awaitable<bool>()> condition,
                                       Clock::duration timeout,
                                       Clock::duration step = milliseconds(20)) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (co_await condition()) co_return true;
    if (Clock::now() >= deadline) co_return false;
    co_await pause_for(step);
  }
}

bool is_timeout_code(const std::error_code& code) {
  return code == ts::make_error_code(errc::request_timeout) ||
         code == ts::make_error_code(errc::write_timeout) ||
         code == ts::make_error_code(errc::timeout) || code == ts::make_error_code(errc::cancelled);
}

/// What the F17/F18 callers saw.
struct Tally {
  std::uint64_t issued = 0;      ///< commands the callers made (a bulk counts its XADDs).
  std::uint64_t ok = 0;          ///< replies received and checked.
  std::uint64_t gave_up = 0;     ///< timeouts and cancellations (the injected fault).
  std::uint64_t dropped = 0;     ///< awaitables destroyed without being awaited.
  std::uint64_t mismatches = 0;  ///< a reply that was not the caller's own.
  std::uint64_t other_errors = 0;
  std::vector<std::string> samples;

  void mismatch(std::string what) {
    ++mismatches;
    if (samples.size() < 10) samples.push_back("MISMATCH " + std::move(what));
  }
  void failed(const ts::Error& e) {
    if (is_timeout_code(e.code())) {
      ++gave_up;
    } else {
      ++other_errors;
      if (samples.size() < 10) samples.push_back(std::string("ERROR ") + e.what());
    }
  }
  std::string report() const {
    std::string s = "issued " + std::to_string(issued) + ", ok " + std::to_string(ok) +
                    ", gave up " + std::to_string(gave_up) + ", dropped " +
                    std::to_string(dropped) + ", mismatches " + std::to_string(mismatches) +
                    ", other errors " + std::to_string(other_errors);
    for (const auto& x : samples) s += "\n  " + x;
    return s;
  }
};

/// Completion handler of a task spawned by F17/F18: fails the test when the task threw ("<what>
/// threw: ..."), then counts it in `counter`.
auto count_done(int& counter, const char* what) {
  return [&counter, what](const std::exception_ptr& e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        ADD_FAILURE() << what << " threw: " << x.what();
      }
    }
    ++counter;
  };
}

/// F17/F18 give up on a large share of their calls on purpose: those timeouts count as
/// failures of the endpoint (F31) and would open the breaker, which is not what these tests
/// are about. A breaker that opens only when 1 000 calls in a row fail.
void tolerant_breaker(RedisConfig& config) {
  config.breaker.window_size = 1000;
  config.breaker.min_calls = 1000;
  config.breaker.failure_rate_threshold = 1.0;
}

/// Server-side ID of the only connection named `name` ("" when there is not exactly one).
std::string only_connection_id(RedisAdmin& admin, const std::string& name) {
  auto list = admin.clients_named(name);
  return list.size() == 1 ? list.front()["id"] : std::string();
}

// ---- F17 -------------------------------------------------------------------------------------

// 100 concurrent callers, >= 10 000 commands through a delaying proxy; callers give up at
// random (short per-call timeouts, with_timeout cancellation, awaitables dropped unawaited)
// and check that every reply they get is their own (ECHO of a unique token, GET of their own
// key after their own SET, INCR of their own counter). The connection must stay the same one,
// in sync, and the replies of abandoned requests must have been read and dropped.
TEST(RedisFault, F17_CancelledAfterWriteNeverMixesReplies) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().redis_port());
  proxy.start();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_port(proxy.port()), "f17");
  config.command_timeout = 3s;
  config.health_check_timeout = 5s;
  tolerant_breaker(config);
  constexpr int kCallers = 100;
  constexpr int kRounds = 110;
  run_with_client(
      config, 60s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        const std::string connection_id = only_connection_id(admin, "f17");
        EXPECT_FALSE(connection_id.empty());
        proxy.set_latency(2ms, 8ms);

        Tally tally;
        int finished = 0;
        auto caller = [&](int id) -> asio::awaitable<void> {
          std::mt19937 rng(static_cast<std::uint32_t>(1700 + id));
          std::uniform_int_distribution<int> mode_of(0, 4);
          std::uniform_int_distribution<int> short_ms(1, 25);
          const std::string prefix = "f17:" + std::to_string(id) + ":";
          const std::string key = "f17:key:" + std::to_string(id);
          const std::string counter = "f17:counter:" + std::to_string(id);
          std::int64_t last_count = 0;
          auto check_echo = [&](const Reply& r, const std::string& token) {
            if (!r.view().is_string() || r.as_string() != token) {
              tally.mismatch("caller " + std::to_string(id) + " expected " + token + ", got " +
                             r.debug_string());
            } else {
              ++tally.ok;
            }
          };
          for (int i = 0; i < kRounds; ++i) {
            const std::string token = prefix + std::to_string(i);
            const CommandOptions quick{milliseconds(short_ms(rng))};
            switch (mode_of(rng)) {
              case 0: {  // ECHO with a short per-call timeout
                ++tally.issued;
                try {
                  check_echo(co_await client.command(quick, "ECHO", token), token);
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                break;
              }
              case 1: {  // SET (short timeout), then GET of the own key (long timeout)
                tally.issued += 2;
                bool set_ok = false;
                try {
                  ts::redis::SetOptions options;
                  options.command = quick;
                  set_ok = co_await client.set(key, token, options);
                  ++tally.ok;
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                try {
                  const auto value = co_await client.get(key);
                  // After its own successful SET the value is exactly its token; otherwise
                  // it is one of this caller's earlier values (or nothing yet).
                  const bool good = set_ok ? (value && *value == token)
                                           : (!value || value->rfind(prefix, 0) == 0);
                  if (!good) {
                    tally.mismatch("caller " + std::to_string(id) + " GET " + key + " after SET " +
                                   token + (set_ok ? " (ok)" : " (gave up)") + " returned " +
                                   (value ? *value : std::string("nil")));
                  } else {
                    ++tally.ok;
                  }
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                break;
              }
              case 2: {  // asio cancellation: with_timeout around a call with a long deadline
                ++tally.issued;
                try {
                  check_echo(co_await ts::core::with_timeout(client.command("ECHO", token),
                                                             milliseconds(short_ms(rng))),
                             token);
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                break;
              }
              case 3: {  // an awaitable dropped unawaited, then the caller's own ECHO
                tally.issued += 2;
                try {
                  {
                    auto dropped = client.command("ECHO", token + ":dropped");
                    ++tally.dropped;
                  }
                  check_echo(co_await client.command("ECHO", token), token);
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                break;
              }
              default: {  // INCR of the own counter (short timeout): an integer, increasing
                ++tally.issued;
                try {
                  const Reply r = co_await client.command(quick, "INCR", counter);
                  if (!r.view().is_integer() || r.as_int() <= last_count) {
                    tally.mismatch("caller " + std::to_string(id) + " INCR " + counter + " after " +
                                   std::to_string(last_count) + " returned " + r.debug_string());
                  } else {
                    last_count = r.as_int();
                    ++tally.ok;
                  }
                } catch (const ts::Error& e) {
                  tally.failed(e);
                }
                break;
              }
            }
          }
        };
        const auto t0 = Clock::now();
        for (int c = 0; c < kCallers; ++c) {
          asio::co_spawn(io, caller(c), count_done(finished, "caller"));
        }
        EXPECT_TRUE(co_await eventually([&] { return finished == kCallers; }, 45s, 10ms))
            << finished << " of " << kCallers << " callers finished";
        const auto duration = elapsed_ms(t0);

        EXPECT_EQ(tally.mismatches, 0u) << tally.report();
        EXPECT_EQ(tally.other_errors, 0u) << tally.report();
        EXPECT_GE(tally.issued, 10000u) << tally.report();
        // The fault really happened, and the connection still served most calls.
        EXPECT_GE(tally.gave_up, 1000u) << tally.report();
        EXPECT_GE(tally.ok, 3000u) << tally.report();

        // In sync afterwards: nothing left over, and a burst of stored awaitables (pipelined
        // together) each gets its own reply.
        proxy.set_latency(0ms, 0ms);
        EXPECT_TRUE(co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.in_flight == 0 && s.queued == 0;
            },
            5s))
            << "requests left in flight: " << client.stats().in_flight;
        std::vector<asio::awaitable<Reply>> burst;
        for (int k = 0; k < 300; ++k)
          burst.push_back(client.command("ECHO", "f17:sync:" + std::to_string(k)));
        int burst_ok = 0;
        for (int k = 0; k < 300; ++k) {
          const Reply r = co_await std::move(burst[static_cast<std::size_t>(k)]);
          if (r.view().is_string() && r.as_string() == "f17:sync:" + std::to_string(k)) ++burst_ok;
        }
        EXPECT_EQ(burst_ok, 300);

        const auto s = client.stats();
        EXPECT_GE(s.commands, 10000u);
        EXPECT_GT(s.dropped_replies, 0u) << "no abandoned reply was read and dropped";
        EXPECT_GT(s.cancellations, 0u);
        EXPECT_GT(s.timeouts, 0u);
        EXPECT_EQ(s.disconnects, 0u) << "the connection was dropped (out of sync?)";
        EXPECT_EQ(s.breaker, CircuitState::closed);
        EXPECT_EQ(only_connection_id(admin, "f17"), connection_id)
            << "the client is not on the connection it started with";
        std::printf("[ F17 ] %s in %lld ms; %llu dropped replies\n", tally.report().c_str(),
                    static_cast<long long>(duration.count()),
                    static_cast<unsigned long long>(s.dropped_replies));
        co_await client.close();
      });
}

// ---- F18 -------------------------------------------------------------------------------------

// The same during pipelined xadd_bulk: 20 producers write batches into 4 shared streams
// through the delaying proxy and give up on many of them mid-flight (short per-call timeouts,
// with_timeout, awaitables dropped unawaited), while ECHO callers check their own replies.
// Every batch that succeeded must have got its own IDs (checked against XRANGE), a batch given
// up before it was written must not exist, a batch given up after must be all there or not at
// all, and no entry may be duplicated.
TEST(RedisFault, F18_CancelledBulkNeverMixesReplies) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().redis_port());
  proxy.start();
  auto config = fast_config(redis_url_for_port(proxy.port()), "f18");
  config.command_timeout = 3s;
  config.health_check_timeout = 5s;
  tolerant_breaker(config);
  constexpr int kProducers = 20;
  constexpr int kBulks = 30;
  constexpr int kEchoCallers = 20;
  constexpr int kStreams = 4;
  run_with_client(
      config, 60s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        for (int s = 0; s < kStreams; ++s) (void)co_await client.del("f18:s" + std::to_string(s));
        proxy.set_latency(2ms, 8ms);

        enum class Fate { ok, gave_up, dropped };
        struct Bulk {
          std::string stream;
          std::vector<std::string> tags;
          Fate fate = Fate::gave_up;
          std::vector<std::string> ids;
        };
        std::vector<Bulk> bulks;
        bulks.reserve(kProducers * kBulks);
        Tally tally;
        int producers_done = 0;
        int echo_done = 0;

        auto producer = [&](int id) -> asio::awaitable<void> {
          std::mt19937 rng(static_cast<std::uint32_t>(1800 + id));
          std::uniform_int_distribution<int> size_of(5, 40);
          std::uniform_int_distribution<int> mode_of(0, 3);
          std::uniform_int_distribution<int> short_ms(1, 30);
          for (int b = 0; b < kBulks; ++b) {
            bulks.push_back({});
            const std::size_t index = bulks.size() - 1;
            {
              Bulk& bulk = bulks[index];
              bulk.stream = "f18:s" + std::to_string((id + b) % kStreams);
              const int n = size_of(rng);
              for (int e = 0; e < n; ++e) {
                bulk.tags.push_back("p" + std::to_string(id) + "-b" + std::to_string(b) + "-e" +
                                    std::to_string(e));
              }
            }
            std::vector<std::array<FieldView, 2>> entries;
            for (const auto& tag : bulks[index].tags) {
              entries.push_back({FieldView{"tag", tag}, FieldView{"producer", "f18"}});
            }
            tally.issued += entries.size();
            const std::string stream = bulks[index].stream;
            ts::redis::XAddOptions options;
            try {
              switch (mode_of(rng)) {
                case 0:  // short per-call timeout
                  options.command.timeout = milliseconds(short_ms(rng));
                  bulks[index].ids = co_await client.xadd_bulk(stream, entries, options);
                  break;
                case 1:  // cancelled through with_timeout
                  bulks[index].ids = co_await ts::core::with_timeout(
                      client.xadd_bulk(stream, entries), milliseconds(short_ms(rng)));
                  break;
                case 2: {  // dropped before it could be written: must never run
                  {
                    auto dropped = client.xadd_bulk(stream, entries);
                  }
                  bulks[index].fate = Fate::dropped;
                  ++tally.dropped;
                  continue;
                }
                default:  // plenty of time: must succeed
                  bulks[index].ids = co_await client.xadd_bulk(stream, entries);
                  break;
              }
              bulks[index].fate = Fate::ok;
              ++tally.ok;
            } catch (const ts::Error& e) {
              bulks[index].fate = Fate::gave_up;
              tally.failed(e);
            }
          }
        };
        auto echo_caller = [&](int id) -> asio::awaitable<void> {
          std::mt19937 rng(static_cast<std::uint32_t>(1850 + id));
          std::uniform_int_distribution<int> short_ms(1, 25);
          for (int i = 0; producers_done < kProducers; ++i) {
            const std::string token = "f18:echo:" + std::to_string(id) + ":" + std::to_string(i);
            ++tally.issued;
            try {
              const Reply r = co_await client.command(CommandOptions{milliseconds(short_ms(rng))},
                                                      "ECHO", token);
              if (!r.view().is_string() || r.as_string() != token) {
                tally.mismatch("ECHO " + token + " returned " + r.debug_string());
              }
            } catch (const ts::Error& e) {
              tally.failed(e);
            }
          }
        };
        for (int p = 0; p < kProducers; ++p)
          asio::co_spawn(io, producer(p), count_done(producers_done, "task"));
        for (int c = 0; c < kEchoCallers; ++c)
          asio::co_spawn(io, echo_caller(c), count_done(echo_done, "task"));
        EXPECT_TRUE(co_await eventually(
            [&] { return producers_done == kProducers && echo_done == kEchoCallers; }, 45s, 10ms));
        proxy.set_latency(0ms, 0ms);
        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().in_flight == 0 && client.stats().queued == 0; }, 5s));

        // What is in the streams, by tag.
        std::map<std::string, std::vector<std::string>> ids_of_tag;
        std::int64_t total_entries = 0;
        for (int s = 0; s < kStreams; ++s) {
          const std::string stream = "f18:s" + std::to_string(s);
          total_entries += co_await client.xlen(stream);
          for (const auto& entry : co_await client.xrange(stream)) {
            const std::string* tag = entry.field("tag");
            if (tag == nullptr) {
              ADD_FAILURE() << "entry " << entry.id << " in " << stream << " has no tag";
              continue;
            }
            ids_of_tag[*tag].push_back(entry.id);
          }
        }
        std::size_t duplicates = 0;
        for (const auto& [tag, ids] : ids_of_tag) duplicates += ids.size() > 1 ? 1 : 0;
        EXPECT_EQ(duplicates, 0u) << "entries written twice";

        std::size_t ok_bulks = 0, wrong_ids = 0, dropped_present = 0, partial = 0,
                    gave_up_bulks = 0;
        std::size_t expected_entries = 0;
        std::string first_problem;
        for (const auto& bulk : bulks) {
          std::size_t present = 0;
          for (const auto& tag : bulk.tags) present += ids_of_tag.count(tag);
          switch (bulk.fate) {
            case Fate::ok: {
              ++ok_bulks;
              expected_entries += bulk.tags.size();
              if (bulk.ids.size() != bulk.tags.size()) {
                ++wrong_ids;
                if (first_problem.empty()) {
                  first_problem = "bulk of " + std::to_string(bulk.tags.size()) + " got " +
                                  std::to_string(bulk.ids.size()) + " IDs";
                }
                break;
              }
              for (std::size_t i = 0; i < bulk.tags.size(); ++i) {
                const auto it = ids_of_tag.find(bulk.tags[i]);
                if (it == ids_of_tag.end() || it->second.front() != bulk.ids[i]) {
                  ++wrong_ids;
                  if (first_problem.empty()) {
                    first_problem =
                        "entry " + bulk.tags[i] + " was returned ID " + bulk.ids[i] +
                        " but XRANGE has it at " +
                        (it == ids_of_tag.end() ? std::string("nothing") : it->second.front());
                  }
                }
              }
              break;
            }
            case Fate::dropped:
              dropped_present += present;
              break;
            case Fate::gave_up:
              ++gave_up_bulks;
              if (present != 0 && present != bulk.tags.size()) ++partial;
              expected_entries += present;
              break;
          }
        }
        EXPECT_EQ(wrong_ids, 0u) << first_problem;
        EXPECT_EQ(dropped_present, 0u) << "a bulk dropped before it was written ran anyway";
        EXPECT_EQ(partial, 0u) << "a bulk given up on a live connection ran only in part";
        EXPECT_EQ(static_cast<std::size_t>(total_entries), expected_entries)
            << "XLEN does not match the entries of the bulks";
        EXPECT_EQ(tally.mismatches, 0u) << tally.report();
        EXPECT_EQ(tally.other_errors, 0u) << tally.report();
        // The fault happened: many bulks abandoned mid-flight, many succeeded.
        EXPECT_GE(gave_up_bulks, 50u) << tally.report();
        EXPECT_GE(ok_bulks, 100u) << tally.report();

        const auto s = client.stats();
        EXPECT_GT(s.dropped_replies, 0u);
        EXPECT_EQ(s.disconnects, 0u) << "the connection was dropped (out of sync?)";
        std::printf("[ F18 ] %zu bulks ok, %zu given up, %lld entries; %s\n", ok_bulks,
                    gave_up_bulks, static_cast<long long>(total_entries), tally.report().c_str());
        co_await client.close();
      });
}

// ---- F19 -------------------------------------------------------------------------------------

// CLIENT PAUSE: requests written to a paused server time out at their own deadline
// (request_timeout, outcome_unknown) instead of hanging; once the pause ends their replies are
// read and dropped, and the same connection serves correct replies (no desynchronisation).
TEST(RedisFault, F19_ClientPauseTimesOutWithoutDesync) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_db(0), "f19-pause");
  config.command_timeout = 300ms;  // health_check_timeout stays 3 s: longer than the pause
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f19:k", "before"));
        const auto s0 = client.stats();

        admin.ok({"CLIENT", "PAUSE", "1200", "ALL"});
        const auto t0 = Clock::now();
        // Three requests written together to the paused server.
        auto set = client.set("f19:k", "during");
        auto get = client.get("f19:k");
        auto echo = client.command("ECHO", "f19:during");
        std::vector<Outcome> outcomes;
        outcomes.push_back(co_await outcome(std::move(set)));
        outcomes.push_back(co_await outcome(std::move(get)));
        outcomes.push_back(co_await outcome(std::move(echo)));
        const auto all_failed_after = elapsed_ms(t0);
        // Read before anything else can run on the loop: no reply of the three has come yet.
        const auto dropped_at_failure = client.stats().dropped_replies;
        for (const auto& o : outcomes) {
          EXPECT_TRUE(o.failed) << describe(o);
          EXPECT_EQ(o.code, ts::make_error_code(errc::request_timeout)) << describe(o);
          EXPECT_EQ(o.kind, ErrorKind::outcome_unknown) << describe(o);
        }
        // The per-command timeout held: all three failed at their own deadline (not before)
        // and while the server was still paused, before any reply came (an order, not a wall
        // time, so that a loaded machine cannot fail it). Waiting the pause out would be
        // >= 1200 ms and would find the replies.
        EXPECT_GE(all_failed_after, 290ms);
        EXPECT_LT(all_failed_after, 1200ms) << "the per-command timeout did not hold";
        EXPECT_EQ(dropped_at_failure, s0.dropped_replies)
            << "the calls failed only after the paused server answered";

        // After the pause their replies arrive and are dropped, in order.
        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().dropped_replies >= s0.dropped_replies + 3; }, 3s))
            << "dropped replies: " << client.stats().dropped_replies;
        // The SET ran when the pause ended (it had been sent); the next replies are our own.
        const auto value = co_await client.get("f19:k");
        EXPECT_EQ(value.value_or("nil"), "during");
        for (int i = 0; i < 20; ++i) {
          const std::string token = "f19:after:" + std::to_string(i);
          const Reply r = co_await client.command("ECHO", token);
          EXPECT_EQ(r.as_string(), token);
        }
        const auto s = client.stats();
        EXPECT_EQ(s.disconnects, s0.disconnects) << "the connection was replaced";
        EXPECT_GE(s.timeouts, s0.timeouts + 3);
        co_await client.close();
      });
  expect_redis_healthy();
}

// DEBUG SLEEP on the client's own connection: the sleeping command and the one queued behind
// it time out at their deadline; their replies are dropped when the server wakes up, and the
// following replies are correct.
TEST(RedisFault, F19_DebugSleepTimesOutWithoutDesync) {
  TS_SKIP_IF_EXTERNAL();
  auto config = fast_config(redis_url_for_db(0), "f19-sleep");
  config.command_timeout = 300ms;
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await client.set("f19:sleep", "v1"));
        const auto s0 = client.stats();
        const auto t0 = Clock::now();
        auto sleep = client.command("DEBUG", "SLEEP", "1");
        auto set = client.set("f19:sleep", "v2");
        const Outcome o1 = co_await outcome(std::move(sleep));
        const Outcome o2 = co_await outcome(std::move(set));
        const auto elapsed = elapsed_ms(t0);
        const auto dropped_at_failure = client.stats().dropped_replies;
        EXPECT_EQ(o1.code, ts::make_error_code(errc::request_timeout))
            << describe(o1) << " (is DEBUG enabled? the binary sets enable-debug-command local)";
        EXPECT_EQ(o2.code, ts::make_error_code(errc::request_timeout)) << describe(o2);
        EXPECT_EQ(o2.kind, ErrorKind::outcome_unknown) << describe(o2);
        // At their deadline, and before the sleeping server answered (see F19 CLIENT PAUSE).
        EXPECT_GE(elapsed, 290ms);
        EXPECT_LT(elapsed, 1000ms) << "the per-command timeout did not hold";
        EXPECT_EQ(dropped_at_failure, s0.dropped_replies)
            << "the calls failed only after the sleeping server answered";

        EXPECT_TRUE(co_await eventually(
            [&] { return client.stats().dropped_replies >= s0.dropped_replies + 2; }, 3s));
        EXPECT_EQ((co_await client.get("f19:sleep")).value_or("nil"), "v2");
        for (int i = 0; i < 20; ++i) {
          const std::string token = "f19:woke:" + std::to_string(i);
          EXPECT_EQ((co_await client.command("ECHO", token)).as_string(), token);
        }
        EXPECT_EQ(client.stats().disconnects, s0.disconnects);
        co_await client.close();
      });
  expect_redis_healthy();
}

// ---- F20 -------------------------------------------------------------------------------------

RedisConfig f20_config(std::string url, std::string name) {
  auto c = fast_config(std::move(url), std::move(name));
  c.command_timeout = 300ms;
  c.connect_timeout = 300ms;
  c.health_check_interval = 200ms;
  c.health_check_timeout = 600ms;
  c.reconnect_backoff = {20ms, 200ms, 2.0};
  c.breaker.window_size = 10;
  c.breaker.min_calls = 4;
  c.breaker.failure_rate_threshold = 0.5;
  c.breaker.open_backoff = {1000ms, 2000ms, 2.0};  // first open period in [0.5 s, 1 s]
  c.breaker.half_open_probes = 1;
  return c;
}

/// The part of F20 common to a frozen server and a half-open connection: `freeze()` was just
/// called. The in-flight call fails at its deadline, the health check declares the idle
/// connection dead, calls keep failing within their deadline until the breaker opens, then fail
/// at once; after `thaw()` the client recovers by itself.
asio::awaitable<void> frozen_scenario(RedisClient& client, RedisAdmin& admin,
                                      const std::function<void()>& freeze,
                                      const std::function<void()>& thaw) {
  const auto s0 = client.stats();
  freeze();
  // A call written to the frozen peer: its own deadline, outcome unknown.
  const Outcome in_flight = co_await outcome([&] { return client.ping(); });
  EXPECT_EQ(in_flight.code, ts::make_error_code(errc::request_timeout)) << describe(in_flight);
  EXPECT_EQ(in_flight.kind, ErrorKind::outcome_unknown) << describe(in_flight);
  EXPECT_LE(in_flight.elapsed, 550ms) << describe(in_flight);

  // The health check notices that nothing comes back and drops the connection.
  const auto t_detect = Clock::now();
  EXPECT_TRUE(co_await eventually([&] { return client.stats().disconnects > s0.disconnects; }, 3s))
      << "the health check never declared the connection dead";
  EXPECT_LE(elapsed_ms(t_detect), 1500ms);

  // Calls keep failing, each within its deadline, until the breaker opens.
  int failures = 0;
  for (int i = 0; i < 10 && client.stats().breaker != CircuitState::open; ++i) {
    const Outcome o = co_await outcome([&] { return client.ping(); });
    EXPECT_TRUE(o.failed) << "a call succeeded against a frozen server";
    EXPECT_LE(o.elapsed, 550ms) << describe(o);
    EXPECT_NE(o.kind, ErrorKind::permanent) << describe(o);
    ++failures;
  }
  EXPECT_EQ(client.stats().breaker, CircuitState::open)
      << "breaker " << state_name(client.stats().breaker) << " after " << failures
      << " failed calls";
  // Open: calls fail fast.
  const Outcome rejected = co_await outcome([&] { return client.ping(); });
  EXPECT_EQ(rejected.code, ts::make_error_code(errc::circuit_open)) << describe(rejected);
  EXPECT_LE(rejected.elapsed, 50ms) << describe(rejected);

  // Recovery once the peer is back: the breaker lets a probe through, the client reconnects.
  thaw();
  const auto t_thaw = Clock::now();
  const bool recovered = co_await eventually_async(
      [&]() -> asio::awaitable<bool> {
        co_return !(co_await outcome([&] { return client.ping(); })).failed;
      },
      8s, 50ms);
  EXPECT_TRUE(recovered) << "no recovery; breaker " << state_name(client.stats().breaker);
  std::printf("[ F20 ] %s: recovered %lld ms after the fault was lifted\n",
              client.client_name().c_str(), static_cast<long long>(elapsed_ms(t_thaw).count()));
  if (recovered) {
    EXPECT_EQ(client.stats().breaker, CircuitState::closed);
    EXPECT_TRUE(client.stats().connected);
    const Reply r = co_await client.command("ECHO", "f20:back");
    EXPECT_EQ(r.as_string(), "f20:back");
  }
  // The connections abandoned while the peer was frozen do not linger on the server.
  const std::string name = client.client_name();
  EXPECT_TRUE(co_await eventually([&] { return admin.count_clients(name) == 1; }, 5s, 20ms))
      << admin.count_clients(name) << " server connections named " << name;
}

// SIGSTOP: the server process is frozen with its sockets open.
TEST(RedisFault, F20_FrozenServerDetectedBreakerOpensAndRecovers) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  RedisAdmin admin;
  const auto config = f20_config(redis_url_for_db(0), "f20-frozen");
  bool paused = false;
  ScopeExit resume([&] {
    if (paused) redis.resume();
  });
  run_with_client(config, 30s,
                  [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
                    co_await client.ping();
                    co_await frozen_scenario(
                        client, admin,
                        [&] {
                          redis.pause();
                          paused = true;
                        },
                        [&] {
                          redis.resume();
                          paused = false;
                        });
                    co_await client.close();
                  });
  if (paused) {
    redis.resume();
    paused = false;
  }
  expect_redis_healthy();
}

// Half-open TCP: the proxy keeps both sockets open and forwards nothing, in either direction.
TEST(RedisFault, F20_HalfOpenConnectionDetectedBreakerOpensAndRecovers) {
  TS_SKIP_IF_EXTERNAL();
  FaultProxy proxy("127.0.0.1", servers().redis_port());
  proxy.start();
  ScopeExit clear([&] { proxy.clear_faults(); });
  RedisAdmin admin;
  const auto config = f20_config(redis_url_for_port(proxy.port()), "f20-halfopen");
  run_with_client(
      config, 30s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        co_await client.ping();
        co_await frozen_scenario(
            client, admin, [&] { proxy.set_blackhole(true); },
            [&] {
              proxy.set_blackhole(false);
              proxy.cut_all();  // the black-holed connections (the server still has them)
            });
        co_await client.close();
      });
}

// ---- F21 -------------------------------------------------------------------------------------

/// Callers that keep issuing commands (SET of an own key, then GET of it) until told to stop,
/// recording what failed and how.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<bool> marked{false};  ///< set by the test: count successes issued after it.
  std::uint64_t ok = 0;
  std::uint64_t ok_after_mark = 0;
  std::uint64_t mismatches = 0;
  std::map<std::string, std::uint64_t> errors;  ///< by error code message and kind.
  std::vector<std::string> samples;
  int running = 0;
  /// connection_lost failures of requests that cannot have been in flight at a disconnect:
  /// issued while the client knew it had no connection (they must wait for the reconnect),
  /// failed with no disconnect between their issue and their failure, or a second failure of
  /// the same caller at the same disconnect (a caller has one request outstanding at a time).
  std::uint64_t lost_outside_disconnect = 0;
  std::vector<std::string> outside_samples;

  std::uint64_t error_count() const {
    std::uint64_t n = 0;
    for (const auto& [what, count] : errors) n += count;
    return n;
  }
  /// Errors other than connection_lost (the requests in flight when the connection died).
  std::uint64_t unexpected_errors() const {
    std::uint64_t n = 0;
    for (const auto& [what, count] : errors) {
      if (what != ts::make_error_code(errc::connection_lost).message() + " / outcome_unknown") {
        n += count;
      }
    }
    return n;
  }
  /// connection_lost failures (outcome unknown): the requests in flight when a connection died.
  std::uint64_t lost() const {
    const auto it =
        errors.find(ts::make_error_code(errc::connection_lost).message() + " / outcome_unknown");
    return it == errors.end() ? 0 : it->second;
  }
  std::string report() const {
    std::string s = "ok " + std::to_string(ok) + " (after mark " + std::to_string(ok_after_mark) +
                    "), mismatches " + std::to_string(mismatches);
    for (const auto& [what, count] : errors) s += "\n  " + std::to_string(count) + " x " + what;
    for (const auto& x : samples) s += "\n  e.g. " + x;
    for (const auto& x : outside_samples) s += "\n  not in flight at a disconnect: " + x;
    return s;
  }

  asio::awaitable<void> caller(RedisClient& client, int id, std::string prefix) {
    ++running;
    const std::string key = prefix + std::to_string(id);
    std::uint64_t last_lost_at = std::numeric_limits<std::uint64_t>::max();
    for (int i = 0; !stop; ++i) {
      const bool after_mark = marked;
      const std::string token = key + ":" + std::to_string(i);
      bool failed = false;
      // The client's state when the request that may fail was issued.
      auto issued = client.stats();
      try {
        (void)co_await client.set(key, token);
        issued = client.stats();
        const auto value = co_await client.get(key);
        if (value != token) {
          ++mismatches;
        } else {
          ++ok;
          if (after_mark) ++ok_after_mark;
        }
      } catch (const ts::Error& e) {
        ++errors[e.code().message() + " / " + std::string(ts::to_string(e.kind()))];
        if (samples.size() < 5) samples.emplace_back(e.what());
        failed = true;
        if (e.code() == ts::make_error_code(errc::connection_lost)) {
          const auto now = client.stats();
          const bool again = now.disconnects == last_lost_at;
          last_lost_at = now.disconnects;
          if (!issued.connected || now.disconnects == issued.disconnects || again) {
            ++lost_outside_disconnect;
            if (outside_samples.size() < 3) {
              outside_samples.push_back(
                  std::string(e.what()) + " (issued " +
                  (issued.connected ? "connected" : "disconnected") + ", disconnects " +
                  std::to_string(issued.disconnects) + " -> " + std::to_string(now.disconnects) +
                  (again ? ", the caller's second at this disconnect" : "") + ")");
            }
          }
        }
      }
      // Do not spin on a client that fails at once (it must not, but the test must end).
      if (failed) co_await pause_for(5ms);
    }
    --running;
  }
};

// CLIENT KILL of the client's connection, five times, under load: the client notices, reconnects
// in the background (one new connection per kill: no storm), only requests in flight at the
// kill fail (connection_lost, outcome unknown), and requests issued after the loss was noticed
// succeed within their deadline.
TEST(RedisFault, F21_ClientKillReconnectsInBackground) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  auto config = fast_config(redis_url_for_db(0), "f21-kill");
  config.reconnect_backoff = RedisConfig{}.reconnect_backoff;  // 50 ms .. 2 s, full jitter
  // Kills in quick succession with 8 callers in flight would trip the default breaker (each
  // request lost counts as a failure); that effect has its own test below.
  tolerant_breaker(config);
  constexpr std::uint64_t kCallers = 8;
  run_with_client(
      config, 30s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        Load load;
        for (int c = 0; c < static_cast<int>(kCallers); ++c) {
          asio::co_spawn(io, load.caller(client, c, "f21:kill:"), asio::detached);
        }
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= 100; }, 5s));
        constexpr int kKills = 5;
        for (int k = 1; k <= kKills; ++k) {
          const auto before = client.stats();
          const auto lost_before = load.lost();
          EXPECT_EQ(admin.kill_clients("f21-kill"), 1u) << "kill " << k;
          EXPECT_TRUE(co_await eventually(
              [&] { return client.stats().disconnects > before.disconnects; }, 3s))
              << "kill " << k << " went unnoticed";
          // Issued after the loss was noticed: waits for the reconnect, then succeeds.
          const Outcome o =
              co_await outcome([&] { return client.set("f21:kill:after", std::to_string(k)); });
          EXPECT_FALSE(o.failed) << "kill " << k << ": " << describe(o);
          EXPECT_LE(o.elapsed, config.command_timeout);
          EXPECT_EQ((co_await client.get("f21:kill:after")).value_or("nil"), std::to_string(k));
          EXPECT_TRUE(
              co_await eventually([&] { return client.stats().connects > before.connects; }, 3s));
          // In flight when the client noticed the kill: at most one request per caller (the
          // requests in flight or queued at the kill, and those written to the dead socket
          // before the loss was read).
          EXPECT_LE(load.lost() - lost_before, kCallers)
              << "kill " << k << ": more requests failed with the connection than can have "
              << "been in flight when it was noticed: " << load.report();
        }
        const auto ok_before = load.ok;
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= ok_before + 100; }, 5s));
        load.stop = true;
        EXPECT_TRUE(co_await eventually([&] { return load.running == 0; }, 5s));

        EXPECT_EQ(load.mismatches, 0u) << load.report();
        EXPECT_EQ(load.unexpected_errors(), 0u)
            << "errors beyond the requests in flight at the kill reached callers: "
            << load.report();
        EXPECT_EQ(load.lost_outside_disconnect, 0u)
            << "requests that were not in flight at a disconnect failed: " << load.report();
        const auto s = client.stats();
        EXPECT_EQ(s.disconnects, static_cast<std::uint64_t>(kKills));
        EXPECT_EQ(s.connects, static_cast<std::uint64_t>(kKills + 1))
            << "one reconnect per kill expected (no storm)";
        EXPECT_EQ(s.connect_failures, 0u);
        EXPECT_EQ(admin.count_clients("f21-kill"), 1u);
        std::printf("[ F21 ] kills: %s\n", load.report().c_str());
        co_await client.close();
      });
}

// One CLIENT KILL while 12 requests are in flight (SETs held by CLIENT PAUSE WRITE), with the
// default breaker and a history of successful calls: the 12 fail as connection_lost, the
// client reconnects, and a request issued after the loss was noticed must succeed. A single
// connection loss is one event: it must not open the breaker and fail the calls that follow
// with circuit_open ("no errors leak to callers beyond in-flight ones").
TEST(RedisFault, F21_KillWithManyInFlightDoesNotFailLaterCalls) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  const auto config = fast_config(redis_url_for_db(0), "f21-inflight");  // default breaker
  run_with_client(
      config, 20s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        for (int i = 0; i < 50; ++i) co_await client.ping();  // a healthy history
        bool paused = true;
        admin.ok({"CLIENT", "PAUSE", "3000", "WRITE"});
        ScopeExit unpause([&] {
          if (paused) admin.ok({"CLIENT", "UNPAUSE"});
        });
        std::vector<asio::awaitable<bool>> writes;
        for (int i = 0; i < 12; ++i) {
          writes.push_back(client.set("f21:inflight:" + std::to_string(i), "v"));
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == 12; }, 2s));
        EXPECT_TRUE(co_await eventually(
            [&] {
              for (auto& c : admin.clients_named("f21-inflight")) {
                if (c["cmd"] == "set") return true;
              }
              return false;
            },
            2s))
            << "the SETs never reached the paused server";
        EXPECT_EQ(admin.kill_clients("f21-inflight"), 1u);
        admin.ok({"CLIENT", "UNPAUSE"});
        paused = false;
        for (auto& write : writes) {
          const Outcome o = co_await outcome(std::move(write));
          EXPECT_EQ(o.code, ts::make_error_code(errc::connection_lost)) << describe(o);
          EXPECT_EQ(o.kind, ErrorKind::outcome_unknown) << describe(o);
        }
        EXPECT_TRUE(co_await eventually([&] { return client.stats().disconnects == 1; }, 2s));
        const Outcome after =
            co_await outcome([&] { return client.set("f21:inflight:after", "v"); });
        EXPECT_FALSE(after.failed)
            << "a call issued after the reconnect failed: " << describe(after);
        EXPECT_EQ(client.stats().breaker, CircuitState::closed)
            << "one connection loss with 12 requests in flight opened the breaker";
        const bool served = co_await eventually_async(
            [&]() -> asio::awaitable<bool> {
              co_return !(co_await outcome([&] { return client.ping(); })).failed;
            },
            5s, 50ms);
        EXPECT_TRUE(served);
      });
}

// Server restart (SIGTERM, start again on the same port) under load, the client running on
// its own thread while the main thread restarts the server: in-flight requests fail as
// connection_lost, requests issued while the server is down wait and succeed, the client
// reconnects by itself with backoff (a bounded number of attempts: no storm).
TEST(RedisFault, F21_ServerRestartReconnectsInBackground) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  auto config = fast_config(redis_url_for_db(0), "f21-restart");
  config.command_timeout = 8s;  // longer than the restart: nothing issued meanwhile may fail
  tolerant_breaker(config);     // as in F21_ClientKillReconnectsInBackground
  std::atomic<bool> ready{false};
  std::atomic<bool> restarted{false};
  ts::testing::fault::QuietRedisLog quiet;
  constexpr std::uint64_t kCallers = 8;
  BackgroundLoop loop(
      40s,
      with_client(config, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        Load load;
        for (int c = 0; c < static_cast<int>(kCallers); ++c) {
          asio::co_spawn(io, load.caller(client, c, "f21:restart:"), asio::detached);
        }
        EXPECT_TRUE(co_await eventually([&] { return load.ok >= 100; }, 5s));
        ready = true;
        EXPECT_TRUE(co_await eventually([&] { return restarted.load(); }, 30s, 10ms));
        load.marked = true;
        EXPECT_TRUE(co_await eventually([&] { return load.ok_after_mark >= 100; }, 10s))
            << load.report();
        load.stop = true;
        EXPECT_TRUE(co_await eventually([&] { return load.running == 0; }, 10s));
        EXPECT_EQ(load.mismatches, 0u) << load.report();
        EXPECT_EQ(load.unexpected_errors(), 0u)
            << "errors beyond the requests in flight at the restart reached callers: "
            << load.report();
        const auto s = client.stats();
        EXPECT_GE(s.disconnects, 1u);
        // The restart runs on another thread, so the in-flight count at the disconnect cannot
        // be read at that instant; but each caller has at most one request outstanding, so at
        // most kCallers requests are in flight at any disconnect.
        EXPECT_LE(load.lost(), kCallers * s.disconnects)
            << "connection_lost failures beyond the requests in flight at the " << s.disconnects
            << " disconnect(s): " << load.report();
        EXPECT_EQ(load.lost_outside_disconnect, 0u)
            << "requests that were not in flight at a disconnect failed: " << load.report();
        EXPECT_EQ(s.connects, s.disconnects + 1);
        // A restart of well under 2 s with backoff 10 ms .. 200 ms: a few dozen attempts at
        // most, never a tight loop.
        EXPECT_LE(s.connect_failures, 40u) << "reconnect storm";
        std::printf("[ F21 ] restart: %s; %llu failed reconnect attempts\n", load.report().c_str(),
                    static_cast<unsigned long long>(s.connect_failures));
        co_await client.close();
      }));
  const bool became_ready =
      ts::testing::poll_until([&] { return ready.load() || loop.done(); }, 10s);
  EXPECT_TRUE(became_ready && ready.load());
  const auto t0 = Clock::now();
  if (ready) redis.restart();
  const auto restart_ms = elapsed_ms(t0);
  restarted = true;
  loop.join();
  std::printf("[ F21 ] the restart took %lld ms\n", static_cast<long long>(restart_ms.count()));
  expect_redis_healthy();
}

// Restart while the server LOADs its data (RDB with key-load-delay, answering LOADING in
// between): the client's handshake PING gets LOADING, so the new connection is not used; the
// client retries with backoff and commands issued during the load wait and then succeed with
// the loaded data. LOADING never reaches a caller.
TEST(RedisFault, F21_LoadingIsTransient) {
  TS_SKIP_IF_EXTERNAL();
  constexpr std::uint32_t kDb = 6;
  constexpr int kKeys = 1000;
  ServerProcess& redis = servers().redis();
  RedisAdmin admin;
  RedisAdmin admin_db(kDb);
  const std::string dump = admin.config_get("dir") + "/" + admin.config_get("dbfilename");
  ScopeExit restore([&] {
    // key-load-delay must not slow later restarts; the dump must not come back either.
    admin.config_set("key-load-delay", "0");
    admin.ok({"CONFIG", "REWRITE"});
    admin_db.ok({"FLUSHDB"});
    std::filesystem::remove(dump);
  });
  admin_db.ok({"FLUSHDB"});
  for (int i = 0; i < kKeys; ++i) {
    admin_db.ok({"SET", "f21:load:" + std::to_string(i), "v" + std::to_string(i)});
  }
  // ~1.5 ms per key: the load takes 1.5 s or more. REWRITE: the setting must survive the
  // restart (the harness writes its config only once).
  admin.config_set("key-load-delay", "1500");
  admin.ok({"CONFIG", "REWRITE"});
  admin.ok({"SAVE"});

  auto config = fast_config(redis_url_for_db(kDb), "f21-loading");
  config.command_timeout = 10s;  // longer than restart + load
  config.reconnect_backoff = {20ms, 200ms, 2.0};
  std::atomic<bool> ready{false};
  std::atomic<bool> restarted{false};
  // When the probe saw LOADING first and PONG afterwards (steady clock ns since epoch).
  std::atomic<std::int64_t> loading_since{0};
  std::atomic<std::int64_t> loading_until{0};
  struct Get {
    Clock::time_point issued;
    Outcome result;
    bool correct = false;
    // The client's own view when the GET was issued and when it ended: a GET can only have
    // been in flight at a disconnect if it was issued on a connection and a disconnect came
    // before its end.
    bool issued_connected = false;
    std::uint64_t disconnects_at_issue = 0;
    std::uint64_t disconnects_at_end = 0;
  };
  std::vector<Get> gets;  // touched by the loop thread only until it is joined
  LogCapture logs("redis");
  BackgroundLoop loop(
      60s,
      with_client(config, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        EXPECT_EQ((co_await client.get("f21:load:7")).value_or("nil"), "v7");
        ready = true;
        // A GET every 20 ms until the server is back and one issued after it succeeded, each
        // with its own coroutine (they overlap while the server is away).
        int spawned = 0;
        int done = 0;
        std::mt19937 rng(21);
        std::uniform_int_distribution<int> key_of(0, kKeys - 1);
        std::optional<std::size_t> first_after_restart;
        const auto t_start = Clock::now();
        for (;;) {
          if (restarted && !first_after_restart) first_after_restart = gets.size();
          // Done once a GET issued after the restart completed and nothing is outstanding.
          if (first_after_restart && gets.size() > *first_after_restart && done == spawned) break;
          if (Clock::now() - t_start > 25s) break;  // the checks below fail
          const int k = key_of(rng);
          const auto at_issue = client.stats();
          gets.push_back({Clock::now(), {}, false, at_issue.connected, at_issue.disconnects, 0});
          const std::size_t index = gets.size() - 1;
          ++spawned;
          asio::co_spawn(
              io,
              [&, k, index]() -> asio::awaitable<void> {
                const auto start = Clock::now();
                std::exception_ptr error;
                std::optional<std::string> value;
                try {
                  value = co_await client.get("f21:load:" + std::to_string(k));
                } catch (...) {
                  error = std::current_exception();
                }
                gets[index].result = ts::testing::outcome_of(error, start);
                gets[index].correct = !error && value == "v" + std::to_string(k);
                gets[index].disconnects_at_end = client.stats().disconnects;
                ++done;
              },
              asio::detached);
          co_await pause_for(20ms);
        }
        EXPECT_TRUE(co_await eventually([&] { return done == spawned; }, 15s));
        const auto s = client.stats();
        EXPECT_GE(s.disconnects, 1u);
        EXPECT_GE(s.connect_failures, 1u) << "the client never met the loading server";
        co_await client.close();
      }));
  const bool became_ready =
      ts::testing::poll_until([&] { return ready.load() || loop.done(); }, 10s);
  EXPECT_TRUE(became_ready && ready.load());
  // An independent probe records when the server answered LOADING.
  std::atomic<bool> probing{true};
  std::thread probe([&] {
    while (probing) {
      try {
        RedisAdmin p(0, 200ms);
        const AdminReply r = p.run({"PING"});
        const auto now = Clock::now().time_since_epoch().count();
        if (r.is_error() && r.str.rfind("LOADING", 0) == 0) {
          std::int64_t expected = 0;
          loading_since.compare_exchange_strong(expected, now);
        } else if (r.str == "PONG" && loading_since != 0 && loading_until == 0) {
          loading_until = now;
        }
      } catch (const std::exception&) {
        // down or busy: try again
      }
      std::this_thread::sleep_for(10ms);  // probe pacing, not a wait for a condition
    }
  });
  const auto t0 = Clock::now();
  if (ready) redis.restart();
  const auto restart_ms = elapsed_ms(t0);
  restarted = true;
  loop.join();
  probing = false;
  probe.join();

  // The fault really happened: the server was loading for a while.
  ASSERT_NE(loading_since.load(), 0)
      << "the probe never saw LOADING: the scenario was not produced";
  EXPECT_GE(restart_ms, 1000ms) << "the load was too short to matter";
  EXPECT_GE(logs.count("LOADING"), 1u) << "the client never logged a LOADING handshake";
  std::size_t during_load = 0;
  std::size_t failed = 0;
  std::size_t unexpected = 0;
  std::size_t not_in_flight = 0;  // failed, but not in flight at a disconnect
  std::string first_failure;
  const Clock::time_point since{Clock::duration(loading_since.load())};
  const Clock::time_point until{Clock::duration(loading_until.load())};
  for (const auto& g : gets) {
    if (g.result.failed) {
      ++failed;
      if (g.result.code != ts::make_error_code(errc::connection_lost)) {
        ++unexpected;
        if (first_failure.empty()) first_failure = describe(g.result);
      } else if (!g.issued_connected || g.disconnects_at_end == g.disconnects_at_issue) {
        ++not_in_flight;
        if (first_failure.empty()) {
          first_failure = describe(g.result) + " (issued " +
                          (g.issued_connected ? "on a connection" : "while disconnected") +
                          ", disconnects " + std::to_string(g.disconnects_at_issue) + " -> " +
                          std::to_string(g.disconnects_at_end) + ")";
        }
      }
      continue;
    }
    EXPECT_TRUE(g.correct) << "a GET returned the wrong value";
    if (loading_until != 0 && g.issued >= since && g.issued <= until) ++during_load;
  }
  EXPECT_EQ(unexpected, 0u) << "an error other than connection_lost reached a caller: "
                            << first_failure;
  // connection_lost is allowed only for a GET in flight at a disconnect: issued on a
  // connection, ended by a disconnect. GETs issued while the server was away or loading wait.
  EXPECT_EQ(not_in_flight, 0u) << not_in_flight << " of " << failed
                               << " connection_lost failures were not in flight at a "
                                  "disconnect: "
                               << first_failure;
  // One GET is issued every 20 ms and a GET takes well under that: only the GETs outstanding
  // at the loss can fail, a handful at most, not the GETs of the whole outage.
  EXPECT_LE(failed, 3u) << "more GETs failed than can have been in flight at the restart";
  EXPECT_GE(during_load, 5u) << "commands issued while the server was loading must succeed";
  std::printf(
      "[ F21 ] loading: restart took %lld ms, %zu GETs (%zu issued during the load, %zu "
      "failed in flight)\n",
      static_cast<long long>(restart_ms.count()), gets.size(), during_load, failed);
  expect_redis_healthy();
}

}  // namespace

// Fault tests of docs/failure-modes.md for RedisClient when callers give up after their command
// was written: F17 (single commands: timeouts, cancellation, dropped awaitables, through a
// delaying fault proxy) and F18 (the same during pipelined xadd_bulk): every reply reaches its
// own caller. Helpers: redis_fault_fixture.hpp.

#include "redis_fault_fixture.hpp"

using namespace redis_fault_test;

namespace {

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

}  // namespace

// Fault tests of docs/failure-modes.md for StreamConsumer: F28 (a poison message dead-lettered
// after max_deliveries), F29 (pending entries trimmed or deleted: counted, never handed to the
// handler) and F30 (stream or group missing, or flushed away while the consumer runs:
// recreated). Helpers: redis_fault_fixture.hpp.

#include "redis_fault_fixture.hpp"

using namespace redis_fault_test;

namespace {

// ---- F28 -------------------------------------------------------------------------------------

// A poison message (the handler always throws) among good ones, all first read by a consumer
// that then died ("dead": XREADGROUP, never acknowledged). They are in nobody's reach but by a
// claim: consumer c1 (claim_min_idle 300 ms) takes them over with XAUTOCLAIM once they have
// been idle that long, not before; the good ones are handled once each; the poison message,
// delivered to "dead", claimed by c1 (delivery 2) and retried by c1 from its own pending entries
// (delivery 3), is handled max_deliveries - 1 = 2 times by c1, and at its 4th delivery
// copied to the dead-letter stream with the dlq_* fields and acknowledged; nothing stays
// pending, not even with the dead consumer, and it is not delivered again.
TEST(RedisFault, F28_PoisonMessageIsDeadLettered) {
  TS_SKIP_IF_EXTERNAL();
  run_with_client(
      fast_config(redis_url_for_db(0), "f28"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        const std::array<std::string_view, 2> old_keys{"f28:s", "f28:s:dead"};
        (void)co_await client.del(old_keys);
        EXPECT_TRUE(co_await client.xgroup_create("f28:s", "g", "0", true));
        std::vector<std::string> good_ids;
        std::string poison_id;
        for (int i = 0; i < 6; ++i) {
          const bool poison = i == 2;
          const std::vector<std::pair<std::string, std::string>> data{
              {"kind", poison ? "poison" : "good"}, {"n", std::to_string(i)}};
          const std::string id = co_await client.xadd("f28:s", fields_of(data));
          (poison ? poison_id : good_ids.emplace_back()) = id;
        }
        // Delivery 1 of every entry: to a consumer that dies without acknowledging.
        ReadGroupOptions read;
        read.count = 10;
        EXPECT_EQ((co_await client.xreadgroup("g", "dead", "f28:s", ">", read)).size(), 6u);
        const auto dead_read_at = Clock::now();

        constexpr milliseconds kMinIdle{300};
        StreamConsumerConfig cc = consumer_config("f28:s", "c1", 50ms);
        cc.claim_interval = 100ms;
        cc.claim_min_idle = kMinIdle;
        cc.max_deliveries = 3;
        int poison_calls = 0;
        std::map<std::string, int> handled;
        std::optional<Clock::time_point> first_handled_at;
        StreamConsumer consumer(client, cc, [&](const StreamEntry& entry) -> asio::awaitable<void> {
          if (!first_handled_at) first_handled_at = Clock::now();
          const std::string* kind = entry.field("kind");
          if (kind != nullptr && *kind == "poison") {
            ++poison_calls;
            throw std::runtime_error("poison message");
          }
          ++handled[entry.id];
          co_return;
        });
        Running running;
        running.start(io, consumer);
        EXPECT_TRUE(co_await eventually(
            [&] { return consumer.stats().dead_lettered == 1 && handled.size() == 5; }, 5s))
            << "dead-lettered " << consumer.stats().dead_lettered << ", good handled "
            << handled.size() << ", poison handled " << poison_calls << " times, claimed "
            << consumer.stats().claimed;
        // A few more claim intervals and more than claim_min_idle: the poison message must not
        // come back (a negative check needs a window; it is not a wait for a condition).
        co_await pause_for(kMinIdle + 200ms);
        co_await running.stop(consumer);

        // The claim path, and only after claim_min_idle (a lower bound: load cannot break it).
        // Redis keeps delivery times and its clock in whole milliseconds (both truncated), so
        // an entry is idle "300 ms" up to 1 ms early by our clock (a run measured 299.7 ms).
        EXPECT_GE(first_handled_at.value_or(dead_read_at) - dead_read_at, kMinIdle - 1ms)
            << "entries of the dead consumer were taken before they were idle claim_min_idle";
        EXPECT_EQ(consumer.stats().claimed, 6u)
            << "the dead consumer's 6 entries are reachable only by XAUTOCLAIM";
        EXPECT_EQ(poison_calls, 2)
            << "deliveries: 1 to the dead consumer, 2 to c1 (claim, own retry), then dead-lettered";
        EXPECT_EQ(consumer.stats().dead_lettered, 1u);
        EXPECT_EQ(consumer.stats().handler_errors, 2u);
        EXPECT_EQ(consumer.stats().acked, 5u);
        for (const auto& id : good_ids) EXPECT_EQ(handled[id], 1) << id;
        const auto dead = co_await client.xrange("f28:s:dead");
        EXPECT_EQ(dead.size(), 1u);
        const auto field = [&](const char* name) {
          const std::string* v = dead.empty() ? nullptr : dead.front().field(name);
          return v ? *v : std::string("<missing>");
        };
        EXPECT_EQ(field("kind"), "poison");
        EXPECT_EQ(field("n"), "2");
        EXPECT_EQ(field("dlq_source"), "f28:s");
        EXPECT_EQ(field("dlq_id"), poison_id);
        EXPECT_EQ(field("dlq_deliveries"), "4");
        EXPECT_EQ(field("dlq_group"), "g");
        const auto pending = co_await client.xpending("f28:s", "g");
        EXPECT_EQ(pending.count, 0) << "the poison message is still pending";
        co_await client.close();
      });
}

// ---- F29 -------------------------------------------------------------------------------------

// Pending entries trimmed or deleted from the stream. Own-pending path: the consumer's own
// pending entries come back from XREADGROUP 0 with nil bodies (XTRIM MINID removed them).
// XAUTOCLAIM path: a dead consumer's pending entries were XDELed; XAUTOCLAIM reports their IDs
// as deleted. Either way: counted in `deleted`, never passed to the handler, nothing pending
// afterwards, no crash, and the consumer goes on with new entries.
TEST(RedisFault, F29_TrimmedPendingEntriesAreCountedNotFatal) {
  TS_SKIP_IF_EXTERNAL();
  run_with_client(
      fast_config(redis_url_for_db(0), "f29"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        const std::array<std::string_view, 2> old_keys{"f29:a", "f29:b"};
        (void)co_await client.del(old_keys);
        auto add = [&](const std::string& stream, int n) -> asio::awaitable<std::string> {
          const std::vector<std::pair<std::string, std::string>> data{{"n", std::to_string(n)}};
          co_return co_await client.xadd(stream, fields_of(data));
        };
        // A handler that records the IDs it is given; a deleted entry must never reach it.
        auto recorder = [](std::vector<std::string>& seen) {
          return [&seen](const StreamEntry& e) -> asio::awaitable<void> {
            if (e.deleted || e.fields.empty())
              ADD_FAILURE() << "a deleted entry reached the handler";
            seen.push_back(e.id);
            co_return;
          };
        };

        // Own-pending path: c1 read 5 entries and "crashed"; the first 3 were trimmed away.
        EXPECT_TRUE(co_await client.xgroup_create("f29:a", "g", "0", true));
        std::vector<std::string> ids;
        for (int i = 0; i < 5; ++i) ids.push_back(co_await add("f29:a", i));
        ReadGroupOptions read;
        read.count = 10;
        EXPECT_EQ((co_await client.xreadgroup("g", "c1", "f29:a", ">", read)).size(), 5u);
        EXPECT_EQ(co_await client.xtrim("f29:a", ts::redis::TrimOptions::min_id(ids[3], false)), 3);
        {
          std::vector<std::string> seen;
          StreamConsumerConfig cc = consumer_config("f29:a", "c1", 50ms);
          cc.claim_interval = 100ms;
          StreamConsumer consumer(client, cc, recorder(seen));
          Running running;
          running.start(io, consumer);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 2; }, 3s));
          const std::string fresh = co_await add("f29:a", 5);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 3; }, 3s))
              << "the consumer stopped after the deleted entries";
          EXPECT_FALSE(running.done) << "run() ended";
          co_await running.stop(consumer);
          EXPECT_EQ(consumer.stats().deleted, 3u);
          EXPECT_EQ(consumer.stats().read_errors, 0u);
          EXPECT_EQ(seen, (std::vector<std::string>{ids[3], ids[4], fresh}));
          EXPECT_EQ((co_await client.xpending("f29:a", "g")).count, 0);
        }

        // XAUTOCLAIM path: "dead" read 4 entries and died; 2 of them were deleted.
        EXPECT_TRUE(co_await client.xgroup_create("f29:b", "g", "0", true));
        ids.clear();
        for (int i = 0; i < 4; ++i) ids.push_back(co_await add("f29:b", i));
        EXPECT_EQ((co_await client.xreadgroup("g", "dead", "f29:b", ">", read)).size(), 4u);
        const std::vector<std::string_view> gone{ids[0], ids[2]};
        EXPECT_EQ((co_await client.command("XDEL", "f29:b", gone)).as_int(), 2);
        {
          std::vector<std::string> seen;
          StreamConsumerConfig cc = consumer_config("f29:b", "c2", 50ms);
          cc.claim_interval = 100ms;
          cc.claim_min_idle = 10ms;
          StreamConsumer consumer(client, cc, recorder(seen));
          Running running;
          running.start(io, consumer);
          EXPECT_TRUE(co_await eventually(
              [&] { return consumer.stats().deleted == 2 && seen.size() == 2; }, 3s))
              << "deleted " << consumer.stats().deleted << ", handled " << seen.size();
          const std::string fresh = co_await add("f29:b", 4);
          EXPECT_TRUE(co_await eventually([&] { return seen.size() == 3; }, 3s));
          EXPECT_FALSE(running.done) << "run() ended";
          co_await running.stop(consumer);
          EXPECT_EQ(consumer.stats().claimed, 2u);
          EXPECT_EQ(consumer.stats().deleted, 2u);
          EXPECT_EQ(consumer.stats().read_errors, 0u);
          EXPECT_EQ(seen, (std::vector<std::string>{ids[1], ids[3], fresh}));
          EXPECT_EQ((co_await client.xpending("f29:b", "g")).count, 0);
        }
        co_await client.close();
      });
}

// ---- F30 -------------------------------------------------------------------------------------

// Stream and group missing (fresh key): the consumer creates both (XGROUP CREATE MKSTREAM), a
// second consumer's BUSYGROUP is fine. Own pending entries are handled before new ones. After
// FLUSHDB of the (dedicated) database while the consumer runs, it re-creates the group on
// NOGROUP and goes on consuming new entries.
TEST(RedisFault, F30_MissingStreamOrGroupIsRecreated) {
  TS_SKIP_IF_EXTERNAL();
  constexpr std::uint32_t kDb = 3;
  RedisAdmin admin(kDb);
  admin.ok({"FLUSHDB"});
  ScopeExit clean([&] { admin.ok({"FLUSHDB"}); });
  run_with_client(
      fast_config(redis_url_for_db(kDb), "f30"), 20s,
      [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        auto add = [&](int n) -> asio::awaitable<std::string> {
          const std::vector<std::pair<std::string, std::string>> data{{"n", std::to_string(n)}};
          co_return co_await client.xadd("f30:s", fields_of(data));
        };
        auto config_for = [](const std::string& consumer) {
          StreamConsumerConfig cc = consumer_config("f30:s", consumer, 100ms);
          cc.claim_interval = 200ms;
          cc.error_backoff = 50ms;
          return cc;
        };
        auto ignore = [](const StreamEntry&) -> asio::awaitable<void> { co_return; };

        // Fresh key: created with MKSTREAM; a second consumer meets BUSYGROUP and is fine.
        const Reply exists = co_await client.command("EXISTS", "f30:s");
        EXPECT_EQ(exists.as_int(), 0);
        StreamConsumer first(client, config_for("c1"), ignore);
        co_await first.ensure_group();
        EXPECT_EQ(first.stats().groups_created, 1u);
        StreamConsumer second(client, config_for("c2"), ignore);
        const Outcome busy = co_await outcome([&] { return second.ensure_group(); });
        EXPECT_FALSE(busy.failed) << describe(busy);
        EXPECT_EQ(second.stats().groups_created, 0u);
        const auto groups = co_await client.xinfo_groups("f30:s");
        EXPECT_EQ(groups.size(), 1u);
        EXPECT_EQ(groups.empty() ? std::string() : groups.front().name, "g");

        // Own pending entries first: c3 read e0, e1 and "crashed"; e2, e3 came later.
        std::vector<std::string> ids;
        ids.push_back(co_await add(0));
        ids.push_back(co_await add(1));
        ReadGroupOptions read;
        read.count = 2;
        EXPECT_EQ((co_await client.xreadgroup("g", "c3", "f30:s", ">", read)).size(), 2u);
        ids.push_back(co_await add(2));
        ids.push_back(co_await add(3));
        std::vector<std::string> order;
        StreamConsumer consumer(client, config_for("c3"),
                                [&](const StreamEntry& e) -> asio::awaitable<void> {
                                  order.push_back(e.id);
                                  co_return;
                                });
        Running running;
        running.start(io, consumer);
        EXPECT_TRUE(co_await eventually([&] { return order.size() == 4; }, 3s));
        EXPECT_EQ(order, ids) << "own pending entries must come first, then new ones";

        // FLUSHDB while the consumer runs (blocked in XREADGROUP): the group is gone.
        const auto created_before = consumer.stats().groups_created;
        admin.ok({"FLUSHDB"});
        EXPECT_TRUE(co_await eventually(
            [&] { return consumer.stats().groups_created > created_before; }, 3s))
            << "the group was not re-created; read errors " << consumer.stats().read_errors;
        const std::string after = co_await add(100);
        EXPECT_TRUE(co_await eventually([&] { return order.size() == 5; }, 3s))
            << "no consumption after FLUSHDB";
        if (order.size() >= 5) {
          EXPECT_EQ(order[4], after);
        }
        EXPECT_FALSE(running.done) << "run() ended";
        EXPECT_GE(consumer.stats().read_errors, 1u);  // UNBLOCKED / NOGROUP, logged and counted
        co_await running.stop(consumer);
        EXPECT_EQ((co_await client.xpending("f30:s", "g")).count, 0);
        co_await client.close();
      });
}

}  // namespace

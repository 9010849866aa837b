#pragma once
/// @file
/// ts-receiver and ts-feed-sim as real processes for the backfill fault tests
/// (backfill_faults_test.cpp): spawning them, reading the Redis streams back, checking that
/// every trade id is in the stream once.
#include <trading_shared/core/error.hpp>

#include "common/keys.hpp"
#include "support/redis_command.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/service_process.hpp"
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
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ts_backfill_test {

namespace ts = trading_shared;
namespace svc = trading_shared::services;
namespace tsd = trading_shared::testing::detail;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using Service = trading_shared::testing::ServiceProcess;

using trading_shared::testing::redis_command;
using trading_shared::testing::RedisReplyPtr;

/// The trade ids of `symbol` in its stream, in stream order (empty when unreadable).
inline std::vector<long long> ids_in_redis(const std::string& symbol) {
  const auto reply = redis_command({"XRANGE", svc::trade_stream(symbol), "-", "+"});
  std::vector<long long> ids;
  if (!reply || reply->type != REDIS_REPLY_ARRAY) return ids;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    std::string_view s;
    long long t = -1;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      const std::string_view name(fields->element[f]->str, fields->element[f]->len);
      const std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
      if (name == "s") s = value;
      if (name == "t") std::from_chars(value.data(), value.data() + value.size(), t);
    }
    if (s == symbol) ids.push_back(t);
  }
  return ids;
}

/// What the stream holds of a symbol: distinct ids, repeats, ids missing between the lowest and
/// the highest.
struct Tape {
  long long first = -1;
  long long last = -1;
  long long distinct = 0;
  long long repeated = 0;
  long long missing = 0;
  std::string first_missing;
};
inline Tape tape_of(const std::string& symbol) {
  auto ids = ids_in_redis(symbol);
  Tape t;
  if (ids.empty()) return t;
  std::sort(ids.begin(), ids.end());
  t.first = ids.front();
  t.last = ids.back();
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0 && ids[i] == ids[i - 1]) {
      ++t.repeated;
      continue;
    }
    ++t.distinct;
    if (i > 0 && ids[i] > ids[i - 1] + 1) {
      if (t.first_missing.empty()) t.first_missing = std::to_string(ids[i - 1] + 1);
      t.missing += ids[i] - ids[i - 1] - 1;
    }
  }
  return t;
}
inline std::string describe(const Tape& t) {
  return "ids " + std::to_string(t.first) + ".." + std::to_string(t.last) + ": " +
         std::to_string(t.distinct) + " distinct, " + std::to_string(t.missing) +
         " missing (first " + (t.first_missing.empty() ? "-" : t.first_missing) + "), " +
         std::to_string(t.repeated) + " repeated";
}

inline long long json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1LL : std::atoll(json.c_str() + at + key.size() + 3);
}
/// How many trades of `symbol` ts-feed-sim generated (its summary's "symbols" object), or -1.
inline long long sim_count(const std::string& summary, const std::string& symbol) {
  const auto at = summary.find("\"" + symbol + "\":{");
  if (at == std::string::npos) return -1;
  return json_number(summary.substr(at), "count");
}

template <typename Condition>
inline bool wait_for(Condition condition, std::chrono::milliseconds bound) {
  const auto deadline = Clock::now() + bound;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    tsd::poll_pause(20);
  }
  return true;
}

/// A test's processes, directory and symbols (unique per run: the streams are shared buckets).
class Venue {
 public:
  Venue(const std::string& name, const std::vector<std::string>& symbol_names)
      : dir_(std::filesystem::temp_directory_path() /
             ("ts-backfill-" + name + "-" + std::to_string(::getpid()))),
        port_(std::to_string(ts::testing::free_loopback_port())) {
    std::filesystem::create_directories(dir_);
    const std::string suffix = std::to_string(::getpid() % 100000);
    for (auto& s : symbol_names) symbols.push_back(s + suffix);
    for (const auto& s : symbols) {
      (void)redis_command({"HDEL", svc::tape_key(s), s, svc::tape_gaps_field(s)});
    }
  }
  ~Venue() {
    for (const auto& s : symbols) {
      (void)redis_command({"HDEL", svc::tape_key(s), s, svc::tape_gaps_field(s)});
    }
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::string list() const {
    std::string out;
    for (const auto& s : symbols) out += (out.empty() ? "" : ",") + s;
    return out;
  }
  std::string dir() const { return dir_.string(); }
  Service sim(std::vector<std::string> extra) {
    std::vector<std::string> argv{
        TS_FEED_SIM_BIN, "--listen",       "127.0.0.1:" + port_, "--symbols",
        list(),          "--keep-trading", "--summary-file",     dir() + "/sim.json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Service::spawn(dir(), "sim", std::move(argv));
  }
  Service receiver(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{TS_RECEIVER_BIN,
                                  "--feed-url",
                                  "ws://127.0.0.1:" + port_ + "/ws",
                                  "--symbols",
                                  list(),
                                  "--redis-url",
                                  ts::testing::Servers::instance().redis_url(),
                                  "--summary-file",
                                  dir() + "/" + name + ".json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return Service::spawn(dir(), name, std::move(argv));
  }
  std::string summary(const std::string& name) const {
    return tsd::file_size_or_zero(dir() + "/" + name + ".json") > 0
               ? tsd::read_text_file(dir() + "/" + name + ".json")
               : std::string();
  }
  std::vector<std::string> symbols;

 private:
  std::filesystem::path dir_;
  std::string port_;
};

/// Waits until every symbol's stream holds ids first..`until` without a hole.
inline bool complete_through(const Venue& v, long long until, std::chrono::milliseconds bound) {
  return wait_for(
      [&] {
        for (const auto& s : v.symbols) {
          const Tape t = tape_of(s);
          if (t.last < until || t.missing > 0) return false;
        }
        return true;
      },
      bound);
}

/// Stops the receiver and the simulator; checks every symbol's tape against the simulator's
/// count: every id from 1 to the last generated is in the stream, at most `max_repeated` of
/// them twice. A receiver killed between writing a batch and storing the tape that covers it,
/// or a write retried after a timeout whose first attempt Redis had applied, writes up to a
/// batch again (the recorder's primary key absorbs the repeats; the e2e F56 test checks
/// `ticks`); without a kill or a timeout, no id is repeated.
inline void check_tapes(Venue& v, Service& receiver, Service& sim, const std::string& receiver_name,
                        long long max_repeated = 0) {
  receiver.signal(SIGTERM);
  EXPECT_EQ(receiver.wait(20s), 0) << tsd::read_text_file(receiver.log);
  sim.signal(SIGTERM);
  EXPECT_EQ(sim.wait(20s), 0) << tsd::read_text_file(sim.log);
  const std::string sim_summary = v.summary("sim");
  for (const auto& s : v.symbols) {
    const Tape t = tape_of(s);
    const long long generated = sim_count(sim_summary, s);
    EXPECT_EQ(t.first, 1) << s << ": " << describe(t);
    EXPECT_EQ(t.last, generated) << s << ": " << describe(t) << "; the venue generated "
                                 << generated;
    EXPECT_EQ(t.missing, 0) << s << ": " << describe(t) << "\n"
                            << tsd::read_text_file(receiver.log);
    EXPECT_LE(t.repeated, max_repeated) << s << ": " << describe(t);
  }
  (void)receiver_name;
}

}  // namespace ts_backfill_test

// The helpers of the RedisClient and StreamConsumer fault tests F17-F30 (redis_*_faults_test.cpp,
// one binary, `redis_fault_test`): outcome tallies of callers that give up, INFO commandstats,
// a StreamConsumer run in the background, and the configurations of the tests. What every Redis
// fault test uses (RedisAdmin, ScopedConfig, fast_config, URLs) is in redis_fault_support.hpp.
//
// The tests of the binary share one Redis and run one after the other: every test leaves the
// server running, unpaused and with its settings back when it ends, also when it fails (RAII
// guards). Isolation: one key prefix per test ("f17:"), one client name per client (so that
// CLIENT LIST can be filtered), dedicated database numbers where a test must load or flush data.
#pragma once

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

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
#include <stdexcept>
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
using RedisErrorClass = ts::redis::ErrorClass;
using ts::core::CircuitState;
using ts::redis::CommandOptions;
using ts::redis::FieldView;
using ts::redis::ReadGroupOptions;
using ts::redis::RedisClient;
using ts::redis::RedisConfig;
using ts::redis::Reply;
using ts::redis::StreamConsumer;
using ts::redis::StreamConsumerConfig;
using ts::redis::StreamEntry;
using ts::testing::describe;
using ts::testing::Direction;
using ts::testing::elapsed_ms;
using ts::testing::FaultProxy;
using ts::testing::LogCapture;
using ts::testing::open_descriptors;
using ts::testing::Outcome;
using ts::testing::outcome;
using ts::testing::pause_for;
using ts::testing::ServerProcess;
using ts::testing::Servers;
using ts::testing::fault::AdminReply;
using ts::testing::fault::BackgroundLoop;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;
using ts::testing::fault::fast_config;
using ts::testing::fault::redis_url_for_db;
using ts::testing::fault::redis_url_for_port;
using ts::testing::fault::RedisAdmin;
using ts::testing::fault::run_with_client;
using ts::testing::fault::ScopedConfig;
using ts::testing::fault::ScopeExit;
using ts::testing::fault::with_client;

namespace redis_fault_test {

inline Servers& servers() {
  return Servers::instance();
}

inline std::string state_name(CircuitState s) {
  return std::string(ts::core::to_string(s));
}

/// The next test finds Redis serving (the server is shared).
inline void expect_redis_healthy() {
  EXPECT_TRUE(ts::testing::poll_until([] { return ts::testing::fault::redis_serves(); }, 20s))
      << "Redis left unhealthy";
}

/// Polls an asynchronous condition until it holds or `timeout` passes.
inline asio::awaitable<bool> eventually_async(std::function<asio::awaitable<bool>()> condition,
                                              Clock::duration timeout,
                                              Clock::duration step = milliseconds(20)) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (co_await condition()) co_return true;
    if (Clock::now() >= deadline) co_return false;
    co_await pause_for(step);
  }
}

inline bool is_timeout_code(const std::error_code& code) {
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
inline auto count_done(int& counter, const char* what) {
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
inline void tolerant_breaker(RedisConfig& config) {
  config.breaker.window_size = 1000;
  config.breaker.min_calls = 1000;
  config.breaker.failure_rate_threshold = 1.0;
}

/// Server-side ID of the only connection named `name` ("" when there is not exactly one).
inline std::string only_connection_id(RedisAdmin& admin, const std::string& name) {
  auto list = admin.clients_named(name);
  return list.size() == 1 ? list.front()["id"] : std::string();
}

/// A field of a "key:value,key:value" line of INFO (e.g. a commandstats line), or of the
/// "name:value" line itself; 0 when absent.
inline std::int64_t info_number(RedisAdmin& admin, const std::string& section,
                                const std::string& line, const std::string& field = {}) {
  const std::string info = admin.ok({"INFO", section}).str;
  const std::string prefix = line + ":";
  std::size_t pos = 0;
  for (;;) {
    pos = info.find(prefix, pos);
    if (pos == std::string::npos) return 0;
    if (pos == 0 || info[pos - 1] == '\n') break;
    pos += prefix.size();
  }
  const std::size_t start = pos + prefix.size();
  const std::string value = info.substr(start, info.find_first_of("\r\n", start) - start);
  if (field.empty()) return std::stoll(value);
  // "calls=1,usec=2,...": match whole keys.
  std::size_t at = 0;
  while (at < value.size()) {
    const std::size_t comma = value.find(',', at);
    const std::string item =
        value.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (item.rfind(field + "=", 0) == 0) return std::stoll(item.substr(field.size() + 1));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return 0;
}

/// calls / rejected_calls / failed_calls of one command in INFO commandstats.
inline std::int64_t command_stat(RedisAdmin& admin, const std::string& command,
                                 const std::string& field) {
  return info_number(admin, "commandstats", "cmdstat_" + command, field);
}

/// A StreamConsumer's run() in the background of the test's loop.
struct Running {
  bool done = false;
  std::exception_ptr error;

  void start(asio::io_context& io, StreamConsumer& consumer) {
    asio::co_spawn(io, consumer.run(), [this](std::exception_ptr e) {
      error = e;
      done = true;
    });
  }
  /// stop(), then waits (bounded) for run() to return; fails the test if it threw.
  asio::awaitable<void> stop(StreamConsumer& consumer) {
    consumer.stop();
    EXPECT_TRUE(co_await eventually([this] { return done; }, 5s)) << "run() did not return";
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "run() ended with an error: " << e.what();
      }
    }
  }
};

/// Consumer `consumer` of the group "g" of `stream`, reading new entries with BLOCK `block`.
inline StreamConsumerConfig consumer_config(std::string stream, std::string consumer,
                                            milliseconds block) {
  StreamConsumerConfig cc;
  cc.stream = std::move(stream);
  cc.group = "g";
  cc.consumer = std::move(consumer);
  cc.block = block;
  return cc;
}

inline std::vector<FieldView> fields_of(
    const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<FieldView> out;
  for (const auto& [k, v] : pairs) out.emplace_back(k, v);
  return out;
}

}  // namespace redis_fault_test

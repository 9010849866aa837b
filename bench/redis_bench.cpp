// ts_redis_bench: the RedisClient side of the Redis benchmarks (docs/performance.md R1-R3).
// bench/run-bench runs it next to the anchors (redis-benchmark, redis-py), on the same server.
//
//   ts_redis_bench --figure xadd   --url URL [--seconds 5] [--warmup 1] [--batch 1000]     (R1)
//                  [--api count|ids]
//   ts_redis_bench --figure xadd   --url URL --ops N [--warmup-ops 2] [--batch 1000] (callgrind)
//   ts_redis_bench --figure get50  --url URL [--seconds 5] [--warmup 1] [--concurrency 50] (R2)
//   ts_redis_bench --figure getseq --url URL [--seconds 5] [--warmup 1]                    (R3)
//   ts_redis_bench --figure getseq --url URL --ops N [--warmup-ops 200]       (R3, callgrind)
// Every figure takes [--metrics 1|0]: the client's round-trip histogram attached (default, as
// the services run it: ts_redis_round_trip_seconds) or not, and [--tls-ca-file PEM]: the CA of a
// rediss:// URL's server (RedisConfig::tls.ca_file; peer and host name verified, T1).
//   ts_redis_bench --figure request --url URL [--seconds 5] [--warmup 1] [--batch 1000]
//   ts_redis_bench --figure request --url URL --ops N [--warmup-ops 2] [--batch 1000] (callgrind)
//
// xadd:   one caller, batches of `--batch` entries {f: v} (redis-benchmark's
//         `XADD s '*' f v`), one batch in flight at a time; entries/s. The stream is deleted
//         after the warm-up and at the end (it is never trimmed while measured, like the
//         anchors'). `--api count` (default): `xadd_bulk_count`, which does not build the
//         IDs (the benchmark, like redis-benchmark, does not use them); `--api ids`:
//         `xadd_bulk`, which returns them. With `--ops N`: exactly N batches after
//         `--warmup-ops` batches (callgrind: instructions per entry).
// get50:  `--concurrency` coroutines GET one key (3-byte value, as redis-benchmark's) on the
//         client's one multiplexed connection; ops/s.
// getseq: one caller, sequential GETs; ops/s. With `--ops N`: exactly N GETs after
//         `--warmup-ops` (no timing loop: the driver counts instructions under callgrind).
// request: ts-receiver's write path (it sends --batch 512): a reused `Request` of `--batch`
//         XADDs of a trade's 8 fields and one HSET of the last price, pushed command by command
//         (each checked by `detail::check_shared_command`) and sent with `pipeline()`; entries/s.
//         With
//         `--ops N`: exactly N batches after `--warmup-ops` (callgrind: instructions per entry,
//         and the check's own share with `callgrind_annotate --inclusive=yes`).
//
// Prints `BENCH <name> <value> <unit>` (name: --name, or the figure's default) and a DETAIL line
// with the client's counters. Exit status: 0 ok, 1 failure, 2 bad arguments.
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace core = trading_shared::core;
namespace redis = trading_shared::redis;
using namespace std::chrono_literals;
using bench::Clock;
using bench::print_bench;
using bench::seconds_since;
using bench::to_duration;

namespace {

struct Options {
  std::string figure;
  std::string url;
  std::string name;
  std::string key;            // stream (xadd) or key (get50, getseq); default per figure
  std::string api = "count";  // xadd: "count" (xadd_bulk_count) or "ids" (xadd_bulk)
  double seconds = 5.0;
  double warmup = 1.0;
  int batch = 1000;
  int concurrency = 50;
  long ops = 0;             // getseq, xadd: > 0 = fixed count (callgrind) instead of a timed run
  long warmup_ops = -1;     // default: 200 GETs, 2 batches
  double timeout = 120.0;   // whole program, seconds
  int metrics = 1;          // 1: the round-trip histogram attached, as the services run it
  std::string tls_ca_file;  // rediss://: RedisConfig::tls.ca_file (T1)
};

Options parse(int argc, char** argv) {
  Options o;
  bench::Args args(argc, argv);
  args.take("figure", o.figure);
  args.take("url", o.url);
  args.take("name", o.name);
  args.take("key", o.key);
  args.take("api", o.api);
  args.take("seconds", o.seconds);
  args.take("warmup", o.warmup);
  args.take("batch", o.batch);
  args.take("concurrency", o.concurrency);
  args.take("ops", o.ops);
  args.take("warmup-ops", o.warmup_ops);
  args.take("timeout", o.timeout);
  args.take("metrics", o.metrics);
  args.take("tls-ca-file", o.tls_ca_file);
  args.finish();
  if (o.figure.empty() || o.url.empty()) {
    throw std::invalid_argument("--figure and --url are required");
  }
  if (o.batch < 1 || o.concurrency < 1) {
    throw std::invalid_argument("--batch and --concurrency must be positive");
  }
  if (o.api != "count" && o.api != "ids") throw std::invalid_argument("--api is count or ids");
  if (o.warmup_ops < 0) o.warmup_ops = o.figure == "xadd" || o.figure == "request" ? 2 : 200;
  return o;
}

redis::RedisConfig make_config(const Options& o) {
  redis::RedisConfig config;
  config.url = o.url;
  config.tls.ca_file = o.tls_ca_file;  // rediss:// (the URL enables TLS); verify_peer stays on
  config.client_name = "ts_redis_bench";
  // Generous: a busy 2-core machine must not turn into spurious timeouts. Deadlines are not
  // on the measured path's cost (a timer per call either way).
  config.command_timeout = 10s;
  config.startup_timeout = 20s;
  return config;
}

void print_stats(const std::string& name, const redis::RedisClient& client) {
  const redis::RedisStats s = client.stats();
  std::printf(
      "DETAIL %s client: commands=%llu replies=%llu writes=%llu failures=%llu timeouts=%llu "
      "disconnects=%llu health_checks=%llu\n",
      name.c_str(), static_cast<unsigned long long>(s.commands),
      static_cast<unsigned long long>(s.replies), static_cast<unsigned long long>(s.writes),
      static_cast<unsigned long long>(s.failures), static_cast<unsigned long long>(s.timeouts),
      static_cast<unsigned long long>(s.disconnects),
      static_cast<unsigned long long>(s.health_checks));
  std::fflush(stdout);
}

// Deleting a stream of millions of entries takes a while on the server: not the default deadline.
const redis::CommandOptions kSlow{60s};

// Redis-benchmark's GET reads a 3-byte value ("xxx", its default -d 3).
constexpr std::string_view kValue = "xxx";

// ---- R1: xadd_bulk, batches of 1000, one connection -------------------------------------------

asio::awaitable<void> run_xadd(const Options& o, redis::RedisClient& client) {
  const std::string stream = o.key.empty() ? "bench:r1:ours" : o.key;
  const std::string name = o.name.empty() ? "ours_xadd_bulk" : o.name;
  // One field-value pair per entry, as redis-benchmark's `XADD s '*' f v`.
  const std::vector<std::array<redis::FieldView, 1>> entries(
      static_cast<std::size_t>(o.batch), std::array<redis::FieldView, 1>{{{"f", "v"}}});
  // Named, not the default argument: GCC 12 destroys a defaulted XAddOptions temporary (it
  // holds a std::string) inside a co_await expression twice ("free(): invalid pointer").
  const redis::XAddOptions xadd_options{};
  co_await client.del(stream, kSlow);

  const bool ids_api = o.api == "ids";
  // One batch; returns the number of entries added.
  auto one_batch = [&]() -> asio::awaitable<std::uint64_t> {
    std::size_t added = 0;
    if (ids_api) {
      const std::vector<std::string> ids = co_await client.xadd_bulk(stream, entries, xadd_options);
      added = ids.size();
      if (ids.empty() || ids.front().empty()) added = 0;
    } else {
      added = co_await client.xadd_bulk_count(stream, entries, xadd_options);
    }
    if (added != entries.size()) {
      throw std::runtime_error("xadd_bulk added " + std::to_string(added) + " of " +
                               std::to_string(entries.size()) + " entries");
    }
    co_return added;
  };
  // Runs batches until `duration` has passed; returns the entries added and the elapsed time.
  auto run_for =
      [&](Clock::duration duration) -> asio::awaitable<std::pair<std::uint64_t, double>> {
    std::uint64_t added = 0;
    const auto start = Clock::now();
    const auto end = start + duration;
    do {
      added += co_await one_batch();
    } while (Clock::now() < end);
    co_return std::pair{added, seconds_since(start)};
  };
  // Exactly `batches` batches (callgrind: no clock reads inside the loop).
  auto run_count = [&](long batches) -> asio::awaitable<std::pair<std::uint64_t, double>> {
    std::uint64_t added = 0;
    const auto start = Clock::now();
    for (long i = 0; i < batches; ++i) added += co_await one_batch();
    co_return std::pair{added, std::max(seconds_since(start), 1e-9)};
  };

  if (o.ops > 0) {
    co_await run_count(o.warmup_ops);
  } else {
    co_await run_for(to_duration(o.warmup));
  }
  co_await client.del(stream, kSlow);
  std::pair<std::uint64_t, double> run;
  if (o.ops > 0) {
    run = co_await run_count(o.ops);
  } else {
    run = co_await run_for(to_duration(o.seconds));
  }
  const auto [added, elapsed] = run;
  const std::int64_t length = co_await client.xlen(stream);
  co_await client.del(stream, kSlow);
  if (length != static_cast<std::int64_t>(added)) {
    throw std::runtime_error("stream holds " + std::to_string(length) + " entries, " +
                             std::to_string(added) + " were added");
  }
  print_stats(name, client);
  print_bench(name, static_cast<double>(added) / elapsed, "entries/s");
}

// ---- R2: many coroutines, GET, one multiplexed connection ------------------------------------

asio::awaitable<void> run_get_concurrent(const Options& o, redis::RedisClient& client) {
  const std::string key = o.key.empty() ? "bench:r2:ours" : o.key;
  const std::string name = o.name.empty() ? "ours_get_c" + std::to_string(o.concurrency) : o.name;
  co_await client.set(key, kValue);
  const bench::ClosedLoopResult run = co_await bench::run_closed_loop(
      o.concurrency, o.warmup, o.seconds,
      [&](int, bench::ClosedLoop& loop) -> asio::awaitable<void> {
        while (!loop.stop) {
          const std::optional<std::string> value = co_await client.get(key);
          if (!value || value->size() != kValue.size())
            throw std::runtime_error("GET: wrong value");
          if (loop.measuring) ++loop.completed;
        }
      });
  if (run.failure) std::rethrow_exception(run.failure);
  co_await client.del(key);
  print_stats(name, client);
  print_bench(name, static_cast<double>(run.count) / run.elapsed, "ops/s");
}

// ---- R3: sequential GET, one caller ---------------------------------------------------------

asio::awaitable<void> run_get_sequential(const Options& o, redis::RedisClient& client) {
  const std::string key = o.key.empty() ? "bench:r3:ours" : o.key;
  const std::string name = o.name.empty() ? "ours_get_seq" : o.name;
  co_await client.set(key, kValue);
  std::uint64_t bytes = 0;
  auto get_one = [&]() -> asio::awaitable<void> {
    const std::optional<std::string> value = co_await client.get(key);
    if (!value) throw std::runtime_error("GET: nil");
    bytes += value->size();
  };
  double rate = 0;
  if (o.ops > 0) {
    // Fixed count (callgrind): the same loop, no clock reads inside it.
    for (long i = 0; i < o.warmup_ops; ++i) co_await get_one();
    const auto start = Clock::now();
    for (long i = 0; i < o.ops; ++i) co_await get_one();
    rate = static_cast<double>(o.ops) / std::max(seconds_since(start), 1e-9);
    if (bytes != static_cast<std::uint64_t>(o.warmup_ops + o.ops) * kValue.size()) {
      throw std::runtime_error("GET returned garbage");
    }
  } else {
    const auto warm_end = Clock::now() + to_duration(o.warmup);
    do {
      co_await get_one();
    } while (Clock::now() < warm_end);
    std::uint64_t count = 0;
    const auto start = Clock::now();
    const auto end = start + to_duration(o.seconds);
    do {
      co_await get_one();
      ++count;
    } while (Clock::now() < end);
    rate = static_cast<double>(count) / seconds_since(start);
  }
  co_await client.del(key);
  print_stats(name, client);
  print_bench(name, rate, "ops/s");
}

// ---- ts-receiver's write path: Request::push of XADDs and an HSET, then pipeline() ---------

asio::awaitable<void> run_request(const Options& o, redis::RedisClient& client) {
  const std::string stream = o.key.empty() ? "bench:request:ours" : o.key;
  const std::string last = stream + ":last";
  const std::string name = o.name.empty() ? "ours_request" : o.name;
  const auto batch = static_cast<std::size_t>(o.batch);
  co_await client.del(stream, kSlow);
  redis::Request request;
  std::uint64_t id = 0;
  auto one_batch = [&]() -> asio::awaitable<std::uint64_t> {
    request.clear();
    for (std::size_t i = 0; i < batch; ++i) {
      const std::string t = std::to_string(++id);
      const std::array<std::string_view, 16> fields{"s", "BTCUSDT",
                                                    "t", t,
                                                    "p", "60000.12",
                                                    "q", "0.00123",
                                                    "T", "1700000000000",
                                                    "E", "1700000000001",
                                                    "m", "1",
                                                    "r", "1700000000001234"};
      request.push("XADD", stream, "*", fields);
    }
    const std::array<std::string_view, 6> price{"p", "60000.12", "t", "1", "T", "1700000000000"};
    request.push("HSET", last, price);
    const std::vector<redis::Reply> replies = co_await client.pipeline(request);
    for (const auto& reply : replies) {
      if (reply.is_error()) throw std::runtime_error("request: " + reply.debug_string());
    }
    co_return batch;
  };
  auto run_count = [&](long batches) -> asio::awaitable<std::pair<std::uint64_t, double>> {
    std::uint64_t added = 0;
    const auto start = Clock::now();
    for (long i = 0; i < batches; ++i) added += co_await one_batch();
    co_return std::pair{added, std::max(seconds_since(start), 1e-9)};
  };
  auto run_for =
      [&](Clock::duration duration) -> asio::awaitable<std::pair<std::uint64_t, double>> {
    std::uint64_t added = 0;
    const auto start = Clock::now();
    const auto end = start + duration;
    do {
      added += co_await one_batch();
    } while (Clock::now() < end);
    co_return std::pair{added, seconds_since(start)};
  };
  if (o.ops > 0) {
    co_await run_count(o.warmup_ops);
  } else {
    co_await run_for(to_duration(o.warmup));
  }
  std::pair<std::uint64_t, double> run;
  if (o.ops > 0) {
    run = co_await run_count(o.ops);
  } else {
    run = co_await run_for(to_duration(o.seconds));
  }
  const auto [added, elapsed] = run;
  co_await client.del(stream, kSlow);
  co_await client.del(last);
  print_stats(name, client);
  print_bench(name, static_cast<double>(added) / elapsed, "entries/s");
}

asio::awaitable<void> run_on(const Options& o, redis::RedisClient& client) {
  if (o.figure == "xadd") {
    co_await run_xadd(o, client);
  } else if (o.figure == "get50") {
    co_await run_get_concurrent(o, client);
  } else if (o.figure == "getseq") {
    co_await run_get_sequential(o, client);
  } else if (o.figure == "request") {
    co_await run_request(o, client);
  } else {
    throw std::invalid_argument("unknown --figure " + o.figure);
  }
}

asio::awaitable<void> run_figure(const Options& o) {
  redis::RedisClient client(co_await asio::this_coro::executor, make_config(o));
  // As the services run it: every request's round trip observed (ts_redis_round_trip_seconds).
  core::Histogram round_trip(core::Histogram::kLatencyBounds);
  if (o.metrics != 0) client.set_round_trip_histogram(&round_trip);
  co_await client.start();
  co_await bench::closing(client, run_on(o, client));
}

}  // namespace

int main(int argc, char** argv) {
  return bench::run_main("ts_redis_bench", argc, argv, parse, run_figure);
}

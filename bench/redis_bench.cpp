// ts_redis_bench: the RedisClient side of the Redis benchmarks (BENCHMARKS.md R1-R3).
// bench/run-bench runs it next to the anchors (redis-benchmark, redis-py), on the same server.
//
//   ts_redis_bench --figure xadd   --url URL [--seconds 5] [--warmup 1] [--batch 1000]     (R1)
//   ts_redis_bench --figure get50  --url URL [--seconds 5] [--warmup 1] [--concurrency 50] (R2)
//   ts_redis_bench --figure getseq --url URL [--seconds 5] [--warmup 1]                    (R3)
//   ts_redis_bench --figure getseq --url URL --ops N [--warmup-ops 200]       (R3, callgrind)
//
// xadd:   one caller, `xadd_bulk` of `--batch` entries {f: v} (redis-benchmark's
//         `XADD s '*' f v`), one batch in flight at a time; entries/s. The stream is deleted
//         after the warm-up and at the end (it is never trimmed while measured, like the
//         anchors').
// get50:  `--concurrency` coroutines GET one key (3-byte value, as redis-benchmark's) on the
//         client's one multiplexed connection; ops/s.
// getseq: one caller, sequential GETs; ops/s. With `--ops N`: exactly N GETs after
//         `--warmup-ops` (no timing loop: the driver counts instructions under callgrind).
//
// Prints `BENCH <name> <value> <unit>` (name: --name, or the figure's default) and a DETAIL line
// with the client's counters. Exit status: 0 ok, 1 failure, 2 bad arguments.
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace redis = trading_shared::redis;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string figure;
  std::string url;
  std::string name;
  std::string key;  // stream (xadd) or key (get50, getseq); default per figure
  double seconds = 5.0;
  double warmup = 1.0;
  int batch = 1000;
  int concurrency = 50;
  long ops = 0;  // getseq: > 0 = fixed count (callgrind) instead of a timed run
  long warmup_ops = 200;
  double timeout = 120.0;  // whole program, seconds
};

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
      throw std::invalid_argument("bad argument: " + key + " (arguments are --key value)");
    }
    args[key.substr(2)] = argv[++i];
  }
  auto take = [&](const char* key, auto& out) {
    auto it = args.find(key);
    if (it == args.end()) return;
    using T = std::remove_reference_t<decltype(out)>;
    if constexpr (std::is_same_v<T, std::string>) {
      out = it->second;
    } else if constexpr (std::is_same_v<T, double>) {
      out = std::stod(it->second);
    } else if constexpr (std::is_same_v<T, int>) {
      out = std::stoi(it->second);
    } else {
      out = std::stol(it->second);
    }
    args.erase(it);
  };
  take("figure", o.figure);
  take("url", o.url);
  take("name", o.name);
  take("key", o.key);
  take("seconds", o.seconds);
  take("warmup", o.warmup);
  take("batch", o.batch);
  take("concurrency", o.concurrency);
  take("ops", o.ops);
  take("warmup-ops", o.warmup_ops);
  take("timeout", o.timeout);
  if (!args.empty()) throw std::invalid_argument("unknown argument: --" + args.begin()->first);
  if (o.figure.empty() || o.url.empty()) {
    throw std::invalid_argument("--figure and --url are required");
  }
  if (o.batch < 1 || o.concurrency < 1) {
    throw std::invalid_argument("--batch and --concurrency must be positive");
  }
  return o;
}

redis::RedisConfig make_config(const Options& o) {
  redis::RedisConfig config;
  config.url = o.url;
  config.client_name = "ts_redis_bench";
  // Generous: a busy 2-core machine must not turn into spurious timeouts. Deadlines are not
  // on the measured path's cost (a timer per call either way).
  config.command_timeout = 10s;
  config.startup_timeout = 20s;
  return config;
}

void print_bench(const std::string& name, double value, const char* unit) {
  std::printf("BENCH %s %.0f %s\n", name.c_str(), value, unit);
  std::fflush(stdout);
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

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

asio::awaitable<void> sleep_for(Clock::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
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

  // Runs batches until `duration` has passed; returns the entries added and the elapsed time.
  auto run_for =
      [&](Clock::duration duration) -> asio::awaitable<std::pair<std::uint64_t, double>> {
    std::uint64_t added = 0;
    const auto start = Clock::now();
    const auto end = start + duration;
    do {
      const std::vector<std::string> ids = co_await client.xadd_bulk(stream, entries, xadd_options);
      if (ids.size() != entries.size() || ids.front().empty()) {
        throw std::runtime_error("xadd_bulk returned " + std::to_string(ids.size()) + " IDs for " +
                                 std::to_string(entries.size()) + " entries");
      }
      added += ids.size();
    } while (Clock::now() < end);
    co_return std::pair{added, seconds_since(start)};
  };

  co_await run_for(to_duration(o.warmup));
  co_await client.del(stream, kSlow);
  const auto [added, elapsed] = co_await run_for(to_duration(o.seconds));
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
  auto executor = co_await asio::this_coro::executor;
  bool stop = false;
  bool measuring = false;
  std::uint64_t completed = 0;
  int live = o.concurrency;
  std::exception_ptr failure;
  asio::steady_timer all_done(executor, Clock::time_point::max());

  auto worker = [&]() -> asio::awaitable<void> {
    while (!stop) {
      const std::optional<std::string> value = co_await client.get(key);
      if (!value || value->size() != kValue.size()) throw std::runtime_error("GET: wrong value");
      if (measuring) ++completed;
    }
  };
  for (int i = 0; i < o.concurrency; ++i) {
    asio::co_spawn(executor, worker(), [&](std::exception_ptr e) {
      if (e && !failure) failure = e;
      if (e) stop = true;
      if (--live == 0) all_done.cancel();
    });
  }
  co_await sleep_for(to_duration(o.warmup));
  measuring = true;
  const auto start = Clock::now();
  co_await sleep_for(to_duration(o.seconds));
  measuring = false;
  const double elapsed = seconds_since(start);
  const std::uint64_t count = completed;
  stop = true;
  boost::system::error_code ec;
  while (live > 0) co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (failure) std::rethrow_exception(failure);
  co_await client.del(key);
  print_stats(name, client);
  print_bench(name, static_cast<double>(count) / elapsed, "ops/s");
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

asio::awaitable<void> run_figure(const Options& o) {
  redis::RedisClient client(co_await asio::this_coro::executor, make_config(o));
  co_await client.start();
  std::exception_ptr failure;
  try {
    if (o.figure == "xadd") {
      co_await run_xadd(o, client);
    } else if (o.figure == "get50") {
      co_await run_get_concurrent(o, client);
    } else if (o.figure == "getseq") {
      co_await run_get_sequential(o, client);
    } else {
      throw std::invalid_argument("unknown --figure " + o.figure);
    }
  } catch (...) {
    failure = std::current_exception();
  }
  co_await client.close();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ts_redis_bench: %s\n", e.what());
    return 2;
  }
  // A watchdog thread bounds the run; the loop itself runs with plain run(), so that the
  // instructions counted under callgrind (R3) are the client's, not a run_for() loop's.
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    const auto limit = std::chrono::duration<double>(options.timeout);
    if (!finished.wait_for(lock, limit, [&] { return done; })) {
      std::fprintf(stderr, "ts_redis_bench: figure %s did not finish within %.0f s\n",
                   options.figure.c_str(), options.timeout);
      std::fflush(stderr);
      std::_Exit(1);  // the loop is stuck mid-operation: do not run destructors
    }
  });
  asio::io_context io(1);
  std::exception_ptr failure;
  asio::co_spawn(io, run_figure(options), [&](std::exception_ptr e) { failure = e; });
  io.run();
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  finished.notify_all();
  watchdog.join();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ts_redis_bench: figure %s failed: %s\n", options.figure.c_str(),
                   e.what());
      return 1;
    }
  }
  return 0;
}

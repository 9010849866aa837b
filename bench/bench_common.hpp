// What the figure programs ts_pg_bench and ts_redis_bench share: `--key value` arguments, the
// `BENCH <name> <value> <unit>` line, timing helpers, the closed-loop driver of the figures with
// many concurrent callers, closing a client after a figure, and main() itself (a watchdog bounds
// the run; exit status 0 ok, 1 failure, 2 bad arguments, 3 figure not available in this build).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace bench {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

/// Exit status of a figure that is not available in this build (a `SKIP` line says why).
inline constexpr int kExitSkip = 3;

/// Thrown by a figure that this build cannot run: run_main() prints `SKIP <figure> <why>`.
class SkipFigure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---- arguments ------------------------------------------------------------------------------

/// The command line as `--key value` pairs. take() moves one into an option (converted to the
/// option's type); finish() rejects any that no option took. Errors are std::invalid_argument.
class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string key = argv[i];
      if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
        throw std::invalid_argument("bad argument: " + key + " (arguments are --key value)");
      }
      args_[key.substr(2)] = argv[++i];
    }
  }

  /// Sets `out` from `--key`, when given (string, double, int or long).
  template <class T>
  void take(const char* key, T& out) {
    auto it = args_.find(key);
    if (it == args_.end()) return;
    if constexpr (std::is_same_v<T, std::string>) {
      out = it->second;
    } else if constexpr (std::is_same_v<T, double>) {
      out = std::stod(it->second);
    } else if constexpr (std::is_same_v<T, int>) {
      out = std::stoi(it->second);
    } else {
      static_assert(std::is_same_v<T, long>, "options are string, double, int or long");
      out = std::stol(it->second);
    }
    args_.erase(it);
  }

  /// Throws for the first argument that no take() consumed.
  void finish() const {
    if (!args_.empty()) throw std::invalid_argument("unknown argument: --" + args_.begin()->first);
  }

 private:
  std::map<std::string, std::string> args_;
};

// ---- output and timing ----------------------------------------------------------------------

/// The figure's result line: `BENCH <name> <value> <unit>` (the value rounded to an integer).
inline void print_bench(const std::string& name, double value, const char* unit) {
  std::printf("BENCH %s %.0f %s\n", name.c_str(), value, unit);
  std::fflush(stdout);
}

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

inline asio::awaitable<void> sleep_for(Clock::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// ---- many concurrent callers ----------------------------------------------------------------

/// What the callers of run_closed_loop() share: each loops until `stop` and, after each
/// operation, counts it in `completed` when `measuring`.
struct ClosedLoop {
  bool stop = false;
  bool measuring = false;
  std::uint64_t completed = 0;
};

struct ClosedLoopResult {
  std::uint64_t count = 0;     ///< operations completed while measuring
  double elapsed = 0;          ///< seconds measured
  std::exception_ptr failure;  ///< the first error of a caller (which stopped them all)
};

/// Runs `concurrency` callers `make_caller(index, loop)` on this coroutine's executor: `warmup`
/// seconds unmeasured, then `seconds` measured; then tells them to stop and waits until every
/// one has returned. A caller's error stops them all and is returned, not thrown.
template <class MakeCaller>
asio::awaitable<ClosedLoopResult> run_closed_loop(int concurrency, double warmup, double seconds,
                                                  MakeCaller make_caller) {
  auto executor = co_await asio::this_coro::executor;
  ClosedLoop loop;
  int live = concurrency;
  std::exception_ptr failure;
  asio::steady_timer all_done(executor, Clock::time_point::max());
  for (int i = 0; i < concurrency; ++i) {
    asio::co_spawn(executor, make_caller(i, loop), [&](const std::exception_ptr& e) {
      if (e && !failure) failure = e;
      if (e) loop.stop = true;
      if (--live == 0) all_done.cancel();
    });
  }
  co_await sleep_for(to_duration(warmup));
  loop.measuring = true;
  const auto start = Clock::now();
  co_await sleep_for(to_duration(seconds));
  loop.measuring = false;
  const double elapsed = seconds_since(start);
  const std::uint64_t count = loop.completed;
  loop.stop = true;
  boost::system::error_code ec;
  // NOLINTNEXTLINE(bugprone-infinite-loop): the completion handlers above decrement `live`.
  while (live > 0) co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return ClosedLoopResult{count, elapsed, failure};
}

// ---- a figure's client and main() -------------------------------------------------------------

/// Awaits `figure`, then closes `client` whatever happened, then rethrows the figure's error.
template <class Client>
asio::awaitable<void> closing(Client& client, asio::awaitable<void> figure) {
  std::exception_ptr failure;
  try {
    co_await std::move(figure);  // NOLINT(bugprone-use-after-move): awaited once
  } catch (...) {
    failure = std::current_exception();
  }
  co_await client.close();
  if (failure) std::rethrow_exception(failure);
}

/// main() of a figure program `program`: `parse(argc, argv)` the options (exit 2 on an error),
/// then runs `run_figure(options)` on a one-thread io_context, bounded by `options.timeout`
/// seconds; exit 0 when it succeeded, 3 with a `SKIP` line for a SkipFigure, else 1.
template <class Parse, class RunFigure>
int run_main(const char* program, int argc, char** argv, Parse parse, RunFigure run_figure) {
  decltype(parse(argc, argv)) options;
  try {
    options = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  }
  // A watchdog thread bounds the run; the loop itself runs with plain run(), so that the
  // instructions counted under callgrind (P5, R3) are the client's, not a run_for() loop's.
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    const auto limit = std::chrono::duration<double>(options.timeout);
    if (!finished.wait_for(lock, limit, [&] { return done; })) {
      std::fprintf(stderr, "%s: figure %s did not finish within %.0f s\n", program,
                   options.figure.c_str(), options.timeout);
      std::fflush(stderr);
      std::_Exit(1);  // the loop is stuck mid-operation: do not run destructors
    }
  });
  asio::io_context io(1);
  std::exception_ptr failure;
  asio::co_spawn(io, run_figure(options), [&](std::exception_ptr e) { failure = std::move(e); });
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
    } catch (const SkipFigure& e) {
      std::printf("SKIP %s %s\n", options.figure.c_str(), e.what());
      return kExitSkip;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: figure %s failed: %s\n", program, options.figure.c_str(), e.what());
      return 1;
    }
  }
  return 0;
}

}  // namespace bench

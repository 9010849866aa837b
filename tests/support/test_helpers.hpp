#pragma once
/// @file
/// Helpers shared by the fault tests of every client (tests/fault): the skip for external
/// servers, elapsed time, open descriptors, a scope-exit guard, polling with a deadline and
/// pausing on the test's own loop, how an operation ended (error code, kind, server code,
/// retry-after, elapsed time), and a capture of what a library component logs.

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/server_harness.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

/// Fault tests signal and restart server processes: they need harness-started servers.
#define TS_SKIP_IF_EXTERNAL()                                                   \
  if (::trading_shared::testing::Servers::instance().external()) {              \
    GTEST_SKIP() << "servers are external: no process handles for fault tests"; \
  }

namespace trading_shared::testing {

/// Milliseconds since `since` (steady clock).
inline std::chrono::milliseconds elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since);
}

/// Open descriptors of this process (entries of /proc/self/fd, the directory's own included).
inline int open_descriptors() {
  int count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

/// Runs `fn` at scope exit; a failure is reported as "<what> failed: ..." (a test failure),
/// never thrown (it runs in a destructor).
class ScopeExit {
 public:
  ScopeExit(std::string what, std::function<void()> fn)
      : what_(std::move(what)), fn_(std::move(fn)) {}
  ~ScopeExit() {
    try {
      fn_();
    } catch (const std::exception& e) {
      ADD_FAILURE() << what_ << " failed: " << e.what();
    }
  }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

 private:
  std::string what_;
  std::function<void()> fn_;
};

/// Polls `condition` on the test's own loop (without blocking it between polls) every `step`
/// until it holds or `timeout` passes; returns its last value. A deadline, never a sleep.
inline boost::asio::awaitable<bool> eventually(std::function<bool()> condition,
                                               std::chrono::steady_clock::duration timeout,
                                               std::chrono::steady_clock::duration step) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  for (;;) {
    if (condition()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return condition();
    timer.expires_after(step);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

/// Waits on the test's loop for `d` (fault timing only, e.g. "stay blocked past the command
/// timeout"; never a stand-in for a condition).
inline boost::asio::awaitable<void> pause_for(std::chrono::steady_clock::duration d) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
  co_await timer.async_wait(boost::asio::use_awaitable);
}

// ---- how an operation ended -----------------------------------------------------------------

struct Outcome {
  bool failed = false;
  std::error_code code;
  ErrorKind kind = ErrorKind::permanent;
  std::string server_code;  ///< The server's code of a server error: SQLSTATE, Redis prefix.
  std::string what;
  std::optional<std::chrono::milliseconds> retry_after;  ///< A rejection's (circuit_open).
  std::chrono::milliseconds elapsed{0};
};

inline std::string describe(const Outcome& o) {
  if (!o.failed) return "succeeded after " + std::to_string(o.elapsed.count()) + " ms";
  return "failed after " + std::to_string(o.elapsed.count()) + " ms: [" +
         std::string(to_string(o.kind)) + "] " + o.what;
}

/// How an operation that started at `start` ended with `error` (none: it succeeded).
inline Outcome outcome_of(const std::exception_ptr& error,
                          std::chrono::steady_clock::time_point start) {
  Outcome o;
  o.elapsed = elapsed_ms(start);
  if (!error) return o;
  o.failed = true;
  o.kind = classify(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    o.code = e.code();
    o.what = e.what();
    o.retry_after = e.retry_after();
    if (e.server()) o.server_code = e.server()->code;
  } catch (const std::exception& e) {
    o.what = e.what();
  }
  return o;
}

/// Runs `op` and reports how it ended instead of throwing.
template <class T>
boost::asio::awaitable<Outcome> outcome(boost::asio::awaitable<T> op) {
  const auto start = std::chrono::steady_clock::now();
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(op);
    } else {
      (void)co_await std::move(op);
    }
  } catch (...) {
    error = std::current_exception();
  }
  co_return outcome_of(error, start);
}

/// Runs the awaitable that `make()` returns and reports how it ended instead of throwing.
/// Takes a callable so that a failure at the call itself (a refused call throws before any
/// awaitable exists) is reported like one of the awaitable.
template <class Make>
requires std::invocable<Make&> boost::asio::awaitable<Outcome> outcome(Make make) {
  const auto start = std::chrono::steady_clock::now();
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<typename std::invoke_result_t<Make&>::value_type>) {
      co_await make();
    } else {
      (void)co_await make();
    }
  } catch (...) {
    error = std::current_exception();
  }
  co_return outcome_of(error, start);
}

// ---- a component's log ----------------------------------------------------------------------

/// Captures what one library component ("pg", "redis") logs while alive: the raw messages,
/// before the redaction safety net. Add it before any thread logs through that logger and
/// remove it (destroy) after they are gone.
class LogCapture {
 public:
  explicit LogCapture(std::string_view component)
      : sink_(std::make_shared<Sink>()), logger_(core::logger(component)) {
    logger_->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = logger_->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  /// Messages containing `text`.
  std::size_t count(std::string_view text) const { return sink_->count(text); }

 private:
  class Sink : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::size_t count(std::string_view text) {
      std::lock_guard lock(mutex_);
      return static_cast<std::size_t>(
          std::count_if(messages_.begin(), messages_.end(),
                        [&](const std::string& m) { return m.find(text) != std::string::npos; }));
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      messages_.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}

   private:
    std::vector<std::string> messages_;
  };
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace trading_shared::testing

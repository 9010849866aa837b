#pragma once
/// @file
/// Runs a coroutine test body on a fresh io_context under a global timeout
/// (after boostorg/redis test/common.hpp `run_coroutine_test`).

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <functional>

namespace trading_shared::testing {

inline constexpr std::chrono::seconds kDefaultAsyncTestTimeout{60};

/// Runs `body(io)` to completion; fails the test (and stops the loop) when it takes longer
/// than `timeout`. Exceptions from the body are rethrown to the test. With `stop_when_done`,
/// the loop stops as soon as the body ends, for tests whose servers or stalled peers would
/// keep it busy (the WebSocket tests); otherwise what the body left running runs on until the
/// loop has no work or the timeout.
inline void run_coroutine_test(
    std::function<boost::asio::awaitable<void>(boost::asio::io_context&)> body,
    std::chrono::steady_clock::duration timeout = kDefaultAsyncTestTimeout,
    bool stop_when_done = false) {
  boost::asio::io_context io;
  std::exception_ptr error;
  bool done = false;
  boost::asio::co_spawn(io, body(io), [&](std::exception_ptr e) {
    error = e;
    done = true;
    if (stop_when_done) io.stop();
  });
  io.run_for(timeout);
  if (!done) {
    ADD_FAILURE() << "async test did not finish within its global timeout ("
                  << std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()
                  << " ms)";
    io.stop();
    return;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace trading_shared::testing

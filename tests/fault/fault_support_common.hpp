// Helpers shared by the fault tests of both clients (pg_fault_support.hpp and
// redis_fault_support.hpp include it, and a test may include both): the scope-exit guard and
// polling step of the fault tests, closing clients whatever a test body did, running a test body
// with a started client (of the configuration's type: see ClientOf), a loop on a thread of its own,
// and gtest printing of a breaker state. What every test uses (elapsed time, descriptors, how an
// operation ended, log capture, ...) is in support/test_helpers.hpp.
#pragma once

#include <trading_shared/core/circuit_breaker.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "support/async_test.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <ostream>
#include <thread>
#include <utility>
#include <vector>

namespace trading_shared::core {
/// gtest prints a CircuitState by name ("open"), not as a byte.
inline void PrintTo(CircuitState state, std::ostream* os) {
  *os << to_string(state);
}
}  // namespace trading_shared::core

namespace trading_shared::testing::fault {

/// The guard of the fault tests: a failure reads "restoring the servers failed: ...".
class ScopeExit : public testing::ScopeExit {
 public:
  explicit ScopeExit(std::function<void()> fn)
      : testing::ScopeExit("restoring the servers", std::move(fn)) {}
};

/// testing::eventually() polling every 5 ms unless told otherwise.
inline boost::asio::awaitable<bool> eventually(
    std::function<bool()> condition, std::chrono::steady_clock::duration timeout,
    std::chrono::steady_clock::duration step = std::chrono::milliseconds(5)) {
  return testing::eventually(std::move(condition), timeout, step);
}

// ---- client lifetime -------------------------------------------------------------------------

/// Awaits `body`, then the awaitable `cleanup()` returns whatever happened, then rethrows the
/// body's error.
template <class Cleanup>
boost::asio::awaitable<void> finally(boost::asio::awaitable<void> body, Cleanup cleanup) {
  std::exception_ptr error;
  try {
    co_await std::move(body);
  } catch (...) {
    error = std::current_exception();
  }
  co_await cleanup();
  if (error) std::rethrow_exception(error);
}

/// Awaits `body`, then closes `client` whatever happened, then rethrows the body's error. A
/// test body that throws (a failed call, e.g. circuit_open) must not destroy a started client
/// without close(): the client's background tasks would outlive it (use-after-free, reported).
template <class Client>
boost::asio::awaitable<void> closing(Client& client, boost::asio::awaitable<void> body) {
  return finally(std::move(body), [&client] { return client.close(); });
}

/// The same for two clients (closed in reverse order).
template <class First, class Second>
boost::asio::awaitable<void> closing(First& first, Second& second,
                                     boost::asio::awaitable<void> body) {
  return closing(first, closing(second, std::move(body)));
}

/// Closes every client of `clients`, one after the other.
template <class Client>
boost::asio::awaitable<void> close_all(std::vector<std::unique_ptr<Client>>& clients) {
  for (auto& c : clients) co_await c->close();
}

/// The same for every client of `clients`.
template <class Client>
boost::asio::awaitable<void> closing(std::vector<std::unique_ptr<Client>>& clients,
                                     boost::asio::awaitable<void> body) {
  return finally(std::move(body), [&clients] { return close_all(clients); });
}

/// The client type of a configuration type: specialised by each client's support header
/// (pg_fault_support.hpp, redis_fault_support.hpp).
template <class Config>
struct ClientOf;

/// A test body that gets the test's loop and a started `Client`; see with_client().
template <class Client>
using ClientTestOf = std::function<boost::asio::awaitable<void>(boost::asio::io_context&, Client&)>;

/// A body for run_coroutine_test() or a loop of the test's own: a client with `config` on the
/// loop, started, handed to `test`, then closed whatever happened (see closing()).
template <class Config>
std::function<boost::asio::awaitable<void>(boost::asio::io_context&)> with_client(
    Config config, ClientTestOf<typename ClientOf<Config>::type> test) {
  using Client = typename ClientOf<Config>::type;
  return [config = std::move(config),
          test = std::move(test)](boost::asio::io_context& io) -> boost::asio::awaitable<void> {
    Client client(io.get_executor(), config);
    co_await closing(client, [&]() -> boost::asio::awaitable<void> {
      co_await client.start();
      co_await test(io, client);
    }());
  };
}

/// run_coroutine_test() of with_client(config, test), under the global `timeout`.
template <class Config>
void run_with_client(Config config, std::chrono::steady_clock::duration timeout,
                     ClientTestOf<typename ClientOf<Config>::type> test) {
  run_coroutine_test(with_client(std::move(config), std::move(test)), timeout);
}

// ---- a loop of the test's own ----------------------------------------------------------------

/// Runs a coroutine on its own thread and io_context for at most `timeout`, so that the main
/// thread stays free to drive the server (the harness forks servers from the main thread, and
/// restart() blocks and must be called from the main thread).
class BackgroundLoop {
 public:
  BackgroundLoop(std::chrono::steady_clock::duration timeout,
                 std::function<boost::asio::awaitable<void>(boost::asio::io_context&)> body)
      : thread_([this, b = std::move(body), timeout] {
          boost::asio::co_spawn(io_, b(io_), [this](std::exception_ptr e) {
            error_ = e;
            done_ = true;
          });
          io_.run_for(timeout);
        }) {}
  ~BackgroundLoop() {
    if (thread_.joinable()) thread_.join();
  }
  BackgroundLoop(const BackgroundLoop&) = delete;
  BackgroundLoop& operator=(const BackgroundLoop&) = delete;

  bool done() const { return done_.load(); }
  /// Waits for the thread; fails the test when the body did not finish, rethrows its error.
  void join() {
    thread_.join();
    if (!done_) {
      ADD_FAILURE() << "background loop did not finish within its timeout";
      return;
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  boost::asio::io_context io_;
  std::exception_ptr error_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

/// F34's verdict on a reconnect storm: `times_ms` are the clients' reconnect times after the
/// server came back. The last one no later than `bound_ms` (a missing cap fails it), and
/// spread over at least a quarter of `cap_ms` with a standard deviation of at least a
/// sixteenth of it (reconnects bunched together: no jitter). Prints the distribution.
inline void expect_reconnects_capped_and_spread(std::vector<double> times_ms, double cap_ms,
                                                double bound_ms, const char* clients) {
  if (times_ms.empty()) {
    ADD_FAILURE() << "no " << clients << " reconnected";
    return;
  }
  std::sort(times_ms.begin(), times_ms.end());
  const double lo = times_ms.front();
  const double hi = times_ms.back();
  double mean = 0;
  for (double t : times_ms) mean += t;
  mean /= static_cast<double>(times_ms.size());
  double var = 0;
  for (double t : times_ms) var += (t - mean) * (t - mean);
  const double sd = std::sqrt(var / static_cast<double>(times_ms.size()));
  std::printf(
      "[ F34 ] %zu %s reconnected %.0f .. %.0f ms after the server was back "
      "(span %.0f ms, mean %.0f ms, sd %.0f ms, median %.0f ms)\n",
      times_ms.size(), clients, lo, hi, hi - lo, mean, sd, times_ms[times_ms.size() / 2]);
  EXPECT_LE(hi, bound_ms) << "a client reconnected later than the backoff cap + margin: no cap?";
  EXPECT_GE(hi - lo, cap_ms / 4) << "reconnects bunched together: no jitter?";
  EXPECT_GE(sd, cap_ms / 16) << "reconnects bunched together: no jitter?";
}

}  // namespace trading_shared::testing::fault

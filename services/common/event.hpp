#pragma once
/// @file
/// An event that wakes every coroutine waiting on it, for the services' own coordination
/// (ts-feed-sim's connections and tasks, ts-receiver's FeedSet). Each waiter waits on a timer of
/// its own, so that waiters never cancel each other's waits. Not thread-safe: one executor.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <utility>
#include <vector>

namespace trading_shared::services {

class Event {
 public:
  explicit Event(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  /// Returns when notified or at `deadline`, whichever comes first: the caller looks again.
  boost::asio::awaitable<void> wait_until(std::chrono::steady_clock::time_point deadline) {
    boost::asio::steady_timer timer(executor_, deadline);
    waiters_.push_back(&timer);
    boost::system::error_code ec;  // aborted = notified, success = deadline: both mean "look"
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    std::erase(waiters_, &timer);
  }
  /// Wakes every coroutine waiting now.
  void notify() {
    for (auto* timer : waiters_) timer->cancel();
  }

 private:
  boost::asio::any_io_executor executor_;
  std::vector<boost::asio::steady_timer*> waiters_;
};

}  // namespace trading_shared::services

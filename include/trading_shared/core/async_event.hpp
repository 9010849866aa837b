#pragma once
/// @file
/// An event for coroutines on one executor: `notify_all()` wakes the coroutines waiting now.
/// It replaces the idiom "a steady_timer at time_point::max() used as an event, cancel() to
/// wake" (docs/core.md).

#include <trading_shared/core/build_config.hpp>  // the ODR guard

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <vector>

namespace trading_shared::core {

/// Wakes every coroutine waiting on it. Not a latch: a notification with nobody waiting is
/// lost, so a waiter re-checks its condition in a loop:
/// @code
///   while (!ready) co_await changed.wait();
/// @endcode
/// Each waiter waits on a timer of its own (on its coroutine frame): waiters never cut each
/// other's waits short. Not thread-safe: the owner and every waiter run on one executor
/// (strand); `notify_all()` may be called from any code on it, also from a destructor.
///
/// @par Per-operation cancellation
/// terminal (and partial, total): the wait ends with `boost::system::system_error`
/// (`operation_aborted`), as the timer idiom did; other waiters are not affected.
/// Destroying the event while coroutines wait ends their waits the same way.
class AsyncEvent {
 public:
  using clock = std::chrono::steady_clock;

  explicit AsyncEvent(boost::asio::any_io_executor executor);
  ~AsyncEvent();
  AsyncEvent(const AsyncEvent&) = delete;
  AsyncEvent& operator=(const AsyncEvent&) = delete;

  /// Wakes the coroutines waiting now (their wait returns true / returns); later waiters
  /// wait for the next notification.
  void notify_all() noexcept;

  /// Returns when notified.
  boost::asio::awaitable<void> wait();

  /// Returns true when notified, false when `deadline` passed first (at once when it already
  /// has). A notification that comes together with the deadline counts as a notification.
  boost::asio::awaitable<bool> wait_until(clock::time_point deadline);

  /// `wait_until(now + timeout)`.
  boost::asio::awaitable<bool> wait_for(clock::duration timeout);

  /// Coroutines waiting now (tests, diagnostics).
  std::size_t waiters() const noexcept { return waiters_.size(); }

  const boost::asio::any_io_executor& get_executor() const noexcept { return executor_; }

 private:
  struct Waiter;
  boost::asio::any_io_executor executor_;
  std::vector<Waiter*> waiters_;
};

/// Waits on `event` until `done()` is true or `deadline` passes, and returns `done()`; the
/// caller's cancellation does not cut the wait short (it runs in a coroutine of its own,
/// without the caller's cancellation slot). For waits that must end by themselves, such as a
/// `close()` waiting for its background tasks within a bounded time.
template <class Done>
boost::asio::awaitable<bool> wait_until_shielded(AsyncEvent& event,
                                                 AsyncEvent::clock::time_point deadline,
                                                 Done done) {
  co_return co_await boost::asio::co_spawn(
      event.get_executor(),
      [&event, deadline, done]() -> boost::asio::awaitable<bool> {
        while (!done()) {  // no co_await inside a condition: GCC 12 miscompiles it
          const bool notified = co_await event.wait_until(deadline);
          if (!notified) break;
        }
        co_return done();
      },
      boost::asio::bind_cancellation_slot(boost::asio::cancellation_slot(),
                                          boost::asio::use_awaitable));
}

}  // namespace trading_shared::core

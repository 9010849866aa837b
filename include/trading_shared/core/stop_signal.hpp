#pragma once
/// @file
/// "Stop requested", shared by the loops of a service or a client: retry and reconnect loops
/// end their backoff waits at once when a stop comes (core::retry_until_stopped).

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/build_config.hpp>  // the ODR guard

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <utility>

namespace trading_shared::core {

/// Single-threaded (one executor), like the loops that share it.
/// @code
///   core::StopSignal stop(io.get_executor());
///   context.on_stop([&] { stop.request_stop(); });
///   while (co_await stop.sleep_for(1s)) poll();  // ends at once on a stop
/// @endcode
class StopSignal {
 public:
  explicit StopSignal(boost::asio::any_io_executor executor) : event_(std::move(executor)) {}

  bool stop_requested() const noexcept { return stopped_; }
  /// Sets the flag and wakes every `sleep_for` (idempotent).
  void request_stop() noexcept {
    stopped_ = true;
    event_.notify_all();
  }

  /// Waits `delay`, or less when a stop comes; false when stopped (at once when it already
  /// is). Per-operation cancellation of the caller ends it with `operation_aborted`.
  boost::asio::awaitable<bool> sleep_for(std::chrono::steady_clock::duration delay) {
    if (stopped_) co_return false;
    (void)co_await event_.wait_for(delay);
    co_return !stopped_;
  }

  /// Notified by `request_stop()` (for waits of the owner's own).
  AsyncEvent& event() noexcept { return event_; }

 private:
  bool stopped_ = false;
  AsyncEvent event_;
};

}  // namespace trading_shared::core

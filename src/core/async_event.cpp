#include <trading_shared/core/async_event.hpp>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <utility>

namespace trading_shared::core {

namespace asio = boost::asio;

/// One waiting coroutine: lives on its frame, registered with the event for as long as it
/// waits (also when the frame is destroyed without resuming, at shutdown).
struct AsyncEvent::Waiter {
  Waiter(AsyncEvent& e, clock::time_point deadline) : timer(e.executor_, deadline), event(&e) {
    e.waiters_.push_back(this);
  }
  ~Waiter() {
    if (event != nullptr) std::erase(event->waiters_, this);
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  asio::steady_timer timer;
  AsyncEvent* event;  // null once the event is gone
  bool notified = false;
};

AsyncEvent::AsyncEvent(asio::any_io_executor executor) : executor_(std::move(executor)) {}

AsyncEvent::~AsyncEvent() {
  // The waits end with operation_aborted (not notified), as a destroyed timer's would.
  for (Waiter* w : waiters_) {
    w->event = nullptr;
    w->timer.cancel();
  }
}

void AsyncEvent::notify_all() noexcept {
  for (Waiter* w : waiters_) {
    if (w->notified) continue;  // woken already, its handler is queued
    w->notified = true;
    w->timer.cancel();
  }
}

asio::awaitable<void> AsyncEvent::wait() {
  (void)co_await wait_until(clock::time_point::max());
}

asio::awaitable<bool> AsyncEvent::wait_until(clock::time_point deadline) {
  Waiter waiter(*this, deadline);
  boost::system::error_code ec;
  co_await waiter.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (waiter.notified) co_return true;
  if (!ec) co_return false;  // the deadline passed
  // Not notified but cancelled: the caller's cancellation (or the event destroyed).
  throw boost::system::system_error(ec, "AsyncEvent::wait");
}

asio::awaitable<bool> AsyncEvent::wait_for(clock::duration timeout) {
  const auto now = clock::now();
  const auto deadline =
      timeout >= clock::time_point::max() - now ? clock::time_point::max() : now + timeout;
  co_return co_await wait_until(deadline);
}

}  // namespace trading_shared::core

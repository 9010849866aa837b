#pragma once
/// @file
/// The one timeout helper for awaitables. Boost 1.81 has no `asio::cancel_after`; this plays
/// its part, built on `asio::experimental::make_parallel_group`.

#include <trading_shared/core/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <string>
#include <type_traits>
#include <utility>

namespace trading_shared::core {

/// Awaits `op`, or throws `Error(on_timeout, what, state)` when `timeout` passes first.
///
/// When the timer wins, `op` receives terminal cancellation and is awaited to completion
/// before this returns, so nothing of it runs afterwards: `op` must honour cancellation
/// promptly (every trading_shared operation does). A zero or negative `timeout` means no
/// timeout (the boostorg/redis convention). An exception from `op` propagates at once.
///
/// Built on `make_parallel_group(...).async_wait(wait_for_one())`, not on the awaitable
/// operator `||`: in Boost 1.81 `||` waits for the first *success*, so an `op` that fails
/// would be reported only when the timer fires, as a timeout.
///
/// @param state whether the request had left us when the timer fires: `sent` (the default,
///        conservative) makes a request timeout `outcome_unknown`.
/// @par Per-operation cancellation
/// terminal: forwarded to `op` and the timer; the result is then `op`'s own (usually a
/// cancellation error), never a timeout.
template <class T>
boost::asio::awaitable<T> with_timeout(boost::asio::awaitable<T> op,
                                       std::chrono::steady_clock::duration timeout,
                                       errc on_timeout = errc::timeout, std::string what = {},
                                       RequestState state = RequestState::sent) {
  if (timeout <= std::chrono::steady_clock::duration::zero()) co_return co_await std::move(op);
  namespace asio = boost::asio;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, timeout);
  auto group = asio::experimental::make_parallel_group(
      asio::co_spawn(executor, std::move(op), asio::deferred), timer.async_wait(asio::deferred));
  auto throw_timeout = [&] {
    throw Error(make_error_code(on_timeout),
                what.empty() ? std::string("operation") : std::move(what), state);
  };
  if constexpr (std::is_void_v<T>) {
    auto [order, op_error, timer_error] =
        co_await group.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    if (order[0] == 1 && !timer_error) throw_timeout();
    if (op_error) std::rethrow_exception(op_error);
  } else {
    auto [order, op_error, value, timer_error] =
        co_await group.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    if (order[0] == 1 && !timer_error) throw_timeout();
    if (op_error) std::rethrow_exception(op_error);
    co_return std::move(value);
  }
}

}  // namespace trading_shared::core

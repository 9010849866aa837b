#pragma once
// An awaitable that fails with `error` when awaited: a call refused when made (closed client,
// bad argument) fails when awaited, like the calls that run.

#include <boost/asio/awaitable.hpp>

#include <exception>

namespace trading_shared::redis::detail {

template <class T>
boost::asio::awaitable<T> failed(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return T{};  // a coroutine: the throw happens when awaited
}

}  // namespace trading_shared::redis::detail

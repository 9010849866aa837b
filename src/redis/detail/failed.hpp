#pragma once
// The errors the Redis client builds for its requests.

#include <trading_shared/core/error.hpp>

#include <boost/asio/awaitable.hpp>

#include <exception>
#include <string>

namespace trading_shared::redis::detail {

/// An `Error` of ours (not the server's) as an exception_ptr, for a request's slot.
inline std::exception_ptr make_error(errc code, const std::string& context, RequestState state) {
  return std::make_exception_ptr(Error(make_error_code(code), context, state));
}

/// An awaitable that fails with `error` when awaited: a call refused when made (closed client,
/// bad argument) fails when awaited, like the calls that run.
template <class T>
boost::asio::awaitable<T> failed(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return T{};  // a coroutine: the throw happens when awaited
}

}  // namespace trading_shared::redis::detail

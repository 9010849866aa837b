#pragma once
/// @file
/// `ResourceScope`: an asynchronous exit stack (docs/lifecycle.md).
///
/// `co_await scope.open<Client>("pg", args...)` constructs and starts a resource owned by the
/// scope and registers its `close()` (`enter(client, "pg")` does the same for one the caller
/// owns);
/// `co_await scope.close()` closes everything in reverse order of entry, each close under its
/// own timeout, and is idempotent. A close that fails or times out is logged and recorded in
/// `failures()`, and the remaining resources are still closed: cleanup never stops half-way
/// and never masks the error that ended the work.
///
/// Use it through `with_scope`, which closes the scope on every exit of the body (normal
/// return, exception, cancellation) and then rethrows the body's own error, so that "forgot to
/// close" cannot be written:
/// @code
///   co_await lifecycle::with_scope(executor, [&](lifecycle::ResourceScope& scope)
///       -> asio::awaitable<void> {
///     auto* pg = co_await scope.open<pg::PostgresClient>("pg", executor, pg_config);
///     auto* redis = co_await scope.open<redis::RedisClient>("redis", executor, redis_config);
///     co_await work(*pg, *redis);
///   });
/// @endcode
/// Services get a scope from `run_daemon` / `run_once` and never call start/close themselves.
///
/// A close that overruns its bound (F54): the scope stops waiting for it at `close_timeout`
/// (so the bound holds and the other resources still close in time), records it as timed out,
/// and, for a resource it owns (`open`), lets the close go on without cancelling it: the
/// resource is destroyed only once its close has ended, never while it runs. A cleanup
/// registered with `defer` / `enter` (what it closes belongs to the caller, who may free it as
/// soon as the scope is closed) is cancelled at its bound and awaited, as before.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace trading_shared::lifecycle {

/// Anything with `awaitable<void> start()` and `awaitable<void> close()` (our clients).
template <class R>
concept Resource = requires(R& r) {
  { r.start() } -> std::same_as<boost::asio::awaitable<void>>;
  { r.close() } -> std::same_as<boost::asio::awaitable<void>>;
};

/// One cleanup that failed or timed out.
struct CleanupFailure {
  std::string name;
  std::string error;  ///< what() of the error, or "timed out after N ms".
  bool timed_out = false;
};

class ResourceScope {
 public:
  using Cleanup = std::function<boost::asio::awaitable<void>()>;

  /// `close_timeout`: the bound of each cleanup (default 5 s; > 0).
  explicit ResourceScope(boost::asio::any_io_executor executor,
                         std::chrono::milliseconds close_timeout = std::chrono::seconds(5));
  ResourceScope(const ResourceScope&) = delete;
  ResourceScope& operator=(const ResourceScope&) = delete;
  /// Logs an error if cleanups are still registered (the scope was not closed: a bug that
  /// `with_scope` makes impossible); it cannot await them.
  ~ResourceScope();

  /// Constructs a resource owned by the scope (`T(args...)`, now), starts it and registers
  /// its `close()`; the scope destroys it right after closing it. Returns it. The way to open
  /// resources inside a body: the body's own locals are gone before the scope closes.
  /// If `start()` throws, the resource is destroyed unregistered and the error propagates.
  template <Resource T, class... Args>
  boost::asio::awaitable<T*> open(std::string name, Args&&... args) {
    auto resource = std::make_shared<T>(std::forward<Args>(args)...);
    return start_owned<T>(std::move(resource), std::move(name));
  }

  /// Starts `resource`, owned by the caller, and registers its `close()`: it must outlive the
  /// scope (declare it before `with_scope` / `run_daemon`, never as a local of the body). If
  /// `start()` throws, nothing is registered (a resource that did not start is not closed)
  /// and the error propagates.
  template <Resource R>
  boost::asio::awaitable<void> enter(R& resource, std::string name) {
    // NOLINTNEXTLINE(bugprone-use-after-move): `name` is moved once, below; clang-tidy
    co_await resource.start();  // sees the coroutine's parameter copy as a second use
    defer(std::move(name), [&resource]() { return resource.close(); });
  }

  /// Registers any asynchronous cleanup (run in reverse order with the others). What it refers
  /// to must outlive the scope.
  void defer(std::string name, Cleanup cleanup);

  /// Runs every registered cleanup, last registered first, each under `close_timeout`;
  /// records and logs failures and carries on. Idempotent. Not interrupted by cancellation of
  /// the caller: cleanups run to completion or to their timeout. The close of an owned
  /// resource that passes its timeout goes on after this returns (see `overrunning()`).
  boost::asio::awaitable<void> close();

  /// Completes when every close that overran its bound has ended (and its resource has been
  /// destroyed); at once when there is none. Not interrupted by cancellation of the caller:
  /// bound it from outside (run_daemon / run_once bound it by `shutdown_timeout`).
  boost::asio::awaitable<void> wait_overrunning();
  /// Closes of owned resources that overran their bound and are still running.
  std::size_t overrunning() const noexcept;

  /// Resources still registered.
  std::size_t size() const noexcept { return cleanups_.size(); }
  /// Cleanups that failed or timed out, in the order they ran.
  const std::vector<CleanupFailure>& failures() const noexcept { return failures_; }
  std::chrono::milliseconds close_timeout() const noexcept { return close_timeout_; }

 private:
  boost::asio::awaitable<void> close_all();

  template <Resource T>
  boost::asio::awaitable<T*> start_owned(std::shared_ptr<T> resource, std::string name) {
    co_await resource->start();
    T* raw = resource.get();
    // The cleanup owns the resource: it is destroyed when its close has ended.
    add(
        std::move(name), [owned = std::move(resource)]() { return owned->close(); }, true);
    co_return raw;
  }

  struct Entry {
    std::string name;
    Cleanup cleanup;
    /// The cleanup owns what it closes (`open`): it may outlive the scope, never its close.
    bool owned = false;
  };
  struct Overruns;    // closes still running past their bound (shared with their coroutines)
  struct OwnedClose;  // one owned resource's close, run on a coroutine of its own

  void add(std::string name, Cleanup cleanup, bool owned);
  boost::asio::awaitable<void> close_owned(Entry entry, CleanupFailure& failure);
  static boost::asio::awaitable<void> run_owned_close(std::shared_ptr<OwnedClose> state);
  boost::asio::awaitable<void> wait_overrunning_inner();

  boost::asio::any_io_executor executor_;
  std::chrono::milliseconds close_timeout_;
  std::vector<Entry> cleanups_;
  std::vector<CleanupFailure> failures_;
  std::shared_ptr<Overruns> overruns_;
};

/// Runs `body(scope)` and closes the scope on every exit; the body's result or error is
/// returned or rethrown after the cleanup (cleanup failures are logged, not thrown).
template <class Body>
auto with_scope(boost::asio::any_io_executor executor, Body body,
                std::chrono::milliseconds close_timeout = std::chrono::seconds(5))
    -> decltype(body(std::declval<ResourceScope&>())) {
  using Awaitable = decltype(body(std::declval<ResourceScope&>()));
  using T = typename Awaitable::value_type;
  ResourceScope scope(executor, close_timeout);
  std::exception_ptr failure;
  // After a cancellation (the usual way a service's body ends), Asio throws at every later
  // co_await of this coroutine; the cleanup must run anyway, so that is switched off for it
  // and put back afterwards.
  const bool throw_if_cancelled = co_await boost::asio::this_coro::throw_if_cancelled();
  if constexpr (std::is_void_v<T>) {
    try {
      co_await body(scope);
    } catch (...) {
      failure = std::current_exception();
    }
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    co_await scope.close();
    co_await boost::asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    if (failure) std::rethrow_exception(failure);
  } else {
    std::optional<T> result;
    try {
      result.emplace(co_await body(scope));
    } catch (...) {
      failure = std::current_exception();
    }
    co_await boost::asio::this_coro::throw_if_cancelled(false);
    co_await scope.close();
    co_await boost::asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    if (failure) std::rethrow_exception(failure);
    co_return std::move(*result);
  }
}

}  // namespace trading_shared::lifecycle

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/lifecycle/resource_scope.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

namespace trading_shared::lifecycle {

namespace asio = boost::asio;

namespace {
std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("lifecycle");
  return logger;
}
}  // namespace

ResourceScope::ResourceScope(asio::any_io_executor executor,
                             std::chrono::milliseconds close_timeout)
    : executor_(std::move(executor)), close_timeout_(close_timeout) {
  if (close_timeout_ <= std::chrono::milliseconds::zero()) {
    throw Error(make_error_code(errc::invalid_argument),
                "ResourceScope: close_timeout must be > 0");
  }
}

ResourceScope::~ResourceScope() {
  if (!cleanups_.empty()) {
    std::string names;
    for (const auto& [name, cleanup] : cleanups_) names += (names.empty() ? "" : ", ") + name;
    log()->error("ResourceScope destroyed with {} resource(s) never closed: {}", cleanups_.size(),
                 names);
  }
}

void ResourceScope::defer(std::string name, Cleanup cleanup) {
  if (!cleanup) {
    throw Error(make_error_code(errc::invalid_argument), "ResourceScope::defer: empty cleanup");
  }
  cleanups_.emplace_back(std::move(name), std::move(cleanup));
}

asio::awaitable<void> ResourceScope::close() {
  // Run on a coroutine of its own with no cancellation slot: a cancelled caller (the usual
  // reason to leave a scope) must not cut the cleanup short. Each cleanup has its timeout.
  // (A caller whose cancellation was already requested must also switch off Asio's
  // throw-at-next-co_await before calling this: with_scope does.)
  const bool was = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await asio::co_spawn(
      executor_, close_all(),
      asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable));
  co_await asio::this_coro::throw_if_cancelled(was);
}

asio::awaitable<void> ResourceScope::close_all() {
  while (!cleanups_.empty()) {
    auto [name, cleanup] = std::move(cleanups_.back());
    cleanups_.pop_back();
    const auto started = std::chrono::steady_clock::now();
    CleanupFailure failure{name, {}, false};
    try {
      co_await core::with_timeout(cleanup(), close_timeout_, errc::timeout, "close " + name,
                                  RequestState::not_sent);
    } catch (const Error& e) {
      failure.timed_out = e.code() == make_error_code(errc::timeout);
      failure.error = failure.timed_out
                          ? "timed out after " + std::to_string(close_timeout_.count()) + " ms"
                          : e.what();
    } catch (const std::exception& e) {
      failure.error = e.what();
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (failure.error.empty()) {
      log()->debug("closed {} in {} ms", name, took.count());
    } else {
      log()->error("closing {} failed after {} ms: {}; closing the rest", name, took.count(),
                   failure.error);
      failures_.push_back(std::move(failure));
    }
  }
}

}  // namespace trading_shared::lifecycle

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/lifecycle/resource_scope.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <vector>

namespace trading_shared::lifecycle {

namespace asio = boost::asio;

namespace {
std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("lifecycle");
  return logger;
}

/// Cleanups owning a resource that must not be destroyed (its close never ended, or it was
/// never closed) and whose owner is going away: kept here, reachable, for the rest of the
/// process. Freeing a client under its own running work is a use-after-free; keeping it is a
/// bounded leak, logged, and only on paths that end the process anyway.
void keep_forever(ResourceScope::Cleanup cleanup) {
  static auto* const kept = new std::vector<ResourceScope::Cleanup>();
  kept->push_back(std::move(cleanup));
}

std::string describe(const std::exception_ptr& error, bool& timed_out) {
  timed_out = false;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    timed_out = e.code() == make_error_code(errc::timeout);
    return e.what();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}
}  // namespace

struct ResourceScope::Overruns {
  explicit Overruns(asio::any_io_executor executor) : none_left(std::move(executor)) {}
  std::size_t running = 0;
  core::AsyncEvent none_left;  ///< notified when `running` drops to zero (wait_overrunning)
};

/// The close of one owned resource. The coroutine that runs it holds this (and so the
/// resource) until the close has ended, whoever stopped waiting for it.
struct ResourceScope::OwnedClose {
  OwnedClose(asio::any_io_executor executor, Entry e, std::shared_ptr<Overruns> o)
      : entry(std::move(e)), overruns(std::move(o)), wake(std::move(executor)) {}
  ~OwnedClose() {
    // Destroyed with its close still suspended: the io_context is being destroyed under it
    // (an immediate stop of an in-process runner). The resource's own work may still refer to
    // it: it is kept, not freed.
    if (!ended && entry.cleanup) {
      log()->error("{}: its close never ended: the resource is kept (not freed under its work)",
                   entry.name);
      keep_forever(std::move(entry.cleanup));
    }
  }
  Entry entry;
  std::shared_ptr<Overruns> overruns;
  core::AsyncEvent wake;  ///< the scope waits on it; notified when the close ends
  bool ended = false;
  bool overran = false;  ///< the scope stopped waiting: the close counts in `overruns`
  std::exception_ptr error;
};

ResourceScope::ResourceScope(asio::any_io_executor executor,
                             std::chrono::milliseconds close_timeout)
    : executor_(std::move(executor)),
      close_timeout_(close_timeout),
      overruns_(std::make_shared<Overruns>(executor_)) {
  if (close_timeout_ <= std::chrono::milliseconds::zero()) {
    throw Error(make_error_code(errc::invalid_argument),
                "ResourceScope: close_timeout must be > 0");
  }
}

ResourceScope::~ResourceScope() {
  if (!cleanups_.empty()) {
    std::string names;
    for (const auto& entry : cleanups_) names += (names.empty() ? "" : ", ") + entry.name;
    log()->error("ResourceScope destroyed with {} resource(s) never closed: {}", cleanups_.size(),
                 names);
    // A started resource that was never closed may have work running: not freed.
    for (auto& entry : cleanups_) {
      if (entry.owned) keep_forever(std::move(entry.cleanup));
    }
  }
}

void ResourceScope::defer(std::string name, Cleanup cleanup) {
  add(std::move(name), std::move(cleanup), false);
}

void ResourceScope::add(std::string name, Cleanup cleanup, bool owned) {
  if (!cleanup) {
    throw Error(make_error_code(errc::invalid_argument), "ResourceScope::defer: empty cleanup");
  }
  cleanups_.push_back(Entry{std::move(name), std::move(cleanup), owned});
}

std::size_t ResourceScope::overrunning() const noexcept {
  return overruns_->running;
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

asio::awaitable<void> ResourceScope::wait_overrunning() {
  const bool was = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await asio::co_spawn(
      executor_, wait_overrunning_inner(),
      asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable));
  co_await asio::this_coro::throw_if_cancelled(was);
}

asio::awaitable<void> ResourceScope::wait_overrunning_inner() {
  // The Overruns are shared: this scope may be gone by the time a close ends.
  const std::shared_ptr<Overruns> overruns = overruns_;
  while (overruns->running > 0) co_await overruns->none_left.wait();
}

asio::awaitable<void> ResourceScope::run_owned_close(std::shared_ptr<OwnedClose> state) {
  try {
    co_await state->entry.cleanup();
  } catch (...) {
    state->error = std::current_exception();
  }
  // The close has ended: only now may the resource go (the cleanup owns it).
  state->entry.cleanup = nullptr;
  state->ended = true;
  state->wake.notify_all();
  if (state->overran) {
    if (state->error) {
      bool timed_out = false;
      log()->warn("{}: its close, which overran its bound, ended with an error: {}",
                  state->entry.name, describe(state->error, timed_out));
    } else {
      log()->warn("{}: its close, which overran its bound, has ended; the resource is freed",
                  state->entry.name);
    }
    if (--state->overruns->running == 0) state->overruns->none_left.notify_all();
  }
}

asio::awaitable<void> ResourceScope::close_owned(Entry entry, CleanupFailure& failure) {
  auto state = std::make_shared<OwnedClose>(executor_, std::move(entry), overruns_);
  // Its own coroutine, with no cancellation slot: the close is never cut short by the scope
  // (a cancelled close may leave work behind that still refers to the resource).
  asio::co_spawn(executor_, run_owned_close(state), asio::detached);
  if (!state->ended) (void)co_await state->wake.wait_for(close_timeout_);
  if (state->ended) {
    if (state->error) failure.error = describe(state->error, failure.timed_out);
    co_return;
  }
  state->overran = true;
  ++overruns_->running;
  failure.timed_out = true;
  failure.error = "timed out after " + std::to_string(close_timeout_.count()) +
                  " ms (still closing: the resource is kept until its close ends)";
}

asio::awaitable<void> ResourceScope::close_all() {
  while (!cleanups_.empty()) {
    Entry entry = std::move(cleanups_.back());
    cleanups_.pop_back();
    const auto started = std::chrono::steady_clock::now();
    CleanupFailure failure{entry.name, {}, false};
    if (entry.owned) {
      co_await close_owned(std::move(entry), failure);
    } else {
      try {
        co_await core::with_timeout(entry.cleanup(), close_timeout_, errc::timeout,
                                    "close " + entry.name, RequestState::not_sent);
      } catch (const Error& e) {
        failure.timed_out = e.code() == make_error_code(errc::timeout);
        failure.error = failure.timed_out
                            ? "timed out after " + std::to_string(close_timeout_.count()) + " ms"
                            : e.what();
      } catch (const std::exception& e) {
        failure.error = e.what();
      }
    }
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (failure.error.empty()) {
      log()->debug("closed {} in {} ms", failure.name, took.count());
    } else {
      log()->error("closing {} failed after {} ms: {}; closing the rest", failure.name,
                   took.count(), failure.error);
      failures_.push_back(std::move(failure));
    }
  }
}

}  // namespace trading_shared::lifecycle

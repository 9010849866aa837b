#pragma once
/// @file
/// `BasicPool`'s member definitions (src/pg/detail/pool.hpp). Included where the pool is
/// instantiated: src/pg/detail/pool.cpp (the client's `Pool`) and the pool's unit test.

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "detail/pool.hpp"

#include <algorithm>
#include <string>
#include <system_error>

namespace trading_shared::pg::detail {

namespace pool_detail {

inline std::shared_ptr<spdlog::logger> log() {
  return core::logger("pg");
}

/// An error's message without the trailing ": <code message>" that std::system_error adds
/// (the error built from it adds its own).
inline std::string message_of(const std::system_error& e) {
  std::string what = e.what();
  const std::string suffix = ": " + e.code().message();
  if (what.size() > suffix.size() && what.ends_with(suffix))
    what.resize(what.size() - suffix.size());
  return what;
}

}  // namespace pool_detail

template <class SlotT>
BasicPool<SlotT>::BasicPool(boost::asio::any_io_executor executor, const PostgresConfig& config,
                            core::RandomSource& random, std::string description,
                            Connector connector)
    : executor_(std::move(executor)),
      config_(config),
      random_(random),
      description_(std::move(description)),
      connector_(std::move(connector)),
      maintain_wake_(executor_),
      maintain_stop_(executor_) {}

template <class SlotT>
BasicPool<SlotT>::~BasicPool() {
  // Connections still open (none after a completed close) are closed here.
  close_all_connections();
}

// ---- opening ---------------------------------------------------------------------------------

template <class SlotT>
boost::asio::awaitable<std::shared_ptr<typename BasicPool<SlotT>::Conn>> BasicPool<SlotT>::open(
    std::chrono::milliseconds timeout) {
  std::shared_ptr<Conn> connection;
  std::exception_ptr failure;
  try {
    connection = co_await connector_(timeout);
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    ++connect_failures_;
    std::rethrow_exception(failure);
  }
  ++connects_;
  co_return connection;
}

template <class SlotT>
void BasicPool<SlotT>::adopt(std::shared_ptr<Conn> connection) {
  // Weak: a connection may outlive the pool (its I/O coroutines hold it).
  std::weak_ptr<void> owner = owner_;
  Conn* raw = connection.get();
  connection->set_on_broken([this, owner, raw] {
    if (auto alive = owner.lock()) on_broken(raw);
  });
  // An abandoned statement ended or a cancel request completed: waiters may have it now.
  connection->set_on_ready([this, owner] {
    if (auto alive = owner.lock()) dispatch();
  });
  auto slot = std::make_unique<SlotT>();
  slot->connection = std::move(connection);
  slots_.push_back(std::move(slot));
}

// ---- maintenance -----------------------------------------------------------------------------

template <class SlotT>
boost::asio::awaitable<void> BasicPool<SlotT>::maintain() {
  // Kept across the reconnect loops: reset only after a connection opened.
  core::Backoff backoff(config_.reconnect_backoff, random_);
  // Until the pool stops: a permanent error (bad credentials) is waited out too, the server
  // may be fixed. Only close() cuts the backoff (`maintain_stop_` is the wake): callers
  // arriving during an outage must not turn it into a reconnect storm (F34). An attempt
  // opens what is needed when it runs, nothing when the need went away meanwhile.
  // (Named locals, not temporaries in the co_await: see core::reconnect.)
  const core::ReconnectPolicy policy{.attempt_timeout = config_.connect_timeout,
                                     .permanent_ends = false};
  const std::string what = description_ + ": reconnect";
  core::ReconnectObserver observer{
      .what = what,
      .log = pool_detail::log(),
      .on_failure = [this](const std::exception_ptr& failure, ErrorKind) {
        last_connect_failure_ = failure;
        fail_waiters_if_unreachable();
      }};
  auto attempt = [&](std::chrono::milliseconds timeout) { return open_needed(timeout, backoff); };
  auto stopped = [this] { return !running_; };
  while (running_) {
    co_await close_retired();
    if (!running_) break;
    if (!connection_needed()) {
      co_await maintain_wake_.wait();  // a connection retired, a caller waits, or stop
      continue;
    }
    (void)co_await core::reconnect(attempt, backoff, policy, observer, stopped, maintain_stop_);
  }
}

template <class SlotT>
bool BasicPool<SlotT>::connection_needed() const noexcept {
  const std::size_t count = slots_.size() + opening_;
  return count < std::max<std::size_t>(config_.min_size, 1) ||
         (!waiters_.empty() && count < config_.max_size);
}

template <class SlotT>
boost::asio::awaitable<void> BasicPool<SlotT>::close_retired() {
  while (!retired_.empty()) {
    auto connection = std::move(retired_.back());
    retired_.pop_back();
    connection->close();
    co_await connection->wait_closed();
  }
}

template <class SlotT>
boost::asio::awaitable<void> BasicPool<SlotT>::open_needed(std::chrono::milliseconds timeout,
                                                           core::Backoff& backoff) {
  while (running_) {
    co_await close_retired();
    if (!running_ || !connection_needed()) co_return;
    ++opening_;
    std::exception_ptr failure;
    try {
      auto connection = co_await open(timeout);
      if (!running_) {
        connection->close();
        co_await connection->wait_closed();
      } else {
        adopt(std::move(connection));
        backoff.reset();
        last_connect_failure_ = nullptr;
      }
    } catch (...) {
      failure = std::current_exception();  // rethrown below, for core::reconnect
    }
    --opening_;
    dispatch();
    if (failure) std::rethrow_exception(failure);
  }
}

template <class SlotT>
void BasicPool<SlotT>::stop_maintenance() noexcept {
  maintain_stop_.notify_all();
  maintain_wake_.notify_all();
}

template <class SlotT>
void BasicPool<SlotT>::on_broken(Conn* connection) noexcept {
  auto it = std::find_if(slots_.begin(), slots_.end(),
                         [&](const auto& s) { return s->connection.get() == connection; });
  if (it == slots_.end()) return;
  if (running_) {
    ++discarded_;
    pool_detail::log()->warn("{}: connection (backend {}) discarded; the pool will replace it",
                             description_, connection->backend_pid());
  }
  if ((*it)->exclusive) return;  // its lease holder discards it on release
  retire(it->get());
}

template <class SlotT>
void BasicPool<SlotT>::retire(SlotT* slot) noexcept {
  auto it =
      std::find_if(slots_.begin(), slots_.end(), [&](const auto& s) { return s.get() == slot; });
  if (it == slots_.end()) return;
  const bool was_reserved = slot->draining;
  if (was_reserved) unreserve(slot);
  retired_.push_back(slot->connection);
  slots_.erase(it);
  if (was_reserved) reserve_for_next();  // its waiter keeps another connection draining
  maintain_wake_.notify_all();
}

template <class SlotT>
void BasicPool<SlotT>::discard(SlotT* slot, std::string_view why) noexcept {
  pool_detail::log()->warn("{}: discarding connection (backend {}): {}", description_,
                           slot->connection->backend_pid(), why);
  if (slot->connection->in_flight() > 0) slot->connection->send_cancel_request();
  slot->connection->close(make_error_code(errc::connection_lost));
}

// ---- leasing ---------------------------------------------------------------------------------

template <class SlotT>
SlotT* BasicPool<SlotT>::pick(bool exclusive) noexcept {
  SlotT* best = nullptr;
  for (auto& slot : slots_) {
    Conn& c = *slot->connection;
    if (!c.open() || slot->exclusive) continue;
    if (exclusive) {
      if (c.in_flight() == 0 && c.accepting()) return slot.get();
      continue;
    }
    if (slot->draining || !c.accepting() || c.in_flight() >= config_.max_pipeline_depth) continue;
    if (best == nullptr || c.in_flight() < best->connection->in_flight()) best = slot.get();
  }
  return best;
}

template <class SlotT>
void BasicPool<SlotT>::unreserve(SlotT* slot) noexcept {
  if (!slot->draining) return;
  slot->draining = false;
  for (Waiter* w : waiters_) {
    if (w->reserved == slot) {
      w->reserved = nullptr;
      break;
    }
  }
}

template <class SlotT>
void BasicPool<SlotT>::reserve_for_next() noexcept {
  if (exclusive_waiting_ == 0) return;
  // One connection at a time drains for the transactions that wait, so that shared
  // statements keep the others.
  if (std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->draining; })) {
    return;
  }
  auto first =
      std::find_if(waiters_.begin(), waiters_.end(), [](const Waiter* w) { return w->exclusive; });
  if (first == waiters_.end()) return;
  SlotT* candidate = nullptr;
  for (auto& s : slots_) {
    if (s->exclusive || !s->connection->open()) continue;
    if (candidate == nullptr || s->connection->in_flight() < candidate->connection->in_flight()) {
      candidate = s.get();
    }
  }
  if (candidate == nullptr) return;
  candidate->draining = true;
  (*first)->reserved = candidate;
}

template <class SlotT>
void BasicPool<SlotT>::dispatch() noexcept {
  for (bool again = true; again;) {
    again = false;
    bool reservation_ended = false;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter* w = *it;
      SlotT* slot = pick(w->exclusive);
      if (slot == nullptr) {
        ++it;
        continue;
      }
      if (w->exclusive) {
        // Its reservation ends with its wait, whichever connection it gets (F47).
        if (w->reserved != nullptr && w->reserved != slot) w->reserved->draining = false;
        w->reserved = nullptr;
        if (slot->draining) unreserve(slot);  // another waiter's: it reserves anew below
        slot->exclusive = true;
        slot->draining = false;
        --exclusive_waiting_;
        reservation_ended = true;
      } else {
        --shared_waiting_;
      }
      w->granted = slot;
      it = waiters_.erase(it);
      if (w->notifier != nullptr) w->notifier->cancel();
    }
    if (reservation_ended) {
      reserve_for_next();
      // A connection that stopped draining may take shared waiters passed over above.
      again = shared_waiting_ > 0;
    }
  }
}

template <class SlotT>
void BasicPool<SlotT>::forget(Waiter& waiter) noexcept {
  auto it = std::find(waiters_.begin(), waiters_.end(), &waiter);
  if (it != waiters_.end()) {
    waiters_.erase(it);
    --(waiter.exclusive ? exclusive_waiting_ : shared_waiting_);
  }
  if (waiter.reserved != nullptr) {
    // No reservation outlives its waiter (F47): the connection takes shared statements
    // again, or drains for the next transaction that waits.
    waiter.reserved->draining = false;
    waiter.reserved = nullptr;
    reserve_for_next();
    dispatch();
  }
}

template <class SlotT>
boost::asio::awaitable<SlotT*> BasicPool<SlotT>::acquire(bool exclusive, Clock::time_point deadline,
                                                         Clock::time_point* granted_at) {
  namespace asio = boost::asio;
  // A caller of either kind takes free capacity at once unless callers of its kind wait
  // before it (they are served in order): shared statements do not queue behind a waiting
  // transaction while a connection nobody reserved can take them (F47).
  if (exclusive ? exclusive_waiting_ == 0 : shared_waiting_ == 0) {
    if (SlotT* slot = pick(exclusive)) {
      if (exclusive) {
        if (slot->draining) unreserve(slot);
        slot->exclusive = true;
      }
      if (acquire_wait_ != nullptr) acquire_wait_->observe(0.0);
      co_return slot;
    }
  }
  if (waiters_.size() >= config_.max_waiters) {
    throw Error(make_error_code(errc::queue_full),
                description_ + ": " + std::to_string(waiters_.size()) + " callers already wait",
                RequestState::not_sent);
  }
  Waiter waiter;
  waiter.exclusive = exclusive;
  asio::steady_timer notifier(executor_, deadline);
  waiter.notifier = &notifier;
  waiters_.push_back(&waiter);
  ++(exclusive ? exclusive_waiting_ : shared_waiting_);
  // Keep shared statements off one connection so that it drains for the transactions.
  if (exclusive) reserve_for_next();
  maintain_wake_.notify_all();  // the pool may grow for us
  const auto wait_start = Clock::now();
  boost::system::error_code ec;
  co_await notifier.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  waiter.notifier = nullptr;
  const auto wait_end = Clock::now();
  if (acquire_wait_ != nullptr) acquire_wait_->observe(wait_end - wait_start);
  if (waiter.granted != nullptr) {  // granted wins over a late cancel
    if (granted_at != nullptr) *granted_at = wait_end;
    co_return waiter.granted;
  }
  // Not granted: leave the queue (a cancelled waiter leaks nothing, F08; nor does its
  // reservation, F47).
  forget(waiter);
  if (waiter.closed) {
    throw Error(make_error_code(errc::client_closed), description_ + ": client closing",
                RequestState::not_sent);
  }
  if (waiter.failure) std::rethrow_exception(waiter.failure);
  if (ec == asio::error::operation_aborted) {
    throw Error(make_error_code(errc::cancelled), description_ + ": acquire cancelled",
                RequestState::not_sent);
  }
  // No open connection at all: not saturation but a server we cannot reach (connect
  // attempts failing or hanging): the caller gets the connect error, and the breaker counts it.
  if (!has_open_connection()) std::rethrow_exception(unreachable_error());
  throw Error(make_error_code(errc::acquire_timeout),
              description_ + ": no connection within " +
                  std::to_string(config_.acquire_timeout.count()) + " ms",
              RequestState::not_sent);
}

template <class SlotT>
void BasicPool<SlotT>::release_exclusive(SlotT* slot) noexcept {
  slot->exclusive = false;
  if (!slot->connection->open()) retire(slot);
  dispatch();
}

// ---- failing waiters -------------------------------------------------------------------------

template <class SlotT>
bool BasicPool<SlotT>::has_open_connection() const noexcept {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const auto& s) { return s->connection->open(); });
}

template <class SlotT>
std::exception_ptr BasicPool<SlotT>::unreachable_error() const {
  std::string what = description_ + ": server unreachable: no open connection; ";
  std::error_code code = make_error_code(errc::connect_timeout);
  std::optional<ServerError> server;
  if (last_connect_failure_) {
    try {
      std::rethrow_exception(last_connect_failure_);
    } catch (const Error& e) {
      // The connect error's code and server data are kept: a refused or hanging connect is
      // transient (counted by the breaker, retried), bad credentials and a TLS check that
      // failed (tls_failed, F61/F63) stay permanent.
      code = e.code() == errc::connect_timeout || e.code() == errc::tls_failed
                 ? e.code()
                 : make_error_code(errc::connect_failed);
      server = e.server();
      // (A server error's text is appended by the Error built from it.)
      what += server ? std::string("last connect attempt failed")
                     : "last connect attempt failed: " + pool_detail::message_of(e);
    } catch (const std::exception& e) {
      code = make_error_code(errc::connect_failed);
      what += std::string("last connect attempt failed: ") + e.what();
    }
  } else {
    // The pool lost its connections and the attempt to replace them hangs (a frozen server,
    // a black hole) or has not been made yet.
    what += opening_ > 0 ? "a connect attempt is in progress and has not succeeded"
                         : "no connect attempt has succeeded yet";
  }
  if (server) {
    return std::make_exception_ptr(make_server_error(*server, what, RequestState::not_sent));
  }
  return std::make_exception_ptr(Error(code, what, RequestState::not_sent));
}

template <class SlotT>
void BasicPool<SlotT>::fail_waiters_if_unreachable() noexcept {
  // Callers waiting while the pool has no open connection wait for the maintenance's next
  // connect attempt: they get its connection when it succeeds, its error when it fails.
  // Waiting out acquire_timeout after a failed attempt would only delay the error (the next
  // attempt comes after a backoff that may well exceed it) and hide the outage from the
  // breaker. New callers are not failed at once on the strength of an old failure either:
  // a short blip (a PgBouncer restart) then costs them a short wait, not an error.
  if (waiters_.empty() || has_open_connection()) return;
  std::exception_ptr error;
  try {
    error = unreachable_error();
  } catch (const std::exception& e) {  // allocation failure: the waiters time out instead
    pool_detail::log()->error("{}: cannot fail waiting callers: {}", description_, e.what());
    return;
  }
  pool_detail::log()->warn("{}: server unreachable: failing {} waiting caller(s)", description_,
                           waiters_.size());
  fail_waiters(error);
}

template <class SlotT>
void BasicPool<SlotT>::fail_all_waiters_closed() noexcept {
  fail_waiters(nullptr);
}

template <class SlotT>
void BasicPool<SlotT>::fail_waiters(const std::exception_ptr& failure) noexcept {
  for (Waiter* w : waiters_) {
    if (failure) {
      w->failure = failure;
    } else {
      w->closed = true;
    }
    // Their reservations end with their waits (F47).
    if (w->reserved != nullptr) w->reserved->draining = false;
    w->reserved = nullptr;
    if (w->notifier != nullptr) w->notifier->cancel();
  }
  waiters_.clear();
  exclusive_waiting_ = 0;
  shared_waiting_ = 0;
}

// ---- closing and observation -----------------------------------------------------------------

template <class SlotT>
void BasicPool<SlotT>::close_all_connections() noexcept {
  // Closing a connection calls on_broken, which may move it from slots_ to retired_ (and
  // erase its slot): walk by index and re-read. No allocation, no slot destroyed here that
  // an operation still holds (a leased slot stays in slots_ until its holder releases it).
  for (std::size_t i = 0; i < slots_.size();) {
    std::shared_ptr<Conn> connection = slots_[i]->connection;
    connection->close();
    if (i < slots_.size() && slots_[i]->connection == connection) ++i;
  }
  for (std::size_t i = 0; i < retired_.size(); ++i) retired_[i]->close();
}

template <class SlotT>
std::vector<std::shared_ptr<typename BasicPool<SlotT>::Conn>> BasicPool<SlotT>::all_connections()
    const {
  std::vector<std::shared_ptr<Conn>> all;
  all.reserve(slots_.size() + retired_.size());
  for (const auto& slot : slots_) all.push_back(slot->connection);
  for (const auto& c : retired_) all.push_back(c);
  return all;
}

template <class SlotT>
void BasicPool<SlotT>::clear() noexcept {
  slots_.clear();
  retired_.clear();
}

template <class SlotT>
void BasicPool<SlotT>::add_stats(PostgresStats& s) const {
  s.connections = 0;
  s.exclusive = 0;
  s.reserved = 0;
  s.in_flight = 0;
  s.cancels_in_progress = 0;
  for (const auto& slot : slots_) {
    if (!slot->connection->open()) continue;
    ++s.connections;
    if (slot->connection->cancel_in_progress()) ++s.cancels_in_progress;
    if (slot->exclusive) ++s.exclusive;
    if (slot->draining) ++s.reserved;
    s.in_flight += slot->connection->in_flight();
  }
  s.waiters = waiters_.size();
  s.connects = connects_;
  s.connect_failures = connect_failures_;
  s.discarded = discarded_;
}

template <class SlotT>
std::vector<int> BasicPool<SlotT>::backend_pids() const {
  std::vector<int> pids;
  for (const auto& slot : slots_) {
    if (slot->connection->open()) pids.push_back(slot->connection->backend_pid());
  }
  return pids;
}

}  // namespace trading_shared::pg::detail

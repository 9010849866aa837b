#include "detail/cancel_sender.hpp"

#include <trading_shared/core/logging.hpp>

#include <array>
#include <exception>
#include <string>
#include <system_error>

namespace trading_shared::pg::detail {

CancelSender& CancelSender::instance() {
  static CancelSender sender;
  return sender;
}

CancelSender::CancelSender() : shared_(std::make_shared<Shared>()) {}

bool CancelSender::Shared::all_stuck(Clock::time_point now) const noexcept {
  if (threads < kMaxThreads || running < kMaxThreads) return false;
  for (std::size_t i = 0; i < kMaxThreads; ++i) {
    if (!busy[i] || now - busy_since[i] < kStuckAfter) return false;
  }
  return true;
}

void CancelSender::finish(Job& job, bool delivered) noexcept {
  PQfreeCancel(job.cancel);
  job.cancel = nullptr;
  if (job.ticket) {
    job.ticket->delivered.store(delivered);
    job.ticket->done.store(true);
  }
}

void CancelSender::send(PGcancel* cancel, std::shared_ptr<CancelTicket> ticket) noexcept {
  if (cancel == nullptr) return;
  Job job{cancel, std::move(ticket)};
  std::unique_lock lock(shared_->mutex);
  Shared& s = *shared_;
  const bool stuck = s.all_stuck(Clock::now());
  if (s.stop || stuck || s.queue.size() >= kMaxQueued) {
    ++s.dropped;
    const bool log_it = !s.stop && !s.dropping_logged;
    s.dropping_logged = true;
    const auto dropped = s.dropped;
    const auto queued = s.queue.size();
    lock.unlock();
    finish(job, false);
    if (log_it) {
      // Once per episode: the next finished request re-arms it.
      core::logger("pg")->warn(
          "cancel request dropped ({}): {} dropped so far; the connection is discarded instead",
          stuck ? "every cancel thread is stuck on a server that does not answer"
                : std::to_string(queued) + " already queued",
          dropped);
    }
    return;
  }
  s.queue.push_back(std::move(job));
  // A thread of its own when every running one is busy, up to kMaxThreads.
  if (s.threads - s.running < s.queue.size() && s.threads < kMaxThreads) {
    const std::size_t index = s.threads;
    try {
      threads_[index] = std::thread([shared = shared_, index] { run(shared, index); });
      ++s.threads;
    } catch (const std::system_error& e) {
      // No new thread: the queued request waits for a running one (or, with none, is
      // withdrawn by its connection when its bound passes).
      core::logger("pg")->error("cannot start a cancel-request thread: {}", e.what());
    }
  }
  s.wake.notify_one();
}

void CancelSender::run(const std::shared_ptr<Shared>& shared, std::size_t index) {
  Shared& s = *shared;
  std::unique_lock lock(s.mutex);
  for (;;) {
    s.wake.wait(lock, [&] { return s.stop || !s.queue.empty(); });
    if (s.queue.empty()) return;  // stopping and nothing left
    Job job = std::move(s.queue.front());
    s.queue.pop_front();
    if (job.ticket && job.ticket->withdrawn.load()) {
      lock.unlock();
      finish(job, false);
      lock.lock();
      continue;
    }
    s.busy[index] = true;
    s.busy_since[index] = Clock::now();
    ++s.running;
    lock.unlock();
    std::array<char, 256> error{};
    const bool delivered = PQcancel(job.cancel, error.data(), static_cast<int>(error.size())) != 0;
    finish(job, delivered);
    lock.lock();
    s.busy[index] = false;
    --s.running;
    s.dropping_logged = false;
    if (delivered) {
      ++s.sent;
    } else {
      ++s.failed;
      // Not at process exit: the logger may be gone by then.
      if (!s.stop) core::logger("pg")->warn("cancel request failed: {}", error.data());
    }
    s.idle.notify_all();
  }
}

void CancelSender::withdraw(const std::shared_ptr<CancelTicket>& ticket) noexcept {
  if (!ticket || ticket->done.load()) return;
  ticket->withdrawn.store(true);
  std::lock_guard lock(shared_->mutex);
  ++shared_->withdrawn;
}

std::uint64_t CancelSender::sent() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->sent;
}

std::uint64_t CancelSender::failed() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->failed;
}

std::uint64_t CancelSender::dropped() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->dropped;
}

std::uint64_t CancelSender::withdrawn() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->withdrawn;
}

std::size_t CancelSender::pending() const {
  std::lock_guard lock(shared_->mutex);
  const auto now = Clock::now();
  std::size_t n = shared_->queue.size();
  for (std::size_t i = 0; i < kMaxThreads; ++i) {
    if (shared_->busy[i] && now - shared_->busy_since[i] < kStuckAfter) ++n;
  }
  return n;
}

std::size_t CancelSender::stuck() const {
  std::lock_guard lock(shared_->mutex);
  const auto now = Clock::now();
  std::size_t n = 0;
  for (std::size_t i = 0; i < kMaxThreads; ++i) {
    if (shared_->busy[i] && now - shared_->busy_since[i] >= kStuckAfter) ++n;
  }
  return n;
}

CancelSender::~CancelSender() {
  std::unique_lock lock(shared_->mutex);
  Shared& s = *shared_;
  s.stop = true;
  std::deque<Job> queued;
  queued.swap(s.queue);
  s.wake.notify_all();
  // A PQcancel to a frozen server blocks until the server answers or dies; at process exit
  // we wait a bounded time for it and then leave its thread behind rather than hang.
  s.idle.wait_for(lock, kExitWait, [&] { return s.running == 0; });
  std::array<bool, kMaxThreads> busy = s.busy;
  lock.unlock();
  for (auto& job : queued) finish(job, false);
  for (std::size_t i = 0; i < kMaxThreads; ++i) {
    if (!threads_[i].joinable()) continue;
    if (busy[i]) {
      threads_[i].detach();  // it holds `shared_` and touches nothing else
    } else {
      threads_[i].join();  // idle: it sees `stop` and returns
    }
  }
}

}  // namespace trading_shared::pg::detail

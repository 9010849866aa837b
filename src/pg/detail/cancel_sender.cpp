#include "detail/cancel_sender.hpp"

#include <trading_shared/core/logging.hpp>

#include <array>
#include <chrono>

namespace trading_shared::pg::detail {

CancelSender& CancelSender::instance() {
  static CancelSender sender;
  return sender;
}

void CancelSender::send(PGcancel* cancel, std::shared_ptr<std::atomic<bool>> done) noexcept {
  if (cancel == nullptr) return;
  std::unique_lock lock(mutex_);
  if (queue_.size() >= kMaxQueued || stop_) {
    ++dropped_;
    lock.unlock();
    PQfreeCancel(cancel);
    if (done) done->store(true);
    core::logger("pg")->warn("cancel request dropped: {} already queued", kMaxQueued);
    return;
  }
  queue_.emplace_back(cancel, std::move(done));
  if (!worker_.joinable()) worker_ = std::thread([this] { run(); });
  wake_.notify_one();
}

void CancelSender::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and nothing left
    auto [cancel, done] = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::array<char, 256> error{};
    if (PQcancel(cancel, error.data(), static_cast<int>(error.size())) == 0) {
      core::logger("pg")->warn("cancel request failed: {}", error.data());
    }
    PQfreeCancel(cancel);
    if (done) done->store(true);
    lock.lock();
    busy_ = false;
    ++sent_;
    wake_.notify_all();
  }
}

std::size_t CancelSender::sent() const {
  std::lock_guard lock(mutex_);
  return sent_;
}

std::size_t CancelSender::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + (busy_ ? 1 : 0);
}

std::size_t CancelSender::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

CancelSender::~CancelSender() {
  std::unique_lock lock(mutex_);
  stop_ = true;
  for (auto& [c, done] : queue_) {
    PQfreeCancel(c);
    if (done) done->store(true);
  }
  queue_.clear();
  wake_.notify_all();
  // A PQcancel to a frozen server blocks until the server answers or dies; at process exit
  // we wait a bounded time for it and then leave the thread behind rather than hang.
  const bool finished = wake_.wait_for(lock, std::chrono::seconds(2), [this] { return !busy_; });
  lock.unlock();
  if (!worker_.joinable()) return;
  if (finished) {
    worker_.join();
  } else {
    worker_.detach();
  }
}

}  // namespace trading_shared::pg::detail

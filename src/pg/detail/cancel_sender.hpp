#pragma once
/// @file
/// Sends PostgreSQL cancel requests off the event loop. `PQcancel` blocks (it connects to the
/// server and waits for it to close the connection), so it runs on one worker thread of its
/// own, fed by a bounded queue: a burst of timeouts cannot pile up threads or block the loop.

#include <libpq-fe.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace trading_shared::pg::detail {

class CancelSender {
 public:
  static constexpr std::size_t kMaxQueued = 64;

  /// The process-wide sender (the worker starts on first use).
  static CancelSender& instance();

  /// Takes ownership of `cancel` (PQfreeCancel is called). When the queue is full the
  /// request is dropped, logged and counted: the connection is discarded anyway.
  void send(PGcancel* cancel) noexcept { send(cancel, nullptr); }
  /// As above; `done` (if any) is set once the server has taken the request (or it failed
  /// or was dropped), from the sender's thread.
  void send(PGcancel* cancel, std::shared_ptr<std::atomic<bool>> done) noexcept;

  std::size_t sent() const;
  /// Cancel requests queued or being sent.
  std::size_t pending() const;
  std::size_t dropped() const;

  ~CancelSender();

 private:
  CancelSender() = default;
  void run();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<PGcancel*, std::shared_ptr<std::atomic<bool>>>> queue_;
  std::thread worker_;
  bool stop_ = false;
  bool busy_ = false;
  std::size_t sent_ = 0;
  std::size_t dropped_ = 0;
};

}  // namespace trading_shared::pg::detail

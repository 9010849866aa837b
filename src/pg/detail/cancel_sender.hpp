#pragma once
/// @file
/// Sends PostgreSQL cancel requests off the event loop.
///
/// `PQcancel` blocks: it connects to the server, sends the request and waits for the server to
/// close the connection, with no timeout of its own (libpq 15 retries on EINTR, so it cannot
/// be interrupted either). Sent into a black hole or to a frozen server, it blocks until the
/// peer goes away. So cancel requests run concurrently on a small bounded set of threads
/// (`kMaxThreads`): a stuck request holds only its own thread. When every thread has been
/// stuck for `kStuckAfter`, further requests are dropped at once (counted, logged once per
/// episode) instead of queueing behind them; the requesting connection learns it through its
/// `CancelTicket` and discards itself. A connection also gives up on a request that has not
/// completed within its bound (`withdraw`): the pool never waits on a cancel request.

#include <libpq-fe.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace trading_shared::pg::detail {

/// The state of one cancel request, shared by the requesting connection and the sender.
struct CancelTicket {
  /// Finished: delivered, failed, dropped or withdrawn (set last, after `delivered`).
  std::atomic<bool> done{false};
  /// The server took the request (`PQcancel` succeeded).
  std::atomic<bool> delivered{false};
  /// The connection stopped waiting for it: if still queued, it is not sent.
  std::atomic<bool> withdrawn{false};
};

class CancelSender {
 public:
  /// Threads sending cancel requests at the same time (started on demand, kept until exit).
  static constexpr std::size_t kMaxThreads = 4;
  static constexpr std::size_t kMaxQueued = 64;
  /// A request in progress for longer than this is counted as stuck (a healthy one takes a
  /// round trip or two).
  static constexpr std::chrono::milliseconds kStuckAfter{1000};
  /// At process exit, the wait for requests still in progress (then their threads are left
  /// behind, detached, rather than hang the exit).
  static constexpr std::chrono::milliseconds kExitWait{2000};

  /// The process-wide sender.
  static CancelSender& instance();

  /// Takes ownership of `cancel` (PQfreeCancel is called). When every thread is stuck or the
  /// queue is full, the request is dropped, logged and counted (and `ticket` says so).
  void send(PGcancel* cancel) noexcept { send(cancel, nullptr); }
  /// As above; `ticket` (if any) is completed from a sender thread, or at once when dropped.
  void send(PGcancel* cancel, std::shared_ptr<CancelTicket> ticket) noexcept;
  /// Called by a connection that gave up waiting for `ticket` (its bound passed): a request
  /// still queued is not sent; one in progress cannot be interrupted and runs on. Counted.
  void withdraw(const std::shared_ptr<CancelTicket>& ticket) noexcept;

  /// Requests delivered to a server.
  std::uint64_t sent() const;
  /// Requests that failed (PQcancel returned an error).
  std::uint64_t failed() const;
  /// Requests dropped because every thread was stuck or the queue was full.
  std::uint64_t dropped() const;
  /// Requests withdrawn by their connection before they completed.
  std::uint64_t withdrawn() const;
  /// Requests queued, or in progress and not (yet) stuck: what close() may wait for.
  std::size_t pending() const;
  /// Requests in progress for longer than kStuckAfter.
  std::size_t stuck() const;

  ~CancelSender();
  CancelSender(const CancelSender&) = delete;
  CancelSender& operator=(const CancelSender&) = delete;

 private:
  using Clock = std::chrono::steady_clock;
  struct Job {
    PGcancel* cancel = nullptr;
    std::shared_ptr<CancelTicket> ticket;
  };
  /// Everything the threads touch: owned jointly, so that a thread left behind at exit never
  /// touches a destroyed object.
  struct Shared {
    std::mutex mutex;
    std::condition_variable wake;  // work queued, or stop
    std::condition_variable idle;  // a request finished
    std::deque<Job> queue;
    std::array<bool, kMaxThreads> busy{};
    std::array<Clock::time_point, kMaxThreads> busy_since{};
    std::size_t threads = 0;
    std::size_t running = 0;  // requests in progress
    bool stop = false;
    bool dropping_logged = false;  // a drop episode was logged; reset by a finished request
    std::uint64_t sent = 0;
    std::uint64_t failed = 0;
    std::uint64_t dropped = 0;
    std::uint64_t withdrawn = 0;

    bool all_stuck(Clock::time_point now) const noexcept;
  };

  CancelSender();
  static void run(const std::shared_ptr<Shared>& shared, std::size_t index);
  static void finish(Job& job, bool delivered) noexcept;

  std::shared_ptr<Shared> shared_;
  std::array<std::thread, kMaxThreads> threads_;  // guarded by shared_->mutex
};

}  // namespace trading_shared::pg::detail

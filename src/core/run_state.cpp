#include <trading_shared/core/run_state.hpp>

#include <utility>

namespace trading_shared::core {

namespace asio = boost::asio;

std::string_view to_string(RunPhase phase) noexcept {
  switch (phase) {
    case RunPhase::idle:
      return "idle";
    case RunPhase::starting:
      return "starting";
    case RunPhase::running:
      return "running";
    case RunPhase::closing:
      return "closing";
    case RunPhase::closed:
      return "closed";
  }
  return "unknown";
}

void RunState::set(RunPhase phase) noexcept {
  if (phase_ == phase) return;
  phase_ = phase;
  changed_.notify_all();
}

StartTurn RunState::try_start() noexcept {
  switch (phase_) {
    case RunPhase::running:
      return StartTurn::running;
    case RunPhase::closing:
    case RunPhase::closed:
      return StartTurn::closed;
    case RunPhase::starting:
      return StartTurn::in_progress;
    case RunPhase::idle:
      break;
  }
  ++start_number_;
  set(RunPhase::starting);
  return StartTurn::run;
}

asio::awaitable<StartTurn> RunState::start_turn() {
  for (;;) {
    const StartTurn turn = try_start();
    if (turn != StartTurn::in_progress) co_return turn;
    // Single flight: wait for the start-up in progress and share its outcome.
    const std::uint64_t waited_for = start_number_;
    while (phase_ == RunPhase::starting && start_number_ == waited_for) co_await changed_.wait();
    // Failed (and not because close() came: then the next turn says `closed`).
    if (failed_number_ == waited_for && start_error_ && !closing_or_closed()) {
      std::rethrow_exception(start_error_);
    }
  }
}

bool RunState::start_succeeded() noexcept {
  if (phase_ != RunPhase::starting) return false;
  set(RunPhase::running);
  return true;
}

void RunState::start_failed(std::exception_ptr error) noexcept {
  start_error_ = std::move(error);
  failed_number_ = start_number_;
  if (phase_ == RunPhase::starting) {
    set(RunPhase::idle);
  } else {
    changed_.notify_all();
  }
}

CloseTurn RunState::close_turn() noexcept {
  switch (phase_) {
    case RunPhase::idle:
    case RunPhase::closed:
      set(RunPhase::closed);
      return CloseTurn::nothing;
    case RunPhase::starting:
      return CloseTurn::starting;
    case RunPhase::closing:
      return CloseTurn::other;
    case RunPhase::running:
      break;
  }
  set(RunPhase::closing);
  return CloseTurn::run;
}

void RunState::abort_start() noexcept {
  if (phase_ == RunPhase::starting) set(RunPhase::closing);
}

asio::awaitable<void> RunState::wait_until_closed() {
  while (phase_ != RunPhase::closed) co_await changed_.wait();
}

asio::awaitable<void> RunState::wait_while(RunPhase phase) {
  while (phase_ == phase) co_await changed_.wait();
}

asio::awaitable<bool> RunState::wait_while_until(RunPhase phase,
                                                 std::chrono::steady_clock::time_point deadline) {
  while (phase_ == phase) {
    const bool notified = co_await changed_.wait_until(deadline);
    if (!notified) break;  // the deadline passed
  }
  co_return phase_ != phase;
}

}  // namespace trading_shared::core

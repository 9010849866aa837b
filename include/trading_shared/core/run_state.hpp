#pragma once
/// @file
/// The start/close state machine the clients share (RedisClient, PostgresClient,
/// WebSocketClient): idle -> starting -> running -> closing -> closed, with a single-flight
/// start-up and an idempotent close. For the clients' implementations; users never need it.

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/build_config.hpp>  // the ODR guard

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <string_view>

namespace trading_shared::core {

enum class RunPhase : std::uint8_t {
  idle,      ///< constructed, or the last start-up failed: start() may (re)try.
  starting,  ///< one start-up runs; other start() calls share its outcome.
  running,   ///< started: takes work.
  closing,   ///< close() runs (or a start-up is being aborted): no new work.
  closed,    ///< final: start() is refused.
};
std::string_view to_string(RunPhase phase) noexcept;

/// What a start() call does, from `RunState::try_start()` / `RunState::start_turn()`.
enum class StartTurn : std::uint8_t {
  run,          ///< the phase is now `starting`: this caller runs the start-up and ends it
                ///< with `start_succeeded()` or `start_failed()`.
  running,      ///< started already (or the shared start-up succeeded): nothing to do.
  closed,       ///< closing or closed: the caller throws its `client_closed` error.
  in_progress,  ///< (`try_start()` only) another start-up runs: wait for the phase to change.
};

/// What a close() call does, from `RunState::close_turn()`.
enum class CloseTurn : std::uint8_t {
  nothing,   ///< was idle or closed: the phase is now `closed`, nothing was running.
  starting,  ///< a start-up runs (phase unchanged): abort it (`abort_start()`) or wait for its
             ///< end (`wait_while(RunPhase::starting)`) and ask again.
  run,       ///< was running, the phase is now `closing`: this caller closes, then
             ///< `set(RunPhase::closed)`.
  other,     ///< another close() runs: `wait_until_closed()`.
};

/// The phase, its transitions and an event notified on every transition. Single-threaded:
/// one executor, like the clients. Every transition notifies `changed()`.
///
/// @code
///   // start(): single flight
///   switch (co_await state_.start_turn()) {
///     case StartTurn::running: co_return;
///     case StartTurn::closed: throw Error(errc::client_closed, ...);
///     case StartTurn::run: break;
///     case StartTurn::in_progress: break;  // not returned by start_turn()
///   }
///   try { co_await connect_all(); } catch (...) { state_.start_failed(std::current_exception());
///   throw; } if (!state_.start_succeeded()) throw Error(errc::client_closed, "closed during
///   start()");
///
///   // close(): idempotent
///   switch (state_.close_turn()) {
///     case CloseTurn::nothing: co_return;
///     case CloseTurn::other: co_await state_.wait_until_closed(); co_return;
///     case CloseTurn::starting: state_.abort_start(); co_await
///     state_.wait_while(RunPhase::closing) ... case CloseTurn::run: co_await shut_down();
///     state_.set(RunPhase::closed); co_return;
///   }
/// @endcode
class RunState {
 public:
  explicit RunState(boost::asio::any_io_executor executor) : changed_(std::move(executor)) {}

  RunPhase phase() const noexcept { return phase_; }
  bool is(RunPhase phase) const noexcept { return phase_ == phase; }
  /// closing or closed.
  bool closing_or_closed() const noexcept {
    return phase_ == RunPhase::closing || phase_ == RunPhase::closed;
  }

  /// Any transition (abandon at destruction, the end of a close); notifies when it changes.
  void set(RunPhase phase) noexcept;

  // ---- start ---------------------------------------------------------------------------

  /// Decides without waiting: idle -> starting (`run`), `running`, `closed`, or `in_progress`
  /// (a client whose start-up runs elsewhere, WebSocketClient's supervisor, waits on
  /// `changed()` with its own deadline).
  StartTurn try_start() noexcept;

  /// Like `try_start()`, but waits for a start-up in progress and shares its outcome: returns
  /// `running` when it succeeded, rethrows its error when it failed, `closed` when close()
  /// came. Never returns `in_progress`.
  /// @par Per-operation cancellation
  /// terminal: the wait ends with `system_error(operation_aborted)`; the start-up in progress
  /// goes on.
  boost::asio::awaitable<StartTurn> start_turn();

  /// Ends the start-up: starting -> running, true. False when the phase is no longer
  /// `starting` (close() came during the start-up): the caller undoes and reports it.
  bool start_succeeded() noexcept;

  /// Ends the start-up with `error`: starting -> idle (a later start() may try again); the
  /// start() calls waiting in `start_turn()` rethrow it. When close() came during the
  /// start-up, the phase stays (closing) and the waiters see `closed`.
  void start_failed(std::exception_ptr error) noexcept;

  // ---- close ---------------------------------------------------------------------------

  /// Decides what a close() call does (see `CloseTurn`); never waits.
  CloseTurn close_turn() noexcept;

  /// starting -> closing: the start-up sees `!is(RunPhase::starting)` and gives up.
  void abort_start() noexcept;

  /// Returns once the phase is `closed`.
  boost::asio::awaitable<void> wait_until_closed();

  // ---- waiting -------------------------------------------------------------------------

  /// Returns once the phase differs from `phase`.
  boost::asio::awaitable<void> wait_while(RunPhase phase);
  /// Like `wait_while`, false when `deadline` passed first.
  boost::asio::awaitable<bool> wait_while_until(RunPhase phase,
                                                std::chrono::steady_clock::time_point deadline);

  /// Notified on every transition; clients may notify it for their own conditions too
  /// (a background task ended), waiters re-check what they wait for.
  AsyncEvent& changed() noexcept { return changed_; }

 private:
  RunPhase phase_ = RunPhase::idle;
  std::exception_ptr start_error_;   // of the last failed start-up
  std::uint64_t start_number_ = 0;   // start-ups begun
  std::uint64_t failed_number_ = 0;  // the start-up start_error_ belongs to
  AsyncEvent changed_;
};

}  // namespace trading_shared::core

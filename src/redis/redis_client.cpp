// RedisClient: one multiplexed connection with automatic pipelining (docs/redis.md).
//
// The client core owns the parts and runs the lifecycle:
// - detail::Multiplexer (detail/multiplexer.hpp): slots, FIFO, send buffers, reply matching,
//   abandonment, the deadline sweep; no sockets.
// - detail::Connection (detail/connection.hpp): the shared connection's socket, reader,
//   writer, health check and reconnect.
// - detail::BlockingConnections (detail/blocking.hpp): the dedicated connections of blocking
//   commands.
// Here: start/close (the start-up's connect loop is core::reconnect), admission of requests (the
// one submission path `submit`), waiting callers (their cancellation and resumption), the deadline
// sweeper's timer, statistics.

#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "detail/blocking.hpp"
#include "detail/client_context.hpp"
#include "detail/connection.hpp"
#include "detail/failed.hpp"
#include "detail/multiplexer.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace trading_shared::redis {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace detail {

namespace {

/// The cancellation handler installed in a waiting caller's cancellation slot.
struct Canceller {
  Multiplexer* mux;
  Slot* slot;
  void operator()(asio::cancellation_type type) const noexcept {
    if (type != asio::cancellation_type::none) {
      Multiplexer* m = mux;
      Slot* s = slot;
      m->cancel(s);  // may destroy this handler: touch nothing of it afterwards
    }
  }
};

/// Suspends the calling coroutine until `slot` completes (MultiplexerEvents::resume).
asio::awaitable<void> wait(Multiplexer& mux, Slot* slot) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [&mux, slot](auto handler) {
        static_assert(std::is_same_v<decltype(handler), WaitHandler>,
                      "wait is only awaited with use_awaitable");
        auto cs = asio::get_associated_cancellation_slot(handler);
        if (cs.is_connected()) {
          slot->cancel_slot = cs;
          cs.template emplace<Canceller>(Canceller{&mux, slot});
        }
        slot->waiter.emplace(std::move(handler));
      },
      asio::use_awaitable);
}

template <class Result>
constexpr ReplyMode mode_of() noexcept {
  if constexpr (std::is_same_v<Result, std::size_t>) {
    return ReplyMode::count;
  } else if constexpr (std::is_same_v<Result, std::vector<Reply>> ||
                       std::is_same_v<Result, std::vector<std::string>>) {
    return ReplyMode::multi;
  } else {
    return ReplyMode::single;
  }
}

/// The failure of a single-reply request answered by an error reply (out of line: the hot
/// path only tests `is_error()`).
[[noreturn, gnu::cold, gnu::noinline]] void throw_error_reply(const Slot& slot) {
  throw make_server_error(slot.reply.error_message(), "Redis " + std::string(slot.command_name()),
                          RequestState::sent);
}

/// The result of a completed request, taken from its slot (`std::optional<std::string>`:
/// await_result).
template <class Result>
Result take_result(Slot& slot) {
  if constexpr (std::is_same_v<Result, std::size_t>) {
    if (slot.first_error != Slot::kNoError) {
      throw make_server_error(slot.reply.error_message(),
                              "Redis XADD (xadd_bulk_count, entry " +
                                  std::to_string(slot.first_error) + " of " +
                                  std::to_string(slot.expected) + ")",
                              RequestState::sent);
    }
    return slot.added;
  } else if constexpr (std::is_same_v<Result, std::vector<Reply>>) {
    return std::move(slot.replies);
  } else if constexpr (std::is_same_v<Result, std::vector<std::string>>) {
    std::vector<std::string> ids;
    ids.reserve(slot.replies.size());
    for (auto& reply : slot.replies) {
      if (reply.is_error()) {
        throw make_server_error(reply.error_message(),
                                "Redis XADD (xadd_bulk, entry " + std::to_string(ids.size()) +
                                    " of " + std::to_string(slot.replies.size()) + ")",
                                RequestState::sent);
      }
      ids.push_back(reply.is_nil() ? std::string() : std::move(reply).take_string());
    }
    return ids;
  } else {
    static_assert(std::is_same_v<Result, Reply>);
    if (slot.reply.is_error()) throw_error_reply(slot);
    return std::move(slot.reply);
  }
}

template <class Result>
asio::awaitable<Result> await_result(SlotHandle handle) {
  Slot* slot = handle.slot();
  if (!slot->completed) co_await wait(*handle.multiplexer(), slot);
  if (slot->error) std::rethrow_exception(slot->error);
  if constexpr (std::is_same_v<Result, std::optional<std::string>>) {
    // `get()`'s path: the string is built in the coroutine's result from the reply's bytes
    // (no Reply, no intermediate std::string moved around).
    if (slot->reply.is_error()) throw_error_reply(*slot);
    if (slot->reply.is_nil()) co_return std::nullopt;
    co_return slot->reply.as_string();
  } else {
    co_return take_result<Result>(*slot);
  }
}

template <class Result>
asio::awaitable<Result> empty_result() {
  co_return Result{};
}

}  // namespace

class ClientCore final : public std::enable_shared_from_this<ClientCore>,
                         private MultiplexerEvents {
 public:
  ClientCore(asio::any_io_executor executor, RedisConfig config)
      : context_(std::move(executor), std::move(config)),
        mux_(context_.description, context_.stats, *this),
        connection_(context_, mux_),
        blocking_(context_, *this),
        sweep_timer_(context_.executor, kNoDeadline),
        idle_(context_.executor),
        tasks_done_(context_.executor) {}

  asio::awaitable<void> start();
  asio::awaitable<void> close();
  /// The owning RedisClient is being destroyed: close every socket and stop every task now.
  void abandon() noexcept;

  /// RedisClient::submit: admission, encoding (`encode(std::string&)`), queueing.
  template <class Result, class Encode>
  asio::awaitable<Result> submit(const CommandOptions& options, std::size_t replies,
                                 const char* name, const Encode& encode);

  asio::awaitable<Reply> blocking(std::string encoded, milliseconds block) {
    return blocking_.run(std::move(encoded), block);
  }
  RedisStats stats() noexcept;
  void set_round_trip_histogram(core::Histogram* histogram) noexcept {
    mux_.set_round_trip(histogram);
  }
  const RedisConfig& config() const noexcept { return context_.config; }
  const std::string& description() const noexcept { return context_.description; }
  const asio::any_io_executor& executor() const noexcept { return context_.executor; }

 private:
  // MultiplexerEvents
  void resume(Slot& slot, Resume how) noexcept override;
  void request_finished() noexcept override;

  /// Admits one request (the state, the queue bound, the breaker) and begins its slot, which
  /// holds the breaker's permit. Null with the error set when refused.
  Slot* admit(std::size_t replies, ReplyMode mode, milliseconds timeout, std::exception_ptr& error);
  /// start(): connects until connected (null), out of time, a permanent error, the caller's
  /// cancellation or close() (the error start() reports).
  asio::awaitable<std::exception_ptr> start_up();
  void arm_sweeper(Clock::time_point deadline) noexcept;
  asio::awaitable<void> sweep_loop();
  std::size_t active() const noexcept { return mux_.active() + blocking_.active(); }
  void spawn_task(asio::awaitable<void> task, const char* name);
  std::exception_ptr closed_error(const char* what) const {
    return make_error(errc::client_closed, "RedisClient " + context_.description + what,
                      RequestState::not_sent);
  }

  ClientContext context_;
  Multiplexer mux_;
  Connection connection_;
  BlockingConnections blocking_;
  bool start_running_ = false;  // a start() runs its start-up (close() waits for its end)
  bool closed_fully_ = false;   // the running close() is done (other close() calls wait)
  asio::steady_timer sweep_timer_;
  core::AsyncEvent idle_;  // close(): notified when a request or blocking command finishes
  std::size_t tasks_ = 0;
  core::AsyncEvent tasks_done_;
};

// ---- submission ----------------------------------------------------------------------------

Slot* ClientCore::admit(std::size_t replies, ReplyMode mode, milliseconds timeout,
                        std::exception_ptr& error) {
  auto& stats = context_.stats;
  const auto& state = context_.state;
  if (!state.is(core::RunPhase::running)) {
    ++stats.rejected;
    error = make_error(state.closing_or_closed() ? errc::client_closed : errc::not_started,
                       "RedisClient " + context_.description, RequestState::not_sent);
    return nullptr;
  }
  if (mux_.size() >= context_.config.max_queued) {
    ++stats.rejected;
    error = make_error(errc::queue_full,
                       "RedisClient " + context_.description + ": " + std::to_string(mux_.size()) +
                           " requests queued or in flight (max_queued)",
                       RequestState::not_sent);
    return nullptr;
  }
  auto admission = context_.breaker.try_acquire();
  if (!admission) {
    ++stats.rejected;
    error = std::make_exception_ptr(context_.breaker.make_error(*admission.rejection()));
    return nullptr;
  }
  Slot* slot = mux_.begin(replies, mode, Clock::now() + timeout);
  slot->permit = std::move(admission).permit();
  return slot;
}

template <class Result, class Encode>
asio::awaitable<Result> ClientCore::submit(const CommandOptions& options, std::size_t replies,
                                           const char* name, const Encode& encode) {
  if (replies == 0) return empty_result<Result>();  // an empty batch
  std::exception_ptr error;
  Slot* slot = admit(
      replies, mode_of<Result>(),
      options.timeout > milliseconds::zero() ? options.timeout : context_.config.command_timeout,
      error);
  if (slot == nullptr) return failed<Result>(std::move(error));
  std::string& buffer = mux_.send_buffer();
  const std::size_t start = buffer.size();
  try {
    encode(buffer);
  } catch (...) {
    mux_.abort(slot, start);  // no half-encoded command may stay in the send buffer
    return failed<Result>(std::current_exception());
  }
  SlotHandle handle = mux_.commit(slot, start, name);
  arm_sweeper(slot->deadline);
  connection_.schedule_flush();
  return await_result<Result>(std::move(handle));
}

void ClientCore::resume(Slot& slot, Resume how) noexcept {
  if (how != Resume::from_cancel_handler && slot.cancel_slot.is_connected()) {
    slot.cancel_slot.clear();
  }
  slot.cancel_slot = {};
  WaitHandler waiter = std::move(*slot.waiter);
  slot.waiter.reset();
  if (how == Resume::inline_) {
    // Only the reader resumes callers inline (it re-checks its connection afterwards): the
    // caller runs until its next suspension, and the requests it makes meanwhile are flushed
    // by the reader after its batch.
    try {
      std::move(waiter)();
    } catch (...) {
      // A completion handler of the resumed caller threw (e.g. a co_spawn handler that
      // rethrows): let it propagate out of the io_context's run(), as it would without us.
      asio::post(context_.executor, [e = std::current_exception()] { std::rethrow_exception(e); });
    }
  } else {
    asio::post(context_.executor, [w = std::move(waiter)]() mutable { std::move(w)(); });
  }
}

void ClientCore::request_finished() noexcept {
  // close() waits: for the requests in its grace period (closing), then for the blocking
  // commands whose sockets it closed (closed).
  if (context_.state.closing_or_closed()) idle_.notify_all();
}

// ---- deadlines -----------------------------------------------------------------------------

void ClientCore::arm_sweeper(Clock::time_point deadline) noexcept {
  if (deadline < sweep_timer_.expiry()) sweep_timer_.expires_at(deadline);
}

asio::awaitable<void> ClientCore::sweep_loop() {
  while (!context_.state.is(core::RunPhase::closed)) {
    boost::system::error_code ec;
    co_await sweep_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (context_.state.is(core::RunPhase::closed)) break;
    const auto now = Clock::now();
    const auto next = mux_.sweep(now);
    // At most one sweep per millisecond, however the deadlines are spread.
    sweep_timer_.expires_at(next == kNoDeadline ? next : std::max(next, now + milliseconds(1)));
  }
}

// ---- lifecycle -----------------------------------------------------------------------------

void ClientCore::spawn_task(asio::awaitable<void> task, const char* name) {
  ++tasks_;
  asio::co_spawn(context_.executor, std::move(task),
                 [this, self = shared_from_this(), name](const std::exception_ptr& error) {
                   if (error) {
                     try {
                       std::rethrow_exception(error);
                     } catch (const std::exception& e) {
                       log()->error("Redis {}: background task {} ended with an error: {}",
                                    context_.description, name, e.what());
                     }
                   }
                   if (--tasks_ == 0) tasks_done_.notify_all();
                 });
}

/// Waits for `event` in close(), which the caller's cancellation never cuts short (it only
/// skips the grace period): a cancellation ends this wait only, and the caller re-checks what
/// it waits for. Needs `throw_if_cancelled(false)`, as close() sets.
asio::awaitable<void> wait_in_close(core::AsyncEvent& event) {
  try {
    co_await event.wait();
  } catch (const boost::system::system_error& e) {
    if (e.code() != asio::error::operation_aborted) throw;
  }
}

asio::awaitable<void> ClientCore::start() {
  auto& state = context_.state;
  const std::string& description = context_.description;
  // A cancelled start() must still leave the state machine consistent: waits below report
  // cancellation as an error, and start_up() checks for it between attempts.
  co_await asio::this_coro::throw_if_cancelled(false);
  core::StartTurn turn = core::StartTurn::run;
  try {
    turn = co_await state.start_turn();  // waits for a start-up in progress, shares its end
  } catch (const boost::system::system_error& e) {
    if (e.code() != asio::error::operation_aborted) throw;
    throw Error(make_error_code(errc::cancelled),
                "RedisClient " + description + ": start() cancelled", RequestState::not_sent);
  }
  switch (turn) {
    case core::StartTurn::running:
      co_return;
    case core::StartTurn::closed:
      throw Error(make_error_code(errc::client_closed), "RedisClient " + description,
                  RequestState::not_sent);
    case core::StartTurn::run:
    case core::StartTurn::in_progress:  // not returned by start_turn()
      break;
  }
  start_running_ = true;
  connection_.set_owner(weak_from_this());
  std::exception_ptr failure = co_await start_up();
  start_running_ = false;
  if (failure) {
    connection_.discard();
    state.start_failed(failure);  // back to idle (unless close() came): a later start() retries
    state.changed().notify_all();
    std::rethrow_exception(failure);
  }
  if (!state.start_succeeded()) {  // close() was called while the last attempt succeeded
    connection_.discard();
    state.changed().notify_all();
    std::rethrow_exception(closed_error(": closed during start()"));
  }
  spawn_task(connection_.supervise(), "supervisor");
  spawn_task(sweep_loop(), "deadline sweeper");
  log()->info("Redis {}: started (client name {})", description, context_.config.client_name);
}

asio::awaitable<std::exception_ptr> ClientCore::start_up() {
  const auto& state = context_.state;
  const auto& config = context_.config;
  const std::string& description = context_.description;
  // The caller's cancellation is seen between attempts: an attempt runs on the connection's
  // own cancellation slot, which close() alone cuts (Connection::interrupt()).
  const auto cancellation = co_await asio::this_coro::cancellation_state;
  auto cancelled = [&cancellation] {
    return cancellation.cancelled() != asio::cancellation_type::none;
  };
  core::Backoff backoff(config.reconnect_backoff, context_.random);
  // Each attempt gets connect_timeout, cut to the time left before startup_timeout; a
  // permanent error (wrong password, unknown database) ends the start-up at once. Policy,
  // observer and the attempt as named locals: GCC 12 destroys braced temporaries of a
  // co_await expression twice.
  const core::ReconnectPolicy policy{.deadline = config.startup_timeout,
                                     .attempt_timeout = config.connect_timeout};
  const std::string what = "Redis " + description + ": start-up";
  const core::ReconnectObserver observer{
      .what = what, .log = log(), .failures = &context_.stats.connect_failures};
  auto attempt = [this](milliseconds budget) { return connection_.connect_interruptible(budget); };
  auto stopped = [&] { return cancelled() || !state.is(core::RunPhase::starting); };
  core::ReconnectResult result;
  std::exception_ptr failure;
  try {
    result = co_await core::reconnect(attempt, backoff, policy, observer, stopped,
                                      context_.state.changed());
  } catch (...) {
    failure = std::current_exception();  // permanent, or the caller's cancellation of a wait
  }
  if (!failure && result.end == core::ReconnectEnd::connected) co_return nullptr;
  if (!state.is(core::RunPhase::starting)) co_return closed_error(": closed during start()");
  if (cancelled() || (failure && classify(failure) == ErrorKind::cancelled)) {
    co_return make_error(errc::cancelled, "RedisClient " + description + ": start() cancelled",
                         RequestState::not_sent);
  }
  if (failure) co_return failure;
  co_return make_error(errc::startup_timeout,
                       "RedisClient " + description + ": not connected " +
                           std::to_string(config.startup_timeout.count()) + " ms after " +
                           std::to_string(result.attempts) +
                           " attempt(s); last error: " + result.last_cause,
                       RequestState::not_sent);
}

asio::awaitable<void> ClientCore::close() {
  auto& state = context_.state;
  // A cancelled close() skips the grace period but still tears everything down.
  co_await asio::this_coro::throw_if_cancelled(false);
  switch (state.close_turn()) {
    case core::CloseTurn::nothing:  // never started, or closed already
      co_return;
    case core::CloseTurn::other:  // another close() is running: wait for it
      while (!closed_fully_) co_await wait_in_close(state.changed());
      co_return;
    case core::CloseTurn::starting:
      // start() sees this after its current attempt (cut short here) and gives up.
      state.abort_start();
      connection_.interrupt();
      while (start_running_) co_await wait_in_close(state.changed());
      closed_fully_ = true;
      state.set(core::RunPhase::closed);
      co_return;
    case core::CloseTurn::run:
      break;
  }
  // Blocking commands (XREADGROUP BLOCK) are cut short rather than waited for: what they
  // would have read stays pending in the group and is read again later.
  blocking_.close_sockets();
  const auto deadline = Clock::now() + context_.config.close_timeout;
  try {
    // Not `active() > 0 && co_await ...` in one condition: GCC 12 evaluates a co_await of a
    // short-circuited operand anyway.
    while (active() > 0) {
      if (!co_await idle_.wait_until(deadline)) break;  // the grace period is over
    }
  } catch (const boost::system::system_error& e) {
    // close() was cancelled: the grace period ends now, the rest goes on.
    if (e.code() != asio::error::operation_aborted) throw;
  }
  if (const auto left = active(); left > 0) {
    log()->warn("Redis {}: close: {} request(s) still running after {} ms; failing them",
                context_.description, left, context_.config.close_timeout.count());
  }
  state.set(core::RunPhase::closed);
  connection_.interrupt();
  mux_.fail_all(errc::client_closed, "client closed");
  connection_.shut_down();
  blocking_.close_sockets();
  sweep_timer_.cancel();
  // The background tasks, and the blocking commands (their sockets are closed: they end at
  // once and notify `idle_`).
  while (tasks_ > 0) co_await wait_in_close(tasks_done_);
  while (blocking_.active() > 0) co_await wait_in_close(idle_);
  blocking_.clear();
  closed_fully_ = true;
  state.changed().notify_all();
  log()->info("Redis {}: closed", context_.description);
}

void ClientCore::abandon() noexcept {
  auto& state = context_.state;
  if (state.is(core::RunPhase::idle) || state.is(core::RunPhase::closed)) {
    state.set(core::RunPhase::closed);
    return;
  }
  log()->warn(
      "RedisClient {} destroyed without close(): failing its requests and closing its "
      "sockets now",
      context_.description);
  closed_fully_ = true;
  state.set(core::RunPhase::closed);
  connection_.interrupt();
  mux_.fail_all(errc::client_closed, "client destroyed without close()");
  connection_.shut_down();
  blocking_.close_sockets();
  sweep_timer_.cancel();
}

RedisStats ClientCore::stats() noexcept {
  RedisStats s = context_.stats;
  s.connected = connection_.connected();
  s.queued = mux_.queued();
  s.in_flight = mux_.outstanding();
  s.blocking_connections = blocking_.size();
  s.breaker = context_.breaker.state();
  s.breaker_trips = context_.breaker.stats().trips;
  s.tls_context_builds = context_.tls ? context_.tls->builds() : 0;
  return s;
}

}  // namespace detail

// ---- RedisClient ---------------------------------------------------------------------------

RedisClient::RedisClient(asio::any_io_executor executor, RedisConfig config)
    : core_(std::make_shared<detail::ClientCore>(std::move(executor), std::move(config))) {}

// Background tasks and in-flight writes hold their own reference to the core, so destroying a
// client that was not closed (a bug, logged by the core) does not leave *them* dangling.
// Callers' awaitables hold a plain pointer: the client must outlive them (documented).
RedisClient::~RedisClient() {
  core_->abandon();
}

asio::awaitable<void> RedisClient::start() {
  return core_->start();
}
asio::awaitable<void> RedisClient::close() {
  return core_->close();
}

template <class Result>
asio::awaitable<Result> RedisClient::submit(const CommandOptions& options, std::size_t replies,
                                            const char* name, Encoder encode) {
  return core_->submit<Result>(options, replies, name, encode);
}

template asio::awaitable<Reply> RedisClient::submit<Reply>(const CommandOptions&, std::size_t,
                                                           const char*, Encoder);
template asio::awaitable<std::vector<Reply>> RedisClient::submit<std::vector<Reply>>(
    const CommandOptions&, std::size_t, const char*, Encoder);
template asio::awaitable<std::vector<std::string>> RedisClient::submit<std::vector<std::string>>(
    const CommandOptions&, std::size_t, const char*, Encoder);
template asio::awaitable<std::size_t> RedisClient::submit<std::size_t>(const CommandOptions&,
                                                                       std::size_t, const char*,
                                                                       Encoder);
template asio::awaitable<std::optional<std::string>>
RedisClient::submit<std::optional<std::string>>(const CommandOptions&, std::size_t, const char*,
                                                Encoder);

asio::awaitable<std::vector<Reply>> RedisClient::pipeline(const Request& request,
                                                          const CommandOptions& options) {
  if (request.empty()) {
    return detail::failed<std::vector<Reply>>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis pipeline: empty request")));
  }
  if (request.transaction_open()) {
    // Sent, it would leave the shared connection inside MULTI: every other caller's commands
    // would be queued into the transaction.
    return detail::failed<std::vector<Reply>>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument),
              "Redis pipeline: the request opens a transaction (MULTI) and does not end it "
              "with EXEC or DISCARD")));
  }
  auto encode = [&](std::string& out) { out.append(request.encoded()); };
  return submit<std::vector<Reply>>(options, request.size(), nullptr, Encoder(encode));
}

asio::awaitable<Reply> RedisClient::blocking(std::string encoded, milliseconds block) {
  return core_->blocking(std::move(encoded), block);
}

RedisStats RedisClient::stats() const noexcept {
  return core_->stats();
}
void RedisClient::set_round_trip_histogram(core::Histogram* histogram) noexcept {
  core_->set_round_trip_histogram(histogram);
}
const RedisConfig& RedisClient::config() const noexcept {
  return core_->config();
}
const std::string& RedisClient::description() const noexcept {
  return core_->description();
}
const std::string& RedisClient::client_name() const noexcept {
  return core_->config().client_name;
}
asio::any_io_executor RedisClient::get_executor() const noexcept {
  return core_->executor();
}

}  // namespace trading_shared::redis

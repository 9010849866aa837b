// WebSocketClient: lifecycle (construction, start, close, cut on destruction) and stats.
// The parts of the client: client_core.hpp.
#include <trading_shared/core/error.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>

#include "client_core.hpp"

namespace trading_shared::ws {

using namespace detail;  // the client's connection state, waiters, aliases

/// Stops everything at once (destruction without close, close overrun).
void WebSocketClient::Core::cut() {
  if (connecting) {
    connecting->resolver.cancel();
    beast::close_socket(beast::get_lowest_layer(connecting->ws));
  }
  if (connection) beast::close_socket(beast::get_lowest_layer(connection->ws));
  state.changed().notify_all();  // the supervisor's backoff wait
}

/// Takes no new work: the phase is closing (start() and the supervisor's backoff wait see it),
/// a connect in progress is cut, waiting senders fail.
void WebSocketClient::Core::begin_closing() {
  state.set(core::RunPhase::closing);
  if (connecting) {
    connecting->resolver.cancel();
    beast::close_socket(beast::get_lowest_layer(connecting->ws));
  }
  wake_all(send_waiters);  // not granted: they throw client_closed
  if (!supervisor_running) readable.notify_all();
}

asio::awaitable<void> WebSocketClient::Core::close() {
  auto self = shared_from_this();
  switch (state.close_turn()) {
    case core::CloseTurn::nothing:  // never started (now closed), or closed already
      co_return;
    case core::CloseTurn::other:  // another close() runs (it is bounded): wait for its end
      (void)co_await core::wait_until_shielded(state.changed(), Clock::time_point::max(),
                                               [this] { return state.is(core::RunPhase::closed); });
      co_return;
    case core::CloseTurn::starting:  // the start-up is the supervisor: it stops with the rest
      state.abort_start();
      break;
    case core::CloseTurn::run:
      break;
  }
  const auto deadline = Clock::now() + config.close_timeout;
  begin_closing();
  if (auto c = connection) {
    // Take the write turn (Beast allows one write at a time, and nothing may follow our
    // close frame): at once, or after the send in flight, bounded by the deadline.
    bool have_turn = !writing;
    if (have_turn) {
      writing = true;
    } else {
      Waiter waiter(ex, send_waiters, true);
      (void)co_await core::wait_until_shielded(waiter.event, deadline,
                                               [&waiter] { return waiter.woken; });
      have_turn = waiter.granted;
    }
    if (have_turn && connection == c) {
      asio::steady_timer bound(ex);
      bound.expires_at(deadline);
      bound.async_wait([self](boost::system::error_code ec) {
        if (!ec) self->cut();  // the peer does not answer our close frame
      });
      boost::system::error_code ec;
      co_await c->ws.async_close(
          websocket::close_code::normal,
          asio::bind_cancellation_slot(asio::cancellation_slot(),
                                       asio::redirect_error(asio::use_awaitable, ec)));
      bound.cancel();
      if (ec && ec != asio::error::operation_aborted) {
        log()->info("{}: close handshake of connection {}: {}", config.url, c->number,
                    ec.message());
      }
    } else if (connection == c) {
      log()->warn("{}: a send did not finish within close_timeout: cutting connection {}",
                  config.url, c->number);
      cut();
    }
  }
  const auto supervisor_ended = [this] { return !supervisor_running; };
  bool ended = !supervisor_running;
  if (!ended) {
    ended = co_await core::wait_until_shielded(state.changed(), deadline, supervisor_ended);
  }
  if (!ended) {
    log()->warn("{}: close did not finish within {} ms: cutting the connection", config.url,
                config.close_timeout.count());
    cut();
    (void)co_await core::wait_until_shielded(
        state.changed(), Clock::now() + std::chrono::milliseconds(500), supervisor_ended);
  }
  state.set(core::RunPhase::closed);
  readable.notify_all();
  if (config.on_readable) config.on_readable();
}

// ---- the public API --------------------------------------------------------------------------

WebSocketClient::WebSocketClient(asio::any_io_executor executor, WebSocketConfig config) {
  validate(config);
  core_ = std::make_shared<Core>(std::move(executor), std::move(config));
}

WebSocketClient::~WebSocketClient() {
  if (core_ && !core_->state.is(core::RunPhase::closed) && !core_->state.is(core::RunPhase::idle)) {
    if (!core_->state.is(core::RunPhase::closing)) {
      log()->warn("{}: WebSocketClient destroyed without close(): cutting the connection",
                  core_->config.url);
    }
    core_->begin_closing();
    core_->cut();
  }
}

asio::awaitable<void> WebSocketClient::start() {
  auto self = core_;
  // The start-up is the supervisor's: it runs until closed, its first ready connection ends
  // the start-up (`start_succeeded()`). Concurrent start() calls wait for it, each with its
  // own deadline.
  switch (self->state.try_start()) {
    case core::StartTurn::running:
      co_return;
    case core::StartTurn::closed:
      throw Error(make_error_code(errc::client_closed), self->what("closed"));
    case core::StartTurn::run:
      self->supervisor_running = true;
      asio::co_spawn(self->ex, Core::supervise(self), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);  // the supervisor handles every error it can meet
      });
      break;
    case core::StartTurn::in_progress:
      break;
  }
  const auto deadline = Clock::now() + self->config.startup_timeout;
  // Until started, closed, the deadline, or a TLS refusal (permanent: a certificate that
  // fails verification will fail again; start() says so at once, F61).
  while (self->state.is(core::RunPhase::starting) && !self->startup_refusal &&
         Clock::now() < deadline) {
    bool cancelled = false;
    try {
      (void)co_await self->state.changed().wait_until(deadline);
    } catch (const boost::system::system_error& e) {
      if (e.code() != asio::error::operation_aborted) throw;  // cancelled: looked at below
      cancelled = true;
    }
    if (cancelled) break;
  }
  if (self->state.is(core::RunPhase::running)) co_return;
  if (self->state.closing_or_closed()) {
    throw Error(make_error_code(errc::client_closed), self->what("closed during start"));
  }
  // Cancelled or timed out: the client closes before the error reaches the caller (a failed
  // start-up does not return to idle, unlike RunState::start_failed: a later start() is
  // refused with client_closed).
  const auto cancelled = (co_await asio::this_coro::cancellation_state).cancelled();
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  const std::string failure = self->last_failure;
  const std::exception_ptr refusal = self->startup_refusal;
  co_await self->close();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  if (cancelled != asio::cancellation_type::none) {
    throw Error(make_error_code(errc::cancelled), self->what("start cancelled"));
  }
  if (refusal) std::rethrow_exception(refusal);
  throw Error(make_error_code(errc::startup_timeout),
              self->what("not connected within the startup timeout") + " (" +
                  std::to_string(self->config.startup_timeout.count()) +
                  " ms); last failure: " + failure);
}

asio::awaitable<void> WebSocketClient::close() {
  auto self = core_;
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await self->close();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
}

WebSocketStats WebSocketClient::stats() const noexcept {
  WebSocketStats s = core_->stats;
  s.queued = core_->count;
  s.queued_bytes = core_->queued_bytes;
  s.held_bytes = core_->held_bytes;
  return s;
}

const WebSocketConfig& WebSocketClient::config() const noexcept {
  return core_->config;
}

}  // namespace trading_shared::ws

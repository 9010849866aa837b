// WebSocketClient: the send path. One write at a time (Beast allows one write in flight): the
// write turn is handed on in FIFO order; frames are written bounded by idle_timeout. The parts
// of the client: client_core.hpp.
#include <trading_shared/core/error.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>

#include "client_core.hpp"

namespace trading_shared::ws {

using namespace detail;  // the client's connection state, waiters, aliases

/// Writes one text frame on `c` as the holder of the write turn. Not cancellable (a write
/// cut in the middle leaves half a frame on the wire); bounded instead: a write that has not
/// completed within idle_timeout (a peer that stopped reading) closes the socket.
asio::awaitable<boost::system::error_code> WebSocketClient::Core::write_frame(
    std::shared_ptr<Connection> c, std::string_view text) {
  asio::steady_timer bound(ex);
  bound.expires_after(config.idle_timeout);
  bound.async_wait([c](boost::system::error_code ec) {
    if (ec) return;
    c->write_overrun = true;
    beast::close_socket(beast::get_lowest_layer(c->ws));
  });
  boost::system::error_code ec;
  c->ws.text(true);
  co_await c->ws.async_write(
      asio::buffer(text.data(), text.size()),
      asio::bind_cancellation_slot(asio::cancellation_slot(),
                                   asio::redirect_error(asio::use_awaitable, ec)));
  bound.cancel();
  co_return ec;
}

/// Takes the write turn (FIFO); on return the caller holds it and must `release_write()`
/// (use `Turn`). Throws client_closed, queue_full, or cancelled (the caller's cancellation;
/// a turn granted to a cancelled caller is passed on).
asio::awaitable<void> WebSocketClient::Core::acquire_write() {
  auto self = shared_from_this();
  if (state.closing_or_closed()) {
    throw Error(make_error_code(errc::client_closed), what("closed"));
  }
  if (!writing && send_waiters.empty()) {
    writing = true;
    co_return;
  }
  if (send_waiters.size() >= config.max_pending_sends) {
    throw Error(make_error_code(errc::queue_full),
                what("too many sends waiting") + " (" + std::to_string(send_waiters.size()) + ")");
  }
  Waiter waiter(ex, send_waiters);
  (void)co_await wait_on(waiter.event, Clock::time_point::max());  // woken, granted or cancelled
  const auto cancelled = (co_await asio::this_coro::cancellation_state).cancelled();
  if (waiter.granted) {
    if (state.closing_or_closed() || cancelled != asio::cancellation_type::none) {
      release_write();
      if (state.closing_or_closed())
        throw Error(make_error_code(errc::client_closed), what("closed"));
      throw Error(make_error_code(errc::cancelled), what("send cancelled"));
    }
    co_return;
  }
  if (waiter.woken) throw Error(make_error_code(errc::client_closed), what("closed"));
  throw Error(make_error_code(errc::cancelled), what("send cancelled"));
}

void WebSocketClient::Core::release_write() {
  if (send_waiters.empty()) {
    writing = false;
    return;
  }
  Waiter* next = send_waiters.front();
  send_waiters.pop_front();
  next->granted = true;  // the turn passes on: `writing` stays true
  next->wake();
}

// ---- the public API --------------------------------------------------------------------------

void WebSocketClient::add_on_connect(std::string message) {
  core_->on_connect.push_back(std::move(message));
  auto c = core_->connection;
  // A connection whose subscribe is still running picks the new message up itself (it walks
  // the list by index); a ready one gets it now, through the write turn like any send.
  if (!c || !c->ready) return;
  asio::co_spawn(
      core_->ex,
      [](std::shared_ptr<Core> s, std::shared_ptr<Connection> conn,
         std::string text) -> asio::awaitable<void> {
        std::string failure;
        try {
          co_await s->acquire_write();
          Core::Turn turn{s.get()};
          if (s->connection != conn) co_return;  // the next connection sends it with the rest
          const auto ec = co_await s->write_frame(conn, text);
          if (ec) {
            failure = ec.message();
          } else {
            ++s->stats.sends;
          }
        } catch (const Error& e) {
          failure = e.what();
        }
        if (!failure.empty()) {
          ++s->stats.send_failures;
          log()->warn("{}: on_connect message not sent on connection {}: {}", s->config.url,
                      conn->number, failure);
        }
      }(core_, c, core_->on_connect.back()),
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);  // the coroutine catches every error it can meet
      });
}

asio::awaitable<void> WebSocketClient::send(std::string_view text) {
  auto self = core_;
  if (self->state.is(core::RunPhase::idle) || self->state.is(core::RunPhase::starting)) {
    throw Error(make_error_code(errc::not_started), self->what("send before start()"));
  }
  co_await self->acquire_write();
  Core::Turn turn{self.get()};
  auto c = self->connection;
  if (!c || !c->ready) {
    ++self->stats.send_failures;
    throw Error(make_error_code(errc::connection_lost), self->what("not connected (reconnecting)"));
  }
  const auto ec = co_await self->write_frame(c, text);
  if (ec) {
    ++self->stats.send_failures;
    throw Error(make_error_code(errc::connection_lost),
                self->what("send failed") + " on connection " + std::to_string(c->number) + ": " +
                    ec.message(),
                RequestState::sent);
  }
  ++self->stats.sends;
}

}  // namespace trading_shared::ws

// WebSocketClient: connecting (TCP connect and handshake), the on_connect messages of a new
// connection, the read loop, why a connection ended, and the supervisor that reconnects with
// backoff (core::reconnect). The parts of the client: client_core.hpp.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/core/tls.hpp>

#include <boost/asio/co_spawn.hpp>

#include "client_core.hpp"

namespace trading_shared::ws {

using namespace detail;  // the client's connection state, waiters, aliases

namespace {

bool is_tls_refusal(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const Error& e) {
    return e.code() == make_error_code(errc::tls_failed);
  } catch (...) {
    return false;  // any other failure: retried as before
  }
}

}  // namespace

/// One connect: resolve, TCP connect, TLS handshake (wss://), WebSocket handshake, all within
/// `budget` (the connect_timeout, F62): each step gets the time left.
asio::awaitable<void> WebSocketClient::Core::connect(std::shared_ptr<Connection> c,
                                                     std::chrono::milliseconds budget) {
  const auto end = Clock::now() + budget;
  const auto left = [end] {
    return std::max(std::chrono::ceil<std::chrono::milliseconds>(end - Clock::now()),
                    std::chrono::milliseconds(1));
  };
  const auto closed_while_connecting = [this] {
    return Error(make_error_code(errc::client_closed), what("closed while connecting"));
  };
  // Boost 1.81's resolver runs in a background thread; cancelling it completes our wait at
  // once (the lookup itself may go on). The connect deadline covers it.
  asio::steady_timer deadline(ex);
  deadline.expires_at(end);
  deadline.async_wait([c](boost::system::error_code ec) {
    if (!ec) c->resolver.cancel();
  });
  boost::system::error_code resolved;
  const auto endpoints = co_await c->resolver.async_resolve(
      url.host, url.port, asio::redirect_error(asio::use_awaitable, resolved));
  deadline.cancel();
  if (state.closing_or_closed()) throw closed_while_connecting();
  // Not closing: the cancellation was the deadline's (a timeout, not the caller's cancel).
  if (resolved == asio::error::operation_aborted) {
    throw Error(make_error_code(errc::connect_timeout),
                what("resolving ") + url.host + ": " + resolved.message());
  }
  if (resolved) throw boost::system::system_error(resolved);
  auto& socket = beast::get_lowest_layer(c->ws);
  socket.expires_at(end);
  co_await socket.async_connect(endpoints, asio::use_awaitable);
  socket.socket().set_option(tcp::no_delay(true));
  auto& layer = c->ws.next_layer();
  if (layer.is_tls()) [[unlikely]] {
    // SNI and the host-name check, then the handshake under the same deadline (a server that
    // accepts TCP and never answers the ClientHello ends here, F62).
    auto& tls = layer.tls();
    core::prepare_client(tls.native_handle(), tls_source->config(), url.host);
    boost::system::error_code ec;
    co_await tls.async_handshake(asio::ssl::stream_base::client,
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (state.closing_or_closed()) throw closed_while_connecting();
    if (ec == beast::error::timeout) {
      throw Error(make_error_code(errc::connect_timeout),
                  what("TLS handshake not completed within connect_timeout (") +
                      std::to_string(budget.count()) +
                      " ms): the server accepted the connection but does not answer");
    }
    if (ec) throw core::tls_handshake_error(ec, tls.native_handle(), "WebSocket " + config.url);
  } else {
    layer.start_sniffing();  // a TLS server's answer to our plaintext upgrade is recognised
  }
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = left();
  timeouts.idle_timeout = config.idle_timeout;
  timeouts.keep_alive_pings = true;
  socket.expires_never();  // the websocket timeouts replace the tcp_stream's
  c->ws.set_option(timeouts);
  c->ws.read_message_max(config.max_message_size);
  c->ws.auto_fragment(false);
  c->ws.set_option(websocket::stream_base::decorator([](websocket::request_type& request) {
    request.set(beast::http::field::user_agent, "trading_shared-ws");
  }));
  const bool v6 = url.host.find(':') != std::string::npos;
  const std::string host_header = (v6 ? "[" + url.host + "]" : url.host) + ":" + url.port;
  websocket::response_type answer;
  boost::system::error_code ec;
  co_await c->ws.async_handshake(answer, host_header, url.target,
                                 asio::redirect_error(asio::use_awaitable, ec));
  layer.stop_sniffing();
  timeouts.handshake_timeout = config.connect_timeout;  // for the closing handshake
  c->ws.set_option(timeouts);
  if (!ec) co_return;
  if (state.closing_or_closed()) throw closed_while_connecting();
  if (layer.is_tls() && core::is_tls_error(ec)) {
    // The server's refusal after our side of the TLS handshake completed (TLS 1.3: "certificate
    // required" arrives with the first read): tls_failed like a refusal during the handshake.
    throw core::tls_handshake_error(ec, layer.tls().native_handle(), "WebSocket " + config.url);
  }
  throw handshake_error(ec, layer.sniffed(), answer);
}

/// The error of a failed WebSocket handshake, saying which side wants TLS when it can tell (F63).
Error WebSocketClient::Core::handshake_error(const boost::system::error_code& ec,
                                             std::string_view sniffed,
                                             const websocket::response_type& answer) const {
  if (!url.tls && core::looks_like_tls(sniffed)) {
    return Error(make_error_code(errc::tls_failed),
                 what("WebSocket handshake: the server speaks TLS: use wss://"));
  }
  if (ec == websocket::error::upgrade_declined) {
    std::string body = answer.body().substr(0, 200);
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    return Error(make_error_code(errc::connect_failed),
                 what("WebSocket upgrade declined: HTTP ") + std::to_string(answer.result_int()) +
                     (body.empty() ? std::string() : ": " + body));
  }
  if (ec == beast::error::timeout) {
    return Error(make_error_code(errc::connect_timeout),
                 what("WebSocket handshake not completed within connect_timeout"));
  }
  const bool closed = ec == beast::http::error::end_of_stream || ec == asio::error::eof ||
                      ec == asio::error::connection_reset;
  if (!url.tls && closed && sniffed.empty()) {
    return Error(make_error_code(errc::connect_failed),
                 what("WebSocket handshake: the server closed the connection without answering "
                      "the upgrade (") +
                     ec.message() + "); if it is a TLS port, use wss://");
  }
  return Error(make_error_code(errc::connect_failed),
               what("WebSocket handshake failed: ") + ec.message());
}

/// Sends the on_connect messages on a new connection (taking the write turn like any send,
/// so never during another write); then sends may use it, and start() completes.
asio::awaitable<void> WebSocketClient::Core::subscribe(std::shared_ptr<Core> self,
                                                       std::shared_ptr<Connection> c) {
  std::string failure;
  try {
    co_await self->acquire_write();
    Turn turn{self.get()};
    // By index, copying each message: add_on_connect may append while we write.
    for (std::size_t i = 0; i < self->on_connect.size() && self->connection == c; ++i) {
      const std::string message = self->on_connect[i];
      const auto ec = co_await self->write_frame(c, message);
      if (ec) {
        failure = ec.message();
        break;
      }
      ++self->stats.sends;
    }
    if (failure.empty() && self->connection == c) c->ready = true;
  } catch (const Error& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    if (self->connection == c && !self->state.closing_or_closed()) {
      ++self->stats.send_failures;
      log()->warn("{}: connection {}: sending the on_connect messages failed ({}): reconnecting",
                  self->config.url, c->number, failure);
      c->send_failed = true;
      beast::close_socket(beast::get_lowest_layer(c->ws));
    }
    co_return;
  }
  // The first ready connection ends the start-up: start() completes.
  if (c->ready) (void)self->state.start_succeeded();
  // After the state is running: the hook may send at once.
  if (c->ready && self->connection == c && self->config.on_ready) {
    self->config.on_ready(c->number);
  }
}

WebSocketClient::Core::Ending WebSocketClient::Core::ending_of(
    const Connection& c, const boost::system::error_code& ec) {
  if (c.slow_consumer) return Ending::slow_consumer;
  if (c.send_failed) return Ending::send_failed;
  if (c.write_overrun) return Ending::idle_timeout;  // the peer stopped reading
  if (ec == websocket::error::closed) return Ending::closed_by_peer;
  if (ec == beast::error::timeout) return Ending::idle_timeout;
  if (ec == websocket::error::message_too_big || ec == websocket::error::buffer_overflow) {
    return Ending::oversized;
  }
  if (ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe || ec == asio::error::connection_aborted) {
    return Ending::eof;
  }
  if (ec == websocket::condition::protocol_violation) return Ending::protocol_error;
  // Beast fails a connection on a protocol violation by sending a close frame and waiting
  // (up to the handshake timeout) for the peer to close; when the misbehaving peer does not,
  // Beast closes the socket and reports the teardown's error instead of the violation. We
  // close sockets ourselves only when closing, on a slow consumer or a failed on_connect
  // send, or on a write that overran (all flagged above).
  if (ec == asio::error::bad_descriptor) return Ending::protocol_error;
  return Ending::other;
}

asio::awaitable<boost::system::error_code> WebSocketClient::Core::read_loop(
    std::shared_ptr<Connection> c) {
  beast::flat_buffer buffer;
  for (;;) {
    boost::system::error_code ec;
    const std::size_t n =
        co_await c->ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return ec;
    ++stats.messages;
    stats.bytes += n;
    if (config.intercept && c->ws.got_text()) {
      const auto data = buffer.cdata();
      if (config.intercept(std::string_view(static_cast<const char*>(data.data()), data.size()),
                           c->number)) {
        buffer.consume(buffer.size());
        continue;
      }
    }
    if (!deliver(buffer, c->ws.got_binary(), c->number)) {
      c->slow_consumer = true;
      beast::close_socket(beast::get_lowest_layer(c->ws));
      co_return asio::error::operation_aborted;
    }
    buffer.consume(buffer.size());
  }
}

void WebSocketClient::Core::count_ending(Ending ending) {
  auto& r = stats.reasons;
  switch (ending) {
    case Ending::closed_by_peer:
      ++r.closed_by_peer;
      break;
    case Ending::eof:
      ++r.eof;
      break;
    case Ending::idle_timeout:
      ++r.idle_timeout;
      break;
    case Ending::oversized:
      ++r.oversized;
      break;
    case Ending::protocol_error:
      ++r.protocol_error;
      break;
    case Ending::slow_consumer:
      ++r.slow_consumer;
      break;
    case Ending::send_failed:
      ++r.send_failed;
      break;
    case Ending::other:
      ++r.other;
      break;
  }
}

const char* WebSocketClient::Core::describe(Ending ending) {
  switch (ending) {
    case Ending::closed_by_peer:
      return "closed by the server";
    case Ending::eof:
      return "TCP connection closed without a close frame";
    case Ending::idle_timeout:
      return "nothing received within the idle timeout (silent peer)";
    case Ending::oversized:
      return "message above max_message_size";
    case Ending::protocol_error:
      return "WebSocket protocol violation";
    case Ending::slow_consumer:
      return "consumer too slow (overflow policy disconnect)";
    case Ending::send_failed:
      return "on_connect message could not be sent";
    case Ending::other:
      return "connection error";
  }
  return "?";
}

/// Connects (core::reconnect: capped jittered backoff, failures counted and logged on the
/// first and every 10th attempt), runs the connection until it ends, and again, until the
/// client closes; closing cuts an attempt or a backoff wait at once (`state.changed()`).
asio::awaitable<void> WebSocketClient::Core::supervise(std::shared_ptr<Core> self) {
  core::Backoff backoff(self->config.reconnect_backoff, self->random);
  const std::string what = self->config.url + ": connect";
  // Named locals, not braced temporaries in the co_await (GCC 12, see core::reconnect).
  core::ReconnectPolicy policy{.attempt_timeout = self->config.connect_timeout,
                               .permanent_ends = false};  // the server may be fixed
  // A failure once closing began (closing cut the attempt short) is neither counted nor
  // logged: core::reconnect ends with `stopped`.
  const core::ReconnectObserver observer{
      .what = what,
      .log = log(),
      .failures = &self->stats.connect_failures,
      .log_every = 10,
      .on_failure = [&self](const std::exception_ptr& failure, ErrorKind) {
        self->last_failure = core::detail::describe(failure);
        if (self->state.is(core::RunPhase::starting) && is_tls_refusal(failure)) {
          self->startup_refusal = failure;  // start() fails with it now
          self->state.changed().notify_all();
        }
      }};
  const auto stopped = [&self] { return self->state.closing_or_closed(); };
  std::shared_ptr<Connection> fresh;
  const auto attempt = [&self, &fresh](std::chrono::milliseconds budget) -> asio::awaitable<void> {
    std::shared_ptr<asio::ssl::context> tls;
    if (self->tls_source) {
      tls = self->tls_source->get();  // a new one when the certificate files changed
      self->stats.tls_contexts = self->tls_source->builds();
    }
    auto c = std::make_shared<Connection>(self->ex, std::move(tls));
    self->connecting = c;
    std::exception_ptr failure;
    try {
      co_await self->connect(c, budget);
    } catch (...) {
      failure = std::current_exception();
    }
    self->connecting.reset();
    if (failure) std::rethrow_exception(failure);
    fresh = std::move(c);
  };
  for (;;) {
    fresh.reset();
    (void)co_await core::reconnect(attempt, backoff, policy, observer, stopped,
                                   self->state.changed());
    if (stopped()) break;  // a connection made as closing began is dropped
    auto c = std::move(fresh);
    c->number = self->next_number++;
    c->opened = Clock::now();
    self->connection = c;
    ++self->stats.connects;
    self->stats.connection = c->number;
    self->stats.connected = true;
    log()->info("{}: connection {} up", self->config.url, c->number);
    asio::co_spawn(self->ex, subscribe(self, c), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // subscribe catches every error it can meet
    });
    const auto ec = co_await self->read_loop(c);
    self->connection.reset();
    self->stats.connected = false;
    if (stopped()) break;
    const Ending ending = ending_of(*c, ec);
    ++self->stats.disconnects;
    self->count_ending(ending);
    std::string detail = ec.message();
    if (ending == Ending::closed_by_peer) {
      const auto& reason = c->ws.reason();
      detail = "close code " + std::to_string(reason.code) +
               (reason.reason.empty() ? std::string()
                                      : " \"" + std::string(reason.reason.c_str()) + "\"");
    }
    log()->warn(
        "{}: connection {} lost after {} ms: {} ({}); reconnecting", self->config.url, c->number,
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - c->opened).count(),
        describe(ending), detail);
    self->last_failure = describe(ending);
    // A connection that lasted starts the backoff afresh; either way the reconnect waits one
    // delay first (never in lockstep with the other clients).
    if (Clock::now() - c->opened >= self->config.idle_timeout) backoff.reset();
    policy.pause_first = true;
  }
  fresh.reset();
  self->supervisor_running = false;
  self->state.changed().notify_all();  // close() and start() look again
  self->readable.notify_all();         // the consumer sees the end
  if (self->config.on_readable) self->config.on_readable();
}

}  // namespace trading_shared::ws

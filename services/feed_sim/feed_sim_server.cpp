// ts-feed-sim: the server. Accepting, one connection's session (handshake, read loop, writer with
// TCP_CORK), its graceful close and its end. The parts of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

void FeedSimulator::Impl::stop_accepting() {
  if (!accepting_) return;
  accepting_ = false;
  boost::system::error_code ignored;  // closing an open acceptor cannot fail in a way we
  acceptor_.close(ignored);           // could act on; the accept loop ends either way
}

// ---- accepting ----

asio::awaitable<void> FeedSimulator::Impl::accept_loop() {
  asio::steady_timer backoff(executor_);
  for (;;) {
    tcp::socket socket(executor_);
    boost::system::error_code ec;
    co_await acceptor_.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (!accepting_) break;
    if (ec) {
      // EMFILE and friends: log, wait a little, try again (the listener stays up).
      ++accept_errors_;
      log()->warn("accept failed: {} ({} so far); retrying in 100 ms", ec.message(),
                  accept_errors_);
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!accepting_) break;
      continue;
    }
    on_accept(std::move(socket));
  }
}

void FeedSimulator::Impl::on_accept(tcp::socket socket) {
  const std::uint64_t id = ++accepted_;
  boost::system::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  const std::string peer = ec ? std::string("unknown peer") : describe(remote);
  socket.set_option(tcp::no_delay(true), ec);
  if (ec) log()->debug("connection #{}: TCP_NODELAY: {}", id, ec.message());
  auto c = std::make_shared<Connection>(std::move(socket), tls_ ? &*tls_ : nullptr, id, peer, false,
                                        symbols_.size(), config_.limits);
  connections_.push_back(c);
  spawn(session(c), c, "session");
}

// ---- one connection ----

asio::awaitable<void> FeedSimulator::Impl::session(std::shared_ptr<Connection> c) {
  auto& ws = c->ws;
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
    response.set(beast::http::field::server, "ts-feed-sim");
  }));
  ws.read_message_max(kMaxClientMessage);
  ws.auto_fragment(false);  // the oversized fault must be one frame
  if (ws.next_layer().is_tls()) {
    const bool ok = co_await tls_handshake(c);
    if (!ok) co_return;
  }
  beast::flat_buffer buffer;  // a plain GET (no Upgrade) is REST (rest.hpp)
  std::string error;
  auto request = co_await rest_->read_first(ws.next_layer(), buffer, c, error);
  if (c->state != ConnState::handshake) co_return;  // ended meanwhile (server stopping)
  if (!request) {
    end(*c, std::move(error));
    co_return;
  }
  if (!websocket::is_upgrade(*request)) {
    c->state = ConnState::rest;
    end(*c, co_await rest_->serve(ws.next_layer(), buffer, std::move(*request), c));
    co_return;
  }
  const std::uint64_t n = ++ws_connections_;  // fault switches count WebSocket connections
  c->faulty = faults_enabled_ && (config_.fault_connections == 0 || n <= config_.fault_connections);
  boost::system::error_code ec;
  co_await ws.async_accept(*request, asio::redirect_error(asio::use_awaitable, ec));
  if (c->state != ConnState::handshake) co_return;  // ended meanwhile (server stopping)
  if (ec) {
    end(*c, "WebSocket handshake failed: " + ec.message());
    co_return;
  }
  ws.text(true);
  c->state = ConnState::open;
  log()->info("connection #{} from {} open{}", c->id, c->peer,
              c->faulty ? " (fault switches apply)" : "");
  spawn(writer(c), c, "writer");
  watch_limits(c);
  co_await read_loop(c);
}

/// The server side of a TLS connection's handshake, within the first request's time limit. A
/// plaintext HTTP request on the TLS port is answered, in plaintext, with a 400 saying to use
/// wss:// or https:// (as nginx does: the client's error then says which side wants what).
asio::awaitable<bool> FeedSimulator::Impl::tls_handshake(std::shared_ptr<Connection> c) {
  auto& tls = c->ws.next_layer().tls();
  auto& socket = beast::get_lowest_layer(c->ws);
  asio::steady_timer bound(executor_);
  bound.expires_after(std::chrono::seconds(30));
  bound.async_wait([c](boost::system::error_code ec) {
    if (ec) return;
    boost::system::error_code ignored;  // the handshake then fails: reported below
    beast::get_lowest_layer(c->ws).close(ignored);
  });
  boost::system::error_code ec;
  co_await tls.async_handshake(asio::ssl::stream_base::server,
                               asio::redirect_error(asio::use_awaitable, ec));
  bound.cancel();
  if (c->state != ConnState::handshake) co_return false;  // ended meanwhile (server stopping)
  if (!ec) co_return true;
  ++tls_handshake_failures_;
  const bool plain_http =
      ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_HTTP_REQUEST;
  if (plain_http && socket.is_open()) {
    static constexpr std::string_view kAnswer =
        "HTTP/1.1 400 Bad Request\r\nServer: ts-feed-sim\r\nContent-Type: text/plain\r\n"
        "Connection: close\r\nContent-Length: 58\r\n\r\n"
        "ts-feed-sim: this port speaks TLS: use wss:// or https://\n";
    boost::system::error_code ignored;  // best effort: the connection ends either way
    bound.expires_after(std::chrono::seconds(2));
    bound.async_wait([c](boost::system::error_code e) {
      if (e) return;
      boost::system::error_code ignore;
      beast::get_lowest_layer(c->ws).close(ignore);
    });
    co_await asio::async_write(socket, asio::buffer(kAnswer),
                               asio::redirect_error(asio::use_awaitable, ignored));
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    std::array<char, 1024> sink{};
    while (!ignored && socket.is_open()) {  // the rest of the request, until the client closes
      co_await socket.async_read_some(asio::buffer(sink),
                                      asio::redirect_error(asio::use_awaitable, ignored));
    }
    bound.cancel();
  }
  if (tls_handshake_failures_ == 1 || tls_handshake_failures_ % 100 == 0) {
    log()->warn("connection #{} from {}: TLS handshake failed: {} ({} so far)", c->id, c->peer,
                plain_http ? "a plaintext HTTP request on the TLS port" : ec.message(),
                tls_handshake_failures_);
  }
  end(*c, plain_http ? "TLS handshake failed: plaintext HTTP request (answered 400)"
                     : "TLS handshake failed: " + ec.message());
  co_return false;
}

asio::awaitable<void> FeedSimulator::Impl::read_loop(std::shared_ptr<Connection> c) {
  beast::flat_buffer buffer;
  for (;;) {
    boost::system::error_code ec;
    co_await c->ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
    if (c->state == ConnState::stalled) {
      co_await discard_while_stalled(c);
      co_return;
    }
    if (c->state == ConnState::ended) co_return;
    if (ec) {
      if (c->state == ConnState::closing) {
        end(*c, "server stopping: closed with a close frame");
      } else if (ec == websocket::error::closed) {
        const auto& why = c->ws.reason();
        end(*c, fmt::format("client closed the connection (code {}{}{})",
                            static_cast<unsigned>(why.code), why.reason.empty() ? "" : " ",
                            std::string_view(why.reason.data(), why.reason.size())));
      } else {
        end(*c, "read failed: " + ec.message());
      }
      co_return;
    }
    const auto data = buffer.cdata();
    const std::string_view text(static_cast<const char*>(data.data()), data.size());
    if (!admit_incoming(*c)) co_return;
    if (c->ws.got_text()) {
      handle_client_message(c, text);
    } else {
      bad_client_message(*c, "binary frame", text);
      reply_error(*c, 3, "binary frames are not supported", json::value(nullptr));
    }
    buffer.consume(buffer.size());
  }
}

asio::awaitable<void> FeedSimulator::Impl::writer(std::shared_ptr<Connection> c) {
  for (;;) {
    if (c->state == ConnState::ended || c->state == ConnState::stalled) co_return;
    if (c->state == ConnState::closing) {
      co_await close_gracefully(c);
      co_return;
    }
    if (c->ping_due) {
      if (!co_await send_ping(c)) co_return;
      continue;
    }
    if (c->queue.empty()) {
      if (c->corked) set_cork(*c, false);
      co_await c->wake.wait();  // push(), a ping due, closing or the end notify it
      continue;
    }
    if (!c->corked && c->queue.size() > 1) set_cork(*c, true);
    Outgoing message = std::move(c->queue.front());
    c->queue.pop_front();
    if (message.kind == MsgKind::control) {
      co_await write_text(c, message.data, message.size);
      continue;
    }
    if (c->faulty) {
      if (c->trades_sent == 0) {
        co_await apply_faults(c);
        if (c->state != ConnState::open) {
          if (c->state == ConnState::stalled) ++dropped_for_stalled_;
          continue;
        }
      }
      if (config_.fault_malformed_every > 0 &&
          (c->data_sent + 1) % config_.fault_malformed_every == 0) {
        const auto garbage = kGarbage[c->garbage_sent % kGarbage.size()];
        const bool ok = co_await write_text(c, garbage.data(), garbage.size());
        if (!ok) co_return;
        ++c->garbage_sent;
        ++c->data_sent;
        ++malformed_sent_;
      }
    }
    const bool ok = co_await write_text(c, message.data, message.size);
    if (!ok) co_return;
    ++c->trades_sent;
    ++c->data_sent;
    ++trades_sent_;
    if (c->faulty) co_await apply_faults(c);
  }
}

void FeedSimulator::Impl::set_cork(Connection& c, bool on) {
  c.corked = on;
  boost::system::error_code ec;
  beast::get_lowest_layer(c.ws).set_option(TcpCork(on), ec);
  if (ec) log()->debug("connection #{}: TCP_CORK: {}", c.id, ec.message());
}

/// Writes one text frame; false (and the connection ended) on failure.
asio::awaitable<bool> FeedSimulator::Impl::write_text(std::shared_ptr<Connection> c,
                                                      const char* data, std::size_t size) {
  boost::system::error_code ec;
  co_await c->ws.async_write(asio::buffer(data, size),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    end(*c, "write failed: " + ec.message());
    co_return false;
  }
  co_return c->state == ConnState::open || c->state == ConnState::closing;
}

asio::awaitable<void> FeedSimulator::Impl::close_gracefully(std::shared_ptr<Connection> c) {
  c->queue.clear();
  if (c->corked) set_cork(*c, false);
  boost::system::error_code ec;
  co_await c->ws.async_close(
      websocket::close_reason(websocket::close_code::going_away, c->close_text),
      asio::redirect_error(asio::use_awaitable, ec));
  end(*c, ec ? c->close_text + ": close handshake failed: " + ec.message()
             : c->close_text + ": closed with a close frame");
}

/// Ends a connection at once: closes its socket (pending operations complete with errors),
/// stops routing trades to it. Idempotent; the first reason is kept.
void FeedSimulator::Impl::end(Connection& c, std::string reason) {
  if (c.state == ConnState::ended) return;
  c.state = ConnState::ended;
  c.reason = std::move(reason);
  for (std::size_t i = 0; i < symbols_.size(); ++i) {
    if (c.subscribed[i]) {
      c.subscribed[i] = false;
      --symbols_[i].active;
    }
  }
  c.queue.clear();
  c.keeper.notify_all();
  boost::system::error_code ignored;  // already closed or never connected: nothing to do
  beast::get_lowest_layer(c.ws).close(ignored);
  c.wake.notify_all();
}

/// The connection's last coroutine finished.
void FeedSimulator::Impl::finalize(const std::shared_ptr<Connection>& c) {
  end(*c, "session ended");
  std::erase(connections_, c);
  for (auto& s : symbols_) std::erase(s.subscribers, c);
  log()->info("connection #{} ({}) closed: {}; {} trade(s) sent{}", c->id, c->peer, c->reason,
              c->trades_sent,
              c->garbage_sent > 0 ? fmt::format(", {} garbage message(s)", c->garbage_sent)
                                  : std::string());
  connections_changed_.notify_all();
}

}  // namespace trading_shared::services::feed_sim

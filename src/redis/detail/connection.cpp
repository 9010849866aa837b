// The shared connection of a RedisClient (connection.hpp).

#include "connection.hpp"

#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/core/tls_context.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

namespace trading_shared::redis::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

namespace {

/// RedisConfig::password_file's content, read for each connection (rotation without restart).
/// Its content never appears in an error.
std::string read_password_file(const std::string& path, const std::string& description) {
  std::ifstream in(path, std::ios::binary);
  std::string password;
  if (in) password.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (!in && !in.eof()) {
    throw Error(make_error_code(errc::invalid_argument),
                "Redis " + description + ": cannot read the password file " + path,
                RequestState::not_sent);
  }
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty()) {  // being rewritten: the next attempt reads it again
    throw Error(make_error_code(errc::connect_failed),
                "Redis " + description + ": the password file " + path + " is empty",
                RequestState::not_sent);
  }
  return password;
}

// A plaintext connection whose handshake got no reply but a closed connection: Redis 7 resets a
// connection to its TLS port whose first bytes are not a ClientHello, without a byte of reply.
bool closed_by_peer(const boost::system::error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

}  // namespace

asio::awaitable<void> open_connection(ClientContext& context, RedisStream& stream,
                                      ReplyBuilder& parser) {
  const auto& endpoint = context.endpoint;
  const std::string what = "Redis " + context.description;
  const std::string password =
      context.config.password_file.empty()
          ? endpoint.password
          : read_password_file(context.config.password_file, context.description);
  const auto executor = context.executor;
  tcp::resolver resolver(executor);
  const auto endpoints = co_await resolver.async_resolve(
      endpoint.host, std::to_string(endpoint.port), asio::use_awaitable);
  // TLS: the context of this connection (a new one when its files changed: rotation).
  stream = context.tls ? RedisStream(executor, context.tls->get()) : RedisStream(executor);
  co_await asio::async_connect(stream.socket(), endpoints, asio::use_awaitable);
  stream.socket().set_option(tcp::no_delay(true));
  stream.socket().set_option(asio::socket_base::keep_alive(true));
  SSL* ssl = nullptr;
  if (stream.tls()) {
    ssl = stream.tls_layer().native_handle();
    core::prepare_client(ssl, context.config.tls, endpoint.host);
    boost::system::error_code ec;
    stream.handshaking = true;
    co_await stream.tls_layer().async_handshake(asio::ssl::stream_base::client,
                                                asio::redirect_error(asio::use_awaitable, ec));
    // Cut short by the connect deadline: `handshaking` stays set for open_connection_within.
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    stream.handshaking = false;
    if (ec) throw core::tls_handshake_error(ec, ssl, what);
  }

  // Handshake: [AUTH] [SELECT] CLIENT SETNAME, then PING (answers LOADING while the server
  // loads its data: such a connection is not used yet).
  std::string hello;
  std::size_t expected = 0;
  if (!password.empty()) {
    if (endpoint.user.empty()) {
      encode_command(hello, "AUTH", password);
    } else {
      encode_command(hello, "AUTH", endpoint.user, password);
    }
    ++expected;
  }
  if (endpoint.db != 0) {
    encode_command(hello, "SELECT", endpoint.db);
    ++expected;
  }
  if (!context.config.client_name.empty()) {
    encode_command(hello, "CLIENT", "SETNAME", context.config.client_name);
    ++expected;
  }
  encode_command(hello, "PING");
  ++expected;
  // Errors of the exchange as error codes: a TLS error here (TLS 1.3: the server's alert
  // that it wanted a client certificate arrives after the client's side of the handshake)
  // and a plaintext connection the server closed at once (F63) are explained.
  boost::system::error_code ec;
  co_await stream.async_write(asio::buffer(hello), asio::redirect_error(asio::use_awaitable, ec));

  parser.reset();
  std::array<char, 4096> buffer{};
  Reply reply;
  std::size_t got = 0;
  bool first_read = true;
  while (!ec && got < expected) {
    const std::size_t n = co_await stream.async_read_some(
        asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    if (first_read && ssl == nullptr && core::looks_like_tls(std::string_view(buffer.data(), n))) {
      throw Error(make_error_code(errc::tls_failed),
                  what +
                      ": connection handshake: the server answered with TLS: it requires TLS, "
                      "the client is configured for plaintext (use rediss://)",
                  RequestState::not_sent);
    }
    first_read = false;
    parser.feed(buffer.data(), n);
    while (got < expected && parser.next(reply)) {
      ++got;
      if (reply.is_error()) {
        throw make_server_error(reply.error_message(), what + ": connection handshake",
                                RequestState::sent);
      }
    }
  }
  if (ec) {
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    const bool truncated = ec == asio::ssl::error::stream_truncated;
    if (ssl != nullptr && first_read && (truncated || closed_by_peer(ec))) {
      // TLS 1.3: the server checks the client's certificate after the client's side of the
      // handshake ended; its alert can be lost to the reset that our first write causes.
      // Transient (a server going away looks the same); a later attempt usually reads the alert.
      throw Error(make_error_code(errc::connect_failed),
                  what + ": the server closed the TLS connection before its first reply (" +
                      ec.message() +
                      "): does it require a client certificate (tls-auth-clients)? set the "
                      "client certificate and key files",
                  RequestState::not_sent);
    }
    if (ssl != nullptr && core::is_tls_error(ec)) throw core::tls_handshake_error(ec, ssl, what);
    if (ssl == nullptr && first_read && closed_by_peer(ec)) {
      throw Error(make_error_code(errc::connect_failed),
                  what + ": the server closed the connection during the handshake (" +
                      ec.message() +
                      "): does it require TLS? use rediss:// (a TLS-only Redis closes "
                      "plaintext connections at once)",
                  RequestState::not_sent);
    }
    throw boost::system::system_error(ec, what + ": connection handshake");
  }
  parser.keep_rest();  // `buffer` is about to go: nothing may stay borrowed from it
}

asio::awaitable<void> open_connection_within(ClientContext& context, RedisStream& stream,
                                             ReplyBuilder& parser, const std::string& what,
                                             Clock::duration timeout) {
  if (timeout <= Clock::duration::zero() || timeout > context.config.connect_timeout) {
    timeout = context.config.connect_timeout;
  }
  std::optional<Error> handshake_timeout;
  try {
    co_await core::with_timeout(open_connection(context, stream, parser), timeout,
                                errc::connect_timeout, what, RequestState::not_sent);
  } catch (const Error& e) {
    if (e.code() != make_error_code(errc::connect_timeout) || !stream.handshaking) throw;
    handshake_timeout.emplace(
        make_error_code(errc::connect_timeout),
        what + ": the TLS handshake did not complete within " + std::to_string(ms_count(timeout)) +
            " ms (connect timeout): the server does not answer TLS (a plaintext port?) or is "
            "overloaded",
        RequestState::not_sent);
  }
  stream.handshaking = false;
  if (handshake_timeout) throw *handshake_timeout;
}

Connection::Connection(ClientContext& context, Multiplexer& mux)
    : context_(context),
      mux_(mux),
      stream_(context.executor),
      reader_done_(context.executor),
      health_timer_(context.executor),
      read_buffer_(std::size_t{64} * 1024) {}

Connection::~Connection() {
  boost::system::error_code ignored;
  stream_.close(ignored);
}

// ---- connecting ----------------------------------------------------------------------------

asio::awaitable<void> Connection::connect(Clock::duration budget) {
  RedisStream stream(context_.executor);
  co_await open_connection_within(context_, stream, mux_.parser(),
                                  "Redis " + context_.description + ": connect", budget);
  if (context_.state.is(core::RunPhase::closed)) {
    throw Error(make_error_code(errc::client_closed), "Redis " + context_.description + ": closed",
                RequestState::not_sent);
  }
  stream_ = std::move(stream);
  connected_ = true;
  ++generation_;
  ++context_.stats.connects;
  const auto now = Clock::now();
  last_write_ = now;
  mux_.connected(now);
  // flush() writes a plaintext socket synchronously and must never block (TLS: async only).
  if (!stream_.tls()) stream_.plain_socket().non_blocking(true);
  write_in_progress_ = false;
  flush();  // requests that waited for this connection
}

asio::awaitable<void> Connection::connect_interruptible(Clock::duration budget) {
  // One deadline, the connect timeout or the budget when shorter: open_connection_within()
  // names a TLS handshake that did not complete within it.
  co_await asio::co_spawn(
      context_.executor, connect(budget),
      asio::bind_cancellation_slot(connect_cancel_.slot(), asio::use_awaitable));
}

void Connection::interrupt() noexcept {
  connect_cancel_.emit(asio::cancellation_type::terminal);
}

void Connection::drop(std::error_code ec, std::string_view what) {
  if (!connected_) return;
  connected_ = false;
  ++generation_;
  ++context_.stats.disconnects;
  boost::system::error_code ignored;
  stream_.close(ignored);
  write_in_progress_ = false;  // an async write of the old socket ends with an error, ignored
  health_timer_.cancel();
  if (context_.state.is(core::RunPhase::running)) {
    log()->warn(
        "Redis {}: connection lost ({}: {}); {} request(s) in flight fail as "
        "outcome unknown, {} queued wait for the reconnect",
        context_.description, what, ec.message(), mux_.outstanding(), mux_.queued());
  }
  const auto lost = mux_.fail_in_flight("Redis " + context_.description + ": connection lost (" +
                                        std::string(what) + ": " + ec.message() + ")");
  if (!lost.reported && lost.in_flight > 0) {
    // Only abandoned requests or a health-check PING were in flight: the loss still counts.
    if (auto admission = context_.breaker.try_acquire()) admission.permit().failure();
  }
}

void Connection::shut_down() noexcept {
  if (connected_) drop(make_error_code(errc::client_closed), "close");
  connected_ = false;
  boost::system::error_code ignored;
  stream_.close(ignored);
  health_timer_.cancel();
}

void Connection::discard() noexcept {
  boost::system::error_code ignored;
  stream_.close(ignored);
  connected_ = false;
}

// ---- writing -------------------------------------------------------------------------------

// Automatic pipelining: a request is not written when it is submitted but when the current
// handler is done, together with everything submitted meanwhile. Inside the reader's delivery
// loop (callers resumed inline by their replies) the reader flushes after the loop; elsewhere
// one posted flush serves every request submitted before it runs.
void Connection::schedule_flush() noexcept {
  if (!connected_ || write_in_progress_ || flush_scheduled_ || in_delivery_) return;
  flush_scheduled_ = true;
  asio::post(context_.executor, [this, owner = owner_.lock()] {
    flush_scheduled_ = false;
    flush();
  });
}

// Writes the queued requests: first synchronously (non-blocking socket: no handler, no wake-up
// when the kernel takes it all, the common case), the rest, if any, with an async write.
// Under TLS an async write only: OpenSSL's record layer is not written synchronously through
// the Asio stream.
void Connection::flush(Clock::time_point now) noexcept {
  if (!connected_ || write_in_progress_ || !mux_.has_queued_bytes()) return;
  // One clock read per flush (the reader passes the time of its read, taken just before).
  if (now == Clock::time_point{}) now = Clock::now();
  const std::string_view bytes = mux_.prepare_write(now);
  if (stream_.tls()) {
    write_in_progress_ = true;
    asio::async_write(stream_.tls_layer(), asio::buffer(bytes),
                      [this, owner = owner_.lock(), stream = stream_.tls_holder(),
                       generation = generation_](boost::system::error_code e, std::size_t) {
                        if (generation == generation_) write_in_progress_ = false;
                        write_done(generation, e, Clock::now());
                      });
    return;
  }
  auto& socket = stream_.plain_socket();
  boost::system::error_code ec;
  const std::size_t n = socket.write_some(asio::buffer(bytes), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
  if (ec || n == bytes.size()) {
    write_done(generation_, ec, now);
    return;
  }
  write_in_progress_ = true;
  asio::async_write(socket, asio::buffer(bytes.data() + n, bytes.size() - n),
                    [this, owner = owner_.lock(), generation = generation_](
                        boost::system::error_code e, std::size_t) {
                      // A write of an older connection leaves the current one's flag alone.
                      if (generation == generation_) write_in_progress_ = false;
                      write_done(generation, e, Clock::now());
                    });
}

void Connection::write_done(std::uint64_t generation, boost::system::error_code ec,
                            Clock::time_point now) noexcept {
  if (generation != generation_) return;  // that connection is gone; its slots failed already
  if (ec) {
    drop(ec, "write");
    return;
  }
  ++context_.stats.writes;
  last_write_ = now;
  mux_.write_done();
  if (mux_.has_queued_bytes()) schedule_flush();
}

// ---- reading -------------------------------------------------------------------------------

// The reader is a plain completion handler, not a coroutine: it runs once per read of the
// shared connection, and an awaitable frame, its cancellation slot and its pump cost about a
// sixth of a GET's instructions (callgrind). supervise() waits for it to stop.
void Connection::start_read(std::uint64_t generation) {
  if (stream_.tls()) {
    // The stream stays alive until the read's handler ran (stream.hpp, tls_holder()).
    stream_.tls_layer().async_read_some(
        asio::buffer(read_buffer_),
        [this, generation, stream = stream_.tls_holder()](
            boost::system::error_code ec, std::size_t n) { on_read(generation, ec, n); });
    return;
  }
  stream_.plain_socket().async_read_some(
      asio::buffer(read_buffer_), [this, generation](boost::system::error_code ec, std::size_t n) {
        on_read(generation, ec, n);
      });
}

void Connection::reader_stopped() noexcept {
  in_delivery_ = false;
  reading_ = false;
  reader_done_.notify_all();
}

void Connection::on_read(std::uint64_t generation, boost::system::error_code ec,
                         std::size_t n) noexcept {
  if (generation != generation_) {
    reader_stopped();
    return;
  }
  if (ec) {
    drop(ec, "read");
    reader_stopped();
    return;
  }
  const auto now = Clock::now();
  try {
    mux_.feed(read_buffer_.data(), n, now);
    in_delivery_ = true;
    for (;;) {
      const auto delivery = mux_.deliver_next();
      if (delivery == Multiplexer::Delivery::none) break;
      if (generation != generation_) {  // a caller resumed inline closed the client
        reader_stopped();
        return;
      }
      if (delivery == Multiplexer::Delivery::unexpected) {
        log()->error(
            "Redis {}: a reply arrived with no request waiting for it ({}); the "
            "connection is out of sync and is closed",
            context_.description, mux_.unexpected_reply().debug_string());
        drop(make_error_code(errc::protocol_error), "unexpected reply");
        reader_stopped();
        return;
      }
    }
    in_delivery_ = false;
    flush(now);
  } catch (const std::exception& e) {
    log()->error("Redis {}: {}; closing the connection", context_.description, e.what());
    drop(make_error_code(errc::protocol_error), "bad reply");
    reader_stopped();
    return;
  }
  if (generation != generation_) {  // the flush failed and dropped the connection
    reader_stopped();
    return;
  }
  start_read(generation);
}

// ---- health and supervision ----------------------------------------------------------------

asio::awaitable<void> Connection::health_loop(std::uint64_t generation) {
  const auto& config = context_.config;
  const auto tick = std::max<Clock::duration>(
      milliseconds(5), std::min(config.health_check_interval, config.health_check_timeout) / 4);
  for (;;) {
    health_timer_.expires_after(tick);
    boost::system::error_code ec;
    co_await health_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (generation != generation_ || context_.state.is(core::RunPhase::closed)) co_return;
    const auto now = Clock::now();
    const auto quiet_since = std::max(mux_.waiting_since(), mux_.last_read());
    if (mux_.outstanding() > 0 && now - quiet_since > config.health_check_timeout) {
      log()->warn(
          "Redis {}: no reply for {} ms with {} request(s) outstanding; the server is "
          "frozen or the connection half-open: reconnecting",
          context_.description, ms_count(now - quiet_since), mux_.outstanding());
      drop(make_error_code(errc::request_timeout), "health check");
      co_return;
    }
    if (mux_.empty() &&
        now - std::max(mux_.last_read(), last_write_) >= config.health_check_interval) {
      mux_.push_ping();
      schedule_flush();
    }
  }
}

asio::awaitable<void> Connection::supervise() {
  core::Backoff backoff(context_.config.reconnect_backoff, context_.random);
  const auto& state = context_.state;
  // A lost connection is reconnected after a jittered pause (never in lockstep with other
  // clients, F21), until connected or the client is no longer running: close() notifies the
  // run state's event (the pause ends) and interrupts the attempt. A permanent error (wrong
  // password after a rotation, unknown database) does not end it: waiting cannot help the
  // queued requests, they fail now with the reason; later ones keep waiting for a fix.
  // Policy, observer and the attempt as named locals (GCC 12, see core::reconnect).
  const core::ReconnectPolicy policy{.pause_first = true, .permanent_ends = false};
  const std::string what = "Redis " + context_.description + ": reconnect";
  const core::ReconnectObserver observer{
      .what = what,
      .log = log(),
      .failures = &context_.stats.connect_failures,
      .on_failure = [this](const std::exception_ptr& error, ErrorKind kind) {
        if (kind == ErrorKind::permanent) mux_.fail_queued(error);
      }};
  auto attempt = [this](milliseconds) { return connect_interruptible(Clock::duration::zero()); };
  auto stopped = [&state] { return !state.is(core::RunPhase::running); };
  while (state.is(core::RunPhase::running) || state.is(core::RunPhase::closing)) {
    if (connected_) {
      const auto generation = generation_;
      const auto connected_at = Clock::now();
      reading_ = true;
      start_read(generation);
      std::string failure;
      try {
        co_await health_loop(generation);  // returns once this connection is gone
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) {
        log()->error("Redis {}: health check failed: {}", context_.description, failure);
        drop(make_error_code(errc::protocol_error), "internal error");
      }
      // The reader's last handler (its socket is closed: it comes soon).
      while (reading_) co_await reader_done_.wait();
      // The backoff starts over only after a connection that lasted: a server that accepts
      // and kills every connection at once is retried ever more slowly, not at the base rate.
      if (Clock::now() - connected_at >= context_.config.health_check_interval) backoff.reset();
      continue;
    }
    if (!state.is(core::RunPhase::running)) break;
    // An attempt cut short by close() or the client's destruction (interrupt()) ends it as
    // `stopped` (core::reconnect); any other error is the task's.
    const auto result = co_await core::reconnect(attempt, backoff, policy, observer, stopped,
                                                 context_.state.changed());
    if (result.end != core::ReconnectEnd::connected || !state.is(core::RunPhase::running)) break;
    log()->info("Redis {}: reconnected after {} attempt(s)", context_.description, result.attempts);
  }
}

}  // namespace trading_shared::redis::detail

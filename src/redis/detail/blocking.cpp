// The dedicated connections of blocking commands (blocking.hpp).

#include "blocking.hpp"

#include <trading_shared/core/timeout.hpp>

#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include "connection.hpp"
#include "failed.hpp"

namespace trading_shared::redis::detail {

namespace asio = boost::asio;
using std::chrono::milliseconds;

BlockingConnections::BlockingConnections(ClientContext& context, MultiplexerEvents& events)
    : context_(context), events_(events) {}

BlockingConnections::~BlockingConnections() {
  close_sockets();
}

void BlockingConnections::close_sockets() noexcept {
  boost::system::error_code ignored;
  for (auto& d : connections_) d->stream.close(ignored);
}

asio::awaitable<Reply> BlockingConnections::exchange(Dedicated& connection,
                                                     const std::string& encoded) {
  if (!connection.stream.is_open()) {
    co_await open_connection_within(
        context_, connection.stream, connection.parser,
        "Redis " + context_.description + ": connect (blocking connection)");
  }
  connection.wrote = true;
  co_await connection.stream.async_write(asio::buffer(encoded), asio::use_awaitable);
  Reply reply;
  while (!connection.parser.next(reply)) {
    const std::size_t n = co_await connection.stream.async_read_some(
        asio::buffer(connection.buffer), asio::use_awaitable);
    connection.parser.feed(connection.buffer.data(), n);
  }
  co_return reply;
}

asio::awaitable<Reply> BlockingConnections::run(std::string encoded, milliseconds block) {
  std::array<char, 24> name{};
  copy_command_name(encoded, name);
  const std::string what = "Redis " + std::string(name.data()) + " " + context_.description;
  auto& stats = context_.stats;
  const auto& state = context_.state;
  if (!state.is(core::RunPhase::running)) {
    ++stats.rejected;
    throw Error(
        make_error_code(state.closing_or_closed() ? errc::client_closed : errc::not_started), what,
        RequestState::not_sent);
  }
  if (block < milliseconds::zero()) {
    throw Error(make_error_code(errc::invalid_argument), what + ": negative block time");
  }
  if (auto error = check_shared_command(encoded, true)) std::rethrow_exception(error);
  Dedicated* connection = nullptr;
  for (auto& d : connections_) {
    if (!d->busy) {
      connection = d.get();
      break;
    }
  }
  if (connection == nullptr) {
    if (connections_.size() >= context_.config.max_blocking_connections) {
      ++stats.rejected;
      throw Error(make_error_code(errc::queue_full),
                  what + ": all " + std::to_string(connections_.size()) +
                      " blocking connections are busy (max_blocking_connections)",
                  RequestState::not_sent);
    }
    connections_.push_back(std::make_unique<Dedicated>(context_.executor));
    connection = connections_.back().get();
  }
  core::CircuitBreakerPermit permit = context_.breaker.acquire_or_throw();
  connection->busy = true;
  connection->wrote = false;
  ++active_;
  ++stats.commands;
  std::exception_ptr failure;
  bool timed_out = false;
  Reply reply;
  try {
    // The server may legitimately stay silent for `block`: the deadline includes it (F22).
    reply = co_await core::with_timeout(
        exchange(*connection, encoded), block + context_.config.command_timeout,
        errc::request_timeout, what + ": no reply within block + command timeout",
        RequestState::sent);
  } catch (const Error& e) {
    timed_out = e.code() == make_error_code(errc::request_timeout);
    failure = std::current_exception();
  } catch (const boost::system::system_error& e) {
    // Socket errors become our one error model: not sent if the write never started.
    const bool aborted = e.code() == asio::error::operation_aborted;
    failure = make_error(aborted             ? errc::cancelled
                         : connection->wrote ? errc::connection_lost
                                             : errc::connect_failed,
                         what + ": " + e.what(),
                         connection->wrote ? RequestState::sent : RequestState::not_sent);
  } catch (...) {
    failure = std::current_exception();
  }
  --active_;
  connection->busy = false;
  events_.request_finished();
  if (failure) {
    // Whatever went wrong, the connection's state is unknown: discard it.
    boost::system::error_code ignored;
    connection->stream.close(ignored);
    connection->parser.reset();
    ErrorKind kind = classify(failure);
    if (state.closing_or_closed()) {
      failure = make_error(errc::client_closed, what + ": client closed", RequestState::sent);
      kind = ErrorKind::cancelled;
    }
    if (kind == ErrorKind::cancelled) {
      ++stats.cancellations;
      permit.ignore();
    } else {
      ++stats.failures;
      permit.record(kind);
      if (timed_out) ++stats.timeouts;
    }
    std::rethrow_exception(failure);
  }
  ++stats.replies;
  if (reply.is_error()) {
    permit.record(classify_error_prefix(reply.error_prefix()));
    throw make_server_error(reply.error_message(), what, RequestState::sent);
  }
  permit.success();
  co_return reply;
}

}  // namespace trading_shared::redis::detail

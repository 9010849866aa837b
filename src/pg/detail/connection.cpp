#include "detail/connection.hpp"

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "detail/cancel_sender.hpp"
#include "detail/certificate_diagnosis.hpp"
#include "detail/connect_error.hpp"

#include <poll.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::pg::detail {
namespace asio = boost::asio;
using wait_type = asio::posix::stream_descriptor::wait_type;

namespace {

/// The TLS settings of a connect attempt, for its error messages.
ConnectTls connect_tls(const ConnectParams& params, const ConnectTarget& target) {
  ConnectTls tls;
  for (std::size_t i = 0; i < params.keywords.size(); ++i) {
    const std::string_view key = params.keywords[i];
    if (key == "sslmode") tls.sslmode = params.values[i];
    if (key == "sslrootcert") tls.sslrootcert = params.values[i];
    if (key == "sslcert") tls.sslcert = params.values[i];
  }
  tls.host = target.host.empty() ? target.hostaddr : target.host;
  return tls;
}

void notice_processor(void* arg, const char* message) {
  auto* self = static_cast<Connection*>(arg);
  core::logger("pg")->info("{}: server notice: {}", self->description(), trim_message(message));
}

}  // namespace

std::string trim_message(const char* message) {
  std::string text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (auto& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

std::exception_ptr server_error(const PGresult* result, RequestState state) {
  auto field = [&](int code) {
    const char* v = PQresultErrorField(result, code);
    return std::string(v != nullptr ? v : "");
  };
  ServerError error{ServerKind::postgres, field(PG_DIAG_SQLSTATE), field(PG_DIAG_MESSAGE_PRIMARY),
                    field(PG_DIAG_MESSAGE_DETAIL), field(PG_DIAG_MESSAGE_HINT)};
  if (error.message.empty()) error.message = trim_message(PQresultErrorMessage(result));
  return std::make_exception_ptr(make_server_error(std::move(error), "query", state));
}

Connection::Connection(Executor executor)
    : executor_(std::move(executor)),
      writer_wake_(executor_),
      broken_event_(executor_),
      io_done_(executor_) {}

Connection::~Connection() {
  if (conn_ != nullptr) {
    // Only reached when the owner never closed us: close the socket synchronously.
    if (socket_) socket_->release();
    PQfinish(conn_);
  }
}

asio::awaitable<void> Connection::wait(wait_type type, Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) {
    throw Error(make_error_code(errc::connect_timeout), "connecting to " + description_,
                RequestState::not_sent);
  }
  co_await core::with_timeout(socket_->async_wait(type, asio::use_awaitable), left,
                              errc::connect_timeout, "connecting to " + description_,
                              RequestState::not_sent);
}

asio::awaitable<void> Connection::connect(const ConnectParams& params, const ConnectTarget& target,
                                          std::chrono::milliseconds timeout) {
  description_ = target.description;
  const auto deadline = Clock::now() + timeout;
  std::vector<const char*> keywords, values;
  for (std::size_t i = 0; i < params.keywords.size(); ++i) {
    keywords.push_back(params.keywords[i].c_str());
    values.push_back(params.values[i].c_str());
  }
  if (!target.host.empty()) {
    keywords.push_back("host");  // kept for TLS verification and messages
    values.push_back(target.host.c_str());
  }
  if (!target.hostaddr.empty()) {
    keywords.push_back("hostaddr");
    values.push_back(target.hostaddr.c_str());
  }
  keywords.push_back("port");
  values.push_back(target.port.c_str());
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keywords.data(), values.data(), 0);
  const std::string what = "connecting to " + description_;
  if (conn_ == nullptr) throw std::bad_alloc();
  if (PQstatus(conn_) == CONNECTION_BAD) {
    throw connect_error(trim_message(PQerrorMessage(conn_)), connect_tls(params, target), what);
  }
  PQsetNoticeProcessor(conn_, &notice_processor, this);

  PostgresPollingStatusType status = PGRES_POLLING_WRITING;
  while (status != PGRES_POLLING_OK) {
    if (status == PGRES_POLLING_FAILED) {
      const std::string message = trim_message(PQerrorMessage(conn_));
      const ConnectTls tls = connect_tls(params, target);
      std::string reason;
      // libpq says only "certificate verify failed": one handshake of our own learns why
      // (expired, unknown CA), within what is left of the connect deadline (F61).
      if (is_certificate_verify_failure(message)) {
        reason = co_await certificate_failure_reason(target, tls, deadline);
      }
      throw connect_error(message, tls, what, reason);
    }
    // The socket may change between steps (another address, SSL retry): register anew.
    if (socket_) socket_->release();
    socket_.emplace(executor_, PQsocket(conn_));
    co_await wait(status == PGRES_POLLING_READING ? wait_type::wait_read : wait_type::wait_write,
                  deadline);
    status = PQconnectPoll(conn_);
  }
  if (socket_) socket_->release();
  socket_.emplace(executor_, PQsocket(conn_));
  if (PQsetnonblocking(conn_, 1) != 0 || PQenterPipelineMode(conn_) != 1) {
    throw Error(make_error_code(errc::connect_failed),
                what + ": cannot enter pipeline mode: " + trim_message(PQerrorMessage(conn_)),
                RequestState::not_sent);
  }
  backend_pid_ = PQbackendPID(conn_);
  start_io();
}

void Connection::start_io() {
  auto self = shared_from_this();
  auto finished = [self](const std::exception_ptr& error) {
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        core::logger("pg")->error("{}: I/O coroutine failed: {}", self->description_, e.what());
      }
      self->fail(make_error_code(errc::connection_lost), RequestState::sent, "I/O failure");
    }
    if (--self->io_running_ == 0) self->io_done_.notify_all();
  };
  io_running_ = 3;
  asio::co_spawn(executor_, reader(), finished);
  asio::co_spawn(executor_, writer(), finished);
  asio::co_spawn(executor_, watchdog(), finished);
}

void Connection::wake_writer() noexcept {
  flush_needed_ = true;
  writer_wake_.notify_all();
}

asio::awaitable<void> Connection::writer() {
  auto self = shared_from_this();
  boost::system::error_code ec;
  while (!broken_) {
    if (!flush_needed_) {
      co_await writer_wake_.wait();
      continue;  // woken, or closing: re-check state
    }
    flush_needed_ = false;
    for (;;) {
      const int r = PQflush(conn_);
      if (r == 0) break;
      if (r < 0) {
        fail(make_error_code(errc::connection_lost), RequestState::sent, "write");
        co_return;
      }
      // The reader keeps consuming input meanwhile, so the server never blocks on us.
      co_await socket_->async_wait(wait_type::wait_write,
                                   asio::redirect_error(asio::use_awaitable, ec));
      if (broken_) co_return;
    }
  }
}

asio::awaitable<void> Connection::watchdog() {
  // Safety net under the reader: Asio's epoll registration is edge-triggered, and we have
  // seen (F15, a server killing idle sessions) a reader parked on a socket that poll()
  // reports readable. While requests are in flight, a level-triggered check every
  // kWatchdogPeriod wakes such a reader; when nothing is in flight it costs a timer tick.
  auto self = shared_from_this();
  boost::system::error_code ec;
  while (!broken_) {
    co_await broken_event_.wait_for(kWatchdogPeriod);
    if (broken_) co_return;
    check_cancel();
    if (broken_) co_return;
    if (reader_waiting_ && !inflight_.empty() && readable_now()) {
      ++watchdog_wakeups_;
      core::logger("pg")->debug("{}: watchdog woke a reader parked on a readable socket",
                                description_);
      socket_->cancel(ec);  // the writer, if waiting, simply retries its flush
    }
  }
}

asio::awaitable<void> Connection::reader() {
  auto self = shared_from_this();
  boost::system::error_code ec;
  while (!broken_) {
    if (!drain_results()) co_return;
    // libpq drops its socket when it sees the server go away (e.g. after a FATAL such as
    // 57P05 idle-session timeout): a wait on that descriptor would never complete, so the
    // connection is failed here, keeping any server error a request already received.
    if (PQstatus(conn_) == CONNECTION_BAD || PQsocket(conn_) < 0) {
      fail(make_error_code(errc::connection_lost), RequestState::sent,
           trim_message(PQerrorMessage(conn_)));
      co_return;
    }
    // Asio registers descriptors edge-triggered, and libpq does not always read the socket
    // dry (a FATAL message followed by the server's FIN can leave the FIN unread): waiting
    // for a new edge would then hang. Check readiness level-triggered before waiting.
    if (!readable_now()) {
      reader_waiting_ = true;
      co_await socket_->async_wait(wait_type::wait_read,
                                   asio::redirect_error(asio::use_awaitable, ec));
      reader_waiting_ = false;
    }
    if (broken_) co_return;
    if (PQconsumeInput(conn_) == 0) {
      // libpq keeps what it read before the failure: a server error buffered there (e.g. the
      // FATAL 57P05 an idle session got just before the close, read while nothing was in
      // flight) is the answer to the request now at the front, and says more than
      // "connection lost" (the statement never ran). Only a real server error (it has a
      // SQLSTATE) is kept; libpq's own "connection lost" result has none.
      keep_buffered_server_error();
      fail(make_error_code(errc::connection_lost), RequestState::sent,
           trim_message(PQerrorMessage(conn_)));
      co_return;
    }
  }
}

void Connection::keep_buffered_server_error() noexcept {
  if (inflight_.empty() || copying_) return;
  Request* front = inflight_.front();
  if (front == nullptr || front->error) return;
  PQisBusy(conn_);  // parses what is buffered; returns at once on a broken connection
  Result result(PQgetResult(conn_));
  if (result.native() == nullptr || PQresultStatus(result.native()) != PGRES_FATAL_ERROR) return;
  const char* state = PQresultErrorField(result.native(), PG_DIAG_SQLSTATE);
  if (state == nullptr || *state == '\0') return;
  front->error = server_error(result.native(), RequestState::sent);
}

bool Connection::readable_now() const noexcept {
  pollfd p{PQsocket(conn_), POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool Connection::drain_results() noexcept {
  while (!inflight_.empty() && !copying_) {
    if (broken_) return false;
    if (PQisBusy(conn_) != 0) return true;
    PGresult* raw = PQgetResult(conn_);
    if (raw == nullptr) {
      // End of one statement's results; a second NULL in a row: nothing more is buffered.
      if (last_was_null_) {
        last_was_null_ = false;
        return true;
      }
      last_was_null_ = true;
      continue;
    }
    last_was_null_ = false;
    Result result(raw);
    Request* front = inflight_.front();
    const ExecStatusType status = PQresultStatus(raw);
    // One result per statement or Parse queued: a Parse's is the cache's, no statement's.
    if (status != PGRES_PIPELINE_SYNC && status != PGRES_NONFATAL_ERROR &&
        statements_.take_result(status)) {
      if (status == PGRES_FATAL_ERROR && front != nullptr && !front->error) {
        // The statement's own text failed to parse: its error, as without the cache.
        front->error = server_error(raw, RequestState::sent);
      }
      continue;
    }
    switch (status) {
      case PGRES_PIPELINE_SYNC:
        complete_front();
        break;
      case PGRES_PIPELINE_ABORTED:
        if (front != nullptr) ++front->received;
        break;
      case PGRES_FATAL_ERROR:
        statements_.on_statement_error(raw);
        if (front != nullptr) {
          if (!front->error) front->error = server_error(raw, RequestState::sent);
          ++front->received;
        }
        break;
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
      case PGRES_EMPTY_QUERY:
      case PGRES_SINGLE_TUPLE:
        if (front != nullptr) {
          if (front->received < front->count) {
            front->result(front->received) = std::move(result);
          }
          ++front->received;
        }
        break;
      case PGRES_NONFATAL_ERROR:  // notices arrive through the notice processor
        break;
      default:
        // COPY states cannot occur in pipeline mode; anything else means we lost track.
        fail(make_error_code(errc::protocol_error), RequestState::sent,
             std::string("unexpected result status ") + PQresStatus(PQresultStatus(raw)));
        return false;
    }
  }
  return true;
}

void Connection::complete_front() noexcept {
  Request* front = inflight_.front();
  inflight_.pop_front();
  ++completed_;
  if (front == nullptr) {  // abandoned by its caller: results dropped
    --abandoned_;
    cancel_if_only_abandoned();
    notify_ready();
    return;
  }
  front->done = true;
  if (front->notifier != nullptr) front->notifier->cancel();
}

std::exception_ptr Connection::connection_error(std::error_code code, RequestState state,
                                                std::string_view what) const {
  return std::make_exception_ptr(Error(code, description_ + ": " + std::string(what), state));
}

void Connection::fail(std::error_code error, RequestState state, std::string_view what) noexcept {
  if (broken_) return;
  broken_ = true;
  if (!inflight_.empty() && error != errc::client_closed) {
    core::logger("pg")->warn("{}: connection failed with {} request(s) in flight: {}", description_,
                             inflight_.size(), what);
  }
  try {
    auto eptr = connection_error(error, state, what);
    abandoned_ = 0;
    while (!inflight_.empty()) {
      Request* r = inflight_.front();
      inflight_.pop_front();
      if (r == nullptr) continue;
      // A request that already got a server error cannot have committed (its implicit or
      // explicit transaction is aborted), and that error says more (e.g. PgBouncer's
      // query_wait_timeout, F13): keep it. Otherwise its Sync never came: outcome unknown.
      if (!r->error) r->error = eptr;
      r->done = true;
      if (r->notifier != nullptr) r->notifier->cancel();
    }
  } catch (const std::exception& e) {  // allocation failure while building the error
    core::logger("pg")->critical("{}: cannot report connection failure: {}", description_,
                                 e.what());
  }
  if (socket_) {
    boost::system::error_code ignored;
    socket_->cancel(ignored);
  }
  writer_wake_.notify_all();
  broken_event_.notify_all();
  on_ready_ = nullptr;
  if (on_broken_) {
    auto callback = std::move(on_broken_);
    on_broken_ = nullptr;
    callback();
  }
}

void Connection::send_cancel_request() noexcept {
  if (conn_ == nullptr) return;
  if (PGcancel* cancel = PQgetCancel(conn_)) {
    try {
      auto ticket = std::make_shared<CancelTicket>();
      cancel_ = ticket;
      cancel_sent_at_ = Clock::now();
      cancel_done_reported_ = false;
      CancelSender::instance().send(cancel, std::move(ticket));
    } catch (const std::bad_alloc&) {
      PQfreeCancel(cancel);
      core::logger("pg")->error("{}: cannot send a cancel request: out of memory", description_);
    }
  }
}

void Connection::cancel_if_only_abandoned() noexcept {
  if (abandoned_ == 0 || abandoned_ != inflight_.size() || broken_) return;
  if (cancel_ && !cancel_->done.load()) return;  // one already on its way
  send_cancel_request();
}

void Connection::notify_ready() noexcept {
  if (on_ready_ && accepting()) on_ready_();
}

void Connection::check_cancel() noexcept {
  if (!cancel_ || broken_) return;
  if (cancel_->done.load()) {
    // Failed or dropped while a statement nobody waits for still runs: it may run for long,
    // and this connection takes nothing until it ends. Better a fresh connection.
    if (!cancel_->delivered.load() && abandoned_ > 0) {
      core::logger("pg")->warn(
          "{}: cancel request not delivered and an abandoned statement still runs: discarding "
          "the connection",
          description_);
      fail(make_error_code(errc::connection_lost), RequestState::sent,
           "cancel request not delivered");
      return;
    }
    if (!cancel_done_reported_) {
      cancel_done_reported_ = true;
      notify_ready();
    }
    return;
  }
  if (Clock::now() - cancel_sent_at_ < cancel_timeout_) return;
  // Stuck (a black hole, a frozen server): a late cancel could hit the next statement, so the
  // connection can take no work until it completes, which may be never.
  CancelSender::instance().withdraw(cancel_);
  core::logger("pg")->warn(
      "{}: cancel request not completed within {} ms: discarding the connection", description_,
      cancel_timeout_.count());
  fail(make_error_code(errc::connection_lost), RequestState::sent,
       "cancel request not completed within " + std::to_string(cancel_timeout_.count()) + " ms");
}

void Connection::close(std::error_code error) noexcept {
  if (conn_ == nullptr) return;
  fail(error, RequestState::sent, error == errc::client_closed ? "closed" : error.message());
  if (socket_) {
    socket_->release();  // libpq owns the descriptor
    socket_.reset();
  }
  PQfinish(conn_);
  conn_ = nullptr;
}

asio::awaitable<void> Connection::wait_closed() {
  while (io_running_ > 0) co_await io_done_.wait();
}

void Connection::send(Request& request) {
  if (!open()) {
    throw Error(make_error_code(errc::connection_lost), description_ + ": connection not open",
                RequestState::not_sent);
  }
  if (request.count == 1) {
    request.single = Result();
  } else {
    request.results.resize(request.count);
  }
  request.received = 0;
  request.done = false;
  request.error = nullptr;
  for (std::size_t i = 0; i < request.count; ++i) {
    if (!statements_.send(conn_, request.statements[i])) {
      // Statements before this one may be queued in libpq without their Sync: the pipeline
      // is no longer in a known state, so the connection goes.
      const std::string message = trim_message(PQerrorMessage(conn_));
      fail(make_error_code(errc::connection_lost), RequestState::not_sent, message);
      throw Error(make_error_code(errc::connection_lost), description_ + ": " + message,
                  i == 0 ? RequestState::not_sent : RequestState::sent);
    }
  }
  if (PQpipelineSync(conn_) != 1) {
    const std::string message = trim_message(PQerrorMessage(conn_));
    fail(make_error_code(errc::connection_lost), RequestState::not_sent, message);
    throw Error(make_error_code(errc::connection_lost), description_ + ": " + message,
                RequestState::sent);
  }
  inflight_.push_back(&request);
  // PQpipelineSync (libpq 14-16) already pushes the data out; the writer is woken only when
  // some is left (a full socket buffer), or when the flush fails (it reports the failure).
  // Waking it for nothing would cost a timer cancellation and two event-loop hops per query.
  if (PQflush(conn_) != 0) wake_writer();
}

void Connection::abandon(Request& request) noexcept {
  request.notifier = nullptr;
  auto it = std::find(inflight_.begin(), inflight_.end(), &request);
  if (it != inflight_.end()) {
    *it = nullptr;
    ++abandoned_;
    cancel_if_only_abandoned();
  }
}

asio::awaitable<void> Connection::await(Request& request, Clock::time_point deadline) {
  if (request.done) {
    if (request.error) std::rethrow_exception(request.error);
    co_return;
  }
  asio::steady_timer notifier(executor_, deadline);
  request.notifier = &notifier;
  boost::system::error_code ec;
  co_await notifier.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  request.notifier = nullptr;
  if (request.done) {
    if (request.error) std::rethrow_exception(request.error);
    co_return;
  }
  // Not answered: give up our slot (the reader drops the results when they come).
  abandon(request);
  if (ec == asio::error::operation_aborted) {
    throw Error(make_error_code(errc::cancelled), description_ + ": query cancelled by caller",
                RequestState::sent);
  }
  // Deadline: the query may still run on the server. Ask the server to cancel it (off the
  // loop) and discard the connection, so that no later request reads a stale result.
  send_cancel_request();
  close(make_error_code(errc::connection_lost));
  throw Error(make_error_code(errc::request_timeout), description_ + ": query timed out",
              RequestState::sent);
}

}  // namespace trading_shared::pg::detail

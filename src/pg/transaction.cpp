#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/use_awaitable.hpp>

#include "client_core.hpp"
#include "detail/connection.hpp"
#include "detail/pool.hpp"

#include <string>

namespace trading_shared::pg {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::ClientAccess;
using detail::ClientCore;
using detail::Slot;

namespace detail {

asio::awaitable<Slot*> ClientCore::begin_transaction(Keep, const TransactionOptions& options) {
  check_running();
  Slot* slot = co_await pool_.acquire(true, Clock::now() + config_.acquire_timeout);
  std::string begin = "BEGIN ISOLATION LEVEL ";
  switch (options.isolation) {
    case IsolationLevel::read_committed:
      begin += "READ COMMITTED";
      break;
    case IsolationLevel::repeatable_read:
      begin += "REPEATABLE READ";
      break;
    case IsolationLevel::serializable:
      begin += "SERIALIZABLE";
      break;
  }
  if (options.read_only) begin += " READ ONLY";
  const std::string timeout = "SET LOCAL statement_timeout = " +
                              std::to_string(statement_timeout(options.statement_timeout).count());
  // BEGIN and the server-side statement timeout in one round trip.
  detail::Statement statements[2] = {{begin.c_str(), nullptr}, {timeout.c_str(), nullptr}};
  detail::Request request;
  request.statements = statements;
  request.count = 2;
  std::exception_ptr failure;
  try {
    co_await slot->connection->run(request, deadline_for(options.statement_timeout));
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (classify(failure) == ErrorKind::cancelled) {
      pool_.discard(slot, "cancelled during BEGIN");
    }
    pool_.release_exclusive(slot);
    std::rethrow_exception(failure);
  }
  co_return slot;
}

asio::awaitable<void> ClientCore::commit_transaction(Keep, Slot* slot,
                                                     const TransactionOptions& options) {
  detail::Statement statement{"COMMIT", nullptr};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  try {
    co_await slot->connection->run(request, deadline_for(options.statement_timeout));
  } catch (const Error& e) {
    if (e.code() == errc::server_error) throw;  // e.g. 40001 at commit: rolled back
    if (e.code() == errc::cancelled) throw;
    // Sent, and then the connection died or timed out: committed or not, nobody knows.
    throw Error(make_error_code(errc::commit_outcome_unknown), description_ + ": " + e.what(),
                RequestState::sent);
  }
}

asio::awaitable<void> ClientCore::rollback_transaction(Keep, Slot* slot) {
  if (!slot->connection->open()) co_return;
  detail::Statement statement{"ROLLBACK", nullptr};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  co_await slot->connection->run(request, Clock::now() + config_.close_timeout);
}

}  // namespace detail

// ---- Transaction: statements on the transaction's connection ------------------------------

Clock::time_point Transaction::copy_deadline() const {
  return Clock::now() + timeout_ + core_->config_.network_timeout_margin;
}

asio::awaitable<void> Transaction::copy_start(std::string sql) {
  co_await connection_->copy_start(sql.c_str(), copy_deadline());
}

asio::awaitable<void> Transaction::copy_chunk(const CopyBuffer& buffer) {
  co_await connection_->copy_send(buffer.data(), copy_deadline());
}

asio::awaitable<std::int64_t> Transaction::copy_end() {
  co_return co_await connection_->copy_end(copy_deadline());
}

void Transaction::copy_failed(const std::exception_ptr& failure) noexcept {
  if (!connection_->open()) return;
  // A server error at the end of the COPY left the connection in pipeline mode (usable, the
  // transaction aborted); anything else may leave it in COPY state.
  bool usable = false;
  try {
    std::rethrow_exception(failure);
  } catch (const Error& e) {
    usable = e.code() == errc::server_error;
  } catch (...) {  // any other failure (e.g. a row that cannot be encoded): closed below
  }
  if (!usable) {
    core::logger("pg")->warn("{}: COPY inside a transaction failed: closing the connection",
                             connection_->description());
    connection_->close(make_error_code(errc::connection_lost));
  }
}

asio::awaitable<Result> Transaction::run(Sql sql, ParamBuffer params) {
  core_->check_session_state(sql);
  detail::Statement statement{sql.c_str(), &params};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  const auto started = Clock::now();
  try {
    co_await connection_->run(request, started + timeout_ + core_->config_.network_timeout_margin);
    if (core_->round_trip_ != nullptr) core_->round_trip_->observe(Clock::now() - started);
  } catch (const Error& e) {
    if (core_->round_trip_ != nullptr) core_->round_trip_->observe(Clock::now() - started);
    // BEGIN and earlier statements went out: whatever this statement's own state, the
    // transaction's outcome is unknown to a caller that may have side effects elsewhere
    // (F04: retried only when declared idempotent).
    if (e.code() == errc::connection_lost && e.request_state() == RequestState::not_sent) {
      throw Error(e.code(), e.what(), RequestState::sent);
    }
    throw;
  }
  co_return std::move(request.result(0));
}

// ---- ClientAccess: transactions for the inline templates -----------------------------------

asio::awaitable<Slot*> ClientAccess::begin_transaction(const ClientAccess::CorePtr& core,
                                                       const TransactionOptions& options) {
  return core->begin_transaction(core, options);
}

asio::awaitable<void> ClientAccess::commit_transaction(const ClientAccess::CorePtr& core,
                                                       Slot* slot,
                                                       const TransactionOptions& options) {
  return core->commit_transaction(core, slot, options);
}

asio::awaitable<void> ClientAccess::rollback_transaction(const ClientAccess::CorePtr& core,
                                                         Slot* slot) {
  return core->rollback_transaction(core, slot);
}

void ClientAccess::discard(ClientCore& core, Slot* slot, std::string_view why) noexcept {
  core.pool_.discard(slot, why);
}

void ClientAccess::release_exclusive(ClientCore& core, Slot* slot) noexcept {
  core.pool_.release_exclusive(slot);
}

detail::Connection& ClientAccess::slot_connection(Slot* slot) noexcept {
  return *slot->connection;
}

std::chrono::milliseconds ClientAccess::statement_timeout(
    const ClientCore& core, std::chrono::milliseconds requested) noexcept {
  return core.statement_timeout(requested);
}

core::AsyncEvent& ClientAccess::hard_stop(ClientCore& core) noexcept {
  return core.hard_stop_;
}

bool ClientAccess::closing(const ClientCore& core) noexcept {
  return core.state_.closing_or_closed();
}

void ClientAccess::throw_closed_during_body(const ClientCore& core) {
  core.throw_closed_during_body();
}

}  // namespace trading_shared::pg

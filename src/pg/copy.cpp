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

asio::awaitable<Slot*> ClientCore::begin_copy(Keep, std::string sql, QueryOptions options) {
  check_running();
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  enter();
  Slot* slot = nullptr;
  std::exception_ptr failure;
  try {
    slot = co_await pool_.acquire(true, Clock::now() + config_.acquire_timeout);
    slot->copy_permit.emplace(std::move(permit));
    co_await slot->connection->copy_start(sql.c_str(), deadline_for(options.timeout));
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (slot == nullptr) {
      record(permit, failure);
      leave();
    } else {
      finish_copy(slot, failure);
    }
    std::rethrow_exception(failure);
  }
  co_return slot;
}

asio::awaitable<void> ClientCore::copy_chunk(Keep, Slot* slot, const CopyBuffer& buffer,
                                             QueryOptions options) {
  co_await slot->connection->copy_send(buffer.data(), deadline_for(options.timeout));
}

asio::awaitable<std::int64_t> ClientCore::end_copy(Keep, Slot* slot, QueryOptions options) {
  co_return co_await slot->connection->copy_end(deadline_for(options.timeout));
}

void ClientCore::finish_copy(Slot* slot, const std::exception_ptr& failure) noexcept {
  if (slot != nullptr) {
    if (failure && slot->connection->open()) {
      // Mid-COPY the connection cannot be reused; a server error after COPY ended leaves
      // it usable (copy_end re-entered pipeline mode), anything else does not.
      bool usable = false;
      try {
        std::rethrow_exception(failure);
      } catch (const Error& e) {
        usable = e.code() == errc::server_error;
      } catch (...) {  // any other failure: discard below
      }
      if (!usable) {
        // A COPY cut short mid-stream (timeout, caller's cancellation) may still run on the
        // server, and data already on its way could reach CopyDone there and commit: ask the
        // server to cancel it, as for any statement that outlives its deadline (discard()
        // does so only for pipelined statements).
        if (slot->connection->copying()) slot->connection->send_cancel_request();
        pool_.discard(slot, "COPY failed");
      }
    }
    if (slot->copy_permit) {
      record(*slot->copy_permit, failure);
      slot->copy_permit.reset();
    }
    pool_.release_exclusive(slot);
  }
  leave();
}

}  // namespace detail

// ---- ClientAccess: COPY for the inline templates -------------------------------------------

asio::awaitable<Slot*> ClientAccess::begin_copy(const ClientAccess::CorePtr& core, std::string sql,
                                                QueryOptions options) {
  return core->begin_copy(core, std::move(sql), options);
}

asio::awaitable<void> ClientAccess::copy_chunk(const ClientAccess::CorePtr& core, Slot* slot,
                                               const CopyBuffer& buffer, QueryOptions options) {
  return core->copy_chunk(core, slot, buffer, options);
}

asio::awaitable<std::int64_t> ClientAccess::end_copy(const ClientAccess::CorePtr& core, Slot* slot,
                                                     QueryOptions options) {
  return core->end_copy(core, slot, options);
}

void ClientAccess::finish_copy(ClientCore& core, Slot* slot,
                               const std::exception_ptr& failure) noexcept {
  core.finish_copy(slot, failure);
}

std::string ClientAccess::copy_statement(std::string_view table,
                                         const std::vector<std::string_view>& columns) {
  auto quote = [](std::string_view name) {
    std::string out = "\"";
    for (char c : name) {
      if (c == '"') out += '"';
      out += c;
    }
    return out + '"';
  };
  std::string sql = "COPY ";
  // "schema.table" is quoted part by part.
  const auto dot = table.find('.');
  sql += dot == std::string_view::npos
             ? quote(table)
             : quote(table.substr(0, dot)) + "." + quote(table.substr(dot + 1));
  sql += " (";
  bool first = true;
  for (auto column : columns) {
    if (!first) sql += ", ";
    sql += quote(column);
    first = false;
  }
  sql += ") FROM STDIN (FORMAT binary)";
  return sql;
}

}  // namespace trading_shared::pg

// COPY ... FROM STDIN on a Connection (src/pg/detail/connection.hpp): the connection leaves
// pipeline mode for the COPY and re-enters it after.
#include <trading_shared/core/timeout.hpp>

#include <boost/asio/use_awaitable.hpp>

#include "detail/connection.hpp"

#include <algorithm>
#include <string>
#include <string_view>

namespace trading_shared::pg::detail {
namespace asio = boost::asio;
using wait_type = asio::posix::stream_descriptor::wait_type;

asio::awaitable<void> Connection::wait_io(wait_type type, Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) {
    throw Error(make_error_code(errc::request_timeout), description_ + ": COPY timed out",
                RequestState::sent);
  }
  co_await core::with_timeout(socket_->async_wait(type, asio::use_awaitable), left,
                              errc::request_timeout, description_ + ": COPY", RequestState::sent);
  if (broken_) {
    throw Error(make_error_code(errc::connection_lost), description_ + ": connection lost",
                RequestState::sent);
  }
}

asio::awaitable<void> Connection::flush_all(Clock::time_point deadline) {
  for (;;) {
    const int r = PQflush(conn_);
    if (r == 0) co_return;
    if (r < 0) {
      throw Error(make_error_code(errc::connection_lost),
                  description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
    }
    co_await wait_io(wait_type::wait_write, deadline);
  }
}

asio::awaitable<void> Connection::drain_command(Clock::time_point deadline) {
  for (;;) {
    while (PQisBusy(conn_) == 0) {
      PGresult* rest = PQgetResult(conn_);  // does not block: libpq has it buffered
      if (rest == nullptr) co_return;
      PQclear(rest);
    }
    co_await wait_io(wait_type::wait_read, deadline);
    if (PQconsumeInput(conn_) == 0) {
      throw Error(make_error_code(errc::connection_lost),
                  description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
    }
  }
}

asio::awaitable<void> Connection::copy_start(const char* copy_sql, Clock::time_point deadline) {
  if (!open() || !inflight_.empty()) {
    throw Error(make_error_code(errc::invalid_argument),
                description_ + ": COPY needs an idle connection", RequestState::not_sent);
  }
  copying_ = true;
  if (PQexitPipelineMode(conn_) != 1 || PQsendQuery(conn_, copy_sql) != 1) {
    const std::string message = trim_message(PQerrorMessage(conn_));
    close(make_error_code(errc::connection_lost));
    throw Error(make_error_code(errc::connection_lost), description_ + ": COPY: " + message,
                RequestState::not_sent);
  }
  co_await flush_all(deadline);
  for (;;) {
    while (PQisBusy(conn_) == 0) {
      Result result(PQgetResult(conn_));
      if (result.native() == nullptr) {
        throw Error(make_error_code(errc::protocol_error), description_ + ": COPY not started",
                    RequestState::sent);
      }
      const auto status = PQresultStatus(result.native());
      if (status == PGRES_COPY_IN) co_return;
      if (status == PGRES_FATAL_ERROR) {
        // Read to the end of this command so that the connection stays usable, waiting for
        // the socket rather than in PQgetResult, which blocks until the server's
        // ReadyForQuery arrives (a stalled server would freeze the loop, F52).
        std::exception_ptr error = server_error(result.native(), RequestState::sent);
        co_await drain_command(deadline);
        copying_ = false;
        if (PQenterPipelineMode(conn_) != 1) close(make_error_code(errc::connection_lost));
        std::rethrow_exception(error);
      }
    }
    co_await wait_io(wait_type::wait_read, deadline);
    if (PQconsumeInput(conn_) == 0) {
      throw Error(make_error_code(errc::connection_lost),
                  description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
    }
  }
}

asio::awaitable<void> Connection::copy_send(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const auto n = std::min<std::size_t>(data.size(), 1 << 20);
    const int r = PQputCopyData(conn_, data.data(), static_cast<int>(n));
    if (r < 0) {
      throw Error(make_error_code(errc::connection_lost),
                  description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
    }
    if (r == 0) {  // libpq's buffer is full: let the socket drain
      co_await wait_io(wait_type::wait_write, deadline);
      if (PQflush(conn_) < 0) {
        throw Error(make_error_code(errc::connection_lost),
                    description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
      }
      continue;
    }
    data.remove_prefix(n);
  }
  // Keep the output buffer bounded: push what libpq holds before the caller encodes more.
  co_await flush_all(deadline);
}

asio::awaitable<std::int64_t> Connection::copy_end(Clock::time_point deadline) {
  if (PQputCopyEnd(conn_, nullptr) != 1) {
    throw Error(make_error_code(errc::connection_lost),
                description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
  }
  co_await flush_all(deadline);
  std::int64_t rows = -1;
  std::exception_ptr error;
  for (;;) {
    while (PQisBusy(conn_) == 0) {
      Result result(PQgetResult(conn_));
      if (result.native() == nullptr) {
        copying_ = false;
        if (PQenterPipelineMode(conn_) != 1) {
          close(make_error_code(errc::connection_lost));
        }
        if (error) std::rethrow_exception(error);
        co_return rows;
      }
      const auto status = PQresultStatus(result.native());
      if (status == PGRES_COMMAND_OK) {
        rows = result.affected_rows();
      } else if (status == PGRES_FATAL_ERROR && !error) {
        error = server_error(result.native(), RequestState::sent);
      }
    }
    co_await wait_io(wait_type::wait_read, deadline);
    if (PQconsumeInput(conn_) == 0) {
      throw Error(make_error_code(errc::connection_lost),
                  description_ + ": " + trim_message(PQerrorMessage(conn_)), RequestState::sent);
    }
  }
}

}  // namespace trading_shared::pg::detail

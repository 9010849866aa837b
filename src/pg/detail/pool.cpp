#include "detail/pool.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>

#include "detail/pool_impl.hpp"

#include <algorithm>
#include <exception>
#include <string>

namespace trading_shared::pg::detail {

template class BasicPool<Slot>;

boost::asio::awaitable<std::shared_ptr<Connection>> open_connection(
    boost::asio::any_io_executor executor, const PostgresConfig& config,
    const std::string& description, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::exception_ptr failure;
  try {
    const auto params = co_await resolve_dsn(config.dsn, config.application_name, timeout);
    const std::size_t count = params.targets.size();
    for (std::size_t i = 0; i < count; ++i) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= std::chrono::milliseconds::zero() && failure) break;
      // Every address gets its turn within the deadline: one that hangs (a black hole)
      // takes at most its share of the time left, F51.
      const auto share =
          std::max(left / static_cast<std::int64_t>(count - i), std::chrono::milliseconds(1));
      auto connection = std::make_shared<Connection>(executor);
      try {
        co_await connection->connect(params, params.targets[i], share);
        connection->set_cancel_timeout(config.connect_timeout);
        connection->set_statement_cache(config.statement_cache_size);
        co_return connection;
      } catch (...) {
        failure = std::current_exception();
      }
      connection->close();
      const ErrorKind kind = classify(failure);
      // Bad credentials or a missing database: every address would say the same.
      if (kind == ErrorKind::permanent || kind == ErrorKind::cancelled) break;
      if (i + 1 < count) {
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          core::logger("pg")->debug("{}: address {} failed ({}); trying the next", description,
                                    params.targets[i].description, e.what());
        }
      }
    }
  } catch (...) {
    failure = std::current_exception();  // the DSN or a host name (resolution)
  }
  if (!failure) {
    failure = std::make_exception_ptr(Error(make_error_code(errc::connect_failed),
                                            description + ": no address to connect to",
                                            RequestState::not_sent));
  }
  std::rethrow_exception(failure);
}

}  // namespace trading_shared::pg::detail

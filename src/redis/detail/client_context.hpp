#pragma once
// What the parts of a RedisClient share: configuration, endpoint, breaker, statistics and the
// run state. Owned by the client core (redis_client.cpp); the connection (connection.hpp), the
// blocking connections (blocking.hpp) and the multiplexer (multiplexer.hpp) hold a reference.

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/run_state.hpp>
#include <trading_shared/core/tls_context.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>

namespace trading_shared::redis::detail {

struct ClientContext {
  ClientContext(boost::asio::any_io_executor ex, RedisConfig cfg)
      : executor(std::move(ex)),
        config((validate(cfg), std::move(cfg))),
        endpoint(parse_redis_url(config.url)),
        description(endpoint.describe()),
        breaker(
            [&] {
              auto b = config.breaker;
              if (b.name.empty()) b.name = "redis " + description;
              return b;
            }(),
            core::SteadyClock::instance(), random),
        state(executor) {
    config.tls.enabled = endpoint.tls;
    if (endpoint.tls) {
      tls = std::make_unique<core::TlsContextSource>(config.tls, "Redis " + description);
    }
  }

  boost::asio::any_io_executor executor;
  RedisConfig config;
  RedisEndpoint endpoint;
  std::string description;
  core::DefaultRandom random;
  core::CircuitBreaker breaker;
  RedisStats stats;
  /// idle -> starting -> running -> closing -> closed (a failed start-up goes back to idle).
  core::RunState state;
  /// rediss://: the SSL context of new connections (rebuilt when its files change); null for
  /// redis://.
  std::unique_ptr<core::TlsContextSource> tls;
};

inline std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("redis");
  return logger;
}

/// An exception's text for a log line (Boost's system errors without their source location).
using core::detail::describe;

inline long long ms_count(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace trading_shared::redis::detail

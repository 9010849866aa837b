#pragma once
/// @file
/// Configuration of `RedisClient` (docs/redis.md has the table with every default).

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/tls.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::redis {

/// Where to connect and as whom; parsed from a `redis://user:pass@host:port/db` URL
/// (`rediss://`: TLS).
struct RedisEndpoint {
  bool tls = false;  ///< `rediss://`
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string user;      ///< empty: `AUTH password` (or no AUTH when the password is empty too).
  std::string password;  ///< percent-decoded.
  std::uint32_t db = 0;

  /// "host:port/db" (never the credentials): for logs, errors and the breaker's name.
  std::string describe() const;
};

/// Parses `redis[s]://[user[:password]@]host[:port][/db]`. IPv6 hosts go in brackets
/// (`redis://[::1]:6379`); user and password may be percent-encoded. `rediss://` is TLS
/// (`RedisConfig::tls`). Unix sockets are refused with `invalid_argument`, as is anything
/// malformed.
RedisEndpoint parse_redis_url(std::string_view url);

struct RedisConfig {
  /// The server. Default `redis://127.0.0.1:6379/0`.
  std::string url = "redis://127.0.0.1:6379/0";
  /// TLS of a `rediss://` URL (docs/redis.md, "TLS"): CA file or directory (empty: the
  /// system's store), client certificate and key (mutual TLS), the name to verify (empty: the
  /// URL's host). `tls.enabled` follows the URL's scheme; a TLS setting with a `redis://` URL
  /// is refused by validate(). Certificate files that change are picked up by the next
  /// connection (rotation without restart).
  core::TlsConfig tls;
  /// `CLIENT SETNAME` on every connection (letters, digits, '-', '_', '.', ':'; no spaces).
  std::string client_name = "trading_shared";
  /// A file holding the password (a trailing newline is dropped), read at every new
  /// connection: a rotated password (ACL SETUSER, then the file rewritten) is used from the
  /// next connection on, without a restart. Overrides the URL's password; empty: none.
  std::string password_file;

  /// One TCP connect plus handshake (AUTH, SELECT, CLIENT SETNAME). Default 2 s.
  std::chrono::milliseconds connect_timeout{2000};
  /// How long `start()` keeps trying to connect (auth errors fail at once). Default 10 s.
  std::chrono::milliseconds startup_timeout{10000};
  /// Default deadline of a command, from the call to the reply, waiting for a reconnect
  /// included. Overridable per call (`CommandOptions`). Default 1 s.
  std::chrono::milliseconds command_timeout{1000};
  /// An idle connection is PINGed after this long without traffic. Default 1 s.
  std::chrono::milliseconds health_check_interval{1000};
  /// A connection with requests outstanding that receives nothing for this long is
  /// declared dead (frozen server, half-open TCP) and replaced. Must exceed the slowest
  /// command you expect on the shared connection. Default 3 s.
  std::chrono::milliseconds health_check_timeout{3000};
  /// Pause between reconnect attempts: capped exponential with full jitter.
  /// Default base 50 ms, cap 2 s.
  core::BackoffConfig reconnect_backoff{std::chrono::milliseconds{50},
                                        std::chrono::milliseconds{2000}, 2.0};
  /// The endpoint's circuit breaker (its name defaults to the endpoint).
  core::CircuitBreakerConfig breaker;
  /// Bound on commands queued or in flight on the shared connection; beyond it calls fail
  /// at once with `queue_full` (backpressure instead of unbounded memory). Default 100 000.
  std::size_t max_queued = 100000;
  /// Dedicated connections for blocking commands (XREADGROUP BLOCK, BLPOP); beyond it a
  /// blocking command fails with `queue_full`. Default 16.
  std::size_t max_blocking_connections = 16;
  /// `close()` lets in-flight commands finish for this long, then fails them. Default 2 s.
  std::chrono::milliseconds close_timeout{2000};
};

/// Checks a configuration; throws `Error(errc::invalid_argument)` naming the bad field.
void validate(const RedisConfig& config);

}  // namespace trading_shared::redis

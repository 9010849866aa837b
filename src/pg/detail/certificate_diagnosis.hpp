#pragma once
/// @file
/// Why the server's certificate failed libpq's chain check (internal; docs/postgres.md, "TLS").
///
/// libpq (15) reports every chain-check failure as "SSL error: certificate verify failed":
/// an unknown CA and an expired certificate read the same. To name the check that failed
/// (F61), the client makes, only after such a failure, one handshake of its own against the
/// same address: PostgreSQL's SSLRequest, then a TLS handshake verifying the server's chain
/// against the DSN's sslrootcert, and reports OpenSSL's reason ("certificate has expired",
/// "unable to get local issuer certificate"). Bounded by the connect deadline; nothing is sent
/// after the handshake (the server logs an aborted TLS connection).

#include <boost/asio/awaitable.hpp>

#include "detail/connect_error.hpp"
#include "detail/connection.hpp"

#include <chrono>
#include <string>

namespace trading_shared::pg::detail {

/// OpenSSL's reason why the server at `target` fails the chain check against `tls.sslrootcert`
/// (libpq's default root file when empty; the system's CAs for "system"), with the
/// certificate's validity period when it is expired or not yet valid. Empty when it cannot
/// tell: a Unix socket, no time left, the server refused TLS, the handshake failed otherwise or
/// succeeded. Never throws (its own failures are logged at debug level).
boost::asio::awaitable<std::string> certificate_failure_reason(const ConnectTarget& target,
                                                               const ConnectTls& tls,
                                                               Clock::time_point deadline);

}  // namespace trading_shared::pg::detail

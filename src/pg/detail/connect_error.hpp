#pragma once
/// @file
/// The error of a failed libpq connect (internal; docs/postgres.md, "TLS").
///
/// libpq reports a failed connection only as text. This turns that text into an `Error` of
/// the right kind, so that a retry happens only where it can help:
///
/// - TLS refused by configuration (F61, F63): the server's certificate fails the chain check
///   (unknown CA, expired or not yet valid) or the host name check, the server does not
///   speak TLS while the DSN asks for it, a certificate or key file of the DSN cannot be
///   used, the server's TLS alert refusing our client certificate -> `errc::tls_failed`
///   (permanent: never retried, never counted by a circuit breaker), naming the check and
///   keeping libpq's text.
/// - Server errors at connect time (authentication, missing database, starting up, the
///   server refusing plaintext with "no encryption" in its pg_hba message) -> a server error
///   with the SQLSTATE `sqlstate_of_connect_message()` gives it (28000 is permanent), and a
///   hint saying what to do (set sslmode=require or verify-full; give sslcert/sslkey).
/// - Anything else (refused, reset, EOF in the handshake) -> `errc::connect_failed`
///   (transient).

#include <trading_shared/core/error.hpp>

#include <string>
#include <string_view>

namespace trading_shared::pg::detail {

/// The TLS settings of one connect attempt, for messages (no secret: file paths only).
struct ConnectTls {
  std::string sslmode;      ///< as given in the DSN; empty: libpq's default (prefer).
  std::string sslrootcert;  ///< empty: libpq's default (~/.postgresql/root.crt).
  std::string sslcert;      ///< the client certificate, if any.
  std::string host;         ///< the name the certificate is checked against.
};

/// True when libpq's message says the server's certificate failed the chain check
/// ("certificate verify failed"): the case where a precise reason needs a look at the
/// certificate itself (see `diagnose_certificate` in connection.cpp).
bool is_certificate_verify_failure(std::string_view message) noexcept;

/// The `Error` of a failed connect from libpq's message (trimmed, one line). `what` says
/// what was being done ("connecting to host:port/db as user"); `reason`, when not empty, is
/// the precise reason of a chain-check failure ("certificate has expired").
Error connect_error(std::string_view message, const ConnectTls& tls, const std::string& what,
                    std::string_view reason = {});

}  // namespace trading_shared::pg::detail

// connect_error (src/pg/detail/connect_error.hpp): libpq's connect failure text -> Error.
#include "detail/connect_error.hpp"

#include <trading_shared/pg/sql_state.hpp>

#include <array>
#include <utility>

namespace trading_shared::pg::detail {
namespace {

bool contains(std::string_view haystack, std::string_view needle) noexcept {
  return haystack.find(needle) != std::string_view::npos;
}

template <std::size_t N>
bool contains_any(std::string_view haystack, const std::array<std::string_view, N>& needles) {
  for (const auto needle : needles) {
    if (contains(haystack, needle)) return true;
  }
  return false;
}

// libpq's (15-17) texts for a server certificate whose names do not include the host.
constexpr std::array<std::string_view, 4> kHostNameMismatch = {
    "does not match host name",
    "could not get server's host name from server certificate",
    "server's host name is not specified",
    "could not get server's IP address from server certificate",
};

// A certificate, key or CRL file of the DSN that libpq cannot use: the configuration.
constexpr std::array<std::string_view, 12> kClientFiles = {
    "root certificate file",
    "could not read root certificate file",
    "could not open certificate file",
    "could not read certificate file",
    "could not load private key file",
    "certificate present, but not private key file",
    "private key file",
    "could not access private key file",
    "could not load SSL certificate revocation list",
    "could not create SSL context",
    "could not set minimum SSL protocol version",
    "could not set maximum SSL protocol version",
};

// OpenSSL's reasons for a handshake the peer refused or that cannot agree on TLS at all.
// ("SSL SYSCALL error", "unexpected eof while reading": the connection went away: not these.)
constexpr std::array<std::string_view, 5> kHandshakeRefused = {
    "alert",                 // the server's alert: unknown ca, bad certificate, ...
    "wrong version number",  // not TLS after the server's 'S'
    "unsupported protocol",  // no common TLS version
    "no protocols available",
    "certificate required",
};

std::string or_default(const std::string& value, std::string_view fallback) {
  return value.empty() ? std::string(fallback) : value;
}

Error tls_error(const std::string& what, const std::string& text) {
  return Error(make_error_code(errc::tls_failed), what + ": " + text, RequestState::not_sent);
}

/// The hint of a connect-time server error whose cure is a TLS setting; empty otherwise.
std::string tls_hint(std::string_view message, const ConnectTls& tls) {
  if (contains(message, "no encryption") || contains(message, "FATAL:  SSL required")) {
    // The server's pg_hba.conf has only hostssl lines (or rejects hostnossl), or PgBouncer
    // requires TLS from its clients (client_tls_sslmode): plaintext refused.
    return "the server requires TLS: set sslmode=require or verify-full (the DSN has sslmode=" +
           or_default(tls.sslmode, "prefer") + ")";
  }
  if (contains(message, "requires a valid client certificate")) {
    return "the server requires a client certificate for this role: set sslcert and sslkey";
  }
  if (!tls.sslcert.empty() && contains(message, "authentication failed for user")) {
    return "the client certificate (sslcert=" + tls.sslcert +
           ") must name the user in its CN (clientcert=verify-full or cert authentication)";
  }
  return {};
}

}  // namespace

bool is_certificate_verify_failure(std::string_view message) noexcept {
  return contains(message, "certificate verify failed");
}

Error connect_error(std::string_view message, const ConnectTls& tls, const std::string& what,
                    std::string_view reason) {
  const std::string libpq = "(libpq: " + std::string(message) + ")";
  if (is_certificate_verify_failure(message)) {
    const std::string root = tls.sslrootcert.empty() ? "libpq's default ~/.postgresql/root.crt"
                                                     : "sslrootcert=" + tls.sslrootcert;
    const std::string why = reason.empty()
                                ? " (signed by a CA it does not trust, expired or not yet valid)"
                                : ": " + std::string(reason);
    return tls_error(what,
                     "TLS certificate check failed: the server's certificate does not "
                     "verify against " +
                         root + why + "; fix sslrootcert or the server's certificate " + libpq);
  }
  if (contains_any(message, kHostNameMismatch)) {
    return tls_error(what, "TLS host name check failed: the server's certificate is not for \"" +
                               tls.host + "\" (sslmode=" + or_default(tls.sslmode, "prefer") +
                               "); connect with a name the certificate lists (host=) or "
                               "reissue it " +
                               libpq);
  }
  if (contains(message, "server does not support SSL, but SSL was required")) {
    return tls_error(what,
                     "the server does not speak TLS (ssl=off); the DSN asks for it "
                     "(sslmode=" +
                         or_default(tls.sslmode, "prefer") +
                         "): enable ssl on the server or change sslmode " + libpq);
  }
  if (contains_any(message, kClientFiles)) {
    return tls_error(what,
                     "the DSN's TLS files cannot be used (sslrootcert, sslcert, sslkey) " + libpq);
  }
  if (contains(message, "SSL error:") && contains_any(message, kHandshakeRefused)) {
    return tls_error(what, "the TLS handshake was refused: check the client certificate (sslcert=" +
                               or_default(tls.sslcert, "none") +
                               ": issued by a CA the server trusts, not expired) and the TLS "
                               "versions of both sides " +
                               libpq);
  }
  if (const auto code = sqlstate_of_connect_message(message); !code.empty()) {
    ServerError server{ServerKind::postgres, std::string(code), std::string(message), {}, {}};
    server.hint = tls_hint(message, tls);
    return make_server_error(std::move(server), what, RequestState::not_sent);
  }
  return Error(make_error_code(errc::connect_failed), what + ": " + std::string(message),
               RequestState::not_sent);
}

}  // namespace trading_shared::pg::detail

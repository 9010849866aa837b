#pragma once
/// @file
/// TLS settings of the clients that speak TLS themselves (Redis `rediss://`, `wss://`,
/// `https://`), without OpenSSL headers. The SSL context, the per-connection preparation and
/// the handshake errors: <trading_shared/core/tls_context.hpp>. PostgreSQL uses libpq's own
/// TLS (sslmode, sslrootcert, sslcert, sslkey in the DSN).

#include <string>
#include <string_view>

namespace trading_shared::core {

/// TLS settings of a client that speaks TLS itself (Redis rediss://, wss://, https://).
/// PostgreSQL uses libpq's own TLS (sslmode, sslrootcert, sslcert, sslkey in the DSN).
struct TlsConfig {
  bool enabled = false;     ///< set from the URL scheme (rediss://, wss://, https://).
  bool verify_peer = true;  ///< chain + host name; false only for tests (logged as a warning).
  std::string ca_file;      ///< PEM bundle of trusted CAs; ca_file and ca_dir empty: system store.
  std::string ca_dir;       ///< a hashed CA directory (openssl rehash).
  std::string cert_file;    ///< client certificate chain (PEM), mutual TLS; needs key_file.
  std::string key_file;     ///< its private key (PEM, unencrypted); needs cert_file.
  std::string server_name;  ///< name sent as SNI and verified; empty: the URL's host.
};

/// Throws Error(errc::invalid_argument) naming `what` and the field: cert without key (or the
/// reverse), TLS settings while !enabled ("...given but the URL is plaintext").
void validate(const TlsConfig& config, std::string_view what);

/// True when bytes a plaintext client received start like a TLS record (handshake 0x16 or
/// alert 0x15, version 0x03 0x0X): the server wants TLS (F63, plaintext side).
bool looks_like_tls(std::string_view first_bytes) noexcept;

}  // namespace trading_shared::core

#pragma once
/// @file
/// The SSL side of core::TlsConfig (includes Boost.Asio's SSL and so OpenSSL): the context of a
/// client's new connections, rebuilt when its files change (rotation without restart), the
/// preparation of each connection (SNI, host-name check) and the error of a failed handshake.

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/tls.hpp>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace trading_shared::core {

/// The SSL context for a client's new connections, rebuilt for the next connection when one of
/// its files changed (path, mtime, size, inode) — certificate rotation without a restart.
/// TLS 1.2 minimum. Loop-thread only (no locks).
class TlsContextSource {
 public:
  TlsContextSource(TlsConfig config, std::string what);
  /// The context for a new connection. Throws Error(errc::tls_failed) naming the file and
  /// OpenSSL's reason when a file cannot be loaded (permanent).
  std::shared_ptr<boost::asio::ssl::context> get();
  std::uint64_t builds() const noexcept { return builds_; }  ///< 1 after the first get().
  const TlsConfig& config() const noexcept { return config_; }

 private:
  struct FileStamp {
    std::string path;
    std::int64_t mtime_ns = 0;
    std::uint64_t size = 0;
    std::uint64_t inode = 0;
    bool exists = false;
    bool operator==(const FileStamp&) const = default;
  };
  std::vector<FileStamp> stamps() const;
  std::shared_ptr<boost::asio::ssl::context> build() const;

  TlsConfig config_;
  std::string what_;
  std::shared_ptr<boost::asio::ssl::context> context_;
  std::vector<FileStamp> stamps_;
  std::uint64_t builds_ = 0;
};

/// Sets SNI (host names only, never an IP literal) and the host-name / IP check
/// (X509_VERIFY_PARAM_set1_host / set1_ip_asc) on a new connection's SSL* for `host`
/// (config.server_name when set).
void prepare_client(SSL* ssl, const TlsConfig& config, const std::string& host);

/// The error of a failed TLS handshake, as an Error: a certificate that fails verification
/// (names the check: "certificate verify failed: certificate has expired", "... host name
/// mismatch: the certificate is for ... not ...", "... unable to get local issuer certificate
/// (unknown CA)"), a peer that does not speak TLS ("the server does not speak TLS: is it a
/// plaintext port?"), or an alert of the server (it requires a client certificate, no common
/// version) -> errc::tls_failed (permanent); anything else (reset, EOF mid-handshake) ->
/// errc::connect_failed (transient). `what` prefixes it.
Error tls_handshake_error(const boost::system::error_code& ec, SSL* ssl, const std::string& what);

/// True for an error of OpenSSL (Asio's SSL category or ssl::error::stream_errors), i.e. one
/// that tls_handshake_error() explains better than ec.message().
bool is_tls_error(const boost::system::error_code& ec) noexcept;

}  // namespace trading_shared::core

// certificate_failure_reason (src/pg/detail/certificate_diagnosis.hpp): after libpq's
// "certificate verify failed", one handshake of our own to learn OpenSSL's reason.
#include "detail/certificate_diagnosis.hpp"

#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/timeout.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/ssl/verify_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <array>
#include <cstdlib>
#include <memory>

namespace trading_shared::pg::detail {
namespace asio = boost::asio;

namespace {

/// "notBefore ... notAfter ..." of a certificate, as OpenSSL prints the times.
std::string validity_of(X509* certificate) {
  if (certificate == nullptr) return {};
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio) return {};
  BIO_puts(bio.get(), "valid from ");
  ASN1_TIME_print(bio.get(), X509_get0_notBefore(certificate));
  BIO_puts(bio.get(), " until ");
  ASN1_TIME_print(bio.get(), X509_get0_notAfter(certificate));
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return size > 0 && data != nullptr ? std::string(data, static_cast<std::size_t>(size))
                                     : std::string();
}

/// OpenSSL's reason for a verification result, with what it means here; `validity`: that of
/// the certificate that failed.
std::string describe_result(long result, const std::string& validity) {
  std::string reason = X509_verify_cert_error_string(result);
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      if (!validity.empty()) reason += " (" + validity + ")";
      break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      reason += " (unknown CA: not signed by a CA of that file)";
      break;
    default:
      break;
  }
  return reason;
}

/// The root certificate file libpq uses when the DSN names none.
std::string default_root_file() {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.postgresql/root.crt";
}

asio::awaitable<std::string> probe(const ConnectTarget& target, const ConnectTls& tls) {
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::socket socket(executor);
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(target.hostaddr),
                                         static_cast<unsigned short>(std::stoi(target.port)));
  co_await socket.async_connect(endpoint, asio::use_awaitable);
  // PostgreSQL's SSLRequest: length 8, code 80877103.
  static constexpr std::array<unsigned char, 8> kSslRequest = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
  co_await asio::async_write(socket, asio::buffer(kSslRequest), asio::use_awaitable);
  char answer = 0;
  co_await asio::async_read(socket, asio::buffer(&answer, 1), asio::use_awaitable);
  if (answer != 'S') co_return std::string();  // the server refused TLS: libpq would have said

  asio::ssl::context context(asio::ssl::context::tls_client);
  context.set_verify_mode(asio::ssl::verify_peer);
  if (tls.sslrootcert == "system") {
    context.set_default_verify_paths();
  } else {
    context.load_verify_file(tls.sslrootcert.empty() ? default_root_file() : tls.sslrootcert);
  }
  // The first certificate that fails, kept while OpenSSL still holds it (a failed handshake
  // leaves no peer certificate to ask for afterwards).
  std::string validity;
  context.set_verify_callback([&validity](bool preverified, asio::ssl::verify_context& verify) {
    if (!preverified && validity.empty()) {
      validity = validity_of(X509_STORE_CTX_get_current_cert(verify.native_handle()));
    }
    return preverified;
  });
  asio::ssl::stream<asio::ip::tcp::socket&> stream(socket, context);
  if (!tls.host.empty() && tls.host != target.hostaddr) {
    // As libpq's sslsni (SSL_set_tlsext_host_name, a macro with an old-style cast).
    SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(tls.host.c_str()));
  }
  boost::system::error_code ec;
  co_await stream.async_handshake(asio::ssl::stream_base::client,
                                  asio::redirect_error(asio::use_awaitable, ec));
  const long result = SSL_get_verify_result(stream.native_handle());
  if (!ec || result == X509_V_OK) co_return std::string();
  co_return describe_result(result, validity);
}

}  // namespace

asio::awaitable<std::string> certificate_failure_reason(const ConnectTarget& target,
                                                        const ConnectTls& tls,
                                                        Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (target.hostaddr.empty() || left <= Clock::duration::zero()) co_return std::string();
  std::string reason;
  try {
    reason = co_await core::with_timeout(probe(target, tls), left, errc::connect_timeout,
                                         "TLS certificate diagnosis", RequestState::not_sent);
  } catch (const std::exception& e) {
    if (classify(std::current_exception()) == ErrorKind::cancelled) throw;
    // Best effort: libpq's own message still says the check failed.
    core::logger("pg")->debug("{}: cannot tell why the server's certificate failed the check: {}",
                              target.description, e.what());
  }
  co_return reason;
}

}  // namespace trading_shared::pg::detail

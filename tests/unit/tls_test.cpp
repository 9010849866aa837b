// core/tls.hpp and core/tls_context.hpp: validate(), looks_like_tls(), the context source's
// rebuild when a file changes (rotation), and the error of a failed handshake (a loopback
// handshake between two Asio SSL streams of this process, with the test certificates).

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/core/tls_context.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include "support/tls_certs.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

namespace ts = trading_shared;
namespace core = trading_shared::core;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// One set of certificates for the whole binary (openssl runs once), removed at exit.
struct UnitCertificates {
  std::string root;
  ts::testing::TestCertificates certs;
  UnitCertificates() {
    root = (fs::temp_directory_path() / "ts-tls-unit-XXXXXX").string();
    if (::mkdtemp(root.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    certs = ts::testing::make_test_certificates(root + "/certs");
  }
  ~UnitCertificates() {
    std::error_code ignored;  // a leftover temporary directory is harmless
    fs::remove_all(root, ignored);
  }
  UnitCertificates(const UnitCertificates&) = delete;
  UnitCertificates& operator=(const UnitCertificates&) = delete;
};

const ts::testing::TestCertificates& certs() {
  static const UnitCertificates made;
  return made.certs;
}

std::string work_dir() {
  std::string pattern = (fs::temp_directory_path() / "ts-tls-unit-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

// Replaces `to` by a copy of `from` the way a rotation does: written beside it, renamed over it.
void replace_file(const std::string& from, const std::string& to) {
  fs::copy_file(from, to + ".tmp", fs::copy_options::overwrite_existing);
  fs::rename(to + ".tmp", to);
}

template <typename F>
ts::Error expect_error(F&& f) {
  try {
    f();
  } catch (const ts::Error& e) {
    return e;
  }
  ADD_FAILURE() << "no Error thrown";
  return ts::Error(make_error_code(ts::errc::invalid_argument), "none");
}

}  // namespace

TEST(TlsConfig, ValidateRefusesSettingsWithoutTls) {
  core::TlsConfig config;
  config.ca_file = "/etc/ssl/ca.pem";
  const auto e = expect_error([&] { core::validate(config, "Redis config"); });
  EXPECT_EQ(e.code(), make_error_code(ts::errc::invalid_argument));
  EXPECT_THAT(e.what(), HasSubstr("Redis config"));
  EXPECT_THAT(e.what(), HasSubstr("ca_file"));
  EXPECT_THAT(e.what(), HasSubstr("plaintext"));
  config.enabled = true;
  EXPECT_NO_THROW(core::validate(config, "Redis config"));
}

TEST(TlsConfig, ValidateRefusesCertWithoutKeyAndTheReverse) {
  core::TlsConfig config;
  config.enabled = true;
  config.cert_file = "client.crt";
  EXPECT_THAT(expect_error([&] { core::validate(config, "x"); }).what(), HasSubstr("key_file"));
  config.cert_file.clear();
  config.key_file = "client.key";
  EXPECT_THAT(expect_error([&] { core::validate(config, "x"); }).what(), HasSubstr("cert_file"));
  config.cert_file = "client.crt";
  EXPECT_NO_THROW(core::validate(config, "x"));
}

TEST(TlsConfig, LooksLikeTls) {
  using namespace std::string_view_literals;
  EXPECT_TRUE(core::looks_like_tls("\x16\x03\x01\x00\x2a"sv));          // handshake record
  EXPECT_TRUE(core::looks_like_tls("\x15\x03\x03\x00\x02\x02\x46"sv));  // alert record
  EXPECT_TRUE(core::looks_like_tls("\x15"sv));
  EXPECT_FALSE(core::looks_like_tls(""sv));
  EXPECT_FALSE(core::looks_like_tls("+PONG\r\n"sv));
  EXPECT_FALSE(core::looks_like_tls("-ERR unknown command\r\n"sv));
  EXPECT_FALSE(core::looks_like_tls("\x16\x02\x01"sv));
  EXPECT_FALSE(core::looks_like_tls("\x16\x03\x09"sv));
}

TEST(TlsContextSource, RebuildsOnlyWhenAFileChanged) {
  const auto& c = certs();
  const std::string dir = work_dir();
  core::TlsConfig config;
  config.enabled = true;
  config.ca_file = dir + "/ca.crt";
  config.cert_file = dir + "/client.crt";
  config.key_file = dir + "/client.key";
  fs::copy_file(c.ca_cert, config.ca_file);
  fs::copy_file(c.client_cert, config.cert_file);
  fs::copy_file(c.client_key, config.key_file);
  core::TlsContextSource source(config, "Redis test");
  EXPECT_EQ(source.builds(), 0u);
  const auto first = source.get();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(source.builds(), 1u);
  EXPECT_EQ(source.get(), first) << "nothing changed: the same context";
  EXPECT_EQ(source.builds(), 1u);

  replace_file(c.other_ca_cert, config.ca_file);  // the CA rotated
  const auto second = source.get();
  EXPECT_NE(second, first);
  EXPECT_EQ(source.builds(), 2u);
  EXPECT_EQ(source.get(), second);

  // A new client certificate and key (the other server's pair: any matching pair will do).
  replace_file(c.other_server_key, config.key_file);
  replace_file(c.other_server_cert, config.cert_file);
  EXPECT_NE(source.get(), second);
  EXPECT_EQ(source.builds(), 3u);
  fs::remove_all(dir);
}

TEST(TlsContextSource, UnloadableFilesArePermanentErrorsNamingTheFile) {
  const auto& c = certs();
  core::TlsConfig config;
  config.enabled = true;
  config.ca_file = "/nonexistent/ca.crt";
  {
    core::TlsContextSource source(config, "Redis test");
    const auto e = expect_error([&] { source.get(); });
    EXPECT_EQ(e.code(), make_error_code(ts::errc::tls_failed));
    EXPECT_EQ(e.kind(), ts::ErrorKind::permanent);
    EXPECT_THAT(e.what(), HasSubstr("CA file /nonexistent/ca.crt"));
    EXPECT_EQ(source.builds(), 0u);
  }
  config.ca_file = c.client_key;  // not a certificate
  {
    core::TlsContextSource source(config, "Redis test");
    EXPECT_THAT(expect_error([&] { source.get(); }).what(), HasSubstr(c.client_key));
  }
  config.ca_file = c.ca_cert;
  config.cert_file = c.client_cert;
  config.key_file = c.server_key;  // does not match
  {
    core::TlsContextSource source(config, "Redis test");
    const auto e = expect_error([&] { source.get(); });
    EXPECT_EQ(e.code(), make_error_code(ts::errc::tls_failed));
    EXPECT_THAT(e.what(), HasSubstr("does not match the certificate"));
  }
}

// ---- handshake errors ------------------------------------------------------------------------

namespace {

// A loopback handshake: a server stream with `server_cert`/`server_key` (or a plaintext server
// that answers `plaintext_reply`), a client with `client`; the error of the client's handshake
// as tls_handshake_error() reports it (nullopt: it succeeded).
std::optional<ts::Error> client_handshake(const std::string& server_cert,
                                          const std::string& server_key,
                                          const core::TlsConfig& client,
                                          const std::string& host = "localhost",
                                          const std::string& plaintext_reply = {}) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  asio::ssl::context server_context(asio::ssl::context::tls_server);
  if (plaintext_reply.empty()) {
    server_context.use_certificate_chain_file(server_cert);
    server_context.use_private_key_file(server_key, asio::ssl::context::pem);
  }
  asio::ssl::stream<asio::ip::tcp::socket> server(io, server_context);
  acceptor.async_accept(server.next_layer(), [&](boost::system::error_code ec) {
    if (ec) return;
    if (!plaintext_reply.empty()) {
      asio::async_write(server.next_layer(), asio::buffer(plaintext_reply),
                        [](boost::system::error_code, std::size_t) {});
      return;
    }
    server.async_handshake(asio::ssl::stream_base::server, [](boost::system::error_code) {});
  });
  core::TlsContextSource source(client, "test");
  auto context = source.get();
  asio::ssl::stream<asio::ip::tcp::socket> stream(io, *context);
  core::prepare_client(stream.native_handle(), client, host);
  std::optional<ts::Error> result;
  stream.next_layer().async_connect(acceptor.local_endpoint(), [&](boost::system::error_code ec) {
    if (ec) {
      result = ts::Error(ec, "connect");
      return;
    }
    stream.async_handshake(asio::ssl::stream_base::client, [&](boost::system::error_code e) {
      if (e) result = core::tls_handshake_error(e, stream.native_handle(), "test");
      io.stop();
    });
  });
  io.run_for(std::chrono::seconds(10));
  return result;
}

core::TlsConfig trusting(const std::string& ca_file) {
  core::TlsConfig config;
  config.enabled = true;
  config.ca_file = ca_file;
  return config;
}

}  // namespace

TEST(TlsHandshakeError, SucceedsWithTheRightCaAndName) {
  const auto& c = certs();
  EXPECT_FALSE(client_handshake(c.server_cert, c.server_key, trusting(c.ca_cert)).has_value());
  EXPECT_FALSE(
      client_handshake(c.server_cert, c.server_key, trusting(c.ca_cert), "127.0.0.1").has_value());
}

TEST(TlsHandshakeError, NamesTheCheckThatFailed) {
  const auto& c = certs();
  const auto unknown_ca = client_handshake(c.server_cert, c.server_key, trusting(c.other_ca_cert));
  ASSERT_TRUE(unknown_ca.has_value());
  EXPECT_EQ(unknown_ca->code(), make_error_code(ts::errc::tls_failed));
  EXPECT_THAT(unknown_ca->what(), HasSubstr("unable to get local issuer certificate"));
  EXPECT_THAT(unknown_ca->what(), HasSubstr("unknown CA"));

  const auto wrong_host =
      client_handshake(c.wrong_host_cert, c.wrong_host_key, trusting(c.ca_cert));
  ASSERT_TRUE(wrong_host.has_value());
  EXPECT_EQ(wrong_host->code(), make_error_code(ts::errc::tls_failed));
  EXPECT_THAT(wrong_host->what(), HasSubstr("hostname mismatch"));
  EXPECT_THAT(wrong_host->what(), HasSubstr("the certificate is for wrong.example, not localhost"));

  auto named = trusting(c.ca_cert);
  named.server_name = "wrong.example";  // the server's name given explicitly
  EXPECT_FALSE(client_handshake(c.wrong_host_cert, c.wrong_host_key, named).has_value());

  const auto expired = client_handshake(c.expired_cert, c.expired_key, trusting(c.ca_cert));
  ASSERT_TRUE(expired.has_value());
  EXPECT_EQ(expired->code(), make_error_code(ts::errc::tls_failed));
  EXPECT_EQ(expired->kind(), ts::ErrorKind::permanent);
  EXPECT_THAT(expired->what(), HasSubstr("certificate has expired"));
}

// A certificate naming its host only in the subject's CN (no subjectAltName) is refused: RFC
// 6125 and every browser ignore the CN when checking a name, and so does prepare_client.
TEST(TlsHandshakeError, ANameOnlyInTheSubjectCnIsNotAccepted) {
  const auto& c = certs();
  const std::string dir = work_dir();
  const std::string key = dir + "/cn-only.key";
  const std::string csr = dir + "/cn-only.csr";
  const std::string cert = dir + "/cn-only.crt";
  const std::string command =
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + key +
      " 2>/dev/null && openssl req -new -key " + key + " -subj /CN=localhost -out " + csr +
      " && openssl x509 -req -in " + csr + " -CA " + c.ca_cert + " -CAkey " + c.ca_key +
      " -set_serial 4242 -days 30 -sha256 -out " + cert + " 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto refused = client_handshake(cert, key, trusting(c.ca_cert));
  ASSERT_TRUE(refused.has_value()) << "a certificate with CN=localhost and no SAN was accepted";
  EXPECT_EQ(refused->code(), make_error_code(ts::errc::tls_failed));
  EXPECT_THAT(refused->what(), HasSubstr("hostname mismatch"));
  fs::remove_all(dir);
}

// An alert that refuses the client (certificate required, unknown CA, protocol version) is a
// refusal; one that says the peer failed (internal error, decode error) is the network's or the
// server's trouble of the moment: transient, like an unknown OpenSSL reason.
TEST(TlsHandshakeError, OnlyRefusingAlertsArePermanent) {
  const auto alert = [](int code) {
    return boost::system::error_code(
        static_cast<int>(ERR_PACK(ERR_LIB_SSL, 0, SSL_AD_REASON_OFFSET + code)),
        asio::error::get_ssl_category());
  };
  for (const int refusing : {SSL_AD_CERTIFICATE_REQUIRED, SSL_AD_UNKNOWN_CA,
                             SSL_AD_PROTOCOL_VERSION, SSL_AD_HANDSHAKE_FAILURE}) {
    const auto e = core::tls_handshake_error(alert(refusing), nullptr, "test");
    EXPECT_EQ(e.code(), make_error_code(ts::errc::tls_failed)) << e.what();
  }
  for (const int passing : {SSL_AD_INTERNAL_ERROR, SSL_AD_DECODE_ERROR, SSL_AD_BAD_RECORD_MAC}) {
    const auto e = core::tls_handshake_error(alert(passing), nullptr, "test");
    EXPECT_EQ(e.code(), make_error_code(ts::errc::connect_failed)) << e.what();
    EXPECT_EQ(e.kind(), ts::ErrorKind::transient_not_sent) << e.what();
  }
}

TEST(TlsHandshakeError, APlaintextServerDoesNotSpeakTls) {
  const auto& c = certs();
  const auto error =
      client_handshake({}, {}, trusting(c.ca_cert), "localhost", "-ERR unknown command\r\n");
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code(), make_error_code(ts::errc::tls_failed));
  EXPECT_THAT(error->what(), HasSubstr("the server does not speak TLS"));
}

TEST(TlsHandshakeError, VerificationOffAcceptsAnyCertificate) {
  const auto& c = certs();
  auto config = trusting(c.other_ca_cert);
  config.verify_peer = false;
  EXPECT_FALSE(client_handshake(c.expired_cert, c.expired_key, config).has_value());
}

// TLS of the clients that speak it themselves (tls.hpp, tls_context.hpp; docs/redis.md, "TLS").

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/core/tls_context.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

namespace trading_shared::core {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

std::shared_ptr<spdlog::logger> tls_log() {
  static const auto logger = core::logger("tls");
  return logger;
}

[[noreturn]] void refuse(std::string_view what, const std::string& why) {
  throw Error(make_error_code(errc::invalid_argument), std::string(what) + ": " + why);
}

// OpenSSL's reason of the last error on this thread's queue (and the queue cleared), or the
// error code's own message.
std::string openssl_reason(const boost::system::error_code& ec) {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    if (!out.empty()) continue;  // the first (outermost) reason; the rest drained
    const char* reason = ERR_reason_error_string(e);
    if (reason != nullptr) out = reason;
  }
  if (out.empty()) out = ec.message();
  return out;
}

[[noreturn]] void load_failed(const std::string& what, std::string_view which,
                              const std::string& path, const std::string& reason) {
  throw Error(make_error_code(errc::tls_failed),
              what + ": cannot load the TLS " + std::string(which) + " " + path + ": " + reason);
}

// An unreadable file is named with errno's reason (clearer than OpenSSL's "system lib").
void check_readable(const std::string& what, std::string_view which, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) load_failed(what, which, path, std::strerror(errno));
}

// The DNS and IP subject alternative names (or the CN when it has none) of a certificate.
std::string certificate_names(X509* cert) {
  std::string names;
  auto add = [&names](std::string_view name) {
    if (!names.empty()) names += ", ";
    names += name;
  };
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
      if (name->type == GEN_DNS) {
        const auto* s = name->d.dNSName;
        add(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                             static_cast<std::size_t>(ASN1_STRING_length(s))));
      } else if (name->type == GEN_IPADD) {
        const auto* s = name->d.iPAddress;
        const auto* bytes = ASN1_STRING_get0_data(s);
        if (ASN1_STRING_length(s) == 4) {
          asio::ip::address_v4::bytes_type b{};
          std::memcpy(b.data(), bytes, 4);
          add(asio::ip::address_v4(b).to_string());
        } else if (ASN1_STRING_length(s) == 16) {
          asio::ip::address_v6::bytes_type b{};
          std::memcpy(b.data(), bytes, 16);
          add(asio::ip::address_v6(b).to_string());
        }
      }
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
      add(cn);
  }
  return names.empty() ? "no name" : names;
}

// The name the connection checks (set by prepare_client).
std::string expected_name(SSL* ssl) {
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (const char* host = X509_VERIFY_PARAM_get0_host(param, 0)) return host;
  if (char* ip = X509_VERIFY_PARAM_get1_ip_asc(param)) {
    std::string out = ip;
    OPENSSL_free(ip);
    return out;
  }
  return "the server";
}

std::string verify_failure(SSL* ssl, long result) {
  std::string text = "certificate verify failed: ";
  text += X509_verify_cert_error_string(result);
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  X509* leaf = chain != nullptr && sk_X509_num(chain) > 0 ? sk_X509_value(chain, 0) : nullptr;
  switch (result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      text += ": the certificate is for ";
      text += leaf != nullptr ? certificate_names(leaf) : "other names";
      text += ", not " + expected_name(ssl) + " (set the server name or fix the certificate)";
      break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      text += " (unknown CA: the server's certificate is not signed by a CA of the CA file)";
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      text += " (renew the server's certificate or check the clock)";
      break;
    default:
      break;
  }
  return text;
}

// OpenSSL 3.0 names TLS 1.3's alerts "unknown".
std::string alert_name(int alert) {
  switch (alert) {
    case 116:  // SSL_AD_CERTIFICATE_REQUIRED
      return "certificate required";
    case 120:  // SSL_AD_NO_APPLICATION_PROTOCOL
      return "no application protocol";
    case 109:  // SSL_AD_MISSING_EXTENSION
      return "missing extension";
    default:
      return SSL_alert_desc_string_long(alert);
  }
}

}  // namespace

// ---- tls.hpp -------------------------------------------------------------------------------

void validate(const TlsConfig& config, std::string_view what) {
  if (!config.enabled) {
    const std::pair<std::string_view, const std::string*> fields[] = {
        {"ca_file", &config.ca_file},
        {"ca_dir", &config.ca_dir},
        {"cert_file", &config.cert_file},
        {"key_file", &config.key_file},
        {"server_name", &config.server_name}};
    for (const auto& [name, value] : fields) {
      if (!value->empty()) {
        refuse(what, "TLS setting " + std::string(name) +
                         " given but the URL is plaintext (use rediss://, wss:// or https:// "
                         "for TLS, or remove the setting)");
      }
    }
    return;
  }
  if (!config.cert_file.empty() && config.key_file.empty()) {
    refuse(what, "TLS cert_file given without key_file (mutual TLS needs both)");
  }
  if (config.cert_file.empty() && !config.key_file.empty()) {
    refuse(what, "TLS key_file given without cert_file (mutual TLS needs both)");
  }
}

bool looks_like_tls(std::string_view first_bytes) noexcept {
  if (first_bytes.empty()) return false;
  const auto b0 = static_cast<unsigned char>(first_bytes[0]);
  if (b0 != 0x16 && b0 != 0x15) return false;
  if (first_bytes.size() < 2) return true;
  if (static_cast<unsigned char>(first_bytes[1]) != 0x03) return false;
  return first_bytes.size() < 3 || static_cast<unsigned char>(first_bytes[2]) <= 0x04;
}

// ---- tls_context.hpp -----------------------------------------------------------------------

TlsContextSource::TlsContextSource(TlsConfig config, std::string what)
    : config_(std::move(config)), what_(std::move(what)) {
  if (config_.enabled && !config_.verify_peer) {
    tls_log()->warn(
        "{}: TLS peer verification is OFF: the server's certificate and name are not checked "
        "(tests only)",
        what_);
  }
}

std::vector<TlsContextSource::FileStamp> TlsContextSource::stamps() const {
  std::vector<FileStamp> out;
  for (const std::string* path :
       {&config_.ca_file, &config_.ca_dir, &config_.cert_file, &config_.key_file}) {
    if (path->empty()) continue;
    FileStamp stamp;
    stamp.path = *path;
    struct stat st {};
    if (::stat(path->c_str(), &st) == 0) {
      stamp.exists = true;
      stamp.mtime_ns =
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      stamp.size = static_cast<std::uint64_t>(st.st_size);
      stamp.inode = static_cast<std::uint64_t>(st.st_ino);
    }
    out.push_back(std::move(stamp));
  }
  return out;
}

std::shared_ptr<ssl::context> TlsContextSource::build() const {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = context->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
    load_failed(what_, "settings", "(TLS 1.2 minimum)", openssl_reason({}));
  }
  context->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
  boost::system::error_code ec;
  if (!config_.ca_file.empty()) {
    check_readable(what_, "CA file", config_.ca_file);
    if (context->load_verify_file(config_.ca_file, ec); ec) {
      load_failed(what_, "CA file", config_.ca_file, openssl_reason(ec));
    }
  }
  if (!config_.ca_dir.empty()) {
    check_readable(what_, "CA directory", config_.ca_dir);
    if (context->add_verify_path(config_.ca_dir, ec); ec) {
      load_failed(what_, "CA directory", config_.ca_dir, openssl_reason(ec));
    }
  }
  if (config_.ca_file.empty() && config_.ca_dir.empty()) {
    if (context->set_default_verify_paths(ec); ec) {
      load_failed(what_, "system CA store", "(default verify paths)", openssl_reason(ec));
    }
  }
  if (!config_.cert_file.empty()) {
    check_readable(what_, "certificate file", config_.cert_file);
    if (context->use_certificate_chain_file(config_.cert_file, ec); ec) {
      load_failed(what_, "certificate file", config_.cert_file, openssl_reason(ec));
    }
    check_readable(what_, "key file", config_.key_file);
    if (context->use_private_key_file(config_.key_file, ssl::context::pem, ec); ec) {
      const std::string reason = openssl_reason(ec);
      load_failed(
          what_, "key file", config_.key_file,
          reason.find("mismatch") != std::string::npos
              ? "the key does not match the certificate " + config_.cert_file + " (" + reason + ")"
              : reason);
    }
    if (SSL_CTX_check_private_key(native) != 1) {
      load_failed(what_, "key file", config_.key_file,
                  "the key does not match the certificate " + config_.cert_file + " (" +
                      openssl_reason({}) + ")");
    }
  }
  context->set_verify_mode(config_.verify_peer ? ssl::verify_peer : ssl::verify_none);
  return context;
}

std::shared_ptr<ssl::context> TlsContextSource::get() {
  auto now = stamps();
  if (context_ && now == stamps_) return context_;
  auto fresh = build();
  const bool reload = context_ != nullptr;
  context_ = std::move(fresh);
  stamps_ = std::move(now);
  ++builds_;
  if (reload) {
    tls_log()->info(
        "reloaded TLS files for {} (a certificate, key or CA file changed): new connections "
        "use them",
        what_);
  }
  return context_;
}

void prepare_client(SSL* ssl, const TlsConfig& config, const std::string& host) {
  std::string name = config.server_name.empty() ? host : config.server_name;
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(name, ec);
  const bool is_ip = !ec;
  if (!is_ip) {
    // SSL_set_tlsext_host_name() is a macro with an old-style cast (-Werror).
    SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(name.c_str()));
  }
  if (!config.verify_peer) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  // The name is checked against the subjectAltName only, never the subject's CN (RFC 6125).
  X509_VERIFY_PARAM_set_hostflags(
      param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, address.to_string().c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
  }
}

bool is_tls_error(const boost::system::error_code& ec) noexcept {
  return ec.category() == asio::error::get_ssl_category() ||
         ec.category() == ssl::error::get_stream_category();
}

Error tls_handshake_error(const boost::system::error_code& ec, SSL* ssl, const std::string& what) {
  auto tls_failed = [&what](const std::string& text) {
    return Error(make_error_code(errc::tls_failed), what + ": TLS handshake failed: " + text,
                 RequestState::not_sent);
  };
  if (ec.category() == asio::error::get_ssl_category()) {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    const long verify = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED || verify != X509_V_OK) {
      return tls_failed(verify != X509_V_OK ? verify_failure(ssl, verify)
                                            : "certificate verify failed");
    }
    switch (reason) {
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
      case SSL_R_UNKNOWN_PROTOCOL:
      case SSL_R_RECORD_LENGTH_MISMATCH:
      case SSL_R_HTTP_REQUEST:
        return tls_failed(
            "the server does not speak TLS: is it a plaintext port? (the client wants TLS: use "
            "redis:// / ws:// / http:// for a plaintext server, or the server's TLS port)");
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
        return tls_failed("no TLS version in common with the server (TLS 1.2 or later needed)");
      default:
        break;
    }
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
      const int alert = reason - SSL_AD_REASON_OFFSET;
      std::string text =
          std::string("the server refused it with the alert \"") + alert_name(alert) + "\"";
      const bool client_certificate =
          alert == SSL_AD_CERTIFICATE_REQUIRED || alert == SSL_AD_HANDSHAKE_FAILURE ||
          alert == SSL_AD_BAD_CERTIFICATE || alert == SSL_AD_UNKNOWN_CA ||
          alert == SSL_AD_CERTIFICATE_UNKNOWN || alert == SSL_AD_ACCESS_DENIED;
      if (client_certificate) {
        text +=
            ": does the server require a client certificate? set the client certificate "
            "and key files (a certificate its CA trusts)";
      }
      // Alerts that refuse this client's settings are permanent; the others (internal_error,
      // decode_error, bad_record_mac, ...) say the peer or the path failed this once.
      if (client_certificate || alert == SSL_AD_PROTOCOL_VERSION ||
          alert == SSL_AD_INSUFFICIENT_SECURITY || alert == SSL_AD_UNSUPPORTED_CERTIFICATE ||
          alert == SSL_AD_CERTIFICATE_REVOKED || alert == SSL_AD_CERTIFICATE_EXPIRED ||
          alert == SSL_AD_UNRECOGNIZED_NAME || alert == SSL_AD_NO_APPLICATION_PROTOCOL) {
        return tls_failed(text);
      }
      return Error(make_error_code(errc::connect_failed), what + ": TLS handshake failed: " + text,
                   RequestState::not_sent);
    }
    // Another OpenSSL reason: not known to be a refusal of our settings, so transient (a
    // start-up retries it until its deadline, with this text in every log line).
    const char* text = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    return Error(make_error_code(errc::connect_failed),
                 what + ": TLS handshake failed: " + (text != nullptr ? text : ec.message()),
                 RequestState::not_sent);
  }
  // EOF or reset mid-handshake, ssl::error::stream_truncated: the network or a server that
  // went away (transient).
  return Error(make_error_code(errc::connect_failed),
               what + ": TLS handshake failed: " + ec.message() +
                   " (the server closed the connection during the handshake: a server going "
                   "away, or a plaintext port?)",
               RequestState::not_sent);
}

}  // namespace trading_shared::core

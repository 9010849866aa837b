#pragma once
/// @file
/// Throwaway certificates for the TLS tests, made with the openssl CLI: a CA, a server
/// certificate for the loopback names (SAN DNS:localhost, IP:127.0.0.1, IP:::1), a client
/// certificate (mutual TLS), an unrelated CA with a server certificate of its own (wrong CA),
/// a certificate for another name (wrong host name) and an expired one.

#include <string>

namespace trading_shared::testing {

struct TestCertificates {
  std::string dir;
  std::string ca_cert, ca_key;                      // the trusted CA
  std::string server_cert, server_key;              // SAN DNS:localhost, IP:127.0.0.1, IP:::1
  std::string client_cert, client_key;              // CN=ts-client, by the CA (mutual TLS)
  std::string other_ca_cert, other_ca_key;          // an unrelated CA (wrong-CA tests)
  std::string other_server_cert, other_server_key;  // same SANs, signed by the other CA
  std::string wrong_host_cert, wrong_host_key;      // SAN DNS:wrong.example only, by the CA
  std::string expired_cert, expired_key;            // same SANs, by the CA, validity in the past
};

/// Makes them with the openssl CLI in `dir` (created; files reused when present). Keys 0600.
/// Throws std::runtime_error with openssl's output on failure.
TestCertificates make_test_certificates(const std::string& dir);

/// Issues one more certificate with the server SANs signed by the CA of `certs`, into
/// cert_path/key_path (rotation tests). Both are written to temporary names first and renamed
/// into place (a reader never sees half a file).
void issue_server_certificate(const TestCertificates& certs, const std::string& cert_path,
                              const std::string& key_path, const std::string& common_name);

}  // namespace trading_shared::testing

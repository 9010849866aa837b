// SCRAM-SHA-256 verifiers (scram.hpp): PBKDF2-HMAC-SHA-256 of the password and salt, then
// ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = SHA-256(ClientKey),
// ServerKey = HMAC(SaltedPassword, "Server Key"), with OpenSSL.
#include "common/scram.hpp"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <stdexcept>
#include <string>

namespace trading_shared::services {

namespace {

using Digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

std::string base64(const unsigned char* data, std::size_t size) {
  std::string out(4 * ((size + 2) / 3) + 1, '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(size));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

/// Decodes standard base64 (with padding) into `out`; false when `text` is malformed.
bool unbase64(std::string_view text, std::string& out) {
  if (text.empty() || text.size() % 4 != 0) return false;
  out.assign(3 * text.size() / 4, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return false;
  std::size_t size = static_cast<std::size_t>(n);
  // EVP_DecodeBlock counts the padding's bytes: remove one per '='.
  if (text.back() == '=') --size;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return true;
}

Digest hmac(const Digest& key, std::string_view message) {
  Digest out{};
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out.data(),
           &size) == nullptr ||
      size != out.size()) {
    throw std::runtime_error("SCRAM-SHA-256: HMAC-SHA-256 failed (OpenSSL)");
  }
  return out;
}

}  // namespace

std::string scram_sha256_verifier(std::string_view password, std::string_view salt,
                                  int iterations) {
  for (const char c : password) {
    if (c < 0x20 || c > 0x7e) {
      throw std::invalid_argument(
          "a role's password must be printable ASCII (its SCRAM verifier is computed without "
          "SASLprep)");
    }
  }
  if (iterations < 1) throw std::invalid_argument("SCRAM-SHA-256: iterations must be positive");
  Digest salted{};
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(salted.size()), salted.data()) != 1) {
    throw std::runtime_error("SCRAM-SHA-256: PBKDF2-HMAC-SHA-256 failed (OpenSSL)");
  }
  const Digest client_key = hmac(salted, "Client Key");
  Digest stored_key{};
  SHA256(client_key.data(), client_key.size(), stored_key.data());
  const Digest server_key = hmac(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return fmt::format("SCRAM-SHA-256${}:{}${}:{}", iterations,
                     base64(reinterpret_cast<const unsigned char*>(salt.data()), salt.size()),
                     base64(stored_key.data(), stored_key.size()),
                     base64(server_key.data(), server_key.size()));
}

std::string scram_sha256_verifier(std::string_view password) {
  std::array<unsigned char, 16> salt{};
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1) {
    throw std::runtime_error("SCRAM-SHA-256: no random salt (OpenSSL RAND_bytes failed)");
  }
  return scram_sha256_verifier(
      password, std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()));
}

bool scram_sha256_verifier_matches(std::string_view verifier, std::string_view password) {
  constexpr std::string_view kPrefix = "SCRAM-SHA-256$";
  if (verifier.substr(0, kPrefix.size()) != kPrefix) return false;
  const std::string_view rest = verifier.substr(kPrefix.size());
  const std::size_t colon = rest.find(':');
  const std::size_t dollar = rest.find('$');
  if (colon == std::string_view::npos || dollar == std::string_view::npos || dollar < colon) {
    return false;
  }
  int iterations = 0;
  for (const char c : rest.substr(0, colon)) {
    if (c < '0' || c > '9' || iterations > 10'000'000) return false;
    iterations = iterations * 10 + (c - '0');
  }
  std::string salt;
  if (!unbase64(rest.substr(colon + 1, dollar - colon - 1), salt)) return false;
  return scram_sha256_verifier(password, salt, iterations) == verifier;
}

}  // namespace trading_shared::services

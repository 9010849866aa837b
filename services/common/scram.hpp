#pragma once
/// @file
/// SCRAM-SHA-256 verifiers as PostgreSQL stores them in pg_authid.rolpassword (RFC 5802/7677),
/// computed client side as libpq's PQencryptPasswordConn does: `tsctl migrate --roles-create`
/// sends the verifier, never the password (scram.cpp).

#include <string>
#include <string_view>

namespace trading_shared::services {

/// Iterations of PostgreSQL's default (scram_iterations).
inline constexpr int kScramIterations = 4096;

/// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>` of
/// `password` with the raw bytes `salt`. The password must be printable ASCII (SASLprep, which
/// PostgreSQL applies, leaves it unchanged then); anything else throws std::invalid_argument.
std::string scram_sha256_verifier(std::string_view password, std::string_view salt,
                                  int iterations = kScramIterations);

/// The same with a fresh random 16-byte salt (OpenSSL RAND_bytes).
std::string scram_sha256_verifier(std::string_view password);

/// True when `verifier` (as stored by PostgreSQL) is the verifier of `password`: recomputed
/// from its own salt and iteration count.
bool scram_sha256_verifier_matches(std::string_view verifier, std::string_view password);

}  // namespace trading_shared::services

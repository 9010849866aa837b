// libpq's connect failure texts -> the Error the client throws (src/pg/detail/connect_error.hpp):
// a failed TLS check is tls_failed (permanent, F61/F63) naming the check and keeping libpq's
// text; a server refusing plaintext is a permanent 28000 with a hint; the rest stays transient.
#include <trading_shared/core/error.hpp>

#include "detail/connect_error.hpp"

#include <gtest/gtest.h>

#include <string>

namespace ts = trading_shared;
using ts::ErrorKind;
using ts::pg::detail::connect_error;
using ts::pg::detail::ConnectTls;

namespace {

const std::string kWhat = "connecting to 127.0.0.1:5432/postgres as postgres";
const std::string kPrefix = "connection to server at \"127.0.0.1\", port 5432 failed: ";

ConnectTls verify_full() {
  return ConnectTls{"verify-full", "/etc/ts/ca.pem", "", "127.0.0.1"};
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(PgConnectError, ChainCheckFailureIsTlsFailedNamingTheCheckAndTheRootFile_F61) {
  const std::string libpq = kPrefix + "SSL error: certificate verify failed";
  const ts::Error e = connect_error(libpq, verify_full(), kWhat);
  EXPECT_EQ(e.code(), ts::errc::tls_failed);
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_FALSE(ts::counts_as_endpoint_failure(e.kind()));
  const std::string what = e.what();
  EXPECT_TRUE(has(what, kWhat)) << what;
  EXPECT_TRUE(has(what, "TLS certificate check failed")) << what;
  EXPECT_TRUE(has(what, "sslrootcert=/etc/ts/ca.pem")) << what;
  EXPECT_TRUE(has(what, libpq)) << what;  // libpq's own text kept
}

TEST(PgConnectError, ChainCheckFailureNamesThePreciseReasonWhenKnown_F61) {
  const ts::Error e = connect_error(kPrefix + "SSL error: certificate verify failed", verify_full(),
                                    kWhat, "certificate has expired");
  EXPECT_EQ(e.code(), ts::errc::tls_failed);
  EXPECT_TRUE(has(e.what(),
                  "does not verify against sslrootcert=/etc/ts/ca.pem: certificate "
                  "has expired"))
      << e.what();
}

TEST(PgConnectError, HostNameMismatchIsTlsFailedNamingTheHost_F61) {
  const std::string libpq =
      kPrefix +
      "server certificate for \"localhost\" (and 2 other names) does not match host "
      "name \"wrong.example\"";
  ConnectTls tls = verify_full();
  tls.host = "wrong.example";
  const ts::Error e = connect_error(libpq, tls, kWhat);
  EXPECT_EQ(e.code(), ts::errc::tls_failed);
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_TRUE(has(e.what(), "TLS host name check failed")) << e.what();
  EXPECT_TRUE(has(e.what(), "\"wrong.example\"")) << e.what();
  EXPECT_TRUE(has(e.what(), libpq)) << e.what();
}

TEST(PgConnectError, PlaintextServerWhileTheDsnAsksForTlsSaysWhichSideWantsWhat_F63) {
  ConnectTls tls = verify_full();
  tls.sslmode = "require";
  const ts::Error e =
      connect_error(kPrefix + "server does not support SSL, but SSL was required", tls, kWhat);
  EXPECT_EQ(e.code(), ts::errc::tls_failed);
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_TRUE(has(e.what(),
                  "the server does not speak TLS (ssl=off); the DSN asks for it "
                  "(sslmode=require)"))
      << e.what();
}

TEST(PgConnectError, ServerRefusingPlaintextIsPermanentWithATlsHint_F63) {
  const std::string libpq = kPrefix +
                            "FATAL:  pg_hba.conf rejects connection for host \"127.0.0.1\", user "
                            "\"postgres\", database \"postgres\", no encryption";
  const ts::Error e = connect_error(libpq, ConnectTls{"disable", "", "", "127.0.0.1"}, kWhat);
  EXPECT_EQ(e.code(), ts::errc::server_error);
  ASSERT_TRUE(e.server().has_value());
  EXPECT_EQ(e.server()->code, "28000");
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_TRUE(has(e.server()->hint, "the server requires TLS: set sslmode=require or verify-full"))
      << e.server()->hint;
  EXPECT_TRUE(has(e.what(), "sslmode=disable")) << e.what();
}

TEST(PgConnectError, PgBouncerRequiringTlsIsPermanentWithATlsHint_F63) {
  const ts::Error e = connect_error(kPrefix + "FATAL:  SSL required",
                                    ConnectTls{"disable", "", "", "127.0.0.1"}, kWhat);
  ASSERT_TRUE(e.server().has_value());
  EXPECT_EQ(e.server()->code, "28000");
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_TRUE(has(e.what(), "the server requires TLS: set sslmode=require or verify-full"))
      << e.what();
}

TEST(PgConnectError, MissingClientCertificateIsPermanentWithAHint) {
  const ts::Error e = connect_error(kPrefix +
                                        "FATAL:  connection requires a valid client "
                                        "certificate",
                                    verify_full(), kWhat);
  ASSERT_TRUE(e.server().has_value());
  EXPECT_EQ(e.server()->code, "28000");
  EXPECT_EQ(e.kind(), ErrorKind::permanent);
  EXPECT_TRUE(has(e.what(), "set sslcert and sslkey")) << e.what();
}

TEST(PgConnectError, DsnFilesLibpqCannotUseAreTlsFailed) {
  for (const std::string text :
       {"root certificate file \"/nope.pem\" does not exist Either provide the file or change "
        "sslmode to disable server certificate verification.",
        "could not load private key file \"/k.pem\": no start line",
        "certificate present, but not private key file \"/k.pem\"",
        "private key file \"/k.pem\" has group or world access; file must have permissions "
        "u=rw (0600) or less if owned by the current user"}) {
    const ts::Error e = connect_error(kPrefix + text, verify_full(), kWhat);
    EXPECT_EQ(e.code(), ts::errc::tls_failed) << text;
    EXPECT_TRUE(has(e.what(), text)) << e.what();
  }
}

TEST(PgConnectError, HandshakeRefusedByTheServersAlertIsTlsFailed) {
  ConnectTls tls = verify_full();
  tls.sslcert = "/etc/ts/client.pem";
  const ts::Error e = connect_error(kPrefix + "SSL error: tlsv1 alert unknown ca", tls, kWhat);
  EXPECT_EQ(e.code(), ts::errc::tls_failed);
  EXPECT_TRUE(has(e.what(), "sslcert=/etc/ts/client.pem")) << e.what();
}

TEST(PgConnectError, ConnectionLossDuringTheHandshakeStaysTransient) {
  for (const std::string text :
       {"SSL SYSCALL error: EOF detected", "SSL SYSCALL error: Connection reset by peer",
        "SSL error: unexpected eof while reading",
        "Connection refused Is the server running on that host and "
        "accepting TCP/IP connections?"}) {
    const ts::Error e = connect_error(kPrefix + text, verify_full(), kWhat);
    EXPECT_EQ(e.code(), ts::errc::connect_failed) << text;
    EXPECT_EQ(e.kind(), ErrorKind::transient_not_sent) << text;
  }
}

TEST(PgConnectError, AuthenticationFailuresKeepTheirSqlState) {
  const ts::Error e =
      connect_error(kPrefix + "FATAL:  password authentication failed for user \"ts_secure\"",
                    verify_full(), kWhat);
  ASSERT_TRUE(e.server().has_value());
  EXPECT_EQ(e.server()->code, "28P01");
  EXPECT_TRUE(e.server()->hint.empty());
}

}  // namespace

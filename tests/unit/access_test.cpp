// core::is_access_denied: the server refused the caller's privilege or identity (F64, F65),
// which a consumer must not retry as a data problem (no batch split, no rejection).
#include <trading_shared/core/access.hpp>
#include <trading_shared/core/error.hpp>

#include <gtest/gtest.h>

#include <exception>
#include <stdexcept>
#include <string>

namespace {

namespace core = trading_shared::core;
using trading_shared::errc;
using trading_shared::Error;
using trading_shared::ErrorKind;
using trading_shared::ServerError;
using trading_shared::ServerKind;

Error server_error(ServerKind server, const std::string& code) {
  ServerError e;
  e.server = server;
  e.code = code;
  e.message = code + " refused";
  return Error(e, ErrorKind::permanent, "test");
}

TEST(AccessDenied, RefusedPrivilegesAndIdentitiesOfPostgresAndRedis) {
  for (const char* code : {"42501", "28000", "28P01"}) {
    EXPECT_TRUE(core::is_access_denied(server_error(ServerKind::postgres, code))) << code;
  }
  for (const char* code : {"NOPERM", "NOAUTH", "WRONGPASS"}) {
    EXPECT_TRUE(core::is_access_denied(server_error(ServerKind::redis, code))) << code;
  }
  const auto ptr = std::make_exception_ptr(server_error(ServerKind::postgres, "42501"));
  EXPECT_TRUE(core::is_access_denied(ptr));
}

TEST(AccessDenied, NotForTheDataNorTheNetworkNorOtherServers) {
  // A value the sink refuses, a constraint, a missing table: about the data or the schema.
  for (const char* code : {"22003", "23505", "23514", "42P01", "42601", "2", "28"}) {
    EXPECT_FALSE(core::is_access_denied(server_error(ServerKind::postgres, code))) << code;
  }
  for (const char* code : {"ERR", "WRONGTYPE", "NOGROUP", "OOM", "READONLY", "42501"}) {
    EXPECT_FALSE(core::is_access_denied(server_error(ServerKind::redis, code))) << code;
  }
  EXPECT_FALSE(core::is_access_denied(server_error(ServerKind::postgres, "NOPERM")));
  EXPECT_FALSE(core::is_access_denied(server_error(ServerKind::http, "403")));
  EXPECT_FALSE(core::is_access_denied(Error(make_error_code(errc::connect_failed), "test")));
  EXPECT_FALSE(core::is_access_denied(Error(make_error_code(errc::tls_failed), "test")));
  EXPECT_FALSE(core::is_access_denied(std::make_exception_ptr(std::runtime_error("42501"))));
  EXPECT_FALSE(core::is_access_denied(std::exception_ptr()));
}

}  // namespace

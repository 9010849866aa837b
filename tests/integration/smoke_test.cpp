// Smoke test of the real-server harness: PostgreSQL directly and through PgBouncer, Redis.
#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>

namespace trading_shared::testing {
namespace {

struct PgConnDeleter {
  void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
struct RedisContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};

/// Runs one query on a fresh connection; returns the first value, or the error in `error`.
std::optional<std::string> query(const std::string& dsn, const std::string& sql,
                                 std::string& error) {
  std::unique_ptr<PGconn, PgConnDeleter> connection(PQconnectdb(dsn.c_str()));
  if (PQstatus(connection.get()) != CONNECTION_OK) {
    error = PQerrorMessage(connection.get());
    return std::nullopt;
  }
  std::unique_ptr<PGresult, PgResultDeleter> result(PQexec(connection.get(), sql.c_str()));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK || PQntuples(result.get()) < 1) {
    error = PQerrorMessage(connection.get());
    return std::nullopt;
  }
  return std::string(PQgetvalue(result.get(), 0, 0));
}

std::string query_or_fail(const std::string& dsn, const std::string& sql) {
  std::string error;
  auto value = query(dsn, sql, error);
  EXPECT_TRUE(value) << sql << " on " << dsn << ": " << error;
  return value.value_or("");
}

TEST(SmokeTest, PostgresDirect) {
  const std::string dsn = Servers::instance().postgres_dsn();
  EXPECT_EQ(query_or_fail(dsn, "SELECT 40 + 2"), "42");
  EXPECT_EQ(query_or_fail(dsn, "SELECT current_user"), "postgres");
  EXPECT_EQ(query_or_fail(dsn, "SHOW max_connections"), "300");
}

TEST(SmokeTest, PostgresThroughPgBouncer) {
  Servers& servers = Servers::instance();
  EXPECT_EQ(query_or_fail(servers.pgbouncer_dsn(), "SELECT 40 + 2"), "42");
  // The same server behind PgBouncer.
  EXPECT_EQ(query_or_fail(servers.pgbouncer_dsn(), "SELECT current_setting('data_directory')"),
            query_or_fail(servers.postgres_dsn(), "SELECT current_setting('data_directory')"));
  if (!servers.external()) {
    EXPECT_EQ(query_or_fail(servers.pgbouncer_admin_dsn(), "SHOW VERSION").rfind("PgBouncer", 0),
              0u);
  }
}

TEST(SmokeTest, RedisSetGet) {
  Servers& servers = Servers::instance();
  std::unique_ptr<redisContext, RedisContextDeleter> context(
      redisConnectWithTimeout(servers.redis_host().c_str(), servers.redis_port(), timeval{5, 0}));
  ASSERT_TRUE(context && !context->err) << (context ? context->errstr : "out of memory");
  ASSERT_EQ(redisSetTimeout(context.get(), timeval{5, 0}), REDIS_OK);
  std::unique_ptr<redisReply, RedisReplyDeleter> set(
      static_cast<redisReply*>(redisCommand(context.get(), "SET %s %s", "smoke:key", "value")));
  ASSERT_TRUE(set) << context->errstr;
  EXPECT_EQ(set->type, REDIS_REPLY_STATUS);
  EXPECT_STREQ(set->str, "OK");
  std::unique_ptr<redisReply, RedisReplyDeleter> get(
      static_cast<redisReply*>(redisCommand(context.get(), "GET %s", "smoke:key")));
  ASSERT_TRUE(get) << context->errstr;
  ASSERT_EQ(get->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(get->str, get->len), "value");
}

TEST(SmokeTest, CreateDatabaseIsIdempotent) {
  Servers& servers = Servers::instance();
  EXPECT_EQ(servers.create_database("smoke_db"), "smoke_db");
  EXPECT_EQ(servers.create_database("smoke_db"), "smoke_db");
  EXPECT_EQ(query_or_fail(servers.postgres_dsn("smoke_db"), "SELECT current_database()"),
            "smoke_db");
}

TEST(SmokeTest, SecureRoleRequiresItsPassword) {
  Servers& servers = Servers::instance();
  if (servers.external()) {
    GTEST_SKIP() << "external servers: the secure role is the harness's";
  }
  EXPECT_EQ(
      query_or_fail(servers.postgres_dsn_for(kSecureRole, kSecurePassword), "SELECT current_user"),
      kSecureRole);
  std::string error;
  EXPECT_FALSE(query(servers.postgres_dsn_for(kSecureRole, "wrong"), "SELECT 1", error));
  EXPECT_NE(error.find("password authentication failed"), std::string::npos) << error;
}

}  // namespace
}  // namespace trading_shared::testing

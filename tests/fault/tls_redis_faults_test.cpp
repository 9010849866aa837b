// TLS fault tests of RedisClient (F61-F63) against the harness's TLS-only Redis
// (tls_main.cpp sets ServerOptions::tls).

#include "support/server_harness.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <string>

namespace {

using trading_shared::testing::Servers;

// The harness's Redis of this binary listens on a TLS port only: rediss:// URL, and a
// plaintext client gets no PONG from it.
TEST(TlsRedisHarness, RedisIsTlsOnly) {
  if (Servers::instance().external()) GTEST_SKIP() << "external servers";
  const std::string url = Servers::instance().redis_url();
  EXPECT_EQ(url.rfind("rediss://", 0), 0u) << url;
  const timeval timeout{2, 0};
  redisContext* context = redisConnectWithTimeout(Servers::instance().redis_host().c_str(),
                                                  Servers::instance().redis_port(), timeout);
  ASSERT_NE(context, nullptr);
  if (context->err == 0) {
    redisSetTimeout(context, timeout);
    auto* reply = static_cast<redisReply*>(redisCommand(context, "PING"));
    EXPECT_EQ(reply, nullptr) << "a plaintext PING was answered";
    if (reply != nullptr) freeReplyObject(reply);
  }
  redisFree(context);
}

}  // namespace

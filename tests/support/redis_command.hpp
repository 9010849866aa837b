// One Redis command from a test, on a connection of its own to the harness's Redis (db 0),
// for reading back what a service process wrote (streams, hashes). Arguments are passed as
// given (no quoting issues); null when Redis cannot be reached; error replies are returned.
#pragma once

#include "support/server_harness.hpp"

#include <hiredis/hiredis.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace trading_shared::testing {

using RedisReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

inline RedisReplyPtr redis_command(const std::vector<std::string>& args) {
  auto& servers = Servers::instance();
  redisContext* c = redisConnect(servers.redis_host().c_str(), servers.redis_port());
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return {nullptr, &freeReplyObject};
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  RedisReplyPtr reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()),
                                                                argv.data(), lengths.data())),
                      &freeReplyObject);
  redisFree(c);
  return reply;
}

}  // namespace trading_shared::testing

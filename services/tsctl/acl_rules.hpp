#pragma once
/// @file
/// The Redis ACL users of the services (`tsctl acl`, deploy/redis-acl.conf.in,
/// docs/services.md "What to provision"): per service, the commands its code sends and the
/// keys it sends them on (services/common/keys.hpp), nothing else. Each list is derived from
/// the code: change it with the code.

#include <array>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::tsctl {

/// One user: `<prefix><service>` (prefix `ts_` by default), its ACL rules after
/// `reset on #<password hash>`. A parenthesised rule is a Redis 7 selector: commands allowed
/// on those keys only.
struct AclUser {
  std::string_view service;
  std::span<const std::string_view> rules;
};

/// Every connection: CLIENT SETNAME (the client's name), SELECT (a database number in the
/// URL), PING (handshake and health check). AUTH and HELLO need no rule.
#define TS_ACL_CONNECTION "+ping", "+client|setname", "+select"

/// ts-receiver: XADD of the trades (receiver.cpp), XLEN + XTRIM, XINFO GROUPS + XPENDING of
/// --stream-maxlen's trimming (stream_trim.cpp) on the trade streams; HSET of the last
/// trades; HGETALL + HSET of the backfill tape (backfill.cpp).
inline constexpr std::array<std::string_view, 10> kReceiverRules{
    TS_ACL_CONNECTION, "~md:{t*}:trades",
    "+xadd",           "+xlen",
    "+xtrim",          "+xinfo|groups",
    "+xpending",       "(~md:{t*}:last ~md:{t*}:tape +hset +hgetall)"};

/// ts-recorder: the StreamConsumer on the trade streams (XGROUP CREATE ... MKSTREAM,
/// XREADGROUP, XACK, XAUTOCLAIM, XPENDING of the delivery counts; XINFO GROUPS of the
/// pending/lag probe); XADD only to the dead-letter streams `<stream>:dead`.
inline constexpr std::array<std::string_view, 11> kRecorderRules{
    TS_ACL_CONNECTION, "~md:{t*}:trades", "+xgroup|create",
    "+xreadgroup",     "+xack",           "+xautoclaim",
    "+xpending",       "+xinfo|groups",   "(~md:{t*}:trades:dead +xadd)"};

/// ts-executor: the StreamConsumer on orders:requests (as the recorder's), XADD of the
/// outcomes to orders:events and of dead letters to orders:requests:dead, HGET of the last
/// trade prices (read only).
inline constexpr std::array<std::string_view, 12> kExecutorRules{
    TS_ACL_CONNECTION,
    "~orders:requests",
    "+xgroup|create",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xpending",
    "+xinfo|groups",
    "(~orders:events ~orders:requests:dead +xadd)",
    "(%R~md:{t*}:last +hget)"};

/// ts-janitor: SCAN for the first layout's md:trades:* streams (SCAN has no key: the pattern
/// is the janitor's own), then per stream EXISTS, XINFO GROUPS / CONSUMERS, XGROUP
/// DELCONSUMER of idle consumers, XPENDING + XTRIM MINID.
inline constexpr std::array<std::string_view, 14> kJanitorRules{
    TS_ACL_CONNECTION,  "~md:{t*}:trades",
    "~md:trades:*",     "~orders:requests",
    "~orders:events",   "+scan",
    "+exists",          "+xinfo|groups",
    "+xinfo|consumers", "+xgroup|delconsumer",
    "+xpending",        "+xtrim"};

#undef TS_ACL_CONNECTION

inline std::span<const AclUser> acl_users() {
  static const std::array<AclUser, 4> users{
      AclUser{"receiver", kReceiverRules},
      AclUser{"recorder", kRecorderRules},
      AclUser{"executor", kExecutorRules},
      AclUser{"janitor", kJanitorRules},
  };
  return users;
}

/// SHA-256 of `data`, 64 lower-case hex digits (`#<hash>` of an ACL password).
std::string sha256_hex(std::string_view data);
/// The arguments of `ACL SETUSER <name> reset on #<hash> <rules...>` (without "ACL").
std::vector<std::string> acl_setuser_args(const AclUser& user, const std::string& name,
                                          const std::string& password_hash);

}  // namespace trading_shared::services::tsctl

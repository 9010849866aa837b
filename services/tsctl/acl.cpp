// tsctl acl: the Redis ACL users of the services (docs/services.md, "What to provision"), one
// per service with the commands and keys its code uses and nothing else. Prints the
// ACL SETUSER commands (or the lines of an aclfile, --acl-format=aclfile), or applies them with
// --apply through --redis-url (a user allowed ACL, e.g. the default one). Passwords are read
// from --acl-password-dir/<user> and sent (and printed) only as their SHA-256 (`#<hex>`),
// which Redis accepts in place of the password. Without --acl-password-dir it prints the
// template, deploy/redis-acl.conf.in (placeholders in place of the hashes).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "tsctl/acl_rules.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

// ---- SHA-256 (FIPS 180-4), for the `#<hash>` form of ACL passwords ----------------------------

constexpr std::array<std::uint32_t, 64> kK{
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::uint32_t rotr(std::uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  std::array<std::uint32_t, 8> h{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string message(data);
  const std::uint64_t bits = static_cast<std::uint64_t>(data.size()) * 8;
  message.push_back(static_cast<char>(0x80));
  while (message.size() % 64 != 56) message.push_back('\0');
  for (int i = 7; i >= 0; --i) message.push_back(static_cast<char>((bits >> (i * 8)) & 0xff));
  for (std::size_t chunk = 0; chunk < message.size(); chunk += 64) {
    std::array<std::uint32_t, 64> w{};
    for (std::size_t i = 0; i < 16; ++i) {
      const auto byte = [&](std::size_t k) {
        return static_cast<std::uint32_t>(static_cast<unsigned char>(message[chunk + 4 * i + k]));
      };
      w[i] = (byte(0) << 24) | (byte(1) << 16) | (byte(2) << 8) | byte(3);
    }
    for (std::size_t i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::array<std::uint32_t, 8> v = h;
    for (std::size_t i = 0; i < 64; ++i) {
      const std::uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
      const std::uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const std::uint32_t t1 = v[7] + s1 + ch + kK[i] + w[i];
      const std::uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
      const std::uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      const std::uint32_t t2 = s0 + maj;
      v = {t1 + t2, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6]};
    }
    for (std::size_t i = 0; i < 8; ++i) h[i] += v[i];
  }
  std::string hex;
  for (const std::uint32_t word : h) hex += fmt::format("{:08x}", word);
  return hex;
}

std::vector<std::string> acl_setuser_args(const AclUser& user, const std::string& name,
                                          const std::string& password_hash) {
  std::vector<std::string> args{"SETUSER", name, "reset", "on", "#" + password_hash};
  for (const std::string_view rule : user.rules) args.emplace_back(rule);
  return args;
}

std::string read_password_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(
        fmt::format("cannot read the password file {}: create it (one line, mode 0600)", path));
  }
  std::string password{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty())
    throw std::runtime_error(fmt::format("the password file {} is empty", path));
  return password;
}

asio::awaitable<void> run_acl(lifecycle::ServiceContext& ctx, const Settings& settings) {
  auto log = core::logger("tsctl");
  std::vector<std::vector<std::string>> commands;
  // Without a password directory: the template (deploy/redis-acl.conf.in), a placeholder in
  // place of each hash.
  for (const AclUser& user : acl_users()) {
    const std::string name = settings.acl.user_prefix + std::string(user.service);
    const std::string hash =
        settings.acl.password_dir.empty()
            ? "@" + name + "_password_sha256@"
            : sha256_hex(read_password_file(settings.acl.password_dir + "/" + name));
    commands.push_back(acl_setuser_args(user, name, hash));
  }
  redis::RedisClient* redis = nullptr;
  if (settings.acl.apply) {
    redis = co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  }
  const bool aclfile = settings.acl.format == "aclfile";
  for (const std::vector<std::string>& args : commands) {
    // ACL SETUSER <name> <rules>, or the aclfile's `user <name> <rules>`.
    std::string line = aclfile ? "user" : "ACL";
    for (std::size_t i = aclfile ? 1 : 0; i < args.size(); ++i) {
      line += ' ';
      line += args[i];
    }
    if (redis != nullptr) {
      (void)co_await redis->command("ACL", args);  // an error reply throws, naming it
      fmt::print("applied: {}\n", line);
    } else {
      fmt::print("{}\n", line);
    }
  }
  std::fflush(stdout);
}

}  // namespace trading_shared::services::tsctl

// Helpers shared by the RedisClient fault tests (redis_*_faults_test.cpp, one binary): a
// blocking hiredis connection of the test's own for inspection and fault injection (CLIENT
// LIST / KILL / PAUSE, CONFIG GET / SET, ACL, REPLICAOF), the client type of run_with_client()
// for a RedisConfig, the client configuration used by the tests, and quieting the client's log.
// What the fault tests of both clients use (scope-exit guard, polling step, closing a client,
// running a test body with a started client, a loop on a thread of its own) is in
// fault_support_common.hpp; what every test uses (elapsed time, open descriptors, how an
// operation ended, log capture, ...) is in support/test_helpers.hpp.
#pragma once

#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "fault_support_common.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::testing::fault {

// ---- client lifetime -------------------------------------------------------------------------

/// with_client() and run_with_client() of a RedisConfig run a RedisClient.
template <>
struct ClientOf<redis::RedisConfig> {
  using type = redis::RedisClient;
};

// ---- client configuration -------------------------------------------------------------------

/// redis://127.0.0.1:PORT/DB of the harness's Redis.
inline std::string redis_url_for_db(std::uint32_t db) {
  return Servers::instance().redis_url() + "/" + std::to_string(db);
}

/// redis://host:port/db for any port (e.g. a FaultProxy's).
inline std::string redis_url_for_port(std::uint16_t port, std::uint32_t db = 0) {
  return "redis://127.0.0.1:" + std::to_string(port) + "/" + std::to_string(db);
}

/// Short timeouts everywhere, so that every fault resolves in well under a second or two.
inline redis::RedisConfig fast_config(std::string url, std::string client_name) {
  redis::RedisConfig c;
  c.url = std::move(url);
  c.client_name = std::move(client_name);
  c.connect_timeout = std::chrono::milliseconds(500);
  c.startup_timeout = std::chrono::milliseconds(3000);
  c.command_timeout = std::chrono::milliseconds(1000);
  c.reconnect_backoff = {std::chrono::milliseconds(10), std::chrono::milliseconds(200), 2.0};
  c.close_timeout = std::chrono::milliseconds(500);
  return c;
}

// ---- a blocking hiredis connection of the test's own ----------------------------------------

/// One reply of RedisAdmin, owned.
struct AdminReply {
  int type = REDIS_REPLY_NIL;
  std::string str;  ///< string, status, error.
  long long integer = 0;
  std::vector<AdminReply> elements;

  bool is_error() const { return type == REDIS_REPLY_ERROR; }
  bool is_nil() const { return type == REDIS_REPLY_NIL; }
};

/// A client of the test's own (hiredis, blocking, with a timeout), to look at the server from
/// outside the client under test and to inject faults. Reconnects on the next call after an
/// I/O error (e.g. after a server restart). Never use it while the server is frozen.
class RedisAdmin {
 public:
  explicit RedisAdmin(std::uint32_t db = 0,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(3000))
      : db_(db), timeout_(timeout) {}
  RedisAdmin(const RedisAdmin&) = delete;
  RedisAdmin& operator=(const RedisAdmin&) = delete;

  /// Runs one command; throws std::runtime_error on an I/O error (the connection is then
  /// discarded), returns error replies as replies.
  /// A connection that broke since its last use (a server restart) is replaced once.
  AdminReply run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    for (int attempt = 1;; ++attempt) {
      const bool fresh = !context_;
      ensure();
      auto* raw = static_cast<redisReply*>(redisCommandArgv(
          context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data()));
      if (raw == nullptr) {
        const std::string error = context_->errstr;
        context_.reset();
        if (!fresh && attempt == 1) continue;  // a stale connection: once more, afresh
        throw std::runtime_error("admin " + join(args) + ": " + error);
      }
      AdminReply reply = convert(raw);
      freeReplyObject(raw);
      return reply;
    }
  }

  /// Runs one command that must not fail; returns its reply.
  AdminReply ok(const std::vector<std::string>& args) {
    AdminReply reply = run(args);
    if (reply.is_error()) throw std::runtime_error("admin " + join(args) + ": " + reply.str);
    return reply;
  }

  std::string config_get(const std::string& parameter) {
    const AdminReply reply = ok({"CONFIG", "GET", parameter});
    if (reply.elements.size() != 2) throw std::runtime_error("CONFIG GET " + parameter);
    return reply.elements[1].str;
  }
  void config_set(const std::string& parameter, const std::string& value) {
    ok({"CONFIG", "SET", parameter, value});
  }

  /// CLIENT LIST, one map of "key=value" fields per connection.
  std::vector<std::map<std::string, std::string>> clients() {
    const AdminReply reply = ok({"CLIENT", "LIST"});
    std::vector<std::map<std::string, std::string>> out;
    std::istringstream lines(reply.str);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      std::map<std::string, std::string> fields;
      std::istringstream words(line);
      std::string word;
      while (words >> word) {
        const auto eq = word.find('=');
        if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
      }
      out.push_back(std::move(fields));
    }
    return out;
  }
  /// Connections whose CLIENT SETNAME is `name`.
  std::vector<std::map<std::string, std::string>> clients_named(const std::string& name) {
    auto all = clients();
    std::vector<std::map<std::string, std::string>> out;
    for (auto& c : all) {
      if (c["name"] == name) out.push_back(std::move(c));
    }
    return out;
  }
  std::size_t count_clients(const std::string& name) { return clients_named(name).size(); }
  /// CLIENT KILL ID of every connection named `name`; returns how many were killed.
  std::size_t kill_clients(const std::string& name) {
    std::size_t killed = 0;
    for (auto& c : clients_named(name)) {
      const AdminReply r = run({"CLIENT", "KILL", "ID", c["id"]});
      if (r.type == REDIS_REPLY_INTEGER) killed += static_cast<std::size_t>(r.integer);
    }
    return killed;
  }

 private:
  struct ContextDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };

  void ensure() {
    if (context_) return;
    const auto sec = std::chrono::duration_cast<std::chrono::seconds>(timeout_);
    const auto usec = std::chrono::duration_cast<std::chrono::microseconds>(timeout_ - sec);
    const timeval tv{static_cast<time_t>(sec.count()), static_cast<suseconds_t>(usec.count())};
    auto& servers = Servers::instance();
    std::unique_ptr<redisContext, ContextDeleter> c(
        redisConnectWithTimeout(servers.redis_host().c_str(), servers.redis_port(), tv));
    if (!c || c->err) {
      throw std::runtime_error(std::string("admin connect: ") + (c ? c->errstr : "out of memory"));
    }
    redisSetTimeout(c.get(), tv);
    context_ = std::move(c);
    ok({"CLIENT", "SETNAME", "ts-fault-admin"});
    if (db_ != 0) ok({"SELECT", std::to_string(db_)});
  }

  static AdminReply convert(const redisReply* r) {
    AdminReply out;
    out.type = r->type;
    if (r->str != nullptr) out.str.assign(r->str, r->len);
    out.integer = r->integer;
    for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
    return out;
  }

  static std::string join(const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
    return s;
  }

  std::uint32_t db_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<redisContext, ContextDeleter> context_;
};

/// Sets a server parameter for the scope and puts the old value back at its end.
class ScopedConfig {
 public:
  ScopedConfig(RedisAdmin& admin, std::string parameter, const std::string& value)
      : admin_(admin), parameter_(std::move(parameter)), old_(admin.config_get(parameter_)) {
    admin_.config_set(parameter_, value);
  }
  ~ScopedConfig() {
    try {
      admin_.config_set(parameter_, old_);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "restoring " << parameter_ << " failed: " << e.what();
    }
  }
  ScopedConfig(const ScopedConfig&) = delete;
  ScopedConfig& operator=(const ScopedConfig&) = delete;

 private:
  RedisAdmin& admin_;
  std::string parameter_;
  std::string old_;
};

/// True when the harness's Redis answers PING (fresh connection, short timeout).
inline bool redis_serves() {
  try {
    RedisAdmin probe(0, std::chrono::milliseconds(1000));
    const AdminReply r = probe.run({"PING"});
    return r.type == REDIS_REPLY_STATUS && r.str == "PONG";
  } catch (const std::exception&) {
    return false;
  }
}

// ---- the client's log -----------------------------------------------------------------------

/// Raises the "redis" logger's level for the scope (tests that provoke thousands of expected
/// reconnect warnings), then puts it back.
class QuietRedisLog {
 public:
  explicit QuietRedisLog(spdlog::level::level_enum level = spdlog::level::err)
      : logger_(core::logger("redis")), old_(logger_->level()) {
    logger_->set_level(level);
  }
  ~QuietRedisLog() { logger_->set_level(old_); }
  QuietRedisLog(const QuietRedisLog&) = delete;
  QuietRedisLog& operator=(const QuietRedisLog&) = delete;

 private:
  std::shared_ptr<spdlog::logger> logger_;
  spdlog::level::level_enum old_;
};

}  // namespace trading_shared::testing::fault

// Helpers shared by the RedisClient fault tests (redis_faults_*_test.cpp, one binary): a
// blocking hiredis connection of the test's own for inspection and fault injection (CLIENT
// LIST / KILL / PAUSE, CONFIG GET / SET, ACL, REPLICAOF), a scope-exit guard that puts the
// shared server back, polling with a deadline on the test's own loop, how an operation ended
// (error code, kind, Redis prefix, elapsed time), open descriptors, the client configuration
// used by the tests, and a capture of the client's log.
#pragma once

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "support/server_harness.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <spdlog/sinks/base_sink.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

/// Fault tests signal and restart server processes: they need harness-started servers.
#define TS_SKIP_IF_EXTERNAL()                                                   \
  if (::trading_shared::testing::Servers::instance().external()) {              \
    GTEST_SKIP() << "servers are external: no process handles for fault tests"; \
  }

namespace trading_shared::core {
/// gtest prints a CircuitState by name ("open"), not as a byte.
inline void PrintTo(CircuitState state, std::ostream* os) {
  *os << to_string(state);
}
}  // namespace trading_shared::core

namespace trading_shared::testing::fault {

/// Milliseconds since `since` (steady clock).
inline std::chrono::milliseconds elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since);
}

/// Open descriptors of this process (entries of /proc/self/fd, the directory's own included).
inline int open_descriptors() {
  int count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count;
}

/// Runs `fn` at scope exit; failures are reported, never thrown (it runs in a destructor).
class ScopeExit {
 public:
  explicit ScopeExit(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~ScopeExit() {
    try {
      fn_();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "restoring the server failed: " << e.what();
    }
  }
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;

 private:
  std::function<void()> fn_;
};

/// Polls `condition` on the test's own loop (without blocking it between polls) until it holds
/// or `timeout` passes; returns its last value. A deadline, never a sleep.
inline boost::asio::awaitable<bool> eventually(
    std::function<bool()> condition, std::chrono::steady_clock::duration timeout,
    std::chrono::steady_clock::duration step = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
  for (;;) {
    if (condition()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return condition();
    timer.expires_after(step);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

/// Waits on the test's loop for `d` (fault timing only, e.g. "stay blocked past the command
/// timeout"; never a stand-in for a condition).
inline boost::asio::awaitable<void> pause_for(std::chrono::steady_clock::duration d) {
  boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
  co_await timer.async_wait(boost::asio::use_awaitable);
}

// ---- how an operation ended -----------------------------------------------------------------

struct Outcome {
  bool failed = false;
  std::error_code code;
  ErrorKind kind = ErrorKind::permanent;
  std::string server_code;  ///< Redis error prefix for server errors.
  std::string what;
  std::chrono::milliseconds elapsed{0};
};

inline std::string describe(const Outcome& o) {
  if (!o.failed) return "succeeded after " + std::to_string(o.elapsed.count()) + " ms";
  return "failed after " + std::to_string(o.elapsed.count()) + " ms: [" +
         std::string(to_string(o.kind)) + "] " + o.what;
}

inline Outcome outcome_of(const std::exception_ptr& error,
                          std::chrono::steady_clock::time_point start) {
  Outcome o;
  o.elapsed = elapsed_ms(start);
  if (!error) return o;
  o.failed = true;
  o.kind = classify(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    o.code = e.code();
    o.what = e.what();
    if (e.server()) o.server_code = e.server()->code;
  } catch (const std::exception& e) {
    o.what = e.what();
  }
  return o;
}

/// Runs `op` and reports how it ended instead of throwing.
template <class T>
boost::asio::awaitable<Outcome> outcome(boost::asio::awaitable<T> op) {
  const auto start = std::chrono::steady_clock::now();
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(op);
    } else {
      (void)co_await std::move(op);
    }
  } catch (...) {
    error = std::current_exception();
  }
  co_return outcome_of(error, start);
}

/// Runs the awaitable that `make()` returns and reports how it ended instead of throwing.
/// Takes a callable so that a failure at the call itself (a refused call throws before any
/// awaitable exists) is reported like one of the awaitable.
template <class Make>
requires std::invocable<Make&> boost::asio::awaitable<Outcome> outcome(Make make) {
  const auto start = std::chrono::steady_clock::now();
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<typename std::invoke_result_t<Make&>::value_type>) {
      co_await make();
    } else {
      (void)co_await make();
    }
  } catch (...) {
    error = std::current_exception();
  }
  co_return outcome_of(error, start);
}

// ---- client lifetime -------------------------------------------------------------------------

/// Awaits `body`, then closes `clients` whatever happened, then rethrows the body's error. A
/// test body that throws (a failed call, e.g. circuit_open) must not destroy a started client
/// without close(): the client's background tasks would outlive it (use-after-free, reported).
inline boost::asio::awaitable<void> closing(redis::RedisClient& client,
                                            boost::asio::awaitable<void> body) {
  std::exception_ptr error;
  try {
    co_await std::move(body);
  } catch (...) {
    error = std::current_exception();
  }
  co_await client.close();
  if (error) std::rethrow_exception(error);
}

/// The same for two clients (closed in reverse order).
inline boost::asio::awaitable<void> closing(redis::RedisClient& first, redis::RedisClient& second,
                                            boost::asio::awaitable<void> body) {
  std::exception_ptr error;
  try {
    co_await std::move(body);
  } catch (...) {
    error = std::current_exception();
  }
  co_await second.close();
  co_await first.close();
  if (error) std::rethrow_exception(error);
}

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

/// Captures what the "redis" component logs while alive. Add it before any thread logs
/// through that logger and remove it (destroy) after they are gone.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<Sink>()), logger_(core::logger("redis")) {
    logger_->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = logger_->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  /// Messages containing `text`.
  std::size_t count(std::string_view text) const { return sink_->count(text); }

 private:
  class Sink : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::size_t count(std::string_view text) {
      std::lock_guard lock(mutex_);
      return static_cast<std::size_t>(
          std::count_if(messages_.begin(), messages_.end(),
                        [&](const std::string& m) { return m.find(text) != std::string::npos; }));
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      messages_.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}

   private:
    std::vector<std::string> messages_;
  };
  std::shared_ptr<Sink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

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

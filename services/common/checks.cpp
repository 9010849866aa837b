// The checks of the services' settings (one rule each, shared by every service) and the
// budgets of a graceful stop. Apart from settings.cpp, which only registers the flags, so that
// what registers them (and the fuzz target of the configuration loader) needs neither libpq
// nor the lifecycle library.
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/error.hpp>

#include "common/settings.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace trading_shared::services {

namespace {

[[noreturn]] void bad(std::string why) {
  throw core::ConfigError(std::move(why));
}

/// An Error's message without the error code's text appended by `what()`.
std::string message_of(const Error& e) {
  std::string text = e.what();
  const std::string suffix = ": " + e.code().message();
  if (text.size() > suffix.size() && text.ends_with(suffix))
    text.resize(text.size() - suffix.size());
  return text;
}

/// libpq's parse of a connection string; what it says is echoed only when it names an
/// option (its other messages may quote the string, password included).
void check_dsn(const std::string& dsn) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(
      PQconninfoParse(dsn.c_str(), &error), &PQconninfoFree);
  if (!options) {
    std::string detail;
    if (error != nullptr) {
      const std::string_view text(error);
      if (text.starts_with("invalid connection option \"")) {
        detail = ": " + std::string(text.substr(0, text.find_last_not_of(" \n") + 1));
      }
      PQfreemem(error);
    }
    bad("--postgres-dsn is not a valid libpq connection string (keyword=value pairs or a "
        "postgresql:// URI)" +
        detail);
  }
  for (const PQconninfoOption* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::string_view(o->keyword) != "port") continue;
    // One port per host, comma-separated; an empty item is the default port.
    std::string_view ports(o->val);
    for (;;) {
      const auto comma = ports.find(',');
      const std::string_view item = ports.substr(0, comma);
      if (!item.empty()) {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
        if (ec != std::errc{} || end != item.data() + item.size() || value < 1 || value > 65535) {
          bad(fmt::format("--postgres-dsn: invalid port \"{}\" (expected 1 to 65535)", item));
        }
      }
      if (comma == std::string_view::npos) break;
      ports.remove_prefix(comma + 1);
    }
  }
}

void check_backoff(const core::BackoffConfig& backoff, std::string_view flag) {
  if (backoff.base < std::chrono::milliseconds(1)) bad(fmt::format("{}-base must be >= 1ms", flag));
  if (backoff.cap < backoff.base) {
    bad(fmt::format("{0}-cap must be at least {0}-base", flag));
  }
}

/// The rules of core::CircuitBreakerConfig, named by the flags of `<flag>-*`.
void check_breaker(const core::CircuitBreakerConfig& breaker, std::string_view flag) {
  if (breaker.window_size < 1) bad(fmt::format("{}-window must be >= 1", flag));
  if (breaker.min_calls < 1 || breaker.min_calls > breaker.window_size) {
    bad(fmt::format("{0}-min-calls must be between 1 and {0}-window ({1})", flag,
                    breaker.window_size));
  }
  if (!(breaker.failure_rate_threshold > 0.0 && breaker.failure_rate_threshold <= 1.0)) {
    bad(fmt::format("{}-failure-rate must be in (0, 1]", flag));
  }
  if (breaker.open_backoff.base < std::chrono::milliseconds(1)) {
    bad(fmt::format("{}-open-base must be >= 1ms", flag));
  }
  if (breaker.open_backoff.cap < breaker.open_backoff.base ||
      breaker.open_backoff.cap > std::chrono::hours(24)) {
    bad(fmt::format("{0}-open-cap must be between {0}-open-base and 24h", flag));
  }
  if (breaker.half_open_probes < 1) bad(fmt::format("{}-half-open-probes must be >= 1", flag));
}

}  // namespace

void check_postgres_settings(const pg::PostgresConfig& config) {
  if (config.dsn.empty()) {
    bad("--postgres-dsn (TS_POSTGRES_DSN) is required: the libpq connection string of "
        "PostgreSQL or PgBouncer");
  }
  check_dsn(config.dsn);
  using std::chrono::milliseconds;
  if (config.max_size < 1) bad("--postgres-pool-size must be at least 1");
  if (config.connect_timeout <= milliseconds::zero()) {
    bad("--postgres-connect-timeout must be > 0");
  }
  if (config.statement_timeout <= milliseconds::zero()) {
    bad("--postgres-statement-timeout must be > 0");
  }
  if (config.min_size > config.max_size) {
    bad(fmt::format("--postgres-min-size ({}) must be at most --postgres-pool-size ({})",
                    config.min_size, config.max_size));
  }
  if (config.startup_timeout <= milliseconds::zero()) bad("--postgres-startup-timeout must be > 0");
  if (config.acquire_timeout <= milliseconds::zero()) bad("--postgres-acquire-timeout must be > 0");
  if (config.close_timeout <= milliseconds::zero()) bad("--postgres-close-timeout must be > 0");
  if (config.retry.max_attempts < 1) bad("--postgres-retry-attempts must be at least 1");
  if (config.retry.total_deadline < milliseconds::zero()) {
    bad("--postgres-retry-budget must be >= 0");
  }
  check_backoff(config.reconnect_backoff, "--postgres-reconnect-backoff");
  if (config.statement_cache_size > 0 && config.pgbouncer_transaction_mode) {
    bad("--postgres-statement-cache-size needs --postgres-pgbouncer-transaction-mode=false "
        "(named statements are session state: only on a direct connection)");
  }
  check_breaker(config.breaker, "--postgres-breaker");
}

namespace {

/// The --redis-tls-* settings against the URL's scheme, and their files readable (a missing
/// file is reported here, naming the flag, rather than at the first connection).
void check_redis_tls_settings(const redis::RedisConfig& config) {
  const bool tls = config.url.starts_with("rediss://");
  const auto& t = config.tls;
  const std::pair<const char*, const std::string*> files[] = {
      {"--redis-tls-ca-file", &t.ca_file},
      {"--redis-tls-ca-dir", &t.ca_dir},
      {"--redis-tls-cert-file", &t.cert_file},
      {"--redis-tls-key-file", &t.key_file}};
  for (const auto& [flag, path] : files) {
    if (path->empty()) continue;
    if (!tls) {
      bad(std::string(flag) +
          " given but --redis-url is redis:// (plaintext): use rediss:// for TLS, or remove it");
    }
    if (::access(path->c_str(), R_OK) != 0) {
      bad(std::string(flag) + " " + *path + ": cannot read it: " + std::strerror(errno));
    }
  }
  if (!tls && !t.server_name.empty()) {
    bad("--redis-tls-server-name given but --redis-url is redis:// (plaintext): use rediss://");
  }
  if (t.cert_file.empty() != t.key_file.empty()) {
    bad("--redis-tls-cert-file and --redis-tls-key-file go together (mutual TLS needs both)");
  }
}

}  // namespace

void check_redis_settings(const redis::RedisConfig& config) {
  try {
    (void)redis::parse_redis_url(config.url);
  } catch (const Error& e) {
    // parse_redis_url's messages name the part that is wrong, never the password.
    std::string why = message_of(e);
    if (why.starts_with("Redis URL: ")) why.erase(0, 11);
    bad("invalid --redis-url: " + why +
        " (expected redis[s]://[user[:password]@]host[:port][/db])");
  }
  if (config.command_timeout <= std::chrono::milliseconds::zero()) {
    bad("--redis-command-timeout must be > 0");
  }
  check_backoff(config.reconnect_backoff, "--redis-reconnect-backoff");
  check_breaker(config.breaker, "--redis-breaker");
  check_redis_tls_settings(config);
  try {
    redis::validate(config);
  } catch (const Error& e) {
    bad(message_of(e));
  }
}

lifecycle::AdminOptions admin_options(const lifecycle::AdminOptions& settings) {
  lifecycle::AdminOptions options = settings;
  options.stuck_after =
      std::max(lifecycle::AdminOptions{}.stuck_after, 3 * settings.check_interval);
  return options;
}

void check_admin_settings(const lifecycle::AdminOptions& admin) {
  if (admin.check_interval <= std::chrono::milliseconds::zero()) {
    bad("--admin-check-interval must be > 0");
  }
  if (admin.listen.empty()) return;
  const auto colon = admin.listen.rfind(':');
  const std::string_view host = std::string_view(admin.listen).substr(0, colon);
  const std::string_view port = colon == std::string::npos
                                    ? std::string_view()
                                    : std::string_view(admin.listen).substr(colon + 1);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (colon == std::string::npos || host.empty() || port.empty() || ec != std::errc{} ||
      end != port.data() + port.size() || value > 65535) {
    bad(
        fmt::format("--admin-listen: \"{}\" is not host:port (e.g. 127.0.0.1:9101, [::1]:9101; "
                    "port 0-65535)",
                    admin.listen));
  }
}

void check_symbol(std::string& symbol, std::string_view flag) {
  const bool ok =
      !symbol.empty() && symbol.size() <= kMaxSymbolLength &&
      std::all_of(symbol.begin(), symbol.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
      });
  if (!ok) {
    bad(fmt::format("{}: invalid symbol \"{}\" (1 to {} letters and digits, e.g. BTCUSDT)", flag,
                    symbol, kMaxSymbolLength));
  }
  for (char& c : symbol) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
}

void check_symbols(std::vector<std::string>& symbols, bool allow_empty, std::string_view flag) {
  if (symbols.empty() && !allow_empty) bad(fmt::format("{}: at least one symbol is needed", flag));
  std::set<std::string, std::less<>> seen;
  for (auto& symbol : symbols) {
    check_symbol(symbol, flag);
    if (!seen.insert(symbol).second) bad(fmt::format("{}: {} is given twice", flag, symbol));
  }
}

std::chrono::milliseconds close_bound(const pg::PostgresConfig& config) {
  using std::chrono::milliseconds;
  return config.close_timeout + std::min<milliseconds>(config.close_timeout, milliseconds(1000)) +
         milliseconds(1000);
}

std::chrono::milliseconds close_bound(const redis::RedisConfig& config) {
  return config.close_timeout + std::chrono::milliseconds(1000);
}

lifecycle::ServiceOptions service_options(std::string name, std::chrono::milliseconds drain_timeout,
                                          std::chrono::milliseconds shutdown_timeout,
                                          std::vector<lifecycle::CloseBudget> closes,
                                          std::string_view flags) {
  lifecycle::ServiceOptions options;
  options.name = std::move(name);
  options.drain_timeout = drain_timeout;
  options.shutdown_timeout = shutdown_timeout;
  // Each close is waited for as long as it may legitimately take (the longest bound).
  for (const auto& close : closes)
    options.close_timeout = std::max(options.close_timeout, close.bound);
  options.closes = std::move(closes);
  try {
    lifecycle::check_budgets(options);
  } catch (const core::ConfigError& e) {
    bad(std::string(e.what()) + " (" + std::string(flags) + ")");
  }
  return options;
}

lifecycle::ServiceOptions consumer_service_options(const ConsumerServiceSettings& s,
                                                   std::string service) {
  lifecycle::ServiceOptions options = service_options(
      std::move(service), s.drain_timeout, s.shutdown_timeout,
      {{"redis", close_bound(s.redis)}, {"postgres", close_bound(s.pg)}},
      "--drain-timeout, --shutdown-timeout, --postgres-close-timeout, --redis-close-timeout");
  options.admin = admin_options(s.admin);
  return options;
}

void finish_consumer_service_settings(ConsumerServiceSettings& s, std::string_view group,
                                      const std::string& service) {
  auto bad = [](const std::string& why) { throw core::ConfigError(why); };
  if (s.batch < 1 || s.batch > 10000) bad("--batch must be between 1 and 10000");
  if (s.claim_min_idle <= std::chrono::milliseconds::zero()) bad("--claim-min-idle must be > 0");
  if (s.claim_interval <= std::chrono::milliseconds::zero()) bad("--claim-interval must be > 0");
  if (s.max_deliveries < 1) bad("--max-deliveries must be >= 1");
  if (s.drain_timeout < std::chrono::milliseconds::zero()) bad("--drain-timeout must be >= 0");
  (void)consumer_service_options(s, service);  // the stop budget adds up (F54)
  if (s.consumer.empty()) s.consumer = default_consumer_name(group);
  if (s.pg.application_name == pg::PostgresConfig{}.application_name) {
    s.pg.application_name = service;
  }
  if (s.redis.client_name == redis::RedisConfig{}.client_name) s.redis.client_name = service;
  check_postgres_settings(s.pg);
  check_redis_settings(s.redis);
  check_admin_settings(s.admin);
}

}  // namespace trading_shared::services

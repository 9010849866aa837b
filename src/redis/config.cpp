#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/config.hpp>

#include <charconv>
#include <string>

namespace trading_shared::redis {
namespace {

[[noreturn]] void bad_url(const std::string& why) {
  throw Error(make_error_code(errc::invalid_argument), "Redis URL: " + why);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view text, const char* what) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || hex_value(text[i + 1]) < 0 || hex_value(text[i + 2]) < 0) {
      bad_url(std::string("bad percent-encoding in the ") + what);
    }
    out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
    i += 2;
  }
  return out;
}

/// The offending text is never quoted: a URL whose '@' is missing or misplaced puts the
/// password where a port or a database number is expected (F50).
template <class T>
T parse_number(std::string_view text, const char* what) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    bad_url(std::string("bad ") + what + " (expected a decimal number; the text is not shown, " +
            "it may hold the password)");
  }
  return value;
}

}  // namespace

std::string RedisEndpoint::describe() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  out += ':' + std::to_string(port) + '/' + std::to_string(db);
  return out;
}

RedisEndpoint parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  constexpr std::string_view kTlsScheme = "rediss://";
  if (url.starts_with("unix://")) bad_url("unix sockets are not supported yet");
  const bool tls = url.starts_with(kTlsScheme);
  if (!tls && !url.starts_with(kScheme)) bad_url("must start with redis:// or rediss:// (TLS)");
  std::string_view rest = url.substr(tls ? kTlsScheme.size() : kScheme.size());
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    bad_url("query parameters are not supported");
  }
  RedisEndpoint endpoint;
  endpoint.tls = tls;
  // Credentials: up to the last '@' (a password may contain '@' only percent-encoded,
  // but be lenient and split at the last one).
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (const auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      endpoint.user = percent_decode(userinfo.substr(0, colon), "user name");
      endpoint.password = percent_decode(userinfo.substr(colon + 1), "password");
    } else {
      // redis://secret@host: a lone userinfo is the password (redis-py, Jedis convention).
      endpoint.password = percent_decode(userinfo, "password");
    }
  }
  std::string_view hostport = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) endpoint.db = parse_number<std::uint32_t>(db, "database number");
  }
  std::string_view host = hostport;
  std::string_view port;
  if (hostport.starts_with('[')) {
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) bad_url("unterminated '[' in the host");
    host = hostport.substr(1, close - 1);
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(':')) bad_url("expected ':' after ']'");
      port = after.substr(1);
    }
  } else if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  if (host.empty()) bad_url("no host");
  endpoint.host = std::string(host);
  if (!port.empty()) {
    endpoint.port = parse_number<std::uint16_t>(port, "port");
    if (endpoint.port == 0) bad_url("port 0");
  }
  return endpoint;
}

void validate(const RedisConfig& config) {
  auto bad = [](const std::string& why) {
    throw Error(make_error_code(errc::invalid_argument), "RedisConfig: " + why);
  };
  const RedisEndpoint endpoint = parse_redis_url(config.url);
  if (config.tls.enabled && !endpoint.tls) {
    bad("tls.enabled is set but the URL is redis:// (plaintext): use rediss:// for TLS");
  }
  core::TlsConfig tls = config.tls;
  tls.enabled = endpoint.tls;
  core::validate(tls, "RedisConfig");
  for (const char c : config.client_name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) bad("client_name may only hold letters, digits, '-', '_', '.', ':'");
  }
  using std::chrono::milliseconds;
  if (config.connect_timeout <= milliseconds::zero()) bad("connect_timeout must be > 0");
  if (config.startup_timeout <= milliseconds::zero()) bad("startup_timeout must be > 0");
  if (config.command_timeout <= milliseconds::zero()) bad("command_timeout must be > 0");
  if (config.health_check_interval <= milliseconds::zero()) {
    bad("health_check_interval must be > 0");
  }
  if (config.health_check_timeout <= milliseconds::zero()) bad("health_check_timeout must be > 0");
  if (config.reconnect_backoff.base <= milliseconds::zero() ||
      config.reconnect_backoff.cap < config.reconnect_backoff.base ||
      config.reconnect_backoff.multiplier < 1.0) {
    bad("reconnect_backoff needs 0 < base <= cap and multiplier >= 1");
  }
  if (config.max_queued == 0) bad("max_queued must be >= 1");
  if (config.max_blocking_connections == 0) bad("max_blocking_connections must be >= 1");
  if (config.close_timeout < milliseconds::zero()) bad("close_timeout must be >= 0");
}

}  // namespace trading_shared::redis

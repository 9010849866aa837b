// Fuzzes the URL and DSN parsers of the configuration, selected by the first byte:
//   'r' redis::parse_redis_url (+ RedisEndpoint::describe, redis::validate)
//   'w' ws::parse_websocket_url, ws:// and wss:// (+ parse_overflow_policy)
//   'p' the PostgreSQL DSN: pg::detail::describe_dsn (libpq's PQconninfoParse underneath)
//       and core::redact_dsn, which must hide the password
//   's' core::redact_secrets and core::json_escape (every log line goes through them, and
//       they carry server error texts and DSNs/URLs)
// any other first byte: all four on the rest of the input.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include "detail/dsn.hpp"

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace core = trading_shared::core;
namespace redis = trading_shared::redis;
namespace ws = trading_shared::ws;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_url: %s\n", what);
  std::abort();
}

bool is_invalid_argument(const trading_shared::Error& e) {
  return e.code() == trading_shared::make_error_code(trading_shared::errc::invalid_argument);
}

void fuzz_redis(std::string_view text) {
  try {
    const redis::RedisEndpoint endpoint = redis::parse_redis_url(text);
    if (endpoint.host.empty()) fail("redis: empty host accepted");
    if (endpoint.port == 0) fail("redis: port 0 accepted");
    // "host:port/db", never the credentials.
    const std::string host =
        endpoint.host.find(':') != std::string::npos ? "[" + endpoint.host + "]" : endpoint.host;
    if (endpoint.describe() !=
        host + ":" + std::to_string(endpoint.port) + "/" + std::to_string(endpoint.db)) {
      fail("redis: describe() shows something else than host:port/db");
    }
  } catch (const trading_shared::Error& e) {
    if (!is_invalid_argument(e)) fail("redis: not invalid_argument");
  }
  try {
    redis::RedisConfig config;
    config.url = std::string(text);
    config.client_name = std::string(text.substr(0, 16));
    redis::validate(config);
  } catch (const trading_shared::Error& e) {
    if (!is_invalid_argument(e)) fail("redis validate: not invalid_argument");
  }
}

void fuzz_ws(std::string_view text) {
  try {
    const ws::WebSocketUrl url = ws::parse_websocket_url(text);
    if (url.host.empty()) fail("ws: empty host accepted");
    if (url.port.empty()) fail("ws: empty port");
    if (url.target.empty() || url.target.front() != '/') fail("ws: target does not start with /");
    if (url.tls != text.starts_with("wss://")) fail("ws: tls does not follow the scheme");
  } catch (const trading_shared::Error& e) {
    if (!is_invalid_argument(e)) fail("ws: not invalid_argument");
  }
  try {
    (void)ws::to_string(ws::parse_overflow_policy(text));
  } catch (const std::invalid_argument&) {
  }
}

struct ConninfoDeleter {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};

void fuzz_dsn(std::string_view text) {
  const std::string dsn(text);
  const std::string described = trading_shared::pg::detail::describe_dsn(dsn);
  // describe_dsn promises never to contain the password: checked against libpq's own parse.
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> options(PQconninfoParse(dsn.c_str(), &err));
  if (err != nullptr) PQfreemem(err);
  if (options) {
    // describe_dsn shows host:port/dbname (as user) and nothing else, whatever the password.
    std::string password;
    std::string host = "localhost";
    std::string port = "5432";
    std::string dbname;
    std::string user;
    for (auto* o = options.get(); o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      const std::string_view key = o->keyword;
      if (key == "password") password = o->val;
      if (key == "host") host = o->val;
      if (key == "port") port = o->val;
      if (key == "dbname") dbname = o->val;
      if (key == "user") user = o->val;
    }
    if (described != host + ":" + port + "/" + dbname + (user.empty() ? "" : " as " + user)) {
      fail("describe_dsn shows something else than host:port/dbname as user");
    }
    // redact_dsn (what the services log) must hide it too, when it appears once verbatim.
    // Documented limit: in free text, white space ends a URI, so a URI whose userinfo holds
    // white space (which libpq accepts) is out of scope.
    const std::string redacted = core::redact_dsn(text);
    const std::size_t first = dsn.find(password);
    const std::size_t scheme = dsn.find("://");
    const std::string_view authority =
        scheme == std::string::npos
            ? std::string_view()
            : std::string_view(dsn).substr(scheme + 3, dsn.find('/', scheme + 3) - scheme - 3);
    const bool spaced_uri = authority.find_first_of(" \t\n\r\f\v") != std::string_view::npos;
    if (!spaced_uri && password.size() >= 6 && first != std::string::npos &&
        dsn.find(password, first + 1) == std::string::npos &&
        redacted.find(password) != std::string::npos) {
      fail("redact_dsn shows the password");
    }
  } else if (described != "<malformed dsn>") {
    fail("describe_dsn accepted what libpq refuses");
  }
}

void fuzz_redaction(std::string_view text) {
  const std::string redacted = core::redact_secrets(text);
  (void)core::json_escape(text);
  const std::string escaped = core::json_escape(redacted);
  for (const char c : escaped) {
    if (static_cast<unsigned char>(c) < 0x20) fail("json_escape left a control character");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0]) {
    case 'r':
      fuzz_redis(text);
      break;
    case 'w':
      fuzz_ws(text);
      break;
    case 'p':
      fuzz_dsn(text);
      break;
    case 's':
      fuzz_redaction(text);
      break;
    default:
      fuzz_redis(text);
      fuzz_ws(text);
      fuzz_dsn(text);
      fuzz_redaction(text);
      break;
  }
  return 0;
}

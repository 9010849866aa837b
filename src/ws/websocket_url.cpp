// The pure parts of the WebSocket client's configuration: URL parsing, the overflow policy's
// names, validation. Apart from the client itself (Beast, coroutines: client_core.hpp) so that the
// fuzz target of URL parsing (fuzz/fuzz_url.cpp) compiles only this.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/core/url.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace trading_shared::ws {

namespace {

Error invalid(const std::string& what) {
  return Error(make_error_code(errc::invalid_argument), what);
}

}  // namespace

std::string_view to_string(OverflowPolicy policy) noexcept {
  switch (policy) {
    case OverflowPolicy::drop_oldest:
      return "drop_oldest";
    case OverflowPolicy::drop_newest:
      return "drop_newest";
    case OverflowPolicy::disconnect:
      return "disconnect";
  }
  return "?";
}

OverflowPolicy parse_overflow_policy(std::string_view text) {
  if (text == "drop_oldest") return OverflowPolicy::drop_oldest;
  if (text == "drop_newest") return OverflowPolicy::drop_newest;
  if (text == "disconnect") return OverflowPolicy::disconnect;
  throw std::invalid_argument("expected one of drop_oldest, drop_newest, disconnect");
}

WebSocketUrl parse_websocket_url(std::string_view url) {
  WebSocketUrl out;
  std::string_view rest;
  if (url.starts_with("wss://")) {
    out.tls = true;
    rest = url.substr(6);
  } else if (url.starts_with("ws://")) {
    rest = url.substr(5);
  } else {
    throw invalid("WebSocket URL must start with ws:// or wss://");
  }
  const auto slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.target.front() == '?') out.target.insert(out.target.begin(), '/');
  if (authority.find('@') != std::string_view::npos) {
    throw invalid("WebSocket URL: credentials in the URL are not supported");
  }
  auto [host, port] = core::parse_url_authority(authority, "WebSocket URL", out.tls ? "443" : "80");
  out.host = std::move(host);
  out.port = std::move(port);
  return out;
}

void validate(const WebSocketConfig& config) {
  const WebSocketUrl url = parse_websocket_url(config.url);
  if (config.tls.enabled && !url.tls) {
    throw invalid("WebSocket " + config.url + ": tls.enabled with a ws:// URL; use wss://");
  }
  core::TlsConfig tls = config.tls;
  tls.enabled = url.tls;  // the scheme decides
  core::validate(tls, "WebSocket " + config.url);
  using std::chrono::milliseconds;
  if (config.connect_timeout <= milliseconds::zero()) throw invalid("connect_timeout must be > 0");
  if (config.startup_timeout <= milliseconds::zero()) throw invalid("startup_timeout must be > 0");
  if (config.idle_timeout < milliseconds(2)) throw invalid("idle_timeout must be >= 2 ms");
  if (config.close_timeout <= milliseconds::zero()) throw invalid("close_timeout must be > 0");
  if (config.max_message_size == 0) throw invalid("max_message_size must be > 0");
  if (config.queue_capacity == 0) throw invalid("queue_capacity must be > 0");
  if (config.queue_max_bytes < config.max_message_size) {
    throw invalid("queue_max_bytes must be >= max_message_size (a message must fit)");
  }
  if (config.max_pending_sends == 0) throw invalid("max_pending_sends must be > 0");
}

}  // namespace trading_shared::ws

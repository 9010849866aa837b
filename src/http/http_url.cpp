// The pure parts of the HTTP client: URL parsing, Retry-After, status errors, validation.
// Apart from http_client.cpp (Beast, coroutines) so that unit tests and fuzzers compile little.
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/tls.hpp>
#include <trading_shared/core/url.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/http/http_status.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string>
#include <string_view>
#include <utility>

namespace trading_shared::http {

namespace {

Error invalid(const std::string& what) {
  return Error(make_error_code(errc::invalid_argument), what);
}

}  // namespace

HttpUrl parse_http_url(std::string_view url) {
  HttpUrl out;
  std::string_view rest;
  if (url.starts_with("https://")) {
    out.tls = true;
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else {
    throw invalid("HTTP URL must start with http:// or https://");
  }
  if (rest.find('#') != std::string_view::npos) throw invalid("HTTP URL: a #fragment is not sent");
  for (const char c : rest) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      throw invalid("HTTP URL: blank or control character");
    }
  }
  const auto slash = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.target.front() == '?') out.target.insert(out.target.begin(), '/');
  if (authority.find('@') != std::string_view::npos) {
    throw invalid("HTTP URL: credentials in the URL are not supported");
  }
  auto [host, port] = core::parse_url_authority(authority, "HTTP URL", out.tls ? "443" : "80");
  out.host = std::move(host);
  out.port = std::move(port);
  return out;
}

void validate(const HttpClientConfig& config) {
  const HttpUrl url = parse_http_url(config.base_url);
  if (config.tls.enabled && !url.tls) {
    throw invalid("HTTP client " + config.base_url +
                  ": tls.enabled with an http:// URL; use https://");
  }
  core::TlsConfig tls = config.tls;
  tls.enabled = url.tls;  // the scheme decides
  core::validate(tls, "HTTP client " + config.base_url);
  if (config.connect_timeout <= std::chrono::milliseconds::zero()) {
    throw invalid("HTTP client: connect_timeout must be > 0");
  }
  if (config.request_timeout <= std::chrono::milliseconds::zero()) {
    throw invalid("HTTP client: request_timeout must be > 0");
  }
  if (config.max_body_size == 0) throw invalid("HTTP client: max_body_size must be > 0");
  if (config.max_header_size < 1024) {
    throw invalid("HTTP client: max_header_size must be >= 1024");
  }
  if (config.idle_timeout < std::chrono::milliseconds::zero()) {
    throw invalid("HTTP client: idle_timeout must be >= 0");
  }
}

std::optional<std::string_view> HttpResponse::header(std::string_view name) const noexcept {
  for (const auto& h : headers) {
    if (h.name.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      const auto a = static_cast<unsigned char>(h.name[i]);
      const auto b = static_cast<unsigned char>(name[i]);
      same = std::tolower(a) == std::tolower(b);
    }
    if (same) return std::string_view(h.value);
  }
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value) noexcept {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  std::uint64_t seconds = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
  seconds = std::min<std::uint64_t>(seconds, 86400);  // a day at most: a bogus value is capped
  return std::chrono::milliseconds(seconds * 1000);
}

void throw_for_status(const HttpResponse& response, const std::string& context) {
  if (response.ok()) return;
  ServerError server;
  server.server = ServerKind::http;
  server.code = std::to_string(response.status);
  server.message = response.body.substr(0, 200);
  Error error(std::move(server), classify_http_status(response.status), context,
              RequestState::sent);
  if (const auto header = response.header("Retry-After")) {
    if (const auto delay = parse_retry_after(*header)) error.with_retry_after(*delay);
  }
  throw error;
}

}  // namespace trading_shared::http

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/url.hpp>

#include <charconv>
#include <string>
#include <string_view>

namespace trading_shared::core {

namespace {

[[noreturn]] void refuse(std::string_view what, const std::string& why) {
  throw Error(make_error_code(errc::invalid_argument), std::string(what) + ": " + why);
}

}  // namespace

UrlAuthority parse_url_authority(std::string_view authority, std::string_view what,
                                 std::string_view default_port) {
  UrlAuthority out;
  std::string_view port;
  bool port_written = false;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) refuse(what, "unterminated [IPv6] host");
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') refuse(what, "junk after the [IPv6] host");
      port = after.substr(1);
      port_written = true;
    }
  } else {
    const auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      port_written = true;
    }
  }
  if (out.host.empty()) refuse(what, "empty host");
  if (port_written && port.empty()) refuse(what, "empty port");
  if (!port_written) {
    out.port = std::string(default_port);
    return out;
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    refuse(what, "bad port \"" + std::string(port) + "\"");
  }
  out.port = std::string(port);
  return out;
}

}  // namespace trading_shared::core

#pragma once
/// @file
/// The host and port of a URL's authority, as ws:// and http:// URLs write them: `host`,
/// `host:port`, `[v6]`, `[v6]:port`. Shared by ws::parse_websocket_url and
/// http::parse_http_url so that both accept and refuse the same authorities.

#include <string>
#include <string_view>

namespace trading_shared::core {

struct UrlAuthority {
  std::string host;  ///< without brackets for an IPv6 address
  std::string port;  ///< decimal, 1..65535
};

/// Parses `authority` (the part between `scheme://` and the first `/` or `?`; the caller has
/// refused credentials). `what` starts every error message ("HTTP URL"); `default_port` is used
/// when no port is written.
/// @throws Error (errc::invalid_argument): unterminated `[`, junk after `]`, empty host, empty
///   port after a `:`, or a port that is not a decimal in 1..65535.
UrlAuthority parse_url_authority(std::string_view authority, std::string_view what,
                                 std::string_view default_port);

}  // namespace trading_shared::core

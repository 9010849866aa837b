#include <trading_shared/http/http_status.hpp>

#include <charconv>

namespace trading_shared::http {

ErrorKind classify_http_status(unsigned status) noexcept {
  if (status == 408 || is_throttle_status(status)) return ErrorKind::transient_unavailable;
  if (status >= 500 && status <= 599) return ErrorKind::transient_unavailable;
  return ErrorKind::permanent;
}

unsigned http_status(const Error& error) noexcept {
  const auto& server = error.server();
  if (!server || server->server != ServerKind::http) return 0;
  unsigned status = 0;
  const auto r =
      std::from_chars(server->code.data(), server->code.data() + server->code.size(), status);
  return r.ec == std::errc() ? status : 0;
}

}  // namespace trading_shared::http

#include <trading_shared/core/access.hpp>

#include <string_view>

namespace trading_shared::core {

bool is_access_denied(const Error& error) noexcept {
  const auto& server = error.server();
  if (!server) return false;
  const std::string_view code = server->code;
  switch (server->server) {
    case ServerKind::postgres:
      return code == "42501" || (code.size() == 5 && code.substr(0, 2) == "28");
    case ServerKind::redis:
      return code == "NOPERM" || code == "NOAUTH" || code == "WRONGPASS";
    case ServerKind::http:
      break;
  }
  return false;
}

bool is_access_denied(const std::exception_ptr& error) noexcept {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return is_access_denied(e);
  } catch (...) {
    // Not one of ours: it carries no server's answer, so it cannot say "access denied".
    return false;
  }
}

}  // namespace trading_shared::core

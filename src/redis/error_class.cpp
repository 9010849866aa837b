#include <trading_shared/redis/error_class.hpp>

#include <utility>

namespace trading_shared::redis {

ErrorClass error_class(std::string_view prefix) noexcept {
  namespace p = error_prefix;
  if (prefix == p::wrong_type) return ErrorClass::wrong_type;
  if (prefix == p::no_auth || prefix == p::wrong_pass || prefix == p::no_perm) {
    return ErrorClass::auth;
  }
  if (prefix == p::oom) return ErrorClass::out_of_memory;
  if (prefix == p::read_only) return ErrorClass::read_only;
  if (prefix == p::loading) return ErrorClass::loading;
  if (prefix == p::busy) return ErrorClass::busy;
  if (prefix == p::moved || prefix == p::ask) return ErrorClass::redirect;
  if (prefix == p::try_again) return ErrorClass::try_again;
  if (prefix == p::master_down || prefix == p::cluster_down || prefix == p::no_replicas) {
    return ErrorClass::unavailable;
  }
  return ErrorClass::generic;
}

ErrorKind error_kind(ErrorClass error_class) noexcept {
  switch (error_class) {
    case ErrorClass::loading:
    case ErrorClass::busy:
    case ErrorClass::unavailable:
      return ErrorKind::transient_unavailable;
    case ErrorClass::try_again:
      return ErrorKind::transient_conflict;
    // Redirects need cluster routing (a later issue); until then a redirect cannot succeed.
    case ErrorClass::redirect:
    case ErrorClass::generic:
    case ErrorClass::wrong_type:
    case ErrorClass::auth:
    case ErrorClass::out_of_memory:
    case ErrorClass::read_only:
      return ErrorKind::permanent;
  }
  return ErrorKind::permanent;
}

ErrorKind classify_error_prefix(std::string_view prefix) noexcept {
  return error_kind(error_class(prefix));
}

Error make_server_error(std::string_view error_line, const std::string& context,
                        RequestState state) {
  ServerError error;
  error.server = ServerKind::redis;
  error.code = std::string(error_line.substr(0, error_line.find(' ')));
  error.message = std::string(error_line);
  const ErrorKind kind = classify_error_prefix(error.code);
  return Error(std::move(error), kind, context, state);
}

}  // namespace trading_shared::redis

#pragma once
/// @file
/// What the client knows of Redis's error replies (docs/redis.md): an error line's first word
/// (its prefix: "WRONGTYPE", "LOADING", ...) gives its `ErrorClass`, the class gives its
/// `ErrorKind`. This file is the one place that decides how a Redis error is retried and
/// counted by the breaker; `make_server_error()` builds the `Error` of an error reply with that
/// kind.

#include <trading_shared/core/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace trading_shared::redis {

/// Error prefixes the client and the services compare with (`Error::server()->code`).
namespace error_prefix {
inline constexpr std::string_view err = "ERR";
inline constexpr std::string_view wrong_type = "WRONGTYPE";
inline constexpr std::string_view no_auth = "NOAUTH";
inline constexpr std::string_view wrong_pass = "WRONGPASS";
inline constexpr std::string_view no_perm = "NOPERM";
inline constexpr std::string_view oom = "OOM";
inline constexpr std::string_view read_only = "READONLY";
inline constexpr std::string_view loading = "LOADING";
inline constexpr std::string_view busy = "BUSY";
inline constexpr std::string_view moved = "MOVED";
inline constexpr std::string_view ask = "ASK";
inline constexpr std::string_view try_again = "TRYAGAIN";
inline constexpr std::string_view master_down = "MASTERDOWN";
inline constexpr std::string_view cluster_down = "CLUSTERDOWN";
inline constexpr std::string_view no_replicas = "NOREPLICAS";
inline constexpr std::string_view exec_abort = "EXECABORT";
/// XREADGROUP / XACK on a group (or stream) that does not exist.
inline constexpr std::string_view no_group = "NOGROUP";
/// XGROUP CREATE of a group that exists.
inline constexpr std::string_view busy_group = "BUSYGROUP";
}  // namespace error_prefix

/// Redis errors that callers must be able to tell apart although many are `permanent`.
enum class ErrorClass : std::uint8_t {
  generic,        ///< ERR and other prefixes.
  wrong_type,     ///< WRONGTYPE.
  auth,           ///< NOAUTH, WRONGPASS, NOPERM.
  out_of_memory,  ///< OOM (maxmemory with noeviction).
  read_only,      ///< READONLY (a replica).
  loading,        ///< LOADING.
  busy,           ///< BUSY (a script or function is running).
  redirect,       ///< MOVED, ASK (cluster).
  try_again,      ///< TRYAGAIN.
  unavailable,    ///< MASTERDOWN, CLUSTERDOWN, NOREPLICAS.
};

/// The class of an error prefix (the first word of the error line).
ErrorClass error_class(std::string_view prefix) noexcept;

/// The kind of an error class: LOADING, BUSY, MASTERDOWN/CLUSTERDOWN/NOREPLICAS
/// `transient_unavailable`, TRYAGAIN `transient_conflict`, every other `permanent`. A Redis
/// error is a reply: its kind does not depend on whether the request was sent.
ErrorKind error_kind(ErrorClass error_class) noexcept;

/// `error_kind(error_class(prefix))`.
ErrorKind classify_error_prefix(std::string_view prefix) noexcept;

/// The `Error` of an error reply (`error_line`: the whole line, "WRONGTYPE Operation ..."):
/// a `ServerKind::redis` server error whose code is the prefix, of the kind
/// `classify_error_prefix()` gives it.
Error make_server_error(std::string_view error_line, const std::string& context,
                        RequestState state = RequestState::sent);

}  // namespace trading_shared::redis

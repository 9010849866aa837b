#pragma once
/// @file
/// Whether a failure is a refused privilege or identity: the server says the caller may not
/// do this (F64, F65). Such a failure is about the caller's identity and the sink's grants,
/// not about the data: retrying, or splitting a batch to find "the entries at fault", cannot
/// help until an operator grants the privilege or fixes the credentials. A consumer keeps the
/// work pending whole (it is delivered again after the grant) and never turns it into a
/// rejection of the data.

#include <trading_shared/core/error.hpp>

#include <exception>

namespace trading_shared::core {

/// True for a server error that refuses the caller's privilege or identity:
/// - PostgreSQL: SQLSTATE 42501 (insufficient_privilege) or class 28 (invalid authorization
///   specification: 28000, 28P01 invalid password);
/// - Redis: NOPERM (the ACL user lacks a command or key), NOAUTH (authentication required),
///   WRONGPASS (invalid user name or password).
/// False for everything else (client-side errors, other server errors, HTTP answers).
bool is_access_denied(const Error& error) noexcept;

/// The same for any exception: true only for an `Error` that `is_access_denied`.
bool is_access_denied(const std::exception_ptr& error) noexcept;

}  // namespace trading_shared::core

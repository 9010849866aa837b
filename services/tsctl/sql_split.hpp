#pragma once
/// @file
/// Splits a script of several SQL statements into single statements.
///
/// `PostgresClient` speaks the extended query protocol only (one statement per call, libpq
/// pipeline mode), while a migration is a script; this splits it at top-level semicolons,
/// skipping those inside quoted strings ('...', E'...' with backslash escapes), quoted
/// identifiers ("..."), dollar-quoted bodies ($$...$$, $tag$...$tag$: plpgsql functions),
/// line comments (--) and block comments (nested /* */).

#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::tsctl {

/// The statements of `script`, without their terminating semicolons, trimmed; statements
/// that are empty or only comments are dropped.
/// @throws std::invalid_argument for an unterminated string, identifier, dollar quote or
/// block comment.
std::vector<std::string> split_sql(std::string_view script);

}  // namespace trading_shared::services::tsctl

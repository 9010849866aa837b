#include "detail/session_state.hpp"

#include <trading_shared/core/error.hpp>

#include <algorithm>
#include <cctype>
#include <string_view>

namespace trading_shared::pg::detail {

namespace {

/// Skips white space and SQL comments (`-- ...` to end of line, nested `/* ... */`), so that
/// a comment cannot hide a statement's first keyword from the session-state check.
std::string_view skip_space_and_comments(std::string_view sql) {
  std::size_t i = 0;
  for (;;) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i])) != 0) ++i;
    if (sql.substr(i, 2) == "--") {
      while (i < sql.size() && sql[i] != '\n') ++i;
      continue;
    }
    if (sql.substr(i, 2) == "/*") {
      int depth = 0;
      while (i < sql.size()) {
        if (sql.substr(i, 2) == "/*") {
          ++depth;
          i += 2;
        } else if (sql.substr(i, 2) == "*/") {
          i += 2;
          if (--depth == 0) break;
        } else {
          ++i;
        }
      }
      continue;
    }
    return sql.substr(std::min(i, sql.size()));
  }
}

bool starts_with_word(std::string_view sql, std::string_view word) {
  sql = skip_space_and_comments(sql);
  if (sql.size() < word.size()) return false;
  for (std::size_t k = 0; k < word.size(); ++k) {
    if (std::toupper(static_cast<unsigned char>(sql[k])) != word[k]) return false;
  }
  return sql.size() == word.size() ||
         !(std::isalnum(static_cast<unsigned char>(sql[word.size()])) != 0 ||
           sql[word.size()] == '_');
}

/// A cheap first look (no strlen, no comment parsing): false when `sql` cannot start with
/// SET, LISTEN or PREPARE (e.g. SELECT, INSERT), so that the common statement skips the full
/// check below. A leading comment gets the full check.
bool may_hold_session_state(const char* sql) noexcept {
  const char* p = sql;
  while (*p == ' ' || (*p >= '\t' && *p <= '\r')) ++p;
  const auto lower = [](char c) { return static_cast<char>(c | 0x20); };
  switch (*p) {
    case '-':
    case '/':
      return true;
    case 'S':
    case 's':
      return lower(p[1]) == 'e' && lower(p[2]) == 't';
    case 'L':
    case 'l':
      return lower(p[1]) == 'i';
    case 'P':
    case 'p':
      return lower(p[1]) == 'r';
    default:
      return false;
  }
}

std::string_view after_word(std::string_view sql, std::string_view word) {
  sql = skip_space_and_comments(sql);
  return sql.substr(std::min(sql.size(), word.size()));
}

}  // namespace

void check_no_session_state(const char* sql) {
  if (!may_hold_session_state(sql)) return;
  const std::string_view text = sql;
  // Session state would stay on a server connection that PgBouncer then hands to other
  // clients (F12): only transaction-scoped SET is allowed.
  if (starts_with_word(text, "SET")) {
    const auto rest = after_word(text, "SET");
    if (!starts_with_word(rest, "LOCAL") && !starts_with_word(rest, "TRANSACTION") &&
        !starts_with_word(rest, "CONSTRAINTS")) {
      throw Error(make_error_code(errc::invalid_argument),
                  "session-level SET is not allowed with pgbouncer_transaction_mode: use SET "
                  "LOCAL inside transaction()",
                  RequestState::not_sent);
    }
  }
  if (starts_with_word(text, "LISTEN") || starts_with_word(text, "PREPARE")) {
    throw Error(make_error_code(errc::invalid_argument),
                "LISTEN and PREPARE need a session: not allowed with pgbouncer_transaction_mode",
                RequestState::not_sent);
  }
}

}  // namespace trading_shared::pg::detail

#include "tsctl/sql_split.hpp"

#include <cctype>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace trading_shared::services::tsctl {

namespace {

bool identifier_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}

bool space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

/// The dollar-quote tag starting at `pos` ("$$" or "$name$"), or empty when there is none.
std::string_view dollar_tag(std::string_view sql, std::size_t pos) {
  // "$1" is a parameter and "a$b" part of an identifier, not tags.
  if (pos > 0 && identifier_char(sql[pos - 1])) return {};
  std::size_t end = pos + 1;
  if (end < sql.size() && std::isdigit(static_cast<unsigned char>(sql[end])) != 0) return {};
  while (end < sql.size() && identifier_char(sql[end]) && sql[end] != '$') ++end;
  if (end >= sql.size() || sql[end] != '$') return {};
  return sql.substr(pos, end - pos + 1);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  return text;
}

}  // namespace

std::vector<std::string> split_sql(std::string_view script) {
  std::vector<std::string> statements;
  std::size_t start = 0;
  bool content = false;  // the current statement has something besides comments and spaces
  const auto flush = [&](std::size_t end) {
    if (content) statements.emplace_back(trim(script.substr(start, end - start)));
    start = end + 1;
    content = false;
  };
  const std::size_t n = script.size();
  std::size_t i = 0;
  while (i < n) {
    const char c = script[i];
    const char next = i + 1 < n ? script[i + 1] : '\0';
    if (c == '-' && next == '-') {
      const std::size_t eol = script.find('\n', i);
      i = eol == std::string_view::npos ? n : eol + 1;
      continue;
    }
    if (c == '/' && next == '*') {
      int depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (script[i] == '/' && i + 1 < n && script[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (script[i] == '*' && i + 1 < n && script[i + 1] == '/') {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
      if (depth > 0) throw std::invalid_argument("SQL script: unterminated block comment");
      continue;
    }
    if (c == ';') {
      flush(i);
      ++i;
      continue;
    }
    if (space(c)) {
      ++i;
      continue;
    }
    content = true;
    if (c == '\'' || c == '"') {
      // E'...' strings take backslash escapes; '' (or "") is an escaped quote in both.
      const bool backslashes = c == '\'' && i > 0 &&
                               (script[i - 1] == 'E' || script[i - 1] == 'e') &&
                               (i < 2 || !identifier_char(script[i - 2]));
      ++i;
      bool closed = false;
      while (i < n) {
        if (backslashes && script[i] == '\\') {
          i += 2;
          continue;
        }
        if (script[i] == c) {
          if (i + 1 < n && script[i + 1] == c) {
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        ++i;
      }
      if (!closed) {
        throw std::invalid_argument(c == '\'' ? "SQL script: unterminated string literal"
                                              : "SQL script: unterminated quoted identifier");
      }
      continue;
    }
    if (c == '$') {
      const std::string_view tag = dollar_tag(script, i);
      if (!tag.empty()) {
        const std::size_t close = script.find(tag, i + tag.size());
        if (close == std::string_view::npos) {
          throw std::invalid_argument("SQL script: unterminated dollar quote " + std::string(tag));
        }
        i = close + tag.size();
        continue;
      }
    }
    ++i;
  }
  flush(n);
  return statements;
}

}  // namespace trading_shared::services::tsctl

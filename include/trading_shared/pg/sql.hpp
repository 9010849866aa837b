#pragma once
/// @file
/// `Sql`: the text of a statement, as a pointer to a NUL-terminated string that libpq can
/// take without a copy (a string literal or a `std::string` that outlives the call).

#include <string>

namespace trading_shared::pg {

class Sql {
 public:
  // Implicit on purpose: `client.query("SELECT 1")` and `client.query(text)` both read well.
  Sql(const char* text) noexcept : text_(text) {}  // NOLINT(google-explicit-constructor)
  Sql(const std::string& text) noexcept : text_(text.c_str()) {}  // NOLINT
  /// A temporary string would dangle: keep the text alive for the call.
  Sql(std::string&&) = delete;
  const char* c_str() const noexcept { return text_; }

 private:
  const char* text_;
};

}  // namespace trading_shared::pg

#include "common/text.hpp"

namespace trading_shared::services {

bool is_symbol(std::string_view text) noexcept {
  if (text.empty()) return false;
  for (const char c : text) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

bool is_decimal(std::string_view text) noexcept {
  bool digit = false;
  bool dot = false;
  for (const char c : text) {
    if (c >= '0' && c <= '9') {
      digit = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return false;
    }
  }
  return digit;
}

}  // namespace trading_shared::services

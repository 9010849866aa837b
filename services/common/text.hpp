#pragma once
/// @file
/// Checks of the text fields the services pass between each other (untrusted input: the feed,
/// stream entries, order requests).

#include <string_view>

namespace trading_shared::services {

/// True for an exchange symbol: upper-case letters and digits only (it becomes part of Redis
/// key names).
bool is_symbol(std::string_view text) noexcept;

/// True for a plain non-negative decimal: digits with at most one '.', at least one digit
/// (no sign, no exponent): prices and quantities are passed on exactly as received.
bool is_decimal(std::string_view text) noexcept;

}  // namespace trading_shared::services

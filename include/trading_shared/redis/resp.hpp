#pragma once
/// @file
/// The RESP2 command encoder: appends `*N\r\n$len\r\narg\r\n...` straight to a buffer.
///
/// Arguments are anything that is a string (`std::string_view`-convertible: literals,
/// `std::string`, `std::string_view`), an integer, a floating-point number, or a range of
/// those (spliced in as separate arguments, e.g. a `std::vector<std::string>` of keys).
/// Strings are binary-safe. A `bool` is refused at compile time (is it "1", "true"?).

#include <boost/container/small_vector.hpp>

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ranges>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace trading_shared::redis {

template <class T>
concept RespString = std::is_convertible_v<const T&, std::string_view>;

template <class T>
concept RespNumber = (std::integral<T> ||
                      std::floating_point<T>)&&!std::same_as<std::remove_cv_t<T>, bool> &&
                     !std::same_as<std::remove_cv_t<T>, char>;

template <class T>
concept RespScalar = RespString<T> || RespNumber<T>;

template <class T>
concept RespRange = !RespString<T> && std::ranges::forward_range<const T> &&
                    RespScalar<std::ranges::range_value_t<const T>>;

template <class T>
concept RespArg = RespScalar<T> || RespRange<T>;

namespace detail {

/// Number of RESP arguments `arg` contributes.
template <RespArg T>
std::size_t arg_count(const T& arg) {
  if constexpr (RespRange<T>) {
    return static_cast<std::size_t>(std::ranges::distance(arg));
  } else {
    return 1;
  }
}

inline void append_decimal(std::string& out, std::uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
  (void)ec;
  // append(pointer, size), not append(first, last): the iterator overload goes through the
  // general replace() path.
  out.append(digits, static_cast<std::size_t>(end - digits));
}

/// Writes `kind`, the decimal `n` and CRLF at `p`; returns the end. `p` has room for 24.
inline char* write_header(char* p, char kind, std::size_t n) noexcept {
  *p++ = kind;
  if (n < 10) {  // the common case of short arguments: no to_chars call
    *p++ = static_cast<char>('0' + n);
  } else {
    p = std::to_chars(p, p + 21, n).ptr;
  }
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

inline void append_header(std::string& out, char kind, std::size_t n) {
  char header[24];
  out.append(header, static_cast<std::size_t>(write_header(header, kind, n) - header));
}

/// One bulk string: "$<len>\r\n<bytes>\r\n", with one size change of `out` (the encoder's
/// hot path: every argument of every command, 2 per field of an `xadd_bulk` entry).
inline void append_bulk(std::string& out, std::string_view bytes) {
  constexpr std::size_t kShort = 40;
  if (bytes.size() <= kShort) {
    // Short arguments (command names, keys, IDs, field names): assembled on the stack and
    // appended in one go, without resize()'s zero fill of the new bytes.
    char small[24 + kShort + 2];
    char* p = write_header(small, '$', bytes.size());
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    p += bytes.size();
    p[0] = '\r';
    p[1] = '\n';
    out.append(small, static_cast<std::size_t>(p + 2 - small));
    return;
  }
  char header[24];
  const char* header_end = write_header(header, '$', bytes.size());
  const auto header_size = static_cast<std::size_t>(header_end - header);
  const std::size_t old = out.size();
  out.resize(old + header_size + bytes.size() + 2);
  char* p = out.data() + old;
  std::memcpy(p, header, header_size);
  p += header_size;
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  p += bytes.size();
  p[0] = '\r';
  p[1] = '\n';
}

template <RespScalar T>
void append_scalar(std::string& out, const T& value) {
  if constexpr (RespString<T>) {
    append_bulk(out, std::string_view(value));
  } else if constexpr (std::integral<T>) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
    (void)ec;
    append_bulk(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
  } else {
    // Shortest round-trip representation; Redis parses it with strtold.
    char digits[40];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
    (void)ec;
    append_bulk(out, std::string_view(digits, static_cast<std::size_t>(end - digits)));
  }
}

template <RespArg T>
void append_arg(std::string& out, const T& arg) {
  if constexpr (RespRange<T>) {
    for (const auto& element : arg) append_scalar(out, element);
  } else {
    append_scalar(out, arg);
  }
}

}  // namespace detail

/// Appends one command (its arguments in order) to `out`.
template <RespArg... Args>
void encode_command(std::string& out, const Args&... args) {
  const std::size_t n = (std::size_t{0} + ... + detail::arg_count(args));
  detail::append_header(out, '*', n);
  (detail::append_arg(out, args), ...);
}

/// Incremental encoder for commands whose argument count is known up front but whose
/// arguments are produced in a loop (XADD with a variable field list).
class CommandWriter {
 public:
  CommandWriter(std::string& out, std::size_t argument_count) : out_(&out) {
    detail::append_header(out, '*', argument_count);
  }
  template <RespScalar T>
  CommandWriter& arg(const T& value) {
    detail::append_scalar(*out_, value);
    return *this;
  }

 private:
  std::string* out_;
};

}  // namespace trading_shared::redis

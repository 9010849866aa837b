#pragma once
/// @file
/// Typed query parameters, encoded into the four arrays `PQsendQueryParams` takes.
///
/// | C++ type                                   | OID                   | format |
/// |--------------------------------------------|-----------------------|--------|
/// | `bool`                                     | bool (16)             | binary |
/// | `std::int16_t`, `std::int8_t`, `uint8_t`   | int2 (21)             | binary |
/// | `std::int32_t`, `std::uint16_t`            | int4 (23)             | binary |
/// | `std::int64_t`, `long long`, `uint32_t`    | int8 (20)             | binary |
/// | `std::uint64_t` (must be <= INT64_MAX)     | int8 (20)             | binary |
/// | `float` / `double`                         | float4 / float8       | binary |
/// | `std::string`, `std::string_view`, `const char*`, `char[N]` | unspecified (0) | text |
/// | `pg::Bytea`, `std::vector<std::byte>`      | bytea (17)            | binary |
/// | `pg::Numeric`                              | numeric (1700)        | text   |
/// | `std::chrono::sys_time<any duration>`      | timestamptz (1184)    | binary |
/// | `std::optional<T>` (empty: NULL)           | as `T`                | as `T` |
/// | `std::nullopt`, `nullptr`                  | unspecified (0), NULL | -      |
/// | `std::vector<T>`, `std::span<T>` of the above (not optional; strings: text[]) | T[] | binary |
///
/// Strings go as text with an unspecified type so that the server infers it from the
/// context: the same `std::string` can fill a text, varchar, jsonb, numeric or enum column,
/// exactly as an untyped literal would. Everything else goes binary: no formatting on our
/// side, no parsing on the server's, and no locale or DateStyle dependence.
///
/// Anything else fails to compile with a message listing the supported types. `char` is
/// refused on purpose: it is unclear whether it means a number or a one-letter string.

#include <trading_shared/pg/types.hpp>

#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace trading_shared::pg {
namespace detail {

template <class T>
concept TextLike = std::same_as<T, std::string> || std::same_as<T, std::string_view> ||
    std::same_as<T, const char*> || std::same_as<T, char*> ||
    (std::is_array_v<T>&& std::same_as<std::remove_cv_t<std::remove_extent_t<T>>, char>);

/// `std::vector<T>` and `std::span<T>` (not of std::byte: that is bytea) are arrays.
template <class T>
struct IsArrayParam : std::false_type {};
template <class T, class A>
struct IsArrayParam<std::vector<T, A>> : std::bool_constant<!std::same_as<T, std::byte>> {
  using element = T;
};
template <class T, std::size_t E>
struct IsArrayParam<std::span<T, E>>
    : std::bool_constant<!std::same_as<std::remove_cv_t<T>, std::byte>> {
  using element = std::remove_cv_t<T>;
};

/// The OID of the one-dimensional array of `element` (0: no array type here).
constexpr Oid array_type_oid(Oid element) noexcept {
  switch (element) {
    case oid::kBool:
      return 1000;
    case oid::kInt2:
      return 1005;
    case oid::kInt4:
      return 1007;
    case oid::kText:
      return 1009;
    case oid::kInt8:
      return 1016;
    case oid::kFloat4:
      return 1021;
    case oid::kFloat8:
      return 1022;
    case oid::kTimestamptz:
      return 1185;
    default:
      return 0;
  }
}

[[noreturn]] void throw_uint64_out_of_range(std::uint64_t value);
[[noreturn]] void throw_timestamp_out_of_range();

}  // namespace detail

/// The element type of an array parameter of `T` (strings are text: a binary array needs a
/// type); 0 for types that cannot be array elements (e.g. std::optional: no NULL elements).
template <class T>
constexpr Oid array_element_oid() noexcept {
  using V = std::remove_cvref_t<T>;
  if constexpr (std::same_as<V, bool>) {
    return oid::kBool;
  } else if constexpr (std::integral<V> && !detail::CharacterType<V> && sizeof(V) <= 8) {
    if constexpr (std::is_signed_v<V>) {
      return sizeof(V) <= 2 ? oid::kInt2 : sizeof(V) == 4 ? oid::kInt4 : oid::kInt8;
    } else {
      return sizeof(V) == 1 ? oid::kInt2 : sizeof(V) == 2 ? oid::kInt4 : oid::kInt8;
    }
  } else if constexpr (std::same_as<V, float>) {
    return oid::kFloat4;
  } else if constexpr (std::same_as<V, double>) {
    return oid::kFloat8;
  } else if constexpr (std::same_as<V, std::string> || std::same_as<V, std::string_view>) {
    return oid::kText;
  } else if constexpr (detail::IsSysTime<V>::value) {
    return oid::kTimestamptz;
  } else {
    static_assert(detail::kDependentFalse<V>,
                  "trading_shared::pg: unsupported array element type. Supported: bool, "
                  "integers (not char), float, double, std::string, std::string_view, "
                  "std::chrono::system_clock time points (no NULL elements)");
    return oid::kUnspecified;
  }
}

/// The type OID a parameter of C++ type `T` is sent with (0: the server infers it).
/// Also the OID of a NULL `std::optional<T>`, so a NULL is as well typed as a value.
template <class T>
constexpr Oid param_type_oid() noexcept {
  using V = std::remove_cvref_t<T>;
  if constexpr (detail::IsOptional<V>::value) {
    return param_type_oid<typename V::value_type>();
  } else if constexpr (std::same_as<V, bool>) {
    return oid::kBool;
  } else if constexpr (detail::CharacterType<V>) {
    static_assert(detail::kDependentFalse<V>,
                  "trading_shared::pg: a char parameter is ambiguous (number or one-letter "
                  "string?): pass an integer type or a std::string_view");
    return oid::kUnspecified;
  } else if constexpr (std::integral<V>) {
    static_assert(sizeof(V) <= 8,
                  "trading_shared::pg: integers wider than 64 bits are not "
                  "supported: pass a pg::Numeric");
    if constexpr (std::is_signed_v<V>) {
      return sizeof(V) <= 2 ? oid::kInt2 : sizeof(V) == 4 ? oid::kInt4 : oid::kInt8;
    } else {
      // The next wider signed type holds every value; uint64 takes a range check instead.
      return sizeof(V) == 1 ? oid::kInt2 : sizeof(V) == 2 ? oid::kInt4 : oid::kInt8;
    }
  } else if constexpr (std::same_as<V, float>) {
    return oid::kFloat4;
  } else if constexpr (std::same_as<V, double>) {
    return oid::kFloat8;
  } else if constexpr (detail::TextLike<V> || std::same_as<V, std::nullopt_t> ||
                       std::same_as<V, std::nullptr_t>) {
    // Untyped: the server infers the type from the context, as for a literal.
    return oid::kUnspecified;
  } else if constexpr (std::same_as<V, Bytea> || std::same_as<V, std::vector<std::byte>>) {
    return oid::kBytea;
  } else if constexpr (std::same_as<V, Numeric>) {
    return oid::kNumeric;
  } else if constexpr (detail::IsSysTime<V>::value) {
    return oid::kTimestamptz;
  } else if constexpr (detail::IsArrayParam<V>::value) {
    return detail::array_type_oid(array_element_oid<typename detail::IsArrayParam<V>::element>());
  } else {
    static_assert(detail::kDependentFalse<V>,
                  "trading_shared::pg: unsupported parameter type. Supported: bool, integers "
                  "(not char), float, double, std::string, std::string_view, const char*, "
                  "pg::Bytea, std::vector<std::byte>, pg::Numeric, "
                  "std::chrono::system_clock time points, std::optional<T>, std::nullopt, "
                  "nullptr, std::vector<T> / std::span<T> of bool, integers, float, double, "
                  "strings or time points");
    return oid::kUnspecified;
  }
}

/// 0 for text, 1 for binary: the format a parameter of C++ type `T` is sent in.
template <class T>
constexpr int param_format() noexcept {
  using V = std::remove_cvref_t<T>;
  if constexpr (detail::IsOptional<V>::value) {
    return param_format<typename V::value_type>();
  } else if constexpr (std::same_as<V, std::nullopt_t> || std::same_as<V, std::nullptr_t> ||
                       detail::TextLike<V> || std::same_as<V, Numeric>) {
    return 0;
  } else {
    return 1;
  }
}

/// Reusable storage for the parameters of one statement, in the form libpq wants.
///
/// All values are copied into one contiguous byte buffer, so the caller's arguments need
/// not outlive the call, and nothing is allocated once the buffer has grown to the largest
/// statement it serves: `clear()` and `set()` keep every capacity. Keep one per connection
/// (or per pipeline slot) and reuse it.
///
/// The storage may move while values are appended, so the buffer records offsets and builds
/// the pointer array on the first `values()` after a change. Pointers returned by the
/// accessors stay valid until the next mutation (`clear`, `set`, `append`, assignment);
/// libpq copies the values into its output buffer inside `PQsendQueryParams`, so they need
/// not outlive that call, even in pipeline mode.
///
/// Not thread-safe, including the const accessors (they build the pointer array lazily).
///
/// If an `append` throws (uint64 over INT64_MAX, NUL in a text value, timestamp overflow),
/// the values appended before it remain; call `clear()` or `set()` before reuse.
///
/// @code
/// pg::ParamBuffer params;
/// params.set(std::int64_t{42}, "BTC-USD", pg::Numeric("64000.50"), std::optional<double>{});
/// PQsendQueryParams(conn, sql, params.count(), params.types(), params.values(),
///                   params.lengths(), params.formats(), /*resultFormat=*/1);
/// @endcode
class ParamBuffer {
 public:
  ParamBuffer() = default;
  ParamBuffer(const ParamBuffer& other);
  ParamBuffer(ParamBuffer&& other) noexcept;
  ParamBuffer& operator=(const ParamBuffer& other);
  ParamBuffer& operator=(ParamBuffer&& other) noexcept;
  ~ParamBuffer() = default;

  /// Removes every value; keeps the capacity of every array.
  void clear() noexcept;

  /// Replaces the parameters with `args` ($1, $2, ... in order).
  template <class... Args>
  void set(const Args&... args) {
    clear();
    (append(args), ...);
  }

  /// Appends one parameter (the next $n). See the file comment for the supported types.
  /// @throws Error(errc::invalid_argument) for a `std::uint64_t` over INT64_MAX, a text value
  ///         containing a NUL byte (text parameters are NUL-terminated C strings in libpq: it
  ///         would be cut there; send binary data as `Bytea`), a value over 2 GiB, or a time
  ///         point outside 64-bit microseconds.
  template <class T>
  void append(const T& value);

  /// Number of parameters.
  int count() const noexcept { return static_cast<int>(types_.size()); }
  /// Parameter type OIDs (0: inferred by the server).
  const Oid* types() const noexcept { return types_.data(); }
  /// Parameter values; nullptr for NULL. Text values are NUL-terminated.
  const char* const* values() const noexcept;
  /// Value lengths in bytes (text: without the terminating NUL; NULL: 0).
  const int* lengths() const noexcept { return lengths_.data(); }
  /// 0 (text) or 1 (binary) per parameter.
  const int* formats() const noexcept { return formats_.data(); }

  /// Bytes reserved for values, for tests and metrics: stable once the buffer has grown.
  std::size_t storage_capacity() const noexcept { return data_.capacity(); }

 private:
  static constexpr std::size_t kNullOffset = std::numeric_limits<std::size_t>::max();

  void append_raw(Oid type, int format, const char* bytes, std::size_t size, bool text);
  void append_null(Oid type, int format);
  void append_int2(std::int16_t value);
  void append_int4(std::int32_t value);
  void append_int8(std::int64_t value);
  void append_float4(float value);
  void append_float8(double value);
  void append_bool(bool value);
  void append_text(std::string_view value, Oid type = oid::kUnspecified);
  void append_bytea(std::span<const std::byte> value);
  void append_timestamptz(std::int64_t postgres_micros);
  /// A binary one-dimensional array: the header, then each element (length and bytes), then
  /// the parameter itself. Returns the header's offset in data_.
  std::size_t begin_array(Oid element_type, std::size_t count);
  void append_array_element(const char* bytes, std::size_t size);
  void end_array(Oid array_type, std::size_t start);
  template <class E>
  void append_array_value(const E& value);

  std::vector<char> data_;            ///< every value's bytes, back to back.
  std::vector<std::size_t> offsets_;  ///< start of each value in data_, kNullOffset for NULL.
  std::vector<Oid> types_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  mutable std::vector<const char*> values_;  ///< built from offsets_ on demand.
  mutable bool values_stale_ = false;
};

/// Builds a one-off buffer: convenient outside hot paths and in tests.
template <class... Args>
ParamBuffer make_params(const Args&... args) {
  ParamBuffer buffer;
  buffer.set(args...);
  return buffer;
}

template <class T>
void ParamBuffer::append(const T& value) {
  using V = std::remove_cvref_t<T>;
  // Checks support (and produces the static_assert message) before any branch below.
  constexpr Oid kType = param_type_oid<V>();
  if constexpr (detail::IsOptional<V>::value) {
    if (value.has_value()) {
      append(*value);
    } else {
      append_null(kType, param_format<V>());
    }
  } else if constexpr (std::same_as<V, std::nullopt_t> || std::same_as<V, std::nullptr_t>) {
    append_null(kType, 0);
  } else if constexpr (std::same_as<V, bool>) {
    append_bool(value);
  } else if constexpr (std::integral<V>) {
    if constexpr (kType == oid::kInt2) {
      append_int2(static_cast<std::int16_t>(value));
    } else if constexpr (kType == oid::kInt4) {
      append_int4(static_cast<std::int32_t>(value));
    } else if constexpr (std::is_unsigned_v<V> && sizeof(V) == 8) {
      if (value > static_cast<V>(std::numeric_limits<std::int64_t>::max())) {
        detail::throw_uint64_out_of_range(value);
      }
      append_int8(static_cast<std::int64_t>(value));
    } else {
      append_int8(static_cast<std::int64_t>(value));
    }
  } else if constexpr (std::same_as<V, float>) {
    append_float4(value);
  } else if constexpr (std::same_as<V, double>) {
    append_float8(value);
  } else if constexpr (std::same_as<V, const char*> || std::same_as<V, char*>) {
    // A null C string is SQL NULL, as in libpq itself.
    if (value == nullptr) {
      append_null(kType, 0);
    } else {
      append_text(std::string_view(value));
    }
  } else if constexpr (std::is_array_v<V>) {
    // A char array: up to its first NUL (a string literal's terminator), or all of it.
    const std::string_view all(value, std::extent_v<V>);
    append_text(all.substr(0, all.find('\0')));
  } else if constexpr (detail::TextLike<V>) {
    append_text(std::string_view(value));
  } else if constexpr (std::same_as<V, Bytea>) {
    append_bytea(value.bytes());
  } else if constexpr (std::same_as<V, std::vector<std::byte>>) {
    append_bytea(std::span<const std::byte>(value));
  } else if constexpr (std::same_as<V, Numeric>) {
    append_text(value.view(), oid::kNumeric);
  } else if constexpr (detail::IsSysTime<V>::value) {
    const std::optional<std::int64_t> micros = to_postgres_timestamp(value);
    if (!micros) {
      detail::throw_timestamp_out_of_range();
    }
    append_timestamptz(*micros);
  } else if constexpr (detail::IsArrayParam<V>::value) {
    using E = typename detail::IsArrayParam<V>::element;
    const std::size_t start = begin_array(array_element_oid<E>(), std::size(value));
    for (const auto& element : value) append_array_value<E>(element);
    end_array(kType, start);
  }
}

template <class E>
void ParamBuffer::append_array_value(const E& value) {
  constexpr Oid kElement = array_element_oid<E>();
  char bytes[8];
  if constexpr (std::same_as<E, bool>) {
    bytes[0] = value ? '\1' : '\0';
    append_array_element(bytes, 1);
  } else if constexpr (std::integral<E>) {
    if constexpr (kElement == oid::kInt2) {
      detail::store_be(static_cast<std::uint16_t>(static_cast<std::int16_t>(value)), bytes);
      append_array_element(bytes, 2);
    } else if constexpr (kElement == oid::kInt4) {
      detail::store_be(static_cast<std::uint32_t>(static_cast<std::int32_t>(value)), bytes);
      append_array_element(bytes, 4);
    } else {
      if constexpr (std::is_unsigned_v<E> && sizeof(E) == 8) {
        if (value > static_cast<E>(std::numeric_limits<std::int64_t>::max())) {
          detail::throw_uint64_out_of_range(value);
        }
      }
      detail::store_be(static_cast<std::uint64_t>(static_cast<std::int64_t>(value)), bytes);
      append_array_element(bytes, 8);
    }
  } else if constexpr (std::same_as<E, float>) {
    detail::store_be(std::bit_cast<std::uint32_t>(value), bytes);
    append_array_element(bytes, 4);
  } else if constexpr (std::same_as<E, double>) {
    detail::store_be(std::bit_cast<std::uint64_t>(value), bytes);
    append_array_element(bytes, 8);
  } else if constexpr (kElement == oid::kText) {
    const std::string_view text(value);
    append_array_element(text.data(), text.size());
  } else {
    const std::optional<std::int64_t> micros = to_postgres_timestamp(value);
    if (!micros) {
      detail::throw_timestamp_out_of_range();
    }
    detail::store_be(static_cast<std::uint64_t>(*micros), bytes);
    append_array_element(bytes, 8);
  }
}

}  // namespace trading_shared::pg

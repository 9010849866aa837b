#pragma once
/// @file
/// Value types shared by parameter encoding (`params.hpp`) and result decoding (`result.hpp`):
/// the type OIDs we speak, the `Bytea` and `Numeric` wrappers, and the timestamp epoch.
///
/// We define the OIDs ourselves instead of including the server's catalog headers
/// (`catalog/pg_type_d.h`): those are not installed with the libpq client headers, and the
/// OIDs of built-in types are fixed forever by the on-disk catalog format.

#include <postgres_ext.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <ratio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace trading_shared::pg {

/// A PostgreSQL type OID (libpq's `Oid`, an `unsigned int`).
using Oid = ::Oid;

/// OIDs of the built-in types the codec knows. Values from `pg_type.dat`.
namespace oid {
/// "Unspecified": in a parameter, lets the server infer the type from the context (as for
/// an untyped literal), which is what text parameters use.
inline constexpr Oid kUnspecified = 0;
inline constexpr Oid kBool = 16;
inline constexpr Oid kBytea = 17;
inline constexpr Oid kChar = 18;  ///< the one-byte `"char"` type, not `char(n)`.
inline constexpr Oid kName = 19;
inline constexpr Oid kInt8 = 20;
inline constexpr Oid kInt2 = 21;
inline constexpr Oid kInt4 = 23;
inline constexpr Oid kText = 25;
inline constexpr Oid kOid = 26;
inline constexpr Oid kJson = 114;
inline constexpr Oid kFloat4 = 700;
inline constexpr Oid kFloat8 = 701;
inline constexpr Oid kUnknown = 705;
inline constexpr Oid kBpchar = 1042;  ///< `char(n)`: blank-padded.
inline constexpr Oid kVarchar = 1043;
inline constexpr Oid kDate = 1082;
inline constexpr Oid kTimestamp = 1114;
inline constexpr Oid kTimestamptz = 1184;
inline constexpr Oid kNumeric = 1700;
inline constexpr Oid kUuid = 2950;
inline constexpr Oid kJsonb = 3802;
}  // namespace oid

/// The SQL name of a built-in type OID, for error messages; "unknown type" for the rest
/// (user-defined types have OIDs assigned at CREATE TYPE time).
constexpr std::string_view oid_name(Oid type) noexcept {
  switch (type) {
    case oid::kUnspecified:
      return "unspecified";
    case oid::kBool:
      return "boolean";
    case oid::kBytea:
      return "bytea";
    case oid::kChar:
      return "\"char\"";
    case oid::kName:
      return "name";
    case oid::kInt8:
      return "bigint";
    case oid::kInt2:
      return "smallint";
    case oid::kInt4:
      return "integer";
    case oid::kText:
      return "text";
    case oid::kOid:
      return "oid";
    case oid::kJson:
      return "json";
    case oid::kFloat4:
      return "real";
    case oid::kFloat8:
      return "double precision";
    case oid::kUnknown:
      return "unknown";
    case oid::kBpchar:
      return "character";
    case oid::kVarchar:
      return "character varying";
    case oid::kDate:
      return "date";
    case oid::kTimestamp:
      return "timestamp without time zone";
    case oid::kTimestamptz:
      return "timestamp with time zone";
    case oid::kNumeric:
      return "numeric";
    case oid::kUuid:
      return "uuid";
    case oid::kJsonb:
      return "jsonb";
    default:
      return "unknown type";
  }
}

/// A non-owning view of binary data, sent and received as `bytea`.
///
/// A distinct type (rather than `std::string_view`) because strings are sent as text, which
/// cannot carry NUL bytes and is checked for valid encoding by the server, while bytea is
/// sent as raw bytes. Like `std::span`, it does not own its bytes: a `Bytea` read from a
/// result is valid while the `Result` lives; one passed as a parameter is copied at once.
class Bytea {
 public:
  constexpr Bytea() noexcept = default;
  constexpr explicit Bytea(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}
  explicit Bytea(std::span<const unsigned char> bytes) noexcept
      : bytes_(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()) {}
  explicit Bytea(std::string_view bytes) noexcept
      : bytes_(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()) {}

  constexpr std::span<const std::byte> bytes() const noexcept { return bytes_; }
  constexpr const std::byte* data() const noexcept { return bytes_.data(); }
  constexpr std::size_t size() const noexcept { return bytes_.size(); }
  constexpr bool empty() const noexcept { return bytes_.empty(); }
  /// The same bytes as characters, e.g. to compare with a string literal in a test.
  std::string_view as_string_view() const noexcept {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }

  /// Compares the contents, not the addresses.
  friend constexpr bool operator==(const Bytea& a, const Bytea& b) noexcept {
    return std::ranges::equal(a.bytes_, b.bytes_);
  }

 private:
  std::span<const std::byte> bytes_;
};

/// An exact decimal number as PostgreSQL prints it ("12.340", "-1", "NaN", "Infinity").
///
/// Prices and quantities must not pass through `double`. We keep the decimal string rather
/// than a decimal arithmetic type: services hand it to their own decimal library, and the
/// text form is what the server parses and prints, so nothing is lost either way. Sent as
/// text with the `numeric` OID; the server validates the syntax.
class Numeric {
 public:
  Numeric() = default;
  explicit Numeric(std::string decimal) : value_(std::move(decimal)) {}
  explicit Numeric(std::string_view decimal) : value_(decimal) {}
  explicit Numeric(const char* decimal) : value_(decimal) {}

  const std::string& str() const noexcept { return value_; }
  std::string_view view() const noexcept { return value_; }

  /// Textual equality: "1.50" and "1.5" are different values of `numeric` (their scales
  /// differ) and compare unequal here.
  friend bool operator==(const Numeric&, const Numeric&) = default;

 private:
  std::string value_;
};

/// Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 00:00:00 UTC):
/// binary timestamps count microseconds from the latter.
inline constexpr std::int64_t kPostgresEpochUnixMicros = 946'684'800'000'000;

/// PostgreSQL's `infinity` and `-infinity` timestamps in binary form. They map to and from
/// `time_point::max()` and `time_point::min()` (userver does the same), so they round-trip.
inline constexpr std::int64_t kTimestampInfinity = std::numeric_limits<std::int64_t>::max();
inline constexpr std::int64_t kTimestampMinusInfinity = std::numeric_limits<std::int64_t>::min();

/// A `system_clock` time point with any duration.
template <class Duration>
using SysTime = std::chrono::time_point<std::chrono::system_clock, Duration>;

namespace detail {

/// How many microseconds one tick of `Period` lasts, when that is a whole number (seconds,
/// milliseconds, days, ...); 0 otherwise (finer or odd periods).
template <class Period>
constexpr std::int64_t whole_micros_per_tick() noexcept {
  using Ratio = std::ratio_divide<Period, std::micro>;
  return Ratio::den == 1 ? static_cast<std::int64_t>(Ratio::num) : 0;
}

/// How many ticks of `Period` one microsecond holds, when that is a whole number
/// (microseconds, nanoseconds, ...); 0 otherwise.
template <class Period>
constexpr std::int64_t whole_ticks_per_micro() noexcept {
  using Ratio = std::ratio_divide<std::micro, Period>;
  return Ratio::den == 1 ? static_cast<std::int64_t>(Ratio::num) : 0;
}

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  const std::int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

}  // namespace detail

/// Converts a time point to PostgreSQL's binary timestamp (microseconds since 2000-01-01 UTC).
/// Finer durations are rounded down (towards the past, also before 1970) to whole
/// microseconds; `max()` and `min()` become `infinity` and `-infinity`. Returns nullopt when
/// the value does not fit in 64-bit microseconds (only possible for coarse durations) or
/// would collide with the infinity encodings.
template <class Duration>
std::optional<std::int64_t> to_postgres_timestamp(SysTime<Duration> tp) noexcept {
  using Rep = typename Duration::rep;
  if (tp == SysTime<Duration>::max()) {
    return kTimestampInfinity;
  }
  if (tp == SysTime<Duration>::min()) {
    return kTimestampMinusInfinity;
  }
  std::int64_t pg_us = 0;
  if constexpr (std::is_floating_point_v<Rep>) {
    const long double us =
        std::floor(std::chrono::duration_cast<std::chrono::duration<long double, std::micro>>(
                       tp.time_since_epoch())
                       .count());
    const long double pg = us - static_cast<long double>(kPostgresEpochUnixMicros);
    // 2^63 is exactly representable: reject anything not strictly inside int64's range.
    constexpr long double kLimit = 9223372036854775808.0L;
    if (!(pg > -kLimit && pg < kLimit)) {
      return std::nullopt;
    }
    pg_us = static_cast<std::int64_t>(pg);
  } else if constexpr (constexpr std::int64_t kMicrosPerTick =
                           detail::whole_micros_per_tick<typename Duration::period>();
                       kMicrosPerTick != 0) {
    // Coarser than (or equal to) microseconds. Move the epoch in ticks first when the
    // offset is a whole number of ticks (seconds, days, ...), so that only values outside
    // PostgreSQL's range can overflow.
    const auto count = tp.time_since_epoch().count();
    if (!std::in_range<std::int64_t>(count)) {
      return std::nullopt;
    }
    if constexpr (kPostgresEpochUnixMicros % kMicrosPerTick == 0) {
      std::int64_t pg_ticks = 0;
      if (__builtin_sub_overflow(static_cast<std::int64_t>(count),
                                 kPostgresEpochUnixMicros / kMicrosPerTick, &pg_ticks) ||
          __builtin_mul_overflow(pg_ticks, kMicrosPerTick, &pg_us)) {
        return std::nullopt;
      }
    } else {
      std::int64_t unix_us = 0;
      if (__builtin_mul_overflow(static_cast<std::int64_t>(count), kMicrosPerTick, &unix_us) ||
          __builtin_sub_overflow(unix_us, kPostgresEpochUnixMicros, &pg_us)) {
        return std::nullopt;
      }
    }
  } else {
    // Finer than microseconds: dividing cannot overflow.
    const auto unix_us =
        std::chrono::floor<std::chrono::microseconds>(tp.time_since_epoch()).count();
    if (__builtin_sub_overflow(unix_us, kPostgresEpochUnixMicros, &pg_us)) {
      return std::nullopt;
    }
  }
  // A finite time that collides with the infinity encodings would silently change meaning.
  if (pg_us == kTimestampInfinity || pg_us == kTimestampMinusInfinity) {
    return std::nullopt;
  }
  return pg_us;
}

/// Converts PostgreSQL's binary timestamp to a time point. `infinity` and `-infinity` become
/// `max()` and `min()`. Coarser durations round down (towards the past); returns nullopt
/// when the value does not fit in `Duration` (e.g. year 2263 and later for the nanosecond
/// `system_clock::time_point` of libstdc++).
template <class Duration>
std::optional<SysTime<Duration>> from_postgres_timestamp(std::int64_t pg_us) noexcept {
  using Rep = typename Duration::rep;
  using Tp = SysTime<Duration>;
  if (pg_us == kTimestampInfinity) {
    return Tp::max();
  }
  if (pg_us == kTimestampMinusInfinity) {
    return Tp::min();
  }
  if constexpr (std::is_floating_point_v<Rep>) {
    const long double unix_us = static_cast<long double>(pg_us) + kPostgresEpochUnixMicros;
    return Tp(std::chrono::duration_cast<Duration>(
        std::chrono::duration<long double, std::micro>(unix_us)));
  } else {
    std::int64_t ticks = 0;
    if constexpr (constexpr std::int64_t kTicksPerMicro =
                      detail::whole_ticks_per_micro<typename Duration::period>();
                  kTicksPerMicro != 0) {
      // Finer than (or equal to) microseconds: multiply, checking for overflow.
      std::int64_t unix_us = 0;
      if (__builtin_add_overflow(pg_us, kPostgresEpochUnixMicros, &unix_us) ||
          __builtin_mul_overflow(unix_us, kTicksPerMicro, &ticks)) {
        return std::nullopt;
      }
    } else if constexpr (constexpr std::int64_t kMicrosPerTick =
                             detail::whole_micros_per_tick<typename Duration::period>();
                         kMicrosPerTick != 0 && kPostgresEpochUnixMicros % kMicrosPerTick == 0) {
      // Coarser, with the epoch offset a whole number of ticks: cannot overflow.
      ticks = detail::floor_div(pg_us, kMicrosPerTick) + kPostgresEpochUnixMicros / kMicrosPerTick;
    } else {
      std::int64_t unix_us = 0;
      if (__builtin_add_overflow(pg_us, kPostgresEpochUnixMicros, &unix_us)) {
        return std::nullopt;
      }
      using Wide = std::chrono::duration<std::int64_t, typename Duration::period>;
      ticks = std::chrono::floor<Wide>(std::chrono::microseconds(unix_us)).count();
    }
    // The extremes of Rep are max() and min(), i.e. infinity and -infinity: a finite value
    // landing on one would silently change meaning, so it does not fit (found by
    // fuzz/fuzz_pg_result: 294247-01-10 04:00:54.775807 UTC read as microseconds).
    if (!std::in_range<Rep>(ticks) || ticks == std::numeric_limits<Rep>::max() ||
        ticks == std::numeric_limits<Rep>::min()) {
      return std::nullopt;
    }
    return Tp(Duration(static_cast<Rep>(ticks)));
  }
}

namespace detail {

template <class>
inline constexpr bool kDependentFalse = false;

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};

template <class T>
struct IsSysTime : std::false_type {};
template <class Duration>
struct IsSysTime<SysTime<Duration>> : std::true_type {};

/// Character types: refused as integers, because `'7'` could mean 7, 55 or "7".
template <class T>
concept CharacterType = std::same_as<T, char> || std::same_as<T, wchar_t> ||
    std::same_as<T, char8_t> || std::same_as<T, char16_t> || std::same_as<T, char32_t>;

/// Integer types that the codec treats as numbers.
template <class T>
concept IntegerType = std::integral<T> && !std::same_as<T, bool> && !CharacterType<T>;

/// Writes `value` to `out` in network byte order (the wire format of binary values).
template <std::unsigned_integral U>
inline void store_be(U value, char* out) noexcept {
  for (std::size_t i = sizeof(U); i-- > 0;) {
    out[i] = static_cast<char>(value & 0xFFU);
    value = static_cast<U>(value >> 8);
  }
}

/// Reads a `U` in network byte order from `in` (no alignment required).
template <std::unsigned_integral U>
inline U load_be(const char* in) noexcept {
  U value = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) {
    value = static_cast<U>((value << 8) | static_cast<unsigned char>(in[i]));
  }
  return value;
}

}  // namespace detail
}  // namespace trading_shared::pg

#pragma once
/// @file
/// Query results with typed getters: `Result` owns a `PGresult`, `Row` is a view of one row.
///
/// Values are decoded from the binary format (PostgresClient requests binary results) and
/// also from the text format (`PQfformat == 0`, e.g. results of simple-protocol queries).
/// The column's type OID decides what may be read; the format only decides how:
///
/// | C++ type                    | column types                                              |
/// |-----------------------------|-----------------------------------------------------------|
/// | integers (not `char`/`bool`)| smallint, integer, bigint, oid; numeric holding an integer |
/// | `double`                    | real, double precision, numeric                           |
/// | `float`                     | real, double precision (rounded; beyond float: +-inf)     |
/// | `bool`                      | boolean                                                   |
/// | `std::string_view`          | text, varchar, char(n), name, "char", json, unknown, jsonb |
/// | `std::string`               | the above, and numeric and uuid                           |
/// | `pg::Numeric`               | numeric                                                   |
/// | `pg::Bytea`                 | bytea (binary format only: a zero-copy view)              |
/// | `std::vector<std::byte>`    | bytea (both formats: a copy)                              |
/// | `std::chrono::sys_time<D>`  | timestamptz, timestamp (read as UTC); binary format only  |
/// | `std::optional<T>`          | as `T`; NULL gives `std::nullopt`                         |
///
/// Integers are range-checked into the requested type. Every refused conversion, NULL read
/// into a non-optional, out-of-range value or malformed value throws
/// `Error(errc::type_mismatch)` naming the column, its type and OID, and the C++ type.
///
/// Deliberate limits:
/// - `std::string_view` of binary numeric or uuid is refused: their text form has to be
///   built, so there is nothing to point into. Read them as `std::string`.
/// - Text-format timestamps are refused: their form depends on the session's DateStyle and
///   TimeZone. Binary results (what PostgresClient requests) have neither problem.
/// - `infinity` and `-infinity` timestamps read as `time_point::max()` and `min()`.
///   Finite values that do not fit the requested duration (after 2262 for nanoseconds)
///   throw.
/// - Bytea in text format must be hex-decoded into new memory: read it as
///   `std::vector<std::byte>` (or request binary results).

#include <trading_shared/pg/types.hpp>

#include <libpq-fe.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace trading_shared::pg {
namespace detail {

/// One field of a result: enough to read it and to name it in an error.
struct FieldRef {
  const PGresult* result;
  int row;
  int column;
};

/// The name of a C++ type in error messages.
template <class T>
constexpr std::string_view cpp_type_name() noexcept {
  if constexpr (std::same_as<T, bool>) {
    return "bool";
  } else if constexpr (IntegerType<T>) {
    if constexpr (std::is_signed_v<T>) {
      return sizeof(T) == 1   ? "std::int8_t"
             : sizeof(T) == 2 ? "std::int16_t"
             : sizeof(T) == 4 ? "std::int32_t"
                              : "std::int64_t";
    } else {
      return sizeof(T) == 1   ? "std::uint8_t"
             : sizeof(T) == 2 ? "std::uint16_t"
             : sizeof(T) == 4 ? "std::uint32_t"
                              : "std::uint64_t";
    }
  } else if constexpr (std::same_as<T, float>) {
    return "float";
  } else if constexpr (std::same_as<T, double>) {
    return "double";
  } else if constexpr (std::same_as<T, std::string>) {
    return "std::string";
  } else if constexpr (std::same_as<T, std::string_view>) {
    return "std::string_view";
  } else if constexpr (std::same_as<T, Bytea>) {
    return "pg::Bytea";
  } else if constexpr (std::same_as<T, std::vector<std::byte>>) {
    return "std::vector<std::byte>";
  } else if constexpr (std::same_as<T, Numeric>) {
    return "pg::Numeric";
  } else if constexpr (IsSysTime<T>::value) {
    return "std::chrono::system_clock time point";
  } else {
    return "unsupported type";
  }
}

// Decoders, one per C++ type family. They assume the field is not NULL; each checks the
// column's OID and format and throws type_mismatch when the conversion is refused.
std::int64_t decode_integer(const FieldRef& field, std::string_view cpp_type);
double decode_double(const FieldRef& field);
float decode_float(const FieldRef& field);
bool decode_bool(const FieldRef& field);
std::string_view decode_string_view(const FieldRef& field);
std::string decode_string(const FieldRef& field);
Bytea decode_bytea(const FieldRef& field);
std::vector<std::byte> decode_byte_vector(const FieldRef& field);
Numeric decode_numeric(const FieldRef& field);
/// PostgreSQL's binary timestamp (microseconds since 2000-01-01; kTimestamp*Infinity).
std::int64_t decode_timestamp(const FieldRef& field, std::string_view cpp_type);

[[noreturn]] void throw_null(const FieldRef& field, std::string_view cpp_type);
[[noreturn]] void throw_integer_out_of_range(const FieldRef& field, std::string_view cpp_type,
                                             std::int64_t value);
[[noreturn]] void throw_timestamp_out_of_range(const FieldRef& field, std::string_view cpp_type,
                                               std::int64_t postgres_micros);

/// Decodes a non-NULL field as `T`.
template <class T>
T decode_field(const FieldRef& field) {
  if constexpr (std::same_as<T, bool>) {
    return decode_bool(field);
  } else if constexpr (IntegerType<T>) {
    const std::int64_t value = decode_integer(field, cpp_type_name<T>());
    if (!std::in_range<T>(value)) {
      throw_integer_out_of_range(field, cpp_type_name<T>(), value);
    }
    return static_cast<T>(value);
  } else if constexpr (std::same_as<T, double>) {
    return decode_double(field);
  } else if constexpr (std::same_as<T, float>) {
    return decode_float(field);
  } else if constexpr (std::same_as<T, std::string_view>) {
    return decode_string_view(field);
  } else if constexpr (std::same_as<T, std::string>) {
    return decode_string(field);
  } else if constexpr (std::same_as<T, Bytea>) {
    return decode_bytea(field);
  } else if constexpr (std::same_as<T, std::vector<std::byte>>) {
    return decode_byte_vector(field);
  } else if constexpr (std::same_as<T, Numeric>) {
    return decode_numeric(field);
  } else if constexpr (IsSysTime<T>::value) {
    const std::int64_t micros = decode_timestamp(field, cpp_type_name<T>());
    const auto tp = from_postgres_timestamp<typename T::duration>(micros);
    if (!tp) {
      throw_timestamp_out_of_range(field, cpp_type_name<T>(), micros);
    }
    return *tp;
  } else {
    static_assert(kDependentFalse<T>,
                  "trading_shared::pg: unsupported result type. Supported: bool, integers "
                  "(not char), float, double, std::string, std::string_view, pg::Bytea, "
                  "std::vector<std::byte>, pg::Numeric, std::chrono::system_clock time "
                  "points, and std::optional of these");
  }
}

/// Parses `PQcmdTuples` output: "" (no row count for this command) gives -1.
std::int64_t parse_affected_rows(const char* cmd_tuples) noexcept;

}  // namespace detail

/// One row of a `Result`: a view (result pointer and row index), valid while the `Result`
/// lives. Cheap to copy.
class Row {
 public:
  Row() = default;
  /// Unchecked: `Result::operator[]` and the iterators check the index.
  Row(const PGresult* result, std::size_t index) noexcept
      : result_(result), row_(static_cast<int>(index)) {}

  /// This row's index in its result.
  std::size_t index() const noexcept { return static_cast<std::size_t>(row_); }
  /// Number of columns.
  std::size_t size() const noexcept {
    return result_ == nullptr ? 0 : static_cast<std::size_t>(PQnfields(result_));
  }

  /// @throws Error(errc::invalid_argument) if there is no such column.
  bool is_null(std::size_t column) const;
  bool is_null(std::string_view column_name) const;

  /// The value of a column as `T` (see the file comment for the conversions).
  /// `T = std::optional<U>` reads NULL as `std::nullopt`; any other `T` throws
  /// `Error(errc::type_mismatch)` on NULL.
  /// @throws Error(errc::invalid_argument) if there is no such column.
  /// @throws Error(errc::type_mismatch) if the value cannot be read as `T`.
  template <class T>
  T get(std::size_t column) const;

  /// As above, with the column found by its exact name (first match).
  template <class T>
  T get(std::string_view column_name) const;

  /// Columns 0..N-1 as a tuple, e.g. `auto [id, price] = row.as<std::int64_t, Numeric>();`.
  /// @throws Error(errc::type_mismatch) if the row does not have exactly N columns.
  template <class... T>
  std::tuple<T...> as() const;

 private:
  int checked_column(std::size_t column) const;
  std::size_t column_by_name(std::string_view name) const;
  void check_arity(std::size_t expected) const;

  const PGresult* result_ = nullptr;
  int row_ = 0;
};

/// A random-access iterator over the rows of a `Result`; dereferencing yields a `Row` by
/// value (a proxy, as `std::views::iota` does), so it is an input iterator for legacy code.
class RowIterator {
 public:
  using iterator_concept = std::random_access_iterator_tag;
  using iterator_category = std::input_iterator_tag;
  using value_type = Row;
  using difference_type = std::ptrdiff_t;
  using reference = Row;

  RowIterator() = default;
  RowIterator(const PGresult* result, difference_type index) noexcept
      : result_(result), index_(index) {}

  Row operator*() const noexcept { return {result_, static_cast<std::size_t>(index_)}; }
  Row operator[](difference_type n) const noexcept {
    return {result_, static_cast<std::size_t>(index_ + n)};
  }

  RowIterator& operator++() noexcept {
    ++index_;
    return *this;
  }
  RowIterator operator++(int) noexcept {
    RowIterator old = *this;
    ++index_;
    return old;
  }
  RowIterator& operator--() noexcept {
    --index_;
    return *this;
  }
  RowIterator operator--(int) noexcept {
    RowIterator old = *this;
    --index_;
    return old;
  }
  RowIterator& operator+=(difference_type n) noexcept {
    index_ += n;
    return *this;
  }
  RowIterator& operator-=(difference_type n) noexcept {
    index_ -= n;
    return *this;
  }
  friend RowIterator operator+(RowIterator it, difference_type n) noexcept { return it += n; }
  friend RowIterator operator+(difference_type n, RowIterator it) noexcept { return it += n; }
  friend RowIterator operator-(RowIterator it, difference_type n) noexcept { return it -= n; }
  friend difference_type operator-(const RowIterator& a, const RowIterator& b) noexcept {
    return a.index_ - b.index_;
  }
  friend bool operator==(const RowIterator& a, const RowIterator& b) noexcept {
    return a.index_ == b.index_;
  }
  friend std::strong_ordering operator<=>(const RowIterator& a, const RowIterator& b) noexcept {
    return a.index_ <=> b.index_;
  }

 private:
  const PGresult* result_ = nullptr;
  difference_type index_ = 0;
};

/// The result of one statement: owns its `PGresult` (PQclear on destruction). Move-only.
///
/// Strings, `std::string_view`s and `Bytea`s read from it point into the `PGresult`, so
/// they are valid while the `Result` lives; it is a plain heap block, so moving the
/// `Result` does not invalidate them. Reading is thread-compatible (const methods do not
/// mutate).
class Result {
 public:
  using iterator = RowIterator;
  using const_iterator = RowIterator;

  Result() = default;
  /// Takes ownership of `result` (may be nullptr: an empty result).
  explicit Result(PGresult* result) noexcept : result_(result) {}
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  Result(Result&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}
  Result& operator=(Result&& other) noexcept;
  ~Result();

  /// Number of rows.
  std::size_t size() const noexcept {
    return result_ == nullptr ? 0 : static_cast<std::size_t>(PQntuples(result_));
  }
  bool empty() const noexcept { return size() == 0; }
  /// Number of columns.
  std::size_t columns() const noexcept {
    return result_ == nullptr ? 0 : static_cast<std::size_t>(PQnfields(result_));
  }
  /// @throws Error(errc::invalid_argument) if there is no such column.
  std::string_view column_name(std::size_t column) const;
  /// The index of the first column named exactly `name` (unlike `PQfnumber`, no case
  /// folding and no quote parsing: names arrive as the server spells them).
  std::optional<std::size_t> column_index(std::string_view name) const noexcept;
  /// The column's type OID; 0 if there is no such column.
  Oid column_type(std::size_t column) const noexcept;
  /// Rows affected by INSERT/UPDATE/DELETE/MERGE/SELECT/COPY/MOVE/FETCH (`PQcmdTuples`);
  /// -1 for commands without a row count.
  std::int64_t affected_rows() const noexcept;
  /// The status libpq gave the result (`PGRES_FATAL_ERROR` for an empty `Result`).
  ExecStatusType status() const noexcept {
    return result_ == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(result_);
  }

  /// @throws Error(errc::invalid_argument) if `row >= size()`.
  Row operator[](std::size_t row) const;
  /// The first row. @throws Error(errc::invalid_argument) if the result has no rows.
  Row front() const;

  iterator begin() const noexcept { return {result_, 0}; }
  iterator end() const noexcept { return {result_, static_cast<std::ptrdiff_t>(size())}; }

  PGresult* native() const noexcept { return result_; }
  /// Gives up ownership: the caller must PQclear the returned result.
  PGresult* release() noexcept { return std::exchange(result_, nullptr); }

 private:
  PGresult* result_ = nullptr;
};

// ---- implementation ------------------------------------------------------------------------

template <class T>
T Row::get(std::size_t column) const {
  const int col = checked_column(column);
  if constexpr (detail::IsOptional<T>::value) {
    if (PQgetisnull(result_, row_, col) != 0) {
      return std::nullopt;
    }
    return T(get<typename T::value_type>(column));
  } else {
    const detail::FieldRef field{result_, row_, col};
    if (PQgetisnull(result_, row_, col) != 0) {
      detail::throw_null(field, detail::cpp_type_name<T>());
    }
    return detail::decode_field<T>(field);
  }
}

template <class T>
T Row::get(std::string_view column_name) const {
  return get<T>(column_by_name(column_name));
}

template <class... T>
std::tuple<T...> Row::as() const {
  check_arity(sizeof...(T));
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    // Braces: left-to-right evaluation, so the first bad column is the one reported.
    return std::tuple<T...>{get<T>(I)...};
  }
  (std::index_sequence_for<T...>{});
}

}  // namespace trading_shared::pg

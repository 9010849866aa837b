#pragma once
/// @file
/// `CopyBuffer`: rows encoded in PostgreSQL's binary COPY format, for `PostgresClient::copy_in`.
/// The buffer is reused between chunks (no allocation per row in steady state).

#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/types.hpp>

#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

namespace trading_shared::pg {

namespace detail {
template <class T>
struct IsCopyOptional : std::false_type {};
template <class T>
struct IsCopyOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsSystemTimePoint : std::false_type {};
template <class D>
struct IsSystemTimePoint<std::chrono::time_point<std::chrono::system_clock, D>> : std::true_type {};
}  // namespace detail

class CopyBuffer {
 public:
  /// The 19-byte file header ("PGCOPY\n\377\r\n\0", flags, extension length).
  void append_header() {
    static constexpr char kSignature[] = "PGCOPY\n\377\r\n";
    data_.append(kSignature, sizeof(kSignature));  // includes the trailing NUL
    put32(0);
    put32(0);
  }
  /// The trailer: a field count of -1.
  void append_trailer() { put16(-1); }

  /// One tuple (a `std::tuple` of supported values) as one row.
  template <class Tuple>
  void append_row(const Tuple& row) {
    put16(static_cast<std::int16_t>(std::tuple_size_v<Tuple>));
    std::apply([this](const auto&... v) { (append_field(v), ...); }, row);
  }

  const std::string& data() const noexcept { return data_; }
  std::size_t size() const noexcept { return data_.size(); }
  void clear() noexcept { data_.clear(); }

 private:
  template <class T>
  void append_field(const T& v) {
    using V = std::remove_cvref_t<T>;
    if constexpr (std::is_same_v<V, std::nullopt_t>) {
      put32(-1);
    } else if constexpr (detail::IsCopyOptional<V>::value) {
      if (!v) {
        put32(-1);
      } else {
        append_field(*v);
      }
    } else if constexpr (std::is_same_v<V, bool>) {
      put32(1);
      data_.push_back(v ? '\1' : '\0');
    } else if constexpr (std::is_same_v<V, std::int16_t>) {
      put32(2);
      put16(v);
    } else if constexpr (std::is_same_v<V, std::int32_t>) {
      put32(4);
      put32(v);
    } else if constexpr (std::is_same_v<V, std::int64_t> || std::is_same_v<V, long long>) {
      put32(8);
      put64(static_cast<std::int64_t>(v));
    } else if constexpr (std::is_same_v<V, float>) {
      put32(4);
      put32(std::bit_cast<std::int32_t>(v));
    } else if constexpr (std::is_same_v<V, double>) {
      put32(8);
      put64(std::bit_cast<std::int64_t>(v));
    } else if constexpr (std::is_convertible_v<const V&, std::string_view>) {
      const std::string_view s = v;
      put32(static_cast<std::int32_t>(s.size()));
      data_.append(s);
    } else if constexpr (std::is_same_v<V, Bytea>) {
      put32(static_cast<std::int32_t>(v.size()));
      data_.append(v.as_string_view());
    } else if constexpr (detail::IsSystemTimePoint<V>::value) {
      const auto micros = to_postgres_timestamp(v);
      if (!micros) {
        throw Error(make_error_code(errc::invalid_argument), "copy_in: timestamp out of range",
                    RequestState::not_sent);
      }
      put32(8);
      put64(*micros);
    } else {
      static_assert(sizeof(V) == 0,
                    "copy_in supports bool, int16/32/64, float, double, strings, Bytea, "
                    "system_clock time points and std::optional of those");
    }
  }

  void put16(std::int16_t v) {
    const auto u = static_cast<std::uint16_t>(v);
    const char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
    data_.append(b, 2);
  }
  void put32(std::int32_t v) {
    const auto u = static_cast<std::uint32_t>(v);
    const char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16),
                       static_cast<char>(u >> 8), static_cast<char>(u)};
    data_.append(b, 4);
  }
  void put64(std::int64_t v) {
    const auto u = static_cast<std::uint64_t>(v);
    put32(static_cast<std::int32_t>(u >> 32));
    put32(static_cast<std::int32_t>(u & 0xffffffffU));
  }

  std::string data_;
};

}  // namespace trading_shared::pg

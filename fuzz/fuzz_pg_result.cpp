// Fuzzes PostgreSQL result decoding (src/pg/result.cpp): the values of a PGresult, in text and
// binary format, read through every typed getter of Row (and Result's own accessors).
//
// Input: byte 0 = columns (1 + b % 4); per column one byte choosing its type OID and one byte
// whose low bit is its format (1 = binary); then values row by row, column by column: a length
// byte (255 = NULL) followed by that many bytes. At most 3 rows. libpq builds the PGresult
// (PQmakeEmptyPGresult, PQsetResultAttrs, PQsetvalue) exactly as it would from the wire.
#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/types.hpp>

#include <libpq-fe.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pg = trading_shared::pg;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_pg_result: %s\n", what);
  std::abort();
}

constexpr std::array<pg::Oid, 24> kTypes = {
    pg::oid::kBool,      pg::oid::kBytea,       pg::oid::kChar,    pg::oid::kName,
    pg::oid::kInt8,      pg::oid::kInt2,        pg::oid::kInt4,    pg::oid::kText,
    pg::oid::kOid,       pg::oid::kJson,        pg::oid::kFloat4,  pg::oid::kFloat8,
    pg::oid::kUnknown,   pg::oid::kBpchar,      pg::oid::kVarchar, pg::oid::kDate,
    pg::oid::kTimestamp, pg::oid::kTimestamptz, pg::oid::kNumeric, pg::oid::kUuid,
    pg::oid::kJsonb,     pg::oid::kUnspecified, 1007 /* int4[] */, 114'000 /* user type */};

constexpr std::array<const char*, 4> kNames = {"id", "price", "id", "ts"};  // a duplicate name

template <class T>
void read(const pg::Row& row, std::size_t column) {
  try {
    const T value = row.get<T>(column);
    (void)value;
  } catch (const trading_shared::Error& e) {
    const auto code = e.code();
    if (code != trading_shared::make_error_code(trading_shared::errc::type_mismatch)) {
      fail("a getter threw something else than type_mismatch");
    }
  }
  // std::optional<T> decodes a non-NULL value exactly as T (checked on column 0 only, to keep
  // the exceptions per input, which dominate the run time, down).
  if (!row.is_null(column) && column != 0) return;
  try {
    const std::optional<T> value = row.get<std::optional<T>>(column);
    if (!value && !row.is_null(column)) fail("nullopt for a non-NULL value");
  } catch (const trading_shared::Error& e) {
    if (row.is_null(column)) fail("optional getter threw on NULL");
    (void)e;
  }
}

template <class D>
void timestamp_round_trip(std::int64_t micros) {
  const auto tp = pg::from_postgres_timestamp<D>(micros);
  if (!tp) return;
  const auto back = pg::to_postgres_timestamp(*tp);
  if constexpr (std::is_same_v<D, std::chrono::microseconds> ||
                std::is_same_v<D, std::chrono::nanoseconds>) {
    // Exact durations must round-trip (a finite value may not turn into +-infinity).
    if (!back || *back != micros) fail("timestamp does not round-trip");
  } else {
    (void)back;
  }
}

void read_everything(const pg::Row& row, std::size_t column) {
  using namespace std::chrono;
  read<bool>(row, column);
  read<std::int8_t>(row, column);
  read<std::int16_t>(row, column);
  read<std::int32_t>(row, column);
  read<std::int64_t>(row, column);
  read<std::uint8_t>(row, column);
  read<std::uint16_t>(row, column);
  read<std::uint32_t>(row, column);
  read<std::uint64_t>(row, column);
  read<float>(row, column);
  read<double>(row, column);
  read<std::string_view>(row, column);
  read<std::string>(row, column);
  read<pg::Bytea>(row, column);
  read<std::vector<std::byte>>(row, column);
  read<pg::Numeric>(row, column);
  read<sys_time<nanoseconds>>(row, column);
  read<sys_time<microseconds>>(row, column);
  read<sys_time<milliseconds>>(row, column);
  read<sys_seconds>(row, column);
  read<sys_days>(row, column);
  read<pg::SysTime<duration<double>>>(row, column);
  read<pg::SysTime<duration<std::int32_t, std::ratio<7>>>>(row, column);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::size_t pos = 0;
  const int columns = 1 + data[pos++] % 4;
  std::array<PGresAttDesc, 4> attrs{};
  for (int c = 0; c < columns; ++c) {
    const std::uint8_t type = pos < size ? data[pos++] : 0;
    const std::uint8_t format = pos < size ? data[pos++] : 0;
    auto& a = attrs[static_cast<std::size_t>(c)];
    a.name = const_cast<char*>(kNames[static_cast<std::size_t>(c)]);
    a.typid = kTypes[type % kTypes.size()];
    a.format = format & 1;
    a.typlen = -1;
    a.atttypmod = -1;
  }

  PGresult* raw = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
  if (raw == nullptr) fail("PQmakeEmptyPGresult failed");
  pg::Result result(raw);
  if (PQsetResultAttrs(raw, columns, attrs.data()) == 0) fail("PQsetResultAttrs failed");
  for (int r = 0; r < 3 && pos < size; ++r) {
    for (int c = 0; c < columns; ++c) {
      const std::uint8_t length = pos < size ? data[pos++] : 255;
      if (length == 255) {
        if (PQsetvalue(raw, r, c, nullptr, -1) == 0) fail("PQsetvalue failed");
        continue;
      }
      const std::size_t n = std::min<std::size_t>(length, size - pos);
      // PQsetvalue copies; a non-null pointer even for an empty value.
      std::string value(reinterpret_cast<const char*>(data) + pos, n);
      pos += n;
      if (PQsetvalue(raw, r, c, value.data(), static_cast<int>(n)) == 0) {
        fail("PQsetvalue failed");
      }
    }
  }

  // Result's own accessors.
  (void)result.affected_rows();
  (void)result.status();
  for (std::size_t c = 0; c <= result.columns(); ++c) {
    (void)result.column_type(c);
    try {
      (void)result.column_name(c);
    } catch (const trading_shared::Error&) {
      if (c < result.columns()) fail("column_name threw for an existing column");
    }
  }
  if (result.column_index("id") != std::optional<std::size_t>(0)) fail("column_index(id) != 0");
  try {
    (void)result[result.size()];
    fail("operator[] past the end did not throw");
  } catch (const trading_shared::Error&) {
  }

  std::size_t rows = 0;
  for (const pg::Row row : result) {
    ++rows;
    for (std::size_t c = 0; c < row.size(); ++c) read_everything(row, c);
    try {
      (void)row.get<std::optional<std::string_view>>("price");
      (void)row.get<std::optional<std::int64_t>>("id");
    } catch (const trading_shared::Error&) {
    }
    try {
      (void)row.get<std::string>("no such column");
      fail("get by an unknown name did not throw");
    } catch (const trading_shared::Error&) {
    }
    try {
      (void)row.as<std::optional<std::int64_t>, std::optional<pg::Numeric>>();
    } catch (const trading_shared::Error&) {
    }
    // The raw bytes of each value as other inputs of the public decoders.
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (row.is_null(c)) continue;
      const char* value = PQgetvalue(raw, static_cast<int>(row.index()), static_cast<int>(c));
      (void)pg::detail::parse_affected_rows(value);
      const int length = PQgetlength(raw, static_cast<int>(row.index()), static_cast<int>(c));
      if (length == 8) {
        std::int64_t micros = 0;
        for (int i = 0; i < 8; ++i) {
          micros = static_cast<std::int64_t>(static_cast<std::uint64_t>(micros) << 8 |
                                             static_cast<unsigned char>(value[i]));
        }
        timestamp_round_trip<std::chrono::microseconds>(micros);
        timestamp_round_trip<std::chrono::nanoseconds>(micros);
        timestamp_round_trip<std::chrono::seconds>(micros);
        timestamp_round_trip<std::chrono::duration<double>>(micros);
      }
    }
  }
  if (rows != result.size()) fail("iteration and size() disagree");
  if (!result.empty()) (void)result.front();
  return 0;
}

#include <trading_shared/pg/params.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/types.hpp>

#include <trading_shared/core/error.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace ts = trading_shared;
namespace pg = trading_shared::pg;
namespace oid = trading_shared::pg::oid;
using namespace std::chrono_literals;
using namespace std::string_literals;
using ::testing::HasSubstr;

namespace {

// ---- helpers -------------------------------------------------------------------------------

/// The bytes of parameter `i` (empty for NULL).
std::string param_bytes(const pg::ParamBuffer& params, int i) {
  const char* value = params.values()[i];
  if (value == nullptr) return {};
  return {value, static_cast<std::size_t>(params.lengths()[i])};
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (const int v : values) out += static_cast<char>(v);
  return out;
}

template <class U>
std::string be(U value) {
  std::string out(sizeof(U), '\0');
  pg::detail::store_be(value, out.data());
  return out;
}

std::string be16(std::int16_t v) { return be(static_cast<std::uint16_t>(v)); }
std::string be32(std::int32_t v) { return be(static_cast<std::uint32_t>(v)); }
std::string be64(std::int64_t v) { return be(static_cast<std::uint64_t>(v)); }

/// Runs `fn`, expecting `Error` with `code` whose message contains every `parts`.
void expect_error(const std::function<void()>& fn, ts::errc code,
                  std::initializer_list<std::string_view> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), make_error_code(code)) << e.what();
    for (const auto part : parts) EXPECT_THAT(e.what(), HasSubstr(std::string(part)));
  }
}

struct Column {
  std::string name;
  pg::Oid type;
  int format;  // 0 text, 1 binary
};

using Cell = std::optional<std::string>;

/// Builds a result without a server, as libpq's PQmakeEmptyPGresult family allows.
pg::Result make_result(const std::vector<Column>& columns,
                       const std::vector<std::vector<Cell>>& rows) {
  PGresult* result = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
  EXPECT_NE(result, nullptr);
  std::vector<std::string> names;
  names.reserve(columns.size());
  std::vector<PGresAttDesc> descs;
  for (const auto& column : columns) {
    names.push_back(column.name);
    PGresAttDesc desc{};
    desc.name = names.back().data();
    desc.typid = column.type;
    desc.format = column.format;
    desc.typlen = -1;
    desc.atttypmod = -1;
    descs.push_back(desc);
  }
  EXPECT_EQ(PQsetResultAttrs(result, static_cast<int>(descs.size()), descs.data()), 1);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t c = 0; c < rows[r].size(); ++c) {
      std::string copy = rows[r][c].value_or("");
      const int ok = rows[r][c] ? PQsetvalue(result, static_cast<int>(r), static_cast<int>(c),
                                             copy.data(), static_cast<int>(copy.size()))
                                : PQsetvalue(result, static_cast<int>(r), static_cast<int>(c),
                                             nullptr, -1);
      EXPECT_EQ(ok, 1);
    }
  }
  return pg::Result(result);
}

/// A one-row, one-column result.
pg::Result single(pg::Oid type, int format, Cell value, std::string name = "v") {
  return make_result({{std::move(name), type, format}}, {{std::move(value)}});
}

constexpr int kText = 0;
constexpr int kBinary = 1;

/// Binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
std::string numeric_bin(std::int16_t weight, std::uint16_t sign, std::uint16_t dscale,
                        std::initializer_list<std::uint16_t> digits) {
  std::string out = be16(static_cast<std::int16_t>(digits.size())) + be16(weight) + be(sign) +
                    be(dscale);
  for (const auto d : digits) out += be(d);
  return out;
}

constexpr std::uint16_t kPos = 0x0000;
constexpr std::uint16_t kNeg = 0x4000;

// ---- parameters ----------------------------------------------------------------------------

TEST(PgParamsTest, IntegersAreBinaryBigEndian) {
  pg::ParamBuffer params;
  params.set(std::int16_t{-2}, std::int32_t{42}, std::int64_t{-1}, 0x0102030405060708LL,
             std::int32_t{-42});
  ASSERT_EQ(params.count(), 5);
  EXPECT_EQ(params.types()[0], oid::kInt2);
  EXPECT_EQ(params.types()[1], oid::kInt4);
  EXPECT_EQ(params.types()[2], oid::kInt8);
  EXPECT_EQ(params.types()[3], oid::kInt8);
  EXPECT_EQ(param_bytes(params, 0), bytes({0xff, 0xfe}));
  EXPECT_EQ(param_bytes(params, 1), bytes({0, 0, 0, 0x2a}));
  EXPECT_EQ(param_bytes(params, 2), std::string(8, '\xff'));
  EXPECT_EQ(param_bytes(params, 3), bytes({1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(param_bytes(params, 4), bytes({0xff, 0xff, 0xff, 0xd6}));
  for (int i = 0; i < params.count(); ++i) EXPECT_EQ(params.formats()[i], 1) << i;
  EXPECT_EQ(params.lengths()[0], 2);
  EXPECT_EQ(params.lengths()[1], 4);
  EXPECT_EQ(params.lengths()[2], 8);
}

TEST(PgParamsTest, IntegerTypesWidenToAHoldingType) {
  pg::ParamBuffer params;
  params.set(std::int8_t{-3}, std::uint8_t{200}, std::uint16_t{65535}, std::uint32_t{4000000000U},
             std::uint64_t{7}, long{5}, static_cast<unsigned long long>(9));
  EXPECT_EQ(params.types()[0], oid::kInt2);
  EXPECT_EQ(param_bytes(params, 0), be16(-3));
  EXPECT_EQ(params.types()[1], oid::kInt2);
  EXPECT_EQ(param_bytes(params, 1), be16(200));
  EXPECT_EQ(params.types()[2], oid::kInt4);
  EXPECT_EQ(param_bytes(params, 2), be32(65535));
  EXPECT_EQ(params.types()[3], oid::kInt8);
  EXPECT_EQ(param_bytes(params, 3), be64(4000000000LL));
  EXPECT_EQ(params.types()[4], oid::kInt8);
  EXPECT_EQ(param_bytes(params, 4), be64(7));
  EXPECT_EQ(params.types()[5], oid::kInt8);
  EXPECT_EQ(params.types()[6], oid::kInt8);
  EXPECT_EQ(param_bytes(params, 6), be64(9));

  static_assert(pg::param_type_oid<short>() == oid::kInt2);
  static_assert(pg::param_type_oid<int>() == oid::kInt4);
  static_assert(pg::param_type_oid<long long>() == oid::kInt8);
  static_assert(pg::param_type_oid<unsigned>() == oid::kInt8);
}

TEST(PgParamsTest, Uint64OverInt64MaxIsRejected) {
  pg::ParamBuffer params;
  params.set(static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
  EXPECT_EQ(param_bytes(params, 0), be64(std::numeric_limits<std::int64_t>::max()));
  expect_error([&] { params.set(std::uint64_t{1} << 63); }, ts::errc::invalid_argument,
               {"9223372036854775808", "bigint"});
}

TEST(PgParamsTest, FloatingPointIsIeeeBigEndian) {
  pg::ParamBuffer params;
  params.set(1.5, 1.5f, -2.0, std::numeric_limits<double>::infinity());
  EXPECT_EQ(params.types()[0], oid::kFloat8);
  EXPECT_EQ(param_bytes(params, 0), bytes({0x3f, 0xf8, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(params.types()[1], oid::kFloat4);
  EXPECT_EQ(param_bytes(params, 1), bytes({0x3f, 0xc0, 0, 0}));
  EXPECT_EQ(param_bytes(params, 2), bytes({0xc0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(param_bytes(params, 3), bytes({0x7f, 0xf0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(params.formats()[0], 1);
  EXPECT_EQ(params.formats()[1], 1);
}

TEST(PgParamsTest, BoolIsOneByte) {
  pg::ParamBuffer params;
  params.set(true, false);
  EXPECT_EQ(params.types()[0], oid::kBool);
  EXPECT_EQ(param_bytes(params, 0), bytes({1}));
  EXPECT_EQ(param_bytes(params, 1), bytes({0}));
  EXPECT_EQ(params.lengths()[1], 1);
  EXPECT_EQ(params.formats()[1], 1);
}

TEST(PgParamsTest, StringsAreTextWithUnspecifiedTypeAndNulTerminated) {
  const std::string owned = "owned";
  const std::string_view view = "view-and-more";
  const char* c_string = "c-string";
  const char array[8] = {'a', 'r', 'r', '\0', 'x', 'x', 'x', 'x'};
  pg::ParamBuffer params;
  params.set(owned, view.substr(0, 4), c_string, "literal", array, std::string());
  ASSERT_EQ(params.count(), 6);
  const std::array<std::string_view, 6> expected = {"owned", "view", "c-string",
                                                    "literal", "arr", ""};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(params.types()[i], oid::kUnspecified) << i;
    EXPECT_EQ(params.formats()[i], 0) << i;
    EXPECT_EQ(params.lengths()[i], static_cast<int>(expected[i].size())) << i;
    ASSERT_NE(params.values()[i], nullptr) << i;
    // libpq takes text lengths from strlen().
    EXPECT_EQ(std::string_view(params.values()[i]), expected[i]) << i;
  }
}

TEST(PgParamsTest, TextWithNulIsRejected) {
  pg::ParamBuffer params;
  expect_error([&] { params.set("a\0b"s); }, ts::errc::invalid_argument, {"NUL", "$1", "Bytea"});
}

TEST(PgParamsTest, NullCStringIsNull) {
  pg::ParamBuffer params;
  const char* nothing = nullptr;
  params.set(nothing);
  EXPECT_EQ(params.values()[0], nullptr);
  EXPECT_EQ(params.types()[0], oid::kUnspecified);
}

TEST(PgParamsTest, ByteaIsBinaryWithEmbeddedNuls) {
  const std::string raw("\0a\0\xff", 4);
  const std::vector<std::byte> vec = {std::byte{0}, std::byte{1}};
  pg::ParamBuffer params;
  params.set(pg::Bytea(raw), vec, pg::Bytea());
  EXPECT_EQ(params.types()[0], oid::kBytea);
  EXPECT_EQ(params.formats()[0], 1);
  EXPECT_EQ(params.lengths()[0], 4);
  EXPECT_EQ(param_bytes(params, 0), raw);
  EXPECT_EQ(params.types()[1], oid::kBytea);
  EXPECT_EQ(param_bytes(params, 1), bytes({0, 1}));
  // An empty bytea is a value, not NULL: the pointer must not be null.
  EXPECT_NE(params.values()[2], nullptr);
  EXPECT_EQ(params.lengths()[2], 0);
}

TEST(PgParamsTest, NumericIsTextWithNumericOid) {
  pg::ParamBuffer params;
  params.set(pg::Numeric("-12345.678900"));
  EXPECT_EQ(params.types()[0], oid::kNumeric);
  EXPECT_EQ(params.formats()[0], 0);
  EXPECT_EQ(std::string_view(params.values()[0]), "-12345.678900");
  EXPECT_EQ(params.lengths()[0], 13);
}

TEST(PgParamsTest, TimestampsAreMicrosSince2000BigEndian) {
  using std::chrono::sys_days;
  using std::chrono::system_clock;
  const auto y2k = sys_days(std::chrono::year(2000) / 1 / 1);
  pg::ParamBuffer params;
  params.set(y2k + 1s, system_clock::time_point(y2k - 1us), y2k + 1500ns,
             std::chrono::sys_seconds(y2k - 1s), system_clock::time_point{}, y2k - 1ns);
  for (int i = 0; i < params.count(); ++i) {
    EXPECT_EQ(params.types()[i], oid::kTimestamptz) << i;
    EXPECT_EQ(params.formats()[i], 1) << i;
    EXPECT_EQ(params.lengths()[i], 8) << i;
  }
  EXPECT_EQ(param_bytes(params, 0), bytes({0, 0, 0, 0, 0, 0x0f, 0x42, 0x40}));  // 1000000
  EXPECT_EQ(param_bytes(params, 1), be64(-1));
  EXPECT_EQ(param_bytes(params, 2), be64(1));  // 1.5 us rounds down
  EXPECT_EQ(param_bytes(params, 3), be64(-1000000));
  EXPECT_EQ(param_bytes(params, 4), be64(-946684800000000LL));  // the Unix epoch
  EXPECT_EQ(param_bytes(params, 5), be64(-1));  // rounds towards the past
}

TEST(PgParamsTest, TimestampInfinitiesAndOverflow) {
  using Tp = std::chrono::system_clock::time_point;
  pg::ParamBuffer params;
  params.set(Tp::max(), Tp::min());
  EXPECT_EQ(param_bytes(params, 0), be64(std::numeric_limits<std::int64_t>::max()));
  EXPECT_EQ(param_bytes(params, 1), be64(std::numeric_limits<std::int64_t>::min()));
  const std::chrono::sys_seconds far(std::chrono::seconds(std::int64_t{1} << 60));
  expect_error([&] { params.set(far); }, ts::errc::invalid_argument, {"timestamptz"});
}

TEST(PgParamsTest, OptionalEmptyIsNullWithTheValueType) {
  pg::ParamBuffer params;
  params.set(std::optional<std::int32_t>{}, std::optional<std::int32_t>{7},
             std::optional<std::string>{}, std::optional<double>{}, std::nullopt, nullptr,
             std::optional<pg::Bytea>{}, std::optional<std::chrono::system_clock::time_point>{});
  ASSERT_EQ(params.count(), 8);
  EXPECT_EQ(params.values()[0], nullptr);
  EXPECT_EQ(params.types()[0], oid::kInt4);
  EXPECT_EQ(params.formats()[0], 1);
  EXPECT_EQ(param_bytes(params, 1), be32(7));
  EXPECT_EQ(params.types()[1], oid::kInt4);
  EXPECT_EQ(params.values()[2], nullptr);
  EXPECT_EQ(params.types()[2], oid::kUnspecified);
  EXPECT_EQ(params.formats()[2], 0);
  EXPECT_EQ(params.values()[3], nullptr);
  EXPECT_EQ(params.types()[3], oid::kFloat8);
  EXPECT_EQ(params.values()[4], nullptr);
  EXPECT_EQ(params.types()[4], oid::kUnspecified);
  EXPECT_EQ(params.values()[5], nullptr);
  EXPECT_EQ(params.types()[5], oid::kUnspecified);
  EXPECT_EQ(params.types()[6], oid::kBytea);
  EXPECT_EQ(params.types()[7], oid::kTimestamptz);
  for (int i : {0, 2, 3, 4, 5, 6, 7}) EXPECT_EQ(params.lengths()[i], 0) << i;
}

TEST(PgParamsTest, ReuseKeepsCapacityAndStorage) {
  pg::ParamBuffer params;
  const std::string symbol = "BTC-USD-PERPETUAL-SWAP-WITH-A-LONG-NAME";
  params.set(std::int64_t{1}, symbol, 2.5, pg::Numeric("1.25"), std::optional<int>{});
  const char* first_value = params.values()[0];
  const char* const* value_array = params.values();
  const pg::Oid* type_array = params.types();
  const std::size_t capacity = params.storage_capacity();

  for (int round = 0; round < 3; ++round) {
    params.set(std::int64_t{2}, symbol, 3.5, pg::Numeric("1.75"), std::optional<int>{});
    EXPECT_EQ(params.storage_capacity(), capacity);
    EXPECT_EQ(params.values(), value_array);
    EXPECT_EQ(params.values()[0], first_value);
    EXPECT_EQ(params.types(), type_array);
  }
  EXPECT_EQ(param_bytes(params, 0), be64(2));
  EXPECT_EQ(std::string_view(params.values()[1]), symbol);
  EXPECT_EQ(std::string_view(params.values()[3]), "1.75");

  params.clear();
  EXPECT_EQ(params.count(), 0);
  EXPECT_EQ(params.storage_capacity(), capacity);
}

TEST(PgParamsTest, PointersFollowStorageGrowth) {
  // Many appends force the storage to move; values() must point into the final storage.
  pg::ParamBuffer params;
  for (int i = 0; i < 200; ++i) params.append(std::to_string(i) + std::string(50, 'x'));
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(std::string_view(params.values()[i]), std::to_string(i) + std::string(50, 'x'));
  }
  params.append(std::int32_t{5});
  EXPECT_EQ(param_bytes(params, 200), be32(5));
  EXPECT_EQ(std::string_view(params.values()[0]), "0" + std::string(50, 'x'));
}

TEST(PgParamsTest, CopiesAndMovesRebuildPointers) {
  pg::ParamBuffer original = pg::make_params(std::int32_t{1}, "abc");
  (void)original.values();
  const pg::ParamBuffer copy = original;
  EXPECT_NE(copy.values()[1], original.values()[1]);
  EXPECT_EQ(std::string_view(copy.values()[1]), "abc");
  pg::ParamBuffer moved = std::move(original);
  EXPECT_EQ(std::string_view(moved.values()[1]), "abc");
  EXPECT_EQ(param_bytes(moved, 0), be32(1));
  pg::ParamBuffer assigned;
  assigned = copy;
  EXPECT_EQ(std::string_view(assigned.values()[1]), "abc");
}

// ---- results: basics -----------------------------------------------------------------------

TEST(PgResultTest, EmptyAndDefault) {
  const pg::Result none;
  EXPECT_EQ(none.size(), 0U);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.columns(), 0U);
  EXPECT_EQ(none.affected_rows(), -1);
  EXPECT_EQ(none.begin(), none.end());
  expect_error([&] { (void)none.front(); }, ts::errc::invalid_argument, {"no rows"});

  const auto result = make_result({{"a", oid::kInt4, kBinary}}, {});
  EXPECT_TRUE(result.empty());
  EXPECT_EQ(result.columns(), 1U);
  EXPECT_EQ(result.status(), PGRES_TUPLES_OK);
  expect_error([&] { (void)result[0]; }, ts::errc::invalid_argument, {"row index 0"});
  // No command tag in a hand-made result: no row count.
  EXPECT_EQ(result.affected_rows(), -1);
}

TEST(PgResultTest, AffectedRowsParsing) {
  EXPECT_EQ(pg::detail::parse_affected_rows(""), -1);
  EXPECT_EQ(pg::detail::parse_affected_rows(nullptr), -1);
  EXPECT_EQ(pg::detail::parse_affected_rows("0"), 0);
  EXPECT_EQ(pg::detail::parse_affected_rows("12345678901"), 12345678901LL);
  EXPECT_EQ(pg::detail::parse_affected_rows("x"), -1);
}

TEST(PgResultTest, ColumnsByIndexAndName) {
  const auto result = make_result(
      {{"id", oid::kInt8, kBinary}, {"Name", oid::kText, kBinary}, {"id", oid::kInt4, kBinary}},
      {{be64(1), "one"s, be32(9)}});
  EXPECT_EQ(result.columns(), 3U);
  EXPECT_EQ(result.column_name(1), "Name");
  EXPECT_EQ(result.column_type(0), oid::kInt8);
  EXPECT_EQ(result.column_type(2), oid::kInt4);
  EXPECT_EQ(result.column_type(3), oid::kUnspecified);
  EXPECT_EQ(result.column_index("id"), 0U);  // first match
  EXPECT_EQ(result.column_index("Name"), 1U);
  EXPECT_EQ(result.column_index("name"), std::nullopt);  // exact: no case folding
  expect_error([&] { (void)result.column_name(3); }, ts::errc::invalid_argument, {"column index 3"});

  const pg::Row row = result.front();
  EXPECT_EQ(row.size(), 3U);
  EXPECT_EQ(row.get<std::int64_t>("id"), 1);
  EXPECT_EQ(row.get<std::string>("Name"), "one");
  EXPECT_FALSE(row.is_null("Name"));
  expect_error([&] { (void)row.get<std::string>("nope"); }, ts::errc::invalid_argument,
               {"no column named \"nope\"", "id, Name, id"});
  expect_error([&] { (void)row.get<std::string>(7); }, ts::errc::invalid_argument,
               {"column index 7", "3 columns"});
}

TEST(PgResultTest, NullHandling) {
  const auto result = make_result({{"a", oid::kInt4, kBinary}, {"b", oid::kText, kBinary}},
                                  {{std::nullopt, std::nullopt}, {be32(5), "x"s}});
  const pg::Row row = result[0];
  EXPECT_TRUE(row.is_null(0));
  EXPECT_TRUE(row.is_null("b"));
  EXPECT_EQ(row.get<std::optional<std::int32_t>>(0), std::nullopt);
  EXPECT_EQ(row.get<std::optional<std::string_view>>("b"), std::nullopt);
  expect_error([&] { (void)row.get<std::int32_t>(0); }, ts::errc::type_mismatch,
               {"column \"a\"", "is NULL", "std::int32_t", "std::optional"});
  EXPECT_EQ(result[1].get<std::optional<std::int32_t>>(0), 5);
  EXPECT_EQ(result[1].get<std::optional<std::string>>(1), "x");
  // An empty text is not NULL.
  const auto empty = single(oid::kText, kBinary, ""s);
  EXPECT_FALSE(empty.front().is_null(0));
  EXPECT_EQ(empty.front().get<std::optional<std::string>>(0), "");
}

TEST(PgResultTest, IterationAndTuples) {
  const auto result = make_result({{"id", oid::kInt4, kBinary}, {"sym", oid::kVarchar, kBinary}},
                                  {{be32(1), "a"s}, {be32(2), "b"s}, {be32(3), "c"s}});
  static_assert(std::random_access_iterator<pg::Result::iterator>);
  static_assert(std::ranges::random_access_range<const pg::Result&>);
  std::vector<std::int32_t> ids;
  std::string symbols;
  for (const pg::Row row : result) {
    const auto [id, sym] = row.as<std::int32_t, std::string_view>();
    ids.push_back(id);
    symbols += sym;
  }
  EXPECT_EQ(ids, (std::vector<std::int32_t>{1, 2, 3}));
  EXPECT_EQ(symbols, "abc");
  EXPECT_EQ(result.end() - result.begin(), 3);
  EXPECT_EQ((result.begin() + 2)->get<std::int32_t>(0), 3);
  EXPECT_EQ(result.begin()[1].index(), 1U);
  auto it = result.end();
  --it;
  EXPECT_EQ((*it).get<std::string>(1), "c");
  EXPECT_LT(result.begin(), it);
  EXPECT_EQ(std::ranges::count_if(result, [](const pg::Row& r) {
              return r.get<std::int32_t>(0) > 1;
            }),
            2);

  expect_error([&] { (void)result[0].as<std::int32_t>(); }, ts::errc::type_mismatch,
               {"2 columns", "reads 1"});
  const auto [a, b] = result[2].as<std::optional<std::int64_t>, std::string>();
  EXPECT_EQ(a, 3);
  EXPECT_EQ(b, "c");
}

TEST(PgResultTest, MoveTransfersOwnership) {
  auto result = single(oid::kText, kBinary, "hello"s);
  const std::string_view view = result.front().get<std::string_view>(0);
  pg::Result moved = std::move(result);
  EXPECT_EQ(result.native(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved.size(), 1U);
  EXPECT_EQ(view, "hello");  // the PGresult did not move
  pg::Result other;
  other = std::move(moved);
  EXPECT_EQ(other.front().get<std::string>(0), "hello");
  PGresult* raw = other.release();
  EXPECT_EQ(other.native(), nullptr);
  PQclear(raw);
}

// ---- results: integers ---------------------------------------------------------------------

TEST(PgResultTest, BinaryIntegers) {
  const auto result = make_result({{"i2", oid::kInt2, kBinary},
                                   {"i4", oid::kInt4, kBinary},
                                   {"i8", oid::kInt8, kBinary},
                                   {"o", oid::kOid, kBinary}},
                                  {{be16(-7), be32(-123456), be64(-9000000000LL), be32(-1)}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<std::int16_t>(0), -7);
  EXPECT_EQ(row.get<std::int64_t>(0), -7);
  EXPECT_EQ(row.get<std::int32_t>(1), -123456);
  EXPECT_EQ(row.get<long long>(1), -123456);
  EXPECT_EQ(row.get<std::int64_t>(2), -9000000000LL);
  EXPECT_EQ(row.get<std::uint32_t>(3), 4294967295U);  // oid is unsigned
  EXPECT_EQ(row.get<std::int64_t>(3), 4294967295LL);
}

TEST(PgResultTest, IntegerRangeChecks) {
  const auto result = make_result(
      {{"big", oid::kInt8, kBinary}, {"neg", oid::kInt4, kBinary}, {"o", oid::kOid, kBinary}},
      {{be64(70000), be32(-1), be32(-1)}});
  const pg::Row row = result.front();
  expect_error([&] { (void)row.get<std::int16_t>(0); }, ts::errc::type_mismatch,
               {"column \"big\"", "bigint", "oid 20", "std::int16_t", "70000", "out of range"});
  EXPECT_EQ(row.get<std::int32_t>(0), 70000);
  EXPECT_EQ(row.get<std::uint16_t>(0) + 0, 70000 - 65536 + 65536 - 65536 + 65536 - 65536 + 4464)
      << "unreachable";
}

}  // namespace

#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/params.hpp>
#include <trading_shared/pg/result.hpp>
#include <trading_shared/pg/types.hpp>

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
  if (value == nullptr) {
    return {};
  }
  return {value, static_cast<std::size_t>(params.lengths()[i])};
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (const int v : values) {
    out += static_cast<char>(v);
  }
  return out;
}

template <class U>
std::string be(U value) {
  std::string out(sizeof(U), '\0');
  pg::detail::store_be(value, out.data());
  return out;
}

std::string be16(std::int16_t v) {
  return be(static_cast<std::uint16_t>(v));
}
std::string be32(std::int32_t v) {
  return be(static_cast<std::uint32_t>(v));
}
std::string be64(std::int64_t v) {
  return be(static_cast<std::uint64_t>(v));
}

/// Runs `fn`, expecting `Error` with `code` whose message contains every `parts`.
void expect_error(const std::function<void()>& fn, ts::errc code,
                  std::initializer_list<std::string_view> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), make_error_code(code)) << e.what();
    for (const auto part : parts) {
      EXPECT_THAT(e.what(), HasSubstr(std::string(part)));
    }
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
      const int ok =
          rows[r][c] ? PQsetvalue(result, static_cast<int>(r), static_cast<int>(c), copy.data(),
                                  static_cast<int>(copy.size()))
                     : PQsetvalue(result, static_cast<int>(r), static_cast<int>(c), nullptr, -1);
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
  std::string out =
      be16(static_cast<std::int16_t>(digits.size())) + be16(weight) + be(sign) + be(dscale);
  for (const auto d : digits) {
    out += be(d);
  }
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
  for (int i = 0; i < params.count(); ++i) {
    EXPECT_EQ(params.formats()[i], 1) << i;
  }
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
  const std::array<std::string_view, 6> expected = {"owned",   "view", "c-string",
                                                    "literal", "arr",  ""};
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
  EXPECT_EQ(param_bytes(params, 5), be64(-1));                  // rounds towards the past
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
  for (int i : {0, 2, 3, 4, 5, 6, 7}) {
    EXPECT_EQ(params.lengths()[i], 0) << i;
  }
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
  for (int i = 0; i < 200; ++i) {
    params.append(std::to_string(i) + std::string(50, 'x'));
  }
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
  expect_error([&] { (void)result.column_name(3); }, ts::errc::invalid_argument,
               {"column index 3"});

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
  EXPECT_EQ((*(result.begin() + 2)).get<std::int32_t>(0), 3);
  EXPECT_EQ(result.begin()[1].index(), 1U);
  auto it = result.end();
  --it;
  EXPECT_EQ((*it).get<std::string>(1), "c");
  EXPECT_LT(result.begin(), it);
  EXPECT_EQ(
      std::ranges::count_if(result, [](const pg::Row& r) { return r.get<std::int32_t>(0) > 1; }),
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
  expect_error([&] { (void)row.get<std::uint16_t>(0); }, ts::errc::type_mismatch,
               {"std::uint16_t", "70000"});
  expect_error([&] { (void)row.get<std::uint64_t>(1); }, ts::errc::type_mismatch,
               {"std::uint64_t", "-1", "out of range"});
  expect_error([&] { (void)row.get<std::int32_t>(2); }, ts::errc::type_mismatch,
               {"std::int32_t", "4294967295"});
  EXPECT_EQ(row.get<std::uint64_t>(2), 4294967295U);
}

TEST(PgResultTest, TextIntegers) {
  const auto result =
      make_result({{"i2", oid::kInt2, kText},
                   {"i4", oid::kInt4, kText},
                   {"i8", oid::kInt8, kText},
                   {"o", oid::kOid, kText},
                   {"bad", oid::kInt4, kText}},
                  {{"-7"s, "123456"s, "-9223372036854775808"s, "4294967295"s, "12x"s}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<std::int16_t>(0), -7);
  EXPECT_EQ(row.get<std::int32_t>(1), 123456);
  EXPECT_EQ(row.get<std::int64_t>(2), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(row.get<std::uint32_t>(3), 4294967295U);
  expect_error([&] { (void)row.get<std::int16_t>(1); }, ts::errc::type_mismatch,
               {"123456", "out of range"});
  expect_error([&] { (void)row.get<std::int32_t>(4); }, ts::errc::type_mismatch,
               {"column \"bad\"", "malformed", "12x"});
}

TEST(PgResultTest, MalformedBinaryLengthIsTypeMismatch) {
  const auto result = single(oid::kInt4, kBinary, bytes({0, 1}));
  expect_error([&] { (void)result.front().get<std::int32_t>(0); }, ts::errc::type_mismatch,
               {"malformed", "2 bytes, expected 4"});
}

// ---- results: floating point and bool ------------------------------------------------------

TEST(PgResultTest, BinaryFloatingPoint) {
  const auto result = make_result(
      {{"f4", oid::kFloat4, kBinary},
       {"f8", oid::kFloat8, kBinary},
       {"huge", oid::kFloat8, kBinary}},
      {{bytes({0x3f, 0xc0, 0, 0}), bytes({0xc0, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18}),
        be64(0x7fefffffffffffffLL)}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<float>(0), 1.5f);
  EXPECT_EQ(row.get<double>(0), 1.5);
  EXPECT_DOUBLE_EQ(row.get<double>(1), -3.141592653589793);
  EXPECT_FLOAT_EQ(row.get<float>(1), -3.14159265f);
  // Beyond float's range: infinity, not an error (documented).
  EXPECT_EQ(row.get<float>(2), std::numeric_limits<float>::infinity());
  EXPECT_EQ(row.get<double>(2), std::numeric_limits<double>::max());
}

TEST(PgResultTest, TextFloatingPointIncludingSpecials) {
  const auto result = make_result({{"a", oid::kFloat8, kText},
                                   {"b", oid::kFloat8, kText},
                                   {"c", oid::kFloat8, kText},
                                   {"d", oid::kFloat8, kText},
                                   {"e", oid::kFloat4, kText},
                                   {"f", oid::kFloat8, kText}},
                                  {{"0.1"s, "NaN"s, "Infinity"s, "-Infinity"s, "1.1"s, "1e-5"s}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<double>(0), 0.1);
  EXPECT_TRUE(std::isnan(row.get<double>(1)));
  EXPECT_EQ(row.get<double>(2), std::numeric_limits<double>::infinity());
  EXPECT_EQ(row.get<double>(3), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(row.get<float>(3), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(row.get<float>(4), 1.1f);
  // A real read as double agrees between text and binary results.
  EXPECT_EQ(row.get<double>(4), static_cast<double>(1.1f));
  EXPECT_EQ(row.get<double>(5), 1e-5);
}

TEST(PgResultTest, Bool) {
  const auto result = make_result({{"bt", oid::kBool, kBinary},
                                   {"bf", oid::kBool, kBinary},
                                   {"tt", oid::kBool, kText},
                                   {"tf", oid::kBool, kText},
                                   {"bad", oid::kBool, kText}},
                                  {{bytes({1}), bytes({0}), "t"s, "f"s, "yes"s}});
  const pg::Row row = result.front();
  EXPECT_TRUE(row.get<bool>(0));
  EXPECT_FALSE(row.get<bool>(1));
  EXPECT_TRUE(row.get<bool>(2));
  EXPECT_FALSE(row.get<bool>(3));
  expect_error([&] { (void)row.get<bool>(4); }, ts::errc::type_mismatch, {"malformed"});
  expect_error([&] { (void)row.get<std::int32_t>(0); }, ts::errc::type_mismatch,
               {"boolean", "oid 16", "std::int32_t"});
}

// ---- results: strings, json, uuid ----------------------------------------------------------

TEST(PgResultTest, StringTypesAreZeroCopy) {
  const auto result = make_result(
      {{"t", oid::kText, kBinary},
       {"vc", oid::kVarchar, kBinary},
       {"bp", oid::kBpchar, kBinary},
       {"n", oid::kName, kBinary},
       {"j", oid::kJson, kBinary},
       {"u", oid::kUnknown, kBinary},
       {"c", oid::kChar, kBinary},
       {"tt", oid::kText, kText}},
      {{"text"s, "varchar"s, "ab  "s, "pg_class"s, R"({"a": 1})"s, "lit"s, "r"s, "text format"s}});
  const pg::Row row = result.front();
  const std::array<std::string_view, 8> expected = {
      "text", "varchar", "ab  ", "pg_class", R"({"a": 1})", "lit", "r", "text format"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto view = row.get<std::string_view>(i);
    EXPECT_EQ(view, expected[i]) << i;
    EXPECT_EQ(view.data(), PQgetvalue(result.native(), 0, static_cast<int>(i))) << i;
    EXPECT_EQ(row.get<std::string>(i), expected[i]) << i;
  }
}

TEST(PgResultTest, Jsonb) {
  const auto result = make_result(
      {{"b", oid::kJsonb, kBinary}, {"t", oid::kJsonb, kText}, {"bad", oid::kJsonb, kBinary}},
      {{"\x01{\"a\": [1, 2]}"s, "{\"a\": 1}"s, "\x02{}"s}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<std::string_view>(0), R"({"a": [1, 2]})");
  EXPECT_EQ(row.get<std::string>(0), R"({"a": [1, 2]})");
  EXPECT_EQ(row.get<std::string>(1), R"({"a": 1})");
  expect_error([&] { (void)row.get<std::string>(2); }, ts::errc::type_mismatch,
               {"jsonb", "version"});
}

TEST(PgResultTest, Uuid) {
  const auto result = make_result(
      {{"b", oid::kUuid, kBinary}, {"t", oid::kUuid, kText}, {"short", oid::kUuid, kBinary}},
      {{bytes({0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0xed, 0xcb, 0xa9, 0x87, 0x65,
               0x43, 0x21}),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"s, bytes({1, 2, 3})}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<std::string>(0), "12345678-9abc-def0-0fed-cba987654321");
  EXPECT_EQ(row.get<std::string>(1), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(row.get<std::string_view>(1), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  expect_error([&] { (void)row.get<std::string_view>(0); }, ts::errc::type_mismatch,
               {"uuid", "std::string_view", "read it as std::string"});
  expect_error([&] { (void)row.get<std::string>(2); }, ts::errc::type_mismatch,
               {"malformed", "3 bytes"});
}

TEST(PgResultTest, WrongTypeMessagesNameColumnTypeAndCppType) {
  const auto result = make_result(
      {{"price", oid::kNumeric, kBinary}, {"qty", oid::kInt8, kBinary}, {"s", oid::kText, kBinary}},
      {{numeric_bin(0, kPos, 0, {1}), be64(5), "x"s}});
  const pg::Row row = result.front();
  expect_error(
      [&] { (void)row.get<bool>("price"); }, ts::errc::type_mismatch,
      {"column \"price\"", "numeric", "oid 1700", "binary format", "bool", "no conversion"});
  expect_error([&] { (void)row.get<std::string>("qty"); }, ts::errc::type_mismatch,
               {"column \"qty\"", "bigint", "oid 20", "std::string"});
  expect_error([&] { (void)row.get<double>("qty"); }, ts::errc::type_mismatch, {"double"});
  expect_error([&] { (void)row.get<std::int64_t>("s"); }, ts::errc::type_mismatch,
               {"text", "oid 25", "std::int64_t"});
  expect_error([&] { (void)row.get<pg::Bytea>("s"); }, ts::errc::type_mismatch, {"pg::Bytea"});
  expect_error([&] { (void)row.get<std::chrono::system_clock::time_point>("s"); },
               ts::errc::type_mismatch, {"time point"});
  expect_error([&] { (void)row.get<pg::Numeric>("qty"); }, ts::errc::type_mismatch,
               {"pg::Numeric"});
}

// ---- results: bytea ------------------------------------------------------------------------

TEST(PgResultTest, Bytea) {
  const std::string raw("\0\x01\xff\0", 4);
  const auto result = make_result(
      {{"b", oid::kBytea, kBinary}, {"t", oid::kBytea, kText}, {"bad", oid::kBytea, kText}},
      {{raw, R"(\x0001ff00)"s, R"(\001)"s}});
  const pg::Row row = result.front();
  const auto view = row.get<pg::Bytea>(0);
  EXPECT_EQ(view.size(), 4U);
  EXPECT_EQ(view.as_string_view(), raw);
  EXPECT_EQ(view, pg::Bytea(raw));
  const auto copy = row.get<std::vector<std::byte>>(0);
  EXPECT_EQ(copy,
            (std::vector<std::byte>{std::byte{0}, std::byte{1}, std::byte{0xff}, std::byte{0}}));
  EXPECT_EQ(row.get<std::vector<std::byte>>(1), copy);
  expect_error([&] { (void)row.get<pg::Bytea>(1); }, ts::errc::type_mismatch,
               {"std::vector<std::byte>"});
  expect_error([&] { (void)row.get<std::vector<std::byte>>(2); }, ts::errc::type_mismatch, {"hex"});
  expect_error([&] { (void)row.get<std::string>(0); }, ts::errc::type_mismatch, {"bytea"});
}

// ---- results: numeric ----------------------------------------------------------------------

struct NumericCase {
  std::string binary;
  std::string_view text;
};

TEST(PgResultTest, BinaryNumericPrintsLikePostgres) {
  const std::vector<NumericCase> cases = {
      {numeric_bin(0, kPos, 0, {}), "0"},
      {numeric_bin(0, kPos, 2, {}), "0.00"},
      {numeric_bin(0, kPos, 0, {1}), "1"},
      {numeric_bin(0, kNeg, 0, {1}), "-1"},
      {numeric_bin(1, kPos, 4, {1, 2345, 6789}), "12345.6789"},
      {numeric_bin(1, kNeg, 4, {1, 2345, 6789}), "-12345.6789"},
      {numeric_bin(-1, kPos, 4, {1}), "0.0001"},
      {numeric_bin(-2, kPos, 8, {1234}), "0.00001234"},
      {numeric_bin(5, kPos, 0, {1}), "100000000000000000000"},
      {numeric_bin(0, kPos, 0, {100}), "100"},
      {numeric_bin(0, kPos, 3, {1, 5000}), "1.500"},
      {numeric_bin(0, kPos, 3, {1}), "1.000"},
      {numeric_bin(-1, kNeg, 1, {5000}), "-0.5"},
      {numeric_bin(2, kPos, 2, {12, 3456, 7890, 1200}), "1234567890.12"},
      {numeric_bin(0, kPos, 6, {3, 1415, 9200}), "3.141592"},
      {numeric_bin(0, 0xC000, 0, {}), "NaN"},
      {numeric_bin(0, 0xD000, 0, {}), "Infinity"},
      {numeric_bin(0, 0xF000, 0, {}), "-Infinity"},
  };
  for (const auto& c : cases) {
    const auto result = single(oid::kNumeric, kBinary, c.binary);
    const pg::Row row = result.front();
    EXPECT_EQ(row.get<std::string>(0), c.text);
    EXPECT_EQ(row.get<pg::Numeric>(0), pg::Numeric(c.text));
    EXPECT_EQ(row.get<pg::Numeric>(0).str(), c.text);
  }
}

TEST(PgResultTest, NumericToDoubleAndInteger) {
  const auto result =
      make_result({{"frac", oid::kNumeric, kBinary},
                   {"whole", oid::kNumeric, kBinary},
                   {"nan", oid::kNumeric, kBinary},
                   {"inf", oid::kNumeric, kBinary},
                   {"big", oid::kNumeric, kBinary},
                   {"text", oid::kNumeric, kText},
                   {"neg", oid::kNumeric, kBinary}},
                  {{numeric_bin(1, kPos, 4, {1, 2345, 6789}), numeric_bin(0, kPos, 3, {1}),
                    numeric_bin(0, 0xC000, 0, {}), numeric_bin(0, 0xD000, 0, {}),
                    numeric_bin(5, kPos, 0, {1}), "-42.000"s, numeric_bin(0, kNeg, 0, {70})}});
  const pg::Row row = result.front();
  EXPECT_DOUBLE_EQ(row.get<double>("frac"), 12345.6789);
  EXPECT_EQ(row.get<double>("whole"), 1.0);
  EXPECT_TRUE(std::isnan(row.get<double>("nan")));
  EXPECT_EQ(row.get<double>("inf"), std::numeric_limits<double>::infinity());
  EXPECT_EQ(row.get<double>("big"), 1e20);
  EXPECT_EQ(row.get<double>("text"), -42.0);
  EXPECT_EQ(row.get<pg::Numeric>("text"), pg::Numeric("-42.000"));
  EXPECT_EQ(row.get<std::string_view>("text"), "-42.000");
  // A numeric holding an integer (sum(bigint) returns numeric) reads as an integer.
  EXPECT_EQ(row.get<std::int64_t>("whole"), 1);
  EXPECT_EQ(row.get<std::int32_t>("text"), -42);
  EXPECT_EQ(row.get<std::int8_t>("neg"), -70);
  expect_error([&] { (void)row.get<std::int64_t>("frac"); }, ts::errc::type_mismatch,
               {"12345.6789", "not an integer"});
  expect_error([&] { (void)row.get<std::int64_t>("nan"); }, ts::errc::type_mismatch,
               {"NaN", "not an integer"});
  expect_error([&] { (void)row.get<std::int64_t>("big"); }, ts::errc::type_mismatch,
               {"100000000000000000000", "out of range"});
  expect_error([&] { (void)row.get<std::uint8_t>("neg"); }, ts::errc::type_mismatch,
               {"-70", "out of range"});
  expect_error([&] { (void)row.get<float>("frac"); }, ts::errc::type_mismatch, {"float"});
  expect_error([&] { (void)row.get<std::string_view>("frac"); }, ts::errc::type_mismatch,
               {"std::string"});
}

TEST(PgResultTest, MalformedNumeric) {
  const std::vector<std::string> bad = {
      bytes({0, 1}),                              // short header
      numeric_bin(0, kPos, 0, {1}) + bytes({0}),  // length mismatch
      numeric_bin(0, 0x1234, 0, {1}),             // bad sign
      numeric_bin(0, kPos, 0, {10000}),           // digit out of range
      numeric_bin(0, kPos, 0x8000, {1}),          // bad scale bits
  };
  for (const auto& value : bad) {
    const auto result = single(oid::kNumeric, kBinary, value);
    expect_error([&] { (void)result.front().get<std::string>(0); }, ts::errc::type_mismatch,
                 {"malformed"});
  }
}

// ---- results: timestamps -------------------------------------------------------------------

TEST(PgResultTest, Timestamps) {
  using std::chrono::sys_days;
  using std::chrono::system_clock;
  const auto y2k = sys_days(std::chrono::year(2000) / 1 / 1);
  const auto result = make_result(
      {{"tz", oid::kTimestamptz, kBinary},
       {"ts", oid::kTimestamp, kBinary},
       {"neg", oid::kTimestamptz, kBinary},
       {"inf", oid::kTimestamptz, kBinary},
       {"ninf", oid::kTimestamptz, kBinary},
       {"far", oid::kTimestamptz, kBinary},
       {"text", oid::kTimestamptz, kText}},
      {{be64(1000000), be64(1), be64(-1500000), be64(std::numeric_limits<std::int64_t>::max()),
        be64(std::numeric_limits<std::int64_t>::min()),
        be64(9223371331200000000LL - 1),  // just before 294277 AD
        "2000-01-01 00:00:01+00"s}});
  const pg::Row row = result.front();
  EXPECT_EQ(row.get<system_clock::time_point>(0), y2k + 1s);
  EXPECT_EQ(row.get<std::chrono::sys_time<std::chrono::microseconds>>(1), y2k + 1us);
  EXPECT_EQ(row.get<system_clock::time_point>("neg"), y2k - 1500ms);
  // Coarser durations round down (towards the past).
  EXPECT_EQ(row.get<std::chrono::sys_seconds>("neg"), y2k - 2s);
  EXPECT_EQ(row.get<system_clock::time_point>("inf"), system_clock::time_point::max());
  EXPECT_EQ(row.get<system_clock::time_point>("ninf"), system_clock::time_point::min());
  EXPECT_EQ(row.get<std::chrono::sys_seconds>("inf"), std::chrono::sys_seconds::max());
  // Year 294276 fits microseconds and seconds but not nanoseconds.
  expect_error([&] { (void)row.get<system_clock::time_point>("far"); }, ts::errc::type_mismatch,
               {"column \"far\"", "out of range"});
  EXPECT_GT(row.get<std::chrono::sys_seconds>("far"), y2k);
  expect_error([&] { (void)row.get<system_clock::time_point>("text"); }, ts::errc::type_mismatch,
               {"text-format timestamps"});
}

TEST(PgResultTest, TimestampRoundTripThroughParams) {
  const auto now =
      std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
  pg::ParamBuffer params;
  params.set(now, std::chrono::system_clock::time_point::max());
  const auto result =
      make_result({{"a", oid::kTimestamptz, kBinary}, {"b", oid::kTimestamptz, kBinary}},
                  {{param_bytes(params, 0), param_bytes(params, 1)}});
  EXPECT_EQ(result.front().get<std::chrono::system_clock::time_point>(0), now);
  EXPECT_EQ(result.front().get<std::chrono::system_clock::time_point>(1),
            std::chrono::system_clock::time_point::max());
}

TEST(PgTypesTest, TimestampConversionsAtTheEdges) {
  using std::chrono::seconds;
  using std::chrono::sys_seconds;
  // The last microsecond PostgreSQL accepts (294276-12-31 23:59:59.999999 UTC) overflows
  // Unix microseconds but not seconds: it must survive a round trip through sys_seconds.
  constexpr std::int64_t kLast = 9223371331200000000LL - 1;
  const auto far = pg::from_postgres_timestamp<seconds>(kLast);
  ASSERT_TRUE(far.has_value());
  EXPECT_EQ(pg::to_postgres_timestamp(*far), kLast - 999999);
  // Before 1970 and before 2000, in coarse and fine durations.
  EXPECT_EQ(pg::to_postgres_timestamp(sys_seconds(seconds(-1))),
            -pg::kPostgresEpochUnixMicros - 1000000);
  EXPECT_EQ(pg::from_postgres_timestamp<seconds>(-pg::kPostgresEpochUnixMicros - 1),
            sys_seconds(seconds(-1)));
  EXPECT_EQ(pg::from_postgres_timestamp<std::chrono::nanoseconds>(-1)->time_since_epoch(),
            std::chrono::microseconds(pg::kPostgresEpochUnixMicros - 1));
  // Floating-point durations.
  const pg::SysTime<std::chrono::duration<double>> fractional(
      std::chrono::duration<double>(946684800.25));
  EXPECT_EQ(pg::to_postgres_timestamp(fractional), 250000);
  EXPECT_DOUBLE_EQ(pg::from_postgres_timestamp<std::chrono::duration<double>>(250000)
                       ->time_since_epoch()
                       .count(),
                   946684800.25);
  // A narrow representation that cannot hold the value.
  using Narrow = std::chrono::duration<std::int32_t>;
  EXPECT_FALSE(pg::from_postgres_timestamp<Narrow>(kLast).has_value());
  EXPECT_TRUE(pg::from_postgres_timestamp<Narrow>(0).has_value());
}

TEST(PgResultTest, BinaryParamsDecodeBack) {
  // What the encoder writes for a type is what the decoder reads for the same OID.
  pg::ParamBuffer params;
  params.set(std::int16_t{-300}, std::int32_t{-70000}, std::int64_t{1} << 40, 2.25f, -0.125, true,
             pg::Bytea("\0z"s));
  std::vector<Column> columns;
  std::vector<Cell> cells;
  for (int i = 0; i < params.count(); ++i) {
    columns.push_back({"c" + std::to_string(i), params.types()[i], params.formats()[i]});
    cells.emplace_back(param_bytes(params, i));
  }
  const auto result = make_result(columns, {cells});
  const auto [a, b, c, d, e, f, g] =
      result.front().as<std::int16_t, std::int32_t, std::int64_t, float, double, bool, pg::Bytea>();
  EXPECT_EQ(a, -300);
  EXPECT_EQ(b, -70000);
  EXPECT_EQ(c, std::int64_t{1} << 40);
  EXPECT_EQ(d, 2.25f);
  EXPECT_EQ(e, -0.125);
  EXPECT_TRUE(f);
  EXPECT_EQ(g.as_string_view(), "\0z"s);
}

}  // namespace

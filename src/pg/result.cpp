#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/result.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

namespace trading_shared::pg {
namespace detail {
namespace {

// ---- field access and errors ---------------------------------------------------------------

/// A loaded field: its bytes (as sent by the server), type OID and format.
struct Field {
  std::string_view bytes;
  Oid type;
  bool binary;
};

Field load(const FieldRef& ref) {
  const char* value = PQgetvalue(ref.result, ref.row, ref.column);
  const int length = PQgetlength(ref.result, ref.row, ref.column);
  return {std::string_view(value, static_cast<std::size_t>(length)),
          PQftype(ref.result, ref.column), PQfformat(ref.result, ref.column) == 1};
}

/// `column "price" (index 1, numeric, oid 1700, binary format, row 0)`.
std::string describe(const FieldRef& ref) {
  const char* name = PQfname(ref.result, ref.column);
  const Oid type = PQftype(ref.result, ref.column);
  std::string text = "column \"";
  text += name == nullptr ? "?" : name;
  text += "\" (index ";
  text += std::to_string(ref.column);
  text += ", type ";
  text += oid_name(type);
  text += ", oid ";
  text += std::to_string(type);
  text += PQfformat(ref.result, ref.column) == 1 ? ", binary format" : ", text format";
  text += ", row ";
  text += std::to_string(ref.row);
  text += ')';
  return text;
}

[[noreturn]] void throw_mismatch(const FieldRef& ref, std::string_view cpp_type,
                                 std::string_view why) {
  std::string text = "pg result: ";
  text += describe(ref);
  text += " cannot be read as ";
  text += cpp_type;
  text += ": ";
  text += why;
  throw Error(errc::type_mismatch, text);
}

[[noreturn]] void throw_no_conversion(const FieldRef& ref, std::string_view cpp_type) {
  std::string why = "no conversion from ";
  why += oid_name(PQftype(ref.result, ref.column));
  throw_mismatch(ref, cpp_type, why);
}

[[noreturn]] void throw_malformed(const FieldRef& ref, std::string_view cpp_type,
                                  std::string_view what) {
  std::string why = "malformed value (";
  why += what;
  why += ')';
  throw_mismatch(ref, cpp_type, why);
}

void expect_length(const FieldRef& ref, std::string_view cpp_type, const Field& field,
                   std::size_t expected) {
  if (field.bytes.size() != expected) {
    throw_malformed(
        ref, cpp_type,
        std::to_string(field.bytes.size()) + " bytes, expected " + std::to_string(expected));
  }
}

bool is_string_type(Oid type) noexcept {
  switch (type) {
    case oid::kText:
    case oid::kVarchar:
    case oid::kBpchar:
    case oid::kName:
    case oid::kJson:
    case oid::kJsonb:
    case oid::kUnknown:
    case oid::kChar:
      return true;
    default:
      return false;
  }
}

// ---- text parsing --------------------------------------------------------------------------

template <class T>
T parse_text_number(const FieldRef& ref, std::string_view cpp_type, std::string_view text) {
  T value{};
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc::result_out_of_range) {
    throw_mismatch(ref, cpp_type, "value " + std::string(text) + " is out of range");
  }
  if (ec != std::errc() || ptr != end) {
    throw_malformed(ref, cpp_type, "\"" + std::string(text) + "\" is not a number");
  }
  return value;
}

// ---- numeric -------------------------------------------------------------------------------

// Sign words of the binary numeric format (PostgreSQL's numeric.c).
constexpr std::uint16_t kNumericPositive = 0x0000;
constexpr std::uint16_t kNumericNegative = 0x4000;
constexpr std::uint16_t kNumericNaN = 0xC000;
constexpr std::uint16_t kNumericPlusInfinity = 0xD000;
constexpr std::uint16_t kNumericMinusInfinity = 0xF000;
constexpr std::uint16_t kNumericDscaleMask = 0x3FFF;
constexpr int kNumericBase = 10000;
constexpr int kNumericDigitsPerWord = 4;

void append_base10000_digit(std::string& out, int digit, int count) {
  std::array<char, kNumericDigitsPerWord> chars{};
  for (int i = kNumericDigitsPerWord - 1; i >= 0; --i) {
    chars[static_cast<std::size_t>(i)] = static_cast<char>('0' + digit % 10);
    digit /= 10;
  }
  out.append(chars.data(), static_cast<std::size_t>(count));
}

/// Binary numeric to the exact text PostgreSQL's numeric_out prints (get_str_from_var):
/// at least one integer digit, then exactly `dscale` fraction digits.
std::string numeric_to_string(const FieldRef& ref, std::string_view cpp_type, const Field& field) {
  const std::string_view bytes = field.bytes;
  if (bytes.size() < 8) {
    throw_malformed(ref, cpp_type, "numeric header too short");
  }
  const auto ndigits = static_cast<std::int16_t>(load_be<std::uint16_t>(bytes.data()));
  const auto weight = static_cast<std::int16_t>(load_be<std::uint16_t>(bytes.data() + 2));
  const std::uint16_t sign = load_be<std::uint16_t>(bytes.data() + 4);
  const std::uint16_t dscale = load_be<std::uint16_t>(bytes.data() + 6);
  if (ndigits < 0 || bytes.size() != 8 + 2 * static_cast<std::size_t>(ndigits)) {
    throw_malformed(ref, cpp_type, "numeric digit count does not match its length");
  }
  switch (sign) {
    case kNumericNaN:
      return "NaN";
    case kNumericPlusInfinity:
      return "Infinity";
    case kNumericMinusInfinity:
      return "-Infinity";
    case kNumericPositive:
    case kNumericNegative:
      break;
    default:
      throw_malformed(ref, cpp_type, "numeric sign word");
  }
  if ((dscale & ~kNumericDscaleMask) != 0) {
    throw_malformed(ref, cpp_type, "numeric scale");
  }

  auto digit_at = [&](int index) -> int {
    if (index < 0 || index >= ndigits) {
      return 0;
    }
    const int digit =
        load_be<std::uint16_t>(bytes.data() + 8 + 2 * static_cast<std::size_t>(index));
    if (digit >= kNumericBase) {
      throw_malformed(ref, cpp_type, "numeric digit over 9999");
    }
    return digit;
  };

  std::string out;
  out.reserve(static_cast<std::size_t>(std::max(0, static_cast<int>(weight)) + 1) *
                  kNumericDigitsPerWord +
              dscale + 2);
  if (sign == kNumericNegative) {
    out += '-';
  }
  int index = 0;
  if (weight < 0) {
    out += '0';
    index = weight + 1;
  } else {
    for (; index <= weight; ++index) {
      const int digit = digit_at(index);
      if (index == 0) {
        // The leading base-10000 digit without its leading zeros.
        std::array<char, 8> chars{};
        const auto result = std::to_chars(chars.data(), chars.data() + chars.size(), digit);
        out.append(chars.data(), result.ptr);
      } else {
        append_base10000_digit(out, digit, kNumericDigitsPerWord);
      }
    }
  }
  if (dscale > 0) {
    out += '.';
    for (int printed = 0; printed < dscale; printed += kNumericDigitsPerWord, ++index) {
      append_base10000_digit(out, digit_at(index),
                             std::min(kNumericDigitsPerWord, dscale - printed));
    }
  }
  return out;
}

/// The decimal text of a numeric field in either format.
std::string numeric_text(const FieldRef& ref, std::string_view cpp_type, const Field& field) {
  return field.binary ? numeric_to_string(ref, cpp_type, field) : std::string(field.bytes);
}

/// A numeric that holds an integer ("42", "-7.000") as int64; anything else throws.
std::int64_t numeric_to_integer(const FieldRef& ref, std::string_view cpp_type,
                                const Field& field) {
  const std::string text = numeric_text(ref, cpp_type, field);
  std::string_view whole = text;
  if (const auto dot = whole.find('.'); dot != std::string_view::npos) {
    if (whole.find_first_not_of('0', dot + 1) != std::string_view::npos) {
      throw_mismatch(ref, cpp_type, "numeric value " + text + " is not an integer");
    }
    whole = whole.substr(0, dot);
  }
  std::int64_t value = 0;
  const char* const end = whole.data() + whole.size();
  const auto [ptr, ec] = std::from_chars(whole.data(), end, value);
  if (ec == std::errc::result_out_of_range) {
    throw_mismatch(ref, cpp_type, "value " + text + " is out of range");
  }
  if (ec != std::errc() || ptr != end) {
    throw_mismatch(ref, cpp_type, "numeric value " + text + " is not an integer");
  }
  return value;
}

// ---- uuid, bytea ---------------------------------------------------------------------------

constexpr std::string_view kHexDigits = "0123456789abcdef";

std::string uuid_to_string(const FieldRef& ref, std::string_view cpp_type, const Field& field) {
  expect_length(ref, cpp_type, field, 16);
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      out += '-';
    }
    const auto byte = static_cast<unsigned char>(field.bytes[i]);
    out += kHexDigits[byte >> 4];
    out += kHexDigits[byte & 0x0F];
  }
  return out;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/// Text-format bytea in the hex format ("\x4142"), PostgreSQL's default since 9.0.
std::vector<std::byte> decode_hex_bytea(const FieldRef& ref, std::string_view cpp_type,
                                        std::string_view text) {
  if (text.size() < 2 || text[0] != '\\' || text[1] != 'x' || text.size() % 2 != 0) {
    throw_mismatch(ref, cpp_type,
                   "text bytea is not in hex format (bytea_output = 'escape' is not "
                   "supported)");
  }
  std::vector<std::byte> out;
  out.reserve((text.size() - 2) / 2);
  for (std::size_t i = 2; i < text.size(); i += 2) {
    const int high = hex_value(text[i]);
    const int low = hex_value(text[i + 1]);
    if (high < 0 || low < 0) {
      throw_malformed(ref, cpp_type, "bad hex digit in bytea");
    }
    out.push_back(static_cast<std::byte>((high << 4) | low));
  }
  return out;
}

// ---- strings -------------------------------------------------------------------------------

constexpr char kJsonbVersion = 1;

/// The zero-copy text of a string-like field, or a type_mismatch naming `cpp_type`.
std::string_view string_view_of(const FieldRef& ref, std::string_view cpp_type,
                                const Field& field) {
  if (is_string_type(field.type)) {
    if (field.type == oid::kJsonb && field.binary) {
      // Binary jsonb is a version byte, then the JSON text.
      if (field.bytes.empty() || field.bytes[0] != kJsonbVersion) {
        throw_malformed(ref, cpp_type, "unsupported jsonb binary version");
      }
      return field.bytes.substr(1);
    }
    return field.bytes;
  }
  if (field.type == oid::kNumeric || field.type == oid::kUuid) {
    if (!field.binary) {
      return field.bytes;
    }
    throw_mismatch(ref, cpp_type,
                   "a binary numeric or uuid has no text to point into; read it as "
                   "std::string (or pg::Numeric)");
  }
  throw_no_conversion(ref, cpp_type);
}

}  // namespace

// ---- decoders ------------------------------------------------------------------------------

std::int64_t decode_integer(const FieldRef& ref, std::string_view cpp_type) {
  const Field field = load(ref);
  switch (field.type) {
    case oid::kInt2:
      if (!field.binary) {
        return parse_text_number<std::int64_t>(ref, cpp_type, field.bytes);
      }
      expect_length(ref, cpp_type, field, 2);
      return static_cast<std::int16_t>(load_be<std::uint16_t>(field.bytes.data()));
    case oid::kInt4:
      if (!field.binary) {
        return parse_text_number<std::int64_t>(ref, cpp_type, field.bytes);
      }
      expect_length(ref, cpp_type, field, 4);
      return static_cast<std::int32_t>(load_be<std::uint32_t>(field.bytes.data()));
    case oid::kInt8:
      if (!field.binary) {
        return parse_text_number<std::int64_t>(ref, cpp_type, field.bytes);
      }
      expect_length(ref, cpp_type, field, 8);
      return static_cast<std::int64_t>(load_be<std::uint64_t>(field.bytes.data()));
    case oid::kOid:
      if (!field.binary) {
        return parse_text_number<std::int64_t>(ref, cpp_type, field.bytes);
      }
      expect_length(ref, cpp_type, field, 4);
      return load_be<std::uint32_t>(field.bytes.data());
    case oid::kNumeric:
      return numeric_to_integer(ref, cpp_type, field);
    default:
      throw_no_conversion(ref, cpp_type);
  }
}

double decode_double(const FieldRef& ref) {
  constexpr std::string_view kType = "double";
  const Field field = load(ref);
  switch (field.type) {
    case oid::kFloat8:
      if (!field.binary) {
        return parse_text_number<double>(ref, kType, field.bytes);
      }
      expect_length(ref, kType, field, 8);
      return std::bit_cast<double>(load_be<std::uint64_t>(field.bytes.data()));
    case oid::kFloat4:
      // Through float in both formats, so that text and binary results agree.
      if (!field.binary) {
        return parse_text_number<float>(ref, kType, field.bytes);
      }
      expect_length(ref, kType, field, 4);
      return std::bit_cast<float>(load_be<std::uint32_t>(field.bytes.data()));
    case oid::kNumeric:
      return parse_text_number<double>(ref, kType, numeric_text(ref, kType, field));
    default:
      throw_no_conversion(ref, kType);
  }
}

float decode_float(const FieldRef& ref) {
  constexpr std::string_view kType = "float";
  const Field field = load(ref);
  switch (field.type) {
    case oid::kFloat4:
      if (!field.binary) {
        return parse_text_number<float>(ref, kType, field.bytes);
      }
      expect_length(ref, kType, field, 4);
      return std::bit_cast<float>(load_be<std::uint32_t>(field.bytes.data()));
    case oid::kFloat8: {
      double value = 0;
      if (!field.binary) {
        value = parse_text_number<double>(ref, kType, field.bytes);
      } else {
        expect_length(ref, kType, field, 8);
        value = std::bit_cast<double>(load_be<std::uint64_t>(field.bytes.data()));
      }
      // IEEE 754 rounding to nearest: beyond float's range gives +-infinity, not an error.
      return static_cast<float>(value);
    }
    default:
      throw_no_conversion(ref, kType);
  }
}

bool decode_bool(const FieldRef& ref) {
  constexpr std::string_view kType = "bool";
  const Field field = load(ref);
  if (field.type != oid::kBool) {
    throw_no_conversion(ref, kType);
  }
  if (field.binary) {
    expect_length(ref, kType, field, 1);
    return field.bytes[0] != 0;
  }
  if (field.bytes == "t") {
    return true;
  }
  if (field.bytes == "f") {
    return false;
  }
  throw_malformed(ref, kType, "boolean text is not t or f");
}

std::string_view decode_string_view(const FieldRef& ref) {
  return string_view_of(ref, "std::string_view", load(ref));
}

std::string decode_string(const FieldRef& ref) {
  constexpr std::string_view kType = "std::string";
  const Field field = load(ref);
  if (field.binary && field.type == oid::kNumeric) {
    return numeric_to_string(ref, kType, field);
  }
  if (field.binary && field.type == oid::kUuid) {
    return uuid_to_string(ref, kType, field);
  }
  return std::string(string_view_of(ref, kType, field));
}

Bytea decode_bytea(const FieldRef& ref) {
  constexpr std::string_view kType = "pg::Bytea";
  const Field field = load(ref);
  if (field.type != oid::kBytea) {
    throw_no_conversion(ref, kType);
  }
  if (!field.binary) {
    throw_mismatch(ref, kType,
                   "text-format bytea must be decoded into new memory: read it as "
                   "std::vector<std::byte>");
  }
  return Bytea(field.bytes);
}

std::vector<std::byte> decode_byte_vector(const FieldRef& ref) {
  constexpr std::string_view kType = "std::vector<std::byte>";
  const Field field = load(ref);
  if (field.type != oid::kBytea) {
    throw_no_conversion(ref, kType);
  }
  if (!field.binary) {
    return decode_hex_bytea(ref, kType, field.bytes);
  }
  const auto* first = reinterpret_cast<const std::byte*>(field.bytes.data());
  return {first, first + field.bytes.size()};
}

Numeric decode_numeric(const FieldRef& ref) {
  constexpr std::string_view kType = "pg::Numeric";
  const Field field = load(ref);
  if (field.type != oid::kNumeric) {
    throw_no_conversion(ref, kType);
  }
  return Numeric(numeric_text(ref, kType, field));
}

std::int64_t decode_timestamp(const FieldRef& ref, std::string_view cpp_type) {
  const Field field = load(ref);
  if (field.type != oid::kTimestamptz && field.type != oid::kTimestamp) {
    throw_no_conversion(ref, cpp_type);
  }
  if (!field.binary) {
    throw_mismatch(ref, cpp_type,
                   "text-format timestamps are not supported (their form depends on DateStyle "
                   "and TimeZone); request binary results");
  }
  expect_length(ref, cpp_type, field, 8);
  return static_cast<std::int64_t>(load_be<std::uint64_t>(field.bytes.data()));
}

void throw_null(const FieldRef& ref, std::string_view cpp_type) {
  std::string text = "pg result: ";
  text += describe(ref);
  text += " is NULL; read it as std::optional<";
  text += cpp_type;
  text += "> to accept NULL";
  throw Error(errc::type_mismatch, text);
}

void throw_integer_out_of_range(const FieldRef& ref, std::string_view cpp_type,
                                std::int64_t value) {
  throw_mismatch(ref, cpp_type, "value " + std::to_string(value) + " is out of range");
}

void throw_timestamp_out_of_range(const FieldRef& ref, std::string_view cpp_type,
                                  std::int64_t postgres_micros) {
  throw_mismatch(ref, cpp_type,
                 "timestamp " + std::to_string(postgres_micros) +
                     " us since 2000-01-01 is out of range for its duration");
}

std::int64_t parse_affected_rows(const char* cmd_tuples) noexcept {
  if (cmd_tuples == nullptr || *cmd_tuples == '\0') {
    return -1;
  }
  const std::string_view text(cmd_tuples);
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return -1;
  }
  return value;
}

}  // namespace detail

// ---- Row -----------------------------------------------------------------------------------

int Row::checked_column(std::size_t column) const {
  const std::size_t columns = size();
  if (column >= columns) {
    throw Error(errc::invalid_argument, "pg result: column index " + std::to_string(column) +
                                            " out of range (" + std::to_string(columns) +
                                            " columns)");
  }
  return static_cast<int>(column);
}

std::size_t Row::column_by_name(std::string_view name) const {
  const std::size_t columns = size();
  for (std::size_t i = 0; i < columns; ++i) {
    const char* candidate = PQfname(result_, static_cast<int>(i));
    if (candidate != nullptr && name == candidate) {
      return i;
    }
  }
  std::string text = "pg result: no column named \"";
  text += name;
  text += "\" (columns:";
  for (std::size_t i = 0; i < columns; ++i) {
    text += i == 0 ? " " : ", ";
    const char* candidate = PQfname(result_, static_cast<int>(i));
    text += candidate == nullptr ? "?" : candidate;
  }
  text += ')';
  throw Error(errc::invalid_argument, text);
}

void Row::check_arity(std::size_t expected) const {
  const std::size_t columns = size();
  if (columns != expected) {
    throw Error(errc::type_mismatch, "pg result: row has " + std::to_string(columns) +
                                         " columns but as<...>() reads " +
                                         std::to_string(expected));
  }
}

bool Row::is_null(std::size_t column) const {
  return PQgetisnull(result_, row_, checked_column(column)) != 0;
}

bool Row::is_null(std::string_view column_name) const {
  return is_null(column_by_name(column_name));
}

// ---- Result --------------------------------------------------------------------------------

Result& Result::operator=(Result&& other) noexcept {
  if (this != &other) {
    if (result_ != nullptr) {
      PQclear(result_);
    }
    result_ = std::exchange(other.result_, nullptr);
  }
  return *this;
}

Result::~Result() {
  if (result_ != nullptr) {
    PQclear(result_);
  }
}

std::string_view Result::column_name(std::size_t column) const {
  const std::size_t count = columns();
  if (column >= count) {
    throw Error(errc::invalid_argument, "pg result: column index " + std::to_string(column) +
                                            " out of range (" + std::to_string(count) +
                                            " columns)");
  }
  const char* name = PQfname(result_, static_cast<int>(column));
  return name == nullptr ? std::string_view() : std::string_view(name);
}

std::optional<std::size_t> Result::column_index(std::string_view name) const noexcept {
  const std::size_t count = columns();
  for (std::size_t i = 0; i < count; ++i) {
    const char* candidate = PQfname(result_, static_cast<int>(i));
    if (candidate != nullptr && name == candidate) {
      return i;
    }
  }
  return std::nullopt;
}

Oid Result::column_type(std::size_t column) const noexcept {
  if (column >= columns()) {
    return oid::kUnspecified;
  }
  return PQftype(result_, static_cast<int>(column));
}

std::int64_t Result::affected_rows() const noexcept {
  if (result_ == nullptr) {
    return -1;
  }
  return detail::parse_affected_rows(PQcmdTuples(result_));
}

Row Result::operator[](std::size_t row) const {
  const std::size_t rows = size();
  if (row >= rows) {
    throw Error(errc::invalid_argument, "pg result: row index " + std::to_string(row) +
                                            " out of range (" + std::to_string(rows) + " rows)");
  }
  return {result_, row};
}

Row Result::front() const {
  if (empty()) {
    throw Error(errc::invalid_argument, "pg result: front() of a result with no rows");
  }
  return {result_, 0};
}

}  // namespace trading_shared::pg

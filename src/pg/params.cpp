#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/params.hpp>

#include <array>
#include <bit>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

namespace trading_shared::pg {
namespace detail {

void throw_uint64_out_of_range(std::uint64_t value) {
  throw Error(errc::invalid_argument,
              "pg parameter: std::uint64_t value " + std::to_string(value) +
                  " does not fit in bigint (max 9223372036854775807); pass a pg::Numeric");
}

void throw_timestamp_out_of_range() {
  throw Error(errc::invalid_argument,
              "pg parameter: time point does not fit in a timestamptz (64-bit microseconds "
              "since 2000-01-01)");
}

}  // namespace detail

namespace {

// Zero-length values still need a non-null pointer: libpq reads nullptr as NULL.
constexpr char kEmptyValue[1] = {'\0'};

}  // namespace

ParamBuffer::ParamBuffer(const ParamBuffer& other)
    : data_(other.data_),
      offsets_(other.offsets_),
      types_(other.types_),
      lengths_(other.lengths_),
      formats_(other.formats_),
      values_stale_(true) {}

ParamBuffer::ParamBuffer(ParamBuffer&& other) noexcept
    : data_(std::move(other.data_)),
      offsets_(std::move(other.offsets_)),
      types_(std::move(other.types_)),
      lengths_(std::move(other.lengths_)),
      formats_(std::move(other.formats_)),
      values_stale_(true) {
  other.clear();
}

ParamBuffer& ParamBuffer::operator=(const ParamBuffer& other) {
  if (this != &other) {
    data_ = other.data_;
    offsets_ = other.offsets_;
    types_ = other.types_;
    lengths_ = other.lengths_;
    formats_ = other.formats_;
    values_stale_ = true;
  }
  return *this;
}

ParamBuffer& ParamBuffer::operator=(ParamBuffer&& other) noexcept {
  if (this != &other) {
    data_ = std::move(other.data_);
    offsets_ = std::move(other.offsets_);
    types_ = std::move(other.types_);
    lengths_ = std::move(other.lengths_);
    formats_ = std::move(other.formats_);
    values_stale_ = true;
    other.clear();
  }
  return *this;
}

void ParamBuffer::clear() noexcept {
  data_.clear();
  offsets_.clear();
  types_.clear();
  lengths_.clear();
  formats_.clear();
  values_.clear();
  values_stale_ = false;
}

const char* const* ParamBuffer::values() const noexcept {
  if (values_stale_) {
    // resize() only allocates when a statement has more parameters than any before it.
    values_.resize(offsets_.size());
    for (std::size_t i = 0; i < offsets_.size(); ++i) {
      const std::size_t offset = offsets_[i];
      if (offset == kNullOffset) {
        values_[i] = nullptr;
      } else if (lengths_[i] == 0 && formats_[i] != 0) {
        values_[i] = kEmptyValue;
      } else {
        values_[i] = data_.data() + offset;
      }
    }
    values_stale_ = false;
  }
  return values_.data();
}

void ParamBuffer::append_raw(Oid type, int format, const char* bytes, std::size_t size, bool text) {
  if (size > static_cast<std::size_t>(INT_MAX)) {
    throw Error(errc::invalid_argument, "pg parameter $" + std::to_string(offsets_.size() + 1) +
                                            ": value of " + std::to_string(size) +
                                            " bytes exceeds libpq's 2 GiB limit");
  }
  offsets_.push_back(data_.size());
  types_.push_back(type);
  lengths_.push_back(static_cast<int>(size));
  formats_.push_back(format);
  data_.insert(data_.end(), bytes, bytes + size);
  // libpq takes the length of a text value from strlen(), ignoring `lengths`.
  if (text) {
    data_.push_back('\0');
  }
  values_stale_ = true;
}

std::size_t ParamBuffer::begin_array(Oid element_type, std::size_t count) {
  if (count > static_cast<std::size_t>(INT_MAX)) {
    throw Error(errc::invalid_argument, "pg parameter $" + std::to_string(offsets_.size() + 1) +
                                            ": array of " + std::to_string(count) +
                                            " elements is too long");
  }
  const std::size_t start = data_.size();
  // ndim, has-null flag, element type; then (one dimension) its length and lower bound. An
  // empty array has no dimension.
  std::array<char, 20> header{};
  detail::store_be(static_cast<std::uint32_t>(count == 0 ? 0 : 1), header.data());
  detail::store_be(std::uint32_t{0}, header.data() + 4);
  detail::store_be(static_cast<std::uint32_t>(element_type), header.data() + 8);
  detail::store_be(static_cast<std::uint32_t>(count), header.data() + 12);
  detail::store_be(std::uint32_t{1}, header.data() + 16);
  data_.insert(data_.end(), header.data(), header.data() + (count == 0 ? 12 : 20));
  return start;
}

void ParamBuffer::append_array_element(const char* bytes, std::size_t size) {
  if (size > static_cast<std::size_t>(INT_MAX)) {
    throw Error(errc::invalid_argument, "pg parameter $" + std::to_string(offsets_.size() + 1) +
                                            ": array element over 2 GiB");
  }
  std::array<char, 4> length{};
  detail::store_be(static_cast<std::uint32_t>(size), length.data());
  data_.insert(data_.end(), length.begin(), length.end());
  data_.insert(data_.end(), bytes, bytes + size);
}

void ParamBuffer::end_array(Oid array_type, std::size_t start) {
  const std::size_t size = data_.size() - start;
  if (size > static_cast<std::size_t>(INT_MAX)) {
    data_.resize(start);
    throw Error(errc::invalid_argument, "pg parameter $" + std::to_string(offsets_.size() + 1) +
                                            ": array of " + std::to_string(size) +
                                            " bytes exceeds libpq's 2 GiB limit");
  }
  offsets_.push_back(start);
  types_.push_back(array_type);
  lengths_.push_back(static_cast<int>(size));
  formats_.push_back(1);
  values_stale_ = true;
}

void ParamBuffer::append_null(Oid type, int format) {
  offsets_.push_back(kNullOffset);
  types_.push_back(type);
  lengths_.push_back(0);
  formats_.push_back(format);
  values_stale_ = true;
}

void ParamBuffer::append_int2(std::int16_t value) {
  std::array<char, 2> bytes{};
  detail::store_be(static_cast<std::uint16_t>(value), bytes.data());
  append_raw(oid::kInt2, 1, bytes.data(), bytes.size(), false);
}

void ParamBuffer::append_int4(std::int32_t value) {
  std::array<char, 4> bytes{};
  detail::store_be(static_cast<std::uint32_t>(value), bytes.data());
  append_raw(oid::kInt4, 1, bytes.data(), bytes.size(), false);
}

void ParamBuffer::append_int8(std::int64_t value) {
  std::array<char, 8> bytes{};
  detail::store_be(static_cast<std::uint64_t>(value), bytes.data());
  append_raw(oid::kInt8, 1, bytes.data(), bytes.size(), false);
}

void ParamBuffer::append_float4(float value) {
  static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559);
  std::array<char, 4> bytes{};
  detail::store_be(std::bit_cast<std::uint32_t>(value), bytes.data());
  append_raw(oid::kFloat4, 1, bytes.data(), bytes.size(), false);
}

void ParamBuffer::append_float8(double value) {
  static_assert(sizeof(double) == 8 && std::numeric_limits<double>::is_iec559);
  std::array<char, 8> bytes{};
  detail::store_be(std::bit_cast<std::uint64_t>(value), bytes.data());
  append_raw(oid::kFloat8, 1, bytes.data(), bytes.size(), false);
}

void ParamBuffer::append_bool(bool value) {
  const char byte = value ? '\1' : '\0';
  append_raw(oid::kBool, 1, &byte, 1, false);
}

void ParamBuffer::append_text(std::string_view value, Oid type) {
  if (value.find('\0') != std::string_view::npos) {
    throw Error(errc::invalid_argument,
                "pg parameter $" + std::to_string(offsets_.size() + 1) +
                    ": text value contains a NUL byte (libpq would cut it there, and "
                    "PostgreSQL text cannot hold one); send binary data as pg::Bytea");
  }
  append_raw(type, 0, value.data(), value.size(), true);
}

void ParamBuffer::append_bytea(std::span<const std::byte> value) {
  append_raw(oid::kBytea, 1, reinterpret_cast<const char*>(value.data()), value.size(), false);
}

void ParamBuffer::append_timestamptz(std::int64_t postgres_micros) {
  std::array<char, 8> bytes{};
  detail::store_be(static_cast<std::uint64_t>(postgres_micros), bytes.data());
  append_raw(oid::kTimestamptz, 1, bytes.data(), bytes.size(), false);
}

}  // namespace trading_shared::pg

#include "feed_sim/generator.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

namespace trading_shared::services::feed_sim {

namespace {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31U);
}

std::uint64_t fnv1a(std::string_view text) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

constexpr std::array<std::uint64_t, 9> kPow10 = {1,      10,      100,      1000,     10000,
                                                 100000, 1000000, 10000000, 100000000};

}  // namespace

std::int64_t start_price_cents(std::string_view symbol) noexcept {
  if (symbol == "BTCUSDT") return 60000 * 100;
  if (symbol == "ETHUSDT") return 3000 * 100;
  return 100 * 100;
}

SymbolGenerator::SymbolGenerator(std::string_view symbol, std::uint64_t seed)
    : engine_(splitmix64(seed ^ splitmix64(fnv1a(symbol)))),
      price_cents_(start_price_cents(symbol)),
      max_step_cents_(std::max<std::int64_t>(1, price_cents_ / 10000)) {}

Trade SymbolGenerator::next() {
  const std::uint64_t r_price = engine_();
  const std::uint64_t r_shape = engine_();
  const std::uint64_t r_qty = engine_();
  const auto span = static_cast<std::uint64_t>(2 * max_step_cents_ + 1);
  const std::int64_t step = static_cast<std::int64_t>(r_price % span) - max_step_cents_;
  price_cents_ = std::max<std::int64_t>(1, price_cents_ + step);

  Trade trade;
  trade.id = ++last_id_;
  trade.price_cents = price_cents_;
  trade.qty_decimals = 3 + static_cast<int>(r_shape % 6);
  trade.qty_units = 1 + r_qty % (2 * kPow10[static_cast<std::size_t>(trade.qty_decimals)]);
  trade.buyer_maker = ((r_shape >> 32U) & 1U) != 0;
  return trade;
}

namespace {

template <class Int>
void append_int(std::string& out, Int value) {
  std::array<char, 24> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), value).ptr;
  out.append(digits.data(), end);
}

/// `value` < 10^width, zero-padded to `width` digits.
void append_fraction(std::string& out, std::uint64_t value, int width) {
  std::array<char, 24> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), value).ptr;
  const auto length = static_cast<int>(end - digits.data());
  if (length < width) out.append(static_cast<std::size_t>(width - length), '0');
  out.append(digits.data(), end);
}

}  // namespace

// Hand-written rather than fmt::format_to: this runs for every trade (about 3x faster).
void append_trade_json(std::string& out, std::string_view symbol, const Trade& trade,
                       std::int64_t event_ms, std::int64_t trade_ms) {
  const auto scale = kPow10[static_cast<std::size_t>(trade.qty_decimals)];
  out += R"({"e":"trade","E":)";
  append_int(out, event_ms);
  out += R"(,"s":")";
  out += symbol;
  out += R"(","t":)";
  append_int(out, trade.id);
  out += R"(,"p":")";
  append_int(out, trade.price_cents / 100);
  out += '.';
  append_fraction(out, static_cast<std::uint64_t>(trade.price_cents % 100), 2);
  out += R"(","q":")";
  append_int(out, trade.qty_units / scale);
  out += '.';
  append_fraction(out, trade.qty_units % scale, trade.qty_decimals);
  out += R"(","T":)";
  append_int(out, trade_ms);
  out += trade.buyer_maker ? R"(,"m":true})" : R"(,"m":false})";
}

namespace {

/// Appends `units / 10^decimals` without trailing zeros in the fraction (and without the
/// point when the fraction is 0).
char* append_canonical_decimal(char* out, std::uint64_t units, int decimals) {
  const auto scale = kPow10[static_cast<std::size_t>(decimals)];
  out = std::to_chars(out, out + 24, units / scale).ptr;
  std::uint64_t fraction = units % scale;
  if (fraction == 0) return out;
  int width = decimals;
  while (fraction % 10 == 0) {
    fraction /= 10;
    --width;
  }
  *out++ = '.';
  std::array<char, 24> digits{};
  const auto end = std::to_chars(digits.data(), digits.data() + digits.size(), fraction).ptr;
  const auto length = static_cast<int>(end - digits.data());
  for (int i = length; i < width; ++i) *out++ = '0';
  for (const char* c = digits.data(); c != end; ++c) *out++ = *c;
  return out;
}

}  // namespace

void TradeDigest::add(const Trade& trade, std::int64_t event_ms, std::int64_t trade_ms) noexcept {
  std::array<char, 160> line{};  // 5 numbers of at most 21 characters, separators
  char* out = line.data();
  out = std::to_chars(out, out + 24, trade.id).ptr;
  *out++ = '|';
  out = append_canonical_decimal(out, static_cast<std::uint64_t>(trade.price_cents), 2);
  *out++ = '|';
  out = append_canonical_decimal(out, trade.qty_units, trade.qty_decimals);
  *out++ = '|';
  out = std::to_chars(out, out + 24, trade_ms).ptr;
  *out++ = '|';
  out = std::to_chars(out, out + 24, event_ms).ptr;
  *out++ = '|';
  *out++ = trade.buyer_maker ? '1' : '0';
  *out++ = '\n';
  for (const char* c = line.data(); c != out; ++c) {
    hash_ ^= static_cast<unsigned char>(*c);
    hash_ *= 0x100000001b3ULL;
  }
}

std::string TradeDigest::hex() const {
  std::array<char, 16> digits{};
  std::uint64_t v = hash_;
  for (int i = 15; i >= 0; --i) {
    digits[static_cast<std::size_t>(i)] = "0123456789abcdef"[v & 0xFU];
    v >>= 4U;
  }
  return std::string(digits.data(), digits.size());
}

Pacer::Pacer(double rate, std::chrono::nanoseconds max_backlog)
    : rate_(rate),
      max_backlog_events_(std::max<std::uint64_t>(
          1, static_cast<std::uint64_t>(
                 std::ceil(rate * std::chrono::duration<double>(max_backlog).count())))) {}

void Pacer::restart(Clock::time_point now) noexcept {
  start_ = now;
  emitted_ = 0;
}

std::uint64_t Pacer::take_due(Clock::time_point now) noexcept {
  if (now <= start_) return 0;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const auto total = static_cast<std::uint64_t>(std::floor(rate_ * elapsed));
  if (total <= emitted_) return 0;
  std::uint64_t due = total - emitted_;
  emitted_ = total;
  if (due > max_backlog_events_) {
    skipped_ += due - max_backlog_events_;
    due = max_backlog_events_;
  }
  return due;
}

Pacer::Clock::time_point Pacer::next_due() const noexcept {
  const double seconds = static_cast<double>(emitted_ + 1) / rate_;
  return start_ + std::chrono::ceil<Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace trading_shared::services::feed_sim

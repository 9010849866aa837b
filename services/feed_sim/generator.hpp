#pragma once
/// @file
/// The deterministic part of ts-feed-sim, free of I/O so that it can be unit-tested: the
/// per-symbol trade generator, the JSON rendering of a trade event, and the pacer that turns
/// a rate into batch sizes.
///
/// Determinism: each symbol has its own `std::mt19937_64`, seeded from `--seed` and the
/// symbol's name, and only raw engine outputs are used (no `std::*_distribution`, whose
/// results differ between standard libraries). So the k-th trade of a symbol (id, price,
/// quantity, maker flag) is the same in every run with the same seed, whatever the
/// subscriptions, the timing and the other symbols. Which symbol gets the next trade, and the
/// `E`/`T` timestamps, depend on timing.

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace trading_shared::services::feed_sim {

/// One generated trade, in integers: `price_cents / 100` is the price, `qty_units /
/// 10^qty_decimals` the quantity.
struct Trade {
  std::uint64_t id = 0;          ///< 1, 2, 3, ... per symbol.
  std::int64_t price_cents = 0;  ///< >= 1.
  std::uint64_t qty_units = 0;   ///< >= 1.
  int qty_decimals = 8;          ///< 3..8.
  bool buyer_maker = false;
};

/// Start price of a symbol in cents: BTCUSDT 60 000, ETHUSDT 3 000, anything else 100.
std::int64_t start_price_cents(std::string_view symbol) noexcept;

/// The trades of one symbol: a random walk of the price in steps of up to 1 basis point of
/// the start price (at least 1 cent), never below 0.01; quantities in (0, 2] with 3 to 8
/// decimals; the maker flag a fair coin.
class SymbolGenerator {
 public:
  SymbolGenerator(std::string_view symbol, std::uint64_t seed);
  /// The next trade (ids start at 1 and increase by exactly 1).
  Trade next();
  /// Id of the last trade returned by `next()` (0 before the first).
  std::uint64_t last_id() const noexcept { return last_id_; }

 private:
  std::mt19937_64 engine_;
  std::int64_t price_cents_;
  std::int64_t max_step_cents_;
  std::uint64_t last_id_ = 0;
};

/// Appends the Binance trade event of `trade` to `out`:
/// `{"e":"trade","E":<event_ms>,"s":"<symbol>","t":<id>,"p":"<price>","q":"<qty>","T":<trade_ms>,"m":<bool>}`.
void append_trade_json(std::string& out, std::string_view symbol, const Trade& trade,
                       std::int64_t event_ms, std::int64_t trade_ms);

/// Digest of the trades of one symbol as they were sent, for the end-to-end check
/// (tests/e2e/pipeline.cpp compares it with a digest of the symbol's rows in `ticks`).
///
/// FNV-1a (64 bit) over one canonical line per trade, in the order sent (ids ascending):
/// `<id>|<price>|<qty>|<trade_ms>|<event_ms>|<m>\n`, where price and quantity are decimals
/// without trailing zeros in the fraction and without a trailing point ("60000", "0.1",
/// "1.234"), the times are Unix milliseconds and `m` is 1 when the buyer is the maker, else 0.
/// Every field of the trade event but the constant "e" and the symbol (a digest is per symbol)
/// is in it, so that a changed price, quantity, time or maker flag changes the digest.
class TradeDigest {
 public:
  /// Adds the trade as append_trade_json renders it with these times. No allocation.
  void add(const Trade& trade, std::int64_t event_ms, std::int64_t trade_ms) noexcept;
  std::uint64_t value() const noexcept { return hash_; }
  /// 16 lower-case hex digits.
  std::string hex() const;

 private:
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

/// Turns a rate (events per second) into the number of events due at a given time, catching
/// up after a late wake-up so that the average rate holds. A backlog larger than
/// `max_backlog` worth of events is skipped (and counted) rather than sent in one burst: the
/// process is overloaded and a burst would only make it worse.
class Pacer {
 public:
  using Clock = std::chrono::steady_clock;

  /// `rate` > 0.
  explicit Pacer(double rate, std::chrono::nanoseconds max_backlog = std::chrono::seconds(1));

  /// Starts the schedule at `now` (nothing due yet). Used when generation (re)starts, so that
  /// an idle period does not turn into a burst.
  void restart(Clock::time_point now) noexcept;
  /// How many events are due at `now`; they are counted as emitted.
  std::uint64_t take_due(Clock::time_point now) noexcept;
  /// When the next event is due.
  Clock::time_point next_due() const noexcept;
  /// Events skipped because the backlog exceeded `max_backlog`.
  std::uint64_t skipped() const noexcept { return skipped_; }

 private:
  double rate_;
  std::uint64_t max_backlog_events_;
  Clock::time_point start_{};
  std::uint64_t emitted_ = 0;  // since start_, skipped ones included
  std::uint64_t skipped_ = 0;
};

}  // namespace trading_shared::services::feed_sim

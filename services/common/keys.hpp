#pragma once
/// @file
/// Names shared by the services: Redis keys, stream fields, consumer groups (docs/services.md).

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trading_shared::services {

/// Trades are spread over a fixed number of bucket streams, not one stream per symbol
/// (docs/decisions.md, "Trade streams in hash-tagged buckets"): a venue lists hundreds to
/// thousands of symbols, and one stream per symbol would need one blocking read per stream.
/// Every service derives the bucket from the symbol alone, so that they always agree; the
/// count is part of the key layout (changing it is a migration, not a setting).
inline constexpr std::size_t kTradeBuckets = 16;

/// The hash that picks a symbol's bucket: FNV-1a (64 bits) of the name, then MurmurHash3's
/// 64-bit finaliser so that the low bits depend on every byte. Not CRC16, the function of Redis
/// Cluster's slots: CRC is linear, and its 4 low bits put 500 names such as S0001USDT into
/// buckets of 2 to 51. (Which node holds a bucket is decided by the `{tNN}` hash tag of its
/// key, not by this hash.)
constexpr std::uint64_t symbol_hash(std::string_view symbol) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : symbol) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

/// The bucket of a symbol's trades: symbol_hash(symbol) mod kTradeBuckets.
constexpr std::size_t trade_bucket(std::string_view symbol) noexcept {
  return static_cast<std::size_t>(symbol_hash(symbol) % kTradeBuckets);
}

/// `md:{tNN}:<what>`: a key of bucket `bucket` (0 .. kTradeBuckets-1, NN in two digits). The
/// `{tNN}` hash tag puts every key of one bucket in one Redis Cluster slot.
inline std::string bucket_key(std::size_t bucket, std::string_view what) {
  std::string key = "md:{t00}:";
  key[5] = static_cast<char>('0' + (bucket / 10) % 10);
  key[6] = static_cast<char>('0' + bucket % 10);
  key += what;
  return key;
}

/// Stream of the trades of bucket `bucket` (0 .. kTradeBuckets-1): `md:{tNN}:trades`, written by
/// ts-receiver, read by ts-recorder. The `{tNN}` hash tag puts everything of one bucket in one
/// Redis Cluster slot.
/// Fields of each entry: `s` symbol, `t` trade id, `p` price, `q` quantity (decimal strings
/// as the exchange sent them), `T` trade time (ms since epoch), `E` event time (ms), `m` buyer
/// is maker (`1`/`0`), `r` time the receiver read the message (microseconds since epoch).
inline std::string bucket_stream(std::size_t bucket) {
  return bucket_key(bucket, "trades");
}
/// The stream that holds `symbol`'s trades (shared with the other symbols of its bucket).
inline std::string trade_stream(std::string_view symbol) {
  return bucket_stream(trade_bucket(symbol));
}
/// Every trade stream, bucket by bucket.
inline std::array<std::string, kTradeBuckets> all_trade_streams() {
  std::array<std::string, kTradeBuckets> streams;
  for (std::size_t b = 0; b < kTradeBuckets; ++b) streams[b] = bucket_stream(b);
  return streams;
}
/// Hash of the last trades of bucket `bucket`'s symbols, written by ts-receiver:
/// `md:{tNN}:last`, one field per symbol (its name), valued `<price> <trade id> <trade time ms>`
/// (see LastTrade). One hash per bucket, not one per symbol: the receiver sets every symbol's
/// last trade of a batch with one HSET per bucket, whatever the number of symbols (F72), and the
/// hash tag keeps it with its bucket's stream.
inline std::string bucket_last_key(std::size_t bucket) {
  return bucket_key(bucket, "last");
}
/// The hash holding `symbol`'s last trade (field: the symbol).
inline std::string last_trade_key(std::string_view symbol) {
  return bucket_last_key(trade_bucket(symbol));
}

/// Hash of the "complete through" trade ids of bucket `bucket`'s symbols, written by ts-receiver:
/// `md:{tNN}:tape`, one field per symbol (its name), valued by the highest id N such that every
/// trade id <= N of the symbol has been written to its stream (or reported unrecoverable). Set
/// after the trades it covers are written; read on start to backfill what came meanwhile.
inline std::string bucket_tape_key(std::size_t bucket) {
  return bucket_key(bucket, "tape");
}
/// The hash holding `symbol`'s "complete through" id (field: the symbol).
inline std::string tape_key(std::string_view symbol) {
  return bucket_tape_key(trade_bucket(symbol));
}
/// The field of `tape_key(symbol)` holding the symbol's gaps, written with its "complete
/// through" id: `<highest id written> <lo>-<hi> ...`, the ranges below it not written yet (a
/// restart fetches those ranges and what came after the highest id, nothing it already wrote).
inline std::string tape_gaps_field(std::string_view symbol) {
  return std::string(symbol) + ":gaps";
}

/// A symbol's last trade as stored in its bucket's `md:{tNN}:last` hash.
struct LastTrade {
  std::string_view price;  ///< the decimal string as the venue sent it
  std::int64_t trade_id = 0;
  std::int64_t trade_time_ms = 0;

  /// Parses `<price> <trade id> <trade time ms>`; nullopt for anything else.
  static std::optional<LastTrade> parse(std::string_view value) noexcept {
    const std::size_t first = value.find(' ');
    if (first == std::string_view::npos || first == 0) return std::nullopt;
    const std::size_t second = value.find(' ', first + 1);
    if (second == std::string_view::npos) return std::nullopt;
    LastTrade last;
    last.price = value.substr(0, first);
    const auto number = [](std::string_view text, std::int64_t& out) {
      const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
      return !text.empty() && ec == std::errc{} && ptr == text.data() + text.size();
    };
    if (!number(value.substr(first + 1, second - first - 1), last.trade_id) ||
        !number(value.substr(second + 1), last.trade_time_ms)) {
      return std::nullopt;
    }
    return last;
  }
};

/// The first layout (before the buckets): one stream per symbol, `md:trades:<SYMBOL>`.
/// `tsctl migrate-streams` moves what such streams still hold into the buckets.
inline constexpr std::string_view kLegacyTradeStreamPrefix = "md:trades:";

/// Order requests (tsctl submit-order / load-orders → ts-executor). Fields: `client_order_id`,
/// `symbol`, `side` (`buy`|`sell`), `type` (`market`|`limit`), `qty`, `limit_price` (limit
/// orders), `submitted_at` (ms since epoch).
inline constexpr std::string_view kOrderRequests = "orders:requests";
/// Order outcomes written by ts-executor. Fields: `client_order_id`, `status`
/// (`filled`|`rejected`), `reason` (rejected), `price` and `qty` (filled).
inline constexpr std::string_view kOrderEvents = "orders:events";

inline constexpr std::string_view kRecorderGroup = "recorder";
inline constexpr std::string_view kExecutorGroup = "executor";

}  // namespace trading_shared::services

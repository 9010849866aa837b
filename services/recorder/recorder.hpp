#pragma once
/// @file
/// ts-recorder: the trade streams (`md:{tNN}:trades`, every bucket) → batched, idempotent
/// insert into `ticks` → XACK after commit (docs/services.md).

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "common/settings.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::recorder {

/// The shared settings of a consumer service (common/settings.hpp) and the recorder's own.
struct RecorderSettings : ConsumerServiceSettings {
  RecorderSettings() { batch = 500; }
  // consumer: reader i > 0 is "<consumer>-<i>". batch: entries per stream and read; a read
  // covers every stream, its entries go into one insert.

  /// Readers: each reads every trade stream on its own blocking Redis connection (entries are
  /// shared out by the group), so that one reader's insert overlaps another's read.
  std::int64_t readers = 2;
  /// Test-only fault switches (0 = off): `_Exit(137)` after the Nth commit, before its XACK;
  /// `_Exit(137)` in the Nth batch, before its insert. Settable (and acted on) only in a build
  /// with the CMake option TS_TEST_FAULTS; a release build has no such flags.
  std::int64_t fault_crash_after_commit = 0;
  std::int64_t fault_crash_before_commit = 0;
};

/// Registers every setting of the recorder (shared ones included) on `loader`.
void add_recorder_settings(core::ConfigLoader& loader, RecorderSettings& settings);
/// Checks the loaded settings and fills derived defaults; throws `core::ConfigError`.
void finish_settings(RecorderSettings& settings);

/// The run_daemon options: drain, shutdown budget and the clients' close bounds, checked
/// (F54). @throws core::ConfigError when the budgets cannot add up.
lifecycle::ServiceOptions service_options(const RecorderSettings& settings);

/// Runs the daemon; returns the process exit code (lifecycle::run_daemon's).
int run_recorder(const RecorderSettings& settings);

// ---- exposed for tests and tools ------------------------------------------------------------

/// One trade as read from a stream entry (fields documented in common/keys.hpp). The string
/// views point into the entry.
struct Trade {
  std::string_view symbol;
  std::int64_t trade_id = 0;
  std::string_view price;
  std::string_view qty;
  std::int64_t trade_time_ms = 0;
  std::optional<std::int64_t> event_time_ms;
  bool buyer_is_maker = false;
  std::optional<std::int64_t> received_at_us;
};

/// Parses a trade stream entry; on failure returns nothing and sets `why`.
/// Required: `s` (a symbol: upper-case letters and digits; when the entry says which stream
/// it came from, that must be the symbol's stream), `t` (integer >= 0), `p` and `q` (unsigned
/// decimals), `T` (ms, 2000-2099), `m` (`1`/`0`/`true`/`false`). Optional: `E` (ms, 2000-2099),
/// `r` (µs, 2000-2099); present but not such a time is malformed too (F44).
std::optional<Trade> parse_trade(const redis::StreamEntry& entry, std::string& why);

}  // namespace trading_shared::services::recorder

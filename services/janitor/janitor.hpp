#pragma once
/// @file
/// `ts-janitor`: retention of ticks and streams, removal of dead consumers (docs/services.md).
/// A run_once task; every step runs even when an earlier one failed.

#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace trading_shared::services::janitor {

struct Settings {
  pg::PostgresConfig postgres;
  redis::RedisConfig redis;
  /// Ticks and stream entries older than now - retention go.
  std::chrono::milliseconds retention = std::chrono::hours(168);
  /// Rows per DELETE statement.
  std::uint64_t delete_batch = 10000;
  /// Symbols whose trade streams (their buckets) are trimmed; empty: every trade stream, and
  /// the streams of the first layout (md:trades:<SYMBOL>) still found.
  std::vector<std::string> symbols;
  /// Trim by age even what a consumer group has not read or acknowledged (counted).
  bool force_trim = false;
  /// Consumers idle longer than this with nothing pending are removed.
  std::chrono::milliseconds consumer_idle = std::chrono::hours(1);
  /// Overall deadline of the run.
  std::chrono::milliseconds deadline = std::chrono::seconds(60);
  std::string summary_file;
};

/// What the run did (the summary file), filled as it goes: also meaningful after a failure.
struct Report {
  std::int64_t partitions_dropped = 0;
  std::int64_t rows_deleted = 0;
  std::int64_t entries_trimmed = 0;
  std::int64_t trims_held_back = 0;         ///< streams a group kept from being trimmed by age
  std::int64_t trimmed_unacknowledged = 0;  ///< entries a group still needed, forced out
  std::int64_t consumers_removed = 0;
  std::int64_t errors = 0;
  bool completed = false;  ///< the body ran to its end (no deadline, no signal).
};

void add_settings(core::ConfigLoader& loader, Settings& settings);
/// @throws core::ConfigError (one line).
void validate(Settings& settings);
lifecycle::ServiceOptions service_options(const Settings& settings);

/// The whole run: PostgreSQL step (partitions, rows), then Redis step (trim, consumers).
boost::asio::awaitable<void> run(lifecycle::ServiceContext& ctx, const Settings& settings,
                                 Report& report);

/// One line for people.
std::string summary_line(const Report& report);
/// Writes the summary file; logs (and returns false) when it cannot.
bool write_summary(const std::string& path, const Report& report);

}  // namespace trading_shared::services::janitor

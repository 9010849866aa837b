#pragma once
/// @file
/// `tsctl`: the operator's command-line tool (docs/services.md): `migrate`, `status`,
/// `submit-order`, `load-orders`. One run_once task per invocation.

#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::tsctl {

enum class Command : std::uint8_t { migrate, status, submit_order, load_orders, migrate_streams };

std::string_view to_string(Command command) noexcept;

/// One order request, as the fields of `orders:requests` (common/keys.hpp).
struct OrderSettings {
  std::string symbol;
  std::string side;
  std::string type;
  std::string qty;
  std::string limit_price;
  std::string client_order_id;  ///< empty: a fresh "cli-<unix ms>-<pid>-<n>".
};

struct LoadSettings {
  double rate = 100.0;  ///< orders per second, on average.
  std::uint64_t count = 100;
  std::uint64_t seed = 1;
  std::uint64_t reject_every = 0;  ///< every K-th order is invalid on purpose; 0: none.
};

struct Settings {
  pg::PostgresConfig postgres;
  redis::RedisConfig redis;
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  bool json = false;
  OrderSettings order;
  LoadSettings load;
  std::string summary_file;
  /// migrate-streams: keep the streams of the first layout after copying them.
  bool keep = false;
  /// Overall deadline of the command; zero: automatic (60 s, plus count / rate for
  /// load-orders).
  std::chrono::milliseconds deadline{0};
};

/// What load-orders did, for its summary file (written by main, also after a failure).
struct LoadReport {
  std::uint64_t submitted = 0;
  std::uint64_t invalid_sent = 0;
  /// Batches sent again after a transient failure (after an unknown outcome some requests
  /// of a retried batch may have been added twice; ts-executor is idempotent by id).
  std::uint64_t retries = 0;
  std::string first_id;
  std::string last_id;
  std::string first_stream_id;
  std::string last_stream_id;
};

/// Binds every setting of every sub-command (postgres, redis, and the sub-commands' own).
void add_settings(core::ConfigLoader& loader, Settings& settings);

/// The sub-command named by the positional arguments.
/// @throws core::ConfigError (one line) when it is missing, unknown or not alone.
Command parse_command(const std::vector<std::string>& positional);

/// Checks the settings `command` uses, the clients it opens included, and normalises them
/// (symbols upper-cased). @throws core::ConfigError (one line).
void validate(Command command, Settings& settings);

/// The run_once options of `command` (name, deadline).
lifecycle::ServiceOptions service_options(Command command, const Settings& settings);

boost::asio::awaitable<void> run_migrate(lifecycle::ServiceContext& ctx, const Settings& settings);
boost::asio::awaitable<void> run_status(lifecycle::ServiceContext& ctx, const Settings& settings);
/// Moves what the streams of the first layout (md:trades:<SYMBOL>) still hold for the recorder
/// into the trade streams of their buckets, then deletes them (unless --keep).
boost::asio::awaitable<void> run_migrate_streams(lifecycle::ServiceContext& ctx,
                                                 const Settings& settings);
boost::asio::awaitable<void> run_submit_order(lifecycle::ServiceContext& ctx,
                                              const Settings& settings);
boost::asio::awaitable<void> run_load_orders(lifecycle::ServiceContext& ctx,
                                             const Settings& settings, LoadReport& report);

/// Writes load-orders' summary file; logs (and returns false) when it cannot.
bool write_load_summary(const std::string& path, const LoadReport& report);

}  // namespace trading_shared::services::tsctl

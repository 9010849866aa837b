#pragma once
/// @file
/// ts-executor: order requests (`orders:requests`) → paper venue that fills at the last
/// price → `orders` and `fills` in one transaction, idempotent by client order id → event on
/// `orders:events` → XACK (docs/services.md).

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include "common/settings.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::executor {

/// The shared settings of a consumer service (common/settings.hpp) and the executor's own.
struct ExecutorSettings : ConsumerServiceSettings {
  /// Symbols this venue trades; any other is rejected ("unknown symbol").
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  /// Test-only fault switch (0 = off): `_Exit(137)` after the Nth new order committed,
  /// before its event and its XACK. Settable (and acted on) only in a build with the CMake
  /// option TS_TEST_FAULTS; a release build has no such flag.
  std::int64_t fault_crash_after_commit = 0;
};

void add_executor_settings(core::ConfigLoader& loader, ExecutorSettings& settings);
/// Checks the loaded settings and fills derived defaults; throws `core::ConfigError`.
void finish_settings(ExecutorSettings& settings);

/// The run_daemon options: drain, shutdown budget and the clients' close bounds, checked
/// (F54). @throws core::ConfigError when the budgets cannot add up.
lifecycle::ServiceOptions service_options(const ExecutorSettings& settings);

/// Runs the daemon; returns the process exit code (lifecycle::run_daemon's).
int run_executor(const ExecutorSettings& settings);

// ---- exposed for tests ------------------------------------------------------------------------

/// Compares two unsigned plain decimals (digits with at most one '.'): <0, 0, >0.
int compare_decimal(std::string_view a, std::string_view b) noexcept;
/// An unsigned plain decimal with a non-zero digit.
bool is_positive_decimal(std::string_view text) noexcept;

}  // namespace trading_shared::services::executor

// ts-executor: order requests → paper fills → orders, fills, order events (docs/services.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include "common/settings.hpp"
#include "executor/executor.hpp"

#include <iostream>

namespace core = trading_shared::core;
namespace services = trading_shared::services;
namespace executor = trading_shared::services::executor;

int main(int argc, char** argv) {
  executor::ExecutorSettings settings;
  settings.log.service_name = "ts-executor";
  core::ConfigLoader loader =
      services::make_loader("ts-executor",
                            "Paper venue: executes the order requests of orders:requests at the "
                            "last trade price, records orders and fills, publishes outcomes on "
                            "orders:events.");
  executor::add_executor_settings(loader, settings);
  if (auto code = core::load_or_exit_code(loader, argc, argv)) return *code;
  try {
    executor::finish_settings(settings);
  } catch (const core::ConfigError& e) {
    std::cerr << "ts-executor: configuration error: " << e.what() << '\n';
    return core::kExitBadConfig;
  }
  core::setup_logging(settings.log);
  services::log_start(loader);
  return executor::run_executor(settings);
}

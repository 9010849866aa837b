// ts-recorder: trade streams → ticks (docs/services.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include "common/settings.hpp"
#include "recorder/recorder.hpp"

#include <iostream>

namespace core = trading_shared::core;
namespace services = trading_shared::services;
namespace recorder = trading_shared::services::recorder;

int main(int argc, char** argv) {
  recorder::RecorderSettings settings;
  settings.log.service_name = "ts-recorder";
  core::ConfigLoader loader = services::make_loader(
      "ts-recorder",
      "Records the trade streams (md:{tNN}:trades, every bucket) into the ticks table: "
      "batched, idempotent inserts, acknowledged after commit.");
  recorder::add_recorder_settings(loader, settings);
  if (auto code = core::load_or_exit_code(loader, argc, argv)) return *code;
  try {
    recorder::finish_settings(settings);
  } catch (const core::ConfigError& e) {
    std::cerr << "ts-recorder: configuration error: " << e.what() << '\n';
    return core::kExitBadConfig;
  }
  core::setup_logging(settings.log);
  services::log_start(loader);
  return recorder::run_recorder(settings);
}

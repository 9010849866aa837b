// ts-janitor: retention of ticks and streams, removal of dead consumers (docs/services.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include "common/settings.hpp"
#include "janitor/janitor.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <iostream>

namespace ts = trading_shared;
namespace janitor = trading_shared::services::janitor;

int main(int argc, char** argv) {
  janitor::Settings settings;
  ts::core::LogConfig log_config;
  log_config.service_name = "ts-janitor";
  ts::core::ConfigLoader loader = ts::services::make_loader(
      "ts-janitor",
      "Retention: drops the partitions of ticks older than the window and deletes older rows in "
      "batches, trims the streams by MINID, removes idle consumers with nothing pending. Runs "
      "once; exit 0 when every step succeeded, 1 otherwise, 2 on bad configuration.");
  ts::core::add_log_settings(loader, log_config);
  janitor::add_settings(loader, settings);
  if (auto code = ts::core::load_or_exit_code(loader, argc, argv)) return *code;
  try {
    janitor::validate(settings);
  } catch (const ts::core::ConfigError& e) {
    std::cerr << "ts-janitor: configuration error: " << e.what() << std::endl;
    return ts::core::kExitBadConfig;
  }
  ts::core::setup_logging(log_config);
  ts::services::log_start(loader);

  janitor::Report report;
  const int code = ts::lifecycle::run_once(
      janitor::service_options(settings),
      [&](ts::lifecycle::ServiceContext& ctx) { return janitor::run(ctx, settings, report); });
  if (!report.completed) ++report.errors;  // the deadline or a signal cut the run short
  fmt::print("{}\n", janitor::summary_line(report));
  std::fflush(stdout);
  const bool written =
      settings.summary_file.empty() || janitor::write_summary(settings.summary_file, report);
  if (code != 0) return code;
  return report.errors > 0 || !written ? 1 : 0;
}

// tsctl: migrate | status | submit-order | load-orders | migrate-streams | status-page
// (docs/services.md, docs/operations.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/config_warnings.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include "common/settings.hpp"
#include "tsctl/tsctl.hpp"

#include <iostream>

namespace ts = trading_shared;
namespace tsctl = trading_shared::services::tsctl;

int main(int argc, char** argv) {
  tsctl::Settings settings;
  ts::core::LogConfig log_config;
  log_config.service_name = "tsctl";
  log_config.level = spdlog::level::warn;  // a CLI: its output is what it prints
  ts::core::ConfigLoader loader = ts::services::make_loader(
      "tsctl",
      "Operator tool of the trading services. Commands: migrate (apply the schema), status "
      "(streams, lag, pending, table counts), submit-order (one order request), load-orders "
      "(a deterministic stream of order requests at a given rate), migrate-streams (move the "
      "trade streams of the first layout, md:trades:<SYMBOL>, into the bucket streams), acl (the "
      "services' Redis ACL users: print or --apply).");
  loader.allow_positional("command");
  ts::core::add_log_settings(loader, log_config);
  tsctl::add_settings(loader, settings);
  tsctl::Command command{};
  try {
    // `--service` may be repeated (each adds a service); the loader keeps a flag's last value,
    // so the repeats are joined into one comma-separated value first.
    std::vector<std::string> args = tsctl::join_repeated_flag(argc, argv, "--service");
    std::vector<char*> arg_pointers;
    for (std::string& arg : args) arg_pointers.push_back(arg.data());
    const ts::core::LoadResult loaded =
        loader.load(static_cast<int>(arg_pointers.size()), arg_pointers.data());
    if (loaded.help_requested) {
      std::cout << loaded.help_text << std::flush;
      return 0;
    }
    command = tsctl::parse_command(loaded.positional);
    tsctl::validate(command, settings);
  } catch (const ts::core::ConfigError& e) {
    std::cerr << "tsctl: configuration error: " << e.what() << std::endl;
    return ts::core::kExitBadConfig;
  }
  ts::core::setup_logging(log_config);
  // A secret given on the command line (F66): once, naming the flag, never the value.
  for (const std::string& warning : ts::core::take_config_warnings()) {
    ts::core::logger("tsctl")->warn("{}", warning);
  }

  tsctl::LoadReport load_report;
  const ts::lifecycle::ServiceBody body =
      [&](ts::lifecycle::ServiceContext& ctx) -> boost::asio::awaitable<void> {
    switch (command) {
      case tsctl::Command::migrate:
        co_await tsctl::run_migrate(ctx, settings);
        break;
      case tsctl::Command::status:
        co_await tsctl::run_status(ctx, settings);
        break;
      case tsctl::Command::submit_order:
        co_await tsctl::run_submit_order(ctx, settings);
        break;
      case tsctl::Command::load_orders:
        co_await tsctl::run_load_orders(ctx, settings, load_report);
        break;
      case tsctl::Command::migrate_streams:
        co_await tsctl::run_migrate_streams(ctx, settings);
        break;
      case tsctl::Command::acl:
        co_await tsctl::run_acl(ctx, settings);
        break;
      case tsctl::Command::status_page:
        co_await tsctl::run_status_page(ctx, settings.status_page);
        break;
    }
  };
  // status-page serves until stopped: a daemon (SIGTERM is a clean stop, exit 0).
  const ts::lifecycle::ServiceOptions options = tsctl::service_options(command, settings);
  const int code = command == tsctl::Command::status_page ? ts::lifecycle::run_daemon(options, body)
                                                          : ts::lifecycle::run_once(options, body);
  // The summary says what was submitted, also when the run failed half-way.
  if (command == tsctl::Command::load_orders && !settings.summary_file.empty() &&
      !tsctl::write_load_summary(settings.summary_file, load_report)) {
    return code == 0 ? 1 : code;
  }
  return code;
}

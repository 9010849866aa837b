// ts-feed-sim: local exchange simulator (docs/services.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/awaitable.hpp>

#include "common/settings.hpp"
#include "feed_sim/feed_sim.hpp"

#include <iostream>

namespace asio = boost::asio;
namespace core = trading_shared::core;
namespace lifecycle = trading_shared::lifecycle;
namespace feed_sim = trading_shared::services::feed_sim;

namespace {

asio::awaitable<void> serve(lifecycle::ServiceContext& ctx, feed_sim::FeedSimConfig& config) {
  auto* sim =
      co_await ctx.scope().open<feed_sim::FeedSimulator>("feed-sim", ctx.executor(), config);
  ctx.on_stop([sim] { sim->stop_generating(); });
  ctx.health().ready = true;
  co_await ctx.until_stopped();
  co_await sim->shutdown();  // close frames, bounded by --close-timeout
  sim->write_summary();      // a failure here is exit code 1
}

}  // namespace

int main(int argc, char** argv) {
  feed_sim::FeedSimConfig config;
  core::LogConfig log_config;
  log_config.service_name = "ts-feed-sim";
  core::ConfigLoader loader = trading_shared::services::make_loader(
      "ts-feed-sim",
      "Local exchange simulator: serves a deterministic Binance-style trade stream over "
      "WebSocket, with rate control, fault switches and a summary of what it generated.");
  core::add_log_settings(loader, log_config);
  feed_sim::add_feed_sim_settings(loader, config);
  if (const auto code = core::load_or_exit_code(loader, argc, argv)) return *code;
  try {
    feed_sim::check_config(config);
  } catch (const core::ConfigError& e) {
    std::cerr << "ts-feed-sim: configuration error: " << e.what() << std::endl;
    return core::kExitBadConfig;
  }
  core::setup_logging(log_config);
  trading_shared::services::log_start(loader);

  lifecycle::ServiceOptions options;
  options.name = "ts-feed-sim";
  options.drain_timeout = config.close_timeout + std::chrono::seconds(1);
  options.close_timeout = config.close_timeout + std::chrono::seconds(3);
  options.shutdown_timeout = options.drain_timeout + options.close_timeout;
  options.closes = {{"feed-sim", options.close_timeout}};  // checked by run_daemon (F54)
  return lifecycle::run_daemon(
      options, [&config](lifecycle::ServiceContext& ctx) { return serve(ctx, config); });
}

// ts-receiver: WebSocket trade feed → Redis streams (docs/services.md).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/http/http_client.hpp>

#include "common/settings.hpp"
#include "receiver/receiver.hpp"
#include "receiver/trade_parser.hpp"

#include <iostream>
#include <string>

using namespace trading_shared;

int main(int argc, char** argv) {
  services::ReceiverConfig config;
  config.feed.url = "ws://127.0.0.1:9443/ws";
  config.redis.client_name = "ts-receiver";
  std::string overflow = std::string(ws::to_string(config.feed.overflow));
  core::LogConfig log_config;
  log_config.service_name = "ts-receiver";
  std::chrono::milliseconds drain_timeout{5000};
  std::chrono::milliseconds shutdown_timeout = services::kDefaultShutdownTimeout;
  lifecycle::AdminOptions admin;
  core::ConfigLoader loader = services::make_loader(
      "ts-receiver",
      "Reads the trade feed (WebSocket) and writes every trade to its Redis trade stream "
      "md:{tNN}:trades (a bucket of symbols) and its last trade to md:{tNN}:last.");
  services::add_redis_settings(loader, config.redis);
  loader.add(config.feed.url, {"feed.url", "ws:// or wss:// (TLS) URL of the trade feed"});
  services::add_tls_settings(loader, "feed.tls", "wss:// and https:// (feed and REST)",
                             "the feed's and REST's", config.feed.tls);
  loader.add(config.symbols, {"symbols", "symbols to subscribe to (comma-separated)"})
      .add(config.feed.idle_timeout,
           {"feed.idle_timeout", "silence after which the feed is declared dead"})
      .add(config.feed.queue_capacity,
           {"feed.queue_capacity", "messages buffered between the feed and Redis"})
      .add(config.feed.queue_max_bytes,
           {"feed.queue_bytes",
            "bytes of messages buffered between the feed and Redis (at least 1 MiB, the largest "
            "message)"})
      .add(overflow,
           {"feed.overflow",
            "when that buffer is full (either bound): drop_oldest, drop_newest or disconnect"})
      .add(config.batch, {"batch", "most trades per Redis round trip"})
      .add(config.stream_maxlen,
           {"stream_maxlen",
            "trim a trade stream longer than this, about once a second, of what no consumer "
            "group still needs (0: no trimming)"})
      .add(config.stall_buffer,
           {"stall_buffer",
            "trades kept per trade stream while its writes fail (beyond: oldest dropped, "
            "counted)"})
      .add(config.feed_limits.max_streams_per_connection,
           {"max_streams_per_connection",
            "the venue's limit of streams per WebSocket connection: symbols are sharded over "
            "connections so that none carries more"})
      .add(config.feed_limits.max_control_messages_per_second,
           {"max_control_messages_per_second",
            "the venue's limit of incoming messages per second per connection: SUBSCRIBE "
            "messages are paced below it"})
      .add(config.feed_limits.subscribe_timeout,
           {"subscribe_timeout", "a SUBSCRIBE not confirmed within this is an error (counted)"})
      .add(config.feed_limits.connection_lifetime,
           {"connection_lifetime",
            "the venue's maximum connection age: each connection is replaced (make before "
            "break) at lifetime - rotate_before (0: off)"})
      .add(config.feed_limits.rotate_before,
           {"rotate_before", "how long before --connection-lifetime a connection is replaced"})
      .add(config.backfill.rest_url,
           {"rest.url",
            "http:// or https:// URL of the venue's REST endpoint for backfill (empty: "
            "http://host:port of a ws:// --feed-url, https://host:port of a wss:// one)"})
      .add(config.backfill.fetch.api_key,
           {"rest.api_key", "sent as X-MBX-APIKEY with every REST call (empty: none)", true})
      .add(config.backfill.rest_timeout, {"rest.timeout", "deadline of one REST call"})
      .add(config.backfill.enabled,
           {"backfill",
            "repair trade id gaps (restart, reconnect, rotation) from the REST endpoint; false: "
            "every live trade is written as received, gaps only logged"})
      .add(config.backfill.fetch.page, {"backfill_page", "trades per REST call (1..1000)"})
      .add(config.backfill.concurrency, {"backfill_concurrency", "missing ranges fetched at once"})
      .add(config.backfill.fetch.weight_limit,
           {"backfill_weight_limit",
            "REST weight spent at most per --backfill-weight-window (25 per call)"})
      .add(config.backfill.fetch.weight_window,
           {"backfill_weight_window", "window of --backfill-weight-limit"})
      .add(config.summary_file, {"summary_file", "JSON summary written on exit"})
      .add(drain_timeout, {"drain_timeout",
                           "after SIGTERM, time to write what was already received before the "
                           "writer is cancelled"});
  services::add_shutdown_setting(loader, shutdown_timeout);
  services::add_admin_settings(loader, admin);
  core::add_log_settings(loader, log_config);
  if (auto code = core::load_or_exit_code(loader, argc, argv)) return *code;
  lifecycle::ServiceOptions options;
  // Every check before anything is set up or connected: exit 2 with one line.
  try {
    try {
      config.feed.overflow = ws::parse_overflow_policy(overflow);
    } catch (const std::invalid_argument& e) {
      throw core::ConfigError("invalid value for --feed-overflow: " + std::string(e.what()));
    }
    services::check_symbols(config.symbols);
    if (config.batch == 0) throw core::ConfigError("--batch must be > 0");
    if (config.stall_buffer == 0) throw core::ConfigError("--stall-buffer must be > 0");
    services::check_redis_settings(config.redis);
    services::check_admin_settings(admin);
    services::check_feed_limits(config.feed_limits);
    if (config.backfill.enabled) {
      if (config.backfill.rest_url.empty()) {
        try {
          config.backfill.rest_url = services::rest_url_from_feed(config.feed.url);
        } catch (const Error& e) {
          throw core::ConfigError(std::string("cannot derive --rest-url from --feed-url: ") +
                                  e.what());
        }
      }
      try {
        http::validate(services::rest_client_config(config));
      } catch (const Error& e) {
        throw core::ConfigError(std::string("invalid --rest-url: ") + e.what());
      }
      const auto& f = config.backfill.fetch;
      if (f.page == 0 || f.page > 1000) throw core::ConfigError("--backfill-page must be 1..1000");
      if (config.backfill.concurrency == 0 || config.backfill.concurrency > 64) {
        throw core::ConfigError("--backfill-concurrency must be 1..64");
      }
      if (f.weight_limit < f.weight_per_call) {
        throw core::ConfigError("--backfill-weight-limit must be >= 25 (the weight of one call)");
      }
      if (f.weight_window <= std::chrono::milliseconds::zero()) {
        throw core::ConfigError("--backfill-weight-window must be > 0");
      }
      if (config.backfill.rest_timeout <= std::chrono::milliseconds::zero()) {
        throw core::ConfigError("--rest-timeout must be > 0");
      }
    }
    try {
      ws::validate(config.feed);
    } catch (const Error& e) {
      throw core::ConfigError(std::string("invalid --feed-* setting: ") + e.what());
    }
    if (drain_timeout < std::chrono::milliseconds::zero()) {
      throw core::ConfigError("--drain-timeout must be >= 0");
    }
    // The feed's close: its close frame within close_timeout, then up to 500 ms for the
    // connection to be cut, plus 1 s for its tasks to wind down.
    const auto feed_close = config.feed.close_timeout + std::chrono::milliseconds(1500);
    options = services::service_options(
        "ts-receiver", drain_timeout, shutdown_timeout,
        {{"feed", feed_close}, {"redis", services::close_bound(config.redis)}},
        "--drain-timeout, --shutdown-timeout, --redis-close-timeout");
    options.admin = services::admin_options(admin);
    config.check_interval = admin.check_interval;
  } catch (const core::ConfigError& e) {
    std::cerr << "ts-receiver: configuration error: " << e.what() << std::endl;
    return core::kExitBadConfig;
  }
  core::setup_logging(log_config);
  services::log_start(loader);

  return lifecycle::run_daemon(options,
                               [&](lifecycle::ServiceContext& ctx) -> boost::asio::awaitable<void> {
                                 co_await services::run_receiver(ctx, config);
                               });
}

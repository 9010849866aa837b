#include "common/service_metrics.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/metrics.hpp>
#include <trading_shared/redis/reply.hpp>

#include <string_view>
#include <utility>

namespace trading_shared::services {

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("metrics");
  return logger;
}

/// The value of `key` in a flat [key, value, key, value...] reply, or nullopt.
std::optional<redis::ReplyView> field_of(redis::ReplyView pairs, std::string_view key) {
  for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
    if (pairs[i].is_string() && pairs[i].as_string() == key) return pairs[i + 1];
  }
  return std::nullopt;
}

}  // namespace

void BodyHooks::add_sampler(std::function<void()> sample) {
  ctx_->add_sampler([alive = alive_, sample = std::move(sample)] {
    if (*alive) sample();
  });
}

void BodyHooks::add_readiness_check(std::string name, std::function<std::string()> check) {
  ctx_->add_readiness_check(std::move(name),
                            [alive = alive_, check = std::move(check)]() -> std::string {
                              if (!*alive) return {};
                              return check();
                            });
}

void watch_clients(BodyHooks& hooks, pg::PostgresClient* pg, redis::RedisClient* redis) {
  if (pg != nullptr) {
    auto metrics = std::make_shared<pg::PostgresMetrics>(hooks.metrics(), "main");
    metrics->attach(*pg);
    hooks.add_sampler([metrics, pg] { metrics->sample(pg->stats()); });
    auto readiness = std::make_shared<pg::PostgresReadiness>();
    hooks.add_readiness_check("postgres",
                              [readiness, pg] { return readiness->check(pg->stats()); });
  }
  if (redis != nullptr) {
    auto metrics = std::make_shared<redis::RedisMetrics>(hooks.metrics(), "main");
    metrics->attach(*redis);
    hooks.add_sampler([metrics, redis] { metrics->sample(redis->stats()); });
    hooks.add_readiness_check("redis", [redis] { return redis::readiness(redis->stats()); });
  }
}

boost::asio::awaitable<GroupState> group_state(redis::RedisClient& redis,
                                               std::span<const std::string> streams,
                                               const std::string& group,
                                               redis::CommandOptions options) {
  // One round trip for every stream (one deadline for the whole probe).
  redis::Request request;
  for (const std::string& stream : streams) request.push("XINFO", "GROUPS", stream);
  const std::vector<redis::Reply> replies = co_await redis.pipeline(request, options);
  GroupState state;
  bool lag_known = true;
  std::int64_t lag = 0;
  for (const redis::Reply& groups : replies) {
    bool found = false;
    if (!groups.is_error()) {  // an error: no such stream yet (so no group either)
      for (const redis::ReplyView entry : groups) {
        const auto name = field_of(entry, "name");
        if (!name || name->as_string() != group) continue;
        found = true;
        if (const auto pending = field_of(entry, "pending")) state.pending += pending->as_int();
        const auto entry_lag = field_of(entry, "lag");
        if (entry_lag && !entry_lag->is_nil()) {
          lag += entry_lag->as_int();
        } else {
          lag_known = false;
        }
      }
    }
    if (!found) lag_known = false;
  }
  if (lag_known) state.lag = lag;
  co_return state;
}

boost::asio::awaitable<void> probe_group(redis::RedisClient& redis,
                                         std::vector<std::string> streams, std::string group,
                                         redis::StreamConsumerMetrics& metrics,
                                         core::MetricsRegistry& registry, core::StopSignal& stop,
                                         std::chrono::milliseconds interval) {
  core::Counter& failures = registry.counter(
      core::metric_name("ts_stream_consumer_probe_failures_total", {{"group", group}}),
      "Failed XINFO GROUPS probes of the group's pending and lag gauges.");
  redis::CommandOptions options;
  options.timeout = interval;
  do {
    try {
      const GroupState state = co_await group_state(redis, streams, group, options);
      metrics.set_group_state(state.pending, state.lag);
    } catch (const Error& e) {
      // The client is closing (a stop): not a failure, and nothing more to probe.
      if (stop.stop_requested() || e.code() == errc::client_closed) break;
      if (e.kind() == ErrorKind::cancelled) throw;
      failures.add();
      log()->debug("group {}: pending/lag probe failed (#{}): {}", group, failures.value(),
                   e.what());
    }
  } while (co_await stop.sleep_for(interval));
}

std::string ConsumerReadiness::check(const redis::StreamConsumerStats& stats) {
  const bool failing = stats.read_errors > last_.read_errors &&
                       stats.delivered == last_.delivered && stats.acked == last_.acked;
  last_ = stats;
  // A fixed text: the counts are in ts_stream_consumer_read_errors_total.
  if (failing) return "reads failing, nothing delivered or acknowledged";
  return {};
}

std::string ConsumerWritePath::check(std::span<const HandlerCalls> calls, std::uint64_t retries,
                                     std::uint64_t commits, const redis::StreamConsumerStats& stats,
                                     Clock::time_point now) {
  bool stuck = false;
  for (const HandlerCalls& c : calls) {
    stuck = stuck || (c.active && now - c.started >= interval_ && retries > c.retries_at_start &&
                      commits == c.commits_at_start);
  }
  if (stats.acked > acked_) failing_ = false;
  if (stats.handler_errors > handler_errors_ && stats.acked == acked_) failing_ = true;
  handler_errors_ = stats.handler_errors;
  acked_ = stats.acked;
  if (stuck) return "a handler call has been retried for over a check interval, nothing committed";
  if (failing_) return "handler calls failing, nothing acknowledged";
  return {};
}

redis::StreamConsumerStats total_stats(
    std::span<const std::unique_ptr<redis::StreamConsumer>> consumers) {
  redis::StreamConsumerStats total;
  for (const auto& consumer : consumers) {
    const auto& s = consumer->stats();
    total.delivered += s.delivered;
    total.acked += s.acked;
    total.handler_errors += s.handler_errors;
    total.claimed += s.claimed;
    total.dead_lettered += s.dead_lettered;
    total.deleted += s.deleted;
    total.read_errors += s.read_errors;
    total.groups_created += s.groups_created;
    total.splits += s.splits;
  }
  return total;
}

}  // namespace trading_shared::services

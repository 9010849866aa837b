#pragma once
/// @file
/// What the services share for their admin endpoint (docs/operations.md, "Metrics"):
/// samplers and readiness checks that stop touching the body's objects when the body ends,
/// the clients' exporters wired in one call, the consumer group's pending/lag probe and the
/// consumer's readiness.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/metrics.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace trading_shared::services {

/// Samplers and readiness checks of a service body, registered on its `ServiceContext`. They
/// may reference the body's locals and the clients of its scope: once the hooks are destroyed
/// (a local of the body: when the body ends, before the scope closes the clients) a sampler
/// does nothing and a check reports "" (the runner reports the stop itself).
class BodyHooks {
 public:
  explicit BodyHooks(lifecycle::ServiceContext& ctx)
      : ctx_(&ctx), alive_(std::make_shared<bool>(true)) {}
  ~BodyHooks() { *alive_ = false; }
  BodyHooks(const BodyHooks&) = delete;
  BodyHooks& operator=(const BodyHooks&) = delete;

  core::MetricsRegistry& metrics() noexcept { return ctx_->metrics(); }
  void add_sampler(std::function<void()> sample);
  void add_readiness_check(std::string name, std::function<std::string()> check);

 private:
  lifecycle::ServiceContext* ctx_;
  std::shared_ptr<bool> alive_;
};

/// The clients' exporters (`ts_pg_*{client="main"}`, `ts_redis_*{client="main"}`, their
/// round-trip histograms attached) as samplers, and the readiness checks "postgres" and
/// "redis". Either client may be null.
void watch_clients(BodyHooks& hooks, pg::PostgresClient* pg, redis::RedisClient* redis);

/// A consumer group's state summed over its streams, from XINFO GROUPS (one pipeline).
struct GroupState {
  std::int64_t pending = 0;
  /// nullopt when the server cannot tell for one of the streams (or the group is missing).
  std::optional<std::int64_t> lag;
};
boost::asio::awaitable<GroupState> group_state(redis::RedisClient& redis,
                                               std::span<const std::string> streams,
                                               const std::string& group,
                                               redis::CommandOptions options = {});

/// How often the consumer services probe their group's pending and lag.
inline constexpr std::chrono::milliseconds kGroupProbeInterval{1000};

/// Until `stop` (or the client is closed): every `interval` (also the probe's timeout, so that
/// it never holds a stop up for longer), `group_state` into
/// `metrics.set_group_state`. A failed probe is counted in
/// `ts_stream_consumer_probe_failures_total{group}` and logged at debug level (the consumer logs
/// the server's troubles itself); it never ends the service.
boost::asio::awaitable<void> probe_group(redis::RedisClient& redis,
                                         std::vector<std::string> streams, std::string group,
                                         redis::StreamConsumerMetrics& metrics,
                                         core::MetricsRegistry& registry, core::StopSignal& stop,
                                         std::chrono::milliseconds interval);

/// The calls of one consumer's handler in progress, for the "write_path" readiness check: the
/// handler opens a `Call` when it begins (one clock read per call) and the `Call` closes it
/// when it ends (returned, threw, or its coroutine destroyed). One per consumer: a consumer
/// runs one handler call at a time.
struct HandlerCalls {
  using Clock = std::chrono::steady_clock;
  bool active = false;
  Clock::time_point started{};
  std::uint64_t retries_at_start = 0;  ///< the service's retry count when the call began
  std::uint64_t commits_at_start = 0;  ///< its commit count when the call began

  class Call {
   public:
    explicit Call(HandlerCalls& calls) noexcept : calls_(&calls) {}
    ~Call() { calls_->active = false; }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

   private:
    HandlerCalls* calls_;
  };
  /// Marks a call begun at `now`, with the service's retry and commit counts then.
  [[nodiscard]] Call begin(Clock::time_point now, std::uint64_t retries,
                           std::uint64_t commits) noexcept {
    active = true;
    started = now;
    retries_at_start = retries;
    commits_at_start = commits;
    return Call(*this);
  }
};

/// The "write_path" readiness check of a consumer service (ts-recorder, ts-executor), run once
/// per check interval on the loop. Not ready:
/// - while a handler call has been in progress for at least one check interval with the
///   service's retries grown and nothing committed since it began (a statement that keeps
///   timing out, a sink that keeps failing transiently: retried for ever, nothing read
///   meanwhile, so the "consumer" check sees no read error);
/// - from a check that sees handler errors grown and nothing acknowledged since the previous
///   check (a permanent error such as a revoked privilege: the entries stay pending) until an
///   entry is acknowledged again.
/// The reasons are fixed texts (the admin endpoint logs each change of a reason).
class ConsumerWritePath {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ConsumerWritePath(std::chrono::milliseconds interval) : interval_(interval) {}
  /// `calls`: every consumer's; `retries`, `commits`: the service's counts now; `stats`: the
  /// consumers' summed stats.
  std::string check(std::span<const HandlerCalls> calls, std::uint64_t retries,
                    std::uint64_t commits, const redis::StreamConsumerStats& stats,
                    Clock::time_point now);

 private:
  std::chrono::milliseconds interval_;
  std::uint64_t handler_errors_ = 0;
  std::uint64_t acked_ = 0;
  bool failing_ = false;
};

/// The "consumer" readiness check, run once per check interval on the consumers' summed
/// stats: not ready while reads keep failing (read errors grew since the previous check and
/// nothing was delivered or acknowledged meanwhile).
class ConsumerReadiness {
 public:
  std::string check(const redis::StreamConsumerStats& stats);

 private:
  redis::StreamConsumerStats last_{};
};

/// The sum of several consumers' stats (one group's readers).
redis::StreamConsumerStats total_stats(
    std::span<const std::unique_ptr<redis::StreamConsumer>> consumers);

}  // namespace trading_shared::services

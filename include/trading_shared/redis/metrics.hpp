#pragma once
/// @file
/// Exporters of the Redis client's and a StreamConsumer's figures into a
/// `core::MetricsRegistry` (docs/operations.md, "Metrics"). Each resolves its series once, at
/// construction; `sample()` copies a stats snapshot into them (relaxed atomic stores, no
/// allocation, no lock): run it from a `ServiceContext::add_sampler` on the client's loop.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trading_shared::redis {

/// `ts_redis_*{client="<client>"}`: connection, requests, failures, reconnects, breaker, and
/// the round-trip histogram the client fills itself once `attach`ed.
class RedisMetrics {
 public:
  /// `client`: the label value, a fixed name of the client in its service ("main").
  RedisMetrics(core::MetricsRegistry& registry, std::string_view client);
  RedisMetrics(const RedisMetrics&) = delete;
  RedisMetrics& operator=(const RedisMetrics&) = delete;

  void sample(const RedisStats& stats) noexcept;
  /// `ts_redis_round_trip_seconds{client}`.
  core::Histogram& round_trip() noexcept { return round_trip_; }
  /// The client times its requests into `round_trip()` (`set_round_trip_histogram`). Call on
  /// the client's executor; the registry must outlive the client.
  void attach(RedisClient& client) noexcept { client.set_round_trip_histogram(&round_trip_); }

 private:
  core::Gauge& connected_;
  core::Gauge& in_flight_;
  core::Gauge& queued_;
  core::Gauge& blocking_connections_;
  core::Counter& commands_;
  core::Counter& replies_;
  core::Counter& failures_;
  core::Counter& timeouts_;
  core::Counter& rejected_;
  core::Counter& dropped_replies_;
  core::Counter& reconnects_;
  core::Counter& connect_failures_;
  core::Gauge& breaker_state_;
  core::Counter& breaker_trips_;
  core::Histogram& round_trip_;
};

/// Why a Redis client is not ready for `/readyz` ("" when it is): not connected, or its
/// breaker open.
std::string readiness(const RedisStats& stats);

/// `ts_stream_consumer_*{group="<group>"}`: the consumer's counters (`sample`) and the group's
/// state as the server reports it (`set_group_state`, from an XINFO GROUPS the service runs
/// off the sampler: a sampler must not wait for the server).
class StreamConsumerMetrics {
 public:
  StreamConsumerMetrics(core::MetricsRegistry& registry, std::string_view group);
  StreamConsumerMetrics(const StreamConsumerMetrics&) = delete;
  StreamConsumerMetrics& operator=(const StreamConsumerMetrics&) = delete;

  void sample(const StreamConsumerStats& stats) noexcept;
  /// `pending`: entries delivered and not acknowledged (XINFO GROUPS `pending`), summed over
  /// the group's streams; `lag`: entries not yet delivered to the group (`lag`), summed;
  /// nullopt when the server cannot tell (the gauge is then -1).
  void set_group_state(std::int64_t pending, std::optional<std::int64_t> lag) noexcept;

 private:
  core::Counter& delivered_;
  core::Counter& acked_;
  core::Counter& handler_errors_;
  core::Counter& claimed_;
  core::Counter& dead_lettered_;
  core::Counter& deleted_;
  core::Counter& read_errors_;
  core::Gauge& pending_;
  core::Gauge& lag_;
};

}  // namespace trading_shared::redis

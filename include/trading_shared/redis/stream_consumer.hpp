#pragma once
/// @file
/// `StreamConsumer`: runs one consumer of a Redis consumer group with at-least-once delivery
/// (docs/redis.md; docs/failure-modes.md F26-F30).
///
/// - The group is created with `XGROUP CREATE ... MKSTREAM` if missing (BUSYGROUP is fine),
///   at start and again whenever the server says NOGROUP (FLUSHALL, a fresh server: F30).
/// - This consumer's own pending entries are processed first (entries it read before a
///   crash), then new ones (`>`), read with `XREADGROUP BLOCK` on a dedicated connection.
/// - An entry is acknowledged (XACK) only after the handler returned normally. A handler that
///   throws leaves it pending: it is delivered again (own pending entries are re-read every
///   `claim_interval`), so the sink must be idempotent (F24, F26).
/// - Every `claim_interval`, entries pending longer than `claim_min_idle` in *any* consumer of
///   the group (a crashed one) are taken over with XAUTOCLAIM (F27).
/// - An entry delivered more than `max_deliveries` times is copied to the dead-letter stream
///   (its fields plus `dlq_source`, `dlq_id`, `dlq_deliveries`, `dlq_group`) and
///   acknowledged (F28). Not while the sink refuses the handler's privilege or identity
///   (`core::is_access_denied`: 42501, class 28, NOPERM, NOAUTH, WRONGPASS, until a handler
///   call succeeds again): such a refusal makes no entry poison, so entries stay pending
///   however often they are delivered, and go through once the privilege is granted (F64, F65).
/// - Pending entries that were trimmed or deleted from the stream are acknowledged, logged
///   and counted (`deleted`), never passed to the handler (F29).
///
/// One stream or several (`streams`): several streams of one group are read together, one
/// `XREADGROUP ... STREAMS s1 .. sn > .. >` on one blocking connection, so that the number of
/// connections does not grow with the number of streams (F72). Pending entries, claims, dead
/// letters and acknowledgements stay per stream.
///
/// Two handler modes:
/// - per entry (`Handler`): each entry is handled on its own; those whose handler returned
///   are acknowledged together after the batch (one XACK per read).
/// - batch (`BatchHandler`): the deliverable entries of one read (after the dead-letter and
///   deleted filtering) are handed over in one call, in stream order. Returning normally
///   acknowledges all of them in one XACK; throwing acknowledges none (all stay pending and
///   are delivered again; `handler_errors` grows by the number of entries). For sinks that
///   write a batch in one statement (ts-recorder). A batch whose handler throws an `Error` of
///   kind `permanent` (a poison entry the sink refuses) is split in halves and each half handed
///   over again, down to single entries, so that only the entries at fault stay pending (and reach
///   the dead-letter stream after `max_deliveries`); their batch-mates are acknowledged (F44). A
///   refused privilege or identity (`core::is_access_denied`) is about the sink, not the
///   entries: that batch is not split but stays pending whole, logged once per call. Each
///   entry's `stream` names the stream it came from.

#include <trading_shared/core/build_config.hpp>  // the ODR guard
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::redis {

struct StreamConsumerConfig {
  /// The stream to consume; or leave it empty and name several in `streams`.
  std::string stream;
  /// Several streams read together (one XREADGROUP names them all; in Redis Cluster they
  /// must share a hash slot). Each gets the group; `batch` applies to each stream.
  std::vector<std::string> streams;
  std::string group;
  std::string consumer;  ///< unique per process (e.g. "recorder-<host>-<pid>").
  /// Where the group starts when this consumer creates it: "0" = the whole stream (nothing
  /// already in it is missed), "$" = only entries added from now on. Default "0".
  std::string group_start_id = "0";
  std::int64_t batch = 100;                         ///< COUNT of each read.
  std::chrono::milliseconds block{1000};            ///< BLOCK of each read of new entries; > 0.
  std::chrono::milliseconds claim_min_idle{30000};  ///< XAUTOCLAIM's min-idle-time.
  std::chrono::milliseconds claim_interval{5000};   ///< how often to reclaim / re-read pending.
  std::uint32_t max_deliveries = 5;                 ///< beyond it: dead-letter. >= 1.
  /// Dead-letter stream; empty = "<stream>:dead" for each stream.
  std::string dead_letter_stream;
  /// Pause after a failed read (connection loss, breaker open) before the next one.
  std::chrono::milliseconds error_backoff{200};
};

struct StreamConsumerStats {
  std::uint64_t delivered = 0;       ///< entries passed to the handler.
  std::uint64_t acked = 0;           ///< entries acknowledged after the handler succeeded.
  std::uint64_t handler_errors = 0;  ///< handler threw: the entry stays pending.
  std::uint64_t claimed = 0;         ///< entries taken over from other consumers (XAUTOCLAIM).
  std::uint64_t dead_lettered = 0;   ///< entries moved to the dead-letter stream.
  std::uint64_t deleted = 0;         ///< pending IDs whose entry was gone (trimmed/deleted).
  std::uint64_t read_errors = 0;     ///< failed reads/acks (logged; retried after a pause).
  std::uint64_t groups_created = 0;  ///< XGROUP CREATE that created the group.
  std::uint64_t splits = 0;          ///< batches split to isolate the entry of a permanent failure.
};

class StreamConsumer {
 public:
  /// The handler gets each entry once per delivery; returning normally acknowledges it.
  using Handler = std::function<boost::asio::awaitable<void>(const StreamEntry&)>;
  /// The handler gets the deliverable entries of one read, once per delivery; returning
  /// normally acknowledges all of them, throwing none. The span is valid during the call.
  using BatchHandler = std::function<boost::asio::awaitable<void>(std::span<const StreamEntry>)>;

  /// `client` must be started and outlive the consumer. Throws `invalid_argument` on a bad
  /// config (no stream, or both `stream` and `streams`; a stream named twice; empty group or
  /// consumer; max_deliveries 0; batch < 1).
  StreamConsumer(RedisClient& client, StreamConsumerConfig config, Handler handler);
  /// Batch mode (see the file comment); same requirements.
  StreamConsumer(RedisClient& client, StreamConsumerConfig config, BatchHandler handler);

  /// Runs until `stop()`, cancellation or `close()` of the client, and then returns normally.
  /// Every other failure (server errors, lost connections, a handler's exception) is logged,
  /// counted and retried after `error_backoff`; a missing group is re-created. A refused
  /// permission (NOPERM: the user's ACL lacks a command or key) is logged once and thrown:
  /// never retried (F64). Stop the
  /// consumer before closing the client: a handler finishing during `close()` cannot XACK
  /// (its entries are delivered again later: at-least-once).
  boost::asio::awaitable<void> run();
  /// Asks `run()` to return after the current step (at most one read's `block` later; at
  /// once from the pause after a failed read). The entries of a read already returned are
  /// still handled and acknowledged first, in both modes: a graceful stop leaves nothing
  /// pending in this consumer's name (a rolling restart, F80). To bound that, cancel `run()`.
  void stop() noexcept { stop_.request_stop(); }

  /// One pass over this consumer's own pending entries (what `run()` does first and every
  /// `claim_interval`); returns how many entries were handled. Public for tests and tools.
  boost::asio::awaitable<std::size_t> process_own_pending();
  /// One XAUTOCLAIM pass (what `run()` does every `claim_interval`); returns the number of
  /// entries claimed and handled.
  boost::asio::awaitable<std::size_t> reclaim_stale();
  /// Ensures the group exists (XGROUP CREATE ... MKSTREAM; BUSYGROUP tolerated).
  boost::asio::awaitable<void> ensure_group();

  const StreamConsumerStats& stats() const noexcept { return stats_; }
  const StreamConsumerConfig& config() const noexcept { return config_; }
  /// The streams consumed (`stream` alone, or `streams`).
  const std::vector<std::string>& streams() const noexcept { return streams_; }

 private:
  /// Filters, hands over and acknowledges what one read returned (one StreamRead per stream).
  boost::asio::awaitable<std::size_t> handle_reads(std::vector<StreamRead> reads,
                                                   bool check_deliveries);
  boost::asio::awaitable<void> dead_letter(std::size_t stream, const StreamEntry& entry,
                                           std::int64_t deliveries);
  /// Hands `entries` to the batch handler; sets `ok[i]` for the entries handled. A permanent
  /// failure splits the batch (see the file comment).
  boost::asio::awaitable<void> run_batch_handler(std::span<const StreamEntry> entries,
                                                 std::span<char> ok);
  std::size_t index_of(std::string_view stream) const noexcept;
  void validate_config(bool has_handler);

  RedisClient* client_;
  StreamConsumerConfig config_;
  std::vector<std::string> streams_;
  std::vector<std::string> dead_letter_streams_;  // one per stream
  Handler handler_;
  BatchHandler batch_handler_;
  StreamConsumerStats stats_;
  /// The last handler call failed with a refused privilege or identity (is_access_denied):
  /// entries past max_deliveries are not dead-lettered meanwhile. Cleared by a success.
  bool sink_refused_ = false;
  core::StopSignal stop_;  // stop(); ends the error pause at once
};

}  // namespace trading_shared::redis

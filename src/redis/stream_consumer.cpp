#include <trading_shared/core/access.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

namespace trading_shared::redis {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("redis");
  return logger;
}

bool is_server_error(const Error& e, std::string_view code) {
  return e.server() && e.server()->code == code;
}

}  // namespace

StreamConsumer::StreamConsumer(RedisClient& client, StreamConsumerConfig config, Handler handler)
    : client_(&client),
      config_(std::move(config)),
      handler_(std::move(handler)),
      stop_(client.get_executor()) {
  validate_config(static_cast<bool>(handler_));
}

StreamConsumer::StreamConsumer(RedisClient& client, StreamConsumerConfig config,
                               BatchHandler handler)
    : client_(&client),
      config_(std::move(config)),
      batch_handler_(std::move(handler)),
      stop_(client.get_executor()) {
  validate_config(static_cast<bool>(batch_handler_));
}

void StreamConsumer::validate_config(bool has_handler) {
  auto bad = [](const std::string& why) {
    throw Error(make_error_code(errc::invalid_argument), "StreamConsumerConfig: " + why);
  };
  if (config_.stream.empty() && config_.streams.empty()) bad("no stream (stream or streams)");
  if (!config_.stream.empty() && !config_.streams.empty()) bad("both stream and streams are set");
  streams_ = config_.streams.empty() ? std::vector<std::string>{config_.stream} : config_.streams;
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    if (streams_[i].empty()) bad("an empty stream name");
    for (std::size_t j = 0; j < i; ++j) {
      if (streams_[j] == streams_[i]) bad("stream " + streams_[i] + " is named twice");
    }
  }
  if (config_.group.empty()) bad("group is empty");
  if (config_.consumer.empty()) bad("consumer is empty");
  if (config_.batch < 1) bad("batch must be >= 1");
  if (config_.max_deliveries < 1) bad("max_deliveries must be >= 1");
  // A zero block would turn the read loop into a busy loop against the server.
  if (config_.block <= std::chrono::milliseconds::zero()) bad("block must be > 0");
  if (config_.claim_interval <= std::chrono::milliseconds::zero()) {
    bad("claim_interval must be > 0");
  }
  if (!has_handler) bad("no handler");
  for (const auto& stream : streams_) {
    dead_letter_streams_.push_back(config_.dead_letter_stream.empty() ? stream + ":dead"
                                                                      : config_.dead_letter_stream);
    if (dead_letter_streams_.back() == stream) bad("dead_letter_stream must differ from stream");
  }
  for (const auto& dead : dead_letter_streams_) {
    if (index_of(dead) < streams_.size()) bad("dead_letter_stream " + dead + " is also consumed");
  }
}

std::size_t StreamConsumer::index_of(std::string_view stream) const noexcept {
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    if (streams_[i] == stream) return i;
  }
  return streams_.size();
}

asio::awaitable<void> StreamConsumer::ensure_group() {
  for (const auto& stream : streams_) {
    const bool created =
        co_await client_->xgroup_create(stream, config_.group, config_.group_start_id, true);
    if (created) {
      ++stats_.groups_created;
      log()->info("stream {}: created consumer group {} at {}", stream, config_.group,
                  config_.group_start_id);
    }
  }
}

asio::awaitable<void> StreamConsumer::dead_letter(std::size_t stream, const StreamEntry& entry,
                                                  std::int64_t deliveries) {
  std::vector<FieldView> fields;
  fields.reserve(entry.fields.size() + 4);
  for (const auto& [name, value] : entry.fields) fields.emplace_back(name, value);
  const std::string count = std::to_string(deliveries);
  fields.emplace_back("dlq_source", streams_[stream]);
  fields.emplace_back("dlq_id", entry.id);
  fields.emplace_back("dlq_deliveries", count);
  fields.emplace_back("dlq_group", config_.group);
  (void)co_await client_->xadd(dead_letter_streams_[stream], fields);
  ++stats_.dead_lettered;
  log()->error("stream {}: entry {} failed {} deliveries (max {}); moved to {}", streams_[stream],
               entry.id, deliveries, config_.max_deliveries, dead_letter_streams_[stream]);
}

asio::awaitable<void> StreamConsumer::run_batch_handler(std::span<const StreamEntry> entries,
                                                        std::span<char> ok) {
  stats_.delivered += entries.size();
  std::string failure;
  bool permanent = false;
  bool access_denied = false;
  try {
    co_await batch_handler_(entries);
  } catch (const Error& e) {
    // Our error model says what the sink's server said: a permanent error is about the data
    // (a value it refuses), so the batch is split to find the entries at fault. Unless it is
    // a refused privilege or identity (42501, class 28, NOPERM, NOAUTH, WRONGPASS): that is
    // about the sink's grants, every half would be refused the same (F64, F65).
    if (e.kind() == ErrorKind::cancelled) throw;
    failure = e.what();
    permanent = e.kind() == ErrorKind::permanent;
    access_denied = core::is_access_denied(e);
  } catch (const std::exception& e) {
    // Any other exception says nothing about the entries: the batch stays pending whole.
    if (classify(std::current_exception()) == ErrorKind::cancelled) throw;
    failure = e.what();
  }
  if (failure.empty()) {
    sink_refused_ = false;
    std::fill(ok.begin(), ok.end(), char{1});
    co_return;
  }
  sink_refused_ = access_denied;
  if (access_denied) {
    // Not split, not the entries' fault: the whole batch stays pending and is delivered again
    // (claimed or re-read) once the privilege is granted, however often (no dead letter while
    // the sink refuses). One line per failed call.
    stats_.handler_errors += entries.size();
    log()->error(
        "stream {}: handler refused: the sink lacks a privilege; not split, the batch of {} "
        "entries {}..{} stays pending and is delivered again (grant the privilege or fix the "
        "credentials): {}",
        entries.front().stream, entries.size(), entries.front().id, entries.back().id, failure);
    co_return;
  }
  if (permanent && entries.size() > 1 && !stop_.stop_requested()) {
    // A permanent failure is about what the batch holds (one entry the sink refuses), not
    // about the sink's health: find the entries at fault, let the others through (F44). The
    // halves are delivered again within this read, so `delivered` counts them again.
    ++stats_.splits;
    log()->warn(
        "stream {}: handler failed permanently on the batch of {} entries {}..{}: splitting "
        "it to isolate the entries at fault: {}",
        entries.front().stream, entries.size(), entries.front().id, entries.back().id, failure);
    const std::size_t half = entries.size() / 2;
    co_await run_batch_handler(entries.first(half), ok.first(half));
    co_await run_batch_handler(entries.subspan(half), ok.subspan(half));
    co_return;
  }
  stats_.handler_errors += entries.size();
  if (entries.size() == 1) {
    log()->warn(
        "stream {}: handler failed on entry {} (it stays pending and is delivered again): {}",
        entries.front().stream, entries.front().id, failure);
  } else {
    log()->warn(
        "stream {}: handler failed on the batch of {} entries {}..{} (they stay pending and "
        "are delivered again): {}",
        entries.front().stream, entries.size(), entries.front().id, entries.back().id, failure);
  }
}

asio::awaitable<std::size_t> StreamConsumer::handle_reads(std::vector<StreamRead> reads,
                                                          bool check_deliveries) {
  // Acknowledgements per stream: one XACK each, sent together.
  std::vector<std::vector<std::string>> to_ack(streams_.size());
  std::size_t handled = 0;
  std::uint64_t succeeded = 0;
  bool stopping_failed = false;  // a handler failed after stop(): the rest stays pending
  // Batch mode: the deliverable entries of every stream, handed over together.
  std::vector<StreamEntry> deliverable;
  for (auto& read : reads) {
    const std::size_t index = index_of(read.stream);
    if (index == streams_.size()) {
      throw Error(make_error_code(errc::type_mismatch),
                  "XREADGROUP returned entries of " + read.stream + ", which was not asked for");
    }
    const std::string& stream = streams_[index];
    auto& entries = read.entries;
    if (entries.empty()) continue;
    std::unordered_map<std::string, std::int64_t> deliveries;
    if (check_deliveries) {
      PendingQuery query;
      query.start = entries.front().id;
      query.end = entries.back().id;
      query.count = static_cast<std::int64_t>(entries.size());
      query.consumer = config_.consumer;
      for (auto& p : co_await client_->xpending_range(stream, config_.group, query)) {
        deliveries.emplace(std::move(p.id), p.deliveries);
      }
    }
    for (auto& entry : entries) {
      entry.stream = stream;
      if (entry.deleted) {
        ++stats_.deleted;
        log()->warn(
            "stream {}: pending entry {} no longer exists (trimmed or deleted); "
            "acknowledging it",
            stream, entry.id);
        to_ack[index].push_back(entry.id);
        continue;
      }
      if (check_deliveries) {
        const auto it = deliveries.find(entry.id);
        const std::int64_t count = it == deliveries.end() ? 1 : it->second;
        // While the sink refuses our privilege, no entry is poison: it stays pending.
        if (count > static_cast<std::int64_t>(config_.max_deliveries) && !sink_refused_) {
          co_await dead_letter(index, entry, count);
          to_ack[index].push_back(entry.id);
          continue;
        }
      }
      if (batch_handler_) {
        deliverable.push_back(std::move(entry));
        continue;
      }
      // After stop() the entries already read are still handled (and acknowledged): a graceful
      // stop leaves nothing pending in this consumer's name, which under a rolling restart
      // (a new consumer name) no one would take over before claim_min_idle (F80). How long
      // that may take is the caller's drain bound (a cancellation leaves the rest pending).
      // Once a handler has failed after stop(), the rest is left pending as it is: the sink is
      // failing, and retrying each entry would only delay the stop.
      if (stopping_failed) continue;
      ++stats_.delivered;
      ++handled;
      std::string failure;
      try {
        co_await handler_(entry);
      } catch (const std::exception& e) {
        if (classify(std::current_exception()) == ErrorKind::cancelled) throw;
        failure = e.what();
        sink_refused_ = core::is_access_denied(std::current_exception());
      }
      if (failure.empty()) {
        sink_refused_ = false;
        to_ack[index].push_back(entry.id);
        ++succeeded;
      } else {
        ++stats_.handler_errors;
        stopping_failed = stop_.stop_requested();
        log()->warn(
            "stream {}: handler failed on entry {} (it stays pending and is delivered "
            "again{}): {}",
            stream, entry.id,
            stopping_failed ? "; stopping: the rest of this read stays pending too" : "", failure);
      }
    }
  }
  if (!deliverable.empty()) {
    handled = deliverable.size();
    std::vector<char> ok(deliverable.size(), 0);
    co_await run_batch_handler(deliverable, ok);
    for (std::size_t i = 0; i < deliverable.size(); ++i) {
      if (ok[i] == 0) continue;
      to_ack[index_of(deliverable[i].stream)].push_back(deliverable[i].id);
      ++succeeded;
    }
  }
  std::size_t acks = 0;
  for (const auto& ids : to_ack) acks += ids.empty() ? 0 : 1;
  if (acks == 1) {
    for (std::size_t i = 0; i < to_ack.size(); ++i) {
      if (!to_ack[i].empty()) (void)co_await client_->xack(streams_[i], config_.group, to_ack[i]);
    }
  } else if (acks > 1) {
    Request request;
    for (std::size_t i = 0; i < to_ack.size(); ++i) {
      if (!to_ack[i].empty()) {
        request.push("XACK", streams_[i], config_.group, std::span<const std::string>(to_ack[i]));
      }
    }
    for (const Reply& reply : co_await client_->pipeline(request)) {
      reply.view().throw_if_error("XACK");
    }
  }
  stats_.acked += succeeded;
  co_return handled;
}

asio::awaitable<std::size_t> StreamConsumer::process_own_pending() {
  std::size_t handled = 0;
  for (const auto& stream : streams_) {
    std::string cursor = "0";
    while (!stop_.stop_requested()) {
      ReadGroupOptions options;
      options.count = config_.batch;
      auto entries =
          co_await client_->xreadgroup(config_.group, config_.consumer, stream, cursor, options);
      if (entries.empty()) break;
      cursor = entries.back().id;  // the next read starts after it
      std::vector<StreamRead> reads;
      reads.push_back(StreamRead{stream, std::move(entries)});
      handled += co_await handle_reads(std::move(reads), true);
    }
  }
  co_return handled;
}

asio::awaitable<std::size_t> StreamConsumer::reclaim_stale() {
  std::size_t handled = 0;
  for (const auto& stream : streams_) {
    std::string cursor = "0-0";
    do {
      AutoClaimResult result = co_await client_->xautoclaim(
          stream, config_.group, config_.consumer, config_.claim_min_idle, cursor, config_.batch);
      for (const auto& id : result.deleted_ids) {
        ++stats_.deleted;
        log()->warn(
            "stream {}: pending entry {} no longer exists (trimmed or deleted); the "
            "server dropped it from the pending list",
            stream, id);
      }
      if (!result.entries.empty()) {
        stats_.claimed += result.entries.size();
        log()->info("stream {}: claimed {} entries idle for more than {} ms", stream,
                    result.entries.size(), config_.claim_min_idle.count());
      }
      std::vector<StreamRead> reads;
      reads.push_back(StreamRead{stream, std::move(result.entries)});
      handled += co_await handle_reads(std::move(reads), true);
      cursor = std::move(result.next_id);
    } while (cursor != "0-0" && !stop_.stop_requested());
  }
  co_return handled;
}

asio::awaitable<void> StreamConsumer::run() {
  bool need_group = true;
  bool need_pending = true;
  auto last_claim = Clock::now();
  const std::vector<std::string> new_entries{">"};
  // What the log names: the stream, or how many.
  const std::string what =
      streams_.size() == 1 ? streams_.front() : std::to_string(streams_.size()) + " streams";
  while (!stop_.stop_requested()) {
    bool failed = false;
    bool no_group = false;
    try {
      if (need_group) {
        co_await ensure_group();
        need_group = false;
      }
      if (need_pending || Clock::now() - last_claim >= config_.claim_interval) {
        if (!need_pending) (void)co_await reclaim_stale();
        (void)co_await process_own_pending();
        need_pending = false;
        last_claim = Clock::now();
      }
      ReadGroupOptions options;
      options.count = config_.batch;
      options.block = config_.block;
      auto reads = co_await client_->xreadgroup(config_.group, config_.consumer, streams_,
                                                new_entries, options);
      (void)co_await handle_reads(std::move(reads), false);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::cancelled) {
        log()->info("stream {}: consumer {} stopping ({})", what, config_.consumer, e.what());
        co_return;
      }
      ++stats_.read_errors;
      // The user lacks a command or a key (NOPERM): no pause makes it work, so it is never
      // retried (F64): logged once, with the consumer's context, and run() ends with it.
      // (WRONGPASS in a new connection's handshake is left to the pause: a password being
      // rotated, its file about to be rewritten.)
      if (is_server_error(e, error_prefix::no_perm)) {
        log()->error(
            "stream {}: consumer {} of group {}: permission refused, not retried (fix the "
            "user's ACL): {}",
            what, config_.consumer, config_.group, e.what());
        throw;
      }
      no_group = is_server_error(e, error_prefix::no_group);
      failed = true;
      log()->warn("stream {}: consumer {}: {}{}", what, config_.consumer, e.what(),
                  no_group ? " (the group is gone: re-creating it)" : "");
    } catch (const std::exception& e) {
      // Not one of ours (the client converts socket errors; this is a handler's own
      // exception type escaping, or bad_alloc): count it and go on like a read error.
      if (classify(std::current_exception()) == ErrorKind::cancelled) co_return;
      ++stats_.read_errors;
      failed = true;
      log()->warn("stream {}: consumer {}: {}", what, config_.consumer, e.what());
    }
    if (no_group) {
      need_group = true;
      need_pending = true;
      continue;
    }
    if (failed) {
      // The error pause: ends early on stop(); a cancellation ends run() like a cancelled read.
      bool go_on = false;
      try {
        go_on = co_await stop_.sleep_for(config_.error_backoff);
      } catch (const boost::system::system_error& e) {
        if (e.code() != asio::error::operation_aborted) throw;
        log()->info("stream {}: consumer {} stopping (cancelled during the error pause)", what,
                    config_.consumer);
        co_return;
      }
      if (!go_on) break;
    }
  }
}

}  // namespace trading_shared::redis

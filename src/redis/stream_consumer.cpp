#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

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
    : client_(&client), config_(std::move(config)), handler_(std::move(handler)) {
  validate_config(static_cast<bool>(handler_));
}

StreamConsumer::StreamConsumer(RedisClient& client, StreamConsumerConfig config,
                               BatchHandler handler)
    : client_(&client), config_(std::move(config)), batch_handler_(std::move(handler)) {
  validate_config(static_cast<bool>(batch_handler_));
}

void StreamConsumer::validate_config(bool has_handler) {
  auto bad = [](const std::string& why) {
    throw Error(make_error_code(errc::invalid_argument), "StreamConsumerConfig: " + why);
  };
  if (config_.stream.empty()) bad("stream is empty");
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
  if (config_.dead_letter_stream.empty()) config_.dead_letter_stream = config_.stream + ":dead";
  if (config_.dead_letter_stream == config_.stream) {
    bad("dead_letter_stream must differ from stream");
  }
}

asio::awaitable<void> StreamConsumer::ensure_group() {
  const bool created =
      co_await client_->xgroup_create(config_.stream, config_.group, config_.group_start_id, true);
  if (created) {
    ++stats_.groups_created;
    log()->info("stream {}: created consumer group {} at {}", config_.stream, config_.group,
                config_.group_start_id);
  }
}

asio::awaitable<void> StreamConsumer::dead_letter(const StreamEntry& entry,
                                                  std::int64_t deliveries) {
  std::vector<FieldView> fields;
  fields.reserve(entry.fields.size() + 4);
  for (const auto& [name, value] : entry.fields) fields.emplace_back(name, value);
  const std::string count = std::to_string(deliveries);
  fields.emplace_back("dlq_source", config_.stream);
  fields.emplace_back("dlq_id", entry.id);
  fields.emplace_back("dlq_deliveries", count);
  fields.emplace_back("dlq_group", config_.group);
  (void)co_await client_->xadd(config_.dead_letter_stream, fields);
  ++stats_.dead_lettered;
  log()->error("stream {}: entry {} failed {} deliveries (max {}); moved to {}", config_.stream,
               entry.id, deliveries, config_.max_deliveries, config_.dead_letter_stream);
}

asio::awaitable<bool> StreamConsumer::run_batch_handler(std::span<const StreamEntry> deliverable) {
  stats_.delivered += deliverable.size();
  std::string failure;
  try {
    co_await batch_handler_(deliverable);
  } catch (const std::exception& e) {
    if (classify(std::current_exception()) == ErrorKind::cancelled) throw;
    failure = e.what();
  }
  if (failure.empty()) co_return true;
  stats_.handler_errors += deliverable.size();
  log()->warn(
      "stream {}: handler failed on the batch of {} entries {}..{} (they stay pending and "
      "are delivered again): {}",
      config_.stream, deliverable.size(), deliverable.front().id, deliverable.back().id, failure);
  co_return false;
}

asio::awaitable<std::size_t> StreamConsumer::handle_batch(std::vector<StreamEntry> entries,
                                                          bool check_deliveries) {
  if (entries.empty()) co_return 0;
  std::unordered_map<std::string, std::int64_t> deliveries;
  if (check_deliveries) {
    PendingQuery query;
    query.start = entries.front().id;
    query.end = entries.back().id;
    query.count = static_cast<std::int64_t>(entries.size());
    query.consumer = config_.consumer;
    for (auto& p : co_await client_->xpending_range(config_.stream, config_.group, query)) {
      deliveries.emplace(std::move(p.id), p.deliveries);
    }
  }
  std::vector<std::string> to_ack;
  to_ack.reserve(entries.size());
  std::size_t handled = 0;
  std::uint64_t succeeded = 0;
  // Batch mode: the deliverable entries, handed over together after the filtering below.
  std::vector<StreamEntry> deliverable;
  for (auto& entry : entries) {
    if (entry.deleted) {
      ++stats_.deleted;
      log()->warn(
          "stream {}: pending entry {} no longer exists (trimmed or deleted); "
          "acknowledging it",
          config_.stream, entry.id);
      to_ack.push_back(entry.id);
      continue;
    }
    if (check_deliveries) {
      const auto it = deliveries.find(entry.id);
      const std::int64_t count = it == deliveries.end() ? 1 : it->second;
      if (count > static_cast<std::int64_t>(config_.max_deliveries)) {
        co_await dead_letter(entry, count);
        to_ack.push_back(entry.id);
        continue;
      }
    }
    if (batch_handler_) {
      deliverable.push_back(std::move(entry));
      continue;
    }
    ++stats_.delivered;
    ++handled;
    std::string failure;
    try {
      co_await handler_(entry);
    } catch (const std::exception& e) {
      if (classify(std::current_exception()) == ErrorKind::cancelled) throw;
      failure = e.what();
    }
    if (failure.empty()) {
      to_ack.push_back(entry.id);
      ++succeeded;
    } else {
      ++stats_.handler_errors;
      log()->warn(
          "stream {}: handler failed on entry {} (it stays pending and is delivered "
          "again): {}",
          config_.stream, entry.id, failure);
    }
    if (stopping_) break;
  }
  if (!deliverable.empty()) {
    handled = deliverable.size();
    const bool ok = co_await run_batch_handler(deliverable);
    if (ok) {
      for (const auto& entry : deliverable) to_ack.push_back(entry.id);
      succeeded = deliverable.size();
    }
  }
  if (!to_ack.empty()) {
    (void)co_await client_->xack(config_.stream, config_.group, to_ack);
    stats_.acked += succeeded;
  }
  co_return handled;
}

asio::awaitable<std::size_t> StreamConsumer::process_own_pending() {
  std::size_t handled = 0;
  std::string cursor = "0";
  while (!stopping_) {
    ReadGroupOptions options;
    options.count = config_.batch;
    auto entries = co_await client_->xreadgroup(config_.group, config_.consumer, config_.stream,
                                                cursor, options);
    if (entries.empty()) break;
    cursor = entries.back().id;  // the next read starts after it
    handled += co_await handle_batch(std::move(entries), true);
  }
  co_return handled;
}

asio::awaitable<std::size_t> StreamConsumer::reclaim_stale() {
  std::size_t handled = 0;
  std::string cursor = "0-0";
  do {
    AutoClaimResult result =
        co_await client_->xautoclaim(config_.stream, config_.group, config_.consumer,
                                     config_.claim_min_idle, cursor, config_.batch);
    for (const auto& id : result.deleted_ids) {
      ++stats_.deleted;
      log()->warn(
          "stream {}: pending entry {} no longer exists (trimmed or deleted); the "
          "server dropped it from the pending list",
          config_.stream, id);
    }
    if (!result.entries.empty()) {
      stats_.claimed += result.entries.size();
      log()->info("stream {}: claimed {} entries idle for more than {} ms", config_.stream,
                  result.entries.size(), config_.claim_min_idle.count());
    }
    handled += co_await handle_batch(std::move(result.entries), true);
    cursor = std::move(result.next_id);
  } while (cursor != "0-0" && !stopping_);
  co_return handled;
}

asio::awaitable<void> StreamConsumer::run() {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  bool need_group = true;
  bool need_pending = true;
  auto last_claim = Clock::now();
  while (!stopping_) {
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
      auto entries = co_await client_->xreadgroup(config_.group, config_.consumer, config_.stream,
                                                  ">", options);
      (void)co_await handle_batch(std::move(entries), false);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::cancelled) {
        log()->info("stream {}: consumer {} stopping ({})", config_.stream, config_.consumer,
                    e.what());
        co_return;
      }
      ++stats_.read_errors;
      no_group = is_server_error(e, "NOGROUP");
      failed = true;
      log()->warn("stream {}: consumer {}: {}{}", config_.stream, config_.consumer, e.what(),
                  no_group ? " (the group is gone: re-creating it)" : "");
    } catch (const std::exception& e) {
      // Not one of ours (the client converts socket errors; this is a handler's own
      // exception type escaping, or bad_alloc): count it and go on like a read error.
      if (classify(std::current_exception()) == ErrorKind::cancelled) co_return;
      ++stats_.read_errors;
      failed = true;
      log()->warn("stream {}: consumer {}: {}", config_.stream, config_.consumer, e.what());
    }
    if (no_group) {
      need_group = true;
      need_pending = true;
      continue;
    }
    if (failed) {
      pause.expires_after(config_.error_backoff);
      boost::system::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;  // cancelled during the pause
    }
  }
}

}  // namespace trading_shared::redis

// Typed helpers of RedisClient. Each encodes its command when called (through command(),
// so arguments may be temporaries) and converts the reply in a small coroutine.

#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/use_awaitable.hpp>

#include "detail/failed.hpp"

#include <string>

namespace trading_shared::redis {

namespace asio = boost::asio;

namespace {

[[noreturn]] void unexpected(std::string_view command, const ReplyView& reply) {
  throw Error(make_error_code(errc::type_mismatch),
              "Redis " + std::string(command) + ": unexpected reply " + reply.debug_string(),
              RequestState::sent);
}

StreamEntry to_entry(const ReplyView& item) {
  // [id, [field, value, ...]] ; the body is nil for an entry deleted while pending.
  if (!item.is_array() || item.size() != 2) unexpected("stream entry", item);
  StreamEntry entry;
  entry.id = std::string(item[0].as_string());
  const ReplyView body = item[1];
  if (body.is_nil()) {
    entry.deleted = true;
    return entry;
  }
  const std::size_t n = body.size();
  if (n % 2 != 0) unexpected("stream entry fields", body);
  entry.fields.reserve(n / 2);
  for (std::size_t i = 0; i < n; i += 2) {
    entry.fields.emplace_back(std::string(body[i].as_string()),
                              std::string(body[i + 1].as_string()));
  }
  return entry;
}

std::vector<StreamEntry> to_entries(const ReplyView& list) {
  std::vector<StreamEntry> entries;
  if (list.is_nil()) return entries;
  entries.reserve(list.size());
  for (const auto item : list) {
    if (item.is_nil()) continue;  // XAUTOCLAIM before Redis 7: a deleted entry
    entries.push_back(to_entry(item));
  }
  return entries;
}

asio::awaitable<void> expect_ok(asio::awaitable<Reply> op) {
  (void)co_await std::move(op);
}

asio::awaitable<std::string> to_string_reply(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  if (reply.is_nil()) co_return std::string();
  co_return std::string(reply.as_string());
}

asio::awaitable<std::int64_t> to_int(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  co_return reply.as_int();
}

asio::awaitable<bool> to_bool(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  co_return reply.as_int() != 0;
}

asio::awaitable<bool> not_nil(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  co_return !reply.is_nil();
}

asio::awaitable<std::vector<std::pair<std::string, std::string>>> to_pairs(
    asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  std::vector<std::pair<std::string, std::string>> out;
  const std::size_t n = reply.size();
  if (n % 2 != 0) unexpected("HGETALL", reply);
  out.reserve(n / 2);
  for (std::size_t i = 0; i < n; i += 2) {
    out.emplace_back(std::string(reply[i].as_string()), std::string(reply[i + 1].as_string()));
  }
  co_return out;
}

asio::awaitable<std::vector<StreamEntry>> to_stream_entries(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  co_return to_entries(reply);
}

asio::awaitable<std::vector<StreamEntry>> to_read_entries(asio::awaitable<Reply> op) {
  // XREADGROUP: nil (nothing new, or BLOCK timed out) or [[stream, [entries]]].
  const Reply reply = co_await std::move(op);
  if (reply.is_nil()) co_return std::vector<StreamEntry>{};
  if (reply.size() != 1 || !reply[0].is_array() || reply[0].size() != 2) {
    unexpected("XREADGROUP", reply);
  }
  co_return to_entries(reply[0][1]);
}

asio::awaitable<std::vector<StreamRead>> to_stream_reads(asio::awaitable<Reply> op) {
  // XREADGROUP: nil (nothing new, or BLOCK timed out) or [[stream, [entries]], ...].
  const Reply reply = co_await std::move(op);
  std::vector<StreamRead> reads;
  if (reply.is_nil()) co_return reads;
  reads.reserve(reply.size());
  for (const auto item : reply) {
    if (!item.is_array() || item.size() != 2) unexpected("XREADGROUP", reply);
    reads.push_back(StreamRead{std::string(item[0].as_string()), to_entries(item[1])});
  }
  co_return reads;
}

asio::awaitable<PendingSummary> to_pending_summary(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  if (reply.size() != 4) unexpected("XPENDING", reply);
  PendingSummary summary;
  summary.count = reply[0].as_int();
  if (auto v = reply[1].as_optional_string()) summary.min_id = std::string(*v);
  if (auto v = reply[2].as_optional_string()) summary.max_id = std::string(*v);
  for (const auto consumer : reply[3]) {
    summary.consumers.emplace_back(std::string(consumer[0].as_string()), consumer[1].as_int());
  }
  co_return summary;
}

asio::awaitable<std::vector<PendingEntry>> to_pending_entries(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  std::vector<PendingEntry> out;
  out.reserve(reply.size());
  for (const auto item : reply) {
    if (item.size() != 4) unexpected("XPENDING", item);
    out.push_back(PendingEntry{std::string(item[0].as_string()), std::string(item[1].as_string()),
                               std::chrono::milliseconds(item[2].as_int()), item[3].as_int()});
  }
  co_return out;
}

asio::awaitable<AutoClaimResult> to_autoclaim(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  if (reply.size() < 2) unexpected("XAUTOCLAIM", reply);
  AutoClaimResult result;
  result.next_id = std::string(reply[0].as_string());
  for (const auto item : reply[1]) {
    if (item.is_nil()) continue;
    StreamEntry entry = to_entry(item);
    if (entry.deleted) {
      result.deleted_ids.push_back(std::move(entry.id));
    } else {
      result.entries.push_back(std::move(entry));
    }
  }
  if (reply.size() >= 3) {  // Redis 7: IDs that were pending but are gone from the stream
    for (const auto id : reply[2]) result.deleted_ids.emplace_back(id.as_string());
  }
  co_return result;
}

asio::awaitable<bool> to_group_created(asio::awaitable<Reply> op) {
  try {
    (void)co_await std::move(op);
  } catch (const Error& e) {
    if (e.server() && e.server()->code == error_prefix::busy_group)
      co_return false;  // exists: fine
    throw;
  }
  co_return true;
}

asio::awaitable<std::vector<GroupInfo>> to_groups(asio::awaitable<Reply> op) {
  const Reply reply = co_await std::move(op);
  std::vector<GroupInfo> out;
  for (const auto group : reply) {
    GroupInfo info;
    const std::size_t n = group.size();
    for (std::size_t i = 0; i + 1 < n; i += 2) {
      const auto key = group[i].as_string();
      const auto value = group[i + 1];
      if (key == "name") {
        info.name = std::string(value.as_string());
      } else if (key == "consumers") {
        info.consumers = value.as_int();
      } else if (key == "pending") {
        info.pending = value.as_int();
      } else if (key == "last-delivered-id") {
        info.last_delivered_id = std::string(value.as_string());
      }
    }
    out.push_back(std::move(info));
  }
  co_return out;
}

}  // namespace

const std::string* StreamEntry::field(std::string_view name) const noexcept {
  for (const auto& [key, value] : fields) {
    if (key == name) return &value;
  }
  return nullptr;
}

namespace detail {

std::size_t trim_argument_count(const TrimOptions& trim) noexcept {
  return trim.strategy == TrimOptions::Strategy::none ? 0 : 3;
}

void append_trim(CommandWriter& writer, const TrimOptions& trim) {
  switch (trim.strategy) {
    case TrimOptions::Strategy::none:
      return;
    case TrimOptions::Strategy::maxlen:
      writer.arg(std::string_view("MAXLEN"))
          .arg(std::string_view(trim.approximate ? "~" : "="))
          .arg(trim.maxlen);
      return;
    case TrimOptions::Strategy::minid:
      writer.arg(std::string_view("MINID"))
          .arg(std::string_view(trim.approximate ? "~" : "="))
          .arg(std::string_view(trim.minid));
      return;
  }
}

std::string xadd_prefix(std::string_view stream, const XAddOptions& options,
                        std::size_t& arguments) {
  arguments = 3 + (options.no_mkstream ? 1 : 0) + trim_argument_count(options.trim);
  std::string prefix;
  CommandWriter writer(prefix, arguments);
  writer.arg(std::string_view("XADD")).arg(stream);
  if (options.no_mkstream) writer.arg(std::string_view("NOMKSTREAM"));
  append_trim(writer, options.trim);
  writer.arg(std::string_view("*"));
  prefix.erase(0, prefix.find('\n') + 1);  // the "*N\r\n" header: each entry writes its own
  return prefix;
}

}  // namespace detail

asio::awaitable<void> RedisClient::ping(const CommandOptions& options) {
  return expect_ok(command(options, "PING"));
}

asio::awaitable<std::optional<std::string>> RedisClient::get(std::string_view key,
                                                             const CommandOptions& options) {
  auto encode = [&](std::string& out) {
    // encode_command(out, "GET", key), with the constant part precomputed.
    constexpr std::string_view kGetHeader = "*2\r\n$3\r\nGET\r\n";
    out.append(kGetHeader);
    detail::append_bulk(out, key);
  };
  return submit<std::optional<std::string>>(options, 1, "GET", Encoder(encode));
}

asio::awaitable<bool> RedisClient::set(std::string_view key, std::string_view value,
                                       const SetOptions& options) {
  const bool ttl = options.ttl > std::chrono::milliseconds::zero();
  const std::string_view condition = options.condition == SetOptions::Condition::if_not_exists
                                         ? "NX"
                                     : options.condition == SetOptions::Condition::if_exists ? "XX"
                                                                                             : "";
  // SET replies OK, or nil when NX/XX prevented it.
  if (ttl && !condition.empty()) {
    return not_nil(
        command(options.command, "SET", key, value, "PX", options.ttl.count(), condition));
  }
  if (ttl) return not_nil(command(options.command, "SET", key, value, "PX", options.ttl.count()));
  if (!condition.empty()) return not_nil(command(options.command, "SET", key, value, condition));
  return not_nil(command(options.command, "SET", key, value));
}

asio::awaitable<std::int64_t> RedisClient::del(std::span<const std::string_view> keys,
                                               const CommandOptions& options) {
  return to_int(command(options, "DEL", keys));
}

asio::awaitable<std::int64_t> RedisClient::del(std::string_view key,
                                               const CommandOptions& options) {
  return to_int(command(options, "DEL", key));
}

asio::awaitable<std::int64_t> RedisClient::hset(std::string_view key,
                                                std::span<const FieldView> fields,
                                                const CommandOptions& options) {
  if (fields.empty()) {
    return to_int(detail::failed<Reply>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis HSET: no fields"))));
  }
  auto encode = [&](std::string& out) {
    CommandWriter writer(out, 2 + 2 * fields.size());
    writer.arg(std::string_view("HSET")).arg(key);
    for (const auto& [name, value] : fields) writer.arg(name).arg(value);
  };
  return to_int(submit<Reply>(options, 1, "HSET", Encoder(encode)));
}

asio::awaitable<std::vector<std::pair<std::string, std::string>>> RedisClient::hgetall(
    std::string_view key, const CommandOptions& options) {
  return to_pairs(command(options, "HGETALL", key));
}

asio::awaitable<bool> RedisClient::expire(std::string_view key, std::chrono::seconds ttl,
                                          const CommandOptions& options) {
  return to_bool(command(options, "EXPIRE", key, ttl.count()));
}

asio::awaitable<std::string> RedisClient::xadd(std::string_view stream,
                                               std::span<const FieldView> fields,
                                               const XAddOptions& options) {
  if (fields.empty()) {
    return to_string_reply(detail::failed<Reply>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis XADD: no fields"))));
  }
  auto encode = [&](std::string& out) {
    CommandWriter writer(out, 3 + (options.no_mkstream ? 1 : 0) +
                                  detail::trim_argument_count(options.trim) + 2 * fields.size());
    writer.arg(std::string_view("XADD")).arg(stream);
    if (options.no_mkstream) writer.arg(std::string_view("NOMKSTREAM"));
    detail::append_trim(writer, options.trim);
    writer.arg(std::string_view("*"));
    for (const auto& [name, value] : fields) writer.arg(name).arg(value);
  };
  return to_string_reply(submit<Reply>(options.command, 1, "XADD", Encoder(encode)));
}

asio::awaitable<std::vector<StreamEntry>> RedisClient::xrange(std::string_view stream,
                                                              std::string_view start,
                                                              std::string_view end,
                                                              std::optional<std::int64_t> count,
                                                              const CommandOptions& options) {
  if (count)
    return to_stream_entries(command(options, "XRANGE", stream, start, end, "COUNT", *count));
  return to_stream_entries(command(options, "XRANGE", stream, start, end));
}

asio::awaitable<std::int64_t> RedisClient::xlen(std::string_view stream,
                                                const CommandOptions& options) {
  return to_int(command(options, "XLEN", stream));
}

asio::awaitable<std::int64_t> RedisClient::xtrim(std::string_view stream, const TrimOptions& trim,
                                                 const CommandOptions& options) {
  if (trim.strategy == TrimOptions::Strategy::none) {
    return to_int(detail::failed<Reply>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis XTRIM: no trim strategy"))));
  }
  auto encode = [&](std::string& out) {
    CommandWriter writer(out, 2 + detail::trim_argument_count(trim));
    writer.arg(std::string_view("XTRIM")).arg(stream);
    detail::append_trim(writer, trim);
  };
  return to_int(submit<Reply>(options, 1, "XTRIM", Encoder(encode)));
}

asio::awaitable<std::int64_t> RedisClient::xack(std::string_view stream, std::string_view group,
                                                std::span<const std::string> ids,
                                                const CommandOptions& options) {
  if (ids.empty()) {
    return to_int(detail::failed<Reply>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis XACK: no IDs"))));
  }
  return to_int(command(options, "XACK", stream, group, ids));
}

asio::awaitable<PendingSummary> RedisClient::xpending(std::string_view stream,
                                                      std::string_view group,
                                                      const CommandOptions& options) {
  return to_pending_summary(command(options, "XPENDING", stream, group));
}

asio::awaitable<std::vector<PendingEntry>> RedisClient::xpending_range(
    std::string_view stream, std::string_view group, const PendingQuery& query,
    const CommandOptions& options) {
  const bool idle = query.min_idle > std::chrono::milliseconds::zero();
  if (idle && !query.consumer.empty()) {
    return to_pending_entries(command(options, "XPENDING", stream, group, "IDLE",
                                      query.min_idle.count(), query.start, query.end, query.count,
                                      query.consumer));
  }
  if (idle) {
    return to_pending_entries(command(options, "XPENDING", stream, group, "IDLE",
                                      query.min_idle.count(), query.start, query.end, query.count));
  }
  if (!query.consumer.empty()) {
    return to_pending_entries(command(options, "XPENDING", stream, group, query.start, query.end,
                                      query.count, query.consumer));
  }
  return to_pending_entries(
      command(options, "XPENDING", stream, group, query.start, query.end, query.count));
}

asio::awaitable<AutoClaimResult> RedisClient::xautoclaim(std::string_view stream,
                                                         std::string_view group,
                                                         std::string_view consumer,
                                                         std::chrono::milliseconds min_idle,
                                                         std::string_view start, std::int64_t count,
                                                         const CommandOptions& options) {
  return to_autoclaim(command(options, "XAUTOCLAIM", stream, group, consumer, min_idle.count(),
                              start, "COUNT", count));
}

asio::awaitable<bool> RedisClient::xgroup_create(std::string_view stream, std::string_view group,
                                                 std::string_view start_id, bool mkstream,
                                                 const CommandOptions& options) {
  if (mkstream) {
    return to_group_created(
        command(options, "XGROUP", "CREATE", stream, group, start_id, "MKSTREAM"));
  }
  return to_group_created(command(options, "XGROUP", "CREATE", stream, group, start_id));
}

asio::awaitable<bool> RedisClient::xgroup_destroy(std::string_view stream, std::string_view group,
                                                  const CommandOptions& options) {
  return to_bool(command(options, "XGROUP", "DESTROY", stream, group));
}

asio::awaitable<Reply> RedisClient::xinfo_stream(std::string_view stream,
                                                 const CommandOptions& options) {
  return command(options, "XINFO", "STREAM", stream);
}

asio::awaitable<std::vector<GroupInfo>> RedisClient::xinfo_groups(std::string_view stream,
                                                                  const CommandOptions& options) {
  return to_groups(command(options, "XINFO", "GROUPS", stream));
}

asio::awaitable<std::vector<StreamEntry>> RedisClient::xreadgroup(std::string_view group,
                                                                  std::string_view consumer,
                                                                  std::string_view stream,
                                                                  std::string_view id,
                                                                  const ReadGroupOptions& options) {
  const std::string_view noack = options.no_ack ? "NOACK" : "";
  if (options.block > std::chrono::milliseconds::zero()) {
    if (options.no_ack) {
      return to_read_entries(blocking_command(options.block, "XREADGROUP", "GROUP", group, consumer,
                                              "COUNT", options.count, "BLOCK",
                                              options.block.count(), noack, "STREAMS", stream, id));
    }
    return to_read_entries(blocking_command(options.block, "XREADGROUP", "GROUP", group, consumer,
                                            "COUNT", options.count, "BLOCK", options.block.count(),
                                            "STREAMS", stream, id));
  }
  if (options.no_ack) {
    return to_read_entries(command("XREADGROUP", "GROUP", group, consumer, "COUNT", options.count,
                                   noack, "STREAMS", stream, id));
  }
  return to_read_entries(command("XREADGROUP", "GROUP", group, consumer, "COUNT", options.count,
                                 "STREAMS", stream, id));
}

asio::awaitable<std::vector<StreamRead>> RedisClient::xreadgroup(
    std::string_view group, std::string_view consumer, std::span<const std::string> streams,
    std::span<const std::string> ids, const ReadGroupOptions& options) {
  auto refuse = [](const char* why) {
    return to_stream_reads(detail::failed<Reply>(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), std::string("Redis XREADGROUP: ") + why))));
  };
  if (streams.empty()) return refuse("no streams");
  if (ids.size() != 1 && ids.size() != streams.size()) {
    return refuse("one ID per stream, or one for all of them");
  }
  // One ID for all: repeated once per stream (the command needs n IDs after n streams).
  std::vector<std::string_view> all_ids(streams.size(), std::string_view(ids.front()));
  if (ids.size() == streams.size()) {
    for (std::size_t i = 0; i < ids.size(); ++i) all_ids[i] = ids[i];
  }
  const std::span<const std::string_view> id_args(all_ids);
  if (options.block > std::chrono::milliseconds::zero()) {
    if (options.no_ack) {
      return to_stream_reads(blocking_command(
          options.block, "XREADGROUP", "GROUP", group, consumer, "COUNT", options.count, "BLOCK",
          options.block.count(), "NOACK", "STREAMS", streams, id_args));
    }
    return to_stream_reads(blocking_command(options.block, "XREADGROUP", "GROUP", group, consumer,
                                            "COUNT", options.count, "BLOCK", options.block.count(),
                                            "STREAMS", streams, id_args));
  }
  if (options.no_ack) {
    return to_stream_reads(command("XREADGROUP", "GROUP", group, consumer, "COUNT", options.count,
                                   "NOACK", "STREAMS", streams, id_args));
  }
  return to_stream_reads(command("XREADGROUP", "GROUP", group, consumer, "COUNT", options.count,
                                 "STREAMS", streams, id_args));
}

}  // namespace trading_shared::redis

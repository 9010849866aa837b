// tsctl status: stream lengths, consumer-group pending counts and lag, table counts.
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "common/keys.hpp"
#include "common/summary.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

struct StreamStatus {
  std::string stream;
  std::string group;  ///< the group the pipeline reads it with; empty: none.
  std::int64_t length = 0;
  bool group_exists = false;
  std::int64_t pending = 0;
  std::optional<std::int64_t> lag;  ///< nil when Redis cannot tell (XINFO GROUPS `lag`).
};

struct TableStatus {
  bool migrated = false;
  std::int32_t schema_version = 0;
  std::int64_t ticks = 0;
  std::vector<std::pair<std::string, std::int64_t>> orders;  ///< status, count.
  std::int64_t fills = 0;
};

/// The value of `key` in a flat [key, value, key, value...] reply, or nullopt.
std::optional<redis::ReplyView> field_of(redis::ReplyView pairs, std::string_view key) {
  for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
    if (pairs[i].is_string() && pairs[i].as_string() == key) return pairs[i + 1];
  }
  return std::nullopt;
}

asio::awaitable<StreamStatus> stream_status(redis::RedisClient& redis, const std::string& stream,
                                            const std::string& group) {
  StreamStatus status;
  status.stream = stream;
  status.group = group;
  const redis::Reply exists = co_await redis.command("EXISTS", status.stream);
  if (exists.as_int() == 0) co_return status;
  status.length = co_await redis.xlen(status.stream);
  if (status.group.empty()) co_return status;
  const redis::Reply groups = co_await redis.command("XINFO", "GROUPS", status.stream);
  for (const redis::ReplyView entry : groups) {
    const auto name = field_of(entry, "name");
    if (!name || name->as_string() != status.group) continue;
    status.group_exists = true;
    if (const auto pending = field_of(entry, "pending")) status.pending = pending->as_int();
    if (const auto lag = field_of(entry, "lag"); lag && !lag->is_nil()) status.lag = lag->as_int();
  }
  co_return status;
}

asio::awaitable<TableStatus> table_status(pg::PostgresClient& pg) {
  TableStatus status;
  const auto present = co_await pg.query_one(
      "SELECT to_regclass('schema_migrations') IS NOT NULL AND to_regclass('ticks') IS NOT NULL"
      " AND to_regclass('orders') IS NOT NULL AND to_regclass('fills') IS NOT NULL");
  status.migrated = present && present->get<bool>(0);
  if (!status.migrated) co_return status;
  const auto counts = co_await pg.query_one(
      "SELECT (SELECT coalesce(max(version), 0) FROM schema_migrations),"
      " (SELECT count(*) FROM ticks), (SELECT count(*) FROM fills)");
  std::tie(status.schema_version, status.ticks, status.fills) =
      counts->as<std::int32_t, std::int64_t, std::int64_t>();
  const pg::Result orders =
      co_await pg.query("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status");
  for (const pg::Row row : orders) {
    status.orders.emplace_back(row.get<std::string>(0), row.get<std::int64_t>(1));
  }
  co_return status;
}

std::string render_text(const std::vector<StreamStatus>& streams, const TableStatus& tables) {
  std::string out = fmt::format("{:<28} {:>10}  {:<16} {:>10} {:>10}\n", "stream", "length",
                                "group", "pending", "lag");
  for (const auto& s : streams) {
    std::string pending = "-";
    std::string lag = "-";
    std::string group = s.group.empty() ? "-" : s.group;
    if (!s.group.empty() && !s.group_exists) group += " (none)";
    if (s.group_exists) {
      pending = std::to_string(s.pending);
      lag = s.lag ? std::to_string(*s.lag) : "?";
    }
    out += fmt::format("{:<28} {:>10}  {:<16} {:>10} {:>10}\n", s.stream, s.length, group, pending,
                       lag);
  }
  out += "\n";
  if (!tables.migrated) {
    out += "tables: not migrated (run tsctl migrate)\n";
    return out;
  }
  out += fmt::format("{:<28} {:>10}\n", "table", "rows");
  out += fmt::format("{:<28} {:>10}\n", "ticks", tables.ticks);
  for (const auto& [status, count] : tables.orders) {
    out += fmt::format("{:<28} {:>10}\n", "orders (" + status + ")", count);
  }
  if (tables.orders.empty()) out += fmt::format("{:<28} {:>10}\n", "orders", 0);
  out += fmt::format("{:<28} {:>10}\n", "fills", tables.fills);
  out += fmt::format("schema version {}\n", tables.schema_version);
  return out;
}

std::string render_json(const std::vector<StreamStatus>& streams, const TableStatus& tables) {
  Summary stream_objects;
  for (const auto& s : streams) {
    Summary object;
    object.add("length", s.length);
    if (!s.group.empty()) {
      object.add("group", std::string_view(s.group)).add("group_exists", s.group_exists);
      if (s.group_exists) {
        object.add("pending", s.pending);
        if (s.lag) object.add("lag", *s.lag);
      }
    }
    stream_objects.add(s.stream, object);
  }
  Summary table_objects;
  if (tables.migrated) {
    Summary orders;
    for (const auto& [status, count] : tables.orders) orders.add(status, count);
    table_objects.add("ticks", tables.ticks).add("orders", orders).add("fills", tables.fills);
  }
  Summary all;
  all.add("streams", stream_objects)
      .add("migrated", tables.migrated)
      .add("schema_version", std::int64_t{tables.schema_version})
      .add("tables", table_objects);
  return all.json() + "\n";
}

}  // namespace

asio::awaitable<void> run_status(lifecycle::ServiceContext& ctx, const Settings& settings) {
  auto* redis =
      co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  auto* pg =
      co_await ctx.scope().open<pg::PostgresClient>("postgres", ctx.executor(), settings.postgres);
  // (stream, group) pairs as locals: no temporaries inside co_await expressions (GCC 12).
  std::vector<std::pair<std::string, std::string>> wanted;
  // The trade streams of the symbols (a bucket holds several: each once), or all of them.
  std::set<std::string> trade_streams;
  if (settings.symbols.empty()) {
    for (const auto& stream : all_trade_streams()) trade_streams.insert(stream);
  }
  for (const auto& symbol : settings.symbols) trade_streams.insert(trade_stream(symbol));
  for (const auto& stream : trade_streams) wanted.emplace_back(stream, kRecorderGroup);
  wanted.emplace_back(kOrderRequests, kExecutorGroup);
  wanted.emplace_back(kOrderEvents, "");
  std::vector<StreamStatus> streams;
  for (const auto& [stream, group] : wanted) {
    StreamStatus status = co_await stream_status(*redis, stream, group);
    streams.push_back(std::move(status));
  }
  const TableStatus tables = co_await table_status(*pg);
  const std::string text =
      settings.json ? render_json(streams, tables) : render_text(streams, tables);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace trading_shared::services::tsctl

// ts-janitor's work: the PostgreSQL step (drop whole old partitions of ticks, delete old rows
// of the others in bounded batches), then the Redis step (XTRIM MINID, never past what a
// consumer group still needs unless forced; remove idle consumers).
// A failure is logged once and counted, and the run goes on with the next piece of work;
// cancellation (deadline, signal) ends it.
#include "janitor/janitor.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "common/keys.hpp"
#include "common/settings.hpp"
#include "common/stream_trim.hpp"
#include "common/summary.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace trading_shared::services::janitor {

namespace asio = boost::asio;
using Micros = std::chrono::sys_time<std::chrono::microseconds>;

namespace {

constexpr std::uint64_t kMaxDeleteBatch = 1'000'000;
constexpr std::int64_t kScanCount = 1000;

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("janitor");
  return logger;
}

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

/// A failed piece of work: cancellation (the deadline or a signal) is rethrown, anything else
/// is logged once with what was being done, and counted.
void record_failure(Report& report, std::string_view what, const std::exception_ptr& error) {
  if (classify(error) == ErrorKind::cancelled) std::rethrow_exception(error);
  ++report.errors;
  log()->error("{}: {}", what, describe(error));
}

// ---- PostgreSQL -----------------------------------------------------------------------------

struct Partition {
  std::string name;  ///< as regclass text: quoted when needed, qualified when off the path.
  std::optional<Micros> lower;  ///< range bounds; none for a DEFAULT partition.
  std::optional<Micros> upper;
  bool daily = false;  ///< named ticks_YYYYMMDD (ts_ensure_tick_partition).
};

// The bounds come from the partition's own definition (pg_get_expr renders them as
// timestamptz literals with their offset), not from its name: exact whatever the time zone of
// the session that created it.
constexpr const char* kListPartitions = R"sql(
SELECT c.oid::regclass::text,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz,
       c.relname ~ '^ticks_[0-9]{8}$'
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass('ticks')
ORDER BY 1
)sql";

asio::awaitable<std::vector<Partition>> list_partitions(pg::PostgresClient& pg) {
  const auto ticks = co_await pg.query_value<bool>("SELECT to_regclass('ticks') IS NOT NULL");
  if (!ticks) throw std::runtime_error("table ticks does not exist (run tsctl migrate)");
  const auto functions = co_await pg.query_value<bool>(
      "SELECT to_regprocedure('ts_drop_tick_partition(regclass)') IS NOT NULL");
  if (!functions) {
    throw std::runtime_error(
        "function ts_drop_tick_partition does not exist: the schema predates version 3 (run "
        "tsctl migrate)");
  }
  const pg::Result rows = co_await pg.query(kListPartitions);
  std::vector<Partition> partitions;
  for (const pg::Row row : rows) {
    Partition p;
    p.name = row.get<std::string>(0);
    p.lower = row.get<std::optional<Micros>>(1);
    p.upper = row.get<std::optional<Micros>>(2);
    p.daily = row.get<bool>(3);
    partitions.push_back(std::move(p));
  }
  co_return partitions;
}

// The janitor's role owns nothing: it drops and deletes through the owner's functions of
// migration 3 (SECURITY DEFINER), which act on a partition of ticks only. to_regclass resolves
// the name in this session's search_path, like the statements they replace; NULL (the table is
// gone) is a no-op, as DROP TABLE IF EXISTS was.
asio::awaitable<void> drop_partition(pg::PostgresClient& pg, const std::string& name) {
  const std::string drop = "SELECT ts_drop_tick_partition(to_regclass($1))";
  pg::TransactionOptions options;
  options.idempotent = core::Idempotent::yes;
  // Dropping a partition locks ticks itself: wait for a lock a bounded time only, so that
  // a long query cannot make the recorder queue behind us.
  co_await pg.transaction(
      [&](pg::Transaction& tx) -> asio::awaitable<void> {
        co_await tx.execute("SET LOCAL lock_timeout = '10s'");
        co_await tx.execute(drop, name);
      },
      options);
}

/// Deletes the rows of `partition` older than `cutoff`, `batch` rows per statement (ctid
/// scan: each statement is short and holds its row locks briefly), until none is left.
asio::awaitable<std::int64_t> delete_old_rows(pg::PostgresClient& pg, const std::string& partition,
                                              Micros cutoff, std::int64_t batch, Report& report) {
  // ts_delete_old_ticks runs DELETE FROM <partition> WHERE ctid = ANY (ARRAY(SELECT ctid
  // FROM <partition> WHERE trade_time < $1 LIMIT $2)) and returns its row count.
  const std::string sql = "SELECT ts_delete_old_ticks(to_regclass($1), $2, $3)";
  std::int64_t deleted = 0;
  for (;;) {
    const std::int64_t n = co_await pg.query_value<std::int64_t>(sql, partition, cutoff, batch);
    deleted += n;
    report.rows_deleted += n;
    if (n < batch) break;
  }
  co_return deleted;
}

asio::awaitable<void> postgres_step(lifecycle::ServiceContext& ctx, const Settings& settings,
                                    Micros cutoff, Report& report) {
  pg::PostgresClient* pg = nullptr;
  try {
    pg = co_await ctx.scope().open<pg::PostgresClient>("postgres", ctx.executor(),
                                                       settings.postgres);
  } catch (...) {
    record_failure(report, "postgres step: cannot connect", std::current_exception());
  }
  if (pg == nullptr) co_return;

  std::vector<Partition> partitions;
  bool listed = false;
  try {
    partitions = co_await list_partitions(*pg);
    listed = true;
  } catch (...) {
    record_failure(report, "postgres step: cannot list the partitions of ticks",
                   std::current_exception());
  }
  if (!listed) co_return;

  std::vector<const Partition*> remaining;
  for (const Partition& p : partitions) {
    if (!(p.daily && p.upper && *p.upper <= cutoff)) {
      remaining.push_back(&p);
      continue;
    }
    bool dropped = false;
    try {
      co_await drop_partition(*pg, p.name);
      dropped = true;
    } catch (...) {
      record_failure(report, fmt::format("dropping partition {}", p.name),
                     std::current_exception());
    }
    if (dropped) {
      ++report.partitions_dropped;
      log()->info("dropped partition {} (all of it older than the cut-off)", p.name);
    } else {
      remaining.push_back(&p);  // its old rows still go, by DELETE
    }
  }
  const auto batch = static_cast<std::int64_t>(settings.delete_batch);
  for (const Partition* p : remaining) {
    if (p->lower && *p->lower >= cutoff) continue;  // nothing in it can be old
    try {
      const std::int64_t n = co_await delete_old_rows(*pg, p->name, cutoff, batch, report);
      if (n > 0) log()->info("deleted {} old row(s) from {}", n, p->name);
    } catch (...) {
      record_failure(report, fmt::format("deleting old rows of {}", p->name),
                     std::current_exception());
    }
  }
}

// ---- Redis ----------------------------------------------------------------------------------

/// Every stream of the first layout, md:trades:<SYMBOL> (SCAN ... TYPE stream; SCAN may repeat
/// keys): until `tsctl migrate-streams` moved them, they get the same retention.
asio::awaitable<std::set<std::string>> scan_legacy_trade_streams(redis::RedisClient& redis) {
  std::set<std::string> keys;
  const std::string pattern = std::string(kLegacyTradeStreamPrefix) + "*";
  std::string cursor = "0";
  do {
    const redis::Reply reply = co_await redis.command("SCAN", cursor, "MATCH", pattern, "COUNT",
                                                      kScanCount, "TYPE", "stream");
    cursor = std::string(reply[0].as_string());
    for (const redis::ReplyView key : reply[1]) keys.emplace(key.as_string());
  } while (cursor != "0");
  co_return keys;
}

/// The value of `key` in a flat [key, value, ...] reply, or nullopt.
std::optional<redis::ReplyView> field_of(redis::ReplyView pairs, std::string_view key) {
  for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
    if (pairs[i].is_string() && pairs[i].as_string() == key) return pairs[i + 1];
  }
  return std::nullopt;
}

struct Consumer {
  std::string group;
  std::string name;
  std::int64_t pending = 0;
  std::int64_t idle_ms = 0;
};

asio::awaitable<void> remove_idle_consumers(redis::RedisClient& redis, const std::string& stream,
                                            std::chrono::milliseconds max_idle, Report& report) {
  const redis::Reply exists = co_await redis.command("EXISTS", stream);
  if (exists.as_int() == 0) co_return;
  const redis::Reply groups = co_await redis.command("XINFO", "GROUPS", stream);
  std::vector<std::string> group_names;
  for (const redis::ReplyView group : groups) {
    if (const auto name = field_of(group, "name")) group_names.emplace_back(name->as_string());
  }
  for (const std::string& group : group_names) {
    const redis::Reply consumers = co_await redis.command("XINFO", "CONSUMERS", stream, group);
    std::vector<Consumer> idle;
    for (const redis::ReplyView consumer : consumers) {
      Consumer c;
      c.group = group;
      const auto name = field_of(consumer, "name");
      const auto pending = field_of(consumer, "pending");
      const auto idle_ms = field_of(consumer, "idle");
      if (!name || !pending || !idle_ms) continue;
      c.name = std::string(name->as_string());
      c.pending = pending->as_int();
      c.idle_ms = idle_ms->as_int();
      if (c.pending == 0 && c.idle_ms > max_idle.count()) idle.push_back(std::move(c));
    }
    for (const Consumer& c : idle) {
      const redis::Reply removed =
          co_await redis.command("XGROUP", "DELCONSUMER", stream, c.group, c.name);
      ++report.consumers_removed;
      if (removed.as_int() > 0) {
        // It read between XINFO and DELCONSUMER: those entries are pending for nobody now.
        log()->warn("consumer {} of {} {} read {} entrie(s) just before its removal", c.name,
                    stream, c.group, removed.as_int());
      }
      log()->info("removed consumer {} of {} {} (idle {} ms, nothing pending)", c.name, stream,
                  c.group, c.idle_ms);
    }
  }
}

/// Trims `stream` of the entries older than the cut-off, but never past the oldest entry a
/// consumer group has not read or not acknowledged unless `force` (F53): a lagging group holds
/// the trim back (counted, logged with the lag); forced, what it still needed is counted.
asio::awaitable<void> trim_stream(redis::RedisClient& redis, const std::string& stream,
                                  std::int64_t cutoff_ms, bool force, Report& report) {
  const StreamId cutoff{static_cast<std::uint64_t>(cutoff_ms), 0};
  // Exact MINID, not `~`: the retention is a promise.
  const auto trim_to = [&](const StreamId& id) -> asio::awaitable<std::int64_t> {
    const std::int64_t n =
        co_await redis.xtrim(stream, redis::TrimOptions::min_id(id.text(), false));
    report.entries_trimmed += n;
    co_return n;
  };
  const auto floor = co_await trim_floor(redis, stream);
  if (!floor || floor->id >= cutoff) {
    const std::int64_t n = co_await trim_to(cutoff);
    if (n > 0) log()->info("trimmed {} entrie(s) older than {} from {}", n, cutoff_ms, stream);
    co_return;
  }
  // Group floor->group still needs entries older than the cut-off.
  const std::int64_t below = co_await trim_to(floor->id);
  if (!force) {
    ++report.trims_held_back;
    log()->warn(
        "{}: trimming held back at {} (cut-off {}): group {} has not read or acknowledged the "
        "entries from there on ({} read and not acknowledged); {} older entrie(s) trimmed. "
        "--force-trim trims them anyway",
        stream, floor->id.text(), cutoff.text(), floor->group, floor->pending, below);
    co_return;
  }
  const std::int64_t unread = co_await trim_to(cutoff);
  report.trimmed_unacknowledged += unread;
  log()->warn(
      "{}: --force-trim: {} entrie(s) older than {} that group {} had not read or acknowledged "
      "were trimmed (and {} it no longer needed)",
      stream, unread, cutoff_ms, floor->group, below);
}

asio::awaitable<void> redis_step(lifecycle::ServiceContext& ctx, const Settings& settings,
                                 std::int64_t cutoff_ms, Report& report) {
  redis::RedisClient* redis = nullptr;
  try {
    redis = co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  } catch (...) {
    record_failure(report, "redis step: cannot connect", std::current_exception());
  }
  if (redis == nullptr) co_return;

  std::set<std::string> streams;
  if (settings.symbols.empty()) {
    for (const auto& stream : all_trade_streams()) streams.insert(stream);
    std::set<std::string> legacy;
    bool scanned = false;
    try {
      legacy = co_await scan_legacy_trade_streams(*redis);
      scanned = true;
    } catch (...) {
      record_failure(report, "redis step: cannot SCAN for md:trades:* streams",
                     std::current_exception());
    }
    if (scanned) streams.insert(legacy.begin(), legacy.end());
  } else {
    for (const auto& symbol : settings.symbols) streams.insert(trade_stream(symbol));
  }
  streams.emplace(kOrderRequests);
  streams.emplace(kOrderEvents);

  // Stream IDs are milliseconds since the epoch: MINID <cutoff> removes every older entry.
  for (const std::string& stream : streams) {
    try {
      co_await trim_stream(*redis, stream, cutoff_ms, settings.force_trim, report);
    } catch (...) {
      record_failure(report, fmt::format("trimming {}", stream), std::current_exception());
    }
    try {
      co_await remove_idle_consumers(*redis, stream, settings.consumer_idle, report);
    } catch (...) {
      record_failure(report, fmt::format("removing idle consumers of {}", stream),
                     std::current_exception());
    }
  }
}

}  // namespace

void add_settings(core::ConfigLoader& loader, Settings& settings) {
  add_postgres_settings(loader, settings.postgres);
  add_redis_settings(loader, settings.redis);
  loader
      .add(settings.retention,
           {"retention", "ticks and stream entries older than this are removed"})
      .add(settings.delete_batch, {"delete_batch", "rows per DELETE statement"})
      .add(settings.symbols,
           {"symbols",
            "symbols whose trade streams (their buckets) are trimmed (empty: every trade "
            "stream)"})
      .add(settings.force_trim,
           {"force_trim",
            "trim by age even entries a consumer group has not read or acknowledged "
            "(counted)"})
      .add(settings.consumer_idle,
           {"consumer_idle", "consumers idle longer than this with nothing pending are removed"})
      .add(settings.deadline, {"deadline", "overall deadline of the run"})
      .add(settings.summary_file, {"summary_file", "write a JSON summary of the run here"});
}

void validate(Settings& settings) {
  if (settings.retention <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--retention must be positive");
  }
  if (settings.delete_batch == 0 || settings.delete_batch > kMaxDeleteBatch) {
    throw core::ConfigError(fmt::format("invalid --delete-batch {}: expected 1 to {}",
                                        settings.delete_batch, kMaxDeleteBatch));
  }
  if (settings.consumer_idle < std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--consumer-idle must not be negative");
  }
  if (settings.deadline <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--deadline must be positive");
  }
  check_symbols(settings.symbols, /*allow_empty=*/true);  // empty: every stream SCAN finds
  check_postgres_settings(settings.postgres);
  check_redis_settings(settings.redis);
  // A server that is down must not eat the whole deadline: the other step still runs.
  const auto start_bound = settings.deadline / 3;
  settings.postgres.startup_timeout = std::min(settings.postgres.startup_timeout, start_bound);
  settings.redis.startup_timeout = std::min(settings.redis.startup_timeout, start_bound);
  (void)service_options(settings);  // the stop budget adds up (F54)
}

lifecycle::ServiceOptions service_options(const Settings& settings) {
  // No drain: after the deadline or a signal, the closes get the default shutdown budget.
  lifecycle::ServiceOptions options = services::service_options(
      "ts-janitor", std::chrono::milliseconds::zero(), lifecycle::ServiceOptions{}.shutdown_timeout,
      {{"redis", close_bound(settings.redis)}, {"postgres", close_bound(settings.postgres)}},
      "the clients' close timeouts");
  options.deadline = settings.deadline;
  return options;
}

asio::awaitable<void> run(lifecycle::ServiceContext& ctx, const Settings& settings,
                          Report& report) {
  const auto now = std::chrono::system_clock::now();
  const auto cutoff = std::chrono::time_point_cast<std::chrono::microseconds>(
      now - std::chrono::duration_cast<std::chrono::system_clock::duration>(settings.retention));
  const std::int64_t cutoff_ms = std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(cutoff.time_since_epoch()).count());
  log()->info("retention {} ms: cut-off {} ms since the epoch", settings.retention.count(),
              cutoff_ms);
  co_await postgres_step(ctx, settings, cutoff, report);
  co_await redis_step(ctx, settings, cutoff_ms, report);
  report.completed = true;
}

std::string summary_line(const Report& report) {
  return fmt::format(
      "ts-janitor: dropped {} partition(s), deleted {} row(s), trimmed {} stream entrie(s), "
      "removed {} consumer(s), {} error(s){}",
      report.partitions_dropped, report.rows_deleted, report.entries_trimmed,
      report.consumers_removed, report.errors,
      report.trims_held_back > 0 || report.trimmed_unacknowledged > 0
          ? fmt::format("; trimming held back on {} stream(s), {} unacknowledged entrie(s) "
                        "trimmed by force",
                        report.trims_held_back, report.trimmed_unacknowledged)
          : std::string());
}

bool write_summary(const std::string& path, const Report& report) {
  Summary summary;
  summary.add("partitions_dropped", report.partitions_dropped)
      .add("rows_deleted", report.rows_deleted)
      .add("entries_trimmed", report.entries_trimmed)
      .add("trims_held_back", report.trims_held_back)
      .add("trimmed_unacknowledged", report.trimmed_unacknowledged)
      .add("consumers_removed", report.consumers_removed)
      .add("errors", report.errors)
      .add("completed", report.completed);
  try {
    summary.write_file(path);
    return true;
  } catch (const std::exception& e) {
    log()->error("{}", e.what());
    return false;
  }
}

}  // namespace trading_shared::services::janitor

#include "recorder/recorder.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/consumer_service.hpp"
#include "common/keys.hpp"
#include "common/service_metrics.hpp"
#include "common/settings.hpp"
#include "common/summary.hpp"
#include "common/text.hpp"

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdlib>
#include <exception>
#include <memory>
#include <span>
#include <utility>

namespace trading_shared::services::recorder {

namespace asio = boost::asio;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("recorder");
  return logger;
}

/// Exit status of the test-only crash switches (as if killed by SIGKILL).
constexpr int kFaultExitCode = 137;

std::optional<std::int64_t> parse_int(std::string_view text) noexcept {
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

/// The ticks of one batch as PostgreSQL array literals, one per column, for a single
/// `INSERT ... SELECT FROM unnest(...)` (see TickWriter).
struct Columns {
  std::string symbols{"{"};
  std::string trade_ids{"{"};
  std::string prices{"{"};
  std::string qtys{"{"};
  std::string trade_ms{"{"};
  std::string event_ms{"{"};
  std::string makers{"{"};
  std::string received_us{"{"};
  std::size_t rows = 0;

  /// Room for `n` rows of typical sizes: one allocation per column and batch.
  void reserve(std::size_t n) {
    for (std::string* s : {&trade_ids, &trade_ms, &event_ms, &received_us}) s->reserve(n * 18);
    symbols.reserve(n * 12);
    for (std::string* s : {&prices, &qtys}) s->reserve(n * 16);
    makers.reserve(n * 2 + 2);
  }

  // Numbers are written with to_chars: no temporary string per value (a 16-digit microsecond
  // time is past std::string's inline capacity and allocated once per trade).
  void add(const Trade& t) {
    const char* sep = rows == 0 ? "" : ",";
    ++rows;
    // Quoted: an element spelled NULL would otherwise be a null (symbols are letters and
    // digits, so nothing inside needs escaping).
    symbols += sep;
    symbols += '"';
    symbols += t.symbol;
    symbols += '"';
    append_number(trade_ids, sep, t.trade_id);
    append(prices, sep, t.price);  // validated plain decimals: no quoting needed
    append(qtys, sep, t.qty);
    append_number(trade_ms, sep, t.trade_time_ms);
    append_number(event_ms, sep, t.event_time_ms);
    append(makers, sep, t.buyer_is_maker ? "t" : "f");
    append_number(received_us, sep, t.received_at_us);
  }
  void finish() {
    for (std::string* s :
         {&symbols, &trade_ids, &prices, &qtys, &trade_ms, &event_ms, &makers, &received_us}) {
      s->push_back('}');
    }
  }

 private:
  static void append(std::string& out, const char* sep, std::string_view value) {
    out += sep;
    out += value;
  }
  static void append_number(std::string& out, const char* sep, std::int64_t value) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out += sep;
    out.append(digits, end);
  }
  static void append_number(std::string& out, const char* sep, std::optional<std::int64_t> value) {
    if (value) {
      append_number(out, sep, *value);
    } else {
      append(out, sep, "NULL");
    }
  }
};

// One statement per read (every symbol of every stream read), idempotent: a redelivered trade
// hits the primary key (symbol, trade_id, trade_time) and is skipped; the affected-row count is
// what was new. The columns travel as 8 array parameters (text literals cast on the server):
// the statement has a fixed text and 8 parameters whatever the batch size and the number of
// symbols, so the server parses and plans the same small statement every time, and a read of
// 500 symbols costs one statement, not 500 (F72).
// Times: exact integer arithmetic on intervals (no float seconds).
// Two forms (see TickWriter::insert): new trades without ON CONFLICT, redelivered ones with.
constexpr std::string_view kInsertTicksBody = R"sql(
INSERT INTO ticks (symbol, trade_id, price, qty, trade_time, event_time, buyer_is_maker,
                   received_at)
SELECT u.symbol, u.trade_id, u.price, u.qty,
       timestamptz 'epoch' + u.trade_ms * interval '1 millisecond',
       timestamptz 'epoch' + u.event_ms * interval '1 millisecond',
       u.maker,
       timestamptz 'epoch' + u.received_us * interval '1 microsecond'
FROM unnest($1::text[], $2::bigint[], $3::numeric[], $4::numeric[], $5::bigint[], $6::bigint[],
            $7::boolean[], $8::bigint[])
     AS u(symbol, trade_id, price, qty, trade_ms, event_ms, maker, received_us))sql";
const std::string kInsertNewTicks(kInsertTicksBody);
const std::string kInsertTicks = std::string(kInsertTicksBody) + "\nON CONFLICT DO NOTHING";

// Creates the partition of the day holding `$1` (ms since the epoch) if missing and returns
// its bounds in ms. The day is taken in the session's time zone, as the function's bounds are.
constexpr const char* kEnsurePartition = R"sql(
SELECT ts_ensure_tick_partition(d),
       (extract(epoch FROM d::timestamptz) * 1000)::bigint,
       (extract(epoch FROM (d + 1)::timestamptz) * 1000)::bigint
FROM (SELECT (timestamptz 'epoch' + $1::bigint * interval '1 millisecond')::date AS d) AS x)sql";

constexpr const char* kCheckSchema =
    "SELECT to_regclass('ticks') IS NOT NULL AND "
    "to_regproc('ts_ensure_tick_partition') IS NOT NULL";

/// A unique violation: a trade already in `ticks`.
bool is_duplicate(const Error& e) {
  return e.server() && e.server()->code == pg::sqlstate::unique_violation;
}

/// A check violation on a partitioned table: "no partition of relation found for row".
bool is_missing_partition(const Error& e) {
  return e.server() && e.server()->code == pg::sqlstate::check_violation;
}

struct Counters {
  std::uint64_t inserted = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t batches = 0;
  std::uint64_t malformed = 0;
  std::uint64_t db_retries = 0;
  std::uint64_t handler_calls = 0;
  std::uint64_t commits = 0;
  std::uint64_t partitions_created = 0;
  std::uint64_t redelivered_batches = 0;  ///< the optimistic insert met a recorded trade
};

/// The recorder's own series (docs/operations.md, "Metrics"), resolved once.
struct RecorderMetrics {
  explicit RecorderMetrics(core::MetricsRegistry& r)
      : written(r.counter("ts_recorder_trades_written_total",
                          "Trades inserted into ticks (rows committed).")),
        duplicates(r.counter("ts_recorder_duplicates_total",
                             "Trades delivered again and found recorded already (not inserted).")),
        malformed(r.counter("ts_recorder_malformed_total",
                            "Stream entries skipped as malformed (acknowledged).")),
        batches(r.counter("ts_recorder_batches_total", "Batches handled (one insert each).")),
        db_retries(r.counter("ts_recorder_db_retries_total",
                             "Insert attempts retried after a database failure.")),
        batch_size(r.histogram("ts_recorder_batch_size", "Trades per insert.",
                               core::Histogram::kSizeBounds)),
        insert(r.histogram(core::metric_name("ts_recorder_stage_seconds", {{"stage", "insert"}}),
                           "Latency of a stage of the recorder's path, per batch (insert: its "
                           "insert until committed, retries included) or per trade "
                           "(trade_to_commit: from the receiver's receipt to the commit).")),
        trade_to_commit(r.histogram(
            core::metric_name("ts_recorder_stage_seconds", {{"stage", "trade_to_commit"}}))) {}

  void sample(const Counters& c) noexcept {
    written.set(c.inserted);
    duplicates.set(c.duplicates);
    malformed.set(c.malformed);
    batches.set(c.batches);
    db_retries.set(c.db_retries);
  }

  core::Counter& written;
  core::Counter& duplicates;
  core::Counter& malformed;
  core::Counter& batches;
  core::Counter& db_retries;
  core::Histogram& batch_size;
  core::Histogram& insert;
  core::Histogram& trade_to_commit;
};

/// Writes the batches of every symbol: parsing, partitions (cached), the one insert.
class TickWriter {
 public:
  TickWriter(pg::PostgresClient& pg, const RecorderSettings& settings, Counters& counters,
             core::UntilStopped retry, RecorderMetrics& metrics)
      : pg_(&pg),
        settings_(&settings),
        counters_(&counters),
        retry_(std::move(retry)),
        metrics_(&metrics) {}

  /// `calls`: the reader's, marked for the "write_path" readiness check.
  asio::awaitable<void> write(std::span<const redis::StreamEntry> entries, HandlerCalls& calls) {
    const auto in_progress =
        calls.begin(std::chrono::steady_clock::now(), counters_->db_retries, counters_->commits);
    const std::uint64_t call = ++counters_->handler_calls;
#if TS_TEST_FAULTS
    if (settings_->fault_crash_before_commit > 0 &&
        call == static_cast<std::uint64_t>(settings_->fault_crash_before_commit)) {
      log()->error("fault switch: crashing in batch {} before its insert (exit {})", call,
                   kFaultExitCode);
      std::_Exit(kFaultExitCode);
    }
#else
    (void)call;
#endif
    std::vector<Trade> trades;
    trades.reserve(entries.size());
    std::string why;
    for (const auto& entry : entries) {
      auto trade = parse_trade(entry, why);
      if (!trade) {
        ++counters_->malformed;
        log()->error("stream {}: malformed entry {} skipped (acknowledged with its batch): {}",
                     entry.stream, entry.id, why);
        continue;
      }
      trades.push_back(*trade);
    }
    if (!trades.empty()) {
      Columns columns;
      columns.reserve(trades.size());
      for (const auto& t : trades) columns.add(t);
      columns.finish();
      // Locals, not temporaries, inside the co_await (GCC 12 coroutine bugs).
      std::string what = "insert into ticks (" + std::to_string(trades.size()) + " trades)";
      auto attempt = [&]() { return insert(trades, columns); };
      metrics_->batch_size.observe(static_cast<double>(trades.size()));
      const auto started = std::chrono::steady_clock::now();
      const std::int64_t inserted = co_await core::retry_until_stopped(
          attempt, core::Idempotent::yes, retry_, std::move(what));
      metrics_->insert.observe(std::chrono::steady_clock::now() - started);
      const std::int64_t committed_us = unix_micros();
      for (const auto& t : trades) {
        if (t.received_at_us) {
          metrics_->trade_to_commit.observe(static_cast<double>(committed_us - *t.received_at_us) /
                                            1e6);
        }
      }
      const auto rows = static_cast<std::uint64_t>(inserted < 0 ? 0 : inserted);
      counters_->inserted += rows;
      counters_->duplicates += trades.size() - std::min<std::uint64_t>(rows, trades.size());
      const std::uint64_t commit = ++counters_->commits;
#if TS_TEST_FAULTS
      if (settings_->fault_crash_after_commit > 0 &&
          commit == static_cast<std::uint64_t>(settings_->fault_crash_after_commit)) {
        log()->error("fault switch: crashing after commit {}, before its XACK (exit {})", commit,
                     kFaultExitCode);
        std::_Exit(kFaultExitCode);
      }
#else
      (void)commit;
#endif
    }
    ++counters_->batches;
  }

 private:
  bool covered(std::int64_t ms) const noexcept {
    for (const auto& [from, to] : covered_) {
      if (ms >= from && ms < to) return true;
    }
    return false;
  }

  asio::awaitable<void> ensure_partitions(const std::vector<Trade>& trades) {
    for (const auto& t : trades) {
      if (covered(t.trade_time_ms)) continue;
      const auto row = co_await pg_->query_one(kEnsurePartition, t.trade_time_ms);
      if (!row) throw std::runtime_error("ts_ensure_tick_partition returned no row");
      const auto [created, from, to] = row->as<bool, std::int64_t, std::int64_t>();
      if (created) {
        ++counters_->partitions_created;
        log()->info("created the ticks partition for [{}, {}) ms", from, to);
      }
      covered_.emplace_back(from, to);
    }
  }

  /// One attempt: partitions, then the insert. A partition dropped behind our back (the
  /// cache is stale) is created again, once.
  ///
  /// Optimistic: a batch of new trades, the normal case, goes in without ON CONFLICT, which
  /// cost the server 1.13-1.79x as much per row (docs/performance.md). A batch holding a
  /// trade already recorded (a redelivery after a crash or a claim) fails as a whole on the
  /// primary key (23505: nothing of it was inserted) and goes in again with ON CONFLICT DO
  /// NOTHING, as do the next kConflictBatches batches (a redelivery comes in several).
  asio::awaitable<std::int64_t> insert(const std::vector<Trade>& trades, const Columns& c) {
    co_await ensure_partitions(trades);
    int& careful = careful_batches_;
    bool on_conflict = careful > 0;
    if (careful > 0) --careful;
    bool recreated = false;
    // At most three statements: a 23505 switches to ON CONFLICT, a 23514 (a partition
    // dropped behind the cache) creates the partitions again; each happens once.
    for (;;) {
      bool duplicate = false;
      bool missing_partition = false;
      try {
        const std::string& sql = on_conflict ? kInsertTicks : kInsertNewTicks;
        co_return co_await pg_->execute(sql, c.symbols, c.trade_ids, c.prices, c.qtys, c.trade_ms,
                                        c.event_ms, c.makers, c.received_us);
      } catch (const Error& e) {
        if (is_duplicate(e) && !on_conflict) {
          duplicate = true;
        } else if (is_missing_partition(e) && !recreated) {
          log()->warn("insert into ticks: {}; creating the partitions again", e.what());
          missing_partition = true;
        } else {
          throw;
        }
      }
      if (duplicate) {
        ++counters_->redelivered_batches;
        careful = kConflictBatches;
        on_conflict = true;
      }
      if (missing_partition) {
        recreated = true;
        covered_.clear();
        co_await ensure_partitions(trades);
      }
    }
  }

  /// After a batch with an already recorded trade, this many batches use ON CONFLICT directly.
  static constexpr int kConflictBatches = 20;
  int careful_batches_ = 0;

  pg::PostgresClient* pg_;
  const RecorderSettings* settings_;
  Counters* counters_;
  core::UntilStopped retry_;
  RecorderMetrics* metrics_;
  std::vector<std::pair<std::int64_t, std::int64_t>> covered_;  // [from, to) ms
};

}  // namespace

std::optional<Trade> parse_trade(const redis::StreamEntry& entry, std::string& why) {
  auto required = [&](const char* name) -> const std::string* {
    const std::string* value = entry.field(name);
    if (value == nullptr) why = std::string("missing field '") + name + "'";
    return value;
  };
  const std::string* s = required("s");
  const std::string* t = required("t");
  const std::string* p = required("p");
  const std::string* q = required("q");
  const std::string* trade_time = required("T");
  const std::string* m = required("m");
  if (s == nullptr || t == nullptr || p == nullptr || q == nullptr || trade_time == nullptr ||
      m == nullptr) {
    return std::nullopt;
  }
  Trade trade;
  if (!is_symbol(*s) || s->size() > 64) {
    why = "invalid symbol '" + s->substr(0, 64) + "'";
    return std::nullopt;
  }
  if (!entry.stream.empty() && trade_stream(*s) != entry.stream) {
    why = "symbol '" + *s + "' belongs in " + trade_stream(*s) + ", not in " +
          std::string(entry.stream);
    return std::nullopt;
  }
  trade.symbol = *s;
  const auto id = parse_int(*t);
  if (!id || *id < 0) {
    why = "invalid trade id '" + *t + "'";
    return std::nullopt;
  }
  trade.trade_id = *id;
  if (!is_decimal(*p)) {
    why = "invalid price '" + *p + "'";
    return std::nullopt;
  }
  trade.price = *p;
  if (!is_decimal(*q)) {
    why = "invalid quantity '" + *q + "'";
    return std::nullopt;
  }
  trade.qty = *q;
  const auto ms = parse_int(*trade_time);
  if (!ms || !is_plausible_millis(*ms)) {
    why = "invalid trade time '" + *trade_time + "' (milliseconds, 2000-2099)";
    return std::nullopt;
  }
  trade.trade_time_ms = *ms;
  if (*m == "1" || *m == "true") {
    trade.buyer_is_maker = true;
  } else if (*m == "0" || *m == "false") {
    trade.buyer_is_maker = false;
  } else {
    why = "invalid buyer-is-maker flag '" + *m + "'";
    return std::nullopt;
  }
  if (const std::string* e = entry.field("E")) {
    trade.event_time_ms = parse_int(*e);
    if (!trade.event_time_ms || !is_plausible_millis(*trade.event_time_ms)) {
      why = "invalid event time '" + *e + "' (milliseconds, 2000-2099)";
      return std::nullopt;
    }
  }
  if (const std::string* r = entry.field("r")) {
    trade.received_at_us = parse_int(*r);
    if (!trade.received_at_us || !is_plausible_micros(*trade.received_at_us)) {
      why = "invalid receive time '" + *r + "' (microseconds, 2000-2099)";
      return std::nullopt;
    }
  }
  return trade;
}

void add_recorder_settings(core::ConfigLoader& loader, RecorderSettings& s) {
  add_consumer_service_settings(
      loader, s,
      {.consumer = "consumer name in the group 'recorder' (default: recorder-<host>-<pid>); "
                   "reader i > 0 adds '-<i>'",
       .batch = "entries per stream and read; a read (every stream) is one insert",
       .items = "entries",
       .max_deliveries = "deliveries of an entry before it goes to its stream's dead-letter "
                         "stream (<stream>:dead)",
       .drain_timeout = "after SIGTERM, time to finish the current batch before it is cancelled"});
  loader.add(s.readers, {"readers",
                         "readers, each reading every trade stream on one blocking Redis "
                         "connection (1-8)"});
#if TS_TEST_FAULTS  // test builds only (CMake option TS_TEST_FAULTS): absent from a release
  loader
      .add(s.fault_crash_after_commit, {"fault_crash_after_commit",
                                        "TEST ONLY: exit 137 after the Nth commit, before its "
                                        "XACK (0: off)"})
      .add(s.fault_crash_before_commit, {"fault_crash_before_commit",
                                         "TEST ONLY: exit 137 in the Nth batch, before its "
                                         "insert (0: off)"});
#endif
}

lifecycle::ServiceOptions service_options(const RecorderSettings& s) {
  return consumer_service_options(s, "ts-recorder");
}

void finish_settings(RecorderSettings& s) {
  if (s.readers < 1 || s.readers > 8) throw core::ConfigError("--readers must be between 1 and 8");
#if TS_TEST_FAULTS
  if (s.fault_crash_after_commit < 0 || s.fault_crash_before_commit < 0) {
    throw core::ConfigError("--fault-crash-* must be >= 0");
  }
#endif
  finish_consumer_service_settings(s, "recorder", "ts-recorder");
}

int run_recorder(const RecorderSettings& settings) {
  Counters counters;
  ClientSnapshot clients;
  std::optional<core::StopSignal> stop;  // on the service's executor
  core::DefaultRandom random;
  std::optional<TickWriter> writer;
  std::optional<RecorderMetrics> metrics;
  std::optional<redis::StreamConsumerMetrics> consumer_metrics;
  // Each reader's handler call in progress (the "write_path" check); outlives the consumers.
  std::vector<HandlerCalls> calls;
  std::vector<std::unique_ptr<redis::StreamConsumer>> consumers;
  const auto streams = all_trade_streams();

  const lifecycle::ServiceOptions options = service_options(settings);
  const int code =
      lifecycle::run_daemon(options, [&](lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        stop.emplace(ctx.executor());
        ctx.on_stop([&] {
          stop->request_stop();
          for (auto& consumer : consumers) consumer->stop();
        });
        const ServiceClients opened = co_await open_clients(ctx, settings, clients);
        auto* pg = opened.pg;
        auto* redis = opened.redis;
        // /metrics and /readyz (docs/operations.md): the clients, the consumers, our own.
        BodyHooks hooks(ctx);
        watch_clients(hooks, pg, redis);
        metrics.emplace(ctx.metrics());
        consumer_metrics.emplace(ctx.metrics(), kRecorderGroup);
        hooks.add_sampler([&] {
          metrics->sample(counters);
          consumer_metrics->sample(total_stats(consumers));
        });
        auto consumer_readiness = std::make_shared<ConsumerReadiness>();
        hooks.add_readiness_check("consumer", [&consumers, consumer_readiness] {
          return consumer_readiness->check(total_stats(consumers));
        });
        // One per reader, sized before any call begins (never reallocated).
        calls.resize(static_cast<std::size_t>(settings.readers));
        auto write_path = std::make_shared<ConsumerWritePath>(settings.admin.check_interval);
        hooks.add_readiness_check("write_path", [&consumers, &counters, &calls, write_path] {
          return write_path->check(calls, counters.db_retries, counters.commits,
                                   total_stats(consumers), std::chrono::steady_clock::now());
        });
        const bool schema = co_await pg->query_value<bool>(kCheckSchema);
        if (!schema) {
          throw std::runtime_error(
              "the database has no ticks table or ts_ensure_tick_partition(): apply the "
              "schema first (tsctl migrate)");
        }

        core::UntilStopped retry;
        retry.stop = &*stop;
        retry.random = &random;
        retry.retries = &counters.db_retries;
        retry.log = log();
        writer.emplace(*pg, settings, counters, retry, *metrics);
        // Every reader reads every bucket stream: a fixed number of Redis connections
        // (1 + readers) whatever the number of symbols (F72).
        for (std::int64_t i = 0; i < settings.readers; ++i) {
          redis::StreamConsumerConfig config;
          config.streams.assign(streams.begin(), streams.end());
          config.group = std::string(kRecorderGroup);
          config.consumer =
              i == 0 ? settings.consumer : settings.consumer + "-" + std::to_string(i);
          config.batch = settings.batch;
          config.claim_min_idle = settings.claim_min_idle;
          config.claim_interval = settings.claim_interval;
          config.max_deliveries = settings.max_deliveries;
          consumers.push_back(std::make_unique<redis::StreamConsumer>(
              *redis, config,
              redis::StreamConsumer::BatchHandler(
                  [&writer, &reader = calls[static_cast<std::size_t>(i)]](
                      std::span<const redis::StreamEntry> entries) {
                    return writer->write(entries, reader);
                  })));
        }
        if (stop->stop_requested()) co_return;
        ctx.health().ready = true;
        log()->info(
            "recording {} trade stream(s) with {} reader(s) as consumer {} of group {} "
            "(batch {} per stream)",
            streams.size(), consumers.size(), settings.consumer, kRecorderGroup, settings.batch);

        // A consumer that fails (a permanent error such as NOPERM: F64) stops the others and
        // the probe, so that the service ends with its error instead of idling without it.
        auto consume = [&](redis::StreamConsumer& consumer) -> asio::awaitable<void> {
          std::exception_ptr failure;
          try {
            co_await consumer.run();
          } catch (...) {
            failure = std::current_exception();
          }
          if (failure) {
            stop->request_stop();
            for (auto& other : consumers) other->stop();
            std::rethrow_exception(failure);
          }
        };
        using Run =
            decltype(asio::co_spawn(ctx.executor(), consume(*consumers.front()), asio::deferred));
        std::vector<Run> runs;
        runs.reserve(consumers.size());
        for (auto& consumer : consumers) {
          runs.push_back(asio::co_spawn(ctx.executor(), consume(*consumer), asio::deferred));
        }
        // ts_stream_consumer_pending / _lag, once a second (ends with the stop).
        std::vector<std::string> probed(streams.begin(), streams.end());
        runs.push_back(asio::co_spawn(
            ctx.executor(),
            probe_group(*redis, std::move(probed), std::string(kRecorderGroup), *consumer_metrics,
                        ctx.metrics(), *stop, kGroupProbeInterval),
            asio::deferred));
        auto [order, errors] =
            co_await asio::experimental::make_parallel_group(std::move(runs))
                .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
        (void)order;
        for (const auto& error : errors) {
          if (error) std::rethrow_exception(error);
        }
      });

  const redis::StreamConsumerStats total = total_stats(consumers);
  log()->info(
      "stopped (exit {}): {} inserted, {} duplicates, {} malformed, {} acked, {} handler "
      "errors, {} dead-lettered",
      code, counters.inserted, counters.duplicates, counters.malformed, total.acked,
      total.handler_errors, total.dead_lettered);
  if (settings.summary_file.empty()) return code;
  Summary summary;
  summary.add("inserted", counters.inserted)
      .add("duplicates", counters.duplicates)
      .add("batches", counters.batches)
      .add("malformed", counters.malformed);
  add_consumer_stats(summary, total);
  summary.add("splits", total.splits)
      .add("db_retries", counters.db_retries)
      .add("partitions_created", counters.partitions_created)
      .add("redelivered_batches", counters.redelivered_batches);
  return write_summary(summary, clients, code, settings.summary_file, *log());
}

}  // namespace trading_shared::services::recorder

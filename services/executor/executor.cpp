#include "executor/executor.hpp"

#include <trading_shared/core/access.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/core/stop_signal.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/redis/redis_client.hpp>
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

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <memory>
#include <set>
#include <utility>

namespace trading_shared::services::executor {

namespace asio = boost::asio;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("executor");
  return logger;
}

constexpr int kFaultExitCode = 137;

/// One order request as read from the stream (missing fields are empty).
struct Request {
  std::string id;
  std::string symbol;
  std::string side;
  std::string type;
  std::string qty;
  std::string limit_price;
  std::optional<std::int64_t> submitted_at_ms;
  bool bad_submitted_at = false;  ///< present but not a time in ms (2000-2099): rejected
};

/// The venue's decision, or the stored one for a request seen before.
struct Outcome {
  bool filled = false;
  std::string reason;  ///< rejected: why.
  std::string price;   ///< filled: at what price.
  std::string qty;     ///< filled: how much.
  bool duplicate = false;
};

// The order (once per client order id) and, when it is new and filled, its fill, in one
// statement (one implicit transaction, one round trip), with the stored outcome of an order
// recorded before (a redelivery, a reused id, or our own earlier attempt whose reply was
// lost). The joins read the snapshot from before this statement's inserts: a new order reads
// NULLs there, an old one its stored row. Always one row.
constexpr const char* kRecordOrder = R"sql(
WITH new_order AS (
  INSERT INTO orders (client_order_id, symbol, side, type, qty, limit_price, status,
                      reject_reason, submitted_at)
  VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric, $7, $8,
          timestamptz 'epoch' + $9::bigint * interval '1 millisecond')
  ON CONFLICT (client_order_id) DO NOTHING
  RETURNING client_order_id),
new_fill AS (
  INSERT INTO fills (client_order_id, symbol, side, qty, price)
  SELECT client_order_id, $2, $3, $10::numeric, $11::numeric FROM new_order
  WHERE $10::numeric IS NOT NULL
  RETURNING client_order_id)
SELECT (SELECT count(*) FROM new_order), o.status, o.reject_reason, f.price::text, f.qty::text
FROM (SELECT 1) AS one
LEFT JOIN orders o ON o.client_order_id = $1
LEFT JOIN fills f ON f.client_order_id = $1)sql";

// An order that conflicted with one committed after the statement's snapshot (another
// executor inserting the same id at the same moment) is read again, in a new snapshot.
constexpr const char* kStoredOrder = R"sql(
SELECT o.status, o.reject_reason, f.price::text, f.qty::text
FROM orders o LEFT JOIN fills f USING (client_order_id)
WHERE o.client_order_id = $1)sql";

constexpr const char* kCheckSchema =
    "SELECT to_regclass('orders') IS NOT NULL AND to_regclass('fills') IS NOT NULL";

struct Counters {
  std::uint64_t filled = 0;
  std::uint64_t rejected = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t reconciled = 0;  ///< our own write, whose outcome was unknown, found recorded
  std::uint64_t events = 0;
  std::uint64_t malformed = 0;
  std::uint64_t db_retries = 0;
  std::uint64_t redis_retries = 0;
  std::uint64_t commits = 0;
  std::uint64_t unprocessable = 0;  ///< the database refused the order: recorded as rejected
  std::uint64_t unrecorded = 0;     ///< not even that: rejected on orders:events only
};

/// The executor's own series (docs/operations.md, "Metrics"), resolved once.
struct ExecutorMetrics {
  explicit ExecutorMetrics(core::MetricsRegistry& r)
      : filled(order(r, "filled")),
        rejected(order(r, "rejected")),
        duplicate(order(r, "duplicate")),
        malformed(order(r, "malformed")),
        reconciled(r.counter("ts_executor_reconciled_total",
                             "Orders whose write had an unknown outcome, found recorded as "
                             "decided (counted in filled or rejected too).")),
        unprocessable(r.counter("ts_executor_unprocessable_total",
                                "Orders the database refused, recorded as rejected instead.")),
        events(r.counter("ts_executor_events_total", "Outcomes published on orders:events.")),
        handle(r.histogram(core::metric_name("ts_executor_stage_seconds", {{"stage", "handle"}}),
                           "Latency of a stage of the executor's path (handle: one order from "
                           "its delivery to its outcome published, retries included).")) {}

  static core::Counter& order(core::MetricsRegistry& r, std::string_view outcome) {
    return r.counter(core::metric_name("ts_executor_orders_total", {{"outcome", outcome}}),
                     "Order requests handled, by outcome (filled, rejected, duplicate: seen "
                     "before, its stored outcome published again; malformed: skipped).");
  }

  void sample(const Counters& c) noexcept {
    filled.set(c.filled);
    rejected.set(c.rejected);
    duplicate.set(c.duplicates);
    malformed.set(c.malformed);
    reconciled.set(c.reconciled);
    unprocessable.set(c.unprocessable);
    events.set(c.events);
  }

  core::Counter& filled;
  core::Counter& rejected;
  core::Counter& duplicate;
  core::Counter& malformed;
  core::Counter& reconciled;
  core::Counter& unprocessable;
  core::Counter& events;
  core::Histogram& handle;
};

class Venue {
 public:
  Venue(pg::PostgresClient& pg, redis::RedisClient& redis, const ExecutorSettings& settings,
        Counters& counters, core::UntilStopped db_retry, core::UntilStopped redis_retry)
      : pg_(&pg),
        redis_(&redis),
        settings_(&settings),
        counters_(&counters),
        db_retry_(std::move(db_retry)),
        redis_retry_(std::move(redis_retry)) {}

  /// The handle stage's histogram (null: not timed).
  void set_histogram(core::Histogram* handle) noexcept { handle_time_ = handle; }

  /// The handler call in progress, for the "write_path" readiness check.
  const HandlerCalls& calls() const noexcept { return calls_; }
  /// Retries so far, of both clients.
  std::uint64_t retries() const noexcept {
    return counters_->db_retries + counters_->redis_retries;
  }

  asio::awaitable<void> handle(const redis::StreamEntry& entry) {
    const auto started = std::chrono::steady_clock::now();
    // An order's call ends with its event published: `events` counts the calls completed.
    const auto in_progress = calls_.begin(started, retries(), counters_->events);
    co_await handle_entry(entry);
    if (handle_time_ != nullptr) handle_time_->observe(std::chrono::steady_clock::now() - started);
  }

 private:
  asio::awaitable<void> handle_entry(const redis::StreamEntry& entry) {
    std::string why;
    auto request = read_request(entry, why);
    if (!request) {
      ++counters_->malformed;
      log()->error("{}: malformed request {} skipped (acknowledged, no event): {}", kOrderRequests,
                   entry.id, why);
      co_return;
    }
    Outcome decision = co_await decide(*request);
    // Every request gets exactly one terminal outcome on orders:events (F44): one the database
    // refuses for good (a value out of its range, a constraint) is recorded as rejected
    // without its optional values; if even that is refused, it is rejected on the stream only.
    // A refused privilege (42501) is not the order's fault: try_record throws, the request
    // stays pending and is delivered again once the role has its privilege back.
    // `maybe_recorded`: an attempt failed with an unknown outcome (the connection was lost
    // after the statement was sent), so finding the order recorded afterwards, as decided, is
    // our own write: reconciled, not a duplicate.
    bool maybe_recorded = false;
    Outcome outcome;
    std::string refused = co_await try_record(*request, decision, outcome, maybe_recorded);
    if (!refused.empty()) {
      ++counters_->unprocessable;
      log()->error("order {}: the database refused it ({}); recording it as rejected", request->id,
                   refused);
      Request stripped = *request;
      stripped.qty.clear();
      stripped.limit_price.clear();
      stripped.submitted_at_ms.reset();
      decision = rejected("unprocessable");
      const std::string again = co_await try_record(stripped, decision, outcome, maybe_recorded);
      if (!again.empty()) {
        ++counters_->unrecorded;
        log()->error("order {}: not recorded at all ({}): publishing it as rejected only",
                     request->id, again);
        outcome = decision;
      }
    }
    const bool reconciled = outcome.duplicate && maybe_recorded && same(outcome, decision);
    if (outcome.duplicate && !reconciled) {
      ++counters_->duplicates;
      log()->info("order {} seen before: publishing its stored outcome ({})", request->id,
                  outcome.filled ? "filled" : "rejected");
    } else {
      if (reconciled) {
        ++counters_->reconciled;
        log()->info(
            "order {}: the outcome of its write was unknown; found recorded as decided ({}): "
            "reconciled",
            request->id, outcome.filled ? "filled" : "rejected");
      }
      ++(outcome.filled ? counters_->filled : counters_->rejected);
      const std::uint64_t commit = ++counters_->commits;
#if TS_TEST_FAULTS
      if (settings_->fault_crash_after_commit > 0 &&
          commit == static_cast<std::uint64_t>(settings_->fault_crash_after_commit)) {
        log()->error("fault switch: crashing after commit {}, before its event and XACK (exit {})",
                     commit, kFaultExitCode);
        std::_Exit(kFaultExitCode);
      }
#else
      (void)commit;
#endif
    }
    co_await publish(request->id, outcome);
  }

  static std::optional<Request> read_request(const redis::StreamEntry& entry, std::string& why) {
    for (const auto& [name, value] : entry.fields) {
      if (value.find('\0') != std::string::npos) {
        why = "field '" + name + "' contains a NUL byte";
        return std::nullopt;
      }
    }
    const std::string* id = entry.field("client_order_id");
    if (id == nullptr || id->empty()) {
      why = "no client_order_id";
      return std::nullopt;
    }
    auto text = [&](const char* name) {
      const std::string* value = entry.field(name);
      return value == nullptr ? std::string() : *value;
    };
    Request r;
    r.id = *id;
    r.symbol = text("symbol");
    r.side = text("side");
    r.type = text("type");
    r.qty = text("qty");
    r.limit_price = text("limit_price");
    if (const std::string* at = entry.field("submitted_at")) {
      std::int64_t ms = 0;
      const char* end = at->data() + at->size();
      const auto [ptr, ec] = std::from_chars(at->data(), end, ms);
      if (ec == std::errc{} && ptr == end && is_plausible_millis(ms)) {
        r.submitted_at_ms = ms;
      } else {
        r.bad_submitted_at = true;
      }
    }
    return r;
  }

  /// Records the order; returns the error text when the database refused it for good (empty
  /// when recorded). Transient failures are retried inside; a stop rethrows, and so does a
  /// refused privilege of the executor's role (not the order's fault: it stays pending). Sets
  /// `maybe_recorded` when an attempt's outcome was unknown.
  asio::awaitable<std::string> try_record(const Request& request, const Outcome& decision,
                                          Outcome& outcome, bool& maybe_recorded) {
    auto attempt = [&]() -> asio::awaitable<Outcome> {
      try {
        co_return co_await record(request, decision);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::outcome_unknown) maybe_recorded = true;
        throw;
      }
    };
    std::string what = "record order " + request.id;
    std::string refused;
    try {
      outcome = co_await core::retry_until_stopped(attempt, core::Idempotent::yes, db_retry_,
                                                   std::move(what));
    } catch (const std::exception& e) {
      if (classify(std::current_exception()) != ErrorKind::permanent) throw;
      // A refused privilege (42501, class 28) is about the executor's role, not the order: it
      // is never rejected for it. Rethrown with the order's context (the consumer logs it once
      // and counts it), the request stays pending and is delivered again after the grant.
      const auto* error = dynamic_cast<const Error*>(&e);
      if (error != nullptr && core::is_access_denied(*error)) {
        throw Error(*error->server(), error->kind(),
                    "order " + request.id +
                        ": refused: the executor's role lacks a privilege; not rejected, it "
                        "stays pending and is delivered again (grant the privilege)",
                    error->request_state());
      }
      refused = e.what();
      if (refused.empty()) refused = "unknown error";
    }
    co_return refused;
  }

  /// The stored outcome is the decision (same status, reason, price and quantity).
  static bool same(const Outcome& stored, const Outcome& decision) {
    if (stored.filled != decision.filled) return false;
    if (!stored.filled) return stored.reason == decision.reason;
    return compare_decimal(stored.price, decision.price) == 0 &&
           compare_decimal(stored.qty, decision.qty) == 0;
  }

  static Outcome rejected(std::string reason) {
    Outcome o;
    o.reason = std::move(reason);
    return o;
  }

  /// Validation and the price: what the venue does with a request it has not seen.
  asio::awaitable<Outcome> decide(const Request& r) {
    const auto& symbols = settings_->symbols;
    if (std::find(symbols.begin(), symbols.end(), r.symbol) == symbols.end()) {
      co_return rejected("unknown symbol");
    }
    if (r.side != "buy" && r.side != "sell") co_return rejected("invalid side");
    if (r.bad_submitted_at) co_return rejected("invalid submitted_at");
    if (r.type != "market" && r.type != "limit") co_return rejected("invalid type");
    if (!is_positive_decimal(r.qty)) co_return rejected("invalid qty");
    const bool limit = r.type == "limit";
    if (limit && !is_positive_decimal(r.limit_price)) co_return rejected("invalid limit_price");
    const std::string key = last_trade_key(r.symbol);
    auto read = [&]() { return last_price(key, r.symbol); };
    std::string what = "HGET " + key + " " + r.symbol;
    const std::optional<std::string> last = co_await core::retry_until_stopped(
        read, core::Idempotent::yes, redis_retry_, std::move(what));
    if (!last || !is_positive_decimal(*last)) {
      if (last) log()->warn("{}: unusable last price '{}'", key, *last);
      co_return rejected("no market price");
    }
    if (limit) {
      const int cmp = compare_decimal(r.limit_price, *last);
      const bool marketable = r.side == "buy" ? cmp >= 0 : cmp <= 0;
      if (!marketable) co_return rejected("limit not marketable");
    }
    Outcome o;
    o.filled = true;
    o.price = *last;
    o.qty = r.qty;
    co_return o;
  }

  /// The price of `symbol`'s last trade (its field in the bucket's last-trade hash); an
  /// unreadable value is returned as is (the caller finds it unusable).
  asio::awaitable<std::optional<std::string>> last_price(const std::string& key,
                                                         const std::string& symbol) {
    const redis::Reply reply = co_await redis_->command("HGET", key, symbol);
    if (reply.is_nil()) co_return std::nullopt;
    const std::string_view value = reply.as_string();
    if (const auto last = LastTrade::parse(value)) co_return std::string(last->price);
    co_return std::string(value);
  }

  /// One statement: the order (once per client order id) and its fill; or, when the order
  /// exists already (a redelivery, a reused id, or an earlier attempt of ours whose reply was
  /// lost), its stored outcome. Not run under the client's retry: retry_until_stopped is the one
  /// retry layer here.
  asio::awaitable<Outcome> record(const Request& r, const Outcome& decision) {
    const std::optional<std::string> qty =
        is_decimal(r.qty) ? std::optional<std::string>(r.qty) : std::nullopt;
    const std::optional<std::string> limit_price = r.type == "limit" && is_decimal(r.limit_price)
                                                       ? std::optional<std::string>(r.limit_price)
                                                       : std::nullopt;
    const std::optional<std::string> reason =
        decision.filled ? std::nullopt : std::optional<std::string>(decision.reason);
    const std::string status = decision.filled ? "filled" : "rejected";
    const std::optional<std::string> fill_qty =
        decision.filled ? std::optional<std::string>(decision.qty) : std::nullopt;
    const std::optional<std::string> fill_price =
        decision.filled ? std::optional<std::string>(decision.price) : std::nullopt;
    const auto row =
        co_await pg_->query_one(kRecordOrder, r.id, r.symbol, r.side, r.type, qty, limit_price,
                                status, reason, r.submitted_at_ms, fill_qty, fill_price);
    if (!row) throw std::runtime_error("recording order " + r.id + " returned no row");
    if (row->get<std::int64_t>(0) == 1) co_return decision;
    std::optional<std::string> stored_status = row->get<std::optional<std::string>>(1);
    Outcome stored;
    stored.duplicate = true;
    if (stored_status) {
      stored.reason = row->get<std::optional<std::string>>(2).value_or("");
      stored.price = row->get<std::optional<std::string>>(3).value_or("");
      stored.qty = row->get<std::optional<std::string>>(4).value_or("");
    } else {
      // Committed by someone else after this statement's snapshot was taken.
      const auto again = co_await pg_->query_one(kStoredOrder, r.id);
      if (!again) throw std::runtime_error("order " + r.id + " conflicted but cannot be read");
      stored_status = again->get<std::string>(0);
      stored.reason = again->get<std::optional<std::string>>(1).value_or("");
      stored.price = again->get<std::optional<std::string>>(2).value_or("");
      stored.qty = again->get<std::optional<std::string>>(3).value_or("");
    }
    stored.filled = *stored_status == "filled";
    co_return stored;
  }

  asio::awaitable<void> publish(const std::string& id, const Outcome& o) {
    std::vector<redis::FieldView> fields;
    fields.emplace_back("client_order_id", id);
    fields.emplace_back("status", o.filled ? "filled" : "rejected");
    if (o.filled) {
      fields.emplace_back("price", o.price);
      fields.emplace_back("qty", o.qty);
    } else {
      fields.emplace_back("reason", o.reason);
    }
    // At-least-once: a retry after a lost reply may add the event twice (keyed by id).
    auto add = [&]() { return redis_->xadd(kOrderEvents, fields); };
    std::string what = "XADD " + std::string(kOrderEvents);
    (void)co_await core::retry_until_stopped(add, core::Idempotent::yes, redis_retry_,
                                             std::move(what));
    ++counters_->events;
  }

  pg::PostgresClient* pg_;
  redis::RedisClient* redis_;
  const ExecutorSettings* settings_;
  Counters* counters_;
  core::UntilStopped db_retry_;
  core::UntilStopped redis_retry_;
  core::Histogram* handle_time_ = nullptr;
  HandlerCalls calls_;
};

}  // namespace

bool is_positive_decimal(std::string_view text) noexcept {
  if (!is_decimal(text)) return false;
  return std::any_of(text.begin(), text.end(), [](char c) { return c >= '1' && c <= '9'; });
}

int compare_decimal(std::string_view a, std::string_view b) noexcept {
  auto split = [](std::string_view s) {
    const std::size_t dot = s.find('.');
    std::string_view whole = s.substr(0, dot);
    std::string_view fraction =
        dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
    while (!whole.empty() && whole.front() == '0') whole.remove_prefix(1);
    return std::pair{whole, fraction};
  };
  const auto [aw, af] = split(a);
  const auto [bw, bf] = split(b);
  if (aw.size() != bw.size()) return aw.size() < bw.size() ? -1 : 1;
  if (const int c = aw.compare(bw); c != 0) return c < 0 ? -1 : 1;
  const std::size_t n = std::max(af.size(), bf.size());
  for (std::size_t i = 0; i < n; ++i) {
    const char x = i < af.size() ? af[i] : '0';
    const char y = i < bf.size() ? bf[i] : '0';
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}

void add_executor_settings(core::ConfigLoader& loader, ExecutorSettings& s) {
  add_consumer_service_settings(
      loader, s,
      {.consumer = "consumer name in the group 'executor' (default: executor-<host>-<pid>)",
       .batch = "requests per read",
       .items = "requests",
       .max_deliveries = "deliveries of a request before it goes to orders:requests:dead",
       .drain_timeout = "after SIGTERM, time to finish the current requests before they are "
                        "cancelled"});
  loader.add(s.symbols, {"symbols", "symbols this venue trades (others are rejected)"});
#if TS_TEST_FAULTS  // test builds only (CMake option TS_TEST_FAULTS): absent from a release
  loader.add(s.fault_crash_after_commit, {"fault_crash_after_commit",
                                          "TEST ONLY: exit 137 after the Nth new order is "
                                          "committed, before its event and XACK (0: off)"});
#endif
}

lifecycle::ServiceOptions service_options(const ExecutorSettings& s) {
  return consumer_service_options(s, "ts-executor");
}

void finish_settings(ExecutorSettings& s) {
  check_symbols(s.symbols);
#if TS_TEST_FAULTS
  if (s.fault_crash_after_commit < 0) {
    throw core::ConfigError("--fault-crash-after-commit must be >= 0");
  }
#endif
  finish_consumer_service_settings(s, "executor", "ts-executor");
}

int run_executor(const ExecutorSettings& settings) {
  Counters counters;
  ClientSnapshot clients;
  std::optional<core::StopSignal> stop;  // on the service's executor
  core::DefaultRandom random;
  std::optional<Venue> venue;
  std::unique_ptr<redis::StreamConsumer> consumer;
  std::optional<ExecutorMetrics> metrics;
  std::optional<redis::StreamConsumerMetrics> consumer_metrics;

  const lifecycle::ServiceOptions options = service_options(settings);
  const int code =
      lifecycle::run_daemon(options, [&](lifecycle::ServiceContext& ctx) -> asio::awaitable<void> {
        stop.emplace(ctx.executor());
        ctx.on_stop([&] {
          stop->request_stop();
          if (consumer) consumer->stop();
        });
        const ServiceClients opened = co_await open_clients(ctx, settings, clients);
        auto* pg = opened.pg;
        auto* redis = opened.redis;
        // /metrics and /readyz (docs/operations.md): the clients, the consumer, our own.
        BodyHooks hooks(ctx);
        watch_clients(hooks, pg, redis);
        metrics.emplace(ctx.metrics());
        consumer_metrics.emplace(ctx.metrics(), kExecutorGroup);
        hooks.add_sampler([&] {
          metrics->sample(counters);
          if (consumer) consumer_metrics->sample(consumer->stats());
        });
        auto consumer_readiness = std::make_shared<ConsumerReadiness>();
        hooks.add_readiness_check("consumer", [&consumer, consumer_readiness]() -> std::string {
          return consumer ? consumer_readiness->check(consumer->stats()) : std::string();
        });
        auto write_path = std::make_shared<ConsumerWritePath>(settings.admin.check_interval);
        hooks.add_readiness_check(
            "write_path", [&consumer, &venue, &counters, write_path]() -> std::string {
              if (!consumer || !venue) return {};
              return write_path->check(std::span<const HandlerCalls>(&venue->calls(), 1),
                                       venue->retries(), counters.events, consumer->stats(),
                                       std::chrono::steady_clock::now());
            });
        const bool schema = co_await pg->query_value<bool>(kCheckSchema);
        if (!schema) {
          throw std::runtime_error(
              "the database has no orders or fills table: apply the schema first (tsctl "
              "migrate)");
        }
        core::UntilStopped db_retry;
        db_retry.stop = &*stop;
        db_retry.random = &random;
        db_retry.retries = &counters.db_retries;
        db_retry.log = log();
        core::UntilStopped redis_retry = db_retry;
        redis_retry.retries = &counters.redis_retries;
        venue.emplace(*pg, *redis, settings, counters, db_retry, redis_retry);
        venue->set_histogram(&metrics->handle);

        redis::StreamConsumerConfig config;
        config.stream = std::string(kOrderRequests);
        config.group = std::string(kExecutorGroup);
        config.consumer = settings.consumer;
        config.batch = settings.batch;
        config.claim_min_idle = settings.claim_min_idle;
        config.claim_interval = settings.claim_interval;
        config.max_deliveries = settings.max_deliveries;
        consumer = std::make_unique<redis::StreamConsumer>(
            *redis, config,
            redis::StreamConsumer::Handler(
                [&venue](const redis::StreamEntry& entry) { return venue->handle(entry); }));
        if (stop->stop_requested()) co_return;
        ctx.health().ready = true;
        log()->info("executing {} as consumer {} of group {}", kOrderRequests, settings.consumer,
                    kExecutorGroup);
        // Beside the probe of ts_stream_consumer_pending / _lag (once a second), which ends
        // when the consumer does, however it ends.
        core::StopSignal probe_stop(ctx.executor());
        auto consume = [&]() -> asio::awaitable<void> {
          std::exception_ptr failure;
          try {
            co_await consumer->run();
          } catch (...) {
            failure = std::current_exception();
          }
          probe_stop.request_stop();
          if (failure) std::rethrow_exception(failure);
        };
        std::vector<std::string> probed{std::string(kOrderRequests)};
        auto probe = asio::co_spawn(
            ctx.executor(),
            probe_group(*redis, std::move(probed), std::string(kExecutorGroup), *consumer_metrics,
                        ctx.metrics(), probe_stop, kGroupProbeInterval),
            asio::deferred);
        auto run = asio::co_spawn(ctx.executor(), consume(), asio::deferred);
        auto [order, run_error, probe_error] =
            co_await asio::experimental::make_parallel_group(std::move(run), std::move(probe))
                .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
        (void)order;
        if (run_error) std::rethrow_exception(run_error);
        if (probe_error) std::rethrow_exception(probe_error);
      });

  const redis::StreamConsumerStats stats =
      consumer ? consumer->stats() : redis::StreamConsumerStats{};
  log()->info(
      "stopped (exit {}): {} filled, {} rejected, {} duplicates, {} reconciled, {} events, {} "
      "malformed, {} handler errors, {} dead-lettered",
      code, counters.filled, counters.rejected, counters.duplicates, counters.reconciled,
      counters.events, counters.malformed, stats.handler_errors, stats.dead_lettered);
  if (settings.summary_file.empty()) return code;
  Summary summary;
  summary.add("filled", counters.filled)
      .add("rejected", counters.rejected)
      .add("duplicates", counters.duplicates)
      .add("reconciled", counters.reconciled)
      .add("events", counters.events)
      .add("malformed", counters.malformed)
      .add("unprocessable", counters.unprocessable)
      .add("unrecorded", counters.unrecorded);
  add_consumer_stats(summary, stats);
  summary.add("db_retries", counters.db_retries).add("redis_retries", counters.redis_retries);
  return write_summary(summary, clients, code, settings.summary_file, *log());
}

}  // namespace trading_shared::services::executor

#include "receiver/receiver.hpp"

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/retry.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/http/metrics.hpp>
#include <trading_shared/redis/metrics.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/ws/metrics.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/keys.hpp"
#include "common/service_metrics.hpp"
#include "common/settings.hpp"
#include "common/stream_trim.hpp"
#include "common/summary.hpp"
#include "receiver/receiver_metrics.hpp"
#include "receiver/trade_parser.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <deque>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace trading_shared::services {

namespace asio = boost::asio;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("receiver");
  return logger;
}

/// A number as decimal text, held inline.
struct Digits {
  std::array<char, 24> bytes{};
  std::size_t size = 0;
  void set(std::int64_t value) noexcept {
    const auto r = std::to_chars(bytes.data(), bytes.data() + bytes.size(), value);
    size = static_cast<std::size_t>(r.ptr - bytes.data());
  }
  std::string_view view() const noexcept { return {bytes.data(), size}; }
};

/// One trade ready for XADD: the numbers rendered, views into the trade.
struct Row {
  Trade trade;
  Digits id, trade_time, event_time, received;
  std::size_t symbol = 0;  // index of its SymbolState (per-symbol counters)
};

using Clock = std::chrono::steady_clock;
/// How long the loop waits for the feed while backfilled trades may be coming.
constexpr std::chrono::milliseconds kBackfillPoll{20};

/// Whether writes to one Redis key succeed. While its commands fail with an error reply
/// (WRONGTYPE, OOM, READONLY, NOPERM), its work is kept, in order, and retried with backoff;
/// the other keys' writes go on (F45).
struct KeyHealth {
  KeyHealth(const core::BackoffConfig& config, core::RandomSource& random)
      : backoff(config, random) {}
  core::Backoff backoff;
  bool failing = false;
  Clock::time_point retry_at{};
  std::string error;
  bool due(Clock::time_point now) const noexcept { return !failing || now >= retry_at; }
};

/// One bucket: its trade stream and its last-trade hash, each written (and failing) on its own.
struct BucketState {
  BucketState(std::size_t bucket, const core::BackoffConfig& config, core::RandomSource& random)
      : stream(bucket_stream(bucket)),
        last_key(bucket_last_key(bucket)),
        health(config, random),
        last_health(config, random) {}
  std::string stream;
  std::string last_key;
  std::vector<std::size_t> rows;    // this batch's rows (indexes into the batch)
  std::deque<Row> backlog;          // rows kept while the stream fails, oldest first
  std::size_t sent_backlog = 0;     // backlog rows in the request being sent
  std::size_t sent_rows = 0;        // batch rows in the request being sent
  std::vector<std::size_t> priced;  // symbols whose last trade is to be written
  bool last_sent = false;           // their HSET is in the request being sent
  bool written = false;             // written by this receiver: trimmed with --stream-maxlen
  KeyHealth health;                 // of the stream
  KeyHealth last_health;            // of the last-trade hash
};

struct SymbolState {
  SymbolState(std::string symbol, std::size_t bucket_index, core::MetricsRegistry& registry)
      : name(std::move(symbol)), bucket(bucket_index), metrics(registry, name) {}
  std::string name;
  std::size_t bucket;
  SymbolMetrics metrics;
  Row last;                   // the newest trade: its price is the one to write
  bool last_pending = false;  // `last` not written yet (listed in its bucket's `priced`)
  std::string value;          // "<price> <id> <time>": its field's value, rebuilt in place
};

using Counters = ReceiverCounters;

}  // namespace

namespace {

/// The receiver's state across batches: symbols, streams, readiness (F45), trimming (F53).
class Writer {
 public:
  Writer(lifecycle::ServiceContext& ctx, const ReceiverConfig& config, redis::RedisClient& redis,
         Counters& n)
      : ctx_(&ctx), config_(&config), redis_(&redis), n_(&n), rows_(2 * config.batch) {
    buckets_.reserve(kTradeBuckets);
    for (std::size_t b = 0; b < kTradeBuckets; ++b) {
      buckets_.emplace_back(b, config.write_backoff, random_);
    }
    symbols_.reserve(config.symbols.size());
    for (const auto& name : config.symbols) {
      symbols_.emplace_back(name, trade_bucket(name), ctx.metrics());
    }
    // Views of the names in symbols_, which never grows again: a lookup per trade allocates
    // nothing and does not depend on the number of symbols (F72).
    index_.reserve(symbols_.size());
    for (std::size_t i = 0; i < symbols_.size(); ++i) index_.emplace(symbols_[i].name, i);
    if (config.stream_maxlen > 0) trim_.emplace(*redis_, config.stream_maxlen);
  }

  /// The slot for the next parsed trade.
  Row& next_row() { return rows_[used_]; }
  /// The symbol of the trade in next_row(), or null when it is not one of ours.
  SymbolState* find(std::string_view symbol) {
    const auto it = index_.find(symbol);
    return it == index_.end() ? nullptr : &symbols_[it->second];
  }
  /// Takes next_row() (parsed, of `symbol`) into the batch.
  void take(SymbolState& symbol) {
    BucketState& b = buckets_[symbol.bucket];
    rows_[used_].symbol = static_cast<std::size_t>(&symbol - symbols_.data());
    b.rows.push_back(used_);
    symbol.last = rows_[used_];
    if (!symbol.last_pending) {
      symbol.last_pending = true;
      b.priced.push_back(static_cast<std::size_t>(&symbol - symbols_.data()));
    }
    ++used_;
  }
  /// Takes next_row(), a backfilled trade: older than the symbol's last, whose price stays.
  void take_backfilled(SymbolState& symbol) {
    rows_[used_].symbol = static_cast<std::size_t>(&symbol - symbols_.data());
    symbol.metrics.backfilled.add();
    buckets_[symbol.bucket].rows.push_back(used_++);
  }
  std::size_t taken() const noexcept { return used_; }
  /// Work left from earlier batches (a failing key's trades or last price).
  bool holding() const noexcept { return failing_ > 0; }
  /// How long the next receive may wait before work of its own is due (a held key's retry,
  /// a trim pass); nullopt when nothing is due without new trades.
  std::optional<std::chrono::milliseconds> wait_bound(Clock::time_point now) const {
    Clock::time_point due = Clock::time_point::max();
    for (const auto& b : buckets_) {
      if (b.health.failing) due = std::min(due, b.health.retry_at);
      if (b.last_health.failing) due = std::min(due, b.last_health.retry_at);
    }
    if (trim_) due = std::min(due, trim_->next());
    if (due == Clock::time_point::max()) return std::nullopt;
    if (due <= now) return std::chrono::milliseconds{0};
    return std::chrono::ceil<std::chrono::milliseconds>(due - now);
  }
  /// Keys whose writes fail now (their work held and retried).
  std::size_t failing_keys() const noexcept { return failing_; }
  /// Whether a write is in progress (retried while Redis is away), and since when.
  bool writing() const noexcept { return writing_; }
  Clock::time_point write_started() const noexcept { return write_started_; }
  std::uint64_t held_trades() const noexcept {
    std::uint64_t held = 0;
    for (const auto& b : buckets_) held += b.backlog.size();
    return held;
  }

  /// Writes the batch (and whatever failing keys hold, when their retry is due) in one
  /// request. A transport failure (connection lost, timeout, breaker open) affects every key:
  /// the request is sent again after a backoff until it succeeds or the service stops. An
  /// error reply affects its key only: its trades are kept and retried with backoff while
  /// the others are written (F45).
  asio::awaitable<void> write() {
    const auto now = Clock::now();
    writing_ = true;
    write_started_ = now;
    struct Done {
      bool* writing;
      ~Done() { *writing = false; }
    } done{&writing_};
    // A failing stream not due yet keeps the new rows behind the ones it holds.
    for (auto& b : buckets_) {
      if (b.rows.empty() || b.health.due(now)) continue;
      for (const std::size_t index : b.rows) hold(b, rows_[index]);
      b.rows.clear();
    }
    bool sent = false;
    // Each attempt rebuilds the request from what is still unwritten.
    auto attempt = [&]() -> asio::awaitable<void> {
      build_request(now);
      if (request_.empty()) co_return;
      sent = true;
      const std::vector<redis::Reply> replies = co_await redis_->pipeline(request_);
      take_replies(replies);
    };
    // Every transport error is retried, permanent ones too: what was received is never
    // dropped; only the drain's cancellation ends it.
    std::string what = "writing trades";
    co_await core::retry_until_stopped(attempt, core::Idempotent::yes, write_retry_,
                                       std::move(what));
    used_ = 0;
    if (sent) ++n_->batches;
    if (trim_) co_await trim_->maybe_trim(buckets_, *n_);
  }

 private:
  /// Keeps `row` in the backlog of a failing stream, within --stall-buffer (the oldest go
  /// first beyond it: counted and logged, never silently).
  void hold(BucketState& b, const Row& row) {
    if (b.backlog.size() >= config_->stall_buffer) {
      b.backlog.erase(b.backlog.begin());
      ++n_->stalled_dropped;
      if (n_->stalled_dropped <= 10 || n_->stalled_dropped % 1000 == 0) {
        log()->error(
            "{}: {} trade(s) held while the stream fails (--stall-buffer): dropping the oldest "
            "(#{} dropped): {}",
            b.stream, b.backlog.size() + 1, n_->stalled_dropped, b.health.error);
      }
    }
    b.backlog.push_back(row);
  }

  static void push_xadd(redis::Request& request, const std::string& stream,
                        std::span<const std::string_view> trim, const Row& r) {
    const std::array<std::string_view, 16> fields{"s", r.trade.symbol.view(),
                                                  "t", r.id.view(),
                                                  "p", r.trade.price.view(),
                                                  "q", r.trade.qty.view(),
                                                  "T", r.trade_time.view(),
                                                  "E", r.event_time.view(),
                                                  "m", r.trade.buyer_is_maker ? "1" : "0",
                                                  "r", r.received.view()};
    request.push("XADD", stream, trim, "*", fields);
  }

  /// Every stream's due trades (held ones first, in order) and every bucket's due last trades.
  /// Redis runs the commands in order: a symbol's last trade is set after its trades.
  void build_request(Clock::time_point now) {
    request_.clear();
    for (auto& b : buckets_) {
      b.sent_backlog = 0;
      b.sent_rows = 0;
      if (!b.health.due(now)) continue;
      for (const Row& row : b.backlog) push_xadd(request_, b.stream, {}, row);
      for (const std::size_t index : b.rows) push_xadd(request_, b.stream, {}, rows_[index]);
      b.sent_backlog = b.backlog.size();
      b.sent_rows = b.rows.size();
    }
    // One HSET per bucket for the last trades of all its symbols in the batch: the number of
    // commands does not grow with the number of symbols (F72).
    for (auto& b : buckets_) {
      b.last_sent = !b.priced.empty() && b.last_health.due(now);
      if (!b.last_sent) continue;
      fields_.clear();
      for (const std::size_t index : b.priced) {
        SymbolState& s = symbols_[index];
        s.value.assign(s.last.trade.price.view());
        s.value += ' ';
        s.value += s.last.id.view();
        s.value += ' ';
        s.value += s.last.trade_time.view();
        fields_.push_back(s.name);
        fields_.push_back(s.value);
      }
      request_.push("HSET", b.last_key, fields_);
    }
  }

  /// Matches the replies to what was sent: what succeeded is done; a key whose command failed
  /// keeps its work (in order) and is retried after a backoff.
  void take_replies(const std::vector<redis::Reply>& replies) {
    std::size_t next = 0;
    const auto now = Clock::now();
    for (auto& b : buckets_) {
      if (b.sent_backlog + b.sent_rows == 0) continue;
      const redis::Reply* error = nullptr;
      std::size_t ok = 0;
      for (std::size_t i = 0; i < b.sent_backlog + b.sent_rows; ++i) {
        const redis::Reply& reply = replies.at(next++);
        const Row& row = i < b.sent_backlog ? b.backlog[i] : rows_[b.rows[i - b.sent_backlog]];
        if (reply.is_error()) {
          // Rare: the failed rows are kept, in order, in a scratch queue reused across batches
          // (a deque allocates when it is made: not one per batch on the normal path).
          if (error == nullptr) {
            error = &reply;
            kept_.clear();
          }
          kept_.push_back(row);
        } else {
          ++ok;
          symbols_[row.symbol].metrics.written.add();
        }
      }
      n_->written += ok;
      if (error != nullptr) {
        std::swap(b.backlog, kept_);  // what failed is all the bucket holds now
      } else if (b.sent_backlog > 0) {
        b.backlog.clear();
      }
      b.rows.clear();
      if (ok > 0) b.written = true;
      settle(b.health, b.stream, error, now);
      if (b.backlog.size() > config_->stall_buffer) {
        const std::size_t excess = b.backlog.size() - config_->stall_buffer;
        b.backlog.erase(b.backlog.begin(), b.backlog.begin() + static_cast<std::ptrdiff_t>(excess));
        n_->stalled_dropped += excess;
        log()->error("{}: {} held trade(s) over --stall-buffer dropped ({} in all)", b.stream,
                     excess, n_->stalled_dropped);
      }
    }
    for (auto& b : buckets_) {
      if (!b.last_sent) continue;
      const redis::Reply& reply = replies.at(next++);
      const redis::Reply* error = reply.is_error() ? &reply : nullptr;
      if (error == nullptr) {
        for (const std::size_t index : b.priced) symbols_[index].last_pending = false;
        b.priced.clear();
      }
      settle(b.last_health, b.last_key, error, now);
    }
  }

  /// Records the outcome of a key's commands; readiness follows the number of failing keys.
  void settle(KeyHealth& health, const std::string& key, const redis::Reply* error,
              Clock::time_point now) {
    if (error == nullptr) {
      if (!health.failing) return;
      health.failing = false;
      health.backoff.reset();
      log()->info("{}: written again after failing ({})", key, health.error);
      if (--failing_ == 0) {
        ctx_->health().ready = true;
        log()->info("ready again: every key is written");
      }
      return;
    }
    const auto delay = health.backoff.next();
    health.retry_at = now + delay;
    std::string text(error->view().error_message());
    if (!health.failing) {
      health.failing = true;
      ++n_->stalls;
      const bool first = failing_++ == 0;
      ctx_->health().ready = false;
      // Needs an operator (a key of the wrong type, out of memory, no permission): an error.
      log()->error(
          "{}: writes fail: {}; its trades are kept (up to --stall-buffer {}) and retried, the "
          "other keys go on{}",
          key, text, config_->stall_buffer, first ? "; not ready until it recovers" : "");
    } else if (text != health.error) {
      log()->error("{}: writes still fail, now: {}", key, text);
    }
    health.error = std::move(text);
  }

  /// --stream-maxlen: about once a second, a stream written since and longer than the limit
  /// is trimmed, never past what a consumer group still needs (F53): entries of no group's
  /// interest go; a lagging group holds the rest (counted, logged).
  class Trimmer {
   public:
    Trimmer(redis::RedisClient& redis, std::uint64_t maxlen) : redis_(&redis), maxlen_(maxlen) {}

    Clock::time_point next() const noexcept { return next_; }

    /// Once a second: every stream this receiver wrote to (the group's progress, not our
    /// writes, is what lets a stream shrink).
    asio::awaitable<void> maybe_trim(std::vector<BucketState>& buckets, Counters& n) {
      const auto now = Clock::now();
      if (now < next_) co_return;
      next_ = now + std::chrono::seconds(1);
      for (auto& b : buckets) {
        if (!b.written) continue;
        try {
          co_await trim(b.stream, n);
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::cancelled) throw;
          ++failures_;
          if (failures_ <= 10 || failures_ % 100 == 0) {
            log()->warn("{}: trimming (--stream-maxlen) failed (#{}; tried again in a second): {}",
                        b.stream, failures_, e.what());
          }
        }
      }
    }

   private:
    asio::awaitable<void> trim(const std::string& stream, Counters& n) {
      const std::int64_t length = co_await redis_->xlen(stream);
      if (length <= static_cast<std::int64_t>(maxlen_)) co_return;
      const auto floor = co_await trim_floor(*redis_, stream);
      // No group reads it: a plain length cap. Otherwise everything below the oldest entry a
      // group still needs (`~`: whole macro nodes only, never past the floor).
      const auto trim = floor ? redis::TrimOptions::min_id(floor->id.text())
                              : redis::TrimOptions::max_length(maxlen_);
      const std::int64_t removed = co_await redis_->xtrim(stream, trim);
      n.trimmed += static_cast<std::uint64_t>(std::max<std::int64_t>(removed, 0));
      if (floor && length - removed > static_cast<std::int64_t>(2 * maxlen_)) {
        ++n.trims_held_back;
        const auto now = Clock::now();
        if (now >= next_warning_) {
          next_warning_ = now + std::chrono::seconds(60);
          log()->warn(
              "{} holds {} entries, more than --stream-maxlen {}: group {} still needs them "
              "from {} on ({} read and not acknowledged); they are kept",
              stream, length - removed, maxlen_, floor->group, floor->id.text(), floor->pending);
        }
      }
    }

    redis::RedisClient* redis_;
    std::uint64_t maxlen_;
    Clock::time_point next_{};
    Clock::time_point next_warning_{};
    std::uint64_t failures_ = 0;
  };

  lifecycle::ServiceContext* ctx_;
  const ReceiverConfig* config_;
  redis::RedisClient* redis_;
  Counters* n_;
  core::DefaultRandom random_;
  std::vector<Row> rows_;
  std::size_t used_ = 0;
  std::vector<BucketState> buckets_;
  std::vector<SymbolState> symbols_;
  std::unordered_map<std::string_view, std::size_t> index_;
  std::vector<std::string_view> fields_;  // a bucket's HSET arguments, reused
  std::deque<Row> kept_;                  // a failing bucket's rows, rebuilt per reply (reused)
  std::size_t failing_ = 0;               // keys failing now
  bool writing_ = false;
  Clock::time_point write_started_{};
  redis::Request request_;
  core::UntilStopped write_retry_{.stop = nullptr,
                                  .backoff = config_->write_backoff,
                                  .random = &random_,
                                  .retries = &n_->write_retries,
                                  .log = log(),
                                  .warn_first = 10,
                                  .retry_permanent = true};
  std::optional<Trimmer> trim_;
};

}  // namespace

http::HttpClientConfig rest_client_config(const ReceiverConfig& config) {
  http::HttpClientConfig rest{.base_url = config.backfill.rest_url,
                              .request_timeout = config.backfill.rest_timeout};
  // The feed's TLS settings serve the REST endpoint too (an https:// URL; none for http://).
  if (config.backfill.rest_url.starts_with("https://")) rest.tls = config.feed.tls;
  rest.tls.enabled = false;  // follows the scheme
  return rest;
}

asio::awaitable<void> run_receiver(lifecycle::ServiceContext& ctx, const ReceiverConfig& config) {
  auto executor = ctx.executor();
  auto* redis = co_await ctx.scope().open<redis::RedisClient>("redis", executor, config.redis);
  // A named local, not a temporary in the co_await expression (GCC 12 frees such a temporary's
  // buffers twice).
  const FeedSetConfig feed_config{config.feed, config.symbols, config.feed_limits};
  auto* feed = co_await ctx.scope().open<FeedSet>("feed", executor, feed_config);
  http::HttpClient* rest = nullptr;
  if (config.backfill.enabled) {
    const http::HttpClientConfig rest_config = rest_client_config(config);
    rest = co_await ctx.scope().open<http::HttpClient>("rest", executor, rest_config);
  }

  // Counters live in shared state: the summary runs when the scope closes, after this
  // coroutine's frame is gone (and before the clients close: reverse order).
  struct State {
    Counters n;
    BackfillCounters b;
    ws::SequenceTracker sequence;
  };
  auto state = std::make_shared<State>();
  Counters& n = state->n;
  ws::SequenceTracker& sequence = state->sequence;
  std::uint64_t last_connection = 0;

  ctx.scope().defer(
      "summary",
      [state, feed, redis, summary_file = config.summary_file]() -> asio::awaitable<void> {
        const Counters& c = state->n;
        const BackfillCounters& b = state->b;
        const ws::SequenceTracker& seq = state->sequence;
        const auto fs = feed->stats();
        const auto fl = feed->limits();
        const auto rs = redis->stats();
        Summary s;
        add_receiver_summary(s, c, b, seq, fs, fl, rs);
        log()->info("summary: {}", s.json());
        if (!summary_file.empty()) s.write_file(summary_file);
        co_return;
      });

  // A graceful stop closes the feed: what it already received is still handed out and
  // written, then receiving ends and the loop ends.
  ctx.on_stop([feed, executor] {
    asio::co_spawn(executor, feed->close(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // close() never throws
    });
  });
  ctx.health().ready = true;

  simdjson::ondemand::parser parser;
  std::vector<ws::Message> messages;
  Writer writer(ctx, config, *redis, n);
  // /metrics and /readyz (docs/operations.md): the clients, the feed, the write path.
  BodyHooks hooks(ctx);
  watch_clients(hooks, nullptr, redis);
  ReceiverMetrics metrics(ctx.metrics());
  ws::WebSocketMetrics feed_metrics(ctx.metrics(), "feed");
  std::optional<http::HttpMetrics> rest_metrics;
  if (rest != nullptr) rest_metrics.emplace(ctx.metrics(), "rest");
  hooks.add_sampler([&, feed, rest] {
    metrics.sample(n, writer.held_trades(), sequence, feed->limits());
    feed_metrics.sample(feed->stats());
    if (rest != nullptr) rest_metrics->sample(rest->stats());
  });
  hooks.add_readiness_check("feed", [feed]() -> std::string {
    return feed->stats().connected ? std::string() : std::string("feed not connected");
  });
  WritePathReadiness write_path(config.check_interval);
  hooks.add_readiness_check("write_path", [&] {
    return write_path.check(writer.failing_keys(), writer.writing(), writer.write_started(),
                            Clock::now());
  });
  Backfill backfill(executor, config.backfill, config.symbols, rest, state->b);
  if (backfill.enabled()) co_await load_tape(*redis, backfill, config.symbols);
  backfill.start();
  // Trades still held for a failing key when the service stops are counted and logged.
  struct Unwritten {
    Writer* writer;
    Counters* n;
    ~Unwritten() {
      n->unwritten = writer->held_trades();
      if (n->unwritten > 0) {
        log()->error("{} trade(s) could not be written (their stream kept failing) and are lost",
                     n->unwritten);
      }
    }
  } unwritten{&writer, &n};

  bool feed_open = true;
  asio::steady_timer wait(executor);
  while (feed_open || writer.holding()) {
    std::size_t count = 0;
    auto bound = writer.wait_bound(Clock::now());
    if (backfill.busy()) bound = std::min(bound.value_or(kBackfillPoll), kBackfillPoll);
    if (!feed_open) {
      // The feed is closed; a failing key still holds trades: retry them when due, until
      // they are written or the stop's drain budget runs out.
      wait.expires_after(bound.value_or(std::chrono::milliseconds{100}));
      co_await wait.async_wait(asio::use_awaitable);
    } else if (bound) {
      const auto got = co_await feed->receive_batch_for(messages, config.batch, *bound);
      if (!got) {
        feed_open = false;
      } else {
        count = *got;
      }
    } else {
      count = co_await feed->receive_batch(messages, config.batch);
      if (count == 0) feed_open = false;  // closed (stop) and everything received is handled
    }
    n.received += count;
    const auto batch_start = Clock::now();
    std::int64_t oldest_event_ms = std::numeric_limits<std::int64_t>::max();
    const std::int64_t now_us = unix_micros();
    for (std::size_t i = 0; i < count; ++i) {
      ws::Message& m = messages[i];
      if (m.connection > last_connection) {  // FeedSet: each new connection a higher number
        if (last_connection != 0)
          log()->info("feed connection {} started: trade ids may have a gap", m.connection);
        last_connection = m.connection;
      }
      Row& row = writer.next_row();
      const char* error = "";
      const ParseOutcome outcome = parse_trade(parser, m.data, row.trade, error);
      if (outcome == ParseOutcome::control) {
        ++n.control;
        if (m.data.find("\"error\"") != std::string::npos) {
          // e.g. a rejected SUBSCRIBE: the service would be up and receive nothing.
          log()->error("the feed refused a request: {:.300}", m.data);
        } else {
          log()->debug("feed control message: {}", m.data);
        }
        continue;
      }
      if (outcome == ParseOutcome::malformed) {
        ++n.malformed;
        if (n.malformed <= 10 || n.malformed % 1000 == 0) {
          log()->warn("malformed feed message #{} skipped ({}): {:.200}", n.malformed, error,
                      m.data);
        }
        continue;
      }
      const std::string_view symbol = row.trade.symbol.view();
      SymbolState* target = writer.find(symbol);
      if (target == nullptr) {
        ++n.unknown_symbol;
        if (n.unknown_symbol <= 10) log()->warn("trade for unsubscribed symbol {} skipped", symbol);
        continue;
      }
      // The tracker reports (logged, counted: gaps, duplicates, out_of_order, id_resets,
      // outliers); the backfill's merge decides what is taken (receiver/backfill.hpp).
      const auto seen = sequence.observe(symbol, row.trade.trade_id, m.connection);
      report_sequence(sequence, seen, symbol, row.trade.trade_id, m.connection, n.id_jumps,
                      backfill.enabled());
      ++n.trades;
      target->metrics.trades.add();
      if (seen.kind == ws::SequenceTracker::Result::gap) {
        target->metrics.gaps.add();
        target->metrics.missing.add(seen.missing);
      }
      if (!backfill.on_live(symbol, row.trade.trade_id, seen, m.connection)) continue;
      oldest_event_ms = std::min(oldest_event_ms, row.trade.event_time);
      row.id.set(row.trade.trade_id);
      row.trade_time.set(row.trade.trade_time);
      row.event_time.set(row.trade.event_time);
      row.received.set(now_us);
      writer.take(*target);
    }
    // Backfilled trades: the same rows, streams and fields (event time = trade time).
    backfill.take(config.batch, [&](const Trade& trade) {
      Row& row = writer.next_row();
      row.trade = trade;
      row.id.set(trade.trade_id);
      row.trade_time.set(trade.trade_time);
      row.event_time.set(trade.event_time);
      row.received.set(now_us);
      writer.take_backfilled(*writer.find(trade.symbol.view()));
    });
    co_await writer.write();
    if (count > 0) {
      metrics.batch_size.observe(static_cast<double>(count));
      metrics.feed_to_redis.observe(Clock::now() - batch_start);
      if (oldest_event_ms != std::numeric_limits<std::int64_t>::max()) {
        metrics.event_to_redis.observe(static_cast<double>(unix_micros() - oldest_event_ms * 1000) /
                                       1e6);
      }
    }
    backfill.written();
    // "Complete through" only once nothing is held back for a failing key (F45).
    if (!writer.holding()) co_await persist_tape(*redis, backfill, state->b);
  }
  co_await backfill.stop();
  ctx.health().ready = false;
  log()->info("feed closed; {} trade(s) written", n.written);
}

}  // namespace trading_shared::services

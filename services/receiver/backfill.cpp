#include "receiver/backfill.hpp"

#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/http/http_status.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/ws/websocket_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/keys.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

namespace trading_shared::services {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using Verdict = ws::SequenceTracker::Result;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("backfill");
  return logger;
}

/// Fetched chunks held for the writer before the workers wait (bounds memory: ~1000 trades
/// each).
constexpr std::size_t kMaxReady = 8;
/// Ranges stored in a symbol's gaps field at most (beyond them it claims a lower high-water
/// mark: a restart fetches a few written ids again rather than skip any).
constexpr std::size_t kMaxStoredGaps = 1000;

struct Tape {
  explicit Tape(std::string name) : symbol(std::move(name)) {}
  std::string symbol;
  std::int64_t hwm = -1;             // highest id taken; -1: none yet
  std::uint64_t hwm_connection = 0;  // the feed connection that delivered it
  std::optional<std::int64_t> stored;
  std::optional<std::int64_t> stored_through;  // the stored gaps: highest id written
  std::vector<std::pair<std::int64_t, std::int64_t>> stored_missing;  // and ranges not written
  std::int64_t persisted = -1;
  std::int64_t persisted_hwm = -1;
  bool gaps_changed = false;                     // `missing` changed since the last tape update
  std::map<std::int64_t, std::int64_t> missing;  // lo -> hi: not written yet
  std::optional<std::pair<std::int64_t, std::int64_t>> pending;  // the last jump, unconfirmed
  std::uint64_t epoch = 0;  // +1 per id reset: older ranges and chunks are void
  std::int64_t complete_through() const noexcept {
    if (hwm < 0) return -1;
    return missing.empty() ? hwm : std::min(hwm, missing.begin()->first - 1);
  }
};

struct Range {
  std::size_t tape;
  std::uint64_t epoch;
  std::int64_t lo;
  std::int64_t hi;
};

struct Chunk {
  std::size_t tape;
  std::uint64_t epoch;
  std::int64_t from;     // the range's lowest missing id when fetched
  std::int64_t through;  // every id in [from, through] is in `trades` or unrecoverable
  std::vector<Trade> trades;
  std::size_t taken = 0;      // handed to the writer
  std::size_t committed = 0;  // of which written
};

}  // namespace

std::string rest_url_from_feed(std::string_view feed_url) {
  const ws::WebSocketUrl url = ws::parse_websocket_url(feed_url);
  const bool v6 = url.host.find(':') != std::string::npos;
  return (url.tls ? "https://" : "http://") + (v6 ? "[" + url.host + "]" : url.host) + ":" +
         url.port;
}

struct Backfill::State {
  State(asio::any_io_executor ex, const BackfillConfig& cfg, http::HttpClient* client,
        BackfillCounters& counters)
      : executor(std::move(ex)), config(cfg), n(&counters) {
    if (client != nullptr) fetch.emplace(executor, *client, config.fetch, counters);
  }
  asio::any_io_executor executor;
  BackfillConfig config;
  BackfillCounters* n;
  std::optional<HistoricalTrades> fetch;
  std::vector<Tape> tapes;
  std::unordered_map<std::string_view, std::size_t> index;
  std::deque<Range> queue;
  std::deque<Chunk> ready;
  std::size_t in_flight = 0;
  std::size_t running = 0;
  bool stopping = false;
  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;

  void unrecoverable(const Tape& t, std::int64_t lo, std::int64_t hi, const std::string& why) {
    const auto ids = static_cast<std::uint64_t>(hi - lo) + 1;
    n->unrecoverable += ids;
    log()->error(
        "{}: trade ids {}..{} ({} trade(s)) cannot be backfilled: {}; reported as "
        "unrecoverable ({} id(s) in all)",
        t.symbol, lo, hi, ids, why, n->unrecoverable);
  }

  // The venue refused the request (a 401, another permanent 4xx), or answered nothing for ids it
  // sent live: the ids are not unrecoverable. The range stays missing ("complete through" stays
  // below it) and the next start fetches it.
  void refused(const Tape& t, std::int64_t lo, std::int64_t hi, const std::string& why) {
    const auto ids = static_cast<std::uint64_t>(hi - lo) + 1;
    n->failed += ids;
    log()->error(
        "{}: trade ids {}..{} ({} trade(s)) not backfilled: {}; left missing (the next start "
        "fetches them; {} id(s) in all)",
        t.symbol, lo, hi, ids, why, n->failed);
  }

  asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer timer(executor, d);
    co_await timer.async_wait(asio::use_awaitable);
  }

  asio::awaitable<void> worker() {
    while (!stopping) {
      if (queue.empty() || ready.size() >= kMaxReady) {
        co_await pause(std::chrono::milliseconds(10));
        continue;
      }
      const Range r = queue.front();
      queue.pop_front();
      ++in_flight;
      struct Done {
        std::size_t* in_flight;
        ~Done() { --*in_flight; }
      } done{&in_flight};
      std::int64_t lo = r.lo;
      const std::string symbol = tapes[r.tape].symbol;
      while (lo <= r.hi && tapes[r.tape].epoch == r.epoch && !stopping) {
        while (ready.size() >= kMaxReady) co_await pause(std::chrono::milliseconds(10));
        Chunk c{r.tape, r.epoch, lo, r.hi, {}, 0, 0};
        bool left_missing = false;
        try {
          TradePage page = co_await fetch->page(symbol, lo, r.hi);
          c.trades = std::move(page.trades);
          std::int64_t expect = lo;
          for (const Trade& t : c.trades) {
            if (t.trade_id > expect) {
              unrecoverable(tapes[r.tape], expect, t.trade_id - 1,
                            expect == lo ? "the oldest trade the venue still has is " +
                                               std::to_string(t.trade_id)
                                         : "the venue's answer skips them");
            }
            expect = t.trade_id + 1;
          }
          if (!c.trades.empty()) {
            c.through = c.trades.back().trade_id;
          } else if (page.first_returned > r.hi) {
            unrecoverable(
                tapes[r.tape], lo, r.hi,
                "the oldest trade the venue still has is " + std::to_string(page.first_returned));
          } else {
            refused(tapes[r.tape], lo, r.hi,
                    "the venue returned no trade from this id on (ids it sent live)");
            left_missing = true;
          }
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::cancelled) throw;
          // what(): the context, "HTTP <status>: <the venue's answer>" for a refusal.
          refused(tapes[r.tape], lo, r.hi,
                  std::string(http::http_status(e) != 0 ? "the venue refused the request: "
                                                        : "the request failed for good: ") +
                      e.what());
          left_missing = true;
        }
        if (left_missing) break;
        lo = c.through + 1;
        ready.push_back(std::move(c));
      }
    }
  }

  void add_missing(Tape& t, std::int64_t lo, std::int64_t hi) {
    t.missing.emplace(lo, hi);
    t.gaps_changed = true;
    t.pending = std::make_pair(lo, hi);
  }

  void confirm(Tape& t, std::size_t i, bool outlier) {
    const auto [lo, hi] = *t.pending;
    t.pending.reset();
    if (outlier) {
      t.missing.erase(lo);
      t.gaps_changed = true;
      log()->info("{}: the jump to {} was an outlier id: nothing to backfill", t.symbol, hi + 1);
      return;
    }
    ++n->ranges;
    queue.push_back({i, t.epoch, lo, hi});
    log()->info("{}: backfilling trade ids {}..{} ({} trade(s)) from the REST endpoint", t.symbol,
                lo, hi, hi - lo + 1);
  }
};

Backfill::Backfill(asio::any_io_executor executor, const BackfillConfig& config,
                   const std::vector<std::string>& symbols, http::HttpClient* client,
                   BackfillCounters& counters)
    : state_(std::make_shared<State>(std::move(executor), config, client, counters)),
      client_(client) {
  state_->tapes.reserve(symbols.size());
  for (const auto& s : symbols) state_->tapes.emplace_back(s);
  for (std::size_t i = 0; i < state_->tapes.size(); ++i) {
    state_->index.emplace(state_->tapes[i].symbol, i);
  }
}

namespace {

bool parse_id(std::string_view text, std::int64_t& id) {
  const auto r = std::from_chars(text.data(), text.data() + text.size(), id);
  return r.ec == std::errc() && r.ptr == text.data() + text.size() && id >= 0;
}

}  // namespace

bool Backfill::set_stored_gaps(std::string_view symbol, std::string_view value) {
  const auto it = state_->index.find(symbol);
  if (it == state_->index.end()) return true;
  Tape& t = state_->tapes[it->second];
  std::int64_t through = -1;
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  std::size_t at = 0;
  while (at <= value.size()) {
    const std::size_t end = std::min(value.find(' ', at), value.size());
    const std::string_view word = value.substr(at, end - at);
    at = end + 1;
    if (through < 0) {
      if (!parse_id(word, through)) return false;
      continue;
    }
    const std::size_t dash = word.find('-');
    std::int64_t lo = -1;
    std::int64_t hi = -1;
    if (dash == std::string_view::npos || !parse_id(word.substr(0, dash), lo) ||
        !parse_id(word.substr(dash + 1), hi) || lo > hi || hi >= through ||
        (!ranges.empty() && lo <= ranges.back().second + 1)) {
      return false;
    }
    ranges.emplace_back(lo, hi);
  }
  t.stored_through = through;
  t.stored_missing = std::move(ranges);
  return true;
}

Backfill::~Backfill() {
  // Abandoned without stop() (the loop ended by an exception): the workers end on their own.
  if (!state_->stopping) {
    state_->stopping = true;
    for (auto& signal : state_->signals) signal->emit(asio::cancellation_type::terminal);
  }
}

void Backfill::set_stored(std::string_view symbol, std::int64_t complete_through) {
  const auto it = state_->index.find(symbol);
  if (it == state_->index.end()) return;
  Tape& t = state_->tapes[it->second];
  t.stored = complete_through;
  t.persisted = complete_through;
}

bool Backfill::on_live(std::string_view symbol, std::int64_t id, const Verdict& seen,
                       std::uint64_t connection) {
  if (!enabled()) return true;
  State& s = *state_;
  const auto it = s.index.find(symbol);
  if (it == s.index.end()) return true;
  Tape& t = s.tapes[it->second];
  // The last jump is fetched once the next trade confirms it: a lone outlier is taken back by
  // the tracker on that trade (after_outlier) and must not be fetched.
  if (t.pending) s.confirm(t, it->second, seen.kind == Verdict::after_outlier);
  if (seen.kind == Verdict::after_outlier) {
    t.hwm = id;
    t.hwm_connection = connection;
    return true;
  }
  if (t.hwm < 0) {
    if (t.stored) {
      // The highest id written before: the stored gaps' (their ranges are fetched first) or
      // "complete through".
      std::int64_t stored = *t.stored;
      const bool agree = t.stored_through &&
                         stored == (t.stored_missing.empty() ? *t.stored_through
                                                             : t.stored_missing.front().first - 1);
      if (t.stored_through && !agree) {
        log()->warn("{}: stored gaps (through {}) do not match complete-through {}; ignored",
                    t.symbol, *t.stored_through, stored);
      }
      if (agree) stored = *t.stored_through;
      if (agree && (id > stored || static_cast<std::uint64_t>(stored - id) <=
                                       ws::SequenceTracker::kDefaultReorderWindow)) {
        for (const auto& [lo, hi] : t.stored_missing) {
          t.missing.emplace(lo, hi);
          ++s.n->ranges;
          s.queue.push_back({it->second, t.epoch, lo, hi});
          log()->info("{}: backfilling trade ids {}..{} ({} trade(s)) left missing before",
                      t.symbol, lo, hi, hi - lo + 1);
        }
      }
      if (id > stored + 1) {
        log()->info("{}: written through {} before; the feed starts at {} (connection {})",
                    t.symbol, stored, id, connection);
        s.add_missing(t, stored + 1, id - 1);
      } else if (id <= stored) {
        if (static_cast<std::uint64_t>(stored - id) <= ws::SequenceTracker::kDefaultReorderWindow) {
          t.hwm = stored;  // already written: dropped until the feed passes it
          t.hwm_connection = connection;
          ++s.n->duplicates_dropped;
          return false;
        }
        log()->warn(
            "{}: the feed starts at {}, far below {} written before: an id reset; the "
            "tape starts again here",
            t.symbol, id, stored);
      }
    }
    t.hwm = id;
    t.hwm_connection = connection;
    return true;
  }
  if (id == t.hwm + 1) {
    t.hwm = id;
    t.hwm_connection = connection;
    return true;
  }
  if (id > t.hwm + 1) {
    log()->info("{}: trade ids {}..{} missing before {} (feed connection {})", t.symbol, t.hwm + 1,
                id - 1, id, connection);
    s.add_missing(t, t.hwm + 1, id - 1);
    t.hwm = id;
    t.hwm_connection = connection;
    return true;
  }
  // An id reset (a restarted venue numbering) comes on a newer connection than the high-water
  // mark's, far below it. Far below on the same or an older connection is a lagging or replayed
  // feed (an old connection during a rotation): already taken, dropped.
  if (seen.kind == Verdict::reset && seen.behind > ws::SequenceTracker::kDefaultReorderWindow &&
      connection > t.hwm_connection) {
    std::uint64_t lost = 0;
    for (const auto& [lo, hi] : t.missing) lost += static_cast<std::uint64_t>(hi - lo) + 1;
    if (lost > 0) {
      log()->error(
          "{}: trade ids reset from {} to {}: {} id(s) of the old numbering still "
          "missing are no longer fetched",
          t.symbol, t.hwm, id, lost);
      s.n->unrecoverable += lost;
    }
    t.missing.clear();
    t.pending.reset();
    ++t.epoch;
    t.hwm = id;
    t.hwm_connection = connection;
    return true;
  }
  ++s.n->duplicates_dropped;  // rotation overlap, a replay: already taken
  return false;
}

std::size_t Backfill::take(std::size_t max, const std::function<void(const Trade&)>& take) {
  std::size_t count = 0;
  for (Chunk& c : state_->ready) {
    if (count >= max) break;
    if (c.epoch != state_->tapes[c.tape].epoch) continue;  // voided by an id reset
    while (c.taken < c.trades.size() && count < max) {
      take(c.trades[c.taken++]);
      ++count;
    }
    if (c.taken < c.trades.size()) break;
  }
  return count;
}

void Backfill::written() {
  State& s = *state_;
  while (!s.ready.empty()) {
    Chunk& c = s.ready.front();
    Tape& t = s.tapes[c.tape];
    if (c.epoch != t.epoch) {
      s.ready.pop_front();
      continue;
    }
    if (c.taken == c.committed && !c.trades.empty()) break;
    const bool all = c.taken == c.trades.size();
    const std::int64_t next = all ? c.through + 1 : c.trades[c.taken - 1].trade_id + 1;
    s.n->backfilled += c.taken - c.committed;
    if (const auto it = t.missing.find(c.from); it != t.missing.end()) {
      t.gaps_changed = true;
      const std::int64_t hi = it->second;
      t.missing.erase(it);
      if (next <= hi) t.missing.emplace(next, hi);
    }
    if (!all) {
      c.from = next;
      c.committed = c.taken;
      break;
    }
    s.ready.pop_front();
  }
}

std::vector<std::pair<std::string, std::int64_t>> Backfill::tape_updates() {
  std::vector<std::pair<std::string, std::int64_t>> out;
  if (!enabled()) return out;
  for (Tape& t : state_->tapes) {
    const std::int64_t ct = t.complete_through();
    // Ids written above a range still missing: their gaps are stored again, so that a restart
    // does not fetch them a second time.
    if (ct < 0 ||
        (ct == t.persisted && (ct == t.hwm || (t.hwm == t.persisted_hwm && !t.gaps_changed)))) {
      continue;
    }
    t.persisted = ct;
    t.persisted_hwm = t.hwm;
    t.gaps_changed = false;
    out.emplace_back(t.symbol, ct);
  }
  return out;
}

std::string Backfill::tape_gaps(std::string_view symbol) const {
  const auto it = state_->index.find(symbol);
  if (it == state_->index.end()) return {};
  const Tape& t = state_->tapes[it->second];
  std::int64_t through = t.hwm;
  std::string ranges;
  std::size_t count = 0;
  for (const auto& [lo, hi] : t.missing) {
    if (lo > t.hwm) break;
    if (count++ == kMaxStoredGaps) {
      through = lo - 1;  // claims less than was written: never skips an id
      break;
    }
    ranges += " " + std::to_string(lo) + "-" + std::to_string(std::min(hi, t.hwm - 1));
  }
  return std::to_string(through) + ranges;
}

void Backfill::tape_failed(const std::vector<std::pair<std::string, std::int64_t>>& updates) {
  for (const auto& [symbol, ct] : updates) {
    const auto it = state_->index.find(symbol);
    if (it != state_->index.end()) {
      state_->tapes[it->second].persisted = -2;
      state_->tapes[it->second].persisted_hwm = -2;
    }
  }
}

bool Backfill::busy() const noexcept {
  return !state_->queue.empty() || state_->in_flight > 0 || !state_->ready.empty();
}

void Backfill::start() {
  if (!enabled()) return;
  State& s = *state_;
  for (std::size_t i = 0; i < s.config.concurrency; ++i) {
    s.signals.push_back(std::make_unique<asio::cancellation_signal>());
    ++s.running;
    asio::co_spawn(s.executor, s.worker(),
                   asio::bind_cancellation_slot(
                       s.signals.back()->slot(), [state = state_](const std::exception_ptr& e) {
                         --state->running;
                         if (!e) return;
                         const ErrorKind kind = classify(e);
                         if (kind == ErrorKind::cancelled && state->stopping) return;
                         try {
                           std::rethrow_exception(e);
                         } catch (const std::exception& x) {
                           log()->error("a backfill worker ended: {}", x.what());
                         }
                       }));
  }
}

asio::awaitable<void> Backfill::stop() {
  State& s = *state_;
  if (!enabled() || s.stopping) co_return;
  s.stopping = true;
  for (auto& signal : s.signals) signal->emit(asio::cancellation_type::terminal);
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (s.running > 0 && Clock::now() < deadline) {
    asio::steady_timer timer(s.executor, std::chrono::milliseconds(5));
    co_await timer.async_wait(asio::use_awaitable);
  }
  for (const Tape& t : s.tapes) {
    std::uint64_t ids = 0;
    for (const auto& [lo, hi] : t.missing) ids += static_cast<std::uint64_t>(hi - lo) + 1;
    if (ids == 0) continue;
    s.n->not_backfilled += ids;
    log()->warn(
        "{}: {} trade id(s) from {} not backfilled when the service stopped: the next "
        "start fetches them from the stored complete-through id",
        t.symbol, ids, t.missing.begin()->first);
  }
}

void report_sequence(const ws::SequenceTracker& tracker, const Verdict& seen,
                     std::string_view symbol, std::int64_t id, std::uint64_t connection,
                     std::uint64_t& id_jumps, bool dropping) {
  static const auto receiver_log = core::logger("receiver");
  switch (seen.kind) {
    case Verdict::gap:
      receiver_log->warn("{}: trade id gap: {} trade(s) missing before {} (feed connection {}){}",
                         symbol, seen.missing, id, connection, dropping ? "; backfilled" : "");
      break;
    case Verdict::reset:
    case Verdict::after_outlier: {
      const std::uint64_t jumps = ++id_jumps;  // rare; a feed flapping is limited
      if (jumps > 100 && jumps % 1000 != 0) break;
      if (seen.kind == Verdict::reset) {
        receiver_log->warn(
            "{}: trade ids went back from {} to {} on feed connection {} (id reset #{}: a "
            "restarted feed or venue); the trade is written, ids are tracked from here",
            symbol, seen.previous, id, connection, jumps);
      } else {
        receiver_log->warn("{}: trade id {} was an outlier: ids go on at {} (feed connection {})",
                           symbol, seen.previous, id, connection);
      }
      break;
    }
    case Verdict::duplicate:
    case Verdict::out_of_order: {
      const std::uint64_t late = tracker.duplicates() + tracker.out_of_order();
      if (late <= 10 || late % 1000 == 0) {
        receiver_log->warn("{}: trade id {} {} {} (feed connection {}; #{}); {}", symbol, id,
                           seen.kind == Verdict::duplicate ? "repeats" : "comes after",
                           seen.previous, connection, late, dropping ? "dropped" : "written");
      }
      break;
    }
    case Verdict::first:
    case Verdict::in_order:
      break;
  }
}

// ---- the tape in Redis --------------------------------------------------------------------------

asio::awaitable<void> load_tape(redis::RedisClient& redis, Backfill& backfill,
                                const std::vector<std::string>& symbols) {
  std::vector<bool> read(kTradeBuckets, false);
  for (const auto& symbol : symbols) {
    const std::size_t bucket = trade_bucket(symbol);
    if (read[bucket]) continue;
    read[bucket] = true;
    const auto fields = co_await redis.hgetall(bucket_tape_key(bucket));
    for (const auto& [name, value] : fields) {
      if (name.ends_with(":gaps")) {
        if (!backfill.set_stored_gaps(std::string_view(name).substr(0, name.size() - 5), value)) {
          log()->warn(
              "{} {}: stored gaps \"{:.200}\" not understood; ignored (fetched from "
              "the complete-through id)",
              bucket_tape_key(bucket), name, value);
        }
        continue;
      }
      std::int64_t id = -1;
      if (!parse_id(value, id)) {
        log()->warn("{} {}: stored complete-through id \"{}\" is not an id; ignored",
                    bucket_tape_key(bucket), name, value);
        continue;
      }
      backfill.set_stored(name, id);
    }
  }
}

asio::awaitable<void> persist_tape(redis::RedisClient& redis, Backfill& backfill,
                                   BackfillCounters& counters) {
  const auto updates = backfill.tape_updates();
  if (updates.empty()) co_return;
  std::vector<std::vector<std::pair<std::string, std::string>>> buckets(kTradeBuckets);
  for (const auto& [symbol, id] : updates) {
    buckets[trade_bucket(symbol)].emplace_back(symbol, std::to_string(id));
    buckets[trade_bucket(symbol)].emplace_back(tape_gaps_field(symbol), backfill.tape_gaps(symbol));
  }
  try {
    for (std::size_t b = 0; b < kTradeBuckets; ++b) {
      if (buckets[b].empty()) continue;
      std::vector<redis::FieldView> fields;
      for (const auto& [name, value] : buckets[b]) fields.emplace_back(name, value);
      co_await redis.hset(bucket_tape_key(b), fields);
    }
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::cancelled) throw;
    backfill.tape_failed(updates);
    ++counters.tape_write_failures;
    if (counters.tape_write_failures <= 10 || counters.tape_write_failures % 100 == 0) {
      log()->warn(
          "writing the complete-through ids failed (#{}; tried again after the next "
          "batch): {}",
          counters.tape_write_failures, e.what());
    }
  }
}

}  // namespace trading_shared::services

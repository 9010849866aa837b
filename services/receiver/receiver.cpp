#include "receiver/receiver.hpp"

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/keys.hpp"
#include "common/settings.hpp"
#include "common/summary.hpp"
#include "receiver/trade_parser.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <charconv>

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
};

struct SymbolState {
  std::string name;
  std::string stream;
  std::string last_key;
  std::vector<std::size_t> rows;     // indexes into the batch's rows
  std::vector<std::size_t> pending;  // rows whose XADD has not succeeded yet
  bool priced = false;               // this batch's last price (HSET) succeeded
};

struct Counters {
  std::uint64_t received = 0;
  std::uint64_t trades = 0;
  std::uint64_t control = 0;
  std::uint64_t malformed = 0;
  std::uint64_t unknown_symbol = 0;
  std::uint64_t id_jumps = 0;  // resets and outliers seen (for the log's rate limit)
  std::uint64_t written = 0;
  std::uint64_t batches = 0;
  std::uint64_t write_retries = 0;
};

}  // namespace

std::string subscribe_message(const std::vector<std::string>& symbols) {
  std::string params;
  for (const auto& symbol : symbols) {
    std::string lower = symbol;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!params.empty()) params += ",";
    params += json_quote(lower + "@trade");
  }
  return R"({"method":"SUBSCRIBE","params":[)" + params + R"(],"id":1})";
}

asio::awaitable<void> run_receiver(lifecycle::ServiceContext& ctx, const ReceiverConfig& config) {
  auto executor = ctx.executor();
  ws::WebSocketConfig feed_config = config.feed;
  feed_config.on_connect.push_back(subscribe_message(config.symbols));
  auto* redis = co_await ctx.scope().open<redis::RedisClient>("redis", executor, config.redis);
  auto* feed = co_await ctx.scope().open<ws::WebSocketClient>("feed", executor, feed_config);

  std::vector<SymbolState> symbols;
  for (const auto& name : config.symbols) {
    symbols.push_back({name, trade_stream(name), last_price_key(name), {}, {}, false});
  }
  // Counters live in shared state: the summary runs when the scope closes, after this
  // coroutine's frame is gone (and before the clients close: reverse order).
  struct State {
    Counters n;
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
        const ws::SequenceTracker& seq = state->sequence;
        const auto fs = feed->stats();
        const auto rs = redis->stats();
        Summary s;
        s.add("received", c.received)
            .add("trades", c.trades)
            .add("control", c.control)
            .add("malformed", c.malformed)
            .add("unknown_symbol", c.unknown_symbol)
            .add("duplicates", seq.duplicates())
            .add("out_of_order", seq.out_of_order())
            .add("id_resets", seq.resets())
            .add("outliers", seq.outliers())
            .add("gaps", seq.gaps())
            .add("missing_trades", seq.missing())
            .add("written", c.written)
            .add("batches", c.batches)
            .add("write_retries", c.write_retries)
            .add("reconnects", fs.disconnects)
            .add("dropped", fs.dropped)
            .add("max_queued", static_cast<std::uint64_t>(fs.max_queued))
            .add("max_queued_bytes", static_cast<std::uint64_t>(fs.max_queued_bytes))
            .add("idle_timeouts", fs.reasons.idle_timeout)
            .add("protocol_errors", fs.reasons.protocol_error + fs.reasons.oversized)
            .add("redis_reconnects", rs.disconnects)
            .add("redis_breaker_trips", rs.breaker_trips);
        log()->info("summary: {}", s.json());
        if (!summary_file.empty()) s.write_file(summary_file);
        co_return;
      });

  // A graceful stop closes the feed: what it already received is still handed out and
  // written, then receive_batch returns 0 and the loop ends.
  ctx.on_stop([feed, executor] {
    asio::co_spawn(executor, feed->close(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // close() never throws
    });
  });
  ctx.health().ready = true;

  simdjson::ondemand::parser parser;
  std::vector<ws::Message> messages;
  std::vector<Row> rows(config.batch);
  core::DefaultRandom random;
  asio::steady_timer pause(executor);
  // Every batch is one request, reused: each symbol's XADDs and its last price (HSET), one
  // write and one round trip whatever the number of symbols (it was two per symbol).
  redis::Request request;
  const std::string maxlen = std::to_string(config.stream_maxlen);
  std::vector<std::string_view> trim;  // XADD's "MAXLEN ~ n", or nothing
  if (config.stream_maxlen > 0) trim = {"MAXLEN", "~", maxlen};

  for (;;) {
    const std::size_t count = co_await feed->receive_batch(messages, config.batch);
    if (count == 0) break;  // the feed was closed (stop) and everything received is handled
    n.received += count;
    const std::int64_t now_us = unix_micros();
    std::size_t used = 0;
    for (auto& s : symbols) s.rows.clear();
    for (std::size_t i = 0; i < count; ++i) {
      ws::Message& m = messages[i];
      if (m.connection != last_connection) {
        if (last_connection != 0)
          log()->info("feed connection {} started: trade ids may have a gap", m.connection);
        last_connection = m.connection;
      }
      Row& row = rows[used];
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
      SymbolState* target = nullptr;
      for (auto& s : symbols) {
        if (s.name == symbol) target = &s;
      }
      if (target == nullptr) {
        ++n.unknown_symbol;
        if (n.unknown_symbol <= 10) log()->warn("trade for unsubscribed symbol {} skipped", symbol);
        continue;
      }
      // The tracker reports; it does not decide what is written: every trade goes to the
      // stream (the recorder's primary key absorbs a repeated one), the verdict is logged and
      // counted by the tracker (gaps, duplicates, out_of_order, id_resets, outliers).
      const auto seen = sequence.observe(symbol, row.trade.trade_id, m.connection);
      switch (seen.kind) {
        case ws::SequenceTracker::Result::gap:
          log()->warn("{}: trade id gap: {} trade(s) missing before {} (feed connection {})",
                      symbol, seen.missing, row.trade.trade_id, m.connection);
          break;
        case ws::SequenceTracker::Result::reset:
        case ws::SequenceTracker::Result::after_outlier: {
          const std::uint64_t jumps = ++n.id_jumps;  // rare; a feed flapping is limited
          if (jumps > 100 && jumps % 1000 != 0) break;
          if (seen.kind == ws::SequenceTracker::Result::reset) {
            log()->warn(
                "{}: trade ids went back from {} to {} on feed connection {} (id reset #{}: a "
                "restarted feed or venue); the trade is written, ids are tracked from here",
                symbol, seen.previous, row.trade.trade_id, m.connection, jumps);
          } else {
            log()->warn("{}: trade id {} was an outlier: ids go on at {} (feed connection {})",
                        symbol, seen.previous, row.trade.trade_id, m.connection);
          }
          break;
        }
        case ws::SequenceTracker::Result::duplicate:
        case ws::SequenceTracker::Result::out_of_order: {
          const std::uint64_t late = sequence.duplicates() + sequence.out_of_order();
          if (late <= 10 || late % 1000 == 0) {
            log()->warn(
                "{}: trade id {} {} {} (feed connection {}; #{}); written", symbol,
                row.trade.trade_id,
                seen.kind == ws::SequenceTracker::Result::duplicate ? "repeats" : "comes after",
                seen.previous, m.connection, late);
          }
          break;
        }
        case ws::SequenceTracker::Result::first:
        case ws::SequenceTracker::Result::in_order:
          break;
      }
      ++n.trades;
      row.id.set(row.trade.trade_id);
      row.trade_time.set(row.trade.trade_time);
      row.event_time.set(row.trade.event_time);
      row.received.set(now_us);
      target->rows.push_back(used);
      ++used;
    }
    if (used == 0) continue;

    // Write the batch: every symbol's trades (XADD) and last price (HSET), in one request.
    // Retried until it succeeds: a write whose outcome is unknown may add entries twice, which
    // the recorder's idempotent insert absorbs; the feed keeps buffering meanwhile (bounded,
    // counted). What succeeded is not sent again: a retry adds only the trades whose XADD
    // failed (after the others in the stream), and after an HSET error the XADDs are not
    // repeated. Redis runs the commands in order, so a symbol's last price is set after its
    // trades were added; when an XADD fails, the last price may be ahead of the stream until
    // the retry adds them.
    core::Backoff backoff(config.write_backoff, random);
    for (auto& s : symbols) {
      s.pending.assign(s.rows.begin(), s.rows.end());
      s.priced = s.rows.empty();
    }
    for (;;) {
      request.clear();
      for (const auto& s : symbols) {
        for (const std::size_t index : s.pending) {
          const Row& r = rows[index];
          const std::array<std::string_view, 16> fields{"s", r.trade.symbol.view(),
                                                        "t", r.id.view(),
                                                        "p", r.trade.price.view(),
                                                        "q", r.trade.qty.view(),
                                                        "T", r.trade_time.view(),
                                                        "E", r.event_time.view(),
                                                        "m", r.trade.buyer_is_maker ? "1" : "0",
                                                        "r", r.received.view()};
          request.push("XADD", s.stream, trim, "*", fields);
        }
        if (!s.priced) {
          const Row& last = rows[s.rows.back()];
          const std::array<std::string_view, 6> fields{
              "p", last.trade.price.view(), "t", last.id.view(), "T", last.trade_time.view()};
          request.push("HSET", s.last_key, fields);
        }
      }
      std::string failure;
      bool permanent = false;
      try {
        const std::vector<redis::Reply> replies = co_await redis->pipeline(request);
        std::size_t next = 0;
        const redis::Reply* first_error = nullptr;
        const auto take = [&]() -> bool {
          const redis::Reply& reply = replies.at(next++);
          if (!reply.is_error()) return true;
          if (first_error == nullptr) first_error = &reply;
          return false;
        };
        for (auto& s : symbols) {
          // Keep the rows whose XADD failed, in order.
          std::size_t kept = 0;
          for (const std::size_t index : s.pending) {
            if (!take()) s.pending[kept++] = index;
          }
          s.pending.resize(kept);
          if (!s.priced) s.priced = take();
        }
        if (first_error != nullptr) first_error->view().throw_if_error("writing trades");
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::cancelled) throw;
        // Every other error is retried: what was received is never dropped. A permanent one
        // (OOM, READONLY during a failover, WRONGTYPE) needs an operator: logged as an error.
        permanent = e.kind() == ErrorKind::permanent;
        failure = e.what();
      }
      if (failure.empty()) break;
      ++n.write_retries;
      const auto delay = backoff.next();
      if (n.write_retries <= 10 || n.write_retries % 100 == 0) {
        log()->log(permanent ? spdlog::level::err : spdlog::level::warn,
                   "writing {} trade(s) failed (retry #{} in {} ms): {}", used, n.write_retries,
                   delay.count(), failure);
      }
      pause.expires_after(delay);
      co_await pause.async_wait(asio::use_awaitable);
    }
    n.written += used;
    ++n.batches;
  }
  ctx.health().ready = false;
  log()->info("feed closed; {} trade(s) written", n.written);
}

}  // namespace trading_shared::services

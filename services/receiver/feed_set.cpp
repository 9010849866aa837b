#include "receiver/feed_set.hpp"

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <exception>
#include <map>
#include <stdexcept>
#include <utility>

namespace trading_shared::services {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("feed");
  return logger;
}

long long ms_of(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

void rethrow_if(const std::exception_ptr& e) {
  if (e) std::rethrow_exception(e);  // the coroutines catch every error they can meet
}

}  // namespace

// ---- pure pieces -------------------------------------------------------------------------------

void check_feed_limits(const FeedLimits& limits) {
  if (limits.max_streams_per_connection == 0) {
    throw core::ConfigError("--max-streams-per-connection must be at least 1");
  }
  if (limits.max_control_messages_per_second == 0) {
    throw core::ConfigError("--max-control-messages-per-second must be at least 1");
  }
  if (limits.subscribe_timeout <= milliseconds::zero()) {
    throw core::ConfigError("--subscribe-timeout must be positive");
  }
  if (limits.connection_lifetime < milliseconds::zero()) {
    throw core::ConfigError("--connection-lifetime must be >= 0 (0: no planned rotation)");
  }
  if (limits.connection_lifetime > milliseconds::zero() &&
      (limits.rotate_before <= milliseconds::zero() ||
       limits.rotate_before >= limits.connection_lifetime)) {
    throw core::ConfigError(
        "--rotate-before must be positive and below --connection-lifetime (the rotation starts "
        "at lifetime - rotate-before)");
  }
  if (limits.max_subscribe_bytes < 64) {
    throw core::ConfigError("the largest SUBSCRIBE message must be at least 64 bytes");
  }
}

std::vector<std::vector<std::string>> shard_streams(const std::vector<std::string>& symbols,
                                                    std::size_t per_connection) {
  if (per_connection == 0) throw std::invalid_argument("shard_streams: per_connection is 0");
  std::vector<std::vector<std::string>> shards;
  for (const auto& symbol : symbols) {
    if (shards.empty() || shards.back().size() == per_connection) shards.emplace_back();
    std::string stream = symbol;
    for (auto& c : stream) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    shards.back().push_back(stream + "@trade");
  }
  return shards;
}

std::vector<SubscribeRequest> subscribe_requests(const std::vector<std::string>& streams,
                                                 std::uint64_t first_id, std::size_t max_bytes) {
  std::vector<SubscribeRequest> out;
  const auto finish = [&](std::string params, std::size_t count) {
    const std::uint64_t id = first_id + out.size();
    out.push_back(SubscribeRequest{
        id, count,
        R"({"method":"SUBSCRIBE","params":[)" + params + R"(],"id":)" + std::to_string(id) + "}"});
  };
  // {"method":"SUBSCRIBE","params":[],"id":} (40) and up to 20 digits of id.
  constexpr std::size_t kOverhead = 40 + 20;
  std::string params;
  std::size_t count = 0;
  for (const auto& stream : streams) {
    const std::size_t item = stream.size() + 2 + (count > 0 ? 1 : 0);  // quotes, comma
    if (count > 0 && kOverhead + params.size() + item > max_bytes) {
      finish(std::move(params), count);
      params.clear();
      count = 0;
    }
    if (count > 0) params += ',';
    params += '"' + stream + '"';  // stream names are [a-z0-9]+@trade: nothing to escape
    ++count;
  }
  if (count > 0) finish(std::move(params), count);
  return out;
}

std::optional<Reply> parse_reply(std::string_view text) {
  std::size_t at = 0;
  while (at < text.size() && std::isspace(static_cast<unsigned char>(text[at])) != 0) ++at;
  if (at == text.size() || text[at] != '{') return std::nullopt;
  ++at;
  while (at < text.size() && std::isspace(static_cast<unsigned char>(text[at])) != 0) ++at;
  const std::string_view rest = text.substr(at);
  Reply reply;
  if (rest.starts_with("\"error\"")) {
    reply.error = true;
  } else if (!rest.starts_with("\"result\"")) {
    return std::nullopt;
  }
  // The request's id is the reply's last member ("id" inside an error's text comes before).
  const auto key = text.rfind("\"id\"");
  if (key == std::string_view::npos) return std::nullopt;
  std::size_t p = key + 4;
  while (p < text.size() && (text[p] == ':' || std::isspace(static_cast<unsigned char>(text[p])))) {
    ++p;
  }
  const auto [end, ec] = std::from_chars(text.data() + p, text.data() + text.size(), reply.id);
  if (ec != std::errc{} || end == text.data() + p) return std::nullopt;
  return reply;
}

ControlPacer::ControlPacer(std::uint64_t per_second)
    : budget_(per_second > 1 ? per_second - 1 : 1) {}

ControlPacer::Clock::time_point ControlPacer::next(Clock::time_point now) const {
  if (sent_.size() < budget_) return now;
  return std::max(now, sent_.front() + kWindow);
}

void ControlPacer::sent(Clock::time_point at) {
  sent_.push_back(at);
  while (sent_.size() > budget_) sent_.pop_front();
}

// ---- the set -----------------------------------------------------------------------------------

namespace {

/// One WebSocketClient of a shard, and the subscription round of its current connection.
struct Link {
  std::weak_ptr<FeedSet::Core> core;
  std::size_t shard = 0;
  std::unique_ptr<ws::WebSocketClient> client;
  bool retiring = false;         // rotated away, or a rotation's candidate given up: being closed
  std::uint64_t last_local = 0;  // Message::connection remap: the client's number ...
  std::uint64_t global = 0;      // ... and the set's
  std::uint64_t round = 0;       // the connection being subscribed (0: none yet)
  Clock::time_point ready_at{};
  std::map<std::uint64_t, std::size_t> pending;  // SUBSCRIBE id -> streams, not answered yet
  std::size_t confirmed = 0;                     // streams confirmed in this round
  bool round_failed = false;                     // a refusal or a timeout in this round
  bool round_done = false;                       // every request answered or timed out
};

struct Shard {
  std::vector<std::string> streams;
  std::shared_ptr<Link> current;
};

void add_stats(ws::WebSocketStats& sum, const ws::WebSocketStats& s) {
  sum.connects += s.connects;
  sum.connect_failures += s.connect_failures;
  sum.disconnects += s.disconnects;
  sum.reasons.closed_by_peer += s.reasons.closed_by_peer;
  sum.reasons.eof += s.reasons.eof;
  sum.reasons.idle_timeout += s.reasons.idle_timeout;
  sum.reasons.oversized += s.reasons.oversized;
  sum.reasons.protocol_error += s.reasons.protocol_error;
  sum.reasons.slow_consumer += s.reasons.slow_consumer;
  sum.reasons.send_failed += s.reasons.send_failed;
  sum.reasons.other += s.reasons.other;
  sum.messages += s.messages;
  sum.bytes += s.bytes;
  sum.dropped += s.dropped;
  sum.queued += s.queued;
  sum.max_queued += s.max_queued;  // an upper bound of the set's high-water mark
  sum.queued_bytes += s.queued_bytes;
  sum.max_queued_bytes += s.max_queued_bytes;
  sum.held_bytes += s.held_bytes;
  sum.sends += s.sends;
  sum.send_failures += s.send_failures;
}

}  // namespace

struct FeedSet::Core : std::enable_shared_from_this<FeedSet::Core> {
  Core(asio::any_io_executor executor, FeedSetConfig cfg)
      : ex(std::move(executor)), config(std::move(cfg)), changed(ex), readable(ex), ended(ex) {
    check_feed_limits(config.limits);
    ws::validate(config.feed);
    if (!config.feed.on_connect.empty()) {
      throw std::invalid_argument("FeedSet: the feed's on_connect must be empty");
    }
    for (auto& streams : shard_streams(
             config.symbols, static_cast<std::size_t>(config.limits.max_streams_per_connection))) {
      shards.push_back(Shard{std::move(streams), nullptr});
    }
    stats.connections = shards.size();
  }

  asio::any_io_executor ex;
  FeedSetConfig config;
  std::vector<Shard> shards;
  std::vector<std::shared_ptr<Link>> links;  // every client still to be read: shards' + retiring
  core::AsyncEvent changed;                  // replies, rounds done, closing
  core::AsyncEvent readable;                 // a client has something for the consumer
  core::AsyncEvent ended;                    // a client's close ended
  FeedSetStats stats;
  ws::WebSocketStats retired;  // of the links already dropped
  std::uint64_t next_id = 1;
  std::uint64_t next_connection = 0;
  std::size_t rr = 0;
  bool started = false;
  bool closing = false;
  bool closed = false;
  bool consumer_active = false;

  std::shared_ptr<Link> make_link(std::size_t shard) {
    auto link = std::make_shared<Link>();
    link->core = weak_from_this();
    link->shard = shard;
    ws::WebSocketConfig cfg = config.feed;
    const std::weak_ptr<Link> weak = link;
    cfg.on_ready = [weak](std::uint64_t connection) {
      const auto l = weak.lock();
      const auto c = l ? l->core.lock() : nullptr;
      if (c) c->on_ready(l, connection);
    };
    cfg.intercept = [weak](std::string_view text, std::uint64_t connection) {
      const auto l = weak.lock();
      if (!l || l->pending.empty()) return false;  // no reply expected: a trade, at no cost
      const auto c = l->core.lock();
      return c ? c->on_reply(*l, text, connection) : false;
    };
    cfg.on_readable = [weak] {
      const auto l = weak.lock();
      const auto c = l ? l->core.lock() : nullptr;
      if (c) c->readable.notify_all();
    };
    link->client = std::make_unique<ws::WebSocketClient>(ex, std::move(cfg));
    links.push_back(link);
    return link;
  }

  // ---- subscriptions ---------------------------------------------------------------------------

  void on_ready(const std::shared_ptr<Link>& link, std::uint64_t connection) {
    if (closing) return;
    link->round = connection;
    link->ready_at = Clock::now();
    link->pending.clear();
    link->confirmed = 0;
    link->round_failed = false;
    link->round_done = false;
    auto self = shared_from_this();
    asio::co_spawn(ex, subscribe(self, link, connection), rethrow_if);
    if (config.limits.connection_lifetime > milliseconds::zero() && !link->retiring) {
      asio::co_spawn(ex, rotate_when_due(self, link, connection), rethrow_if);
    }
  }

  /// The subscription round of `connection` is over: the set closes, the link reconnected, or
  /// it is being closed (rotated away or given up).
  bool stale(const Link& link, std::uint64_t connection) const {
    return closing || link.round != connection || link.retiring;
  }

  static asio::awaitable<void> subscribe(std::shared_ptr<Core> self, std::shared_ptr<Link> link,
                                         std::uint64_t connection) {
    const auto& streams = self->shards[link->shard].streams;
    auto requests =
        subscribe_requests(streams, self->next_id, self->config.limits.max_subscribe_bytes);
    self->next_id += requests.size();
    ControlPacer pacer(self->config.limits.max_control_messages_per_second);
    for (auto& request : requests) {
      for (auto at = pacer.next(Clock::now()); at > Clock::now(); at = pacer.next(Clock::now())) {
        (void)co_await self->changed.wait_until(at);
        if (self->stale(*link, connection)) co_return;
      }
      if (self->stale(*link, connection)) co_return;
      link->pending[request.id] = request.streams;
      try {
        co_await link->client->send(request.text);
      } catch (const Error& e) {
        // The connection is gone: the next one is subscribed again (on_ready).
        link->pending.erase(request.id);
        log()->warn("shard {}: SUBSCRIBE #{} not sent on connection {}: {}", link->shard,
                    request.id, connection, e.what());
        co_return;
      }
      pacer.sent(Clock::now());
    }
    const auto deadline = Clock::now() + self->config.limits.subscribe_timeout;
    while (!link->pending.empty() && !self->stale(*link, connection) && Clock::now() < deadline) {
      (void)co_await self->changed.wait_until(deadline);
    }
    if (self->stale(*link, connection)) co_return;
    for (const auto& [id, count] : link->pending) {
      ++self->stats.subscribe_timeouts;
      link->round_failed = true;
      log()->error(
          "shard {}: SUBSCRIBE #{} ({} stream(s)) on connection {} not confirmed within {} ms: "
          "those symbols may be missing",
          link->shard, id, count, connection, self->config.limits.subscribe_timeout.count());
    }
    link->pending.clear();
    link->round_done = true;
    if (!link->round_failed) {
      log()->info("shard {}: {} stream(s) confirmed on connection {} ({} request(s))", link->shard,
                  link->confirmed, connection, requests.size());
    }
    self->changed.notify_all();
  }

  bool on_reply(Link& link, std::string_view text, std::uint64_t connection) {
    const auto reply = parse_reply(text);
    if (!reply) return false;
    const auto it = link.pending.find(reply->id);
    if (it == link.pending.end()) return false;  // not ours: the consumer sees it
    const std::size_t count = it->second;
    link.pending.erase(it);
    if (reply->error) {
      ++stats.subscriptions_refused;
      link.round_failed = true;
      log()->error(
          "shard {}: the venue refused SUBSCRIBE #{} ({} stream(s)) on connection {}: {:.300}",
          link.shard, reply->id, count, connection, text);
    } else {
      ++stats.subscriptions_confirmed;
      link.confirmed += count;
    }
    changed.notify_all();
    return true;
  }

  // ---- rotation --------------------------------------------------------------------------------

  static asio::awaitable<void> rotate_when_due(std::shared_ptr<Core> self,
                                               std::shared_ptr<Link> link,
                                               std::uint64_t connection) {
    const auto& limits = self->config.limits;
    const auto due = link->ready_at + limits.connection_lifetime - limits.rotate_before;
    while (Clock::now() < due) {
      (void)co_await self->changed.wait_until(due);
      if (self->stale(*link, connection)) co_return;
    }
    if (self->stale(*link, connection)) co_return;
    if (self->shards[link->shard].current != link) co_return;  // a candidate given up
    co_await rotate(self, link);
  }

  /// Make before break: the successor is connected, subscribed and confirmed before `old` is
  /// closed; if it is not, it is given up and `old` kept (until the venue closes it).
  static asio::awaitable<void> rotate(std::shared_ptr<Core> self, std::shared_ptr<Link> old) {
    const std::size_t index = old->shard;
    Shard& shard = self->shards[index];
    log()->info("shard {}: connection {} is {} ms old: rotating (a new connection first)", index,
                old->round, ms_of(Clock::now() - old->ready_at));
    auto fresh = self->make_link(index);
    std::string failure;
    try {
      co_await fresh->client->start();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure.empty()) {
      const auto& limits = self->config.limits;
      const std::size_t requests =
          subscribe_requests(shard.streams, 0, limits.max_subscribe_bytes).size();
      const ControlPacer pacer(limits.max_control_messages_per_second);
      const auto deadline = Clock::now() + limits.subscribe_timeout + milliseconds(500) +
                            ControlPacer::kWindow * (requests / pacer.budget() + 1);
      while (!fresh->round_done && !self->closing && Clock::now() < deadline) {
        (void)co_await self->changed.wait_until(deadline);
      }
      if (!fresh->round_done) {
        failure = "its subscriptions were not all answered in time";
      } else if (fresh->round_failed || fresh->confirmed != shard.streams.size()) {
        failure = "its subscriptions were not all confirmed (" + std::to_string(fresh->confirmed) +
                  " of " + std::to_string(shard.streams.size()) + " streams)";
      }
    }
    if (self->closing) {
      self->retire(fresh);
      co_return;
    }
    if (!failure.empty()) {
      ++self->stats.rotation_failures;
      log()->error(
          "shard {}: rotation failed: {}; connection {} kept (the venue closes it at its "
          "lifetime; it is then reconnected)",
          index, failure, old->round);
      self->retire(fresh);
      co_return;
    }
    shard.current = fresh;
    ++self->stats.rotations;
    log()->info(
        "shard {}: rotated: {} stream(s) confirmed on the new connection; closing the "
        "old one",
        index, fresh->confirmed);
    self->retire(old);
  }

  /// Closes `link`'s client in the background; its queued messages are still read.
  void retire(const std::shared_ptr<Link>& link) {
    link->retiring = true;
    asio::co_spawn(
        ex,
        [](std::shared_ptr<Core> self, std::shared_ptr<Link> l) -> asio::awaitable<void> {
          co_await l->client->close();
          self->readable.notify_all();
        }(shared_from_this(), link),
        rethrow_if);
  }

  // ---- reading ---------------------------------------------------------------------------------

  asio::awaitable<std::optional<std::size_t>> receive(std::vector<ws::Message>& out,
                                                      std::size_t max,
                                                      std::optional<Clock::time_point> deadline) {
    if (max == 0) throw std::invalid_argument("FeedSet::receive_batch: max must be > 0");
    if (consumer_active) throw std::logic_error("FeedSet: concurrent receive");
    consumer_active = true;
    struct Done {
      bool* flag;
      ~Done() { *flag = false; }
    } done{&consumer_active};
    auto self = shared_from_this();
    for (;;) {
      std::size_t n = 0;
      bool open = false;
      const std::size_t count = links.size();
      std::vector<std::shared_ptr<Link>> gone;
      for (std::size_t k = 0; k < count && n < max; ++k) {
        const auto& link = links[(rr + k) % count];
        const auto got = link->client->try_receive_batch(out, n, max - n);
        if (!got) {
          if (link->retiring) gone.push_back(link);
          continue;
        }
        open = true;
        for (std::size_t i = n; i < n + *got; ++i) {
          if (out[i].connection != link->last_local) {
            link->last_local = out[i].connection;
            link->global = ++next_connection;
          }
          out[i].connection = link->global;
        }
        n += *got;
      }
      if (count > 0) rr = (rr + 1) % count;
      for (const auto& link : gone) {
        add_stats(retired, link->client->stats());
        std::erase(links, link);
      }
      if (n > 0) co_return n;
      if (!open && (closing || links.empty())) co_return std::nullopt;
      if (deadline && Clock::now() >= *deadline) co_return std::size_t{0};
      (void)co_await readable.wait_until(deadline.value_or(Clock::time_point::max()));
    }
  }

  // ---- start and close -------------------------------------------------------------------------

  asio::awaitable<void> start() {
    if (started) co_return;
    started = true;
    std::exception_ptr failure;
    try {
      for (std::size_t i = 0; i < shards.size(); ++i) shards[i].current = make_link(i);
      for (auto& shard : shards) co_await shard.current->client->start();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      co_await close();
      std::rethrow_exception(failure);
    }
    log()->info("{} symbol(s) over {} connection(s) (at most {} streams each)",
                config.symbols.size(), shards.size(), config.limits.max_streams_per_connection);
  }

  asio::awaitable<void> close() {
    auto self = shared_from_this();
    if (closed) co_return;
    closing = true;
    changed.notify_all();
    auto remaining = std::make_shared<std::size_t>(links.size());
    for (const auto& link : links) {
      asio::co_spawn(
          ex,
          [](std::shared_ptr<Core> s, std::shared_ptr<Link> l,
             std::shared_ptr<std::size_t> left) -> asio::awaitable<void> {
            co_await l->client->close();
            if (--*left == 0) s->ended.notify_all();
          }(self, link, remaining),
          rethrow_if);
    }
    while (*remaining > 0) co_await ended.wait();
    closed = true;
    readable.notify_all();
  }
};

// ---- FeedSet -----------------------------------------------------------------------------------

FeedSet::FeedSet(asio::any_io_executor executor, FeedSetConfig config)
    : core_(std::make_shared<Core>(std::move(executor), std::move(config))) {}

FeedSet::~FeedSet() {
  if (core_ && !core_->closed) {
    core_->closing = true;  // the background coroutines end; the clients cut their connections
    core_->changed.notify_all();
  }
}

asio::awaitable<void> FeedSet::start() {
  auto core = core_;
  co_await core->start();
}

asio::awaitable<void> FeedSet::close() {
  auto core = core_;
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await core->close();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
}

asio::awaitable<std::size_t> FeedSet::receive_batch(std::vector<ws::Message>& out,
                                                    std::size_t max) {
  auto core = core_;
  const auto got = co_await core->receive(out, max, std::nullopt);
  co_return got.value_or(0);
}

asio::awaitable<std::optional<std::size_t>> FeedSet::receive_batch_for(
    std::vector<ws::Message>& out, std::size_t max, std::chrono::milliseconds max_wait) {
  auto core = core_;
  co_return co_await core->receive(out, max,
                                   Clock::now() + std::max(max_wait, milliseconds::zero()));
}

ws::WebSocketStats FeedSet::stats() const {
  ws::WebSocketStats sum = core_->retired;
  bool connected = !core_->shards.empty();
  for (const auto& link : core_->links) add_stats(sum, link->client->stats());
  for (const auto& shard : core_->shards) {
    if (!shard.current || !shard.current->client->stats().connected) connected = false;
  }
  sum.connected = connected;
  sum.connection = sum.connects;
  return sum;
}

FeedSetStats FeedSet::limits() const {
  FeedSetStats s = core_->stats;
  s.unconfirmed_symbols = 0;
  for (const auto& shard : core_->shards) {
    const std::size_t confirmed = shard.current ? shard.current->confirmed : 0;
    s.unconfirmed_symbols += shard.streams.size() - std::min(confirmed, shard.streams.size());
  }
  return s;
}

}  // namespace trading_shared::services

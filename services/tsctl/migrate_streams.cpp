// tsctl migrate-streams: the first layout had one stream per symbol (md:trades:<SYMBOL>); the
// trades now go to a stream per bucket of symbols (common/keys.hpp). This copies what the
// old streams still hold for the recorder into the buckets, then deletes them.
#include <trading_shared/core/logging.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include "common/keys.hpp"
#include "common/stream_trim.hpp"
#include "common/text.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("tsctl");
  return logger;
}

constexpr std::int64_t kPage = 1000;

/// md:trades:<SYMBOL> streams (SCAN ... TYPE stream), dead-letter streams left out.
asio::awaitable<std::set<std::string>> legacy_streams(redis::RedisClient& redis) {
  std::set<std::string> keys;
  const std::string pattern = std::string(kLegacyTradeStreamPrefix) + "*";
  std::string cursor = "0";
  do {
    const redis::Reply reply =
        co_await redis.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "stream");
    cursor = std::string(reply[0].as_string());
    for (const redis::ReplyView key : reply[1]) {
      std::string name(key.as_string());
      if (!name.ends_with(":dead")) keys.insert(std::move(name));
    }
  } while (cursor != "0");
  co_return keys;
}

/// Copies the entries of `from` from `start` on (in order, fields unchanged) to the bucket
/// stream of each entry's symbol; returns how many.
asio::awaitable<std::int64_t> copy_entries(redis::RedisClient& redis, const std::string& from,
                                           std::string start, const std::string& key_symbol) {
  std::int64_t copied = 0;
  for (;;) {
    const auto page = co_await redis.xrange(from, start, "+", kPage);
    if (page.empty()) break;
    redis::Request request;
    for (const auto& entry : page) {
      // An entry goes to the bucket of the symbol it names; one that names none (or garbage)
      // to the bucket of its stream's symbol, where the recorder counts it as malformed.
      const std::string* s = entry.field("s");
      const std::string& symbol = s != nullptr && is_symbol(*s) ? *s : key_symbol;
      std::vector<std::string_view> fields;
      fields.reserve(entry.fields.size() * 2);
      for (const auto& [name, value] : entry.fields) {
        fields.push_back(name);
        fields.push_back(value);
      }
      request.push("XADD", trade_stream(symbol), "*", fields);
    }
    for (const redis::Reply& reply : co_await redis.pipeline(request)) {
      reply.view().throw_if_error("XADD (migrate-streams)");
    }
    copied += static_cast<std::int64_t>(page.size());
    if (static_cast<std::int64_t>(page.size()) < kPage) break;
    const auto last = StreamId::parse(page.back().id);
    if (!last) break;
    start = last->next().text();
  }
  co_return copied;
}

}  // namespace

asio::awaitable<void> run_migrate_streams(lifecycle::ServiceContext& ctx,
                                          const Settings& settings) {
  auto* redis =
      co_await ctx.scope().open<redis::RedisClient>("redis", ctx.executor(), settings.redis);
  const auto streams = co_await legacy_streams(*redis);
  std::int64_t total = 0;
  for (const auto& stream : streams) {
    const std::string symbol = stream.substr(kLegacyTradeStreamPrefix.size());
    // What a consumer group still needs (pending or unread); everything when no group reads
    // it. Entries already recorded may be copied again: the recorder's insert is idempotent.
    const auto floor = co_await trim_floor(*redis, stream);
    const std::string start = floor ? floor->id.text() : "-";
    const std::int64_t copied = co_await copy_entries(*redis, stream, start, symbol);
    total += copied;
    if (!settings.keep) (void)co_await redis->del(stream);
    const std::string line =
        fmt::format("{}: {} entrie(s) copied to {}{}\n", stream, copied, trade_stream(symbol),
                    settings.keep ? " (kept)" : "; deleted");
    std::fwrite(line.data(), 1, line.size(), stdout);
    log()->info("{}", line.substr(0, line.size() - 1));
  }
  const std::string summary =
      fmt::format("migrate-streams: {} stream(s), {} entrie(s) copied\n", streams.size(), total);
  std::fwrite(summary.data(), 1, summary.size(), stdout);
  std::fflush(stdout);
}

}  // namespace trading_shared::services::tsctl

// The usage blocks of docs/redis.md (RedisClient, then StreamConsumer) as a program, against the
// Redis given as the first argument (a redis:// URL), on keys of its own ("example:*").
//
//   redis_usage redis://127.0.0.1:6379/0
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/stream_consumer.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <array>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace redis = trading_shared::redis;

namespace {

asio::awaitable<void> usage(asio::io_context& io, std::string url) {
  redis::RedisConfig config;
  config.url = url;
  config.client_name = "redis-usage-example";
  redis::RedisClient client(io.get_executor(), config);
  co_await client.start();  // connects (retries until startup_timeout)

  co_await client.set("example:last:BTC", "64000.5");
  std::optional<std::string> px = co_await client.get("example:last:BTC");
  redis::Reply r = co_await client.command("HINCRBY", "example:fills", "BTC", 3);  // any command
  std::int64_t n = r.as_int();
  std::cout << "last " << px.value_or("?") << ", fills " << n << '\n';

  // Many XADDs in one round trip, trimmed approximately to 1 M entries.
  std::vector<std::array<redis::FieldView, 2>> ticks;
  ticks.push_back({redis::FieldView{"symbol", "BTC"}, redis::FieldView{"price", "64000.5"}});
  ticks.push_back({redis::FieldView{"symbol", "ETH"}, redis::FieldView{"price", "3400.25"}});
  redis::XAddOptions options;
  options.trim = redis::TrimOptions::max_length(1'000'000);
  std::vector<std::string> ids = co_await client.xadd_bulk("example:ticks", ticks, options);
  // The same without the IDs (nothing allocated per entry): the number added.
  std::size_t added = co_await client.xadd_bulk_count("example:ticks", ticks, options);
  std::cout << ids.size() + added << " entries added\n";

  // An explicit batch: one reply per command, error replies stay in place.
  redis::Request batch;
  batch.push("INCR", "example:a").push("GET", "example:b");
  std::vector<redis::Reply> replies = co_await client.pipeline(batch);

  // A transaction: one Request of its own, MULTI first, EXEC (or DISCARD) last.
  redis::Request tx;
  tx.push("MULTI")
      .push("DECRBY", "example:cash", 100)
      .push("INCRBY", "example:btc", 1)
      .push("EXEC");
  std::vector<redis::Reply> exec = co_await client.pipeline(tx);  // OK, QUEUED, QUEUED, [..]
  std::cout << replies.size() << " replies, " << exec.size() << " in the transaction\n";

  // StreamConsumer: the entries above, once; stopped when it has read them all.
  redis::StreamConsumerConfig sc;
  sc.stream = "example:ticks";
  sc.group = "example";
  sc.consumer = "example-1";
  std::size_t seen = 0;
  redis::StreamConsumer* self = nullptr;
  redis::StreamConsumer consumer(client, sc,
                                 [&](const redis::StreamEntry& e) -> asio::awaitable<void> {
                                   std::cout << "entry " << e.id << '\n';
                                   if (++seen == ids.size() + added) self->stop();
                                   co_return;
                                 });
  self = &consumer;
  co_await consumer.run();  // until consumer.stop(), cancellation, or client.close()

  co_await client.close();  // idempotent; nothing left behind
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: redis_usage <redis://host:port/db>\n";
    return 2;
  }
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(io, usage(io, argv[1]), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::cerr << "redis_usage: " << e.what() << '\n';
      return 1;
    }
  }
  return 0;
}

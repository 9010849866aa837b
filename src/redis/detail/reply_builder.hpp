#pragma once
// Builds `Reply` trees with hiredis's RESP parser and our own object functions.

#include <trading_shared/redis/reply.hpp>

#include <cstddef>

struct redisReader;
struct redisReadTask;

namespace trading_shared::redis::detail {

/// One per connection. Not thread-safe (the object functions reach the builder through a
/// thread-local pointer set for the duration of `next`).
class ReplyBuilder {
 public:
  ReplyBuilder();
  ~ReplyBuilder();
  ReplyBuilder(const ReplyBuilder&) = delete;
  ReplyBuilder& operator=(const ReplyBuilder&) = delete;

  /// Appends received bytes. Throws `protocol_error` if the parser is in an error state.
  void feed(const char* data, std::size_t size);
  /// Moves the next complete reply into `out` (its previous buffers are reused for the next
  /// one). False when no complete reply is buffered. Throws `protocol_error` on bad input.
  bool next(Reply& out);
  /// Discards buffered input (after a reconnect).
  void reset();

  // hiredis callbacks.
  static void* create_string(const redisReadTask* task, char* str, std::size_t len);
  static void* create_array(const redisReadTask* task, int elements);
  static void* create_integer(const redisReadTask* task, long long value);
  static void* create_nil(const redisReadTask* task);
  static void free_object(void* object);

 private:
  std::uint32_t add_node(const redisReadTask* task, ReplyNode node);

  redisReader* reader_;
  Reply current_;
};

}  // namespace trading_shared::redis::detail

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

  /// Hands over received bytes. They are *borrowed*: whole scalar replies are parsed straight
  /// from them; what is left goes to hiredis when `next` returns false, when `keep_rest` is
  /// called, or on the next `feed`. So call `next` until it returns false (or `keep_rest`)
  /// before the bytes' buffer is reused or destroyed.
  void feed(const char* data, std::size_t size);
  /// Copies the bytes of the last `feed` not parsed yet into hiredis's own buffer.
  void keep_rest();
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
  bool parse_scalar(Reply& out);

  redisReader* reader_;
  Reply current_;
  const char* chunk_ = nullptr;  // borrowed bytes of the last feed not consumed yet
  std::size_t chunk_size_ = 0;
};

}  // namespace trading_shared::redis::detail

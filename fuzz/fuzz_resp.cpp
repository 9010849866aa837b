// Fuzzes the Redis reply parser the RedisClient runs on received bytes (detail::ReplyBuilder:
// our scalar fast path in front of hiredis's reader) and the typed accessors of Reply.
//
// Input: byte 0 = number of extra split points (0-3), then 2 bytes per split point (offsets
// into the payload, modulo its size), then the payload: RESP bytes as a server sends them.
// The payload is parsed in one feed, in the fuzzer-chosen chunks and one byte at a time; the
// three must give the same replies and the same protocol error (or none).
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/reply.hpp>

#include "detail/reply_builder.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace redis = trading_shared::redis;
using redis::ReplyType;
using redis::ReplyView;

namespace {

/// Runs `f`; the library's typed error (type_mismatch, protocol_error) is an expected outcome.
template <class F>
bool attempt(F&& f) {
  try {
    f();
    return true;
  } catch (const trading_shared::Error&) {
    return false;
  }
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_resp: %s\n", what);
  std::abort();
}

/// A full, canonical rendering of a reply through the public accessors (debug_string
/// truncates), exercising every accessor on the way.
void render(const ReplyView& v, std::string& out, int depth) {
  if (depth > 64) fail("reply deeper than any RESP parser allows");
  // Every accessor, on every node: each either answers or throws Error.
  attempt([&] { (void)v.as_string(); });
  attempt([&] { (void)v.as_optional_string(); });
  attempt([&] { (void)v.as_int(); });
  attempt([&] { (void)v.as_double(); });
  attempt([&] { (void)v.as_bool(); });
  attempt([&] { (void)v.error_message(); });
  attempt([&] { (void)v.error_prefix(); });
  attempt([&] { (void)v.throw_if_error("fuzz"); });
  attempt([&] { (void)v.size(); });
  attempt([&] { (void)v[0]; });
  attempt([&] { (void)v.at(static_cast<std::size_t>(-1)); });
  (void)v.debug_string();
  (void)redis::to_string(v.type());

  switch (v.type()) {
    case ReplyType::nil:
      if (v.size() != 0 || v.as_optional_string().has_value() || !v.is_nil()) {
        fail("nil reply is not empty");
      }
      out += "_;";
      return;
    case ReplyType::integer:
      if (!v.is_integer()) fail("integer type disagrees with is_integer");
      out += ':';
      out += std::to_string(v.as_int());
      out += ';';
      return;
    case ReplyType::string:
    case ReplyType::status:
    case ReplyType::error: {
      const std::string_view bytes =
          v.type() == ReplyType::error ? v.error_message() : v.as_string();
      if (v.type() == ReplyType::error) {
        if (!v.error_message().starts_with(v.error_prefix())) fail("prefix not a prefix");
        if (v.is_string()) fail("error is a string");
      } else if (!v.is_string() || v.as_optional_string() != bytes) {
        fail("string accessors disagree");
      }
      out += std::string(redis::to_string(v.type()));
      out += std::to_string(bytes.size());
      out += ':';
      out += bytes;
      out += ';';
      return;
    }
    case ReplyType::array: {
      if (!v.is_array()) fail("array type disagrees with is_array");
      const std::size_t n = v.size();
      out += '*';
      out += std::to_string(n);
      out += '[';
      std::size_t iterated = 0;
      for (const auto element : v) {
        if (iterated >= n) fail("iteration runs past size()");
        // Rendered once (rendering both would be exponential in the depth): the iterator's
        // element must be the same node as operator[]'s.
        const ReplyView by_index = v[iterated];
        if (element.type() != by_index.type() ||
            (element.is_array() && element.size() != by_index.size()) ||
            (element.is_string() && element.as_string().data() != by_index.as_string().data())) {
          fail("operator[] and iteration disagree");
        }
        render(by_index, out, depth + 1);
        ++iterated;
      }
      if (iterated != n) fail("iteration stops before size()");
      if (attempt([&] { (void)v[n]; })) fail("operator[] past the end did not throw");
      out += ']';
      return;
    }
  }
  fail("unknown reply type");
}

struct Outcome {
  std::vector<std::string> replies;
  std::optional<std::string> error;  // the protocol error, if parsing stopped on one
};

/// Exercises a parsed reply as the client's callers do: copies, moves, take_string.
void exercise(redis::Reply& reply, Outcome& outcome) {
  std::string rendered;
  render(reply.view(), rendered, 0);

  const redis::Reply copy = reply;
  std::string rendered_copy;
  render(copy, rendered_copy, 0);
  if (rendered_copy != rendered) fail("a copied reply differs");

  redis::Reply moved = std::move(reply);
  if (!reply.is_nil()) fail("a moved-from reply is not nil");  // NOLINT(bugprone-use-after-move)
  std::string rendered_moved;
  render(moved, rendered_moved, 0);
  if (rendered_moved != rendered) fail("a moved reply differs");

  if (moved.view().is_string()) {
    const std::string expected(moved.as_string());
    redis::Reply taken = moved;
    if (std::move(taken).take_string() != expected) fail("take_string differs from as_string");
    if (!taken.is_nil()) fail("take_string left a non-nil reply");  // NOLINT
  } else {
    redis::Reply taken = moved;
    if (attempt([&] { (void)std::move(taken).take_string(); })) {
      fail("take_string of a non-string did not throw");
    }
  }
  outcome.replies.push_back(std::move(rendered));
}

/// Feeds `payload` in chunks ending at `cuts` (sorted, deduplicated, inside the payload).
Outcome parse(std::string_view payload, const std::vector<std::size_t>& cuts) {
  Outcome outcome;
  redis::detail::ReplyBuilder builder;
  redis::Reply reply;
  std::size_t begin = 0;
  try {
    for (std::size_t i = 0; i <= cuts.size(); ++i) {
      const std::size_t end = i < cuts.size() ? cuts[i] : payload.size();
      // Like the client's read buffer: the bytes live only until the next read.
      std::string chunk(payload.substr(begin, end - begin));
      builder.feed(chunk.data(), chunk.size());
      while (builder.next(reply)) exercise(reply, outcome);
      begin = end;
    }
  } catch (const trading_shared::Error& e) {
    if (e.code() != trading_shared::make_error_code(trading_shared::errc::protocol_error)) {
      fail("parser threw something else than protocol_error");
    }
    outcome.error = e.what();
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t splits = data[0] % 4;
  std::size_t header = 1 + 2 * splits;
  if (header > size) header = size;
  const std::string_view payload(reinterpret_cast<const char*>(data) + header, size - header);

  const Outcome whole = parse(payload, {});

  if (!payload.empty()) {
    std::vector<std::size_t> cuts;
    for (std::size_t i = 0; i < splits && 2 + 2 * i < header; ++i) {
      const std::size_t raw = static_cast<std::size_t>(data[1 + 2 * i]) << 8 | data[2 + 2 * i];
      cuts.push_back(raw % payload.size());
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    const Outcome chunked = parse(payload, cuts);
    if (chunked.replies != whole.replies) fail("chunked parse gives other replies than one feed");
    if (chunked.error.has_value() != whole.error.has_value()) {
      fail("chunked parse disagrees on the protocol error");
    }

    if (payload.size() <= 4096) {
      std::vector<std::size_t> every_byte;
      for (std::size_t i = 1; i < payload.size(); ++i) every_byte.push_back(i);
      const Outcome bytewise = parse(payload, every_byte);
      if (bytewise.replies != whole.replies) fail("byte-wise parse gives other replies");
      if (bytewise.error.has_value() != whole.error.has_value()) {
        fail("byte-wise parse disagrees on the protocol error");
      }
    }
  }

  // reset() after a partial reply discards it: a fresh reply parses as in a new builder.
  {
    redis::detail::ReplyBuilder builder;
    redis::Reply reply;
    std::string half(payload.substr(0, payload.size() / 2));
    attempt([&] {
      builder.feed(half.data(), half.size());
      while (builder.next(reply)) {
      }
    });
    builder.reset();
    const std::string ping = "+PONG\r\n";
    builder.feed(ping.data(), ping.size());
    if (!builder.next(reply) || reply.as_string() != "PONG") fail("reset() left state behind");
  }
  return 0;
}

#include "common/stream_trim.hpp"

#include <charconv>
#include <limits>

namespace trading_shared::services {

namespace {

bool parse_number(std::string_view text, std::uint64_t& out) noexcept {
  if (text.empty()) return false;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && ptr == text.data() + text.size();
}

}  // namespace

std::optional<StreamId> StreamId::parse(std::string_view text) noexcept {
  StreamId id;
  const std::size_t dash = text.find('-');
  if (!parse_number(text.substr(0, dash), id.ms)) return std::nullopt;
  if (dash != std::string_view::npos && !parse_number(text.substr(dash + 1), id.seq)) {
    return std::nullopt;
  }
  return id;
}

StreamId StreamId::next() const noexcept {
  if (seq == std::numeric_limits<std::uint64_t>::max()) return {ms + 1, 0};
  return {ms, seq + 1};
}

std::string StreamId::text() const {
  return std::to_string(ms) + "-" + std::to_string(seq);
}

boost::asio::awaitable<std::optional<TrimFloor>> trim_floor(redis::RedisClient& redis,
                                                            std::string stream) {
  std::optional<TrimFloor> floor;
  std::vector<redis::GroupInfo> groups;
  try {
    groups = co_await redis.xinfo_groups(stream);
  } catch (const Error& e) {
    // No such key: nothing to keep. Anything else (a key of another type, the server) is the
    // caller's to handle.
    if (e.server() &&
        std::string_view(e.server()->message).find("no such key") != std::string_view::npos) {
      co_return floor;
    }
    throw;
  }
  for (const auto& group : groups) {
    const auto delivered = StreamId::parse(group.last_delivered_id);
    if (!delivered) {
      throw Error(make_error_code(errc::type_mismatch),
                  "XINFO GROUPS " + stream + ": last-delivered-id '" + group.last_delivered_id +
                      "' of group " + group.name + " is not a stream ID");
    }
    StreamId needed = delivered->next();
    if (group.pending > 0) {
      const auto summary = co_await redis.xpending(stream, group.name);
      if (summary.min_id) {
        if (const auto oldest = StreamId::parse(*summary.min_id))
          needed = std::min(needed, *oldest);
      }
    }
    if (!floor || needed < floor->id) floor = TrimFloor{needed, group.name, group.pending};
  }
  co_return floor;
}

}  // namespace trading_shared::services

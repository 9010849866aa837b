#pragma once
/// @file
/// Trimming that never deletes what a consumer group still needs (F53): the trim floor of a
/// stream is the oldest entry some group has not acknowledged (pending) or not yet read.
/// ts-janitor (retention by age) and ts-receiver (`--stream-maxlen`) trim down to it, never
/// past it unless forced.

#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/awaitable.hpp>

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trading_shared::services {

/// A stream entry ID, `<ms>-<seq>`.
struct StreamId {
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;

  /// Parses `<ms>-<seq>` (or `<ms>`, seq 0); nullopt for anything else.
  static std::optional<StreamId> parse(std::string_view text) noexcept;
  /// The smallest ID after this one.
  StreamId next() const noexcept;
  std::string text() const;
  auto operator<=>(const StreamId&) const = default;
};

/// What keeps a stream from being trimmed further.
struct TrimFloor {
  StreamId id;               ///< the oldest entry a group still needs: trim below it only (MINID).
  std::string group;         ///< the group that needs it.
  std::int64_t pending = 0;  ///< that group's entries read and not yet acknowledged.
};

/// The trim floor of `stream`: over every consumer group, the oldest of its pending entries
/// and of the entries after its last-delivered ID. nullopt when no group reads the stream
/// (or it does not exist). Two or three round trips (XINFO GROUPS, XPENDING per group with
/// pending entries).
boost::asio::awaitable<std::optional<TrimFloor>> trim_floor(redis::RedisClient& redis,
                                                            std::string stream);

}  // namespace trading_shared::services

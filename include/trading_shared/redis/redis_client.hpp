#pragma once
/// @file
/// `RedisClient`: asynchronous Redis client on Asio (docs/redis.md).
///
/// One multiplexed connection carries every ordinary command: commands of concurrent
/// callers are encoded straight into one send buffer and written together (automatic
/// pipelining); replies are matched to requests in FIFO order. Blocking commands run on
/// dedicated connections. Bound to one executor and not thread-safe (one client per thread).
///
/// @par Guarantees
/// - A reply is only ever delivered to the request it answers. A request whose caller gave up
///   (timeout, cancellation) after it was written keeps its place in the FIFO and its reply is
///   read and dropped. A request given up before it was written is removed from the send
///   buffer and never runs.
/// - On connection loss, requests written and not answered fail as `connection_lost`
///   (`outcome_unknown`: they may have run); unwritten ones wait for the background reconnect
///   within their deadline, then run on the new connection.
/// - Every call has a deadline (`command_timeout` unless overridden) and honours terminal
///   cancellation.
/// - Arguments are encoded when the call is made: an awaitable may be stored and awaited
///   later, after temporary arguments are gone. The call is queued when made (calls made in
///   order run in that order); an awaitable destroyed without being awaited abandons its
///   request as if it were cancelled.
///
/// Lifecycle: `start()` and `close()`, both idempotent. The client must outlive every
/// awaitable it returned.

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/redis/config.hpp>
#include <trading_shared/redis/reply.hpp>
#include <trading_shared/redis/resp.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::redis {

/// Per-call overrides.
struct CommandOptions {
  /// Deadline from the call to the reply; zero = the config's `command_timeout`.
  std::chrono::milliseconds timeout{0};
};

namespace detail {
/// MULTI, EXEC and DISCARD, as `check_shared_command` reports them to `Request::push`.
enum class TransactionCommand : std::uint8_t { none, multi, end /* EXEC or DISCARD */ };

/// Checks one encoded command before it goes on a connection whose replies are matched in
/// FIFO order: a command must answer exactly once and leave the connection as it found it.
/// Refused (as `invalid_argument`): no arguments at all (Redis does not answer `*0`);
/// SUBSCRIBE and the other pub/sub commands, MONITOR, CLIENT REPLY, RESET, QUIT, SELECT, AUTH,
/// HELLO; WATCH and UNWATCH; MULTI, EXEC and DISCARD unless `transaction` is given (then they
/// are reported there, for `Request::push` to check that its request is one balanced
/// transaction); and, unless `blocking_allowed`, blocking commands (BLPOP, BRPOP, BLMOVE,
/// BLMPOP, BRPOPLPUSH, BZPOPMIN, BZPOPMAX, BZMPOP, WAIT, WAITAOF, XREAD/XREADGROUP with BLOCK),
/// which belong on `blocking_command()`. Returns the error, or null when the command is fine.
/// On the hot path (every `Request::push`): a name is compared only with the refused names of
/// its initial.
std::exception_ptr check_shared_command(std::string_view encoded, bool blocking_allowed = false,
                                        TransactionCommand* transaction = nullptr);

/// Where a `Request` stands in a transaction.
enum class TransactionState : std::uint8_t { none, open, closed };
/// Applies `command` (pushed after `commands_before` others) to `state`: MULTI only as the
/// first command, EXEC or DISCARD only after it, nothing after them. Returns the error.
std::exception_ptr transaction_step(TransactionState& state, TransactionCommand command,
                                    std::size_t commands_before);
}  // namespace detail

/// An explicit batch of commands for `pipeline()`: encoded as they are pushed, reusable
/// after `clear()`. `push` throws `invalid_argument` for a command that cannot run on the
/// shared connection (see `detail::check_shared_command`); the command is not added.
///
/// A transaction is a request of its own: MULTI as its first command, EXEC or DISCARD as its
/// last (`push` refuses MULTI elsewhere, EXEC/DISCARD without MULTI, and anything after them;
/// `pipeline()` refuses a request whose MULTI is not ended). It is written in one block, so no
/// other caller's command can come between its commands. WATCH is refused: its effect would
/// span the commands of other callers on the shared connection.
class Request {
 public:
  template <RespArg... Args>
  Request& push(const Args&... args) {
    const std::size_t start = buffer_.size();
    try {
      encode_command(buffer_, args...);
    } catch (...) {
      buffer_.resize(start);
      throw;
    }
    detail::TransactionCommand transaction = detail::TransactionCommand::none;
    auto error =
        detail::check_shared_command(std::string_view(buffer_).substr(start), false, &transaction);
    if (!error && (transaction != detail::TransactionCommand::none ||
                   transaction_ != detail::TransactionState::none)) {
      error = detail::transaction_step(transaction_, transaction, commands_);
    }
    if (error) {
      buffer_.resize(start);
      std::rethrow_exception(error);
    }
    ++commands_;
    return *this;
  }
  std::size_t size() const noexcept { return commands_; }
  bool empty() const noexcept { return commands_ == 0; }
  /// Begins with MULTI and has no EXEC or DISCARD yet: `pipeline()` refuses it.
  bool transaction_open() const noexcept { return transaction_ == detail::TransactionState::open; }
  void clear() noexcept {
    buffer_.clear();
    commands_ = 0;
    transaction_ = detail::TransactionState::none;
  }
  void reserve(std::size_t bytes) { buffer_.reserve(bytes); }
  /// The encoded commands.
  std::string_view encoded() const noexcept { return buffer_; }

 private:
  std::string buffer_;
  std::size_t commands_ = 0;
  detail::TransactionState transaction_ = detail::TransactionState::none;
};

/// A stream entry as read by XRANGE, XREADGROUP, XAUTOCLAIM.
struct StreamEntry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  /// The entry was deleted (or trimmed) while still pending: XREADGROUP of history and
  /// XAUTOCLAIM on older servers return its ID with a nil body.
  bool deleted = false;
  /// The stream the entry was read from, when a `StreamConsumer` hands it to its handler (a
  /// view of the consumer's configuration: valid while the consumer exists). Empty otherwise.
  std::string_view stream;
  /// The value of the first field called `name`, or nullptr.
  const std::string* field(std::string_view name) const noexcept;
};

/// Trimming of XADD, XTRIM and `xadd_bulk`.
struct TrimOptions {
  enum class Strategy : std::uint8_t { none, maxlen, minid };
  Strategy strategy = Strategy::none;
  bool approximate = true;  ///< `~`: trim whole macro nodes only (much cheaper).
  std::uint64_t maxlen = 0;
  std::string minid;

  static TrimOptions max_length(std::uint64_t n, bool approximate = true) {
    return {Strategy::maxlen, approximate, n, {}};
  }
  static TrimOptions min_id(std::string id, bool approximate = true) {
    return {Strategy::minid, approximate, 0, std::move(id)};
  }
};

struct XAddOptions {
  TrimOptions trim;
  /// NOMKSTREAM: do not create a missing stream. `xadd` then returns an empty ID and
  /// `xadd_bulk` empty IDs.
  bool no_mkstream = false;
  CommandOptions command;
};

struct SetOptions {
  enum class Condition : std::uint8_t { always, if_not_exists, if_exists };
  std::chrono::milliseconds ttl{0};  ///< zero = no expiry.
  Condition condition = Condition::always;
  CommandOptions command;
};

struct PendingSummary {
  std::int64_t count = 0;
  std::optional<std::string> min_id;
  std::optional<std::string> max_id;
  std::vector<std::pair<std::string, std::int64_t>> consumers;  ///< name, pending count.
};

struct PendingEntry {
  std::string id;
  std::string consumer;
  std::chrono::milliseconds idle{0};
  std::int64_t deliveries = 0;
};

struct PendingQuery {
  std::string start = "-";
  std::string end = "+";
  std::int64_t count = 100;
  std::string consumer;                   ///< empty: every consumer.
  std::chrono::milliseconds min_idle{0};  ///< zero: no IDLE filter.
};

/// The entries of one stream in a reply of XREADGROUP over several streams.
struct StreamRead {
  std::string stream;
  std::vector<StreamEntry> entries;
};

struct AutoClaimResult {
  std::string next_id;  ///< "0-0" when the scan is complete.
  std::vector<StreamEntry> entries;
  std::vector<std::string> deleted_ids;  ///< pending IDs no longer in the stream (removed).
};

struct GroupInfo {
  std::string name;
  std::int64_t consumers = 0;
  std::int64_t pending = 0;
  std::string last_delivered_id;
};

struct ReadGroupOptions {
  std::int64_t count = 100;
  /// Zero: do not block (runs on the shared connection). Positive: `BLOCK` for this long,
  /// on a dedicated connection, with a deadline of block + the command timeout (F22).
  std::chrono::milliseconds block{0};
  bool no_ack = false;
};

struct RedisStats {
  bool connected = false;
  std::size_t queued = 0;     ///< requests not yet written.
  std::size_t in_flight = 0;  ///< requests written and not yet answered (abandoned included).
  std::size_t blocking_connections = 0;
  std::uint64_t connects = 0;  ///< successful connects of the shared connection.
  std::uint64_t connect_failures = 0;
  std::uint64_t disconnects = 0;  ///< shared connection losses (each followed by a reconnect).
  std::uint64_t commands = 0;     ///< requests submitted (a pipeline counts once).
  std::uint64_t replies = 0;      ///< replies read (pipelines count each).
  std::uint64_t writes = 0;       ///< socket writes (batches) of the shared connection.
  std::uint64_t failures = 0;     ///< requests failed (any error but cancellation).
  std::uint64_t timeouts = 0;
  std::uint64_t cancellations = 0;
  std::uint64_t dropped_replies = 0;  ///< replies of abandoned requests, read and dropped.
  std::uint64_t rejected = 0;         ///< refused at once: queue full, breaker open, closed.
  std::uint64_t health_checks = 0;    ///< PINGs sent by the health check.
  core::CircuitState breaker = core::CircuitState::closed;
  std::uint64_t breaker_trips = 0;  ///< times the breaker opened since start.
  /// rediss://: SSL contexts built (1 after the first connect; one more each time a
  /// certificate, key or CA file changed before a new connection: rotation). 0 for redis://.
  std::uint64_t tls_context_builds = 0;
};

namespace detail {
class ClientCore;

template <class T>
concept FieldPair = requires(const T& pair) {
  { pair.first } -> std::convertible_to<std::string_view>;
  { pair.second } -> std::convertible_to<std::string_view>;
};
template <class T>
concept StreamFields =
    std::ranges::forward_range<const T> && FieldPair<std::ranges::range_value_t<const T>>;

std::size_t trim_argument_count(const TrimOptions& trim) noexcept;
void append_trim(CommandWriter& writer, const TrimOptions& trim);

/// The encoded arguments every XADD of a batch shares (`XADD stream [NOMKSTREAM] [trim] *`,
/// without the `*N` header); `arguments` is set to their number.
std::string xadd_prefix(std::string_view stream, const XAddOptions& options,
                        std::size_t& arguments);

/// Appends one XADD per entry to `out`. What the entries share is encoded once per batch:
/// the header and arguments up to `*` are copied as one block while the number of fields
/// stays the same.
template <class Entries>
void encode_xadd_bulk(std::string& out, std::string_view stream, const Entries& entries,
                      const XAddOptions& options) {
  std::size_t fixed = 0;
  const std::string prefix = xadd_prefix(stream, options, fixed);
  std::string head;  // "*N\r\n" + prefix for entries of `head_fields` fields
  std::size_t head_fields = 0;
  for (const auto& entry : entries) {
    const auto fields = static_cast<std::size_t>(std::ranges::distance(entry));
    if (head.empty() || fields != head_fields) {
      head.clear();
      append_header(head, '*', fixed + 2 * fields);
      head.append(prefix);
      head_fields = fields;
    }
    out.append(head);
    for (const auto& field : entry) {
      append_bulk(out, std::string_view(field.first));
      append_bulk(out, std::string_view(field.second));
    }
  }
}
}  // namespace detail

using FieldView = std::pair<std::string_view, std::string_view>;

class RedisClient {
 public:
  RedisClient(boost::asio::any_io_executor executor, RedisConfig config);
  /// Closes the sockets if `close()` was not called (and logs that it was not).
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// Connects (retrying until `startup_timeout`; authentication errors fail at once) and
  /// starts the background reader, writer, health check and reconnect. Idempotent and
  /// single-flight: concurrent calls share one start-up.
  boost::asio::awaitable<void> start();
  /// Refuses new calls at once, lets in-flight ones finish within `close_timeout`, fails
  /// the rest with `client_closed`, closes every socket and waits for every background task.
  /// Idempotent.
  boost::asio::awaitable<void> close();

  /// One command, e.g. `co_await client.command("HINCRBY", key, field, 5)`. Throws on an
  /// error reply (`Error` with the server's prefix and message); nil is a normal reply.
  /// Commands that would break the FIFO matching of the shared connection (no arguments,
  /// pub/sub, MONITOR, SELECT, blocking commands, ...) fail with `invalid_argument`: see
  /// `detail::check_shared_command`.
  template <RespArg... Args>
  boost::asio::awaitable<Reply> command(const Args&... args) {
    return command(CommandOptions{}, args...);
  }
  template <RespArg... Args>
  boost::asio::awaitable<Reply> command(const CommandOptions& options, const Args&... args) {
    auto encode = [&](std::string& out) {
      const std::size_t start = out.size();
      encode_command(out, args...);
      if (auto error = detail::check_shared_command(std::string_view(out).substr(start))) {
        std::rethrow_exception(error);
      }
    };
    return submit<Reply>(options, 1, nullptr, Encoder(encode));
  }

  /// An explicit batch: written in one go, one reply per command, in order. Error replies
  /// stay in the vector (one failing command does not hide the others' results).
  boost::asio::awaitable<std::vector<Reply>> pipeline(const Request& request,
                                                      const CommandOptions& options = {});

  /// A blocking command (BLPOP, BRPOP, XREAD/XREADGROUP BLOCK, WAIT) on a dedicated
  /// connection, so that it never stalls the shared one. `block` is how long the server may
  /// block; the client deadline is `block` + the command timeout (F22).
  template <RespArg... Args>
  boost::asio::awaitable<Reply> blocking_command(std::chrono::milliseconds block,
                                                 const Args&... args) {
    std::string encoded;
    encode_command(encoded, args...);
    return blocking(std::move(encoded), block);
  }

  // ---- typed helpers ------------------------------------------------------------------------
  boost::asio::awaitable<void> ping(const CommandOptions& options = {});
  boost::asio::awaitable<std::optional<std::string>> get(std::string_view key,
                                                         const CommandOptions& options = {});
  /// True when the value was set (false only when the NX/XX condition prevented it).
  boost::asio::awaitable<bool> set(std::string_view key, std::string_view value,
                                   const SetOptions& options = {});
  boost::asio::awaitable<std::int64_t> del(std::span<const std::string_view> keys,
                                           const CommandOptions& options = {});
  boost::asio::awaitable<std::int64_t> del(std::string_view key,
                                           const CommandOptions& options = {});
  /// Number of fields that were added (not updated).
  boost::asio::awaitable<std::int64_t> hset(std::string_view key, std::span<const FieldView> fields,
                                            const CommandOptions& options = {});
  boost::asio::awaitable<std::vector<std::pair<std::string, std::string>>> hgetall(
      std::string_view key, const CommandOptions& options = {});
  /// False when the key does not exist.
  boost::asio::awaitable<bool> expire(std::string_view key, std::chrono::seconds ttl,
                                      const CommandOptions& options = {});

  /// XADD with an automatic ID; returns the ID.
  boost::asio::awaitable<std::string> xadd(std::string_view stream,
                                           std::span<const FieldView> fields,
                                           const XAddOptions& options);
  // Overloads instead of `= {}` defaults for option structs that own strings: GCC 12
  // destroys such default-argument temporaries twice inside co_await expressions.
  boost::asio::awaitable<std::string> xadd(std::string_view stream,
                                           std::span<const FieldView> fields) {
    return xadd(stream, fields, XAddOptions{});
  }
  /// Many XADDs in one round trip (one write, one FIFO slot); returns the IDs in order.
  /// `entries` is a range of entries, each a range of (name, value) pairs, e.g.
  /// `std::vector<std::vector<FieldView>>` or `std::vector<std::array<FieldView, 3>>`.
  /// If any XADD fails, throws the first error after all replies were read.
  template <class Entries>
  requires std::ranges::forward_range<const Entries> &&
      detail::StreamFields<std::ranges::range_value_t<const Entries>>
          boost::asio::awaitable<std::vector<std::string>> xadd_bulk(std::string_view stream,
                                                                     const Entries& entries) {
    return xadd_bulk(stream, entries, XAddOptions{});
  }
  template <class Entries>
  requires std::ranges::forward_range<const Entries> &&
      detail::StreamFields<std::ranges::range_value_t<const Entries>>
          boost::asio::awaitable<std::vector<std::string>> xadd_bulk(std::string_view stream,
                                                                     const Entries& entries,
                                                                     const XAddOptions& options) {
    auto encode = [&](std::string& out) {
      detail::encode_xadd_bulk(out, stream, entries, options);
    };
    return submit<std::vector<std::string>>(
        options.command, static_cast<std::size_t>(std::ranges::distance(entries)), "XADD",
        Encoder(encode));
  }
  /// `xadd_bulk` for callers that do not need the IDs: the same commands, but the replies are
  /// only counted, not kept (much less work per entry). Returns the number of entries added
  /// (under NOMKSTREAM, those not added because the stream is missing are not counted). If
  /// any XADD fails, throws the first error after all replies were read.
  template <class Entries>
  requires std::ranges::forward_range<const Entries> &&
      detail::StreamFields<std::ranges::range_value_t<const Entries>>
          boost::asio::awaitable<std::size_t> xadd_bulk_count(std::string_view stream,
                                                              const Entries& entries) {
    return xadd_bulk_count(stream, entries, XAddOptions{});
  }
  template <class Entries>
  requires std::ranges::forward_range<const Entries> &&
      detail::StreamFields<std::ranges::range_value_t<const Entries>>
          boost::asio::awaitable<std::size_t> xadd_bulk_count(std::string_view stream,
                                                              const Entries& entries,
                                                              const XAddOptions& options) {
    auto encode = [&](std::string& out) {
      detail::encode_xadd_bulk(out, stream, entries, options);
    };
    return submit<std::size_t>(options.command,
                               static_cast<std::size_t>(std::ranges::distance(entries)), "XADD",
                               Encoder(encode));
  }
  boost::asio::awaitable<std::vector<StreamEntry>> xrange(std::string_view stream,
                                                          std::string_view start = "-",
                                                          std::string_view end = "+",
                                                          std::optional<std::int64_t> count = {},
                                                          const CommandOptions& options = {});
  boost::asio::awaitable<std::int64_t> xlen(std::string_view stream,
                                            const CommandOptions& options = {});
  /// Returns the number of entries removed.
  boost::asio::awaitable<std::int64_t> xtrim(std::string_view stream, const TrimOptions& trim,
                                             const CommandOptions& options = {});
  boost::asio::awaitable<std::int64_t> xack(std::string_view stream, std::string_view group,
                                            std::span<const std::string> ids,
                                            const CommandOptions& options = {});
  boost::asio::awaitable<PendingSummary> xpending(std::string_view stream, std::string_view group,
                                                  const CommandOptions& options = {});
  boost::asio::awaitable<std::vector<PendingEntry>> xpending_range(
      std::string_view stream, std::string_view group, const PendingQuery& query,
      const CommandOptions& options = {});
  boost::asio::awaitable<AutoClaimResult> xautoclaim(
      std::string_view stream, std::string_view group, std::string_view consumer,
      std::chrono::milliseconds min_idle, std::string_view start = "0-0", std::int64_t count = 100,
      const CommandOptions& options = {});
  /// XGROUP CREATE ... [MKSTREAM]. Returns false when the group already exists (BUSYGROUP).
  boost::asio::awaitable<bool> xgroup_create(std::string_view stream, std::string_view group,
                                             std::string_view start_id = "$", bool mkstream = true,
                                             const CommandOptions& options = {});
  /// XGROUP DESTROY; returns whether the group existed.
  boost::asio::awaitable<bool> xgroup_destroy(std::string_view stream, std::string_view group,
                                              const CommandOptions& options = {});
  /// XINFO STREAM, as the server's reply.
  boost::asio::awaitable<Reply> xinfo_stream(std::string_view stream,
                                             const CommandOptions& options = {});
  boost::asio::awaitable<std::vector<GroupInfo>> xinfo_groups(std::string_view stream,
                                                              const CommandOptions& options = {});
  /// XREADGROUP of one stream. `id` ">" reads new entries; "0" reads this consumer's own
  /// pending entries (deleted ones come back with `deleted = true`).
  boost::asio::awaitable<std::vector<StreamEntry>> xreadgroup(std::string_view group,
                                                              std::string_view consumer,
                                                              std::string_view stream,
                                                              std::string_view id,
                                                              const ReadGroupOptions& options = {});

  /// XREADGROUP of several streams in one command (`STREAMS s1 .. sn id1 .. idn`): one
  /// round trip, and with `options.block` one blocking connection, whatever the number of
  /// streams. `ids` has one ID per stream, or a single ID for all of them (">" for new
  /// entries). `options.count` applies to each stream. Returns the streams that had entries,
  /// in the server's order. All streams must be on one node (in Redis Cluster: one hash slot).
  boost::asio::awaitable<std::vector<StreamRead>> xreadgroup(std::string_view group,
                                                             std::string_view consumer,
                                                             std::span<const std::string> streams,
                                                             std::span<const std::string> ids,
                                                             const ReadGroupOptions& options);

  RedisStats stats() const noexcept;
  /// Where the round trip of each request of the shared connection goes, in seconds (from
  /// its write to the read of its last reply; blocking commands are not timed), e.g.
  /// `RedisMetrics::round_trip()`. Null (the default): not timed. The histogram must outlive
  /// the client or be unset first; call on the client's executor.
  void set_round_trip_histogram(core::Histogram* histogram) noexcept;
  const RedisConfig& config() const noexcept;
  /// "host:port/db" of the server (no credentials).
  const std::string& description() const noexcept;
  /// The name this client's connections carry in `CLIENT LIST` (config's client_name).
  const std::string& client_name() const noexcept;
  boost::asio::any_io_executor get_executor() const noexcept;

 private:
  /// A non-owning reference to the callable that encodes a request (`void(std::string&)`,
  /// appending to the send buffer); valid for the duration of the call that takes it.
  class Encoder {
   public:
    template <class F>
    explicit Encoder(F& encode) noexcept
        : object_(&encode),
          call_([](void* object, std::string& out) { (*static_cast<F*>(object))(out); }) {}
    void operator()(std::string& out) const { call_(object_, out); }

   private:
    void* object_;
    void (*call_)(void*, std::string&);
  };

  /// The one submission path of the shared connection: admits the request (state, queue
  /// bound, breaker), lets `encode` append it to the send buffer (what it throws fails the
  /// call and takes its bytes back), queues it and returns the awaitable of its result. A
  /// refused call fails when awaited, not when made. `Result` says how the `replies` replies
  /// are kept: `Reply` (one), `std::vector<Reply>` (all, in order; error replies included),
  /// `std::vector<std::string>` (XADD IDs), `std::size_t` (counted; the first error reply
  /// thrown), `std::optional<std::string>` (one string or nil). Zero replies: an empty batch,
  /// done at once. `name`: the command's name when the caller knows it (a string literal).
  template <class Result>
  boost::asio::awaitable<Result> submit(const CommandOptions& options, std::size_t replies,
                                        const char* name, Encoder encode);
  boost::asio::awaitable<Reply> blocking(std::string encoded, std::chrono::milliseconds block);

  std::shared_ptr<detail::ClientCore> core_;
};

// Instantiated in redis_client.cpp, for the results `submit` documents.
extern template boost::asio::awaitable<Reply> RedisClient::submit<Reply>(const CommandOptions&,
                                                                         std::size_t, const char*,
                                                                         Encoder);
extern template boost::asio::awaitable<std::vector<Reply>> RedisClient::submit<std::vector<Reply>>(
    const CommandOptions&, std::size_t, const char*, Encoder);
extern template boost::asio::awaitable<std::vector<std::string>>
RedisClient::submit<std::vector<std::string>>(const CommandOptions&, std::size_t, const char*,
                                              Encoder);
extern template boost::asio::awaitable<std::size_t> RedisClient::submit<std::size_t>(
    const CommandOptions&, std::size_t, const char*, Encoder);
extern template boost::asio::awaitable<std::optional<std::string>>
RedisClient::submit<std::optional<std::string>>(const CommandOptions&, std::size_t, const char*,
                                                Encoder);

}  // namespace trading_shared::redis

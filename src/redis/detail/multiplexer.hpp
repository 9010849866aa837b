#pragma once
// The request multiplexer of RedisClient's shared connection, without sockets (sans-I/O, as
// Boost.Redis's detail::multiplexer; docs/redis.md). It owns what the requests of all callers
// share on one connection and nothing that does I/O:
// - `pending_`: the encoded bytes of every request not yet handed to the socket, in FIFO
//   order. Callers encode straight into it (`send_buffer()`); a request given up before it is
//   written has its bytes cut out again.
// - `writing_`: the bytes of the write in progress (`prepare_write` swaps them with
//   `pending_`, so one write carries every request queued since the last one).
// - `fifo_`: the requests, oldest first. From the front: requests written (phase `sent` or
//   `writing`; `outstanding()` of them), then `queued()` requests whose bytes are in
//   `pending_`. Replies are matched to the front; a request whose caller gave up after it was
//   written stays in place (`completed`) and its reply is read and dropped (abandonment).
// - `Slot`s come from a free list; a slot is recycled when it has left the FIFO and its
//   caller released it (`SlotHandle`).
// - the RESP parser of the connection: bytes read are `feed`-ed, `deliver_next` parses one
//   reply and completes the request it answers.
// The connection (connection.hpp) moves bytes between these buffers and the socket; the
// client (redis_client.cpp) admits requests and resumes waiting callers through
// `MultiplexerEvents`. Everything runs on the client's executor.

#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/metrics.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>
#include <trading_shared/redis/reply.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "reply_builder.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::redis::detail {

using Clock = std::chrono::steady_clock;
inline constexpr auto kNoDeadline = Clock::time_point::max();

/// The handler a coroutine awaiting a slot provides (use_awaitable, void()). Stored by its
/// concrete type: Boost 1.81's any_completion_handler recurses forever in its move
/// assignment, and the concrete type also saves an allocation per request.
using WaitHandler = boost::asio::detail::awaitable_handler<boost::asio::any_io_executor>;

/// How a request's replies are kept.
enum class ReplyMode : std::uint8_t {
  single,  ///< one reply, in `Slot::reply`.
  multi,   ///< every reply, in order, in `Slot::replies` (pipelines, xadd_bulk).
  count,   ///< only counted (`added`), the first error reply kept (xadd_bulk_count).
};

/// How a finished request's waiting caller is resumed (`MultiplexerEvents::resume`).
enum class Resume : std::uint8_t {
  post,                 ///< later, from the executor's queue.
  inline_,              ///< now: the reader delivers a reply (it flushes after its batch).
  from_cancel_handler,  ///< now, from the caller's own cancellation handler.
};

struct Slot {
  enum class Phase : std::uint8_t { queued, writing, sent };
  Phase phase = Phase::queued;
  bool in_fifo = false;    ///< still waiting for (some of) its replies, or still queued.
  bool owned = false;      ///< a caller holds a SlotHandle.
  bool completed = false;  ///< the result (or error) is final; later replies are dropped.
  bool internal = false;   ///< the health check's PING (no caller).
  ReplyMode mode = ReplyMode::single;
  std::uint32_t expected = 0;
  std::uint32_t received = 0;
  static constexpr std::uint32_t kNoError = ~std::uint32_t{0};
  std::uint32_t added = 0;  ///< count mode: replies other than nil and errors.
  /// count mode: index of the first error reply (kept in `reply`), or kNoError.
  std::uint32_t first_error = kNoError;
  std::size_t bytes = 0;
  Clock::time_point deadline = kNoDeadline;
  Clock::time_point written_at{};  ///< when its bytes went to the socket (round trip).
  Reply reply;
  std::vector<Reply> replies;
  std::exception_ptr error;
  std::array<char, 24> name{};        ///< command name, for errors and logs...
  const char* static_name = nullptr;  ///< ... or this literal, when the caller named it.
  std::optional<WaitHandler> waiter;
  boost::asio::cancellation_slot cancel_slot;
  core::CircuitBreakerPermit permit;

  std::string_view command_name() const noexcept {
    return std::string_view(static_name != nullptr ? static_name : name.data());
  }
};

/// What the multiplexer asks of its owner.
class MultiplexerEvents {
 public:
  /// `slot` is complete and its caller waits in `slot.waiter`: resume it as `how` says. The
  /// caller may release the slot while it runs: touch nothing of it afterwards.
  virtual void resume(Slot& slot, Resume how) noexcept = 0;
  /// A request completed (with or without a waiting caller).
  virtual void request_finished() noexcept = 0;

 protected:
  ~MultiplexerEvents() = default;
};

class Multiplexer;

/// The caller's claim on a submitted request. Releasing it without taking the result
/// abandons the request (its reply, if it comes, is dropped).
class SlotHandle {
 public:
  SlotHandle() = default;
  SlotHandle(Multiplexer* mux, Slot* slot) noexcept : mux_(mux), slot_(slot) {}
  SlotHandle(SlotHandle&& other) noexcept
      : mux_(std::exchange(other.mux_, nullptr)), slot_(std::exchange(other.slot_, nullptr)) {}
  SlotHandle& operator=(SlotHandle&& other) noexcept {
    if (this != &other) {
      reset();
      mux_ = std::exchange(other.mux_, nullptr);
      slot_ = std::exchange(other.slot_, nullptr);
    }
    return *this;
  }
  SlotHandle(const SlotHandle&) = delete;
  SlotHandle& operator=(const SlotHandle&) = delete;
  ~SlotHandle() { reset(); }
  void reset() noexcept;
  Multiplexer* multiplexer() const noexcept { return mux_; }
  Slot* slot() const noexcept { return slot_; }

 private:
  Multiplexer* mux_ = nullptr;
  Slot* slot_ = nullptr;
};

/// Copies the command name out of an encoded command ("*N\r\n$L\r\nNAME\r\n...") for errors
/// and logs, upper-cased and truncated to fit.
void copy_command_name(std::string_view encoded, std::array<char, 24>& name) noexcept;

class Multiplexer {
 public:
  /// `description` ("host:port/db") goes into error messages; `stats` is the client's
  /// (commands, replies, failures, timeouts, cancellations, dropped replies, health checks).
  Multiplexer(std::string description, RedisStats& stats, MultiplexerEvents& events);
  Multiplexer(const Multiplexer&) = delete;
  Multiplexer& operator=(const Multiplexer&) = delete;

  // ---- submission ----------------------------------------------------------------------
  /// A new request expecting `replies` replies: encode it into `send_buffer()` after
  /// `send_buffer().size()` (its start), then `commit` or `abort`.
  Slot* begin(std::size_t replies, ReplyMode mode, Clock::time_point deadline);
  std::string& send_buffer() noexcept { return pending_; }
  /// Queues the request encoded since `start`. `name`: the command's name when the caller
  /// knows it (a string literal), else it is read back from the bytes.
  SlotHandle commit(Slot* slot, std::size_t start, const char* name) noexcept;
  /// Takes back a request whose encoding failed: its bytes and its slot.
  void abort(Slot* slot, std::size_t start) noexcept;
  /// Queues the health check's PING (no caller, no deadline).
  void push_ping();
  /// The caller gave the slot back (SlotHandle): before completion, an abandonment.
  void release(Slot* slot) noexcept;
  /// Gives up the request: removed from the send buffer if still queued, else its replies are
  /// dropped when they come. Fails it as `cancelled`.
  void cancel(Slot* slot) noexcept;

  // ---- write path ----------------------------------------------------------------------
  /// Moves every queued request's bytes to the write buffer and returns them (empty when
  /// nothing is queued). Call only when no write is in progress. `now`: the time of the write.
  std::string_view prepare_write(Clock::time_point now) noexcept;
  /// The bytes of `prepare_write` were all written: their requests are `sent`.
  void write_done() noexcept;
  bool has_queued_bytes() const noexcept { return !pending_.empty(); }

  // ---- read path -----------------------------------------------------------------------
  /// The connection's RESP parser (also used by its handshake; `reset` on connect).
  ReplyBuilder& parser() noexcept { return parser_; }
  /// Hands over bytes read at `now` (borrowed: call `deliver_next` until it returns `none`
  /// before the buffer is reused, or `parser().keep_rest()`).
  void feed(const char* data, std::size_t size, Clock::time_point now);
  enum class Delivery : std::uint8_t {
    none,        ///< no complete reply buffered.
    delivered,   ///< one reply went to the request it answers.
    unexpected,  ///< a reply nobody waits for: the connection is out of sync.
  };
  /// Parses the next reply and delivers it (may resume its caller inline). Throws
  /// `protocol_error` on bad input.
  Delivery deliver_next();
  /// The reply of the last `unexpected` delivery.
  const Reply& unexpected_reply() const noexcept { return read_reply_; }

  // ---- failures ------------------------------------------------------------------------
  /// The connection is gone: every request written (or being written) fails with `error`'s
  /// code, as `sent` (their outcome is unknown); abandoned ones leave silently. Queued ones
  /// stay for the next connection. Returns how many were in flight, and whether one of them
  /// reported the loss to the breaker (only the first does).
  struct Lost {
    std::size_t in_flight = 0;
    bool reported = false;
  };
  Lost fail_in_flight(const std::string& context) noexcept;
  /// Fails every request with `code` (close).
  void fail_all(errc code, std::string_view why) noexcept;
  /// Fails every queued request with `error` (a permanent connect error).
  void fail_queued(const std::exception_ptr& error) noexcept;
  /// Fails the requests whose deadline is at or before `now` (`write_timeout` if queued: they
  /// leave the send buffer; `request_timeout` if sent: their replies will be dropped).
  /// Returns the next deadline (kNoDeadline: none).
  Clock::time_point sweep(Clock::time_point now);

  // ---- state ---------------------------------------------------------------------------
  std::size_t size() const noexcept { return fifo_.size(); }
  bool empty() const noexcept { return fifo_.empty(); }
  std::size_t queued() const noexcept { return queued_count_; }
  /// Requests written and not yet answered (abandoned included).
  std::size_t outstanding() const noexcept { return fifo_.size() - queued_count_; }
  /// Requests a caller still waits for (not abandoned, not the health check's).
  std::size_t active() const noexcept;
  Clock::time_point last_read() const noexcept { return last_read_; }
  /// Since when replies are awaited: the last reply, or the write that followed a quiet time.
  Clock::time_point waiting_since() const noexcept { return waiting_since_; }
  /// A new connection: the read and wait clocks start at `now`.
  void connected(Clock::time_point now) noexcept { last_read_ = waiting_since_ = now; }
  /// Where each answered request's round trip goes (from its write to the read of its last
  /// reply; both times the connection reads anyway, so no clock read is added). Null: none.
  void set_round_trip(core::Histogram* histogram) noexcept { round_trip_ = histogram; }

 private:
  Slot* allocate();
  void recycle(Slot* slot) noexcept;
  void finish(Slot* slot, std::exception_ptr error, Resume resume = Resume::post) noexcept;
  void finish_ok(Slot* slot, Resume resume) noexcept;
  void remove_queued(Slot* slot) noexcept;
  Reply& reply_target() noexcept;
  bool deliver(Reply& reply);

  std::string description_;
  RedisStats& stats_;
  MultiplexerEvents& events_;
  ReplyBuilder parser_;
  std::string pending_;
  std::string writing_;
  std::deque<Slot*> fifo_;
  std::size_t queued_count_ = 0;
  std::size_t writing_count_ = 0;
  Reply read_reply_;
  Clock::time_point last_read_{};
  Clock::time_point waiting_since_{};
  std::vector<Slot*> expired_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  core::Histogram* round_trip_ = nullptr;
};

// The reader's per-reply loop calls these (inline: a call per reply is measurable in the
// per-entry cost of a pipeline, bench R1).

// Where the next reply is parsed: straight into the slot of the live single request it
// answers (no move afterwards), else into `read_reply_` (pipelines, dropped replies).
inline Reply& Multiplexer::reply_target() noexcept {
  if (outstanding() > 0) {
    Slot* slot = fifo_.front();
    if (slot->mode == ReplyMode::single && !slot->completed) return slot->reply;
  }
  return read_reply_;
}

inline Multiplexer::Delivery Multiplexer::deliver_next() {
  Reply& reply = reply_target();
  if (!parser_.next(reply)) return Delivery::none;
  return deliver(reply) ? Delivery::delivered : Delivery::unexpected;
}

}  // namespace trading_shared::redis::detail

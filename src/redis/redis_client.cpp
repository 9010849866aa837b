// RedisClient: one multiplexed connection with automatic pipelining (docs/redis.md).
//
// Data structures (all touched from the client's executor only):
// - `pending_`: the encoded bytes of every request not yet handed to the socket, in FIFO order.
//   Callers encode straight into it (RedisClient::command); a request given up before it is
//   written has its bytes cut out again.
// - `writing_`: the bytes of the write in progress (swapped with `pending_` by the writer,
//   so one write carries every request queued since the last one).
// - `fifo_`: the requests, oldest first. From the front: requests written (phase `sent` or
//   `writing`; `outstanding()` of them), then `queued_count_` requests whose bytes are in
//   `pending_`. Replies are matched to the front; a request whose caller gave up after it
//   was written stays in place (`completed`) and its reply is dropped.
// - `Slot`s come from a free list; a slot is recycled when it has left the FIFO and its
//   caller released it (`SlotHandle`).

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/timeout.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include "detail/reply_builder.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace trading_shared::redis {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("redis");
  return logger;
}

/// An exception's text for a log line: Boost's system errors without their source location
/// ("Connection refused", not "Connection refused [system:111 at /usr/include/...]").
std::string describe(const std::exception& e) {
  if (const auto* system = dynamic_cast<const boost::system::system_error*>(&e)) {
    return system->code().message();
  }
  return e.what();
}

long long ms_count(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

constexpr auto kNoDeadline = Clock::time_point::max();

}  // namespace

namespace detail {

/// The handler a coroutine awaiting `ClientCore::wait` provides (use_awaitable, void()).
/// Stored by its concrete type: Boost 1.81's any_completion_handler recurses forever in its
/// move assignment, and the concrete type also saves an allocation per request.
using WaitHandler = asio::detail::awaitable_handler<asio::any_io_executor>;

struct Slot {
  enum class Phase : std::uint8_t { queued, writing, sent };
  Phase phase = Phase::queued;
  bool in_fifo = false;     ///< still waiting for (some of) its replies, or still queued.
  bool owned = false;       ///< a caller holds a SlotHandle.
  bool completed = false;   ///< the result (or error) is final; later replies are dropped.
  bool internal = false;    ///< the health check's PING (no caller).
  bool multi = false;       ///< pipeline: all replies go to `replies`...
  bool count_only = false;  ///< ... or, with `multi`, are only counted (`added`, first error).
  std::uint32_t expected = 0;
  std::uint32_t received = 0;
  static constexpr std::uint32_t kNoError = ~std::uint32_t{0};
  std::uint32_t added = 0;  ///< count_only: replies other than nil and errors.
  /// count_only: index of the first error reply (kept in `reply`), or kNoError.
  std::uint32_t first_error = kNoError;
  std::size_t bytes = 0;
  Clock::time_point deadline = kNoDeadline;
  Reply reply;
  std::vector<Reply> replies;
  std::exception_ptr error;
  std::array<char, 24> name{};        ///< command name, for errors and logs...
  const char* static_name = nullptr;  ///< ... or this literal, when the caller named it.
  std::optional<WaitHandler> waiter;
  asio::cancellation_slot cancel_slot;
  core::CircuitBreakerPermit permit;

  std::string_view command_name() const noexcept {
    return std::string_view(static_name != nullptr ? static_name : name.data());
  }
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  ClientCore(asio::any_io_executor executor, RedisConfig config);
  ~ClientCore();

  asio::awaitable<void> start();
  asio::awaitable<void> close();
  /// The owning RedisClient is being destroyed: close every socket and stop every task now.
  void abandon() noexcept;

  Submission begin_submit(const CommandOptions& options, std::size_t replies, bool multi,
                          bool count_only);
  SlotHandle commit(const Submission& submission) noexcept;
  void abort_submit(const Submission& submission) noexcept;
  void release(Slot* slot) noexcept;
  asio::awaitable<void> wait(Slot* slot);
  void cancel(Slot* slot) noexcept;
  asio::awaitable<Reply> blocking(std::string encoded, milliseconds block);

  RedisStats stats() noexcept;
  const RedisConfig& config() const noexcept { return config_; }
  const std::string& description() const noexcept { return description_; }
  const asio::any_io_executor& executor() const noexcept { return executor_; }

 private:
  enum class State : std::uint8_t { created, starting, running, closing, closed };

  struct Dedicated {
    explicit Dedicated(const asio::any_io_executor& ex) : socket(ex) {}
    tcp::socket socket;
    ReplyBuilder builder;
    std::array<char, std::size_t{16} * 1024> buffer{};
    bool busy = false;
    bool wrote = false;  // the current command was (partly) written
  };

  std::size_t outstanding() const noexcept { return fifo_.size() - queued_count_; }
  Slot* allocate();
  void recycle(Slot* slot) noexcept;
  enum class Resume : std::uint8_t { post, inline_, from_cancel_handler };
  void finish(Slot* slot, std::exception_ptr error, Resume resume = Resume::post) noexcept;
  void finish_ok(Slot* slot, Resume resume) noexcept;
  void remove_queued(Slot* slot) noexcept;
  Reply& reply_target() noexcept;
  bool deliver(Reply& reply);
  void drop_connection(std::error_code ec, std::string_view what);
  void schedule_flush() noexcept;
  /// `now`: the caller's current time if it has one (the reader's), else read here.
  void flush(Clock::time_point now = {}) noexcept;
  void write_done(std::uint64_t generation, boost::system::error_code ec,
                  Clock::time_point now) noexcept;
  void arm_sweeper(Clock::time_point deadline) noexcept;
  void sweep(Clock::time_point now);
  void submit_health_ping();
  void fail_all(errc code, std::string_view why) noexcept;
  void fail_queued(const std::exception_ptr& error) noexcept;
  std::size_t active() const noexcept;
  Clock::duration timeout_of(const CommandOptions& options) const noexcept;

  asio::awaitable<void> connect_socket(tcp::socket& socket, ReplyBuilder& builder);
  asio::awaitable<void> connect_shared();
  asio::awaitable<void> supervise();
  asio::awaitable<void> sweep_loop();
  void start_read(std::uint64_t generation);
  void on_read(std::uint64_t generation, boost::system::error_code ec, std::size_t n) noexcept;
  void reader_stopped() noexcept;
  asio::awaitable<void> health_loop(std::uint64_t generation);
  asio::awaitable<Reply> exchange(Dedicated& connection, const std::string& encoded);
  void spawn_task(asio::awaitable<void> task, const char* name);

  asio::any_io_executor executor_;
  RedisConfig config_;
  RedisEndpoint endpoint_;
  std::string description_;
  core::DefaultRandom random_;
  core::CircuitBreaker breaker_;

  State state_ = State::created;
  std::exception_ptr start_error_;
  asio::steady_timer state_changed_;  // cancelled on start/close transitions

  // The shared connection.
  tcp::socket socket_;
  ReplyBuilder builder_;
  bool connected_ = false;
  std::uint64_t generation_ = 0;  // incremented on every connect and drop
  std::string pending_;
  std::string writing_;
  std::deque<Slot*> fifo_;
  std::size_t queued_count_ = 0;
  std::size_t writing_count_ = 0;
  bool write_in_progress_ = false;  // an async write of `writing_` is running
  bool flush_scheduled_ = false;    // a posted flush() is pending
  bool in_delivery_ = false;        // the reader is delivering replies (it flushes after)
  bool reading_ = false;            // a read of the shared connection is outstanding
  asio::steady_timer reader_done_;  // supervise(): woken when the reader stops
  asio::steady_timer health_timer_;
  asio::steady_timer reconnect_timer_;
  asio::steady_timer sweep_timer_;
  asio::steady_timer idle_event_;  // close(): woken when a request finishes
  std::vector<char> read_buffer_;
  Reply read_reply_;
  Clock::time_point last_read_{};
  Clock::time_point last_write_{};
  Clock::time_point waiting_since_{};
  std::vector<Slot*> expired_;

  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;

  std::vector<std::unique_ptr<Dedicated>> dedicated_;
  std::size_t blocking_active_ = 0;

  std::size_t tasks_ = 0;
  asio::cancellation_signal connect_cancel_;  // close() cuts a connect attempt short
  asio::steady_timer tasks_done_;

  RedisStats stats_;
};

namespace {

/// The cancellation handler installed in a waiting caller's cancellation slot.
struct Canceller {
  ClientCore* core;
  Slot* slot;
  void operator()(asio::cancellation_type type) const noexcept {
    if (type != asio::cancellation_type::none) {
      ClientCore* c = core;
      Slot* s = slot;
      c->cancel(s);  // may destroy this handler: touch nothing of it afterwards
    }
  }
};

/// Copies the command name out of an encoded command ("*N\r\n$L\r\nNAME\r\n...") for errors
/// and logs, upper-cased and truncated to fit.
void copy_command_name(std::string_view encoded, std::array<char, 24>& name) noexcept {
  // Skip "*N\r\n", then read L of "$L\r\n".
  std::size_t pos = 1;
  while (pos < encoded.size() && encoded[pos] != '\n') ++pos;
  pos += 2;  // past '\n' and '$'
  std::size_t length = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    length = length * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;  // past "\r\n"
  if (pos >= encoded.size()) {
    name[0] = '\0';
    return;
  }
  const std::size_t n = std::min({length, name.size() - 1, encoded.size() - pos});
  for (std::size_t i = 0; i < n; ++i) {
    const char c = encoded[pos + i];
    name[i] = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
  }
  name[n] = '\0';
}

/// Whether the calling coroutine was cancelled (with `throw_if_cancelled(false)` in effect).
asio::awaitable<bool> caller_cancelled() {
  const auto state = co_await asio::this_coro::cancellation_state;
  co_return state.cancelled() != asio::cancellation_type::none;
}

std::exception_ptr make_error(errc code, const std::string& context, RequestState state) {
  return std::make_exception_ptr(Error(make_error_code(code), context, state));
}

}  // namespace

// ---- construction --------------------------------------------------------------------------

ClientCore::ClientCore(asio::any_io_executor executor, RedisConfig config)
    : executor_(std::move(executor)),
      config_((validate(config), std::move(config))),
      endpoint_(parse_redis_url(config_.url)),
      description_(endpoint_.describe()),
      breaker_(
          [&] {
            auto b = config_.breaker;
            if (b.name.empty()) b.name = "redis " + description_;
            return b;
          }(),
          core::SteadyClock::instance(), random_),
      state_changed_(executor_, kNoDeadline),
      socket_(executor_),
      reader_done_(executor_, kNoDeadline),
      health_timer_(executor_),
      reconnect_timer_(executor_),
      sweep_timer_(executor_, kNoDeadline),
      idle_event_(executor_, kNoDeadline),
      read_buffer_(std::size_t{64} * 1024),
      tasks_done_(executor_, kNoDeadline) {}

ClientCore::~ClientCore() {
  boost::system::error_code ignored;
  socket_.close(ignored);
  for (auto& d : dedicated_) d->socket.close(ignored);
}

void ClientCore::abandon() noexcept {
  if (state_ == State::created || state_ == State::closed) {
    state_ = State::closed;
    return;
  }
  log()->warn(
      "RedisClient {} destroyed without close(): failing its requests and closing its "
      "sockets now",
      description_);
  state_ = State::closed;
  connect_cancel_.emit(asio::cancellation_type::terminal);
  fail_all(errc::client_closed, "client destroyed without close()");
  if (connected_) drop_connection(make_error_code(errc::client_closed), "destroyed");
  boost::system::error_code ignored;
  socket_.close(ignored);
  for (auto& d : dedicated_) d->socket.close(ignored);
  reconnect_timer_.cancel();
  sweep_timer_.cancel();
  health_timer_.cancel();
  state_changed_.cancel();
}

Clock::duration ClientCore::timeout_of(const CommandOptions& options) const noexcept {
  return options.timeout > milliseconds::zero() ? options.timeout : config_.command_timeout;
}

// ---- slots ---------------------------------------------------------------------------------

Slot* ClientCore::allocate() {
  if (!free_.empty()) {
    Slot* slot = free_.back();
    free_.pop_back();
    return slot;
  }
  slots_.push_back(std::make_unique<Slot>());
  return slots_.back().get();
}

void ClientCore::recycle(Slot* slot) noexcept {
  slot->phase = Slot::Phase::queued;
  slot->in_fifo = slot->owned = slot->completed = slot->internal = slot->multi = false;
  slot->count_only = false;
  slot->expected = slot->received = slot->added = 0;
  slot->first_error = Slot::kNoError;
  slot->bytes = 0;
  slot->deadline = kNoDeadline;
  slot->replies.clear();
  slot->error = nullptr;
  slot->name[0] = '\0';
  slot->static_name = nullptr;
  slot->waiter.reset();
  slot->cancel_slot = {};
  slot->permit.ignore();
  free_.push_back(slot);
}

void ClientCore::release(Slot* slot) noexcept {
  slot->owned = false;
  if (!slot->completed) {
    // Abandoned before completion (the awaitable was destroyed): same as a cancellation;
    // finish() recycles the slot if it has left the FIFO.
    cancel(slot);
    return;
  }
  if (!slot->in_fifo) recycle(slot);
}

Submission ClientCore::begin_submit(const CommandOptions& options, std::size_t replies, bool multi,
                                    bool count_only) {
  Submission s;
  if (state_ != State::running) {
    ++stats_.rejected;
    s.error = make_error(state_ == State::closing || state_ == State::closed ? errc::client_closed
                                                                             : errc::not_started,
                         "RedisClient " + description_, RequestState::not_sent);
    return s;
  }
  if (fifo_.size() >= config_.max_queued) {
    ++stats_.rejected;
    s.error = make_error(errc::queue_full,
                         "RedisClient " + description_ + ": " + std::to_string(fifo_.size()) +
                             " requests queued or in flight (max_queued)",
                         RequestState::not_sent);
    return s;
  }
  auto admission = breaker_.try_acquire();
  if (!admission) {
    ++stats_.rejected;
    s.error = std::make_exception_ptr(breaker_.make_error(*admission.rejection()));
    return s;
  }
  Slot* slot = allocate();
  slot->permit = std::move(admission).permit();
  slot->expected = static_cast<std::uint32_t>(replies);
  slot->multi = multi;
  slot->count_only = multi && count_only;
  if (multi && !count_only) slot->replies.reserve(replies);
  slot->deadline = Clock::now() + timeout_of(options);
  s.buffer = &pending_;
  s.slot = slot;
  s.start = pending_.size();
  return s;
}

SlotHandle ClientCore::commit(const Submission& submission) noexcept {
  Slot* slot = submission.slot;
  slot->bytes = pending_.size() - submission.start;
  if (submission.command_name != nullptr) {
    slot->static_name = submission.command_name;  // a typed helper: no need to parse it back
  } else {
    copy_command_name(std::string_view(pending_).substr(submission.start), slot->name);
  }
  slot->in_fifo = true;
  slot->owned = true;
  slot->phase = Slot::Phase::queued;
  fifo_.push_back(slot);
  ++queued_count_;
  ++stats_.commands;
  arm_sweeper(slot->deadline);
  schedule_flush();
  return SlotHandle(this, slot);
}

// Automatic pipelining: a request is not written when it is submitted but when the current
// handler is done, together with everything submitted meanwhile. Inside the reader's delivery
// loop (callers resumed inline by their replies) the reader flushes after the loop; elsewhere
// one posted flush serves every request submitted before it runs.
void ClientCore::schedule_flush() noexcept {
  if (!connected_ || write_in_progress_ || flush_scheduled_ || in_delivery_) return;
  flush_scheduled_ = true;
  asio::post(executor_, [self = shared_from_this()] {
    self->flush_scheduled_ = false;
    self->flush();
  });
}

// Writes `pending_`: first synchronously (non-blocking socket: no handler, no wake-up when the
// kernel takes it all, the common case), the rest, if any, with an async write.
void ClientCore::flush(Clock::time_point now) noexcept {
  if (!connected_ || write_in_progress_ || pending_.empty()) return;
  // One clock read per flush (the reader passes the time of its read, taken just before).
  if (now == Clock::time_point{}) now = Clock::now();
  std::swap(pending_, writing_);
  pending_.clear();
  if (outstanding() == 0) waiting_since_ = now;
  for (std::size_t i = outstanding(); i < fifo_.size(); ++i) {
    fifo_[i]->phase = Slot::Phase::writing;
  }
  writing_count_ += queued_count_;
  queued_count_ = 0;
  boost::system::error_code ec;
  const std::size_t n = socket_.write_some(asio::buffer(writing_), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
  if (ec || n == writing_.size()) {
    write_done(generation_, ec, now);
    return;
  }
  write_in_progress_ = true;
  asio::async_write(socket_, asio::buffer(writing_.data() + n, writing_.size() - n),
                    [self = shared_from_this(), generation = generation_](
                        boost::system::error_code e, std::size_t) {
                      // A write of an older connection leaves the current one's flag alone.
                      if (generation == self->generation_) self->write_in_progress_ = false;
                      self->write_done(generation, e, Clock::now());
                    });
}

void ClientCore::write_done(std::uint64_t generation, boost::system::error_code ec,
                            Clock::time_point now) noexcept {
  if (generation != generation_) return;  // that connection is gone; its slots failed already
  if (ec) {
    drop_connection(ec, "write");
    return;
  }
  ++stats_.writes;
  last_write_ = now;
  const std::size_t end = outstanding();
  for (std::size_t i = end - writing_count_; i < end; ++i) fifo_[i]->phase = Slot::Phase::sent;
  writing_count_ = 0;
  writing_.clear();
  if (!pending_.empty()) schedule_flush();
}

void ClientCore::abort_submit(const Submission& submission) noexcept {
  pending_.resize(submission.start);
  submission.slot->permit.ignore();
  recycle(submission.slot);
}

void ClientCore::arm_sweeper(Clock::time_point deadline) noexcept {
  if (deadline < sweep_timer_.expiry()) sweep_timer_.expires_at(deadline);
}

void ClientCore::finish(Slot* slot, std::exception_ptr error, Resume resume) noexcept {
  slot->completed = true;
  slot->error = std::move(error);
  if (slot->error) {
    const ErrorKind kind = classify(slot->error);
    if (kind == ErrorKind::cancelled) {
      slot->permit.ignore();
    } else {
      ++stats_.failures;
      slot->permit.record(kind);
    }
  }
  if (state_ == State::closing) idle_event_.cancel();
  if (!slot->waiter) {
    if (!slot->owned && !slot->in_fifo) recycle(slot);
    return;
  }
  if (resume != Resume::from_cancel_handler && slot->cancel_slot.is_connected()) {
    slot->cancel_slot.clear();
  }
  slot->cancel_slot = {};
  WaitHandler waiter = std::move(*slot->waiter);
  slot->waiter.reset();
  if (resume == Resume::inline_) {
    // Only the reader resumes callers inline (it re-checks its connection afterwards): the
    // caller runs until its next suspension, and the requests it makes meanwhile are flushed
    // by the reader after its batch. Touch nothing of the slot afterwards: the caller may
    // have released it.
    try {
      std::move(waiter)();
    } catch (...) {
      // A completion handler of the resumed caller threw (e.g. a co_spawn handler that
      // rethrows): let it propagate out of the io_context's run(), as it would without us.
      asio::post(executor_, [e = std::current_exception()] { std::rethrow_exception(e); });
    }
  } else {
    asio::post(executor_, [w = std::move(waiter)]() mutable { std::move(w)(); });
  }
}

void ClientCore::finish_ok(Slot* slot, Resume resume) noexcept {
  // The breaker hears about error replies that say something about the endpoint
  // (LOADING, BUSY, MASTERDOWN); business errors (WRONGTYPE) are ignored (core docs).
  const Reply* error_reply = nullptr;
  if (slot->count_only) {
    if (slot->first_error != Slot::kNoError) error_reply = &slot->reply;
  } else if (slot->multi) {
    for (const auto& r : slot->replies) {
      if (r.is_error()) {
        error_reply = &r;
        break;
      }
    }
  } else if (slot->reply.is_error()) {
    error_reply = &slot->reply;
  }
  if (error_reply != nullptr) {
    slot->permit.record(classify_error_prefix(error_reply->error_prefix()));
  } else {
    slot->permit.success();
  }
  finish(slot, nullptr, resume);
}

void ClientCore::remove_queued(Slot* slot) noexcept {
  std::size_t offset = 0;
  for (std::size_t i = outstanding(); i < fifo_.size(); ++i) {
    if (fifo_[i] == slot) {
      pending_.erase(offset, slot->bytes);
      fifo_.erase(fifo_.begin() + static_cast<std::ptrdiff_t>(i));
      --queued_count_;
      slot->in_fifo = false;
      return;
    }
    offset += fifo_[i]->bytes;
  }
}

void ClientCore::cancel(Slot* slot) noexcept {
  if (slot->completed) return;
  ++stats_.cancellations;
  const bool queued = slot->in_fifo && slot->phase == Slot::Phase::queued;
  if (queued) remove_queued(slot);
  finish(slot,
         make_error(errc::cancelled,
                    "Redis " + std::string(slot->command_name()) +
                        (queued ? ": cancelled before it was sent"
                                : ": cancelled after it was sent (its reply will be dropped)"),
                    queued ? RequestState::not_sent : RequestState::sent),
         Resume::from_cancel_handler);
}

asio::awaitable<void> ClientCore::wait(Slot* slot) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [this, slot](auto handler) {
        static_assert(std::is_same_v<decltype(handler), WaitHandler>,
                      "ClientCore::wait is only awaited with use_awaitable");
        auto cs = asio::get_associated_cancellation_slot(handler);
        if (cs.is_connected()) {
          slot->cancel_slot = cs;
          cs.template emplace<Canceller>(Canceller{this, slot});
        }
        slot->waiter.emplace(std::move(handler));
      },
      asio::use_awaitable);
}

// ---- replies -------------------------------------------------------------------------------

// Where the reader parses the next reply: straight into the slot of the live single request
// it answers (no move afterwards), else into `read_reply_` (pipelines, dropped replies).
Reply& ClientCore::reply_target() noexcept {
  if (outstanding() > 0) {
    Slot* slot = fifo_.front();
    if (!slot->multi && !slot->completed) return slot->reply;
  }
  return read_reply_;
}

bool ClientCore::deliver(Reply& reply) {
  if (outstanding() == 0) return false;  // a reply nobody is waiting for: out of sync
  Slot* slot = fifo_.front();
  ++stats_.replies;
  if (!slot->completed) {
    if (slot->count_only) {
      if (reply.is_error()) {
        if (slot->first_error == Slot::kNoError) {
          slot->first_error = slot->received;
          swap(slot->reply, reply);
        }
      } else if (!reply.is_nil()) {
        ++slot->added;
      }
    } else if (slot->multi) {
      slot->replies.push_back(std::move(reply));
    } else if (&reply != &slot->reply) {
      swap(slot->reply, reply);  // the slot's old buffers are reused for the next reply
    }
  }
  if (++slot->received < slot->expected) return true;
  fifo_.pop_front();
  slot->in_fifo = false;
  if (slot->phase == Slot::Phase::writing) --writing_count_;
  waiting_since_ = last_read_;
  if (slot->completed) {
    ++stats_.dropped_replies;
    if (!slot->owned) recycle(slot);
  } else if (slot->internal) {
    slot->permit.ignore();
    recycle(slot);
  } else {
    finish_ok(slot, Resume::inline_);
  }
  return true;
}

// ---- connection ----------------------------------------------------------------------------

asio::awaitable<void> ClientCore::connect_socket(tcp::socket& socket, ReplyBuilder& builder) {
  tcp::resolver resolver(executor_);
  const auto endpoints = co_await resolver.async_resolve(
      endpoint_.host, std::to_string(endpoint_.port), asio::use_awaitable);
  socket = tcp::socket(executor_);
  co_await asio::async_connect(socket, endpoints, asio::use_awaitable);
  socket.set_option(tcp::no_delay(true));
  socket.set_option(asio::socket_base::keep_alive(true));

  // Handshake: [AUTH] [SELECT] CLIENT SETNAME, then PING (answers LOADING while the server
  // loads its data: such a connection is not used yet).
  std::string hello;
  std::size_t expected = 0;
  if (!endpoint_.password.empty()) {
    if (endpoint_.user.empty()) {
      encode_command(hello, "AUTH", endpoint_.password);
    } else {
      encode_command(hello, "AUTH", endpoint_.user, endpoint_.password);
    }
    ++expected;
  }
  if (endpoint_.db != 0) {
    encode_command(hello, "SELECT", endpoint_.db);
    ++expected;
  }
  if (!config_.client_name.empty()) {
    encode_command(hello, "CLIENT", "SETNAME", config_.client_name);
    ++expected;
  }
  encode_command(hello, "PING");
  ++expected;
  co_await asio::async_write(socket, asio::buffer(hello), asio::use_awaitable);

  builder.reset();
  std::array<char, 4096> buffer{};
  Reply reply;
  std::size_t got = 0;
  while (got < expected) {
    const std::size_t n =
        co_await socket.async_read_some(asio::buffer(buffer), asio::use_awaitable);
    builder.feed(buffer.data(), n);
    while (got < expected && builder.next(reply)) {
      ++got;
      if (reply.is_error()) {
        throw make_server_error(reply.error_message(),
                                "Redis " + description_ + ": connection handshake",
                                RequestState::sent);
      }
    }
  }
  builder.keep_rest();  // `buffer` is about to go: nothing may stay borrowed from it
}

asio::awaitable<void> ClientCore::connect_shared() {
  tcp::socket socket(executor_);
  co_await core::with_timeout(connect_socket(socket, builder_), config_.connect_timeout,
                              errc::connect_timeout, "Redis " + description_ + ": connect",
                              RequestState::not_sent);
  if (state_ == State::closed) {
    throw Error(make_error_code(errc::client_closed), "Redis " + description_ + ": closed",
                RequestState::not_sent);
  }
  socket_ = std::move(socket);
  connected_ = true;
  ++generation_;
  ++stats_.connects;
  const auto now = Clock::now();
  last_read_ = last_write_ = waiting_since_ = now;
  socket_.non_blocking(true);  // flush() writes synchronously and must never block
  write_in_progress_ = false;
  flush();  // requests that waited for this connection
}

void ClientCore::drop_connection(std::error_code ec, std::string_view what) {
  if (!connected_) return;
  connected_ = false;
  ++generation_;
  ++stats_.disconnects;
  boost::system::error_code ignored;
  socket_.close(ignored);
  write_in_progress_ = false;  // an async write of the old socket ends with an error, ignored
  health_timer_.cancel();
  const std::size_t lost = outstanding();
  if (state_ == State::running) {
    log()->warn(
        "Redis {}: connection lost ({}: {}); {} request(s) in flight fail as "
        "outcome unknown, {} queued wait for the reconnect",
        description_, what, ec.message(), lost, queued_count_);
  }
  const std::string context = "Redis " + description_ + ": connection lost (" + std::string(what) +
                              ": " + ec.message() + ")";
  // One lost connection is one failure of the endpoint, however many requests were in
  // flight on it: only the first request's failure reaches the breaker (docs/decisions.md).
  bool counted = false;
  for (std::size_t i = 0; i < lost; ++i) {
    Slot* slot = fifo_.front();
    fifo_.pop_front();
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      if (slot->permit.active()) {
        if (counted) slot->permit.ignore();
        counted = true;
      }
      finish(slot, make_error(errc::connection_lost, context, RequestState::sent));
    }
  }
  if (!counted && lost > 0) {
    // Only abandoned requests or a health-check PING were in flight: the loss still counts.
    if (auto admission = breaker_.try_acquire()) admission.permit().failure();
  }
  writing_count_ = 0;
  writing_.clear();
  reconnect_timer_.cancel();
}

// The reader is a plain completion handler, not a coroutine: it runs once per read of the
// shared connection, and an awaitable frame, its cancellation slot and its pump cost about a
// sixth of a GET's instructions (callgrind). supervise() waits for it to stop.
void ClientCore::start_read(std::uint64_t generation) {
  socket_.async_read_some(asio::buffer(read_buffer_),
                          [this, generation](boost::system::error_code ec, std::size_t n) {
                            on_read(generation, ec, n);
                          });
}

void ClientCore::reader_stopped() noexcept {
  in_delivery_ = false;
  reading_ = false;
  reader_done_.cancel();
}

void ClientCore::on_read(std::uint64_t generation, boost::system::error_code ec,
                         std::size_t n) noexcept {
  if (generation != generation_) {
    reader_stopped();
    return;
  }
  if (ec) {
    drop_connection(ec, "read");
    reader_stopped();
    return;
  }
  last_read_ = Clock::now();
  try {
    builder_.feed(read_buffer_.data(), n);
    in_delivery_ = true;
    for (;;) {
      Reply& reply = reply_target();
      if (!builder_.next(reply)) break;
      const bool delivered = deliver(reply);
      if (generation != generation_) {  // a caller resumed inline closed the client
        reader_stopped();
        return;
      }
      if (!delivered) {
        log()->error(
            "Redis {}: a reply arrived with no request waiting for it ({}); the "
            "connection is out of sync and is closed",
            description_, read_reply_.debug_string());
        drop_connection(make_error_code(errc::protocol_error), "unexpected reply");
        reader_stopped();
        return;
      }
    }
    in_delivery_ = false;
    flush(last_read_);
  } catch (const std::exception& e) {
    log()->error("Redis {}: {}; closing the connection", description_, e.what());
    drop_connection(make_error_code(errc::protocol_error), "bad reply");
    reader_stopped();
    return;
  }
  if (generation != generation_) {  // the flush failed and dropped the connection
    reader_stopped();
    return;
  }
  start_read(generation);
}

void ClientCore::submit_health_ping() {
  Slot* slot = allocate();
  slot->internal = true;
  slot->expected = 1;
  slot->deadline = kNoDeadline;  // the health loop watches it
  const std::size_t start = pending_.size();
  encode_command(pending_, "PING");
  slot->bytes = pending_.size() - start;
  slot->static_name = "PING";
  slot->in_fifo = true;
  fifo_.push_back(slot);
  ++queued_count_;
  ++stats_.health_checks;
  schedule_flush();
}

asio::awaitable<void> ClientCore::health_loop(std::uint64_t generation) {
  const auto tick = std::max<Clock::duration>(
      milliseconds(5), std::min(config_.health_check_interval, config_.health_check_timeout) / 4);
  for (;;) {
    health_timer_.expires_after(tick);
    boost::system::error_code ec;
    co_await health_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (generation != generation_ || state_ == State::closed) co_return;
    const auto now = Clock::now();
    const auto quiet_since = std::max(waiting_since_, last_read_);
    if (outstanding() > 0 && now - quiet_since > config_.health_check_timeout) {
      log()->warn(
          "Redis {}: no reply for {} ms with {} request(s) outstanding; the server is "
          "frozen or the connection half-open: reconnecting",
          description_, ms_count(now - quiet_since), outstanding());
      drop_connection(make_error_code(errc::request_timeout), "health check");
      co_return;
    }
    if (fifo_.empty() && now - std::max(last_read_, last_write_) >= config_.health_check_interval) {
      submit_health_ping();
    }
  }
}

asio::awaitable<void> ClientCore::supervise() {
  core::Backoff backoff(config_.reconnect_backoff, random_);
  while (state_ == State::running || state_ == State::closing) {
    if (connected_) {
      const auto generation = generation_;
      const auto connected_at = Clock::now();
      reading_ = true;
      start_read(generation);
      std::string failure;
      try {
        co_await health_loop(generation);  // returns once this connection is gone
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!failure.empty()) {
        log()->error("Redis {}: health check failed: {}", description_, failure);
        drop_connection(make_error_code(errc::protocol_error), "internal error");
      }
      while (reading_) {  // the reader's last handler (its socket is closed: it comes soon)
        reader_done_.expires_at(kNoDeadline);
        boost::system::error_code ec;
        co_await reader_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      // The backoff starts over only after a connection that lasted: a server that accepts
      // and kills every connection at once is retried ever more slowly, not at the base rate.
      if (Clock::now() - connected_at >= config_.health_check_interval) backoff.reset();
      continue;
    }
    if (state_ != State::running) break;
    // Reconnect after a jittered pause (never in lockstep with other clients, F21).
    reconnect_timer_.expires_after(backoff.next());
    boost::system::error_code ec;
    co_await reconnect_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (state_ != State::running) break;
    try {
      co_await asio::co_spawn(
          executor_, connect_shared(),
          asio::bind_cancellation_slot(connect_cancel_.slot(), asio::use_awaitable));
      if (state_ != State::running) break;
      log()->info("Redis {}: reconnected after {} attempt(s)", description_, backoff.attempts());
    } catch (const std::exception& e) {
      ++stats_.connect_failures;
      log()->warn("Redis {}: reconnect attempt {} failed: {}", description_, backoff.attempts(),
                  describe(e));
      if (classify(std::current_exception()) == ErrorKind::permanent) {
        // Wrong password after a rotation, unknown database: waiting cannot help the queued
        // requests; they fail now with the reason. Later ones keep waiting for a fix.
        fail_queued(std::current_exception());
      }
    }
  }
}

// ---- deadlines -----------------------------------------------------------------------------

void ClientCore::sweep(Clock::time_point now) {
  Clock::time_point next = kNoDeadline;
  expired_.clear();
  for (Slot* slot : fifo_) {
    if (slot->completed || slot->internal) continue;
    if (slot->deadline <= now) {
      expired_.push_back(slot);
    } else {
      next = std::min(next, slot->deadline);
    }
  }
  // Expired queued requests leave the send buffer in one compaction pass (not one erase each:
  // during an outage thousands may expire together).
  bool any_queued = false;
  for (Slot* slot : expired_) any_queued = any_queued || slot->phase == Slot::Phase::queued;
  if (any_queued) {
    std::string kept;
    kept.reserve(pending_.size());
    std::size_t offset = 0;
    const std::size_t first_queued = outstanding();
    std::size_t out = first_queued;
    for (std::size_t i = first_queued; i < fifo_.size(); ++i) {
      Slot* slot = fifo_[i];
      const bool expired = !slot->completed && !slot->internal && slot->deadline <= now;
      if (!expired) {
        kept.append(pending_, offset, slot->bytes);
        fifo_[out++] = slot;
      } else {
        slot->in_fifo = false;
        --queued_count_;
      }
      offset += slot->bytes;
    }
    fifo_.resize(out);
    pending_.swap(kept);
  }
  for (Slot* slot : expired_) {
    ++stats_.timeouts;
    const bool queued = slot->phase == Slot::Phase::queued;
    const std::string context =
        "Redis " + std::string(slot->command_name()) + " " + description_ +
        (queued ? ": not sent within the command timeout (no connection)"
                : ": no reply within the command timeout (its reply will be dropped)");
    finish(slot, make_error(queued ? errc::write_timeout : errc::request_timeout, context,
                            queued ? RequestState::not_sent : RequestState::sent));
  }
  // At most one sweep per millisecond, however the deadlines are spread.
  sweep_timer_.expires_at(next == kNoDeadline ? next : std::max(next, now + milliseconds(1)));
}

asio::awaitable<void> ClientCore::sweep_loop() {
  while (state_ != State::closed) {
    boost::system::error_code ec;
    co_await sweep_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (state_ == State::closed) break;
    sweep(Clock::now());
  }
}

// ---- lifecycle -----------------------------------------------------------------------------

void ClientCore::spawn_task(asio::awaitable<void> task, const char* name) {
  ++tasks_;
  asio::co_spawn(executor_, std::move(task),
                 [this, self = shared_from_this(), name](const std::exception_ptr& error) {
                   if (error) {
                     try {
                       std::rethrow_exception(error);
                     } catch (const std::exception& e) {
                       log()->error("Redis {}: background task {} ended with an error: {}",
                                    description_, name, e.what());
                     }
                   }
                   if (--tasks_ == 0) tasks_done_.cancel();
                 });
}

asio::awaitable<void> ClientCore::start() {
  // A cancelled start() must still leave the state machine consistent: waits below report
  // cancellation as an error code, and the loop checks for it.
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    switch (state_) {
      case State::running:
        co_return;
      case State::closing:
      case State::closed:
        throw Error(make_error_code(errc::client_closed), "RedisClient " + description_,
                    RequestState::not_sent);
      case State::starting: {
        boost::system::error_code ec;
        co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (state_ == State::created && start_error_) std::rethrow_exception(start_error_);
        if (co_await caller_cancelled()) {
          throw Error(make_error_code(errc::cancelled),
                      "RedisClient " + description_ + ": start() cancelled",
                      RequestState::not_sent);
        }
        continue;
      }
      case State::created:
        break;
    }
    break;
  }
  state_ = State::starting;
  start_error_ = nullptr;
  const auto deadline = Clock::now() + config_.startup_timeout;
  core::Backoff backoff(config_.reconnect_backoff, random_);
  std::exception_ptr failure;
  for (std::uint32_t attempt = 1;; ++attempt) {
    Clock::duration pause{};
    if (co_await caller_cancelled()) {
      failure = make_error(errc::cancelled, "RedisClient " + description_ + ": start() cancelled",
                           RequestState::not_sent);
      break;
    }
    if (state_ != State::starting) {
      failure =
          make_error(errc::client_closed, "RedisClient " + description_ + ": closed during start()",
                     RequestState::not_sent);
      break;
    }
    try {
      co_await asio::co_spawn(
          executor_,
          core::with_timeout(
              connect_shared(),
              std::max<Clock::duration>(
                  milliseconds(1),
                  std::min<Clock::duration>(config_.connect_timeout, deadline - Clock::now())),
              errc::connect_timeout, "Redis " + description_ + ": connect", RequestState::not_sent),
          asio::bind_cancellation_slot(connect_cancel_.slot(), asio::use_awaitable));
      break;
    } catch (const std::exception& e) {
      ++stats_.connect_failures;
      if (state_ != State::starting) {
        failure = make_error(errc::client_closed,
                             "RedisClient " + description_ + ": closed during start()",
                             RequestState::not_sent);
        break;
      }
      if (classify(std::current_exception()) == ErrorKind::permanent) {
        failure = std::current_exception();  // wrong password, unknown database: no retry
        break;
      }
      const auto now = Clock::now();
      if (now >= deadline) {
        failure =
            make_error(errc::startup_timeout,
                       "RedisClient " + description_ + ": not connected " +
                           std::to_string(config_.startup_timeout.count()) + " ms after " +
                           std::to_string(attempt) + " attempt(s); last error: " + describe(e),
                       RequestState::not_sent);
        break;
      }
      pause = std::min<Clock::duration>(backoff.next(), deadline - now);
      log()->warn("Redis {}: start-up attempt {} failed ({}); retrying in {} ms", description_,
                  attempt, describe(e), ms_count(pause));
    }
    reconnect_timer_.expires_after(pause);
    boost::system::error_code ec;
    co_await reconnect_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (failure) {
    boost::system::error_code ignored;
    socket_.close(ignored);
    connected_ = false;
    state_ = state_ == State::starting ? State::created : state_;
    start_error_ = failure;
    state_changed_.cancel();
    std::rethrow_exception(failure);
  }
  if (state_ != State::starting) {  // close() was called while the last attempt succeeded
    boost::system::error_code ignored;
    socket_.close(ignored);
    connected_ = false;
    state_changed_.cancel();
    throw Error(make_error_code(errc::client_closed),
                "RedisClient " + description_ + ": closed during start()", RequestState::not_sent);
  }
  state_ = State::running;
  state_changed_.cancel();
  spawn_task(supervise(), "supervisor");
  spawn_task(sweep_loop(), "deadline sweeper");
  log()->info("Redis {}: started (client name {})", description_, config_.client_name);
}

std::size_t ClientCore::active() const noexcept {
  std::size_t n = 0;
  for (const Slot* slot : fifo_) n += (!slot->completed && !slot->internal) ? 1 : 0;
  return n + blocking_active_;
}

void ClientCore::fail_all(errc code, std::string_view why) noexcept {
  const std::string context = "Redis " + description_ + ": " + std::string(why);
  while (!fifo_.empty()) {
    Slot* slot = fifo_.front();
    fifo_.pop_front();
    const bool queued = slot->phase == Slot::Phase::queued;
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      finish(slot, make_error(code, context, queued ? RequestState::not_sent : RequestState::sent));
    }
  }
  queued_count_ = writing_count_ = 0;
  pending_.clear();
  writing_.clear();
}

void ClientCore::fail_queued(const std::exception_ptr& error) noexcept {
  while (queued_count_ > 0) {
    Slot* slot = fifo_.back();
    fifo_.pop_back();
    --queued_count_;
    slot->in_fifo = false;
    if (slot->completed) {
      if (!slot->owned) recycle(slot);
    } else {
      finish(slot, error);
    }
  }
  pending_.clear();
}

asio::awaitable<void> ClientCore::close() {
  // A cancelled close() skips the grace period but still tears everything down.
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    if (state_ == State::created || state_ == State::closed) {
      state_ = State::closed;
      co_return;
    }
    if (state_ == State::starting) {
      // start() sees this after its current attempt (cut short here) and gives up.
      state_ = State::closing;
      connect_cancel_.emit(asio::cancellation_type::terminal);
      reconnect_timer_.cancel();
      boost::system::error_code ec;
      state_changed_.expires_at(kNoDeadline);
      co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      state_ = State::closed;
      state_changed_.cancel();
      co_return;
    }
    if (state_ == State::closing) {  // another close() is running: wait for it
      boost::system::error_code ec;
      state_changed_.expires_at(kNoDeadline);
      co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    break;  // running
  }
  state_ = State::closing;
  {
    // Blocking commands (XREADGROUP BLOCK) are cut short rather than waited for: what they
    // would have read stays pending in the group and is read again later.
    boost::system::error_code ignored;
    for (auto& d : dedicated_) d->socket.close(ignored);
  }
  const auto deadline = Clock::now() + config_.close_timeout;
  while (active() > 0 && Clock::now() < deadline) {
    idle_event_.expires_at(deadline);
    boost::system::error_code ec;
    co_await idle_event_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (co_await caller_cancelled()) break;
  }
  if (const auto left = active(); left > 0) {
    log()->warn("Redis {}: close: {} request(s) still running after {} ms; failing them",
                description_, left, config_.close_timeout.count());
  }
  state_ = State::closed;
  connect_cancel_.emit(asio::cancellation_type::terminal);
  fail_all(errc::client_closed, "client closed");
  if (connected_) drop_connection(make_error_code(errc::client_closed), "close");
  boost::system::error_code ignored;
  socket_.close(ignored);
  for (auto& d : dedicated_) d->socket.close(ignored);
  reconnect_timer_.cancel();
  sweep_timer_.cancel();
  health_timer_.cancel();
  while (tasks_ > 0) {
    tasks_done_.expires_at(kNoDeadline);
    boost::system::error_code ec;
    co_await tasks_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  while (blocking_active_ > 0) {  // their sockets are closed: they end at once
    tasks_done_.expires_after(milliseconds(1));
    boost::system::error_code ec;
    co_await tasks_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  dedicated_.clear();
  state_changed_.cancel();
  log()->info("Redis {}: closed", description_);
}

// ---- blocking commands ---------------------------------------------------------------------

asio::awaitable<Reply> ClientCore::exchange(Dedicated& connection, const std::string& encoded) {
  if (!connection.socket.is_open()) {
    co_await core::with_timeout(connect_socket(connection.socket, connection.builder),
                                config_.connect_timeout, errc::connect_timeout,
                                "Redis " + description_ + ": connect (blocking connection)",
                                RequestState::not_sent);
  }
  connection.wrote = true;
  co_await asio::async_write(connection.socket, asio::buffer(encoded), asio::use_awaitable);
  Reply reply;
  while (!connection.builder.next(reply)) {
    const std::size_t n = co_await connection.socket.async_read_some(
        asio::buffer(connection.buffer), asio::use_awaitable);
    connection.builder.feed(connection.buffer.data(), n);
  }
  co_return reply;
}

asio::awaitable<Reply> ClientCore::blocking(std::string encoded, milliseconds block) {
  std::array<char, 24> name{};
  copy_command_name(encoded, name);
  const std::string what = "Redis " + std::string(name.data()) + " " + description_;
  if (state_ != State::running) {
    ++stats_.rejected;
    throw Error(make_error_code(state_ == State::created || state_ == State::starting
                                    ? errc::not_started
                                    : errc::client_closed),
                what, RequestState::not_sent);
  }
  if (block < milliseconds::zero()) {
    throw Error(make_error_code(errc::invalid_argument), what + ": negative block time");
  }
  if (auto error = check_shared_command(encoded, true)) std::rethrow_exception(error);
  Dedicated* connection = nullptr;
  for (auto& d : dedicated_) {
    if (!d->busy) {
      connection = d.get();
      break;
    }
  }
  if (connection == nullptr) {
    if (dedicated_.size() >= config_.max_blocking_connections) {
      ++stats_.rejected;
      throw Error(make_error_code(errc::queue_full),
                  what + ": all " + std::to_string(dedicated_.size()) +
                      " blocking connections are busy (max_blocking_connections)",
                  RequestState::not_sent);
    }
    dedicated_.push_back(std::make_unique<Dedicated>(executor_));
    connection = dedicated_.back().get();
  }
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  connection->busy = true;
  connection->wrote = false;
  ++blocking_active_;
  ++stats_.commands;
  std::exception_ptr failure;
  bool timed_out = false;
  Reply reply;
  try {
    // The server may legitimately stay silent for `block`: the deadline includes it (F22).
    reply = co_await core::with_timeout(
        exchange(*connection, encoded), block + config_.command_timeout, errc::request_timeout,
        what + ": no reply within block + command timeout", RequestState::sent);
  } catch (const Error& e) {
    timed_out = e.code() == make_error_code(errc::request_timeout);
    failure = std::current_exception();
  } catch (const boost::system::system_error& e) {
    // Socket errors become our one error model: not sent if the write never started.
    const bool aborted = e.code() == asio::error::operation_aborted;
    failure = make_error(aborted             ? errc::cancelled
                         : connection->wrote ? errc::connection_lost
                                             : errc::connect_failed,
                         what + ": " + e.what(),
                         connection->wrote ? RequestState::sent : RequestState::not_sent);
  } catch (...) {
    failure = std::current_exception();
  }
  --blocking_active_;
  connection->busy = false;
  if (state_ == State::closing) idle_event_.cancel();
  if (failure) {
    // Whatever went wrong, the connection's state is unknown: discard it.
    boost::system::error_code ignored;
    connection->socket.close(ignored);
    connection->builder.reset();
    ErrorKind kind = classify(failure);
    if (state_ == State::closed || state_ == State::closing) {
      failure = make_error(errc::client_closed, what + ": client closed", RequestState::sent);
      kind = ErrorKind::cancelled;
    }
    if (kind == ErrorKind::cancelled) {
      ++stats_.cancellations;
      permit.ignore();
    } else {
      ++stats_.failures;
      permit.record(kind);
      if (timed_out) ++stats_.timeouts;
    }
    std::rethrow_exception(failure);
  }
  ++stats_.replies;
  if (reply.is_error()) {
    permit.record(classify_error_prefix(reply.error_prefix()));
    throw make_server_error(reply.error_message(), what, RequestState::sent);
  }
  permit.success();
  co_return reply;
}

RedisStats ClientCore::stats() noexcept {
  RedisStats s = stats_;
  s.connected = connected_;
  s.queued = queued_count_;
  s.in_flight = outstanding();
  s.blocking_connections = dedicated_.size();
  s.breaker = breaker_.state();
  s.breaker_trips = breaker_.stats().trips;
  return s;
}

// ---- commands that cannot share a FIFO connection ---------------------------------------

namespace {

/// Reads argument `index` of an encoded command (RESP array of bulk strings, as we encode).
std::string_view encoded_argument(std::string_view encoded, std::size_t& pos) {
  // "$L\r\n<L bytes>\r\n"
  if (pos >= encoded.size() || encoded[pos] != '$') return {};
  ++pos;
  std::size_t length = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    length = length * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;
  if (pos > encoded.size() || encoded.size() - pos < length) return {};
  const std::string_view arg = encoded.substr(pos, length);
  pos += length + 2;
  return arg;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'a' && a[i] <= 'z') ? static_cast<char>(a[i] - 'a' + 'A') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

}  // namespace

std::exception_ptr check_shared_command(std::string_view encoded, bool blocking_allowed,
                                        TransactionCommand* transaction) {
  auto refuse = [](const std::string& why) {
    return std::make_exception_ptr(Error(make_error_code(errc::invalid_argument), why));
  };
  // "*N\r\n"
  std::size_t pos = 1;
  std::size_t count = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    count = count * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;
  if (count == 0) {
    return refuse("Redis command without arguments (the server would not answer it)");
  }
  const std::string_view name = encoded_argument(encoded, pos);
  if (name.size() < 4 || name.size() > 12) return nullptr;  // every refused name is 4 to 12
  // Dispatch on the initial: a command compares its name only with the refused names of its
  // letter (HSET: HELLO; XADD: XREAD, XREADGROUP; GET, SET, DEL ...: nothing). Request::push
  // runs this for every command; it is on the receiver's hot path.
  const char initial =
      static_cast<char>(name[0] >= 'a' && name[0] <= 'z' ? name[0] - 'a' + 'A' : name[0]);
  const auto state_changing = [&](std::string_view denied) {
    return refuse("Redis " + std::string(denied) +
                  " changes what the connection answers or which database it uses; it cannot "
                  "run on a shared connection (use the URL for the database)");
  };
  const auto transaction_command = [&](std::string_view denied) {
    return refuse("Redis " + std::string(denied) +
                  " cannot run alone on a shared connection: other callers' commands would "
                  "join the transaction. Send MULTI ... EXEC (or DISCARD) as one Request to "
                  "pipeline(); WATCH is not supported");
  };
  const auto blocking = [&](std::string_view denied) -> std::exception_ptr {
    if (blocking_allowed) return nullptr;
    return refuse("Redis " + std::string(denied) +
                  " blocks; run it with blocking_command() on a dedicated connection");
  };
  switch (initial) {
    case 'A':
      if (iequals(name, "AUTH")) return state_changing("AUTH");
      return nullptr;
    case 'B': {
      static constexpr std::string_view kBlocking[] = {
          "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP"};
      for (const auto denied : kBlocking) {
        if (iequals(name, denied)) return blocking(denied);
      }
      return nullptr;
    }
    case 'C':
      if (iequals(name, "CLIENT") && count >= 2 &&
          iequals(encoded_argument(encoded, pos), "REPLY")) {
        return refuse("Redis CLIENT REPLY cannot run on a shared connection");
      }
      return nullptr;
    case 'D':
      if (!iequals(name, "DISCARD")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::end;
        return nullptr;
      }
      return transaction_command("DISCARD");
    case 'E':
      if (!iequals(name, "EXEC")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::end;
        return nullptr;
      }
      return transaction_command("EXEC");
    case 'H':
      if (iequals(name, "HELLO")) return state_changing("HELLO");
      return nullptr;
    case 'M':
      if (iequals(name, "MONITOR")) return state_changing("MONITOR");
      if (!iequals(name, "MULTI")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::multi;
        return nullptr;
      }
      return transaction_command("MULTI");
    case 'P':
      if (iequals(name, "PSUBSCRIBE")) return state_changing("PSUBSCRIBE");
      if (iequals(name, "PUNSUBSCRIBE")) return state_changing("PUNSUBSCRIBE");
      return nullptr;
    case 'Q':
      if (iequals(name, "QUIT")) return state_changing("QUIT");
      return nullptr;
    case 'R':
      if (iequals(name, "RESET")) return state_changing("RESET");
      return nullptr;
    case 'S': {
      static constexpr std::string_view kDenied[] = {"SUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
                                                     "SELECT"};
      for (const auto denied : kDenied) {
        if (iequals(name, denied)) return state_changing(denied);
      }
      return nullptr;
    }
    case 'U':
      if (iequals(name, "UNSUBSCRIBE")) return state_changing("UNSUBSCRIBE");
      if (iequals(name, "UNWATCH")) return transaction_command("UNWATCH");
      return nullptr;
    case 'W':
      if (iequals(name, "WATCH")) return transaction_command("WATCH");
      if (iequals(name, "WAIT")) return blocking("WAIT");
      if (iequals(name, "WAITAOF")) return blocking("WAITAOF");
      return nullptr;
    case 'X':
      if (blocking_allowed || (!iequals(name, "XREAD") && !iequals(name, "XREADGROUP"))) {
        return nullptr;
      }
      for (std::size_t i = 1; i < count; ++i) {
        if (iequals(encoded_argument(encoded, pos), "BLOCK")) {
          return refuse("Redis " + std::string(name) +
                        " with BLOCK blocks; use xreadgroup() with ReadGroupOptions::block or "
                        "blocking_command()");
        }
      }
      return nullptr;
    default:
      return nullptr;
  }
}

std::exception_ptr transaction_step(TransactionState& state, TransactionCommand command,
                                    std::size_t commands_before) {
  auto refuse = [](const char* why) {
    return std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), std::string("Redis Request: ") + why));
  };
  if (state == TransactionState::closed) {
    return refuse(
        "nothing may follow the EXEC or DISCARD of a transaction in its request (a transaction "
        "is a request of its own)");
  }
  switch (command) {
    case TransactionCommand::none:
      return nullptr;
    case TransactionCommand::multi:
      if (state == TransactionState::open) return refuse("MULTI inside a transaction");
      if (commands_before != 0) {
        return refuse(
            "MULTI must be the first command of its request (a transaction is a "
            "request of its own)");
      }
      state = TransactionState::open;
      return nullptr;
    case TransactionCommand::end:
      if (state != TransactionState::open) {
        return refuse("EXEC or DISCARD without a MULTI first in the same request");
      }
      state = TransactionState::closed;
      return nullptr;
  }
  return nullptr;
}

// ---- awaiting results ----------------------------------------------------------------------

void SlotHandle::reset() noexcept {
  if (slot_ != nullptr) core_->release(slot_);
  core_ = nullptr;
  slot_ = nullptr;
}

// Coroutines (note the co_return): a refused call fails when awaited, not when made.
asio::awaitable<Reply> failed_reply(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return Reply{};
}

// Coroutines (note the co_return): a refused call fails when awaited, not when made.
asio::awaitable<std::vector<Reply>> failed_replies(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return std::vector<Reply>{};
}

// Coroutines (note the co_return): a refused call fails when awaited, not when made.
asio::awaitable<std::vector<std::string>> await_ids_failed(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return std::vector<std::string>{};
}

// Coroutines (note the co_return): a refused call fails when awaited, not when made.
asio::awaitable<std::size_t> await_count_failed(std::exception_ptr error) {
  std::rethrow_exception(std::move(error));
  co_return 0;
}

asio::awaitable<std::size_t> await_count(SlotHandle handle) {
  Slot* slot = handle.slot();
  if (slot == nullptr) co_return 0;  // empty batch
  if (!slot->completed) co_await handle.core()->wait(slot);
  if (slot->error) std::rethrow_exception(slot->error);
  if (slot->first_error != Slot::kNoError) {
    throw make_server_error(slot->reply.error_message(),
                            "Redis XADD (xadd_bulk_count, entry " +
                                std::to_string(slot->first_error) + " of " +
                                std::to_string(slot->expected) + ")",
                            RequestState::sent);
  }
  co_return slot->added;
}

asio::awaitable<Reply> await_single(SlotHandle handle) {
  Slot* slot = handle.slot();
  if (!slot->completed) co_await handle.core()->wait(slot);
  if (slot->error) std::rethrow_exception(slot->error);
  if (slot->reply.is_error()) {
    throw make_server_error(slot->reply.error_message(),
                            "Redis " + std::string(slot->command_name()), RequestState::sent);
  }
  co_return std::move(slot->reply);
}

asio::awaitable<std::optional<std::string>> await_optional_string(SlotHandle handle) {
  // `get()`'s path in one coroutine frame instead of two (await_single + a converter).
  Slot* slot = handle.slot();
  if (!slot->completed) co_await handle.core()->wait(slot);
  if (slot->error) std::rethrow_exception(slot->error);
  const Reply& reply = slot->reply;
  if (reply.is_error()) {
    throw make_server_error(reply.error_message(), "Redis " + std::string(slot->command_name()),
                            RequestState::sent);
  }
  if (reply.is_nil()) co_return std::nullopt;
  co_return std::string(reply.as_string());
}

asio::awaitable<std::vector<Reply>> await_multi(SlotHandle handle) {
  Slot* slot = handle.slot();
  if (!slot->completed) co_await handle.core()->wait(slot);
  if (slot->error) std::rethrow_exception(slot->error);
  co_return std::move(slot->replies);
}

asio::awaitable<std::vector<std::string>> await_ids(SlotHandle handle) {
  std::vector<std::string> ids;
  Slot* slot = handle.slot();
  if (slot == nullptr) co_return ids;  // empty batch
  if (!slot->completed) co_await handle.core()->wait(slot);
  if (slot->error) std::rethrow_exception(slot->error);
  ids.reserve(slot->replies.size());
  for (auto& reply : slot->replies) {
    if (reply.is_error()) {
      throw make_server_error(reply.error_message(),
                              "Redis XADD (xadd_bulk, entry " + std::to_string(ids.size()) +
                                  " of " + std::to_string(slot->replies.size()) + ")",
                              RequestState::sent);
    }
    ids.push_back(reply.is_nil() ? std::string() : std::move(reply).take_string());
  }
  co_return ids;
}

}  // namespace detail

// ---- RedisClient ---------------------------------------------------------------------------

RedisClient::RedisClient(asio::any_io_executor executor, RedisConfig config)
    : core_(std::make_shared<detail::ClientCore>(std::move(executor), std::move(config))) {}

// Background tasks and in-flight writes hold their own reference to the core, so destroying a
// client that was not closed (a bug, logged by the core) does not leave *them* dangling.
// Callers' awaitables hold a plain pointer: the client must outlive them (documented).
RedisClient::~RedisClient() {
  core_->abandon();
}

asio::awaitable<void> RedisClient::start() {
  return core_->start();
}
asio::awaitable<void> RedisClient::close() {
  return core_->close();
}

detail::Submission RedisClient::begin_submit(const CommandOptions& options, std::size_t replies,
                                             bool multi, bool count_only) {
  return core_->begin_submit(options, replies, multi, count_only);
}

detail::SlotHandle RedisClient::commit(const detail::Submission& submission) noexcept {
  return core_->commit(submission);
}

void RedisClient::abort_submit(const detail::Submission& submission) noexcept {
  core_->abort_submit(submission);
}

asio::awaitable<std::vector<Reply>> RedisClient::pipeline(const Request& request,
                                                          const CommandOptions& options) {
  if (request.empty()) {
    return detail::failed_replies(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), "Redis pipeline: empty request")));
  }
  if (request.transaction_open()) {
    // Sent, it would leave the shared connection inside MULTI: every other caller's commands
    // would be queued into the transaction.
    return detail::failed_replies(std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument),
              "Redis pipeline: the request opens a transaction (MULTI) and does not end it "
              "with EXEC or DISCARD")));
  }
  detail::Submission s = core_->begin_submit(options, request.size(), true, false);
  if (s.error) return detail::failed_replies(std::move(s.error));
  s.buffer->append(request.encoded());
  return detail::await_multi(core_->commit(s));
}

asio::awaitable<Reply> RedisClient::blocking(std::string encoded, milliseconds block) {
  return core_->blocking(std::move(encoded), block);
}

RedisStats RedisClient::stats() const noexcept {
  return core_->stats();
}
const RedisConfig& RedisClient::config() const noexcept {
  return core_->config();
}
const std::string& RedisClient::description() const noexcept {
  return core_->description();
}
const std::string& RedisClient::client_name() const noexcept {
  return core_->config().client_name;
}
asio::any_io_executor RedisClient::get_executor() const noexcept {
  return core_->executor();
}

}  // namespace trading_shared::redis

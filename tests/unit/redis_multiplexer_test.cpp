// detail::Multiplexer without a server: requests are encoded into its send buffer, "written"
// by taking the bytes of prepare_write, and answered by feeding reply bytes in any chunking.
// Covers partial reads at every split, cancellation/abandonment in each phase, count-only
// batches with an error reply, connection loss and the deadline sweep.
#include <trading_shared/core/error.hpp>
#include <trading_shared/redis/resp.hpp>

#include "detail/multiplexer.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::redis::detail {
namespace {

using namespace std::chrono_literals;

struct Events final : MultiplexerEvents {
  std::size_t resumed = 0;
  std::size_t finished = 0;
  void resume(Slot& slot, Resume) noexcept override {
    ++resumed;
    slot.waiter.reset();
  }
  void request_finished() noexcept override { ++finished; }
};

/// The error a slot failed with.
struct Failure {
  std::error_code code;
  RequestState state = RequestState::not_sent;
  ErrorKind kind = ErrorKind::permanent;
};

Failure failure_of(const Slot& slot) {
  EXPECT_TRUE(slot.error) << "the slot did not fail";
  Failure f;
  if (!slot.error) return f;
  f.kind = classify(slot.error);
  try {
    std::rethrow_exception(slot.error);
  } catch (const Error& e) {
    f.code = e.code();
    f.state = e.request_state();
  }
  return f;
}

class MultiplexerTest : public ::testing::Test {
 protected:
  RedisStats stats;
  Events events;
  Multiplexer mux{"test:6379/0", stats, events};
  Clock::time_point now = Clock::time_point{} + 1h;

  template <RespArg... Args>
  SlotHandle single(Clock::duration timeout, const Args&... args) {
    Slot* slot = mux.begin(1, ReplyMode::single, now + timeout);
    const std::size_t start = mux.send_buffer().size();
    encode_command(mux.send_buffer(), args...);
    return mux.commit(slot, start, nullptr);
  }
  SlotHandle get(std::string_view key, Clock::duration timeout = 1s) {
    return single(timeout, "GET", key);
  }
  /// `n` XADDs as one request.
  SlotHandle batch(std::size_t n, ReplyMode mode, Clock::duration timeout = 1s) {
    Slot* slot = mux.begin(n, mode, now + timeout);
    const std::size_t start = mux.send_buffer().size();
    for (std::size_t i = 0; i < n; ++i) encode_command(mux.send_buffer(), "XADD", "s", "*", "f", i);
    return mux.commit(slot, start, "XADD");
  }
  /// Takes every queued request's bytes as one completed write.
  std::string write() {
    std::string bytes(mux.prepare_write(now));
    mux.write_done();
    return bytes;
  }
  /// Feeds `bytes` as one read; returns the number of replies delivered.
  std::size_t feed(std::string_view bytes) {
    mux.feed(bytes.data(), bytes.size(), now);
    std::size_t delivered = 0;
    for (;;) {
      const auto d = mux.deliver_next();
      if (d == Multiplexer::Delivery::none) break;
      if (d == Multiplexer::Delivery::unexpected) {
        ADD_FAILURE() << "unexpected reply";
        mux.parser().keep_rest();
        break;
      }
      ++delivered;
    }
    return delivered;
  }
};

std::string encoded(std::string_view key) {
  std::string out;
  encode_command(out, "GET", key);
  return out;
}

// ---- partial reads -------------------------------------------------------------------------

TEST_F(MultiplexerTest, ReplyFedByteByByteCompletesOnItsLastByte) {
  auto handle = get("k");
  EXPECT_EQ(write(), encoded("k"));
  const std::string reply = "$5\r\nhello\r\n";
  for (std::size_t i = 0; i < reply.size(); ++i) {
    EXPECT_FALSE(handle.slot()->completed) << "byte " << i;
    feed(reply.substr(i, 1));
  }
  ASSERT_TRUE(handle.slot()->completed);
  EXPECT_FALSE(handle.slot()->error);
  EXPECT_EQ(handle.slot()->reply.as_string(), "hello");
  EXPECT_EQ(stats.replies, 1u);
  EXPECT_EQ(mux.outstanding(), 0u);
  EXPECT_EQ(events.finished, 1u);
}

// Four requests (single, pipeline of three, count-only batch of three, single with a nested
// array) answered by one byte stream split into three chunks at every pair of positions.
TEST_F(MultiplexerTest, EverySplitIntoThreeChunksDeliversTheSameReplies) {
  const std::string stream =
      "$3\r\nfoo\r\n"                      // GET
      "+OK\r\n:42\r\n-ERR bad\r\n"         // pipeline of 3
      "$3\r\n1-1\r\n$-1\r\n$3\r\n1-2\r\n"  // count-only batch of 3 (nil not counted)
      "*2\r\n$1\r\na\r\n*1\r\n:7\r\n";     // nested array
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    for (std::size_t j = i; j <= stream.size(); ++j) {
      SCOPED_TRACE("split at " + std::to_string(i) + ", " + std::to_string(j));
      RedisStats s;
      Events e;
      Multiplexer m{"test:6379/0", s, e};
      auto submit = [&](std::size_t n, ReplyMode mode) {
        Slot* slot = m.begin(n, mode, now + 1s);
        const std::size_t start = m.send_buffer().size();
        for (std::size_t k = 0; k < n; ++k) encode_command(m.send_buffer(), "GET", "k");
        return m.commit(slot, start, nullptr);
      };
      auto a = submit(1, ReplyMode::single);
      auto b = submit(3, ReplyMode::multi);
      auto c = submit(3, ReplyMode::count);
      auto d = submit(1, ReplyMode::single);
      (void)m.prepare_write(now);
      m.write_done();
      std::size_t delivered = 0;
      for (const auto& chunk : {stream.substr(0, i), stream.substr(i, j - i), stream.substr(j)}) {
        m.feed(chunk.data(), chunk.size(), now);
        for (;;) {
          const auto r = m.deliver_next();
          ASSERT_NE(r, Multiplexer::Delivery::unexpected);
          if (r == Multiplexer::Delivery::none) break;
          ++delivered;
        }
      }
      ASSERT_EQ(delivered, 8u);
      ASSERT_TRUE(a.slot()->completed && b.slot()->completed && c.slot()->completed &&
                  d.slot()->completed);
      EXPECT_EQ(a.slot()->reply.as_string(), "foo");
      ASSERT_EQ(b.slot()->replies.size(), 3u);
      EXPECT_EQ(b.slot()->replies[0].as_string(), "OK");
      EXPECT_EQ(b.slot()->replies[1].as_int(), 42);
      EXPECT_EQ(b.slot()->replies[2].error_prefix(), "ERR");
      EXPECT_EQ(c.slot()->added, 2u);
      EXPECT_EQ(c.slot()->first_error, Slot::kNoError);
      ASSERT_EQ(d.slot()->reply.size(), 2u);
      EXPECT_EQ(d.slot()->reply[0].as_string(), "a");
      EXPECT_EQ(d.slot()->reply[1][0].as_int(), 7);
      EXPECT_EQ(m.outstanding(), 0u);
      EXPECT_EQ(s.replies, 8u);
    }
  }
}

// The middle request (a pipeline of two) is cancelled after the first i bytes of the replies
// arrived, for every i: its replies are dropped, whole or part read, and the requests around it
// get theirs.
TEST_F(MultiplexerTest, CancellationAtEveryByteOfTheRepliesKeepsTheOthersInStep) {
  const std::string stream = "$1\r\nA\r\n:1\r\n:2\r\n$1\r\nC\r\n";
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    SCOPED_TRACE("cancelled after " + std::to_string(i) + " bytes");
    RedisStats s;
    Events e;
    Multiplexer m{"test:6379/0", s, e};
    auto submit = [&](std::size_t n, ReplyMode mode) {
      Slot* slot = m.begin(n, mode, now + 1s);
      const std::size_t start = m.send_buffer().size();
      for (std::size_t k = 0; k < n; ++k) encode_command(m.send_buffer(), "GET", "k");
      return m.commit(slot, start, nullptr);
    };
    auto a = submit(1, ReplyMode::single);
    auto b = submit(2, ReplyMode::multi);
    auto c = submit(1, ReplyMode::single);
    (void)m.prepare_write(now);
    m.write_done();
    auto feed_all = [&](std::string_view chunk) {
      m.feed(chunk.data(), chunk.size(), now);
      while (m.deliver_next() == Multiplexer::Delivery::delivered) {
      }
    };
    feed_all(std::string_view(stream).substr(0, i));
    const bool b_done = b.slot()->completed;
    m.cancel(b.slot());
    feed_all(std::string_view(stream).substr(i));
    EXPECT_EQ(a.slot()->reply.as_string(), "A");
    EXPECT_EQ(c.slot()->reply.as_string(), "C");
    EXPECT_EQ(b.slot()->error == nullptr, b_done);
    EXPECT_EQ(s.dropped_replies, b_done ? 0u : 1u);
    EXPECT_EQ(m.size(), 0u);
  }
}

TEST_F(MultiplexerTest, SeveralRepliesInOneChunkAndAReplySplitAcrossChunks) {
  std::vector<SlotHandle> handles;
  for (int i = 0; i < 5; ++i) handles.push_back(get("k" + std::to_string(i)));
  EXPECT_EQ(mux.queued(), 5u);
  const std::string bytes = write();
  EXPECT_EQ(bytes, encoded("k0") + encoded("k1") + encoded("k2") + encoded("k3") + encoded("k4"));
  EXPECT_EQ(mux.queued(), 0u);
  EXPECT_EQ(mux.outstanding(), 5u);
  EXPECT_EQ(feed(":0\r\n:1\r\n:2\r\n:"), 3u);  // three whole replies and the start of one
  EXPECT_EQ(feed("3\r\n:4\r\n"), 2u);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(handles[static_cast<std::size_t>(i)].slot()->reply.as_int(), i);
}

// A reply may come before the write of its request is reported done (the async write of a
// large batch): it is delivered, and the write's end does not touch the finished request.
TEST_F(MultiplexerTest, ReplyDuringTheWrite) {
  auto a = get("a");
  (void)mux.prepare_write(now);
  auto b = get("b");  // queued while the first write runs
  EXPECT_EQ(feed("$1\r\nA\r\n"), 1u);
  EXPECT_TRUE(a.slot()->completed);
  mux.write_done();
  EXPECT_EQ(mux.outstanding(), 0u);
  EXPECT_EQ(mux.queued(), 1u);
  EXPECT_EQ(write(), encoded("b"));
  EXPECT_EQ(feed("$1\r\nB\r\n"), 1u);
  EXPECT_EQ(b.slot()->reply.as_string(), "B");
}

TEST_F(MultiplexerTest, AReplyNobodyWaitsForIsReported) {
  mux.feed("+OK\r\n", 5, now);
  EXPECT_EQ(mux.deliver_next(), Multiplexer::Delivery::unexpected);
  EXPECT_EQ(mux.unexpected_reply().as_string(), "OK");
}

TEST_F(MultiplexerTest, BadBytesThrowProtocolError) {
  auto a = get("a");
  write();
  mux.feed("?what\r\n", 7, now);
  EXPECT_THROW(mux.deliver_next(), std::exception);
}

// ---- cancellation and abandonment ----------------------------------------------------------

TEST_F(MultiplexerTest, CancelledBeforeWrittenLeavesTheSendBufferAndNeverRuns) {
  auto a = get("a");
  auto b = get("b");
  auto c = get("c");
  mux.cancel(b.slot());
  ASSERT_TRUE(b.slot()->completed);
  const auto f = failure_of(*b.slot());
  EXPECT_EQ(f.code, make_error_code(errc::cancelled));
  EXPECT_EQ(f.state, RequestState::not_sent);
  EXPECT_EQ(mux.queued(), 2u);
  EXPECT_EQ(write(), encoded("a") + encoded("c"));
  EXPECT_EQ(feed("$1\r\nA\r\n$1\r\nC\r\n"), 2u);
  EXPECT_EQ(a.slot()->reply.as_string(), "A");
  EXPECT_EQ(c.slot()->reply.as_string(), "C");
  EXPECT_EQ(stats.cancellations, 1u);
  EXPECT_EQ(stats.dropped_replies, 0u);
}

TEST_F(MultiplexerTest, AbandonedBeforeWrittenIsRemovedAndRecycled) {
  auto a = get("a");
  { auto b = get("b"); }  // the awaitable was destroyed without being awaited
  EXPECT_EQ(mux.size(), 1u);
  EXPECT_EQ(write(), encoded("a"));
  auto c = get("c");  // reuses b's slot
  EXPECT_EQ(stats.cancellations, 1u);
  EXPECT_EQ(mux.size(), 2u);
}

TEST_F(MultiplexerTest, CancelledAfterWrittenKeepsItsPlaceAndItsReplyIsDropped) {
  auto a = get("a");
  auto b = get("b");
  write();
  mux.cancel(a.slot());
  const auto f = failure_of(*a.slot());
  EXPECT_EQ(f.code, make_error_code(errc::cancelled));
  EXPECT_EQ(f.state, RequestState::sent);
  EXPECT_EQ(mux.outstanding(), 2u);  // still waiting for its reply
  EXPECT_EQ(feed("$1\r\nA\r\n"), 1u);
  EXPECT_EQ(stats.dropped_replies, 1u);
  EXPECT_FALSE(b.slot()->completed);
  EXPECT_EQ(feed("$1\r\nB\r\n"), 1u);
  EXPECT_EQ(b.slot()->reply.as_string(), "B");
  EXPECT_FALSE(b.slot()->error);
}

TEST_F(MultiplexerTest, CancelledWhileBeingWrittenCountsAsSent) {
  auto a = get("a");
  (void)mux.prepare_write(now);
  mux.cancel(a.slot());
  EXPECT_EQ(failure_of(*a.slot()).state, RequestState::sent);
  mux.write_done();
  EXPECT_EQ(feed("$1\r\nA\r\n"), 1u);
  EXPECT_EQ(stats.dropped_replies, 1u);
  EXPECT_EQ(mux.size(), 0u);  // left the FIFO; the handle still holds the slot until reset
}

TEST_F(MultiplexerTest, PipelineCancelledAfterPartOfItsRepliesDropsTheRest) {
  auto pipeline = batch(3, ReplyMode::multi);
  auto next = get("n");
  write();
  EXPECT_EQ(feed("$3\r\n1-1\r\n"), 1u);
  mux.cancel(pipeline.slot());
  EXPECT_EQ(failure_of(*pipeline.slot()).state, RequestState::sent);
  EXPECT_EQ(feed("$3\r\n1-2\r\n$3"), 1u);
  EXPECT_EQ(feed("\r\n1-3\r\n$1\r\nN\r\n"), 2u);
  EXPECT_EQ(stats.dropped_replies, 1u);  // one request, dropped once its last reply came
  ASSERT_TRUE(next.slot()->completed);
  EXPECT_EQ(next.slot()->reply.as_string(), "N");
  EXPECT_EQ(mux.outstanding(), 0u);
}

TEST_F(MultiplexerTest, AbandonedPipelineIsRecycledAfterItsLastReply) {
  auto first = get("x");
  {
    auto pipeline = batch(2, ReplyMode::multi);
    write();
    EXPECT_EQ(feed("$1\r\nX\r\n:1\r\n"), 2u);
  }  // abandoned after one of its two replies
  EXPECT_EQ(mux.size(), 1u);
  EXPECT_EQ(feed(":2\r\n"), 1u);
  EXPECT_EQ(mux.size(), 0u);
  EXPECT_EQ(stats.dropped_replies, 1u);
  EXPECT_EQ(first.slot()->reply.as_string(), "X");
}

TEST_F(MultiplexerTest, CancellingTwiceOrAfterCompletionDoesNothing) {
  auto a = get("a");
  write();
  feed("$1\r\nA\r\n");
  mux.cancel(a.slot());
  EXPECT_FALSE(a.slot()->error);
  EXPECT_EQ(stats.cancellations, 0u);
}

TEST_F(MultiplexerTest, AbortTakesBackAHalfEncodedRequest) {
  auto a = get("a");
  Slot* slot = mux.begin(1, ReplyMode::single, now + 1s);
  const std::size_t start = mux.send_buffer().size();
  mux.send_buffer().append("*3\r\n$3\r\nSET");
  mux.abort(slot, start);
  EXPECT_EQ(mux.size(), 1u);
  EXPECT_EQ(write(), encoded("a"));
}

// ---- count-only batches --------------------------------------------------------------------

TEST_F(MultiplexerTest, CountOnlyCountsAndKeepsTheFirstErrorReply) {
  auto handle = batch(5, ReplyMode::count);
  write();
  EXPECT_EQ(feed("$3\r\n1-1\r\n-ERR first\r\n$-1\r\n-WRONGTYPE second\r\n$3\r\n1-2\r\n"), 5u);
  Slot& slot = *handle.slot();
  ASSERT_TRUE(slot.completed);
  EXPECT_FALSE(slot.error);
  EXPECT_EQ(slot.added, 2u);
  EXPECT_EQ(slot.first_error, 1u);
  EXPECT_EQ(slot.reply.error_prefix(), "ERR");
  EXPECT_EQ(slot.reply.error_message(), "ERR first");
  EXPECT_TRUE(slot.replies.empty());
}

// ---- connection loss, close, deadlines -----------------------------------------------------

TEST_F(MultiplexerTest, ConnectionLossFailsWrittenRequestsAndKeepsQueuedOnes) {
  auto a = get("a");
  auto b = batch(2, ReplyMode::multi);
  std::optional<SlotHandle> abandoned = get("d");
  write();
  feed(":1\r\n");  // a answered
  abandoned->reset();
  auto writing = get("w");
  (void)mux.prepare_write(now);  // its write is in progress
  auto queued = get("q");
  const auto lost = mux.fail_in_flight("Redis test: connection lost (read: eof)");
  EXPECT_EQ(lost.in_flight, 3u);  // b, the abandoned d, w
  EXPECT_FALSE(a.slot()->error);
  for (Slot* slot : {b.slot(), writing.slot()}) {
    ASSERT_TRUE(slot->completed);
    const auto f = failure_of(*slot);
    EXPECT_EQ(f.code, make_error_code(errc::connection_lost));
    EXPECT_EQ(f.state, RequestState::sent);
    EXPECT_EQ(f.kind, ErrorKind::outcome_unknown);
  }
  EXPECT_FALSE(queued.slot()->completed);
  EXPECT_EQ(mux.outstanding(), 0u);
  EXPECT_EQ(mux.queued(), 1u);
  EXPECT_EQ(stats.failures, 2u);
  // The next connection writes only what was queued.
  EXPECT_EQ(write(), encoded("q"));
  EXPECT_EQ(feed("$1\r\nQ\r\n"), 1u);
  EXPECT_EQ(queued.slot()->reply.as_string(), "Q");
}

TEST_F(MultiplexerTest, FailAllFailsEveryRequestByItsPhase) {
  auto sent = get("s");
  write();
  auto queued = get("q");
  mux.fail_all(errc::client_closed, "client closed");
  EXPECT_EQ(failure_of(*sent.slot()).state, RequestState::sent);
  EXPECT_EQ(failure_of(*queued.slot()).state, RequestState::not_sent);
  EXPECT_EQ(failure_of(*queued.slot()).code, make_error_code(errc::client_closed));
  EXPECT_TRUE(mux.empty());
  EXPECT_FALSE(mux.has_queued_bytes());
}

TEST_F(MultiplexerTest, FailQueuedLeavesWrittenRequests) {
  auto sent = get("s");
  write();
  auto queued = get("q");
  mux.fail_queued(std::make_exception_ptr(
      Error(make_error_code(errc::connect_failed), "auth", RequestState::not_sent)));
  EXPECT_FALSE(sent.slot()->completed);
  EXPECT_EQ(failure_of(*queued.slot()).code, make_error_code(errc::connect_failed));
  EXPECT_EQ(mux.outstanding(), 1u);
  EXPECT_FALSE(mux.has_queued_bytes());
}

TEST_F(MultiplexerTest, SweepTimesOutByPhaseAndReturnsTheNextDeadline) {
  auto sent = get("s", 1s);
  write();
  auto early = get("e", 1s);
  auto late = get("l", 5s);
  auto middle = get("x", 3s);
  mux.push_ping();  // the health check's PING has no deadline
  const auto next = mux.sweep(now + 2s);
  EXPECT_EQ(next, now + 3s);
  auto f = failure_of(*sent.slot());
  EXPECT_EQ(f.code, make_error_code(errc::request_timeout));
  EXPECT_EQ(f.state, RequestState::sent);
  f = failure_of(*early.slot());
  EXPECT_EQ(f.code, make_error_code(errc::write_timeout));
  EXPECT_EQ(f.state, RequestState::not_sent);
  EXPECT_FALSE(late.slot()->completed);
  EXPECT_EQ(stats.timeouts, 2u);
  // The expired queued request left the send buffer; the sent one waits for its reply.
  std::string ping;
  encode_command(ping, "PING");
  EXPECT_EQ(write(), encoded("l") + encoded("x") + ping);
  EXPECT_EQ(feed("$1\r\nS\r\n$1\r\nL\r\n$1\r\nX\r\n+PONG\r\n"), 4u);
  EXPECT_EQ(stats.dropped_replies, 1u);
  EXPECT_EQ(late.slot()->reply.as_string(), "L");
  EXPECT_EQ(stats.health_checks, 1u);
  EXPECT_EQ(mux.outstanding(), 0u);
}

TEST_F(MultiplexerTest, ActiveCountsOnlyRequestsACallerWaitsFor) {
  auto a = get("a");
  auto b = get("b");
  write();
  mux.cancel(b.slot());
  mux.push_ping();
  EXPECT_EQ(mux.size(), 3u);
  EXPECT_EQ(mux.active(), 1u);
}

}  // namespace
}  // namespace trading_shared::redis::detail

// ---- round trip ----------------------------------------------------------------------------

namespace trading_shared::redis::detail {
namespace {

// Each answered request's round trip goes to the histogram: from the write of its bytes to
// the read of its (last) reply, by the times the connection passes (no clock of its own).
// Cancelled requests and dropped replies are not timed.
TEST_F(MultiplexerTest, RoundTripIsObservedFromWriteToReplyRead) {
  core::Histogram round_trip(core::Histogram::kLatencyBounds);
  mux.set_round_trip(&round_trip);
  auto a = get("a");
  write();  // written at `now`
  now += 3ms;
  auto b = batch(2, ReplyMode::multi);
  auto c = get("c");
  write();               // written 3 ms later
  mux.cancel(c.slot());  // its reply is dropped: not timed
  now += 3ms;
  EXPECT_EQ(feed("$1\r\nA\r\n"), 1u);  // a: 6 ms
  EXPECT_EQ(round_trip.count(), 1u);
  now += 4ms;
  EXPECT_EQ(feed("$2\r\nid\r\n$2\r\nid\r\n$1\r\nC\r\n"), 3u);  // b: 7 ms
  EXPECT_EQ(round_trip.count(), 2u);
  EXPECT_NEAR(round_trip.sum(), 0.013, 1e-9);
  EXPECT_EQ(round_trip.bucket(7), 2u);  // (0.005, 0.01]
  mux.set_round_trip(nullptr);
  auto d = get("d");
  write();
  EXPECT_EQ(feed("$1\r\nD\r\n"), 1u);
  EXPECT_EQ(round_trip.count(), 2u);  // not attached: not timed
}

}  // namespace
}  // namespace trading_shared::redis::detail

// The PostgreSQL client's pool (src/pg/detail/pool.hpp) without a server: the pool is a
// template over its slot type, instantiated here with a fake connection whose state the test
// sets (open, accepting, in flight) and whose breakage it triggers. A real io_context runs
// the pool's coroutines; deadlines are short and every wait is for a condition.

#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/clock.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/config.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "detail/pool.hpp"
#include "detail/pool_impl.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// What the pool needs of a connection, with its state set by the test.
class FakeConnection {
 public:
  explicit FakeConnection(int pid) : pid_(pid) {}

  bool open() const noexcept { return open_; }
  bool accepting() const noexcept { return open_ && accepting_; }
  std::size_t in_flight() const noexcept { return in_flight_; }
  bool cancel_in_progress() const noexcept { return false; }
  int backend_pid() const noexcept { return pid_; }
  void close(std::error_code = ts::make_error_code(ts::errc::client_closed)) noexcept {
    if (!open_) return;
    open_ = false;
    if (on_broken_) {
      auto callback = std::move(on_broken_);
      on_broken_ = nullptr;
      callback();
    }
  }
  asio::awaitable<void> wait_closed() { co_return; }
  void send_cancel_request() noexcept { ++cancel_requests_; }
  void set_on_broken(std::function<void()> f) { on_broken_ = std::move(f); }
  void set_on_ready(std::function<void()> f) { on_ready_ = std::move(f); }

  // ---- the test's controls
  void set_in_flight(std::size_t n) noexcept { in_flight_ = n; }
  void set_accepting(bool accepting) noexcept { accepting_ = accepting; }
  /// The connection can take work again: tells the pool, as a real connection does.
  void become_ready() {
    accepting_ = true;
    if (on_ready_) on_ready_();
  }
  int cancel_requests() const noexcept { return cancel_requests_; }

 private:
  int pid_;
  bool open_ = true;
  bool accepting_ = true;
  std::size_t in_flight_ = 0;
  int cancel_requests_ = 0;
  std::function<void()> on_broken_;
  std::function<void()> on_ready_;
};

struct FakeSlot {
  std::shared_ptr<FakeConnection> connection;
  bool exclusive = false;
  bool draining = false;
};

using FakePool = ts::pg::detail::BasicPool<FakeSlot>;

/// The end of one acquire run on its own coroutine.
struct Acquired {
  bool done = false;
  FakeSlot* slot = nullptr;
  std::exception_ptr error;
  int order = 0;  // when it ended, among the test's acquires (1, 2, ...)
};

/// The code of the `Error` in `error` (a failure of the test when it is none).
std::error_code code_of(const std::exception_ptr& error) {
  if (!error) {
    ADD_FAILURE() << "no error";
    return {};
  }
  try {
    std::rethrow_exception(error);
  } catch (const ts::Error& e) {
    return e.code();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an Error: " << e.what();
  }
  return {};
}

class PgPoolTest : public ::testing::Test {
 protected:
  PgPoolTest() {
    config_.min_size = 1;
    config_.max_size = 1;
    config_.max_waiters = 100;
    config_.acquire_timeout = 5s;
    config_.connect_timeout = 1s;
    config_.reconnect_backoff = {1ms, 2ms, 2.0};
  }
  ~PgPoolTest() override {
    if (pool_) {
      stop();
      pool_->close_all_connections();
      run_until([&] { return !maintaining_; });
      io_.restart();
      io_.poll();  // the failed waiters end
    }
  }

  /// `random` (the backoff's jitter): the fixture's seeded one unless a test fixes it.
  void make_pool(ts::core::RandomSource* random = nullptr) {
    pool_ = std::make_shared<FakePool>(
        io_.get_executor(), config_, random != nullptr ? *random : random_, "fake:5432/db",
        [this](std::chrono::milliseconds) -> asio::awaitable<std::shared_ptr<FakeConnection>> {
          ++connect_attempts_;
          attempt_times_.push_back(Clock::now());
          if (connect_error_) std::rethrow_exception(connect_error_);
          auto connection = std::make_shared<FakeConnection>(next_pid_++);
          opened_.push_back(connection);
          co_return connection;
        });
    pool_->set_owner(pool_);
  }

  /// Opens `n` connections through the pool, as the client's start does.
  void fill(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      bool done = false;
      asio::co_spawn(io_, pool_->open(1s),
                     [&](std::exception_ptr e, std::shared_ptr<FakeConnection> c) {
                       ASSERT_FALSE(e);
                       pool_->adopt(std::move(c));
                       done = true;
                     });
      run_until([&] { return done; });
    }
  }

  void start_maintenance() {
    pool_->set_running(true);
    maintaining_ = true;
    asio::co_spawn(io_, pool_->maintain(), [this](std::exception_ptr e) {
      EXPECT_FALSE(e);
      maintaining_ = false;
    });
  }

  /// Stops the pool as the client's close() does: no more service, waiters fail, the
  /// maintenance ends.
  void stop() {
    pool_->set_running(false);
    pool_->fail_all_waiters_closed();
    pool_->stop_maintenance();
  }

  /// From now on every connect attempt fails with "connection refused".
  void refuse_connects() {
    connect_error_ =
        std::make_exception_ptr(ts::Error(ts::make_error_code(ts::errc::connect_failed),
                                          "connection refused", ts::RequestState::not_sent));
  }

  /// A maintained pool of one connection, with `backoff` at its longest delays
  /// (`longest_`), loses that connection while connects are refused: returns after the
  /// first attempt to replace it failed.
  void lose_the_only_connection(ts::core::BackoffConfig backoff) {
    config_.reconnect_backoff = backoff;
    make_pool(&longest_);
    fill(1);
    start_maintenance();
    refuse_connects();
    opened_[0]->close();
    run_until([&] { return connect_attempts_ == 2; });
  }

  std::shared_ptr<Acquired> acquire(bool exclusive, Clock::duration timeout,
                                    asio::cancellation_signal* cancel = nullptr) {
    auto out = std::make_shared<Acquired>();
    auto handler = [this, out](std::exception_ptr e, FakeSlot* slot) {
      out->done = true;
      out->slot = slot;
      out->error = e;
      out->order = ++ended_;
    };
    auto op = pool_->acquire(exclusive, Clock::now() + timeout);
    if (cancel != nullptr) {
      asio::co_spawn(io_, std::move(op), asio::bind_cancellation_slot(cancel->slot(), handler));
    } else {
      asio::co_spawn(io_, std::move(op), handler);
    }
    io_.restart();
    io_.poll();  // runs up to its first wait
    return out;
  }

  /// Runs the loop until `done()` (the test fails after 5 s: the pool never got there).
  template <class Pred>
  void run_until(Pred done) {
    const auto limit = Clock::now() + 5s;
    while (!done()) {
      if (Clock::now() > limit) {
        ADD_FAILURE() << "condition not reached within 5 s";
        return;
      }
      io_.restart();
      io_.run_one_for(10ms);
    }
  }

  asio::io_context io_;
  ts::pg::PostgresConfig config_;
  ts::core::DefaultRandom random_{1};
  ts::core::FixedRandom longest_{0.999};  // the longest jittered delays (make_pool's choice)
  std::shared_ptr<FakePool> pool_;
  std::vector<std::shared_ptr<FakeConnection>> opened_;
  std::exception_ptr connect_error_;
  int connect_attempts_ = 0;
  std::vector<Clock::time_point> attempt_times_;  // of every connect attempt
  int next_pid_ = 100;
  int ended_ = 0;
  bool maintaining_ = false;
};

TEST_F(PgPoolTest, SharedStatementsPipelineOnTheLeastLoadedConnection) {
  config_.max_size = 2;
  make_pool();
  fill(2);
  opened_[0]->set_in_flight(3);
  auto a = acquire(false, 1s);
  ASSERT_TRUE(a->done);
  ASSERT_FALSE(a->error);
  EXPECT_EQ(a->slot->connection, opened_[1]);
  EXPECT_FALSE(a->slot->exclusive);
}

TEST_F(PgPoolTest, ExclusiveWaitersAreServedInOrder) {
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  ASSERT_TRUE(holder->done && !holder->error);
  auto first = acquire(true, 5s);
  auto second = acquire(true, 5s);
  auto third = acquire(true, 5s);
  EXPECT_FALSE(first->done || second->done || third->done);
  EXPECT_EQ(pool_->waiting(), 3U);

  // Each release goes to the waiter that came first.
  pool_->release_exclusive(holder->slot);
  run_until([&] { return first->done; });
  EXPECT_FALSE(first->error);
  EXPECT_FALSE(second->done);
  pool_->release_exclusive(first->slot);
  run_until([&] { return second->done; });
  EXPECT_FALSE(third->done);
  pool_->release_exclusive(second->slot);
  run_until([&] { return third->done; });
  EXPECT_LT(first->order, second->order);
  EXPECT_LT(second->order, third->order);
  EXPECT_EQ(third->slot->connection, opened_[0]);
  EXPECT_EQ(pool_->waiting(), 0U);
}

TEST_F(PgPoolTest, SharedWaitersAreServedInOrderWhenTheConnectionTakesWorkAgain) {
  config_.max_pipeline_depth = 1;
  make_pool();
  fill(1);
  opened_[0]->set_in_flight(1);  // full: shared callers wait
  auto first = acquire(false, 5s);
  auto second = acquire(false, 5s);
  EXPECT_FALSE(first->done || second->done);
  opened_[0]->set_in_flight(0);
  pool_->dispatch();
  run_until([&] { return first->done && second->done; });
  EXPECT_LT(first->order, second->order);
  EXPECT_FALSE(first->error);
  EXPECT_FALSE(second->error);
}

TEST_F(PgPoolTest, AcquireTimesOutWhenNoConnectionFrees) {
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  ASSERT_TRUE(holder->done && !holder->error);
  const auto started = Clock::now();
  auto waiter = acquire(true, 30ms);
  run_until([&] { return waiter->done; });
  EXPECT_GE(Clock::now() - started, 30ms);
  ASSERT_TRUE(waiter->error);
  EXPECT_EQ(code_of(waiter->error), ts::make_error_code(ts::errc::acquire_timeout));
  EXPECT_EQ(pool_->waiting(), 0U);  // the waiter left the queue
  // The connection it waited for goes to nobody: the next caller takes it at once.
  pool_->release_exclusive(holder->slot);
  auto next = acquire(true, 1s);
  EXPECT_TRUE(next->done && !next->error);
}

TEST_F(PgPoolTest, ReleaseGoesToTheWaiterNotToANewcomer) {
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  auto waiter = acquire(true, 5s);
  pool_->release_exclusive(holder->slot);
  // The connection is granted in release_exclusive: a caller arriving before the waiter
  // runs again finds it taken and queues.
  auto newcomer = acquire(true, 5s);
  run_until([&] { return waiter->done; });
  EXPECT_FALSE(waiter->error);
  EXPECT_TRUE(waiter->slot->exclusive);
  EXPECT_FALSE(newcomer->done);
  pool_->release_exclusive(waiter->slot);
  run_until([&] { return newcomer->done; });
  EXPECT_FALSE(newcomer->error);
}

TEST_F(PgPoolTest, QueueFullBeyondMaxWaiters) {
  config_.max_waiters = 1;
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  auto waiter = acquire(true, 5s);
  auto refused = acquire(true, 5s);
  ASSERT_TRUE(refused->done);
  EXPECT_EQ(code_of(refused->error), ts::make_error_code(ts::errc::queue_full));
  EXPECT_FALSE(waiter->done);
  pool_->release_exclusive(holder->slot);
  run_until([&] { return waiter->done; });
}

TEST_F(PgPoolTest, CloseFailsWaitersWithClientClosed) {
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  auto exclusive = acquire(true, 5s);
  opened_[0]->set_in_flight(0);
  auto shared = acquire(false, 5s);  // the only connection is leased: it waits too
  EXPECT_EQ(pool_->waiting(), 2U);
  pool_->fail_all_waiters_closed();
  run_until([&] { return exclusive->done && shared->done; });
  EXPECT_EQ(code_of(exclusive->error), ts::make_error_code(ts::errc::client_closed));
  EXPECT_EQ(code_of(shared->error), ts::make_error_code(ts::errc::client_closed));
  EXPECT_EQ(pool_->waiting(), 0U);
}

TEST_F(PgPoolTest, CancelledWaiterLeavesTheQueue) {
  make_pool();
  fill(1);
  auto holder = acquire(true, 1s);
  asio::cancellation_signal cancel;
  auto waiter = acquire(true, 5s, &cancel);
  EXPECT_EQ(pool_->waiting(), 1U);
  cancel.emit(asio::cancellation_type::terminal);
  run_until([&] { return waiter->done; });
  EXPECT_EQ(code_of(waiter->error), ts::make_error_code(ts::errc::cancelled));
  EXPECT_EQ(pool_->waiting(), 0U);
  EXPECT_FALSE(pool_->slots()[0]->draining);  // no reservation outlives its waiter (F47)
}

TEST_F(PgPoolTest, BrokenConnectionIsReplacedAndGivenToTheWaiter) {
  make_pool();
  fill(1);
  start_maintenance();
  auto holder = acquire(true, 1s);
  auto waiter = acquire(true, 5s);
  // The leased connection breaks; its holder releases it: it leaves the pool and the
  // maintenance opens a replacement, which goes to the waiter.
  opened_[0]->close();
  EXPECT_EQ(pool_->size(), 1U);  // a lease holder discards it on release, not before
  pool_->release_exclusive(holder->slot);
  run_until([&] { return waiter->done; });
  ASSERT_FALSE(waiter->error);
  ASSERT_EQ(opened_.size(), 2U);
  EXPECT_EQ(waiter->slot->connection, opened_[1]);
  EXPECT_EQ(pool_->size(), 1U);
  ts::pg::PostgresStats stats;
  pool_->add_stats(stats);
  EXPECT_EQ(stats.connects, 2U);
  EXPECT_EQ(stats.discarded, 1U);
}

TEST_F(PgPoolTest, IdleConnectionThatBreaksIsReplacedUpToMinSize) {
  make_pool();
  fill(1);
  start_maintenance();
  opened_[0]->close();
  EXPECT_EQ(pool_->size(), 0U);
  run_until([&] { return pool_->size() == 1U; });
  EXPECT_EQ(pool_->backend_pids(), std::vector<int>{101});
}

TEST_F(PgPoolTest, GrowsForWaitersUpToMaxSizeOnly) {
  config_.max_size = 3;
  make_pool();
  fill(1);
  start_maintenance();
  std::vector<std::shared_ptr<Acquired>> leases;
  for (int i = 0; i < 5; ++i) leases.push_back(acquire(true, 5s));
  run_until([&] { return pool_->size() == 3U && pool_->waiting() == 2U; });
  int granted = 0;
  for (const auto& lease : leases) granted += lease->done ? 1 : 0;
  EXPECT_EQ(granted, 3);
  EXPECT_EQ(connect_attempts_, 3);  // the first connection and two more, no more
  // The first three callers got the connections, in order.
  EXPECT_TRUE(leases[0]->done && leases[1]->done && leases[2]->done);
}

TEST_F(PgPoolTest, WaitersFailWithTheConnectErrorWhenTheServerIsUnreachable) {
  make_pool();
  fill(1);
  start_maintenance();
  connect_error_ =
      std::make_exception_ptr(ts::Error(ts::make_error_code(ts::errc::connect_failed),
                                        "connection refused", ts::RequestState::not_sent));
  opened_[0]->close();  // no open connection left; reconnects fail
  auto waiter = acquire(false, 5s);
  run_until([&] { return waiter->done; });
  ASSERT_TRUE(waiter->error);
  EXPECT_EQ(code_of(waiter->error),
            ts::make_error_code(ts::errc::connect_failed));  // not acquire_timeout
  EXPECT_GE(connect_attempts_, 2);
}

TEST_F(PgPoolTest, WaitersGetAFailedTlsCheckAsPermanentNotAsAConnectFailure_F61) {
  make_pool();
  fill(1);
  start_maintenance();
  // The server's certificate was replaced by one the client's sslrootcert does not verify.
  connect_error_ = std::make_exception_ptr(ts::Error(
      ts::make_error_code(ts::errc::tls_failed),
      "TLS certificate check failed: certificate has expired", ts::RequestState::not_sent));
  opened_[0]->close();
  auto waiter = acquire(false, 5s);
  run_until([&] { return waiter->done; });
  ASSERT_TRUE(waiter->error);
  // Kept as tls_failed (permanent: the breaker does not count it), not turned into a
  // transient connect_failed.
  EXPECT_EQ(code_of(waiter->error), ts::make_error_code(ts::errc::tls_failed));
  EXPECT_EQ(ts::classify(waiter->error), ts::ErrorKind::permanent);
  try {
    std::rethrow_exception(waiter->error);
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("certificate has expired"), std::string::npos) << e.what();
  }
}

TEST_F(PgPoolTest, FailedConnectIsRetriedAfterTheBackoffThatWaitersDoNotCut_F34) {
  lose_the_only_connection({300ms, 300ms, 2.0});  // every delay just below 300 ms
  // Callers arriving during the backoff wake the maintenance, which does not try again
  // before the delay is over (F34): they get the next attempt's error.
  auto first = acquire(false, 5s);
  auto second = acquire(true, 5s);
  run_until([&] { return first->done && second->done; });
  EXPECT_EQ(connect_attempts_, 3);
  ASSERT_EQ(attempt_times_.size(), 3U);
  ts::core::FixedRandom same(0.999);
  const auto delay = ts::core::backoff_delay(config_.reconnect_backoff, 0, same);
  EXPECT_GE(delay, 250ms);
  EXPECT_GE(attempt_times_[2] - attempt_times_[1], delay);
  EXPECT_EQ(code_of(first->error), ts::make_error_code(ts::errc::connect_failed));
  EXPECT_EQ(code_of(second->error), ts::make_error_code(ts::errc::connect_failed));
  ts::pg::PostgresStats stats;
  pool_->add_stats(stats);
  EXPECT_EQ(stats.connect_failures, 2U);
}

TEST_F(PgPoolTest, BackoffGrowsWithEachFailureAndStartsAgainAfterASuccess) {
  lose_the_only_connection({40ms, 10s, 10.0});        // about 40 ms, 400 ms, 4 s
  run_until([&] { return connect_attempts_ == 3; });  // failed twice: waits the 400 ms one
  connect_error_ = nullptr;
  run_until([&] { return pool_->size() == 1U; });
  EXPECT_EQ(connect_attempts_, 4);
  ASSERT_EQ(attempt_times_.size(), 4U);
  EXPECT_GE(attempt_times_[2] - attempt_times_[1], 39ms);
  EXPECT_GE(attempt_times_[3] - attempt_times_[2], 399ms);
  // After the success the next failure waits the first delay again, not the third (4 s).
  refuse_connects();
  opened_[1]->close();
  run_until([&] { return connect_attempts_ == 6; });
  EXPECT_GE(attempt_times_[5] - attempt_times_[4], 39ms);
  EXPECT_LT(attempt_times_[5] - attempt_times_[4], 2s);
}

TEST_F(PgPoolTest, StopEndsTheBackoffWaitAtOnce) {
  lose_the_only_connection({30s, 30s, 2.0});
  io_.restart();
  io_.poll();  // the maintenance reaches its backoff wait (30 s)
  ASSERT_TRUE(maintaining_);
  const auto stopping = Clock::now();
  stop();
  run_until([&] { return !maintaining_; });
  EXPECT_LT(Clock::now() - stopping, 5s);  // run_until fails first if it waits out the 30 s
  EXPECT_EQ(connect_attempts_, 2);
}

TEST_F(PgPoolTest, AWaitingTransactionKeepsOneConnectionDraining) {
  config_.max_size = 2;
  make_pool();
  fill(2);
  opened_[0]->set_in_flight(2);
  opened_[1]->set_in_flight(1);
  auto tx = acquire(true, 5s);  // no idle connection: waits, and reserves the least loaded
  EXPECT_FALSE(tx->done);
  EXPECT_TRUE(pool_->slots()[1]->draining);
  // Shared statements keep the other connection meanwhile (F47).
  auto shared = acquire(false, 1s);
  ASSERT_TRUE(shared->done);
  EXPECT_EQ(shared->slot->connection, opened_[0]);
  opened_[1]->set_in_flight(0);
  pool_->dispatch();
  run_until([&] { return tx->done; });
  EXPECT_EQ(tx->slot->connection, opened_[1]);
  EXPECT_FALSE(pool_->slots()[1]->draining);
}

TEST_F(PgPoolTest, ConnectionReadyAgainServesWaiters) {
  make_pool();
  fill(1);
  opened_[0]->set_accepting(false);  // e.g. an abandoned statement still runs
  auto waiter = acquire(false, 5s);
  EXPECT_FALSE(waiter->done);
  opened_[0]->become_ready();  // the connection's on_ready callback dispatches
  run_until([&] { return waiter->done; });
  EXPECT_FALSE(waiter->error);
}

TEST_F(PgPoolTest, DiscardClosesTheConnectionAndCancelsWhatRuns) {
  make_pool();
  fill(1);
  auto lease = acquire(true, 1s);
  opened_[0]->set_in_flight(1);
  pool_->discard(lease->slot, "test");
  EXPECT_EQ(opened_[0]->cancel_requests(), 1);
  EXPECT_FALSE(opened_[0]->open());
  pool_->release_exclusive(lease->slot);
  EXPECT_EQ(pool_->size(), 0U);
}

}  // namespace

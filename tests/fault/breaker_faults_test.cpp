// Fault tests F31-F34 of docs/failure-modes.md (circuit breaker and backoff) with the real servers
// of the harness, for PostgresClient and RedisClient: hung calls against a black hole or a
// frozen server (SIGSTOP), calls cancelled by their callers (cancellation slot, a timer racing
// the call in a parallel group, close() at shutdown), business errors (23505, 42601,
// WRONGTYPE), a real outage followed by a half-open breaker met by 100 concurrent callers, and
// a Redis restart under 50 clients whose reconnect times are measured.
//
// The breaker's own counters are not exposed by the clients (only its state and its trips), so
// "a result did not count" is proven from the outside: after the results under test, exactly
// `min_calls` hung calls (request timeouts, which do count) must open the breaker, and
// `min_calls - 1` must not. Had the results been recorded as failures, the breaker would have
// opened before; had they been recorded as successes, the window would be full of successes
// and `min_calls` failures would stay below the failure-rate threshold.
//
// The tests share one set of servers and run one after the other: every test leaves every
// server running and serving when it ends, also when it fails (RAII guards resume or start
// what the test disturbed). Isolation: the database `breaker_faults`, one advisory lock key
// and one application or client name per test, keys prefixed with the test number.
#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/circuit_breaker.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>
#include <trading_shared/redis/error_class.hpp>
#include <trading_shared/redis/redis_client.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "pg_fault_support.hpp"
#include "redis_fault_support.hpp"
#include "support/async_test.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_harness.hpp"
#include "support/test_helpers.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ts = trading_shared;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
using ts::errc;
using ts::ErrorKind;
using ts::core::CircuitState;
using ts::pg::PostgresClient;
using ts::pg::QueryOptions;
using ts::redis::CommandOptions;
using ts::redis::RedisClient;
using ts::redis::RedisConfig;
using ts::redis::Reply;
using ts::testing::elapsed_ms;
using ts::testing::FaultProxy;
using ts::testing::ServerProcess;
using ts::testing::Servers;
using ts::testing::fault::BackgroundLoop;
using ts::testing::fault::closing;
using ts::testing::fault::eventually;
using ts::testing::fault::expect_reconnects_capped_and_spread;
using ts::testing::fault::RedisAdmin;
using ts::testing::fault::run_with_client;
using ts::testing::fault::ScopeExit;

namespace {

constexpr const char* kDatabase = "breaker_faults";

Servers& servers() {
  return Servers::instance();
}

std::string state_name(CircuitState s) {
  return std::string(ts::core::to_string(s));
}

// ---- how a call ended ------------------------------------------------------------------------

/// How one call ended (the common Outcome, with the breaker's retry-after of a rejection), once
/// `done`.
struct Ended : ts::testing::Outcome {
  bool done = false;
};

std::string describe(const Ended& e) {
  return e.done ? ts::testing::describe(e) : "not finished";
}

Ended ended_of(const std::exception_ptr& error, Clock::time_point start) {
  return Ended{ts::testing::outcome_of(error, start), true};
}

/// Awaits `op` and reports how it ended instead of throwing.
template <class T>
asio::awaitable<Ended> ended(asio::awaitable<T> op) {
  const ts::testing::Outcome o = co_await ts::testing::outcome(std::move(op));
  co_return Ended{o, true};
}

/// Starts `op` on `io`; `*out` says how it ended once `out->done`. Its time is measured from
/// when its coroutine starts running, not from the spawn: with a hundred calls spawned at once
/// on a loaded machine, the wait for a turn on the loop is not the call's own time.
template <class T>
void spawn_call(asio::io_context& io, asio::awaitable<T> op, Ended* out) {
  asio::co_spawn(io, ended(std::move(op)), [out](std::exception_ptr e, Ended r) {
    *out = e ? ended_of(e, Clock::now()) : std::move(r);
  });
}

/// A command and its reply text, timed from when its coroutine starts running (as spawn_call).
asio::awaitable<void> timed_reply(asio::awaitable<Reply> op, Ended& out, std::string& reply) {
  const auto start = Clock::now();
  std::exception_ptr error;
  try {
    reply = (co_await std::move(op)).as_string();
  } catch (...) {
    error = std::current_exception();
  }
  out = ended_of(error, start);
}

bool all_done(const std::vector<Ended>& calls) {
  return std::all_of(calls.begin(), calls.end(), [](const Ended& e) { return e.done; });
}

/// Starts one call per element of `calls`, the i-th made by `make(i)`, on `io`; each element
/// says how its call ended once `done`.
template <class Make>
void spawn_calls(asio::io_context& io, std::vector<Ended>& calls, Make make) {
  for (std::size_t i = 0; i < calls.size(); ++i) spawn_call(io, make(i), &calls[i]);
}

/// spawn_calls(), then waits up to `timeout` until every call has ended.
template <class Make>
asio::awaitable<bool> run_calls(asio::io_context& io, std::vector<Ended>& calls, Make make,
                                Clock::duration timeout) {
  spawn_calls(io, calls, std::move(make));
  co_return co_await eventually([&] { return all_done(calls); }, timeout);
}

/// A call its caller cancels through the cancellation slot bound to its completion handler.
struct CancellableCall {
  asio::cancellation_signal signal;
  Ended result;
};
using CancellableCalls = std::vector<std::unique_ptr<CancellableCall>>;

template <class T>
void spawn_cancellable(asio::io_context& io, asio::awaitable<T> op, CancellableCall* call) {
  const auto start = Clock::now();
  asio::co_spawn(
      io, std::move(op),
      asio::bind_cancellation_slot(call->signal.slot(), [call, start](std::exception_ptr e, T) {
        call->result = ended_of(e, start);
      }));
}

/// Starts `n` cancellable calls, the i-th made by `make(i)`, on `io`.
template <class Make>
CancellableCalls spawn_cancellables(asio::io_context& io, int n, Make make) {
  CancellableCalls calls;
  for (int i = 0; i < n; ++i) {
    calls.push_back(std::make_unique<CancellableCall>());
    spawn_cancellable(io, make(i), calls.back().get());
  }
  return calls;
}

bool all_done(const CancellableCalls& calls) {
  return std::all_of(calls.begin(), calls.end(), [](const auto& c) { return c->result.done; });
}

/// Cancels every call (terminal) through its cancellation slot.
void cancel(CancellableCalls& calls) {
  for (auto& call : calls) call->signal.emit(asio::cancellation_type::terminal);
}

/// cancel(), then waits up to 1 s until every call has ended.
asio::awaitable<bool> cancel_and_wait(CancellableCalls& calls) {
  cancel(calls);
  co_return co_await eventually([&] { return all_done(calls); }, 1s, 1ms);
}

/// A call raced against a timer in a parallel group: when the timer wins, the group cancels
/// the call (terminal), as a caller that gives up on its own deadline does.
struct RaceResult {
  bool timer_won = false;
  Ended call;
};

template <class T>
asio::awaitable<RaceResult> race_with_timer(asio::awaitable<T> op, milliseconds after) {
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, after);
  const auto start = Clock::now();
  auto group = asio::experimental::make_parallel_group(
      asio::co_spawn(executor, std::move(op), asio::deferred), timer.async_wait(asio::deferred));
  auto [order, op_error, value, timer_error] =
      co_await group.async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
  (void)value;
  (void)timer_error;
  RaceResult r;
  r.timer_won = order[0] == 1;
  r.call = ended_of(op_error, start);
  co_return r;
}

/// Races `n` calls, the i-th made by `make(i)`, each against a timer of `after`, all at once
/// (parallel group, wait_for_one); waits up to 2 s until every race has ended, returns them.
template <class Make>
asio::awaitable<std::vector<RaceResult>> race_all(asio::io_context& io, int n, Make make,
                                                  milliseconds after) {
  struct Races {
    std::vector<RaceResult> results;
    int done = 0;
  };
  auto races = std::make_shared<Races>();
  races->results.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(io, race_with_timer(make(i), after),
                   [races, i](std::exception_ptr e, RaceResult r) {
                     if (e) ADD_FAILURE() << "race_with_timer threw";
                     races->results[static_cast<std::size_t>(i)] = std::move(r);
                     ++races->done;
                   });
  }
  EXPECT_TRUE(co_await eventually([&] { return races->done == n; }, 2s))
      << races->done << " of " << n << " races ended";
  co_return races->results;
}

void expect_cancelled(const Ended& e, const std::string& what) {
  EXPECT_TRUE(e.done) << what;
  EXPECT_TRUE(e.failed) << what << ": " << describe(e);
  EXPECT_EQ(e.kind, ErrorKind::cancelled) << what << ": " << describe(e);
}

void expect_all_cancelled(const CancellableCalls& calls, const std::string& what) {
  for (const auto& call : calls) expect_cancelled(call->result, what);
}

/// Every race was won by its timer, whose cancellation ended the call (`cancelled`) before
/// `bound`.
void expect_timer_cancelled(const std::vector<RaceResult>& raced, const std::string& what,
                            milliseconds bound) {
  for (const auto& r : raced) {
    EXPECT_TRUE(r.timer_won) << describe(r.call);
    expect_cancelled(r.call, what);
    EXPECT_LT(r.call.elapsed, bound) << describe(r.call);
  }
}

/// A hung call: no reply, ended by its own request timeout (outcome unknown). A call
/// pipelined on the same PostgreSQL connection as another that timed out ends as
/// connection_lost (its connection was discarded): also outcome unknown.
void expect_hung(const Ended& e, const std::string& what) {
  EXPECT_TRUE(e.failed) << what << ": " << describe(e);
  EXPECT_EQ(e.kind, ErrorKind::outcome_unknown) << what << ": " << describe(e);
  EXPECT_TRUE(e.code == ts::make_error_code(errc::request_timeout) ||
              e.code == ts::make_error_code(errc::connection_lost))
      << what << ": " << describe(e);
}

/// expect_hung(), ended after `lo` to `hi`.
void expect_hung_for(const Ended& e, const std::string& what, milliseconds lo, milliseconds hi) {
  expect_hung(e, what);
  EXPECT_GE(e.elapsed, lo) << describe(e);
  EXPECT_LE(e.elapsed, hi) << describe(e);
}

/// The open breaker rejects a call at once, with the remaining open period. `elapsed` is the
/// call's own time, from when its coroutine started (spawn_call, timed_reply), not from a spawn.
void expect_open_rejection(const Ended& e) {
  EXPECT_EQ(e.code, ts::make_error_code(errc::circuit_open)) << describe(e);
  EXPECT_EQ(e.kind, ErrorKind::transient_not_sent) << describe(e);
  EXPECT_TRUE(e.retry_after.has_value() && *e.retry_after > 0ms) << describe(e);
  EXPECT_LT(e.elapsed, 50ms) << describe(e);
}

/// The half-open breaker rejects a call (not a probe) at once, with no retry-after.
void expect_half_open_rejection(const Ended& e) {
  EXPECT_EQ(e.code, ts::make_error_code(errc::circuit_open)) << describe(e);
  EXPECT_EQ(e.kind, ErrorKind::transient_not_sent) << describe(e);
  EXPECT_TRUE(e.retry_after.has_value() && *e.retry_after == 0ms)
      << "a half-open rejection has no retry-after: " << describe(e);
  EXPECT_LT(e.elapsed, 50ms) << describe(e);
}

// ---- the breaker -----------------------------------------------------------------------------

/// Open periods: one that lasts for the rest of a test, and one whose first period is in
/// [0.75 s, 1.5 s] (equal jitter of a 1.5 s ceiling).
constexpr ts::core::BackoffConfig kStaysOpen{10s, 20s, 2.0};
constexpr ts::core::BackoffConfig kShortOpen{1500ms, 3000ms, 2.0};

/// A breaker that opens at a failure rate of 0.5 once `min_calls` of a window of `window`
/// calls are recorded, stays open for `open_backoff`, and closes after `probes` half-open
/// probe successes.
void set_breaker(ts::core::CircuitBreakerConfig& b, std::size_t window, std::size_t min_calls,
                 const ts::core::BackoffConfig& open_backoff, std::size_t probes = 1) {
  b.window_size = window;
  b.min_calls = min_calls;
  b.failure_rate_threshold = 0.5;
  b.open_backoff = open_backoff;
  b.half_open_probes = probes;
}

/// The breaker (of a client whose stats are `s`) is open after its first trip.
template <class Stats>
void expect_tripped_once(const Stats& s, const std::string& why) {
  EXPECT_EQ(s.breaker, CircuitState::open) << why;
  EXPECT_EQ(s.breaker_trips, 1u) << why;
}

/// Nothing counted: no failure, no timeout, the breaker closed and never tripped.
template <class Stats>
void expect_nothing_counted(const Stats& s, const std::string& when) {
  EXPECT_EQ(s.failures, 0u) << when;
  EXPECT_EQ(s.timeouts, 0u) << when;
  EXPECT_EQ(s.breaker, CircuitState::closed) << when;
  EXPECT_EQ(s.breaker_trips, 0u) << when << ": the breaker tripped";
}

/// Waits (up to 3 s, polling every millisecond) until the open period of `client`'s breaker
/// has elapsed: the next state read moves it to half-open.
template <class Client>
asio::awaitable<bool> half_open(Client& client) {
  co_return co_await eventually([&] { return client.stats().breaker == CircuitState::half_open; },
                                3s, 1ms);
}

/// F31: 3 failures, one short of min_calls 4, after 20 cancelled calls; then a 4th.
constexpr const char* kThreeOpened =
    "3 failures with min_calls 4 opened the breaker: the 20 cancelled calls were counted as "
    "failures";
constexpr const char* kFourDidNotOpen =
    "4 request timeouts with min_calls 4 did not open the breaker: hung calls are not counted, "
    "or the 20 cancelled calls were counted as successes";

/// F33: `errors` (business errors) left the breaker closed, never tripped, and no timeout
/// counted.
template <class Stats>
void expect_errors_not_counted(const Stats& s, const std::string& errors) {
  EXPECT_EQ(s.breaker, CircuitState::closed) << errors << " opened the breaker";
  EXPECT_EQ(s.breaker_trips, 0u) << errors;
  EXPECT_EQ(s.timeouts, 0u) << errors;
}

/// F33: after the business errors (min_calls 2), one hung call (`hung(0)`) must leave the
/// breaker closed (else they counted as failures: `as_failures`), then `between()`, then a
/// second one (`hung(1)`) must open it (else they counted as successes: `as_successes`).
template <class Client, class Hung, class Between>
asio::awaitable<void> expect_second_timeout_opens(Client& client, Hung hung, Between between,
                                                  std::string as_failures,
                                                  std::string as_successes) {
  const Ended first = co_await ended(hung(0));
  EXPECT_EQ(first.code, ts::make_error_code(errc::request_timeout)) << describe(first);
  EXPECT_EQ(client.stats().breaker, CircuitState::closed)
      << "1 timeout opened the breaker: " << as_failures;
  EXPECT_TRUE(co_await between());
  const Ended second = co_await ended(hung(1));
  EXPECT_EQ(second.code, ts::make_error_code(errc::request_timeout)) << describe(second);
  expect_tripped_once(client.stats(),
                      "2 timeouts with min_calls 2 did not open the breaker: " + as_successes);
}

/// Closes `client` while `calls` hang: close() returns within `bound`, and every call then
/// fails at once as client_closed (`cancelled`).
template <class Client>
asio::awaitable<void> expect_close_ends_calls(Client& client, const std::vector<Ended>& calls,
                                              milliseconds bound, std::string what) {
  const auto close_start = Clock::now();
  co_await client.close();
  EXPECT_LE(elapsed_ms(close_start), bound);
  EXPECT_TRUE(co_await eventually([&] { return all_done(calls); }, 1s));
  for (const auto& c : calls) {
    expect_cancelled(c, what);
    EXPECT_EQ(c.code, ts::make_error_code(errc::client_closed)) << describe(c);
  }
}

/// A fault proxy to the harness's `upstream_port`, started; at scope exit its faults are cleared
/// and, with `cut_at_exit`, its connections cut (the black-holed ones).
class Proxy : public FaultProxy {
 public:
  Proxy(std::uint16_t upstream_port, bool cut_at_exit)
      : FaultProxy("127.0.0.1", upstream_port), cut_at_exit_(cut_at_exit) {
    start();
  }

 private:
  bool cut_at_exit_;
  ScopeExit restore_{[this] {
    clear_faults();
    if (cut_at_exit_) cut_all();
  }};
};

// ---- PostgreSQL --------------------------------------------------------------------------------

/// A blocking libpq connection of the test's own, straight to PostgreSQL: holds the advisory
/// locks the client's statements wait on, and looks at the server from outside the client.
/// Never used while PostgreSQL is frozen.
class Direct : public ts::testing::fault::DirectPg {
 public:
  Direct() : DirectPg(servers().postgres_dsn(kDatabase)) {}

  void lock(int key) { value("SELECT pg_advisory_lock(" + std::to_string(key) + ")"); }
  void unlock(int key) { value("SELECT pg_advisory_unlock(" + std::to_string(key) + ")"); }
  /// Releases whatever this session still holds (scope-exit guards: no warning when the test
  /// released it already).
  void unlock_all() { value("SELECT pg_advisory_unlock_all()"); }
  /// Statements waiting for advisory lock `key`.
  std::int64_t waiting_for(int key) {
    return count(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = " +
        std::to_string(key));
  }
};

/// The Direct connection holding advisory locks `keys` until the test releases them, or until
/// it ends (scope exit).
class HeldLocks : public Direct {
 public:
  explicit HeldLocks(std::initializer_list<int> keys) {
    for (const int key : keys) lock(key);
  }

 private:
  ScopeExit release_{[this] { unlock_all(); }};
};

/// The proxy of the PostgreSQL tests (connections cut at scope exit).
class PgProxy : public Proxy {
 public:
  PgProxy() : Proxy(servers().postgres().port(), true) {}
};

/// Statements that wait until the Direct connection releases an advisory lock (shared lock,
/// transaction-scoped: released when the statement ends). One key per test.
constexpr int kF31Lock = 3101;
constexpr const char* kF31WaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3101)";
constexpr int kF31CloseLock = 3102;
constexpr const char* kF31CloseWaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3102)";
constexpr int kF32LateLock = 3201;
constexpr const char* kF32LateWaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3201)";
constexpr int kF32ProbeLock = 3202;
constexpr const char* kF32ProbeWaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3202)";

/// Starts `n` cancellable calls of `sql` on `client` (statements that wait on the server for
/// an advisory lock).
CancellableCalls spawn_queries(asio::io_context& io, PostgresClient& client, int n,
                               const char* sql) {
  return spawn_cancellables(io, n, [&](int) { return client.query(sql); });
}

/// Waits (up to 3 s) until `waiting` statements wait on the server for advisory lock `key`.
asio::awaitable<bool> lock_waiters(Direct& direct, int key, std::int64_t waiting) {
  co_return co_await eventually([&] { return direct.waiting_for(key) == waiting; }, 3s);
}

std::string dsn_for_port(std::uint16_t port) {
  return ts::testing::fault::pg_dsn_for_port(port, kDatabase);
}

ts::pg::PostgresConfig pg_config(std::string dsn, std::string application_name) {
  ts::pg::PostgresConfig c;
  c.dsn = std::move(dsn);
  c.application_name = std::move(application_name);
  c.min_size = 2;
  c.max_size = 2;
  c.connect_timeout = 500ms;
  c.startup_timeout = 5s;
  c.acquire_timeout = 1s;
  c.statement_timeout = 5s;
  c.network_timeout_margin = 100ms;
  c.close_timeout = 300ms;
  c.reconnect_backoff = {20ms, 200ms, 2.0};
  c.retry.max_attempts = 1;
  return c;
}

/// A hung call: 200 ms + the 100 ms margin, then request_timeout.
constexpr QueryOptions kHungQuery{200ms};

asio::awaitable<bool> pool_settled(PostgresClient& client, std::size_t connections,
                                   Clock::duration timeout) {
  co_return co_await eventually(
      [&] {
        const auto s = client.stats();
        return s.connections == connections && s.in_flight == 0 && s.waiters == 0;
      },
      timeout);
}

/// Checks `client`'s counters against the failures expected from the test.
void expect_pg_counters(const ts::pg::PostgresStats& s, std::uint64_t failures,
                        std::uint64_t cancellations, const std::string& when) {
  EXPECT_EQ(s.failures, failures) << when;
  EXPECT_EQ(s.cancellations, cancellations) << when;
  EXPECT_EQ(s.breaker, CircuitState::closed) << when;
  EXPECT_EQ(s.breaker_trips, 0u) << when;
}

/// A test body given two started PostgresClients.
using TwoClientTest =
    std::function<asio::awaitable<void>(asio::io_context&, PostgresClient&, PostgresClient&)>;

/// run_coroutine_test() of a body with two clients (of `first` and `second`) on the loop,
/// started, handed to `test`, then closed whatever happened.
void run_with_two_clients(const ts::pg::PostgresConfig& first, const ts::pg::PostgresConfig& second,
                          Clock::duration timeout, const TwoClientTest& test) {
  ts::testing::run_coroutine_test(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        PostgresClient a(io.get_executor(), first);
        PostgresClient b(io.get_executor(), second);
        co_await closing(a, b, [&]() -> asio::awaitable<void> {
          co_await a.start();
          co_await b.start();
          co_await test(io, a, b);
        }());
      },
      timeout);
}

// ---- Redis -----------------------------------------------------------------------------------

RedisConfig redis_config(std::string url, std::string name) {
  auto c = ts::testing::fault::fast_config(std::move(url), std::move(name));
  // No health check in the way: it would declare a silent connection dead and count that
  // loss (a real failure, but one the F31 tests do not inject on purpose).
  c.health_check_interval = 5s;
  c.health_check_timeout = 10s;
  c.command_timeout = 5s;
  c.close_timeout = 300ms;
  return c;
}

std::string proxy_url(const FaultProxy& proxy) {
  return ts::testing::fault::redis_url_for_port(proxy.port());
}

/// The proxy of the Redis tests (faults cleared at scope exit).
class RedisProxy : public Proxy {
 public:
  RedisProxy() : Proxy(servers().redis_port(), false) {}
};

}  // namespace

// ---- F31 hung calls count, cancelled calls do not ---------------------------------------------

namespace {

asio::awaitable<void> f31_pg_cancel_body(asio::io_context& io, PostgresClient& client,
                                         Direct& direct, FaultProxy& proxy) {
  EXPECT_TRUE(co_await pool_settled(client, 4, 5s));
  constexpr int kEach = 10;
  const auto waits_for_lock = [&](int) { return client.query(kF31WaitsForLock); };

  // 1. Cancelled through the cancellation slot, while hanging on the server.
  auto slotted = spawn_cancellables(io, kEach, waits_for_lock);
  EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == kEach; }, 3s))
      << "in flight: " << client.stats().in_flight;
  EXPECT_TRUE(co_await eventually([&] { return direct.waiting_for(kF31Lock) >= 1; }, 3s));
  const auto cancelled_at = Clock::now();
  EXPECT_TRUE(co_await cancel_and_wait(slotted));
  EXPECT_LT(elapsed_ms(cancelled_at), 500ms);
  expect_all_cancelled(slotted, "slot-cancelled call");
  expect_pg_counters(client.stats(), 0, kEach, "after the slot cancellations");

  // 2. Cancelled by a timer racing the call (parallel group, wait_for_one).
  const auto raced = co_await race_all(io, kEach, waits_for_lock, 100ms);
  expect_timer_cancelled(raced, "timer-cancelled call", 500ms);
  auto s = client.stats();
  expect_pg_counters(s, 0, 2 * kEach, "after the timer cancellations");
  EXPECT_EQ(s.timeouts, 0u);

  // The abandoned statements end (the lock is released); the pool is back to 4.
  direct.unlock(kF31Lock);
  EXPECT_TRUE(co_await pool_settled(client, 4, 5s))
      << "connections " << client.stats().connections << ", in flight " << client.stats().in_flight;
  expect_pg_counters(client.stats(), 0, 2 * kEach, "after the pool settled");

  // The cancel requests of phases 1 and 2 (sent through the proxy, on their own sockets)
  // are done: a connection with a cancel request still on its way takes no new statement,
  // and a cancel request caught by the black hole never finishes (PQcancel has no timeout):
  // its connection would take no statement until connect_timeout discards it
  // (F31_PgStuckCancelDoesNotStallThePool), and the 4th call below would then find no
  // connection and end as "server unreachable" instead of the request timeout tested here.
  // The client's own word first: a cancel request handed to the sender's thread may not have
  // reached the proxy yet on a loaded machine (the proxy's count alone was seen to pass with
  // one still to come, which the black hole then caught: the 4th call found no connection).
  EXPECT_TRUE(co_await eventually(
      [&] { return client.stats().cancels_in_progress == 0 && proxy.active_connections() == 4; },
      3s))
      << client.stats().cancels_in_progress << " cancel requests in progress, "
      << proxy.active_connections() << " connections through the proxy";

  // 3. Hung calls: the proxy forwards nothing any more. Three at once, on three
  //    connections: three failures, one short of min_calls.
  proxy.set_blackhole(true);
  std::vector<Ended> hung(3);
  EXPECT_TRUE(co_await run_calls(
      io, hung, [&](std::size_t) { return client.query(kHungQuery, "SELECT 1"); }, 3s));
  for (const auto& h : hung) expect_hung_for(h, "hung call", 250ms, 1500ms);
  s = client.stats();
  EXPECT_EQ(s.breaker, CircuitState::closed) << kThreeOpened;
  EXPECT_EQ(s.failures, 3u);
  // The 4th hung call, on the connection left: min_calls reached at 100 % failures.
  const Ended fourth = co_await ended(client.query(kHungQuery, "SELECT 1"));
  EXPECT_EQ(fourth.code, ts::make_error_code(errc::request_timeout)) << describe(fourth);
  EXPECT_EQ(fourth.kind, ErrorKind::outcome_unknown) << describe(fourth);
  s = client.stats();
  expect_tripped_once(s, kFourDidNotOpen);
  EXPECT_GE(s.timeouts, 2u);
  expect_open_rejection(co_await ended(client.query("SELECT 1")));
  proxy.cut_all();  // the black-holed connections
}

}  // namespace

// PostgresClient through a fault proxy, breaker window 20, min_calls 4, threshold 0.5.
// 20 calls hang on the server (each waits for an advisory lock the test holds) and are
// cancelled by their callers: 10 through a cancellation slot, 10 by a 100 ms timer racing them
// in a parallel group. They end as `cancelled`, fast; the client counts 20 cancellations,
// 0 failures, 0 timeouts, and the breaker stays closed. Then the proxy black-holes every
// connection: 3 hung calls end by their request timeout (300 ms) and the breaker stays closed
// (3 < min_calls); the 4th opens it, and the next call is rejected at once. Had the 20
// cancellations counted as failures the breaker would have opened in the first phase; had they
// counted as successes, 4 failures in a window of 20 would stay under the threshold.
TEST(BreakerFault, F31_PgCancelledCallsDoNotCountHungCallsOpenBreaker) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  PgProxy proxy;
  HeldLocks direct{kF31Lock};
  auto config = pg_config(dsn_for_port(proxy.port()), "f31_pg_cancel");
  config.min_size = 4;
  config.max_size = 4;
  set_breaker(config.breaker, 20, 4, kStaysOpen);  // stays open for the rest of the test
  run_with_client(config, 30s, [&](asio::io_context& io, PostgresClient& client) {
    return f31_pg_cancel_body(io, client, direct, proxy);
  });
}

// Shutdown while calls hang: 10 statements wait on the server (advisory lock) when close() is
// called (close_timeout 300 ms). They fail as client_closed (`cancelled`), close() returns
// within its bound, and although the breaker would open on a single counted failure
// (min_calls 1), it never tripped: 0 failures, 0 timeouts.
TEST(BreakerFault, F31_PgCloseWithHungCallsDoesNotCount) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  HeldLocks direct{kF31CloseLock};
  auto config = pg_config(servers().postgres_dsn(kDatabase), "f31_pg_close");
  set_breaker(config.breaker, 5, 1, kStaysOpen);
  run_with_client(
      config, 20s, [&](asio::io_context& io, PostgresClient& client) -> asio::awaitable<void> {
        EXPECT_TRUE(co_await pool_settled(client, 2, 5s));
        constexpr int kCalls = 10;
        std::vector<Ended> calls(kCalls);
        spawn_calls(io, calls, [&](std::size_t) { return client.query(kF31CloseWaitsForLock); });
        EXPECT_TRUE(co_await eventually([&] { return client.stats().in_flight == kCalls; }, 3s));
        EXPECT_TRUE(
            co_await eventually([&] { return direct.waiting_for(kF31CloseLock) >= 1; }, 3s));
        co_await expect_close_ends_calls(client, calls, config.close_timeout + 1500ms,
                                         "call hung at close()");
        const auto s = client.stats();
        expect_nothing_counted(s, "close() with hung calls");
        EXPECT_EQ(s.cancellations, static_cast<std::uint64_t>(kCalls));
      });
}

// ---- F31 a stuck cancel request, a full outage, a saturated pool -----------------------------

namespace {

constexpr int kF31StuckLock = 3103;
constexpr const char* kF31StuckWaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3103)";
constexpr int kF31SaturatedLock = 3104;
constexpr const char* kF31SaturatedWaitsForLock =
    "SELECT 1 FROM pg_advisory_xact_lock_shared(3104)";
constexpr int kF31AllStuckLock = 3105;
constexpr const char* kF31AllStuckWaitsForLock = "SELECT 1 FROM pg_advisory_xact_lock_shared(3105)";
/// The cancel sender's threads (CancelSender::kMaxThreads) and the time after which a request
/// in progress counts as stuck (CancelSender::kStuckAfter), as documented in docs/postgres.md.
constexpr int kCancelThreads = 4;
constexpr milliseconds kCancelStuckAfter{1000};

asio::awaitable<void> f31_pg_stuck_cancel_body(asio::io_context& io, PostgresClient& proxied,
                                               PostgresClient& healthy, Direct& direct,
                                               FaultProxy& proxy) {
  EXPECT_TRUE(co_await pool_settled(proxied, 2, 5s));
  EXPECT_TRUE(co_await pool_settled(healthy, 1, 5s));

  // 1. Two statements wait on the server, one on each proxied connection.
  auto calls = spawn_queries(io, proxied, 2, kF31StuckWaitsForLock);
  EXPECT_TRUE(co_await lock_waiters(direct, kF31StuckLock, 2));
  EXPECT_EQ(proxied.stats().in_flight, 2u);

  // 2. The proxy becomes a black hole, then both callers give up: each connection is left with
  //    an abandoned statement only, so it sends a cancel request, into the black hole (the
  //    proxy accepts it and never answers: PQcancel waits, with no timeout of its own).
  proxy.set_blackhole(true);
  const auto accepted = proxy.connections_accepted();
  EXPECT_TRUE(co_await cancel_and_wait(calls));
  expect_all_cancelled(calls, "cancelled call");
  EXPECT_TRUE(co_await eventually([&] { return proxy.connections_accepted() >= accepted + 2; }, 2s))
      << "cancel requests sent concurrently: " << proxy.connections_accepted() - accepted
      << " of 2 reached the proxy";

  // 3. Another client's cancel request, to the healthy server, is not held up by the stuck
  //    ones: its statement stops waiting at once and its connection serves the next call.
  auto other = spawn_queries(io, healthy, 1, kF31StuckWaitsForLock);
  EXPECT_TRUE(co_await lock_waiters(direct, kF31StuckLock, 3));
  EXPECT_TRUE(co_await cancel_and_wait(other));
  expect_all_cancelled(other, "cancelled call on the healthy client");
  EXPECT_TRUE(co_await eventually([&] { return direct.waiting_for(kF31StuckLock) == 2; }, 2s))
      << "the cancel request to the healthy server waited behind the stuck ones";
  const Ended next = co_await ended(healthy.query("SELECT 1"));
  EXPECT_FALSE(next.failed) << describe(next);
  EXPECT_LT(next.elapsed, 500ms) << describe(next);

  // 4. New connections are forwarded again (the black-holed ones stay dead). The proxied
  //    connections, whose cancel requests never completed, were discarded once
  //    connect_timeout (the bound of a cancel request) had passed, and the pool replaced them.
  proxy.clear_faults();
  EXPECT_TRUE(co_await eventually(
      [&] {
        const auto s = proxied.stats();
        return s.connections == 2 && s.discarded >= 2;
      },
      5s))
      << "connections " << proxied.stats().connections << ", discarded "
      << proxied.stats().discarded
      << ": connections with a stuck cancel request are kept, taking no statement";
  const Ended after = co_await ended(proxied.query_value<std::int32_t>("SELECT 31"));
  EXPECT_FALSE(after.failed) << describe(after);
  proxy.cut_all();  // the black-holed connections, and with them the stuck cancel requests
  direct.unlock(kF31StuckLock);
}

asio::awaitable<void> f31_pg_all_stuck_body(asio::io_context& io, PostgresClient& proxied,
                                            PostgresClient& healthy, Direct& direct,
                                            FaultProxy& proxy) {
  EXPECT_TRUE(co_await pool_settled(proxied, kCancelThreads, 5s));
  EXPECT_TRUE(co_await pool_settled(healthy, 1, 5s));
  // 1. One statement waits on the server on each proxied connection; black hole; their
  //    callers give up: one cancel request per thread, all stuck.
  auto calls = spawn_queries(io, proxied, kCancelThreads, kF31AllStuckWaitsForLock);
  EXPECT_TRUE(co_await lock_waiters(direct, kF31AllStuckLock, kCancelThreads));
  proxy.set_blackhole(true);
  const auto accepted = proxy.connections_accepted();
  cancel(calls);
  EXPECT_TRUE(co_await eventually(
      [&] { return proxy.connections_accepted() >= accepted + kCancelThreads; }, 2s))
      << proxy.connections_accepted() - accepted << " cancel requests in progress";
  // "Stuck" is a duration: in progress for longer than kCancelStuckAfter.
  asio::steady_timer stuck(io, kCancelStuckAfter + 200ms);
  co_await stuck.async_wait(asio::use_awaitable);

  // 2. A cancel request of the healthy client is dropped at once rather than queued behind
  //    them, and its connection is discarded at once (its connect_timeout, the bound of a
  //    cancel request, is 5 s) and replaced.
  auto other = spawn_queries(io, healthy, 1, kF31AllStuckWaitsForLock);
  EXPECT_TRUE(co_await lock_waiters(direct, kF31AllStuckLock, kCancelThreads + 1));
  const auto cancelled_at = Clock::now();
  EXPECT_TRUE(co_await cancel_and_wait(other));
  expect_all_cancelled(other, "cancelled call on the healthy client");
  EXPECT_TRUE(co_await eventually([&] { return healthy.stats().discarded == 1; }, 1s))
      << "the connection whose cancel request could not be sent is kept: discarded "
      << healthy.stats().discarded;
  EXPECT_LT(elapsed_ms(cancelled_at), 1000ms);
  const Ended next = co_await ended(healthy.query_value<std::int32_t>("SELECT 31"));
  EXPECT_FALSE(next.failed) << describe(next);
  proxy.clear_faults();
  proxy.cut_all();  // ends the stuck cancel requests
  direct.unlock(kF31AllStuckLock);
}

/// A stuck-cancel test body: client A (`proxied`) through the fault proxy, client B
/// (`healthy`) straight to PostgreSQL.
using StuckCancelBody = asio::awaitable<void> (*)(asio::io_context&, PostgresClient& proxied,
                                                  PostgresClient& healthy, Direct&, FaultProxy&);

/// Runs `body` with PostgresClient A (application `proxied_app`, pool of `pool`, through a fault
/// proxy, its breaker open for the rest of the test once tripped) and B (`healthy_app`, pool of
/// 1, straight to PostgreSQL), both with `connect_timeout` unless nullopt (pg_config's), while
/// the Direct connection holds lock `key`.
void run_stuck_cancel_test(const std::string& proxied_app, const std::string& healthy_app, int key,
                           std::size_t pool, std::optional<milliseconds> connect_timeout,
                           StuckCancelBody body) {
  servers().create_database(kDatabase);
  PgProxy proxy;
  HeldLocks direct{key};
  auto proxied_config = pg_config(dsn_for_port(proxy.port()), proxied_app);
  proxied_config.min_size = pool;
  proxied_config.max_size = pool;
  proxied_config.breaker.open_backoff = kStaysOpen;
  auto healthy_config = pg_config(servers().postgres_dsn(kDatabase), healthy_app);
  healthy_config.min_size = 1;
  healthy_config.max_size = 1;
  if (connect_timeout) {
    proxied_config.connect_timeout = *connect_timeout;
    healthy_config.connect_timeout = *connect_timeout;
  }
  run_with_two_clients(proxied_config, healthy_config, 30s,
                       [&](asio::io_context& io, PostgresClient& proxied, PostgresClient& healthy) {
                         return body(io, proxied, healthy, direct, proxy);
                       });
}

asio::awaitable<void> f31_pg_outage_body(asio::io_context& io, PostgresClient& client,
                                         FaultProxy& proxy) {
  EXPECT_TRUE(co_await pool_settled(client, 2, 5s));
  const auto acquire_timeout = client.config().acquire_timeout;

  // 1. Full outage: two hung calls, one on each connection, end by their request timeout
  //    (two counted failures, under min_calls) and their connections are discarded.
  proxy.set_blackhole(true);
  std::vector<Ended> hung(2);
  EXPECT_TRUE(co_await run_calls(
      io, hung, [&](std::size_t) { return client.query(kHungQuery, "SELECT 1"); }, 3s));
  for (const auto& h : hung) expect_hung(h, "hung call");
  EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 0; }, 2s));
  EXPECT_EQ(client.stats().breaker, CircuitState::closed);

  // 2. The pool cannot reconnect (each attempt hangs in the start-up until connect_timeout).
  //    Callers that find no connection are failures of the server, not saturation: they
  //    count, and the breaker opens after min_calls.
  std::vector<Ended> unreachable;
  for (int i = 0; i < 6 && client.stats().breaker == CircuitState::closed; ++i) {
    unreachable.push_back(co_await ended(client.query("SELECT 1")));
  }
  auto s = client.stats();
  expect_tripped_once(
      s, "breaker " + state_name(s.breaker) + " after " + std::to_string(unreachable.size()) +
             " calls against an unreachable server; the last one " +
             (unreachable.empty() ? std::string("-") : describe(unreachable.back())));
  EXPECT_EQ(unreachable.size(), 2u) << "2 hung calls + 2 unreachable = min_calls 4";
  for (const auto& u : unreachable) {
    EXPECT_TRUE(u.failed) << describe(u);
    EXPECT_EQ(u.kind, ErrorKind::transient_not_sent) << describe(u);
    EXPECT_TRUE(u.code == ts::make_error_code(errc::connect_timeout) ||
                u.code == ts::make_error_code(errc::connect_failed))
        << describe(u);
    EXPECT_NE(u.what.find("unreachable"), std::string::npos) << describe(u);
    EXPECT_NE(u.what.find("last connect attempt failed"), std::string::npos) << describe(u);
    EXPECT_NE(u.what.find("connect timed out"), std::string::npos)
        << "carries the last connect error: " << describe(u);
    EXPECT_LT(u.elapsed, acquire_timeout) << "waited the full acquire_timeout: " << describe(u);
  }
  expect_open_rejection(co_await ended(client.query("SELECT 1")));

  // 3. The fault clears: the pool refills (the maintenance keeps reconnecting while the
  //    breaker is open), the open period elapses, one probe succeeds and closes the breaker.
  proxy.clear_faults();
  proxy.cut_all();
  EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 2; }, 5s))
      << "connections " << client.stats().connections;
  EXPECT_TRUE(co_await half_open(client)) << "breaker " << state_name(client.stats().breaker);
  const Ended probe = co_await ended(client.query_value<std::int32_t>("SELECT 31"));
  EXPECT_FALSE(probe.failed) << describe(probe);
  s = client.stats();
  EXPECT_EQ(s.breaker, CircuitState::closed) << "the probe's success did not close it";
  EXPECT_EQ(s.breaker_trips, 1u);
  EXPECT_EQ(s.connections, 2u);
}

asio::awaitable<void> f31_pg_saturated_body(asio::io_context& io, PostgresClient& client,
                                            Direct& direct) {
  EXPECT_TRUE(co_await pool_settled(client, 1, 5s));
  // The only connection is busy with a statement waiting for a lock (pipeline depth 1: no
  // other statement may share it).
  Ended holder;
  spawn_call(io, client.query(kF31SaturatedWaitsForLock), &holder);
  EXPECT_TRUE(co_await lock_waiters(direct, kF31SaturatedLock, 1));
  constexpr int kCallers = 10;
  std::vector<Ended> waiters(kCallers);
  EXPECT_TRUE(co_await run_calls(
      io, waiters, [&](std::size_t) { return client.query("SELECT 1"); }, 3s));
  for (const auto& w : waiters) {
    EXPECT_EQ(w.code, ts::make_error_code(errc::acquire_timeout)) << describe(w);
    EXPECT_EQ(w.kind, ErrorKind::transient_not_sent) << describe(w);
    EXPECT_EQ(w.what.find("unreachable"), std::string::npos) << describe(w);
  }
  auto s = client.stats();
  EXPECT_EQ(s.failures, static_cast<std::uint64_t>(kCallers));
  EXPECT_EQ(s.breaker, CircuitState::closed)
      << "acquire timeouts of a saturated pool opened the breaker";
  EXPECT_EQ(s.breaker_trips, 0u);
  EXPECT_EQ(s.connections, 1u);
  EXPECT_FALSE(holder.done) << describe(holder);
  direct.unlock(kF31SaturatedLock);
  EXPECT_TRUE(co_await eventually([&] { return holder.done; }, 3s));
  EXPECT_FALSE(holder.failed) << describe(holder);
  EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 31"), 31);
  s = client.stats();
  EXPECT_EQ(s.breaker, CircuitState::closed);
  EXPECT_EQ(s.breaker_trips, 0u);
}

}  // namespace

// A cancel request that never completes must not stall anything. PostgresClient A (pool of 2)
// goes through a fault proxy, client B (pool of 1) straight to PostgreSQL. Two statements of A
// wait on the server; the proxy becomes a black hole; their callers cancel them, so A sends two
// cancel requests into the black hole, where they hang (PQcancel has no timeout). They are sent
// concurrently (both reach the proxy). A statement of B is then cancelled by its caller: its
// cancel request reaches the server at once (the statement stops waiting, B serves its next
// call in < 500 ms) instead of queueing behind the stuck ones. When the black hole ends for new
// connections, A's connections, whose cancel requests never completed, have been discarded
// (connect_timeout bounds a cancel request) and replaced: A serves calls again.
TEST(BreakerFault, F31_PgStuckCancelDoesNotStallThePool) {
  TS_SKIP_IF_EXTERNAL();
  run_stuck_cancel_test("f31_pg_stuck_cancel", "f31_pg_stuck_healthy", kF31StuckLock, 2,
                        std::nullopt, f31_pg_stuck_cancel_body);
}

// When every cancel-request thread is stuck, a further cancel request is dropped and its
// connection discarded instead, at once. PostgresClient A (pool of 4, through a fault proxy)
// sends 4 cancel requests into a black hole (as in the test above): one per thread, all stuck
// for over a second. Then a statement of client B (pool of 1, straight to PostgreSQL,
// connect_timeout 5 s) is cancelled by its caller: its cancel request is dropped, and B's
// connection is discarded within a second (not after B's connect_timeout) and replaced: B serves
// its next call.
TEST(BreakerFault, F31_PgAllCancelThreadsStuckDropsAndDiscards) {
  TS_SKIP_IF_EXTERNAL();
  run_stuck_cancel_test("f31_pg_all_stuck", "f31_pg_all_stuck_healthy", kF31AllStuckLock,
                        kCancelThreads, 5s, f31_pg_all_stuck_body);
}

// A full outage opens the breaker although the pool's connections are gone. PostgresClient
// through a fault proxy, pool of 2, breaker min_calls 4, first open period 0.75-1.5 s. The
// proxy black-holes everything: two hung calls time out (2 failures) and their connections are
// discarded; every reconnect attempt then hangs until connect_timeout (300 ms). The next two
// callers find no connection: each fails with the next failed connect attempt, before its
// acquire_timeout (1 s), as transient_not_sent saying the server is unreachable with the last
// connect error, and counts: the breaker opens (1 trip) and the next call is rejected at once
// with circuit_open. (Before, these callers ended as acquire_timeout, which the breaker
// ignores: it never opened.) The fault clears: the pool refills, the breaker goes half-open,
// a probe succeeds and closes it.
TEST(BreakerFault, F31_PgFullOutageOpensBreaker) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  PgProxy proxy;
  auto config = pg_config(dsn_for_port(proxy.port()), "f31_pg_outage");
  config.connect_timeout = 300ms;
  config.acquire_timeout = 1s;
  set_breaker(config.breaker, 10, 4, kShortOpen, 1);
  run_with_client(config, 30s, [&](asio::io_context& io, PostgresClient& client) {
    return f31_pg_outage_body(io, client, proxy);
  });
}

// Acquire timeouts of a saturated but healthy pool are this process's load, not the server's
// health: they do not count. Pool of 1, pipeline depth 1, acquire_timeout 200 ms, breaker
// min_calls 2. The connection is busy with a statement waiting for a lock; 10 callers time out
// waiting for it (acquire_timeout, not "unreachable"); the breaker stays closed (had they
// counted, it would have opened at the 2nd). The lock is released, the statement and the next
// call succeed.
TEST(BreakerFault, F31_PgSaturatedPoolAcquireTimeoutsDoNotCount) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  HeldLocks direct{kF31SaturatedLock};
  auto config = pg_config(servers().postgres_dsn(kDatabase), "f31_pg_saturated");
  config.min_size = 1;
  config.max_size = 1;
  config.max_pipeline_depth = 1;
  config.acquire_timeout = 200ms;
  set_breaker(config.breaker, 10, 2, kStaysOpen);
  run_with_client(config, 20s, [&](asio::io_context& io, PostgresClient& client) {
    return f31_pg_saturated_body(io, client, direct);
  });
}

// RedisClient through a fault proxy that delays every reply by 600 ms: 20 commands are written
// and then cancelled by their callers (10 through a cancellation slot, 10 by a 50 ms timer
// racing them in a parallel group). They end as `cancelled` at once, their late replies are read
// and dropped, and the breaker (window 20, min_calls 4, threshold 0.5) stays closed with
// 0 failures and 0 timeouts. Then the proxy black-holes the connection: 3 hung commands end by
// their 200 ms timeout and the breaker stays closed; the 4th opens it; the next call is
// rejected at once.
TEST(BreakerFault, F31_RedisCancelledCallsDoNotCountHungCallsOpenBreaker) {
  TS_SKIP_IF_EXTERNAL();
  RedisProxy proxy;
  auto config = redis_config(proxy_url(proxy), "f31-redis-cancel");
  set_breaker(config.breaker, 20, 4, kStaysOpen);
  run_with_client(
      config, 30s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        constexpr int kEach = 10;
        proxy.set_latency(0ms, 600ms);

        // 1. Cancelled through the cancellation slot, after being written.
        auto slotted = spawn_cancellables(io, kEach, [&](int i) {
          return client.command("ECHO", "f31:slot:" + std::to_string(i));
        });
        EXPECT_TRUE(co_await eventually(
            [&] {
              const auto s = client.stats();
              return s.in_flight == kEach && s.queued == 0 && s.writes >= 1;
            },
            2s))
            << "in flight " << client.stats().in_flight;
        const auto cancelled_at = Clock::now();
        EXPECT_TRUE(co_await cancel_and_wait(slotted));
        EXPECT_LT(elapsed_ms(cancelled_at), 100ms);
        expect_all_cancelled(slotted, "slot-cancelled command");

        // 2. Cancelled by a timer racing the command (parallel group, wait_for_one).
        const auto raced = co_await race_all(
            io, kEach,
            [&](int i) { return client.command("ECHO", "f31:race:" + std::to_string(i)); }, 50ms);
        expect_timer_cancelled(raced, "timer-cancelled command", 300ms);
        // The 20 late replies arrive and are dropped; the connection stays in sync.
        EXPECT_TRUE(
            co_await eventually([&] { return client.stats().dropped_replies == 2 * kEach; }, 3s))
            << "dropped replies: " << client.stats().dropped_replies;
        auto s = client.stats();
        EXPECT_EQ(s.cancellations, static_cast<std::uint64_t>(2 * kEach));
        expect_nothing_counted(s, "after the cancellations");
        EXPECT_EQ(s.disconnects, 0u);

        // 3. Hung calls: nothing comes back any more. Three at once: one short of min_calls.
        proxy.set_latency(0ms, 0ms);
        proxy.set_blackhole(true);
        std::vector<Ended> hung(3);
        EXPECT_TRUE(co_await run_calls(
            io, hung,
            [&](std::size_t) { return client.command(CommandOptions{200ms}, "ECHO", "f31:hung"); },
            2s));
        for (const auto& h : hung) {
          expect_hung_for(h, "hung command", 190ms, 700ms);
          EXPECT_EQ(h.code, ts::make_error_code(errc::request_timeout)) << describe(h);
        }
        s = client.stats();
        EXPECT_EQ(s.breaker, CircuitState::closed) << kThreeOpened;
        EXPECT_EQ(s.timeouts, 3u);
        const Ended fourth = co_await ended(client.command(CommandOptions{200ms}, "ECHO", "x"));
        EXPECT_EQ(fourth.code, ts::make_error_code(errc::request_timeout)) << describe(fourth);
        expect_tripped_once(client.stats(), kFourDidNotOpen);
        expect_open_rejection(co_await ended(client.command("ECHO", "f31:rejected")));
        proxy.cut_all();
      });
}

// Shutdown while commands hang (replies delayed 3 s by the proxy, command timeout 5 s):
// close() (close_timeout 300 ms) fails them as client_closed (`cancelled`); with min_calls 1 a
// single counted failure would have tripped the breaker: it did not, 0 failures, 0 timeouts.
TEST(BreakerFault, F31_RedisCloseWithHungCallsDoesNotCount) {
  TS_SKIP_IF_EXTERNAL();
  RedisProxy proxy;
  auto config = redis_config(proxy_url(proxy), "f31-redis-close");
  set_breaker(config.breaker, 5, 1, kStaysOpen);
  run_with_client(config, 20s,
                  [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
                    proxy.set_latency(0ms, 3000ms);
                    constexpr int kCalls = 10;
                    std::vector<Ended> calls(kCalls);
                    spawn_calls(io, calls, [&](std::size_t i) {
                      return client.command("ECHO", "f31:close:" + std::to_string(i));
                    });
                    EXPECT_TRUE(co_await eventually(
                        [&] {
                          const auto s = client.stats();
                          return s.in_flight == kCalls && s.queued == 0;
                        },
                        2s));
                    co_await expect_close_ends_calls(client, calls, config.close_timeout + 1000ms,
                                                     "command hung at close()");
                    expect_nothing_counted(client.stats(), "close() with hung commands");
                  });
}

// ---- F32 half-open with many concurrent callers -------------------------------------------------

namespace {

asio::awaitable<void> f32_pg_body(asio::io_context& io, PostgresClient& client, Direct& direct,
                                  ServerProcess& pg, bool& paused) {
  EXPECT_TRUE(co_await pool_settled(client, 2, 5s));
  // A: admitted while closed, waits on the server.
  Ended late;
  spawn_call(io, client.query(QueryOptions{20s}, kF32LateWaitsForLock), &late);
  EXPECT_TRUE(co_await lock_waiters(direct, kF32LateLock, 1));

  // The outage: the server freezes; a call on the other connection hangs until its
  // deadline and opens the breaker.
  pg.pause();
  paused = true;
  const Ended tripper = co_await ended(client.query(kHungQuery, "SELECT 1"));
  EXPECT_EQ(tripper.code, ts::make_error_code(errc::request_timeout)) << describe(tripper);
  auto s = client.stats();
  expect_tripped_once(s, "a request timeout with min_calls 1");
  expect_open_rejection(co_await ended(client.query("SELECT 1")));
  EXPECT_FALSE(late.done) << describe(late);

  // The server is back; the pool refills (the breaker plays no part in that).
  pg.resume();
  paused = false;
  EXPECT_TRUE(co_await eventually([&] { return client.stats().connections == 2; }, 5s));
  // The open period elapses: the next state read moves it to half-open.
  EXPECT_TRUE(co_await half_open(client)) << "breaker " << state_name(client.stats().breaker);
  EXPECT_FALSE(late.done) << describe(late);

  // A's late success, while half-open with one probe needed to close.
  direct.unlock(kF32LateLock);
  EXPECT_TRUE(co_await eventually([&] { return late.done; }, 3s));
  EXPECT_FALSE(late.failed) << describe(late);
  s = client.stats();
  EXPECT_EQ(s.breaker, CircuitState::half_open)
      << "the late success of a call admitted before the trip changed the breaker";
  EXPECT_EQ(s.breaker_trips, 1u);

  // 100 concurrent callers: the probe waits for kF32ProbeLock, the others are rejected.
  constexpr int kCallers = 100;
  std::vector<Ended> calls(kCallers);
  spawn_calls(io, calls, [&](std::size_t) { return client.query(kF32ProbeWaitsForLock); });
  const auto count_rejected = [&] {
    return std::count_if(calls.begin(), calls.end(), [](const Ended& e) {
      return e.done && e.code == ts::make_error_code(errc::circuit_open);
    });
  };
  EXPECT_TRUE(co_await eventually([&] { return count_rejected() == kCallers - 1; }, 2s, 1ms))
      << count_rejected() << " rejected";
  EXPECT_EQ(client.stats().in_flight, 1u) << "probes admitted";
  EXPECT_TRUE(co_await eventually([&] { return direct.waiting_for(kF32ProbeLock) == 1; }, 2s));
  direct.unlock(kF32ProbeLock);
  EXPECT_TRUE(co_await eventually([&] { return all_done(calls); }, 3s));
  int succeeded = 0;
  for (const auto& c : calls) {
    if (!c.failed) {
      ++succeeded;
      continue;
    }
    expect_half_open_rejection(c);
    EXPECT_NE(c.what.find("half-open"), std::string::npos) << describe(c);
  }
  EXPECT_EQ(succeeded, 1) << "probes admitted out of " << kCallers;
  s = client.stats();
  EXPECT_EQ(s.breaker, CircuitState::closed) << "the probe's success did not close it";
  EXPECT_EQ(s.breaker_trips, 1u);
  EXPECT_EQ(co_await client.query_value<std::int32_t>("SELECT 32"), 32);
}

}  // namespace

// A real outage of PostgreSQL (SIGSTOP) opens the breaker (min_calls 1, half_open_probes 1,
// first open period 0.75-1.5 s). Call A was admitted before the trip and waits on the server
// for an advisory lock the test holds. The server comes back, the pool refills, the open period
// elapses (half-open), and only then the test releases the lock: A's late success must not close
// the breaker (it stays half-open). Then 100 concurrent callers: exactly 1 is admitted as the
// probe (its statement waits for a second lock, so that no result can change the state while
// the others are admitted), 99 are rejected at once with circuit_open, retry_after 0 (the
// half-open rejection). The probe's success closes the breaker.
TEST(BreakerFault, F32_PgHalfOpenAdmitsOnlyProbesLateResultDoesNotClose) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  ServerProcess& pg = servers().postgres();
  HeldLocks direct{kF32LateLock, kF32ProbeLock};
  bool paused = false;
  ScopeExit resume([&] {  // before the locks are released: never while the server is frozen
    if (paused) pg.resume();
  });
  auto config = pg_config(servers().postgres_dsn(kDatabase), "f32_pg");
  config.connect_timeout = 300ms;
  set_breaker(config.breaker, 10, 1, kShortOpen, 1);
  run_with_client(config, 30s, [&](asio::io_context& io, PostgresClient& client) {
    return f32_pg_body(io, client, direct, pg, paused);
  });
}

// The same with RedisClient and half_open_probes 3: a real outage (SIGSTOP) opens the breaker
// (min_calls 2: two commands time out), the server comes back and the client reconnects, the
// open period (0.75-1.5 s) elapses; then 100 commands are issued at once. Exactly 3 are
// admitted and answered (each its own ECHO), 97 are rejected at once with circuit_open and
// retry_after 0 (and counted as rejected); the 3 probe successes close the breaker.
TEST(BreakerFault, F32_RedisHalfOpenAdmitsOnlyProbes) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  bool paused = false;
  ScopeExit resume([&] {
    if (paused) redis.resume();
  });
  auto config =
      ts::testing::fault::fast_config(ts::testing::fault::redis_url_for_db(0), "f32-redis");
  config.command_timeout = 200ms;
  config.connect_timeout = 300ms;
  config.health_check_interval = 200ms;
  config.health_check_timeout = 600ms;
  config.reconnect_backoff = {20ms, 200ms, 2.0};
  set_breaker(config.breaker, 10, 2, kShortOpen, 3);
  ts::testing::fault::QuietRedisLog quiet;
  run_with_client(
      config, 30s, [&](asio::io_context& io, RedisClient& client) -> asio::awaitable<void> {
        co_await client.ping();
        redis.pause();
        paused = true;
        std::vector<Ended> hung(2);
        EXPECT_TRUE(co_await run_calls(
            io, hung, [&](std::size_t) { return client.command("ECHO", "f32:hung"); }, 2s));
        for (const auto& h : hung) {
          EXPECT_EQ(h.code, ts::make_error_code(errc::request_timeout)) << describe(h);
        }
        auto s = client.stats();
        expect_tripped_once(s, "two request timeouts with min_calls 2");
        expect_open_rejection(co_await ended(client.command("ECHO", "f32:open")));

        redis.resume();
        paused = false;
        EXPECT_TRUE(co_await eventually(
            [&] {
              s = client.stats();
              return s.connected && s.in_flight == 0;
            },
            5s))
            << "the client did not get a usable connection back";
        EXPECT_TRUE(co_await half_open(client)) << "breaker " << state_name(client.stats().breaker);
        EXPECT_EQ(client.stats().breaker_trips, 1u);

        // 100 commands issued at once (each is admitted or rejected when it is made).
        constexpr int kCallers = 100;
        const auto before = client.stats();
        std::vector<asio::awaitable<Reply>> commands;
        commands.reserve(kCallers);
        for (int i = 0; i < kCallers; ++i) {
          commands.push_back(client.command("ECHO", "f32:" + std::to_string(i)));
        }
        EXPECT_EQ(client.stats().rejected - before.rejected, 97u);
        std::vector<Ended> calls(kCallers);
        std::vector<std::string> replies(kCallers);
        for (std::size_t k = 0; k < static_cast<std::size_t>(kCallers); ++k) {
          asio::co_spawn(io, timed_reply(std::move(commands[k]), calls[k], replies[k]),
                         asio::detached);
        }
        EXPECT_TRUE(co_await eventually([&] { return all_done(calls); }, 2s));
        int succeeded = 0;
        for (int i = 0; i < kCallers; ++i) {
          const auto& c = calls[static_cast<std::size_t>(i)];
          if (!c.failed) {
            ++succeeded;
            EXPECT_EQ(replies[static_cast<std::size_t>(i)], "f32:" + std::to_string(i));
            continue;
          }
          expect_half_open_rejection(c);
        }
        EXPECT_EQ(succeeded, 3) << "probes admitted out of " << kCallers;
        s = client.stats();
        EXPECT_EQ(s.breaker, CircuitState::closed) << "3 probe successes did not close it";
        EXPECT_EQ(s.breaker_trips, 1u);
        EXPECT_EQ((co_await client.command("ECHO", "f32:after")).as_string(), "f32:after");
      });
  if (paused) {
    redis.resume();
    paused = false;
  }
}

// ---- F33 business errors never count --------------------------------------------------------

namespace {

asio::awaitable<void> f33_pg_body(PostgresClient& client) {
  const auto start = Clock::now();
  int unique = 0, syntax = 0, other = 0;
  for (int i = 0; i < 30; ++i) {
    const Ended dup = co_await ended(client.execute("INSERT INTO f33 VALUES (1)"));
    const Ended bad = co_await ended(client.execute("SELEC 1"));
    for (const auto* e : {&dup, &bad}) {
      EXPECT_EQ(e->kind, ErrorKind::permanent) << describe(*e);
      if (e->server_code == ts::pg::sqlstate::unique_violation) {
        ++unique;
      } else if (e->server_code == ts::pg::sqlstate::syntax_error) {
        ++syntax;
      } else {
        ++other;
      }
    }
  }
  for (int i = 0; i < 5; ++i) {
    int bodies = 0;
    const Ended tx = co_await ended(
        client.transaction([&bodies](ts::pg::Transaction& t) -> asio::awaitable<void> {
          ++bodies;
          co_await t.execute("INSERT INTO f33 VALUES (1)");
        }));
    EXPECT_EQ(tx.server_code, ts::pg::sqlstate::unique_violation) << describe(tx);
    EXPECT_EQ(tx.kind, ErrorKind::permanent) << describe(tx);
    EXPECT_EQ(bodies, 1);
  }
  EXPECT_EQ(unique, 30);
  EXPECT_EQ(syntax, 30);
  EXPECT_EQ(other, 0);
  EXPECT_LT(elapsed_ms(start), 3s);
  expect_errors_not_counted(client.stats(), "business errors");
  EXPECT_EQ(client.stats().discarded, 0u);

  // One hung call: 1 recorded call, below min_calls 2; then the pool settles and a second one.
  co_await expect_second_timeout_opens(
      client, [&](int) { return client.query(kHungQuery, "SELECT pg_sleep(5)"); },
      [&] { return pool_settled(client, 2, 5s); }, "business errors were counted as failures",
      "business errors were counted as successes");
  EXPECT_EQ(client.stats().timeouts, 2u);
}

}  // namespace

// 60 statements failing with 23505 (unique violation) and 42601 (syntax error), and 5
// transactions failing with 23505, with a breaker that opens at min_calls 2: each fails once as
// `permanent`, and the breaker stays closed. Then exactly 2 hung calls (request timeouts) open
// it, and 1 does not: the business errors were recorded neither as failures nor as successes
// (10 successes in the window of 10 would keep 2 failures under the threshold).
TEST(BreakerFault, F33_PgBusinessErrorsNeverCount) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  {
    Direct setup;
    setup.value(
        "DROP TABLE IF EXISTS f33; CREATE TABLE f33 (id int PRIMARY KEY); "
        "INSERT INTO f33 VALUES (1)");
  }
  auto config = pg_config(servers().postgres_dsn(kDatabase), "f33_pg");
  set_breaker(config.breaker, 10, 2, kStaysOpen);
  run_with_client(config, 30s,
                  [&](asio::io_context&, PostgresClient& client) { return f33_pg_body(client); });
}

// 60 commands failing with WRONGTYPE (LPUSH, SADD, HGET on a string key set from outside the
// client), with a breaker that opens at min_calls 2: each fails at once as `permanent` with
// the WRONGTYPE prefix, no failure or timeout is counted and the breaker stays closed. Then
// through the proxy's black hole exactly 2 hung commands open it, and 1 does not.
TEST(BreakerFault, F33_RedisWrongTypeNeverCounts) {
  TS_SKIP_IF_EXTERNAL();
  RedisAdmin admin;
  admin.ok({"SET", "f33:string", "not a list"});
  RedisProxy proxy;
  ScopeExit del([&] { admin.ok({"DEL", "f33:string"}); });
  auto config = redis_config(proxy_url(proxy), "f33-redis");
  set_breaker(config.breaker, 10, 2, kStaysOpen);
  run_with_client(
      config, 30s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        const auto start = Clock::now();
        int wrong_type = 0;
        for (int i = 0; i < 20; ++i) {
          const Ended a = co_await ended(client.command("LPUSH", "f33:string", "v"));
          const Ended b = co_await ended(client.command("SADD", "f33:string", "v"));
          const Ended c = co_await ended(client.command("HGET", "f33:string", "f"));
          for (const auto* e : {&a, &b, &c}) {
            EXPECT_EQ(e->kind, ErrorKind::permanent) << describe(*e);
            EXPECT_LT(e->elapsed, 300ms) << describe(*e);
            if (e->server_code == ts::redis::error_prefix::wrong_type) ++wrong_type;
          }
        }
        EXPECT_EQ(wrong_type, 60);
        EXPECT_LT(elapsed_ms(start), 3s);
        expect_errors_not_counted(client.stats(), "WRONGTYPE");
        EXPECT_EQ(client.stats().disconnects, 0u);
        EXPECT_EQ(admin.ok({"GET", "f33:string"}).str, "not a list");

        proxy.set_blackhole(true);
        co_await expect_second_timeout_opens(
            client,
            [&](int i) {
              return client.command(CommandOptions{200ms}, "ECHO", std::string(i == 0 ? "x" : "y"));
            },
            []() -> asio::awaitable<bool> { co_return true; }, "WRONGTYPE was counted as a failure",
            "WRONGTYPE was counted as a success");
        proxy.cut_all();
      });
}

// ---- F49 conflicts never count ---------------------------------------------------------------

namespace {

asio::awaitable<void> f49_pg_body(PostgresClient& client) {
  const auto start = Clock::now();
  // 55P03: the row is locked by a transaction of the test's own connection; the client asks
  // for it with NOWAIT.
  int lock_conflicts = 0;
  {
    Direct holder;
    holder.value("BEGIN");
    holder.value("SELECT id FROM f49 WHERE id = 1 FOR UPDATE");
    for (int i = 0; i < 20; ++i) {
      const Ended e =
          co_await ended(client.query("SELECT id FROM f49 WHERE id = 1 FOR UPDATE NOWAIT"));
      EXPECT_EQ(e.kind, ErrorKind::transient_conflict) << describe(e);
      if (e.server_code == ts::pg::sqlstate::lock_not_available) ++lock_conflicts;
    }
    holder.value("ROLLBACK");
  }
  // 40001: write skew between a serializable transaction of the client and one of the test's
  // own connection that commits first. One attempt each (no retry), so every one is recorded.
  ts::pg::TransactionOptions once;
  once.isolation = ts::pg::IsolationLevel::serializable;
  once.retry = ts::core::RetryPolicy{};
  once.retry->max_attempts = 1;
  int serialization = 0;
  for (int i = 0; i < 5; ++i) {
    int bodies = 0;
    const Ended tx = co_await ended(client.transaction(
        [&bodies](ts::pg::Transaction& t) -> asio::awaitable<void> {
          ++bodies;
          co_await t.query("SELECT sum(v) FROM f49");
          Direct other;
          other.value("BEGIN ISOLATION LEVEL SERIALIZABLE");
          other.value("SELECT sum(v) FROM f49");
          other.value("UPDATE f49 SET v = v + 1 WHERE id = 1");
          other.value("COMMIT");
          co_await t.execute("UPDATE f49 SET v = v + 1 WHERE id = 2");
        },
        once));
    EXPECT_EQ(tx.kind, ErrorKind::transient_conflict) << describe(tx);
    if (tx.server_code == ts::pg::sqlstate::serialization_failure) ++serialization;
    EXPECT_EQ(bodies, 1);
  }
  // 40P01 as the server reports it (raised by a function: a deadlock needs two sessions
  // blocking each other, which F07 covers).
  int deadlocks = 0;
  for (int i = 0; i < 5; ++i) {
    const Ended e = co_await ended(
        client.execute("DO $$ BEGIN RAISE EXCEPTION 'f49' USING ERRCODE = '40P01'; END $$"));
    EXPECT_EQ(e.kind, ErrorKind::transient_conflict) << describe(e);
    if (e.server_code == ts::pg::sqlstate::deadlock_detected) ++deadlocks;
  }
  EXPECT_EQ(lock_conflicts, 20);
  EXPECT_EQ(serialization, 5);
  EXPECT_EQ(deadlocks, 5);
  EXPECT_LT(elapsed_ms(start), 5s);
  expect_errors_not_counted(client.stats(), "lock, serialization and deadlock conflicts");
  EXPECT_EQ(client.stats().discarded, 0u);

  // As in F33: one hung call leaves it closed, a second opens it (min_calls 2).
  co_await expect_second_timeout_opens(
      client, [&](int) { return client.query(kHungQuery, "SELECT pg_sleep(5)"); },
      [&] { return pool_settled(client, 2, 5s); }, "conflicts were counted as failures",
      "conflicts were counted as successes");
}

}  // namespace

// 20 statements failing with 55P03 (lock not available, NOWAIT on a row a test connection
// holds), 5 serializable transactions failing with 40001 (write skew against a transaction of
// a test connection that commits first; one attempt each) and 5 statements failing with 40P01,
// with a breaker that opens at min_calls 2: each is `transient_conflict`, and the breaker
// stays closed (a conflict says nothing about the server's health). Then exactly 2 hung calls
// open it and 1 does not: the conflicts were counted neither as failures nor as successes.
TEST(BreakerFault, F49_PgConflictsNeverCount) {
  TS_SKIP_IF_EXTERNAL();
  servers().create_database(kDatabase);
  {
    Direct setup;
    setup.value(
        "DROP TABLE IF EXISTS f49; CREATE TABLE f49 (id int PRIMARY KEY, v int NOT NULL); "
        "INSERT INTO f49 VALUES (1, 0), (2, 0)");
  }
  auto config = pg_config(servers().postgres_dsn(kDatabase), "f49_pg");
  set_breaker(config.breaker, 10, 2, kStaysOpen);
  run_with_client(config, 30s,
                  [&](asio::io_context&, PostgresClient& client) { return f49_pg_body(client); });
}

// 20 commands failing with TRYAGAIN (the reply of a script, as a cluster node sends it during
// resharding), with a breaker that opens at min_calls 2: each is `transient_conflict`, the
// breaker stays closed. Then through the proxy's black hole exactly 2 hung commands open it
// and 1 does not.
TEST(BreakerFault, F49_RedisTryAgainNeverCounts) {
  TS_SKIP_IF_EXTERNAL();
  RedisProxy proxy;
  auto config = redis_config(proxy_url(proxy), "f49-redis");
  set_breaker(config.breaker, 10, 2, kStaysOpen);
  run_with_client(
      config, 30s, [&](asio::io_context&, RedisClient& client) -> asio::awaitable<void> {
        int try_again = 0;
        for (int i = 0; i < 20; ++i) {
          const Ended e = co_await ended(client.command(
              "EVAL", "return redis.error_reply('TRYAGAIN Multiple keys request during rehashing')",
              "0"));
          EXPECT_EQ(e.kind, ErrorKind::transient_conflict) << describe(e);
          EXPECT_LT(e.elapsed, 300ms) << describe(e);
          if (e.server_code == ts::redis::error_prefix::try_again) ++try_again;
        }
        EXPECT_EQ(try_again, 20);
        expect_errors_not_counted(client.stats(), "TRYAGAIN");
        EXPECT_EQ(client.stats().disconnects, 0u);

        proxy.set_blackhole(true);
        co_await expect_second_timeout_opens(
            client,
            [&](int i) {
              return client.command(CommandOptions{200ms}, "ECHO", std::string(i == 0 ? "x" : "y"));
            },
            []() -> asio::awaitable<bool> { co_return true; }, "TRYAGAIN was counted as a failure",
            "TRYAGAIN was counted as a success");
        proxy.cut_all();
      });
}

// ---- F34 server restart with many clients ------------------------------------------------------

namespace {

/// F34: 50 clients, reconnect backoff base 25 ms doubling to an 800 ms cap (full jitter).
constexpr std::size_t kClients = 50;
constexpr milliseconds kBase{25};
constexpr milliseconds kCap{800};
constexpr milliseconds kMargin{500};
/// After n failed attempts the next delay's ceiling is base * 2^n: 25, 50, 100, 200, 400, then
/// the 800 ms cap from n = 5 on. The server stays down until every client has failed 7 times:
/// without the cap the ceiling would then be 25 ms * 2^7 = 3.2 s, well past the bound the test
/// asserts (cap + margin = 1.3 s), so a missing cap fails the test by design, not by chance.
constexpr std::uint64_t kFailuresBeforeRestart = 7;
static_assert(kBase * (1 << kFailuresBeforeRestart) > 2 * (kCap + kMargin));

asio::awaitable<void> f34_body(std::vector<std::unique_ptr<RedisClient>>& clients,
                               std::atomic<bool>& ready, std::atomic<bool>& stopped,
                               std::atomic<bool>& at_cap, std::atomic<bool>& up,
                               std::atomic<Clock::rep>& up_at) {
  for (auto& c : clients) co_await c->start();
  for (auto& c : clients) co_await c->ping();
  ready = true;
  EXPECT_TRUE(co_await eventually([&] { return stopped.load(); }, 20s));
  const bool capped = co_await eventually(
      [&] {
        return std::all_of(clients.begin(), clients.end(), [](const auto& c) {
          const auto s = c->stats();
          return s.disconnects >= 1 && s.connect_failures >= kFailuresBeforeRestart;
        });
      },
      10s);
  EXPECT_TRUE(capped) << "not every client reached the backoff cap";
  // The server is down: nobody can reconnect before the main thread starts it again, so
  // polling starts now and catches the first reconnects however soon they come.
  std::vector<std::uint64_t> connects_before;
  for (const auto& c : clients) connects_before.push_back(c->stats().connects);
  at_cap = true;
  std::vector<std::optional<Clock::time_point>> reconnected(clients.size());
  const bool all = co_await eventually(
      [&] {
        const auto now = Clock::now();
        bool every = true;
        for (std::size_t i = 0; i < clients.size(); ++i) {
          if (!reconnected[i] && clients[i]->stats().connects > connects_before[i]) {
            reconnected[i] = now;
          }
          every = every && reconnected[i].has_value();
        }
        return every;
      },
      kCap + kMargin + 15s, 1ms);
  EXPECT_TRUE(all) << "not every client reconnected";
  EXPECT_TRUE(co_await eventually([&] { return up.load(); }, 5s));
  const Clock::time_point back{Clock::duration{up_at.load()}};
  std::vector<double> times;
  for (const auto& t : reconnected) {
    if (t) times.push_back(std::chrono::duration<double, std::milli>(*t - back).count());
  }
  EXPECT_EQ(times.size(), clients.size());
  expect_reconnects_capped_and_spread(std::move(times), static_cast<double>(kCap.count()),
                                      static_cast<double>((kCap + kMargin).count()),
                                      "RedisClients");
  // Every client serves again.
  for (auto& c : clients) {
    const Ended e = co_await ended(c->command("ECHO", "f34"));
    EXPECT_FALSE(e.failed) << describe(e);
  }
}

}  // namespace

// 50 RedisClients on one loop, connected to the same Redis; the server is stopped (SIGTERM) and
// kept down until every client has failed 7 reconnect attempts (each is at the backoff cap,
// base 25 ms doubling to the 800 ms cap, full jitter, since its 5th; an uncapped ceiling would
// now be 3.2 s), then started again. Each client's
// reconnect time is when its `connects` counter moves (polled every millisecond), relative to
// the moment the server accepted work again.
// - Capped: every client reconnects within cap (800 ms) + 500 ms of margin after the server is
//   back: a client at the cap waits at most 800 ms between attempts. Without the cap every
//   client's ceiling would be 3.2 s or more when the server comes back; that all 50 uniform
//   delays in [0, 3.2 s] stay under 1.3 s has a probability of about 0.4^50.
// - Spread: the reconnect times span at least cap/4 (200 ms) and have a standard deviation of
//   at least cap/16 (50 ms); full jitter gives about 700 ms and 190 ms. Without jitter every
//   client would wait exactly the ceiling: they all lost the connection in the same instant
//   (the server closed them together) and fail in lockstep, so all 50 would reconnect within a
//   few milliseconds of each other (one loop connecting 50 sockets), and both bounds fail.
TEST(BreakerFault, F34_RedisRestartReconnectsSpreadByJitterAndCapped) {
  TS_SKIP_IF_EXTERNAL();
  ServerProcess& redis = servers().redis();
  std::atomic<bool> ready{false};
  std::atomic<bool> stopped{false};
  std::atomic<bool> at_cap{false};
  std::atomic<bool> up{false};
  std::atomic<Clock::rep> up_at{0};
  ScopeExit restart([&] {
    if (!redis.running()) redis.start();
  });
  ts::testing::fault::QuietRedisLog quiet;
  BackgroundLoop loop(40s, [&](asio::io_context& io) -> asio::awaitable<void> {
    std::vector<std::unique_ptr<RedisClient>> clients;
    for (std::size_t i = 0; i < kClients; ++i) {
      auto config = ts::testing::fault::fast_config(ts::testing::fault::redis_url_for_db(0),
                                                    "f34-" + std::to_string(i));
      config.reconnect_backoff = {kBase, kCap, 2.0};
      config.command_timeout = 3s;
      clients.push_back(std::make_unique<RedisClient>(io.get_executor(), config));
    }
    co_await closing(clients, f34_body(clients, ready, stopped, at_cap, up, up_at));
  });
  const bool became_ready = ts::testing::poll_until([&] { return ready || loop.done(); }, 20s);
  EXPECT_TRUE(became_ready && ready);
  if (ready) {
    redis.stop();
    stopped = true;
    EXPECT_TRUE(ts::testing::poll_until([&] { return at_cap || loop.done(); }, 15s));
    redis.start();
    up_at = Clock::now().time_since_epoch().count();
    up = true;
  }
  loop.join();
  EXPECT_TRUE(ts::testing::fault::redis_serves());
}

#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/core/reconnect.hpp>
#include <trading_shared/core/run_state.hpp>
#include <trading_shared/pg/postgres_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "client_core.hpp"
#include "detail/cancel_sender.hpp"
#include "detail/connection.hpp"
#include "detail/pool.hpp"
#include "detail/session_state.hpp"

#include <algorithm>
#include <string>

namespace trading_shared::pg {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::ClientAccess;
using detail::ClientCore;
using detail::Connection;
using detail::Slot;

namespace {

std::shared_ptr<spdlog::logger> log() {
  return core::logger("pg");
}

/// An operation inside the client for its lifetime (enter/leave), so that close() waits for it.
class ActiveGuard {
 public:
  explicit ActiveGuard(ClientCore& core) noexcept : core_(core) { core_.enter(); }
  ~ActiveGuard() { core_.leave(); }
  ActiveGuard(const ActiveGuard&) = delete;
  ActiveGuard& operator=(const ActiveGuard&) = delete;

 private:
  ClientCore& core_;
};

}  // namespace

// ---- the core: construction and destruction ------------------------------------------------

namespace detail {

ClientCore::ClientCore(asio::any_io_executor executor, PostgresConfig config)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      description_(detail::describe_dsn(config_.dsn)),
      breaker_(
          [&] {
            auto b = config_.breaker;
            if (b.name.empty() || b.name == core::CircuitBreakerConfig{}.name) {
              b.name = "pg " + detail::describe_dsn(config_.dsn);
            }
            return b;
          }(),
          core::SteadyClock::instance(), random_),
      state_(executor_),
      hard_stop_(executor_),
      idle_changed_(executor_),
      pool_(executor_, config_, random_, description_, [this](std::chrono::milliseconds timeout) {
        return open_connection(executor_, config_, description_, timeout);
      }) {
  if (config_.max_size == 0) {
    throw Error(make_error_code(errc::invalid_argument), "PostgresConfig.max_size must be > 0",
                RequestState::not_sent);
  }
  if (config_.statement_cache_size > 0 && config_.pgbouncer_transaction_mode) {
    throw Error(make_error_code(errc::invalid_argument),
                "PostgresConfig.statement_cache_size needs pgbouncer_transaction_mode = false "
                "(named statements are session state)",
                RequestState::not_sent);
  }
  config_.min_size = std::min(config_.min_size, config_.max_size);
  config_.max_pipeline_depth = std::max<std::size_t>(config_.max_pipeline_depth, 1);
}

ClientCore::~ClientCore() = default;  // the pool closes what is still open

void ClientCore::abandon() noexcept {
  if (state_.is(core::RunPhase::idle) || state_.is(core::RunPhase::closed)) {
    state_.set(core::RunPhase::closed);
    pool_.close_all_connections();
    return;
  }
  log()->warn(
      "PostgresClient {} destroyed without close(): failing its waiters, cancelling its work "
      "and closing its sockets now",
      description_);
  shut_down_now();
}

PostgresStats ClientCore::stats() const {
  PostgresStats s = counters_;
  pool_.add_stats(s);
  s.breaker = breaker_.state();
  s.breaker_trips = breaker_.stats().trips;
  return s;
}

void ClientCore::check_running() const {
  switch (state_.phase()) {
    case core::RunPhase::running:
      return;
    case core::RunPhase::idle:
    case core::RunPhase::starting:
      throw Error(make_error_code(errc::not_started), "PostgresClient " + description_,
                  RequestState::not_sent);
    case core::RunPhase::closing:
    case core::RunPhase::closed:
      throw Error(make_error_code(errc::client_closed), "PostgresClient " + description_,
                  RequestState::not_sent);
  }
}

void ClientCore::throw_closed_during_body() const {
  throw Error(make_error_code(errc::client_closed),
              description_ + ": client closed while a transaction body was running",
              RequestState::sent);
}

void ClientCore::check_session_state(Sql sql) const {
  if (config_.pgbouncer_transaction_mode) detail::check_no_session_state(sql.c_str());
}

Clock::time_point ClientCore::deadline_for(std::chrono::milliseconds timeout) const {
  return Clock::now() + statement_timeout(timeout) + config_.network_timeout_margin;
}

core::RetryPolicy ClientCore::retry_policy(const std::optional<core::RetryPolicy>& given,
                                           std::chrono::milliseconds statement_timeout) const {
  core::RetryPolicy policy = given.value_or(config_.retry);
  // An attempt is never cut before its statement's own deadline (F48): a statement that runs
  // within its timeout is legitimate, however small its share of the total budget.
  policy.min_attempt_budget =
      std::max(policy.min_attempt_budget,
               this->statement_timeout(statement_timeout) + config_.network_timeout_margin);
  return policy;
}

void ClientCore::record(core::CircuitBreakerPermit& permit,
                        const std::exception_ptr& error) noexcept {
  if (!error) {
    ++counters_.queries;
    permit.success();
    return;
  }
  const ErrorKind kind = classify(error);
  if (kind == ErrorKind::cancelled) {
    ++counters_.cancellations;
  } else {
    ++counters_.failures;
    const auto index = static_cast<std::size_t>(kind);
    if (index < counters_.failures_by_kind.size()) ++counters_.failures_by_kind[index];
  }
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    if (e.code() == errc::request_timeout) ++counters_.timeouts;
    // A full pool or wait queue is this process's saturation, not the server's health:
    // it must not open the breaker against a healthy server. (A caller that found no
    // connection because the server is unreachable fails with the connect error instead,
    // see unreachable_error(), and that counts.)
    if (e.code() == errc::acquire_timeout || e.code() == errc::queue_full) {
      permit.ignore();
      return;
    }
  } catch (...) {  // not ours: classified above, nothing more to count
  }
  permit.record(kind);
}

// ---- lifecycle -------------------------------------------------------------------------------

asio::awaitable<void> ClientCore::start(Keep) {
  // Single flight: a start-up in progress is waited for and its outcome shared.
  switch (co_await state_.start_turn()) {
    case core::StartTurn::running:
      co_return;
    case core::StartTurn::closed:
      throw Error(make_error_code(errc::client_closed), "PostgresClient " + description_,
                  RequestState::not_sent);
    case core::StartTurn::run:
    case core::StartTurn::in_progress:  // not returned by start_turn()
      break;
  }
  std::exception_ptr failure;
  try {
    co_await start_once();
  } catch (...) {
    failure = std::current_exception();
  }
  if (!failure && !state_.start_succeeded()) {
    // The client was destroyed while it started (abandon()).
    failure =
        std::make_exception_ptr(Error(make_error_code(errc::client_closed),
                                      "PostgresClient " + description_, RequestState::not_sent));
  }
  if (failure) {
    pool_.close_all_connections();
    pool_.clear();
    state_.start_failed(failure);  // a later start() may try again
    std::rethrow_exception(failure);
  }
  pool_.set_running(true);
  maintain_running_ = true;
  // The handler holds the core (and so the pool) until the maintenance has ended.
  asio::co_spawn(
      executor_, pool_.maintain(), [self = shared_from_this()](const std::exception_ptr& e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log()->error("{}: pool maintenance stopped: {}", self->description_, ex.what());
          }
        }
        self->maintain_running_ = false;
        self->state_.changed().notify_all();
      });
}

asio::awaitable<void> ClientCore::start_once() {
  const auto deadline = Clock::now() + config_.startup_timeout;
  const std::size_t wanted = std::max<std::size_t>(config_.min_size, 1);
  core::Backoff backoff(config_.reconnect_backoff, random_);
  // One attempt opens the connections still missing; bad credentials or a missing database
  // end the start-up at once (permanent, F16); the backoff's last wait is cut to the time
  // left, and one more attempt is made at the deadline.
  // Policy, observer and the attempt as locals, not braced temporaries inside the co_await:
  // GCC 12 destroys such temporaries twice (the observer's logger would be released twice).
  const core::ReconnectPolicy policy{.deadline = config_.startup_timeout,
                                     .attempt_timeout = config_.connect_timeout};
  const std::string what = description_ + ": start-up";
  core::ReconnectObserver observer{.what = what, .log = log()};
  auto attempt = [&](std::chrono::milliseconds) -> asio::awaitable<void> {
    while (pool_.size() < wanted) {
      if (!state_.is(core::RunPhase::starting)) co_return;  // abandoned: start() reports it
      // Each connection gets connect_timeout, never past the start-up deadline (a hanging
      // server, F01).
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      const std::chrono::milliseconds timeout =
          std::max(std::min(config_.connect_timeout, left), std::chrono::milliseconds(1));
      auto connection = co_await pool_.open(timeout);
      pool_.adopt(std::move(connection));
    }
  };
  auto stopped = [&] { return !state_.is(core::RunPhase::starting); };
  const auto result =
      co_await core::reconnect(attempt, backoff, policy, observer, stopped, state_.changed());
  if (result.end == core::ReconnectEnd::deadline) {
    throw Error(make_error_code(errc::startup_timeout),
                "PostgreSQL " + description_ + " not reachable within " +
                    std::to_string(config_.startup_timeout.count()) + " ms after " +
                    std::to_string(result.attempts) +
                    " attempt(s); last error: " + result.last_cause,
                RequestState::not_sent);
  }
}

asio::awaitable<void> ClientCore::close(Keep) {
  for (;;) {
    switch (state_.close_turn()) {
      case core::CloseTurn::nothing:  // never started, or closed already
        pool_.close_all_connections();
        co_return;
      case core::CloseTurn::starting:  // the start-up ends first; then close what it left
        co_await state_.wait_while(core::RunPhase::starting);
        continue;
      case core::CloseTurn::other:
        co_await state_.wait_until_closed();
        co_return;
      case core::CloseTurn::run:
        break;
    }
    break;
  }
  pool_.set_running(false);
  // Waiters fail at once: the client takes no new work.
  pool_.fail_all_waiters_closed();
  std::exception_ptr cut;
  try {
    co_await close_in_order();
  } catch (...) {
    cut = std::current_exception();
  }
  if (cut) {
    // Cut short by its caller (a ResourceScope's timeout, cancellation): the client is not
    // left half closed. What runs is cancelled and every socket closed now, nothing awaited;
    // a later close() returns at once (F42).
    log()->warn("{}: close cut short: cancelling what runs and closing the sockets now",
                description_);
    shut_down_now();
    std::rethrow_exception(cut);
  }
}

void ClientCore::shut_down_now() noexcept {
  state_.set(core::RunPhase::closed);
  pool_.set_running(false);
  pool_.fail_all_waiters_closed();
  hard_stop_.notify_all();  // transaction bodies still running end
  pool_.stop_maintenance();
  // Work still running on the server is cancelled there, not left to run to its end.
  for (const auto& slot : pool_.slots()) {
    if (slot->connection->in_flight() > 0) slot->connection->send_cancel_request();
  }
  pool_.close_all_connections();  // what is in flight fails with client_closed
  idle_changed_.notify_all();
}

asio::awaitable<void> ClientCore::close_in_order() {
  // In-flight work may finish within close_timeout.
  const auto deadline = Clock::now() + config_.close_timeout;
  while (active_ > 0) {
    // (Not `active_ > 0 && co_await ...` in the condition: GCC 12 awaits the right-hand side
    // even when the left one is false.)
    if (!co_await idle_changed_.wait_until(deadline)) break;
  }
  if (active_ > 0) {
    log()->warn("{}: close: {} operation(s) still running after {} ms; cancelling them",
                description_, active_, config_.close_timeout.count());
  }
  // Close every socket; what is left in flight fails with client_closed.
  const std::vector<std::shared_ptr<Connection>> all = pool_.all_connections();
  hard_stop_.notify_all();  // transaction bodies still running are cancelled
  pool_.stop_maintenance();
  for (const auto& c : all) {
    // Work still running on the server is cancelled there, not left to run to its end.
    if (c->in_flight() > 0) c->send_cancel_request();
    c->close();
  }
  for (const auto& c : all) co_await c->wait_closed();
  // Cancel requests open short-lived sockets of their own, on the sender's thread: give them
  // a bounded time to finish, so that no socket to the server outlives close().
  const auto cancel_deadline =
      Clock::now() + std::min<Clock::duration>(config_.close_timeout, std::chrono::seconds(1));
  boost::system::error_code ec;
  while (detail::CancelSender::instance().pending() > 0 && Clock::now() < cancel_deadline) {
    asio::steady_timer poll(executor_, std::chrono::milliseconds(5));
    co_await poll.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  while (maintain_running_) co_await state_.changed().wait();
  // Operations that were still running have now failed; let them leave the client.
  while (active_ > 0) co_await idle_changed_.wait();
  pool_.clear();
  state_.set(core::RunPhase::closed);
}

// ---- statements --------------------------------------------------------------------------

asio::awaitable<Result> ClientCore::run_single(Keep, QueryOptions options, Sql sql,
                                               ParamBuffer params) {
  check_running();
  check_session_state(sql);
  ActiveGuard guard(*this);
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  // One clock read for both deadlines and the start of the round trip (a connection free at
  // once leaves `started` as it is; a wait sets it to the grant).
  Clock::time_point started = Clock::now();
  const auto deadline =
      started + statement_timeout(options.timeout) + config_.network_timeout_margin;
  detail::Statement statement{sql.c_str(), &params};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  std::exception_ptr failure;
  bool acquired = false;
  try {
    Slot* slot = co_await pool_.acquire(
        false, std::min(deadline, started + config_.acquire_timeout), &started);
    acquired = true;
    std::shared_ptr<Connection> connection = slot->connection;  // may leave the pool meanwhile
    co_await connection->run(request, deadline);
  } catch (...) {
    failure = std::current_exception();
  }
  if (acquired && round_trip_ != nullptr) round_trip_->observe(Clock::now() - started);
  record(permit, failure);
  pool_.dispatch();
  if (failure) std::rethrow_exception(failure);
  co_return std::move(request.result(0));
}

asio::awaitable<std::vector<PipelineResult>> ClientCore::pipeline(Keep, const Pipeline& batch,
                                                                  PipelineMode mode,
                                                                  QueryOptions options) {
  check_running();
  for (const auto& [sql, params] : batch.entries_) check_session_state(sql);
  std::vector<PipelineResult> out(batch.size());
  if (batch.empty()) co_return out;
  ActiveGuard guard(*this);
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  const auto deadline = deadline_for(options.timeout);
  std::vector<detail::Statement> statements;
  statements.reserve(batch.size());
  for (const auto& [sql, params] : batch.entries_) statements.push_back({sql.c_str(), &params});
  // independent: one request (one Sync) per statement; atomic: one request for all.
  std::vector<detail::Request> requests(mode == PipelineMode::atomic ? 1 : batch.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    requests[i].statements = mode == PipelineMode::atomic ? statements.data() : &statements[i];
    requests[i].count = mode == PipelineMode::atomic ? statements.size() : 1;
  }
  std::exception_ptr failure;
  std::shared_ptr<Connection> connection;
  Clock::time_point started = Clock::now();
  try {
    Slot* slot = co_await pool_.acquire(
        false, std::min(deadline, started + config_.acquire_timeout), &started);
    connection = slot->connection;
    for (auto& r : requests) connection->send(r);
    for (auto& r : requests) {
      try {
        co_await connection->await(r, deadline);
      } catch (const Error& e) {
        if (e.code() != errc::server_error) throw;  // connection-level: the batch fails
      }
    }
  } catch (...) {
    failure = std::current_exception();
    for (auto& r : requests) {
      if (!r.done && r.notifier == nullptr && connection) connection->abandon(r);
    }
  }
  if (connection && round_trip_ != nullptr) round_trip_->observe(Clock::now() - started);
  record(permit, failure);
  pool_.dispatch();
  if (failure) std::rethrow_exception(failure);
  if (mode == PipelineMode::atomic) {
    auto& r = requests[0];
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i].result = std::move(r.result(i));
      if (r.error && r.result(i).native() == nullptr) out[i].error = r.error;
    }
  } else {
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i].result = std::move(requests[i].result(0));
      out[i].error = requests[i].error;
    }
  }
  co_return out;
}

void ClientCore::enter() noexcept {
  ++active_;
}

void ClientCore::leave() noexcept {
  if (--active_ == 0) idle_changed_.notify_all();
}

}  // namespace detail

// ---- PostgresClient: the handle on the core ------------------------------------------------

PostgresClient::PostgresClient(executor_type executor, PostgresConfig config)
    : core_(std::make_shared<ClientCore>(std::move(executor), std::move(config))) {
  // The connections' callbacks reach the pool while the core lives (a weak pointer).
  core_->pool_.set_owner(core_);
}

PostgresClient::~PostgresClient() {
  core_->abandon();
}

asio::awaitable<void> PostgresClient::start() {
  return core_->start(core_);
}

asio::awaitable<void> PostgresClient::close() {
  return core_->close(core_);
}

asio::awaitable<Result> PostgresClient::run_single(QueryOptions options, Sql sql,
                                                   ParamBuffer params) {
  return core_->run_single(core_, options, sql, std::move(params));
}

asio::awaitable<std::vector<PipelineResult>> PostgresClient::pipeline(const Pipeline& batch,
                                                                      PipelineMode mode,
                                                                      QueryOptions options) {
  return core_->pipeline(core_, batch, mode, options);
}

PostgresStats PostgresClient::stats() const {
  return core_->stats();
}

void PostgresClient::set_histograms(core::Histogram* round_trip,
                                    core::Histogram* acquire_wait) noexcept {
  core_->round_trip_ = round_trip;
  core_->pool_.set_acquire_wait(acquire_wait);
}

const PostgresConfig& PostgresClient::config() const noexcept {
  return core_->config_;
}

PostgresClient::executor_type PostgresClient::get_executor() const noexcept {
  return core_->executor_;
}

std::vector<int> PostgresClient::backend_pids() const {
  return core_->pool_.backend_pids();
}

core::RandomSource& ClientAccess::random(ClientCore& core) noexcept {
  return core.random_;
}

const PostgresConfig& ClientAccess::config_of(const ClientCore& core) noexcept {
  return core.config_;
}

boost::asio::any_io_executor ClientAccess::executor_of(const ClientCore& core) noexcept {
  return core.executor_;
}

core::RetryPolicy ClientAccess::retry_policy(const ClientCore& core,
                                             const std::optional<core::RetryPolicy>& given,
                                             std::chrono::milliseconds statement_timeout) {
  return core.retry_policy(given, statement_timeout);
}

core::CircuitBreakerPermit ClientAccess::begin_operation(ClientCore& core) {
  core.check_running();
  core::CircuitBreakerPermit permit = core.breaker_.acquire_or_throw();
  core.enter();
  return permit;
}

void ClientAccess::end_operation(ClientCore& core, core::CircuitBreakerPermit& permit,
                                 const std::exception_ptr& failure) noexcept {
  core.record(permit, failure);
  core.leave();
}

}  // namespace trading_shared::pg

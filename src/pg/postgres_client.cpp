#include <trading_shared/core/backoff.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/pg/postgres_client.hpp>
#include <trading_shared/pg/sql_state.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "client_core.hpp"
#include "detail/cancel_sender.hpp"
#include "detail/connection.hpp"

#include <algorithm>
#include <cctype>
#include <new>
#include <string>

namespace trading_shared::pg {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::ClientCore;
using detail::Connection;
using detail::Slot;
using detail::Waiter;

namespace {

std::shared_ptr<spdlog::logger> log() {
  return core::logger("pg");
}

/// Skips white space and SQL comments (`-- ...` to end of line, nested `/* ... */`), so that
/// a comment cannot hide a statement's first keyword from the session-state check.
std::string_view skip_space_and_comments(std::string_view sql) {
  std::size_t i = 0;
  for (;;) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i])) != 0) ++i;
    if (sql.substr(i, 2) == "--") {
      while (i < sql.size() && sql[i] != '\n') ++i;
      continue;
    }
    if (sql.substr(i, 2) == "/*") {
      int depth = 0;
      while (i < sql.size()) {
        if (sql.substr(i, 2) == "/*") {
          ++depth;
          i += 2;
        } else if (sql.substr(i, 2) == "*/") {
          i += 2;
          if (--depth == 0) break;
        } else {
          ++i;
        }
      }
      continue;
    }
    return sql.substr(std::min(i, sql.size()));
  }
}

bool starts_with_word(std::string_view sql, std::string_view word) {
  sql = skip_space_and_comments(sql);
  if (sql.size() < word.size()) return false;
  for (std::size_t k = 0; k < word.size(); ++k) {
    if (std::toupper(static_cast<unsigned char>(sql[k])) != word[k]) return false;
  }
  return sql.size() == word.size() ||
         !(std::isalnum(static_cast<unsigned char>(sql[word.size()])) != 0 ||
           sql[word.size()] == '_');
}

/// A cheap first look (no strlen, no comment parsing): false when `sql` cannot start with
/// SET, LISTEN or PREPARE (e.g. SELECT, INSERT), so that the common statement skips the full
/// check below. A leading comment gets the full check.
bool may_hold_session_state(const char* sql) noexcept {
  const char* p = sql;
  while (*p == ' ' || (*p >= '\t' && *p <= '\r')) ++p;
  const auto lower = [](char c) { return static_cast<char>(c | 0x20); };
  switch (*p) {
    case '-':
    case '/':
      return true;
    case 'S':
    case 's':
      return lower(p[1]) == 'e' && lower(p[2]) == 't';
    case 'L':
    case 'l':
      return lower(p[1]) == 'i';
    case 'P':
    case 'p':
      return lower(p[1]) == 'r';
    default:
      return false;
  }
}

std::string_view after_word(std::string_view sql, std::string_view word) {
  sql = skip_space_and_comments(sql);
  return sql.substr(std::min(sql.size(), word.size()));
}

/// An error's message without the trailing ": <code message>" that std::system_error adds
/// (the error built from it adds its own).
std::string message_of(const std::system_error& e) {
  std::string what = e.what();
  const std::string suffix = ": " + e.code().message();
  if (what.size() > suffix.size() && what.ends_with(suffix))
    what.resize(what.size() - suffix.size());
  return what;
}

/// Counts an operation inside the client, so that close() can wait for it.
class ActiveGuard {
 public:
  ActiveGuard(std::size_t& active, asio::steady_timer& idle_changed) noexcept
      : active_(active), idle_changed_(idle_changed) {
    ++active_;
  }
  ~ActiveGuard() {
    if (--active_ == 0) idle_changed_.cancel();
  }
  ActiveGuard(const ActiveGuard&) = delete;
  ActiveGuard& operator=(const ActiveGuard&) = delete;

 private:
  std::size_t& active_;
  asio::steady_timer& idle_changed_;
};

}  // namespace

// ---- the core: construction and destruction ------------------------------------------------

namespace detail {

ClientCore::ClientCore(asio::any_io_executor executor, PostgresConfig config)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      breaker_(
          [&] {
            auto b = config_.breaker;
            if (b.name.empty() || b.name == core::CircuitBreakerConfig{}.name) {
              b.name = "pg " + detail::describe_dsn(config_.dsn);
            }
            return b;
          }(),
          core::SteadyClock::instance(), random_),
      state_changed_(executor_, Clock::time_point::max()),
      maintain_wake_(executor_, Clock::time_point::max()),
      maintain_backoff_(executor_, Clock::time_point::max()),
      hard_stop_(executor_, Clock::time_point::max()),
      idle_changed_(executor_, Clock::time_point::max()),
      description_(detail::describe_dsn(config_.dsn)) {
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

ClientCore::~ClientCore() {
  // Every coroutine of the core holds it: nothing of the client runs any more. Connections
  // still open (none after a completed close() or abandon()) are closed here.
  close_all_connections();
}

void ClientCore::close_all_connections() noexcept {
  // Closing a connection calls on_broken, which may move it from slots_ to retired_ (and
  // erase its slot): walk by index and re-read. No allocation, no slot destroyed here that
  // an operation still holds (a leased slot stays in slots_ until its holder releases it).
  for (std::size_t i = 0; i < slots_.size();) {
    std::shared_ptr<Connection> connection = slots_[i]->connection;
    connection->close();
    if (i < slots_.size() && slots_[i]->connection == connection) ++i;
  }
  for (std::size_t i = 0; i < retired_.size(); ++i) retired_[i]->close();
}

void ClientCore::abandon() noexcept {
  if (state_ == State::created || state_ == State::closed) {
    state_ = State::closed;
    close_all_connections();
    return;
  }
  log()->warn(
      "PostgresClient {} destroyed without close(): failing its waiters, cancelling its work "
      "and closing its sockets now",
      description_);
  shut_down_now();
}

std::vector<int> ClientCore::backend_pids() const {
  std::vector<int> pids;
  for (const auto& slot : slots_) {
    if (slot->connection->open()) pids.push_back(slot->connection->backend_pid());
  }
  return pids;
}

PostgresStats ClientCore::stats() const {
  PostgresStats s = counters_;
  s.connections = 0;
  s.exclusive = 0;
  s.reserved = 0;
  s.in_flight = 0;
  s.cancels_in_progress = 0;
  for (const auto& slot : slots_) {
    if (!slot->connection->open()) continue;
    ++s.connections;
    if (slot->connection->cancel_in_progress()) ++s.cancels_in_progress;
    if (slot->exclusive) ++s.exclusive;
    if (slot->draining) ++s.reserved;
    s.in_flight += slot->connection->in_flight();
  }
  s.waiters = waiters_.size();
  s.breaker = breaker_.state();
  s.breaker_trips = breaker_.stats().trips;
  return s;
}

void ClientCore::check_running() const {
  switch (state_) {
    case State::running:
      return;
    case State::created:
    case State::starting:
      throw Error(make_error_code(errc::not_started), "PostgresClient " + description_,
                  RequestState::not_sent);
    case State::closing:
    case State::closed:
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
  if (!config_.pgbouncer_transaction_mode || !may_hold_session_state(sql.c_str())) return;
  const std::string_view text = sql.c_str();
  // Session state would stay on a server connection that PgBouncer then hands to other
  // clients (F12): only transaction-scoped SET is allowed.
  if (starts_with_word(text, "SET")) {
    const auto rest = after_word(text, "SET");
    if (!starts_with_word(rest, "LOCAL") && !starts_with_word(rest, "TRANSACTION") &&
        !starts_with_word(rest, "CONSTRAINTS")) {
      throw Error(make_error_code(errc::invalid_argument),
                  "session-level SET is not allowed with pgbouncer_transaction_mode: use SET "
                  "LOCAL inside transaction()",
                  RequestState::not_sent);
    }
  }
  if (starts_with_word(text, "LISTEN") || starts_with_word(text, "PREPARE")) {
    throw Error(make_error_code(errc::invalid_argument),
                "LISTEN and PREPARE need a session: not allowed with pgbouncer_transaction_mode",
                RequestState::not_sent);
  }
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
  for (;;) {
    switch (state_) {
      case State::running:
        co_return;
      case State::closing:
      case State::closed:
        throw Error(make_error_code(errc::client_closed), "PostgresClient " + description_,
                    RequestState::not_sent);
      case State::starting: {
        // Single flight: wait for the start-up in progress and share its outcome.
        boost::system::error_code ec;
        co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (state_ == State::created && start_error_) std::rethrow_exception(start_error_);
        continue;
      }
      case State::created:
        break;
    }
    break;
  }
  state_ = State::starting;
  start_error_ = nullptr;
  std::exception_ptr failure;
  try {
    co_await start_once();
  } catch (...) {
    failure = std::current_exception();
  }
  if (!failure && state_ != State::starting) {
    // The client was destroyed while it started (abandon()).
    failure =
        std::make_exception_ptr(Error(make_error_code(errc::client_closed),
                                      "PostgresClient " + description_, RequestState::not_sent));
  }
  if (failure) {
    close_all_connections();
    slots_.clear();
    retired_.clear();
    if (state_ == State::starting) state_ = State::created;  // a later start() may try again
    start_error_ = failure;
    state_changed_.cancel();
    std::rethrow_exception(failure);
  }
  state_ = State::running;
  state_changed_.cancel();
  maintain_running_ = true;
  // The handler holds the core until the maintenance has ended.
  asio::co_spawn(executor_, maintain(shared_from_this()),
                 [self = shared_from_this()](const std::exception_ptr& e) {
                   if (e) {
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       log()->error("{}: pool maintenance stopped: {}", self->description_,
                                    ex.what());
                     }
                   }
                   self->maintain_running_ = false;
                   self->state_changed_.cancel();
                 });
}

asio::awaitable<void> ClientCore::start_once() {
  const auto deadline = Clock::now() + config_.startup_timeout;
  core::Backoff backoff(config_.reconnect_backoff, random_);
  std::string last_cause;
  const std::size_t wanted = std::max<std::size_t>(config_.min_size, 1);
  for (std::uint32_t attempt = 1;; ++attempt) {
    std::exception_ptr failure;
    try {
      while (slots_.size() < wanted) {
        if (state_ != State::starting) co_return;  // abandoned: start() reports it
        // One attempt never runs past the start-up deadline (a hanging server, F01).
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        auto connection = co_await open_connection(
            std::max(std::min(config_.connect_timeout, left), std::chrono::milliseconds(1)));
        adopt(std::move(connection));
      }
      co_return;
    } catch (...) {
      failure = std::current_exception();
    }
    const ErrorKind kind = classify(failure);
    if (kind == ErrorKind::permanent || kind == ErrorKind::cancelled) {
      std::rethrow_exception(failure);  // bad credentials, missing database: no retry (F16)
    }
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      last_cause = e.what();
    }
    if (state_ != State::starting) co_return;
    const auto now = Clock::now();
    if (now >= deadline) {
      throw Error(make_error_code(errc::startup_timeout),
                  "PostgreSQL " + description_ + " not reachable within " +
                      std::to_string(config_.startup_timeout.count()) + " ms after " +
                      std::to_string(attempt) + " attempt(s); last error: " + last_cause,
                  RequestState::not_sent);
    }
    // The last wait is cut to the time left, and one more attempt is made at the deadline.
    const auto delay = std::min<Clock::duration>(backoff.next(), deadline - now);
    log()->warn("{}: start-up attempt {} failed ({}); retrying in {} ms", description_, attempt,
                last_cause, std::chrono::duration_cast<std::chrono::milliseconds>(delay).count());
    asio::steady_timer timer(executor_, delay);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<std::shared_ptr<Connection>> ClientCore::open_connection(
    std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::exception_ptr failure;
  try {
    const auto params =
        co_await detail::resolve_dsn(config_.dsn, config_.application_name, timeout);
    const std::size_t count = params.targets.size();
    for (std::size_t i = 0; i < count; ++i) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= std::chrono::milliseconds::zero() && failure) break;
      // Every address gets its turn within the deadline: one that hangs (a black hole)
      // takes at most its share of the time left, F51.
      const auto share =
          std::max(left / static_cast<std::int64_t>(count - i), std::chrono::milliseconds(1));
      auto connection = std::make_shared<Connection>(executor_);
      try {
        co_await connection->connect(params, params.targets[i], share);
        ++counters_.connects;
        co_return connection;
      } catch (...) {
        failure = std::current_exception();
      }
      connection->close();
      const ErrorKind kind = classify(failure);
      // Bad credentials or a missing database: every address would say the same.
      if (kind == ErrorKind::permanent || kind == ErrorKind::cancelled) break;
      if (i + 1 < count) {
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          log()->debug("{}: address {} failed ({}); trying the next", description_,
                       params.targets[i].description, e.what());
        }
      }
    }
  } catch (...) {
    failure = std::current_exception();  // the DSN or a host name (resolution)
  }
  ++counters_.connect_failures;
  if (!failure) {
    failure = std::make_exception_ptr(Error(make_error_code(errc::connect_failed),
                                            description_ + ": no address to connect to",
                                            RequestState::not_sent));
  }
  std::rethrow_exception(failure);
}

void ClientCore::adopt(std::shared_ptr<Connection> connection) {
  connection->set_cancel_timeout(config_.connect_timeout);
  connection->set_statement_cache(config_.statement_cache_size);
  // Weak: a connection may outlive the core (its I/O coroutines hold it).
  std::weak_ptr<ClientCore> weak = weak_from_this();
  Connection* raw = connection.get();
  connection->set_on_broken([weak, raw] {
    if (auto self = weak.lock()) self->on_broken(raw);
  });
  // An abandoned statement ended or a cancel request completed: waiters may have it now.
  connection->set_on_ready([weak] {
    if (auto self = weak.lock()) self->dispatch();
  });
  auto slot = std::make_unique<Slot>();
  slot->connection = std::move(connection);
  slots_.push_back(std::move(slot));
}

void ClientCore::on_broken(Connection* connection) noexcept {
  auto it = std::find_if(slots_.begin(), slots_.end(),
                         [&](const auto& s) { return s->connection.get() == connection; });
  if (it == slots_.end()) return;
  if (state_ == State::running) {
    ++counters_.discarded;
    log()->warn("{}: connection (backend {}) discarded; the pool will replace it", description_,
                connection->backend_pid());
  }
  if ((*it)->exclusive) return;  // its lease holder discards it on release
  retire(it->get());
}

void ClientCore::retire(Slot* slot) noexcept {
  auto it =
      std::find_if(slots_.begin(), slots_.end(), [&](const auto& s) { return s.get() == slot; });
  if (it == slots_.end()) return;
  const bool was_reserved = slot->draining;
  if (was_reserved) unreserve(slot);
  retired_.push_back(slot->connection);
  slots_.erase(it);
  if (was_reserved) reserve_for_next();  // its waiter keeps another connection draining
  maintain_wake_.cancel();
}

void ClientCore::discard(Slot* slot, std::string_view why) noexcept {
  log()->warn("{}: discarding connection (backend {}): {}", description_,
              slot->connection->backend_pid(), why);
  if (slot->connection->in_flight() > 0) slot->connection->send_cancel_request();
  slot->connection->close(make_error_code(errc::connection_lost));
}

asio::awaitable<void> ClientCore::maintain(Keep) {
  core::Backoff backoff(config_.reconnect_backoff, random_);
  while (state_ == State::running) {
    // Retired connections: close them and wait for their I/O to end.
    while (!retired_.empty()) {
      auto connection = std::move(retired_.back());
      retired_.pop_back();
      connection->close();
      co_await connection->wait_closed();
    }
    if (state_ != State::running) break;
    const std::size_t live = slots_.size();
    const bool below_min = live + opening_ < std::max<std::size_t>(config_.min_size, 1);
    const bool wanted = !waiters_.empty() && live + opening_ < config_.max_size;
    if (below_min || wanted) {
      ++opening_;
      std::exception_ptr failure;
      try {
        auto connection = co_await open_connection(config_.connect_timeout);
        if (state_ != State::running) {
          connection->close();
          co_await connection->wait_closed();
        } else {
          adopt(std::move(connection));
          backoff.reset();
          last_connect_failure_ = nullptr;
        }
      } catch (...) {
        failure = std::current_exception();
      }
      --opening_;
      dispatch();
      if (failure && state_ == State::running) {
        last_connect_failure_ = failure;
        fail_waiters_if_unreachable();
        const auto delay = backoff.next();
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          log()->warn("{}: reconnect failed ({}); next attempt in {} ms", description_, e.what(),
                      delay.count());
        }
        // Only close() cuts this wait short: waiters arriving during an outage must not
        // turn the backoff into a reconnect storm (F34).
        maintain_backoff_.expires_after(delay);
        boost::system::error_code ec;
        co_await maintain_backoff_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      continue;
    }
    boost::system::error_code ec;
    co_await maintain_wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> ClientCore::close(Keep) {
  if (state_ == State::closed || state_ == State::created) {
    state_ = State::closed;
    close_all_connections();
    co_return;
  }
  if (state_ == State::starting) {
    boost::system::error_code ec;
    while (state_ == State::starting) {
      co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (state_ != State::running) {
      state_ = State::closed;
      co_return;
    }
  }
  if (state_ == State::closing) {
    boost::system::error_code ec;
    while (state_ != State::closed) {
      co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return;
  }
  state_ = State::closing;
  state_changed_.cancel();
  // Waiters fail at once: the client takes no new work.
  fail_all_waiters_closed();
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
  state_ = State::closed;
  fail_all_waiters_closed();
  hard_stop_.cancel();  // transaction bodies still running end
  maintain_backoff_.cancel();
  maintain_wake_.cancel();
  // Work still running on the server is cancelled there, not left to run to its end.
  for (const auto& slot : slots_) {
    if (slot->connection->in_flight() > 0) slot->connection->send_cancel_request();
  }
  close_all_connections();  // what is in flight fails with client_closed
  idle_changed_.cancel();
  state_changed_.cancel();
}

asio::awaitable<void> ClientCore::close_in_order() {
  // In-flight work may finish within close_timeout.
  const auto deadline = Clock::now() + config_.close_timeout;
  boost::system::error_code ec;
  while (active_ > 0 && Clock::now() < deadline) {
    idle_changed_.expires_at(deadline);
    co_await idle_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (active_ > 0) {
    log()->warn("{}: close: {} operation(s) still running after {} ms; cancelling them",
                description_, active_, config_.close_timeout.count());
  }
  // Close every socket; what is left in flight fails with client_closed.
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& slot : slots_) all.push_back(slot->connection);
  for (auto& c : retired_) all.push_back(c);
  hard_stop_.cancel();  // transaction bodies still running are cancelled
  maintain_backoff_.cancel();
  for (auto& c : all) {
    // Work still running on the server is cancelled there, not left to run to its end.
    if (c->in_flight() > 0) c->send_cancel_request();
    c->close();
  }
  maintain_wake_.cancel();
  for (auto& c : all) co_await c->wait_closed();
  // Cancel requests open short-lived sockets of their own, on the sender's thread: give them
  // a bounded time to finish, so that no socket to the server outlives close().
  const auto cancel_deadline =
      Clock::now() + std::min<Clock::duration>(config_.close_timeout, std::chrono::seconds(1));
  while (detail::CancelSender::instance().pending() > 0 && Clock::now() < cancel_deadline) {
    asio::steady_timer poll(executor_, std::chrono::milliseconds(5));
    co_await poll.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  while (maintain_running_) {
    co_await state_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // Operations that were still running have now failed; let them leave the client.
  while (active_ > 0) {
    idle_changed_.expires_at(Clock::time_point::max());
    co_await idle_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  slots_.clear();
  retired_.clear();
  state_ = State::closed;
  state_changed_.cancel();
}

// ---- pool --------------------------------------------------------------------------------

Slot* ClientCore::pick(bool exclusive) noexcept {
  Slot* best = nullptr;
  for (auto& slot : slots_) {
    Connection& c = *slot->connection;
    if (!c.open() || slot->exclusive) continue;
    if (exclusive) {
      if (c.in_flight() == 0 && c.accepting()) return slot.get();
      continue;
    }
    if (slot->draining || !c.accepting() || c.in_flight() >= config_.max_pipeline_depth) continue;
    if (best == nullptr || c.in_flight() < best->connection->in_flight()) best = slot.get();
  }
  return best;
}

void ClientCore::unreserve(Slot* slot) noexcept {
  if (!slot->draining) return;
  slot->draining = false;
  for (Waiter* w : waiters_) {
    if (w->reserved == slot) {
      w->reserved = nullptr;
      break;
    }
  }
}

void ClientCore::reserve_for_next() noexcept {
  if (exclusive_waiting_ == 0) return;
  // One connection at a time drains for the transactions that wait, so that shared
  // statements keep the others.
  if (std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->draining; })) {
    return;
  }
  auto first =
      std::find_if(waiters_.begin(), waiters_.end(), [](const Waiter* w) { return w->exclusive; });
  if (first == waiters_.end()) return;
  Slot* candidate = nullptr;
  for (auto& s : slots_) {
    if (s->exclusive || !s->connection->open()) continue;
    if (candidate == nullptr || s->connection->in_flight() < candidate->connection->in_flight()) {
      candidate = s.get();
    }
  }
  if (candidate == nullptr) return;
  candidate->draining = true;
  (*first)->reserved = candidate;
}

void ClientCore::dispatch() noexcept {
  for (bool again = true; again;) {
    again = false;
    bool reservation_ended = false;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter* w = *it;
      Slot* slot = pick(w->exclusive);
      if (slot == nullptr) {
        ++it;
        continue;
      }
      if (w->exclusive) {
        // Its reservation ends with its wait, whichever connection it gets (F47).
        if (w->reserved != nullptr && w->reserved != slot) w->reserved->draining = false;
        w->reserved = nullptr;
        if (slot->draining) unreserve(slot);  // another waiter's: it reserves anew below
        slot->exclusive = true;
        slot->draining = false;
        --exclusive_waiting_;
        reservation_ended = true;
      } else {
        --shared_waiting_;
      }
      w->granted = slot;
      it = waiters_.erase(it);
      if (w->notifier != nullptr) w->notifier->cancel();
    }
    if (reservation_ended) {
      reserve_for_next();
      // A connection that stopped draining may take shared waiters passed over above.
      again = shared_waiting_ > 0;
    }
  }
}

void ClientCore::forget(Waiter& waiter) noexcept {
  auto it = std::find(waiters_.begin(), waiters_.end(), &waiter);
  if (it != waiters_.end()) {
    waiters_.erase(it);
    --(waiter.exclusive ? exclusive_waiting_ : shared_waiting_);
  }
  if (waiter.reserved != nullptr) {
    // No reservation outlives its waiter (F47): the connection takes shared statements
    // again, or drains for the next transaction that waits.
    waiter.reserved->draining = false;
    waiter.reserved = nullptr;
    reserve_for_next();
    dispatch();
  }
}

asio::awaitable<Slot*> ClientCore::acquire(bool exclusive, Clock::time_point deadline) {
  // A caller of either kind takes free capacity at once unless callers of its kind wait
  // before it (they are served in order): shared statements do not queue behind a waiting
  // transaction while a connection nobody reserved can take them (F47).
  if (exclusive ? exclusive_waiting_ == 0 : shared_waiting_ == 0) {
    if (Slot* slot = pick(exclusive)) {
      if (exclusive) {
        if (slot->draining) unreserve(slot);
        slot->exclusive = true;
      }
      co_return slot;
    }
  }
  if (waiters_.size() >= config_.max_waiters) {
    throw Error(make_error_code(errc::queue_full),
                description_ + ": " + std::to_string(waiters_.size()) + " callers already wait",
                RequestState::not_sent);
  }
  Waiter waiter;
  waiter.exclusive = exclusive;
  asio::steady_timer notifier(executor_, deadline);
  waiter.notifier = &notifier;
  waiters_.push_back(&waiter);
  ++(exclusive ? exclusive_waiting_ : shared_waiting_);
  // Keep shared statements off one connection so that it drains for the transactions.
  if (exclusive) reserve_for_next();
  maintain_wake_.cancel();  // the pool may grow for us
  boost::system::error_code ec;
  co_await notifier.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  waiter.notifier = nullptr;
  if (waiter.granted != nullptr) co_return waiter.granted;  // granted wins over a late cancel
  // Not granted: leave the queue (a cancelled waiter leaks nothing, F08; nor does its
  // reservation, F47).
  forget(waiter);
  if (waiter.closed) {
    throw Error(make_error_code(errc::client_closed), description_ + ": client closing",
                RequestState::not_sent);
  }
  if (waiter.failure) std::rethrow_exception(waiter.failure);
  if (ec == asio::error::operation_aborted) {
    throw Error(make_error_code(errc::cancelled), description_ + ": acquire cancelled",
                RequestState::not_sent);
  }
  // No open connection at all: not saturation but a server we cannot reach (connect
  // attempts failing or hanging): the caller gets the connect error, and the breaker counts it.
  if (!has_open_connection()) std::rethrow_exception(unreachable_error());
  throw Error(make_error_code(errc::acquire_timeout),
              description_ + ": no connection within " +
                  std::to_string(config_.acquire_timeout.count()) + " ms",
              RequestState::not_sent);
}

bool ClientCore::has_open_connection() const noexcept {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const auto& s) { return s->connection->open(); });
}

std::exception_ptr ClientCore::unreachable_error() const {
  std::string what = description_ + ": server unreachable: no open connection; ";
  std::error_code code = make_error_code(errc::connect_timeout);
  std::optional<ServerError> server;
  if (last_connect_failure_) {
    try {
      std::rethrow_exception(last_connect_failure_);
    } catch (const Error& e) {
      // The connect error's code and server data are kept: a refused or hanging connect is
      // transient (counted by the breaker, retried), bad credentials stay permanent.
      code = e.code() == errc::connect_timeout ? e.code() : make_error_code(errc::connect_failed);
      server = e.server();
      // (A server error's text is appended by the Error built from it.)
      what += server ? std::string("last connect attempt failed")
                     : "last connect attempt failed: " + message_of(e);
    } catch (const std::exception& e) {
      code = make_error_code(errc::connect_failed);
      what += std::string("last connect attempt failed: ") + e.what();
    }
  } else {
    // The pool lost its connections and the attempt to replace them hangs (a frozen server,
    // a black hole) or has not been made yet.
    what += opening_ > 0 ? "a connect attempt is in progress and has not succeeded"
                         : "no connect attempt has succeeded yet";
  }
  if (server)
    return std::make_exception_ptr(make_server_error(*server, what, RequestState::not_sent));
  return std::make_exception_ptr(Error(code, what, RequestState::not_sent));
}

void ClientCore::fail_waiters_if_unreachable() noexcept {
  // Callers waiting while the pool has no open connection wait for the maintenance's next
  // connect attempt: they get its connection when it succeeds, its error when it fails.
  // Waiting out acquire_timeout after a failed attempt would only delay the error (the next
  // attempt comes after a backoff that may well exceed it) and hide the outage from the
  // breaker. New callers are not failed at once on the strength of an old failure either:
  // a short blip (a PgBouncer restart) then costs them a short wait, not an error.
  if (waiters_.empty() || has_open_connection()) return;
  std::exception_ptr error;
  try {
    error = unreachable_error();
  } catch (const std::exception& e) {  // allocation failure: the waiters time out instead
    log()->error("{}: cannot fail waiting callers: {}", description_, e.what());
    return;
  }
  log()->warn("{}: server unreachable: failing {} waiting caller(s)", description_,
              waiters_.size());
  for (Waiter* w : waiters_) {
    w->failure = error;
    if (w->reserved != nullptr) w->reserved->draining = false;
    w->reserved = nullptr;
    if (w->notifier != nullptr) w->notifier->cancel();
  }
  waiters_.clear();
  exclusive_waiting_ = 0;
  shared_waiting_ = 0;
}

void ClientCore::fail_all_waiters_closed() noexcept {
  for (Waiter* w : waiters_) {
    w->closed = true;
    if (w->reserved != nullptr) w->reserved->draining = false;
    w->reserved = nullptr;
    if (w->notifier != nullptr) w->notifier->cancel();
  }
  waiters_.clear();
  exclusive_waiting_ = 0;
  shared_waiting_ = 0;
}

void ClientCore::release_exclusive(Slot* slot) noexcept {
  slot->exclusive = false;
  if (!slot->connection->open()) retire(slot);
  dispatch();
}

// ---- statements --------------------------------------------------------------------------

asio::awaitable<Result> ClientCore::run_single(Keep, QueryOptions options, Sql sql,
                                               ParamBuffer params) {
  check_running();
  check_session_state(sql);
  ActiveGuard guard(active_, idle_changed_);
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  const auto deadline = deadline_for(options.timeout);
  detail::Statement statement{sql.c_str(), &params};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  std::exception_ptr failure;
  try {
    Slot* slot =
        co_await acquire(false, std::min(deadline, Clock::now() + config_.acquire_timeout));
    std::shared_ptr<Connection> connection = slot->connection;  // may leave the pool meanwhile
    co_await connection->run(request, deadline);
  } catch (...) {
    failure = std::current_exception();
  }
  record(permit, failure);
  dispatch();
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
  ActiveGuard guard(active_, idle_changed_);
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
  try {
    Slot* slot =
        co_await acquire(false, std::min(deadline, Clock::now() + config_.acquire_timeout));
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
  record(permit, failure);
  dispatch();
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

// ---- COPY ---------------------------------------------------------------------------------

asio::awaitable<Slot*> ClientCore::begin_copy(Keep, std::string sql, QueryOptions options) {
  check_running();
  core::CircuitBreakerPermit permit = breaker_.acquire_or_throw();
  enter();
  Slot* slot = nullptr;
  std::exception_ptr failure;
  try {
    slot = co_await acquire(true, Clock::now() + config_.acquire_timeout);
    slot->copy_permit.emplace(std::move(permit));
    co_await slot->connection->copy_start(sql.c_str(), deadline_for(options.timeout));
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (slot == nullptr) {
      record(permit, failure);
      leave();
    } else {
      finish_copy(slot, failure);
    }
    std::rethrow_exception(failure);
  }
  co_return slot;
}

asio::awaitable<void> ClientCore::copy_chunk(Keep, Slot* slot, const CopyBuffer& buffer,
                                             QueryOptions options) {
  co_await slot->connection->copy_send(buffer.data(), deadline_for(options.timeout));
}

asio::awaitable<std::int64_t> ClientCore::end_copy(Keep, Slot* slot, QueryOptions options) {
  co_return co_await slot->connection->copy_end(deadline_for(options.timeout));
}

void ClientCore::finish_copy(Slot* slot, const std::exception_ptr& failure) noexcept {
  if (slot != nullptr) {
    if (failure && slot->connection->open()) {
      // Mid-COPY the connection cannot be reused; a server error after COPY ended leaves
      // it usable (copy_end re-entered pipeline mode), anything else does not.
      bool usable = false;
      try {
        std::rethrow_exception(failure);
      } catch (const Error& e) {
        usable = e.code() == errc::server_error;
      } catch (...) {  // any other failure: discard below
      }
      if (!usable) {
        // A COPY cut short mid-stream (timeout, caller's cancellation) may still run on the
        // server, and data already on its way could reach CopyDone there and commit: ask the
        // server to cancel it, as for any statement that outlives its deadline (discard()
        // does so only for pipelined statements).
        if (slot->connection->copying()) slot->connection->send_cancel_request();
        discard(slot, "COPY failed");
      }
    }
    if (slot->copy_permit) {
      record(*slot->copy_permit, failure);
      slot->copy_permit.reset();
    }
    release_exclusive(slot);
  }
  leave();
}

// ---- transactions ------------------------------------------------------------------------

void ClientCore::enter() noexcept {
  ++active_;
}

void ClientCore::leave() noexcept {
  if (--active_ == 0) idle_changed_.cancel();
}

asio::awaitable<Slot*> ClientCore::begin_transaction(Keep, const TransactionOptions& options) {
  check_running();
  Slot* slot = co_await acquire(true, Clock::now() + config_.acquire_timeout);
  std::string begin = "BEGIN ISOLATION LEVEL ";
  switch (options.isolation) {
    case IsolationLevel::read_committed:
      begin += "READ COMMITTED";
      break;
    case IsolationLevel::repeatable_read:
      begin += "REPEATABLE READ";
      break;
    case IsolationLevel::serializable:
      begin += "SERIALIZABLE";
      break;
  }
  if (options.read_only) begin += " READ ONLY";
  const std::string timeout = "SET LOCAL statement_timeout = " +
                              std::to_string(statement_timeout(options.statement_timeout).count());
  // BEGIN and the server-side statement timeout in one round trip.
  detail::Statement statements[2] = {{begin.c_str(), nullptr}, {timeout.c_str(), nullptr}};
  detail::Request request;
  request.statements = statements;
  request.count = 2;
  std::exception_ptr failure;
  try {
    co_await slot->connection->run(request, deadline_for(options.statement_timeout));
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    if (classify(failure) == ErrorKind::cancelled) {
      discard(slot, "cancelled during BEGIN");
    }
    release_exclusive(slot);
    std::rethrow_exception(failure);
  }
  co_return slot;
}

asio::awaitable<void> ClientCore::commit_transaction(Keep, Slot* slot,
                                                     const TransactionOptions& options) {
  detail::Statement statement{"COMMIT", nullptr};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  try {
    co_await slot->connection->run(request, deadline_for(options.statement_timeout));
  } catch (const Error& e) {
    if (e.code() == errc::server_error) throw;  // e.g. 40001 at commit: rolled back
    if (e.code() == errc::cancelled) throw;
    // Sent, and then the connection died or timed out: committed or not, nobody knows.
    throw Error(make_error_code(errc::commit_outcome_unknown), description_ + ": " + e.what(),
                RequestState::sent);
  }
}

asio::awaitable<void> ClientCore::rollback_transaction(Keep, Slot* slot) {
  if (!slot->connection->open()) co_return;
  detail::Statement statement{"ROLLBACK", nullptr};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  co_await slot->connection->run(request, Clock::now() + config_.close_timeout);
}

}  // namespace detail

// ---- Transaction ---------------------------------------------------------------------------

Clock::time_point Transaction::copy_deadline() const {
  return Clock::now() + timeout_ + core_->config_.network_timeout_margin;
}

asio::awaitable<void> Transaction::copy_start(std::string sql) {
  co_await connection_->copy_start(sql.c_str(), copy_deadline());
}

asio::awaitable<void> Transaction::copy_chunk(const CopyBuffer& buffer) {
  co_await connection_->copy_send(buffer.data(), copy_deadline());
}

asio::awaitable<std::int64_t> Transaction::copy_end() {
  co_return co_await connection_->copy_end(copy_deadline());
}

void Transaction::copy_failed(const std::exception_ptr& failure) noexcept {
  if (!connection_->open()) return;
  // A server error at the end of the COPY left the connection in pipeline mode (usable, the
  // transaction aborted); anything else may leave it in COPY state.
  bool usable = false;
  try {
    std::rethrow_exception(failure);
  } catch (const Error& e) {
    usable = e.code() == errc::server_error;
  } catch (...) {  // any other failure (e.g. a row that cannot be encoded): closed below
  }
  if (!usable) {
    core::logger("pg")->warn("{}: COPY inside a transaction failed: closing the connection",
                             connection_->description());
    connection_->close(make_error_code(errc::connection_lost));
  }
}

asio::awaitable<Result> Transaction::run(Sql sql, ParamBuffer params) {
  core_->check_session_state(sql);
  detail::Statement statement{sql.c_str(), &params};
  detail::Request request;
  request.statements = &statement;
  request.count = 1;
  try {
    co_await connection_->run(request,
                              Clock::now() + timeout_ + core_->config_.network_timeout_margin);
  } catch (const Error& e) {
    // BEGIN and earlier statements went out: whatever this statement's own state, the
    // transaction's outcome is unknown to a caller that may have side effects elsewhere
    // (F04: retried only when declared idempotent).
    if (e.code() == errc::connection_lost && e.request_state() == RequestState::not_sent) {
      throw Error(e.code(), e.what(), RequestState::sent);
    }
    throw;
  }
  co_return std::move(request.result(0));
}

// ---- PostgresClient: the handle on the core ------------------------------------------------

PostgresClient::PostgresClient(executor_type executor, PostgresConfig config)
    : core_(std::make_shared<Core>(std::move(executor), std::move(config))) {}

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

const PostgresConfig& PostgresClient::config() const noexcept {
  return core_->config_;
}

PostgresClient::executor_type PostgresClient::get_executor() const noexcept {
  return core_->executor_;
}

std::vector<int> PostgresClient::backend_pids() const {
  return core_->backend_pids();
}

core::RandomSource& PostgresClient::random(Core& core) noexcept {
  return core.random_;
}

const PostgresConfig& PostgresClient::config_of(const Core& core) noexcept {
  return core.config_;
}

PostgresClient::executor_type PostgresClient::executor_of(const Core& core) noexcept {
  return core.executor_;
}

core::RetryPolicy PostgresClient::retry_policy(const Core& core,
                                               const std::optional<core::RetryPolicy>& given,
                                               std::chrono::milliseconds statement_timeout) {
  return core.retry_policy(given, statement_timeout);
}

core::CircuitBreakerPermit PostgresClient::begin_operation(Core& core) {
  core.check_running();
  core::CircuitBreakerPermit permit = core.breaker_.acquire_or_throw();
  core.enter();
  return permit;
}

void PostgresClient::end_operation(Core& core, core::CircuitBreakerPermit& permit,
                                   const std::exception_ptr& failure) noexcept {
  core.record(permit, failure);
  core.leave();
}

asio::awaitable<Slot*> PostgresClient::begin_transaction(const CorePtr& core,
                                                         const TransactionOptions& options) {
  return core->begin_transaction(core, options);
}

asio::awaitable<void> PostgresClient::commit_transaction(const CorePtr& core, Slot* slot,
                                                         const TransactionOptions& options) {
  return core->commit_transaction(core, slot, options);
}

asio::awaitable<void> PostgresClient::rollback_transaction(const CorePtr& core, Slot* slot) {
  return core->rollback_transaction(core, slot);
}

void PostgresClient::discard(Core& core, Slot* slot, std::string_view why) noexcept {
  core.discard(slot, why);
}

void PostgresClient::release_exclusive(Core& core, Slot* slot) noexcept {
  core.release_exclusive(slot);
}

detail::Connection& PostgresClient::slot_connection(Slot* slot) noexcept {
  return *slot->connection;
}

std::chrono::milliseconds PostgresClient::statement_timeout(
    const Core& core, std::chrono::milliseconds requested) noexcept {
  return core.statement_timeout(requested);
}

asio::steady_timer& PostgresClient::hard_stop(Core& core) noexcept {
  return core.hard_stop_;
}

bool PostgresClient::closing(const Core& core) noexcept {
  return core.state_ == Core::State::closing || core.state_ == Core::State::closed;
}

void PostgresClient::throw_closed_during_body(const Core& core) {
  core.throw_closed_during_body();
}

asio::awaitable<Slot*> PostgresClient::begin_copy(const CorePtr& core, std::string sql,
                                                  QueryOptions options) {
  return core->begin_copy(core, std::move(sql), options);
}

asio::awaitable<void> PostgresClient::copy_chunk(const CorePtr& core, Slot* slot,
                                                 const CopyBuffer& buffer, QueryOptions options) {
  return core->copy_chunk(core, slot, buffer, options);
}

asio::awaitable<std::int64_t> PostgresClient::end_copy(const CorePtr& core, Slot* slot,
                                                       QueryOptions options) {
  return core->end_copy(core, slot, options);
}

void PostgresClient::finish_copy(Core& core, Slot* slot,
                                 const std::exception_ptr& failure) noexcept {
  core.finish_copy(slot, failure);
}

std::string PostgresClient::copy_statement(std::string_view table,
                                           const std::vector<std::string_view>& columns) {
  auto quote = [](std::string_view name) {
    std::string out = "\"";
    for (char c : name) {
      if (c == '"') out += '"';
      out += c;
    }
    return out + '"';
  };
  std::string sql = "COPY ";
  // "schema.table" is quoted part by part.
  const auto dot = table.find('.');
  sql += dot == std::string_view::npos
             ? quote(table)
             : quote(table.substr(0, dot)) + "." + quote(table.substr(dot + 1));
  sql += " (";
  bool first = true;
  for (auto column : columns) {
    if (!first) sql += ", ";
    sql += quote(column);
    first = false;
  }
  sql += ") FROM STDIN (FORMAT binary)";
  return sql;
}

}  // namespace trading_shared::pg

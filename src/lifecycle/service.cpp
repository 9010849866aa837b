#include <trading_shared/core/config.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>

namespace trading_shared::lifecycle {

namespace asio = boost::asio;

namespace {
std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("lifecycle");
  return logger;
}
}  // namespace

void ServiceContext::on_stop(std::function<void()> callback) {
  if (stopping_) {
    callback();
    return;
  }
  stop_callbacks_.push_back(std::move(callback));
}

asio::awaitable<void> ServiceContext::until_stopped() {
  if (stopping_) co_return;
  asio::steady_timer timer(executor_, asio::steady_timer::time_point::max());
  stop_waiters_.emplace_back([&timer] { timer.cancel(); });
  const std::size_t index = stop_waiters_.size() - 1;
  boost::system::error_code ec;
  try {
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  } catch (...) {
    if (index < stop_waiters_.size()) stop_waiters_[index] = [] {};
    throw;
  }
  if (index < stop_waiters_.size()) stop_waiters_[index] = [] {};
}

void ServiceContext::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  auto callbacks = std::move(stop_callbacks_);
  stop_callbacks_.clear();
  for (auto& callback : callbacks) callback();
  auto waiters = std::move(stop_waiters_);
  stop_waiters_.clear();
  for (auto& waiter : waiters) waiter();
}

class ServiceRunner {
 public:
  ServiceRunner(const ServiceOptions& options, ServiceBody body, bool once)
      : options_(options), body_(std::move(body)), once_(once) {}

  int run() {
    // `stop` outlives the io_context: after an immediate stop, frames bound to its slot are
    // destroyed with the io_context.
    asio::cancellation_signal stop;
    asio::io_context io(1);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    asio::steady_timer deadline(io);
    asio::steady_timer shutdown(io);
    asio::steady_timer drain(io);
    ServiceContext* context_seen = nullptr;

    auto begin_stop = [&](const char* why) {
      if (stopping_) return;
      stopping_ = true;
      log()->info("{}: {}: stopping (graceful, up to {} ms)", options_.name, why,
                  options_.shutdown_timeout.count());
      if (context_seen != nullptr) context_seen->begin_stop();
      if (options_.drain_timeout > std::chrono::milliseconds::zero() && context_seen != nullptr) {
        drain.expires_after(options_.drain_timeout);
        drain.async_wait([&](boost::system::error_code ec) {
          if (ec || finished_) return;
          log()->warn("{}: the body did not finish within the drain time of {} ms: cancelling it",
                      options_.name, options_.drain_timeout.count());
          stop.emit(asio::cancellation_type::terminal);
        });
      } else {
        stop.emit(asio::cancellation_type::terminal);
      }
      shutdown.expires_after(options_.shutdown_timeout);
      shutdown.async_wait([&](boost::system::error_code ec) {
        if (ec || finished_) return;
        log()->error("{}: graceful stop overran {} ms: stopping now", options_.name,
                     options_.shutdown_timeout.count());
        forced_ = true;
        io.stop();
      });
    };
    std::function<void()> wait_signal = [&] {
      signals.async_wait([&](boost::system::error_code ec, int signal_number) {
        if (ec) return;
        if (stopping_) {
          log()->error("{}: second signal {}: stopping now", options_.name, signal_number);
          forced_ = true;
          io.stop();
          return;
        }
        begin_stop(signal_number == SIGINT ? "SIGINT" : "SIGTERM");
        wait_signal();
      });
    };
    wait_signal();
    if (once_ && options_.deadline > std::chrono::milliseconds::zero()) {
      deadline.expires_after(options_.deadline);
      deadline.async_wait([&](boost::system::error_code ec) {
        if (ec || finished_) return;
        deadline_passed_ = true;
        log()->error("{}: deadline of {} ms passed", options_.name, options_.deadline.count());
        begin_stop("deadline");
      });
    }

    auto main = [&]() -> asio::awaitable<void> {
      co_await with_scope(
          io.get_executor(),
          [&](ResourceScope& scope) -> asio::awaitable<void> {
            ServiceContext context(io.get_executor(), scope);
            context_seen = &context;
            if (stopping_) context.begin_stop();
            std::exception_ptr failure;
            try {
              co_await body_(context);
            } catch (...) {
              failure = std::current_exception();
            }
            context_seen = nullptr;
            if (failure) std::rethrow_exception(failure);
          },
          options_.close_timeout);
    };
    asio::co_spawn(io, main(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                     finished_ = true;
                     error_ = std::move(e);
                     boost::system::error_code ignored;
                     signals.cancel(ignored);
                     deadline.cancel();
                     shutdown.cancel();
                     drain.cancel();
                   }));
    io.run();
    if (forced_ && options_.exit_process_on_immediate_stop) {
      log()->error("{}: exiting immediately (exit code 1)", options_.name);
      spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& logger) { logger->flush(); });
      std::fflush(nullptr);
      std::_Exit(1);
    }
    return exit_code();
  }

 private:
  int exit_code() const {
    if (forced_ || !finished_) return 1;
    if (error_) {
      try {
        std::rethrow_exception(error_);
      } catch (const core::ConfigError& e) {
        log()->error("{}: bad configuration: {}", options_.name, e.what());
        return 2;
      } catch (const std::exception& e) {
        const bool stopped = stopping_ && classify(error_) == ErrorKind::cancelled;
        if (stopped) return once_ ? 1 : 0;  // a graceful stop: the body was cancelled
        log()->error("{}: failed: {}", options_.name, e.what());
        return 1;
      }
    }
    if (deadline_passed_) return 1;
    return once_ && stopping_ ? 1 : 0;
  }

  ServiceOptions options_;
  ServiceBody body_;
  bool once_;
  bool stopping_ = false;
  bool finished_ = false;
  bool forced_ = false;
  bool deadline_passed_ = false;
  std::exception_ptr error_;
};

int run_daemon(const ServiceOptions& options, ServiceBody body) {
  return ServiceRunner(options, std::move(body), false).run();
}

int run_once(const ServiceOptions& options, ServiceBody body) {
  return ServiceRunner(options, std::move(body), true).run();
}

}  // namespace trading_shared::lifecycle

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/admin_server.hpp>
#include <trading_shared/lifecycle/service.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

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

ServiceContext::~ServiceContext() {
  if (admin_ != nullptr) admin_->clear_checks();
}

void ServiceContext::add_sampler(std::function<void()> sample) {
  if (admin_ != nullptr) {
    admin_->add_sampler(std::move(sample));
    return;
  }
  samplers_.push_back(std::move(sample));  // no endpoint: kept, never run
}

void ServiceContext::add_readiness_check(std::string name, std::function<std::string()> check) {
  if (admin_ != nullptr) {
    admin_->add_readiness_check(std::move(name), std::move(check));
    return;
  }
  readiness_checks_.emplace_back(std::move(name), std::move(check));
}

asio::awaitable<void> ServiceContext::until_stopped() {
  while (!stopping_) co_await stopped_.wait();
}

void ServiceContext::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  auto callbacks = std::move(stop_callbacks_);
  stop_callbacks_.clear();
  for (auto& callback : callbacks) callback();
  stopped_.notify_all();
}

void check_budgets(const ServiceOptions& options) {
  using std::chrono::milliseconds;
  auto bad = [&](const std::string& why) { throw core::ConfigError(why); };
  auto ms = [](milliseconds d) { return std::to_string(d.count()) + " ms"; };
  if (options.close_timeout <= milliseconds::zero()) bad("the close timeout must be > 0");
  if (options.shutdown_timeout <= milliseconds::zero()) bad("the shutdown timeout must be > 0");
  if (options.drain_timeout < milliseconds::zero()) bad("the drain timeout must be >= 0");
  if (options.deadline < milliseconds::zero()) bad("the deadline must be >= 0");
  if (options.drain_timeout >= options.shutdown_timeout) {
    bad("the stop budget does not add up: drain " + ms(options.drain_timeout) +
        " leaves nothing of the shutdown timeout of " + ms(options.shutdown_timeout) +
        " for closing the clients");
  }
  milliseconds total = options.drain_timeout;
  std::string parts = "drain " + ms(options.drain_timeout);
  for (const auto& close : options.closes) {
    if (close.bound <= milliseconds::zero())
      bad("the close bound of " + close.name + " must be > 0");
    if (close.bound > options.close_timeout) {
      bad("closing " + close.name + " may take up to " + ms(close.bound) +
          " but each close is waited for at most " + ms(options.close_timeout) +
          " (the close timeout): raise it");
    }
    total += close.bound;
    parts += " + " + close.name + " up to " + ms(close.bound);
  }
  if (total > options.shutdown_timeout) {
    bad("the stop budget does not add up: " + parts + " = " + ms(total) +
        ", more than the shutdown timeout of " + ms(options.shutdown_timeout));
  }
}

class ServiceRunner {
 public:
  ServiceRunner(const ServiceOptions& options, ServiceBody body, bool once)
      : options_(options), body_(std::move(body)), once_(once) {}

  int run() {
    try {
      check_budgets(options_);  // before anything is set up (F54)
    } catch (const core::ConfigError& e) {
      log()->error("{}: bad configuration: {}", options_.name, e.what());
      return 2;
    }
    // `stop` outlives the io_context: after an immediate stop, frames bound to its slot are
    // destroyed with the io_context.
    asio::cancellation_signal stop;
    asio::io_context io(1);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    asio::steady_timer deadline(io);
    asio::steady_timer shutdown(io);
    asio::steady_timer drain(io);
    // The scope outlives the body: closes that overran their bound are waited for after it.
    ResourceScope scope(io.get_executor(), options_.close_timeout);
    ServiceContext* context_seen = nullptr;
    bool body_ended = false;
    // The admin endpoint (after `io`: its timer lives on the loop). Closed when the run ends.
    std::optional<AdminServer> admin;
    auto* registry =
        options_.metrics != nullptr ? options_.metrics : &core::MetricsRegistry::global();
    if (!options_.admin.listen.empty()) {
      try {
        admin.emplace(options_.admin, *registry, io.get_executor());
      } catch (const core::ConfigError& e) {
        log()->error("{}: bad configuration: {}", options_.name, e.what());
        return 2;
      }
      admin->set_state([&]() -> std::string {
        if (stopping_ || body_ended) return "stopping";
        if (context_seen == nullptr || !context_seen->health().ready) return "starting";
        return {};
      });
      log()->info("{}: admin endpoint on {}", options_.name, admin->url());
    }

    // The budget of the closes: from the first signal, or from the end of a body that
    // returned (or failed) by itself; when it passes, the stop becomes immediate.
    auto arm_shutdown = [&](const char* what) {
      shutdown.expires_after(options_.shutdown_timeout);
      shutdown.async_wait([&, what](boost::system::error_code ec) {
        if (ec || finished_) return;
        log()->error("{}: {} overran {} ms: stopping now", options_.name, what,
                     options_.shutdown_timeout.count());
        forced_ = true;
        io.stop();
      });
    };

    auto begin_stop = [&](const char* why) {
      if (stopping_) return;
      stopping_ = true;
      log()->info("{}: {}: stopping (graceful, up to {} ms)", options_.name, why,
                  options_.shutdown_timeout.count());
      if (context_seen != nullptr) context_seen->begin_stop();
      if (admin) admin->check_now();  // /readyz says "stopping" at once
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
      arm_shutdown("graceful stop");
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
      // As with_scope, with the scope of the runner: the closes run on every exit of the body,
      // with Asio's throw-after-cancellation switched off for them.
      const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
      std::exception_ptr failure;
      try {
        ServiceContext context(io.get_executor(), scope, registry);
        if (admin) {
          context.admin_ = &*admin;
          context.admin_port_ = admin->port();
        }
        context_seen = &context;
        if (stopping_) context.begin_stop();
        try {
          co_await body_(context);
        } catch (...) {
          failure = std::current_exception();
        }
        context_seen = nullptr;
        body_ended = true;
      } catch (...) {
        failure = std::current_exception();
      }
      co_await asio::this_coro::throw_if_cancelled(false);
      if (!stopping_) arm_shutdown("closing");
      co_await scope.close();
      // A client whose close overran its bound is still closing: it is freed when its close
      // ends, and the process ends after that, within the shutdown budget.
      if (scope.overrunning() > 0) {
        log()->warn("{}: waiting for {} close(s) that overran their bound of {} ms", options_.name,
                    scope.overrunning(), options_.close_timeout.count());
        co_await scope.wait_overrunning();
      }
      co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
      if (failure) std::rethrow_exception(failure);
    };
    asio::co_spawn(io, main(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                     finished_ = true;
                     error_ = std::move(e);
                     if (admin) admin->close();  // its timer would keep the loop running
                     boost::system::error_code ignored;
                     signals.cancel(ignored);
                     deadline.cancel();
                     shutdown.cancel();
                     drain.cancel();
                   }));
    io.run();
    // After an immediate stop the body's frame is still suspended; it is destroyed with `io`,
    // after `admin` (declared later): its ServiceContext must not reach the endpoint then.
    if (context_seen != nullptr) context_seen->admin_ = nullptr;
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

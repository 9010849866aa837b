// The admin endpoint's loop side: the check timer, samplers, readiness checks (admin_server.hpp).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/lifecycle/admin_server.hpp>
#include <trading_shared/version.hpp>

#include <boost/asio/steady_timer.hpp>

#include "admin_http.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <utility>
#include <vector>

namespace trading_shared::lifecycle {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
/// A readiness check that keeps failing is logged again at most this often.
constexpr std::chrono::seconds kStillFailingLogInterval{60};

namespace {
std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("admin");
  return logger;
}
}  // namespace

void check_admin_options(const AdminOptions& options) {
  using std::chrono::milliseconds;
  auto bad = [](const std::string& why) { throw core::ConfigError(why); };
  if (options.listen.empty()) bad("the admin listen address is empty");
  if (options.check_interval <= milliseconds::zero()) bad("the admin check interval must be > 0");
  if (options.stuck_after <= options.check_interval) {
    bad(
        fmt::format("the admin stuck-after time ({} ms) must be longer than the check interval "
                    "({} ms): /healthz would fail between two heartbeats",
                    options.stuck_after.count(), options.check_interval.count()));
  }
  if (options.request_timeout <= milliseconds::zero()) bad("the admin request timeout must be > 0");
  if (options.max_connections == 0) bad("the admin endpoint needs max_connections >= 1");
}

struct AdminServer::Loop {
  struct Sampler {
    std::function<void()> sample;
    bool failing = false;  ///< logged once per run of failures
  };
  struct Check {
    std::string name;
    std::function<std::string()> check;
    std::string reason;  ///< the last one; "" = fine
    /// When its failure was last logged: a check that keeps failing is logged when it starts
    /// failing and then at most once per kStillFailingLogInterval (its reason may carry
    /// counts that change every check).
    Clock::time_point logged{};
  };
  Loop(asio::any_io_executor executor, Clock::duration every) : timer(executor), interval(every) {}

  asio::steady_timer timer;
  Clock::duration interval;
  Clock::time_point due;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  std::vector<Sampler> samplers;
  std::vector<Check> checks;
  std::function<std::string()> state;
  bool cleared = false;
  bool last_ready = false;
  core::Histogram* lag = nullptr;
  core::Gauge* up = nullptr;
  core::Gauge* ready = nullptr;
  core::Counter* sampler_failures = nullptr;
  core::Counter* checks_run = nullptr;
};

AdminServer::AdminServer(const AdminOptions& options, core::MetricsRegistry& registry,
                         asio::any_io_executor loop) {
  check_admin_options(options);
  shared_ = std::make_shared<Shared>(registry);
  shared_->beat(Clock::now());
  server_ = std::make_unique<Server>(options, shared_);  // binds: throws ConfigError

  loop_ = std::make_unique<Loop>(std::move(loop), options.check_interval);
  auto& l = *loop_;
  l.lag = &registry.histogram(
      "ts_service_loop_lag_seconds",
      "Lateness of the service loop's check timer (how long a ready handler waits for the loop)");
  l.up = &registry.gauge("ts_service_up", "1 while the service runs (its admin endpoint is open)");
  l.ready = &registry.gauge("ts_service_ready", "1 when /readyz answers ready, else 0");
  l.sampler_failures =
      &registry.counter("ts_service_sampler_failures_total", "Samplers that threw (logged)");
  l.checks_run = &registry.counter("ts_service_checks_total",
                                   "Runs of the samplers and readiness checks (one per interval)");
  registry
      .gauge(core::metric_name("ts_service_info", {{"version", kVersion}}),
             "The trading_shared version of the service (value 1)")
      .set(1);
  registry
      .gauge("ts_service_start_time_seconds", "When the admin endpoint opened (Unix time, seconds)")
      .set(static_cast<std::int64_t>(std::time(nullptr)));
  l.up->set(1);
  l.ready->set(0);
  shared_->publish(std::make_shared<const Readiness>(Readiness{false, "not ready\nstarting\n"}));

  server_->start();
  l.due = Clock::now();  // the first run as soon as the loop runs
  l.timer.expires_at(l.due);
  schedule();
}

AdminServer::~AdminServer() {
  close();
}

std::uint16_t AdminServer::port() const noexcept {
  return server_->port();
}

std::string AdminServer::url() const {
  return fmt::format("http://{}:{}", server_->host(), server_->port());
}

void AdminServer::add_sampler(std::function<void()> sample) {
  loop_->samplers.push_back({std::move(sample), false});
}

void AdminServer::add_readiness_check(std::string name, std::function<std::string()> check) {
  loop_->checks.push_back({std::move(name), std::move(check), {}});
}

void AdminServer::set_state(std::function<std::string()> state) {
  loop_->state = std::move(state);
}

void AdminServer::clear_checks() {
  loop_->samplers.clear();
  loop_->checks.clear();
  loop_->state = nullptr;
  loop_->cleared = true;
  publish();
}

void AdminServer::check_now() {
  if (!*loop_->alive) return;
  tick();
}

void AdminServer::close() {
  if (!loop_ || !*loop_->alive) return;
  *loop_->alive = false;  // a tick already queued does nothing
  loop_->timer.cancel();
  loop_->up->set(0);
  server_->stop();
}

void AdminServer::schedule() {
  loop_->timer.async_wait([this, alive = loop_->alive](boost::system::error_code ec) {
    if (ec || !*alive) return;  // cancelled by close(): `this` may be gone
    const auto now = Clock::now();
    loop_->lag->observe(now - loop_->due);
    tick();
    loop_->due += loop_->interval;
    if (loop_->due <= now) loop_->due = now + loop_->interval;  // late: no burst of catch-up runs
    loop_->timer.expires_at(loop_->due);
    schedule();
  });
}

void AdminServer::tick() {
  auto& l = *loop_;
  shared_->beat(Clock::now());
  l.checks_run->add();
  for (auto& s : l.samplers) {
    try {
      s.sample();
      s.failing = false;
    } catch (const std::exception& e) {
      l.sampler_failures->add();
      if (!s.failing)
        log()->warn("admin: a sampler failed (counted until it works again): {}", e.what());
      s.failing = true;
    }
  }
  for (auto& c : l.checks) {
    std::string reason;
    try {
      reason = c.check();
    } catch (const std::exception& e) {
      reason = std::string("check failed: ") + e.what();
    }
    const bool was_failing = !c.reason.empty();
    const bool failing = !reason.empty();
    if (was_failing && !failing) {
      log()->info("readiness: {} ok again", c.name);
    } else if (failing && (!was_failing || Clock::now() - c.logged >= kStillFailingLogInterval)) {
      log()->warn("readiness: {}: {}{}", c.name, reason, was_failing ? " (still)" : "");
      c.logged = Clock::now();
    }
    c.reason = std::move(reason);
  }
  publish();
}

void AdminServer::publish() {
  auto& l = *loop_;
  std::string state = l.cleared ? "stopping" : l.state ? l.state() : std::string();
  bool ready = state.empty();
  for (const auto& c : l.checks) ready = ready && c.reason.empty();
  auto r = std::make_shared<Readiness>();
  r->ready = ready;
  r->body = ready ? "ready\n" : "not ready\n";
  if (!state.empty()) r->body += state + "\n";
  for (const auto& c : l.checks) {
    r->body += c.name;
    r->body += ": ";
    r->body += c.reason.empty() ? std::string_view("ok") : std::string_view(c.reason);
    r->body += '\n';
  }
  l.ready->set(ready ? 1 : 0);
  if (ready != l.last_ready) {
    log()->info("readiness: {}", ready ? "ready" : "not ready");
    l.last_ready = ready;
  }
  shared_->publish(std::move(r));
}

}  // namespace trading_shared::lifecycle

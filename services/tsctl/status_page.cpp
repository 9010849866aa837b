// tsctl status-page: polls the services' admin endpoints (/metrics, /readyz) and serves a live
// page (`/`) and its data (`/api/status`). Everything runs on the run_once loop: every poll is
// asynchronous and bounded by --poll-timeout, every page request by a request timeout, so a
// service that does not answer shows as down and never holds the page up.
#include <trading_shared/core/async_event.hpp>
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/version.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "tsctl/status_model.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace trading_shared::services::tsctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;

extern const std::string_view kStatusPageHtml;

namespace {

constexpr std::size_t kMaxSessions = 32;
constexpr std::size_t kMaxRequestBytes = 8192;
constexpr std::chrono::seconds kRequestTimeout{2};
constexpr std::size_t kMaxMetricsBody = std::size_t{16} << 20;

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = core::logger("tsctl");
  return logger;
}

/// One polled service: what is known of it, its client and its timer.
struct Poller {
  Poller(asio::any_io_executor executor, const ServiceTarget& target,
         std::chrono::milliseconds timeout)
      : client(executor, http::HttpClientConfig{.base_url = "http://" + target.address,
                                                .connect_timeout = timeout,
                                                .request_timeout = timeout,
                                                .max_body_size = kMaxMetricsBody,
                                                .max_idle_connections = 2,
                                                .user_agent = "tsctl-status-page/1"}),
        timer(executor) {
    status.name = target.name;
    status.address = target.address;
  }
  ServiceStatus status;
  http::HttpClient client;
  asio::steady_timer timer;
};

/// Shared by its tasks (each holds it until it ends): a body cancelled before its tasks ended
/// (an immediate stop) cannot leave them with a dangling page.
class StatusPage : public std::enable_shared_from_this<StatusPage> {
 public:
  StatusPage(asio::any_io_executor executor, const StatusPageSettings& settings)
      : executor_(executor), settings_(settings), acceptor_(executor), done_(executor) {
    for (const ServiceTarget& target : parse_service_targets(settings.services)) {
      pollers_.push_back(std::make_unique<Poller>(executor, target, settings.poll_timeout));
    }
  }

  asio::awaitable<void> run(lifecycle::ServiceContext& ctx) {
    const ListenAddress listen = parse_listen(settings_.listen);
    const tcp::endpoint endpoint(asio::ip::make_address(listen.host), listen.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    boost::system::error_code ec;
    acceptor_.bind(endpoint, ec);
    if (ec) {
      throw core::ConfigError(
          fmt::format("status page: cannot listen on {}: {}", settings_.listen, ec.message()));
    }
    acceptor_.listen(asio::socket_base::max_listen_connections);
    const tcp::endpoint bound = acceptor_.local_endpoint();
    const std::string host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                     : bound.address().to_string();
    // stdout: what a script (or ts-pipeline) reads to find the page when --listen says port 0.
    std::fputs(fmt::format("STATUS_PAGE http://{}:{}/\n", host, bound.port()).c_str(), stdout);
    std::fflush(stdout);
    log()->info("status page on http://{}:{}/ polling {} service(s) every {} ms", host,
                bound.port(), pollers_.size(), settings_.refresh.count());

    for (auto& poller : pollers_) spawn(poll_loop(*poller));
    spawn(accept_loop());
    co_await ctx.until_stopped();
    stopping_ = true;
    acceptor_.close(ec);
    // A poll in flight ends within --poll-timeout; each poll loop then closes its client (a
    // client is never closed under a request in flight).
    for (auto& poller : pollers_) poller->timer.cancel();
    while (running_ > 0) co_await done_.wait();
  }

 private:
  template <class Awaitable>
  void spawn(Awaitable task) {
    ++running_;
    asio::co_spawn(executor_, std::move(task),
                   [self = shared_from_this()](std::exception_ptr error) {
                     --self->running_;
                     self->done_.notify_all();
                     if (error) {
                       try {
                         std::rethrow_exception(error);
                       } catch (const std::exception& e) {
                         log()->error("status page: a task failed: {}", e.what());
                       }
                     }
                   });
  }

  asio::awaitable<void> poll_once(Poller& poller) {
    ServiceStatus& status = poller.status;
    ++status.polls;
    std::string error;
    const auto started = std::chrono::steady_clock::now();
    try {
      const http::HttpResponse metrics = co_await poller.client.get("/metrics");
      const auto answered = std::chrono::steady_clock::now();
      if (metrics.status != 200) {
        error = fmt::format("/metrics answered {}", metrics.status);
      } else {
        status.add_snapshot(MetricsSnapshot::from(parse_prometheus_text(metrics.body), answered),
                            settings_.window);
        status.scrape_ms = std::chrono::duration<double, std::milli>(answered - started).count();
      }
    } catch (const std::exception& e) {  // transport error, timeout, bad text: shown as down
      error = fmt::format("/metrics: {}", e.what());
    }
    status.metrics_ok = error.empty();
    if (stopping_) co_return;  // the stop waits for one request at most
    try {
      const http::HttpResponse ready = co_await poller.client.get("/readyz");
      status.readyz_status = ready.status;
      status.readyz_body = ready.body;
    } catch (const std::exception& e) {
      status.readyz_status = 0;
      status.readyz_body.clear();
      if (error.empty()) error = fmt::format("/readyz: {}", e.what());
    }
    if (status.readyz_status == 0 || !status.metrics_ok) ++status.failures;
    if (error.empty()) status.last_ok = std::chrono::steady_clock::now();
    // Logged once per change, counted in every poll (failures).
    if (error != status.error && !stopping_) {
      if (error.empty()) {
        log()->info("status page: {} at {} answers again", status.name, status.address);
      } else {
        log()->warn("status page: {} at {} is down: {}", status.name, status.address, error);
      }
    }
    status.error = std::move(error);
    status.polled = true;
  }

  asio::awaitable<void> poll_loop(Poller& poller) {
    auto next = std::chrono::steady_clock::now();
    while (!stopping_) {
      co_await poll_once(poller);
      next += settings_.refresh;
      const auto now = std::chrono::steady_clock::now();
      if (next < now) next = now;  // a slow poll: the next one at once, no burst to catch up
      if (stopping_) break;
      poller.timer.expires_at(next);
      boost::system::error_code ec;
      co_await poller.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_await poller.client.close();
  }

  asio::awaitable<void> accept_loop() {
    while (!stopping_) {
      boost::system::error_code ec;
      tcp::socket socket =
          co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_ || ec == asio::error::operation_aborted) break;
      if (ec) {  // e.g. out of descriptors: say so, and do not spin
        ++accept_errors_;
        log()->warn("status page: accept failed ({} so far): {}", accept_errors_, ec.message());
        asio::steady_timer pause(executor_, std::chrono::milliseconds(100));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (sessions_ >= kMaxSessions) {
        socket.close(ec);  // bounded: the browser retries at the next refresh
        continue;
      }
      ++sessions_;
      spawn(session(std::move(socket)));
    }
  }

  std::string status_json() const {
    std::vector<const ServiceStatus*> services;
    for (const auto& poller : pollers_) services.push_back(&poller->status);
    return render_status_json(services, std::chrono::steady_clock::now(), settings_.refresh,
                              kVersion);
  }

  asio::awaitable<void> session(tcp::socket socket) {
    struct Count {
      std::size_t& sessions;
      ~Count() { --sessions; }
    } count{sessions_};
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(kMaxRequestBytes);
    parser.body_limit(kMaxRequestBytes);
    stream.expires_after(kRequestTimeout);
    boost::system::error_code ec;
    co_await bhttp::async_read(stream, buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;  // timeout, a closed connection, a malformed or oversized request
    const auto& request = parser.get();
    bhttp::response<bhttp::string_body> response;
    response.version(11);
    response.keep_alive(false);
    response.set(bhttp::field::server, "tsctl-status-page");
    response.set(bhttp::field::cache_control, "no-store");
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (request.method() != bhttp::verb::get && request.method() != bhttp::verb::head) {
      response.result(bhttp::status::method_not_allowed);
      response.set(bhttp::field::allow, "GET, HEAD");
      response.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      response.body() = "method not allowed\n";
    } else if (path == "/" || path == "/index.html") {
      response.result(bhttp::status::ok);
      response.set(bhttp::field::content_type, "text/html; charset=utf-8");
      response.body() = std::string(kStatusPageHtml);
    } else if (path == "/api/status") {
      response.result(bhttp::status::ok);
      response.set(bhttp::field::content_type, "application/json");
      response.body() = status_json();
    } else {
      response.result(bhttp::status::not_found);
      response.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      response.body() = "not found\n";
    }
    response.prepare_payload();
    if (request.method() == bhttp::verb::head) response.body().clear();
    stream.expires_after(kRequestTimeout);
    co_await bhttp::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  asio::any_io_executor executor_;
  const StatusPageSettings settings_;
  tcp::acceptor acceptor_;
  std::vector<std::unique_ptr<Poller>> pollers_;
  bool stopping_ = false;
  std::size_t running_ = 0;
  std::size_t sessions_ = 0;
  std::uint64_t accept_errors_ = 0;
  core::AsyncEvent done_;
};

}  // namespace

asio::awaitable<void> run_status_page(lifecycle::ServiceContext& ctx,
                                      const StatusPageSettings& settings) {
  const auto page = std::make_shared<StatusPage>(co_await asio::this_coro::executor, settings);
  co_await page->run(ctx);
}

}  // namespace trading_shared::services::tsctl

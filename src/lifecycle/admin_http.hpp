#pragma once
// Internal to ts_lifecycle: what the admin server's two sides share, and its HTTP side (the
// server thread, admin_http.cpp). The loop's side is in admin_server.cpp.

#include <trading_shared/core/metrics.hpp>
#include <trading_shared/lifecycle/admin_server.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace trading_shared::lifecycle {

/// What `/readyz` answers, built on the loop once per check interval.
struct Readiness {
  bool ready = false;
  std::string body;
};

/// Written by the loop, read by the server thread: nothing else crosses between them.
struct AdminServer::Shared {
  using Clock = std::chrono::steady_clock;
  explicit Shared(core::MetricsRegistry& r) : registry(&r) {}

  void beat(Clock::time_point now) noexcept {
    heartbeat_ns.store(now.time_since_epoch().count(), std::memory_order_release);
  }
  Clock::time_point heartbeat() const noexcept {
    return Clock::time_point(Clock::duration(heartbeat_ns.load(std::memory_order_acquire)));
  }
  void publish(std::shared_ptr<const Readiness> r) {
    const std::lock_guard lock(mutex);
    readiness.swap(r);
  }  // the old snapshot is freed outside the lock
  std::shared_ptr<const Readiness> snapshot() const {
    const std::lock_guard lock(mutex);
    return readiness;
  }

  core::MetricsRegistry* registry;
  std::atomic<Clock::rep> heartbeat_ns{0};
  mutable std::mutex mutex;  ///< guards `readiness` only (a pointer copy or swap)
  std::shared_ptr<const Readiness> readiness;
};

/// The HTTP side: an acceptor and its connections on an io_context run by a thread of its own.
class AdminServer::Server {
 public:
  /// Binds (throws core::ConfigError); the thread starts with `start()`.
  Server(const AdminOptions& options, std::shared_ptr<Shared> shared);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();
  std::uint16_t port() const noexcept { return port_; }
  const std::string& host() const noexcept { return host_; }
  void start();
  /// Stops the thread and joins it; idempotent.
  void stop();

  /// The answer to one request (status, content type, body): pure, for the HTTP side.
  struct Answer {
    unsigned status = 200;
    const char* content_type = "text/plain; charset=utf-8";
    std::string body;
    bool allow_header = false;  ///< 405: `Allow: GET, HEAD`
  };
  Answer answer(std::string_view method, std::string_view target);

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

  AdminOptions options_;
  std::shared_ptr<Shared> shared_;
  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::acceptor acceptor_{io_};
  std::string host_;
  std::uint16_t port_ = 0;
  std::size_t connections_ = 0;      ///< on the server thread only
  std::size_t metrics_size_ = 4096;  ///< last /metrics size, to reserve the next
  std::thread thread_;
  core::Counter* requests_metrics_;
  core::Counter* requests_healthz_;
  core::Counter* requests_readyz_;
  core::Counter* requests_other_;
  core::Counter* refused_;
  core::Counter* bad_requests_;
};

}  // namespace trading_shared::lifecycle

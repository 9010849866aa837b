#include "admin_wiring.hpp"

#include <boost/json.hpp>

#include "report_html.hpp"
#include "support/server_harness.hpp"
#include "tape_faults.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace trading_shared::e2e {

using namespace std::chrono_literals;

namespace {

/// A socket closed on every path.
class Socket {
 public:
  Socket() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  }
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

HttpResponse http_get(std::uint16_t port, std::string_view target,
                      std::chrono::milliseconds timeout) {
  Socket socket;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(socket.fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(socket.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // bounds connect() too
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string where = fmt::format("http://127.0.0.1:{}{}", port, target);
  if (::connect(socket.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    throw std::runtime_error(fmt::format("GET {}: connect: {}", where, std::strerror(errno)));
  }
  const std::string request = fmt::format(
      "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", target, port);
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n =
        ::send(socket.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw std::runtime_error(fmt::format("GET {}: send: {}", where, std::strerror(errno)));
    sent += static_cast<std::size_t>(n);
  }
  std::string answer;
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::recv(socket.fd(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw std::runtime_error(fmt::format("GET {}: receive: {}", where, std::strerror(errno)));
    }
    if (n == 0) break;
    answer.append(chunk, static_cast<std::size_t>(n));
    if (answer.size() > (64u << 20))
      throw std::runtime_error("GET " + where + ": answer over 64 MiB");
  }
  // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody" (Connection: close: the body runs to the end; a
  // chunked body is kept as it came, enough for a status and a look at the text).
  if (!answer.starts_with("HTTP/1.") || answer.size() < 12) {
    throw std::runtime_error(
        fmt::format("GET {}: not an HTTP answer ({} bytes)", where, answer.size()));
  }
  HttpResponse response;
  response.status = std::atoi(answer.substr(9, 3).c_str());
  const auto body = answer.find("\r\n\r\n");
  if (body != std::string::npos) response.body = answer.substr(body + 4);
  return response;
}

AdminEndpoints::AdminEndpoints() {
  for (const auto service : kAdminServices) {
    ports_.emplace(std::string(service), testing::free_loopback_port());
  }
}

std::uint16_t AdminEndpoints::port(std::string_view service) const {
  const auto it = ports_.find(service);
  if (it == ports_.end()) throw std::logic_error("no admin endpoint for " + std::string(service));
  return it->second;
}

std::string AdminEndpoints::address(std::string_view service) const {
  return fmt::format("127.0.0.1:{}", port(service));
}

void AdminEndpoints::add_flag(std::string_view service, std::vector<std::string>& args) const {
  args.push_back("--admin-listen");
  args.push_back(address(service));
}

std::vector<std::string> AdminEndpoints::status_page_args(std::uint16_t port) const {
  std::vector<std::string> args = {"status-page", "--listen", fmt::format("127.0.0.1:{}", port)};
  for (const auto service : kAdminServices) {
    args.push_back("--service");
    args.push_back(fmt::format("{}={}", service, address(service)));
  }
  return args;
}

std::vector<std::string> AdminEndpoints::not_answering() const {
  std::vector<std::string> waiting;
  for (const auto service : kAdminServices) {
    try {
      if (http_get(port(service), "/healthz", 2s).status == 200) continue;
    } catch (const std::runtime_error&) {
      // Not listening yet: still waiting (the caller's deadline bounds it).
    }
    waiting.emplace_back(service);
  }
  return waiting;
}

std::string AdminEndpoints::file_json(std::uint16_t status_port) const {
  boost::json::object file;
  for (const auto service : kAdminServices) file[service] = address(service);
  if (status_port != 0) file["status_page"] = fmt::format("127.0.0.1:{}", status_port);
  return boost::json::serialize(file) + "\n";
}

void AdminEndpoints::wait_until_answering(const std::function<void()>& alive) const {
  std::vector<std::string> waiting;
  const bool up = poll_until(
      [&] {
        alive();
        waiting = not_answering();
        return waiting.empty();
      },
      Clock::now() + 15s, 100ms);
  if (!up) {
    std::string names;
    for (const auto& name : waiting) names += (names.empty() ? "" : ", ") + name;
    throw std::runtime_error("--admin: no 200 from GET /healthz within 15 s: " + names);
  }
}

std::vector<AdminEndpoints::Metrics> AdminEndpoints::check_metrics(
    const std::string& run_dir) const {
  std::vector<Metrics> results;
  for (const auto service : kAdminServices) {
    Metrics result;
    result.service = service;
    try {
      const auto response = http_get(port(service), "/metrics", 5s);
      const bool typed = response.body.find("# TYPE ") != std::string::npos;
      if (response.status != 200 || !typed) {
        result.problem = fmt::format("--admin: GET /metrics of {}: status {}, {} bytes{}", service,
                                     response.status, response.body.size(),
                                     typed ? "" : " without a # TYPE line");
      } else {
        result.lines = std::count(response.body.begin(), response.body.end(), '\n');
        write_text_file(fmt::format("{}/{}.metrics.txt", run_dir, service), response.body);
      }
    } catch (const std::runtime_error& e) {
      result.problem = fmt::format("--admin: GET /metrics of {}: {}", service, e.what());
    }
    results.push_back(std::move(result));
  }
  return results;
}

void require_admin_flag(std::string_view service, const std::string& program,
                        const std::string& run_dir) {
  const auto help = program_help(program, run_dir, fmt::format("{}/{}.help.log", run_dir, service));
  if (!help_has_flag(help, "--admin-listen")) {
    throw std::runtime_error(fmt::format(
        "--admin: {} has no --admin-listen flag ({} --help does not list it)", service, program));
  }
}

void wait_for_status_page(std::uint16_t port, const std::function<void()>& alive) {
  std::string last;
  const bool serving = poll_until(
      [&] {
        alive();
        try {
          const auto response = http_get(port, "/", 2s);
          last = fmt::format("status {}", response.status);
          return response.status == 200;
        } catch (const std::runtime_error& e) {
          last = e.what();
          return false;
        }
      },
      Clock::now() + 15s, 100ms);
  if (!serving) {
    throw std::runtime_error(fmt::format(
        "--status-page: tsctl status-page did not answer GET / with 200 within 15 s (last: {})",
        last));
  }
}

}  // namespace trading_shared::e2e

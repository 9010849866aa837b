#pragma once
/// @file
/// ts-pipeline --admin / --admin-file / --status-page (docs/testing.md, admin endpoints): each
/// daemon (ts-receiver, ts-recorder, ts-executor) gets `--admin-listen 127.0.0.1:<free port>`;
/// once every endpoint answers GET /healthz with 200, ts-pipeline prints
/// `ADMIN <service> http://127.0.0.1:<port>` per service and writes {"ts-receiver":
/// "127.0.0.1:<port>", ...} to the admin file; --status-page also starts `tsctl status-page`
/// against them, prints `STATUS_PAGE http://127.0.0.1:<port>/` and adds "status_page". Before
/// the services stop, /metrics of each is read once (kept in the run directory).

#include "e2e_support.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::e2e {

struct HttpResponse {
  int status = 0;
  std::string body;
};

/// GET `target` from 127.0.0.1:`port` (HTTP/1.1, Connection: close), every step bounded by
/// `timeout`. Throws std::runtime_error when it cannot connect or the answer is not HTTP.
HttpResponse http_get(std::uint16_t port, std::string_view target,
                      std::chrono::milliseconds timeout);

/// Throws unless `program --help` (its output in `<run_dir>/<service>.help.log`) lists
/// --admin-listen.
void require_admin_flag(std::string_view service, const std::string& program,
                        const std::string& run_dir);
/// Polls until `tsctl status-page` on `port` answers GET / with 200, calling `alive` at each
/// step; throws after 15 s with the last answer or error.
void wait_for_status_page(std::uint16_t port, const std::function<void()>& alive);

/// The services that get an admin endpoint, in order of start.
inline constexpr std::string_view kAdminServices[] = {"ts-receiver", "ts-recorder", "ts-executor"};

/// The admin endpoints of one run.
class AdminEndpoints {
 public:
  /// Picks a free loopback port per service.
  AdminEndpoints();

  std::uint16_t port(std::string_view service) const;
  /// "127.0.0.1:<port>"
  std::string address(std::string_view service) const;
  /// `--admin-listen 127.0.0.1:<port>` appended to `args`.
  void add_flag(std::string_view service, std::vector<std::string>& args) const;
  /// The args of `tsctl status-page --listen 127.0.0.1:<port> --service NAME=ADDR ...`.
  std::vector<std::string> status_page_args(std::uint16_t port) const;

  /// The services whose GET /healthz does not answer 200 yet (empty: every one does).
  std::vector<std::string> not_answering() const;
  /// Polls until every service answers GET /healthz with 200, calling `alive` (which throws
  /// when a daemon died) at each step; throws after 15 s naming those that did not.
  void wait_until_answering(const std::function<void()>& alive) const;

  /// {"ts-receiver": "127.0.0.1:p", ..., "status_page": "127.0.0.1:q" when `status_port`}.
  std::string file_json(std::uint16_t status_port) const;

  /// GET /metrics of every service: 200 with a `# TYPE` line, else `problem` says what came;
  /// the text is kept as `<run_dir>/<service>.metrics.txt`.
  struct Metrics {
    std::string service;
    std::int64_t lines = 0;
    std::string problem;  ///< "" when fine
  };
  std::vector<Metrics> check_metrics(const std::string& run_dir) const;

 private:
  std::map<std::string, std::uint16_t, std::less<>> ports_;
};

}  // namespace trading_shared::e2e

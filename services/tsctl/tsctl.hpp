#pragma once
/// @file
/// `tsctl`: the operator's command-line tool (docs/services.md): `migrate`, `status`,
/// `submit-order`, `load-orders`. One run_once task per invocation.

#include <trading_shared/core/config.hpp>
#include <trading_shared/lifecycle/service.hpp>
#include <trading_shared/pg/config.hpp>
#include <trading_shared/redis/config.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::services::tsctl {

enum class Command : std::uint8_t {
  migrate,
  status,
  submit_order,
  load_orders,
  migrate_streams,
  status_page,
  acl
};

std::string_view to_string(Command command) noexcept;

/// One order request, as the fields of `orders:requests` (common/keys.hpp).
struct OrderSettings {
  std::string symbol;
  std::string side;
  std::string type;
  std::string qty;
  std::string limit_price;
  std::string client_order_id;  ///< empty: a fresh "cli-<unix ms>-<pid>-<n>".
};

struct LoadSettings {
  double rate = 100.0;  ///< orders per second, on average.
  std::uint64_t count = 100;
  std::uint64_t seed = 1;
  std::uint64_t reject_every = 0;  ///< every K-th order is invalid on purpose; 0: none.
};

/// `status-page`: the live status page of the services' admin endpoints (docs/operations.md).
struct StatusPageSettings {
  /// HOST:PORT the page is served on (port 0: a free one, printed as `STATUS_PAGE <url>`).
  std::string listen = "127.0.0.1:8090";
  /// NAME=HOST:PORT of each service's admin endpoint.
  std::vector<std::string> services;
  /// How often each service is polled (and the page refreshes).
  std::chrono::milliseconds refresh{1000};
  /// Bound of each request to a service (/metrics, /readyz): no answer within it = down.
  std::chrono::milliseconds poll_timeout{1000};
  /// Rates and latency percentiles are over this window (at least two polls).
  std::chrono::milliseconds window{10000};
};

/// A polled service: its name and the HOST:PORT of its admin endpoint.
struct ServiceTarget {
  std::string name;
  std::string address;
};
/// Parses `NAME=HOST:PORT` items. @throws core::ConfigError (one line) on a bad or repeated one.
std::vector<ServiceTarget> parse_service_targets(const std::vector<std::string>& specs);

struct ListenAddress {
  std::string host;  ///< an IP address (IPv6 without brackets)
  std::uint16_t port = 0;
};
/// Parses `HOST:PORT` or `[V6]:PORT` with a numeric address. @throws core::ConfigError.
ListenAddress parse_listen(std::string_view text);

/// argv with every `flag VALUE` / `flag=VALUE` after the first joined into the first one's value
/// (comma-separated): a flag given several times adds up instead of keeping its last value.
std::vector<std::string> join_repeated_flag(int argc, char** argv, std::string_view flag);

/// `acl`: the services' Redis ACL users (acl.cpp, acl_rules.hpp).
struct AclSettings {
  /// A file per user, named after it (`ts_recorder`), holding its password (never argv).
  std::string password_dir;
  /// Users are `<prefix><service>`: ts_receiver, ts_recorder, ts_executor, ts_janitor.
  std::string user_prefix = "ts_";
  /// Send the ACL SETUSER commands through --redis-url (else: print them).
  bool apply = false;
  /// What is printed: `commands` (ACL SETUSER ...) or `aclfile` (user ... lines).
  std::string format = "commands";
};

/// `migrate --roles`: the services' PostgreSQL roles (roles.cpp).
struct RoleSettings {
  /// Create (or update) the roles and their grants after the migrations.
  bool create = false;
  /// Roles are `<prefix><service>`: ts_recorder, ts_executor, ts_janitor, ts_status.
  std::string prefix = "ts_";
  /// A file per role, named after it, holding its password (set at every migrate: rotation);
  /// empty, or no file for a role: the role gets no password (certificate, peer or trust
  /// authentication).
  std::string password_dir;
};

struct Settings {
  AclSettings acl;
  RoleSettings roles;
  pg::PostgresConfig postgres;
  redis::RedisConfig redis;
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  bool json = false;
  OrderSettings order;
  LoadSettings load;
  std::string summary_file;
  /// migrate-streams: keep the streams of the first layout after copying them.
  bool keep = false;
  /// Overall deadline of the command; zero: automatic (60 s, plus count / rate for
  /// load-orders).
  std::chrono::milliseconds deadline{0};
  StatusPageSettings status_page;
};

/// What load-orders did, for its summary file (written by main, also after a failure).
struct LoadReport {
  std::uint64_t submitted = 0;
  std::uint64_t invalid_sent = 0;
  /// Batches sent again after a transient failure (after an unknown outcome some requests
  /// of a retried batch may have been added twice; ts-executor is idempotent by id).
  std::uint64_t retries = 0;
  std::string first_id;
  std::string last_id;
  std::string first_stream_id;
  std::string last_stream_id;
};

/// Binds every setting of every sub-command (postgres, redis, and the sub-commands' own).
void add_settings(core::ConfigLoader& loader, Settings& settings);
/// A password from a file of one line (trailing newlines dropped): `tsctl acl`'s users and
/// `migrate --roles-create`'s roles. @throws std::runtime_error naming the file (never its
/// content) when it cannot be read or is empty.
std::string read_password_file(const std::string& path);

/// The sub-command named by the positional arguments.
/// @throws core::ConfigError (one line) when it is missing, unknown or not alone.
Command parse_command(const std::vector<std::string>& positional);

/// Checks the settings `command` uses, the clients it opens included, and normalises them
/// (symbols upper-cased). @throws core::ConfigError (one line).
void validate(Command command, Settings& settings);

/// The run_once options of `command` (name, deadline).
lifecycle::ServiceOptions service_options(Command command, const Settings& settings);

boost::asio::awaitable<void> run_migrate(lifecycle::ServiceContext& ctx, const Settings& settings);
boost::asio::awaitable<void> run_status(lifecycle::ServiceContext& ctx, const Settings& settings);
/// Prints (or with --apply sends) ACL SETUSER for every service's Redis user.
boost::asio::awaitable<void> run_acl(lifecycle::ServiceContext& ctx, const Settings& settings);
/// Moves what the streams of the first layout (md:trades:<SYMBOL>) still hold for the recorder
/// into the trade streams of their buckets, then deletes them (unless --keep).
boost::asio::awaitable<void> run_migrate_streams(lifecycle::ServiceContext& ctx,
                                                 const Settings& settings);
boost::asio::awaitable<void> run_submit_order(lifecycle::ServiceContext& ctx,
                                              const Settings& settings);
boost::asio::awaitable<void> run_load_orders(lifecycle::ServiceContext& ctx,
                                             const Settings& settings, LoadReport& report);

/// Serves the status page until stopped (a signal, or --deadline when set).
boost::asio::awaitable<void> run_status_page(lifecycle::ServiceContext& ctx,
                                             const StatusPageSettings& settings);

/// Writes load-orders' summary file; logs (and returns false) when it cannot.
bool write_load_summary(const std::string& path, const LoadReport& report);

}  // namespace trading_shared::services::tsctl

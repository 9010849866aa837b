// tsctl's settings and their validation: every bad input is a core::ConfigError (exit 2,
// one line) found before anything is connected.
#include <boost/asio/ip/address.hpp>

#include "common/settings.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

namespace trading_shared::services::tsctl {

namespace {

constexpr std::array kCommands{
    std::pair{std::string_view("migrate"), Command::migrate},
    std::pair{std::string_view("status"), Command::status},
    std::pair{std::string_view("submit-order"), Command::submit_order},
    std::pair{std::string_view("load-orders"), Command::load_orders},
    std::pair{std::string_view("migrate-streams"), Command::migrate_streams},
    std::pair{std::string_view("status-page"), Command::status_page},
    std::pair{std::string_view("acl"), Command::acl},
};

constexpr std::size_t kMaxDecimal = 32;
constexpr std::size_t kMaxClientOrderId = 64;
constexpr double kMinRate = 0.001;
constexpr double kMaxRate = 1e6;
constexpr std::uint64_t kMaxCount = 100'000'000;
constexpr std::chrono::milliseconds kMinRefresh{100};
constexpr std::chrono::milliseconds kMaxPollTimeout{5000};

/// A port number 0..65535 in decimal, or nullopt.
std::optional<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > 65535) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

/// A positive decimal number as the exchange writes it: digits, at most one '.', no sign,
/// no exponent. Kept as text: the order carries exactly what the operator typed.
void check_positive_decimal(std::string_view flag, std::string_view text) {
  std::size_t digits = 0;
  std::size_t dots = 0;
  bool nonzero = false;
  for (const char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
      ++digits;
      nonzero = nonzero || c != '0';
    } else if (c == '.') {
      ++dots;
    } else {
      digits = 0;
      break;
    }
  }
  if (text.empty() || text.size() > kMaxDecimal || digits == 0 || dots > 1) {
    throw core::ConfigError(fmt::format(
        "invalid {} \"{}\": expected a positive decimal number such as 0.5", flag, text));
  }
  if (!nonzero) {
    throw core::ConfigError(fmt::format("invalid {} \"{}\": must be greater than 0", flag, text));
  }
}

/// A user / role name prefix: 1-20 lower-case letters, digits or '_', a letter first (it is
/// spliced into SQL identifiers and ACL rules).
void check_identifier_prefix(std::string_view prefix, std::string_view flag) {
  const bool ok = !prefix.empty() && prefix.size() <= 20 &&
                  std::islower(static_cast<unsigned char>(prefix[0])) &&
                  std::all_of(prefix.begin(), prefix.end(), [](char c) {
                    return std::islower(static_cast<unsigned char>(c)) ||
                           std::isdigit(static_cast<unsigned char>(c)) || c == '_';
                  });
  if (!ok) {
    throw core::ConfigError(fmt::format(
        "invalid {} \"{}\": 1-20 lower-case letters, digits or '_', a letter first", flag, prefix));
  }
}

void check_client_order_id(std::string_view id) {
  const bool ok = !id.empty() && id.size() <= kMaxClientOrderId &&
                  std::all_of(id.begin(), id.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' ||
                           c == '_' || c == '.' || c == ':';
                  });
  if (!ok) {
    throw core::ConfigError(fmt::format(
        "invalid --client-order-id \"{}\": expected 1 to {} letters, digits, '-', '_', '.', ':'",
        id, kMaxClientOrderId));
  }
}

}  // namespace

ListenAddress parse_listen(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return core::ConfigError(fmt::format(
        "invalid address \"{}\": {} (expected HOST:PORT, e.g. 127.0.0.1:8090)", text, why));
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) throw bad("no port");
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    throw bad("an IPv6 address goes in brackets");
  }
  const std::optional<std::uint16_t> port = parse_port(text.substr(colon + 1));
  if (!port) throw bad("the port is not a number from 0 to 65535");
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(std::string(host), ec);
  if (host.empty() || ec) throw bad("the host is not a numeric IP address");
  return {std::string(host), *port};
}

std::vector<ServiceTarget> parse_service_targets(const std::vector<std::string>& specs) {
  std::vector<ServiceTarget> targets;
  std::set<std::string, std::less<>> names;
  for (const std::string& spec : specs) {
    const std::size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw core::ConfigError(
          fmt::format("invalid --service \"{}\": expected NAME=HOST:PORT", spec));
    }
    ServiceTarget target{spec.substr(0, eq), spec.substr(eq + 1)};
    const ListenAddress address = parse_listen(target.address);
    if (address.port == 0) {
      throw core::ConfigError(fmt::format("invalid --service \"{}\": port 0", spec));
    }
    if (!names.insert(target.name).second) {
      throw core::ConfigError(fmt::format("--service \"{}\" given twice", target.name));
    }
    targets.push_back(std::move(target));
  }
  return targets;
}

std::vector<std::string> join_repeated_flag(int argc, char** argv, std::string_view flag) {
  std::vector<std::string> args;
  std::optional<std::size_t> first;  // index in args of the first value
  const std::string prefix = std::string(flag) + "=";
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    std::optional<std::string_view> value;
    bool separate = false;
    if (i > 0 && arg == flag && i + 1 < argc) {
      value = argv[i + 1];
      separate = true;
    } else if (i > 0 && arg.substr(0, prefix.size()) == prefix) {
      value = arg.substr(prefix.size());
    }
    if (!value) {
      args.emplace_back(arg);
      continue;
    }
    if (separate) ++i;
    if (first) {
      args[*first] += ',';
      args[*first] += *value;
      continue;
    }
    args.emplace_back(flag);
    args.emplace_back(*value);
    first = args.size() - 1;
  }
  return args;
}

std::string_view to_string(Command command) noexcept {
  for (const auto& [name, value] : kCommands) {
    if (value == command) return name;
  }
  return "?";
}

void add_settings(core::ConfigLoader& loader, Settings& settings) {
  add_postgres_settings(loader, settings.postgres);
  add_redis_settings(loader, settings.redis);
  loader
      .add(settings.deadline,
           {"deadline",
            "overall deadline of the command (0: 60 s, plus count / rate for load-orders; "
            "status-page: none, it serves until SIGINT/SIGTERM)"})
      .add(settings.symbols,
           {"symbols",
            "status (their trade streams; empty: every trade stream), load-orders: "
            "comma-separated symbols"})
      .add(settings.keep,
           {"keep", "migrate-streams: keep the streams of the first layout after the copy"})
      .add(settings.json, {"json", "status: print one JSON object instead of tables"})
      .add(settings.acl.password_dir,
           {"acl.password_dir",
            "acl: directory holding one file per user, named after it (ts_recorder, ...), with "
            "its password (empty: print the template, placeholders for the hashes)"})
      .add(settings.acl.format,
           {"acl.format",
            "acl: print ACL SETUSER commands (commands) or the lines of an aclfile (aclfile)"})
      .add(settings.acl.user_prefix,
           {"acl.user_prefix", "acl: the users are <prefix>receiver, <prefix>recorder, ..."})
      .add(settings.acl.apply,
           {"apply", "acl: send the ACL SETUSER commands through --redis-url (false: print)"})
      .add(settings.roles.create,
           {"roles.create",
            "migrate: also create (or update) the services' PostgreSQL roles and their grants "
            "(needs CREATEROLE; run as the schema's owner, not a superuser)"})
      .add(settings.roles.prefix,
           {"roles.prefix",
            "migrate --roles: the roles are <prefix>recorder, <prefix>executor, ..."})
      .add(settings.roles.password_dir,
           {"roles.password_dir",
            "migrate --roles: directory with one file per role, named after it, holding its "
            "password (no file: no password)"})
      .add(settings.order.symbol, {"symbol", "submit-order: the symbol, e.g. BTCUSDT"})
      .add(settings.order.side, {"side", "submit-order: buy or sell"})
      .add(settings.order.type, {"type", "submit-order: market or limit"})
      .add(settings.order.qty, {"qty", "submit-order: quantity, a positive decimal"})
      .add(settings.order.limit_price,
           {"limit_price", "submit-order: limit price (limit orders only), a positive decimal"})
      .add(settings.order.client_order_id,
           {"client_order_id", "submit-order: the order's id (default: cli-<unix ms>-<pid>-<n>)"})
      .add(settings.load.rate, {"rate", "load-orders: orders per second, on average"})
      .add(settings.load.count, {"count", "load-orders: number of orders"})
      .add(settings.load.seed, {"seed", "load-orders: seed of the order mix (ids load-<seed>-<n>)"})
      .add(settings.load.reject_every,
           {"reject_every", "load-orders: every K-th order is invalid on purpose (0: none)"})
      .add(settings.summary_file, {"summary_file", "load-orders: write a JSON summary here"})
      .add(settings.status_page.listen,
           {"listen", "status-page: HOST:PORT to serve the page on (port 0: a free one)"})
      .add(settings.status_page.services,
           {"service",
            "status-page: NAME=HOST:PORT of a service's admin endpoint (comma-separated, or the "
            "flag repeated)"})
      .add(settings.status_page.refresh,
           {"refresh", "status-page: how often services are polled and the page refreshes"})
      .add(settings.status_page.poll_timeout,
           {"poll_timeout", "status-page: bound of each request to a service (no answer: down)"})
      .add(settings.status_page.window,
           {"window", "status-page: rates and latency percentiles are over this window"});
}

Command parse_command(const std::vector<std::string>& positional) {
  std::string names;
  for (const auto& [name, value] : kCommands) {
    names += names.empty() ? "" : ", ";
    names += name;
  }
  if (positional.empty()) {
    throw core::ConfigError(fmt::format("missing command (expected one of {})", names));
  }
  if (positional.size() > 1) {
    throw core::ConfigError(fmt::format("unexpected argument \"{}\" after the command \"{}\"",
                                        positional[1], positional[0]));
  }
  for (const auto& [name, value] : kCommands) {
    if (positional[0] == name) return value;
  }
  throw core::ConfigError(
      fmt::format("unknown command \"{}\" (expected one of {})", positional[0], names));
}

void validate(Command command, Settings& settings) {
  if (settings.deadline < std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--deadline must not be negative");
  }
  // Exactly the clients the command opens are checked: submit-order and load-orders need no
  // PostgreSQL.
  switch (command) {
    case Command::migrate:
      check_postgres_settings(settings.postgres);
      check_identifier_prefix(settings.roles.prefix, "--roles-prefix");
      // A mistyped directory would clear every role's password (no file: PASSWORD NULL).
      if (!settings.roles.password_dir.empty() &&
          !std::filesystem::is_directory(settings.roles.password_dir)) {
        throw core::ConfigError(
            fmt::format("--roles-password-dir {}: not a directory", settings.roles.password_dir));
      }
      break;
    case Command::acl:
      if (settings.acl.apply && settings.acl.password_dir.empty()) {
        throw core::ConfigError(
            "acl --apply needs --acl-password-dir (one password file per user)");
      }
      if (settings.acl.format != "commands" && settings.acl.format != "aclfile") {
        throw core::ConfigError(fmt::format(
            "invalid --acl-format \"{}\": expected commands or aclfile", settings.acl.format));
      }
      check_identifier_prefix(settings.acl.user_prefix, "--acl-user-prefix");
      if (settings.acl.apply) check_redis_settings(settings.redis);
      break;
    case Command::migrate_streams:
      check_redis_settings(settings.redis);
      break;
    case Command::status:
      // No symbols: every trade stream.
      if (!settings.symbols.empty()) check_symbols(settings.symbols);
      check_postgres_settings(settings.postgres);
      check_redis_settings(settings.redis);
      break;
    case Command::submit_order: {
      OrderSettings& order = settings.order;
      if (order.symbol.empty()) throw core::ConfigError("submit-order needs --symbol");
      check_symbol(order.symbol, "--symbol");
      if (order.side != "buy" && order.side != "sell") {
        throw core::ConfigError(
            fmt::format("invalid --side \"{}\": expected buy or sell", order.side));
      }
      if (order.type != "market" && order.type != "limit") {
        throw core::ConfigError(
            fmt::format("invalid --type \"{}\": expected market or limit", order.type));
      }
      if (order.qty.empty()) throw core::ConfigError("submit-order needs --qty");
      check_positive_decimal("--qty", order.qty);
      if (order.type == "limit") {
        if (order.limit_price.empty()) {
          throw core::ConfigError("a limit order needs --limit-price");
        }
        check_positive_decimal("--limit-price", order.limit_price);
      } else if (!order.limit_price.empty()) {
        throw core::ConfigError("--limit-price is only for --type limit");
      }
      if (!order.client_order_id.empty()) check_client_order_id(order.client_order_id);
      check_redis_settings(settings.redis);
      break;
    }
    case Command::status_page: {
      const StatusPageSettings& page = settings.status_page;
      if (settings.deadline != std::chrono::milliseconds::zero()) {
        throw core::ConfigError(
            "--deadline does not apply to status-page (it serves until "
            "SIGINT/SIGTERM)");
      }
      (void)parse_listen(page.listen);
      if (page.services.empty()) {
        throw core::ConfigError("status-page needs --service NAME=HOST:PORT (at least one)");
      }
      (void)parse_service_targets(page.services);
      if (page.refresh < kMinRefresh) {
        throw core::ConfigError(fmt::format("invalid --refresh {} ms: at least {} ms",
                                            page.refresh.count(), kMinRefresh.count()));
      }
      // A stop waits for the request in flight: within the stop budget (10 s).
      if (page.poll_timeout <= std::chrono::milliseconds::zero() ||
          page.poll_timeout > kMaxPollTimeout) {
        throw core::ConfigError(fmt::format("invalid --poll-timeout {} ms: 1 ms to {} ms",
                                            page.poll_timeout.count(), kMaxPollTimeout.count()));
      }
      if (page.window < page.refresh) {
        throw core::ConfigError("--window must be at least --refresh");
      }
      break;
    }
    case Command::load_orders:
      check_symbols(settings.symbols);
      if (!(settings.load.rate >= kMinRate) || settings.load.rate > kMaxRate) {
        throw core::ConfigError(
            fmt::format("invalid --rate {}: expected {} to {} orders per second",
                        settings.load.rate, kMinRate, kMaxRate));
      }
      if (settings.load.count == 0 || settings.load.count > kMaxCount) {
        throw core::ConfigError(
            fmt::format("invalid --count {}: expected 1 to {}", settings.load.count, kMaxCount));
      }
      check_redis_settings(settings.redis);
      break;
  }
  (void)service_options(command, settings);  // the stop budget adds up (F54)
}

lifecycle::ServiceOptions service_options(Command command, const Settings& settings) {
  // The clients the command opens, for the stop budget (F54).
  std::vector<lifecycle::CloseBudget> closes;
  if (command == Command::migrate || command == Command::status) {
    closes.push_back({"postgres", close_bound(settings.postgres)});
  }
  if (command != Command::migrate && command != Command::status_page &&
      (command != Command::acl || settings.acl.apply)) {
    closes.push_back({"redis", close_bound(settings.redis)});
  }
  // status-page: a stop waits for the polls in flight (each within --poll-timeout) and the
  // page requests in flight (2 s); the body returns by itself within this drain budget.
  const std::chrono::milliseconds drain =
      command == Command::status_page
          ? std::max(settings.status_page.poll_timeout, std::chrono::milliseconds(2000)) +
                std::chrono::milliseconds(1000)
          : std::chrono::milliseconds::zero();
  lifecycle::ServiceOptions options =
      services::service_options("tsctl " + std::string(to_string(command)), drain,
                                lifecycle::ServiceOptions{}.shutdown_timeout, std::move(closes),
                                "the clients' close timeouts");
  options.deadline = settings.deadline;
  // The status page serves until stopped (run_daemon): no deadline.
  if (options.deadline == std::chrono::milliseconds::zero() && command != Command::status_page) {
    options.deadline = std::chrono::seconds(60);
    if (command == Command::load_orders) {
      const double seconds = static_cast<double>(settings.load.count) / settings.load.rate;
      options.deadline +=
          std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000)));
    }
  }
  return options;
}

}  // namespace trading_shared::services::tsctl

// tsctl's settings and their validation: every bad input is a core::ConfigError (exit 2,
// one line) found before anything is connected.
#include "common/settings.hpp"
#include "tsctl/tsctl.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>

namespace trading_shared::services::tsctl {

namespace {

constexpr std::array kCommands{
    std::pair{std::string_view("migrate"), Command::migrate},
    std::pair{std::string_view("status"), Command::status},
    std::pair{std::string_view("submit-order"), Command::submit_order},
    std::pair{std::string_view("load-orders"), Command::load_orders},
    std::pair{std::string_view("migrate-streams"), Command::migrate_streams},
};

constexpr std::size_t kMaxDecimal = 32;
constexpr std::size_t kMaxClientOrderId = 64;
constexpr double kMinRate = 0.001;
constexpr double kMaxRate = 1e6;
constexpr std::uint64_t kMaxCount = 100'000'000;

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
            "overall deadline of the command (0: 60 s, plus count / rate for load-orders)"})
      .add(settings.symbols,
           {"symbols",
            "status (their trade streams; empty: every trade stream), load-orders: "
            "comma-separated symbols"})
      .add(settings.keep,
           {"keep", "migrate-streams: keep the streams of the first layout after the copy"})
      .add(settings.json, {"json", "status: print one JSON object instead of tables"})
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
      .add(settings.summary_file, {"summary_file", "load-orders: write a JSON summary here"});
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
  if (command != Command::migrate) closes.push_back({"redis", close_bound(settings.redis)});
  lifecycle::ServiceOptions options = services::service_options(
      "tsctl " + std::string(to_string(command)), std::chrono::milliseconds::zero(),
      lifecycle::ServiceOptions{}.shutdown_timeout, std::move(closes),
      "the clients' close timeouts");
  options.deadline = settings.deadline;
  if (options.deadline == std::chrono::milliseconds::zero()) {
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

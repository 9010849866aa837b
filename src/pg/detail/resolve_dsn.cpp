// resolve_dsn (src/pg/detail/connection.hpp): a DSN parsed by libpq, its hosts resolved with
// Asio (libpq would block the loop in getaddrinfo).
#include <trading_shared/core/error.hpp>
#include <trading_shared/core/timeout.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "detail/connection.hpp"
#include "detail/dsn.hpp"

#include <algorithm>
#include <cctype>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::pg::detail {
namespace asio = boost::asio;

namespace {

/// libpq's DSN parse message with every quoted token withheld: libpq quotes the offending
/// text (a token after the password, a whole URI, a bad percent-encoding in the password), and
/// no part of a DSN may reach an error or a log line (F50). Single punctuation ("=", "]")
/// says what was expected and stays.
std::string parse_message_without_tokens(const char* message) {
  const std::string text = trim_message(message);
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '"') {
      out += text[i];
      continue;
    }
    const auto end = text.find('"', i + 1);
    if (end == std::string::npos) {
      out += "\"...\"";
      break;
    }
    const std::string_view token(text.data() + i + 1, end - i - 1);
    const bool punctuation =
        token.size() == 1 && std::ispunct(static_cast<unsigned char>(token[0])) != 0;
    out += punctuation ? "\"" + std::string(token) + "\"" : std::string("\"...\"");
    i = end;
  }
  return out;
}

std::vector<std::string> split_list(const std::string& value) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = value.find(',', start);
    out.push_back(
        value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

asio::awaitable<ConnectParams> resolve_dsn(const std::string& dsn,
                                           const std::string& application_name,
                                           std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> options(PQconninfoParse(dsn.c_str(), &err));
  if (!options) {
    std::string message = parse_message_without_tokens(err);
    if (err != nullptr) PQfreemem(err);
    throw Error(make_error_code(errc::invalid_argument), "invalid PostgreSQL DSN: " + message,
                RequestState::not_sent);
  }
  ConnectParams params;
  params.description = describe_dsn(dsn);
  std::string host, hostaddr, port, dbname, user;
  bool has_app_name = false;
  for (auto* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view key = o->keyword;
    if (key == "host") {
      host = o->val;
      continue;  // per target, after resolution
    }
    if (key == "hostaddr") {
      hostaddr = o->val;
      continue;
    }
    if (key == "port") {
      port = o->val;
      continue;
    }
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
    if (key == "application_name") has_app_name = true;
    params.keywords.emplace_back(o->keyword);
    params.values.emplace_back(o->val);
  }
  if (!has_app_name && !application_name.empty()) {
    params.keywords.emplace_back("application_name");
    params.values.push_back(application_name);
  }
  // libpq's lists: hosts (and/or addresses) separated by commas, one port for all or one per
  // host (F51: every address is tried in turn).
  const std::vector<std::string> hosts = split_list(host);
  const std::vector<std::string> addresses = split_list(hostaddr);
  const std::vector<std::string> ports = split_list(port);
  const std::size_t count = std::max(hosts.size(), addresses.size());
  if (!host.empty() && !hostaddr.empty() && hosts.size() != addresses.size()) {
    throw Error(make_error_code(errc::invalid_argument),
                "invalid PostgreSQL DSN: " + std::to_string(hosts.size()) + " host(s) but " +
                    std::to_string(addresses.size()) + " hostaddr(s): " + params.description,
                RequestState::not_sent);
  }
  if (ports.size() != 1 && ports.size() != count) {
    throw Error(make_error_code(errc::invalid_argument),
                "invalid PostgreSQL DSN: " + std::to_string(ports.size()) + " ports for " +
                    std::to_string(count) + " host(s): " + params.description,
                RequestState::not_sent);
  }
  const std::string tail = "/" + dbname + (user.empty() ? "" : " as " + user);
  auto target_of = [&](std::string name, std::string address, const std::string& target_port) {
    ConnectTarget t;
    t.description =
        (name.empty() ? address : name) +
        (!name.empty() && !address.empty() && address != name ? " (" + address + ")" : "") + ":" +
        target_port + tail;
    t.host = std::move(name);
    t.hostaddr = std::move(address);
    t.port = target_port;
    return t;
  };
  std::exception_ptr resolve_failure;
  for (std::size_t i = 0; i < count; ++i) {
    std::string name = host.empty() ? std::string() : hosts[i];
    std::string address = hostaddr.empty() ? std::string() : addresses[i];
    std::string target_port = ports.size() == 1 ? ports[0] : ports[i];
    if (target_port.empty()) target_port = "5432";
    if (!name.empty() && name.front() == '/') {
      params.targets.push_back(target_of(std::move(name), {}, target_port));  // a Unix socket
      continue;
    }
    if (!address.empty()) {
      params.targets.push_back(target_of(std::move(name), std::move(address), target_port));
      continue;
    }
    if (name.empty()) name = "localhost";
    try {
      asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
      const auto left =
          std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                   std::chrono::milliseconds(1));
      auto results = co_await core::with_timeout(
          resolver.async_resolve(name, target_port, asio::use_awaitable), left,
          errc::connect_timeout, "resolving " + name, RequestState::not_sent);
      // Every address of the name (localhost: ::1 and 127.0.0.1), in the resolver's order.
      for (const auto& entry : results) {
        params.targets.push_back(
            target_of(name, entry.endpoint().address().to_string(), target_port));
      }
    } catch (...) {
      // A host that does not resolve does not stop the others.
      resolve_failure = std::current_exception();
    }
  }
  if (params.targets.empty()) {
    if (resolve_failure) std::rethrow_exception(resolve_failure);
    throw Error(make_error_code(errc::connect_failed), "cannot resolve " + params.description,
                RequestState::not_sent);
  }
  co_return params;
}

}  // namespace trading_shared::pg::detail

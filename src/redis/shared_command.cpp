// The commands that cannot run on the shared connection, whose replies are matched in FIFO
// order (detail::check_shared_command), and the transaction rules of a Request.

#include <trading_shared/redis/redis_client.hpp>

#include <string>
#include <string_view>

namespace trading_shared::redis::detail {

namespace {

/// Reads argument `index` of an encoded command (RESP array of bulk strings, as we encode).
std::string_view encoded_argument(std::string_view encoded, std::size_t& pos) {
  // "$L\r\n<L bytes>\r\n"
  if (pos >= encoded.size() || encoded[pos] != '$') return {};
  ++pos;
  std::size_t length = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    length = length * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;
  if (pos > encoded.size() || encoded.size() - pos < length) return {};
  const std::string_view arg = encoded.substr(pos, length);
  pos += length + 2;
  return arg;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'a' && a[i] <= 'z') ? static_cast<char>(a[i] - 'a' + 'A') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

}  // namespace

std::exception_ptr check_shared_command(std::string_view encoded, bool blocking_allowed,
                                        TransactionCommand* transaction) {
  auto refuse = [](const std::string& why) {
    return std::make_exception_ptr(Error(make_error_code(errc::invalid_argument), why));
  };
  // "*N\r\n"
  std::size_t pos = 1;
  std::size_t count = 0;
  while (pos < encoded.size() && encoded[pos] >= '0' && encoded[pos] <= '9') {
    count = count * 10 + static_cast<std::size_t>(encoded[pos++] - '0');
  }
  pos += 2;
  if (count == 0) {
    return refuse("Redis command without arguments (the server would not answer it)");
  }
  const std::string_view name = encoded_argument(encoded, pos);
  if (name.size() < 4 || name.size() > 12) return nullptr;  // every refused name is 4 to 12
  // Dispatch on the initial: a command compares its name only with the refused names of its
  // letter (HSET: HELLO; XADD: XREAD, XREADGROUP; GET, SET, DEL ...: nothing). Request::push
  // runs this for every command; it is on the receiver's hot path.
  const char initial =
      static_cast<char>(name[0] >= 'a' && name[0] <= 'z' ? name[0] - 'a' + 'A' : name[0]);
  const auto state_changing = [&](std::string_view denied) {
    return refuse("Redis " + std::string(denied) +
                  " changes what the connection answers or which database it uses; it cannot "
                  "run on a shared connection (use the URL for the database)");
  };
  const auto transaction_command = [&](std::string_view denied) {
    return refuse("Redis " + std::string(denied) +
                  " cannot run alone on a shared connection: other callers' commands would "
                  "join the transaction. Send MULTI ... EXEC (or DISCARD) as one Request to "
                  "pipeline(); WATCH is not supported");
  };
  const auto blocking = [&](std::string_view denied) -> std::exception_ptr {
    if (blocking_allowed) return nullptr;
    return refuse("Redis " + std::string(denied) +
                  " blocks; run it with blocking_command() on a dedicated connection");
  };
  switch (initial) {
    case 'A':
      if (iequals(name, "AUTH")) return state_changing("AUTH");
      return nullptr;
    case 'B': {
      static constexpr std::string_view kBlocking[] = {
          "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP"};
      for (const auto denied : kBlocking) {
        if (iequals(name, denied)) return blocking(denied);
      }
      return nullptr;
    }
    case 'C':
      if (iequals(name, "CLIENT") && count >= 2 &&
          iequals(encoded_argument(encoded, pos), "REPLY")) {
        return refuse("Redis CLIENT REPLY cannot run on a shared connection");
      }
      return nullptr;
    case 'D':
      if (!iequals(name, "DISCARD")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::end;
        return nullptr;
      }
      return transaction_command("DISCARD");
    case 'E':
      if (!iequals(name, "EXEC")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::end;
        return nullptr;
      }
      return transaction_command("EXEC");
    case 'H':
      if (iequals(name, "HELLO")) return state_changing("HELLO");
      return nullptr;
    case 'M':
      if (iequals(name, "MONITOR")) return state_changing("MONITOR");
      if (!iequals(name, "MULTI")) return nullptr;
      if (transaction != nullptr) {
        *transaction = TransactionCommand::multi;
        return nullptr;
      }
      return transaction_command("MULTI");
    case 'P':
      if (iequals(name, "PSUBSCRIBE")) return state_changing("PSUBSCRIBE");
      if (iequals(name, "PUNSUBSCRIBE")) return state_changing("PUNSUBSCRIBE");
      return nullptr;
    case 'Q':
      if (iequals(name, "QUIT")) return state_changing("QUIT");
      return nullptr;
    case 'R':
      if (iequals(name, "RESET")) return state_changing("RESET");
      return nullptr;
    case 'S': {
      static constexpr std::string_view kDenied[] = {"SUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
                                                     "SELECT"};
      for (const auto denied : kDenied) {
        if (iequals(name, denied)) return state_changing(denied);
      }
      return nullptr;
    }
    case 'U':
      if (iequals(name, "UNSUBSCRIBE")) return state_changing("UNSUBSCRIBE");
      if (iequals(name, "UNWATCH")) return transaction_command("UNWATCH");
      return nullptr;
    case 'W':
      if (iequals(name, "WATCH")) return transaction_command("WATCH");
      if (iequals(name, "WAIT")) return blocking("WAIT");
      if (iequals(name, "WAITAOF")) return blocking("WAITAOF");
      return nullptr;
    case 'X':
      if (blocking_allowed || (!iequals(name, "XREAD") && !iequals(name, "XREADGROUP"))) {
        return nullptr;
      }
      for (std::size_t i = 1; i < count; ++i) {
        if (iequals(encoded_argument(encoded, pos), "BLOCK")) {
          return refuse("Redis " + std::string(name) +
                        " with BLOCK blocks; use xreadgroup() with ReadGroupOptions::block or "
                        "blocking_command()");
        }
      }
      return nullptr;
    default:
      return nullptr;
  }
}

std::exception_ptr transaction_step(TransactionState& state, TransactionCommand command,
                                    std::size_t commands_before) {
  auto refuse = [](const char* why) {
    return std::make_exception_ptr(
        Error(make_error_code(errc::invalid_argument), std::string("Redis Request: ") + why));
  };
  if (state == TransactionState::closed) {
    return refuse(
        "nothing may follow the EXEC or DISCARD of a transaction in its request (a transaction "
        "is a request of its own)");
  }
  switch (command) {
    case TransactionCommand::none:
      return nullptr;
    case TransactionCommand::multi:
      if (state == TransactionState::open) return refuse("MULTI inside a transaction");
      if (commands_before != 0) {
        return refuse(
            "MULTI must be the first command of its request (a transaction is a "
            "request of its own)");
      }
      state = TransactionState::open;
      return nullptr;
    case TransactionCommand::end:
      if (state != TransactionState::open) {
        return refuse("EXEC or DISCARD without a MULTI first in the same request");
      }
      state = TransactionState::closed;
      return nullptr;
  }
  return nullptr;
}

}  // namespace trading_shared::redis::detail

// ts-feed-sim: the protocol. The client's control messages (SUBSCRIBE, UNSUBSCRIBE), replies and
// errors, and a connection's send queue. The parts of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

// ---- control messages ----

void FeedSimulator::Impl::handle_client_message(const std::shared_ptr<Connection>& c,
                                                std::string_view text) {
  log()->debug("connection #{}: received {}", c->id, text);
  boost::system::error_code ec;
  json::value doc = json::parse(text, ec);
  if (ec || !doc.is_object()) {
    bad_client_message(*c, ec ? "invalid JSON: " + ec.message() : "not a JSON object", text);
    reply_error(*c, 3, "Invalid JSON", json::value(nullptr));
    return;
  }
  const auto& request = doc.get_object();
  const json::value* id_field = request.if_contains("id");
  const json::value id = id_field != nullptr ? *id_field : json::value(nullptr);
  const json::value* method_field = request.if_contains("method");
  if (method_field == nullptr || !method_field->is_string()) {
    bad_client_message(*c, "no \"method\" string", text);
    reply_error(*c, 2, "Invalid request: \"method\" must be a string", id);
    return;
  }
  const std::string_view method = method_field->get_string();
  if (method == "SUBSCRIBE" || method == "UNSUBSCRIBE") {
    std::vector<std::size_t> indices;
    const std::string problem = resolve_streams(request.if_contains("params"), indices);
    if (!problem.empty()) {
      bad_client_message(*c, problem, text);
      reply_error(*c, 2, problem, id);
      return;
    }
    if (method == "SUBSCRIBE" && over_stream_limit(*c, indices, id)) return;
    reply(*c, "{\"result\":null,\"id\":" + json::serialize(id) + "}");
    if (method == "SUBSCRIBE") {
      subscribe(c, indices);
    } else {
      unsubscribe(c, indices);
    }
    return;
  }
  if (method == "LIST_SUBSCRIPTIONS") {
    std::string result = "{\"result\":[";
    bool first = true;
    for (std::size_t i = 0; i < symbols_.size(); ++i) {
      if (!c->subscribed[i]) continue;
      if (!first) result += ',';
      first = false;
      result += json_quote(symbols_[i].stream);
    }
    result += "],\"id\":" + json::serialize(id) + "}";
    reply(*c, std::move(result));
    return;
  }
  bad_client_message(*c, fmt::format("unknown method {}", method), text);
  reply_error(*c, 2, fmt::format("Unknown method {}", method), id);
}

/// Fills `indices` from `params` (an array of `<symbol>@trade`); returns a problem or "".
std::string FeedSimulator::Impl::resolve_streams(const json::value* params,
                                                 std::vector<std::size_t>& indices) const {
  if (params == nullptr || !params->is_array())
    return "Invalid request: \"params\" must be an array";
  for (const auto& item : params->get_array()) {
    if (!item.is_string()) return "Invalid request: stream names must be strings";
    const std::string_view stream = item.get_string();
    const auto at = stream.find('@');
    if (at == std::string_view::npos || stream.substr(at + 1) != "trade") {
      return fmt::format("Invalid request: unsupported stream {} (only <symbol>@trade)", stream);
    }
    std::string symbol(stream.substr(0, at));
    for (char& ch : symbol) {
      if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 'a' + 'A');
    }
    const auto it = std::find_if(symbols_.begin(), symbols_.end(),
                                 [&](const SymbolState& s) { return s.name == symbol; });
    if (it == symbols_.end()) {
      return fmt::format("Invalid request: unknown symbol {}", stream.substr(0, at));
    }
    indices.push_back(static_cast<std::size_t>(it - symbols_.begin()));
  }
  return {};
}

void FeedSimulator::Impl::subscribe(const std::shared_ptr<Connection>& c,
                                    const std::vector<std::size_t>& indices) {
  bool woke = false;
  for (const auto i : indices) {
    if (c->subscribed[i]) continue;
    c->subscribed[i] = true;
    auto& s = symbols_[i];
    if (std::find(s.subscribers.begin(), s.subscribers.end(), c) == s.subscribers.end()) {
      s.subscribers.push_back(c);
    }
    s.subscribed_once = true;
    if (s.active++ == 0) woke = true;
    log()->info("connection #{}: subscribed to {}", c->id, s.stream);
  }
  if (woke && generator_idle_) generator_wake_.notify_all();
}

void FeedSimulator::Impl::unsubscribe(const std::shared_ptr<Connection>& c,
                                      const std::vector<std::size_t>& indices) {
  for (const auto i : indices) {
    if (!c->subscribed[i]) continue;
    c->subscribed[i] = false;
    auto& s = symbols_[i];
    --s.active;
    std::erase(s.subscribers, c);
    log()->info("connection #{}: unsubscribed from {}", c->id, s.stream);
  }
}

void FeedSimulator::Impl::bad_client_message(Connection& c, std::string_view problem,
                                             std::string_view text) {
  ++bad_client_messages_;
  ++c.bad_messages;
  const auto shown = text.substr(0, 200);
  if (c.bad_messages <= kBadMessagesLogged) {
    log()->warn("connection #{}: bad client message ({}): {}{}", c.id, problem, shown,
                c.bad_messages == kBadMessagesLogged ? " (further ones at debug level)" : "");
  } else {
    log()->debug("connection #{}: bad client message ({}): {}", c.id, problem, shown);
  }
}

void FeedSimulator::Impl::reply_error(Connection& c, int code, std::string_view message,
                                      const json::value& id) {
  reply(c, fmt::format(R"({{"error":{{"code":{},"msg":{}}},"id":{}}})", code, json_quote(message),
                       json::serialize(id)));
}

void FeedSimulator::Impl::reply(Connection& c, std::string text) {
  auto owner = std::make_shared<const std::string>(std::move(text));
  const char* data = owner->data();
  const std::size_t size = owner->size();
  push(c, Outgoing{std::move(owner), data, size, MsgKind::control});
}

void FeedSimulator::Impl::push(Connection& c, Outgoing&& message) {
  switch (c.state) {
    case ConnState::open:
      break;
    case ConnState::stalled:
      if (message.kind == MsgKind::trade) ++dropped_for_stalled_;
      return;
    case ConnState::handshake:
    case ConnState::rest:
    case ConnState::closing:
    case ConnState::ended:
      return;
  }
  if (c.queue.size() >= config_.queue_limit) {
    ++slow_clients_closed_;
    log()->warn("connection #{}: slow client: {} messages waiting to be written; closing it", c.id,
                c.queue.size());
    end(c, fmt::format("slow client: write queue over {} messages", config_.queue_limit));
    return;
  }
  c.queue.push_back(std::move(message));
  c.wake.notify_all();
}

}  // namespace trading_shared::services::feed_sim

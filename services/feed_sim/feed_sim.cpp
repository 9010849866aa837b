// ts-feed-sim: configuration, and the simulator's lifecycle (start, shutdown, close), its
// tasks and summary. The parts of the simulator: feed_sim_impl.hpp.

#include "feed_sim/feed_sim_impl.hpp"

namespace trading_shared::services::feed_sim {

using namespace detail;  // the simulator's connection state, constants, aliases

// ---- configuration -------------------------------------------------------------------------

void add_feed_sim_settings(core::ConfigLoader& loader, FeedSimConfig& config) {
  loader
      .add(config.listen,
           {"listen", "address to listen on: host:port or [v6]:port; port 0 picks a free port"})
      .add(config.port_file, {"port_file", "write the bound port (decimal) to this file"})
      .add(config.symbols, {"symbols", "symbols served, comma-separated"})
      .add(config.seed, {"seed", "seed of the deterministic trade generator"})
      .add(config.rate, {"rate", "trades per second over all subscribed symbols"})
      .add(config.max_messages, {"max_messages", "total trades to generate; 0 = unlimited"})
      .add(config.queue_limit,
           {"queue_limit", "messages waiting per connection before it is closed as too slow"})
      .add(config.close_timeout,
           {"close_timeout", "on stop, time allowed for the close handshakes"})
      .add(config.summary_file,
           {"summary_file", "JSON summary, written at --max-messages and on exit"})
      .add(config.fault_connections,
           {"fault.connections",
            "fault switches apply to the first N WebSocket connections; 0 = all"})
      .add(config.fault_stall_after,
           {"fault.stall_after", "after N trades, stop reading and writing (-1 = off)"})
      .add(config.fault_drop_after,
           {"fault.drop_after", "after N trades, reset the TCP connection (-1 = off)"})
      .add(config.fault_malformed_every,
           {"fault.malformed_every", "every Nth message is garbage, N >= 2 (0 = off)"})
      .add(config.fault_oversized_after,
           {"fault.oversized_after", "after N trades, send one 2 MiB text frame (-1 = off)"})
      .add(config.fault_outlier_after,
           {"fault.outlier_after",
            "after N trades, send one extra trade with id --fault-outlier-id (-1 = off)"})
      .add(config.fault_outlier_id,
           {"fault.outlier_id", "the trade id of --fault-outlier-after (a bogus venue id)"});
  loader
      .add(config.tls_cert_file,
           {"tls.cert_file",
            "serve TLS (wss:// and https://) with this certificate chain (PEM); "
            "plaintext when empty"})
      .add(config.tls_key_file, {"tls.key_file", "private key (PEM) of --tls-cert-file"})
      .add(config.tls_ca_file,
           {"tls.ca_file", "require client certificates signed by these CAs (PEM; mutual TLS)"});
  add_rest_settings(loader, config);
  add_limits_settings(loader, config.limits);
}

ListenAddress parse_listen(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    throw core::ConfigError(fmt::format("invalid value \"{}\" for --listen: {}", text, why));
  };
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) bad("missing ']'");
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.starts_with(':')) bad("expected [host]:port");
    port = rest.substr(1);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) bad("expected host:port");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      bad("an IPv6 address must be in brackets, e.g. [::1]:9443");
    }
    port = text.substr(colon + 1);
  }
  if (host.empty()) bad("empty host (0.0.0.0 or [::] listens on every interface)");
  unsigned value = 0;
  const auto* end = port.data() + port.size();
  const auto [ptr, ec] = std::from_chars(port.data(), end, value);
  if (port.empty() || ec != std::errc{} || ptr != end || value > 65535) {
    bad("the port must be a number from 0 to 65535");
  }
  return ListenAddress{std::string(host), static_cast<std::uint16_t>(value)};
}

void check_config(FeedSimConfig& config) {
  parse_listen(config.listen);
  check_symbols(config.symbols);
  if (!std::isfinite(config.rate) || config.rate <= 0 || config.rate > 10'000'000) {
    throw core::ConfigError(
        fmt::format("invalid value {} for --rate: expected 0 < rate <= 10000000", config.rate));
  }
  if (config.queue_limit == 0) throw core::ConfigError("--queue-limit must be at least 1");
  if (config.close_timeout <= std::chrono::milliseconds::zero()) {
    throw core::ConfigError("--close-timeout must be positive");
  }
  if (config.fault_malformed_every == 1) {
    throw core::ConfigError(
        "--fault-malformed-every must be 0 (off) or at least 2: garbage comes in addition to "
        "the trades");
  }
  const auto check_after = [](std::int64_t value, std::string_view flag) {
    if (value < -1) {
      throw core::ConfigError(
          fmt::format("invalid value {} for {}: expected -1 (off) or a count", value, flag));
    }
  };
  check_after(config.fault_stall_after, "--fault-stall-after");
  check_after(config.fault_drop_after, "--fault-drop-after");
  check_after(config.fault_oversized_after, "--fault-oversized-after");
  check_after(config.fault_outlier_after, "--fault-outlier-after");
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    throw core::ConfigError("--tls-cert-file and --tls-key-file go together (TLS needs both)");
  }
  if (!config.tls_ca_file.empty() && config.tls_cert_file.empty()) {
    throw core::ConfigError("--tls-ca-file needs --tls-cert-file and --tls-key-file");
  }
  check_rest_config(config);
  check_limits(config.limits);
}

/// The server's TLS context (TLS 1.2 minimum) from --tls-cert-file / --tls-key-file (and
/// --tls-ca-file: client certificates required). Errors name the file, never its content.
void FeedSimulator::Impl::load_tls() {
  if (config_.tls_cert_file.empty()) return;
  tls_.emplace(asio::ssl::context::tls_server);
  auto& context = *tls_;
  const auto load = [](const char* flag, const std::string& path, auto&& action) {
    boost::system::error_code ec;
    action(ec);
    if (ec) {
      throw core::ConfigError(fmt::format("{} {}: cannot load: {}", flag, path, ec.message()));
    }
  };
  context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  load("--tls-cert-file", config_.tls_cert_file,
       [&](auto& ec) { context.use_certificate_chain_file(config_.tls_cert_file, ec); });
  load("--tls-key-file", config_.tls_key_file, [&](auto& ec) {
    context.use_private_key_file(config_.tls_key_file, asio::ssl::context::pem, ec);
  });
  if (!config_.tls_ca_file.empty()) {
    load("--tls-ca-file", config_.tls_ca_file,
         [&](auto& ec) { context.load_verify_file(config_.tls_ca_file, ec); });
    context.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
}

// ---- the simulator -------------------------------------------------------------------------

FeedSimulator::Impl::Impl(asio::any_io_executor executor, FeedSimConfig config)
    : executor_(std::move(executor)),
      config_(std::move(config)),
      acceptor_(executor_),
      generator_wake_(executor_),
      pacer_(config_.rate),
      connections_changed_(executor_),
      tasks_changed_(executor_) {
  check_config(config_);
  symbols_.reserve(config_.symbols.size());
  for (const auto& name : config_.symbols) {
    std::string stream;
    for (const char c : name) {
      stream.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
    }
    stream += "@trade";
    symbols_.push_back(SymbolState{
        name, std::move(stream), SymbolGenerator(name, config_.seed), {}, 0, false, 0, 0, 0, {}});
  }
  rest_ = std::make_unique<RestVenue>(executor_, config_, config_.symbols);
  faults_enabled_ = config_.fault_stall_after >= 0 || config_.fault_drop_after >= 0 ||
                    config_.fault_malformed_every > 0 || config_.fault_oversized_after >= 0 ||
                    config_.fault_outlier_after >= 0;
  if (config_.fault_oversized_after >= 0) {
    oversized_ = std::make_shared<const std::string>(kOversizedBytes, 'x');
  }
}

FeedSimulator::Impl::~Impl() {
  if (tasks_ > 0) {
    log()->error("FeedSimulator destroyed with {} coroutine(s) still running", tasks_);
  }
}

asio::awaitable<void> FeedSimulator::Impl::start() {
  if (started_) throw std::logic_error("FeedSimulator::start called twice");
  started_ = true;
  load_tls();
  const ListenAddress address = parse_listen(config_.listen);
  tcp::resolver resolver(executor_);
  boost::system::error_code ec;
  const auto results =
      co_await resolver.async_resolve(address.host, std::to_string(address.port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service,
                                      asio::redirect_error(asio::use_awaitable, ec));
  if (ec || results.empty()) {
    throw std::runtime_error(fmt::format("cannot resolve the listen address {}: {}", config_.listen,
                                         ec ? ec.message() : std::string("no address")));
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  const auto fail = [&](const char* what) {
    throw std::runtime_error(
        fmt::format("cannot listen on {}: {}: {}", describe(endpoint), what, ec.message()));
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) fail("open");
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) fail("SO_REUSEADDR");
  acceptor_.bind(endpoint, ec);
  if (ec) fail("bind");
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("listen");
  const tcp::endpoint bound = acceptor_.local_endpoint(ec);
  if (ec) fail("getsockname");
  port_ = bound.port();
  log()->info("listening on {}://{} ({} symbol(s), seed {}, {} trades/s, max {} trades{})",
              tls_ ? "wss" : "ws", describe(bound), symbols_.size(), config_.seed, config_.rate,
              config_.max_messages,
              faults_enabled_ ? fmt::format(", fault switches on for {}",
                                            config_.fault_connections == 0
                                                ? std::string("every connection")
                                                : fmt::format("the first {} ws connection(s)",
                                                              config_.fault_connections))
                              : std::string());
  if (!config_.port_file.empty()) {
    write_file_atomically(config_.port_file, fmt::format("{}\n", port_));
  }
  accepting_ = true;
  generating_ = true;
  spawn(accept_loop(), nullptr, "accept loop");
  spawn(generate_loop(), nullptr, "generator");
}

void FeedSimulator::Impl::stop_generating() {
  if (!generating_) return;
  generating_ = false;
  generator_wake_.notify_all();
  log()->info("generation stopped after {} trade(s)", total_);
}

asio::awaitable<void> FeedSimulator::Impl::shutdown() {
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  stopping_ = true;
  stop_generating();
  stop_accepting();
  rest_->stop();
  if (!shutdown_started_) {
    shutdown_started_ = true;
    if (!connections_.empty()) {
      log()->info("closing {} connection(s)", connections_.size());
    }
    for (const auto& c : connections_) {
      if (c->state == ConnState::open) {
        c->state = ConnState::closing;
        c->wake.notify_all();
      } else if (c->state != ConnState::closing) {  // handshake or stalled: no close frame
        end(*c, "server stopping");
      }
    }
  }
  const auto deadline = Clock::now() + config_.close_timeout;
  (void)co_await core::wait_until_shielded(connections_changed_, deadline,
                                           [this] { return connections_.empty(); });
  if (!connections_.empty()) {
    log()->warn("{} connection(s) did not finish the close handshake within {} ms: closing them",
                connections_.size(), config_.close_timeout.count());
    const auto left = connections_;  // end() does not erase, but be safe against it
    for (const auto& c : left) end(*c, "server stopping: close handshake timed out");
  }
  (void)co_await core::wait_until_shielded(connections_changed_, Clock::time_point::max(),
                                           [this] { return connections_.empty(); });
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
}

asio::awaitable<void> FeedSimulator::Impl::close() {
  if (closed_) co_return;
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await shutdown();
  (void)co_await core::wait_until_shielded(tasks_changed_, Clock::time_point::max(),
                                           [this] { return tasks_ == 0; });
  closed_ = true;
  log()->info("closed: {} trade(s) generated, {} sent, {} connection(s) served", total_,
              trades_sent_, accepted_);
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  if (!final_summary_written_) write_summary();
}

/// Without close(): stop everything at once; the coroutines finish by themselves.
void FeedSimulator::Impl::abort() {
  stopping_ = true;
  stop_generating();
  stop_accepting();
  rest_->stop();
  for (const auto& c : connections_) end(*c, "simulator destroyed");
}

Summary FeedSimulator::Impl::summary() const {
  Summary symbols;
  for (const auto& s : symbols_) {
    Summary one;
    one.add("count", s.count)
        .add("first_trade_id", s.first_id)
        .add("last_trade_id", s.last_id)
        .add("digest", std::string_view(s.digest.hex()));
    symbols.add(s.name, one);
  }
  Summary out;
  out.add("total", total_)
      .add("symbols", symbols)
      .add("connections", accepted_)
      .add("malformed_sent", malformed_sent_)
      .add("dropped_for_stalled", dropped_for_stalled_)
      .add("slow_clients_closed", slow_clients_closed_)
      .add("trades_sent", trades_sent_)
      .add("stalled_connections", stalled_connections_)
      .add("dropped_connections", dropped_connections_)
      .add("oversized_sent", oversized_sent_)
      .add("outliers_sent", outliers_sent_)
      .add("bad_client_messages", bad_client_messages_)
      .add("generation_skipped", pacer_.skipped())
      .add("max_messages_reached", config_.max_messages > 0 && total_ >= config_.max_messages);
  rest_->add_summary(out);
  limit_counts_.add_to(out);
  return out;
}

void FeedSimulator::Impl::write_summary() {
  if (stopping_) final_summary_written_ = true;
  if (config_.summary_file.empty()) return;
  summary().write_file(config_.summary_file);
  log()->info("summary written to {}", config_.summary_file);
}

// ---- tasks ----

void FeedSimulator::Impl::spawn(asio::awaitable<void> task, std::shared_ptr<Connection> c,
                                const char* name) {
  ++tasks_;
  if (c) ++c->tasks;
  asio::co_spawn(executor_, std::move(task),
                 [self = shared_from_this(), c = std::move(c), name](std::exception_ptr error) {
                   self->task_done(error, c, name);
                 });
}

void FeedSimulator::Impl::task_done(const std::exception_ptr& error,
                                    const std::shared_ptr<Connection>& c, const char* name) {
  if (error) {
    ++internal_errors_;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      log()->error("{}{} failed: {}", c ? fmt::format("connection #{}: ", c->id) : "", name,
                   e.what());
    }
    if (c) end(*c, fmt::format("internal error in {}", name));
  }
  if (c && --c->tasks == 0) finalize(c);
  if (--tasks_ == 0) tasks_changed_.notify_all();
}

// ---- FeedSimulator -------------------------------------------------------------------------

FeedSimulator::FeedSimulator(asio::any_io_executor executor, FeedSimConfig config)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(config))) {}

FeedSimulator::~FeedSimulator() {
  if (impl_ && impl_->needs_close()) {
    log()->error("FeedSimulator destroyed without close(): dropping its connections");
    impl_->abort();
  }
}

asio::awaitable<void> FeedSimulator::start() {
  return impl_->start();
}
asio::awaitable<void> FeedSimulator::close() {
  return impl_->close();
}
void FeedSimulator::stop_generating() {
  impl_->stop_generating();
}
asio::awaitable<void> FeedSimulator::shutdown() {
  return impl_->shutdown();
}
Summary FeedSimulator::summary() const {
  return impl_->summary();
}
void FeedSimulator::write_summary() {
  impl_->write_summary();
}
std::uint16_t FeedSimulator::port() const noexcept {
  return impl_->port();
}

}  // namespace trading_shared::services::feed_sim

// The venue's WebSocket limits, end to end with the real binaries (docs/failure-modes.md F59,
// F60): ts-feed-sim enforces them (streams per connection, incoming messages per second, its
// pings, the connection lifetime); ts-receiver stays within them (sharding, paced and confirmed
// subscriptions, pongs, make-before-break rotation) and writes to the harness's Redis.
// Positive controls: raw clients that break the limits are closed by the simulator.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include "common/keys.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "support/service_process.hpp"
#include "support/test_helpers.hpp"
#include "support/tls_certs.hpp"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#if !defined(TS_RECEIVER_BIN) || !defined(TS_FEED_SIM_BIN)
#error "TS_RECEIVER_BIN and TS_FEED_SIM_BIN must name the service binaries"
#endif

namespace {

namespace ts = trading_shared;
namespace tsd = trading_shared::testing::detail;
namespace asio = boost::asio;
namespace beast = boost::beast;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using Service = trading_shared::testing::ServiceProcess;

struct TestDir {
  std::string path;
  explicit TestDir(const std::string& name)
      : path((std::filesystem::temp_directory_path() /
              ("ts-limits-" + name + "-" + std::to_string(::getpid())))
                 .string()) {
    std::filesystem::create_directories(path);
  }
  ~TestDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// A number of a JSON summary (`"key":<n>`, the first occurrence), or -1.
long long json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":");
  return at == std::string::npos ? -1LL : std::atoll(json.c_str() + at + key.size() + 3);
}

template <typename Condition>
bool wait_for(Condition condition, std::chrono::milliseconds bound) {
  const auto deadline = Clock::now() + bound;
  for (int attempt = 0; !condition(); ++attempt) {
    if (Clock::now() >= deadline) return false;
    tsd::poll_pause(attempt);
  }
  return true;
}

redisContext* redis() {
  auto& servers = ts::testing::Servers::instance();
  return redisConnect(servers.redis_host().c_str(), servers.redis_port());
}

/// Entries of `symbol` (field `s`) in its bucket's trade stream; -1 if unreadable.
long long trades_in_redis(const std::string& symbol) {
  redisContext* c = redis();
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) redisFree(c);
    return -1;
  }
  const std::string stream = ts::services::trade_stream(symbol);
  auto* reply =
      static_cast<redisReply*>(redisCommand(c, "XRANGE %b - +", stream.data(), stream.size()));
  long long count = reply != nullptr && reply->type == REDIS_REPLY_ARRAY ? 0 : -1;
  for (std::size_t i = 0; count >= 0 && i < reply->elements; ++i) {
    const redisReply* fields = reply->element[i]->element[1];
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      if (std::string_view(fields->element[f]->str, fields->element[f]->len) == "s" &&
          std::string_view(fields->element[f + 1]->str, fields->element[f + 1]->len) == symbol) {
        ++count;
      }
    }
  }
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  return count;
}

void delete_streams(const std::vector<std::string>& symbols) {
  redisContext* c = redis();
  ASSERT_TRUE(c != nullptr && c->err == 0);
  for (const auto& s : symbols) {
    const std::string stream = ts::services::trade_stream(s);
    freeReplyObject(redisCommand(c, "DEL %b", stream.data(), stream.size()));
  }
  redisFree(c);
}

std::vector<std::string> names(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(prefix + std::string(i < 10 ? "00" : i < 100 ? "0" : "") + std::to_string(i));
  }
  return out;
}

std::string joined(const std::vector<std::string>& symbols) {
  std::string out;
  for (const auto& s : symbols) out += (out.empty() ? "" : ",") + s;
  return out;
}

std::string free_port() {
  return std::to_string(ts::testing::free_loopback_port());
}

/// ts-feed-sim on `port` with `extra` flags, its summary in dir/sim.json.
Service spawn_sim(const std::string& dir, const std::string& port, const std::string& symbols,
                  std::vector<std::string> extra) {
  std::vector<std::string> argv{TS_FEED_SIM_BIN, "--listen",       "127.0.0.1:" + port,
                                "--symbols",     symbols,          "--rate",
                                "500",           "--summary-file", dir + "/sim.json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Service::spawn(dir, "sim", std::move(argv));
}

/// ts-receiver on that simulator, its summary in dir/receiver.json.
Service spawn_receiver(const std::string& dir, const std::string& port, const std::string& symbols,
                       std::vector<std::string> extra) {
  std::vector<std::string> argv{TS_RECEIVER_BIN,
                                "--feed-url",
                                "ws://127.0.0.1:" + port + "/ws",
                                "--symbols",
                                symbols,
                                "--redis-url",
                                ts::testing::Servers::instance().redis_url(),
                                "--summary-file",
                                dir + "/receiver.json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Service::spawn(dir, "receiver", std::move(argv));
}

/// A raw WebSocket client of the simulator (the positive controls).
struct RawClient {
  asio::io_context io;
  beast::websocket::stream<asio::ip::tcp::socket> ws{io};
  explicit RawClient(const std::string& port) {
    asio::ip::tcp::resolver resolver(io);
    asio::connect(ws.next_layer(), resolver.resolve("127.0.0.1", port));
    ws.handshake("127.0.0.1:" + port, "/ws");
  }
  void send(const std::string& text) { ws.write(asio::buffer(text)); }
};

// F59: 10 symbols, 4 streams per connection: 3 connections, every symbol confirmed, trades of
// every symbol in Redis; the simulator refused nothing and closed nothing for its rate.
TEST(VenueLimits, F59_SymbolsAreShardedAndEveryOneIsConfirmed) {
  TestDir dir("f59");
  const auto symbols = names("LS", 10);
  delete_streams(symbols);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols), {"--max-streams-per-connection", "4"});
  Service receiver =
      spawn_receiver(dir.path, port, joined(symbols), {"--max-streams-per-connection", "4"});
  const bool all = wait_for(
      [&] {
        for (const auto& s : symbols) {
          if (trades_in_redis(s) <= 0) return false;
        }
        return true;
      },
      20s);
  EXPECT_TRUE(all) << receiver.text();
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_EQ(json_number(summary, "connections"), 3) << summary;
  EXPECT_EQ(json_number(summary, "subscriptions_confirmed"), 3) << summary;
  EXPECT_EQ(json_number(summary, "subscriptions_refused"), 0) << summary;
  EXPECT_EQ(json_number(summary, "unconfirmed_symbols"), 0) << summary;
  EXPECT_EQ(json_number(summary, "reconnects"), 0) << summary;
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  const std::string sim_summary = tsd::read_text_file(dir.path + "/sim.json");
  EXPECT_EQ(json_number(sim_summary, "connections"), 3) << sim_summary;
  EXPECT_EQ(json_number(sim_summary, "stream_limit_refusals"), 0) << sim_summary;
  EXPECT_EQ(json_number(sim_summary, "control_rate_closes"), 0) << sim_summary;
}

// F59, the silent failure made loud: the receiver is told 8 streams per connection, the venue
// allows 4: the 8-stream SUBSCRIBE is refused; the refusal is in the receiver's log (error)
// and summary, its 8 symbols counted unconfirmed; the other shard is confirmed.
TEST(VenueLimits, F59_ARefusedSubscriptionIsLoggedAndCounted) {
  TestDir dir("f59r");
  const auto symbols = names("LR", 10);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols), {"--max-streams-per-connection", "4"});
  Service receiver =
      spawn_receiver(dir.path, port, joined(symbols), {"--max-streams-per-connection", "8"});
  EXPECT_TRUE(wait_for(
      [&] {
        return receiver.text().find("stream(s) confirmed on connection") != std::string::npos;
      },
      20s))
      << receiver.text();
  EXPECT_TRUE(
      wait_for([&] { return receiver.text().find("refused SUBSCRIBE") != std::string::npos; }, 20s))
      << receiver.text();
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string log = receiver.text();
  const auto at = log.find("refused SUBSCRIBE");
  ASSERT_NE(at, std::string::npos);
  const auto line_start = log.rfind('\n', at);
  EXPECT_NE(log.substr(line_start, at - line_start).find("error"), std::string::npos)
      << "logged as an error: " << log.substr(line_start, 200);
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_EQ(json_number(summary, "connections"), 2) << summary;
  EXPECT_EQ(json_number(summary, "subscriptions_refused"), 1) << summary;
  EXPECT_EQ(json_number(summary, "subscriptions_confirmed"), 1) << summary;
  EXPECT_EQ(json_number(summary, "unconfirmed_symbols"), 8) << summary;
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  EXPECT_EQ(json_number(tsd::read_text_file(dir.path + "/sim.json"), "stream_limit_refusals"), 1);
}

// F59, the rate: 1000 symbols on one connection need 4 SUBSCRIBE messages (4 KiB each at
// most); at 2 control messages per second the receiver paces them (one per 1.1 s) and the
// simulator never closes it. Positive control: a client sending 3 at once is closed.
TEST(VenueLimits, F59_SubscriptionsArePacedBelowTheControlMessageRate) {
  TestDir dir("f59p");
  const auto symbols = names("LP", 1000);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols),
                          {"--max-control-messages-per-second", "2", "--rate", "2000"});
  Service receiver =
      spawn_receiver(dir.path, port, joined(symbols), {"--max-control-messages-per-second", "2"});
  EXPECT_TRUE(wait_for(
      [&] {
        return receiver.text().find("stream(s) confirmed on connection") != std::string::npos;
      },
      25s))
      << receiver.text();
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_GE(json_number(summary, "subscriptions_confirmed"), 3) << summary;
  EXPECT_EQ(json_number(summary, "unconfirmed_symbols"), 0) << summary;
  EXPECT_EQ(json_number(summary, "reconnects"), 0) << summary;
  {
    RawClient fast(port);
    for (int i = 1; i <= 3; ++i) {
      fast.send(R"({"method":"SUBSCRIBE","params":["lp000@trade"],"id":)" + std::to_string(i) +
                "}");
    }
    EXPECT_TRUE(wait_for(
        [&] { return sim.text().find("incoming message(s) in 1 s") != std::string::npos; }, 5s))
        << sim.text();
  }
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  EXPECT_EQ(json_number(tsd::read_text_file(dir.path + "/sim.json"), "control_rate_closes"), 1)
      << "only the fast raw client: " << sim.text();
}

// F60: the simulator pings every 200 ms and wants a pong within 500 ms: the receiver answers
// every ping over many intervals (no pong timeout, no reconnect). Positive control: a client
// that does not read (so answers no ping) is closed.
TEST(VenueLimits, F60_TheReceiverAnswersEveryPingInTime) {
  TestDir dir("f60");
  const auto symbols = names("LG", 2);
  delete_streams(symbols);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols),
                          {"--ping-interval", "200ms", "--pong-timeout", "500ms",
                           // pongs count as incoming messages (as Binance counts them): 5 a
                           // second at this ping interval
                           "--max-control-messages-per-second", "20"});
  Service receiver = spawn_receiver(dir.path, port, joined(symbols), {});
  // 1500 trades at 500/s: about 3 s, 15 ping intervals.
  EXPECT_TRUE(wait_for(
      [&] { return trades_in_redis(symbols[0]) + trades_in_redis(symbols[1]) >= 1500; }, 20s))
      << receiver.text();
  {
    RawClient silent(port);  // never reads: never answers a ping
    EXPECT_TRUE(wait_for(
        [&] { return sim.text().find("no pong within --pong-timeout") != std::string::npos; }, 5s))
        << sim.text();
  }
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_EQ(json_number(summary, "reconnects"), 0) << summary;
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  const std::string sim_summary = tsd::read_text_file(dir.path + "/sim.json");
  EXPECT_GE(json_number(sim_summary, "pings_sent"), 10) << sim_summary;
  EXPECT_EQ(json_number(sim_summary, "pong_timeouts"), 1)
      << "only the silent client: " << sim_summary;
}

// Rotation: the venue closes connections at 3 s; the receiver replaces each at 2 s (make
// before break): rotations counted, none failed, the venue never had to close one, trades go on.
TEST(VenueLimits, RotationReplacesConnectionsBeforeTheVenueClosesThem) {
  TestDir dir("rot");
  const auto symbols = names("LT", 3);
  delete_streams(symbols);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols), {"--max-connection-lifetime", "3s"});
  Service receiver = spawn_receiver(dir.path, port, joined(symbols),
                                    {"--connection-lifetime", "3s", "--rotate-before", "1s"});
  const auto rotated = [&] {
    const std::string log = receiver.text();
    int n = 0;
    for (auto at = log.find("rotated:"); at != std::string::npos;
         at = log.find("rotated:", at + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_TRUE(wait_for([&] { return rotated() >= 3; }, 20s)) << receiver.text();
  const long long before = trades_in_redis(symbols[0]);
  EXPECT_TRUE(wait_for([&] { return trades_in_redis(symbols[0]) > before + 50; }, 10s));
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_GE(json_number(summary, "rotations"), 3) << summary;
  EXPECT_EQ(json_number(summary, "rotation_failures"), 0) << summary;
  EXPECT_EQ(json_number(summary, "unconfirmed_symbols"), 0) << summary;
  EXPECT_EQ(json_number(summary, "reconnects"), 0) << summary;
  EXPECT_EQ(sim.stop(), 0) << sim.text();
  const std::string sim_summary = tsd::read_text_file(dir.path + "/sim.json");
  EXPECT_EQ(json_number(sim_summary, "lifetime_closes"), 0) << sim_summary;
}

// Flags: bad values are configuration errors (exit 2) in both binaries.
TEST(VenueLimits, BadLimitFlagsAreConfigurationErrors) {
  TestDir dir("flags");
  const std::vector<std::vector<std::string>> sims{{"--max-streams-per-connection", "0"},
                                                   {"--max-control-messages-per-second", "0"},
                                                   {"--pong-timeout", "0"},
                                                   {"--ping-interval", "-1s"},
                                                   {"--max-connection-lifetime", "-1s"}};
  for (const auto& flags : sims) {
    Service sim = spawn_sim(dir.path, free_port(), "LF000", flags);
    EXPECT_EQ(sim.wait(10s), 2) << flags[0] << ": " << sim.text();
  }
  const std::vector<std::vector<std::string>> receivers{
      {"--max-streams-per-connection", "0"},
      {"--max-control-messages-per-second", "0"},
      {"--subscribe-timeout", "0"},
      {"--connection-lifetime", "2s", "--rotate-before", "2s"}};
  for (const auto& flags : receivers) {
    Service receiver = spawn_receiver(dir.path, free_port(), "LF000", flags);
    EXPECT_EQ(receiver.wait(10s), 2) << flags[0] << ": " << receiver.text();
  }
}

// wss:// and https:// end to end (issue 19): ts-feed-sim serving TLS, ts-receiver verifying it
// with the test CA under the name "localhost" (SNI); a TCP reset after 300 trades while the
// venue keeps trading leaves a gap that the receiver backfills over https:// (the feed's TLS
// settings serve the REST client too). A receiver without the CA refuses the feed.
TEST(VenueLimits, ReceiverOverWssBackfillsOverHttps) {
  TestDir dir("tls");
  const auto certs = ts::testing::make_test_certificates(dir.path + "/certs");
  const std::vector<std::string> symbols{"LT000"};
  delete_streams(symbols);
  const std::string port = free_port();
  Service sim = spawn_sim(dir.path, port, joined(symbols),
                          {"--tls-cert-file", certs.server_cert, "--tls-key-file", certs.server_key,
                           "--keep-trading", "--fault-drop-after", "300"});
  const auto receiver_argv = [&](const std::string& ca) {
    return std::vector<std::string>{TS_RECEIVER_BIN,
                                    "--feed-url",
                                    "wss://localhost:" + port + "/ws",
                                    "--feed-tls-ca-file",
                                    ca,
                                    "--symbols",
                                    joined(symbols),
                                    "--redis-url",
                                    ts::testing::Servers::instance().redis_url(),
                                    "--summary-file",
                                    dir.path + "/receiver.json"};
  };
  Service receiver = Service::spawn(dir.path, "receiver", receiver_argv(certs.ca_cert));
  EXPECT_TRUE(wait_for([&] { return trades_in_redis("LT000") >= 1000; }, 30s)) << receiver.text();
  EXPECT_EQ(receiver.stop(), 0) << receiver.text();
  const std::string summary = tsd::read_text_file(dir.path + "/receiver.json");
  EXPECT_EQ(json_number(summary, "reconnects"), 1) << summary;
  EXPECT_GE(json_number(summary, "gaps"), 1) << summary;
  EXPECT_GE(json_number(summary, "backfill_requests"), 1) << summary;
  EXPECT_EQ(json_number(summary, "backfilled"), json_number(summary, "missing_trades")) << summary;
  EXPECT_EQ(json_number(summary, "backfill_failed"), 0) << summary;
  // Another CA: the feed is refused (tls_failed, naming the check); the service does not start.
  Service refused = Service::spawn(dir.path, "refused", receiver_argv(certs.other_ca_cert));
  EXPECT_NE(refused.wait(30s), 0) << refused.text();
  EXPECT_NE(refused.text().find("certificate verify failed"), std::string::npos) << refused.text();
  EXPECT_EQ(sim.stop(), 0) << sim.text();
}

}  // namespace

// ts-pipeline: the whole pipeline on throwaway servers, verified against the simulator's
// summary (docs/testing.md, e2e). The orchestrator of the e2e test and of
// `make demo`:
//
//  1. PostgreSQL and Redis (AOF on, so that a graceful restart keeps the streams) from the
//     test harness; database "trading"; `tsctl migrate`.
//  2. ts-feed-sim (stops after rate x duration trades), ts-receiver, ts-recorder, ts-executor;
//     `tsctl load-orders` in parallel.
//  3. Optional graceful restarts of Redis and PostgreSQL during the run, timed.
//  4. Once the simulator is done: waits until every trade is a row in `ticks` and every
//     order a row in `orders`; runs ts-janitor once; SIGTERMs the daemons in reverse order.
//  5. Verifies in SQL (per symbol: rows, gaps, rows outside the sent range, duplicates;
//     orders: terminal, no duplicate fills), measures throughput and tick-to-row latency,
//     prints a report and writes it as JSON. Exit 0 only when nothing is lost, nothing is
//     duplicated, every order is terminal and every service exited 0; 1 otherwise; 2 on bad
//     flags.
//
// Soak mode (`make soak`, docs/testing.md): --faults-every injects random faults (graceful
// restart, SIGSTOP for 1-5 s, or killing the client connections, of Redis or PostgreSQL),
// drawn with --seed, while the simulator sends; --monitor-every prints a sample (rows,
// duplicates, holes below the highest id, RSS and descriptors of each service, Redis memory)
// and, at the end, judges that memory and descriptors did not grow after the warm-up;
// --stream-maxlen caps the trade streams. The same verification runs as without it.
//
// Faults of the tape (issue 16, tape_faults.hpp): --kill-receiver-at kills ts-receiver with
// SIGKILL and starts it again --receiver-down later; --drop-feed-at resets the receiver's
// connections to the venue (the receiver reaches ts-feed-sim through a FaultProxy then);
// --rotate-every sets the venue's connection lifetime and the receiver's rotation. ts-feed-sim
// keeps trading while nobody listens (--keep-trading, when it has it). The verdict stays the
// same: every id from first to last once in ticks, every field as sent; the report adds the
// receiver's tape repair (summed over its runs) and the faults with their times.
//
// Reports (docs/operations.md, "Reports"): --progress-every prints a progress line (received,
// persisted, rates, lag, latency, faults so far; report_series.hpp); the JSON report has
// per-second series read from ticks at the end; --report-html writes the HTML report with
// the charts (report_html.hpp). --admin / --admin-file / --status-page give the daemons admin
// endpoints and run tsctl status-page against them (admin_wiring.hpp).
//
// Every child is stopped and reaped on every path (errors, SIGINT/SIGTERM of ts-pipeline);
// children and servers also carry PR_SET_PDEATHSIG. Everything runs on the main thread (but
// the FaultProxy of --drop-feed-at, which forwards on a thread of its own and forks nothing).
#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include <boost/json.hpp>

#include "admin_wiring.hpp"
#include "common/keys.hpp"
#include "e2e_support.hpp"
#include "feed_sim/generator.hpp"
#include "report_html.hpp"
#include "report_series.hpp"
#include "support/server_harness.hpp"
#include "support/server_process.hpp"
#include "tape_faults.hpp"
#include "tsctl/acl_rules.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace {

namespace e2e = trading_shared::e2e;
namespace testing = trading_shared::testing;
namespace core = trading_shared::core;
namespace fs = std::filesystem;
namespace json = boost::json;
using e2e::Clock;
using namespace std::chrono_literals;
using trading_shared::services::last_trade_key;
using trading_shared::services::trade_stream;

// ---- the service binaries (compile definitions from tests/e2e/CMakeLists.txt) ---------------

#ifdef TS_E2E_FEED_SIM
constexpr const char* kFeedSimPath = TS_E2E_FEED_SIM;
#else
constexpr const char* kFeedSimPath = "";
#endif
#ifdef TS_E2E_RECEIVER
constexpr const char* kReceiverPath = TS_E2E_RECEIVER;
#else
constexpr const char* kReceiverPath = "";
#endif
#ifdef TS_E2E_RECORDER
constexpr const char* kRecorderPath = TS_E2E_RECORDER;
#else
constexpr const char* kRecorderPath = "";
#endif
#ifdef TS_E2E_EXECUTOR
constexpr const char* kExecutorPath = TS_E2E_EXECUTOR;
#else
constexpr const char* kExecutorPath = "";
#endif
#ifdef TS_E2E_JANITOR
constexpr const char* kJanitorPath = TS_E2E_JANITOR;
#else
constexpr const char* kJanitorPath = "";
#endif
#ifdef TS_E2E_TSCTL
constexpr const char* kTsctlPath = TS_E2E_TSCTL;
#else
constexpr const char* kTsctlPath = "";
#endif

struct Binaries {
  std::string feed_sim, receiver, recorder, executor, janitor, tsctl;
};

/// The path of every binary (in `bin_dir` when set, else where this build put it); throws
/// naming every one that was not built.
Binaries find_binaries(const std::string& bin_dir) {
  if (!bin_dir.empty()) {
    Binaries found{bin_dir + "/ts-feed-sim", bin_dir + "/ts-receiver", bin_dir + "/ts-recorder",
                   bin_dir + "/ts-executor", bin_dir + "/ts-janitor",  bin_dir + "/tsctl"};
    std::vector<std::string> missing;
    for (const auto* path : {&found.feed_sim, &found.receiver, &found.recorder, &found.executor,
                             &found.janitor, &found.tsctl}) {
      if (::access(path->c_str(), X_OK) != 0) missing.push_back(*path);
    }
    if (!missing.empty()) {
      std::string message;
      for (const auto& path : missing) message += (message.empty() ? "" : ", ") + path;
      throw std::runtime_error("--bin-dir " + bin_dir +
                               ": not found or not executable: " + message);
    }
    return found;
  }
  const std::pair<const char*, const char*> table[] = {
      {"ts-feed-sim", kFeedSimPath},  {"ts-receiver", kReceiverPath},
      {"ts-recorder", kRecorderPath}, {"ts-executor", kExecutorPath},
      {"ts-janitor", kJanitorPath},   {"tsctl", kTsctlPath}};
  std::vector<std::string> missing;
  for (const auto& [name, path] : table) {
    if (std::string_view(path).empty()) {
      missing.push_back(fmt::format(
          "{} was not built (there was no such target when ts-pipeline was configured: re-run "
          "cmake once services/ has it)",
          name));
    } else if (!fs::exists(path)) {
      missing.push_back(
          fmt::format("{} was not built ({} does not exist: cmake --build <dir> "
                      "--target {})",
                      name, path, name));
    }
  }
  if (!missing.empty()) {
    std::string message;
    for (const auto& line : missing) message += (message.empty() ? "" : "; ") + line;
    throw std::runtime_error(message);
  }
  return {kFeedSimPath, kReceiverPath, kRecorderPath, kExecutorPath, kJanitorPath, kTsctlPath};
}

// ---- options --------------------------------------------------------------------------------

/// What --faults-every picks from (--fault-kinds).
constexpr std::array<std::string_view, 6> kFaultKinds = {
    "redis-restart",  "postgres-restart",   "redis-pause",
    "postgres-pause", "redis-kill-clients", "postgres-kill-clients"};

struct Options {
  std::chrono::milliseconds duration{30s};
  std::int64_t rate = 2000;
  std::vector<std::string> symbols{"BTCUSDT", "ETHUSDT"};
  std::int64_t order_rate = 50;
  std::int64_t reject_every = 10;
  std::chrono::milliseconds restart_redis_at{0};
  std::chrono::milliseconds restart_postgres_at{0};
  std::chrono::milliseconds drain_timeout{60s};
  std::chrono::milliseconds stop_timeout{15s};
  std::string report_file;
  std::string report_html;
  std::chrono::milliseconds progress_every{0};
  bool admin = false;
  std::string admin_file;
  bool status_page = false;
  bool keep_dir = false;
  std::int64_t seed = 1;
  std::string bin_dir;
  // Soak mode (any of faults_every / monitor_every set).
  std::chrono::milliseconds faults_every{0};
  std::vector<std::string> fault_kinds{kFaultKinds.begin(), kFaultKinds.end()};
  std::chrono::milliseconds monitor_every{0};
  std::chrono::milliseconds warmup{0};
  std::int64_t stream_maxlen = 0;
  std::string database = "trading";
  /// Instead of --symbols: this many generated symbols (S0001USDT, S0002USDT, ...).
  std::int64_t symbol_count = 0;
  /// Fail when ts-recorder ever holds more Redis connections than this (0: not checked).
  std::int64_t max_recorder_connections = 0;
  e2e::TapeFaultOptions tape;
  /// TLS on every link and a least-privilege identity per service (--tls).
  bool tls = false;

  bool injects_faults() const {
    return restart_redis_at.count() > 0 || restart_postgres_at.count() > 0 ||
           faults_every.count() > 0;
  }
  std::int64_t max_messages() const { return rate * duration.count() / 1000; }
  std::int64_t order_count() const { return order_rate * duration.count() / 1000; }
  std::chrono::milliseconds warmup_length() const {
    return warmup.count() > 0 ? warmup : duration / 4;
  }
  /// How long after the start the simulator may take to send everything: the duration plus
  /// the drain timeout, or a tenth of the duration when that is more (a long run loses more
  /// time to faults and to a busy machine).
  std::chrono::milliseconds feed_allowance() const {
    return duration + std::max<std::chrono::milliseconds>(drain_timeout, duration / 10);
  }
};

/// Flags (and TS_E2E_* variables), validated; nullopt and `exit_code` set when the process
/// should exit (help: 0, bad flags: 2).
std::optional<Options> load_options(int argc, char** argv, int& exit_code) {
  Options options;
  core::ConfigLoader loader(
      "ts-pipeline",
      "Runs the whole trading pipeline (ts-feed-sim -> ts-receiver -> Redis -> ts-recorder -> "
      "PostgreSQL; tsctl load-orders -> ts-executor) on throwaway servers, optionally restarts "
      "Redis and PostgreSQL during the run, and verifies that nothing was lost or duplicated. "
      "Exit 0: verified; 1: a check failed; 2: bad flags.");
  loader.env_prefix("TS_E2E_")
      .add(options.duration, {"duration", "how long the feed runs (trades = rate x duration)"})
      .add(options.rate, {"rate", "trades per second sent by ts-feed-sim, all symbols together"})
      .add(options.symbols, {"symbols", "symbols of the feed (comma-separated)"})
      .add(options.order_rate,
           {"order_rate", "orders per second sent by tsctl load-orders (0: none)"})
      .add(options.reject_every,
           {"reject_every",
            "tsctl load-orders --reject-every: every n-th order is invalid (0: "
            "flag not passed)"})
      .add(options.restart_redis_at,
           {"restart_redis_at", "restart Redis gracefully this long after the start (0: never)"})
      .add(options.restart_postgres_at,
           {"restart_postgres_at",
            "restart PostgreSQL gracefully this long after the start (0: never)"})
      .add(options.drain_timeout,
           {"drain_timeout", "deadline for the pipeline to drain once the simulator is done"})
      .add(options.stop_timeout,
           {"stop_timeout", "deadline for each service to exit after SIGTERM"})
      .add(options.report_file, {"report_file", "write the report as JSON to this file"})
      .add(options.report_html,
           {"report_html",
            "write the report as an HTML page with charts (throughput and latency per second, "
            "the faults marked; self-contained) to this file"})
      .add(options.progress_every,
           {"progress_every",
            "print a progress line this often while the pipeline runs (received and persisted "
            "trades, rates, lag, latency, faults so far; 0: off; make demo and make soak: 5s). "
            "Off by default: its queries would add to what make bench's E1 measures"})
      .add(options.admin,
           {"admin",
            "give ts-receiver, ts-recorder and ts-executor an admin endpoint (--admin-listen "
            "127.0.0.1:<free port>); print \"ADMIN <service> http://127.0.0.1:<port>\" once each "
            "answers /healthz, read each /metrics once before they stop"})
      .add(options.admin_file,
           {"admin_file",
            "with --admin: write the endpoints as JSON to this file once they answer "
            "({\"ts-receiver\": \"127.0.0.1:<port>\", ..., \"status_page\": ...})"})
      .add(options.status_page,
           {"status_page",
            "with --admin: also run tsctl status-page on a free port against them and print "
            "\"STATUS_PAGE http://127.0.0.1:<port>/\""})
      .add(options.keep_dir, {"keep_dir", "keep the run directory (logs, summaries)"})
      .add(options.seed, {"seed", "seed of the simulator and of the order ids"})
      .add(options.bin_dir, {"bin_dir",
                             "run the service binaries found in this directory instead "
                             "of the ones this build made"})
      .add(options.faults_every,
           {"faults_every",
            "soak: inject a random fault about this often (uniformly 0.5x to 1.5x apart; 0: "
            "off), each of --fault-kinds once per round in an order drawn with --seed"})
      .add(options.fault_kinds,
           {"fault_kinds",
            "soak: the faults to draw from: redis-restart, postgres-restart, redis-pause, "
            "postgres-pause (SIGSTOP for 1-5 s, then SIGCONT), redis-kill-clients (CLIENT KILL "
            "TYPE normal), postgres-kill-clients (pg_terminate_backend)"})
      .add(options.monitor_every,
           {"monitor_every",
            "soak: print a sample this often (rows, duplicates, holes, RSS and descriptors "
            "of each service, Redis memory) and judge the growth at the end (0: off)"})
      .add(options.warmup, {"warmup",
                            "soak: samples up to this long after the start are the warm-up; "
                            "the last one is the baseline of the verdict (0: a quarter of "
                            "--duration)"})
      .add(options.stream_maxlen, {"stream_maxlen",
                                   "ts-receiver --stream-maxlen: approximate length cap of each "
                                   "trade stream (0: not passed, the streams grow with the run)"})
      .add(options.symbol_count,
           {"symbol_count",
            "generate this many symbols (S0001USDT, S0002USDT, ...) instead of --symbols (0: "
            "use --symbols)"})
      .add(options.max_recorder_connections,
           {"max_recorder_connections",
            "fail when ts-recorder is seen with more Redis connections than this (CLIENT LIST, "
            "sampled every second; 0: not checked)"})
      .add(options.tls,
           {"tls",
            "every link over TLS with the harness's throwaway CA (Redis TLS-only: rediss://; "
            "PostgreSQL hostssl only: sslmode=verify-full; the feed wss:// and its REST "
            "https:// through any tape-fault relay), and each service as its own "
            "least-privilege identity: a Redis ACL user (tsctl acl --apply, passwords in "
            "files, kept across a Redis restart by an aclfile) and a PostgreSQL role (tsctl "
            "migrate --roles-create, run by the database's owner ts_owner)"})
      .add(options.database,
           {"database",
            "the PostgreSQL database the pipeline creates and uses (must not exist yet; with "
            "external servers, make bench's E1, each run needs its own)"});
  e2e::add_tape_fault_flags(loader, options.tape);
  if (auto code = core::load_or_exit_code(loader, argc, argv)) {
    exit_code = *code;
    return std::nullopt;
  }
  const auto bad = [&](const std::string& message) {
    std::cerr << "ts-pipeline: configuration error: " << message << std::endl;
    exit_code = core::kExitBadConfig;
    return std::nullopt;
  };
  if (options.duration < 1s) return bad("--duration must be at least 1s");
  if (options.rate < 1) return bad("--rate must be at least 1");
  if (options.max_messages() < 1) return bad("--rate x --duration must be at least one trade");
  if (options.symbol_count < 0 || options.symbol_count > 9999) {
    return bad("--symbol-count must be between 0 and 9999");
  }
  if (options.symbol_count > 0) {
    options.symbols.clear();
    for (std::int64_t i = 1; i <= options.symbol_count; ++i) {
      options.symbols.push_back(fmt::format("S{:04}USDT", i));
    }
  }
  if (options.max_recorder_connections < 0) {
    return bad("--max-recorder-connections must not be negative");
  }
  if (options.symbols.empty()) return bad("--symbols must name at least one symbol");
  for (const auto& symbol : options.symbols) {
    const bool ok = std::all_of(symbol.begin(), symbol.end(), [](unsigned char c) {
      return std::isupper(c) != 0 || std::isdigit(c) != 0;
    });
    if (!ok) return bad("--symbols: \"" + symbol + "\" is not an upper-case symbol like BTCUSDT");
  }
  if (options.order_rate < 0) return bad("--order-rate must not be negative");
  if (options.reject_every < 0) return bad("--reject-every must not be negative");
  if (options.restart_redis_at.count() < 0 || options.restart_postgres_at.count() < 0) {
    return bad("--restart-redis-at / --restart-postgres-at must not be negative");
  }
  if (options.drain_timeout < 1s) return bad("--drain-timeout must be at least 1s");
  if (options.stop_timeout < 1s) return bad("--stop-timeout must be at least 1s");
  if (options.seed < 0) return bad("--seed must not be negative");
  if (options.faults_every.count() < 0 || options.monitor_every.count() < 0 ||
      options.warmup.count() < 0) {
    return bad("--faults-every / --monitor-every / --warmup must not be negative");
  }
  if (options.faults_every.count() > 0 && options.faults_every < 2s) {
    return bad("--faults-every must be at least 2s (or 0: off)");
  }
  if (options.monitor_every.count() > 0 && options.monitor_every < 1s) {
    return bad("--monitor-every must be at least 1s (or 0: off)");
  }
  if (options.warmup >= options.duration) return bad("--warmup must be shorter than --duration");
  if (options.fault_kinds.empty()) return bad("--fault-kinds must name at least one fault");
  for (const auto& kind : options.fault_kinds) {
    if (std::find(kFaultKinds.begin(), kFaultKinds.end(), kind) == kFaultKinds.end()) {
      return bad("--fault-kinds: unknown fault \"" + kind + "\"");
    }
  }
  if (options.stream_maxlen < 0) return bad("--stream-maxlen must not be negative");
  if ((options.status_page || !options.admin_file.empty()) && !options.admin) {
    return bad("--status-page and --admin-file need --admin");
  }
  if (options.progress_every.count() < 0 ||
      (options.progress_every.count() > 0 && options.progress_every < 1s)) {
    return bad("--progress-every must be at least 1s (or 0: off)");
  }
  if (auto problem = e2e::check_tape_fault_options(options.tape, options.duration)) {
    return bad(*problem);
  }
  if (options.tape.kills() && options.monitor_every.count() > 0) {
    return bad(
        "--kill-receiver-at cannot be combined with --monitor-every (the growth verdict "
        "follows one process per service)");
  }
  if (options.database.empty() ||
      !std::all_of(options.database.begin(), options.database.end(), [](unsigned char c) {
        return std::islower(c) != 0 || std::isdigit(c) != 0 || c == '_';
      })) {
    return bad("--database must be a name of lower-case letters, digits and '_'");
  }
  return options;
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::string seconds_text(std::chrono::milliseconds d) {
  return fmt::format("{:g}s", static_cast<double>(d.count()) / 1000.0);
}

// ---- results --------------------------------------------------------------------------------

struct SymbolResult {
  std::string symbol;
  std::int64_t sent = 0;
  std::optional<std::int64_t> first_id, last_id;
  std::int64_t rows = 0, distinct = 0, missing = 0, outside = 0, duplicates = 0;
  /// Digest of every field of the trades: as ts-feed-sim sent them (its summary) and as they
  /// are in ticks (e2e::TradeDigest over the rows in trade id order).
  std::string digest_sent, digest_ticks;
  std::int64_t digest_mismatch = 0;  ///< 1 when the two differ
  e2e::MissingRanges missing_ids;    ///< when missing > 0
};

/// A restart or fault of a server, for the checks that it happened mid-stream (every symbol
/// has trades in ticks from before it and from after it) and that the services saw it.
struct Disruption {
  std::string label;               ///< "Redis restart at 6.0 s", "fault #3 redis-kill-clients"
  std::string kind;                ///< "redis-restart", "postgres-pause", ... ("venue": tape)
  std::string server;              ///< "Redis" or "PostgreSQL"
  bool closes_connections = true;  ///< every client connection ends: each client reconnects
  bool orders_flowing = false;     ///< tsctl load-orders was still submitting when it ended
  /// --restart-*-at (planned mid-run: always judged mid-stream); false for a soak fault, which
  /// may still last when the simulator sends its last trade (then not judged mid-stream).
  bool scheduled = true;
  std::int64_t begin_ms = 0, end_ms = 0;  ///< Unix ms: the simulator's trade time base
};

std::int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Outage {
  std::chrono::milliseconds planned_at{0};
  std::optional<double> started_at_s;
  std::optional<double> stop_s, start_s, total_s;
};

struct Results {
  std::vector<std::string> failures;
  // Trades.
  std::optional<std::int64_t> sent;
  std::optional<double> feed_seconds;  ///< from the start until the simulator was done
  bool trades_checked = false;
  std::vector<SymbolResult> symbols;
  std::int64_t unknown_symbol_rows = 0;
  // Orders.
  std::optional<std::int64_t> submitted, invalid_sent;
  bool orders_checked = false;
  std::int64_t filled = 0, rejected = 0, missing_orders = 0, not_terminal = 0, other_orders = 0;
  std::int64_t duplicate_fills = 0, fills_of_unfilled = 0, filled_without_fill = 0;
  // Performance.
  std::optional<double> persisted_tps, p50_ms, p99_ms;
  std::int64_t latency_samples = 0;
  /// CPU time (user + system) of each service from its start until the pipeline drained.
  std::vector<std::pair<std::string, double>> cpu_seconds;
  // Faults.
  Outage redis, postgres;
  // Drain.
  std::optional<double> drain_seconds;
  // Connections: the most ts-recorder was seen with (CLIENT LIST, once a second).
  std::optional<std::int64_t> recorder_connections;
  std::int64_t connection_check_errors = 0;
};

// ---- soak -----------------------------------------------------------------------------------

/// The verdict's thresholds (docs/testing.md, soak mode). A leak grows without bound, so the
/// bounds only need to absorb what a healthy service may add after the warm-up: a socket or
/// two open across a reconnect at the moment of a sample, and the buffers a fault fills (the
/// receiver holds a few seconds of trades, about 2 MB, while Redis is stopped) together with
/// the allocator keeping freed pages (glibc does not give small-chunk arenas back).
constexpr std::int64_t kFdSlack = 4;
constexpr double kRssFactor = 1.25;
constexpr std::int64_t kRssSlackKib = 8 * 1024;

struct FaultRecord {
  double at_s = 0;  ///< since the start of the run
  std::string kind;
  double seconds = 0;  ///< how long the injection took (outage, stopped time)
  std::string detail;
};

struct ServiceSample {
  std::string name;
  e2e::ProcessStats stats;
};

struct Sample {
  double t_s = 0;                        ///< since the start of the run
  std::string phase;                     ///< "warm-up", "warm-up end", "run", "end"
  std::optional<std::int64_t> received;  ///< sum of the last trade ids (md:{tNN}:last; ids from 1)
  std::optional<std::int64_t> stream_entries;  ///< sum of XLEN of the trade streams
  std::optional<std::int64_t> redis_used;      ///< INFO memory used_memory, bytes
  std::optional<std::int64_t> rows, duplicates, holes, db_bytes;
  std::optional<double> query_ms;  ///< the SQL of the sample, connect included
  std::vector<ServiceSample> services;
};

struct ServiceVerdict {
  std::string name;
  std::optional<std::int64_t> rss_base, rss_max, rss_final, rss_limit;
  std::optional<std::int64_t> fds_base, fds_max, fds_final, fds_limit;
  std::int64_t samples_after = 0;
  bool ok = true;
};

struct Soak {
  std::vector<FaultRecord> faults;
  std::vector<Sample> samples;
  std::int64_t monitor_errors = 0;
  std::string last_monitor_error;
  bool judged = false;
  std::optional<double> warmup_end_s;  ///< when the baseline sample was taken
  std::vector<ServiceVerdict> verdicts;
  std::vector<std::string> problems;
};

std::int64_t total_of(const std::vector<SymbolResult>& symbols, std::int64_t SymbolResult::*field) {
  std::int64_t total = 0;
  for (const auto& s : symbols) total += s.*field;
  return total;
}

// ---- the pipeline ---------------------------------------------------------------------------

class Pipeline {
 public:
  explicit Pipeline(Options options)
      : options_(std::move(options)), fault_rng_(make_fault_rng(options_.seed)) {
    results_.redis.planned_at = options_.restart_redis_at;
    results_.postgres.planned_at = options_.restart_postgres_at;
  }

  int run() {
    bool ran_to_the_end = false;
    try {
      const Binaries binaries = find_binaries(options_.bin_dir);
      start_servers();
      migrate(binaries);
      start_services(binaries);
      run_feed();
      drain();
      measure_cpu();
      scrape_admin();
      if (monitoring()) take_sample("end");
      run_janitor(binaries);
      stop_services();
      ran_to_the_end = true;
    } catch (const std::exception& e) {  // e2e::Interrupted too: reported, then cleaned up
      fail(e.what());
    }
    if (children_) {
      if (!ran_to_the_end) note("stopping every service");
      children_->stop_all(options_.stop_timeout);
    }
    collect_exits();
    if (ran_to_the_end) {
      try {
        verify();
      } catch (const std::exception& e) {
        fail(std::string("verification failed: ") + e.what());
      }
      if (monitoring()) judge_soak();
    }
    collect_series(ran_to_the_end);
    if (!results_.failures.empty()) print_log_tails();
    shutdown_servers();
    print_report();
    write_report();
    return results_.failures.empty() ? 0 : 1;
  }

 private:
  template <typename... Args>
  void note(fmt::format_string<Args...> format, Args&&... args) {
    fmt::print("[{:7.1f}s] {}\n", e2e::seconds_since(program_start_),
               fmt::format(format, std::forward<Args>(args)...));
    std::fflush(stdout);
  }

  void fail(std::string message) {
    note("FAILED: {}", message);
    results_.failures.push_back(std::move(message));
  }

  std::string path(std::string_view name) const { return run_dir_ + "/" + std::string(name); }

  double since_start() const { return e2e::seconds_since(t0_); }

  // -- 1. servers ---------------------------------------------------------------------------

  void start_servers() {
    testing::ServerOptions server_options;
    // Redis keeps its data across a graceful restart: append-only file, flushed on SIGTERM.
    server_options.redis_conf = {"appendonly yes", "appendfsync everysec"};
    // --tls: every server TLS-only; the ACL users made by tsctl acl --apply survive a Redis
    // restart through the aclfile (ACL SAVE after the apply).
    server_options.tls = options_.tls;
    server_options.redis_aclfile = options_.tls;
    testing::Servers::set_options(server_options);
    auto& servers = testing::Servers::instance();
    if (servers.external() && options_.tls) {
      throw std::runtime_error(
          "TS_TEST_POSTGRES_DSN / TS_TEST_REDIS_URL / TS_TEST_PGBOUNCER_DSN point at external "
          "servers; --tls needs ts-pipeline's own servers (TLS-only, with its CA): unset them");
    }
    // External servers (TS_TEST_POSTGRES_DSN and TS_TEST_REDIS_URL, e.g. make bench's E1 on the
    // benchmark's servers) only for a run without faults: a fault needs the server's process.
    // The run then uses its own --database and the Redis database of TS_TEST_REDIS_URL.
    if (servers.external() && options_.injects_faults()) {
      throw std::runtime_error(
          "TS_TEST_POSTGRES_DSN / TS_TEST_REDIS_URL / TS_TEST_PGBOUNCER_DSN point at external "
          "servers; restarts and faults need ts-pipeline's own servers: unset them");
    }
    const std::string harness_dir = servers.directory();
    if (options_.keep_dir) {
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &local);
      run_dir_ = fmt::format("{}/ts-e2e-{}-{}", testing::Servers::temp_root(), stamp, ::getpid());
    } else {
      run_dir_ = harness_dir + "/e2e";  // removed with the harness's directory
    }
    fs::create_directories(run_dir_);
    // The children work in the harness's directory: its guardian kills whatever is left there
    // if ts-pipeline dies, and the leftover check of the test suite sees them.
    children_ = std::make_unique<e2e::Children>(harness_dir);
    note("run directory {}", run_dir_);

    note("starting PostgreSQL and Redis");
    redis_url_ = servers.redis_url();
    servers.create_database(options_.database);
    dsn_ = servers.postgres_dsn(options_.database);
    if (servers.external()) {
      note("external servers: PostgreSQL database {}, Redis {}", options_.database,
           core::redact_secrets(redis_url_));
    } else {
      note("PostgreSQL on port {}, Redis on port {} (append-only file on{})",
           servers.postgres().port(), servers.redis_port(),
           options_.tls ? "; both TLS-only, the harness's CA" : "");
    }
    common_env_ = {"TS_POSTGRES_DSN=" + dsn_, "TS_REDIS_URL=" + redis_url_};
    if (options_.tls) {
      ca_file_ = servers.tls_certificates().ca_cert;
      // The orchestrator's own Redis commands (INFO, CLIENT LIST, ACL SAVE) over TLS too.
      e2e::RedisConnection::use_tls(ca_file_);
      // tsctl (migrate, load-orders, status-page): the database's owner (not a superuser)
      // and Redis's default user (load-orders submits to orders:requests, which no service
      // user may write).
      common_env_ = {
          "TS_POSTGRES_DSN=" + servers.postgres_dsn_for(kOwnerRole, "", options_.database),
          "TS_REDIS_URL=" + redis_url_, "TS_REDIS_TLS_CA_FILE=" + ca_file_};
    }
  }

  // -- 1a. identities (--tls) -----------------------------------------------------------------

  static constexpr const char* kOwnerRole = "ts_owner";

  /// The environment of a service running as its own identity: its Redis ACL user (password
  /// from a file) over TLS and, when it uses PostgreSQL, its role (sslmode=verify-full).
  std::vector<std::string> identity_env(const std::string& service, bool with_postgres) {
    auto& servers = testing::Servers::instance();
    const std::string user = "ts_" + service;
    std::vector<std::string> env{fmt::format("TS_REDIS_URL=rediss://{}:@{}:{}/0", user,
                                             servers.redis_host(), servers.redis_port()),
                                 "TS_REDIS_PASSWORD_FILE=" + path("secrets/" + user),
                                 "TS_REDIS_TLS_CA_FILE=" + ca_file_};
    if (with_postgres) {
      env.push_back("TS_POSTGRES_DSN=" + servers.postgres_dsn_for(user, "", options_.database));
    }
    identities_.push_back({"ts-" + service, user, with_postgres ? user : std::string()});
    return env;
  }

  /// --tls: the owner role ts_owner (LOGIN CREATEROLE, owning the database) runs tsctl migrate
  /// --roles-create (schema + ts_recorder, ts_executor, ts_janitor, ts_status); tsctl acl
  /// --apply makes the Redis users (passwords: random, in files of the run directory, never
  /// printed) and ACL SAVE writes them to Redis's aclfile, so a Redis restart keeps them.
  void provision_identities(const Binaries& binaries) {
    auto& servers = testing::Servers::instance();
    {
      e2e::PgConnection admin(dsn_);
      admin.query(fmt::format("CREATE ROLE {} LOGIN CREATEROLE", kOwnerRole));
      admin.query(fmt::format("ALTER DATABASE {} OWNER TO {}", options_.database, kOwnerRole));
    }
    note("tsctl migrate --roles-create (as {}, the database's owner)", kOwnerRole);
    e2e::Child& migrated =
        run_to_end("tsctl migrate", binaries.tsctl, {"migrate", "--roles-create"}, "", 60s);
    if (migrated.exit_code() != 0) {
      throw std::runtime_error(
          fmt::format("tsctl migrate --roles-create failed ({})", migrated.describe()));
    }
    const std::string secrets = path("secrets");
    fs::create_directories(secrets);
    fs::permissions(secrets, fs::perms::owner_all, fs::perm_options::replace);
    std::random_device random;
    for (const auto& user : trading_shared::services::tsctl::acl_users()) {
      std::string password;
      for (int i = 0; i < 4; ++i) password += fmt::format("{:08x}", random());
      const std::string file = secrets + "/ts_" + std::string(user.service);
      e2e::write_text_file(file, password + "\n");
      fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write,
                      fs::perm_options::replace);
    }
    note("tsctl acl --apply (one Redis user per service), then ACL SAVE to Redis's aclfile");
    e2e::Child& acl = run_to_end("tsctl acl", binaries.tsctl,
                                 {"acl", "--apply", "--acl-password-dir", secrets}, "", 60s);
    if (acl.exit_code() != 0) {
      throw std::runtime_error(fmt::format("tsctl acl --apply failed ({})", acl.describe()));
    }
    e2e::RedisConnection(servers.redis_host(), servers.redis_port(), 5s).command({"ACL", "SAVE"});
    service_env_[binaries.receiver] = identity_env("receiver", false);
    service_env_[binaries.recorder] = identity_env("recorder", true);
    service_env_[binaries.executor] = identity_env("executor", true);
    service_env_[binaries.janitor] = identity_env("janitor", true);
    service_env_[binaries.feed_sim] = {};
    identities_.push_back({"tsctl", "default", kOwnerRole});
  }

  // -- children -------------------------------------------------------------------------------

  e2e::Child& spawn(std::string name, const std::string& program, std::vector<std::string> args,
                    std::string summary_file) {
    std::string file_name = name;
    std::replace(file_name.begin(), file_name.end(), ' ', '-');
    e2e::ChildSpec spec;
    spec.name = std::move(name);
    spec.program = program;
    spec.args = std::move(args);
    const auto own = service_env_.find(program);
    spec.env = own != service_env_.end() ? own->second : common_env_;
    spec.log_file = path(file_name + ".log");
    if (!summary_file.empty()) {
      spec.summary_file = path(summary_file);
      spec.args.push_back("--summary-file");
      spec.args.push_back(spec.summary_file);
    }
    return children_->spawn(std::move(spec));
  }

  /// Runs a command to its end; throws when it does not finish in time. Returns the child,
  /// whose exit code the caller checks.
  e2e::Child& run_to_end(std::string name, const std::string& program,
                         std::vector<std::string> args, std::string summary_file,
                         std::chrono::milliseconds timeout) {
    e2e::Child& child = spawn(std::move(name), program, std::move(args), std::move(summary_file));
    if (!children_->wait(child, Clock::now() + timeout)) {
      children_->stop(child, options_.stop_timeout);
      throw std::runtime_error(fmt::format("{} did not finish within {} ({})", child.name(),
                                           seconds_text(timeout), child.describe()));
    }
    return child;
  }

  void check_daemons_alive(std::string_view phase) {
    for (e2e::Child* daemon : daemons_) {
      if (!daemon->running()) {
        throw std::runtime_error(
            fmt::format("{} exited {} ({})", daemon->name(), phase, daemon->describe()));
      }
    }
  }

  // -- 1b. schema -----------------------------------------------------------------------------

  void migrate(const Binaries& binaries) {
    if (options_.tls) {
      provision_identities(binaries);
      return;
    }
    note("tsctl migrate");
    e2e::Child& child = run_to_end("tsctl migrate", binaries.tsctl, {"migrate"}, "", 60s);
    if (child.exit_code() != 0) {
      throw std::runtime_error(fmt::format("tsctl migrate failed ({})", child.describe()));
    }
  }

  // -- 2. services ----------------------------------------------------------------------------

  void start_services(const Binaries& binaries) {
    const std::string symbols = join(options_.symbols, ",");
    const std::uint16_t port = testing::free_loopback_port();
    const std::string port_file = path("feed-sim.port");
    note("starting ts-feed-sim on 127.0.0.1:{} ({} trades at {}/s)", port, options_.max_messages(),
         options_.rate);
    std::vector<std::string> feed_args = {"--listen",       fmt::format("127.0.0.1:{}", port),
                                          "--symbols",      symbols,
                                          "--seed",         std::to_string(options_.seed),
                                          "--rate",         std::to_string(options_.rate),
                                          "--max-messages", std::to_string(options_.max_messages()),
                                          "--port-file",    port_file};
    std::vector<std::string> receiver_args = {"--symbols", symbols};
    if (options_.tls) {
      // wss:// and https:// (REST derived from the feed URL) with the harness's server
      // certificate (SAN IP 127.0.0.1); a tape-fault relay passes TLS through untouched.
      const auto& certs = testing::Servers::instance().tls_certificates();
      feed_args.insert(feed_args.end(),
                       {"--tls-cert-file", certs.server_cert, "--tls-key-file", certs.server_key});
      receiver_args.insert(receiver_args.end(), {"--feed-tls-ca-file", ca_file_});
    }
    tape_.prepare(binaries.feed_sim, binaries.receiver, run_dir_, feed_args, receiver_args);
    feed_ =
        &spawn("ts-feed-sim", binaries.feed_sim, std::move(feed_args), "ts-feed-sim.summary.json");
    daemons_.push_back(feed_);
    const bool listening = e2e::poll_until(
        [&] {
          check_daemons_alive("at start");
          return fs::exists(port_file);
        },
        Clock::now() + 15s);
    if (!listening) {
      throw std::runtime_error("ts-feed-sim did not report listening (no --port-file) within 15s");
    }

    note("starting ts-receiver, ts-recorder, ts-executor");
    receiver_args.insert(
        receiver_args.begin(),
        {"--feed-url",
         fmt::format("{}://127.0.0.1:{}", options_.tls ? "wss" : "ws", tape_.receiver_port(port))});
    if (options_.stream_maxlen > 0) {
      receiver_args.push_back("--stream-maxlen");
      receiver_args.push_back(std::to_string(options_.stream_maxlen));
    }
    std::vector<std::string> recorder_args;
    std::vector<std::string> executor_args = {"--symbols", symbols};
    if (admin_) {
      check_admin_flag(binaries);
      admin_->add_flag("ts-receiver", receiver_args);
      admin_->add_flag("ts-recorder", recorder_args);
      admin_->add_flag("ts-executor", executor_args);
    }
    receiver_slot_ = daemons_.size();
    tape_.start_receiver(binaries.receiver, std::move(receiver_args));
    // The recorder records every trade stream (every bucket), whatever the symbols.
    daemons_.push_back(&spawn("ts-recorder", binaries.recorder, std::move(recorder_args),
                              "ts-recorder.summary.json"));
    daemons_.push_back(&spawn("ts-executor", binaries.executor, std::move(executor_args),
                              "ts-executor.summary.json"));

    t0_ = Clock::now();
    t0_unix_ms_ = unix_millis();
    next_progress_at_ = t0_ + options_.progress_every;
    if (options_.order_count() > 0) {
      note("starting tsctl load-orders ({} orders at {}/s)", options_.order_count(),
           options_.order_rate);
      std::vector<std::string> args = {"load-orders",
                                       "--rate",
                                       std::to_string(options_.order_rate),
                                       "--count",
                                       std::to_string(options_.order_count()),
                                       "--symbols",
                                       symbols,
                                       "--seed",
                                       std::to_string(options_.seed)};
      if (options_.reject_every > 0) {
        args.push_back("--reject-every");
        args.push_back(std::to_string(options_.reject_every));
      }
      load_ = &spawn("tsctl load-orders", binaries.tsctl, std::move(args),
                     "tsctl-load-orders.summary.json");
    }
    if (admin_) announce_admin(binaries);
  }

  // -- admin endpoints (admin_wiring.hpp) ---------------------------------------------------

  /// The daemons must have --admin-listen (their --help says so): a clear error otherwise.
  void check_admin_flag(const Binaries& binaries) {
    e2e::require_admin_flag("ts-receiver", binaries.receiver, run_dir_);
    e2e::require_admin_flag("ts-recorder", binaries.recorder, run_dir_);
    e2e::require_admin_flag("ts-executor", binaries.executor, run_dir_);
  }

  /// Waits until every admin endpoint answers /healthz, prints the ADMIN lines, starts tsctl
  /// status-page (--status-page) and waits until it answers /, then writes --admin-file.
  void announce_admin(const Binaries& binaries) {
    const auto alive = [this] { check_daemons_alive("at start"); };
    admin_->wait_until_answering(alive);
    for (const auto service : e2e::kAdminServices) {
      fmt::print("ADMIN {} http://{}\n", service, admin_->address(service));
    }
    std::uint16_t status_port = 0;
    if (options_.status_page) {
      status_port = testing::free_loopback_port();
      e2e::Child& page =
          spawn("tsctl status-page", binaries.tsctl, admin_->status_page_args(status_port), "");
      daemons_.push_back(&page);  // watched, sampled and stopped (first) with the daemons
      e2e::wait_for_status_page(status_port, alive);
      fmt::print("STATUS_PAGE http://127.0.0.1:{}/\n", status_port);
    }
    std::fflush(stdout);
    if (!options_.admin_file.empty()) {
      e2e::write_text_file(options_.admin_file, admin_->file_json(status_port));
      note("admin endpoints written to {}", options_.admin_file);
    }
  }

  /// GET /metrics of every daemon once (before they stop), kept in the run directory.
  void scrape_admin() {
    if (!admin_) return;
    for (const auto& result : admin_->check_metrics(run_dir_)) {
      if (!result.problem.empty()) {
        fail(result.problem);
        continue;
      }
      admin_lines_[result.service] = result.lines;
      note("{} /metrics: {} lines (kept as {}.metrics.txt)", result.service, result.lines,
           result.service);
    }
  }

  // -- 3./4. the run, with its faults ---------------------------------------------------------

  void restart(testing::ServerProcess& server, Outage& outage, std::string_view what) {
    outage.started_at_s = since_start();
    note("restarting {} (graceful stop, then start on port {})", what, server.port());
    Disruption disruption;
    disruption.label = fmt::format("{} restart at {:.1f} s", what, *outage.started_at_s);
    disruption.server = std::string(what);
    disruption.kind = what == "Redis" ? "redis-restart" : "postgres-restart";
    disruption.begin_ms = unix_millis();
    const auto begin = Clock::now();
    server.stop();
    const auto stopped = Clock::now();
    server.start();
    const auto end = Clock::now();
    disruption.end_ms = unix_millis();
    disruption.orders_flowing = load_ != nullptr && load_->running();
    disruptions_.push_back(std::move(disruption));
    outage.stop_s = std::chrono::duration<double>(stopped - begin).count();
    outage.start_s = std::chrono::duration<double>(end - stopped).count();
    outage.total_s = std::chrono::duration<double>(end - begin).count();
    note("{} is back: outage {:.2f} s (stop {:.2f} s, start {:.2f} s)", what, *outage.total_s,
         *outage.stop_s, *outage.start_s);
    tape_.record(
        {*outage.started_at_s, what == "Redis" ? "redis-restart" : "postgres-restart",
         *outage.total_s,
         fmt::format("graceful stop {:.2f} s, start {:.2f} s", *outage.stop_s, *outage.start_s)});
  }

  /// What e2e::TapeFaults does through ts-pipeline: receiver runs in the first receiver's place
  /// among the daemons, kills, messages.
  e2e::TapeHooks tape_hooks() {
    e2e::TapeHooks hooks;
    hooks.spawn_receiver = [this](std::string name, const std::string& program,
                                  std::vector<std::string> args,
                                  std::string summary) -> e2e::Child& {
      e2e::Child& child = spawn(std::move(name), program, std::move(args), std::move(summary));
      daemons_.insert(daemons_.begin() + static_cast<std::ptrdiff_t>(receiver_slot_), &child);
      return child;
    };
    hooks.receiver_gone = [this](e2e::Child& child) { std::erase(daemons_, &child); };
    hooks.kill = [this](e2e::Child& child) { children_->kill(child); };
    hooks.note = [this](const std::string& text) { note("{}", text); };
    hooks.fail = [this](std::string text) { fail(std::move(text)); };
    hooks.since_start = [this] { return since_start(); };
    hooks.orders_flowing = [this] { return load_ != nullptr && load_->running(); };
    return hooks;
  }

  // -- progress and series (report_series.hpp) --------------------------------------------------

  /// The faults injected so far (restarts, tape faults, soak faults) and the latest one's kind.
  std::pair<std::int64_t, std::string> faults_so_far() const {
    std::int64_t count = 0;
    std::string last;
    double last_at = -1;
    for (const auto& fault : tape_.faults()) {
      if (fault.kind == "receiver-start") continue;
      ++count;
      if (fault.at_s >= last_at) std::tie(last_at, last) = std::pair(fault.at_s, fault.kind);
    }
    for (const auto& fault : soak_.faults) {
      ++count;
      if (fault.at_s >= last_at) std::tie(last_at, last) = std::pair(fault.at_s, fault.kind);
    }
    return {count, last};
  }

  /// Every --progress-every: a progress line (and its sample for the report).
  void progress() {
    if (options_.progress_every.count() == 0 || Clock::now() < next_progress_at_) return;
    if (!probe_) {
      auto& servers = testing::Servers::instance();
      probe_.emplace(servers.redis_host(), servers.redis_port(), dsn_);
    }
    auto [faults, last] = faults_so_far();
    const auto sample = probe_->take(since_start(), unix_millis(), faults, std::move(last));
    note("{}", sample.line());
    next_progress_at_ = Clock::now() + options_.progress_every;
  }

  /// The faults as the charts mark them, in seconds since the start.
  std::vector<e2e::FaultSpan> fault_spans() const {
    std::vector<e2e::FaultSpan> spans;
    const auto since = [&](std::int64_t ms) {
      return static_cast<double>(ms - t0_unix_ms_) / 1000.0;
    };
    for (const auto& d : disruptions_) {
      if (d.kind == "venue") continue;  // the tape's windows, below
      spans.push_back({since(d.begin_ms), since(d.end_ms), d.kind, d.label});
    }
    for (const auto& w : tape_.windows()) {
      spans.push_back({since(w.begin_ms), since(w.end_ms),
                       w.label.starts_with("ts-receiver kill") ? "receiver-kill" : "venue-drop",
                       w.label});
    }
    std::sort(spans.begin(), spans.end(),
              [](const auto& a, const auto& b) { return a.start_s < b.start_s; });
    return spans;
  }

  /// The per-second series from ticks (after the run; PostgreSQL still up). A failure fails a
  /// run that got to its end; after an earlier failure it is only noted.
  void collect_series(bool ran_to_the_end) {
    if (dsn_.empty() || t0_unix_ms_ == 0) return;
    try {
      e2e::PgConnection pg(dsn_);
      seconds_ = e2e::query_seconds(pg, t0_unix_ms_);
      e2e::mark_faults(seconds_, fault_spans());
    } catch (const std::exception& e) {
      if (ran_to_the_end) {
        fail(std::string("per-second series: ") + e.what());
      } else {
        note("per-second series not read: {}", e.what());
      }
    }
  }

  // -- soak: random faults ---------------------------------------------------------------------

  bool monitoring() const { return options_.monitor_every.count() > 0; }

  static std::mt19937_64 make_fault_rng(std::int64_t seed) {
    std::seed_seq sequence{static_cast<std::uint32_t>(seed),
                           static_cast<std::uint32_t>(static_cast<std::uint64_t>(seed) >> 32),
                           std::uint32_t{0x50a4}};  // not the simulator's stream of numbers
    return std::mt19937_64(sequence);
  }

  /// The next fault's kind: every kind of --fault-kinds once per round, in a random order (a
  /// shuffled bag), so that a run of six faults has met each of the six.
  std::string next_fault_kind() {
    if (fault_bag_.empty()) {
      fault_bag_ = options_.fault_kinds;
      std::shuffle(fault_bag_.begin(), fault_bag_.end(), fault_rng_);
    }
    std::string kind = std::move(fault_bag_.back());
    fault_bag_.pop_back();
    return kind;
  }

  /// The next fault 0.5x to 1.5x --faults-every from now.
  void schedule_next_fault() {
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    const auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(options_.faults_every *
                                                                           jitter(fault_rng_));
    next_fault_at_ =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0_) + gap;
  }

  /// SIGSTOP to every process of the server for `length`, then SIGCONT. The daemons are
  /// watched meanwhile; the server is resumed on every path.
  void pause_server(testing::ServerProcess& server, std::chrono::milliseconds length) {
    server.pause();
    try {
      e2e::poll_until(
          [&] {
            check_daemons_alive("while a server was stopped");
            return false;  // the fault lasts `length`: nothing to wait for
          },
          Clock::now() + length, 100ms);
    } catch (const std::exception&) {
      server.resume();  // then the original error goes on
      throw;
    }
    server.resume();
  }

  /// One fault drawn from --fault-kinds; logged, timed and recorded. A fault that cannot be
  /// injected (a server that does not come back) throws: the run fails.
  void inject_fault() {
    auto& servers = testing::Servers::instance();
    FaultRecord record;
    record.kind = next_fault_kind();
    record.at_s = since_start();
    const std::size_t number = soak_.faults.size() + 1;
    Disruption disruption;
    disruption.label = fmt::format("fault #{} {} at {:.1f} s", number, record.kind, record.at_s);
    disruption.server = record.kind.starts_with("redis") ? "Redis" : "PostgreSQL";
    // A pause (SIGSTOP) need not close a connection: it is checked for mid-stream only.
    disruption.closes_connections = record.kind.find("pause") == std::string::npos;
    disruption.scheduled = false;
    disruption.kind = record.kind;
    disruption.begin_ms = unix_millis();
    const auto begin = Clock::now();
    const std::string& kind = record.kind;
    if (kind == "redis-restart" || kind == "postgres-restart") {
      auto& server = kind == "redis-restart" ? servers.redis() : servers.postgres();
      note("fault #{}: {}: graceful stop, then start on port {}", number, kind, server.port());
      server.stop();
      const double stop_s = e2e::seconds_since(begin);
      server.start();
      record.detail =
          fmt::format("stop {:.2f} s, start {:.2f} s", stop_s, e2e::seconds_since(begin) - stop_s);
    } else if (kind == "redis-pause" || kind == "postgres-pause") {
      auto& server = kind == "redis-pause" ? servers.redis() : servers.postgres();
      std::uniform_int_distribution<std::int64_t> millis(1000, 5000);
      const std::chrono::milliseconds length(millis(fault_rng_));
      note("fault #{}: {}: SIGSTOP for {} (pid {} and its processes), then SIGCONT", number, kind,
           seconds_text(length), server.pid());
      pause_server(server, length);
      record.detail = fmt::format("stopped for {}", seconds_text(length));
    } else if (kind == "redis-kill-clients") {
      note("fault #{}: {}: CLIENT KILL TYPE normal", number, kind);
      e2e::RedisConnection admin(servers.redis_host(), servers.redis_port(), 5s);
      const auto killed = admin.command({"CLIENT", "KILL", "TYPE", "normal"});
      record.detail = fmt::format("{} connection(s) closed", killed.integer);
    } else if (kind == "postgres-kill-clients") {
      note("fault #{}: {}: pg_terminate_backend of every other connection to trading", number,
           kind);
      e2e::PgConnection admin(dsn_);
      const auto killed = admin.query_int(
          "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
          " WHERE datname = 'trading' AND pid <> pg_backend_pid()");
      record.detail = fmt::format("{} connection(s) terminated", killed);
    } else {
      throw std::logic_error("unknown fault kind " + kind);  // validated with the flags
    }
    record.seconds = e2e::seconds_since(begin);
    disruption.end_ms = unix_millis();
    disruption.orders_flowing = load_ != nullptr && load_->running();
    disruptions_.push_back(std::move(disruption));
    note("fault #{}: {} done in {:.2f} s: {}", number, kind, record.seconds, record.detail);
    soak_.faults.push_back(std::move(record));
  }

  // -- soak: monitoring -----------------------------------------------------------------------

  void monitor_error(std::string_view what, const std::string& message) {
    ++soak_.monitor_errors;
    soak_.last_monitor_error = fmt::format("{}: {}", what, message);
    note("sample: {} not read ({}); the sample goes on without it", what, message);
  }

  /// One sample: the services' memory and descriptors, Redis, and the table. Failures (a
  /// server restarting) leave fields empty; they are counted, never fatal.
  void take_sample(std::string phase) {
    Sample sample;
    sample.t_s = since_start();
    sample.phase = std::move(phase);
    for (e2e::Child* daemon : daemons_) {
      if (!daemon->running()) continue;
      sample.services.push_back({daemon->name(), e2e::read_process_stats(daemon->pid())});
    }
    auto& servers = testing::Servers::instance();
    try {
      e2e::RedisConnection redis(servers.redis_host(), servers.redis_port(), 2s);
      const auto info = redis.command({"INFO", "memory"});
      if (const auto used = e2e::info_field(info.text, "used_memory")) {
        sample.redis_used = std::stoll(*used);
      }
      std::int64_t received = 0;
      std::int64_t entries = 0;
      std::set<std::string> streams;  // symbols share their bucket's stream
      for (const auto& symbol : options_.symbols) {
        const auto last = redis.command({"HGET", last_trade_key(symbol), symbol});
        if (last.type == e2e::RedisReply::Type::bulk) {
          if (const auto trade = trading_shared::services::LastTrade::parse(last.text)) {
            received += trade->trade_id;
          }
        }
        streams.insert(trade_stream(symbol));
      }
      for (const auto& stream : streams) entries += redis.command({"XLEN", stream}).integer;
      sample.received = received;
      sample.stream_entries = entries;
    } catch (const std::exception& e) {
      monitor_error("Redis", e.what());
    }
    try {
      const auto begin = Clock::now();
      e2e::PgConnection pg(dsn_);
      // The pass below sorts a symbol's ids (1.2 million in a 20-minute soak): in memory
      // it takes a fraction of a second, spilled to disk under the default 4 MB seconds.
      pg.query("SET work_mem = '256MB'");
      std::int64_t rows = 0;
      std::int64_t duplicates = 0;
      std::int64_t holes = 0;
      for (const auto& symbol : options_.symbols) {
        // One ordered pass over the symbol's ids: rows, ids equal to their predecessor,
        // lowest and highest.
        const auto result = pg.query(
            "SELECT count(*), count(*) FILTER (WHERE trade_id = previous), min(trade_id),"
            "  max(trade_id)"
            " FROM (SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS previous"
            "       FROM ticks WHERE symbol = $1) t",
            {symbol});
        const std::int64_t count = e2e::cell_int(result.at(0).at(0)).value_or(0);
        const std::int64_t repeated = e2e::cell_int(result.at(0).at(1)).value_or(0);
        const auto low = e2e::cell_int(result.at(0).at(2));
        const auto high = e2e::cell_int(result.at(0).at(3));
        rows += count;
        duplicates += repeated;
        if (low && high) holes += (*high - *low + 1) - (count - repeated);
      }
      sample.rows = rows;
      sample.duplicates = duplicates;
      sample.holes = holes;
      sample.db_bytes = pg.query_int("SELECT pg_database_size(current_database())");
      sample.query_ms = e2e::seconds_since(begin) * 1000.0;
    } catch (const std::exception& e) {
      monitor_error("PostgreSQL", e.what());
    }
    note("{}", sample_line(sample));
    soak_.samples.push_back(std::move(sample));
  }

  static std::string mib(std::optional<std::int64_t> bytes) {
    return bytes ? fmt::format("{:.1f}", static_cast<double>(*bytes) / (1024.0 * 1024.0)) : "-";
  }
  static std::string kib_as_mib(std::optional<std::int64_t> kib) {
    return kib ? fmt::format("{:.1f}", static_cast<double>(*kib) / 1024.0) : "-";
  }
  static std::string short_name(const std::string& name) {
    return name.starts_with("ts-") ? name.substr(3) : name;
  }

  static std::string sample_line(const Sample& s) {
    std::string line = fmt::format(
        "sample {:>6.1f}s {:<11} received {} (streams {}) | rows {} dup {} holes {} | db {} MiB, "
        "sql {} | redis {} MiB |",
        s.t_s, s.phase, opt(s.received), opt(s.stream_entries), opt(s.rows), opt(s.duplicates),
        opt(s.holes), mib(s.db_bytes),
        s.query_ms ? fmt::format("{:.0f} ms", *s.query_ms) : std::string("-"), mib(s.redis_used));
    for (const auto& service : s.services) {
      line += fmt::format(" {} {} MiB {} fd", short_name(service.name),
                          kib_as_mib(service.stats.rss_kib), opt(service.stats.fds));
    }
    return line;
  }

  // -- soak: verdict --------------------------------------------------------------------------

  /// Per daemon: the sample at the end of the warm-up is the baseline; every later sample
  /// (the final one, after the drain, included) must stay within kFdSlack descriptors and
  /// kRssFactor x RSS + kRssSlackKib of it.
  void judge_soak() {
    soak_.judged = true;
    const auto base_it = std::find_if(soak_.samples.begin(), soak_.samples.end(),
                                      [](const Sample& s) { return s.phase == "warm-up end"; });
    if (base_it == soak_.samples.end()) {
      soak_.problems.push_back(
          fmt::format("no sample at the end of the warm-up ({}): the run is too short for --warmup",
                      seconds_text(options_.warmup_length())));
    } else {
      soak_.warmup_end_s = base_it->t_s;
      for (const e2e::Child* daemon : daemons_) {
        ServiceVerdict v;
        v.name = daemon->name();
        const auto find = [&](const Sample& s) -> const e2e::ProcessStats* {
          for (const auto& service : s.services) {
            if (service.name == v.name) return &service.stats;
          }
          return nullptr;
        };
        if (const auto* base = find(*base_it)) {
          v.rss_base = base->rss_kib;
          v.fds_base = base->fds;
        }
        for (auto it = std::next(base_it); it != soak_.samples.end(); ++it) {
          const auto* stats = find(*it);
          if (stats == nullptr) continue;
          ++v.samples_after;
          if (stats->rss_kib) {
            v.rss_max = std::max(v.rss_max.value_or(0), *stats->rss_kib);
            v.rss_final = stats->rss_kib;
          }
          if (stats->fds) {
            v.fds_max = std::max(v.fds_max.value_or(0), *stats->fds);
            v.fds_final = stats->fds;
          }
        }
        if (!v.rss_base || !v.fds_base || !v.rss_max || !v.fds_max) {
          v.ok = false;
          soak_.problems.push_back(
              fmt::format("{}: not enough samples (one at the end of the warm-up and one "
                          "after it are needed)",
                          v.name));
        } else {
          v.rss_limit = static_cast<std::int64_t>(static_cast<double>(*v.rss_base) * kRssFactor) +
                        kRssSlackKib;
          v.fds_limit = *v.fds_base + kFdSlack;
          if (*v.rss_max > *v.rss_limit) {
            v.ok = false;
            soak_.problems.push_back(fmt::format(
                "{}: resident memory grew after the warm-up: up to {} KiB, limit {} KiB "
                "({} KiB at the end of the warm-up x {} + {} KiB)",
                v.name, *v.rss_max, *v.rss_limit, *v.rss_base, kRssFactor, kRssSlackKib));
          }
          if (*v.fds_max > *v.fds_limit) {
            v.ok = false;
            soak_.problems.push_back(fmt::format(
                "{}: open descriptors grew after the warm-up: up to {}, limit {} ({} at the end "
                "of the warm-up + {})",
                v.name, *v.fds_max, *v.fds_limit, *v.fds_base, kFdSlack));
          }
        }
        soak_.verdicts.push_back(std::move(v));
      }
    }
    for (const auto& problem : soak_.problems) fail("soak verdict: " + problem);
  }

  /// The simulator's summary once it reached --max-messages.
  std::optional<json::value> finished_feed_summary() {
    auto summary = e2e::read_json_file(feed_->spec().summary_file);
    if (!summary) return std::nullopt;
    const auto total = e2e::json_int(*summary, "total");
    if (!total || *total < options_.max_messages()) return std::nullopt;
    return summary;
  }

  void run_feed() {
    auto& servers = testing::Servers::instance();
    bool redis_due = options_.restart_redis_at.count() > 0;
    bool postgres_due = options_.restart_postgres_at.count() > 0;
    const auto deadline = t0_ + options_.feed_allowance();
    if (options_.faults_every.count() > 0) {
      schedule_next_fault();
      note("soak: a random fault about every {} (seed {}) from: {}",
           seconds_text(options_.faults_every), options_.seed, join(options_.fault_kinds, ", "));
    }
    if (monitoring()) {
      next_sample_at_ = options_.monitor_every;
      note("soak: a sample every {}, warm-up {}", seconds_text(options_.monitor_every),
           seconds_text(options_.warmup_length()));
      take_sample("warm-up");
    }
    std::optional<json::value> feed_summary;
    bool load_noted = load_ == nullptr;
    for (;;) {
      e2e::throw_if_interrupted();
      check_daemons_alive("during the run");
      if (!load_noted && !load_->running()) {
        load_noted = true;
        if (load_->exit_code() == 0) {
          note("tsctl load-orders finished");
        } else {
          // The trades go on; the orders it did submit are verified at the end.
          fail(fmt::format("tsctl load-orders failed ({})", load_->describe()));
        }
      }
      const auto elapsed = Clock::now() - t0_;
      if (redis_due && elapsed >= options_.restart_redis_at) {
        redis_due = false;
        restart(servers.redis(), results_.redis, "Redis");
        continue;
      }
      if (postgres_due && elapsed >= options_.restart_postgres_at) {
        postgres_due = false;
        restart(servers.postgres(), results_.postgres, "PostgreSQL");
        continue;
      }
      if (tape_.step(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed))) continue;
      // Soak: samples and faults while the simulator sends (the last sample is taken once
      // the pipeline drained).
      if (monitoring() && !feed_summary) {
        const bool warmup_end = !warmup_sampled_ && elapsed >= options_.warmup_length();
        if (warmup_end || elapsed >= next_sample_at_) {
          if (warmup_end) warmup_sampled_ = true;
          take_sample(warmup_end ? "warm-up end" : warmup_sampled_ ? "run" : "warm-up");
          while (next_sample_at_ <= Clock::now() - t0_) next_sample_at_ += options_.monitor_every;
          continue;
        }
      }
      if (options_.faults_every.count() > 0 && !feed_summary && elapsed >= next_fault_at_) {
        inject_fault();
        schedule_next_fault();
        continue;
      }
      if (!feed_summary) {
        feed_summary = finished_feed_summary();
        if (feed_summary) {
          results_.feed_seconds = since_start();
          results_.sent = e2e::json_int(*feed_summary, "total");
          note("ts-feed-sim sent all {} trades", *results_.sent);
        }
      }
      check_recorder_connections();
      progress();
      if (feed_summary && !redis_due && !postgres_due && tape_.done()) break;
      if (Clock::now() >= deadline) {
        const auto partial = e2e::read_json_file(feed_->spec().summary_file);
        throw std::runtime_error(
            fmt::format("ts-feed-sim did not send its {} trades within {} (summary: {})",
                        options_.max_messages(), seconds_text(options_.feed_allowance()),
                        partial ? json::serialize(*partial) : std::string("none yet")));
      }
      e2e::pause_step(100ms);
    }
  }

  // -- 5. drain -------------------------------------------------------------------------------

  /// Reads tsctl load-orders' summary: submitted count, id prefix and range.
  void read_load_summary() {
    const auto summary = e2e::read_json_file(load_->spec().summary_file);
    if (!summary) {
      if (load_->exit_code() == 0) fail("tsctl load-orders wrote no summary");
      return;  // orders not verified
    }
    results_.submitted = e2e::json_int(*summary, "submitted");
    results_.invalid_sent = e2e::json_int(*summary, "invalid_sent");
    if (!results_.submitted) {
      throw std::runtime_error("tsctl load-orders' summary has no \"submitted\": " +
                               json::serialize(*summary));
    }
    // Ids are "load-<seed>-<n>": take the prefix and the range from first_id / last_id.
    order_prefix_ = fmt::format("load-{}-", options_.seed);
    first_order_ = 1;
    last_order_ = *results_.submitted;
    const auto parse = [&](std::string_view key, std::int64_t& number) {
      const auto text = e2e::json_text(*summary, key);
      if (!text) return;
      const auto dash = text->find_last_of('-');
      const std::string digits = dash == std::string::npos ? *text : text->substr(dash + 1);
      if (dash != std::string::npos) order_prefix_ = text->substr(0, dash + 1);
      number = std::stoll(digits);
    };
    parse("first_id", first_order_);
    parse("last_id", last_order_);
  }

  /// CPU time of each service so far (read once the pipeline drained, before the services stop):
  /// with the number of trades, what each costs per trade (make bench's E1 profile).
  void measure_cpu() {
    for (const e2e::Child* daemon : daemons_) {
      const auto stats = e2e::read_process_stats(daemon->pid());
      if (stats.cpu_seconds) results_.cpu_seconds.emplace_back(daemon->name(), *stats.cpu_seconds);
    }
  }

  void drain() {
    if (load_) {
      const auto deadline = t0_ + options_.feed_allowance();
      if (!children_->wait(*load_, deadline)) {
        throw std::runtime_error(fmt::format("tsctl load-orders did not finish within {}",
                                             seconds_text(options_.feed_allowance())));
      }
      read_load_summary();  // also after a failure (reported by collect_exits): what it sent
    }
    const std::int64_t want_ticks = *results_.sent;
    const std::int64_t want_orders = results_.submitted.value_or(0);
    note("waiting for the pipeline to drain: {} ticks, {} orders (deadline {})", want_ticks,
         want_orders, seconds_text(options_.drain_timeout));
    std::int64_t ticks = 0;
    std::int64_t orders = 0;
    std::string last_error;
    std::int64_t query_errors = 0;
    const auto begin = Clock::now();
    const bool drained = e2e::poll_until(
        [&] {
          check_daemons_alive("while draining");
          check_recorder_connections();
          progress();
          try {
            e2e::PgConnection pg(dsn_);
            // Rows first (cheap); the distinct trades (a sort of every row: seconds at
            // millions of rows) only once there are enough rows. `ticks` reports rows until then.
            ticks = pg.query_int("SELECT count(*) FROM ticks");
            orders =
                pg.query_int("SELECT count(*) FROM orders WHERE starts_with(client_order_id, $1)",
                             {order_prefix_});
            if (ticks < want_ticks || orders < want_orders) return false;
            // In memory and without the connection's 30 s limit: at 2.4 million rows (a
            // 20-minute soak) the sort spilled to disk and, on a busy machine, hit the limit
            // at every attempt, so the drain never completed although every row was there.
            pg.query("SET work_mem = '256MB'");
            pg.query("SET statement_timeout = '300s'");
            ticks = pg.query_int(
                "SELECT count(*) FROM (SELECT DISTINCT symbol, trade_id FROM ticks) t");
          } catch (const std::runtime_error& e) {
            // PostgreSQL may be restarting: counted, reported at the deadline.
            ++query_errors;
            last_error = e.what();
            return false;
          }
          return ticks >= want_ticks && orders >= want_orders;
        },
        Clock::now() + options_.drain_timeout, 250ms);
    results_.drain_seconds = e2e::seconds_since(begin);
    if (drained) {
      note("drained in {:.1f} s: {} ticks, {} orders", *results_.drain_seconds, ticks, orders);
      return;
    }
    fail(fmt::format(
        "the pipeline did not drain within {}: {} of {} trades in ticks, {} of {} "
        "orders in orders{}",
        seconds_text(options_.drain_timeout), ticks, want_ticks, orders, want_orders,
        query_errors > 0 ? fmt::format(" ({} failed queries, last: {})", query_errors, last_error)
                         : std::string()));
  }

  /// At most once a second: how many Redis connections ts-recorder holds (its client name in
  /// CLIENT LIST: the shared connection and every blocking one). A failed look (Redis
  /// restarting) is counted and reported.
  void check_recorder_connections() {
    if (Clock::now() < next_connection_check_) return;
    next_connection_check_ = Clock::now() + 1s;
    auto& servers = testing::Servers::instance();
    try {
      e2e::RedisConnection redis(servers.redis_host(), servers.redis_port(), 2s);
      const auto list = redis.command({"CLIENT", "LIST", "TYPE", "normal"});
      std::int64_t count = 0;
      for (std::size_t at = list.text.find(" name=ts-recorder "); at != std::string::npos;
           at = list.text.find(" name=ts-recorder ", at + 1)) {
        ++count;
      }
      results_.recorder_connections = std::max(results_.recorder_connections.value_or(0), count);
    } catch (const std::exception& e) {
      if (results_.connection_check_errors++ == 0) {
        note("CLIENT LIST failed (counted; the next look is in a second): {}", e.what());
      }
    }
  }

  // -- 6. janitor -----------------------------------------------------------------------------

  void run_janitor(const Binaries& binaries) {
    note("ts-janitor (retention 168h: today's data must stay)");
    e2e::Child& child =
        run_to_end("ts-janitor", binaries.janitor,
                   {"--retention", "168h", "--symbols", join(options_.symbols, ",")},
                   "ts-janitor.summary.json", 120s);
    if (child.exit_code() != 0) fail(fmt::format("ts-janitor failed ({})", child.describe()));
  }

  // -- 7. stop --------------------------------------------------------------------------------

  void stop_services() {
    for (auto it = daemons_.rbegin(); it != daemons_.rend(); ++it) {
      e2e::Child& daemon = **it;
      children_->stop(daemon, options_.stop_timeout);
      note("stopped {}: {}{}", daemon.name(), daemon.describe(),
           daemon.stop_time() ? fmt::format(" after {} ms", daemon.stop_time()->count())
                              : std::string());
    }
  }

  void collect_exits() {
    if (!children_) return;
    for (auto& child : children_->all()) {
      if (child.exit_code() != 0 && !child.killed_on_purpose()) {
        // Unless a failure already says how it ended ("ts-receiver exited during the run (...)").
        const bool told = std::any_of(
            results_.failures.begin(), results_.failures.end(), [&](const std::string& f) {
              return f.starts_with(child.name()) && f.find(child.describe()) != std::string::npos;
            });
        if (!told) results_.failures.push_back(child.name() + " ended with " + child.describe());
      }
      if (child.spec().summary_file.empty()) continue;
      try {
        auto summary = e2e::read_json_file(child.spec().summary_file);
        if (summary) {
          summaries_[child.name()] = std::move(*summary);
        } else if (child.exit_code() == 0) {
          results_.failures.push_back(child.name() + " wrote no summary file");
        }
      } catch (const std::runtime_error& e) {
        results_.failures.push_back(e.what());
      }
    }
  }

  // -- 8. verification ------------------------------------------------------------------------

  void verify() {
    note("verifying in SQL");
    e2e::PgConnection pg(dsn_);
    verify_trades(pg);
    verify_disruptions(pg);
    if (results_.submitted) verify_orders(pg);
    measure(pg);
    verify_connections();
  }

  void verify_connections() {
    if (results_.recorder_connections) {
      note("ts-recorder held at most {} Redis connection(s)", *results_.recorder_connections);
    }
    if (options_.max_recorder_connections == 0) return;
    if (!results_.recorder_connections) {
      fail("ts-recorder's Redis connections were never counted (CLIENT LIST failed every time)");
    } else if (*results_.recorder_connections > options_.max_recorder_connections) {
      fail(fmt::format(
          "ts-recorder held {} Redis connections, more than --max-recorder-connections {}",
          *results_.recorder_connections, options_.max_recorder_connections));
    }
  }

  void verify_trades(e2e::PgConnection& pg) {
    const auto feed = summaries_.find("ts-feed-sim");
    if (feed == summaries_.end()) throw std::runtime_error("no summary of ts-feed-sim");
    const auto* symbols = e2e::json_member(feed->second, "symbols");
    if (symbols == nullptr || !symbols->is_object()) {
      throw std::runtime_error("ts-feed-sim's summary has no \"symbols\" object");
    }
    results_.sent = e2e::json_int(feed->second, "total");
    std::vector<std::string> names;
    for (const auto& member : symbols->get_object()) {
      SymbolResult s;
      s.symbol = std::string(member.key());
      s.sent = e2e::json_int(member.value(), "count").value_or(0);
      s.first_id = e2e::json_int(member.value(), "first_trade_id");
      s.last_id = e2e::json_int(member.value(), "last_trade_id");
      s.digest_sent = e2e::json_text(member.value(), "digest").value_or("");
      const std::string first = std::to_string(s.first_id.value_or(1));
      const std::string last = std::to_string(s.last_id.value_or(0));
      const auto rows = pg.query(
          "SELECT count(*), count(DISTINCT trade_id),"
          "  count(DISTINCT trade_id) FILTER (WHERE trade_id BETWEEN $2::bigint AND $3::bigint),"
          "  count(*) FILTER (WHERE trade_id NOT BETWEEN $2::bigint AND $3::bigint)"
          " FROM ticks WHERE symbol = $1",
          {s.symbol, first, last});
      s.rows = e2e::cell_int(rows.at(0).at(0)).value_or(0);
      s.distinct = e2e::cell_int(rows.at(0).at(1)).value_or(0);
      const std::int64_t in_range = e2e::cell_int(rows.at(0).at(2)).value_or(0);
      s.outside = e2e::cell_int(rows.at(0).at(3)).value_or(0);
      s.duplicates = s.rows - s.distinct;
      const std::int64_t range =
          s.first_id && s.last_id ? std::max<std::int64_t>(0, *s.last_id - *s.first_id + 1) : 0;
      s.missing = range - in_range;
      if (range != s.sent) {
        fail(fmt::format("ts-feed-sim's summary is inconsistent for {}: count {} but ids {}..{}",
                         s.symbol, s.sent, first, last));
      }
      if (s.missing > 0) {
        s.missing_ids =
            e2e::missing_ranges(pg, s.symbol, s.first_id.value_or(1), s.last_id.value_or(0));
        fail(fmt::format("{}: {} of the {} trades sent are missing from ticks (ids {}..{}): {}",
                         s.symbol, s.missing, s.sent, first, last, s.missing_ids.text()));
      }
      if (s.duplicates > 0) {
        fail(fmt::format("{}: {} duplicate rows in ticks", s.symbol, s.duplicates));
      }
      if (s.outside > 0) {
        fail(fmt::format("{}: {} rows in ticks with ids outside {}..{} (never sent)", s.symbol,
                         s.outside, first, last));
      }
      names.push_back(s.symbol);
      results_.symbols.push_back(std::move(s));
    }
    // A configured symbol with no trades: its subscription was lost (the simulator only
    // generates for subscribed symbols, so the volume went to the others and nothing else
    // would notice) or the simulator was not given it.
    for (const auto& symbol : options_.symbols) {
      const auto it = std::find_if(results_.symbols.begin(), results_.symbols.end(),
                                   [&](const SymbolResult& s) { return s.symbol == symbol; });
      if (it == results_.symbols.end()) {
        fail(fmt::format("{}: configured, but not in ts-feed-sim's summary", symbol));
      } else if (it->sent == 0 || it->distinct == 0) {
        fail(fmt::format("{}: configured, but no trades: {} sent by ts-feed-sim, {} in ticks",
                         symbol, it->sent, it->distinct));
      }
    }
    verify_digests(pg);
    results_.unknown_symbol_rows =
        pg.query_int("SELECT count(*) FROM ticks WHERE symbol <> ALL($1::text[])",
                     {"{" + join(names, ",") + "}"});
    if (results_.unknown_symbol_rows > 0) {
      fail(fmt::format("{} rows in ticks for symbols the simulator never sent",
                       results_.unknown_symbol_rows));
    }
    if (results_.sent != total_of(results_.symbols, &SymbolResult::sent)) {
      fail(fmt::format("ts-feed-sim's summary is inconsistent: total {} but symbols add up to {}",
                       results_.sent.value_or(0), total_of(results_.symbols, &SymbolResult::sent)));
    }
    results_.trades_checked = true;
  }

  /// Compares, per symbol, the digest of every field ts-feed-sim sent (its summary) with the
  /// same digest over the rows in ticks in trade id order. PostgreSQL gives the numerics as
  /// text in the column's scale ("60000.050") and the times as milliseconds with a fraction
  /// ("1765083170123.000"): both go through e2e::canonical_decimal, so that only a different
  /// value makes a different digest. Read in pages (a soak has millions of rows).
  void verify_digests(e2e::PgConnection& pg) {
    std::map<std::string, e2e::TradeDigest> digests;
    std::string after_symbol;
    std::string after_id = std::to_string(std::numeric_limits<std::int64_t>::min());
    constexpr int kPage = 50000;
    for (;;) {
      const auto rows = pg.query(
          "SELECT symbol, trade_id, price::text, qty::text,"
          "  (extract(epoch FROM trade_time) * 1000)::text,"
          "  (extract(epoch FROM event_time) * 1000)::text, buyer_is_maker"
          " FROM ticks WHERE (symbol, trade_id) > ($1, $2::bigint)"
          " ORDER BY symbol, trade_id, trade_time LIMIT " +
              std::to_string(kPage),
          {after_symbol, after_id});
      for (const auto& row : rows) {
        const auto cell = [&](std::size_t i) -> std::string {
          return row.at(i) ? *row.at(i) : std::string("null");
        };
        digests[cell(0)].add_line(cell(1), e2e::canonical_decimal(cell(2)),
                                  e2e::canonical_decimal(cell(3)), e2e::canonical_decimal(cell(4)),
                                  e2e::canonical_decimal(cell(5)), cell(6) == "t");
      }
      if (rows.size() < static_cast<std::size_t>(kPage)) break;
      after_symbol = *rows.back().at(0);
      after_id = *rows.back().at(1);
    }
    for (auto& s : results_.symbols) {
      const auto it = digests.find(s.symbol);
      s.digest_ticks = it == digests.end() ? e2e::TradeDigest{}.hex() : it->second.hex();
      if (s.digest_sent.empty()) {
        fail(fmt::format("{}: ts-feed-sim's summary has no \"digest\"", s.symbol));
        continue;
      }
      if (s.digest_sent != s.digest_ticks) {
        s.digest_mismatch = 1;
        fail(fmt::format(
            "{}: the trades in ticks differ from those sent: digest of every field (id, price, "
            "qty, trade time, event time, maker flag) {} in ticks, {} sent by ts-feed-sim; {}",
            s.symbol, s.digest_ticks, s.digest_sent, locate_difference(pg, s.symbol)));
      }
    }
  }

  /// For a failure message: the first row of `symbol` in ticks (trade id order) that differs
  /// from the simulator's sequence, regenerated with the same seed (id, price, qty and maker
  /// flag do not depend on timing; the times do, so of them only "event time = trade time",
  /// which the simulator always sends, is checked).
  std::string locate_difference(e2e::PgConnection& pg, const std::string& symbol) {
    trading_shared::services::feed_sim::SymbolGenerator generator(
        symbol, static_cast<std::uint64_t>(options_.seed));
    std::string after = std::to_string(std::numeric_limits<std::int64_t>::min());
    std::int64_t compared = 0;
    constexpr int kPage = 50000;
    for (;;) {
      const auto rows = pg.query(
          "SELECT trade_id, price::text, qty::text,"
          "  (extract(epoch FROM trade_time) * 1000)::text,"
          "  (extract(epoch FROM event_time) * 1000)::text, buyer_is_maker"
          " FROM ticks WHERE symbol = $1 AND trade_id > $2::bigint"
          " ORDER BY trade_id, trade_time LIMIT " +
              std::to_string(kPage),
          {symbol, after});
      for (const auto& row : rows) {
        const auto cell = [&](std::size_t i) {
          return row.at(i) ? e2e::canonical_decimal(*row.at(i)) : std::string("null");
        };
        const auto trade = generator.next();
        const auto scale = static_cast<std::uint64_t>(std::pow(10, trade.qty_decimals));
        const std::string id = std::to_string(trade.id);
        const std::string price = e2e::canonical_decimal(
            fmt::format("{}.{:02}", trade.price_cents / 100, trade.price_cents % 100));
        const std::string qty = e2e::canonical_decimal(fmt::format(
            "{}.{:0{}}", trade.qty_units / scale, trade.qty_units % scale, trade.qty_decimals));
        const std::string maker = trade.buyer_maker ? "t" : "f";
        if (cell(0) != id || cell(1) != price || cell(2) != qty || cell(5) != maker ||
            cell(3) != cell(4)) {
          return fmt::format(
              "first difference: row {} in ticks is id {} price {} qty {} maker {} trade_ms {} "
              "event_ms {}; the simulator's trade {} was price {} qty {} maker {}, event time = "
              "trade time",
              compared + 1, cell(0), cell(1), cell(2), cell(5), cell(3), cell(4), id, price, qty,
              maker);
        }
        ++compared;
      }
      if (rows.size() < static_cast<std::size_t>(kPage)) break;
      after = *rows.back().at(0);
    }
    return fmt::format(
        "the {} rows agree with the regenerated sequence in id, price, qty and maker flag and "
        "have event time = trade time: the difference is in the times",
        compared);
  }

  /// Each restart or fault: it happened mid-stream (every symbol has trades in ticks from
  /// before it began and from after it ended, by the simulator's trade time), and each service
  /// connected to the server shows in its summary that it saw it (a Redis reconnect; a
  /// PostgreSQL connection discarded as broken).
  void verify_disruptions(e2e::PgConnection& pg) {
    if (options_.restart_redis_at.count() > 0 && !results_.redis.total_s) {
      fail(fmt::format("a Redis restart was planned at {} but did not happen",
                       seconds_text(options_.restart_redis_at)));
    }
    if (options_.restart_postgres_at.count() > 0 && !results_.postgres.total_s) {
      fail(fmt::format("a PostgreSQL restart was planned at {} but did not happen",
                       seconds_text(options_.restart_postgres_at)));
    }
    const auto epoch = [](std::int64_t ms) {
      return fmt::format("'epoch'::timestamptz + {} * interval '1 millisecond'", ms);
    };
    const std::int64_t last_trade_ms =
        pg.query_int("SELECT (extract(epoch FROM max(trade_time)) * 1000)::bigint FROM ticks");
    for (const auto& window : tape_.windows()) {  // the receiver's: judged mid-stream only
      Disruption d;
      d.label = window.label;
      d.server = "venue";
      d.kind = "venue";
      d.begin_ms = window.begin_ms;
      d.end_ms = window.end_ms;
      d.orders_flowing = window.orders_flowing;
      disruptions_.push_back(std::move(d));
    }
    for (const auto& d : disruptions_) {
      if (!d.scheduled && d.end_ms >= last_trade_ms) {
        note("{}: ended after the last trade: not judged mid-stream", d.label);
        continue;
      }
      const auto rows = pg.query(
          fmt::format("SELECT symbol, count(*) FILTER (WHERE trade_time < {}),"
                      "  count(*) FILTER (WHERE trade_time > {}) FROM ticks GROUP BY symbol",
                      epoch(d.begin_ms), epoch(d.end_ms)));
      std::map<std::string, std::pair<std::int64_t, std::int64_t>> by_symbol;
      for (const auto& row : rows) {
        by_symbol[row.at(0).value_or("")] = {e2e::cell_int(row.at(1)).value_or(0),
                                             e2e::cell_int(row.at(2)).value_or(0)};
      }
      std::vector<std::string> not_mid_stream;
      for (const auto& symbol : options_.symbols) {
        const auto [before, after] = by_symbol[symbol];
        if (before == 0 || after == 0) {
          not_mid_stream.push_back(
              fmt::format("{} ({} trades before, {} after)", symbol, before, after));
        }
      }
      if (!not_mid_stream.empty()) {
        fail(fmt::format(
            "{}: not mid-stream for {} of {} symbol(s): {}", d.label, not_mid_stream.size(),
            options_.symbols.size(),
            join(not_mid_stream.size() > 5
                     ? std::vector<std::string>(not_mid_stream.begin(), not_mid_stream.begin() + 5)
                     : not_mid_stream,
                 ", ")));
      }
    }
    // The services' counters are totals: at least one reconnect per server disrupted (a
    // service may meet two faults in one reconnect, so not one per fault).
    const auto require = [&](const std::string& server, const std::string& service,
                             std::string_view counter, bool only_with_orders) {
      std::vector<std::string> labels;
      for (const auto& d : disruptions_) {
        if (d.server != server || !d.closes_connections) continue;
        if (only_with_orders && !d.orders_flowing) continue;
        labels.push_back(d.label);
      }
      if (labels.empty()) return;
      auto value = summary_int(service, counter);
      if (service == "ts-receiver") {  // the runs up during one of them that wrote a summary
        std::vector<e2e::ReceiverRun> runs;
        for (const auto& run : tape_.runs()) {
          if (std::any_of(disruptions_.begin(), disruptions_.end(), [&](const Disruption& d) {
                return d.server == server && d.closes_connections &&
                       run.alive_during(d.begin_ms, d.end_ms);
              })) {
            runs.push_back(run);
          }
        }
        value = e2e::receiver_total(summaries_, runs, counter);
        const bool all_killed = std::all_of(
            runs.begin(), runs.end(), [](const auto& run) { return run.killed_at_s.has_value(); });
        if (!value && !runs.empty() && all_killed) {
          note("{}: not judged for ts-receiver: the run up during it was killed (no summary)",
               join(labels, ", "));
          return;
        }
      }
      if (!value || *value < 1) {
        fail(
            fmt::format("{}: {}'s summary shows {} {} (at least 1 expected): it did not see {} "
                        "go away",
                        join(labels, ", "), service, counter,
                        value ? std::to_string(*value) : std::string("absent"), server));
      }
    };
    for (const char* service : {"ts-receiver", "ts-recorder", "ts-executor"}) {
      require("Redis", service, "redis_reconnects", false);
    }
    require("PostgreSQL", "ts-recorder", "pg_discarded", false);
    // ts-executor uses PostgreSQL only for an order: it meets a restart when orders follow it.
    require("PostgreSQL", "ts-executor", "pg_discarded", true);
    tape_.verify(summaries_);
  }

  void verify_orders(e2e::PgConnection& pg) {
    const std::vector<std::string> ids = {order_prefix_, std::to_string(first_order_),
                                          std::to_string(last_order_)};
    const std::string ours =
        "(SELECT o.* FROM generate_series($2::bigint, $3::bigint) AS g(n)"
        " JOIN orders o ON o.client_order_id = $1 || g.n)";
    results_.missing_orders = pg.query_int(
        "SELECT count(*) FROM generate_series($2::bigint, $3::bigint) AS g(n)"
        " WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = $1 || g.n)",
        ids);
    const auto statuses = pg.query(
        "SELECT count(*) FILTER (WHERE status = 'filled'), count(*) FILTER (WHERE status = "
        "'rejected'), count(*) FILTER (WHERE status NOT IN ('filled', 'rejected')) FROM " +
            ours + " t",
        ids);
    results_.filled = e2e::cell_int(statuses.at(0).at(0)).value_or(0);
    results_.rejected = e2e::cell_int(statuses.at(0).at(1)).value_or(0);
    results_.not_terminal = e2e::cell_int(statuses.at(0).at(2)).value_or(0);
    results_.other_orders = pg.query_int("SELECT count(*) FROM orders") -
                            (results_.filled + results_.rejected + results_.not_terminal);
    results_.duplicate_fills = pg.query_int(
        "SELECT count(*) FROM (SELECT client_order_id FROM fills GROUP BY client_order_id"
        " HAVING count(*) > 1) d");
    results_.fills_of_unfilled = pg.query_int(
        "SELECT count(*) FROM fills f LEFT JOIN orders o USING (client_order_id)"
        " WHERE o.status IS DISTINCT FROM 'filled'");
    results_.filled_without_fill = pg.query_int(
        "SELECT count(*) FROM orders o WHERE o.status = 'filled'"
        " AND NOT EXISTS (SELECT 1 FROM fills f WHERE f.client_order_id = o.client_order_id)");
    const std::int64_t submitted = results_.submitted.value_or(0);
    if (last_order_ - first_order_ + 1 != submitted) {
      fail(fmt::format("tsctl load-orders' summary is inconsistent: {} submitted but ids {}{}..{}",
                       submitted, order_prefix_, first_order_, last_order_));
    }
    if (results_.missing_orders > 0) {
      fail(
          fmt::format("{} of {} orders have no row in orders", results_.missing_orders, submitted));
    }
    if (results_.not_terminal > 0) {
      fail(fmt::format("{} orders are not in a terminal state", results_.not_terminal));
    }
    if (results_.duplicate_fills > 0) {
      fail(fmt::format("{} orders have more than one fill", results_.duplicate_fills));
    }
    if (results_.fills_of_unfilled > 0) {
      fail(
          fmt::format("{} fills belong to orders that are not filled", results_.fills_of_unfilled));
    }
    if (results_.filled_without_fill > 0) {
      fail(fmt::format("{} filled orders have no fill", results_.filled_without_fill));
    }
    if (results_.invalid_sent && results_.rejected < *results_.invalid_sent) {
      fail(fmt::format("{} invalid orders were sent but only {} were rejected",
                       *results_.invalid_sent, results_.rejected));
    }
    results_.orders_checked = true;
  }

  void measure(e2e::PgConnection& pg) {
    const auto latency = pg.query(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
        "  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), count(*)"
        " FROM (SELECT extract(epoch FROM recorded_at - event_time) * 1000 AS ms"
        "       FROM ticks WHERE event_time IS NOT NULL) t");
    results_.p50_ms = e2e::cell_double(latency.at(0).at(0));
    results_.p99_ms = e2e::cell_double(latency.at(0).at(1));
    results_.latency_samples = e2e::cell_int(latency.at(0).at(2)).value_or(0);
    const auto span = pg.query(
        "SELECT count(*), extract(epoch FROM max(recorded_at) - min(recorded_at)) FROM ticks");
    const auto rows = e2e::cell_int(span.at(0).at(0)).value_or(0);
    const auto seconds = e2e::cell_double(span.at(0).at(1));
    if (seconds && *seconds > 0) results_.persisted_tps = static_cast<double>(rows) / *seconds;
  }

  // -- cleanup --------------------------------------------------------------------------------

  void shutdown_servers() {
    if (!testing_servers_started()) return;
    auto& servers = testing::Servers::instance();
    if (options_.keep_dir && !run_dir_.empty()) {
      for (const auto& [name, log] : server_logs()) {
        std::error_code error;
        fs::copy_file(log, path(name + "-server.log"), fs::copy_options::overwrite_existing, error);
        if (error) note("could not keep the {} server log: {}", name, error.message());
      }
    }
    try {
      servers.shutdown();
    } catch (const std::exception& e) {
      fail(std::string("stopping the servers: ") + e.what());
    }
  }

  bool testing_servers_started() const { return !dsn_.empty() || !redis_url_.empty(); }

  /// (name, path) of the log of every server that started.
  std::vector<std::pair<std::string, std::string>> server_logs() {
    std::vector<std::pair<std::string, std::string>> logs;
    auto& servers = testing::Servers::instance();
    const auto add = [&](std::string name, auto accessor) {
      try {
        std::string log = accessor().directory() + "/server.log";
        logs.emplace_back(std::move(name), std::move(log));
      } catch (const std::runtime_error& e) {
        note("no log of the {} server: {}", name, e.what());  // it did not start
      }
    };
    add("Redis", [&]() -> testing::ServerProcess& { return servers.redis(); });
    add("PostgreSQL", [&]() -> testing::ServerProcess& { return servers.postgres(); });
    return logs;
  }

  void print_log_tails() {
    if (!children_) return;
    for (const auto& child : children_->all()) {
      fmt::print("\n---- last lines of {} ({}) ----\n{}", child.name(), child.spec().log_file,
                 testing::detail::log_tail(child.spec().log_file, 0, 30));
    }
    if (testing_servers_started()) {
      for (const auto& [name, log] : server_logs()) {
        fmt::print("\n---- last lines of the {} server ({}) ----\n{}", name, log,
                   testing::detail::log_tail(log, 0, 15));
      }
    }
    std::fflush(stdout);
  }

  // -- 9. report ------------------------------------------------------------------------------

  static std::string opt(const std::optional<std::int64_t>& value) {
    return value ? std::to_string(*value) : "-";
  }

  /// Numeric fields of a summary (top level and one level down) whose name contains one of
  /// `words`, as "name value" pairs.
  static std::vector<std::pair<std::string, std::int64_t>> counters(
      const json::value& summary, const std::vector<std::string_view>& words) {
    std::vector<std::pair<std::string, std::int64_t>> out;
    const auto matches = [&](std::string_view key) {
      return words.empty() || std::any_of(words.begin(), words.end(), [&](std::string_view w) {
               return key.find(w) != std::string_view::npos;
             });
    };
    if (!summary.is_object()) return out;
    for (const auto& member : summary.get_object()) {
      const std::string key(member.key());
      if (member.value().is_object()) {
        for (const auto& inner : member.value().get_object()) {
          const std::string inner_key = key + "." + std::string(inner.key());
          if (matches(inner_key)) {
            if (auto v = e2e::json_int(member.value(), inner.key()))
              out.emplace_back(inner_key, *v);
          }
        }
      } else if (matches(key)) {
        if (auto v = e2e::json_int(summary, key)) out.emplace_back(key, *v);
      }
    }
    return out;
  }

  static std::string outage_text(const Outage& outage) {
    if (outage.planned_at.count() == 0) return "not restarted";
    if (!outage.total_s)
      return fmt::format("planned at {}, not done", seconds_text(outage.planned_at));
    return fmt::format("restarted at {:.1f} s: outage {:.2f} s (stop {:.2f} s, start {:.2f} s)",
                       outage.started_at_s.value_or(0), *outage.total_s, outage.stop_s.value_or(0),
                       outage.start_s.value_or(0));
  }

  std::optional<std::int64_t> summary_int(const std::string& service, std::string_view key) const {
    const auto it = summaries_.find(service);
    if (it == summaries_.end()) return std::nullopt;
    return e2e::json_int(it->second, key);
  }

  void print_report() {
    std::string out;
    const auto line = [&out](const std::string& text) { out += text + "\n"; };
    line("");
    line(
        "======================================= ts-pipeline report "
        "=======================================");
    const std::string symbol_list =
        options_.symbol_count > 0 ? fmt::format("{} symbols ({}..{})", options_.symbols.size(),
                                                options_.symbols.front(), options_.symbols.back())
                                  : join(options_.symbols, ",");
    line(fmt::format("run: {} at {} trades/s over {}; {} orders/s; seed {}",
                     seconds_text(options_.duration), options_.rate, symbol_list,
                     options_.order_rate, options_.seed));
    if (!children_) {  // failed before anything ran: only the reason
      print_result(out);
      return;
    }
    line(fmt::format("run directory: {}{}", run_dir_,
                     options_.keep_dir ? " (kept)" : " (removed; --keep-dir keeps it)"));
    line(security_text());

    line("");
    // A column per symbol while they fit on a line; beyond that, the totals only.
    const bool columns = results_.symbols.size() <= 8;
    std::string header = fmt::format("{:<28}", "Trades");
    if (columns) {
      for (const auto& s : results_.symbols) header += fmt::format("{:>12}", s.symbol);
    }
    header += fmt::format("{:>12}", "total");
    line(header);
    const auto row = [&](std::string_view label, std::int64_t SymbolResult::*field,
                         std::optional<std::int64_t> sum) {
      std::string text = fmt::format("  {:<26}", label);
      if (columns) {
        for (const auto& s : results_.symbols) text += fmt::format("{:>12}", s.*field);
      }
      text += fmt::format("{:>12}", opt(sum));
      line(text);
    };
    const bool checked = results_.trades_checked;
    const auto total = [&](std::int64_t SymbolResult::*field) -> std::optional<std::int64_t> {
      if (!checked) return std::nullopt;
      return total_of(results_.symbols, field);
    };
    row("sent (ts-feed-sim)", &SymbolResult::sent, results_.sent);
    {
      std::string text = fmt::format("  {:<26}", "received (ts-receiver)");
      if (columns) text += std::string(12 * results_.symbols.size(), ' ');
      text += fmt::format("{:>12}", opt(e2e::receiver_total(summaries_, tape_.runs(), "trades")));
      const auto unsummed = tape_.runs().size() - e2e::receiver_summaries(summaries_, tape_.runs());
      if (unsummed > 0) text += fmt::format("   live; {} killed run(s) not counted", unsummed);
      line(text);
    }
    row("persisted, unique", &SymbolResult::distinct, total(&SymbolResult::distinct));
    row("missing (gaps)", &SymbolResult::missing, total(&SymbolResult::missing));
    row("duplicates", &SymbolResult::duplicates, total(&SymbolResult::duplicates));
    row("outside the sent range", &SymbolResult::outside, total(&SymbolResult::outside));
    row("fields differ (digest)", &SymbolResult::digest_mismatch,
        total(&SymbolResult::digest_mismatch));
    if (results_.unknown_symbol_rows > 0) {
      line(fmt::format("  {:<26}{:>12}", "rows of unknown symbols", results_.unknown_symbol_rows));
    }
    for (const auto& s : results_.symbols) {
      if (s.missing > 0) line(fmt::format("  missing ids {}: {}", s.symbol, s.missing_ids.text()));
    }

    line("");
    line("Orders");
    const auto order_line = [&](std::string_view label, std::optional<std::int64_t> value,
                                std::string_view extra = {}) {
      line(fmt::format("  {:<26}{:>12}{}", label, opt(value), extra));
    };
    const auto checked_value = [&](std::int64_t v) -> std::optional<std::int64_t> {
      if (!results_.orders_checked) return std::nullopt;
      return v;
    };
    order_line("submitted", results_.submitted,
               results_.invalid_sent
                   ? fmt::format("   ({} invalid on purpose)", *results_.invalid_sent)
                   : std::string());
    order_line("filled", checked_value(results_.filled));
    order_line("rejected", checked_value(results_.rejected));
    order_line("missing", checked_value(results_.missing_orders));
    order_line("not terminal", checked_value(results_.not_terminal));
    order_line("duplicate fills", checked_value(results_.duplicate_fills));
    order_line("fills of unfilled orders", checked_value(results_.fills_of_unfilled));
    order_line("filled without a fill", checked_value(results_.filled_without_fill));

    line("");
    line("Performance");
    if (results_.sent && results_.feed_seconds && *results_.feed_seconds > 0) {
      line(fmt::format("  {:<26}{:>12.1f} trades/s ({} trades in {:.1f} s)", "feed",
                       static_cast<double>(*results_.sent) / *results_.feed_seconds, *results_.sent,
                       *results_.feed_seconds));
    } else {
      line(fmt::format("  {:<26}{:>12}", "feed", "-"));
    }
    line(results_.persisted_tps
             ? fmt::format("  {:<26}{:>12.1f} ticks/s (first to last recorded_at)", "persisted",
                           *results_.persisted_tps)
             : fmt::format("  {:<26}{:>12}", "persisted", "-"));
    line(results_.p50_ms && results_.p99_ms
             ? fmt::format("  {:<26}  p50 {:.1f} ms, p99 {:.1f} ms ({} ticks, event_time -> "
                           "recorded_at)",
                           "tick-to-row latency", *results_.p50_ms, *results_.p99_ms,
                           results_.latency_samples)
             : fmt::format("  {:<26}{:>12}", "tick-to-row latency", "-"));
    line(results_.drain_seconds ? fmt::format("  {:<26}{:>12.1f} s after the simulator was done",
                                              "drain", *results_.drain_seconds)
                                : fmt::format("  {:<26}{:>12}", "drain", "-"));
    if (results_.recorder_connections) {
      line(fmt::format("  {:<26}{:>12} at most (CLIENT LIST, once a second)",
                       "ts-recorder Redis conns", *results_.recorder_connections));
    }
    for (const auto& [service, seconds] : results_.cpu_seconds) {
      const std::string per_trade =
          results_.sent && *results_.sent > 0
              ? fmt::format(" ({:.2f} us per trade sent)",
                            seconds * 1e6 / static_cast<double>(*results_.sent))
              : std::string();
      line(fmt::format("  {:<26}{:>12.2f} s{}", "cpu " + service, seconds, per_trade));
    }

    line("");
    line("Faults");
    line(fmt::format("  {:<26}{}", "Redis", outage_text(results_.redis)));
    line(fmt::format("  {:<26}{}", "PostgreSQL", outage_text(results_.postgres)));
    for (const auto& [service, summary] : summaries_) {
      const auto found = counters(summary, {"reconnect", "breaker", "retries", "discarded"});
      if (found.empty()) continue;
      std::vector<std::string> parts;
      for (const auto& [key, value] : found) parts.push_back(fmt::format("{} {}", key, value));
      line(fmt::format("  {:<26}{}", service, join(parts, ", ")));
    }

    tape_.print_report(line, summaries_);
    print_soak(line);

    line("");
    std::vector<std::string> exits;
    std::size_t exit_width = 4;
    for (auto& child : children_->all()) {
      std::string exit = child.describe();
      if (child.stop_time())
        exit += fmt::format(" ({} ms after SIGTERM)", child.stop_time()->count());
      exit_width = std::max(exit_width, exit.size());
      exits.push_back(std::move(exit));
    }
    line(fmt::format("{:<28}{:<{}}  {}", "Services", "exit", exit_width, "summary"));
    {
      std::size_t index = 0;
      for (auto& child : children_->all()) {
        const std::string& exit = exits[index++];
        std::string summary = "-";
        if (const auto it = summaries_.find(child.name()); it != summaries_.end()) {
          std::vector<std::string> parts;
          for (const auto& [key, value] : counters(it->second, {})) {
            if (key.find('.') == std::string::npos)
              parts.push_back(fmt::format("{} {}", key, value));
          }
          summary = join(parts, ", ");
        }
        line(fmt::format("  {:<26}{:<{}}  {}", child.name(), exit, exit_width, summary));
      }
    }

    print_result(out);
  }

  template <typename Line>
  void print_soak(const Line& line) {
    if (options_.faults_every.count() == 0 && !monitoring()) return;
    line("");
    line(fmt::format(
        "Soak (seed {}; faults {}; samples {}; warm-up {})", options_.seed,
        options_.faults_every.count() > 0 ? "about every " + seconds_text(options_.faults_every)
                                          : std::string("off"),
        monitoring() ? "every " + seconds_text(options_.monitor_every) : std::string("off"),
        seconds_text(options_.warmup_length())));
    if (options_.faults_every.count() > 0) {
      std::map<std::string, std::int64_t> by_kind;
      for (const auto& kind : options_.fault_kinds) by_kind[kind] = 0;
      for (const auto& fault : soak_.faults) ++by_kind[fault.kind];
      std::vector<std::string> parts;
      for (const auto& [kind, count] : by_kind) parts.push_back(fmt::format("{} {}", kind, count));
      line(fmt::format("  {:<26}{:>12}   ({})", "faults injected",
                       static_cast<std::int64_t>(soak_.faults.size()), join(parts, ", ")));
      for (const auto& fault : soak_.faults) {
        line(fmt::format("    {:7.1f}s  {:<22} {:6.2f} s  {}", fault.at_s, fault.kind,
                         fault.seconds, fault.detail));
      }
    }
    if (!monitoring()) return;
    line(fmt::format("  {:<26}{:>12}{}", "samples", static_cast<std::int64_t>(soak_.samples.size()),
                     soak_.monitor_errors > 0
                         ? fmt::format("   ({} partial: last {})", soak_.monitor_errors,
                                       soak_.last_monitor_error)
                         : std::string()));
    std::string header =
        fmt::format("    {:>7} {:<11} {:>9} {:>9} {:>5} {:>6} {:>8} {:>8}", "t", "phase",
                    "received", "rows", "dup", "holes", "db MiB", "redisMiB");
    for (const e2e::Child* daemon : daemons_) {
      header += fmt::format(" {:>17}", short_name(daemon->name()) + " MiB/fd");
    }
    line(header);
    for (const auto& s : soak_.samples) {
      std::string text =
          fmt::format("    {:>6.1f}s {:<11} {:>9} {:>9} {:>5} {:>6} {:>8} {:>8}", s.t_s, s.phase,
                      opt(s.received), opt(s.rows), opt(s.duplicates), opt(s.holes),
                      mib(s.db_bytes), mib(s.redis_used));
      for (const e2e::Child* daemon : daemons_) {
        std::string cell = "-";
        for (const auto& service : s.services) {
          if (service.name == daemon->name()) {
            cell = kib_as_mib(service.stats.rss_kib) + "/" + opt(service.stats.fds);
          }
        }
        text += fmt::format(" {:>17}", cell);
      }
      line(text);
    }
    if (!soak_.judged) {
      line("  verdict                   not judged (the run did not reach its end)");
      return;
    }
    line(fmt::format(
        "  verdict thresholds: after the warm-up (baseline: the sample at {}), descriptors <= "
        "baseline + {}, RSS <= baseline x {} + {} MiB",
        soak_.warmup_end_s ? fmt::format("{:.1f}s", *soak_.warmup_end_s) : std::string("-"),
        kFdSlack, kRssFactor, kRssSlackKib / 1024));
    line(fmt::format("    {:<20} {:>10} {:>10} {:>10} {:>10}   {:>5} {:>5} {:>5} {:>5}  {}",
                     "service", "RSS KiB", "max after", "final", "limit", "fds", "max", "final",
                     "limit", "verdict"));
    for (const auto& v : soak_.verdicts) {
      line(fmt::format("    {:<20} {:>10} {:>10} {:>10} {:>10}   {:>5} {:>5} {:>5} {:>5}  {}",
                       v.name, opt(v.rss_base), opt(v.rss_max), opt(v.rss_final), opt(v.rss_limit),
                       opt(v.fds_base), opt(v.fds_max), opt(v.fds_final), opt(v.fds_limit),
                       v.ok ? "ok" : "GREW"));
    }
    if (soak_.problems.empty()) {
      line("  SOAK VERDICT: PASS (no growth of memory or descriptors after the warm-up)");
    } else {
      line("  SOAK VERDICT: FAIL");
      for (const auto& problem : soak_.problems) line("    - " + problem);
    }
  }

  json::value soak_json() const {
    if (options_.faults_every.count() == 0 && !monitoring()) return nullptr;
    json::object soak;
    soak["seed"] = options_.seed;
    soak["faults_every_s"] = static_cast<double>(options_.faults_every.count()) / 1000.0;
    soak["monitor_every_s"] = static_cast<double>(options_.monitor_every.count()) / 1000.0;
    soak["warmup_s"] = static_cast<double>(options_.warmup_length().count()) / 1000.0;
    soak["stream_maxlen"] = options_.stream_maxlen;
    json::object by_kind;
    for (const auto& kind : options_.fault_kinds) by_kind[kind] = 0;
    json::array faults;
    for (const auto& fault : soak_.faults) {
      by_kind[fault.kind] = by_kind[fault.kind].as_int64() + 1;
      json::object f;
      f["at_s"] = fault.at_s;
      f["kind"] = fault.kind;
      f["seconds"] = fault.seconds;
      f["detail"] = fault.detail;
      faults.push_back(std::move(f));
    }
    soak["faults_by_kind"] = std::move(by_kind);
    soak["faults"] = std::move(faults);
    json::array samples;
    for (const auto& s : soak_.samples) {
      json::object o;
      o["t_s"] = s.t_s;
      o["phase"] = s.phase;
      o["received"] = optional_json(s.received);
      o["stream_entries"] = optional_json(s.stream_entries);
      o["rows"] = optional_json(s.rows);
      o["duplicates"] = optional_json(s.duplicates);
      o["holes"] = optional_json(s.holes);
      o["db_bytes"] = optional_json(s.db_bytes);
      o["sql_ms"] = optional_json(s.query_ms);
      o["redis_used_memory"] = optional_json(s.redis_used);
      json::object services;
      for (const auto& service : s.services) {
        json::object stats;
        stats["rss_kib"] = optional_json(service.stats.rss_kib);
        stats["fds"] = optional_json(service.stats.fds);
        services[service.name] = std::move(stats);
      }
      o["services"] = std::move(services);
      samples.push_back(std::move(o));
    }
    soak["samples"] = std::move(samples);
    soak["monitor_errors"] = soak_.monitor_errors;
    if (soak_.judged) {
      json::object verdict;
      verdict["pass"] = soak_.problems.empty();
      verdict["baseline_t_s"] = optional_json(soak_.warmup_end_s);
      verdict["fd_slack"] = kFdSlack;
      verdict["rss_factor"] = kRssFactor;
      verdict["rss_slack_kib"] = kRssSlackKib;
      json::object services;
      for (const auto& v : soak_.verdicts) {
        json::object o;
        o["ok"] = v.ok;
        o["rss_kib_baseline"] = optional_json(v.rss_base);
        o["rss_kib_max_after"] = optional_json(v.rss_max);
        o["rss_kib_final"] = optional_json(v.rss_final);
        o["rss_kib_limit"] = optional_json(v.rss_limit);
        o["fds_baseline"] = optional_json(v.fds_base);
        o["fds_max_after"] = optional_json(v.fds_max);
        o["fds_final"] = optional_json(v.fds_final);
        o["fds_limit"] = optional_json(v.fds_limit);
        o["samples_after"] = v.samples_after;
        services[v.name] = std::move(o);
      }
      verdict["services"] = std::move(services);
      json::array problems;
      for (const auto& p : soak_.problems) problems.emplace_back(p);
      verdict["problems"] = std::move(problems);
      soak["verdict"] = std::move(verdict);
    } else {
      soak["verdict"] = nullptr;
    }
    return soak;
  }

  void print_result(std::string& out) {
    out += "\n";
    if (results_.failures.empty()) {
      out +=
          "RESULT: PASS (nothing lost, nothing duplicated, every field as sent, every symbol "
          "traded, every restart mid-stream and seen by the services, every order terminal, "
          "every service exited 0)\n";
    } else {
      out += fmt::format("RESULT: FAIL ({} problem{})\n", results_.failures.size(),
                         results_.failures.size() == 1 ? "" : "s");
      for (const auto& failure : results_.failures) out += "  - " + failure + "\n";
    }
    fmt::print("{}", out);
    std::fflush(stdout);
  }

  static json::value optional_json(const std::optional<std::int64_t>& v) {
    return v ? json::value(*v) : json::value(nullptr);
  }
  static json::value optional_json(const std::optional<double>& v) {
    return v ? json::value(*v) : json::value(nullptr);
  }

  static json::object outage_json(const Outage& outage) {
    json::object o;
    o["planned_at_s"] = outage.planned_at.count() == 0
                            ? json::value(nullptr)
                            : json::value(static_cast<double>(outage.planned_at.count()) / 1000.0);
    o["started_at_s"] = optional_json(outage.started_at_s);
    o["seconds"] = optional_json(outage.total_s);
    o["stop_seconds"] = optional_json(outage.stop_s);
    o["start_seconds"] = optional_json(outage.start_s);
    return o;
  }

  /// "security: ..." of the printed report: TLS or not, and who ran as whom.
  std::string security_text() const {
    if (!options_.tls) {
      return "security: plaintext links, every service as the servers' default identities "
             "(--tls: TLS and an identity per service)";
    }
    std::string who;
    for (const auto& id : identities_) {
      who += fmt::format("{}{} as Redis {} / PostgreSQL {}", who.empty() ? "" : "; ", id.service,
                         id.redis_user, id.postgres_role.empty() ? "-" : id.postgres_role);
    }
    return "security: TLS on every link (Redis rediss://, PostgreSQL sslmode=verify-full, feed "
           "wss:// + REST https://); identities: " +
           (who.empty() ? std::string("not provisioned (the run stopped before)") : who);
  }

  json::object report_json() {
    json::object report;
    report["result"] = results_.failures.empty() ? "pass" : "fail";
    json::array failures;
    for (const auto& f : results_.failures) failures.emplace_back(f);
    report["failures"] = std::move(failures);

    json::object config;
    config["duration_s"] = static_cast<double>(options_.duration.count()) / 1000.0;
    config["rate"] = options_.rate;
    json::array symbols;
    for (const auto& s : options_.symbols) symbols.emplace_back(s);
    config["symbols"] = std::move(symbols);
    config["order_rate"] = options_.order_rate;
    config["reject_every"] = options_.reject_every;
    config["seed"] = options_.seed;
    config["max_messages"] = options_.max_messages();
    report["config"] = std::move(config);
    report["run_directory"] = run_dir_;
    json::object security;
    security["tls"] = options_.tls;
    json::array identities;
    for (const auto& id : identities_) {
      json::object o;
      o["service"] = id.service;
      o["redis_user"] = id.redis_user;
      o["postgres_role"] =
          id.postgres_role.empty() ? json::value(nullptr) : json::value(id.postgres_role);
      identities.emplace_back(std::move(o));
    }
    security["identities"] = std::move(identities);
    report["security"] = std::move(security);
    report["run_directory_kept"] = options_.keep_dir;

    json::object trades;
    const bool checked = results_.trades_checked;
    const auto total = [&](std::int64_t SymbolResult::*field) {
      return checked ? json::value(total_of(results_.symbols, field)) : json::value(nullptr);
    };
    trades["sent"] = optional_json(results_.sent);
    trades["received"] = optional_json(e2e::receiver_total(summaries_, tape_.runs(), "trades"));
    trades["persisted_unique"] = total(&SymbolResult::distinct);
    trades["rows"] = total(&SymbolResult::rows);
    trades["missing"] = total(&SymbolResult::missing);
    trades["duplicates"] = total(&SymbolResult::duplicates);
    trades["outside_range"] = total(&SymbolResult::outside);
    trades["digest_mismatches"] = total(&SymbolResult::digest_mismatch);
    trades["unknown_symbol_rows"] =
        checked ? json::value(results_.unknown_symbol_rows) : json::value(nullptr);
    json::object per_symbol;
    for (const auto& s : results_.symbols) {
      json::object o;
      o["sent"] = s.sent;
      o["first_trade_id"] = optional_json(s.first_id);
      o["last_trade_id"] = optional_json(s.last_id);
      o["rows"] = s.rows;
      o["distinct"] = s.distinct;
      o["missing"] = s.missing;
      o["duplicates"] = s.duplicates;
      o["outside_range"] = s.outside;
      json::array ranges;
      for (const auto& [low, high] : s.missing_ids.ranges) ranges.push_back({low, high});
      o["missing_ranges"] = std::move(ranges);
      o["missing_range_count"] = s.missing_ids.count;
      o["digest_sent"] = s.digest_sent;
      o["digest_ticks"] = s.digest_ticks;
      per_symbol[s.symbol] = std::move(o);
    }
    trades["symbols"] = std::move(per_symbol);
    report["trades"] = std::move(trades);

    json::object orders;
    const auto checked_order = [&](std::int64_t v) {
      return results_.orders_checked ? json::value(v) : json::value(nullptr);
    };
    orders["submitted"] = optional_json(results_.submitted);
    orders["invalid_sent"] = optional_json(results_.invalid_sent);
    orders["filled"] = checked_order(results_.filled);
    orders["rejected"] = checked_order(results_.rejected);
    orders["missing"] = checked_order(results_.missing_orders);
    orders["not_terminal"] = checked_order(results_.not_terminal);
    orders["duplicate_fills"] = checked_order(results_.duplicate_fills);
    orders["fills_of_unfilled_orders"] = checked_order(results_.fills_of_unfilled);
    orders["filled_without_fill"] = checked_order(results_.filled_without_fill);
    orders["other_orders"] = checked_order(results_.other_orders);
    report["orders"] = std::move(orders);

    json::object throughput;
    throughput["feed_trades_per_s"] =
        results_.sent && results_.feed_seconds && *results_.feed_seconds > 0
            ? json::value(static_cast<double>(*results_.sent) / *results_.feed_seconds)
            : json::value(nullptr);
    throughput["feed_seconds"] = optional_json(results_.feed_seconds);
    throughput["persisted_ticks_per_s"] = optional_json(results_.persisted_tps);
    throughput["drain_seconds"] = optional_json(results_.drain_seconds);
    throughput["recorder_redis_connections"] = optional_json(results_.recorder_connections);
    report["throughput"] = std::move(throughput);

    json::object cpu;
    for (const auto& [service, seconds] : results_.cpu_seconds) cpu[service] = seconds;
    report["cpu_seconds"] = std::move(cpu);

    json::object latency;
    latency["p50"] = optional_json(results_.p50_ms);
    latency["p99"] = optional_json(results_.p99_ms);
    latency["samples"] = results_.latency_samples;
    report["tick_to_row_latency_ms"] = std::move(latency);

    json::object outages;
    outages["redis"] = outage_json(results_.redis);
    outages["postgres"] = outage_json(results_.postgres);
    report["outages"] = std::move(outages);

    json::object services;
    if (children_) {
      for (auto& child : children_->all()) {
        json::object s;
        s["exit_code"] = child.exit_code() ? json::value(*child.exit_code()) : json::value(nullptr);
        s["exit"] = child.describe();
        s["stop_ms"] =
            child.stop_time() ? json::value(child.stop_time()->count()) : json::value(nullptr);
        s["log"] = child.spec().log_file;
        const auto it = summaries_.find(child.name());
        s["summary"] = it != summaries_.end() ? it->second : json::value(nullptr);
        services[child.name()] = std::move(s);
      }
    }
    report["services"] = std::move(services);
    report["soak"] = soak_json();
    tape_.add_json(report, summaries_);
    if (admin_) {
      json::object admin;
      for (const auto service : e2e::kAdminServices) {
        json::object o;
        o["address"] = admin_->address(service);
        const auto it = admin_lines_.find(std::string(service));
        o["metrics_lines"] =
            it == admin_lines_.end() ? json::value(nullptr) : json::value(it->second);
        admin[service] = std::move(o);
      }
      report["admin"] = std::move(admin);
    }
    report["series"] =
        e2e::series_json(t0_unix_ms_, seconds_, fault_spans(),
                         probe_ ? probe_->samples() : std::vector<e2e::ProgressSample>{});
    return report;
  }

  void write_report() {
    const auto report = report_json();
    const auto write = [&](const std::string& file) {
      try {
        e2e::write_json_file(file, report);
        return true;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "ts-pipeline: %s\n", e.what());
        return false;
      }
    };
    if (!run_dir_.empty() && options_.keep_dir) write(path("report.json"));
    if (!options_.report_file.empty()) {
      if (write(options_.report_file)) {
        fmt::print("report written to {}\n", options_.report_file);
      } else {
        results_.failures.push_back("cannot write the report file " + options_.report_file);
      }
    }
    if (!options_.report_html.empty()) {
      try {
        e2e::write_text_file(options_.report_html, e2e::render_report_html(report));
        fmt::print("HTML report written to {}\n", options_.report_html);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "ts-pipeline: %s\n", e.what());
        results_.failures.push_back("cannot write the HTML report " + options_.report_html);
      }
    }
  }

  Options options_;
  Clock::time_point program_start_ = Clock::now();
  Clock::time_point t0_ = Clock::now();
  std::int64_t t0_unix_ms_ = 0;  ///< t0_ in Unix ms (0: the run did not start)
  Clock::time_point next_progress_at_{};
  std::optional<e2e::ProgressProbe> probe_;
  std::optional<e2e::AdminEndpoints> admin_ =
      options_.admin ? std::optional<e2e::AdminEndpoints>(std::in_place) : std::nullopt;
  std::map<std::string, std::int64_t> admin_lines_;
  std::vector<e2e::SecondPoint> seconds_;
  Clock::time_point next_connection_check_{};
  std::string run_dir_;
  std::string dsn_;
  std::string redis_url_;
  std::vector<std::string> common_env_;
  /// --tls: the environment of a program (by path) running as its own identity.
  std::map<std::string, std::vector<std::string>> service_env_;
  struct Identity {
    std::string service, redis_user, postgres_role;  ///< role empty: no PostgreSQL
  };
  std::vector<Identity> identities_;
  std::string ca_file_;
  std::unique_ptr<e2e::Children> children_;
  std::vector<e2e::Child*> daemons_;  // in order of start
  e2e::Child* feed_ = nullptr;
  e2e::Child* load_ = nullptr;
  std::string order_prefix_;
  std::int64_t first_order_ = 1;
  std::int64_t last_order_ = 0;
  std::map<std::string, json::value> summaries_;
  Results results_;
  std::vector<Disruption> disruptions_;
  // The tape faults (issue 16): the receiver's runs, at receiver_slot_ among the daemons.
  std::size_t receiver_slot_ = 0;
  e2e::TapeFaults tape_{options_.tape, tape_hooks()};
  // Soak mode.
  std::mt19937_64 fault_rng_;
  std::vector<std::string> fault_bag_;
  std::chrono::milliseconds next_fault_at_{0};
  std::chrono::milliseconds next_sample_at_{0};
  bool warmup_sampled_ = false;
  Soak soak_;
};

}  // namespace

int main(int argc, char** argv) {
  int exit_code = 0;
  auto options = load_options(argc, argv, exit_code);
  if (!options) return exit_code;
  try {
    e2e::install_signal_handlers();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ts-pipeline: %s\n", e.what());
    return 1;
  }
  Pipeline pipeline(std::move(*options));
  return pipeline.run();
}

#include "tape_faults.hpp"

#include <boost/json.hpp>

#include "e2e_support.hpp"
#include "support/fault_proxy.hpp"
#include "support/server_process.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <tuple>

namespace trading_shared::e2e {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

std::string seconds(std::chrono::milliseconds d) {
  return fmt::format("{:g}s", static_cast<double>(d.count()) / 1000.0);
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::chrono::milliseconds TapeFaultOptions::rotate_before() const {
  return std::max<std::chrono::milliseconds>(rotate_every / 5, 1s);
}

void add_tape_fault_flags(core::ConfigLoader& loader, TapeFaultOptions& options) {
  loader
      .add(options.kill_receiver_at,
           {"kill_receiver_at",
            "kill -9 ts-receiver (its PID) this long after the start, and start it again "
            "--receiver-down later with the same flags (0: never)"})
      .add(options.receiver_down,
           {"receiver_down", "how long ts-receiver stays down after --kill-receiver-at"})
      .add(options.drop_feed_at,
           {"drop_feed_at",
            "the venue drops the receiver's connections abruptly (TCP reset, no close frame) "
            "this long after the start; the receiver then reaches ts-feed-sim through a relay "
            "of ts-pipeline's (0: never, and no relay)"})
      .add(options.rotate_every,
           {"rotate_every",
            "the venue's connection lifetime (ts-feed-sim --max-connection-lifetime) and "
            "ts-receiver's planned rotation (--connection-lifetime, --rotate-before a fifth "
            "of it, at least 1s) (0: off)"});
}

std::optional<std::string> check_tape_fault_options(const TapeFaultOptions& o,
                                                    std::chrono::milliseconds duration) {
  if (o.kill_receiver_at.count() < 0 || o.drop_feed_at.count() < 0 || o.rotate_every.count() < 0) {
    return "--kill-receiver-at / --drop-feed-at / --rotate-every must not be negative";
  }
  if (o.kills() && o.kill_receiver_at >= duration) {
    return fmt::format("--kill-receiver-at {} must be before the end of the feed (--duration {})",
                       seconds(o.kill_receiver_at), seconds(duration));
  }
  if (o.receiver_down < 1s) return "--receiver-down must be at least 1s";
  if (o.drops() && o.drop_feed_at >= duration) {
    return fmt::format("--drop-feed-at {} must be before the end of the feed (--duration {})",
                       seconds(o.drop_feed_at), seconds(duration));
  }
  // The drop needs a connection to drop: not while the receiver is down, nor in the 2 s it may
  // take the new run to connect.
  if (o.kills() && o.drops() && o.drop_feed_at >= o.kill_receiver_at &&
      o.drop_feed_at <= o.kill_receiver_at + o.receiver_down + 2s) {
    return fmt::format(
        "--drop-feed-at {} falls while the receiver is down or starting (--kill-receiver-at {} "
        "+ --receiver-down {} + 2s): there would be no connection to drop",
        seconds(o.drop_feed_at), seconds(o.kill_receiver_at), seconds(o.receiver_down));
  }
  if (o.rotates() && o.rotate_every >= duration) {
    return fmt::format("--rotate-every {} must be shorter than --duration {}",
                       seconds(o.rotate_every), seconds(duration));
  }
  if (o.rotates() && o.rotate_every < 2s) {
    return "--rotate-every must be at least 2s (or 0: off): the receiver rotates a fifth of it, "
           "at least 1s, before the venue's limit";
  }
  return std::nullopt;
}

std::string program_help(const std::string& program, const std::string& directory,
                         const std::string& log_file) {
  testing::detail::SpawnRequest request;
  request.argv = {program, "--help"};
  request.directory = directory;
  request.log_file = log_file;
  request.user = testing::detail::ServerUser{};
  const pid_t pid = testing::detail::spawn_process(request);
  const auto status = testing::detail::wait_child(pid, Clock::now() + 10s);
  if (!status) {
    ::kill(pid, SIGKILL);
    testing::detail::wait_child(pid, Clock::now() + 10s);
    throw std::runtime_error(program + " --help did not finish within 10 s");
  }
  std::ifstream in(log_file);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool help_has_flag(std::string_view help, std::string_view flag) {
  // "--keep-trading" followed by a blank, the end of a line or "[=BOOL]" (the help of a
  // boolean), not "--keep-trading-x".
  for (std::size_t at = help.find(flag); at != std::string_view::npos;
       at = help.find(flag, at + 1)) {
    const std::size_t end = at + flag.size();
    if (end == help.size() || help[end] == ' ' || help[end] == '\n' || help[end] == '=' ||
        help[end] == '[') {
      return true;
    }
  }
  return false;
}

std::string MissingRanges::text() const {
  std::string out;
  for (const auto& [low, high] : ranges) {
    if (!out.empty()) out += ", ";
    out += low == high ? std::to_string(low) : fmt::format("{}..{}", low, high);
  }
  if (count > static_cast<std::int64_t>(ranges.size())) {
    out += fmt::format(", ... ({} ranges)", count);
  }
  return out;
}

MissingRanges missing_ranges(PgConnection& pg, const std::string& symbol, std::int64_t first,
                             std::int64_t last, std::size_t limit) {
  // The ids present plus first - 1 and last + 1 as fences; a range is missing between two
  // neighbours more than one apart.
  const std::string holes =
      "(SELECT previous + 1 AS low, trade_id - 1 AS high FROM"
      " (SELECT trade_id, lag(trade_id) OVER (ORDER BY trade_id) AS previous FROM"
      "  (SELECT DISTINCT trade_id FROM ticks WHERE symbol = $1"
      "     AND trade_id BETWEEN $2::bigint AND $3::bigint"
      "   UNION SELECT $2::bigint - 1 UNION SELECT $3::bigint + 1) ids) pairs"
      " WHERE trade_id > previous + 1)";
  const std::vector<std::string> params = {symbol, std::to_string(first), std::to_string(last)};
  MissingRanges result;
  result.count = pg.query_int("SELECT count(*) FROM " + holes + " h", params);
  for (const auto& row :
       pg.query("SELECT low, high FROM " + holes + " h ORDER BY low LIMIT " + std::to_string(limit),
                params)) {
    result.ranges.emplace_back(cell_int(row.at(0)).value_or(0), cell_int(row.at(1)).value_or(0));
  }
  return result;
}

bool ReceiverRun::alive_during(std::int64_t begin_ms, std::int64_t end_ms) const {
  return started_ms <= end_ms && (!killed_ms || *killed_ms >= begin_ms);
}

std::optional<std::int64_t> receiver_total(const Summaries& summaries,
                                           const std::vector<ReceiverRun>& runs,
                                           std::string_view key) {
  std::optional<std::int64_t> total;
  for (const auto& run : runs) {
    const auto it = summaries.find(run.name);
    if (it == summaries.end()) continue;
    total = total.value_or(0) + json_int(it->second, key).value_or(0);
  }
  return total;
}

std::size_t receiver_summaries(const Summaries& summaries, const std::vector<ReceiverRun>& runs) {
  return static_cast<std::size_t>(std::count_if(
      runs.begin(), runs.end(), [&](const auto& run) { return summaries.count(run.name) > 0; }));
}

const std::vector<std::pair<std::string_view, std::string_view>>& tape_counters() {
  static const std::vector<std::pair<std::string_view, std::string_view>> counters = {
      {"backfilled", "backfilled (REST)"},
      {"backfill_ranges", "backfill ranges"},
      {"backfill_unrecoverable", "unrecoverable ids"},
      {"duplicates_dropped", "duplicates dropped"},
  };
  return counters;
}

namespace {

/// Further counters of the receiver shown on one line (absent ones left out).
constexpr std::string_view kTapeDetails[] = {
    "backfill_requests", "backfill_retries", "backfill_throttled", "gaps",
    "missing_trades",    "reconnects",       "rotations",          "rotation_failures"};

std::string runs_text(const Summaries& summaries, const std::vector<ReceiverRun>& runs) {
  std::vector<std::string> parts;
  for (const auto& run : runs) {
    std::string part = fmt::format("{} from {:.1f}s", run.name, run.started_at_s);
    if (run.killed_at_s) part += fmt::format(" to {:.1f}s (killed)", *run.killed_at_s);
    if (summaries.count(run.name) == 0) part += ", no summary";
    parts.push_back(std::move(part));
  }
  std::string out;
  for (const auto& part : parts) out += (out.empty() ? "" : "; ") + part;
  return out;
}

}  // namespace

void print_tape_report(const std::function<void(const std::string&)>& line,
                       const Summaries& summaries, const std::vector<ReceiverRun>& runs,
                       const std::vector<InjectedFault>& faults, const TapeFaultOptions& options,
                       std::optional<bool> keep_trading) {
  line("");
  line(fmt::format("Tape repair (ts-receiver, {} run{}, {} summar{}; summed)", runs.size(),
                   runs.size() == 1 ? "" : "s", receiver_summaries(summaries, runs),
                   receiver_summaries(summaries, runs) == 1 ? "y" : "ies"));
  for (const auto& [key, label] : tape_counters()) {
    const auto value = receiver_total(summaries, runs, key);
    line(fmt::format("  {:<26}{:>12}", label, value ? std::to_string(*value) : "-"));
  }
  std::vector<std::string> details;
  for (const auto key : kTapeDetails) {
    bool present = false;
    for (const auto& run : runs) {
      const auto it = summaries.find(run.name);
      if (it != summaries.end() && json_member(it->second, key) != nullptr) present = true;
    }
    if (present) {
      details.push_back(
          fmt::format("{} {}", key, receiver_total(summaries, runs, key).value_or(0)));
    }
  }
  if (!details.empty()) {
    std::string text;
    for (const auto& d : details) text += (text.empty() ? "" : ", ") + d;
    line(fmt::format("  {:<26}{}", "receiver counters", text));
  }
  if (runs.size() > 1) line(fmt::format("  {:<26}{}", "receiver runs", runs_text(summaries, runs)));
  line(fmt::format(
      "  {:<26}{}", "venue keeps trading",
      !keep_trading ? std::string("-")
      : *keep_trading
          ? std::string("yes (ts-feed-sim --keep-trading)")
          : std::string("no: this ts-feed-sim has no --keep-trading (it pauses while no one "
                        "subscribes)")));
  if (options.rotates()) {
    line(fmt::format("  {:<26}venue lifetime {}, receiver rotates {} before", "rotation",
                     seconds(options.rotate_every), seconds(options.rotate_before())));
  }
  if (faults.empty()) return;
  line("");
  line("Faults injected");
  for (const auto& f : faults) {
    line(fmt::format("  {:7.1f}s  {:<16} {:6.2f} s  {}", f.at_s, f.kind, f.seconds, f.detail));
  }
}

void add_tape_json(json::object& report, const Summaries& summaries,
                   const std::vector<ReceiverRun>& runs, const std::vector<InjectedFault>& faults,
                   const TapeFaultOptions& options, std::optional<bool> keep_trading) {
  json::object tape;
  const auto value = [&](std::string_view key) {
    const auto total = receiver_total(summaries, runs, key);
    return total ? json::value(*total) : json::value(nullptr);
  };
  for (const auto& [key, label] : tape_counters()) tape[key] = value(key);
  for (const auto key : kTapeDetails) tape[key] = value(key);
  json::array run_list;
  for (const auto& run : runs) {
    json::object o;
    o["name"] = run.name;
    o["started_at_s"] = run.started_at_s;
    o["killed_at_s"] = run.killed_at_s ? json::value(*run.killed_at_s) : json::value(nullptr);
    o["summary"] = summaries.count(run.name) > 0;
    run_list.push_back(std::move(o));
  }
  tape["receiver_runs"] = std::move(run_list);
  tape["keep_trading"] = keep_trading ? json::value(*keep_trading) : json::value(nullptr);
  const auto ms_or_null = [](std::chrono::milliseconds d, bool on) {
    return on ? json::value(static_cast<double>(d.count()) / 1000.0) : json::value(nullptr);
  };
  tape["kill_receiver_at_s"] = ms_or_null(options.kill_receiver_at, options.kills());
  tape["receiver_down_s"] = ms_or_null(options.receiver_down, options.kills());
  tape["drop_feed_at_s"] = ms_or_null(options.drop_feed_at, options.drops());
  tape["rotate_every_s"] = ms_or_null(options.rotate_every, options.rotates());
  tape["rotate_before_s"] = ms_or_null(options.rotate_before(), options.rotates());
  report["tape"] = std::move(tape);
  json::array list;
  for (const auto& f : faults) {
    json::object o;
    o["at_s"] = f.at_s;
    o["kind"] = f.kind;
    o["seconds"] = f.seconds;
    o["detail"] = f.detail;
    list.push_back(std::move(o));
  }
  report["faults_injected"] = std::move(list);
}

// ---- TapeFaults ------------------------------------------------------------------------------

TapeFaults::TapeFaults(TapeFaultOptions options, TapeHooks hooks)
    : options_(options),
      hooks_(std::move(hooks)),
      kill_due_(options_.kills()),
      drop_due_(options_.drops()) {}

TapeFaults::~TapeFaults() = default;

void TapeFaults::prepare(const std::string& feed_sim, const std::string& receiver,
                         const std::string& run_dir, std::vector<std::string>& feed_args,
                         std::vector<std::string>& receiver_args) {
  const std::string feed_help = program_help(feed_sim, run_dir, run_dir + "/ts-feed-sim.help");
  keep_trading_ = help_has_flag(feed_help, "--keep-trading");
  if (*keep_trading_) {
    feed_args.emplace_back("--keep-trading");
  } else {
    hooks_.note("ts-feed-sim has no --keep-trading: it pauses while no connection is subscribed");
    if (options_.kills() || options_.drops()) {
      hooks_.fail(
          "ts-feed-sim has no --keep-trading: a receiver kill or a venue drop does not leave "
          "the venue trading on (build ts-feed-sim with issue 16's --keep-trading)");
    }
  }
  if (!options_.rotates()) return;
  const std::string receiver_help = program_help(receiver, run_dir, run_dir + "/ts-receiver.help");
  for (const auto& [help, program, flag] :
       {std::tuple{&feed_help, "ts-feed-sim", "--max-connection-lifetime"},
        std::tuple{&receiver_help, "ts-receiver", "--connection-lifetime"},
        std::tuple{&receiver_help, "ts-receiver", "--rotate-before"}}) {
    if (!help_has_flag(*help, flag)) {
      throw std::runtime_error(fmt::format(
          "--rotate-every needs {} {} (issue 16's venue limits), which this build does not have",
          program, flag));
    }
  }
  feed_args.insert(feed_args.end(), {"--max-connection-lifetime", seconds(options_.rotate_every)});
  receiver_args.insert(receiver_args.end(),
                       {"--connection-lifetime", seconds(options_.rotate_every), "--rotate-before",
                        seconds(options_.rotate_before())});
}

std::uint16_t TapeFaults::receiver_port(std::uint16_t feed_port) {
  if (!options_.drops()) return feed_port;
  proxy_ = std::make_unique<testing::FaultProxy>("127.0.0.1", feed_port);
  proxy_->start();
  hooks_.note(fmt::format(
      "ts-receiver reaches ts-feed-sim through a relay on 127.0.0.1:{} (--drop-feed-at)",
      proxy_->port()));
  return proxy_->port();
}

Child& TapeFaults::start_receiver(const std::string& program, std::vector<std::string> args) {
  program_ = program;
  args_ = std::move(args);
  return spawn_run();
}

/// A run of ts-receiver (the first, or the next after a kill): same flags, its own name, log
/// and summary file.
Child& TapeFaults::spawn_run() {
  ReceiverRun run;
  const std::size_t number = runs_.size() + 1;
  run.name = number == 1 ? "ts-receiver" : fmt::format("ts-receiver#{}", number);
  run.started_at_s = number == 1 ? 0.0 : hooks_.since_start();
  run.started_ms = unix_ms();
  const std::string summary =
      number == 1 ? "ts-receiver.summary.json" : fmt::format("ts-receiver-{}.summary.json", number);
  Child& child = hooks_.spawn_receiver(run.name, program_, args_, summary);
  runs_.push_back(std::move(run));
  current_ = &child;
  return child;
}

bool TapeFaults::step(std::chrono::milliseconds elapsed) {
  if (kill_due_ && elapsed >= options_.kill_receiver_at) {
    kill_due_ = false;
    kill_receiver();
    return true;
  }
  if (back_at_ && Clock::now() >= *back_at_) {
    restart_receiver();
    return true;
  }
  if (drop_due_ && elapsed >= options_.drop_feed_at) {
    drop_due_ = false;
    drop_feed();
    return true;
  }
  return false;
}

bool TapeFaults::done() const {
  return !kill_due_ && !back_at_ && !drop_due_;
}

/// --kill-receiver-at: SIGKILL to the receiver's PID; started again --receiver-down later.
void TapeFaults::kill_receiver() {
  Child& receiver = *current_;
  InjectedFault fault{hooks_.since_start(), "receiver-kill", 0, ""};
  hooks_.note(fmt::format("killing {} (pid {}) with SIGKILL; it starts again in {}",
                          receiver.name(), receiver.pid(), seconds(options_.receiver_down)));
  down_ = {};
  down_.label = fmt::format("ts-receiver kill at {:.1f} s", fault.at_s);
  down_.begin_ms = unix_ms();
  const auto begin = Clock::now();
  hooks_.kill(receiver);
  hooks_.receiver_gone(receiver);
  current_ = nullptr;
  runs_.back().killed_at_s = fault.at_s;
  runs_.back().killed_ms = down_.begin_ms;
  back_at_ = Clock::now() + options_.receiver_down;
  fault.seconds = seconds_since(begin);
  fault.detail = fmt::format("{} pid {}: {}", receiver.name(), receiver.pid(), receiver.describe());
  faults_.push_back(std::move(fault));
}

void TapeFaults::restart_receiver() {
  back_at_.reset();
  const double down_s = hooks_.since_start() - runs_.back().killed_at_s.value_or(0);
  const Child& child = spawn_run();
  hooks_.note(fmt::format("started {} (pid {}) with the same flags, {:.1f} s after the kill",
                          child.name(), child.pid(), down_s));
  down_.end_ms = unix_ms();
  down_.orders_flowing = hooks_.orders_flowing();
  windows_.push_back(down_);
  faults_.push_back({hooks_.since_start(), "receiver-start", 0,
                     fmt::format("{} pid {}, down {:.1f} s", child.name(), child.pid(), down_s)});
}

/// --drop-feed-at: the relay resets every connection of the receiver, both sides.
void TapeFaults::drop_feed() {
  InjectedFault fault{hooks_.since_start(), "venue-drop", 0, ""};
  TapeWindow window;
  window.label = fmt::format("venue drop at {:.1f} s", fault.at_s);
  window.begin_ms = unix_ms();
  const auto begin = Clock::now();
  const auto open = proxy_->active_connections();
  proxy_->cut_all();
  window.end_ms = unix_ms();
  window.orders_flowing = hooks_.orders_flowing();
  fault.seconds = seconds_since(begin);
  fault.detail =
      fmt::format("{} connection(s) of {} reset (RST both sides)", open, runs_.back().name);
  hooks_.note("venue drop: " + fault.detail);
  if (open == 0) hooks_.fail(window.label + ": the receiver had no connection to drop");
  dropped_run_ = runs_.size() - 1;
  windows_.push_back(std::move(window));
  faults_.push_back(std::move(fault));
}

void TapeFaults::verify(const Summaries& summaries) {
  if (options_.kills() && runs_.size() < 2) {
    hooks_.fail(
        fmt::format("a receiver kill was planned at {} but the receiver was not started "
                    "again",
                    seconds(options_.kill_receiver_at)));
  }
  if (options_.drops() && !dropped_run_) {
    hooks_.fail(fmt::format("a venue drop was planned at {} but did not happen",
                            seconds(options_.drop_feed_at)));
  }
  if (proxy_ && proxy_->connection_errors() > 0) {
    hooks_.note(
        fmt::format("the relay of --drop-feed-at counted {} connection error(s) (its "
                    "resets included)",
                    proxy_->connection_errors()));
  }
  // The run that met the drop saw its connection go (a reconnect), when it wrote a summary.
  if (dropped_run_) {
    const std::vector<ReceiverRun> run{runs_.at(*dropped_run_)};
    const auto reconnects = receiver_total(summaries, run, "reconnects");
    if (!reconnects) {
      hooks_.note(fmt::format("venue drop: not judged for {}: no summary", run.front().name));
    } else if (*reconnects < 1) {
      hooks_.fail(
          fmt::format("venue drop: {}'s summary shows reconnects {}: it did not see the "
                      "drop",
                      run.front().name, *reconnects));
    }
  }
  if (options_.rotates()) {
    const auto rotations = receiver_total(summaries, runs_, "rotations");
    if (rotations && *rotations < 1) {
      hooks_.fail(fmt::format("--rotate-every {}: the receiver's summaries show no rotation",
                              seconds(options_.rotate_every)));
    }
  }
  if (const auto lost = receiver_total(summaries, runs_, "backfill_unrecoverable");
      lost && *lost > 0) {
    hooks_.fail(
        fmt::format("ts-receiver reported {} trade id(s) as unrecoverable (the venue no "
                    "longer had them): the tape has a hole it could not repair",
                    *lost));
  }
}

}  // namespace trading_shared::e2e

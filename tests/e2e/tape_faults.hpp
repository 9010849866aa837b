#pragma once
/// @file
/// ts-pipeline's faults of the tape (issue 16): the receiver killed and started again, the
/// venue dropping the receiver's connection, the venue's connection lifetime with the
/// receiver's planned rotation; and what the report says about them: the faults injected with
/// their times, and the receiver's tape repair (backfilled trades, backfill ranges, ids the
/// venue no longer had, live duplicates dropped) summed over the receiver's runs.

#include <trading_shared/core/config.hpp>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "e2e_support.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trading_shared::testing {
class FaultProxy;
}

namespace trading_shared::e2e {

struct TapeFaultOptions {
  std::chrono::milliseconds kill_receiver_at{0};
  std::chrono::milliseconds receiver_down{std::chrono::seconds(10)};
  std::chrono::milliseconds drop_feed_at{0};
  std::chrono::milliseconds rotate_every{0};

  bool kills() const { return kill_receiver_at.count() > 0; }
  bool drops() const { return drop_feed_at.count() > 0; }
  bool rotates() const { return rotate_every.count() > 0; }
  /// A fault that leaves the venue trading while the receiver does not hear it.
  bool any() const { return kills() || drops() || rotates(); }
  /// The receiver's --rotate-before: a fifth of the lifetime, at least 1 s.
  std::chrono::milliseconds rotate_before() const;
};

/// Registers --kill-receiver-at, --receiver-down, --drop-feed-at, --rotate-every.
void add_tape_fault_flags(core::ConfigLoader& loader, TapeFaultOptions& options);
/// The first problem with the flags, as the message of a configuration error.
std::optional<std::string> check_tape_fault_options(const TapeFaultOptions& options,
                                                    std::chrono::milliseconds duration);

/// What `program --help` prints (run to its end, 10 s at most; its output goes to
/// `log_file`). Throws when it cannot be run or does not finish.
std::string program_help(const std::string& program, const std::string& directory,
                         const std::string& log_file);
/// True when a help text documents `flag` ("--keep-trading").
bool help_has_flag(std::string_view help, std::string_view flag);

/// The ids of first..last that `symbol` has no row for in ticks, as ranges (lowest first, at
/// most `limit` of them), and how many ranges there are in all.
struct MissingRanges {
  std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
  std::int64_t count = 0;
  /// "3965..3967, 9000, ... (12 ranges)"
  std::string text() const;
};
MissingRanges missing_ranges(PgConnection& pg, const std::string& symbol, std::int64_t first,
                             std::int64_t last, std::size_t limit = 5);

/// One run of ts-receiver: the first, or one started again after a kill.
struct ReceiverRun {
  std::string name;  ///< "ts-receiver", then "ts-receiver#2", ... (the summaries' key)
  double started_at_s = 0;
  std::int64_t started_ms = 0;  ///< Unix ms
  std::optional<double> killed_at_s;
  std::optional<std::int64_t> killed_ms;
  /// Alive at some point of [begin_ms, end_ms] (Unix ms)?
  bool alive_during(std::int64_t begin_ms, std::int64_t end_ms) const;
};

/// A fault injected at a planned time (the soak's random faults have their own table).
struct InjectedFault {
  double at_s = 0;     ///< since the start of the run
  std::string kind;    ///< "redis-restart", "receiver-kill", "receiver-start", "venue-drop"
  double seconds = 0;  ///< how long the injection took
  std::string detail;
};

using Summaries = std::map<std::string, boost::json::value>;

/// The sum of a counter over the receiver runs that wrote a summary (an absent field reads as
/// 0, so that a receiver without the field still adds up); nullopt when no run wrote one.
std::optional<std::int64_t> receiver_total(const Summaries& summaries,
                                           const std::vector<ReceiverRun>& runs,
                                           std::string_view key);
/// How many of the runs wrote a summary.
std::size_t receiver_summaries(const Summaries& summaries, const std::vector<ReceiverRun>& runs);

/// The counters of the tape repair, in report order: (summary field, report label).
const std::vector<std::pair<std::string_view, std::string_view>>& tape_counters();

/// The report's "Tape" and "Faults injected" sections, a line at a time.
void print_tape_report(const std::function<void(const std::string&)>& line,
                       const Summaries& summaries, const std::vector<ReceiverRun>& runs,
                       const std::vector<InjectedFault>& faults, const TapeFaultOptions& options,
                       std::optional<bool> keep_trading);
/// The same as JSON: {"tape": {...}, "faults_injected": [...]} members added to `report`.
void add_tape_json(boost::json::object& report, const Summaries& summaries,
                   const std::vector<ReceiverRun>& runs, const std::vector<InjectedFault>& faults,
                   const TapeFaultOptions& options, std::optional<bool> keep_trading);

/// A time in which the receiver did not hear the venue (kill to restart, the drop): for
/// ts-pipeline's check that every symbol traded before and after it (mid-stream).
struct TapeWindow {
  std::string label;                      ///< "ts-receiver kill at 18.0 s"
  std::int64_t begin_ms = 0, end_ms = 0;  ///< Unix ms
  bool orders_flowing = false;
};

/// What TapeFaults needs of ts-pipeline.
struct TapeHooks {
  /// Starts a receiver run (ts-pipeline's spawn: name, program, args, summary file name) and
  /// counts it among the daemons.
  std::function<Child&(std::string, const std::string&, std::vector<std::string>, std::string)>
      spawn_receiver;
  /// The run was killed: no longer among the daemons.
  std::function<void(Child&)> receiver_gone;
  /// Children::kill.
  std::function<void(Child&)> kill;
  std::function<void(const std::string&)> note;
  std::function<void(std::string)> fail;
  std::function<double()> since_start;
  std::function<bool()> orders_flowing;
};

/// The receiver's runs and the tape faults of one ts-pipeline run, from the flags to the
/// report. Main thread only (the relay of --drop-feed-at forwards on its own thread).
class TapeFaults {
 public:
  TapeFaults(TapeFaultOptions options, TapeHooks hooks);
  ~TapeFaults();
  TapeFaults(const TapeFaults&) = delete;
  TapeFaults& operator=(const TapeFaults&) = delete;

  const TapeFaultOptions& options() const { return options_; }

  /// Reads both binaries' --help (logs in `run_dir`) and adds the flags they need: ts-feed-sim
  /// --keep-trading when it has it (a kill or a drop without it fails the run), the rotation
  /// flags of --rotate-every (throws when a binary does not have them).
  void prepare(const std::string& feed_sim, const std::string& receiver, const std::string& run_dir,
               std::vector<std::string>& feed_args, std::vector<std::string>& receiver_args);
  /// The port ts-receiver connects to: the simulator's, or with --drop-feed-at a relay's.
  std::uint16_t receiver_port(std::uint16_t feed_port);
  /// The first run of ts-receiver (`args` complete, without --summary-file).
  Child& start_receiver(const std::string& program, std::vector<std::string> args);
  /// Injects what is due `elapsed` after the start; true when it did something.
  bool step(std::chrono::milliseconds elapsed);
  /// Nothing planned is still to come (the receiver is not down).
  bool done() const;
  /// Adds a fault injected by ts-pipeline (a server restart) to the list.
  void record(InjectedFault fault) { faults_.push_back(std::move(fault)); }

  const std::vector<ReceiverRun>& runs() const { return runs_; }
  const std::vector<TapeWindow>& windows() const { return windows_; }
  /// The faults so far (server restarts recorded here included; "receiver-start" ends a kill).
  const std::vector<InjectedFault>& faults() const { return faults_; }
  std::optional<bool> keep_trading() const { return keep_trading_; }

  /// The faults happened and were seen; nothing unrecoverable (failures through the hook).
  void verify(const Summaries& summaries);
  void print_report(const std::function<void(const std::string&)>& line,
                    const Summaries& summaries) const {
    print_tape_report(line, summaries, runs_, faults_, options_, keep_trading_);
  }
  void add_json(boost::json::object& report, const Summaries& summaries) const {
    add_tape_json(report, summaries, runs_, faults_, options_, keep_trading_);
  }

 private:
  Child& spawn_run();
  void kill_receiver();
  void restart_receiver();
  void drop_feed();

  TapeFaultOptions options_;
  TapeHooks hooks_;
  std::string program_;
  std::vector<std::string> args_;
  std::vector<ReceiverRun> runs_;
  Child* current_ = nullptr;  ///< the running receiver (nullptr while it is down)
  bool kill_due_ = false, drop_due_ = false;
  std::optional<Clock::time_point> back_at_;  ///< while the receiver is down
  TapeWindow down_;
  std::unique_ptr<testing::FaultProxy> proxy_;
  std::optional<std::size_t> dropped_run_;  ///< the run that met the venue drop
  std::optional<bool> keep_trading_;
  std::vector<InjectedFault> faults_;
  std::vector<TapeWindow> windows_;
};

}  // namespace trading_shared::e2e

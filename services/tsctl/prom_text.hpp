#pragma once
/// @file
/// A parser of the Prometheus text exposition format (version 0.0.4), for `tsctl status-page`:
/// what a service's `/metrics` answers, as samples with their labels and the families' types.
/// Comments other than `# HELP` / `# TYPE` are ignored; a sample's timestamp is read and
/// dropped. A malformed line is refused with `PromParseError` naming the line and the problem.

#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::services::tsctl {

/// Label pairs, sorted by name (so that equal label sets compare equal).
using PromLabels = std::vector<std::pair<std::string, std::string>>;

struct PromSample {
  std::string name;  ///< e.g. `ts_redis_round_trip_seconds_bucket`.
  PromLabels labels;
  double value = 0;
};

struct PromScrape {
  std::vector<PromSample> samples;
  /// Family name -> type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
  std::map<std::string, std::string, std::less<>> types;
};

class PromParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses a whole exposition. @throws PromParseError ("line N: ...") on a malformed line.
PromScrape parse_prometheus_text(std::string_view text);

/// The value of a label, or "" when the set does not have it.
std::string_view label_of(const PromLabels& labels, std::string_view name) noexcept;

/// `name{a="x",b="y"}` (values escaped as in the format): one series' identity.
std::string series_key(std::string_view name, const PromLabels& labels);

}  // namespace trading_shared::services::tsctl

#include "report_series.hpp"

#include <boost/json.hpp>

#include "common/keys.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <stdexcept>
#include <utility>

namespace trading_shared::e2e {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

/// "{1.5,2,30.25}" (a float8[] as text) as numbers; empty for NULL or anything else.
std::vector<double> parse_float_array(const std::optional<std::string>& cell) {
  std::vector<double> values;
  if (!cell || cell->size() < 2 || cell->front() != '{' || cell->back() != '}') return values;
  std::string_view rest(*cell);
  rest = rest.substr(1, rest.size() - 2);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string item(rest.substr(0, comma));
    try {
      values.push_back(std::stod(item));
    } catch (const std::exception&) {
      return {};  // "NULL" or garbage: no percentiles for the second
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return values;
}

json::value optional_json(const std::optional<std::int64_t>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}
json::value optional_json(const std::optional<double>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

std::string rate_text(const std::optional<double>& rate) {
  return rate ? fmt::format("{:.0f}/s", *rate) : std::string("-/s");
}
std::string count_text(const std::optional<std::int64_t>& count) {
  return count ? std::to_string(*count) : std::string("-");
}
std::string ms_text(const std::optional<double>& ms) {
  return ms ? fmt::format("{:.1f}", *ms) : std::string("-");
}

}  // namespace

std::vector<SecondPoint> query_seconds(PgConnection& pg, std::int64_t start_unix_ms) {
  // A 20-minute soak has millions of rows: the sorts of the percentiles in memory, and more
  // than the connection's default 30 s.
  pg.query("SET work_mem = '256MB'");
  pg.query("SET statement_timeout = '300s'");
  const std::string start = std::to_string(start_unix_ms);
  const auto second_of = [](std::string_view column) {
    return fmt::format("floor((extract(epoch FROM {}) * 1000 - $1::bigint) / 1000)::bigint",
                       column);
  };
  std::map<std::int64_t, SecondPoint> by_second;
  const auto point = [&](std::int64_t t) -> SecondPoint& {
    SecondPoint& p = by_second[t];
    p.t_s = t;
    return p;
  };
  for (const auto& row :
       pg.query(fmt::format("SELECT {}, count(*) FROM ticks GROUP BY 1", second_of("trade_time")),
                {start})) {
    if (const auto t = cell_int(row.at(0))) point(*t).sent = cell_int(row.at(1)).value_or(0);
  }
  const auto rows = pg.query(
      fmt::format("SELECT s, count(*), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP "
                  "(ORDER BY ms), max(ms)"
                  " FROM (SELECT {} AS s, extract(epoch FROM recorded_at - event_time) * 1000 AS ms"
                  "       FROM ticks) t GROUP BY s",
                  second_of("recorded_at")),
      {start});
  for (const auto& row : rows) {
    const auto t = cell_int(row.at(0));
    if (!t) continue;
    SecondPoint& p = point(*t);
    p.persisted = cell_int(row.at(1)).value_or(0);
    const auto percentiles = parse_float_array(row.at(2));
    if (percentiles.size() == 3) {
      p.p50_ms = percentiles[0];
      p.p90_ms = percentiles[1];
      p.p99_ms = percentiles[2];
    }
    p.max_ms = cell_double(row.at(3));
  }
  std::vector<SecondPoint> seconds;
  if (by_second.empty()) return seconds;
  const std::int64_t first = std::min<std::int64_t>(0, by_second.begin()->first);
  const std::int64_t last = by_second.rbegin()->first;
  for (std::int64_t t = first; t <= last; ++t) {
    const auto it = by_second.find(t);
    if (it != by_second.end()) {
      seconds.push_back(it->second);
    } else {
      SecondPoint empty;
      empty.t_s = t;
      seconds.push_back(empty);
    }
  }
  return seconds;
}

void mark_faults(std::vector<SecondPoint>& seconds, const std::vector<FaultSpan>& faults) {
  for (auto& p : seconds) {
    const double begin = static_cast<double>(p.t_s);
    const double end = begin + 1.0;
    p.faults = std::count_if(faults.begin(), faults.end(), [&](const FaultSpan& f) {
      return f.start_s < end && std::max(f.end_s, f.start_s) >= begin;
    });
  }
}

std::string ProgressSample::line() const {
  std::string text = fmt::format(
      "progress {:6.1f}s | received {} ({}) | persisted {} ({}) | lag {} | latency "
      "p50 {} ms p99 {} ms | faults {}",
      t_s, count_text(received), rate_text(received_per_s), count_text(persisted),
      rate_text(persisted_per_s), count_text(lag()), ms_text(p50_ms), ms_text(p99_ms), faults);
  if (!last_fault.empty()) text += fmt::format(" (last: {})", last_fault);
  if (!error.empty()) text += " | not read: " + error;
  return text;
}

ProgressSample ProgressProbe::take(double t_s, std::int64_t now_unix_ms, std::int64_t faults,
                                   std::string last_fault) {
  ProgressSample sample;
  sample.t_s = t_s;
  sample.faults = faults;
  sample.last_fault = std::move(last_fault);
  std::vector<std::string> errors;
  // PostgreSQL first, then Redis: rows are counted before the trades written, so that the
  // lag (written - rows) is never below the true one.
  try {
    PgConnection pg(dsn_);
    // One pass: every row, and the latency of those recorded since the previous sample.
    const std::string since = std::to_string(previous_unix_ms_.value_or(now_unix_ms - 5000));
    const auto rows = pg.query(
        "SELECT count(*),"
        "  percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE recent),"
        "  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FILTER (WHERE recent)"
        " FROM (SELECT extract(epoch FROM recorded_at - event_time) * 1000 AS ms,"
        "         recorded_at > 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
        "           AS recent"
        "       FROM ticks) t",
        {since});
    sample.persisted = cell_int(rows.at(0).at(0));
    sample.p50_ms = cell_double(rows.at(0).at(1));
    sample.p99_ms = cell_double(rows.at(0).at(2));
  } catch (const std::runtime_error& e) {
    errors.push_back(fmt::format("PostgreSQL ({})", e.what()));
  }
  try {
    RedisConnection redis(redis_host_, redis_port_, 2s);
    std::int64_t received = 0;
    for (std::size_t bucket = 0; bucket < services::kTradeBuckets; ++bucket) {
      const auto reply = redis.command({"HGETALL", services::bucket_last_key(bucket)});
      for (std::size_t i = 1; i < reply.items.size(); i += 2) {
        if (const auto last = services::LastTrade::parse(reply.items[i].text)) {
          received += last->trade_id;
        }
      }
    }
    sample.received = received;
  } catch (const std::runtime_error& e) {
    errors.push_back(fmt::format("Redis ({})", e.what()));
  }
  for (const auto& error : errors) sample.error += (sample.error.empty() ? "" : "; ") + error;
  if (!samples_.empty()) {
    const ProgressSample& previous = samples_.back();
    const double interval = t_s - previous.t_s;
    if (interval > 0) {
      if (sample.received && previous.received) {
        sample.received_per_s =
            static_cast<double>(*sample.received - *previous.received) / interval;
      }
      if (sample.persisted && previous.persisted) {
        sample.persisted_per_s =
            static_cast<double>(*sample.persisted - *previous.persisted) / interval;
      }
    }
  } else if (t_s > 0) {
    if (sample.received) sample.received_per_s = static_cast<double>(*sample.received) / t_s;
    if (sample.persisted) sample.persisted_per_s = static_cast<double>(*sample.persisted) / t_s;
  }
  previous_unix_ms_ = now_unix_ms;
  samples_.push_back(sample);
  return sample;
}

json::object series_json(std::int64_t start_unix_ms, const std::vector<SecondPoint>& seconds,
                         const std::vector<FaultSpan>& faults,
                         const std::vector<ProgressSample>& progress) {
  json::object series;
  series["interval_s"] = 1;
  series["start_unix_ms"] = start_unix_ms;
  json::array points;
  for (const auto& p : seconds) {
    json::object o;
    o["t_s"] = p.t_s;
    o["sent"] = p.sent;
    o["persisted"] = p.persisted;
    o["latency_p50_ms"] = optional_json(p.p50_ms);
    o["latency_p90_ms"] = optional_json(p.p90_ms);
    o["latency_p99_ms"] = optional_json(p.p99_ms);
    o["latency_max_ms"] = optional_json(p.max_ms);
    o["faults"] = p.faults;
    points.push_back(std::move(o));
  }
  series["seconds"] = std::move(points);
  json::array spans;
  for (const auto& f : faults) {
    json::object o;
    o["start_s"] = f.start_s;
    o["end_s"] = f.end_s;
    o["kind"] = f.kind;
    o["label"] = f.label;
    spans.push_back(std::move(o));
  }
  series["faults"] = std::move(spans);
  json::array samples;
  for (const auto& s : progress) {
    json::object o;
    o["t_s"] = s.t_s;
    o["received"] = optional_json(s.received);
    o["persisted"] = optional_json(s.persisted);
    o["received_per_s"] = optional_json(s.received_per_s);
    o["persisted_per_s"] = optional_json(s.persisted_per_s);
    o["lag"] = optional_json(s.lag());
    o["latency_p50_ms"] = optional_json(s.p50_ms);
    o["latency_p99_ms"] = optional_json(s.p99_ms);
    o["faults"] = s.faults;
    if (!s.error.empty()) o["error"] = s.error;
    samples.push_back(std::move(o));
  }
  series["progress"] = std::move(samples);
  return series;
}

}  // namespace trading_shared::e2e

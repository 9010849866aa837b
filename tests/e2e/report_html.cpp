#include "report_html.hpp"

#include <boost/json.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::e2e {

namespace json = boost::json;

namespace {

// ---- small helpers ----------------------------------------------------------------------------

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const json::value* member(const json::value* value, std::string_view key) {
  if (value == nullptr || !value->is_object()) return nullptr;
  return value->get_object().if_contains(key);
}

std::optional<double> number(const json::value* value) {
  if (value == nullptr) return std::nullopt;
  if (value->is_double()) return value->get_double();
  if (value->is_int64()) return static_cast<double>(value->get_int64());
  if (value->is_uint64()) return static_cast<double>(value->get_uint64());
  return std::nullopt;
}

std::string text_of(const json::value* value) {
  if (value == nullptr || value->is_null()) return "-";
  if (value->is_string()) return std::string(value->get_string());
  if (value->is_double()) return fmt::format("{:.2f}", value->get_double());
  return json::serialize(*value);
}

std::string format_number(double v) {
  if (std::fabs(v) >= 1000 || v == std::floor(v)) return fmt::format("{:.0f}", v);
  if (std::fabs(v) >= 10) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2g}", v);
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`.
double nice_step(double span, int count) {
  if (span <= 0) return 1;
  const double raw = span / count;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * power) return m * power;
  }
  return 10 * power;
}

// ---- charts -------------------------------------------------------------------------------

struct Line {
  std::string name;
  std::string color;
  double width = 1.5;
  bool dashed = false;
  std::vector<std::pair<double, std::optional<double>>> points;  // (x seconds, y)
};

struct Fault {
  double start_s = 0, end_s = 0;
  std::string kind, label;
};

struct Chart {
  Chart(std::string id_, std::string title_, std::string unit_)
      : id(std::move(id_)), title(std::move(title_)), unit(std::move(unit_)) {}
  std::string id, title, unit;
  bool log_y = false;
  bool fault_labels = false;
  double x_min = 0, x_max = 1;
  std::vector<Line> lines;
};

constexpr int kWidth = 1320, kHeight = 250;
constexpr int kLeft = 64, kRight = 16, kTop = 34, kBottom = 30;

std::string svg_chart(const Chart& chart, const std::vector<Fault>& faults) {
  const double plot_w = kWidth - kLeft - kRight;
  const double plot_h = kHeight - kTop - kBottom;
  double y_min = std::numeric_limits<double>::max();
  double y_max = 0;
  double y_lowest = 0;  // linear scale: below 0 when a value is (the lag may be)
  for (const auto& line : chart.lines) {
    for (const auto& [x, y] : line.points) {
      if (y) y_lowest = std::min(y_lowest, *y);
      if (!y || (chart.log_y && *y <= 0)) continue;
      y_min = std::min(y_min, *y);
      y_max = std::max(y_max, *y);
    }
  }
  std::vector<double> ticks;
  double low = 0, high = 1;
  if (chart.log_y) {
    if (y_max <= 0) y_min = 1, y_max = 10;
    low = std::pow(10.0, std::floor(std::log10(y_min)));
    high = std::pow(10.0, std::ceil(std::log10(y_max)));
    if (high <= low) high = low * 10;
    for (double t = low; t <= high * 1.0001; t *= 10) ticks.push_back(t);
  } else {
    high = y_max > 0 ? y_max * 1.08 : 1;
    const double step = nice_step(high - y_lowest, 5);
    high = std::ceil(high / step) * step;
    low = std::floor(y_lowest / step) * step;
    for (int i = 0; low + i * step <= high + step * 1e-4; ++i) ticks.push_back(low + i * step);
  }
  const double x_span = std::max(chart.x_max - chart.x_min, 1.0);
  const auto px = [&](double x) { return kLeft + (x - chart.x_min) / x_span * plot_w; };
  const auto py = [&](double y) {
    double f = 0;
    if (chart.log_y) {
      f = (std::log10(std::max(y, low)) - std::log10(low)) / (std::log10(high) - std::log10(low));
    } else {
      f = (y - low) / (high - low);
    }
    return kTop + (1.0 - std::clamp(f, 0.0, 1.0)) * plot_h;
  };

  std::string svg = fmt::format(
      "<svg id=\"{}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" "
      "width=\"{}\" height=\"{}\" data-x-min=\"{}\" data-x-max=\"{}\" data-left=\"{}\" "
      "data-plot-width=\"{}\">\n",
      chart.id, kWidth, kHeight, kWidth, kHeight, chart.x_min, chart.x_max, kLeft, plot_w);
  svg += fmt::format("<text class=\"title\" x=\"{}\" y=\"18\">{}</text>\n", kLeft,
                     escape(chart.title));
  // Grid and y ticks.
  for (const double t : ticks) {
    const double y = py(t);
    svg += fmt::format(
        "<line class=\"grid\" x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\"/>"
        "<text class=\"tick\" x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
        kLeft, y, kLeft + plot_w, y, kLeft - 6, y + 4, escape(format_number(t)));
  }
  svg += fmt::format(
      "<text class=\"unit\" transform=\"translate(14 {:.0f}) rotate(-90)\" "
      "text-anchor=\"middle\">{}</text>\n",
      kTop + plot_h / 2, escape(chart.unit));
  // x ticks.
  const double x_step = nice_step(x_span, 12);
  for (double t = std::ceil(chart.x_min / x_step) * x_step; t <= chart.x_max + 1e-9; t += x_step) {
    svg += fmt::format(
        "<line class=\"xtick\" x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>"
        "<text class=\"tick\" x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}s</text>\n",
        px(t), kTop + plot_h, kTop + plot_h + 4, kTop + plot_h + 18, format_number(t));
  }
  // Faults: a band each (at least 3 px wide), its label on top where asked.
  std::size_t index = 0;
  for (const auto& f : faults) {
    const double x1 = px(std::clamp(f.start_s, chart.x_min, chart.x_max));
    const double x2 = std::max(px(std::clamp(f.end_s, chart.x_min, chart.x_max)), x1 + 3);
    svg += fmt::format(
        "<rect class=\"fault\" data-kind=\"{}\" x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" "
        "height=\"{}\"><title>{} ({:.1f} s to {:.1f} s)</title></rect>\n",
        escape(f.kind), x1, kTop, x2 - x1, plot_h, escape(f.label), f.start_s, f.end_s);
    if (chart.fault_labels) {
      svg += fmt::format("<text class=\"fault-label\" x=\"{:.1f}\" y=\"{}\">{}</text>\n", x1 + 2,
                         kTop + 11 + 11 * static_cast<int>(index % 3), escape(f.kind));
    }
    ++index;
  }
  // Lines: one path each, a gap where a second has no value.
  for (const auto& line : chart.lines) {
    std::string d;
    bool pen_down = false;
    std::size_t count = 0;
    for (const auto& [x, y] : line.points) {
      if (!y || (chart.log_y && *y <= 0)) {
        pen_down = false;
        continue;
      }
      d += fmt::format("{}{:.1f} {:.1f} ", pen_down ? "L" : "M", px(x), py(*y));
      pen_down = true;
      ++count;
    }
    svg += fmt::format(
        "<path class=\"series\" data-series=\"{}\" data-points=\"{}\" fill=\"none\" "
        "stroke=\"{}\" stroke-width=\"{}\"{} d=\"{}\"/>\n",
        escape(line.name), count, line.color, line.width,
        line.dashed ? " stroke-dasharray=\"4 3\"" : "", d.empty() ? "M0 0" : d);
  }
  // Legend, top right.
  double x = kLeft + plot_w;
  for (auto it = chart.lines.rbegin(); it != chart.lines.rend(); ++it) {
    const double w = 34 + 7.0 * static_cast<double>(it->name.size());
    x -= w;
    svg += fmt::format(
        "<line x1=\"{0:.0f}\" y1=\"14\" x2=\"{1:.0f}\" y2=\"14\" stroke=\"{2}\" "
        "stroke-width=\"3\"/><text class=\"legend\" x=\"{3:.0f}\" y=\"18\">{4}</text>\n",
        x, x + 18, it->color, x + 22, escape(it->name));
  }
  svg += fmt::format(
      "<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n"
      "<line class=\"cursor\" x1=\"-10\" y1=\"{}\" x2=\"-10\" y2=\"{}\"/>\n</svg>\n",
      kLeft, kTop, plot_w, plot_h, kTop, kTop + plot_h);
  return svg;
}

// ---- the page -----------------------------------------------------------------------------

constexpr std::string_view kStyle = R"(
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 16px 24px; color: #1d2733;
  background: #f6f8fa; font-size: 13px; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 15px; margin: 18px 0 6px 0; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 4px; color: white;
  font-weight: bold; margin-left: 8px; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
.config { color: #56606b; margin-bottom: 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0; }
.card { background: white; border: 1px solid #d8dee4; border-radius: 6px; padding: 5px 10px;
  min-width: 96px; }
.card .label { color: #56606b; font-size: 11px; } .card .value { font-size: 17px; font-weight: bold; }
.card.bad .value { color: #c62828; }
.panel { background: white; border: 1px solid #d8dee4; border-radius: 6px; padding: 4px;
  margin: 8px 0; width: fit-content; }
svg.chart text { font-size: 11px; fill: #444; }
svg.chart .title { font-size: 13px; font-weight: bold; fill: #1d2733; }
svg.chart .grid { stroke: #e6e9ed; } svg.chart .xtick { stroke: #999; }
svg.chart .frame { fill: none; stroke: #9aa4ae; }
svg.chart .fault { fill: #e53935; fill-opacity: 0.16; stroke: #e53935; stroke-opacity: 0.5; }
svg.chart .fault-label { fill: #b71c1c; font-size: 10px; }
svg.chart .cursor { stroke: #333; stroke-dasharray: 2 2; }
#readout { font-family: "DejaVu Sans Mono", monospace; color: #333; min-height: 16px; }
table { border-collapse: collapse; background: white; }
td, th { border: 1px solid #d8dee4; padding: 3px 8px; text-align: left; }
th { background: #eef1f4; }
.failures li { color: #c62828; }
)";

/// Hover read-out: the values of the second under the mouse, from the embedded report.
constexpr std::string_view kScript = R"(//<![CDATA[
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var seconds = (data.series && data.series.seconds) || [];
  var readout = document.getElementById('readout');
  function fmt(v) { return v === null || v === undefined ? '-' : (Math.round(v * 10) / 10); }
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    svg.addEventListener('mousemove', function (ev) {
      var box = svg.getBoundingClientRect();
      var scale = svg.viewBox.baseVal.width / box.width;
      var left = +svg.dataset.left, width = +svg.dataset.plotWidth;
      var x = (ev.clientX - box.left) * scale;
      var t = +svg.dataset.xMin + (x - left) / width * (+svg.dataset.xMax - +svg.dataset.xMin);
      var s = Math.floor(t);
      var point = null;
      for (var i = 0; i !== seconds.length; ++i) { if (seconds[i].t_s === s) point = seconds[i]; }
      document.querySelectorAll('svg.chart .cursor').forEach(function (c) {
        c.setAttribute('x1', x); c.setAttribute('x2', x);
      });
      if (point === null) { readout.textContent = ''; return; }
      readout.textContent = 't ' + s + ' s: sent ' + point.sent + '/s, persisted ' +
        point.persisted + '/s, latency p50 ' + fmt(point.latency_p50_ms) + ' ms, p90 ' +
        fmt(point.latency_p90_ms) + ' ms, p99 ' + fmt(point.latency_p99_ms) + ' ms, max ' +
        fmt(point.latency_max_ms) + ' ms, faults ' + point.faults;
    });
  });
})();
//]]>)";

std::string card(std::string_view label, const std::string& value, bool bad = false) {
  return fmt::format(
      "<div class=\"card{}\"><div class=\"label\">{}</div><div class=\"value\">{}</div></div>\n",
      bad ? " bad" : "", escape(label), escape(value));
}

/// The report as JSON text that is safe inside a script element and in XML: `<`, `>` and `&`
/// (only ever inside strings) as \u escapes.
std::string embedded_json(const json::object& report) {
  const std::string text = json::serialize(report);
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '<':
        out += "\\u003c";
        break;
      case '>':
        out += "\\u003e";
        break;
      case '&':
        out += "\\u0026";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

std::string render_report_html(const json::object& report) {
  const json::value root(report);
  const json::value* series = member(&root, "series");
  const json::value* seconds = member(series, "seconds");
  const json::value* spans = member(series, "faults");
  const json::value* progress = member(series, "progress");
  const json::value* config = member(&root, "config");
  const json::value* trades = member(&root, "trades");
  const bool pass = text_of(member(&root, "result")) == "pass";

  std::vector<Fault> faults;
  if (spans != nullptr && spans->is_array()) {
    for (const auto& f : spans->get_array()) {
      faults.push_back({number(member(&f, "start_s")).value_or(0),
                        number(member(&f, "end_s")).value_or(0), text_of(member(&f, "kind")),
                        text_of(member(&f, "label"))});
    }
  }
  Chart throughput("chart-throughput", "Throughput (trades per second)", "trades/s");
  throughput.fault_labels = true;
  throughput.lines = {{"sent (venue trade time)", "#90a4ae", 1.5, false, {}},
                      {"persisted (recorded_at)", "#1565c0", 2.0, false, {}}};
  Chart latency("chart-latency", "Tick-to-row latency per second (event_time to recorded_at)",
                "ms (log)");
  latency.log_y = true;
  latency.lines = {{"p50", "#2e7d32", 1.8, false, {}},
                   {"p90", "#f9a825", 1.5, false, {}},
                   {"p99", "#c62828", 1.8, false, {}},
                   {"max", "#8e24aa", 1.0, true, {}}};
  Chart lag("chart-lag", "Lag (trades written to Redis, not yet rows), progress samples", "trades");
  lag.lines = {{"lag", "#6d4c41", 1.8, false, {}}};
  double x_min = 0, x_max = 1;
  if (seconds != nullptr && seconds->is_array()) {
    for (const auto& p : seconds->get_array()) {
      const double t = number(member(&p, "t_s")).value_or(0);
      x_min = std::min(x_min, t);
      x_max = std::max(x_max, t + 1);
      throughput.lines[0].points.emplace_back(t + 0.5, number(member(&p, "sent")));
      throughput.lines[1].points.emplace_back(t + 0.5, number(member(&p, "persisted")));
      latency.lines[0].points.emplace_back(t + 0.5, number(member(&p, "latency_p50_ms")));
      latency.lines[1].points.emplace_back(t + 0.5, number(member(&p, "latency_p90_ms")));
      latency.lines[2].points.emplace_back(t + 0.5, number(member(&p, "latency_p99_ms")));
      latency.lines[3].points.emplace_back(t + 0.5, number(member(&p, "latency_max_ms")));
    }
  }
  if (progress != nullptr && progress->is_array()) {
    for (const auto& p : progress->get_array()) {
      const double t = number(member(&p, "t_s")).value_or(0);
      x_max = std::max(x_max, t);
      lag.lines[0].points.emplace_back(t, number(member(&p, "lag")));
    }
  }
  if (lag.lines[0].points.empty()) lag.title += " (none: ts-pipeline ran with --progress-every 0)";
  for (const auto& f : faults) x_max = std::max(x_max, f.end_s);
  for (Chart* chart : {&throughput, &latency, &lag}) {
    chart->x_min = x_min;
    chart->x_max = x_max;
  }

  std::string page =
      "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"
      "<meta charset=\"utf-8\"/>\n<title>ts-pipeline report</title>\n<style>";
  page += kStyle;
  page += "</style>\n</head>\n<body>\n";
  page += fmt::format(
      "<h1>ts-pipeline report<span id=\"verdict\" class=\"verdict {}\">{}</span></h1>\n",
      pass ? "pass" : "fail", pass ? "PASS" : "FAIL");
  std::string symbols;
  if (const auto* list = member(config, "symbols"); list != nullptr && list->is_array()) {
    const auto& array = list->get_array();
    symbols = array.size() <= 6 ? std::string() : fmt::format("{} symbols", array.size());
    if (symbols.empty()) {
      for (const auto& s : array) symbols += (symbols.empty() ? "" : ",") + text_of(&s);
    }
  }
  page += fmt::format(
      "<div class=\"config\">{} s at {} trades/s over {}; {} orders/s; seed {}</div>\n",
      escape(text_of(member(config, "duration_s"))), escape(text_of(member(config, "rate"))),
      escape(symbols), escape(text_of(member(config, "order_rate"))),
      escape(text_of(member(config, "seed"))));
  // ts-pipeline --tls: TLS on every link and who ran as whom (absent in older reports).
  if (const auto* security = member(&root, "security"); security != nullptr) {
    const auto* tls = member(security, "tls");
    const bool on = tls != nullptr && tls->is_bool() && tls->get_bool();
    std::string who;
    if (const auto* ids = member(security, "identities"); ids != nullptr && ids->is_array()) {
      for (const auto& id : ids->get_array()) {
        const auto* role = member(&id, "postgres_role");
        who += fmt::format("{}{} as Redis {} / PostgreSQL {}", who.empty() ? "" : "; ",
                           text_of(member(&id, "service")), text_of(member(&id, "redis_user")),
                           role == nullptr || role->is_null() ? "-" : text_of(role));
      }
    }
    page += fmt::format("<div class=\"config\" id=\"security\">{}{}</div>\n",
                        on ? "TLS on every link" : "plaintext links",
                        who.empty() ? "" : escape("; identities: " + who));
  }

  const auto count = [&](std::string_view key) { return text_of(member(trades, key)); };
  const auto nonzero = [&](std::string_view key) {
    return number(member(trades, key)).value_or(0) != 0;
  };
  const json::value* lat = member(&root, "tick_to_row_latency_ms");
  const json::value* tp = member(&root, "throughput");
  page += "<div class=\"cards\" id=\"summary\">\n";
  page += card("sent", count("sent"));
  page += card("persisted, unique", count("persisted_unique"));
  page += card("missing", count("missing"), nonzero("missing"));
  page += card("duplicates", count("duplicates"), nonzero("duplicates"));
  page += card("fields differ", count("digest_mismatches"), nonzero("digest_mismatches"));
  const auto ms = [](const json::value* v) {
    const auto n = number(v);
    return n ? fmt::format("{:.1f} ms", *n) : std::string("-");
  };
  page += card("latency p50", ms(member(lat, "p50")));
  page += card("latency p99", ms(member(lat, "p99")));
  const auto per_s = number(member(tp, "persisted_ticks_per_s"));
  page += card("persisted rate", per_s ? fmt::format("{:.0f}/s", *per_s) : std::string("-"));
  const auto drain = number(member(tp, "drain_seconds"));
  page += card("drain", drain ? fmt::format("{:.1f} s", *drain) : std::string("-"));
  page += card("faults", std::to_string(faults.size()));
  page += "</div>\n";

  page += "<div id=\"readout\"></div>\n";
  for (const Chart* chart : {&throughput, &latency, &lag}) {
    page += "<div class=\"panel\">\n" + svg_chart(*chart, faults) + "</div>\n";
  }

  page += "<h2>Faults</h2>\n";
  if (faults.empty()) {
    page += "<p id=\"faults\">none injected</p>\n";
  } else {
    page += "<table id=\"faults\"><tr><th>from</th><th>to</th><th>kind</th><th>what</th></tr>\n";
    for (const auto& f : faults) {
      page += fmt::format("<tr><td>{:.1f} s</td><td>{:.1f} s</td><td>{}</td><td>{}</td></tr>\n",
                          f.start_s, f.end_s, escape(f.kind), escape(f.label));
    }
    page += "</table>\n";
  }
  if (const auto* failures = member(&root, "failures");
      failures != nullptr && failures->is_array() && !failures->get_array().empty()) {
    page += "<h2>Failures</h2>\n<ul class=\"failures\" id=\"failures\">\n";
    for (const auto& f : failures->get_array()) page += "<li>" + escape(text_of(&f)) + "</li>\n";
    page += "</ul>\n";
  }
  if (const auto* services = member(&root, "services");
      services != nullptr && services->is_object() && !services->get_object().empty()) {
    page += "<h2>Services</h2>\n<table id=\"services\"><tr><th>service</th><th>exit</th></tr>\n";
    for (const auto& s : services->get_object()) {
      page += fmt::format("<tr><td>{}</td><td>{}</td></tr>\n", escape(s.key()),
                          escape(text_of(member(&s.value(), "exit"))));
    }
    page += "</table>\n";
  }
  page += "<script type=\"application/json\" id=\"report-data\">" + embedded_json(report) +
          "</script>\n<script>";
  page += kScript;
  page += "</script>\n</body>\n</html>\n";
  return page;
}

}  // namespace trading_shared::e2e

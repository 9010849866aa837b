// The page `tsctl status-page` serves at `/`: self-contained (no network but its own
// /api/status), refreshed by polling /api/status. Stable ids and classes (docs/operations.md):
// #services tr.service[data-service][data-state], #symbols tr.symbol[data-symbol],
// #consumers tr.consumer[data-group], #latency tr.latency[data-metric],
// #breakers tr.breaker[data-state], #connections tr.connection, #counters tr.counter,
// body[data-updates] (renders so far), #updated, #fetch-error.
#include <string_view>

namespace trading_shared::services::tsctl {

extern const std::string_view kStatusPageHtml;

const std::string_view kStatusPageHtml = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>trading_shared status</title>
<style>
body { font: 13px/1.4 "DejaVu Sans", sans-serif; margin: 16px; background: #f6f7f9; color: #1d232b; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
h2 { font-size: 14px; margin: 18px 0 6px 0; }
#meta { color: #5b6570; margin-bottom: 8px; }
#fetch-error { color: #b00020; font-weight: bold; }
table { border-collapse: collapse; background: #fff; min-width: 480px; }
th, td { border: 1px solid #d8dde3; padding: 3px 8px; text-align: left; }
th { background: #eceff3; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: bold; border-radius: 3px; padding: 1px 6px; }
.up, .closed, .ok { color: #0a6b2d; }
.down, .open, .fail { color: #b00020; }
.not-ready, .half-open, .pending { color: #9a6200; }
.empty { color: #8a939c; font-style: italic; }
.grid { display: flex; flex-wrap: wrap; gap: 0 28px; }
</style>
</head>
<body data-updates="0">
<h1>trading_shared status</h1>
<div id="meta">updated <span id="updated">never</span> &middot; <span id="overall">waiting for data</span>
 <span id="fetch-error"></span></div>
<h2>Services</h2>
<table id="services"><thead><tr><th>service</th><th>admin</th><th>state</th><th>checks</th>
<th>scrape ms</th><th>series</th><th>failed polls</th><th>error</th></tr></thead><tbody></tbody></table>
<div class="grid">
<div><h2>Trades per symbol</h2>
<table id="symbols"><thead><tr><th>symbol</th><th>received/s</th><th>written/s</th><th>received</th>
<th>written</th><th>backfilled</th><th>gaps</th></tr></thead><tbody></tbody></table></div>
<div><h2>Consumers</h2>
<table id="consumers"><thead><tr><th>service</th><th>group</th><th>lag</th><th>pending</th>
<th>delivered/s</th><th>acked/s</th><th>claimed</th><th>dead-lettered</th></tr></thead><tbody></tbody></table></div>
</div>
<h2>Latency (p50 / p99 over the window)</h2>
<table id="latency"><thead><tr><th>service</th><th>metric</th><th>labels</th><th>p50 ms</th><th>p99 ms</th>
<th>obs/s</th><th>count</th></tr></thead><tbody></tbody></table>
<div class="grid">
<div><h2>Circuit breakers</h2>
<table id="breakers"><thead><tr><th>service</th><th>client</th><th>state</th><th>trips</th></tr></thead><tbody></tbody></table></div>
<div><h2>Connections</h2>
<table id="connections"><thead><tr><th>service</th><th>kind</th><th>client</th><th>connected</th>
<th>reconnects</th><th>reconnects/s</th></tr></thead><tbody></tbody></table></div>
</div>
<h2>Service counters (those above zero)</h2>
<table id="counters"><thead><tr><th>service</th><th>metric</th><th>labels</th><th>per second</th><th>total</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
let refreshMs = 1000;
let updates = 0;
function fmt(v, digits) {
  if (v === null || v === undefined) return "\u2013";
  if (Math.abs(v) >= 1000 || digits === 0) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits === undefined ? 1 : digits);
}
function ms(v) { return v === null || v === undefined ? "\u2013" : (v * 1000).toFixed(v < 0.01 ? 3 : 1); }
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function fill(id, rows, render, cols) {
  const body = document.querySelector("#" + id + " tbody");
  const fresh = document.createElement("tbody");
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(tr, "none reported", "empty");
    td.colSpan = cols;
    fresh.appendChild(tr);
  }
  for (const row of rows) fresh.appendChild(render(row));
  body.replaceWith(fresh);
}
const breakerNames = ["closed", "half-open", "open"];
function render(s) {
  refreshMs = s.refresh_ms || refreshMs;
  fill("services", s.services, (v) => {
    const tr = document.createElement("tr");
    tr.className = "service";
    tr.dataset.service = v.name;
    tr.dataset.state = v.state;
    cell(tr, v.name);
    cell(tr, v.address);
    cell(tr, v.state, "state " + v.state);
    const checks = cell(tr, "");
    for (const c of v.checks) {
      const span = document.createElement("span");
      span.className = "check " + (c.ok ? "ok" : "fail");
      span.dataset.check = c.name;
      span.textContent = c.name + (c.ok ? " \u2713 " : ": " + c.detail + " ");
      checks.appendChild(span);
    }
    cell(tr, fmt(v.scrape_ms, 1), "num");
    cell(tr, fmt(v.series, 0), "num");
    cell(tr, fmt(v.failures, 0), "num");
    cell(tr, v.error);
    return tr;
  }, 8);
  fill("symbols", s.symbols, (v) => {
    const tr = document.createElement("tr");
    tr.className = "symbol";
    tr.dataset.symbol = v.symbol;
    cell(tr, v.symbol);
    cell(tr, fmt(v.received_rate), "num rate");
    cell(tr, fmt(v.written_rate), "num rate");
    cell(tr, fmt(v.received_total, 0), "num");
    cell(tr, fmt(v.written_total, 0), "num");
    cell(tr, fmt(v.backfilled_total, 0), "num");
    cell(tr, fmt(v.gaps_total, 0), "num");
    return tr;
  }, 7);
  fill("consumers", s.consumers, (v) => {
    const tr = document.createElement("tr");
    tr.className = "consumer";
    tr.dataset.group = v.group;
    cell(tr, v.service);
    cell(tr, v.group);
    cell(tr, fmt(v.lag, 0), "num lag");
    cell(tr, fmt(v.pending, 0), "num");
    cell(tr, fmt(v.delivered_rate), "num");
    cell(tr, fmt(v.acked_rate), "num");
    cell(tr, fmt(v.claimed_total, 0), "num");
    cell(tr, fmt(v.dead_lettered_total, 0), "num");
    return tr;
  }, 8);
  fill("latency", s.latency, (v) => {
    const tr = document.createElement("tr");
    tr.className = "latency";
    tr.dataset.metric = v.metric;
    tr.dataset.labels = v.labels;
    cell(tr, v.service);
    cell(tr, v.metric);
    cell(tr, v.labels);
    cell(tr, ms(v.p50_s), "num p50");
    cell(tr, ms(v.p99_s), "num p99");
    cell(tr, fmt(v.rate), "num");
    cell(tr, fmt(v.count, 0), "num");
    return tr;
  }, 7);
  fill("breakers", s.breakers, (v) => {
    const tr = document.createElement("tr");
    const state = breakerNames[v.state] || String(v.state);
    tr.className = "breaker";
    tr.dataset.state = state;
    cell(tr, v.service);
    cell(tr, v.kind + " " + v.client);
    cell(tr, state, "state " + state);
    cell(tr, fmt(v.trips, 0), "num");
    return tr;
  }, 4);
  fill("connections", s.connections, (v) => {
    const tr = document.createElement("tr");
    tr.className = "connection";
    tr.dataset.kind = v.kind;
    cell(tr, v.service);
    cell(tr, v.kind);
    cell(tr, v.client);
    cell(tr, fmt(v.connected, 0), "num " + (v.connected > 0 ? "ok" : "fail"));
    cell(tr, fmt(v.reconnects, 0), "num");
    cell(tr, fmt(v.reconnect_rate, 2), "num");
    return tr;
  }, 6);
  // Counters still at zero (no malformed message, no retry...) are left out: the JSON has them.
  fill("counters", s.counters.filter((v) => v.total > 0), (v) => {
    const tr = document.createElement("tr");
    tr.className = "counter";
    tr.dataset.metric = v.metric;
    cell(tr, v.service);
    cell(tr, v.metric);
    cell(tr, v.labels);
    cell(tr, fmt(v.rate), "num");
    cell(tr, fmt(v.total, 0), "num");
    return tr;
  }, 5);
  const up = s.services.filter((v) => v.state === "up").length;
  document.getElementById("overall").textContent =
    up + " of " + s.services.length + " services up \u00b7 tsctl " + s.version;
  document.getElementById("updated").textContent = new Date().toISOString().substring(11, 19) + " UTC";
  document.getElementById("fetch-error").textContent = "";
  updates += 1;
  document.body.dataset.updates = String(updates);
}
async function refresh() {
  try {
    const answer = await fetch("/api/status", { cache: "no-store" });
    if (!answer.ok) throw new Error("/api/status answered " + answer.status);
    render(await answer.json());
  } catch (e) {
    document.getElementById("fetch-error").textContent = "status page unreachable: " + e.message;
  }
  setTimeout(refresh, refreshMs);
}
refresh();
</script>
</body>
</html>
)HTML";

}  // namespace trading_shared::services::tsctl

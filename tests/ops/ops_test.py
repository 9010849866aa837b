#!/usr/bin/python3
"""Operations tests against a running pipeline (docs/operations.md, "The status page").

  ops_test.py chromium   --pipeline PATH --tsctl PATH --work-dir DIR [--screenshot PNG]
  ops_test.py prometheus --pipeline PATH --work-dir DIR

Both start `ts-pipeline --admin --status-page` (the whole pipeline on throwaway servers, each
daemon with an admin endpoint on a free loopback port) and stop it with SIGTERM (its PID) when
done.

chromium: headless Chromium loads the pipeline's status page and the test asserts on the
rendered DOM (every service up, per-symbol rates, consumers, stage latency percentiles,
breakers, live refreshes), takes a screenshot (< 300 KB); then a second `tsctl status-page`
polls the same services plus one port that refuses connections and one that accepts them but
never answers: both show as down within the poll timeout while /api/status keeps answering.

prometheus: Debian's `prometheus` (temporary config and storage, free loopback port, killed by
its PID) scrapes the three daemons every second; through its HTTP API (/api/v1/query) the test
checks that every target is up, that the series of the contract exist and that they move
between two queries. `promtool check metrics` checks what each daemon serves.

Exit 0: passed; 1: failed (the reason on stderr); 77: skipped (ts-pipeline has no --admin).
Every wait has a deadline; only loopback is used; only the PIDs started here are signalled.
"""

import argparse
import html.parser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SERVICES = ["ts-receiver", "ts-recorder", "ts-executor"]

# The series the status page and this test rely on (the contract's names); histograms by their
# _count series.
REQUIRED_SERIES = [
    "ts_service_up",
    "ts_redis_connected", "ts_redis_commands_total", "ts_redis_reconnects_total",
    "ts_redis_breaker_state", "ts_redis_round_trip_seconds_count",
    "ts_pg_connections", "ts_pg_queries_total", "ts_pg_breaker_state",
    "ts_pg_round_trip_seconds_count",
    "ts_ws_connected", "ts_ws_messages_total",
    "ts_stream_consumer_delivered_total", "ts_stream_consumer_acked_total",
    "ts_stream_consumer_pending", "ts_stream_consumer_lag",
    "ts_receiver_trades_total", "ts_receiver_trades_written_total",
    "ts_receiver_stage_seconds_count",
    "ts_recorder_trades_written_total", "ts_recorder_batch_size_count",
    "ts_recorder_stage_seconds_count",
    "ts_executor_orders_total",
]
# Counters that must grow while trades flow.
MOVING_SERIES = ["ts_receiver_trades_total", "ts_receiver_trades_written_total",
                 "ts_recorder_trades_written_total", "ts_redis_commands_total"]


class Failure(Exception):
    pass


def log(message):
    print(f"[ops_test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(what, condition, timeout, interval=0.2):
    """Polls condition() (returns a truthy value when met) until the deadline."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
            last_error = e
        time.sleep(interval)
    suffix = f" (last: {last_error})" if last_error else ""
    raise Failure(f"{what}: not within {timeout} s{suffix}")


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.status, answer.read().decode("utf-8", "replace")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc, name, timeout):
    """SIGTERM to the process we started (its PID), then SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return proc.returncode
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) still running {timeout} s after SIGTERM: SIGKILL")
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


class Pipeline:
    """ts-pipeline --admin --status-page, run until stop()."""

    def __init__(self, binary, work_dir):
        self.binary = binary
        self.work_dir = work_dir
        self.proc = None
        self.admin = {}


    def start(self):
        admin_file = os.path.join(self.work_dir, "admin.json")
        if os.path.exists(admin_file):
            os.remove(admin_file)
        self.log_path = os.path.join(self.work_dir, "ts-pipeline.log")
        args = [self.binary, "--duration", "120s", "--rate", "500", "--admin", "--status-page",
                "--admin-file", admin_file,
                "--report-file", os.path.join(self.work_dir, "pipeline-report.json")]
        log("starting " + " ".join(args))
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     cwd=self.work_dir)

        def admin_written():
            if self.proc.poll() is not None:
                raise Failure(f"ts-pipeline exited {self.proc.returncode} before its admin "
                              f"file was written; its log: {self.log_path}\n" + self.tail())
            if not os.path.exists(admin_file):
                return None
            with open(admin_file) as f:
                return json.load(f)

        self.admin = wait_until("ts-pipeline's admin file", admin_written, timeout=90)
        for service in SERVICES + ["status_page"]:
            if service not in self.admin:
                raise Failure(f"admin file {admin_file} has no {service}: {self.admin}")
        log(f"pipeline running: {self.admin}")

    def tail(self, lines=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        code = stop_process(self.proc, "ts-pipeline", timeout=90)
        self.log_file.close()
        log(f"ts-pipeline stopped (exit {code}); log in {self.log_path}")


# ---------------------------------------------------------------------------------------------
# chromium


class DomRows(html.parser.HTMLParser):
    """The rows (tr with a class) of the rendered page, with their data- attributes and cells."""

    def __init__(self):
        super().__init__()
        self.rows = []
        self.body = {}
        self.ids = {}
        self._row = None
        self._cell = None
        self._id_stack = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if "id" in attrs:
            self.ids[attrs["id"]] = ""
            self._id_stack.append((tag, attrs["id"]))
        if tag == "tr" and attrs.get("class"):
            self._row = {"class": attrs["class"], "attrs": attrs, "cells": []}
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append(self._cell.strip())
            self._cell = None
        if tag == "tr":
            self._row = None
        if self._id_stack and self._id_stack[-1][0] == tag:
            self._id_stack.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._id_stack:
            self.ids[self._id_stack[-1][1]] += data

    def of(self, cls):
        return [r for r in self.rows if r["class"] == cls]


def chromium(args, *extra):
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--user-data-dir=" + args.profile_dir,
           "--virtual-time-budget=5000", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    if out.returncode != 0:
        raise Failure(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def dump_dom(args, url):
    dom = DomRows()
    dom.feed(chromium(args, "--dump-dom", url))
    return dom


def check(condition, message):
    if not condition:
        raise Failure(message)


def run_chromium(args):
    page_url = f"http://{args.pipeline_obj.admin['status_page']}/"
    api = page_url + "api/status"

    def flowing():
        status = json.loads(http_get(api)[1])
        states = {s["name"]: s["state"] for s in status["services"]}
        moving = [s for s in status["symbols"] if (s["received_rate"] or 0) > 0]
        return status if all(states.get(n) == "up" for n in SERVICES) and moving else None

    wait_until("every service up and trades flowing on the status page", flowing, timeout=60)
    log(f"loading {page_url} in headless chromium")
    dom = dump_dom(args, page_url)
    services = {r["attrs"].get("data-service"): r["attrs"].get("data-state")
                for r in dom.of("service")}
    for name in SERVICES:
        check(services.get(name) == "up", f"service row {name}: {services}")
    symbols = dom.of("symbol")
    check(symbols, "no per-symbol row")
    # received/s (cell 1) and received (cell 3) of some symbol are numbers above zero.
    check(any(r["cells"][1] not in ("–", "0.0") for r in symbols),
          f"no symbol with a received rate: {[r['cells'] for r in symbols]}")
    check(dom.of("consumer"), "no consumer row")
    latency = dom.of("latency")
    stages = [r for r in latency if r["attrs"].get("data-metric", "").endswith("_stage_seconds")]
    check(stages, f"no stage latency row: {[r['attrs'] for r in latency]}")
    check(any(r["cells"][3] != "–" and r["cells"][4] != "–" for r in stages),
          f"no stage with p50 and p99: {[r['cells'] for r in stages]}")
    breakers = dom.of("breaker")
    check(breakers, "no breaker row")
    check(all(r["attrs"].get("data-state") == "closed" for r in breakers),
          f"a breaker not closed: {[r['cells'] for r in breakers]}")
    check(dom.of("connection"), "no connection row")
    updates = int(dom.body.get("data-updates", "0"))
    check(updates >= 2, f"the page refreshed {updates} time(s) in 5 s of virtual time")
    check(dom.ids.get("fetch-error", "").strip() == "",
          f"fetch error shown: {dom.ids.get('fetch-error')}")
    log(f"DOM: {len(services)} services up, {len(symbols)} symbols, {len(stages)} stage rows, "
        f"{len(breakers)} breakers closed, {updates} refreshes")

    if args.screenshot:
        if os.path.exists(args.screenshot):
            os.remove(args.screenshot)
        chromium(args, "--window-size=1280,1500", f"--screenshot={args.screenshot}", page_url)
        size = os.path.getsize(args.screenshot)
        with open(args.screenshot, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG")
        check(size < 300 * 1024, f"screenshot {size} bytes (limit 300 KB)")
        log(f"screenshot {args.screenshot}: {size} bytes")

    # A service that refuses connections and one that never answers: down, page still live.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: connects succeed, requests get no answer
    refused = free_port()
    page_port = free_port()
    cmd = [args.tsctl, "status-page", "--listen", f"127.0.0.1:{page_port}",
           "--refresh", "500ms", "--poll-timeout", "500ms"]
    for name in SERVICES:
        cmd += ["--service", f"{name}={args.pipeline_obj.admin[name]}"]
    cmd += ["--service", f"ts-ghost=127.0.0.1:{refused}",
            "--service", f"ts-silent=127.0.0.1:{silent.getsockname()[1]}"]
    log("starting " + " ".join(cmd))
    page_log = open(os.path.join(args.work_dir, "tsctl-status-page.log"), "w")
    page = subprocess.Popen(cmd, stdout=page_log, stderr=subprocess.STDOUT)
    try:
        second = f"http://127.0.0.1:{page_port}/"
        slowest = 0.0

        def downs():
            nonlocal slowest
            started = time.monotonic()
            status = json.loads(http_get(second + "api/status", timeout=2)[1])
            slowest = max(slowest, time.monotonic() - started)
            states = {s["name"]: s["state"] for s in status["services"]}
            return states if (states.get("ts-ghost") == "down" and
                              states.get("ts-silent") == "down" and
                              all(states.get(n) == "up" for n in SERVICES)) else None

        states = wait_until("ts-ghost and ts-silent down, the others up", downs, timeout=15)
        check(slowest < 1.0, f"/api/status took {slowest:.3f} s while a service hangs")
        dom = dump_dom(args, second)
        rows = {r["attrs"].get("data-service"): r["attrs"].get("data-state")
                for r in dom.of("service")}
        check(rows.get("ts-ghost") == "down" and rows.get("ts-silent") == "down",
              f"DOM of the second page: {rows}")
        log(f"second page: {states}; slowest /api/status {slowest * 1000:.1f} ms")
        # The server's own answers: 404 elsewhere, 405 for a POST, HEAD without a body.
        for method, path, want in (("GET", "nope", 404), ("POST", "", 405), ("HEAD", "", 200)):
            data = b"" if method == "POST" else None
            request = urllib.request.Request(second + path, method=method, data=data)
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    got, body = answer.status, answer.read()
            except urllib.error.HTTPError as e:
                got, body = e.code, b""
            check(got == want, f"{method} /{path}: {got}, expected {want}")
            check(method != "HEAD" or body == b"", "HEAD / answered with a body")
    finally:
        code = stop_process(page, "tsctl status-page", timeout=15)
        page_log.close()
        silent.close()
    check(code == 0, f"tsctl status-page exited {code} after SIGTERM")


# ---------------------------------------------------------------------------------------------
# prometheus


def run_prometheus(args):
    admin = args.pipeline_obj.admin
    for name in SERVICES:
        status, body = http_get(f"http://{admin[name]}/metrics")
        check(status == 200, f"/metrics of {name}: {status}")
        out = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                             text=True, timeout=30)
        check(out.returncode == 0,
              f"promtool check metrics on {name}'s /metrics exited {out.returncode}:\n"
              f"{out.stdout}{out.stderr}")
        log(f"promtool check metrics: {name} ({len(body.splitlines())} lines) passed")

    port = free_port()
    config = os.path.join(args.work_dir, "prometheus.yml")
    storage = os.path.join(args.work_dir, "prometheus-data")
    shutil.rmtree(storage, ignore_errors=True)  # a fresh TSDB: no series of an earlier run
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                "scrape_configs:\n  - job_name: ts\n    static_configs:\n")
        for name in SERVICES:
            f.write(f"      - targets: ['{admin[name]}']\n        labels:\n"
                    f"          service: '{name}'\n")
    cmd = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={storage}",
           f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
           "--log.level=warn"]
    log("starting " + " ".join(cmd))
    prom_log = open(os.path.join(args.work_dir, "prometheus.log"), "w")
    prom = subprocess.Popen(cmd, stdout=prom_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def query(expr):
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise Failure(f"query {expr}: {body[:500]}")
        return answer["data"]["result"]

    try:
        wait_until("prometheus ready", lambda: http_get(base + "/-/ready")[0] == 200, timeout=30)

        def all_up():
            result = query('up{job="ts"}')
            up = {r["metric"]["service"]: r["value"][1] for r in result}
            return up if all(up.get(n) == "1" for n in SERVICES) else None

        up = wait_until("every target up in prometheus", all_up, timeout=30)
        log(f"targets up: {up}")

        def totals():
            values = {}
            for name in MOVING_SERIES:
                result = query(f"sum({name})")
                if not result:
                    return None
                values[name] = float(result[0]["value"][1])
            return values

        first = wait_until("the moving series scraped", totals, timeout=20)
        missing = []
        for name in REQUIRED_SERIES:
            if not query(f"count({name})"):
                missing.append(name)
        check(not missing, f"series missing in prometheus: {', '.join(missing)}")
        log(f"{len(REQUIRED_SERIES)} required series present; first: {first}")

        def moved():
            now = totals()
            return now if now and all(now[n] > first[n] for n in MOVING_SERIES) else None

        second = wait_until("every moving series grew between two queries", moved, timeout=20)
        log(f"second: {second}")
        def rate():
            result = query("sum(rate(ts_receiver_trades_total[5s]))")
            return result if result and float(result[0]["value"][1]) > 0 else None

        result = wait_until("a rate of trades received in prometheus", rate, timeout=20)
        log(f"sum(rate(ts_receiver_trades_total[5s])) = {result[0]['value'][1]}")
    finally:
        code = stop_process(prom, "prometheus", timeout=20)
        prom_log.close()
        log(f"prometheus stopped (exit {code})")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", choices=["chromium", "prometheus"])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--tsctl")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--screenshot")
    args = parser.parse_args()
    for name in ("pipeline", "tsctl", "work_dir", "screenshot"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    os.makedirs(args.work_dir, exist_ok=True)
    args.profile_dir = os.path.join(args.work_dir, "chromium-profile")
    shutil.rmtree(args.profile_dir, ignore_errors=True)

    for tool in (["chromium"] if args.test == "chromium" else ["prometheus", "promtool"]):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            print(f"ops_test: {tool} is not installed (scripts/install-deps installs it)",
                  file=sys.stderr)
            return 1
    pipeline = Pipeline(args.pipeline, args.work_dir)
    args.pipeline_obj = pipeline
    try:
        pipeline.start()
        (run_chromium if args.test == "chromium" else run_prometheus)(args)
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"ops_test {args.test}: FAILED: {e}", file=sys.stderr)
        if pipeline.proc is not None:
            print("--- ts-pipeline log (tail) ---\n" + pipeline.tail(), file=sys.stderr)
        return 1
    finally:
        pipeline.stop()
    print(f"ops_test {args.test}: PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

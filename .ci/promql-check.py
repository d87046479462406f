#!/usr/bin/env python3
"""Run every PromQL expression of the Grafana board and of the alert rules
against a real Prometheus that scrapes real downbeat processes.

Three engines feed it, so every panel has something to show:
  live   `downbeat run` on the built-in generator (counters move, windows
         close on the wall clock);
  spike  `downbeat run --input FILE` over 130 minutes of generated events
         whose last minutes hold an injected spike (trending series, the
         viral alert), long enough for the streams forecast to give every
         horizon's band;
  kafka  `downbeat run --source kafka` on a tansu broker fed by
         `downbeat produce` (consumer lag, partitions, offsets), publishing
         its partial windows to a partials topic;
and `downbeat merge` over that topic, scraped as job `downbeat-merge`, whose
global windows the board's window panels show when a merger is scraped.

Checks:
  0. each engine's /metrics passes `promtool check metrics`;
  1. every expression evaluates without error;
  2. every dashboard expression returns data;
  3. every metric name any expression reads has series in Prometheus
     (catches a renamed metric on the board or in a rule);
  4. alerts whose outcome is known here: DownbeatSongViral and
     DownbeatArtistViral fire on the spike engine's data (its song and its
     artist, new to the catalogue), DownbeatDown and DownbeatAbsent do not.

Usage: promql-check.py DOWNBEAT_BINARY   (needs prometheus, tansu, PyYAML)
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "grafana", "dashboards", "downbeat.json")
RULES = os.path.join(ROOT, "deploy", "prometheus", "downbeat-rules.yml")

# Grafana's variables, as a viewer with "All" selected would send them.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "${__interval}": "15s",
    "$__range": "1h",
    "${__range}": "1h",
}
TEMPLATE_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")

# Alerts whose outcome this setup determines: True = must fire now.
EXPECTED_ALERTS = {
    "DownbeatSongViral": True,
    "DownbeatArtistViral": True,
    "DownbeatDown": False,
    "DownbeatAbsent": False,
}

# Expressions that need more history than a CI run has (a trailing hour
# ending 10 minutes ago): they must evaluate, and may be empty.
NEEDS_HISTORY = {"downbeat:streams_per_second:baseline1h"}

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "rate", "irate", "increase", "delta", "deriv", "changes", "resets",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "last_over_time", "count_over_time", "quantile_over_time",
    "histogram_quantile", "label_replace", "label_join", "absent", "vector",
    "scalar", "time", "offset", "bool", "clamp_min", "clamp_max", "round",
    "sort", "sort_desc", "abs", "ceil", "floor", "timestamp", "le", "inf",
    "nan", "group", "count_values", "quantile", "stddev", "stdvar", "sgn",
    "present_over_time", "absent_over_time", "predict_linear", "exp", "ln",
    "log2", "log10", "sqrt", "day_of_week", "hour", "minute", "start", "end",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, timeout_s, condition):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        _, body = http_get(url)
    except urllib.error.HTTPError as error:
        return "error", json.loads(error.read().decode()).get("error", str(error))
    reply = json.loads(body)
    if reply.get("status") != "success":
        return "error", reply.get("error")
    return "ok", reply["data"]["result"]


def substitute(expr):
    for key, value in SUBSTITUTIONS.items():
        expr = expr.replace(key, value)
    # Template variables ($replica, $level, $state, ...) as "All".
    return TEMPLATE_VARIABLE.sub(".*", expr)


def dashboard_expressions():
    with open(DASHBOARD) as f:
        board = json.load(f)
    found = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"panel {panel.get('title')!r}", target["expr"]))
    variables = []
    for variable in board.get("templating", {}).get("list", []):
        q = variable.get("query")
        text = q.get("query") if isinstance(q, dict) else q
        if variable.get("type") == "query" and text:
            variables.append((variable.get("name"), text))
    return found, variables


def rule_expressions():
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule.get("alert") is not None, rule["expr"]


def metric_names(expr, recorded):
    """Metric names an expression reads (identifiers not PromQL words,
    labels, durations, strings or recording rules)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b\d+(ms|[smhdwy])\b", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if name.lower() in PROMQL_WORDS or name in recorded:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def start(processes, log_dir, name, args, env=None):
    log = open(os.path.join(log_dir, f"{name}.log"), "w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    processes.append((name, process))
    return process


def main():
    binary = os.path.abspath(sys.argv[1])
    for tool in ("prometheus", "promtool", "tansu"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not on PATH (./test.sh installs it)")
    work = tempfile.mkdtemp(prefix="downbeat-promql-")
    processes = []
    try:
        run_check(binary, work, processes)
    finally:
        for _, process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if os.environ.get("DOWNBEAT_KEEP_TEST_DIRS"):
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_check(binary, work, processes):
    ports = {name: free_port() for name in ("live", "spike", "kafka", "merge", "broker", "prometheus")}
    listen = lambda name: ["--listen", f"127.0.0.1:{ports[name]}"]

    # live: the generator, paced.
    start(processes, work, "live", [binary, "run", "--rate", "300", *listen("live")])

    # spike: the 130 minutes before the current minute, the last 4 with a
    # viral song (whole minutes, so the last window is complete). The
    # forecast gives its first band after 61 closed windows and the
    # 60-minute horizon's after 121, so 130 minutes; 50 events/s keeps the
    # file as small as 30 minutes at 200/s were, and a 4% share keeps the
    # song over the viral alerts' 50 streams a minute (about 130).
    spike_file = os.path.join(work, "spike.jsonl")
    spike_minutes = 130
    start_ms = (int(time.time()) // 60 - spike_minutes) * 60_000
    with open(spike_file, "wb") as out:
        subprocess.run(
            [binary, "generate", "--seed", "5", "--rate", "50", "--count", str(50 * 60 * spike_minutes),
             "--start-ms", str(start_ms), "--spike-song", "Viral Hit", "--spike-artist", "Nobody",
             "--spike-after-secs", str(60 * spike_minutes - 240), "--spike-duration-secs", "240",
             "--spike-share", "0.04"],
            stdout=out, check=True)
    # A 1-minute session gap, so its sessions (all within the input's
    # event time) close during the check and the session panels have data.
    spike_config = os.path.join(work, "spike.toml")
    with open(spike_config, "w") as f:
        f.write("[sessions]\ngap_ms = 60000\n")
    start(processes, work, "spike", [binary, "run", "--input", spike_file, "--idle-timeout-ms", "500",
                                     "--config", spike_config, *listen("spike")])

    # kafka: tansu, a producer, a consumer.
    broker = f"127.0.0.1:{ports['broker']}"
    start(processes, work, "tansu", [
        "tansu", "broker", "--listener-url", f"tcp://{broker}",
        "--advertised-listener-url", f"tcp://{broker}", "--storage-engine", "memory://tansu/"])
    wait_for("tansu", 30, lambda: socket.create_connection(("127.0.0.1", ports["broker"]), 1).close() or True)
    subprocess.run(["tansu", "topic", "create", "listen_events", "--partitions", "2",
                    "--broker", f"tcp://{broker}"], check=True, capture_output=True)
    start(processes, work, "produce", [binary, "produce", "--brokers", broker, "--topic", "listen_events", "--rate", "200"])
    checkpoints = os.path.join(work, "checkpoints")
    os.makedirs(checkpoints)
    start(processes, work, "kafka", [
        binary, "run", "--brokers", broker, "--topic", "listen_events", "--group", "promql-check",
        "--checkpoint-dir", checkpoints, "--replica-id", "ci-0", "--partials-topic", "partials",
        *listen("kafka")])
    start(processes, work, "merge", [
        binary, "merge", "--brokers", broker, "--partials-topic", "partials", *listen("merge")])

    # Prometheus scrapes all three every second and evaluates the rules.
    rules_copy = os.path.join(work, "downbeat-rules.yml")
    shutil.copy(RULES, rules_copy)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules_copy],
        "scrape_configs": [{
            "job_name": "downbeat",
            "static_configs": [{"targets": [f"127.0.0.1:{ports[n]}" for n in ("live", "spike", "kafka")]}],
        }, {
            "job_name": "downbeat-merge",
            "static_configs": [{"targets": [f"127.0.0.1:{ports['merge']}"]}],
        }],
    }
    config_path = os.path.join(work, "prometheus.yml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    prometheus = f"http://127.0.0.1:{ports['prometheus']}"
    start(processes, work, "prometheus", [
        "prometheus", f"--config.file={config_path}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        f"--storage.tsdb.path={os.path.join(work, 'tsdb')}"])
    wait_for("prometheus", 60, lambda: http_get(f"{prometheus}/-/ready")[0] == 200)

    # Windows close on the minute boundary (plus lateness) in live mode.
    print("waiting for every engine to close windows and for Prometheus to scrape them")
    def all_have(metric):
        status, result = query(prometheus, f"count by (instance) ({metric})")
        return status == "ok" and len(result) == 3
    wait_for("windows closed on all three engines", 150,
             lambda: all_have('downbeat_window_streams{window="1m", job="downbeat"}'))
    wait_for("the merger's global windows", 90,
             lambda: query(prometheus, 'downbeat_window_streams{window="1m", job="downbeat-merge"}')[1])
    wait_for("the spike trending", 60, lambda: query(prometheus, "downbeat_trending_song_ratio")[1])
    wait_for("Kafka lag series", 60, lambda: query(prometheus, "downbeat_kafka_consumer_lag_records")[1])
    wait_for("closed sessions", 60, lambda: query(prometheus, "downbeat_sessions_closed_total > 0")[1])
    time.sleep(5)  # a few more scrapes, so rate() over 1m has points on every series

    failures = []
    # The exposition itself passes Prometheus's own linter (names, units,
    # HELP and TYPE), for every source.
    for name in ("live", "spike", "kafka", "merge"):
        _, exposition = http_get(f"http://127.0.0.1:{ports[name]}/metrics")
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                              capture_output=True, text=True)
        if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
            failures.append(f"promtool check metrics on the {name} engine: {lint.stdout}{lint.stderr}")
    recorded = set()
    rules = list(rule_expressions())
    for name, is_alert, _ in rules:
        if not is_alert:
            recorded.add(name)
    panels, variables = dashboard_expressions()
    if not panels:
        failures.append(f"{DASHBOARD}: no expressions found")
    checked = 0
    names_read = set()

    for where, raw in panels:
        expr = substitute(raw)
        names_read |= metric_names(expr, recorded)
        status, result = query(prometheus, expr)
        checked += 1
        if status == "error":
            failures.append(f"{where}: {expr!r}: {result}")
        elif not result:
            failures.append(f"{where}: {expr!r}: no data")
    for name, text in variables:
        # label_values(SELECTOR, LABEL) is Grafana's: run it as the PromQL
        # it stands for, and the variable must offer at least one value.
        inner = re.match(r"label_values\((.*),\s*(\w+)\)\s*$", text.strip())
        if not inner:
            failures.append(f"variable {name}: {text!r} is not label_values(selector, label)")
            continue
        selector, label = substitute(inner.group(1)), inner.group(2)
        names_read |= metric_names(selector, recorded)
        status, result = query(prometheus, f"count by ({label}) ({selector})")
        checked += 1
        if status == "error" or not result:
            failures.append(f"variable {name}: {text!r} offers no value ({result})")
    for name, is_alert, expr in rules:
        names_read |= metric_names(expr, recorded)
        status, result = query(prometheus, expr)
        checked += 1
        if status == "error":
            failures.append(f"rule {name}: {result}")
            continue
        expected = EXPECTED_ALERTS.get(name)
        if is_alert and expected is not None and bool(result) != expected:
            failures.append(f"alert {name}: expected {'firing' if expected else 'silent'}, got {result}")
        if not is_alert and name not in NEEDS_HISTORY and not result:
            failures.append(f"recording rule {name}: no data")
    for name in sorted(names_read):
        status, result = query(prometheus, f"count({{__name__={json.dumps(name)}}})")
        if status != "ok" or not result:
            failures.append(f"metric {name} (read by the board or a rule) has no series")

    # With a merger scraped, the board's window panels show its global
    # windows, not the replicas' sum.
    per_minute = next(expr for where, expr in panels if where == "panel 'Streams per minute'")
    merged = 'max(downbeat_window_streams{window="1m", job="downbeat-merge"})'
    status, difference = query(prometheus, f"({substitute(per_minute)}) - on () {merged}")
    if status != "ok" or not difference or float(difference[0]["value"][1]) != 0:
        parts = {e: query(prometheus, e)[1] for e in (
            merged, "count(downbeat_merge_source_partitions)",
            'sum(downbeat_window_streams{window="1m", job!="downbeat-merge"})', substitute(per_minute))}
        failures.append(f"panel 'Streams per minute' minus the merger's value: {difference}; {parts}")
    print(f"{checked} expressions run ({len(panels)} on the board, {len(variables)} for its "
          f"variables, {len(rules)} in the rules); "
          f"{len(names_read)} metric names checked")
    if failures:
        print("FAILED:")
        for failure in failures:
            print("  " + failure)
        raise SystemExit(1)
    print("every expression evaluated; board expressions and recording rules returned data; "
          "DownbeatSongViral and DownbeatArtistViral fire on the spike; DownbeatDown and DownbeatAbsent are silent")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write forecast-rules.test.yml: promtool tests of the forecast alerts on
real engine output.

Regenerate it whenever the forecast, the generator or the forecast alerts
change (about a minute; 5 GB of temporary disk):

    python3 deploy/prometheus/forecast_alert_series.py target/release/downbeat
    promtool test rules deploy/prometheus/forecast-rules.test.yml

Three days of `downbeat generate --diurnal` traffic from Monday 2023-11-13
(20 events/s on average, about 1,000 streams a minute: a trough near 04:00
UTC, a peak near 20:00), in three versions that differ only between 20:00
and 20:30 UTC of the third day:
  normal   as generated;
  doubled  every stream event there twice (the copy 1 ms later, another user);
  halved   every other stream event there dropped.
Each is replayed by `downbeat replay`, and its third day's tumbling records
become the series one replica would export, one sample a minute:
downbeat_forecast_latest_streams (actual and the band made for it) and
downbeat_streams_total, so the forecast alerts and the 3x rules see the same
traffic. Expected: nothing fires on the normal day; the doubling fires
DownbeatStreamsAboveForecast and not DownbeatStreamsSpike (2x is not 3x);
the halving fires DownbeatStreamsBelowForecast and not DownbeatStreamsDrop.
The expected annotations are rendered from the rules file.

Prints how often the normal day leaves the band. Python standard library only.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
RULES = HERE / "downbeat-rules.yml"
TARGET = HERE / "forecast-rules.test.yml"

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MONDAY_MS = 1_699_833_600_000  # 2023-11-13 00:00 UTC
RATE = 20
DAY3_MS = MONDAY_MS + 2 * DAY_MS  # time 0 of the tests
CHANGE_FROM_MS = DAY3_MS + 20 * 60 * MINUTE_MS  # 20:00 UTC
CHANGE_TO_MS = CHANGE_FROM_MS + 30 * MINUTE_MS  # 20:30 UTC
MINUTES = 24 * 60
# The forecast alerts' volume guard (forecast mean, streams a window).
MIN_MEAN = 100

SERIES = 'downbeat_forecast_latest_streams{{job="downbeat", instance="r1", window="1m", series="{}"}}'
COUNTER = 'downbeat_streams_total{job="downbeat", instance="r1"}'
TS = re.compile(rb'"ts":(\d+)')
USER = re.compile(rb'"userId":"(\d+)"')
STREAM = b'"page":"NextSong"'


def run(args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


def rewrite(source, target, change):
    """Copies the events, passing each stream event of the changed half
    hour through `change` (which returns the lines to write instead)."""
    pending = []  # copies waiting for their place in ts order
    with open(source, "rb") as lines, open(target, "wb") as out:
        for line in lines:
            ts = int(TS.search(line).group(1))
            while pending and pending[0][0] <= ts:
                out.write(pending.pop(0)[1])
            if CHANGE_FROM_MS <= ts < CHANGE_TO_MS and STREAM in line:
                for copy in change(ts, line):
                    if copy is line:
                        out.write(line)
                    else:
                        pending.append((int(TS.search(copy).group(1)), copy))
            else:
                out.write(line)
        out.writelines(copy for _, copy in pending)


def doubled(ts, line):
    # Another user: the same user twice in one millisecond could look like
    # a retry; a second listener is what a doubling means.
    copy = TS.sub(b'"ts":%d' % (ts + 1), line, count=1)
    copy, users = USER.subn(lambda m: b'"userId":"%d"' % (int(m.group(1)) + 1_000_000), copy, count=1)
    if users != 1:
        raise SystemExit(f"a stream event without a numeric userId: {line!r}")
    return [line, copy]


def halved():
    kept = [False]

    def change(_ts, line):
        kept[0] = not kept[0]
        return [line] if kept[0] else []

    return change


def replay(binary, events, work):
    """The third day's tumbling records by minute of the day at which the
    window ends (0 = the window ending at 00:00)."""
    out = work / (events.stem + ".windows.jsonl")
    done = run([binary, "replay", "--input", str(events), "--output", str(out)],
               capture_output=True, text=True)
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    if summary["rejected"] or summary["late"]:
        raise SystemExit(f"{events.name}: {summary['rejected']} rejected, {summary['late']} late")
    minutes = {}
    with open(out) as records:
        for text in records:
            record = json.loads(text)
            minute, rest = divmod(record["end_ms"] - DAY3_MS, MINUTE_MS)
            if record["window"] == "tumbling" and rest == 0 and 0 <= minute <= MINUTES:
                minutes[minute] = record
    out.unlink()
    return minutes


def columns(minutes):
    """actual, mean, lower, upper and the streams counter, one value a
    minute (None: no sample), as written to the test (band to 0.01)."""
    actual, mean, lower, upper, counter = [], [], [], [], []
    total = 0
    for minute in range(MINUTES + 1):
        record = minutes.get(minute)
        streams = record["streams"] if record else 0
        total += streams
        counter.append(total)
        actual.append(streams if record else None)
        band = record and record.get("forecast")
        for column, key in ((mean, "streams"), (lower, "lower"), (upper, "upper")):
            column.append(round(band[key], 2) if band else None)
    return {"actual": actual, "mean": mean, "lower": lower, "upper": upper, "counter": counter}


def outside(series, minute):
    """-1 below the band, 1 above, 0 inside or no band."""
    a, lo, hi = series["actual"][minute], series["lower"][minute], series["upper"][minute]
    if a is None or lo is None:
        return 0
    return 1 if a > hi else -1 if a < lo else 0


def measure(name, series):
    """Prints how the day sits against its band, and the runs of minutes
    outside it on one side (above the volume guard) long enough to fire an
    alert with `for: 5m` (6 evaluations); returns the longest run."""
    with_band = [m for m in range(MINUTES + 1) if series["lower"][m] is not None]
    out = [m for m in with_band if outside(series, m)]
    runs, run_length, side = [], 0, 0  # runs: (last minute, length, side)
    for m in range(MINUTES + 2):
        now = outside(series, m) if m <= MINUTES and (series["mean"][m] or 0) >= MIN_MEAN else 0
        if run_length and now != side:
            runs.append((m - 1, run_length, side))
        run_length = run_length + 1 if now and now == side else (1 if now else 0)
        side = now
    longest = max((length for _, length, _ in runs), default=0)
    print(f"{name}: {len(with_band)} minutes with a band, {len(out)} outside it "
          f"({len(out) / max(len(with_band), 1):.1%}: {sum(outside(series, m) > 0 for m in out)} above, "
          f"{sum(outside(series, m) < 0 for m in out)} below); longest run outside on one side "
          f"with a mean of at least {MIN_MEAN}: {longest} minutes; "
          f"mean {min(v for v in series['mean'] if v is not None):.0f} to "
          f"{max(v for v in series['mean'] if v is not None):.0f} streams a minute")
    for last, length, side in runs:
        if length >= 6:
            print(f"  {'above' if side > 0 else 'below'} the band from {clock(last - length + 1)} "
                  f"to {clock(last)}: an alert fires from {clock(last - length + 6)}")
    return longest


def around_the_change(name, series):
    print(f"{name} around 20:00 (clock: actual [lower, mean, upper]):")
    for minute in list(range(1195, 1240, 1)) + [1260, 1290, 1320]:
        s = {k: series[k][minute] for k in ("actual", "lower", "mean", "upper")}
        mark = {1: " above", -1: " below", 0: ""}[outside(series, minute)]
        print(f"  {clock(minute)}  {s['actual']} [{s['lower']}, {s['mean']}, {s['upper']}]{mark}")


def clock(minute):
    return f"{minute // 60:02d}:{minute % 60:02d}"


def humanize(value):
    """Prometheus's `humanize` template function, for values of 1 and more."""
    if value == 0:
        return "%.4g" % value
    prefix = ""
    for p in ("k", "M", "G", "T"):
        if abs(value) < 1000:
            break
        prefix = p
        value /= 1000
    return "%.4g%s" % (value, prefix)


def rule_annotations(alert):
    """The annotations of `alert` as written in the rules file (a flat
    `key: scalar` per line, as that file writes them)."""
    annotations, inside, in_annotations = {}, False, False
    for line in RULES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(("- alert:", "- record:", "- name:")):
            inside = stripped == f"- alert: {alert}"
            in_annotations = False
        elif inside and stripped == "annotations:":
            in_annotations = True
        elif inside and in_annotations and ":" in stripped:
            key, text = stripped.split(":", 1)
            text = text.strip()
            if text.startswith("'"):
                text = text[1:-1].replace("''", "'")
            elif text.startswith('"'):
                text = json.loads(text)
            annotations[key] = text
    if not annotations:
        raise SystemExit(f"{RULES.name}: no annotations found for {alert}")
    return annotations


def render(template, value, recorded):
    """Expands the template constructs the forecast alerts use: the alert's
    value and a recording rule's current value."""
    text = template.replace("{{ $value | humanize }}", humanize(value))
    text = re.sub(r'\{\{ with query "([^"]+)" \}\}\{\{ \. \| first \| value \| humanize \}\}\{\{ end \}\}',
                  lambda m: humanize(recorded[m.group(1)]), text)
    if "{{" in text:
        raise SystemExit(f"teach render() this template: {template}")
    return text


def firing(alert, severity, series, minute):
    """An exp_alerts entry for `alert` firing at `minute`."""
    recorded = {f"downbeat:forecast_latest_streams:{k}": series[k][minute] for k in ("mean", "lower", "upper")}
    annotations = {k: render(v, series["actual"][minute], recorded) for k, v in rule_annotations(alert).items()}
    lines = ["          - exp_labels:", f"              severity: {severity}", "            exp_annotations:"]
    lines += [f"              {k}: {json.dumps(v)}" for k, v in annotations.items()]
    return lines


def values(column):
    return " ".join("_" if v is None else (str(v) if isinstance(v, int) else f"{v:.2f}") for v in column)


def group(comment, series, checks):
    """One test: the replica's series and `checks`, each
    (minute, alert, exp_alerts lines or [] for none)."""
    lines = ["", f"  # {comment}", "  - interval: 1m", "    input_series:"]
    for key in ("actual", "mean", "lower", "upper"):
        lines += [f"      - series: '{SERIES.format(key)}'", f"        values: '{values(series[key])}'"]
    lines += [f"      - series: '{COUNTER}'", f"        values: '{values(series['counter'])}'"]
    lines.append("    alert_rule_test:")
    for minute, alert, expected in checks:
        lines += [f"      - eval_time: {minute}m  # {clock(minute)} UTC", f"        alertname: {alert}"]
        lines += ["        exp_alerts:"] + expected if expected else ["        exp_alerts: []"]
    return lines


def main():
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} DOWNBEAT_BINARY")
    binary = str(pathlib.Path(sys.argv[1]).resolve())
    with tempfile.TemporaryDirectory(prefix="downbeat-forecast-") as tmp:
        work = pathlib.Path(tmp)
        normal = work / "normal.jsonl"
        with open(normal, "wb") as out:
            run([binary, "generate", "--diurnal", "--rate", str(RATE), "--seed", "7",
                 "--start-ms", str(MONDAY_MS), "--count", str(RATE * 86_400 * 3)], stdout=out)
        days = {}
        for name, change in (("doubled", doubled), ("halved", halved())):
            events = work / f"{name}.jsonl"
            rewrite(normal, events, change)
            days[name] = columns(replay(binary, events, work))
            events.unlink()
        days["normal"] = columns(replay(binary, normal, work))

    longest = measure("normal", days["normal"])
    for name in ("doubled", "halved"):
        measure(name, days[name])
        around_the_change(name, days[name])

    quiet = ("DownbeatStreamsAboveForecast", "DownbeatStreamsBelowForecast",
             "DownbeatStreamsSpike", "DownbeatStreamsDrop")
    half_hours = range(90, MINUTES, 30)  # 01:30 to 23:30
    change = (1210, 1220, 1229)  # 20:10, 20:20, 20:29
    doubled_day, halved_day = days["doubled"], days["halved"]
    lines = [
        "# Generated by deploy/prometheus/forecast_alert_series.py from real engine",
        "# output (three generated --diurnal days, replayed): do not edit, rerun it.",
        "# Time 0 is the third day's 00:00 UTC; the sample at minute m is the",
        "# tumbling window ending then. One replica, r1, no merger.",
        f"# Normal day: longest run outside the band above the guard, {longest} minutes.",
        "rule_files:",
        "  - downbeat-rules.yml",
        "evaluation_interval: 1m",
        "# promtool evaluates groups in a random order unless told: the expected",
        "# annotations hold the recording rules' values at the same minute.",
        "group_eval_order:",
        "  - downbeat-recording",
        "  - downbeat-traffic",
        "",
        "tests:",
    ]
    lines += group("Normal day: nothing fires.", days["normal"],
                   [(m, alert, []) for m in half_hours for alert in quiet])
    lines += group("Doubled from 20:00 to 20:30: above the forecast, but 2x is no 3x spike.", doubled_day,
                   [(m, "DownbeatStreamsAboveForecast",
                     firing("DownbeatStreamsAboveForecast", "warning", doubled_day, m)) for m in change]
                   + [(m, alert, []) for m in change
                      for alert in ("DownbeatStreamsSpike", "DownbeatStreamsBelowForecast")])
    lines += group("Halved from 20:00 to 20:30: below the forecast, but not a third.", halved_day,
                   [(m, "DownbeatStreamsBelowForecast",
                     firing("DownbeatStreamsBelowForecast", "critical", halved_day, m)) for m in change]
                   + [(m, alert, []) for m in change
                      for alert in ("DownbeatStreamsDrop", "DownbeatStreamsAboveForecast")])
    TARGET.write_text("\n".join(lines) + "\n")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()

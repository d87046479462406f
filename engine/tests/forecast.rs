//! The streams forecast end to end: `generate --diurnal` days through
//! `replay`, scored from the window records alone (as anyone can), and the
//! forecast's metrics and API in `run`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

/// 2023-11-13 00:00 UTC, a Monday.
const MONDAY_MS: i64 = 1_699_833_600_000;
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// `downbeat generate ARGS` into `dir/name`.
fn generate_file(dir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let events = common::stdout_of(common::downbeat().arg("generate").args(args));
    let path = dir.join(name);
    std::fs::write(&path, events).unwrap();
    path
}

/// `generate --diurnal` of `days` days at `rate` events/s from Monday,
/// replayed: the tumbling window records.
fn diurnal_tumbling(days: i64, rate: u32, dir: &std::path::Path) -> Vec<Value> {
    let count = (i64::from(rate) * 86_400 * days).to_string();
    let rate = rate.to_string();
    let start = MONDAY_MS.to_string();
    let input = generate_file(
        dir,
        "diurnal.jsonl",
        &[
            "--diurnal",
            "--rate",
            &rate,
            "--count",
            &count,
            "--start-ms",
            &start,
            "--seed",
            "7",
        ],
    );
    let (windows, summary) = common::replay(&input, dir, &[]);
    assert_eq!(summary["rejected"], 0);
    windows
        .into_iter()
        .filter(|w| w["window"] == "tumbling")
        .collect()
}

/// Three generated days (scaled down to 4 events/s, about 200 streams a
/// minute): on the third day the one-step forecast in the records beats
/// the same minute the day before and the mean of the previous 60
/// minutes, and its 95% band holds 90% to 98% of the minutes.
#[test]
fn third_day_forecast_is_calibrated_and_beats_the_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let tumbling = diurnal_tumbling(3, 4, dir.path());
    let streams: HashMap<i64, f64> = tumbling
        .iter()
        .map(|w| {
            (
                w["start_ms"].as_i64().unwrap(),
                w["streams"].as_f64().unwrap(),
            )
        })
        .collect();
    let day3: Vec<&Value> = tumbling
        .iter()
        .filter(|w| {
            let start = w["start_ms"].as_i64().unwrap();
            (MONDAY_MS + 2 * DAY_MS..MONDAY_MS + 3 * DAY_MS).contains(&start)
        })
        .collect();
    assert!(day3.len() >= 1430, "{} minutes with streams", day3.len());
    let mut covered = 0;
    let (mut ours, mut naive, mut trailing) = (0.0, 0.0, 0.0);
    for window in &day3 {
        let start = window["start_ms"].as_i64().unwrap();
        let actual = window["streams"].as_f64().unwrap();
        let forecast = &window["forecast"];
        let (mean, lower, upper) = (
            forecast["streams"].as_f64().expect("a forecast on day 3"),
            forecast["lower"].as_f64().unwrap(),
            forecast["upper"].as_f64().unwrap(),
        );
        assert!(lower <= mean && mean <= upper, "{forecast}");
        if (lower..=upper).contains(&actual) {
            covered += 1;
        }
        ours += (mean - actual).abs() / actual;
        let day_before = streams.get(&(start - DAY_MS)).copied().unwrap_or(0.0);
        naive += (day_before - actual).abs() / actual;
        let hour: f64 = (1..=60)
            .map(|m| {
                streams
                    .get(&(start - m * MINUTE_MS))
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum::<f64>()
            / 60.0;
        trailing += (hour - actual).abs() / actual;
    }
    let n = day3.len() as f64;
    let coverage = f64::from(covered) / n;
    let (ours, naive, trailing) = (ours / n, naive / n, trailing / n);
    eprintln!("day 3: coverage {coverage:.3}, MAPE {ours:.4} vs seasonal-naive {naive:.4} vs trailing hour {trailing:.4}");
    assert!((0.90..=0.98).contains(&coverage), "coverage {coverage}");
    assert!(ours < naive, "MAPE {ours} vs seasonal-naive {naive}");
    assert!(ours < trailing, "MAPE {ours} vs trailing mean {trailing}");
}

/// No forecast in the first hour (the band needs 60 scored forecasts),
/// then on every tumbling record; never on sliding ones.
#[test]
fn forecast_is_absent_while_warming_up_and_only_on_tumbling_windows() {
    let dir = tempfile::tempdir().unwrap();
    let start = MONDAY_MS.to_string();
    let args = ["--rate", "5", "--count", "36000", "--start-ms", &start];
    let input = generate_file(dir.path(), "two-hours.jsonl", &args);
    let (windows, _) = common::replay(&input, dir.path(), &[]);
    let tumbling: Vec<&Value> = windows
        .iter()
        .filter(|w| w["window"] == "tumbling")
        .collect();
    let first = tumbling
        .iter()
        .position(|w| w.get("forecast").is_some())
        .expect("a forecast within two hours");
    assert_eq!(
        first, 61,
        "one score a window from the second on; 60 needed"
    );
    assert!(tumbling[first..]
        .iter()
        .all(|w| w.get("forecast").is_some()));
    assert!(windows
        .iter()
        .filter(|w| w["window"] == "sliding")
        .all(|w| w.get("forecast").is_none()));
    // Off by configuration: no field at all.
    let config = dir.path().join("off.toml");
    std::fs::write(&config, "[forecast]\nenabled = false\n").unwrap();
    let (off, _) = common::replay(&input, dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(off.iter().all(|w| w.get("forecast").is_none()));
}

/// `run` over three hours of events: the gauges per horizon, the latest
/// window's actual and band, and `/api/v1/forecast` agree with the records.
#[test]
fn run_publishes_the_forecast_as_metrics_and_api() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = (now_ms - 4 * 3_600_000) / MINUTE_MS * MINUTE_MS;
    let from = start.to_string();
    let args = ["--rate", "4", "--count", "43200", "--start-ms", &from];
    let input = generate_file(dir.path(), "three-hours.jsonl", &args);
    let emitted = dir.path().join("windows.jsonl");
    let engine = common::start_run(&[
        "--input",
        input.to_str().unwrap(),
        "--emit-windows",
        emitted.to_str().unwrap(),
    ]);
    let port = engine.port;
    let mut doc = Value::Null;
    common::wait_until(Duration::from_secs(60), "a forecast ahead", || {
        let Ok((200, body)) = common::get(port, "/api/v1/forecast") else {
            return false;
        };
        doc = serde_json::from_str(&body).unwrap();
        let latest = doc["latest"]["start_ms"].as_i64().unwrap_or(0);
        // The last window of the input: nothing closes after it, so the
        // metrics read next are of the same close.
        doc["ahead"].as_array().is_some_and(|a| a.len() == 3) && latest >= start + 179 * MINUTE_MS
    });
    let (_, metrics) = common::get(port, "/metrics").unwrap();
    drop(engine);
    check_ahead(&doc, &metrics);
    let latest_start = doc["latest"]["start_ms"].as_i64().unwrap();
    // The latest window's record carries the band the gauges show.
    let records: Vec<Value> = std::fs::read_to_string(&emitted)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let record = records
        .iter()
        .find(|w| w["window"] == "tumbling" && w["start_ms"] == latest_start)
        .expect("the latest window was emitted");
    let actual = metric_value(
        &metrics,
        "downbeat_forecast_latest_streams{series=\"actual\",window=\"1m\"} ",
    );
    assert_eq!(actual, record["streams"].as_f64().unwrap());
    let upper = metric_value(
        &metrics,
        "downbeat_forecast_latest_streams{series=\"upper\",window=\"1m\"} ",
    );
    let recorded = record["forecast"]["upper"].as_f64().unwrap();
    assert!(
        (upper - recorded).abs() < 1e-6 * recorded,
        "{upper} vs {recorded}"
    );
    assert_eq!(doc["latest"]["forecast"], record["forecast"]);
}

/// The horizons ahead of the latest window, each inside its band and
/// equal to its gauge.
fn check_ahead(doc: &Value, metrics: &str) {
    assert_eq!(doc["window"], "1m");
    let horizons: Vec<i64> = doc["ahead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["horizon_minutes"].as_i64().unwrap())
        .collect();
    assert_eq!(horizons, vec![5, 15, 60]);
    let latest_start = doc["latest"]["start_ms"].as_i64().unwrap();
    for ahead in doc["ahead"].as_array().unwrap() {
        let minutes = ahead["horizon_minutes"].as_i64().unwrap();
        assert_eq!(
            ahead["start_ms"].as_i64().unwrap(),
            latest_start + minutes * MINUTE_MS
        );
        let (lower, mean, upper) = (
            ahead["lower"].as_f64().unwrap(),
            ahead["streams"].as_f64().unwrap(),
            ahead["upper"].as_f64().unwrap(),
        );
        assert!(lower < mean && mean < upper, "{ahead}");
        let gauge = format!(
            "downbeat_forecast_streams{{bound=\"mean\",horizon=\"{minutes}m\",window=\"1m\"}} "
        );
        let value = metric_value(metrics, &gauge);
        assert!(
            (value - mean).abs() < 1e-6 * mean.max(1.0),
            "{gauge}{value} vs {mean}"
        );
    }
}

fn metric_value(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

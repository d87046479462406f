//! Listening sessions against a from-scratch recomputation on the real
//! EventSim (Sparkify) data: `replay --sessions` and `run --emit-sessions`
//! must write exactly the sessions rebuilt here with plain maps, as a
//! multiset.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// (user id, session id JSON text or None, start, end, events, plays).
type Session = (String, Option<String>, i64, i64, u64, u64);
/// (user id, session id JSON text or None).
type Key = (String, Option<String>);

/// The session rule, from scratch: the events (any page) of one (user id,
/// session id), for non-empty user ids, sorted by time and cut where two
/// consecutive ones are more than `gap_ms` apart.
fn expected_sessions(input: &Path, gap_ms: i64) -> Vec<Session> {
    let mut by_key: BTreeMap<Key, Vec<(i64, bool)>> = BTreeMap::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let user = match &event["userId"] {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if user.is_empty() {
            continue;
        }
        let session = match &event["sessionId"] {
            Value::Null => None,
            other => Some(other.to_string()),
        };
        let time = event["ts"].as_i64().unwrap();
        by_key
            .entry((user, session))
            .or_default()
            .push((time, event["page"] == "NextSong"));
    }
    let mut sessions = Vec::new();
    for ((user, session), mut events) in by_key {
        events.sort_unstable();
        let mut current: Option<(i64, i64, u64, u64)> = None;
        for (time, play) in events {
            let play = u64::from(play);
            current = match current {
                Some((start, end, n, plays)) if time - end <= gap_ms => {
                    Some((start, time, n + 1, plays + play))
                }
                Some((start, end, n, plays)) => {
                    sessions.push((user.clone(), session.clone(), start, end, n, plays));
                    Some((time, time, 1, play))
                }
                None => Some((time, time, 1, play)),
            };
        }
        if let Some((start, end, n, plays)) = current {
            sessions.push((user.clone(), session.clone(), start, end, n, plays));
        }
    }
    sessions.sort();
    sessions
}

/// The session records of a JSON Lines file, checked for their exact
/// fields, sorted.
fn written_sessions(path: &Path) -> Vec<Session> {
    let mut sessions: Vec<Session> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let mut keys: Vec<&str> = record
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "end_ms",
                    "events",
                    "plays",
                    "session_id",
                    "start_ms",
                    "user_id"
                ],
                "{line}"
            );
            let session = match &record["session_id"] {
                Value::Null => None,
                other => Some(other.to_string()),
            };
            let number = |key: &str| record[key].as_u64().unwrap();
            (
                record["user_id"].as_str().unwrap().to_owned(),
                session,
                record["start_ms"].as_i64().unwrap(),
                record["end_ms"].as_i64().unwrap(),
                number("events"),
                number("plays"),
            )
        })
        .collect();
    sessions.sort();
    sessions
}

fn replay_sessions(input: &Path, dir: &Path, extra: &[&str]) -> (Vec<Session>, Value) {
    let path = dir.join("sessions.jsonl");
    let mut args = vec!["--sessions", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (_, summary) = common::replay(input, dir, &args);
    (written_sessions(&path), summary)
}

#[test]
fn replay_writes_the_sessions_rebuilt_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let expected = expected_sessions(&input, 30 * 60_000);
    let (got, summary) = replay_sessions(&input, dir.path(), &[]);
    assert!(expected.len() > 500, "{} sessions", expected.len());
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(summary["sessions"], expected.len());
    // Every stream of the data is in a session (its users are all known).
    let plays: u64 = got.iter().map(|s| s.5).sum();
    assert_eq!(summary["streams"], plays);
}

/// A 2-minute gap cuts many (user, session) pairs into several sessions;
/// with the input in blocks reversed (out of order, within the lateness)
/// the sessions are the same.
#[test]
fn a_short_gap_cuts_sessions_whatever_the_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let gap_ms = 2 * 60_000;
    let expected = expected_sessions(&input, gap_ms);
    let whole = expected_sessions(&input, 30 * 60_000);
    assert!(
        expected.len() > whole.len() + 100,
        "the short gap cuts: {} vs {}",
        expected.len(),
        whole.len()
    );
    let config = dir.path().join("downbeat.toml");
    std::fs::write(
        &config,
        format!("[sessions]\ngap_ms = {gap_ms}\n[windows]\nallowed_lateness_ms = 600000\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (got, _) = replay_sessions(&input, dir.path(), &["--config", config]);
    assert_eq!(got, expected);

    // Blocks of 8 lines reversed: each event at most a few seconds out of
    // order (the lateness allows ten minutes).
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let shuffled: Vec<&str> = lines
        .chunks(8)
        .flat_map(|block| block.iter().rev().copied())
        .collect();
    let out_of_order = dir.path().join("shuffled.jsonl");
    std::fs::write(&out_of_order, shuffled.join("\n") + "\n").unwrap();
    let (got, summary) = replay_sessions(&out_of_order, dir.path(), &["--config", config]);
    assert_eq!(summary["late"], 0);
    assert_eq!(got, expected);
}

/// `run --emit-sessions` over the file: the same sessions, closed as the
/// idle watermark passes them, with the metrics and the API agreeing.
#[test]
fn run_emits_the_same_sessions_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let expected = expected_sessions(&input, 30 * 60_000);
    let path = dir.path().join("sessions.jsonl");
    let engine = common::start_run(&[
        "--input",
        input.to_str().unwrap(),
        "--idle-timeout-ms",
        "500",
        "--emit-sessions",
        path.to_str().unwrap(),
    ]);
    let lines = || {
        std::fs::read_to_string(&path)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    common::wait_until(Duration::from_secs(30), "every session written", || {
        lines() >= expected.len()
    });
    assert_eq!(written_sessions(&path), expected);
    let (_, metrics) = common::get(engine.port, "/metrics").unwrap();
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    common::wait_until(Duration::from_secs(10), "the gauges to settle", || {
        let (_, metrics) = common::get(engine.port, "/metrics").unwrap();
        metrics.contains("\ndownbeat_open_sessions 0\n")
    });
    assert_eq!(
        sample("downbeat_sessions_closed_total"),
        expected.len() as f64
    );
    assert_eq!(
        sample("downbeat_session_duration_seconds_count"),
        expected.len() as f64
    );
    let plays: u64 = expected.iter().map(|s| s.5).sum();
    assert_eq!(sample("downbeat_session_plays_sum"), plays as f64);
    let (status, body) = common::get(engine.port, "/api/v1/sessions").unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let latest_end = expected.iter().map(|s| s.3).max().unwrap();
    let mut recent: Vec<i64> = expected
        .iter()
        .filter(|s| s.3 > latest_end - 600_000)
        .map(|s| s.3 - s.2)
        .collect();
    recent.sort_unstable();
    assert_eq!(doc["closed"], recent.len());
    assert_eq!(doc["latest_end_ms"], latest_end);
    let median = if recent.len() % 2 == 1 {
        recent[recent.len() / 2] as f64 / 1000.0
    } else {
        (recent[recent.len() / 2 - 1] + recent[recent.len() / 2]) as f64 / 2000.0
    };
    assert_eq!(doc["median_duration_seconds"], median);
    assert_eq!(doc["open"], 0);
}

/// The session output may not share the window output's file (their lines
/// would interleave): refused before anything is read or written.
#[test]
fn sessions_and_windows_may_not_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let both = dir.path().join("both.jsonl");
    let output = common::downbeat()
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&both)
        .arg("--sessions")
        .arg(&both)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--output and --sessions both name"),
        "{stderr}"
    );
    assert!(!both.exists(), "nothing written");
}

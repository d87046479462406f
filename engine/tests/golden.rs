//! Golden tests: `downbeat replay` against results computed independently.
//!
//! - The real EventSim (Sparkify) data: expected windows are recomputed here
//!   from the raw JSON with plain maps and sets, not with the engine's code.
//! - Hand-derived cases in `tests/golden/<case>/`: `input.jsonl`,
//!   `expected.jsonl` (each object matched as a subset of the emitted
//!   window, in order) and optionally `expected_summary.json`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};

const MINUTE_MS: i64 = 60_000;
const SLIDING_WIDTH_MS: i64 = 10 * MINUTE_MS;

/// Per-minute plays: (user, artist, song) of every NextSong.
fn plays_by_minute(input: &Path) -> BTreeMap<i64, Vec<(String, String, String)>> {
    let mut minutes: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for line in std::fs::read_to_string(input).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["page"] != "NextSong" {
            continue;
        }
        let ts = v["ts"].as_i64().unwrap();
        let minute = ts - ts.rem_euclid(MINUTE_MS);
        let text = |k: &str| v[k].as_str().unwrap().to_owned();
        minutes
            .entry(minute)
            .or_default()
            .push((text("userId"), text("artist"), text("song")));
    }
    minutes
}

fn expected_window(kind: &str, start: i64, end: i64, plays: &[&(String, String, String)]) -> Value {
    let users: HashSet<&String> = plays.iter().map(|p| &p.0).collect();
    let mut counts: HashMap<(&String, &String), u64> = HashMap::new();
    for p in plays {
        *counts.entry((&p.1, &p.2)).or_default() += 1;
    }
    let mut songs: Vec<_> = counts.into_iter().collect();
    songs.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(a.0 .0.cmp(b.0 .0))
            .then(a.0 .1.cmp(b.0 .1))
    });
    let top: Vec<Value> = songs
        .iter()
        .take(10)
        .map(|((artist, song), n)| json!({"artist": artist, "song": song, "streams": n}))
        .collect();
    let mut artist_counts: BTreeMap<&String, u64> = BTreeMap::new();
    for p in plays.iter().filter(|p| !p.1.is_empty()) {
        *artist_counts.entry(&p.1).or_default() += 1;
    }
    let mut artists: Vec<_> = artist_counts.into_iter().collect();
    // Stable sort of a map in artist order: ties stay in byte order.
    artists.sort_by_key(|a| std::cmp::Reverse(a.1));
    let top_artists: Vec<Value> = artists
        .iter()
        .take(10)
        .map(|(artist, n)| json!({"artist": artist, "streams": n}))
        .collect();
    json!({"window": kind, "start_ms": start, "end_ms": end, "streams": plays.len(),
           "active_users": users.len(), "top_songs": top, "top_artists": top_artists})
}

/// Every non-empty 1-minute tumbling window and 10-minute sliding window
/// (ends on minute boundaries), ordered by end, tumbling first.
fn expected_windows(input: &Path) -> Vec<Value> {
    let minutes = plays_by_minute(input);
    let mut ends = BTreeSet::new();
    for &minute in minutes.keys() {
        for k in 1..=SLIDING_WIDTH_MS / MINUTE_MS {
            ends.insert(minute + k * MINUTE_MS);
        }
    }
    let mut out = Vec::new();
    for end in ends {
        if let Some(plays) = minutes.get(&(end - MINUTE_MS)) {
            out.push(expected_window(
                "tumbling",
                end - MINUTE_MS,
                end,
                &plays.iter().collect::<Vec<_>>(),
            ));
        }
        let plays: Vec<_> = minutes
            .range(end - SLIDING_WIDTH_MS..end)
            .flat_map(|(_, p)| p)
            .collect();
        out.push(expected_window(
            "sliding",
            end - SLIDING_WIDTH_MS,
            end,
            &plays,
        ));
    }
    out
}

#[test]
fn eventsim_replay_matches_an_independent_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let (windows, summary) = common::replay(&input, dir.path(), &[]);
    let expected = expected_windows(&input);
    let got: Vec<Value> = windows.iter().map(common::contract).collect();
    assert_eq!(got.len(), expected.len(), "number of windows");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }
    assert_eq!(summary["lines"], 10_000);
    assert_eq!(summary["streams"], 8_347);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["late"], 0);
}

#[test]
fn eventsim_breakdowns_add_up_and_match_the_raw_levels() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let (windows, _) = common::replay(&input, dir.path(), &[]);
    let mut paid_by_minute: BTreeMap<i64, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["page"] == "NextSong" && v["level"] == "paid" {
            let ts = v["ts"].as_i64().unwrap();
            *paid_by_minute
                .entry(ts - ts.rem_euclid(MINUTE_MS))
                .or_default() += 1;
        }
    }
    for w in windows.iter().filter(|w| w["window"] == "tumbling") {
        let streams = w["streams"].as_u64().unwrap();
        for dimension in ["level", "device", "state", "gender"] {
            let sum: u64 = w["breakdown"][dimension]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(sum, streams, "{dimension} breakdown of {w}");
        }
        let paid = w["breakdown"]["level"]["paid"].as_u64().unwrap_or(0);
        let start = w["start_ms"].as_i64().unwrap();
        assert_eq!(paid, paid_by_minute.get(&start).copied().unwrap_or(0));
        assert!(
            w["listening"]["count"].as_u64().unwrap() == streams,
            "every NextSong has a length"
        );
    }
}

#[test]
fn parallel_decode_gives_the_same_results_as_inline() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let (inline, inline_summary) = common::replay(&input, dir.path(), &["--decode-threads", "1"]);
    let (parallel, parallel_summary) =
        common::replay(&input, dir.path(), &["--decode-threads", "3"]);
    assert_eq!(inline_summary["decode_threads"], 1);
    assert_eq!(parallel_summary["decode_threads"], 3);
    assert_eq!(inline, parallel);
    for key in ["lines", "streams", "rejected", "late", "windows"] {
        assert_eq!(inline_summary[key], parallel_summary[key], "{key}");
    }
}

#[test]
fn stdin_and_a_mapped_file_give_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let (from_file, _) = common::replay(&input, dir.path(), &[]);
    for threads in ["1", "2"] {
        let stdout = common::stdout_of(
            common::downbeat()
                .args(["replay", "--input", "-", "--decode-threads", threads])
                .stdin(std::fs::File::open(&input).unwrap()),
        );
        let from_stdin: Vec<Value> = String::from_utf8(stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(from_stdin, from_file, "stdin with {threads} decode threads");
    }
}

fn is_subset(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => e
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        _ => expected == got,
    }
}

#[test]
fn hand_derived_golden_cases() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut ran = 0;
    for case in std::fs::read_dir(&cases).unwrap() {
        let case = case.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        let (windows, summary) = common::replay(&case.join("input.jsonl"), dir.path(), &[]);
        let expected: Vec<Value> = std::fs::read_to_string(case.join("expected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            windows.len(),
            expected.len(),
            "{}: {windows:#?}",
            case.display()
        );
        for (e, g) in expected.iter().zip(&windows) {
            assert!(
                is_subset(e, g),
                "{}:\nexpected {e}\n     got {g}",
                case.display()
            );
        }
        if let Ok(text) = std::fs::read_to_string(case.join("expected_summary.json")) {
            let e: Value = serde_json::from_str(&text).unwrap();
            assert!(
                is_subset(&e, &summary),
                "{}: summary {summary}",
                case.display()
            );
        }
        ran += 1;
    }
    assert!(ran > 0, "no golden cases found in {}", cases.display());
}

//! `downbeat run` end to end: the HTTP endpoints, a parseable exposition whose
//! counters move, windows from a file source closed by the idle watermark,
//! and a server that survives malformed HTTP.
#![allow(clippy::too_many_lines)] // a test reads top to bottom, as one scenario

mod common;

use common::{get, request};

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

type Engine = common::RunningEngine;

fn start(args: &[&str]) -> Engine {
    common::start_run(args)
}

type Sample = (String, BTreeMap<String, String>, f64);

/// Strict parser for the Prometheus text format 0.0.4: metric and label
/// names, label-value escapes (\\ \" \n only), float values; panics on error.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn name_end(s: &str) -> usize {
        s.char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(s.len(), |(i, _)| i)
    }
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let end = name_end(line);
        assert!(end > 0, "no metric name: {line}");
        let name = line[..end].to_owned();
        let mut rest = &line[end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let end = name_end(rest);
                assert!(end > 0, "bad label name in {line}");
                let label = rest[..end].to_owned();
                rest = rest[end..]
                    .strip_prefix("=\"")
                    .unwrap_or_else(|| panic!("expected =\" in {line}"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let close = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        Some((_, '\n')) => panic!("raw newline in label value: {line}"),
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line}"),
                    }
                };
                labels.insert(label, value);
                rest = &rest[close + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line}"));
        assert!(
            !value.contains(' '),
            "explicit timestamps are not expected: {line}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        samples.push((name, labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn generator_run_serves_moving_metrics_and_health() {
    let engine = start(&["--rate", "2000"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(engine.port, "/readyz").unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, first) = get(engine.port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let first = parse_exposition(&first);
    std::thread::sleep(Duration::from_millis(1500));
    let second = parse_exposition(&get(engine.port, "/metrics").unwrap().1);
    let events =
        |s: &[Sample]| value(s, "downbeat_events_total", &[]).expect("downbeat_events_total");
    let streams =
        |s: &[Sample]| value(s, "downbeat_streams_total", &[]).expect("downbeat_streams_total");
    assert!(events(&second) > events(&first), "events_total moves");
    assert!(streams(&second) > streams(&first), "streams_total moves");
    for family in [
        "downbeat_events_rejected_total",
        "downbeat_late_events_total",
        "downbeat_streams_by_level_total",
        "downbeat_streams_by_device_total",
        "downbeat_streams_by_state_total",
        "downbeat_streams_by_gender_total",
        "downbeat_listening_duration_seconds_bucket",
        "downbeat_last_event_timestamp_seconds",
        "downbeat_watermark_lag_seconds",
    ] {
        assert!(
            second.iter().any(|(n, _, _)| n == family),
            "{family} is exported"
        );
    }
    assert_eq!(get(engine.port, "/nope").unwrap().0, 404);
    let (status, body) = get(engine.port, "/api/v1/windows/latest").unwrap();
    assert_eq!(status, 200);
    let latest: Value = serde_json::from_str(&body).unwrap();
    assert!(
        latest.get("tumbling").is_some() && latest.get("sliding").is_some(),
        "{latest}"
    );
    let post = request(
        engine.port,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.unwrap().0, 405);
}

#[test]
fn server_survives_malformed_http() {
    let engine = start(&["--rate", "100"]);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBroken header line without colon\r\n\r\n",
    ] {
        let answer = request(engine.port, garbage);
        if let Ok((status, _)) = answer {
            assert!(
                status == 0 || status >= 400,
                "malformed request answered {status}"
            );
        }
        assert_eq!(
            get(engine.port, "/healthz").unwrap().0,
            200,
            "still alive after {garbage:?}"
        );
    }
    // A client that connects and says nothing does not block others.
    let _idle = TcpStream::connect(("127.0.0.1", engine.port)).unwrap();
    assert_eq!(get(engine.port, "/healthz").unwrap().0, 200);
}

#[test]
fn file_source_closes_windows_when_idle_and_escapes_titles() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let tricky = "Quote \\\"q\\\" back\\\\slash new\\nline 🎵";
    let mut lines = Vec::new();
    for i in 0..30 {
        let song = if i % 3 == 0 { "Plain" } else { tricky };
        lines.push(format!(
            "{{\"ts\":{},\"userId\":\"u{}\",\"page\":\"NextSong\",\"artist\":\"Ärtist\",\"song\":\"{song}\",\"level\":\"paid\",\"location\":\"Austin, TX\"}}",
            1_700_000_040_000i64 + i * 1000,
            i % 7
        ));
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let emitted = dir.path().join("windows.jsonl");
    let engine = start(&[
        "--input",
        input.to_str().unwrap(),
        "--idle-timeout-ms",
        "300",
        "--emit-windows",
        emitted.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let latest = loop {
        let (_, body) = get(engine.port, "/api/v1/windows/latest").unwrap();
        let latest: Value = serde_json::from_str(&body).unwrap();
        if !latest["tumbling"].is_null() && !latest["sliding"].is_null() {
            break latest;
        }
        assert!(Instant::now() < deadline, "windows never closed: {latest}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(latest["tumbling"]["streams"], 30);
    assert_eq!(latest["tumbling"]["active_users"], 7);
    let title = "Quote \"q\" back\\slash new\nline 🎵";
    assert_eq!(latest["tumbling"]["top_songs"][0]["song"], title);
    assert_eq!(latest["tumbling"]["top_songs"][0]["streams"], 20);

    let samples = parse_exposition(&get(engine.port, "/metrics").unwrap().1);
    assert_eq!(
        value(&samples, "downbeat_window_streams", &[("window", "1m")]),
        Some(30.0)
    );
    assert_eq!(
        value(&samples, "downbeat_active_users", &[("window", "10m")]),
        Some(7.0)
    );
    assert_eq!(
        value(
            &samples,
            "downbeat_top_song_streams",
            &[("window", "1m"), ("rank", "1")]
        ),
        Some(20.0)
    );
    assert_eq!(
        value(
            &samples,
            "downbeat_top_song_info",
            &[
                ("window", "1m"),
                ("rank", "1"),
                ("song", title),
                ("artist", "Ärtist")
            ]
        ),
        Some(1.0),
        "the title round-trips through label escaping"
    );
    let info_series = samples
        .iter()
        .filter(|(n, l, _)| n == "downbeat_top_song_info" && l["window"] == "1m")
        .count();
    assert_eq!(info_series, 2, "one info series per ranked song");
    assert_eq!(
        value(
            &samples,
            "downbeat_streams_by_state_total",
            &[("state", "TX")]
        ),
        Some(30.0)
    );
    let emitted = std::fs::read_to_string(&emitted).unwrap();
    let first: Value = serde_json::from_str(emitted.lines().next().unwrap()).unwrap();
    assert_eq!(first["window"], "tumbling");
    assert_eq!(first["streams"], 30);
}

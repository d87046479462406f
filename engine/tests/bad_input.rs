//! The bad-input corpus: replay never stops on bad lines, counts each one,
//! keeps each one verbatim with `--rejects`, and the good lines around them
//! give exactly the windows they give alone.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Bad lines, each with the reason it must be refused for.
fn corpus(good: &[&[u8]]) -> Vec<(Vec<u8>, &'static str)> {
    let sample = good[10];
    let text = std::str::from_utf8(sample).unwrap();
    let with_ts = |ts: &str| {
        let v: Value = serde_json::from_str(text).unwrap();
        text.replacen(&format!("\"ts\":{}", v["ts"]), &format!("\"ts\":{ts}"), 1)
            .into_bytes()
    };
    let mut invalid_utf8 = sample.to_vec();
    let at = invalid_utf8
        .windows(7)
        .position(|w| w == b"\"song\":")
        .unwrap()
        + 9;
    invalid_utf8[at] = 0xff;
    // Deterministic binary garbage without newlines.
    let mut state: u32 = 0x9e37_79b9;
    let garbage: Vec<u8> = (0..300)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as u8) | 0x80
        })
        .collect();
    let mut huge =
        b"{\"ts\":1513720872284,\"userId\":\"1\",\"page\":\"NextSong\",\"song\":\"".to_vec();
    huge.resize(10 << 20, b'a');
    huge.extend_from_slice(b"\"}");
    vec![
        (sample[..sample.len() / 2].to_vec(), "invalid_json"),
        (with_ts("\"yesterday\""), "wrong_type"),
        (
            text.replacen("\"userId\":\"", "\"userId\":[\"", 1)
                .replacen("\",\"sessionId\"", "\"],\"sessionId\"", 1)
                .into_bytes(),
            "wrong_type",
        ),
        (b"[1,2,3]".to_vec(), "wrong_type"),
        (invalid_utf8, "invalid_utf8"),
        (garbage, "invalid_utf8"),
        (b"\x00\x01\x02 not json".to_vec(), "invalid_json"),
        (huge, "line_too_long"),
        (Vec::new(), "empty_line"),
        (b"   \t ".to_vec(), "empty_line"),
        (with_ts("99999999999999"), "timestamp_out_of_range"),
        (with_ts("4102444800000"), "timestamp_out_of_range"),
        (with_ts("-1000"), "timestamp_out_of_range"),
        (
            text.replacen("\"userId\":\"", "\"userId\":\"\",\"x\":\"", 1)
                .into_bytes(),
            "missing_user",
        ),
        (
            text.replacen("\"song\":", "\"song\":null,\"s\":", 1)
                .into_bytes(),
            "missing_song",
        ),
        (
            b"{\"userId\":\"5\",\"page\":\"NextSong\",\"song\":\"s\"}".to_vec(),
            "missing_timestamp",
        ),
    ]
}

fn write_lines(path: &Path, lines: &[&[u8]]) {
    let mut all = Vec::new();
    for line in lines {
        all.extend_from_slice(line);
        all.push(b'\n');
    }
    std::fs::write(path, all).unwrap();
}

#[test]
fn bad_lines_are_counted_kept_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read(common::eventsim_file(dir.path())).unwrap();
    let good: Vec<&[u8]> = source
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(3_000)
        .collect();
    let bad = corpus(&good);

    // Interleave: one bad line after every 150 good ones.
    let mut mixed: Vec<&[u8]> = Vec::new();
    let mut bad_in_order: Vec<&[u8]> = Vec::new();
    let mut bad_iter = bad.iter();
    for (i, line) in good.iter().enumerate() {
        mixed.push(line);
        if i % 150 == 75 {
            if let Some((b, _)) = bad_iter.next() {
                mixed.push(b);
                bad_in_order.push(b);
            }
        }
    }
    assert_eq!(bad_in_order.len(), bad.len(), "every bad line was placed");

    let clean_dir = tempfile::tempdir().unwrap();
    let clean_input = clean_dir.path().join("clean.jsonl");
    write_lines(&clean_input, &good);
    let (clean_windows, clean_summary) = common::replay(&clean_input, clean_dir.path(), &[]);

    let mixed_input = dir.path().join("mixed.jsonl");
    write_lines(&mixed_input, &mixed);
    let rejects = dir.path().join("rejects.jsonl");
    let (windows, summary) = common::replay(
        &mixed_input,
        dir.path(),
        &["--rejects", rejects.to_str().unwrap()],
    );

    assert_eq!(
        windows, clean_windows,
        "good lines give the same windows with or without bad ones around"
    );
    assert_eq!(summary["streams"], clean_summary["streams"]);
    assert_eq!(summary["rejected"], bad.len() as u64, "{summary}");
    let mut expected_reasons = serde_json::Map::new();
    for (_, reason) in &bad {
        let n = expected_reasons
            .get(*reason)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        expected_reasons.insert(reason.to_string(), Value::from(n + 1));
    }
    assert_eq!(
        summary["rejected_by_reason"],
        Value::Object(expected_reasons)
    );

    let mut expected_rejects = Vec::new();
    for line in &bad_in_order {
        expected_rejects.extend_from_slice(line);
        expected_rejects.push(b'\n');
    }
    let kept = std::fs::read(&rejects).unwrap();
    assert!(
        kept == expected_rejects,
        "the rejects file holds every bad line verbatim, in order ({} vs {} bytes)",
        kept.len(),
        expected_rejects.len()
    );
}

#[test]
fn late_events_are_counted_and_kept_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("late.jsonl");
    let line = |ts: i64, user: &str| {
        format!("{{\"ts\":{ts},\"userId\":\"{user}\",\"page\":\"NextSong\",\"artist\":\"A\",\"song\":\"s\"}}")
    };
    let base = 1_700_000_040_000;
    let late = line(base + 1_000, "late");
    let lines = [
        line(base, "a"),
        line(base + 120_000, "b"),
        late.clone(),
        line(base + 121_000, "c"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let (windows, summary) = common::replay(
        &input,
        dir.path(),
        &["--rejects", rejects.to_str().unwrap()],
    );
    assert_eq!(summary["late"], 1);
    assert_eq!(summary["streams"], 3);
    assert_eq!(std::fs::read_to_string(&rejects).unwrap(), late + "\n");
    let first = &windows[0];
    assert_eq!(
        (first["window"].as_str(), first["streams"].as_u64()),
        (Some("tumbling"), Some(1))
    );
}

#[test]
fn missing_input_is_a_clear_error_not_a_crash() {
    let output = common::downbeat()
        .args(["replay", "--input", "/nonexistent/file.jsonl"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/file.jsonl"), "{stderr}");
    assert_eq!(
        stderr.matches("os error 2").count(),
        1,
        "the cause once: {stderr}"
    );
}

/// An output that is the input file (same device and inode, also through
/// a link) is refused before anything is opened for writing.
#[test]
fn writing_to_the_input_is_refused_and_the_input_survives() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link.jsonl");
    std::fs::hard_link(&input, &link).unwrap();
    for (flag, target) in [
        ("--output", &input),
        ("--rejects", &input),
        ("--output", &link),
    ] {
        for threads in ["1", "2"] {
            let output = common::downbeat()
                .args(["replay", "--decode-threads", threads, "--input"])
                .arg(&input)
                .arg(flag)
                .arg(target)
                .output()
                .unwrap();
            assert!(!output.status.success(), "{flag} {target:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("is the input"), "{stderr}");
            assert_eq!(
                std::fs::read(&input).unwrap(),
                before,
                "the input is intact"
            );
        }
    }
    let output = common::downbeat()
        .args(["run", "--listen", "127.0.0.1:0", "--input"])
        .arg(&input)
        .arg("--emit-windows")
        .arg(&link)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is the input"));
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn bad_config_is_refused_before_reading_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[windows]\ntop_k = 0\n").unwrap();
    let output = common::downbeat()
        .args(["replay", "--input", "/nonexistent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("windows.top_k"), "{stderr}");
    std::fs::write(&config, "[windows]\nunknown_knob = 1\n").unwrap();
    let output = common::downbeat()
        .args(["replay", "--input", "-", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown_knob"));
}

/// A line longer than the 64 MiB verbatim cap is one refused line, kept cut
/// to the cap, in replay (one thread and several) and in live `run --input`
/// alike: every source splits lines in the one place.
#[test]
fn an_endless_line_is_one_rejected_line_in_every_mode() {
    const CAP: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("endless.jsonl");
    let play = |ts: i64| {
        format!("{{\"ts\":{ts},\"userId\":\"u\",\"page\":\"NextSong\",\"artist\":\"A\",\"song\":\"s\"}}\n")
    };
    let mut bytes = play(1_700_000_000_000).into_bytes();
    bytes.extend(std::iter::repeat_n(b'x', CAP + (3 << 20)));
    bytes.push(b'\n');
    bytes.extend_from_slice(play(1_700_000_001_000).as_bytes());
    std::fs::write(&input, &bytes).unwrap();
    for threads in ["1", "2"] {
        let rejects = dir.path().join(format!("rejects-{threads}.jsonl"));
        let (_, summary) = common::replay(
            &input,
            dir.path(),
            &[
                "--decode-threads",
                threads,
                "--rejects",
                rejects.to_str().unwrap(),
            ],
        );
        assert_eq!(summary["lines"], 3, "threads {threads}: {summary}");
        assert_eq!(summary["streams"], 2, "threads {threads}");
        assert_eq!(
            summary["rejected_by_reason"]["line_too_long"], 1,
            "threads {threads}"
        );
        let kept = std::fs::metadata(&rejects).unwrap().len();
        assert!(kept as usize >= CAP, "threads {threads}: kept {kept} bytes");
    }
    let rejects = dir.path().join("rejects-live.jsonl");
    let engine = common::start_run(&[
        "--input",
        input.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ]);
    common::wait_until(
        Duration::from_secs(30),
        "run to count both plays (two plays wait for a third to confirm the stream's time; the idle source settles them)",
        || {
            let stats = common::get(engine.port, "/api/v1/stats").map(|(_, body)| body);
            stats.is_ok_and(|body| {
                let stats: Value = serde_json::from_str(&body).unwrap();
                stats["streams_total"] == 2
            })
        },
    );
    let (_, body) = common::get(engine.port, "/api/v1/stats").unwrap();
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["rejected_by_reason"]["line_too_long"], 1, "{stats}");
    assert_eq!(stats["streams_total"], 2, "{stats}");
    drop(engine);
    assert_eq!(
        std::fs::metadata(&rejects).unwrap().len(),
        CAP as u64 + 1,
        "cut to the cap, plus its newline"
    );
}

/// The Sparkify data with three isolated events far ahead of it (+2 h,
/// +23 h, +200 days): every window is exactly as without them, and the
/// three are refused as `timestamp_outlier` and kept in `--rejects`.
#[test]
fn isolated_future_outliers_change_no_window_and_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clean = common::eventsim_file(dir.path());
    let text = std::fs::read_to_string(&clean).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut outliers = Vec::new();
    for (position, ahead_ms) in [
        (2_500, 2 * 3_600_000i64),
        (5_000, 23 * 3_600_000),
        (7_500, 200 * 86_400_000),
    ] {
        let play = (position..)
            .find(|&i| lines[i].contains("\"page\":\"NextSong\""))
            .unwrap();
        let mut event: Value = serde_json::from_str(&lines[play]).unwrap();
        let ts = event["ts"].as_i64().unwrap();
        event["ts"] = Value::from(ts + ahead_ms);
        event["song"] = Value::from(format!("Outlier {ahead_ms}"));
        let line = event.to_string();
        lines.insert(position, line.clone());
        outliers.push(line);
    }
    let dirty = dir.path().join("outliers.jsonl");
    std::fs::write(&dirty, lines.join("\n") + "\n").unwrap();
    let expected_dir = dir.path().join("clean");
    std::fs::create_dir(&expected_dir).unwrap();
    let (expected, clean_summary) = common::replay(&clean, &expected_dir, &[]);
    assert_eq!(clean_summary["rejected"], 0);
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}"));
        std::fs::create_dir(&out).unwrap();
        let rejects = out.join("rejects.jsonl");
        let (windows, summary) = common::replay(
            &dirty,
            &out,
            &[
                "--decode-threads",
                threads,
                "--rejects",
                rejects.to_str().unwrap(),
            ],
        );
        assert_eq!(
            windows, expected,
            "threads {threads}: every window as without the outliers"
        );
        assert_eq!(
            summary["rejected_by_reason"]["timestamp_outlier"], 3,
            "{summary}"
        );
        assert_eq!(summary["streams"], clean_summary["streams"]);
        assert_eq!(summary["late"], 0);
        let kept = std::fs::read_to_string(&rejects).unwrap();
        assert_eq!(
            kept.lines().collect::<Vec<_>>(),
            outliers.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
}

/// A play with a giant title is refused as `field_too_long` (and kept);
/// the bound is configurable.
#[test]
fn giant_fields_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("giant.jsonl");
    let play = |ts: i64, song: &str| {
        format!("{{\"ts\":{ts},\"userId\":\"u\",\"page\":\"NextSong\",\"artist\":\"A\",\"song\":\"{song}\"}}")
    };
    let giant = play(1_700_000_001_000, &"t".repeat(1_000_000));
    let lines = [
        play(1_700_000_000_000, "ok"),
        giant.clone(),
        play(1_700_000_002_000, &"s".repeat(1024)),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let (windows, summary) = common::replay(
        &input,
        dir.path(),
        &["--rejects", rejects.to_str().unwrap()],
    );
    assert_eq!(
        summary["rejected_by_reason"]["field_too_long"], 1,
        "{summary}"
    );
    assert_eq!(
        summary["streams"], 2,
        "1024 bytes is within the default bound"
    );
    assert_eq!(windows[0]["streams"], 2);
    assert_eq!(std::fs::read_to_string(&rejects).unwrap(), giant + "\n");
    let config = dir.path().join("tight.toml");
    std::fs::write(&config, "[input]\nmax_field_bytes = 512\n").unwrap();
    let (_, summary) = common::replay(&input, dir.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(
        summary["rejected_by_reason"]["field_too_long"], 2,
        "{summary}"
    );
}

/// `--rejects` keeps refused lines byte for byte, a CRLF line's `\r` too.
#[test]
fn rejects_keep_crlf_lines_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("crlf.jsonl");
    std::fs::write(&input, b"{\"ts\":oops}\r\nnot json\r\n").unwrap();
    for threads in ["1", "2"] {
        let rejects = dir.path().join(format!("rejects-{threads}.jsonl"));
        common::replay(
            &input,
            dir.path(),
            &[
                "--decode-threads",
                threads,
                "--rejects",
                rejects.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read(&rejects).unwrap(),
            b"{\"ts\":oops}\r\nnot json\r\n",
            "threads {threads}"
        );
    }
}

/// Three minutes in which every fourth play is one hit and every other play a
/// song never heard before.
fn flood_of_new_songs(path: &Path) -> Vec<(i64, bool)> {
    const START_MS: i64 = 1_700_000_040_000;
    let mut lines = String::new();
    let mut plays = Vec::new();
    for i in 0..24_000i64 {
        let ts = START_MS + i * 180_000 / 24_000;
        let hit = i % 4 == 0;
        let song = if hit {
            "Hit".to_owned()
        } else {
            format!("New song {i}")
        };
        lines.push_str(&format!(
            "{{\"ts\":{ts},\"userId\":\"u{}\",\"page\":\"NextSong\",\"artist\":\"A\",\"song\":\"{song}\"}}\n",
            i % 500
        ));
        plays.push((ts, hit));
    }
    std::fs::write(path, lines).unwrap();
    plays
}

/// Past its share of `memory.song_state_mib` a pane's song counts become
/// heavy hitters: the window records say so with their bound, the hit is
/// still on top within that bound, and everything else stays exact. Under
/// the default budget the same input is exact. `run` shows it in metrics.
#[test]
fn a_flood_of_new_songs_stays_within_the_budget_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flood.jsonl");
    let plays = flood_of_new_songs(&input);
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[memory]\nsong_state_mib = 1\n").unwrap();
    let (bounded, summary) =
        common::replay(&input, dir.path(), &["--config", config.to_str().unwrap()]);
    let (exact, _) = common::replay(&input, dir.path(), &[]);
    assert_eq!(summary["streams"], 24_000);
    assert_eq!(bounded.len(), exact.len());
    for (window, exact_window) in bounded.iter().zip(&exact) {
        let (start, end) = (
            window["start_ms"].as_i64().unwrap(),
            window["end_ms"].as_i64().unwrap(),
        );
        let inside = |&&(ts, _): &&(i64, bool)| start <= ts && ts < end;
        let streams = plays.iter().filter(inside).count() as u64;
        let hits = plays.iter().filter(inside).filter(|(_, hit)| *hit).count() as u64;
        assert_eq!(window["streams"], streams, "{window}");
        assert_eq!(window["active_users"], exact_window["active_users"]);
        assert_eq!(window["breakdown"], exact_window["breakdown"]);
        let bound = window["top_songs_max_undercount"]
            .as_u64()
            .expect("the bound is stated");
        assert!(
            bound > 0 && bound < hits / 4,
            "bound {bound} for {hits} hits"
        );
        let top = &window["top_songs"][0];
        assert_eq!(top["song"], "Hit");
        let counted = top["streams"].as_u64().unwrap();
        assert!(
            counted <= hits && hits - counted <= bound,
            "{counted} of {hits} within {bound}"
        );
        assert!(
            exact_window.get("top_songs_max_undercount").is_none(),
            "{exact_window}"
        );
        assert_eq!(exact_window["top_songs"][0]["streams"], hits);
    }

    let engine = common::start_run(&[
        "--config",
        config.to_str().unwrap(),
        "--idle-timeout-ms",
        "300",
        "--input",
        input.to_str().unwrap(),
    ]);
    common::wait_until(Duration::from_secs(20), "a window past the budget", || {
        let Ok((200, metrics)) = common::get(engine.port, "/metrics") else {
            return false;
        };
        let reductions = metrics
            .lines()
            .find_map(|line| line.strip_prefix("downbeat_song_count_reductions_total "));
        reductions.is_some_and(|n| n != "0")
            && metrics.lines().any(|line| {
                line.starts_with("downbeat_window_top_songs_max_undercount{window=\"1m\"} ")
                    && !line.ends_with(" 0")
            })
    });
}

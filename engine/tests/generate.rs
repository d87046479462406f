//! `downbeat generate`: deterministic, replayable EventSim events.

mod common;

use serde_json::Value;

fn generate(args: &[&str]) -> Vec<u8> {
    common::stdout_of(common::downbeat().arg("generate").args(args))
}

#[test]
fn same_seed_same_events_and_they_replay_cleanly() {
    let args = [
        "--count",
        "5000",
        "--seed",
        "3",
        "--rate",
        "50",
        "--start-ms",
        "1700000000000",
    ];
    let a = generate(&args);
    assert_eq!(a, generate(&args), "same seed and start: same bytes");
    assert_ne!(
        a,
        generate(&[
            "--count",
            "5000",
            "--seed",
            "4",
            "--rate",
            "50",
            "--start-ms",
            "1700000000000"
        ])
    );
    let lines: Vec<Value> = String::from_utf8(a.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5000);
    assert_eq!(lines[0]["ts"], 1_700_000_000_000i64);
    assert_eq!(
        lines[4999]["ts"],
        1_700_000_000_000i64 + 4999 * 20,
        "rate 50/s: 20 ms apart"
    );
    let plays = lines.iter().filter(|l| l["page"] == "NextSong").count();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("generated.jsonl");
    std::fs::write(&input, &a).unwrap();
    let (windows, summary) = common::replay(&input, dir.path(), &[]);
    assert_eq!(summary["streams"], plays as u64);
    assert_eq!(summary["rejected"], 0);
    let tumbling: u64 = windows
        .iter()
        .filter(|w| w["window"] == "tumbling")
        .map(|w| w["streams"].as_u64().unwrap())
        .sum();
    assert_eq!(
        tumbling, plays as u64,
        "every play lands in exactly one tumbling window"
    );
}

#[test]
fn generated_timestamps_end_now_by_default() {
    let out = generate(&["--count", "10", "--rate", "10"]);
    let last: Value =
        serde_json::from_str(String::from_utf8(out).unwrap().lines().last().unwrap()).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ts = last["ts"].as_i64().unwrap();
    assert!(
        (now_ms - ts).abs() < 60_000,
        "last event {ts} is close to now {now_ms}"
    );
}

#[test]
fn impossible_times_and_rates_are_refused_with_a_clear_message() {
    let output = common::downbeat()
        .args([
            "generate",
            "--count",
            "3",
            "--start-ms",
            "9223372036854775807",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "refused, not a panic or wrapped timestamps"
    );
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("year 9999"));
    let output = common::downbeat()
        .args(["generate", "--count", "3", "--rate", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("greater than 0"), "{stderr}");
}

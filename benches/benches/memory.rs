//! The memory budget under a flood of distinct songs and users, through
//! `downbeat replay --input -` as a user runs it: peak RSS and window-close
//! latency from the replay summary.
//!
//! `cargo bench -p downbeat-benches --bench memory`. Two inputs, every play a
//! song and a user never seen before:
//! - the issue's case: 1M plays in 2 minutes of event time (targets: peak RSS
//!   at most 160 MiB, close p99 at most 250 ms);
//! - a steady flood: 300k plays a minute for 15 minutes, so every pane the
//!   10-minute window holds is past its share of the budget.
//!
//! Each runs with listening sessions built (`--sessions /dev/null`), as
//! `run` builds them: every play opens a session, so open sessions pass
//! their budget; and without, for comparison.
//!
//! Figures are printed and compared with the targets, never asserted.

use std::io::Write;
use std::process::{Command, Stdio};

use downbeat_benches::downbeat_binary;
use serde_json::Value;

const START_MS: i64 = 1_764_400_000_000;
const MIB: f64 = 1024.0 * 1024.0;

/// A play of song `i` by user `i`, at `ts`.
fn play(i: u64, ts: i64, out: &mut Vec<u8>) {
    writeln!(
        out,
        r#"{{"ts":{ts},"userId":"{}","sessionId":{i},"page":"NextSong","auth":"Logged In","level":"paid","song":"Song number {i:07}","artist":"Artist number {i:07}","length":200.5,"location":"Austin, TX","userAgent":"Mozilla/5.0 (Windows NT 6.1)","gender":"F"}}"#,
        1_000_000 + i
    )
    .expect("writing to a Vec cannot fail");
}

/// Replays `count` distinct plays spread evenly over `span_ms` through
/// stdin; returns the replay summary (written on stderr).
fn replay_distinct(count: u64, span_ms: i64, sessions: bool) -> Value {
    let mut command = Command::new(downbeat_binary());
    command.args(["replay", "--input", "-", "--output", "/dev/null"]);
    if sessions {
        // Sessions built, as `run` does: every user is a new open session.
        command.args(["--sessions", "/dev/null"]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("downbeat starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut buffer = Vec::with_capacity(1 << 20);
    for i in 0..count {
        let ts = START_MS + (i as i64) * span_ms / count as i64;
        play(i, ts, &mut buffer);
        if buffer.len() >= 1 << 20 {
            stdin.write_all(&buffer).expect("replay reads stdin");
            buffer.clear();
        }
    }
    stdin.write_all(&buffer).expect("replay reads stdin");
    drop(stdin);
    let output = child.wait_with_output().expect("replay ends");
    assert!(output.status.success(), "replay failed");
    // The summary is the last line on stderr, after any log lines.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(last).expect("the summary is JSON")
}

fn report(name: &str, summary: &Value, targets: Option<(f64, f64)>) {
    let rss_mib = summary["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / MIB;
    let latency = &summary["window_close_latency_us"];
    let ms = |q: &str| latency[q].as_f64().unwrap_or(f64::NAN) / 1000.0;
    println!(
        "{name}: {} lines at {:.0} lines/s; peak RSS {rss_mib:.0} MiB; window close p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} sessions, {} evicted",
        summary["lines"],
        summary["lines_per_sec"].as_f64().unwrap_or(f64::NAN),
        ms("p50"),
        ms("p99"),
        ms("max"),
        summary["sessions"],
        summary["sessions_evicted"],
    );
    if let Some((rss_target_mib, p99_target_ms)) = targets {
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        println!(
            "  targets: peak RSS <= {rss_target_mib} MiB {}, close p99 <= {p99_target_ms} ms {}",
            verdict(rss_mib <= rss_target_mib),
            verdict(ms("p99") <= p99_target_ms),
        );
    }
}

fn main() {
    for sessions in [true, false] {
        let with = if sessions {
            "with sessions"
        } else {
            "without sessions"
        };
        let issue = replay_distinct(1_000_000, 120_000, sessions);
        report(
            &format!("1M distinct songs and users in 2 minutes, {with}"),
            &issue,
            Some((160.0, 250.0)),
        );
        let flood = replay_distinct(4_500_000, 900_000, sessions);
        report(
            &format!("300k distinct songs a minute for 15 minutes, {with}"),
            &flood,
            None,
        );
    }
}

//! Signals always end the process, and what was done is not lost: `run`
//! stops on SIGTERM even while stdin is idle; `replay` stopped by SIGTERM
//! writes the windows closed so far and a summary saying it was
//! interrupted, and exits non-zero. Failed outputs and a closed stderr are
//! reported by the exit status, not hidden or turned into a panic.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Wait for `child` to exit; panics after `timeout` (a liveness bound, not
/// a speed target: the time taken is printed).
fn exit_within(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            println!("exited {:?} after the signal", started.elapsed());
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "still running {timeout:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_stops_on_sigterm_while_stdin_is_idle() {
    let port = common::free_port();
    let mut child = common::downbeat()
        .args([
            "run",
            "--input",
            "-",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    common::wait_until(Duration::from_secs(20), "run to answer", || {
        matches!(common::get(port, "/healthz"), Ok((200, _)))
    });
    terminate(child.id());
    exit_within(&mut child, Duration::from_secs(10));
}

#[test]
fn replay_stopped_by_sigterm_writes_closed_windows_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::eventsim_file(dir.path());
    let output = dir.path().join("windows.jsonl");
    let mut child = common::downbeat()
        .args(["replay", "--input", "-", "--output"])
        .arg(&output)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The whole file, then an open pipe: replay waits for more.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&input).unwrap()).unwrap();
    stdin.flush().unwrap();
    // Until everything sent is counted: the output stops growing.
    let mut last = (0, Instant::now());
    common::wait_until(Duration::from_secs(30), "the output to settle", || {
        let len = std::fs::metadata(&output).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        }
        len > 0 && last.1.elapsed() > Duration::from_millis(700)
    });
    terminate(child.id());
    let status = exit_within(&mut child, Duration::from_secs(10));
    drop(stdin);
    assert!(!status.success(), "an interrupted replay exits non-zero");
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    let summary: Value = stderr
        .lines()
        .find_map(|line| {
            serde_json::from_str(line)
                .ok()
                .filter(|v: &Value| v.get("interrupted").is_some())
        })
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["lines"], 10_000);
    let written = std::fs::read_to_string(&output).unwrap();
    let windows: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        windows.len() as u64,
        summary["windows"].as_u64().unwrap(),
        "every closed window written, whole"
    );
    assert!(!windows.is_empty());
}

#[test]
fn a_failed_rejects_file_fails_the_replay_and_a_closed_stderr_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "not json\n".repeat(20_000)).unwrap();
    let output = common::downbeat()
        .args(["replay", "--input"])
        .arg(&input)
        .args(["--output", "/dev/null", "--rejects", "/dev/full"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rejects_write_error"), "{stderr}");
    assert!(stderr.contains("not all kept"), "{stderr}");
    // stderr closed: the summary cannot be written, the replay still succeeds.
    let status = Command::new("sh")
        .args([
            "-c",
            "exec \"$0\" replay --input \"$1\" --output /dev/null 2>&-",
        ])
        .arg(env!("CARGO_BIN_EXE_downbeat"))
        .arg(common::eventsim_file(dir.path()))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

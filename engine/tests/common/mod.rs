//! Helpers shared by the integration tests: running the binary, the shared data.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed and reaped when dropped, so a failing test leaves
/// nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `downbeat run` on a free loopback port; killed when dropped.
pub struct RunningEngine {
    _child: KillOnDrop,
    /// Its HTTP port.
    pub port: u16,
}

/// `downbeat run --listen 127.0.0.1:<free port> ARGS`, once it answers /healthz.
pub fn start_run(args: &[&str]) -> RunningEngine {
    let port = free_port();
    let child = downbeat()
        .arg("run")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let engine = RunningEngine {
        _child: KillOnDrop(child),
        port,
    };
    wait_until(
        Duration::from_secs(20),
        "downbeat run to answer /healthz",
        || matches!(get(port, "/healthz"), Ok((200, _))),
    );
    engine
}

/// The `downbeat` binary under test.
pub fn downbeat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_downbeat"))
}

/// Run `command`; panics with its stderr unless it exits 0; returns stdout.
pub fn stdout_of(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The real EventSim data, `cat part1 part2`, as one temporary file.
pub fn eventsim_file(dir: &Path) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let mut all = Vec::new();
    for part in [
        "sparkify_log_small.part1.jsonl",
        "sparkify_log_small.part2.jsonl",
    ] {
        let path = data.join(part);
        all.extend(std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the golden tests need ../shared/data beside the checkout)",
                path.display()
            )
        }));
    }
    let file = dir.join("eventsim.jsonl");
    std::fs::write(&file, all).unwrap();
    file
}

/// Run `downbeat replay --input <input> --output <dir>/windows.jsonl [extra]`;
/// returns the windows and the summary line. Panics unless it exits 0.
pub fn replay(input: &Path, dir: &Path, extra: &[&str]) -> (Vec<Value>, Value) {
    let output_path = dir.join("windows.jsonl");
    let output: Output = downbeat()
        .args(["replay", "--input"])
        .arg(input)
        .arg("--output")
        .arg(&output_path)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "replay failed: {stderr}");
    let summary_line = stderr.lines().last().expect("a summary line on stderr");
    let summary: Value = serde_json::from_str(summary_line).expect("the last stderr line is JSON");
    let windows = std::fs::read_to_string(&output_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each window line is JSON"))
        .collect();
    (windows, summary)
}

/// The contract fields of a window, for comparisons.
pub fn contract(window: &Value) -> Value {
    let mut v = serde_json::Map::new();
    for key in [
        "window",
        "start_ms",
        "end_ms",
        "streams",
        "active_users",
        "top_songs",
        "top_artists",
    ] {
        v.insert(key.to_owned(), window[key].clone());
    }
    Value::Object(v)
}

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Send a raw HTTP/1.1 request: (status, body).
pub fn request(port: u16, raw: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(raw)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Poll `condition` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

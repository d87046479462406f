//! A flood of slow connections cannot lock out health probes: `run` under
//! `ulimit -n 1024` with 1,100 connections that never finish their request
//! still answers every probe (the oldest connections are closed at the cap).
//! How fast the probes answer is reported on stdout, not asserted.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn slow_connections_beyond_the_descriptor_limit_do_not_stop_health_probes() {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .to_owned();
            line.split_whitespace().nth(3)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    assert!(
        limit >= 1_400,
        "this test holds 1,100 connections and needs `ulimit -n` of at least 1400 (here {limit})"
    );
    let port = common::free_port();
    let script = format!("ulimit -n 1024 && exec \"$0\" run --listen 127.0.0.1:{port} --rate 100");
    let child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_downbeat")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _engine = common::KillOnDrop(child);
    common::wait_until(Duration::from_secs(20), "run to answer", || {
        matches!(common::get(port, "/healthz"), Ok((200, _)))
    });
    let mut slow = Vec::new();
    for _ in 0..1_100 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            slow.push(stream);
        }
    }
    assert!(
        slow.len() >= 1_000,
        "opened {} slow connections",
        slow.len()
    );
    let mut answered = 0;
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        if matches!(common::get(port, "/healthz"), Ok((200, _))) {
            answered += 1;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "100 probes with {} slow connections open: p50 {:?}, p99 {:?}, max {:?}",
        slow.len(),
        latencies[49],
        latencies[98],
        latencies[99]
    );
    assert_eq!(answered, 100, "every probe answers 200");
}

//! Shared inputs for the benchmarks: generated EventSim lines, and helpers
//! for the benches that run `downbeat` and tansu as processes.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use downbeat::source::generator::{Generator, GeneratorConfig};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release `downbeat` binary, built first (benches that run it as a
/// process, as users do).
pub fn downbeat_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "downbeat-engine"])
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release binary failed");
    workspace().join("target/release/downbeat")
}

/// `count` EventSim classic lines (newline-terminated), `step_ms` apart from `start_ms`.
pub fn eventsim_lines(count: usize, start_ms: i64, step_ms: f64, seed: u64) -> Vec<u8> {
    let config = GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::for_rate(&config, 1000.0 / step_ms);
    let mut out = Vec::with_capacity(count * 480);
    for i in 0..count {
        generator.write_event(start_ms + (i as f64 * step_ms) as i64, &mut out);
        out.push(b'\n');
    }
    out
}

pub use downbeat::process::{current_rss_bytes, peak_rss_bytes};

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from a local engine: the body, empty on any failure.
pub fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A local engine's `downbeat_*` samples, `name{labels}` to value.
pub fn metrics(port: u16) -> BTreeMap<String, f64> {
    http_get(port, "/metrics")
        .lines()
        .filter(|l| l.starts_with("downbeat_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// One sample of [`metrics`], 0 when absent.
pub fn metric(port: u16, key: &str) -> f64 {
    metrics(port).get(key).copied().unwrap_or(0.0)
}

/// A tansu broker with in-memory storage on `port`, started (needs `tansu`
/// on PATH; ./test.sh installs it).
pub fn tansu(port: u16) -> Killed {
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Killed(
        Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`tansu` 0.6.0 not found on PATH: install it with `cargo install tansu --version 0.6.0 --features dynostore --locked` (./test.sh does)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    broker
}

/// Create `name` with `partitions` partitions on the tansu broker at `port`.
pub fn create_topic(port: u16, name: &str, partitions: u32) {
    let status = Command::new("tansu")
        .args([
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ])
        .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
        .status()
        .unwrap();
    assert!(status.success());
}

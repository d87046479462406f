//! Shared inputs for the benchmarks: generated EventSim lines.
#![deny(missing_docs)]

use std::path::PathBuf;
use std::process::Command;

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
    let mut generator = Generator::new(&config);
    let mut out = Vec::with_capacity(count * 480);
    for i in 0..count {
        generator.write_event(start_ms + (i as f64 * step_ms) as i64, &mut out);
        out.push(b'\n');
    }
    out
}

pub use downbeat::process::{current_rss_bytes, peak_rss_bytes};

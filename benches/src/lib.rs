//! Shared inputs for the benchmarks: generated EventSim lines.
#![deny(missing_docs)]

use downbeat::source::generator::{Generator, GeneratorConfig};

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

/// Peak resident set size of this process so far, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    rss_field("VmHWM:")
}

/// Current resident set size of this process, in bytes (Linux).
pub fn current_rss_bytes() -> Option<u64> {
    rss_field("VmRSS:")
}

fn rss_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

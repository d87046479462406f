//! Facts about this process: resident memory, from `/proc/self/status`.

/// Peak resident set size so far, in bytes (Linux; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Current resident set size, in bytes (Linux; `None` elsewhere).
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// The soft limit on open file descriptors (Linux; `None` elsewhere or
/// when unlimited).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            // Current first: the peak can only have grown since.
            let current = super::current_rss_bytes().unwrap();
            let peak = super::peak_rss_bytes().unwrap();
            assert!(
                peak >= current && current > 0,
                "peak {peak} current {current}"
            );
            assert!(super::open_files_limit().is_some_and(|n| n >= 16));
        }
    }
}

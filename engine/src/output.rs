//! Output files (`--rejects`) and the wall clock.

use std::fs::File;
use std::io::{self, BufWriter, Write};

/// Open `path` for writing; `-` is stdout.
pub fn open_writer(path: &str) -> io::Result<Box<dyn Write + Send>> {
    if path == "-" {
        Ok(Box::new(BufWriter::with_capacity(1 << 16, io::stdout())))
    } else {
        Ok(Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path)?,
        )))
    }
}

/// Wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! Window results as JSON Lines, and the files behind `--output`, `--rejects`.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use downbeat_operators::WindowResult;

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

/// One JSON object per line, one line per window.
pub struct WindowWriter {
    inner: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl WindowWriter {
    /// Write to `inner`.
    pub fn new(inner: Box<dyn Write + Send>) -> Self {
        Self {
            inner,
            line: Vec::with_capacity(4096),
        }
    }

    /// Append one window. The line is rendered into a reused buffer first:
    /// one write through the boxed writer instead of one per JSON token.
    pub fn write(&mut self, window: &WindowResult) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, window)?;
        self.line.push(b'\n');
        self.inner.write_all(&self.line)
    }

    /// Append a window already rendered as JSON.
    pub fn write_json(&mut self, json: &str) -> io::Result<()> {
        self.inner.write_all(json.as_bytes())?;
        self.inner.write_all(b"\n")
    }

    /// Flush buffered lines.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

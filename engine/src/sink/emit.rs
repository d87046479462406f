//! Closed windows as JSON Lines, one per window, to a file or stdout
//! (`replay --output`, `run --emit-windows`).
//!
//! The sink counts the bytes it has written, so a checkpoint can record how
//! much of the file it covers, and a restart can cut the file back to that
//! length: the windows after it are then emitted again, identically, and
//! none is written twice.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ClosedWindow, Sink};

/// Where closed windows are written, and how many bytes so far.
pub struct EmitSink {
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The file behind `writer`, to sync; None for stdout.
    file: Option<File>,
    bytes: u64,
}

impl EmitSink {
    /// Write to `path`, created empty (`-` = stdout).
    pub fn create(path: &str) -> io::Result<Self> {
        if path == "-" {
            return Ok(Self::stdout());
        }
        Self::append(Path::new(path), true)
    }

    /// Resume writing `path` after a restart: the file is cut back to
    /// `keep_bytes` (the length the last checkpoint covers) and appended
    /// to; without a checkpoint it starts empty.
    pub fn resume(path: &str, keep_bytes: Option<u64>) -> io::Result<Self> {
        if path == "-" {
            return Ok(Self::stdout());
        }
        let path = PathBuf::from(path);
        if let Some(length) = keep_bytes {
            if truncate_output(&path, length)? {
                tracing::info!(path = %path.display(), length, "cut window output back to the last checkpoint");
            }
        }
        Self::append(&path, keep_bytes.is_none())
    }

    fn stdout() -> Self {
        Self {
            writer: BufWriter::with_capacity(1 << 16, Box::new(io::stdout())),
            file: None,
            bytes: 0,
        }
    }

    fn append(path: &Path, fresh: bool) -> io::Result<Self> {
        if fresh {
            File::create(path)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let bytes = file.metadata()?.len();
        let writer: Box<dyn Write + Send> = Box::new(file.try_clone()?);
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 16, writer),
            file: Some(file),
            bytes,
        })
    }
}

impl Sink for EmitSink {
    fn window(&mut self, window: &ClosedWindow<'_>) -> io::Result<()> {
        self.writer.write_all(window.json.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.bytes += window.json.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    fn persist(&mut self) -> io::Result<Option<u64>> {
        self.writer.flush()?;
        match &self.file {
            Some(file) => {
                file.sync_data()?;
                Ok(Some(self.bytes))
            }
            None => Ok(None),
        }
    }

    fn name(&self) -> &'static str {
        "window output"
    }
}

/// Cut the window output back to what the checkpoint covers, so the
/// windows emitted after it (before a crash) are not written twice.
/// False when there was nothing to cut.
pub fn truncate_output(path: &Path, length: u64) -> io::Result<bool> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if file.metadata()?.len() <= length {
        return Ok(false);
    }
    file.set_len(length)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_back_to_the_checkpoint_and_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("windows.jsonl");
        std::fs::write(&out, b"0123456789").unwrap();
        assert!(truncate_output(&out, 4).unwrap());
        assert_eq!(std::fs::read(&out).unwrap(), b"0123");
        assert!(!truncate_output(&out, 10).unwrap());

        let path = out.to_str().unwrap();
        let mut sink = EmitSink::resume(path, Some(2)).unwrap();
        let result = downbeat_operators::WindowResult {
            window: downbeat_operators::WindowKind::Tumbling,
            id: downbeat_operators::WindowId(0),
            start_ms: 0,
            end_ms: 1,
            streams: 0,
            active_users: 0,
            top_songs: Vec::new(),
            top_songs_max_undercount: 0,
            top_artists: Vec::new(),
            breakdown: Default::default(),
            listening: Default::default(),
        };
        let window = ClosedWindow {
            result: &result,
            json: "{}",
            label: "1m",
        };
        sink.window(&window).unwrap();
        assert_eq!(sink.persist().unwrap(), Some(5));
        assert_eq!(std::fs::read(&out).unwrap(), b"01{}\n");
        // Without a checkpoint, a fresh file.
        let mut sink = EmitSink::resume(path, None).unwrap();
        assert_eq!(sink.persist().unwrap(), Some(0));
        assert_eq!(std::fs::read(&out).unwrap(), b"");
    }
}

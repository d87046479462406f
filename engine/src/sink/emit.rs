//! Closed windows as JSON Lines, one per window, to a file or stdout
//! (`replay --output`, `run --emit-windows`); or closed listening sessions,
//! one per session (`replay --sessions`, `run --emit-sessions`).
//!
//! The sink counts the bytes it has written, so a checkpoint can record how
//! much of the file it covers, and a restart can cut the file back to that
//! length: the windows after it are then emitted again, identically, and
//! none is written twice.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use downbeat_operators::ClosedSession;

use super::{ClosedWindow, Sink, Written};

/// What an [`EmitSink`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Records {
    /// Closed windows.
    Windows,
    /// Closed listening sessions.
    Sessions,
}

/// Where closed windows (or sessions) are written, and how many bytes so far.
pub struct EmitSink {
    records: Records,
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The file behind `writer`, to sync; None for stdout.
    file: Option<File>,
    bytes: u64,
}

impl EmitSink {
    /// Write windows to `path`, created empty (`-` = stdout).
    pub fn create(path: &str) -> io::Result<Self> {
        Self::create_for(Records::Windows, path)
    }

    /// Write `records` to `path`, created empty (`-` = stdout).
    pub fn create_for(records: Records, path: &str) -> io::Result<Self> {
        let mut sink = if path == "-" {
            Self::stdout()
        } else {
            Self::append(Path::new(path), true)?
        };
        sink.records = records;
        Ok(sink)
    }

    /// [`EmitSink::resume`] for `records`.
    pub fn resume_for(records: Records, path: &str, keep_bytes: Option<u64>) -> io::Result<Self> {
        let mut sink = Self::resume(path, keep_bytes)?;
        sink.records = records;
        Ok(sink)
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
                tracing::info!(path = %path.display(), length, "cut output back to the last checkpoint");
            }
        }
        Self::append(&path, keep_bytes.is_none())
    }

    fn stdout() -> Self {
        Self {
            records: Records::Windows,
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
            records: Records::Windows,
            writer: BufWriter::with_capacity(1 << 16, writer),
            file: Some(file),
            bytes,
        })
    }
}

impl EmitSink {
    fn line(&mut self, json: &[u8]) -> io::Result<()> {
        self.writer.write_all(json)?;
        self.writer.write_all(b"\n")?;
        self.bytes += json.len() as u64 + 1;
        Ok(())
    }
}

impl Sink for EmitSink {
    fn window(&mut self, window: &ClosedWindow<'_>) -> io::Result<()> {
        if self.records != Records::Windows {
            return Ok(());
        }
        self.line(window.json.as_bytes())
    }

    fn sessions(&mut self, sessions: &[ClosedSession]) -> io::Result<()> {
        if self.records != Records::Sessions {
            return Ok(());
        }
        let mut json = Vec::with_capacity(128);
        for session in sessions {
            json.clear();
            serde_json::to_writer(&mut json, session).expect("sessions serialize");
            self.line(&json)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    fn persist(&mut self) -> io::Result<Option<Written>> {
        self.writer.flush()?;
        match &self.file {
            Some(file) => {
                file.sync_data()?;
                Ok(Some(match self.records {
                    Records::Windows => Written::Windows(self.bytes),
                    Records::Sessions => Written::Sessions(self.bytes),
                }))
            }
            None => Ok(None),
        }
    }

    fn name(&self) -> &'static str {
        match self.records {
            Records::Windows => "window output",
            Records::Sessions => "session output",
        }
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
            forecast: None,
        };
        let window = ClosedWindow {
            result: &result,
            json: "{}",
            label: "1m",
        };
        sink.window(&window).unwrap();
        assert_eq!(sink.persist().unwrap(), Some(Written::Windows(5)));
        assert_eq!(std::fs::read(&out).unwrap(), b"01{}\n");
        // Without a checkpoint, a fresh file.
        let mut sink = EmitSink::resume(path, None).unwrap();
        assert_eq!(sink.persist().unwrap(), Some(Written::Windows(0)));
        assert_eq!(std::fs::read(&out).unwrap(), b"");
    }
}

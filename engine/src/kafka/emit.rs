//! Where closed windows go in Kafka mode: the `--emit-windows` file (or
//! stdout), with the byte count a checkpoint records so that a restart can
//! cut the file back to it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use super::checkpoint::truncate_output;
use crate::output::open_writer;

/// Where closed windows are written, and how many bytes so far.
pub(super) struct EmitSink {
    writer: Box<dyn Write + Send>,
    /// The file behind `writer`, to cut back after a crash and to sync.
    pub(super) file: Option<(PathBuf, File)>,
    bytes: u64,
}

impl EmitSink {
    pub(super) fn open(path: &str, keep_bytes: Option<u64>) -> anyhow::Result<Self> {
        if path == "-" {
            return Ok(Self {
                writer: open_writer("-")?,
                file: None,
                bytes: 0,
            });
        }
        let path = PathBuf::from(path);
        match keep_bytes {
            Some(length) => {
                if truncate_output(&path, length)? {
                    tracing::info!(path = %path.display(), length, "cut window output back to the last checkpoint");
                }
            }
            // A fresh start: a new file, as without Kafka.
            None => {
                File::create(&path)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        let writer = Box::new(BufWriter::with_capacity(1 << 16, file.try_clone()?));
        Ok(Self {
            writer,
            file: Some((path, file)),
            bytes,
        })
    }

    pub(super) fn write_line(&mut self, json: &str) -> io::Result<()> {
        self.writer.write_all(json.as_bytes())?;
        self.writer.write_all(b"\n")?;
        self.bytes += json.len() as u64 + 1;
        Ok(())
    }

    /// Flush, and make durable when `sync`; returns the length written.
    pub(super) fn flush(&mut self, sync: bool) -> io::Result<u64> {
        self.writer.flush()?;
        if let (true, Some((_, file))) = (sync, &self.file) {
            file.sync_data()?;
        }
        Ok(self.bytes)
    }
}

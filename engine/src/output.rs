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

/// An output would overwrite the input.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path} is the input file; refusing to overwrite it (write elsewhere)")]
pub struct SameFileError {
    /// The flag naming the output.
    pub flag: &'static str,
    /// The path given.
    pub path: String,
}

/// Refuse any of `outputs` (flag, path) that is the same file as `input`
/// (same device and inode, so links count), before anything is opened for
/// writing. `-` (stdio) and paths that do not exist yet are fine.
pub fn refuse_same_file(
    input: &str,
    outputs: &[(&'static str, Option<&str>)],
) -> Result<(), SameFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let identity = |path: &str| {
            (path != "-")
                .then(|| std::fs::metadata(path).ok())
                .flatten()
                .map(|m| (m.dev(), m.ino()))
        };
        let Some(input_id) = identity(input) else {
            return Ok(());
        };
        for &(flag, path) in outputs {
            if let Some(path) = path {
                if identity(path) == Some(input_id) {
                    return Err(SameFileError {
                        flag,
                        path: path.to_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

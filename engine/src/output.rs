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

/// Two outputs would write the same file.
#[derive(Debug, thiserror::Error)]
#[error("{first} and {second} both name {path}; give each output its own file")]
pub struct SharedOutputError {
    /// The first flag naming it.
    pub first: &'static str,
    /// The second.
    pub second: &'static str,
    /// The path given.
    pub path: String,
}

/// Refuse two of `outputs` (flag, path) naming the same file (the same
/// path, or the same existing file through another name): their lines
/// would interleave. `-` (stdout) may be shared.
pub fn refuse_shared_outputs(
    outputs: &[(&'static str, Option<&str>)],
) -> Result<(), SharedOutputError> {
    let named: Vec<(&'static str, &str)> = outputs
        .iter()
        .filter_map(|&(flag, path)| path.filter(|p| *p != "-").map(|p| (flag, p)))
        .collect();
    for (index, &(first, a)) in named.iter().enumerate() {
        for &(second, b) in &named[index + 1..] {
            if same_file(a, b) {
                return Err(SharedOutputError {
                    first,
                    second,
                    path: b.to_owned(),
                });
            }
        }
    }
    Ok(())
}

fn same_file(a: &str, b: &str) -> bool {
    if std::path::Path::new(a) == std::path::Path::new(b) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let identity = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        if let (Some(x), Some(y)) = (identity(a), identity(b)) {
            return x == y;
        }
    }
    false
}

/// Wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_outputs_may_not_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        std::fs::write(&file, "").unwrap();
        let link = dir.path().join("link.jsonl");
        std::fs::hard_link(&file, &link).unwrap();
        let (file, link) = (file.to_str().unwrap(), link.to_str().unwrap());
        let other = dir.path().join("other.jsonl");
        let other = other.to_str().unwrap();
        let error = refuse_shared_outputs(&[("--output", Some(file)), ("--sessions", Some(file))])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("--output and --sessions both name {file}; give each output its own file")
        );
        assert!(
            refuse_shared_outputs(&[("--output", Some(file)), ("--rejects", Some(link))]).is_err()
        );
        assert!(refuse_shared_outputs(&[
            ("--output", Some(file)),
            ("--sessions", Some(other)),
            ("--rejects", None)
        ])
        .is_ok());
        assert!(
            refuse_shared_outputs(&[("--output", Some("-")), ("--sessions", Some("-"))]).is_ok()
        );
    }
}

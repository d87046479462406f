//! Newline-delimited input read in large blocks, without a copy per line.

use std::io::{self, Read};

/// Initial read buffer: large blocks keep syscalls rare.
const BLOCK_BYTES: usize = 1 << 20;

/// One line as read (without its newline).
pub struct Line<'a> {
    /// The bytes of the line, at most the reader's cap.
    pub bytes: &'a [u8],
    /// True when the line was longer than the cap and its tail was dropped.
    pub truncated: bool,
}

/// Splits a byte stream into lines. Lines longer than `cap_bytes` are
/// returned truncated (and flagged) so one endless line cannot exhaust memory.
pub struct LineReader<R> {
    inner: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    cap_bytes: usize,
    skipping: bool,
}

impl<R: Read> LineReader<R> {
    /// Read from `inner`, keeping at most `cap_bytes` of any one line.
    pub fn new(inner: R, cap_bytes: usize) -> Self {
        Self {
            inner,
            buffer: vec![0; BLOCK_BYTES],
            start: 0,
            end: 0,
            eof: false,
            cap_bytes: cap_bytes.max(1),
            skipping: false,
        }
    }

    /// The next line, or `None` at end of input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let mut scanned = self.start;
        loop {
            if let Some(offset) = memchr::memchr(b'\n', &self.buffer[scanned..self.end]) {
                let newline = scanned + offset;
                let line_start = self.start;
                self.start = newline + 1;
                if self.skipping {
                    // The tail of an over-long line: already reported.
                    self.skipping = false;
                    scanned = self.start;
                    continue;
                }
                return Ok(Some(Line {
                    bytes: strip_cr(&self.buffer[line_start..newline]),
                    truncated: false,
                }));
            }
            scanned = self.end;
            if self.eof {
                if self.start < self.end && !self.skipping {
                    let line_start = self.start;
                    self.start = self.end;
                    return Ok(Some(Line {
                        bytes: strip_cr(&self.buffer[line_start..self.end]),
                        truncated: false,
                    }));
                }
                return Ok(None);
            }
            if self.end - self.start >= self.cap_bytes && !self.skipping {
                // Report the first `cap_bytes` now, then skip to the next newline.
                let line_start = self.start;
                self.start = self.end;
                self.skipping = true;
                return Ok(Some(Line {
                    bytes: &self.buffer[line_start..self.end],
                    truncated: true,
                }));
            }
            if self.skipping {
                self.start = self.end;
            }
            scanned -= self.start;
            self.refill()?;
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buffer.len() {
            let grown = (self.buffer.len() * 2).min(self.cap_bytes.max(BLOCK_BYTES) + BLOCK_BYTES);
            self.buffer.resize(grown.max(self.end + 1), 0);
        }
        loop {
            match self.inner.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        let mut reader = LineReader::new(input, cap);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push((line.bytes.to_vec(), line.truncated));
        }
        out
    }

    #[test]
    fn splits_lines_keeps_empty_ones_and_a_last_line_without_newline() {
        let got = lines(b"a\n\nbc\r\nd", 100);
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"a".to_vec(), false),
            (vec![], false),
            (b"bc".to_vec(), false),
            (b"d".to_vec(), false),
        ];
        assert_eq!(got, want);
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn over_long_lines_are_truncated_once_and_reading_resumes() {
        let mut input = vec![b'x'; 3 * BLOCK_BYTES];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input, BLOCK_BYTES + 10);
        assert_eq!(got.len(), 2);
        assert!(got[0].1, "flagged as truncated");
        assert!(got[0].0.len() >= BLOCK_BYTES + 10 && got[0].0.len() < input.len());
        assert_eq!(got[1], (b"ok".to_vec(), false));
    }

    #[test]
    fn lines_spanning_block_boundaries_are_whole() {
        let line = vec![b'y'; BLOCK_BYTES - 3];
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let got = lines(&input, 4 * BLOCK_BYTES);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(l, t)| l == &line && !t));
    }
}

//! Line splitting and the line-size cap, in one place for every source.
//!
//! Input is cut into [`Chunk`]s of whole lines. A line longer than the cap
//! becomes one chunk of its own, flagged as truncated and cut to the cap;
//! the rest of it is skipped, so one endless line cannot exhaust memory and
//! is refused (and kept in `--rejects`) exactly once, whatever the source.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

/// Lines are kept whole (for the rejects file) up to this size.
pub const VERBATIM_LINE_CAP_BYTES: usize = 64 << 20;

/// Input read into one chunk at a time.
pub const CHUNK_BYTES: usize = 1 << 20;

/// One line as read (without its newline or a trailing `\r`).
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The bytes of the line, at most the cap.
    pub bytes: &'a [u8],
    /// The line as it was in the input, a trailing `\r` included: what the
    /// rejects file keeps, byte for byte.
    pub raw: &'a [u8],
    /// True when the line was longer than the cap and its tail was dropped.
    pub truncated: bool,
}

/// A chunk's bytes: read into a buffer, or a range of a mapped file.
pub enum ChunkBytes {
    /// Read from a stream.
    Owned(Vec<u8>),
    /// A range of a memory-mapped file (no copy).
    Mapped(Arc<Mmap>, Range<usize>),
}

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Owned(bytes) => bytes,
            ChunkBytes::Mapped(map, range) => &map[range.clone()],
        }
    }
}

/// Input bytes cut at a line boundary, or the kept head of one over-long line.
pub struct Chunk {
    /// The bytes.
    pub data: ChunkBytes,
    /// The chunk is the head of one line longer than the cap.
    pub truncated_line: bool,
}

/// Where one line sits in its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte (a trailing `\r` excluded).
    pub end: u32,
    /// True when a `\r` followed, before the newline.
    pub carriage_return: bool,
}

impl Chunk {
    /// A chunk of owned bytes.
    pub fn owned(data: Vec<u8>, truncated_line: bool) -> Self {
        Self {
            data: ChunkBytes::Owned(data),
            truncated_line,
        }
    }

    /// Where each line of the chunk is.
    pub fn spans(&self) -> Vec<Span> {
        if self.truncated_line {
            return vec![Span {
                start: 0,
                end: self.data.len() as u32,
                carriage_return: false,
            }];
        }
        split_lines(&self.data)
    }

    /// The line at `span`.
    #[inline]
    pub fn line(&self, span: Span) -> Line<'_> {
        let raw_end = span.end as usize + usize::from(span.carriage_return);
        Line {
            bytes: &self.data[span.start as usize..span.end as usize],
            raw: &self.data[span.start as usize..raw_end],
            truncated: self.truncated_line,
        }
    }

    /// Done with these bytes: drop a mapped range's pages from this process
    /// (they stay in the page cache), so resident memory follows the chunks
    /// in flight rather than the whole file.
    pub fn release(&self) {
        let ChunkBytes::Mapped(map, range) = &self.data else {
            return;
        };
        const PAGE: usize = 4096;
        // Whole pages inside the range only: neighbouring chunks share the edge pages.
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end / PAGE * PAGE;
        if end > start {
            // SAFETY: the mapping is a read-only view of a file; MADV_DONTNEED
            // on it only unmaps pages, and any later read faults them back in
            // from the file with the same contents. No other chunk uses these
            // whole pages.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

/// Line spans of whole lines: split at newlines, a trailing `\r` dropped,
/// the last line kept even without a newline.
fn split_lines(data: &[u8]) -> Vec<Span> {
    let mut spans = Vec::with_capacity(data.len() / 256);
    let mut start = 0;
    let mut push = |start: usize, end: usize| {
        let carriage_return = end > start && data[end - 1] == b'\r';
        spans.push(Span {
            start: start as u32,
            end: (end - usize::from(carriage_return)) as u32,
            carriage_return,
        });
    };
    for newline in memchr::memchr_iter(b'\n', data) {
        push(start, newline);
        start = newline + 1;
    }
    if start < data.len() {
        push(start, data.len());
    }
    spans
}

/// How a [`Chunker`] fills a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Read up to [`CHUNK_BYTES`] before cutting (batch replay: fewer, larger chunks).
    Full,
    /// Cut as soon as a read brings a newline (live input and pipes: no
    /// line waits for more).
    Available,
}

/// Cuts a byte stream into chunks of whole lines (see the module docs).
pub struct Chunker<R> {
    reader: R,
    cap_bytes: usize,
    fill: Fill,
    pending: Vec<u8>,
    skipping: bool,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// Read `reader`, keeping at most `cap_bytes` of any one line.
    pub fn new(reader: R, cap_bytes: usize, fill: Fill) -> Self {
        Self {
            reader,
            cap_bytes: cap_bytes.max(1),
            fill,
            pending: Vec::new(),
            skipping: false,
            eof: false,
        }
    }

    /// The next chunk, or `None` at end of input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            if self.pending.len() >= self.cap_bytes && !self.skipping {
                // Report the head of the over-long line now, skip the rest.
                self.skipping = true;
                let mut head = std::mem::take(&mut self.pending);
                head.truncate(self.cap_bytes);
                return Ok(Some(Chunk::owned(head, true)));
            }
            if self.eof {
                if self.pending.is_empty() || self.skipping {
                    return Ok(None);
                }
                return Ok(Some(Chunk::owned(std::mem::take(&mut self.pending), false)));
            }
            let before = self.pending.len();
            if self.read_more()? == 0 {
                self.eof = true;
                continue;
            }
            let mut scan_from = before;
            if self.skipping {
                match memchr::memchr(b'\n', &self.pending[before..]) {
                    Some(offset) => {
                        self.pending.drain(..before + offset + 1);
                        self.skipping = false;
                        scan_from = 0;
                    }
                    None => {
                        self.pending.truncate(before);
                        continue;
                    }
                }
            }
            // What was pending before this read holds no newline (it is the
            // start of one line), so only the new bytes are searched: a
            // long line costs linear time, not quadratic.
            if let Some(offset) = memchr::memrchr(b'\n', &self.pending[scan_from..]) {
                let last_newline = scan_from + offset;
                let mut rest = Vec::with_capacity(self.capacity());
                rest.extend_from_slice(&self.pending[last_newline + 1..]);
                self.pending.truncate(last_newline + 1);
                let whole = std::mem::replace(&mut self.pending, rest);
                return Ok(Some(Chunk::owned(whole, false)));
            }
        }
    }

    fn capacity(&self) -> usize {
        2 * CHUNK_BYTES
    }

    /// Append at least one byte to `pending`, or none at end of input.
    fn read_more(&mut self) -> io::Result<usize> {
        let limit = CHUNK_BYTES;
        if self.pending.capacity() == 0 {
            self.pending.reserve(self.capacity());
        }
        loop {
            let read = match self.fill {
                Fill::Full => (&mut self.reader)
                    .take(limit as u64)
                    .read_to_end(&mut self.pending),
                Fill::Available => read_some(&mut self.reader, &mut self.pending, limit),
            };
            match read {
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

/// One `read` of at most `limit` bytes appended to `buffer`.
fn read_some(reader: &mut impl Read, buffer: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let start = buffer.len();
    buffer.resize(start + limit, 0);
    let read = reader.read(&mut buffer[start..]);
    buffer.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}

/// Chunks of whole lines of a mapped file, without a copy. A line longer
/// than a chunk simply makes a longer chunk: it is mapped, not buffered, and
/// refused by length before anything parses it.
pub struct MappedChunks {
    map: Arc<Mmap>,
    start: usize,
}

impl MappedChunks {
    /// Chunks of `map`.
    pub fn new(map: Arc<Mmap>) -> Self {
        Self { map, start: 0 }
    }
}

impl Iterator for MappedChunks {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let len = self.map.len();
        if self.start >= len {
            return None;
        }
        let target = (self.start + CHUNK_BYTES).min(len);
        let end = match memchr::memchr(b'\n', &self.map[target - 1..]) {
            Some(offset) => target + offset,
            None => len,
        };
        let chunk = Chunk {
            data: ChunkBytes::Mapped(Arc::clone(&self.map), self.start..end),
            truncated_line: false,
        };
        self.start = end;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: impl IntoIterator<Item = Chunk>) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Vec::new();
        for chunk in chunks {
            for span in chunk.spans() {
                let line = chunk.line(span);
                lines.push((line.bytes.to_vec(), line.truncated));
            }
        }
        lines
    }

    fn chunked(input: &[u8], cap: usize, fill: Fill) -> Vec<(Vec<u8>, bool)> {
        let mut chunker = Chunker::new(input, cap, fill);
        let mut chunks = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            chunks.push(chunk);
        }
        lines_of(chunks)
    }

    /// The lines of `input` by a plain split, as every source must see them.
    fn naive(input: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut lines: Vec<(Vec<u8>, bool)> = input
            .split(|&b| b == b'\n')
            .map(|l| (l.strip_suffix(b"\r").unwrap_or(l).to_vec(), false))
            .collect();
        if input.ends_with(b"\n") || input.is_empty() {
            lines.pop();
        }
        lines
    }

    #[test]
    fn the_raw_line_keeps_its_carriage_return() {
        let chunk = Chunk::owned(b"a\r\nb\n\r\n".to_vec(), false);
        let raws: Vec<&[u8]> = chunk
            .spans()
            .into_iter()
            .map(|s| chunk.line(s).raw)
            .collect();
        assert_eq!(raws, vec![&b"a\r"[..], b"b", b"\r"]);
        let lines: Vec<&[u8]> = chunk
            .spans()
            .into_iter()
            .map(|s| chunk.line(s).bytes)
            .collect();
        assert_eq!(lines, vec![&b"a"[..], b"b", b""]);
    }

    #[test]
    fn splits_lines_keeps_empty_ones_and_a_last_line_without_newline() {
        for fill in [Fill::Full, Fill::Available] {
            assert_eq!(
                chunked(b"a\n\nbc\r\nd", 100, fill),
                vec![
                    (b"a".to_vec(), false),
                    (vec![], false),
                    (b"bc".to_vec(), false),
                    (b"d".to_vec(), false),
                ]
            );
            assert!(chunked(b"", 100, fill).is_empty());
        }
    }

    #[test]
    fn every_fill_and_the_mapped_file_split_like_a_plain_split() {
        let mut input = Vec::new();
        for i in 0..60_000 {
            input.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
            if i % 1000 == 0 {
                input.extend_from_slice(b"\r\n\n");
            }
        }
        input.extend_from_slice(b"last line without newline\r");
        let want = naive(&input);
        assert_eq!(chunked(&input, VERBATIM_LINE_CAP_BYTES, Fill::Full), want);
        assert_eq!(
            chunked(&input, VERBATIM_LINE_CAP_BYTES, Fill::Available),
            want
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &input).unwrap();
        // SAFETY: a private temporary file nobody truncates.
        let map =
            Arc::new(unsafe { Mmap::map(&std::fs::File::open(file.path()).unwrap()) }.unwrap());
        let chunks: Vec<Chunk> = MappedChunks::new(map).collect();
        assert!(chunks.len() > 2, "the input spans several chunks");
        assert_eq!(lines_of(chunks), want);
    }

    #[test]
    fn an_over_long_line_is_one_truncated_line_and_the_next_line_survives() {
        for fill in [Fill::Full, Fill::Available] {
            let cap = 3 * CHUNK_BYTES;
            let mut input = b"before\n".to_vec();
            input.extend(std::iter::repeat_n(b'y', 5 * CHUNK_BYTES));
            input.extend_from_slice(b"\nafter\n");
            let lines = chunked(&input, cap, fill);
            let shape: Vec<(usize, bool)> = lines.iter().map(|(l, t)| (l.len(), *t)).collect();
            assert_eq!(shape, vec![(6, false), (cap, true), (5, false)], "{fill:?}");
            // An endless last line is still reported once.
            let mut endless = b"x\n".to_vec();
            endless.extend(std::iter::repeat_n(b'z', 4 * CHUNK_BYTES));
            let shape: Vec<(usize, bool)> = chunked(&endless, cap, fill)
                .iter()
                .map(|(l, t)| (l.len(), *t))
                .collect();
            assert_eq!(shape, vec![(1, false), (cap, true)], "{fill:?}");
        }
    }

    /// A reader that hands out at most `step` bytes per read, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn available_fill_cuts_at_every_read_that_brings_a_newline() {
        let input = b"one\ntwo\nthree\n";
        let mut chunker = Chunker::new(
            Trickle {
                data: input,
                step: 5,
            },
            100,
            Fill::Available,
        );
        let first = chunker.next_chunk().unwrap().unwrap();
        assert_eq!(
            &*first.data, b"one\n",
            "the first line does not wait for more"
        );
        let mut rest = Vec::new();
        while let Some(chunk) = chunker.next_chunk().unwrap() {
            rest.extend_from_slice(&chunk.data);
        }
        assert_eq!(rest, b"two\nthree\n");
    }
}

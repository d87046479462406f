//! `downbeat replay`: batch mode, as fast as the input can be read.
//!
//! With several decode threads the input is cut into chunks of whole lines:
//! a reader thread fills chunks, decode threads parse them (the expensive,
//! order-free half), and this thread applies them to the pipeline strictly
//! in input order, so results are identical to a single-threaded run.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use downbeat_operators::WindowResult;
use indicatif::{ProgressBar, ProgressStyle};
use memmap2::Mmap;
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::output::{now_ms, open_writer, WindowWriter};
use crate::pipeline::{parse_line, ParseSettings, Parsed, Pipeline, Totals};
use crate::source::lines::{Line, LineReader};

/// Lines are kept whole (for the rejects file) up to this size.
pub const VERBATIM_LINE_CAP_BYTES: usize = 64 << 20;

/// Input handed to a decode thread at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// The summary line printed on stderr at the end.
#[derive(Serialize)]
pub struct Summary {
    /// Counts.
    #[serde(flatten)]
    pub totals: Totals,
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Input lines per second.
    pub lines_per_sec: f64,
    /// Threads that decoded input.
    pub decode_threads: usize,
    /// From the watermark closing windows to their lines being written.
    pub window_close_latency_us: LatencySummary,
    /// Peak resident memory of the process (Linux).
    pub peak_rss_bytes: Option<u64>,
}

/// Percentiles of an HdrHistogram of latencies, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencySummary {
    /// Summarise a histogram of nanoseconds.
    pub fn from_nanos(histogram: &hdrhistogram::Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            p50: us(histogram.value_at_quantile(0.5)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        }
    }
}

/// Errors that stop a replay before or while reading (bad input lines never do).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be opened or read.
    #[error("cannot read input {path}: {source}")]
    Input {
        /// The path given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// An output could not be created or written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The path given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// Replay `input` (`-` = stdin) through the pipeline, writing windows to `output`.
pub fn replay(config: &Config, input: &str, output: &str) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let threads = match config.input.decode_threads {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let input_error = |source| ReplayError::Input {
        path: input.to_owned(),
        source,
    };
    let (source, size) = if input == "-" {
        (Source::Stream(Box::new(io::stdin())), None)
    } else {
        let file = File::open(input).map_err(input_error)?;
        let size = file.metadata().ok().map(|m| m.len());
        (Source::open(file, threads > 1).map_err(input_error)?, size)
    };
    let output_error = |path: &str| {
        let path = path.to_owned();
        move |source| ReplayError::Output { path, source }
    };
    let windows = WindowWriter::new(open_writer(output).map_err(output_error(output))?);
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path).map_err(output_error(path))?),
        None => None,
    };
    let metrics = Metrics::new();
    let pipeline = Pipeline::new(config.pipeline()?, &metrics, rejects, now_ms())?;
    let mut sink = Sink {
        pipeline,
        windows,
        closed: Vec::new(),
        progress: Progress::new(size, started),
        close_latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("valid bounds"),
    };
    let cap = VERBATIM_LINE_CAP_BYTES.max(config.input.max_line_bytes + 1);
    let read = if threads <= 1 {
        replay_inline(source, cap, &mut sink)
    } else {
        replay_parallel(source, cap, threads, &mut sink)
    };
    match read {
        Ok(()) => {}
        Err(Failure::Input(error)) => return Err(input_error(error)),
        Err(Failure::Output(error)) => return Err(output_error(output)(error)),
    }
    sink.pipeline.finish(&mut sink.closed);
    sink.write_closed().map_err(output_error(output))?;
    sink.windows.flush().map_err(output_error(output))?;
    sink.progress.finish();
    let elapsed = started.elapsed();
    let totals = sink.pipeline.totals().clone();
    Ok(Summary {
        lines_per_sec: totals.lines as f64 / elapsed.as_secs_f64().max(1e-9),
        totals,
        elapsed_secs: elapsed.as_secs_f64(),
        decode_threads: threads.max(1),
        window_close_latency_us: LatencySummary::from_nanos(&sink.close_latency),
        peak_rss_bytes: crate::process::peak_rss_bytes(),
    })
}

enum Failure {
    Input(io::Error),
    Output(io::Error),
}

/// The ordered end: pipeline, window output, progress.
struct Sink {
    pipeline: Pipeline,
    windows: WindowWriter,
    closed: Vec<WindowResult>,
    progress: Progress,
    close_latency: hdrhistogram::Histogram<u64>,
}

impl Sink {
    fn write_closed(&mut self) -> io::Result<()> {
        for window in self.closed.drain(..) {
            self.windows.write(&window)?;
        }
        if let Some(started) = self.pipeline.take_close_started() {
            self.close_latency
                .saturating_record(started.elapsed().as_nanos().max(1) as u64);
        }
        Ok(())
    }

    #[inline]
    fn after_line(&mut self, bytes: usize) -> Result<(), Failure> {
        if !self.closed.is_empty() {
            self.write_closed().map_err(Failure::Output)?;
        }
        self.progress.advance(bytes, self.pipeline.totals().lines);
        Ok(())
    }
}

/// The input: a regular file is memory-mapped (no copy through the kernel;
/// the file must not be truncated while replay runs), anything else is read.
enum Source {
    Mapped(Arc<Mmap>),
    Stream(Box<dyn Read + Send>),
}

impl Source {
    /// Map `file` when `map` is set and it is a regular file; read it otherwise.
    fn open(file: File, map: bool) -> io::Result<Self> {
        if !map || !file.metadata()?.is_file() {
            return Ok(Source::Stream(Box::new(file)));
        }
        // SAFETY: the map is only read. If another process truncates the
        // file meanwhile, reads past the new end fault (SIGBUS); the README
        // says to replay only files that are not being truncated.
        match unsafe { Mmap::map(&file) } {
            Ok(map) => {
                let _ = map.advise(memmap2::Advice::Sequential);
                Ok(Source::Mapped(Arc::new(map)))
            }
            // Some files (e.g. on special file systems) cannot be mapped: read them.
            Err(_) => Ok(Source::Stream(Box::new(file))),
        }
    }
}

fn replay_inline(source: Source, cap: usize, sink: &mut Sink) -> Result<(), Failure> {
    let reader: Box<dyn Read + Send> = match source {
        Source::Mapped(map) => Box::new(io::Cursor::new(MappedBytes(map))),
        Source::Stream(reader) => reader,
    };
    let mut lines = LineReader::new(reader, cap);
    while let Some(line) = lines.next_line().map_err(Failure::Input)? {
        let bytes = line.bytes.len() + 1;
        sink.pipeline.process_line(line, &mut sink.closed);
        sink.after_line(bytes)?;
    }
    Ok(())
}

/// Where one line sits in its chunk.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

/// A mapped file as a byte slice (for `io::Cursor`).
struct MappedBytes(Arc<Mmap>);

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Input bytes cut at a line boundary, or the kept head of one over-long line.
struct Chunk {
    data: ChunkBytes,
    truncated_line: bool,
}

/// A chunk's bytes: read into a buffer, or a range of the mapped file.
enum ChunkBytes {
    Owned(Vec<u8>),
    Mapped(Arc<Mmap>, std::ops::Range<usize>),
}

impl ChunkBytes {
    /// Done with these bytes: drop a mapped range's pages from this process
    /// (they stay in the page cache), so resident memory follows the chunks
    /// in flight rather than the whole file.
    fn release(&self) {
        let ChunkBytes::Mapped(map, range) = self else {
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

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Owned(bytes) => bytes,
            ChunkBytes::Mapped(map, range) => &map[range.clone()],
        }
    }
}

/// A chunk with every line parsed; stream names live in `names`.
struct ParsedChunk {
    chunk: Chunk,
    spans: Vec<Span>,
    parsed: Vec<Parsed>,
    names: Vec<u8>,
}

fn replay_parallel(
    source: Source,
    cap: usize,
    threads: usize,
    sink: &mut Sink,
) -> Result<(), Failure> {
    let settings = sink.pipeline.parse_settings();
    let mut to_workers = Vec::new();
    let mut from_workers = Vec::new();
    let mut workers = Vec::new();
    for index in 0..threads {
        let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(4);
        let (parsed_tx, parsed_rx) = sync_channel::<ParsedChunk>(4);
        to_workers.push(chunk_tx);
        from_workers.push(parsed_rx);
        let settings = settings.clone();
        workers.push(
            thread::Builder::new()
                .name(format!("decode-{index}"))
                .spawn(move || decode_chunks(chunk_rx, parsed_tx, settings))
                .expect("spawning a decode thread"),
        );
    }
    let reader_thread = thread::Builder::new()
        .name("reader".into())
        .spawn(move || match source {
            Source::Mapped(map) => {
                map_chunks(map, to_workers);
                Ok(())
            }
            Source::Stream(reader) => read_chunks(reader, cap, to_workers),
        })
        .expect("spawning the reader thread");

    // Chunk i went to worker i % threads: receiving round-robin restores input order.
    let mut result = Ok(());
    'chunks: for turn in 0.. {
        let Ok(parsed) = from_workers[turn % threads].recv() else {
            break;
        };
        for (span, line) in parsed.spans.iter().zip(parsed.parsed) {
            let raw = &parsed.chunk.data[span.start as usize..span.end as usize];
            sink.pipeline
                .apply(line, &parsed.names, raw, &mut sink.closed);
            if let Err(failure) = sink.after_line(raw.len() + 1) {
                result = Err(failure);
                break 'chunks;
            }
        }
        parsed.chunk.data.release();
    }
    drop(from_workers);
    let read = reader_thread.join().expect("reader thread panicked");
    for worker in workers {
        worker.join().expect("decode thread panicked");
    }
    result?;
    read.map_err(Failure::Input)
}

/// Cut a mapped file into chunks of whole lines (no copy). A line longer
/// than a chunk simply makes a longer chunk: it is mapped, not buffered, and
/// refused by length before anything parses it.
fn map_chunks(map: Arc<Mmap>, workers: Vec<SyncSender<Chunk>>) {
    let len = map.len();
    let mut start = 0;
    for turn in 0.. {
        if start >= len {
            return;
        }
        let target = (start + CHUNK_BYTES).min(len);
        let end = match memchr::memchr(b'\n', &map[target - 1..]) {
            Some(offset) => target + offset,
            None => len,
        };
        let chunk = Chunk {
            data: ChunkBytes::Mapped(Arc::clone(&map), start..end),
            truncated_line: false,
        };
        if workers[turn % workers.len()].send(chunk).is_err() {
            return;
        }
        start = end;
    }
}

/// Read blocks straight into chunk buffers and cut them after their last
/// newline; a line that grows past `cap` is sent alone, truncated, and the
/// rest of it skipped (as [`LineReader`] does).
fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    cap: usize,
    workers: Vec<SyncSender<Chunk>>,
) -> io::Result<()> {
    let mut turn = 0;
    let mut send = |data: Vec<u8>, truncated_line: bool| -> bool {
        let sent = workers[turn % workers.len()]
            .send(Chunk {
                data: ChunkBytes::Owned(data),
                truncated_line,
            })
            .is_ok();
        turn += 1;
        sent
    };
    let mut pending: Vec<u8> = Vec::with_capacity(2 * CHUNK_BYTES);
    let mut skipping = false;
    loop {
        let before = pending.len();
        let read = match (&mut reader)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut pending)
        {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if read == 0 {
            break;
        }
        if skipping {
            match memchr::memchr(b'\n', &pending[before..]) {
                Some(offset) => {
                    pending.drain(..before + offset + 1);
                    skipping = false;
                }
                None => {
                    pending.truncate(before);
                    continue;
                }
            }
        }
        if let Some(last_newline) = memchr::memrchr(b'\n', &pending) {
            let mut rest = Vec::with_capacity(2 * CHUNK_BYTES);
            rest.extend_from_slice(&pending[last_newline + 1..]);
            pending.truncate(last_newline + 1);
            if !send(std::mem::replace(&mut pending, rest), false) {
                return Ok(());
            }
        }
        if pending.len() >= cap {
            if !send(std::mem::take(&mut pending), true) {
                return Ok(());
            }
            skipping = true;
        }
    }
    if !pending.is_empty() && !skipping {
        send(pending, false);
    }
    Ok(())
}

/// Line spans of a chunk: split at newlines, a trailing `\r` dropped, the
/// last line kept even without a newline.
fn split_lines(data: &[u8]) -> Vec<Span> {
    let mut spans = Vec::with_capacity(data.len() / 256);
    let mut start = 0;
    let mut push = |start: usize, end: usize| {
        let end = if end > start && data[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        spans.push(Span {
            start: start as u32,
            end: end as u32,
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

fn decode_chunks(
    chunks: Receiver<Chunk>,
    parsed: SyncSender<ParsedChunk>,
    settings: ParseSettings,
) {
    for chunk in chunks {
        let spans = if chunk.truncated_line {
            vec![Span {
                start: 0,
                end: chunk.data.len() as u32,
            }]
        } else {
            split_lines(&chunk.data)
        };
        let mut names = Vec::with_capacity(spans.len() * 48);
        let lines = spans
            .iter()
            .map(|span| {
                let line = Line {
                    bytes: &chunk.data[span.start as usize..span.end as usize],
                    truncated: chunk.truncated_line,
                };
                parse_line(&line, &settings, &mut names)
            })
            .collect();
        if parsed
            .send(ParsedChunk {
                chunk,
                spans,
                parsed: lines,
                names,
            })
            .is_err()
        {
            return;
        }
    }
}

/// The progress bar (only when stderr is a terminal).
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    bytes: u64,
}

impl Progress {
    fn new(size: Option<u64>, started: Instant) -> Self {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = match size {
                Some(size) => ProgressBar::new(size).with_style(
                    ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} eta {eta}")
                        .expect("valid template"),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {bytes} {msg}")
                        .expect("valid template"),
                ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            started,
            bytes: 0,
        }
    }

    #[inline]
    fn advance(&mut self, bytes: usize, lines: u64) {
        self.bytes += bytes as u64;
        if let Some(bar) = &self.bar {
            if lines % 65_536 == 0 {
                bar.set_position(self.bytes);
                let rate = lines as f64 / self.started.elapsed().as_secs_f64();
                bar.set_message(format!("{rate:.0} events/s"));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as the parallel reader and splitter see them, for a given cap.
    fn chunked_lines(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        let (tx, rx) = sync_channel::<Chunk>(1024);
        read_chunks(Box::new(io::Cursor::new(input.to_vec())), cap, vec![tx]).unwrap();
        let mut lines = Vec::new();
        for chunk in rx {
            if chunk.truncated_line {
                lines.push((chunk.data.to_vec(), true));
                continue;
            }
            for span in split_lines(&chunk.data) {
                lines.push((
                    chunk.data[span.start as usize..span.end as usize].to_vec(),
                    false,
                ));
            }
        }
        lines
    }

    /// The same input through the inline `LineReader`.
    fn reader_lines(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        let mut reader = LineReader::new(input, cap);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            lines.push((line.bytes.to_vec(), line.truncated));
        }
        lines
    }

    #[test]
    fn parallel_chunks_split_like_the_line_reader() {
        let mut input = Vec::new();
        for i in 0..50_000 {
            input.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
            if i % 1000 == 0 {
                input.extend_from_slice(b"\r\n\n");
            }
        }
        input.extend_from_slice(b"last line without newline\r");
        assert_eq!(
            chunked_lines(&input, 64 << 20),
            reader_lines(&input, 64 << 20)
        );
    }

    #[test]
    fn mapped_chunks_split_like_the_line_reader() {
        let mut input = Vec::new();
        for i in 0..60_000 {
            input.extend_from_slice(format!("line {i} {}\n", "z".repeat(i % 113)).as_bytes());
        }
        input.extend_from_slice(b"\r\n\nno newline at the end");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &input).unwrap();
        let Source::Mapped(map) = Source::open(File::open(file.path()).unwrap(), true).unwrap()
        else {
            panic!("a regular file is mapped");
        };
        let (tx, rx) = sync_channel::<Chunk>(1024);
        map_chunks(map, vec![tx]);
        let mut lines = Vec::new();
        let mut chunks = 0;
        for chunk in rx {
            chunks += 1;
            assert!(!chunk.truncated_line);
            for span in split_lines(&chunk.data) {
                lines.push((
                    chunk.data[span.start as usize..span.end as usize].to_vec(),
                    false,
                ));
            }
        }
        assert!(chunks > 2, "the input spans several chunks");
        assert_eq!(lines, reader_lines(&input, 64 << 20));
    }

    #[test]
    fn over_long_lines_are_cut_once_and_the_next_line_survives() {
        let cap = 3 * CHUNK_BYTES;
        let mut input = b"before\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 5 * CHUNK_BYTES));
        input.extend_from_slice(b"\nafter\n");
        let lines = chunked_lines(&input, cap);
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(|(l, t)| (l.len(), *t)).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], (b"before".to_vec(), false));
        assert!(lines[1].1 && lines[1].0.len() >= cap && lines[1].0.len() < 5 * CHUNK_BYTES);
        assert_eq!(lines[2], (b"after".to_vec(), false));
    }
}

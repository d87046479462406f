//! JSON Lines from a file or stdin.
//!
//! Live (`run --input`): a thread reads and hands over lines as soon as they
//! arrive. Replay: as fast as the input can be read; with several decode
//! threads the input is cut into chunks of whole lines, a reader thread
//! fills chunks (a regular file is memory-mapped, no copy), decode threads
//! parse them (the expensive, order-free half), and the driver applies them
//! strictly in input order, so results are identical to one thread.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use memmap2::Mmap;

use super::threaded::ThreadedSource;
use super::{Batch, DecodedLines, Ingest, Pumped, Source, SourceError};
use crate::lines::{Chunk, Chunker, Fill, MappedChunks};
use crate::pipeline::{parse_line, ParseSettings};

/// Open `path` (`-` = stdin) for reading.
fn open(path: &str) -> io::Result<Box<dyn Read + Send>> {
    if path == "-" {
        Ok(Box::new(io::stdin()))
    } else {
        Ok(Box::new(File::open(path)?))
    }
}

/// `run --input PATH`: lines are handed over as they arrive.
pub fn live(path: &str, cap_bytes: usize) -> Result<ThreadedSource, SourceError> {
    let read_error = |source| SourceError::Read {
        path: path.to_owned(),
        source,
    };
    let reader = open(path).map_err(read_error)?;
    ThreadedSource::spawn("source-file", move |sender| {
        let mut chunker = Chunker::new(reader, cap_bytes, Fill::Available);
        loop {
            match chunker.next_chunk() {
                Ok(Some(chunk)) => {
                    if !sender.send(chunk) {
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(%error, "input read failed");
                    return;
                }
            }
        }
    })
    .map_err(read_error)
}

/// `replay --input PATH`: the whole input, as fast as it can be read.
pub struct ReplaySource {
    path: String,
    input: ReplayInput,
    progress: Progress,
}

enum ReplayInput {
    /// One thread: read a file, cut and decode here.
    Inline(Chunker<Box<dyn Read + Send>>),
    /// One decode thread, reading stdin: a reader thread hands over lines as
    /// they arrive, so a stalled pipe does not block the driver (or a signal).
    Piped(Receiver<Chunk>),
    /// Decode threads; chunk i is decoded by worker i % n, so receiving
    /// round-robin restores input order.
    Parallel {
        from_workers: Vec<Receiver<Batch>>,
        turn: usize,
        reader: Option<thread::JoinHandle<io::Result<()>>>,
    },
    Done,
}

impl ReplaySource {
    /// Open `path` (`-` = stdin) with `threads` decode threads (1 = inline).
    pub fn open(
        path: &str,
        threads: usize,
        cap_bytes: usize,
        settings: &ParseSettings,
    ) -> Result<Self, SourceError> {
        let read_error = |source| SourceError::Read {
            path: path.to_owned(),
            source,
        };
        let (chunks, size) = if path == "-" {
            (Chunks::Stream(open(path).map_err(read_error)?), None)
        } else {
            let file = File::open(path).map_err(read_error)?;
            let size = file.metadata().ok().map(|m| m.len());
            (Chunks::open(file, threads > 1).map_err(read_error)?, size)
        };
        let input = if threads <= 1 && path == "-" {
            ReplayInput::Piped(spawn_reader(chunks, cap_bytes))
        } else if threads <= 1 {
            let reader = match chunks {
                Chunks::Stream(reader) => reader,
                Chunks::Mapped(_) => unreachable!("mapped only with decode threads"),
            };
            ReplayInput::Inline(Chunker::new(reader, cap_bytes, Fill::Full))
        } else {
            spawn_decoders(chunks, cap_bytes, threads, settings)
        };
        Ok(Self {
            path: path.to_owned(),
            input,
            progress: Progress::new(size),
        })
    }

    /// The next batch; `Idle` when none arrived within `timeout`.
    fn next_batch(&mut self, timeout: Duration) -> io::Result<Next> {
        let received = match &mut self.input {
            ReplayInput::Inline(chunker) => {
                return Ok(match chunker.next_chunk()? {
                    Some(chunk) => Next::Batch(Batch {
                        chunk,
                        decoded: None,
                    }),
                    None => Next::End,
                });
            }
            ReplayInput::Piped(receiver) => receiver.recv_timeout(timeout).map(|chunk| Batch {
                chunk,
                decoded: None,
            }),
            ReplayInput::Parallel {
                from_workers,
                turn,
                reader,
            } => match from_workers[*turn % from_workers.len()].recv_timeout(timeout) {
                Ok(batch) => {
                    *turn += 1;
                    Ok(batch)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return match reader.take().map(|r| r.join()) {
                        Some(Ok(read)) => read.map(|()| Next::End),
                        Some(Err(_)) => Err(io::Error::other("the reader thread panicked")),
                        None => Ok(Next::End),
                    };
                }
                Err(RecvTimeoutError::Timeout) => Err(RecvTimeoutError::Timeout),
            },
            ReplayInput::Done => return Ok(Next::End),
        };
        match received {
            Ok(batch) => Ok(Next::Batch(batch)),
            Err(RecvTimeoutError::Timeout) => Ok(Next::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(Next::End),
        }
    }
}

/// What the replay input had.
enum Next {
    Batch(Batch),
    Idle,
    End,
}

impl Source for ReplaySource {
    fn pump(&mut self, timeout: Duration, ingest: &mut dyn Ingest) -> Result<Pumped, SourceError> {
        match self.next_batch(timeout) {
            Ok(Next::Idle) => Ok(Pumped::Idle),
            Ok(Next::Batch(batch)) => {
                ingest.batch(&batch);
                batch.chunk.release();
                let lines = ingest.pipeline().totals().lines;
                self.progress.advance(batch.chunk.data.len(), lines);
                Ok(Pumped::Data)
            }
            Ok(Next::End) => {
                self.input = ReplayInput::Done;
                self.progress.finish();
                Ok(Pumped::End)
            }
            Err(source) => Err(SourceError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// The input of the decode threads' reader: a regular file is
/// memory-mapped (no copy through the kernel; the file must not be
/// truncated while replay runs), anything else is read.
enum Chunks {
    Mapped(Arc<Mmap>),
    Stream(Box<dyn Read + Send>),
}

impl Chunks {
    /// Map `file` when `map` is set and it is a regular file; read it otherwise.
    fn open(file: File, map: bool) -> io::Result<Self> {
        if !map || !file.metadata()?.is_file() {
            return Ok(Chunks::Stream(Box::new(file)));
        }
        // SAFETY: the map is only read. If another process truncates the
        // file meanwhile, reads past the new end fault (SIGBUS); the README
        // says to replay only files that are not being truncated.
        match unsafe { Mmap::map(&file) } {
            Ok(map) => {
                let _ = map.advise(memmap2::Advice::Sequential);
                Ok(Chunks::Mapped(Arc::new(map)))
            }
            // Some files (e.g. on special file systems) cannot be mapped: read them.
            Err(_) => Ok(Chunks::Stream(Box::new(file))),
        }
    }
}

fn spawn_decoders(
    chunks: Chunks,
    cap_bytes: usize,
    threads: usize,
    settings: &ParseSettings,
) -> ReplayInput {
    let mut to_workers = Vec::new();
    let mut from_workers = Vec::new();
    for index in 0..threads {
        let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(4);
        let (batch_tx, batch_rx) = sync_channel::<Batch>(4);
        to_workers.push(chunk_tx);
        from_workers.push(batch_rx);
        let settings = settings.clone();
        thread::Builder::new()
            .name(format!("decode-{index}"))
            .spawn(move || decode_chunks(chunk_rx, batch_tx, settings))
            .expect("spawning a decode thread");
    }
    let reader = thread::Builder::new()
        .name("reader".into())
        .spawn(move || deal_chunks(chunks, cap_bytes, to_workers))
        .expect("spawning the reader thread");
    ReplayInput::Parallel {
        from_workers,
        turn: 0,
        reader: Some(reader),
    }
}

/// One reader thread for one consumer: chunks of stdin as they arrive.
fn spawn_reader(chunks: Chunks, cap_bytes: usize) -> Receiver<Chunk> {
    let (sender, receiver) = sync_channel::<Chunk>(4);
    thread::Builder::new()
        .name("reader".into())
        .spawn(move || {
            if let Err(error) = deal_chunks(chunks, cap_bytes, vec![sender]) {
                tracing::error!(%error, "input read failed");
            }
        })
        .expect("spawning the reader thread");
    receiver
}

/// Deal chunks to the workers in turn.
fn deal_chunks(
    chunks: Chunks,
    cap_bytes: usize,
    workers: Vec<SyncSender<Chunk>>,
) -> io::Result<()> {
    let mut turn = 0;
    let mut send = |chunk: Chunk| {
        let sent = workers[turn % workers.len()].send(chunk).is_ok();
        turn += 1;
        sent
    };
    match chunks {
        Chunks::Mapped(map) => {
            for chunk in MappedChunks::new(map) {
                if !send(chunk) {
                    break;
                }
            }
        }
        Chunks::Stream(reader) => {
            // A pipe's lines are handed on as they arrive; a file's in full chunks.
            let mut chunker = Chunker::new(reader, cap_bytes, Fill::Available);
            while let Some(chunk) = chunker.next_chunk()? {
                if !send(chunk) {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn decode_chunks(chunks: Receiver<Chunk>, batches: SyncSender<Batch>, settings: ParseSettings) {
    for chunk in chunks {
        let spans = chunk.spans();
        let mut names = Vec::with_capacity(spans.len() * 48);
        let parsed = spans
            .iter()
            .map(|&span| parse_line(&chunk.line(span), &settings, &mut names))
            .collect();
        let decoded = DecodedLines {
            spans,
            parsed,
            names,
        };
        let batch = Batch {
            chunk,
            decoded: Some(decoded),
        };
        if batches.send(batch).is_err() {
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
    fn new(size: Option<u64>) -> Self {
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
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn advance(&mut self, bytes: usize, lines: u64) {
        self.bytes += bytes as u64;
        if let Some(bar) = &self.bar {
            bar.set_position(self.bytes);
            let rate = lines as f64 / self.started.elapsed().as_secs_f64();
            bar.set_message(format!("{rate:.0} events/s"));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

//! Where listen events come from, behind one interface.
//!
//! A [`Source`] pushes what it reads into an [`Ingest`] (the driver): the
//! single-input sources (the paced generator, a file, stdin) hand over
//! [`Batch`]es of lines; a source of several ordered inputs (Kafka
//! partitions) keeps each input's progress itself and counts its records
//! one by one through the [`Pipeline`]'s input methods. Adding a source is
//! one file that implements [`Source`].

pub mod diurnal;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod paced;
pub mod partials;
pub mod spike;
pub mod threaded;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lines::{Chunk, Span};
use crate::pipeline::{Parsed, Pipeline};

/// What one [`Source::pump`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Input was handed to the driver.
    Data,
    /// Nothing arrived within the timeout.
    Idle,
    /// The input has ended; nothing more will come.
    End,
}

/// Lines of the single input, in order, possibly decoded already (replay
/// decodes chunks on several threads; the order-dependent half runs here).
pub struct Batch {
    /// The input bytes.
    pub chunk: Chunk,
    /// Each line decoded, when a decode thread did it.
    pub decoded: Option<DecodedLines>,
}

/// The lines of a chunk, decoded: names of streams are ranges of `names`.
pub struct DecodedLines {
    /// Where each line is in the chunk.
    pub spans: Vec<Span>,
    /// What each line decoded to.
    pub parsed: Vec<Parsed>,
    /// The artist and song names the parsed streams point into.
    pub names: Vec<u8>,
}

/// The event-time progress of a source that keeps one watermark per input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventProgress {
    /// Largest event time seen over the inputs.
    pub max_event_ms: Option<i64>,
    /// The watermark windows close by.
    pub watermark_ms: Option<i64>,
}

/// What a checkpoint records of the driver's outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Bytes of the window output file that are durable (None: not a file).
    pub emitted_bytes: Option<u64>,
    /// Bytes of the session output file that are durable (None: not a file).
    pub emitted_session_bytes: Option<u64>,
    /// The counters, `name` or `name{label}` to value.
    pub counters: BTreeMap<String, u64>,
    /// A sink could not make its output durable (why): a checkpoint must not
    /// cover it.
    pub failed: Option<String>,
    /// A sink's output is still on its way (sent, not yet acknowledged):
    /// this checkpoint is skipped and the next one tries again.
    pub pending: Option<String>,
}

/// What a source may ask of the driver.
pub trait Ingest {
    /// Count a batch of lines of the single input, in order.
    fn batch(&mut self, batch: &Batch);
    /// The pipeline, for sources of several inputs (decode a record, count
    /// it from its input, open and close inputs, close windows).
    fn pipeline(&mut self) -> &mut Pipeline;
    /// Send the windows the pipeline closed to the sinks.
    fn publish(&mut self);
    /// Make the outputs durable for a checkpoint, and say how far.
    fn persist(&mut self) -> Persisted;
    /// Readiness, as `/readyz` reports it.
    fn set_ready(&mut self, ready: bool);
}

/// Why a source stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The input could not be read; check the path, the pipe or the device.
    #[error("cannot read input {path}: {source}")]
    Read {
        /// The path given (`-` for stdin).
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A sink's output could not be made durable, so no checkpoint may pass
    /// it: restarting resumes from the last checkpoint and publishes again.
    #[error(
        "cannot make the output durable ({0}); restart to publish again from the last checkpoint"
    )]
    NotDurable(String),
}

/// An input of listen events.
pub trait Source {
    /// Wait at most `timeout` for input and hand what arrived to `ingest`.
    fn pump(&mut self, timeout: Duration, ingest: &mut dyn Ingest) -> Result<Pumped, SourceError>;

    /// Periodic work on the wall clock, in live modes (idleness, checkpoints).
    fn tick(&mut self, _now_ms: i64, _ingest: &mut dyn Ingest) {}

    /// The largest event time and watermark, for a source that keeps one
    /// per input (None: the pipeline's single watermark says it).
    fn event_progress(&self) -> Option<EventProgress> {
        None
    }

    /// Shutting down: last checkpoint, leave the group.
    fn close(&mut self, _ingest: &mut dyn Ingest) {}

    /// True when the source says when the engine is ready (through
    /// [`Ingest::set_ready`]); otherwise it is ready as soon as it runs.
    fn manages_readiness(&self) -> bool {
        false
    }
}

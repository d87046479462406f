//! The one loop every mode runs: a source's batches -> decode -> pipeline
//! -> closed windows -> sinks, with wall-clock ticks in live modes.
//!
//! ```text
//!   Source (paced generator | file | stdin | replay | Kafka partitions)
//!      │ pump: batches of lines, or records of one input at a time
//!      ▼
//!   Driver ── Pipeline: decode → watermark → windows (operators crate)
//!      │ closed windows, trending
//!      ▼
//!   Sinks (metrics | API and live page state | window output file)
//! ```
//!
//! `run`, `replay` and `run --source kafka` differ only in the source and
//! the sinks they hand to [`Driver`], and in the [`Mode`].

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use downbeat_operators::{ClosedSession, WindowResult};

use crate::metrics::Metrics;
use crate::output::now_ms;
use crate::pipeline::Pipeline;
use crate::sink::api::ServerState;
use crate::sink::{ClosedWindow, Sink, TrendingWindow, Written};
use crate::source::{Batch, Ingest, Persisted, Pumped, Source, SourceError};

/// How the loop treats time and the end of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Replay: read to the end as fast as possible, then close every
    /// window. No wall clock; a failed output stops the run.
    Batch,
    /// Live: tick every `tick`; at the end of input keep running (windows
    /// close by the idle rule) until stopped; a failed output is logged.
    Live {
        /// Between two ticks (idleness, metrics, checkpoints).
        tick: Duration,
    },
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The input ended (replay).
    EndOfInput,
    /// A signal (or the caller) asked to stop.
    Stopped,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The source failed; see its message.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An output could not be written: check the path and free space.
    #[error("cannot write the {sink}: {source}")]
    Sink {
        /// Which output.
        sink: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// The pipeline, its sinks, and what one run measures.
pub struct Driver {
    pipeline: Pipeline,
    sinks: Vec<Box<dyn Sink>>,
    metrics: Arc<Metrics>,
    server: Option<Arc<ServerState>>,
    mode: Mode,
    closed: Vec<WindowResult>,
    sessions: Vec<ClosedSession>,
    close_latency: hdrhistogram::Histogram<u64>,
    failed: Option<DriverError>,
}

impl Driver {
    /// Drive `pipeline` into `sinks`; `server` (live modes) gets readiness.
    pub fn new(
        pipeline: Pipeline,
        sinks: Vec<Box<dyn Sink>>,
        metrics: Arc<Metrics>,
        server: Option<Arc<ServerState>>,
        mode: Mode,
    ) -> Self {
        Self {
            pipeline,
            sinks,
            metrics,
            server,
            mode,
            closed: Vec::new(),
            sessions: Vec::new(),
            close_latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid bounds"),
            failed: None,
        }
    }

    /// Run `source` until its input ends (batch mode) or `stop` is set.
    pub fn run(
        &mut self,
        source: &mut dyn Source,
        stop: &AtomicBool,
    ) -> Result<Ending, DriverError> {
        // In batch mode the timeout only bounds how long a stalled input
        // (an open, silent pipe) delays noticing `stop`.
        let tick = match self.mode {
            Mode::Batch => Duration::from_millis(200),
            Mode::Live { tick } => tick,
        };
        if !source.manages_readiness() {
            self.set_ready(true);
        }
        let mut input_open = true;
        let mut last_tick = Instant::now();
        let ending = loop {
            if stop.load(Ordering::Relaxed) {
                break Ending::Stopped;
            }
            if let Some(error) = self.failed.take() {
                return Err(error);
            }
            if input_open {
                if source.pump(tick, self)? == Pumped::End {
                    if self.mode == Mode::Batch {
                        break Ending::EndOfInput;
                    }
                    tracing::info!("source finished; windows close as the idle watermark advances");
                    input_open = false;
                }
            } else {
                std::thread::sleep(tick);
            }
            if self.mode != Mode::Batch && last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                self.tick(source);
            }
        };
        if ending == Ending::EndOfInput {
            self.pipeline.finish();
            self.publish();
        }
        source.close(self);
        self.set_ready(false);
        self.pipeline.flush_rejects();
        for sink in &mut self.sinks {
            if let Err(source) = sink.flush() {
                self.failed.get_or_insert(DriverError::Sink {
                    sink: sink.name(),
                    source,
                });
            }
        }
        match self.failed.take() {
            Some(error) => Err(error),
            None => Ok(ending),
        }
    }

    /// Periodic work of live modes.
    fn tick(&mut self, source: &mut dyn Source) {
        let now = now_ms();
        self.pipeline.tick(now);
        source.tick(now, self);
        self.publish();
        let progress = source
            .event_progress()
            .map(|p| (p.max_event_ms, p.watermark_ms));
        self.pipeline.sync_metrics(&self.metrics, now, progress);
    }

    /// The pipeline, for the run's summary.
    pub fn pipeline_ref(&self) -> &Pipeline {
        &self.pipeline
    }

    /// From the watermark closing windows to their being published, in
    /// nanoseconds, over the run.
    pub fn close_latency(&self) -> &hdrhistogram::Histogram<u64> {
        &self.close_latency
    }

    /// A sink failed: stop a replay, log in live modes.
    fn sink_failed(&mut self, sink: &'static str, source: io::Error) {
        if self.mode == Mode::Batch {
            self.failed
                .get_or_insert(DriverError::Sink { sink, source });
        } else {
            tracing::error!(error = %source, sink, "cannot write window results");
        }
    }
}

impl Ingest for Driver {
    fn batch(&mut self, batch: &Batch) {
        match &batch.decoded {
            None => {
                for span in batch.chunk.spans() {
                    self.pipeline.process_line(batch.chunk.line(span));
                    if self.pipeline.has_closed() {
                        self.publish();
                    }
                }
            }
            Some(decoded) => {
                for (&span, &parsed) in decoded.spans.iter().zip(&decoded.parsed) {
                    let raw = batch.chunk.line(span).raw;
                    self.pipeline.apply(parsed, &decoded.names, raw);
                    if self.pipeline.has_closed() {
                        self.publish();
                    }
                }
            }
        }
    }

    fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    fn publish(&mut self) {
        self.pipeline.take_closed(&mut self.closed);
        let mut closed = std::mem::take(&mut self.closed);
        for result in closed.drain(..) {
            let json = serde_json::to_string(&result).expect("window results serialize");
            let label = self.pipeline.window_label(result.id);
            let window = ClosedWindow {
                result: &result,
                json: &json,
                label: &label,
            };
            for index in 0..self.sinks.len() {
                if let Err(error) = self.sinks[index].window(&window) {
                    let name = self.sinks[index].name();
                    self.sink_failed(name, error);
                }
            }
        }
        self.closed = closed;
        self.publish_partials();
        self.publish_trending();
        self.publish_forecast();
        self.flush_sinks();
        if let Some(started) = self.pipeline.take_close_started() {
            let elapsed = started.elapsed();
            self.metrics.record_close_latency(elapsed);
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.close_latency.saturating_record(nanos.max(1));
        }
        // Sessions after the windows: the close latency measures windows.
        if self.publish_sessions() {
            self.flush_sinks();
        }
    }

    fn persist(&mut self) -> Persisted {
        // Windows closed and partials taken since the last publish go out
        // first: a checkpoint (a revocation's above all) must not record a
        // window as emitted while its partials are still here.
        self.publish();
        self.pipeline.flush_counters();
        let mut persisted = Persisted {
            emitted_bytes: None,
            emitted_session_bytes: None,
            counters: self.metrics.counter_snapshot(),
            failed: None,
            pending: None,
        };
        for index in 0..self.sinks.len() {
            match self.sinks[index].persist() {
                Ok(Some(Written::Windows(bytes))) => persisted.emitted_bytes = Some(bytes),
                Ok(Some(Written::Sessions(bytes))) => {
                    persisted.emitted_session_bytes = Some(bytes);
                }
                Ok(None) => {}
                // Slow, not lost: the producer keeps retrying until its own
                // delivery timeout, which reports a failure if it comes.
                Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                    let name = self.sinks[index].name();
                    tracing::warn!(%error, sink = name, "output not yet acknowledged; checkpoint deferred");
                    persisted.pending = Some(format!("{name}: {error}"));
                }
                Err(error) => {
                    let name = self.sinks[index].name();
                    persisted.failed = Some(format!("{name}: {error}"));
                    self.sink_failed(name, error);
                }
            }
        }
        persisted
    }

    fn set_ready(&mut self, ready: bool) {
        if let Some(server) = &self.server {
            server.ready.store(ready, Ordering::Relaxed);
        }
    }
}

impl Driver {
    /// Partial windows closed since the last publish, and each input's
    /// progress: to the sinks (the partials topic).
    fn publish_partials(&mut self) {
        if !self.pipeline.keeps_partials() {
            return;
        }
        let partials = self.pipeline.take_partials();
        let progress = self.pipeline.inputs_progress();
        let inputs = self.pipeline.input_count();
        for index in 0..self.sinks.len() {
            if let Err(error) = self.sinks[index].partials(&partials, &progress, inputs) {
                let name = self.sinks[index].name();
                self.sink_failed(name, error);
            }
        }
    }

    fn flush_sinks(&mut self) {
        for index in 0..self.sinks.len() {
            if let Err(error) = self.sinks[index].flush() {
                let name = self.sinks[index].name();
                self.sink_failed(name, error);
            }
        }
    }

    /// Listening sessions closed since the last publish: to the sinks.
    /// False when there were none.
    fn publish_sessions(&mut self) -> bool {
        self.pipeline.take_closed_sessions(&mut self.sessions);
        if self.sessions.is_empty() {
            return false;
        }
        let sessions = std::mem::take(&mut self.sessions);
        for index in 0..self.sinks.len() {
            if let Err(error) = self.sinks[index].sessions(&sessions) {
                let name = self.sinks[index].name();
                self.sink_failed(name, error);
            }
        }
        self.sessions = sessions;
        self.sessions.clear();
        true
    }

    /// The forecast learnt from a tumbling close and looked ahead: to the sinks.
    fn publish_forecast(&mut self) {
        let Some(update) = self.pipeline.take_forecast() else {
            return;
        };
        let label = self.pipeline.window_label(update.window);
        for sink in &mut self.sinks {
            sink.forecast(&update, &label);
        }
    }

    /// The trend detector scored a tumbling window: to the sinks.
    fn publish_trending(&mut self) {
        let Some(trending) = self.pipeline.take_trending() else {
            return;
        };
        let Some(window) = self.pipeline.trending_window() else {
            return;
        };
        let json = serde_json::to_string(&trending).expect("trending serializes");
        let label = self.pipeline.window_label(window);
        let scored = TrendingWindow {
            trending: &trending,
            json: &json,
            label: &label,
        };
        for sink in &mut self.sinks {
            sink.trending(&scored);
        }
    }
}

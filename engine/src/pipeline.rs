//! The pipeline: line -> decode -> watermark -> windowed aggregation.
//!
//! Single-threaded and synchronous; sources feed it lines and the caller
//! publishes the window results it returns (JSON lines, metrics, HTTP).

use std::io::Write;
use std::time::{Duration, Instant};

use downbeat_operators::{
    AggregatorConfig, Dimensions, SourceId, Stream, WindowAggregator, WindowError, WindowResult,
};
use serde::Serialize;
use thiserror::Error;

use crate::decode::{decode, Decoded, RejectReason, TimeBounds};
use crate::metrics::{IngestMetrics, Metrics, Progress};
use crate::source::lines::Line;
use crate::watermark::{Watermark, WatermarkConfig};

/// Everything the pipeline needs to know, validated by the config module.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Windows and top-k.
    pub aggregator: AggregatorConfig,
    /// Lateness and idleness.
    pub watermark: WatermarkConfig,
    /// Lines longer than this are refused.
    pub max_line_bytes: usize,
    /// Events further than this ahead of the wall clock are refused.
    pub max_future_ms: i64,
}

/// Why the pipeline could not be built.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The window configuration is inconsistent; fix the `[windows]` section.
    #[error("invalid windows: {0}")]
    Windows(#[from] WindowError),
}

/// What happened to one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted as a stream.
    Stream,
    /// A valid event that is not a play.
    NotAStream,
    /// Refused.
    Rejected(RejectReason),
    /// A stream whose windows were already emitted.
    Late,
}

/// Input limits for [`parse_line`].
#[derive(Clone, Debug)]
pub struct ParseSettings {
    /// Acceptable event times.
    pub bounds: TimeBounds,
    /// Longer lines are refused.
    pub max_line_bytes: usize,
    /// Hashes (artist, song) for the interner, so that work can happen on a
    /// decode thread.
    pub song_hasher: ahash::RandomState,
}

/// A decoded stream that owns nothing: its names are ranges of a separate
/// buffer, so batches of them can cross threads cheaply.
#[derive(Clone, Copy, Debug)]
pub struct ParsedStream {
    time_ms: i64,
    user_hash: u64,
    song_hash: u64,
    artist: (u32, u32),
    song: (u32, u32),
    dims: Dimensions,
    duration_ms: Option<u32>,
}

impl ParsedStream {
    /// Event time.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    fn names<'n>(&self, names: &'n [u8]) -> (&'n str, &'n str) {
        let text = |(start, end): (u32, u32)| {
            let bytes = &names[start as usize..end as usize];
            debug_assert!(std::str::from_utf8(bytes).is_ok());
            // SAFETY: `parse_line` wrote these ranges from whole `&str`s, so
            // each is valid UTF-8; `names` is only appended to meanwhile.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        };
        (text(self.artist), text(self.song))
    }
}

/// What one line decoded to.
#[derive(Clone, Copy, Debug)]
pub enum Parsed {
    /// A stream to count.
    Stream(ParsedStream),
    /// A valid event that is not a play.
    NotAStream,
    /// Refused.
    Rejected(RejectReason),
}

/// Decode one line; stream names are appended to `names`. Pure and
/// thread-safe: the expensive half of the pipeline, run in parallel by `replay`.
#[inline]
pub fn parse_line(line: &Line<'_>, settings: &ParseSettings, names: &mut Vec<u8>) -> Parsed {
    if line.truncated || line.bytes.len() > settings.max_line_bytes {
        return Parsed::Rejected(RejectReason::LineTooLong);
    }
    match decode(line.bytes, settings.bounds) {
        Decoded::Stream(listen) => {
            let mut push = |text: &str| {
                let start = names.len() as u32;
                names.extend_from_slice(text.as_bytes());
                (start, names.len() as u32)
            };
            Parsed::Stream(ParsedStream {
                time_ms: listen.time_ms,
                user_hash: listen.user.hash(),
                song_hash: std::hash::BuildHasher::hash_one(
                    &settings.song_hasher,
                    (&*listen.artist, &*listen.song),
                ),
                artist: push(&listen.artist),
                song: push(&listen.song),
                dims: listen.dims,
                duration_ms: listen.duration_ms,
            })
        }
        Decoded::NotAStream => Parsed::NotAStream,
        Decoded::Rejected(reason) => Parsed::Rejected(reason),
    }
}

/// Totals, reported as the replay summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Input lines (records) read.
    pub lines: u64,
    /// Streams counted.
    pub streams: u64,
    /// Valid events that are not plays.
    pub non_stream_events: u64,
    /// Lines refused.
    pub rejected: u64,
    /// Lines refused, by reason (only reasons that occurred).
    pub rejected_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Streams that arrived after their windows were emitted.
    pub late: u64,
    /// Windows emitted.
    pub windows: u64,
}

/// Logs refused lines at most once a second, with a count of the ones skipped.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, what: &str, line_number: u64) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            line = line_number,
            suppressed = self.suppressed,
            "refused input: {what}"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// The operator graph for one input stream.
pub struct Pipeline {
    aggregator: WindowAggregator,
    watermark: Watermark,
    parse_settings: ParseSettings,
    max_future_ms: i64,
    totals: Totals,
    ingest: IngestMetrics,
    rejects: Option<Box<dyn Write + Send>>,
    log: RateLimitedLog,
    close_started: Option<Instant>,
    names: Vec<u8>,
    /// Set by sources that keep their own watermarks (one per partition).
    external_progress: Option<(Option<i64>, Option<i64>)>,
}

impl Pipeline {
    /// Build the graph. `now_ms` is the wall clock used for the future bound.
    pub fn new(
        config: PipelineConfig,
        metrics: &Metrics,
        rejects: Option<Box<dyn Write + Send>>,
        now_ms: i64,
    ) -> Result<Self, PipelineError> {
        let aggregator = WindowAggregator::new(config.aggregator)?;
        let parse_settings = ParseSettings {
            bounds: TimeBounds::until(now_ms, config.max_future_ms),
            max_line_bytes: config.max_line_bytes,
            song_hasher: aggregator.song_hasher().clone(),
        };
        Ok(Self {
            aggregator,
            watermark: Watermark::new(config.watermark),
            parse_settings,
            max_future_ms: config.max_future_ms,
            totals: Totals::default(),
            ingest: metrics.ingest(),
            rejects,
            log: RateLimitedLog {
                last: None,
                suppressed: 0,
            },
            close_started: None,
            names: Vec::new(),
            external_progress: None,
        })
    }

    /// Process one line; closed windows are appended to `out`.
    #[inline]
    pub fn process_line(&mut self, line: Line<'_>, out: &mut Vec<WindowResult>) -> Outcome {
        let mut names = std::mem::take(&mut self.names);
        names.clear();
        let parsed = parse_line(&line, &self.parse_settings, &mut names);
        let outcome = self.apply(parsed, &names, line.bytes, out);
        self.names = names;
        outcome
    }

    /// What [`parse_line`] needs; decode threads each hold a clone.
    pub fn parse_settings(&self) -> ParseSettings {
        self.parse_settings.clone()
    }

    /// The ordered half of [`Pipeline::process_line`]: count a parsed line
    /// (whose names are in `names`, raw bytes in `raw`) in input order.
    #[inline]
    pub fn apply(
        &mut self,
        parsed: Parsed,
        names: &[u8],
        raw: &[u8],
        out: &mut Vec<WindowResult>,
    ) -> Outcome {
        self.totals.lines += 1;
        self.ingest.event();
        let outcome = match parsed {
            Parsed::Stream(stream) => self.count(stream, names, out),
            Parsed::NotAStream => Outcome::NotAStream,
            Parsed::Rejected(reason) => Outcome::Rejected(reason),
        };
        match outcome {
            Outcome::Stream => self.totals.streams += 1,
            Outcome::NotAStream => self.totals.non_stream_events += 1,
            Outcome::Rejected(reason) => {
                self.totals.rejected += 1;
                *self
                    .totals
                    .rejected_by_reason
                    .entry(reason.label())
                    .or_insert(0) += 1;
                self.ingest.rejected(reason);
                self.log.warn(reason.label(), self.totals.lines);
                self.keep_rejected(raw);
            }
            Outcome::Late => {
                self.totals.late += 1;
                self.ingest.late();
                self.log.warn("late event", self.totals.lines);
                self.keep_rejected(raw);
            }
        }
        outcome
    }

    fn count(
        &mut self,
        parsed: ParsedStream,
        names: &[u8],
        out: &mut Vec<WindowResult>,
    ) -> Outcome {
        // `insert` refuses late streams (and forgets a name interned only
        // for them), so lateness is checked once.
        let stream = self.intern(parsed, names);
        if self.aggregator.insert(stream).is_err() {
            return Outcome::Late;
        }
        self.ingest.stream(stream.dims, stream.duration_ms);
        if let Some(watermark) = self.watermark.observe(stream.time_ms) {
            self.advance(watermark, out);
        }
        Outcome::Stream
    }

    /// The stream of `parsed`, its song interned (names are in `names`).
    #[inline]
    fn intern(&mut self, parsed: ParsedStream, names: &[u8]) -> Stream {
        let (artist, song) = parsed.names(names);
        Stream {
            time_ms: parsed.time_ms,
            user_hash: parsed.user_hash,
            song: self
                .aggregator
                .intern_hashed(parsed.song_hash, artist, song),
            dims: parsed.dims,
            duration_ms: parsed.duration_ms,
        }
    }

    /// Count a stream from one of several ordered sources (a Kafka
    /// partition) whose own watermark is kept by the caller:
    /// `late_in_source` is that watermark's verdict. The windows then close
    /// through [`Pipeline::advance_to`].
    pub fn apply_from_source(
        &mut self,
        source: SourceId,
        parsed: ParsedStream,
        late_in_source: bool,
        names: &[u8],
        raw: &[u8],
    ) -> Outcome {
        self.totals.lines += 1;
        self.ingest.event();
        let stream = self.intern(parsed, names);
        let accepted = !late_in_source && self.aggregator.insert_from(source, stream).is_ok();
        if !accepted {
            if late_in_source {
                self.aggregator.forget_if_unreferenced(stream.song);
            }
            self.totals.late += 1;
            self.ingest.late();
            self.log.warn("late event", self.totals.lines);
            self.keep_rejected(raw);
            return Outcome::Late;
        }
        self.totals.streams += 1;
        self.ingest.stream(stream.dims, stream.duration_ms);
        Outcome::Stream
    }

    /// Re-insert a stream that was counted before a restart or a hand-over
    /// (see [`WindowAggregator::restore_from`]); it is not counted again.
    pub fn restore_from_source(
        &mut self,
        source: SourceId,
        parsed: ParsedStream,
        names: &[u8],
    ) -> bool {
        let stream = self.intern(parsed, names);
        self.aggregator.restore_from(source, stream)
    }

    /// The windows through this watermark close (it never moves back).
    pub fn advance_to(&mut self, watermark_ms: i64, out: &mut Vec<WindowResult>) {
        self.advance(watermark_ms, out);
    }

    /// Pane width of the windows.
    pub fn pane_ms(&self) -> i64 {
        self.aggregator.pane_ms()
    }

    /// Width of the widest window.
    pub fn max_width_ms(&self) -> i64 {
        self.aggregator.max_width_ms()
    }

    /// The aggregator, for sources that manage per-source panes.
    pub fn aggregator_mut(&mut self) -> &mut WindowAggregator {
        &mut self.aggregator
    }

    /// Report this largest event time and watermark in the metrics instead
    /// of the pipeline's own (sources with per-partition watermarks).
    pub fn set_external_progress(&mut self, max_event_ms: Option<i64>, watermark_ms: Option<i64>) {
        self.external_progress = Some((max_event_ms, watermark_ms));
    }

    fn advance(&mut self, watermark_ms: i64, out: &mut Vec<WindowResult>) {
        let before = out.len();
        // Read the clock only when a window boundary is crossed.
        let started = self
            .aggregator
            .crosses_boundary(watermark_ms)
            .then(Instant::now);
        self.aggregator.advance(watermark_ms, out);
        if out.len() > before {
            self.totals.windows += (out.len() - before) as u64;
            if let Some(started) = started {
                self.close_started.get_or_insert(started);
            }
        }
    }

    fn keep_rejected(&mut self, bytes: &[u8]) {
        if let Some(writer) = self.rejects.as_mut() {
            let written = writer
                .write_all(bytes)
                .and_then(|()| writer.write_all(b"\n"));
            if let Err(error) = written {
                tracing::error!(%error, "cannot write to the rejects file; no longer keeping rejected lines");
                self.rejects = None;
            }
        }
    }

    /// The source has delivered data at wall time `now_ms` (once per batch).
    pub fn source_active(&mut self, now_ms: i64) {
        self.watermark.source_active(now_ms);
    }

    /// Periodic tick in live mode: moves the future bound with the wall
    /// clock and applies the idle rule.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<WindowResult>) {
        self.parse_settings.bounds = TimeBounds::until(now_ms, self.max_future_ms);
        if let Some(watermark) = self.watermark.on_idle_check(now_ms) {
            self.advance(watermark, out);
        }
    }

    /// End of input: emit every remaining window.
    pub fn finish(&mut self, out: &mut Vec<WindowResult>) {
        self.advance(i64::MAX, out);
        if let Some(writer) = self.rejects.as_mut() {
            if let Err(error) = writer.flush() {
                tracing::error!(%error, "cannot flush the rejects file");
            }
        }
    }

    /// When the windows returned since the last call began to close, to
    /// measure close-to-publish latency.
    pub fn take_close_started(&mut self) -> Option<Instant> {
        self.close_started.take()
    }

    /// The trend detector's answer for the latest tumbling window, once.
    pub fn take_trending(&mut self) -> Option<downbeat_operators::Trending> {
        self.aggregator.take_trending()
    }

    /// Publish counters and freshness gauges.
    pub fn sync_metrics(&mut self, metrics: &Metrics, now_ms: i64) {
        self.ingest.flush();
        let (max_event_ms, watermark_ms) = self
            .external_progress
            .unwrap_or((self.watermark.max_event_ms(), self.watermark.current_ms()));
        metrics.set_progress(Progress {
            now_ms,
            max_event_ms,
            watermark_ms,
            live_panes: self.aggregator.live_panes(),
            interned_songs: self.aggregator.interned_songs(),
        });
        if let Some(writer) = self.rejects.as_mut() {
            let _ = writer.flush();
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Label of each window kind for metrics (`"1m"`, `"10m"`), by kind name.
    pub fn window_label(&self, kind: &str) -> String {
        self.aggregator
            .windows()
            .iter()
            .find(|spec| spec.kind().name() == kind)
            .map(|spec| spec.label())
            .unwrap_or_else(|| kind.to_owned())
    }
}

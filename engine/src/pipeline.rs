//! The pipeline: line -> decode -> watermark -> windowed aggregation.
//!
//! Single-threaded and synchronous. The driver feeds it lines (or records
//! of several ordered inputs, such as Kafka partitions, whose progress the
//! source tracks) and publishes the windows it closes to the sinks.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use downbeat_operators::{
    AggregatorConfig, Ahead, Band, ClosedSession, Dimensions, ForecastConfig, ForecastError,
    ForecastState, Forecaster, OpenSession, OutlierConfig, OutlierGuard, Partial, Play,
    SessionConfig, SessionError, SessionEvent, SessionKey, Sessionizer, SourceId, Trending,
    Verdict, WindowAggregator, WindowError, WindowId, WindowResult,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decode::{decode, Decoded, Limits, RejectReason, SessionId, UserKey};
use crate::lines::Line;
use crate::metrics::{IngestMetrics, Metrics, Progress, SessionProgress, SessionSkip};
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
    /// Longer text fields are refused.
    pub max_field_bytes: usize,
    /// Events far ahead of their stream wait for confirmation.
    pub outliers: OutlierConfig,
    /// Listening sessions, when built (`run`; `replay --sessions`).
    pub sessions: Option<SessionConfig>,
    /// The open sessions' share of memory (`memory.session_state_mib`).
    pub session_state_bytes: usize,
    /// The streams forecast of the first tumbling window, when it runs.
    pub forecast: Option<ForecastConfig>,
}

/// Why the pipeline could not be built.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The window configuration is inconsistent; fix the `[windows]` section.
    #[error("invalid windows: {0}")]
    Windows(#[from] WindowError),
    /// The `[sessions]` section is wrong.
    #[error("invalid sessions: {0}")]
    Sessions(#[from] SessionError),
    /// The `[forecast]` section is wrong.
    #[error("invalid forecast: {0}")]
    Forecast(#[from] ForecastError),
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
    /// A stream far ahead of the rest, held until the stream confirms or
    /// refutes it (its outcome is tallied then).
    Held,
}

/// Input limits for [`parse_line`].
#[derive(Clone, Debug)]
pub struct ParseSettings {
    /// Acceptable event times and field lengths.
    pub bounds: Limits,
    /// Longer lines are refused.
    pub max_line_bytes: usize,
    /// Hashes (artist, song) for the interner, so that work can happen on a
    /// decode thread.
    pub song_hasher: ahash::RandomState,
    /// Keep each event's user and session id for the sessionizer.
    pub sessions: bool,
}

/// What the sessionizer needs of an event: its user id and session id, as
/// ranges of the names buffer.
#[derive(Clone, Copy, Debug)]
pub enum SessionRef {
    /// Sessions are not built.
    Off,
    /// The user id or the session id is longer than `input.max_field_bytes`:
    /// the event is left out of sessions (and counted).
    TooLong,
    /// The user id's text and the session id's JSON text.
    Key {
        /// The user id (an integer in decimal).
        user: (u32, u32),
        /// The session id's JSON text, when the event has one.
        session_id: Option<(u32, u32)>,
    },
}

impl SessionRef {
    /// Write `user` and `session_id` to `names` (when sessions are built).
    fn push(
        settings: &ParseSettings,
        user: &UserKey<'_>,
        session_id: Option<&SessionId<'_>>,
        names: &mut Vec<u8>,
    ) -> Self {
        if !settings.sessions {
            return SessionRef::Off;
        }
        let max = settings.bounds.max_field_bytes;
        let start = names.len();
        user.write_text(names);
        let user_end = names.len();
        let session_id = session_id.map(|id| {
            id.write_json(names);
            (user_end as u32, names.len() as u32)
        });
        let session_len = session_id.map_or(0, |(start, end)| (end - start) as usize);
        if user_end - start > max || session_len > max {
            names.truncate(start);
            return SessionRef::TooLong;
        }
        SessionRef::Key {
            user: (start as u32, user_end as u32),
            session_id,
        }
    }

    /// The byte range of `names` it covers, if any.
    fn span(self) -> Option<(u32, u32)> {
        match self {
            SessionRef::Key { user, session_id } => {
                Some((user.0, session_id.map_or(user.1, |s| s.1)))
            }
            _ => None,
        }
    }

    /// Its ranges moved `by` bytes back.
    fn shifted(self, by: u32) -> Self {
        match self {
            SessionRef::Key { user, session_id } => SessionRef::Key {
                user: (user.0 - by, user.1 - by),
                session_id: session_id.map(|(a, b)| (a - by, b - by)),
            },
            other => other,
        }
    }
}

/// A valid event that is not a stream, of a user, at a time in range.
#[derive(Clone, Copy, Debug)]
pub struct ParsedActivity {
    time_ms: i64,
    session: SessionRef,
}

impl ParsedActivity {
    /// Event time.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }
}

/// A decoded stream that owns nothing: its names are ranges of a separate
/// buffer, so batches of them can cross threads cheaply.
#[derive(Clone, Copy, Debug)]
pub struct ParsedPlay {
    time_ms: i64,
    user_hash: u64,
    song_hash: u64,
    artist: (u32, u32),
    song: (u32, u32),
    dims: Dimensions,
    duration_ms: Option<u32>,
    session: SessionRef,
}

impl ParsedPlay {
    /// The same play with its name ranges moved `by` bytes back (its names
    /// copied out of a larger buffer).
    fn shifted(self, by: u32) -> Self {
        Self {
            artist: (self.artist.0 - by, self.artist.1 - by),
            song: (self.song.0 - by, self.song.1 - by),
            session: self.session.shifted(by),
            ..self
        }
    }

    /// The byte range of the names buffer its names cover.
    fn span(&self) -> (u32, u32) {
        let (mut start, mut end) = (
            self.artist.0.min(self.song.0),
            self.artist.1.max(self.song.1),
        );
        if let Some((a, b)) = self.session.span() {
            (start, end) = (start.min(a), end.max(b));
        }
        (start, end)
    }

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
    Play(ParsedPlay),
    /// A valid event that is not a play (with its user and time, when it
    /// has them).
    NotAStream(Option<ParsedActivity>),
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
        Decoded::Play(listen) => {
            let mut push = |text: &str| {
                let start = names.len() as u32;
                names.extend_from_slice(text.as_bytes());
                (start, names.len() as u32)
            };
            Parsed::Play(ParsedPlay {
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
                session: SessionRef::push(
                    settings,
                    &listen.user,
                    listen.session_id.as_ref(),
                    names,
                ),
            })
        }
        Decoded::NotAStream(activity) => Parsed::NotAStream(
            activity
                .filter(|_| settings.sessions)
                .map(|a| ParsedActivity {
                    time_ms: a.time_ms,
                    session: SessionRef::push(settings, &a.user, a.session_id.as_ref(), names),
                }),
        ),
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
    /// Sessions closed (with sessions built).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    /// Of those, closed early to stay within `memory.session_state_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_evicted: Option<u64>,
    /// Why refused lines could not all be kept in the rejects file (absent
    /// when they were, or when none is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_write_error: Option<String>,
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

/// A stream held by an outlier guard: it owns its names and raw line.
#[derive(Debug)]
pub struct HeldPlay {
    /// Its offset in its input (0 for the single input).
    pub offset: i64,
    parsed: ParsedPlay,
    names: Vec<u8>,
    raw: Vec<u8>,
}

impl HeldPlay {
    /// `parsed`, owning its names (from `names`) and raw bytes.
    fn new(offset: i64, parsed: ParsedPlay, names: &[u8], raw: &[u8]) -> Self {
        let (start, end) = parsed.span();
        Self {
            offset,
            parsed: parsed.shifted(start),
            names: names[start as usize..end as usize].to_vec(),
            raw: raw.to_vec(),
        }
    }

    /// Its event time.
    pub fn time_ms(&self) -> i64 {
        self.parsed.time_ms
    }
}

/// What a checkpoint keeps of an input's outlier guard: the stream's
/// confirmed position and the events held, by offset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierSnapshot {
    /// The largest confirmed event time.
    pub confirmed_max_ms: Option<i64>,
    /// Offsets of the events held, with the ordinary events counted since each.
    pub held: Vec<(i64, usize)>,
}

/// The outlier guard of one ordered input (a Kafka partition).
struct InputGuard {
    guard: OutlierGuard<HeldPlay>,
    /// Resumed from a checkpoint: events held then, put back as they are
    /// read again (offset to ordinary events counted since).
    rehold: BTreeMap<i64, usize>,
    /// Resumed from a checkpoint: every stream counted before it is at or
    /// before this time; a later one re-read was held or refused then.
    counted_through_ms: Option<i64>,
}

impl InputGuard {
    fn fresh(config: OutlierConfig) -> Self {
        Self {
            guard: OutlierGuard::new(config),
            rehold: BTreeMap::new(),
            counted_through_ms: None,
        }
    }
}

/// What to do with a stream of an input re-read after a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reread {
    /// It was counted: rebuild its pane.
    Restore,
    /// It was held: the guard holds it again.
    Held,
    /// It was refused as an outlier (counted and kept then): skip it.
    Refused,
}

/// What an input's source last said of it.
struct InputMark {
    watermark_ms: Option<i64>,
    idle: bool,
}

/// How far one input is, for the merge tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputProgress {
    /// The input (a Kafka partition).
    pub input: SourceId,
    /// Windows ending at or before this hold the input.
    pub through_ms: i64,
    /// The input is read to its end and quiet for the idle timeout: it
    /// holds no window (the idle rule), until it reports again.
    pub idle: bool,
}

/// The sessionizers: one for the single input, one per ordered input (a
/// Kafka partition's sessions are its own, checkpointed with it).
struct Sessions {
    config: SessionConfig,
    budget_bytes: usize,
    single: Sessionizer,
    inputs: HashMap<SourceId, Sessionizer>,
    closed: Vec<ClosedSession>,
}

impl Sessions {
    fn new(config: SessionConfig, budget_bytes: usize) -> Result<Self, SessionError> {
        Ok(Self {
            single: Sessionizer::new(&config, budget_bytes)?,
            config,
            budget_bytes,
            inputs: HashMap::new(),
            closed: Vec::new(),
        })
    }

    fn all(&self) -> impl Iterator<Item = &Sessionizer> {
        std::iter::once(&self.single).chain(self.inputs.values())
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Sessionizer> {
        std::iter::once(&mut self.single).chain(self.inputs.values_mut())
    }

    /// A fresh sessionizer for one of `inputs` ordered inputs.
    fn for_input(&self, inputs: usize) -> Sessionizer {
        Sessionizer::new(&self.config, self.budget_bytes / inputs.max(1))
            .expect("the config was validated with the pipeline")
    }
}

/// The first tumbling window and its width: the one forecast.
fn forecast_window(aggregator: &WindowAggregator) -> Option<(WindowId, i64)> {
    aggregator
        .windows()
        .iter()
        .position(|spec| spec.kind() == downbeat_operators::WindowKind::Tumbling)
        .map(|index| {
            let width_ms = aggregator.windows()[index].width_ms();
            (WindowId(index as u16), width_ms)
        })
}

/// The operator graph: decode, the single-input watermark, the windows.
pub struct Pipeline {
    aggregator: WindowAggregator,
    watermark: Watermark,
    guard: OutlierGuard<HeldPlay>,
    verdicts: Vec<Verdict<HeldPlay>>,
    outliers: OutlierConfig,
    input_guards: HashMap<SourceId, InputGuard>,
    input_verdicts: Vec<Verdict<HeldPlay>>,
    input_count: usize,
    input_progress: HashMap<SourceId, InputMark>,
    max_field_bytes: usize,
    parse_settings: ParseSettings,
    max_future_ms: i64,
    totals: Totals,
    ingest: IngestMetrics,
    rejects: Option<Box<dyn Write + Send>>,
    log: RateLimitedLog,
    close_started: Option<Instant>,
    names: Vec<u8>,
    closed: Vec<WindowResult>,
    sessions: Option<Sessions>,
    forecast: Option<ForecastStage>,
}

/// The forecaster of one tumbling window, and whether it made forecasts
/// since the sinks last heard of them.
struct ForecastStage {
    window: WindowId,
    forecaster: Forecaster,
    /// (start, streams) of the latest window observed, and the forecast
    /// made for it, since the last [`Pipeline::take_forecast`].
    observed: Option<(i64, u64, Option<Band>)>,
}

/// The forecast after a tumbling close, for the sinks.
#[derive(Clone, Debug)]
pub struct ForecastUpdate {
    /// The forecast window.
    pub window: WindowId,
    /// Its width.
    pub width_ms: i64,
    /// Start of the window just closed, epoch ms.
    pub start_ms: i64,
    /// Its streams.
    pub streams: u64,
    /// The forecast made for it one window ahead (None while warming up).
    pub made_for_it: Option<Band>,
    /// The forecasts made now, one window ahead first then each horizon
    /// (those with a band).
    pub ahead: Vec<Ahead>,
    /// Share of the day's slots the profile has seen.
    pub profile_seen: f64,
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
            bounds: Limits::until(now_ms, config.max_future_ms, config.max_field_bytes),
            max_line_bytes: config.max_line_bytes,
            song_hasher: aggregator.song_hasher().clone(),
            sessions: config.sessions.is_some(),
        };
        let sessions = match config.sessions {
            Some(sessions) => Some(Sessions::new(sessions, config.session_state_bytes)?),
            None => None,
        };
        let forecast = match (config.forecast, forecast_window(&aggregator)) {
            (Some(forecast), Some((window, width_ms))) => Some(ForecastStage {
                window,
                forecaster: Forecaster::new(forecast, width_ms)?,
                observed: None,
            }),
            _ => None,
        };
        Ok(Self {
            aggregator,
            watermark: Watermark::new(config.watermark),
            guard: OutlierGuard::new(config.outliers),
            verdicts: Vec::new(),
            outliers: config.outliers,
            input_guards: HashMap::new(),
            input_verdicts: Vec::new(),
            input_count: 1,
            input_progress: HashMap::new(),
            max_field_bytes: config.max_field_bytes,
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
            closed: Vec::new(),
            sessions,
            forecast,
        })
    }

    /// Process one line of the single input.
    #[inline]
    pub fn process_line(&mut self, line: Line<'_>) -> Outcome {
        let mut names = std::mem::take(&mut self.names);
        names.clear();
        let parsed = parse_line(&line, &self.parse_settings, &mut names);
        let outcome = self.apply(parsed, &names, line.raw);
        self.names = names;
        outcome
    }

    /// What [`parse_line`] needs; decode threads each hold a clone.
    pub fn parse_settings(&self) -> ParseSettings {
        self.parse_settings.clone()
    }

    /// The ordered half of [`Pipeline::process_line`]: count a parsed line
    /// of the single input (whose names are in `names`, raw bytes in `raw`)
    /// in input order.
    #[inline]
    pub fn apply(&mut self, parsed: Parsed, names: &[u8], raw: &[u8]) -> Outcome {
        self.totals.lines += 1;
        self.ingest.event();
        let outcome = match parsed {
            Parsed::Play(stream) => self.count(stream, names, raw),
            Parsed::NotAStream(activity) => {
                if let Some(activity) = activity {
                    self.sessionize(None, activity.time_ms, activity.session, false, names);
                }
                Outcome::NotAStream
            }
            Parsed::Rejected(reason) => Outcome::Rejected(reason),
        };
        self.tally(outcome, raw);
        outcome
    }

    /// Totals, metrics, the log and the rejects file for one outcome.
    #[inline]
    fn tally(&mut self, outcome: Outcome, raw: &[u8]) {
        match outcome {
            Outcome::Held => {}
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
    }

    /// A stream of the single input: through the outlier guard, then counted.
    fn count(&mut self, parsed: ParsedPlay, names: &[u8], raw: &[u8]) -> Outcome {
        if self.guard.accepts_now(parsed.time_ms) {
            return self.count_accepted(parsed, names);
        }
        let held = HeldPlay::new(0, parsed, names, raw);
        let mut verdicts = std::mem::take(&mut self.verdicts);
        self.guard.offer(parsed.time_ms, held, &mut verdicts);
        self.apply_verdicts(&mut verdicts);
        self.verdicts = verdicts;
        Outcome::Held
    }

    /// The guard decided on held streams: count or refuse them, in order.
    fn apply_verdicts(&mut self, verdicts: &mut Vec<Verdict<HeldPlay>>) {
        for verdict in verdicts.drain(..) {
            match verdict {
                Verdict::Accept(held) => {
                    let outcome = self.count_accepted(held.parsed, &held.names);
                    self.tally(outcome, &held.raw);
                }
                Verdict::Reject(held) => {
                    self.tally(Outcome::Rejected(RejectReason::TimestampOutlier), &held.raw);
                }
            }
        }
    }

    /// Count a stream the guard let through.
    fn count_accepted(&mut self, parsed: ParsedPlay, names: &[u8]) -> Outcome {
        // `insert` refuses late streams (and forgets a name interned only
        // for them), so lateness is checked once.
        let stream = self.intern(parsed, names);
        if self.aggregator.insert(stream).is_err() {
            return Outcome::Late;
        }
        self.ingest.stream(stream.dims, stream.duration_ms);
        if self.sessions.is_some() {
            self.sessionize(None, parsed.time_ms, parsed.session, true, names);
        }
        if let Some(watermark) = self.watermark.observe(stream.time_ms) {
            self.advance(watermark);
        }
        Outcome::Stream
    }

    /// Add an event to the sessions of `input` (None: the single input).
    /// One before the watermark the sessions last closed at is left out
    /// (and counted): a session it would join may be closed already.
    fn sessionize(
        &mut self,
        input: Option<SourceId>,
        time_ms: i64,
        session: SessionRef,
        play: bool,
        names: &[u8],
    ) {
        let Some(sessions) = self.sessions.as_mut() else {
            return;
        };
        let (user, session_id) = match session {
            SessionRef::Off => return,
            SessionRef::TooLong => {
                self.ingest.session_skipped(SessionSkip::FieldTooLong);
                return;
            }
            SessionRef::Key { user, session_id } => (user, session_id),
        };
        let text = |(start, end): (u32, u32)| {
            let bytes = &names[start as usize..end as usize];
            // SAFETY: written by `SessionRef::push` from a `&str` or JSON
            // text (ASCII digits, or serde_json's string), so valid UTF-8.
            debug_assert!(std::str::from_utf8(bytes).is_ok());
            unsafe { std::str::from_utf8_unchecked(bytes) }
        };
        let event = SessionEvent {
            time_ms,
            user_id: text(user),
            session_id: session_id.map(text),
            play,
        };
        let inputs = self.input_count;
        let sessionizer = match input {
            None => &mut sessions.single,
            Some(input) => {
                if !sessions.inputs.contains_key(&input) {
                    let fresh = sessions.for_input(inputs);
                    sessions.inputs.insert(input, fresh);
                }
                sessions.inputs.get_mut(&input).expect("inserted")
            }
        };
        if !sessionizer.add(event, &mut sessions.closed) {
            self.ingest.session_skipped(SessionSkip::Late);
        }
    }

    /// The stream of `parsed`, its song interned (names are in `names`).
    #[inline]
    fn intern(&mut self, parsed: ParsedPlay, names: &[u8]) -> Play {
        let (artist, song) = parsed.names(names);
        Play {
            time_ms: parsed.time_ms,
            user_hash: parsed.user_hash,
            song: self
                .aggregator
                .intern_hashed(parsed.song_hash, artist, song),
            dims: parsed.dims,
            duration_ms: parsed.duration_ms,
        }
    }

    /// Decode one record of an ordered input (a Kafka record; `None` when
    /// it has no value). Its names stay here for the call that counts it.
    pub fn decode_record(&mut self, payload: Option<&[u8]>) -> Parsed {
        self.names.clear();
        match payload {
            None => Parsed::Rejected(RejectReason::NoValue),
            Some(bytes) => parse_line(
                &Line {
                    bytes,
                    raw: bytes,
                    truncated: false,
                },
                &self.parse_settings,
                &mut self.names,
            ),
        }
    }

    /// Count a record of `input` that is not a stream (refused, or not a
    /// play).
    pub fn apply_from_input(&mut self, input: SourceId, parsed: Parsed, raw: &[u8]) -> Outcome {
        let names = std::mem::take(&mut self.names);
        let outcome = match parsed {
            Parsed::Play(_) => unreachable!("streams of an input go through count_from_input"),
            Parsed::NotAStream(Some(activity)) => {
                self.totals.lines += 1;
                self.ingest.event();
                let ParsedActivity { time_ms, session } = activity;
                self.sessionize(Some(input), time_ms, session, false, &names);
                self.tally(Outcome::NotAStream, raw);
                Outcome::NotAStream
            }
            other => self.apply(other, &names, raw),
        };
        self.names = names;
        outcome
    }

    /// Put the stream just decoded by [`Pipeline::decode_record`] from
    /// `input`, at `offset`, through the input's outlier guard. Returns it
    /// when it passes at once: count it with [`Pipeline::count_from_input`].
    /// Otherwise it is read and held, and the guard's verdicts on held
    /// streams wait in [`Pipeline::take_input_verdicts`].
    pub fn guard_from_input(
        &mut self,
        input: SourceId,
        offset: i64,
        parsed: ParsedPlay,
        raw: &[u8],
    ) -> Option<ParsedPlay> {
        let outliers = self.outliers;
        let state = self
            .input_guards
            .entry(input)
            .or_insert_with(|| InputGuard::fresh(outliers));
        if state.guard.accepts_now(parsed.time_ms) {
            return Some(parsed);
        }
        self.totals.lines += 1;
        self.ingest.event();
        let held = HeldPlay::new(offset, parsed, &self.names, raw);
        state
            .guard
            .offer(parsed.time_ms, held, &mut self.input_verdicts);
        None
    }

    /// The outlier guards' verdicts on held streams, in the order to apply
    /// them: count those accepted with [`Pipeline::count_held_from_input`],
    /// refuse the rest with [`Pipeline::refuse_outlier`].
    pub fn take_input_verdicts(&mut self) -> Vec<Verdict<HeldPlay>> {
        std::mem::take(&mut self.input_verdicts)
    }

    /// `input` went idle: its guard decides on every stream it holds.
    pub fn flush_input_guard(&mut self, input: SourceId) {
        if let Some(state) = self.input_guards.get_mut(&input) {
            state.guard.flush(&mut self.input_verdicts);
        }
    }

    /// Refuse a held stream as an outlier (counted, kept in `--rejects`).
    pub fn refuse_outlier(&mut self, held: &HeldPlay) {
        self.tally(Outcome::Rejected(RejectReason::TimestampOutlier), &held.raw);
    }

    /// The outlier guard of `input`, for a checkpoint.
    pub fn outlier_snapshot(&self, input: SourceId) -> Option<OutlierSnapshot> {
        let state = self.input_guards.get(&input)?;
        let mut held: Vec<(i64, usize)> = state.rehold.iter().map(|(&o, &n)| (o, n)).collect();
        held.extend(state.guard.held_items().map(|(play, n)| (play.offset, n)));
        held.sort_unstable();
        Some(OutlierSnapshot {
            confirmed_max_ms: state.guard.confirmed_max_ms(),
            held,
        })
    }

    /// What to do with a stream of `input` re-read after a resume from a
    /// checkpoint whose guard was `snapshot`-ed (see [`Reread`]); a held
    /// one goes back into the guard here.
    pub fn reread_from_input(
        &mut self,
        input: SourceId,
        offset: i64,
        parsed: ParsedPlay,
        raw: &[u8],
    ) -> Reread {
        let Some(state) = self.input_guards.get_mut(&input) else {
            return Reread::Restore;
        };
        if let Some(outvoted) = state.rehold.remove(&offset) {
            let held = HeldPlay::new(offset, parsed, &self.names, raw);
            state.guard.hold(parsed.time_ms, held, outvoted);
            return Reread::Held;
        }
        // Every stream counted before the checkpoint is at or before the
        // guard's confirmed position then.
        match state.counted_through_ms {
            Some(max) if parsed.time_ms <= max => Reread::Restore,
            _ => Reread::Refused,
        }
    }

    /// Count the stream just decoded by [`Pipeline::decode_record`] from
    /// `input` (passed by its guard), whose own watermark is kept by its
    /// source: `late_in_input` is that watermark's verdict. Windows then
    /// close through [`Pipeline::advance_to`].
    pub fn count_from_input(
        &mut self,
        input: SourceId,
        parsed: ParsedPlay,
        late_in_input: bool,
        raw: &[u8],
    ) -> Outcome {
        self.totals.lines += 1;
        self.ingest.event();
        let names = std::mem::take(&mut self.names);
        let outcome = self.insert_from_input(input, parsed, &names, late_in_input, raw);
        self.names = names;
        outcome
    }

    /// Count a held stream of `input` its guard released (it was read, and
    /// counted as read, when it was held).
    pub fn count_held_from_input(
        &mut self,
        input: SourceId,
        held: &HeldPlay,
        late_in_input: bool,
    ) -> Outcome {
        self.insert_from_input(input, held.parsed, &held.names, late_in_input, &held.raw)
    }

    fn insert_from_input(
        &mut self,
        input: SourceId,
        parsed: ParsedPlay,
        names: &[u8],
        late_in_input: bool,
        raw: &[u8],
    ) -> Outcome {
        let stream = self.intern(parsed, names);
        let accepted = !late_in_input && self.aggregator.insert_from(input, stream).is_ok();
        if !accepted {
            if late_in_input {
                self.aggregator.forget_if_unreferenced(stream.song);
            }
            self.tally(Outcome::Late, raw);
            return Outcome::Late;
        }
        self.totals.streams += 1;
        self.ingest.stream(stream.dims, stream.duration_ms);
        self.sessionize(Some(input), parsed.time_ms, parsed.session, true, names);
        Outcome::Stream
    }

    /// Re-insert the stream just decoded, counted before a restart or a
    /// hand-over (see [`WindowAggregator::restore_from`]); it is not counted
    /// again. False when no open window needs it.
    pub fn restore_from_input(&mut self, input: SourceId, parsed: ParsedPlay) -> bool {
        let names = std::mem::take(&mut self.names);
        let stream = self.intern(parsed, &names);
        self.names = names;
        self.aggregator.restore_from(input, stream)
    }

    /// Take on `input`, whose panes are in windows up to `emitted_through_ms`
    /// (`i64::MIN` for a new one), with its outlier guard as checkpointed
    /// (None: a fresh guard).
    pub fn open_input(
        &mut self,
        input: SourceId,
        emitted_through_ms: i64,
        outliers: Option<&OutlierSnapshot>,
        sessions: Option<&[(SessionKey, OpenSession)]>,
    ) {
        self.aggregator.add_source(input, emitted_through_ms);
        let inputs = self.input_count;
        if let Some(state) = self.sessions.as_mut() {
            let mut sessionizer = state.for_input(inputs);
            sessionizer.restore(sessions.unwrap_or_default().to_vec());
            state.inputs.insert(input, sessionizer);
        }
        self.input_guards.remove(&input);
        if let Some(snapshot) = outliers {
            let guard = InputGuard {
                guard: OutlierGuard::resume(self.outliers, snapshot.confirmed_max_ms),
                rehold: snapshot.held.iter().copied().collect(),
                counted_through_ms: snapshot.confirmed_max_ms,
            };
            self.input_guards.insert(input, guard);
        }
    }

    /// Split each pane's song budget between `inputs` ordered inputs (a
    /// topic's partitions), so the whole stays within the configured budget
    /// however many of them this process holds.
    pub fn share_song_budget(&mut self, inputs: usize) {
        self.input_count = inputs;
        self.aggregator.share_song_budget(inputs);
        if let Some(sessions) = self.sessions.as_mut() {
            let share = sessions.budget_bytes / inputs.max(1);
            for sessionizer in sessions.inputs.values_mut() {
                sessionizer.set_max_state_bytes(share);
            }
        }
    }

    /// The open sessions of `input`, for a checkpoint (None without sessions).
    pub fn session_snapshot(&self, input: SourceId) -> Option<Vec<(SessionKey, OpenSession)>> {
        let sessions = self.sessions.as_ref()?;
        Some(
            sessions
                .inputs
                .get(&input)
                .map(Sessionizer::snapshot)
                .unwrap_or_default(),
        )
    }

    /// Give up `input`: drop its panes (another owner takes it over).
    pub fn close_input(&mut self, input: SourceId) {
        self.input_guards.remove(&input);
        if let Some(sessions) = self.sessions.as_mut() {
            sessions.inputs.remove(&input);
        }
        self.input_progress.remove(&input);
        self.aggregator.remove_source(input);
    }

    /// Windows ending at or before this already hold `input`'s panes.
    pub fn emitted_through(&self, input: SourceId) -> i64 {
        self.aggregator.emitted_through(input)
    }

    /// An input behind the windows closed here (taken over from a replica
    /// that was behind) emits its share of them, up to `upto_ms`.
    pub fn catch_up(&mut self, input: SourceId, upto_ms: i64) {
        if self.aggregator.is_behind(input) {
            self.aggregator.catch_up(input, upto_ms, &mut self.closed);
        }
    }

    /// Everything before this has been emitted.
    pub fn closed_through_ms(&self) -> Option<i64> {
        self.aggregator.closed_through_ms()
    }

    /// The windows through this watermark close (it never moves back).
    pub fn advance_to(&mut self, watermark_ms: i64) {
        self.advance(watermark_ms);
    }

    /// Pane width of the windows.
    pub fn pane_ms(&self) -> i64 {
        self.aggregator.pane_ms()
    }

    /// Width of the widest window.
    pub fn max_width_ms(&self) -> i64 {
        self.aggregator.max_width_ms()
    }

    fn advance(&mut self, watermark_ms: i64) {
        // Sessions first: the close latency measures windows.
        if let Some(sessions) = self.sessions.as_mut() {
            let mut closed = std::mem::take(&mut sessions.closed);
            for sessionizer in sessions.all_mut() {
                sessionizer.advance(watermark_ms, &mut closed);
            }
            sessions.closed = closed;
        }
        let before = self.closed.len();
        // Read the clock only when a window boundary is crossed.
        let started = self
            .aggregator
            .crosses_boundary(watermark_ms)
            .then(Instant::now);
        self.aggregator.advance(watermark_ms, &mut self.closed);
        if self.closed.len() > before {
            self.totals.windows += (self.closed.len() - before) as u64;
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
                self.rejects_failed(&error);
            }
        }
    }

    /// The rejects file failed: stop writing it, and say so in the totals.
    fn rejects_failed(&mut self, error: &std::io::Error) {
        tracing::error!(%error, "cannot write to the rejects file; no longer keeping rejected lines");
        self.rejects = None;
        self.totals
            .rejects_write_error
            .get_or_insert_with(|| error.to_string());
    }

    /// The source has delivered data at wall time `now_ms` (once per batch).
    pub fn source_active(&mut self, now_ms: i64) {
        self.watermark.source_active(now_ms);
    }

    /// The guard decides on every held stream (end of input, idle source).
    fn flush_held(&mut self) {
        let mut verdicts = std::mem::take(&mut self.verdicts);
        self.guard.flush(&mut verdicts);
        self.apply_verdicts(&mut verdicts);
        self.verdicts = verdicts;
    }

    /// Periodic tick in live mode: moves the future bound with the wall
    /// clock and applies the idle rule (an idle source also settles the
    /// streams the outlier guard holds).
    pub fn tick(&mut self, now_ms: i64) {
        if self.guard.held() > 0 && self.watermark.is_idle(now_ms) {
            self.flush_held();
        }
        self.parse_settings.bounds =
            Limits::until(now_ms, self.max_future_ms, self.max_field_bytes);
        if let Some(watermark) = self.watermark.on_idle_check(now_ms) {
            self.advance(watermark);
        }
    }

    /// End of input: decide on held streams, emit every remaining window.
    pub fn finish(&mut self) {
        self.flush_held();
        self.advance(i64::MAX);
        if let Some(sessions) = self.sessions.as_mut() {
            let mut closed = std::mem::take(&mut sessions.closed);
            for sessionizer in sessions.all_mut() {
                sessionizer.flush(&mut closed);
            }
            sessions.closed = closed;
        }
        self.flush_rejects();
    }

    /// True when windows or sessions closed since they were last taken.
    #[inline]
    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty() || self.sessions.as_ref().is_some_and(|s| !s.closed.is_empty())
    }

    /// The sessions closed since the last call, into `into`.
    pub fn take_closed_sessions(&mut self, into: &mut Vec<ClosedSession>) {
        if let Some(sessions) = self.sessions.as_mut() {
            let closed = sessions.closed.len() as u64;
            let evicted = sessions.closed.iter().filter(|s| s.evicted).count() as u64;
            into.append(&mut sessions.closed);
            *self.totals.sessions.get_or_insert(0) += closed;
            *self.totals.sessions_evicted.get_or_insert(0) += evicted;
        }
    }

    /// True when sessions are built.
    pub fn builds_sessions(&self) -> bool {
        self.sessions.is_some()
    }

    /// The windows closed since the last call, in order, into `into`; the
    /// forecast window's carry the forecast made for them.
    pub fn take_closed(&mut self, into: &mut Vec<WindowResult>) {
        if let Some(stage) = self.forecast.as_mut() {
            for result in self.closed.iter_mut().filter(|r| r.id == stage.window) {
                let before = stage.forecaster.windows_observed();
                result.forecast = stage.forecaster.observe(result.start_ms, result.streams);
                // A window at or before the latest one (an input catching
                // up with its share) teaches nothing and is not reported.
                if stage.forecaster.windows_observed() > before {
                    stage.observed = Some((result.start_ms, result.streams, result.forecast));
                }
            }
        }
        into.append(&mut self.closed);
    }

    /// The forecast made at the latest tumbling close, once (None when no
    /// window was observed since the last call, or no forecast runs).
    pub fn take_forecast(&mut self) -> Option<ForecastUpdate> {
        let stage = self.forecast.as_mut()?;
        let (start_ms, streams, made_for_it) = stage.observed.take()?;
        Some(ForecastUpdate {
            window: stage.window,
            width_ms: stage.forecaster.window_ms(),
            start_ms,
            streams,
            made_for_it,
            ahead: stage.forecaster.ahead().to_vec(),
            profile_seen: stage.forecaster.profile_seen(),
        })
    }

    /// What the forecaster has learnt, for a checkpoint.
    pub fn forecast_state(&self) -> Option<&ForecastState> {
        self.forecast.as_ref().map(|stage| stage.forecaster.state())
    }

    /// Resume the forecaster from a checkpoint's state (a state learnt at
    /// another window width is dropped: the forecast warms up again).
    pub fn restore_forecast(&mut self, state: ForecastState) {
        if let Some(stage) = self.forecast.as_mut() {
            let config = stage.forecaster.config().clone();
            let width_ms = stage.forecaster.window_ms();
            if let Ok(forecaster) = Forecaster::restore(config, width_ms, state) {
                if forecaster.windows_observed() > 0 {
                    stage.forecaster = forecaster;
                }
            }
        }
    }

    /// When the windows returned since the last call began to close, to
    /// measure close-to-publish latency.
    pub fn take_close_started(&mut self) -> Option<Instant> {
        self.close_started.take()
    }

    /// The partial windows of each input closed since the last call (with
    /// partials kept: `--partials-topic`).
    pub fn take_partials(&mut self) -> Vec<Partial> {
        self.aggregator.take_partials()
    }

    /// True when partial windows are kept.
    pub fn keeps_partials(&self) -> bool {
        self.aggregator.keeps_partials()
    }

    /// Per input its source reported on: how far windows hold it (never
    /// past the input's own watermark) and whether it is idle (see
    /// [`InputProgress`]).
    pub fn inputs_progress(&self) -> Vec<InputProgress> {
        let emitted: HashMap<SourceId, i64> =
            self.aggregator.sources_progress().into_iter().collect();
        let mut progress: Vec<InputProgress> = self
            .input_progress
            .iter()
            .filter_map(|(&input, mark)| {
                let through_ms = match (emitted.get(&input), mark.watermark_ms) {
                    (Some(&emitted), Some(watermark)) => emitted.min(watermark),
                    _ if mark.idle => i64::MIN,
                    _ => return None,
                };
                // Idle only once every window holding the input's plays is
                // out: a sliding window reaches `max_width` past its last play.
                let idle = mark.idle && !self.aggregator.has_open_windows(input);
                Some(InputProgress {
                    input,
                    through_ms,
                    idle,
                })
            })
            .collect();
        progress.sort_unstable_by_key(|p| p.input);
        progress
    }

    /// Where `input` is, as its source sees it: its watermark, and whether
    /// it is idle (read to its end and quiet for the idle timeout).
    pub fn note_input_progress(&mut self, input: SourceId, watermark_ms: Option<i64>, idle: bool) {
        self.input_progress
            .insert(input, InputMark { watermark_ms, idle });
    }

    /// The number of inputs of the stream (a topic's partitions), when known.
    pub fn input_count(&self) -> usize {
        self.input_count
    }

    /// Windows closed elsewhere (the merger's global windows), published
    /// to the sinks as if closed here.
    pub fn push_closed(&mut self, results: &mut Vec<WindowResult>) {
        self.totals.windows += results.len() as u64;
        if !results.is_empty() {
            self.close_started.get_or_insert_with(Instant::now);
        }
        self.closed.append(results);
    }

    /// The trend detector's answer for the latest tumbling window, once.
    pub fn take_trending(&mut self) -> Option<Trending> {
        self.aggregator.take_trending()
    }

    /// Publish the counters counted since the last call (before a
    /// checkpoint reads them) and flush the rejects file.
    pub fn flush_counters(&mut self) {
        self.ingest.flush();
        self.flush_rejects();
    }

    /// Flush the rejects file (a failure is kept in the totals).
    pub fn flush_rejects(&mut self) {
        if let Some(writer) = self.rejects.as_mut() {
            if let Err(error) = writer.flush() {
                self.rejects_failed(&error);
            }
        }
    }

    /// Publish counters and freshness gauges; `event_progress` is the
    /// source's own (largest event time, watermark) when it keeps one per
    /// input, else the single-input watermark's.
    pub fn sync_metrics(
        &mut self,
        metrics: &Metrics,
        now_ms: i64,
        event_progress: Option<(Option<i64>, Option<i64>)>,
    ) {
        self.ingest.flush();
        let (max_event_ms, watermark_ms) =
            event_progress.unwrap_or((self.watermark.max_event_ms(), self.watermark.current_ms()));
        metrics.set_progress(Progress {
            now_ms,
            max_event_ms,
            watermark_ms,
            live_panes: self.aggregator.live_panes(),
            interned_songs: self.aggregator.interned_songs(),
            song_state_bytes: self.aggregator.song_state_bytes(),
            song_reductions: self.aggregator.song_reductions(),
            sessions: self.sessions.as_ref().map(|sessions| SessionProgress {
                open: sessions.all().map(Sessionizer::open_sessions).sum(),
                state_bytes: sessions.all().map(Sessionizer::state_bytes).sum(),
            }),
        });
        self.flush_rejects();
    }

    /// Totals so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Metric label of a window (`"1m"`, `"10m"`).
    pub fn window_label(&self, id: WindowId) -> String {
        self.aggregator.windows()[id.index()].label()
    }

    /// The window the trend detector scores (the first tumbling window).
    pub fn trending_window(&self) -> Option<WindowId> {
        self.aggregator
            .windows()
            .iter()
            .position(|spec| spec.kind() == downbeat_operators::WindowKind::Tumbling)
            .map(|index| WindowId(index as u16))
    }
}

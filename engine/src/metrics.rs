//! The metrics registry: every series downbeat exports, in one place.
//!
//! Names follow Prometheus conventions: `downbeat_` prefix, base units,
//! `_total` on counters. Label values come from fixed sets (reasons, levels,
//! devices, states, genders, window labels, ranks), except the artist and
//! song text of `downbeat_top_song_info` and the artist of
//! `downbeat_top_artist_info`, which hold at most K series per window each
//! and are replaced whenever a window closes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use downbeat_operators::{
    Ahead, ArtistCount, Band, ClosedSession, Device, Gender, Level, SongCount, Trending, UsState,
    WindowResult,
};
use prometheus::core::Collector;
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::RejectReason;
use crate::hdr_summary::HdrSummary;

/// Why an event was left out of sessions (the `reason` label of
/// `downbeat_session_events_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionSkip {
    /// Behind the watermark (a non-stream event, or a play still counted in
    /// its open window): sessions it could have joined may be closed.
    Late,
    /// Its user id or session id is longer than `input.max_field_bytes`.
    FieldTooLong,
}

impl SessionSkip {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [SessionSkip; 2] = [SessionSkip::Late, SessionSkip::FieldTooLong];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            SessionSkip::Late => "late",
            SessionSkip::FieldTooLong => "field_too_long",
        }
    }
}

/// Bucket bounds of the listening-duration histogram, in seconds.
const DURATION_BUCKETS_SECS: [f64; 16] = [
    30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 360.0, 420.0, 600.0, 900.0,
    1800.0, 3600.0,
];

/// Bucket bounds of the session duration histogram, in seconds (1 minute
/// to 8 hours).
const SESSION_DURATION_BUCKETS_SECS: [f64; 14] = [
    60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0,
    14400.0, 28800.0,
];

/// Bucket bounds of the plays-per-session histogram.
const SESSION_PLAYS_BUCKETS: [f64; 12] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 200.0, 500.0,
];

/// All exported series. Shared by the pipeline thread and the HTTP server.
pub struct Metrics {
    registry: Registry,
    events: IntCounter,
    streams: IntCounter,
    rejected: IntCounterVec,
    late: IntCounter,
    by_level: IntCounterVec,
    by_device: IntCounterVec,
    by_state: IntCounterVec,
    by_gender: IntCounterVec,
    listening: Histogram,
    window_streams: IntGaugeVec,
    active_users: IntGaugeVec,
    windows_emitted: IntCounterVec,
    top_song_streams: IntGaugeVec,
    top_song_info: IntGaugeVec,
    top_artist_streams: IntGaugeVec,
    top_artist_info: IntGaugeVec,
    trending_ratio: GaugeVec,
    trending_streams: IntGaugeVec,
    trending_baseline: GaugeVec,
    trending_artist_ratio: GaugeVec,
    trending_artist_streams: IntGaugeVec,
    trending_artist_baseline: GaugeVec,
    predicted_streams: GaugeVec,
    predicted_info: IntGaugeVec,
    streams_baseline: GaugeVec,
    trending_tracked: IntGauge,
    trending_evicted: IntCounter,
    streams_baseline_ratio: GaugeVec,
    forecast_streams: GaugeVec,
    forecast_latest: GaugeVec,
    forecast_profile_seen: GaugeVec,
    last_event_time: Gauge,
    watermark_time: Gauge,
    watermark_lag: Gauge,
    close_latency: HdrSummary,
    live_panes: IntGauge,
    interned_songs: IntGauge,
    song_state_bytes: IntGauge,
    song_reductions: IntCounter,
    top_songs_max_undercount: IntGaugeVec,
    sessions_closed: IntCounter,
    sessions_evicted: IntCounter,
    session_duration: Histogram,
    session_plays: Histogram,
    open_sessions: IntGauge,
    session_state_bytes: IntGauge,
    session_skipped: IntCounterVec,
    /// Latest top songs and artists per window label, to rebuild the rank
    /// series.
    leaderboards: Mutex<BTreeMap<String, Leaderboards>>,
}

/// A window's latest top songs and top artists.
type Leaderboards = (Vec<SongCount>, Vec<ArtistCount>);

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique constants");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every series, with the bounded label sets
    /// pre-populated so dashboards see zeros rather than gaps.
    pub fn new() -> Self {
        let r = Registry::new();
        let metrics = Self {
            events: counter(&r, "downbeat_events_total", "Input records read from the source, valid or not."),
            streams: counter(&r, "downbeat_streams_total", "Streams (song plays) counted into windows."),
            rejected: counter_vec(&r, "downbeat_events_rejected_total", "Input records refused, by reason.", &["reason"]),
            late: counter(&r, "downbeat_late_events_total", "Streams that arrived after their windows were emitted."),
            by_level: counter_vec(&r, "downbeat_streams_by_level_total", "Streams by subscription level.", &["level"]),
            by_device: counter_vec(&r, "downbeat_streams_by_device_total", "Streams by device family.", &["device"]),
            by_state: counter_vec(&r, "downbeat_streams_by_state_total", "Streams by US state (2-letter code or unknown).", &["state"]),
            by_gender: counter_vec(&r, "downbeat_streams_by_gender_total", "Streams by gender.", &["gender"]),
            listening: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("downbeat_listening_duration_seconds", "Listening time of streams that carry one.")
                        .buckets(DURATION_BUCKETS_SECS.to_vec()),
                )
                .expect("valid metric"),
            ),
            window_streams: int_gauge_vec(&r, "downbeat_window_streams", "Streams in the latest closed window.", &["window"]),
            active_users: int_gauge_vec(&r, "downbeat_active_users", "Distinct users in the latest closed window.", &["window"]),
            windows_emitted: counter_vec(&r, "downbeat_windows_emitted_total", "Windows closed and emitted.", &["window"]),
            top_song_streams: int_gauge_vec(&r, "downbeat_top_song_streams", "Streams of the song at each leaderboard rank of the latest closed window.", &["window", "rank"]),
            top_song_info: int_gauge_vec(&r, "downbeat_top_song_info", "Artist and song at each leaderboard rank of the latest closed window (value 1).", &["window", "rank", "artist", "song"]),
            top_artist_streams: int_gauge_vec(&r, "downbeat_top_artist_streams", "Streams of the artist at each rank of the artists' leaderboard of the latest closed window.", &["window", "rank"]),
            top_artist_info: int_gauge_vec(&r, "downbeat_top_artist_info", "Artist at each rank of the artists' leaderboard of the latest closed window (value 1).", &["window", "rank", "artist"]),
            trending_ratio: gauge_vec(&r, "downbeat_trending_song_ratio", "Songs rising abnormally in the latest closed tumbling window, by rank: streams over the song's own exponentially weighted baseline.", &["rank", "artist", "song"]),
            trending_streams: int_gauge_vec(&r, "downbeat_trending_song_streams", "Streams in the latest closed tumbling window of each trending song.", &["rank", "artist", "song"]),
            trending_baseline: gauge_vec(&r, "downbeat_trending_song_baseline_streams", "Expected streams per tumbling window of each trending song, from its past windows.", &["rank", "artist", "song"]),
            trending_artist_ratio: gauge_vec(&r, "downbeat_trending_artist_ratio", "Artists rising abnormally in the latest closed tumbling window, by rank: streams of all their songs over the artist's own exponentially weighted baseline.", &["rank", "artist"]),
            trending_artist_streams: int_gauge_vec(&r, "downbeat_trending_artist_streams", "Streams in the latest closed tumbling window of each trending artist (all their songs).", &["rank", "artist"]),
            predicted_streams: gauge_vec(&r, "downbeat_predicted_top_song_streams", "Expected streams over the next 10 minutes of the song at each rank of the predicted chart (trending songs at their latest pace, others at their baseline).", &["rank"]),
            predicted_info: int_gauge_vec(&r, "downbeat_predicted_top_song_info", "Artist and song at each rank of the predicted chart of the next 10 minutes (value 1).", &["rank", "artist", "song"]),
            trending_artist_baseline: gauge_vec(&r, "downbeat_trending_artist_baseline_streams", "Expected streams per tumbling window of each trending artist, from their past windows.", &["rank", "artist"]),
            streams_baseline: gauge_vec(&r, "downbeat_streams_baseline", "Expected streams per window from past windows (exponentially weighted), for the latest closed tumbling window.", &["window"]),
            streams_baseline_ratio: gauge_vec(&r, "downbeat_streams_baseline_ratio", "Streams in the latest closed tumbling window over their exponentially weighted baseline.", &["window"]),
            forecast_streams: gauge_vec(&r, "downbeat_forecast_streams", "Forecast streams of the tumbling window ending `horizon` after the latest closed one (bound mean, lower, upper: the 95% prediction band); absent while warming up.", &["window", "horizon", "bound"]),
            forecast_latest: gauge_vec(&r, "downbeat_forecast_latest_streams", "The latest closed tumbling window: its streams (series actual) and the forecast made for it one window ahead (series mean, lower, upper); the forecast series are absent while warming up.", &["window", "series"]),
            forecast_profile_seen: gauge_vec(&r, "downbeat_forecast_profile_seen_ratio", "Share of the day's time slots the forecast's daily profile has seen: below 1 some forecasts are the recent average (the first day, or after a restart without state).", &["window"]),
            trending_tracked: register(&r, IntGauge::new("downbeat_trending_tracked_songs", "Songs the trend detector keeps a baseline for (at most trending.max_tracked_songs).").expect("valid metric")),
            trending_evicted: counter(&r, "downbeat_trending_evicted_songs_total", "Songs the trend detector forgot, coldest first, to stay within trending.max_tracked_songs."),
            last_event_time: gauge(&r, "downbeat_last_event_timestamp_seconds", "Largest event time seen, epoch seconds."),
            watermark_time: gauge(&r, "downbeat_watermark_timestamp_seconds", "Current event-time watermark, epoch seconds."),
            watermark_lag: gauge(&r, "downbeat_watermark_lag_seconds", "Wall clock minus the watermark."),
            close_latency: register(&r, HdrSummary::new("downbeat_window_close_latency_seconds", "Time from the watermark closing a window to its results being published (HdrHistogram quantiles since start).", 1e-9, 60_000_000_000)),
            live_panes: register(&r, IntGauge::new("downbeat_live_panes", "Window panes held in memory.").expect("valid metric")),
            interned_songs: register(&r, IntGauge::new("downbeat_interned_songs", "Song names held by live panes.").expect("valid metric")),
            song_state_bytes: register(&r, IntGauge::new("downbeat_song_state_bytes", "Bytes charged for song names and counts in the panes held (each pane within memory.song_state_mib over the panes held).").expect("valid metric")),
            song_reductions: counter(&r, "downbeat_song_count_reductions_total", "Times a pane's song counts passed its share of the memory budget and were reduced to a heavy-hitters summary."),
            top_songs_max_undercount: int_gauge_vec(&r, "downbeat_window_top_songs_max_undercount", "0 while the latest closed window's song counts are exact; beyond the memory budget, how far below the truth any song count may be.", &["window"]),
            sessions_closed: counter(&r, "downbeat_sessions_closed_total", "Listening sessions closed (the watermark passed their last event plus sessions.gap_ms, or the input ended)."),
            sessions_evicted: counter(&r, "downbeat_sessions_evicted_total", "Sessions closed before their gap passed, to keep open sessions within memory.session_state_mib."),
            session_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("downbeat_session_duration_seconds", "Length of closed sessions: last event time minus first.")
                        .buckets(SESSION_DURATION_BUCKETS_SECS.to_vec()),
                )
                .expect("valid metric"),
            ),
            session_plays: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("downbeat_session_plays", "Streams per closed session.")
                        .buckets(SESSION_PLAYS_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            open_sessions: register(&r, IntGauge::new("downbeat_open_sessions", "Sessions open (not yet closed by the watermark).").expect("valid metric")),
            session_state_bytes: register(&r, IntGauge::new("downbeat_session_state_bytes", "Bytes charged for open sessions (budget memory.session_state_mib).").expect("valid metric")),
            session_skipped: counter_vec(&r, "downbeat_session_events_skipped_total", "Valid events left out of sessions, by reason (late: behind the watermark, so sessions it could join may be closed; field_too_long: user or session id over input.max_field_bytes).", &["reason"]),
            leaderboards: Mutex::new(BTreeMap::new()),
            registry: r,
        };
        for reason in RejectReason::ALL {
            metrics.rejected.with_label_values(&[reason.label()]);
        }
        for reason in SessionSkip::ALL {
            metrics.session_skipped.with_label_values(&[reason.label()]);
        }
        metrics
    }

    /// The registry, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory cannot fail");
        buffer
    }

    /// Per-thread counters for the ingest path; see [`IngestMetrics`].
    pub fn ingest(&self) -> IngestMetrics {
        let locals = |vec: &IntCounterVec,
                      labels: &mut dyn Iterator<Item = &'static str>|
         -> Vec<LocalIntCounter> {
            labels
                .map(|label| vec.with_label_values(&[label]).local())
                .collect()
        };
        IngestMetrics {
            events: self.events.local(),
            streams: self.streams.local(),
            late: self.late.local(),
            rejected: locals(
                &self.rejected,
                &mut RejectReason::ALL.iter().map(|r| r.label()),
            ),
            level: locals(&self.by_level, &mut Level::ALL.iter().map(|l| l.label())),
            device: locals(&self.by_device, &mut Device::ALL.iter().map(|d| d.label())),
            state: locals(
                &self.by_state,
                &mut (0..UsState::COUNT).map(|i| UsState::from_index(i).label()),
            ),
            gender: locals(&self.by_gender, &mut Gender::ALL.iter().map(|g| g.label())),
            listening: self.listening.local(),
            session_skipped: locals(
                &self.session_skipped,
                &mut SessionSkip::ALL.iter().map(|r| r.label()),
            ),
        }
    }

    /// Counters that a checkpoint keeps, each keyed by its own series name.
    /// The listening histogram is left out: the client library cannot
    /// restore its buckets.
    fn checkpointed_counters(&self) -> [CounterRef<'_>; 12] {
        [
            CounterRef::One(&self.events),
            CounterRef::One(&self.streams),
            CounterRef::One(&self.late),
            CounterRef::Vec(&self.rejected),
            CounterRef::Vec(&self.by_level),
            CounterRef::Vec(&self.by_device),
            CounterRef::Vec(&self.by_state),
            CounterRef::Vec(&self.by_gender),
            CounterRef::Vec(&self.windows_emitted),
            CounterRef::One(&self.sessions_closed),
            CounterRef::One(&self.sessions_evicted),
            CounterRef::Vec(&self.session_skipped),
        ]
    }

    /// Counter values keyed `name` or `name{value}` (one label each), for a
    /// checkpoint; flush [`IngestMetrics`] first.
    pub fn counter_snapshot(&self) -> BTreeMap<String, u64> {
        let mut snapshot = BTreeMap::new();
        for counter in self.checkpointed_counters() {
            let name = counter.name();
            match counter {
                CounterRef::One(counter) => {
                    snapshot.insert(name, counter.get());
                }
                CounterRef::Vec(vec) => {
                    for family in vec.collect() {
                        for metric in family.get_metric() {
                            let label = metric
                                .get_label()
                                .first()
                                .map(|pair| pair.value().to_owned())
                                .unwrap_or_default();
                            let value = metric.get_counter().get_value() as u64;
                            snapshot.insert(format!("{name}{{{label}}}"), value);
                        }
                    }
                }
            }
        }
        snapshot
    }

    /// Add a checkpoint's counter values (a restarted process resumes its
    /// counters instead of resetting them). Unknown keys are ignored.
    pub fn restore_counters(&self, snapshot: &BTreeMap<String, u64>) {
        for counter in self.checkpointed_counters() {
            let name = counter.name();
            match counter {
                CounterRef::One(counter) => {
                    if let Some(&value) = snapshot.get(&name) {
                        counter.inc_by(value);
                    }
                }
                CounterRef::Vec(vec) => {
                    let prefix = format!("{name}{{");
                    for (key, &value) in snapshot.range(prefix.clone()..) {
                        let Some(label) = key
                            .strip_prefix(&prefix)
                            .and_then(|rest| rest.strip_suffix('}'))
                        else {
                            break;
                        };
                        vec.with_label_values(&[label]).inc_by(value);
                    }
                }
            }
        }
    }

    /// The totals and freshness `/api/v1/stats` serves.
    pub fn stats(&self) -> Stats {
        let rejected_by_reason = RejectReason::ALL
            .iter()
            .map(|reason| {
                let count = self.rejected.with_label_values(&[reason.label()]).get();
                (reason.label(), count)
            })
            .collect();
        let mut windows_emitted_total = BTreeMap::new();
        for family in self.windows_emitted.collect() {
            for metric in family.get_metric() {
                let label = metric
                    .get_label()
                    .first()
                    .map(|pair| pair.value().to_owned());
                let count = metric.get_counter().get_value() as u64;
                windows_emitted_total.insert(label.unwrap_or_default(), count);
            }
        }
        Stats {
            events_total: self.events.get(),
            streams_total: self.streams.get(),
            late_total: self.late.get(),
            rejected_by_reason,
            windows_emitted_total,
            last_event_timestamp_seconds: self.last_event_time.get(),
            watermark_timestamp_seconds: self.watermark_time.get(),
            watermark_lag_seconds: self.watermark_lag.get(),
        }
    }

    /// A window closed: update its gauges and replace its leaderboard series.
    pub fn on_window(&self, window_label: &str, result: &WindowResult) {
        self.window_streams
            .with_label_values(&[window_label])
            .set(result.streams as i64);
        self.active_users
            .with_label_values(&[window_label])
            .set(result.active_users as i64);
        self.windows_emitted
            .with_label_values(&[window_label])
            .inc();
        self.top_songs_max_undercount
            .with_label_values(&[window_label])
            .set(i64::try_from(result.top_songs_max_undercount).unwrap_or(i64::MAX));
        let mut boards = self.leaderboards.lock().unwrap_or_else(|e| e.into_inner());
        boards.insert(
            window_label.to_owned(),
            (result.top_songs.clone(), result.top_artists.clone()),
        );
        // Reset and re-add so ranks and names of the previous window vanish.
        self.top_song_streams.reset();
        self.top_song_info.reset();
        self.top_artist_streams.reset();
        self.top_artist_info.reset();
        for (window, (songs, artists)) in boards.iter() {
            for (index, entry) in songs.iter().enumerate() {
                let rank = (index + 1).to_string();
                self.top_song_streams
                    .with_label_values(&[window, &rank])
                    .set(entry.streams as i64);
                self.top_song_info
                    .with_label_values(&[window, &rank, &entry.artist, &entry.song])
                    .set(1);
            }
            for (index, entry) in artists.iter().enumerate() {
                let rank = (index + 1).to_string();
                self.top_artist_streams
                    .with_label_values(&[window, &rank])
                    .set(entry.streams as i64);
                self.top_artist_info
                    .with_label_values(&[window, &rank, &entry.artist])
                    .set(1);
            }
        }
    }

    /// The trend detector scored a window: replace the trending series
    /// (at most K, rank-labelled) and set the total's baseline gauges.
    pub fn on_trending(&self, window_label: &str, trending: &Trending) {
        self.trending_ratio.reset();
        self.trending_streams.reset();
        self.trending_baseline.reset();
        for song in &trending.songs {
            let rank = song.rank.to_string();
            let labels = [rank.as_str(), &song.artist, &song.song];
            self.trending_ratio
                .with_label_values(&labels)
                .set(song.ratio);
            self.trending_streams
                .with_label_values(&labels)
                .set(song.streams as i64);
            self.trending_baseline
                .with_label_values(&labels)
                .set(song.baseline_streams);
        }
        self.trending_artist_ratio.reset();
        self.trending_artist_streams.reset();
        self.trending_artist_baseline.reset();
        for artist in &trending.artists {
            let rank = artist.rank.to_string();
            let labels = [rank.as_str(), &artist.artist];
            self.trending_artist_ratio
                .with_label_values(&labels)
                .set(artist.ratio);
            self.trending_artist_streams
                .with_label_values(&labels)
                .set(artist.streams as i64);
            self.trending_artist_baseline
                .with_label_values(&labels)
                .set(artist.baseline_streams);
        }
        self.predicted_streams.reset();
        self.predicted_info.reset();
        for song in &trending.predicted_songs {
            let rank = song.rank.to_string();
            self.predicted_streams
                .with_label_values(&[rank.as_str()])
                .set(song.streams);
            self.predicted_info
                .with_label_values(&[rank.as_str(), &song.artist, &song.song])
                .set(1);
        }
        self.trending_tracked.set(trending.tracked_songs as i64);
        let evicted = trending.evicted_songs_total;
        self.trending_evicted
            .inc_by(evicted.saturating_sub(self.trending_evicted.get()));
        if let (Some(baseline), Some(ratio)) = (trending.baseline_streams, trending.total_ratio) {
            self.streams_baseline
                .with_label_values(&[window_label])
                .set(baseline);
            self.streams_baseline_ratio
                .with_label_values(&[window_label])
                .set(ratio);
        }
    }

    /// The forecast after a tumbling close: the latest window's streams and
    /// the band made for it, and the bands ahead (1-window horizon left
    /// out: it is the next close's `latest`).
    pub fn on_forecast(
        &self,
        window_label: &str,
        streams: u64,
        made_for_it: Option<Band>,
        ahead: &[Ahead],
        profile_seen: f64,
    ) {
        self.forecast_latest.reset();
        self.forecast_latest
            .with_label_values(&[window_label, "actual"])
            .set(streams as f64);
        if let Some(band) = made_for_it {
            for (series, value) in [
                ("mean", band.streams),
                ("lower", band.lower),
                ("upper", band.upper),
            ] {
                self.forecast_latest
                    .with_label_values(&[window_label, series])
                    .set(value);
            }
        }
        self.forecast_streams.reset();
        for forecast in ahead.iter().filter(|a| a.horizon_minutes > 0) {
            let horizon = format!("{}m", forecast.horizon_minutes);
            let band = forecast.band;
            for (bound, value) in [
                ("mean", band.streams),
                ("lower", band.lower),
                ("upper", band.upper),
            ] {
                self.forecast_streams
                    .with_label_values(&[window_label, &horizon, bound])
                    .set(value);
            }
        }
        self.forecast_profile_seen
            .with_label_values(&[window_label])
            .set(profile_seen);
    }

    /// `downbeat_open_sessions`.
    pub fn open_sessions(&self) -> i64 {
        self.open_sessions.get()
    }

    /// Sessions closed: count them and observe their length and plays.
    pub fn on_sessions(&self, sessions: &[ClosedSession]) {
        for session in sessions {
            self.sessions_closed.inc();
            if session.evicted {
                self.sessions_evicted.inc();
            }
            let seconds = (session.end_ms - session.start_ms) as f64 / 1000.0;
            self.session_duration.observe(seconds);
            self.session_plays.observe(session.plays as f64);
        }
    }

    /// Record how long publishing closed windows took after the close began.
    pub fn record_close_latency(&self, latency: std::time::Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.close_latency.record_all([nanos]);
    }

    /// Freshness and state gauges, set by the pipeline thread periodically.
    pub fn set_progress(&self, progress: Progress) {
        if let Some(ms) = progress.max_event_ms {
            self.last_event_time.set(ms as f64 / 1000.0);
        }
        if let Some(ms) = progress.watermark_ms {
            self.watermark_time.set(ms as f64 / 1000.0);
            self.watermark_lag
                .set((progress.now_ms - ms) as f64 / 1000.0);
        }
        self.live_panes.set(progress.live_panes as i64);
        self.interned_songs.set(progress.interned_songs as i64);
        self.song_state_bytes
            .set(i64::try_from(progress.song_state_bytes).unwrap_or(i64::MAX));
        self.song_reductions.inc_by(
            progress
                .song_reductions
                .saturating_sub(self.song_reductions.get()),
        );
        if let Some(sessions) = progress.sessions {
            self.open_sessions
                .set(i64::try_from(sessions.open).unwrap_or(i64::MAX));
            self.session_state_bytes
                .set(i64::try_from(sessions.state_bytes).unwrap_or(i64::MAX));
        }
    }
}

/// What `/api/v1/stats` reports, read from the same handles `/metrics`
/// encodes (a key cannot drift from its series: there is no name to misspell).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// `downbeat_events_total`.
    pub events_total: u64,
    /// `downbeat_streams_total`.
    pub streams_total: u64,
    /// `downbeat_late_events_total`.
    pub late_total: u64,
    /// `downbeat_events_rejected_total`, by reason (every reason).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// `downbeat_windows_emitted_total`, by window label.
    pub windows_emitted_total: BTreeMap<String, u64>,
    /// `downbeat_last_event_timestamp_seconds`.
    pub last_event_timestamp_seconds: f64,
    /// `downbeat_watermark_timestamp_seconds`.
    pub watermark_timestamp_seconds: f64,
    /// `downbeat_watermark_lag_seconds`.
    pub watermark_lag_seconds: f64,
}

/// A counter or a one-label counter family.
enum CounterRef<'a> {
    One(&'a IntCounter),
    Vec(&'a IntCounterVec),
}

impl CounterRef<'_> {
    /// The series name, as registered.
    fn name(&self) -> String {
        let descs = match self {
            CounterRef::One(counter) => counter.desc(),
            CounterRef::Vec(vec) => vec.desc(),
        };
        descs[0].fq_name.clone()
    }
}

/// A snapshot of pipeline progress for the freshness gauges.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Wall clock, epoch ms.
    pub now_ms: i64,
    /// Largest event time seen.
    pub max_event_ms: Option<i64>,
    /// Current watermark.
    pub watermark_ms: Option<i64>,
    /// Panes held.
    pub live_panes: usize,
    /// Song names held.
    pub interned_songs: usize,
    /// Bytes charged for song state.
    pub song_state_bytes: usize,
    /// Pane song-count reductions so far.
    pub song_reductions: u64,
    /// Open sessions, when sessions are built.
    pub sessions: Option<SessionProgress>,
}

/// The sessionizers' state, for the gauges.
#[derive(Clone, Copy, Debug)]
pub struct SessionProgress {
    /// Open sessions.
    pub open: usize,
    /// Bytes charged for them.
    pub state_bytes: usize,
}

/// Unsynchronised per-thread counters (the prometheus crate's local
/// metrics): the hot path increments plain integers and [`IngestMetrics::flush`]
/// publishes them, so ingest pays no atomic operation per event.
pub struct IngestMetrics {
    events: LocalIntCounter,
    streams: LocalIntCounter,
    late: LocalIntCounter,
    rejected: Vec<LocalIntCounter>,
    level: Vec<LocalIntCounter>,
    device: Vec<LocalIntCounter>,
    state: Vec<LocalIntCounter>,
    gender: Vec<LocalIntCounter>,
    listening: LocalHistogram,
    session_skipped: Vec<LocalIntCounter>,
}

impl IngestMetrics {
    /// One record read.
    #[inline]
    pub fn event(&mut self) {
        self.events.inc();
    }

    /// One stream counted.
    #[inline]
    pub fn stream(&mut self, dims: downbeat_operators::Dimensions, duration_ms: Option<u32>) {
        self.streams.inc();
        self.level[dims.level as usize].inc();
        self.device[dims.device as usize].inc();
        self.state[dims.state.index()].inc();
        self.gender[dims.gender as usize].inc();
        if let Some(ms) = duration_ms {
            self.listening.observe(f64::from(ms) / 1000.0);
        }
    }

    /// One record refused.
    #[inline]
    pub fn rejected(&mut self, reason: RejectReason) {
        self.rejected[reason as usize].inc();
    }

    /// One late stream.
    #[inline]
    pub fn late(&mut self) {
        self.late.inc();
    }

    /// One valid event left out of sessions.
    #[inline]
    pub fn session_skipped(&mut self, reason: SessionSkip) {
        self.session_skipped[reason as usize].inc();
    }

    /// Publish everything counted since the last flush.
    pub fn flush(&mut self) {
        self.events.flush();
        self.streams.flush();
        self.late.flush();
        self.listening.flush();
        for counter in self
            .rejected
            .iter_mut()
            .chain(&mut self.level)
            .chain(&mut self.device)
            .chain(&mut self.state)
            .chain(&mut self.gender)
            .chain(&mut self.session_skipped)
        {
            counter.flush();
        }
    }
}

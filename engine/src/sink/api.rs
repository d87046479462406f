//! The state behind the JSON API and the live page: the latest window of
//! each kind, an hour of tumbling windows, the trending songs, readiness.
//! The driver writes it through [`ApiSink`]; the HTTP server only reads it.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use downbeat_operators::{ClosedSession, WindowKind};
use serde_json::{json, Value};

use super::{ClosedWindow, Sink, TrendingWindow};
use crate::metrics::Metrics;
use crate::output::now_ms;
use crate::pipeline::ForecastUpdate;

/// Tumbling windows kept for `/api/v1/windows/history` (an hour of 1-minute windows).
pub const HISTORY_LEN: usize = 60;

/// `/api/v1/trending` before anything was computed.
pub const TRENDING_EMPTY: &str = r#"{"window_end_ms":null,"total_ratio":null,"songs":[]}"#;

/// `/api/v1/forecast` before the first tumbling close.
pub const FORECAST_EMPTY: &str =
    r#"{"window":null,"latest":null,"ahead":[],"profile_seen":0.0,"predicted_top_songs":[]}"#;

/// State the server reads; written by the driver through [`ApiSink`].
pub struct ServerState {
    /// Every exported series.
    pub metrics: Arc<Metrics>,
    /// Latest closed window per kind, as JSON.
    pub latest: DashMap<WindowKind, String>,
    /// The last [`HISTORY_LEN`] tumbling windows, as JSON, oldest first.
    pub history: Mutex<VecDeque<String>>,
    /// The trending-songs document served as is by `/api/v1/trending`:
    /// `{"window_end_ms", "total_ratio", "songs": [{"rank", "artist", "song",
    /// "streams", "baseline_streams", "ratio"}]}`; starts as [`TRENDING_EMPTY`].
    pub trending: RwLock<String>,
    /// The forecast document of `/api/v1/forecast` (see [`forecast_json`])
    /// but its `predicted_top_songs`; starts as [`FORECAST_EMPTY`].
    pub forecast: RwLock<Value>,
    /// The predicted chart of the next 10 minutes, from the trend detector.
    pub predicted: RwLock<Value>,
    /// True once the source is delivering and the pipeline runs.
    pub ready: AtomicBool,
    /// Sessions closed lately, for `/api/v1/sessions`.
    pub sessions: Mutex<RecentSessions>,
}

/// Event time `/api/v1/sessions` looks back over: 10 minutes.
pub const SESSIONS_SPAN_MS: i64 = 600_000;
/// Closed sessions kept for it at most (the oldest go first).
const RECENT_SESSIONS_CAP: usize = 100_000;

/// (last event time, length) of the sessions closed whose last event is
/// within [`SESSIONS_SPAN_MS`] of the latest one's, oldest first.
#[derive(Debug, Default)]
pub struct RecentSessions {
    closed: VecDeque<(i64, i64)>,
    latest_end_ms: Option<i64>,
}

impl RecentSessions {
    /// A session closed.
    pub fn push(&mut self, end_ms: i64, duration_ms: i64) {
        let latest = self.latest_end_ms.map_or(end_ms, |l| l.max(end_ms));
        self.latest_end_ms = Some(latest);
        self.closed.push_back((end_ms, duration_ms));
        while self.closed.len() > RECENT_SESSIONS_CAP
            || self
                .closed
                .front()
                .is_some_and(|&(end, _)| end <= latest - SESSIONS_SPAN_MS)
        {
            self.closed.pop_front();
        }
    }

    /// `{"span_minutes", "closed", "sessions_per_minute",
    /// "median_duration_seconds", "latest_end_ms"}` (nulls before any).
    pub fn json(&self) -> Value {
        let latest = self.latest_end_ms.unwrap_or(i64::MIN);
        let mut lengths: Vec<i64> = self
            .closed
            .iter()
            .filter(|&&(end, _)| end > latest.saturating_sub(SESSIONS_SPAN_MS))
            .map(|&(_, length)| length)
            .collect();
        lengths.sort_unstable();
        let median = match lengths.len() {
            0 => Value::Null,
            n if n % 2 == 1 => json!(lengths[n / 2] as f64 / 1000.0),
            n => json!((lengths[n / 2 - 1] + lengths[n / 2]) as f64 / 2000.0),
        };
        let minutes = SESSIONS_SPAN_MS / 60_000;
        json!({
            "span_minutes": minutes,
            "closed": lengths.len(),
            "sessions_per_minute": if self.latest_end_ms.is_some() {
                json!(lengths.len() as f64 / minutes as f64)
            } else {
                Value::Null
            },
            "median_duration_seconds": median,
            "latest_end_ms": self.latest_end_ms,
        })
    }
}

impl ServerState {
    /// Fresh state, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            latest: DashMap::new(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
            trending: RwLock::new(TRENDING_EMPTY.to_owned()),
            forecast: RwLock::new(serde_json::from_str(FORECAST_EMPTY).expect("valid JSON")),
            predicted: RwLock::new(json!([])),
            ready: AtomicBool::new(false),
            sessions: Mutex::new(RecentSessions::default()),
        }
    }

    /// `/api/v1/sessions`: the sessions closed over the last 10 minutes of
    /// event time, and the sessions open now.
    pub fn sessions_json(&self) -> String {
        let mut doc = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .json();
        doc["open"] = json!(self.metrics.open_sessions());
        doc.to_string()
    }

    /// A closed window of `kind`, serialized: becomes the latest of its
    /// kind, and tumbling windows join the history.
    pub fn publish_window(&self, kind: WindowKind, json: String) {
        if kind == WindowKind::Tumbling {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == HISTORY_LEN {
                history.pop_front();
            }
            history.push_back(json.clone());
        }
        self.latest.insert(kind, json);
    }

    /// The last `limit` tumbling windows as a JSON array, oldest first.
    pub fn history_json(&self, limit: usize) -> String {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let recent = history.iter().skip(history.len().saturating_sub(limit));
        let mut out = String::with_capacity(2 + recent.clone().map(|w| w.len() + 1).sum::<usize>());
        out.push('[');
        for (i, window) in recent.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(window);
        }
        out.push(']');
        out
    }

    /// Totals and freshness, read from the same metric handles `/metrics`
    /// encodes, plus the wall clock (`time_ms`) so a client can turn two
    /// readings into rates.
    pub fn stats_json(&self) -> String {
        let stats = self.metrics.stats();
        // The freshness gauges read 0 until the first event: report null.
        let seconds = |value: f64| {
            if value != 0.0 {
                json!(value)
            } else {
                Value::Null
            }
        };
        let has_watermark = stats.watermark_timestamp_seconds != 0.0;
        json!({
            "time_ms": now_ms(),
            "ready": self.ready.load(Ordering::Relaxed),
            "events_total": stats.events_total,
            "streams_total": stats.streams_total,
            "rejected_total": stats.rejected_by_reason.values().sum::<u64>(),
            "late_total": stats.late_total,
            "rejected_by_reason": stats.rejected_by_reason,
            "windows_emitted_total": stats.windows_emitted_total,
            "last_event_timestamp_seconds": seconds(stats.last_event_timestamp_seconds),
            "watermark_timestamp_seconds": seconds(stats.watermark_timestamp_seconds),
            "watermark_lag_seconds": if has_watermark {
                json!(stats.watermark_lag_seconds)
            } else {
                Value::Null
            },
        })
        .to_string()
    }

    /// `/api/v1/forecast`: the latest forecast with the predicted chart.
    pub fn forecast_json(&self) -> String {
        let mut doc = self
            .forecast
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        doc["predicted_top_songs"] = self
            .predicted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        doc.to_string()
    }

    /// `{"tumbling": <window or null>, "sliding": <window or null>}`.
    pub fn latest_json(&self) -> String {
        let get = |kind: WindowKind| {
            self.latest
                .get(&kind)
                .map(|v| v.clone())
                .unwrap_or_else(|| "null".to_owned())
        };
        format!(
            "{{\"tumbling\":{},\"sliding\":{}}}",
            get(WindowKind::Tumbling),
            get(WindowKind::Sliding)
        )
    }
}

/// Closed windows and trending songs into the [`ServerState`].
pub struct ApiSink(pub Arc<ServerState>);

impl Sink for ApiSink {
    fn window(&mut self, window: &ClosedWindow<'_>) -> io::Result<()> {
        self.0
            .publish_window(window.result.window, window.json.to_owned());
        Ok(())
    }

    fn trending(&mut self, trending: &TrendingWindow<'_>) {
        *self.0.trending.write().unwrap_or_else(|e| e.into_inner()) = trending.json.to_owned();
        *self.0.predicted.write().unwrap_or_else(|e| e.into_inner()) =
            json!(trending.trending.predicted_songs);
    }

    fn forecast(&mut self, update: &ForecastUpdate, label: &str) {
        *self.0.forecast.write().unwrap_or_else(|e| e.into_inner()) = forecast_json(update, label);
    }

    fn sessions(&mut self, sessions: &[ClosedSession]) -> io::Result<()> {
        let mut recent = self.0.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for session in sessions {
            recent.push(session.end_ms, session.end_ms - session.start_ms);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "api"
    }
}

/// `/api/v1/forecast`: `{"window", "latest": {"start_ms", "end_ms",
/// "streams", "forecast": {"streams", "lower", "upper"} | null}, "ahead":
/// [{"horizon_minutes", "start_ms", "end_ms", "streams", "lower", "upper",
/// "method"}], "profile_seen"}`; [`ServerState::forecast_json`] adds
/// `"predicted_top_songs": [{"rank", "artist", "song", "streams"}]`.
pub fn forecast_json(update: &ForecastUpdate, label: &str) -> Value {
    let width_ms = update.width_ms;
    let ahead: Vec<Value> = update
        .ahead
        .iter()
        .filter(|a| a.horizon_minutes > 0)
        .map(|a| {
            json!({
                "horizon_minutes": a.horizon_minutes,
                "start_ms": a.start_ms,
                "end_ms": a.start_ms + width_ms,
                "streams": a.band.streams,
                "lower": a.band.lower,
                "upper": a.band.upper,
                "method": a.method.name(),
            })
        })
        .collect();
    json!({
        "window": label,
        "latest": {
            "start_ms": update.start_ms,
            "end_ms": update.start_ms + width_ms,
            "streams": update.streams,
            "forecast": update.made_for_it,
        },
        "ahead": ahead,
        "profile_seen": update.profile_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ServerState {
        ServerState::new(Arc::new(Metrics::new()))
    }

    #[test]
    fn history_keeps_the_last_hour_of_tumbling_windows_oldest_first() {
        let state = state();
        assert_eq!(state.history_json(HISTORY_LEN), "[]");
        for i in 0..HISTORY_LEN + 2 {
            state.publish_window(WindowKind::Tumbling, format!("{{\"n\":{i}}}"));
            state.publish_window(WindowKind::Sliding, format!("{{\"s\":{i}}}"));
        }
        let history: Vec<Value> = serde_json::from_str(&state.history_json(HISTORY_LEN)).unwrap();
        let last_two: Vec<Value> = serde_json::from_str(&state.history_json(2)).unwrap();
        assert_eq!(last_two, history[HISTORY_LEN - 2..]);
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0], json!({"n": 2}));
        assert_eq!(history[HISTORY_LEN - 1], json!({"n": HISTORY_LEN + 1}));
        assert_eq!(
            state.latest_json(),
            format!(
                "{{\"tumbling\":{{\"n\":{0}}},\"sliding\":{{\"s\":{0}}}}}",
                HISTORY_LEN + 1
            )
        );
    }

    #[test]
    fn recent_sessions_give_the_median_and_rate_over_ten_minutes() {
        let mut recent = RecentSessions::default();
        assert_eq!(recent.json()["median_duration_seconds"], Value::Null);
        // An old session, then four within 10 minutes of the latest.
        recent.push(0, 999_000);
        for (end, length) in [
            (700_000, 60_000),
            (800_000, 120_000),
            (900_000, 600_000),
            (1_000_000, 30_000),
        ] {
            recent.push(end, length);
        }
        let doc = recent.json();
        assert_eq!(doc["closed"], 4);
        assert_eq!(doc["sessions_per_minute"], 0.4);
        assert_eq!(doc["median_duration_seconds"], 90.0);
        assert_eq!(doc["latest_end_ms"], 1_000_000);
    }

    #[test]
    fn stats_start_empty_and_name_every_reason() {
        let state = state();
        let stats: Value = serde_json::from_str(&state.stats_json()).unwrap();
        assert_eq!(stats["events_total"], 0);
        assert_eq!(stats["rejected_total"], 0);
        for reason in crate::decode::RejectReason::ALL {
            assert_eq!(stats["rejected_by_reason"][reason.label()], 0, "{reason:?}");
        }
        assert_eq!(stats["watermark_timestamp_seconds"], Value::Null);
        assert!(stats["time_ms"].as_i64().unwrap() > 0);
        assert_eq!(*state.trending.read().unwrap(), TRENDING_EMPTY);
    }

    /// Every counter of `/api/v1/stats` moves with the series of the same
    /// meaning in `/metrics`: a stats key wired to the wrong (or no)
    /// series would stay at 0 here.
    #[test]
    fn stats_follow_the_exposition() {
        let state = state();
        let mut ingest = state.metrics.ingest();
        for _ in 0..7 {
            ingest.event();
        }
        for _ in 0..5 {
            ingest.stream(downbeat_operators::Dimensions::default(), None);
        }
        for _ in 0..3 {
            ingest.late();
        }
        ingest.rejected(crate::decode::RejectReason::InvalidJson);
        ingest.flush();
        state.metrics.set_progress(crate::metrics::Progress {
            now_ms: 10_000,
            max_event_ms: Some(9_000),
            watermark_ms: Some(8_000),
            live_panes: 0,
            interned_songs: 0,
            song_state_bytes: 0,
            song_reductions: 0,
            sessions: None,
        });
        let stats: Value = serde_json::from_str(&state.stats_json()).unwrap();
        let exposition = String::from_utf8(state.metrics.encode()).unwrap();
        let sample = |name: &str| -> f64 {
            exposition
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing"))
                .parse()
                .unwrap()
        };
        assert_eq!(stats["events_total"], 7);
        assert_eq!(sample("downbeat_events_total"), 7.0);
        assert_eq!(stats["streams_total"], 5);
        assert_eq!(sample("downbeat_streams_total"), 5.0);
        assert_eq!(stats["late_total"], 3);
        assert_eq!(sample("downbeat_late_events_total"), 3.0);
        assert_eq!(stats["rejected_by_reason"]["invalid_json"], 1);
        assert_eq!(stats["rejected_total"], 1);
        assert_eq!(stats["watermark_timestamp_seconds"], 8.0);
        assert_eq!(sample("downbeat_watermark_timestamp_seconds"), 8.0);
        assert_eq!(stats["last_event_timestamp_seconds"], 9.0);
        assert_eq!(stats["watermark_lag_seconds"], 2.0);
    }
}

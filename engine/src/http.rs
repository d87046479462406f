//! The HTTP server of live mode: metrics, health, readiness, the JSON API, the live page.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::proto::MetricType;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::output::now_ms;
use crate::page;

/// Tumbling windows kept for `/api/v1/windows/history` (an hour of 1-minute windows).
pub const HISTORY_LEN: usize = 60;

/// `/api/v1/trending` before anything was computed.
pub const TRENDING_EMPTY: &str = r#"{"window_end_ms":null,"total_ratio":null,"songs":[]}"#;

/// State the server reads; written by the pipeline thread.
pub struct ServerState {
    /// Every exported series.
    pub metrics: Arc<Metrics>,
    /// Latest closed window per kind (`"tumbling"`, `"sliding"`), as JSON.
    pub latest: DashMap<&'static str, String>,
    /// The last [`HISTORY_LEN`] tumbling windows, as JSON, oldest first.
    pub history: Mutex<VecDeque<String>>,
    /// The trending-songs document served as is by `/api/v1/trending`:
    /// `{"window_end_ms", "total_ratio", "songs": [{"rank", "artist", "song",
    /// "streams", "baseline_streams", "ratio"}]}`; starts as [`TRENDING_EMPTY`].
    pub trending: RwLock<String>,
    /// True once the source is delivering and the pipeline runs.
    pub ready: AtomicBool,
}

impl ServerState {
    /// Fresh state, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            latest: DashMap::new(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_LEN)),
            trending: RwLock::new(TRENDING_EMPTY.to_owned()),
            ready: AtomicBool::new(false),
        }
    }

    /// A closed window of `kind` (`"tumbling"` or `"sliding"`), serialized:
    /// becomes the latest of its kind, and tumbling windows join the history.
    pub fn publish_window(&self, kind: &'static str, json: String) {
        if kind == "tumbling" {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if history.len() == HISTORY_LEN {
                history.pop_front();
            }
            history.push_back(json.clone());
        }
        self.latest.insert(kind, json);
    }

    /// The tumbling-window history as a JSON array, oldest first.
    pub fn history_json(&self) -> String {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(2 + history.iter().map(|w| w.len() + 1).sum::<usize>());
        out.push('[');
        for (i, window) in history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(window);
        }
        out.push(']');
        out
    }

    /// Totals and freshness from the metrics registry, plus the wall clock
    /// (`time_ms`) so a client can turn two readings into rates.
    pub fn stats_json(&self) -> String {
        let mut values: BTreeMap<&str, f64> = BTreeMap::new();
        let mut rejected_by_reason = serde_json::Map::new();
        let mut windows_emitted = serde_json::Map::new();
        for family in self.metrics.registry().gather() {
            let read = |metric: &prometheus::proto::Metric| match family.get_field_type() {
                MetricType::COUNTER => Some(metric.get_counter().get_value()),
                MetricType::GAUGE => Some(metric.get_gauge().get_value()),
                _ => None,
            };
            let label = |metric: &prometheus::proto::Metric, name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|pair| pair.name() == name)
                    .map(|pair| pair.value().to_owned())
                    .unwrap_or_default()
            };
            let key = match family.name() {
                "downbeat_events_total" => "events_total",
                "downbeat_streams_total" => "streams_total",
                "downbeat_late_events_total" => "late_total",
                "downbeat_last_event_timestamp_seconds" => "last_event_timestamp_seconds",
                "downbeat_watermark_timestamp_seconds" => "watermark_timestamp_seconds",
                "downbeat_watermark_lag_seconds" => "watermark_lag_seconds",
                "downbeat_events_rejected_total" => {
                    for metric in family.get_metric() {
                        let count = read(metric).unwrap_or(0.0);
                        *values.entry("rejected_total").or_default() += count;
                        rejected_by_reason.insert(label(metric, "reason"), json!(count as u64));
                    }
                    continue;
                }
                "downbeat_windows_emitted_total" => {
                    for metric in family.get_metric() {
                        let count = read(metric).unwrap_or(0.0) as u64;
                        windows_emitted.insert(label(metric, "window"), json!(count));
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(value) = family.get_metric().first().and_then(read) {
                values.insert(key, value);
            }
        }
        let count = |key: &str| json!(values.get(key).copied().unwrap_or(0.0) as u64);
        // The freshness gauges read 0 until the first event: report null.
        let seconds = |key: &str| match values.get(key) {
            Some(&v) if v != 0.0 => json!(v),
            _ => Value::Null,
        };
        let has_watermark = values
            .get("watermark_timestamp_seconds")
            .is_some_and(|&v| v != 0.0);
        json!({
            "time_ms": now_ms(),
            "ready": self.ready.load(Ordering::Relaxed),
            "events_total": count("events_total"),
            "streams_total": count("streams_total"),
            "rejected_total": count("rejected_total"),
            "late_total": count("late_total"),
            "rejected_by_reason": rejected_by_reason,
            "windows_emitted_total": windows_emitted,
            "last_event_timestamp_seconds": seconds("last_event_timestamp_seconds"),
            "watermark_timestamp_seconds": seconds("watermark_timestamp_seconds"),
            "watermark_lag_seconds": if has_watermark {
                json!(values.get("watermark_lag_seconds").copied().unwrap_or(0.0))
            } else {
                Value::Null
            },
        })
        .to_string()
    }

    /// `{"tumbling": <window or null>, "sliding": <window or null>}`.
    pub fn latest_json(&self) -> String {
        let get = |kind: &str| {
            self.latest
                .get(kind)
                .map(|v| v.clone())
                .unwrap_or_else(|| "null".to_owned())
        };
        format!(
            "{{\"tumbling\":{},\"sliding\":{}}}",
            get("tumbling"),
            get("sliding")
        )
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// A JSON document that changes with every window: never cached.
fn live_json(body: String) -> Response<Full<Bytes>> {
    let mut response = response(StatusCode::OK, JSON, body);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The live page and its assets: revalidated on every load, no external resources.
fn page_asset(asset: page::Asset) -> Response<Full<Bytes>> {
    let mut response = response(StatusCode::OK, asset.content_type, asset.body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Route one request.
pub fn route(state: &ServerState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
    }
    match path {
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode(),
        ),
        "/healthz" => response(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => {
            response(StatusCode::OK, TEXT, "ready\n")
        }
        "/readyz" => response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
        "/api/v1/windows/latest" => response(StatusCode::OK, JSON, state.latest_json()),
        "/api/v1/windows/history" => live_json(state.history_json()),
        "/api/v1/stats" => live_json(state.stats_json()),
        "/api/v1/trending" => {
            let trending = state.trending.read().unwrap_or_else(|e| e.into_inner());
            live_json(trending.clone())
        }
        _ => match page::asset(path) {
            Some(asset) => page_asset(asset),
            None => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        },
    }
}

/// Bind `addr` (fails fast, before any event is read).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until the task is dropped. Each connection gets its own task;
/// malformed requests are answered (or dropped) by hyper without affecting others.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let reply = route(&state, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(reply) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
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
        assert_eq!(state.history_json(), "[]");
        for i in 0..HISTORY_LEN + 2 {
            state.publish_window("tumbling", format!("{{\"n\":{i}}}"));
            state.publish_window("sliding", format!("{{\"s\":{i}}}"));
        }
        let history: Vec<Value> = serde_json::from_str(&state.history_json()).unwrap();
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
    fn stats_and_trending_start_empty() {
        let state = state();
        let stats: Value = serde_json::from_str(&state.stats_json()).unwrap();
        assert_eq!(stats["events_total"], 0);
        assert_eq!(stats["rejected_total"], 0);
        assert_eq!(stats["rejected_by_reason"]["invalid_json"], 0);
        assert_eq!(stats["watermark_timestamp_seconds"], Value::Null);
        assert!(stats["time_ms"].as_i64().unwrap() > 0);
        assert_eq!(*state.trending.read().unwrap(), TRENDING_EMPTY);
        let trending: Value = serde_json::from_str(TRENDING_EMPTY).unwrap();
        assert_eq!(trending["songs"], json!([]));
        for path in [
            "/api/v1/trending",
            "/api/v1/stats",
            "/api/v1/windows/history",
        ] {
            let response = route(&state, &Method::GET, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[CONTENT_TYPE], JSON);
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn the_page_is_served_with_a_strict_policy() {
        let state = state();
        for path in ["/", "/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
            let response = route(&state, &Method::GET, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let csp = response.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
        }
        let page = route(&state, &Method::GET, "/");
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            route(&state, &Method::GET, "/assets/nope.js").status(),
            StatusCode::NOT_FOUND
        );
    }
}

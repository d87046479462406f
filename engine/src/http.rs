//! The HTTP server of live mode: metrics, health, readiness, the JSON API, the live page.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::page;
use crate::sink::api::{ServerState, HISTORY_LEN};

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

/// What a request asks for, as [`route`] reads it.
pub struct Asked<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path.
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// False for an HTTP/1.1 request without `Host` (RFC 9112 says 400).
    pub has_host: bool,
}

fn bad_request(why: &str) -> Response<Full<Bytes>> {
    response(
        StatusCode::BAD_REQUEST,
        TEXT,
        format!("bad request: {why}\n"),
    )
}

/// `limit` of `/api/v1/windows/history`: 1 to [`HISTORY_LEN`], default all;
/// any other parameter, or a bad value, is refused.
fn history_limit(query: Option<&str>) -> Result<usize, String> {
    let mut limit = HISTORY_LEN;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", value)) => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=HISTORY_LEN).contains(n))
                    .ok_or_else(|| format!("limit must be an integer from 1 to {HISTORY_LEN}"))?;
            }
            _ => return Err(format!("unknown parameter `{pair}` (only limit)")),
        }
    }
    Ok(limit)
}

/// Route one request.
pub fn route(state: &ServerState, asked: &Asked<'_>) -> Response<Full<Bytes>> {
    if asked.method != Method::GET && asked.method != Method::HEAD {
        let mut refused = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    if !asked.has_host {
        return bad_request("HTTP/1.1 needs a Host header");
    }
    let api = asked.path.starts_with("/api/");
    if api && asked.path != "/api/v1/windows/history" && asked.query.is_some_and(|q| !q.is_empty())
    {
        return bad_request("this endpoint takes no parameters");
    }
    match asked.path {
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
        "/api/v1/windows/history" => match history_limit(asked.query) {
            Ok(limit) => live_json(state.history_json(limit)),
            Err(why) => bad_request(&why),
        },
        "/api/v1/stats" => live_json(state.stats_json()),
        "/api/v1/sessions" => live_json(state.sessions_json()),
        "/api/v1/trending" => {
            let trending = state.trending.read().unwrap_or_else(|e| e.into_inner());
            live_json(trending.clone())
        }
        "/api/v1/forecast" => live_json(state.forecast_json()),
        _ => match page::asset(asked.path) {
            Some(asset) => page_asset(asset),
            None => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
        },
    }
}

/// Bind `addr` (fails fast, before any event is read).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Open connections, oldest first, so that the oldest can be closed when
/// the cap is reached: a flood of slow or idle connections cannot exhaust
/// file descriptors or lock out health probes.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, AbortHandle>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Make room for one more under `cap`: close the oldest if needed.
    fn make_room(&self, cap: usize) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while open.len() >= cap.max(1) {
            match open.pop_first() {
                Some((_, oldest)) => oldest.abort(),
                None => break,
            }
        }
    }

    fn add(&self, id: u64, handle: AbortHandle) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.insert(id, handle);
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&id);
    }
}

/// Removes a connection from the registry when its task ends or is aborted.
struct Registered(Arc<Connections>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// Serve the requests of one connection (any byte stream) until it ends.
pub async fn serve_connection<S>(stream: S, state: Arc<ServerState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let asked = Asked {
            method: request.method(),
            path: request.uri().path(),
            query: request.uri().query(),
            has_host: request.version() != Version::HTTP_11 || request.headers().contains_key(HOST),
        };
        let reply = route(&state, &asked);
        async move { Ok::<_, Infallible>(reply) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The default connection cap: half the process's file descriptor limit
/// (read at start), at most 4096.
pub fn default_max_connections() -> usize {
    let soft = crate::process::open_files_limit().unwrap_or(1024);
    usize::try_from(soft / 2).unwrap_or(4096).clamp(16, 4096)
}

/// Serve until the task is dropped, with at most `max_connections` open:
/// at the cap the oldest connection is closed. Each connection gets its own
/// task; malformed requests are answered (or dropped) by hyper without
/// affecting others.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, max_connections: usize) {
    let connections = Arc::new(Connections::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                connections.make_room(max_connections / 2);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        connections.make_room(max_connections);
        let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
        let registered = Registered(Arc::clone(&connections), id);
        let state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let _registered = registered;
            serve_connection(stream, state).await;
        });
        connections.add(id, task.abort_handle());
        if task.is_finished() {
            connections.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::sink::api::TRENDING_EMPTY;

    fn state() -> ServerState {
        ServerState::new(Arc::new(Metrics::new()))
    }

    /// A GET of `target` (path and query) over HTTP/1.1 with a Host.
    fn get(state: &ServerState, target: &str) -> Response<Full<Bytes>> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let asked = Asked {
            method: &Method::GET,
            path,
            query,
            has_host: true,
        };
        route(state, &asked)
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let state = state();
        let status = |target: &str| get(&state, target).status();
        assert_eq!(status("/api/v1/windows/history?limit=5"), StatusCode::OK);
        assert_eq!(status("/api/v1/windows/history?limit=60"), StatusCode::OK);
        for bad in [
            "limit=-1", "limit=0", "limit=61", "limit=x", "limit=", "since=3",
        ] {
            assert_eq!(
                status(&format!("/api/v1/windows/history?{bad}")),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(status("/api/v1/stats?verbose=1"), StatusCode::BAD_REQUEST);
        let post = Asked {
            method: &Method::POST,
            path: "/metrics",
            query: None,
            has_host: true,
        };
        let refused = route(&state, &post);
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, HEAD");
        let hostless = Asked {
            method: &Method::GET,
            path: "/healthz",
            query: None,
            has_host: false,
        };
        assert_eq!(route(&state, &hostless).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_live_documents_are_never_cached() {
        let state = state();
        for path in [
            "/api/v1/trending",
            "/api/v1/forecast",
            "/api/v1/stats",
            "/api/v1/sessions",
            "/api/v1/windows/history",
        ] {
            let response = get(&state, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[CONTENT_TYPE], JSON);
            assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        }
        assert_eq!(*state.trending.read().unwrap(), TRENDING_EMPTY);
    }

    #[test]
    fn the_page_is_served_with_a_strict_policy() {
        let state = state();
        for path in ["/", "/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
            let response = get(&state, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let csp = response.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
        }
        let page = get(&state, "/");
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            get(&state, "/assets/nope.js").status(),
            StatusCode::NOT_FOUND
        );
    }
}

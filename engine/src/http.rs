//! The HTTP server of live mode: metrics, health, readiness, latest windows.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// State the server reads; written by the pipeline thread.
pub struct ServerState {
    /// Every exported series.
    pub metrics: Arc<Metrics>,
    /// Latest closed window per kind (`"tumbling"`, `"sliding"`), as JSON.
    pub latest: DashMap<&'static str, String>,
    /// True once the source is delivering and the pipeline runs.
    pub ready: AtomicBool,
}

impl ServerState {
    /// Fresh state, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            latest: DashMap::new(),
            ready: AtomicBool::new(false),
        }
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
        _ => response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
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

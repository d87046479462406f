//! The HTTP server of live mode: metrics, health, readiness, the JSON API, the live page.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
use tokio::net::TcpListener;

use crate::page;
use crate::sink::api::ServerState;

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
    use crate::metrics::Metrics;
    use crate::sink::api::TRENDING_EMPTY;

    fn state() -> ServerState {
        ServerState::new(Arc::new(Metrics::new()))
    }

    #[test]
    fn the_live_documents_are_never_cached() {
        let state = state();
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
        assert_eq!(*state.trending.read().unwrap(), TRENDING_EMPTY);
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

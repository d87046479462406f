//! What a live mode runs beside the driver: the HTTP server on a small
//! tokio runtime, and the signal handler that asks the driver to stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::HttpConfig;
use crate::http;
use crate::sink::api::ServerState;

/// The server and the stop flag of a live run.
pub struct Service {
    runtime: tokio::runtime::Runtime,
    /// Set on SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
}

impl Service {
    /// Bind `listen` (failing before any event is read) and serve `state`;
    /// watch for SIGINT and SIGTERM.
    pub fn start(http: &HttpConfig, state: Arc<ServerState>) -> anyhow::Result<Self> {
        let addr: SocketAddr = http.listen.parse()?;
        let max_connections = match http.max_connections {
            0 => http::default_max_connections(),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(http::bind(addr))?;
        tracing::info!(%addr, max_connections, "serving the live page at /, /metrics, /healthz, /readyz and /api/v1/*");
        runtime.spawn(http::serve(listener, state, max_connections));
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::clone(&stop);
        runtime.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.store(true, Ordering::Relaxed);
        });
        Ok(Self { runtime, stop })
    }

    /// Stop serving.
    pub fn shutdown(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

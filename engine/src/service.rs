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
        runtime.spawn(set_on_signal(Arc::clone(&stop)));
        Ok(Self { runtime, stop })
    }

    /// Stop serving.
    pub fn shutdown(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// A flag set on SIGINT or SIGTERM, for modes without a server (`replay`):
/// a thread with a one-thread runtime waits for the signal.
pub fn stop_on_signal() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flag = Arc::clone(&stop);
    // The signal handlers are installed before the thread starts waiting.
    let waiting = runtime.block_on(async { SignalWait::install() });
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || runtime.block_on(set_after(waiting, flag)))?;
    Ok(stop)
}

async fn set_on_signal(stop: Arc<AtomicBool>) {
    set_after(SignalWait::install(), stop).await;
}

async fn set_after(waiting: SignalWait, stop: Arc<AtomicBool>) {
    waiting.wait().await;
    tracing::info!("shutting down");
    stop.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM handlers, installed when this is made.
struct SignalWait {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl SignalWait {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on SIGINT or SIGTERM.
    async fn wait(self) {
        #[cfg(unix)]
        {
            let (Some(mut term), Some(mut interrupt)) = (self.term, self.interrupt) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! Any bytes sent to the server on one connection: no panic, and whatever
//! comes back is an HTTP/1.x response.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use downbeat::http::serve_connection;
use downbeat::metrics::Metrics;
use downbeat::sink::api::ServerState;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

static STATE: LazyLock<Arc<ServerState>> =
    LazyLock::new(|| Arc::new(ServerState::new(Arc::new(Metrics::new()))));

fuzz_target!(|request: &[u8]| {
    RUNTIME.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_connection(server, Arc::clone(&STATE)));
        let _ = client.write_all(request).await;
        let _ = client.shutdown().await;
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut response));
        let _ = read.await;
        served.abort();
        if !response.is_empty() {
            let http = response.starts_with(b"HTTP/1.1 ") || response.starts_with(b"HTTP/1.0 ");
            assert!(http, "{:?}", String::from_utf8_lossy(&response));
        }
    });
});

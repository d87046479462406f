//! `downbeat run`: live mode. A source thread feeds batches of lines to the
//! pipeline thread, which publishes closed windows to the metrics, the
//! latest-windows API and `--emit-windows`; the HTTP server runs on tokio.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use downbeat_operators::WindowResult;

use crate::config::{Config, SourceKind};
use crate::http::{self, ServerState};
use crate::metrics::Metrics;
use crate::output::{now_ms, open_writer, WindowWriter};
use crate::pipeline::Pipeline;
use crate::replay::VERBATIM_LINE_CAP_BYTES;
use crate::source::generator::Generator;
use crate::source::lines::LineReader;

/// How often the pipeline thread checks idleness and publishes counters.
const TICK: Duration = Duration::from_millis(200);

/// A batch of newline-terminated lines.
type Batch = Vec<u8>;

/// Run until SIGINT/SIGTERM. Fails before reading any event if the
/// configuration, the listen address or an output file is unusable.
pub fn run(config: Config) -> anyhow::Result<()> {
    if config.source.kind == SourceKind::Kafka {
        return crate::kafka::run(config);
    }
    let addr: SocketAddr = config.http.listen.parse()?;
    let pipeline_config = config.pipeline()?;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(ServerState::new(Arc::clone(&metrics)));
    let mut emit = match config.output.emit_windows.as_deref() {
        Some(path) => Some(WindowWriter::new(open_writer(path)?)),
        None => None,
    };
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path)?),
        None => None,
    };
    let mut pipeline = Pipeline::new(pipeline_config, &metrics, rejects, now_ms())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(http::bind(addr))?;
    tracing::info!(%addr, "serving the live page at /, /metrics, /healthz, /readyz and /api/v1/*");
    runtime.spawn(http::serve(listener, Arc::clone(&state)));

    let stop = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = sync_channel::<Batch>(64);
    let source = start_source(&config, sender, Arc::clone(&stop))?;
    let shutdown = Arc::clone(&stop);
    runtime.spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.store(true, Ordering::Relaxed);
    });

    state.ready.store(true, Ordering::Relaxed);
    pump(&mut pipeline, &receiver, &state, emit.as_mut(), &stop);
    state.ready.store(false, Ordering::Relaxed);
    if let Some(writer) = emit.as_mut() {
        writer.flush()?;
    }
    drop(receiver);
    let _ = source.join();
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() {
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

/// The pipeline thread's loop: batches in, windows out, ticks in between.
fn pump(
    pipeline: &mut Pipeline,
    receiver: &Receiver<Batch>,
    state: &ServerState,
    mut emit: Option<&mut WindowWriter>,
    stop: &AtomicBool,
) {
    let mut closed = Vec::new();
    let mut last_tick = Instant::now();
    let mut source_open = true;
    while !stop.load(Ordering::Relaxed) {
        if source_open {
            match receiver.recv_timeout(TICK) {
                Ok(batch) => {
                    pipeline.source_active(now_ms());
                    let mut lines = LineReader::new(batch.as_slice(), VERBATIM_LINE_CAP_BYTES);
                    while let Ok(Some(line)) = lines.next_line() {
                        pipeline.process_line(line, &mut closed);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::info!("source finished; windows close as the idle watermark advances");
                    source_open = false;
                }
            }
        } else {
            thread::sleep(TICK);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let now = now_ms();
            pipeline.tick(now, &mut closed);
            pipeline.sync_metrics(&state.metrics, now);
        }
        if !closed.is_empty() {
            publish(pipeline, &mut closed, state, emit.as_deref_mut());
        }
    }
}

fn publish(
    pipeline: &mut Pipeline,
    closed: &mut Vec<WindowResult>,
    state: &ServerState,
    mut emit: Option<&mut WindowWriter>,
) {
    for window in closed.drain(..) {
        let json = serde_json::to_string(&window).expect("window results serialize");
        state
            .metrics
            .on_window(&pipeline.window_label(window.window), &window);
        if let Some(writer) = emit.as_deref_mut() {
            if let Err(error) = writer.write_json(&json).and_then(|()| writer.flush()) {
                tracing::error!(%error, "cannot write window results");
            }
        }
        state.publish_window(window.window, json);
    }
    publish_trending(pipeline, state);
    if let Some(started) = pipeline.take_close_started() {
        state.metrics.record_close_latency(started.elapsed());
    }
}

/// A tumbling window was scored for trending songs: to the metrics and
/// `/api/v1/trending`.
pub(crate) fn publish_trending(pipeline: &mut Pipeline, state: &ServerState) {
    let Some(trending) = pipeline.take_trending() else {
        return;
    };
    state
        .metrics
        .on_trending(&pipeline.window_label("tumbling"), &trending);
    let json = serde_json::to_string(&trending).expect("trending serializes");
    *state.trending.write().unwrap_or_else(|e| e.into_inner()) = json;
}

fn start_source(
    config: &Config,
    sender: SyncSender<Batch>,
    stop: Arc<AtomicBool>,
) -> io::Result<thread::JoinHandle<()>> {
    match config.source.kind {
        SourceKind::Generator => {
            let generator = Generator::new(&config.generator);
            let rate = config.source.rate_per_sec;
            thread::Builder::new()
                .name("source-generator".into())
                .spawn(move || generate_paced(generator, rate, sender, &stop))
        }
        SourceKind::Kafka => unreachable!("run hands kafka to crate::kafka"),
        SourceKind::File => {
            let path = config.source.path.clone().unwrap_or_else(|| "-".to_owned());
            let reader: Box<dyn Read + Send> = if path == "-" {
                Box::new(io::stdin())
            } else {
                Box::new(File::open(&path)?)
            };
            thread::Builder::new()
                .name("source-file".into())
                .spawn(move || read_batches(reader, sender, &stop))
        }
    }
}

/// Emit `rate` events per second with the wall clock as event time.
fn generate_paced(
    mut generator: Generator,
    rate: f64,
    sender: SyncSender<Batch>,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let mut produced: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        if due > produced {
            let now = now_ms();
            let mut batch = Vec::with_capacity(((due - produced) as usize) * 512);
            for _ in produced..due {
                generator.write_event(now, &mut batch);
                batch.push(b'\n');
            }
            produced = due;
            if sender.send(batch).is_err() {
                return;
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Forward a file or stdin in blocks that end on a line boundary.
fn read_batches(mut reader: Box<dyn Read + Send>, sender: SyncSender<Batch>, stop: &AtomicBool) {
    let mut carry: Vec<u8> = Vec::new();
    let mut block = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let n = match reader.read(&mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "input read failed");
                break;
            }
        };
        carry.extend_from_slice(&block[..n]);
        if let Some(last_newline) = memchr::memrchr(b'\n', &carry) {
            let rest = carry.split_off(last_newline + 1);
            if sender.send(std::mem::replace(&mut carry, rest)).is_err() {
                return;
            }
        } else if carry.len() > VERBATIM_LINE_CAP_BYTES {
            // An endless line: pass it on in pieces, each refused as too long.
            carry.push(b'\n');
            if sender.send(std::mem::take(&mut carry)).is_err() {
                return;
            }
        }
    }
    if !carry.is_empty() {
        carry.push(b'\n');
        let _ = sender.send(carry);
    }
}

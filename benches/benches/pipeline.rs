//! End to end: generated EventSim lines through the whole pipeline (decode,
//! watermark, panes, windows, JSON output).
//!
//! 1. `replay` of a generated file, as the command runs it (reader thread,
//!    decode threads, in-order apply): events/s, peak RSS, window-close latency.
//! 2. The same with decoding inline on one thread.
//! 3. In memory on one thread (no file I/O): events/s and close latency.
//! 4. A one-hour soak of event time at a fixed catalogue: RSS every 5 minutes.
//!
//! `cargo bench -p downbeat-benches --bench pipeline` (set
//! `DOWNBEAT_BENCH_EVENTS` to change the event count, default 2,000,000).

use std::time::{Duration, Instant};

use downbeat::config::Config;
use downbeat::lines::Chunk;
use downbeat::metrics::Metrics;
use downbeat::pipeline::Pipeline;
use downbeat_benches::{current_rss_bytes, eventsim_lines, peak_rss_bytes};
use hdrhistogram::Histogram;

const START_MS: i64 = 1_700_000_000_000;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let events: usize = std::env::var("DOWNBEAT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 2_000_000 });
    let file = std::env::temp_dir().join(format!("downbeat-bench-{}.jsonl", std::process::id()));
    write_input(&file, events);
    replay_file(&file, 0);
    replay_file(&file, 1);
    let _ = std::fs::remove_file(&file);
    throughput(events);
    soak(if quick { 60_000 } else { 3_600_000 });
}

/// Generated lines written in pieces, so generating costs no resident memory.
fn write_input(path: &std::path::Path, events: usize) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let piece = 100_000;
    for start in (0..events).step_by(piece) {
        let count = piece.min(events - start);
        let lines = eventsim_lines(
            count,
            START_MS + (start as f64 * 0.5) as i64,
            0.5,
            11 + start as u64,
        );
        file.write_all(&lines).unwrap();
    }
    file.flush().unwrap();
}

/// `downbeat replay FILE --output /dev/null`, in process.
fn replay_file(path: &std::path::Path, decode_threads: usize) {
    let mut config = Config::default();
    config.input.decode_threads = decode_threads;
    let summary = downbeat::replay::replay(&config, path.to_str().unwrap(), "/dev/null").unwrap();
    let report = serde_json::json!({
        "bench": "replay_file",
        "decode_threads": summary.decode_threads,
        "events": summary.totals.lines,
        "windows": summary.totals.windows,
        "events_per_sec": summary.lines_per_sec,
        "peak_rss_bytes": peak_rss_bytes(),
        "window_close_latency_us": summary.window_close_latency_us,
    });
    println!("{report}");
}

fn pipeline(metrics: &Metrics) -> Pipeline {
    let config = Config::default().pipeline().unwrap();
    Pipeline::new(config, metrics, None, START_MS + 365 * 86_400_000).unwrap()
}

/// Events at 2,000 per second of event time, so windows close as they would live.
fn throughput(events: usize) {
    let input = eventsim_lines(events, START_MS, 0.5, 11);
    let metrics = Metrics::new();
    let mut pipeline = pipeline(&metrics);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut closed = Vec::new();
    let mut output = Vec::with_capacity(1 << 20);
    let started = Instant::now();
    let input = Chunk::owned(input, false);
    for span in input.spans() {
        pipeline.process_line(input.line(span));
        if pipeline.has_closed() {
            pipeline.take_closed(&mut closed);
            publish(&mut pipeline, &mut closed, &mut output, &mut latency);
        }
    }
    pipeline.finish();
    pipeline.take_closed(&mut closed);
    publish(&mut pipeline, &mut closed, &mut output, &mut latency);
    let elapsed = started.elapsed();
    let totals = pipeline.totals();
    let report = serde_json::json!({
        "bench": "pipeline_in_memory",
        "events": totals.lines,
        "streams": totals.streams,
        "windows": totals.windows,
        "input_bytes": input.data.len(),
        "elapsed_secs": elapsed.as_secs_f64(),
        "events_per_sec": totals.lines as f64 / elapsed.as_secs_f64(),
        "ns_per_event": elapsed.as_nanos() as f64 / totals.lines as f64,
        "window_close_latency_us": {
            "p50": latency.value_at_quantile(0.5) as f64 / 1e3,
            "p99": latency.value_at_quantile(0.99) as f64 / 1e3,
            "max": latency.max() as f64 / 1e3,
        },
    });
    println!("{report}");
}

/// Serialize closed windows (as `replay` does) and record close latency.
fn publish(
    pipeline: &mut Pipeline,
    closed: &mut Vec<downbeat_operators::WindowResult>,
    output: &mut Vec<u8>,
    latency: &mut Histogram<u64>,
) {
    for window in closed.drain(..) {
        serde_json::to_writer(&mut *output, &window).unwrap();
        output.push(b'\n');
    }
    output.clear();
    if let Some(started) = pipeline.take_close_started() {
        latency.saturating_record(started.elapsed().as_nanos().max(1) as u64);
    }
}

/// `events` events over one hour of event time at a fixed catalogue; RSS is
/// sampled every simulated five minutes. Memory must follow the live windows.
fn soak(events: usize) {
    let metrics = Metrics::new();
    let mut pipeline = pipeline(&metrics);
    let step_ms = 3_600_000.0 / events as f64;
    let chunk = events / 12;
    let mut closed = Vec::new();
    let mut samples = Vec::new();
    for part in 0..12 {
        let start = START_MS + (part * chunk) as i64 * step_ms as i64;
        let input = eventsim_lines(chunk, start, step_ms, 5 + part as u64);
        let input = Chunk::owned(input, false);
        for span in input.spans() {
            pipeline.process_line(input.line(span));
            pipeline.take_closed(&mut closed);
            closed.clear();
        }
        drop(input);
        samples.push(current_rss_bytes().unwrap_or(0) / 1024);
    }
    let report = serde_json::json!({
        "bench": "soak_one_hour_event_time",
        "events": pipeline.totals().lines,
        "rss_kib_every_5_min": samples,
    });
    println!("{report}");
    let _ = Duration::ZERO;
}

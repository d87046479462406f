//! Kafka end to end on this machine, broker included: how fast `downbeat
//! run --source kafka` consumes a backlog, against a bare rdkafka consumer
//! reading the same topic from the same broker in the same run; then the
//! latencies at half that rate.
//!
//! `cargo bench -p downbeat-benches --bench kafka` (needs `tansu` on PATH;
//! builds the release binary first). DOWNBEAT_BENCH_KAFKA_EVENTS sets the
//! backlog (default 1,000,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use downbeat_benches::{create_topic, downbeat_binary, free_port, metric, metrics, tansu, Killed};

/// Events per second a bare consumer reads, first record to last.
fn bare_consumer(brokers: &str, topic: &str, events: u64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bare-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // The fetch settings `downbeat run` uses, for a like-for-like read.
        .set("fetch.wait.max.ms", "50")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut started = None;
    while seen < events {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    let seconds = started.unwrap().elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    seen as f64 / seconds
}

/// Events per second `downbeat run` counts, from its first counted event
/// to the last (read off its own metrics every 20 ms).
fn downbeat_consumer(bin: &Path, brokers: &str, topic: &str, events: u64) -> f64 {
    let port = free_port();
    let _engine = Killed(
        Command::new(bin)
            .args([
                "run",
                "--brokers",
                brokers,
                "--topic",
                topic,
                "--group",
                "bench",
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--idle-timeout-ms",
                "600000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (mut first_count, mut first_at) = (0.0, None);
    loop {
        let count = metric(port, "downbeat_events_total");
        if count > 0.0 && first_at.is_none() {
            (first_count, first_at) = (count, Some(Instant::now()));
        }
        if count >= events as f64 {
            let seconds = first_at.unwrap().elapsed().as_secs_f64();
            return (count - first_count) / seconds;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if Command::new("tansu").arg("--version").output().is_err() {
        eprintln!("kafka bench skipped: `tansu` is not on PATH (./test.sh installs it)");
        return;
    }
    let events: u64 = std::env::var("DOWNBEAT_BENCH_KAFKA_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let bin = downbeat_binary();
    let port = free_port();
    let _broker = tansu(port);
    let brokers = format!("127.0.0.1:{port}");
    let ours = backlog(&bin, port, &brokers, events);
    live(&bin, port, &brokers, ours);
}

/// Throughput on a backlog, against a bare consumer; returns ours.
fn backlog(bin: &Path, port: u16, brokers: &str, events: u64) -> f64 {
    create_topic(port, "backlog", 4);
    let produced = Command::new(bin)
        .args(["produce", "--brokers", brokers, "--topic", "backlog"])
        .args([
            "--count",
            &events.to_string(),
            "--rate",
            "10000",
            "--start-ms",
            "1700000000000",
        ])
        .status()
        .unwrap();
    assert!(produced.success());

    // Alternate, since the shared machine's speed drifts.
    let bare = bare_consumer(brokers, "backlog", events);
    let ours = downbeat_consumer(bin, brokers, "backlog", events);
    let bare_again = bare_consumer(brokers, "backlog", events);
    println!("backlog of {events} EventSim events, 4 partitions, tansu on the same 2 cores:");
    println!("  bare rdkafka consumer: {bare:.0} then {bare_again:.0} events/s");
    println!(
        "  downbeat run:          {ours:.0} events/s ({:.0}% of the faster bare run)",
        100.0 * ours / bare.max(bare_again)
    );
    ours
}

/// Latency at half the measured rate, events stamped with the wall clock.
fn live(bin: &Path, port: u16, brokers: &str, ours: f64) {
    let rate = (ours / 2.0).round();
    create_topic(port, "live", 4);
    let engine_port = free_port();
    let _engine = Killed(
        Command::new(bin)
            .args([
                "run",
                "--brokers",
                brokers,
                "--topic",
                "live",
                "--group",
                "live",
            ])
            .args(["--listen", &format!("127.0.0.1:{engine_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while metric(engine_port, "downbeat_kafka_assigned_partitions") < 4.0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let producer = Killed(
        Command::new(bin)
            .args([
                "produce",
                "--brokers",
                brokers,
                "--topic",
                "live",
                "--rate",
                &rate.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Long enough for several 1-minute windows to close.
    let run = Duration::from_secs(
        std::env::var("DOWNBEAT_BENCH_KAFKA_LIVE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(150),
    );
    std::thread::sleep(run);
    let m = metrics(engine_port);
    drop(producer);
    report_latencies(&m, rate, run);
}

fn report_latencies(m: &BTreeMap<String, f64>, rate: f64, run: Duration) {
    let q = |name: &str, quantile: &str| {
        m.get(&format!("{name}{{quantile=\"{quantile}\"}}"))
            .copied()
            .unwrap_or(f64::NAN)
            * 1000.0
    };
    println!(
        "live at {rate} events/s for {run:?} ({} events counted):",
        m.get("downbeat_events_total").copied().unwrap_or(0.0)
    );
    for (label, name) in [
        (
            "poll -> window state",
            "downbeat_kafka_apply_latency_seconds",
        ),
        (
            "Kafka timestamp -> window state",
            "downbeat_kafka_ingest_latency_seconds",
        ),
        (
            "window close -> metrics",
            "downbeat_window_close_latency_seconds",
        ),
    ] {
        println!(
            "  {label}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            q(name, "0.5"),
            q(name, "0.99"),
            q(name, "1")
        );
    }
}

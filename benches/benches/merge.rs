//! The merge tier on this machine, broker included (issue 10's figures):
//!
//! 1. 1, 2 and 3 replicas (`run --partials-topic`) consume the same backlog
//!    (a random key per record over 8 partitions): events/s from the first
//!    counted event to the last, summed over replicas;
//! 2. `downbeat merge` started on the full partials topic of the 3-replica
//!    run: records/s and global windows/s while it rebuilds;
//! 3. the partials topic itself: records, bytes per record (mean and max),
//!    and bytes per window and partition;
//! 4. live, 2 replicas at a steady rate: the delay from the last replica
//!    closing a tumbling window to the merger emitting it (read off each
//!    process's `/api/v1/windows/latest` every 10 ms).
//!
//! `cargo bench -p downbeat-benches --bench merge` (needs `tansu` on PATH;
//! builds the release binary first). DOWNBEAT_BENCH_MERGE_EVENTS sets the
//! backlog (default 600,000 at 2,000 events per second of event time),
//! DOWNBEAT_BENCH_MERGE_LIVE_SECS the live run (default 200).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use downbeat_benches::{
    create_topic, downbeat_binary, free_port, http_get, metric, metrics, tansu, Killed,
};

const PARTITIONS: u32 = 8;

fn main() {
    if Command::new("tansu").arg("--version").output().is_err() {
        eprintln!("merge bench skipped: `tansu` is not on PATH (./test.sh installs it)");
        return;
    }
    let events: u64 = std::env::var("DOWNBEAT_BENCH_MERGE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600_000);
    let bin = downbeat_binary();
    let port = free_port();
    let _broker = tansu(port);
    let brokers = format!("127.0.0.1:{port}");
    create_topic(port, "backlog", PARTITIONS);
    let produced = produce_command(&bin, &brokers, "backlog")
        .args([
            "--count",
            &events.to_string(),
            "--start-ms",
            "1764400000000",
        ])
        .status()
        .unwrap();
    assert!(produced.success(), "produce failed");
    println!("backlog: {events} generated events, random keys, {PARTITIONS} partitions");
    for replicas in 1..=3 {
        let rate = replica_tier(&bin, &brokers, replicas, events);
        println!("{replicas} replica(s): {rate:.0} events/s (summed, first event to last)");
    }
    merger_rebuild(&bin, &brokers, "partials-3");
    partial_sizes(&brokers, "partials-3");
    live_latency(&bin, port, &brokers);
}

/// `downbeat produce` into `topic`, a random key per record, event times
/// 0.5 ms apart (2,000 events a second).
fn produce_command(bin: &Path, brokers: &str, topic: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["produce", "--brokers", brokers, "--topic", topic])
        .args(["--key", "random", "--rate", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn replica(bin: &Path, brokers: &str, topic: &str, name: &str, partials: &str) -> (Killed, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "downbeat-merge-bench-{name}-{}",
        std::process::id()
    ));
    let child = Command::new(bin)
        .args(["run", "--brokers", brokers, "--topic", topic])
        .args([
            "--group",
            &format!("{partials}-group"),
            "--replica-id",
            name,
        ])
        .args([
            "--partials-topic",
            partials,
            "--state-topic",
            &format!("{partials}-state"),
        ])
        .arg("--checkpoint-dir")
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Killed(child), port)
}

/// Events/s of `replicas` replicas over the backlog, from the first counted
/// event to the last (their own counters, read every 20 ms).
fn replica_tier(bin: &Path, brokers: &str, replicas: usize, events: u64) -> f64 {
    let partials = format!("partials-{replicas}");
    let running: Vec<(Killed, u16)> = (0..replicas)
        .map(|i| {
            replica(
                bin,
                brokers,
                "backlog",
                &format!("r{replicas}-{i}"),
                &partials,
            )
        })
        .collect();
    let counted = || -> f64 {
        running
            .iter()
            .map(|(_, port)| metric(*port, "downbeat_events_total"))
            .sum()
    };
    let (mut first, mut first_at) = (0.0, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let count = counted();
        if count > 0.0 && first_at.is_none() {
            (first, first_at) = (count, Some(Instant::now()));
        }
        if count >= events as f64 {
            let seconds = first_at.unwrap().elapsed().as_secs_f64();
            // Let the idle rule close the last windows (their partials).
            std::thread::sleep(Duration::from_secs(8));
            return (count - first) / seconds;
        }
        assert!(Instant::now() < deadline, "the replicas did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A merger started on a full partials topic: records/s and windows/s from
/// its first record read to the last (process start excluded), until it has
/// read everything and nothing waits.
fn merger_rebuild(bin: &Path, brokers: &str, partials: &str) {
    let port = free_port();
    let _merger = Killed(
        Command::new(bin)
            .args(["merge", "--brokers", brokers, "--partials-topic", partials])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sum = |m: &BTreeMap<String, f64>, prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let mut first_at = None;
    let (mut last, mut last_change) = (0.0, Instant::now());
    loop {
        let m = metrics(port);
        let read = sum(&m, "downbeat_merge_records_total");
        if read > 0.0 && first_at.is_none() {
            first_at = Some(Instant::now());
        }
        if read != last {
            (last, last_change) = (read, Instant::now());
        } else if read > 0.0 && last_change.elapsed() > Duration::from_secs(3) {
            let seconds = (last_change - first_at.unwrap()).as_secs_f64().max(0.02);
            let windows = sum(&m, "downbeat_windows_emitted_total");
            println!(
                "merger rebuild: {read:.0} records in {seconds:.2} s from the first read = {:.0} records/s; {windows:.0} global windows = {:.0} windows/s",
                read / seconds,
                windows / seconds
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes per record of the partials topic.
fn partial_sizes(brokers: &str, partials: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "merge-bench-sizes")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(partials, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(partials, 0, Offset::Offset(low))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let (mut records, mut partial_bytes, mut partial_records, mut max) = (0u64, 0usize, 0u64, 0);
    while records < (high - low) as u64 {
        let Some(Ok(message)) = consumer.poll(Duration::from_secs(5)) else {
            break;
        };
        records += 1;
        let size = message.payload().map_or(0, <[u8]>::len);
        if message.key().is_some_and(|k| !k.starts_with(b"progress/")) {
            partial_bytes += size;
            partial_records += 1;
            max = max.max(size);
        }
    }
    println!(
        "partials topic: {records} records, {partial_records} partials of {:.0} bytes on average (max {max}) for ~{:.0} plays per partition and minute",
        partial_bytes as f64 / partial_records.max(1) as f64,
        2000.0 * 60.0 * 0.85 / f64::from(PARTITIONS)
    );
}

/// Live, 2 replicas and a merger at 2,000 events/s: from the last replica
/// showing a tumbling window to the merger showing it.
fn live_latency(bin: &Path, port: u16, brokers: &str) {
    create_topic(port, "live", PARTITIONS);
    let _producer = Killed(produce_command(bin, brokers, "live").spawn().unwrap());
    let replicas: Vec<(Killed, u16)> = (0..2)
        .map(|i| replica(bin, brokers, "live", &format!("live-{i}"), "partials-live"))
        .collect();
    let merger_port = free_port();
    let _merger = Killed(
        Command::new(bin)
            .args([
                "merge",
                "--brokers",
                brokers,
                "--partials-topic",
                "partials-live",
            ])
            .args(["--listen", &format!("127.0.0.1:{merger_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let seconds: u64 = std::env::var("DOWNBEAT_BENCH_MERGE_LIVE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let latest_end = |port: u16| -> Option<i64> {
        let body = http_get(port, "/api/v1/windows/latest");
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        value["tumbling"]["end_ms"].as_i64()
    };
    let mut replica_seen: Vec<BTreeMap<i64, Instant>> = vec![BTreeMap::new(); replicas.len()];
    let mut merger_seen: BTreeMap<i64, Instant> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        for ((_, port), seen) in replicas.iter().zip(replica_seen.iter_mut()) {
            if let Some(end) = latest_end(*port) {
                seen.entry(end).or_insert_with(Instant::now);
            }
        }
        if let Some(end) = latest_end(merger_port) {
            merger_seen.entry(end).or_insert_with(Instant::now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut delays: Vec<f64> = merger_seen
        .iter()
        .filter_map(|(end, merged)| {
            // The last replica to close it.
            let closed = replica_seen
                .iter()
                .map(|seen| seen.get(end).copied())
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .max()?;
            Some(merged.saturating_duration_since(closed).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    println!(
        "live, 2 replicas + merger, 2,000 events/s: replica close to global window, ms over {} windows: {delays:.0?}",
        delays.len()
    );
}

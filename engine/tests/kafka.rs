//! The Kafka source against a real Kafka-protocol broker (tansu, started
//! per test on a free loopback port with in-memory storage): windows equal
//! `replay`'s, exact recovery after `kill -9`, two replicas splitting a
//! topic and handing partitions over, and reconnection after the broker
//! goes away.
//!
//! Needs `tansu` on PATH (`./test.sh` installs it).
#![allow(clippy::too_many_lines)] // a test reads top to bottom, as one scenario

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{downbeat, free_port, get, stdout_of, wait_until};
use serde_json::Value;

/// These tests start brokers and engines and measure progress by wall-clock
/// waits; on a 2-core machine they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Kafka-protocol broker the tests run processes against.
trait Kafka {
    /// host:port of its bootstrap broker.
    fn address(&self) -> String;

    /// `produce --key KEY` (user, random or none) of `input` into `topic`.
    fn produce_keyed(&self, topic: &str, input: &Path, key: &str) {
        stdout_of(
            downbeat()
                .args(["produce", "--brokers", &self.address(), "--topic", topic])
                .args(["--key", key, "--input"])
                .arg(input),
        );
    }
}

impl Kafka for Broker {
    fn address(&self) -> String {
        Broker::address(self)
    }
}

/// librdkafka's own mock cluster, in this process (one broker). It expires
/// a member killed with SIGKILL, which tansu 0.6 does not; it keeps only
/// the last 5 MiB of each partition, so topics that grow are spread over
/// several partitions.
struct MockBroker {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl MockBroker {
    fn start() -> Self {
        Self {
            cluster: rdkafka::mocking::MockCluster::new(1).expect("the mock cluster starts"),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        self.cluster
            .create_topic(name, partitions, 1)
            .expect("topic created");
    }
}

impl Kafka for MockBroker {
    fn address(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// A tansu broker, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Self {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`tansu` 0.6.0 not found on PATH: install it with `cargo install tansu --version 0.6.0 --features dynostore --locked` (./test.sh does)");
        wait_until(Duration::from_secs(20), "the broker to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        stdout_of(
            Command::new("tansu")
                .args([
                    "topic",
                    "create",
                    name,
                    "--partitions",
                    &partitions.to_string(),
                ])
                .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)]),
        );
    }

    fn produce(&self, topic: &str, input: &Path) {
        stdout_of(
            downbeat()
                .args([
                    "produce",
                    "--brokers",
                    &self.address(),
                    "--topic",
                    topic,
                    "--input",
                ])
                .arg(input),
        );
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `downbeat run --source kafka` process, killed when dropped.
struct Replica {
    child: Child,
    port: u16,
    emit: PathBuf,
}

impl Replica {
    fn start(
        broker: &impl Kafka,
        topic: &str,
        group: &str,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let emit = dir.join(format!("{name}.windows.jsonl"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .unwrap();
        let child = downbeat()
            .args([
                "run",
                "--brokers",
                &broker.address(),
                "--topic",
                topic,
                "--group",
                group,
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--replica-id",
                name,
            ])
            .arg("--emit-windows")
            .arg(&emit)
            .args(extra)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("DOWNBEAT_TEST_REPLICA_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let replica = Self { child, port, emit };
        wait_until(Duration::from_secs(20), "/healthz", || {
            matches!(get(replica.port, "/healthz"), Ok((200, _)))
        });
        replica
    }

    /// Every sample as `name{labels}` -> value.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let Ok((200, body)) = get(self.port, "/metrics") else {
            return BTreeMap::new();
        };
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    fn metric(&self, key: &str) -> f64 {
        self.metrics().get(key).copied().unwrap_or(-1.0)
    }

    /// Panics if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the replica exited: {status}");
        }
    }

    fn ready(&self) -> bool {
        matches!(get(self.port, "/readyz"), Ok((200, _)))
    }

    fn windows(&self) -> String {
        std::fs::read_to_string(&self.emit).unwrap_or_default()
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        stdout_of(Command::new("kill").args(["-TERM", &pid]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "replica did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// `downbeat generate` output: `count` events, one every `1000 / rate` ms
/// of event time from a fixed start, deterministic.
fn generated(dir: &Path, name: &str, count: u64, rate: u64) -> PathBuf {
    let path = dir.join(name);
    let lines = stdout_of(downbeat().args([
        "generate",
        "--count",
        &count.to_string(),
        "--rate",
        &rate.to_string(),
        "--start-ms",
        "1700000000000",
        "--seed",
        "11",
    ]));
    std::fs::write(&path, lines).unwrap();
    path
}

/// `replay`'s windows (raw JSON Lines) and summary for `input`.
/// Insert three plays far ahead of the stream (+2 h, +23 h, +200 days),
/// copies of plays at a quarter, half and three quarters of `input`.
fn insert_outliers(input: &Path) {
    let text = std::fs::read_to_string(input).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let shifts_ms = [2 * 3_600_000i64, 23 * 3_600_000, 200 * 86_400_000];
    for (index, shift_ms) in shifts_ms.iter().enumerate().rev() {
        let at = (lines.len() * (index + 1) / 4..lines.len())
            .find(|&i| lines[i].contains("\"NextSong\""))
            .unwrap();
        let mut play: Value = serde_json::from_str(&lines[at]).unwrap();
        play["ts"] = (play["ts"].as_i64().unwrap() + shift_ms).into();
        lines.insert(at + 1, play.to_string());
    }
    std::fs::write(input, lines.join("\n") + "\n").unwrap();
}

fn replay_of(input: &Path, dir: &Path) -> (String, Value) {
    let (_, summary) = common::replay(input, dir, &[]);
    (
        std::fs::read_to_string(dir.join("windows.jsonl")).unwrap(),
        summary,
    )
}

fn lines(text: &str) -> usize {
    text.lines().count()
}

/// The lines of `text`, sorted: JSON Lines compared as a multiset.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

/// Equal window outputs, or a panic showing the first difference briefly.
fn assert_same_windows(got: &str, expected: &str, what: &str) {
    if got == expected {
        return;
    }
    let short = |l: Option<&str>| l.map(|l| l.chars().take(240).collect::<String>());
    let index = got
        .lines()
        .zip(expected.lines())
        .position(|(g, e)| g != e)
        .unwrap_or(lines(got).min(lines(expected)));
    panic!(
        "{what}: {} lines vs {} expected; first difference at line {index}:\n got:      {:?}\n expected: {:?}",
        lines(got),
        lines(expected),
        short(got.lines().nth(index)),
        short(expected.lines().nth(index)),
    );
}

#[test]
fn windows_from_kafka_equal_replay_on_the_eventsim_data() {
    let _serial = serial();
    let dir = Scratch::new();
    let input = common::eventsim_file(dir.path());
    let (expected, summary) = replay_of(&input, dir.path());
    let broker = Broker::start();
    broker.create_topic("listens", 4);
    broker.produce("listens", &input);

    let checkpoints = dir.path().join("checkpoints");
    let replica = Replica::start(
        &broker,
        "listens",
        "g1",
        dir.path(),
        "solo",
        &[
            "--idle-timeout-ms",
            "2000",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
        ],
    );
    wait_until(Duration::from_secs(90), "every window", || {
        lines(&replica.windows()) >= lines(&expected)
    });
    assert_same_windows(
        &replica.windows(),
        &expected,
        "windows from 4 partitions vs replay",
    );
    let m = replica.metrics();
    assert_eq!(
        m["downbeat_streams_total"],
        summary["streams"].as_f64().unwrap()
    );
    assert_eq!(
        m["downbeat_events_total"],
        summary["lines"].as_f64().unwrap()
    );
    assert_eq!(m["downbeat_late_events_total"], 0.0);
    assert_eq!(m["downbeat_kafka_assigned_partitions"], 4.0);
    let processed: f64 = (0..4)
        .map(|p| m[&format!("downbeat_kafka_processed_offset{{partition=\"{p}\"}}")])
        .sum();
    assert_eq!(
        processed,
        summary["lines"].as_f64().unwrap(),
        "offsets cover every record"
    );
    assert!(replica.ready());
}

#[test]
fn malformed_records_are_counted_by_reason_kept_and_do_not_stall_a_partition() {
    let _serial = serial();
    let dir = Scratch::new();
    let config = dir.path().join("downbeat.toml");
    std::fs::write(&config, "[input]\nmax_line_bytes = 65536\n").unwrap();
    let good = std::fs::read_to_string(generated(dir.path(), "good.jsonl", 400, 2)).unwrap();
    let huge = format!("{{\"userId\":\"7\",\"song\":\"{}\"}}", "x".repeat(100_000));
    let bad = [
        "not json at all",
        r#"{"ts":"soon","userId":"1","song":"x","artist":"y","page":"NextSong"}"#,
        r#"{"ts":1700000000000,"userId":"1","song":"#,
        "[]",
        r#"{"ts":1700000001000,"page":"NextSong","song":"no user"}"#,
        huge.as_str(),
    ];
    let mut input = String::new();
    for (i, line) in good.lines().enumerate() {
        input.push_str(line);
        input.push('\n');
        if i % 60 == 0 {
            input.push_str(bad[(i / 60) % bad.len()]);
            input.push('\n');
        }
    }
    let input_path = dir.path().join("mixed.jsonl");
    std::fs::write(&input_path, &input).unwrap();
    let (_, summary) = common::replay(
        &input_path,
        dir.path(),
        &["--config", config.to_str().unwrap()],
    );
    let expected = std::fs::read_to_string(dir.path().join("windows.jsonl")).unwrap();
    assert!(summary["rejected"].as_u64().unwrap() >= 6, "{summary}");

    let broker = Broker::start();
    broker.create_topic("listens", 2);
    broker.produce("listens", &input_path);
    let rejects = dir.path().join("dead-letter.jsonl");
    let replica = Replica::start(
        &broker,
        "listens",
        "g",
        dir.path(),
        "solo",
        &[
            "--idle-timeout-ms",
            "2000",
            "--config",
            config.to_str().unwrap(),
            "--rejects",
            rejects.to_str().unwrap(),
        ],
    );
    wait_until(Duration::from_secs(60), "every window", || {
        lines(&replica.windows()) >= lines(&expected)
    });
    assert_same_windows(
        &replica.windows(),
        &expected,
        "windows with malformed records vs replay",
    );
    let m = replica.metrics();
    for (reason, count) in summary["rejected_by_reason"].as_object().unwrap() {
        let key = format!("downbeat_events_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(m[&key], count.as_f64().unwrap(), "{key}");
    }
    let kept = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(
        lines(&kept) as u64,
        summary["rejected"].as_u64().unwrap(),
        "every refused record kept"
    );
    assert!(kept.contains("not json at all") && kept.contains(&huge));
    for p in 0..2 {
        assert_eq!(
            m[&format!("downbeat_kafka_consumer_lag_records{{partition=\"{p}\"}}")],
            0.0,
            "partition {p} not stalled"
        );
    }
}

/// A cheap deterministic sequence for kill points (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn fraction(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Five SIGKILLs at random moments while data arrives (one while the state
/// is being rebuilt), each restarted in place with default flags: the
/// windows, sessions and counters of an uninterrupted run. The data carries
/// three plays far in the future: each partition's outlier guard refuses
/// them once, whatever checkpoint held them, and no window moves. The
/// records carry replay's forecasts: the forecast state is checkpointed
/// with the window output. The topic
/// is keyed by user, so each partition's sessions are whole: together they
/// are replay's, none lost or written twice.
#[test]
fn kill_9_at_random_points_then_restart_gives_the_uninterrupted_result() {
    let _serial = serial();
    let dir = Scratch::new();
    let total = 60_000u64;
    // 10 events/s: 100 minutes, so the streams forecast is out of its first
    // hour's warm-up for the later kills, and its state must come back
    // from the checkpoint for the records to carry replay's forecasts.
    let input = generated(dir.path(), "events.jsonl", total - 3, 10);
    insert_outliers(&input);
    let expected_sessions_path = dir.path().join("replay.sessions.jsonl");
    let (_, summary) = common::replay(
        &input,
        dir.path(),
        &["--sessions", expected_sessions_path.to_str().unwrap()],
    );
    let expected = std::fs::read_to_string(dir.path().join("windows.jsonl")).unwrap();
    let forecasts = expected
        .lines()
        .filter(|l| l.contains("\"forecast\":"))
        .count();
    assert!(forecasts >= 30, "{forecasts} windows with a forecast");
    let expected_sessions =
        sorted_lines(&std::fs::read_to_string(&expected_sessions_path).unwrap());
    assert!(
        expected_sessions.len() > 1_000,
        "{} sessions",
        expected_sessions.len()
    );
    assert_eq!(summary["rejected_by_reason"]["timestamp_outlier"], 3);
    // The data arrives while the replica runs: six parts, the first before
    // it starts, one more in each of the five rounds.
    let text = std::fs::read_to_string(&input).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let parts: Vec<PathBuf> = all
        .chunks(all.len().div_ceil(6))
        .enumerate()
        .map(|(index, part)| {
            let path = dir.path().join(format!("part{index}.jsonl"));
            std::fs::write(&path, part.join("\n") + "\n").unwrap();
            path
        })
        .collect();
    let broker = Broker::start();
    broker.create_topic("listens", 4);
    broker.produce("listens", &parts[0]);

    // No checkpoint flag: the default (a state directory beside the process,
    // here the scratch directory) must be exact.
    let args = [
        "--idle-timeout-ms",
        "3000",
        "--checkpoint-interval-ms",
        "100",
        // Static membership, as for a StatefulSet pod: the restarted process
        // takes the killed one's place in the group at once.
        "--kafka-property",
        "group.instance.id=r",
        "--emit-sessions",
        "r.sessions.jsonl",
    ];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill-point seed {seed}");
    let mut random = Lcg(seed);
    let mut killed_mid_stream = 0;
    for round in 0..5 {
        let mut replica = Replica::start(&broker, "listens", "crash", dir.path(), "r", &args);
        // Restored counters: where the last checkpoint left off.
        let base = replica.metric("downbeat_events_total");
        if round == 4 {
            // Killed while it rebuilds its state from the checkpoint.
            std::thread::sleep(Duration::from_millis(300));
        } else {
            broker.produce("listens", &parts[round + 1]);
            let arrived = (total as f64) * (round + 2) as f64 / 6.0;
            let target = base + (arrived - base) * (0.1 + 0.5 * random.fraction());
            wait_until(Duration::from_secs(120), "progress before the kill", || {
                replica.metric("downbeat_events_total") >= target
            });
            // Past the auto-commit interval (1 s): offsets were committed
            // since this process started, so a replica that kept no state
            // would lose the windows in progress.
            std::thread::sleep(Duration::from_millis(1500));
        }
        let seen = replica.metric("downbeat_events_total");
        replica.kill_9();
        eprintln!("round {round}: killed at {seen} events");
        if seen > base && seen < total as f64 {
            killed_mid_stream += 1;
        }
    }
    assert!(killed_mid_stream >= 3, "the kills should land mid-stream");

    broker.produce("listens", &parts[5]);
    let replica = Replica::start(&broker, "listens", "crash", dir.path(), "r", &args);
    wait_until(Duration::from_secs(120), "every window", || {
        lines(&replica.windows()) >= lines(&expected)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_same_windows(
        &replica.windows(),
        &expected,
        "windows after crashes vs an uninterrupted run",
    );
    let sessions_path = dir.path().join("r.sessions.jsonl");
    let sessions = || sorted_lines(&std::fs::read_to_string(&sessions_path).unwrap_or_default());
    wait_until(Duration::from_secs(60), "every session", || {
        sessions().len() >= expected_sessions.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sessions() == expected_sessions,
        "sessions after crashes: {} vs {} from replay",
        sessions().len(),
        expected_sessions.len()
    );
    let m = replica.metrics();
    assert_eq!(
        m["downbeat_events_total"], total as f64,
        "no record lost or counted twice"
    );
    assert_eq!(
        m["downbeat_streams_total"],
        summary["streams"].as_f64().unwrap()
    );
    assert_eq!(
        m["downbeat_events_rejected_total{reason=\"timestamp_outlier\"}"], 3.0,
        "each outlier refused once, whichever checkpoint held it"
    );
    let windows: f64 = ["1m", "10m"]
        .iter()
        .map(|w| m[&format!("downbeat_windows_emitted_total{{window=\"{w}\"}}")])
        .sum();
    assert_eq!(windows, summary["windows"].as_f64().unwrap());
    let last = |kind: &str| -> Value {
        expected
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .rfind(|w| w["window"] == kind)
            .unwrap()
    };
    assert_eq!(
        m["downbeat_window_streams{window=\"10m\"}"],
        last("sliding")["streams"].as_f64().unwrap()
    );
    assert_eq!(
        m["downbeat_active_users{window=\"1m\"}"],
        last("tumbling")["active_users"].as_f64().unwrap()
    );
}

/// Sum the records of each window over replicas: (kind, start) -> summed fields.
fn summed(outputs: &[String]) -> BTreeMap<(String, i64), Value> {
    let mut sums: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for text in outputs {
        for line in text.lines() {
            let w: Value = serde_json::from_str(line).unwrap();
            let key = (
                w["window"].as_str().unwrap().to_owned(),
                w["start_ms"].as_i64().unwrap(),
            );
            let entry = sums.entry(key).or_insert_with(|| {
                serde_json::json!({
                    "streams": 0, "active_users": 0, "breakdown": {}
                })
            });
            add(&mut entry["streams"], &w["streams"]);
            add(&mut entry["active_users"], &w["active_users"]);
            add_all(&mut entry["breakdown"], &w["breakdown"]);
        }
    }
    sums
}

fn add(into: &mut Value, value: &Value) {
    *into = (into.as_u64().unwrap_or(0) + value.as_u64().unwrap()).into();
}

/// Add every number in `value` into `into`, recursively by key.
fn add_all(into: &mut Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if !into.is_object() {
                *into = Value::Object(Default::default());
            }
            for (k, v) in map {
                let slot = into
                    .as_object_mut()
                    .unwrap()
                    .entry(k.clone())
                    .or_insert(Value::Null);
                add_all(slot, v);
            }
        }
        Value::Number(_) => add(into, value),
        _ => {}
    }
}

/// A scratch directory, removed at the end unless DOWNBEAT_KEEP_TEST_DIRS is
/// set (then its path, with the replicas' logs, is printed).
struct Scratch {
    path: PathBuf,
    _removed_on_drop: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("DOWNBEAT_KEEP_TEST_DIRS").is_some() {
            let path = dir.keep();
            eprintln!("keeping {}", path.display());
            return Self {
                path,
                _removed_on_drop: None,
            };
        }
        Self {
            path: dir.path().to_owned(),
            _removed_on_drop: Some(dir),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[test]
fn two_replicas_split_the_topic_and_hand_over_partitions_exactly() {
    let _serial = serial();
    let dir = Scratch::new();
    let checkpoints = dir.path().join("checkpoints");
    let shared = ["--checkpoint-dir", checkpoints.to_str().unwrap()];
    hand_over_exactly(&dir, &shared, &shared);
}

/// As above with no shared directory: each replica keeps its own, and the
/// partition checkpoints also go to a state topic, which the survivor
/// resumes from.
#[test]
fn replicas_hand_over_through_the_state_topic_with_no_shared_directory() {
    let _serial = serial();
    let dir = Scratch::new();
    let own_a = [
        "--checkpoint-dir",
        "a-state",
        "--state-topic",
        "downbeat-state",
    ];
    let own_b = [
        "--checkpoint-dir",
        "b-state",
        "--state-topic",
        "downbeat-state",
    ];
    hand_over_exactly(&dir, &own_a, &own_b);
    assert!(dir.path().join("a-state").is_dir() && dir.path().join("b-state").is_dir());
}

/// Two replicas split 4 partitions; after the first half of the data one
/// stops and the other takes its partitions over: summed over replicas,
/// every window and counter equals one `replay`, and the sessions both
/// write are replay's (the open ones handed over with the partitions).
fn hand_over_exactly(dir: &Scratch, state_a: &[&str], state_b: &[&str]) {
    let total = 40_000u64;
    let input = generated(dir.path(), "events.jsonl", total, 20);
    let replay_sessions = dir.path().join("replay.sessions.jsonl");
    let (_, summary) = common::replay(
        &input,
        dir.path(),
        &["--sessions", replay_sessions.to_str().unwrap()],
    );
    let expected = std::fs::read_to_string(dir.path().join("windows.jsonl")).unwrap();
    let expected_sessions = sorted_lines(&std::fs::read_to_string(&replay_sessions).unwrap());
    let text = std::fs::read_to_string(&input).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let (first, second) = all.split_at(all.len() / 2);
    let first_half = dir.path().join("first.jsonl");
    let second_half = dir.path().join("second.jsonl");
    std::fs::write(&first_half, first.join("\n") + "\n").unwrap();
    std::fs::write(&second_half, second.join("\n") + "\n").unwrap();

    let broker = Broker::start();
    broker.create_topic("listens", 4);
    // The pauses below (a replica leaving, the next half produced) stay
    // well under the idle timeout, so the idle rule does not close windows
    // of this historical data early.
    let common = [
        "--idle-timeout-ms",
        "20000",
        "--checkpoint-interval-ms",
        "200",
    ];
    let args_a = [
        &common[..],
        state_a,
        &["--emit-sessions", "a.sessions.jsonl"],
    ]
    .concat();
    let args_b = [
        &common[..],
        state_b,
        &["--emit-sessions", "b.sessions.jsonl"],
    ]
    .concat();
    let mut a = Replica::start(&broker, "listens", "pair", dir.path(), "a", &args_a);
    let b = Replica::start(&broker, "listens", "pair", dir.path(), "b", &args_b);
    wait_until(
        Duration::from_secs(60),
        "both replicas to hold partitions",
        || {
            a.metric("downbeat_kafka_assigned_partitions") >= 1.0
                && b.metric("downbeat_kafka_assigned_partitions") >= 1.0
                && a.metric("downbeat_kafka_assigned_partitions")
                    + b.metric("downbeat_kafka_assigned_partitions")
                    == 4.0
        },
    );
    broker.produce("listens", &first_half);
    let half = first.len() as f64;
    wait_until(
        Duration::from_secs(120),
        "the first half to be consumed",
        || a.metric("downbeat_events_total") + b.metric("downbeat_events_total") == half,
    );
    assert!(
        a.metric("downbeat_events_total") > 0.0 && b.metric("downbeat_events_total") > 0.0,
        "both replicas consume"
    );
    let counted_by_a = a.metrics();
    a.stop();
    broker.produce("listens", &second_half);
    wait_until(
        Duration::from_secs(60),
        "the survivor to take every partition",
        || b.metric("downbeat_kafka_assigned_partitions") == 4.0,
    );
    wait_until(
        Duration::from_secs(120),
        "the second half to be consumed",
        || {
            counted_by_a["downbeat_events_total"] + b.metric("downbeat_events_total")
                == total as f64
        },
    );
    // Let the idle rule close the last windows.
    let expected_sums = summed(std::slice::from_ref(&expected));
    wait_until(Duration::from_secs(60), "the last windows", || {
        summed(&[a.windows(), b.windows()]).len() >= expected_sums.len()
    });
    let sessions = || {
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        sorted_lines(&(read("a.sessions.jsonl") + &read("b.sessions.jsonl")))
    };
    wait_until(Duration::from_secs(60), "every session", || {
        sessions().len() >= expected_sessions.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sessions() == expected_sessions,
        "sessions of both replicas: {} vs {} from replay",
        sessions().len(),
        expected_sessions.len()
    );

    let counted_by_b = b.metrics();
    for key in [
        "downbeat_events_total",
        "downbeat_streams_total",
        "downbeat_late_events_total",
    ] {
        let sum = counted_by_a[key] + counted_by_b[key];
        let single = match key {
            "downbeat_events_total" => summary["lines"].as_f64().unwrap(),
            "downbeat_streams_total" => summary["streams"].as_f64().unwrap(),
            _ => 0.0,
        };
        assert_eq!(
            sum, single,
            "{key} summed over replicas (late: {} + {})",
            counted_by_a["downbeat_late_events_total"], counted_by_b["downbeat_late_events_total"]
        );
    }
    for level in ["free", "paid"] {
        let key = format!("downbeat_streams_by_level_total{{level=\"{level}\"}}");
        let from_windows: u64 = expected
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|w| w["window"] == "tumbling")
            .map(|w| w["breakdown"]["level"][level].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            counted_by_a[&key] + counted_by_b[&key],
            from_windows as f64,
            "{key}"
        );
    }
    let got = summed(&[a.windows(), b.windows()]);
    assert_eq!(got.len(), expected_sums.len(), "every window, once");
    for (key, want) in &expected_sums {
        assert_eq!(
            got.get(key),
            Some(want),
            "window {key:?}: replicas' records summed"
        );
    }
}

#[test]
fn the_engine_reconnects_after_the_broker_restarts_and_readiness_follows() {
    let _serial = serial();
    let dir = Scratch::new();
    let mut broker = Broker::start();
    let port = broker.port;
    broker.create_topic("listens", 2);
    let now_events = |name: &str, count: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            stdout_of(downbeat().args(["generate", "--count", count, "--rate", "100"])),
        )
        .unwrap();
        path
    };
    broker.produce("listens", &now_events("one.jsonl", "500"));
    let mut replica = Replica::start(&broker, "listens", "r", dir.path(), "r", &[]);
    wait_until(Duration::from_secs(60), "ready and consuming", || {
        replica.ready() && replica.metric("downbeat_events_total") == 500.0
    });

    broker.stop();
    wait_until(
        Duration::from_secs(60),
        "not ready while the broker is gone",
        || !replica.ready(),
    );
    assert!(replica.metric("downbeat_kafka_connection_errors_total") > 0.0);
    assert_eq!(get(replica.port, "/healthz").unwrap().0, 200, "still alive");
    assert_eq!(
        replica.metric("downbeat_events_total"),
        500.0,
        "last results still served"
    );

    let broker = Broker::start_on(port);
    broker.create_topic("listens", 2);
    broker.produce("listens", &now_events("two.jsonl", "2000"));
    wait_until(Duration::from_secs(90), "ready again and consuming", || {
        replica.assert_running();
        replica.ready() && replica.metric("downbeat_events_total") > 500.0
    });
}

/// `downbeat merge` on a free port reading `partials`, writing `name`.
fn start_merger(broker: &impl Kafka, dir: &Path, name: &str) -> (common::KillOnDrop, PathBuf, u16) {
    start_merger_with(broker, dir, name, &[])
}

/// Replica flags for the merge tests: its own directory, the state topic,
/// the partials topic; an idle timeout longer than the pauses of a test;
/// static membership (a replica restarted in place takes its place back).
fn merge_tier_args(name: &str, static_member: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--idle-timeout-ms",
        "20000",
        "--checkpoint-dir",
        &format!("{name}-state"),
        "--state-topic",
        "downbeat-state",
        "--partials-topic",
        "partials",
    ]
    .map(str::to_owned)
    .to_vec();
    if static_member {
        args.push("--kafka-property".to_owned());
        args.push(format!("group.instance.id={name}"));
    }
    args
}

fn start_merge_replicas(
    broker: &impl Kafka,
    dir: &Path,
    names: &[&str],
    static_members: bool,
) -> Vec<Replica> {
    names
        .iter()
        .map(|name| {
            let args = merge_tier_args(name, static_members);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Replica::start(broker, "listens", "tier", dir, name, &args)
        })
        .collect()
}

fn assigned(replicas: &[Replica]) -> f64 {
    replicas
        .iter()
        .map(|r| r.metric("downbeat_kafka_assigned_partitions").max(0.0))
        .sum()
}

/// The real Sparkify data, a random key per record over 8 partitions, in
/// two halves; 3 replicas, each with its own directory (no shared
/// filesystem: the state topic); after the first half one is killed with
/// SIGKILL and never comes back: the survivors take its partitions over
/// from the state topic. The merger's windows equal `replay`'s byte for
/// byte, each once. On librdkafka's mock cluster: tansu 0.6 never expires
/// the dead member, so its partitions would stay with it.
///
/// (It once timed out in CI: rdkafka's `flush` gave up on the partials
/// after about a second, not ten, which stopped a replica as not durable;
/// see `kafka::acknowledged`.)
#[test]
fn a_merger_over_three_replicas_equals_replay_when_one_dies() {
    let _serial = serial();
    let dir = Scratch::new();
    let broker = MockBroker::start();
    for (topic, partitions) in [("listens", 8), ("partials", 8), ("downbeat-state", 1)] {
        broker.create_topic(topic, partitions);
    }
    three_replicas_one_killed(&broker, &dir, false);
}

/// The same on tansu, the killed replica coming back in its place later
/// (static membership).
#[test]
fn a_merger_over_three_replicas_equals_replay_when_one_is_killed_and_restarted() {
    let _serial = serial();
    let dir = Scratch::new();
    let broker = Broker::start();
    broker.create_topic("listens", 8);
    three_replicas_one_killed(&broker, &dir, true);
}

fn three_replicas_one_killed(broker: &impl Kafka, dir: &Scratch, comes_back: bool) {
    let input = common::eventsim_file(dir.path());
    let (expected, _) = replay_of(&input, dir.path());
    let text = std::fs::read_to_string(&input).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let (first, second) = all.split_at(all.len() / 2);
    let first_half = dir.path().join("first.jsonl");
    let second_half = dir.path().join("second.jsonl");
    std::fs::write(&first_half, first.join("\n") + "\n").unwrap();
    std::fs::write(&second_half, second.join("\n") + "\n").unwrap();

    let (_merger, merged, port) = start_merger(broker, dir.path(), "merger");
    let mut replicas = start_merge_replicas(broker, dir.path(), &["a", "b", "c"], comes_back);
    wait_until(
        Duration::from_secs(60),
        "the replicas to split 8 partitions",
        || assigned(&replicas) == 8.0 && replicas.iter().all(|r| r.ready()),
    );
    broker.produce_keyed("listens", &first_half, "random");
    let events = |replicas: &[Replica]| -> f64 {
        replicas
            .iter()
            .map(|r| r.metric("downbeat_events_total").max(0.0))
            .sum()
    };
    wait_until(
        Duration::from_secs(120),
        "the first half to be consumed",
        || events(&replicas) >= first.len() as f64,
    );
    replicas[2].kill_9();
    broker.produce_keyed("listens", &second_half, "random");
    replicas.pop();
    if comes_back {
        std::thread::sleep(Duration::from_secs(2));
        replicas.extend(start_merge_replicas(broker, dir.path(), &["c"], true));
    } else {
        wait_until(
            Duration::from_secs(60),
            "the survivors to take every partition",
            || assigned(&replicas) == 8.0,
        );
    }
    let read = || std::fs::read_to_string(&merged).unwrap_or_default();
    wait_until(Duration::from_secs(120), "every global window", || {
        lines(&read()) >= lines(&expected)
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_same_windows(&read(), &expected, "merged windows vs replay");
    let metrics = get(port, "/metrics").unwrap().1;
    for series in [
        "downbeat_merge_records_total{outcome=\"late\"}",
        "downbeat_merge_records_total{outcome=\"invalid\"}",
    ] {
        assert!(!metrics.contains(series), "{series} counted:\n{metrics}");
    }
    assert!(metrics.contains("downbeat_merge_source_partitions 8"));
}

/// Records without a key over 4 partitions, thousands of users a minute
/// (sketches past 2,048 users), two replicas that start while the data is
/// there (a rebalance mid-read): streams, breakdowns and the top K equal
/// `replay`, active users within 2%. The merger killed with SIGKILL and
/// started again writes the same windows; a broken partial is counted and
/// kept aside, and does not stall it.
#[test]
fn a_merger_over_unkeyed_generated_events_is_exact_and_restarts_identically() {
    let _serial = serial();
    let dir = Scratch::new();
    let config = dir.path().join("users.toml");
    std::fs::write(&config, "[generator]\nusers = 20000\n").unwrap();
    let input = dir.path().join("events.jsonl");
    let events = stdout_of(
        downbeat()
            .arg("generate")
            .arg("--config")
            .arg(&config)
            .args([
                "--count",
                "120000",
                "--rate",
                "200",
                "--start-ms",
                "1700000000000",
                "--seed",
                "5",
            ]),
    );
    std::fs::write(&input, events).unwrap();
    let (expected, _) = replay_of(&input, dir.path());

    let broker = Broker::start();
    broker.create_topic("listens", 4);
    broker.produce_keyed("listens", &input, "none");
    let (first_merger, merged, _) = start_merger(&broker, dir.path(), "merger");
    let replicas = start_merge_replicas(&broker, dir.path(), &["a", "b"], true);
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    wait_until(Duration::from_secs(180), "every global window", || {
        lines(&read(&merged)) >= lines(&expected)
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert!(assigned(&replicas) == 4.0);
    assert_close_windows(&read(&merged), &expected);

    // A broken record and a partial of a future format on the topic.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"type\":\"partial\",\"version\":1}\nnot json\n").unwrap();
    broker.produce_keyed("partials", &broken, "none");
    drop(first_merger);
    let rejects = dir.path().join("rejects.jsonl");
    let (_second, again, port) = start_merger_with(
        &broker,
        dir.path(),
        "merger-again",
        &["--rejects".as_ref(), rejects.as_os_str()],
    );
    wait_until(
        Duration::from_secs(60),
        "the restarted merger's windows",
        || lines(&read(&again)) >= lines(&expected),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_same_windows(&read(&again), &read(&merged), "restarted merger vs first");
    let metrics = get(port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("downbeat_merge_records_total{outcome=\"invalid\"} 1")
            || metrics.contains("downbeat_merge_records_total{outcome=\"undecodable\"} 2"),
        "refusals counted:\n{metrics}"
    );
    assert_eq!(lines(&read(&rejects)), 2, "both kept aside");
}

/// `downbeat merge` reading `partials`, writing `name`, with extra flags.
fn start_merger_with(
    broker: &impl Kafka,
    dir: &Path,
    name: &str,
    extra: &[&std::ffi::OsStr],
) -> (common::KillOnDrop, PathBuf, u16) {
    let port = free_port();
    let windows = dir.join(format!("{name}.windows.jsonl"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = downbeat()
        .args(["merge", "--brokers", &broker.address()])
        .args(["--partials-topic", "partials"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--emit-windows")
        .arg(&windows)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("DOWNBEAT_TEST_MERGER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let merger = common::KillOnDrop(child);
    wait_until(Duration::from_secs(20), "the merger's /healthz", || {
        matches!(get(port, "/healthz"), Ok((200, _)))
    });
    (merger, windows, port)
}

/// Every field equal but `active_users`, which is within 2%.
fn assert_close_windows(got: &str, expected: &str) {
    assert_eq!(lines(got), lines(expected), "window count");
    let mut sketched = 0;
    for (got, expected) in got.lines().zip(expected.lines()) {
        let mut got: Value = serde_json::from_str(got).unwrap();
        let mut expected: Value = serde_json::from_str(expected).unwrap();
        let users = |w: &mut Value| w.as_object_mut().unwrap().remove("active_users").unwrap();
        let (got_users, expected_users) = (
            users(&mut got).as_f64().unwrap(),
            users(&mut expected).as_f64().unwrap(),
        );
        assert_eq!(got, expected, "every field but active users");
        let error = (got_users - expected_users).abs() / expected_users.max(1.0);
        assert!(
            error <= 0.02,
            "active users {got_users} vs {expected_users}"
        );
        sketched += usize::from(expected_users > 2048.0);
    }
    assert!(sketched > 0, "some windows count users by sketch");
}

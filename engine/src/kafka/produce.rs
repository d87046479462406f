//! `downbeat produce`: fill a topic from the built-in generator or a file,
//! keyed by userId (or a random key, or none: `--key`), so the whole pipeline can be demonstrated and
//! load-tested without other tools.

use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Serialize;

use crate::output::now_ms;
use crate::source::diurnal::EventClock;
use crate::source::generator::{Generator, GeneratorConfig};

/// What to produce.
pub struct ProduceSettings {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Target topic.
    pub topic: String,
    /// JSON Lines file or `-`; None: the generator.
    pub input: Option<String>,
    /// Generator: events per second (paced in real time unless `count`).
    pub rate_per_sec: f64,
    /// Generator: stop after this many events, produced as fast as possible
    /// with event times spaced by the rate and ending now.
    pub count: Option<u64>,
    /// Generator: event time of the first event (epoch ms).
    pub start_ms: Option<i64>,
    /// Extra librdkafka producer properties.
    pub properties: Vec<(String, String)>,
    /// The generator's settings (seed, catalogue).
    pub generator: GeneratorConfig,
    /// How records are keyed.
    pub key: KeyBy,
}

/// How `produce` keys its records (and so spreads them over partitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyBy {
    /// The record's userId: a user's plays stay in one partition.
    #[default]
    User,
    /// A pseudo-random key per record (the same for a record's index on
    /// every run): a user's plays spread over every partition, as with most
    /// producers.
    Random,
    /// No key: the producer's partitioner spreads them.
    None,
}

/// Printed at the end, on stderr.
#[derive(Debug, Default, Serialize)]
pub struct ProduceSummary {
    /// Records handed to the producer.
    pub records: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records that failed delivery.
    pub failed: u64,
    /// Records produced without a key (`--key none`, or no userId found).
    pub unkeyed: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Delivered records per second.
    pub records_per_sec: f64,
}

/// Counts delivery reports.
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                tracing::warn!(%error, "delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The raw text of the record's `userId` value (quotes removed), the key
/// that keeps a user's events in one partition. A plain scan, not a full
/// parse: a line without it is produced unkeyed.
pub fn user_key(line: &[u8]) -> Option<&[u8]> {
    let at = memchr::memmem::find(line, b"\"userId\"")?;
    let rest = &line[at + 8..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let value = rest[colon + 1..].trim_ascii_start();
    if let Some(quoted) = value.strip_prefix(b"\"") {
        let end = memchr::memchr(b'"', quoted)?;
        return Some(&quoted[..end]).filter(|k| !k.is_empty());
    }
    let end = value
        .iter()
        .position(|&b| matches!(b, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
        .unwrap_or(value.len());
    Some(&value[..end]).filter(|k| !k.is_empty() && *k != b"null")
}

struct Sender {
    producer: BaseProducer<Context>,
    topic: String,
    summary: ProduceSummary,
    bar: Option<ProgressBar>,
    started: Instant,
    key_by: KeyBy,
}

/// SplitMix64: a well-spread key from a record's index.
fn random_key(index: u64) -> [u8; 16] {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = b"0123456789abcdef"[((z >> (60 - 4 * i)) & 0xf) as usize];
    }
    key
}

impl Sender {
    fn send(&mut self, line: &[u8]) -> anyhow::Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let random;
        let key = match self.key_by {
            KeyBy::User => user_key(line),
            KeyBy::Random => {
                random = random_key(self.summary.records);
                Some(&random[..])
            }
            KeyBy::None => None,
        };
        if key.is_none() {
            self.summary.unkeyed += 1;
        }
        loop {
            let mut record = BaseRecord::to(&self.topic).payload(line);
            if let Some(key) = key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        self.summary.records += 1;
        if self.summary.records % 4096 == 0 {
            self.producer.poll(Duration::ZERO);
            if let Some(bar) = &self.bar {
                bar.set_position(self.summary.records);
                let rate = self.summary.records as f64 / self.started.elapsed().as_secs_f64();
                bar.set_message(format!("{rate:.0} records/s"));
            }
        }
        Ok(())
    }
}

/// Produce until the input ends, `count` is reached, or SIGINT.
pub fn produce(settings: ProduceSettings) -> anyhow::Result<ProduceSummary> {
    let deliveries = Arc::new(Deliveries {
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "downbeat-produce")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000");
    for (key, value) in &settings.properties {
        client.set(key, value);
    }
    let producer: BaseProducer<Context> =
        client.create_with_context(Context(Arc::clone(&deliveries)))?;
    let bar = io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} records {msg}").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut sender = Sender {
        producer,
        topic: settings.topic.clone(),
        summary: ProduceSummary::default(),
        bar,
        started: Instant::now(),
        key_by: settings.key,
    };
    match settings.input.as_deref() {
        Some(path) => {
            let reader: Box<dyn Read> = if path == "-" {
                Box::new(io::stdin())
            } else {
                Box::new(std::fs::File::open(path)?)
            };
            let mut reader = BufReader::with_capacity(1 << 16, reader);
            let mut line = Vec::with_capacity(1024);
            while reader.read_until(b'\n', &mut line)? > 0 {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                sender.send(text)?;
                line.clear();
            }
        }
        None => generate(&settings, &mut sender)?,
    }
    wait_for_deliveries(&sender.producer)?;
    if let Some(bar) = &sender.bar {
        bar.finish_and_clear();
    }
    let mut summary = sender.summary;
    summary.delivered = deliveries.delivered.load(Ordering::Relaxed);
    summary.failed = deliveries.failed.load(Ordering::Relaxed);
    summary.seconds = sender.started.elapsed().as_secs_f64();
    summary.records_per_sec = summary.delivered as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// Flush, however long a big backlog takes, as long as deliveries progress.
fn wait_for_deliveries(producer: &BaseProducer<Context>) -> anyhow::Result<()> {
    let mut pending = producer.in_flight_count();
    let mut stalled_since = Instant::now();
    while producer.flush(Duration::from_secs(5)).is_err() {
        let now_pending = producer.in_flight_count();
        if now_pending < pending {
            pending = now_pending;
            stalled_since = Instant::now();
        } else if stalled_since.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("{now_pending} records undelivered after 60 s without progress");
        }
    }
    Ok(())
}

fn generate(settings: &ProduceSettings, sender: &mut Sender) -> anyhow::Result<()> {
    let mut generator = Generator::for_rate(&settings.generator, settings.rate_per_sec);
    let diurnal = crate::live::diurnal_of(&settings.generator);
    let mut line = Vec::with_capacity(1024);
    match settings.count {
        Some(count) => {
            let rate = settings.rate_per_sec;
            let mut clock = match diurnal {
                Some(diurnal) => {
                    EventClock::diurnal(diurnal, rate, count, settings.start_ms, now_ms())?
                }
                None => EventClock::even(count, rate, settings.start_ms, now_ms())?,
            };
            for _ in 0..count {
                let ts = clock.next_ms();
                generator.set_activity(clock.activity(ts));
                line.clear();
                generator.write_event(ts, &mut line);
                sender.send(&line)?;
            }
        }
        None => {
            let mut last = Instant::now();
            let mut expected = 0.0;
            let mut produced: u64 = 0;
            loop {
                let now = now_ms();
                let multiplier = diurnal.as_ref().map_or(1.0, |d| d.multiplier(now));
                generator.set_activity(multiplier);
                let elapsed = last.elapsed();
                last += elapsed;
                expected += elapsed.as_secs_f64() * settings.rate_per_sec * multiplier;
                let due = expected as u64;
                for _ in produced..due {
                    line.clear();
                    generator.write_event(now, &mut line);
                    sender.send(&line)?;
                }
                produced = due;
                sender.producer.poll(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::user_key;

    #[test]
    fn the_key_is_the_user_id_as_text() {
        assert_eq!(
            user_key(br#"{"ts":1,"userId":"42","song":"x"}"#),
            Some(&b"42"[..])
        );
        assert_eq!(user_key(br#"{"userId": 42, "ts":1}"#), Some(&b"42"[..]));
        assert_eq!(user_key(br#"{"userId":7}"#), Some(&b"7"[..]));
        assert_eq!(user_key(br#"{"userId":""}"#), None);
        assert_eq!(user_key(br#"{"userId":null}"#), None);
        assert_eq!(user_key(b"not json"), None);
    }
}

//! The merge tier's input: the partials topic, every partition of it, read
//! from its start (it is compacted, and merging is deterministic, so a
//! restarted merger emits every window again, identically), into
//! [`GlobalMerge`]. A source partition's records are all in one partition
//! of the topic, in order; across them order does not matter.
//!
//! A window waits for every partition of the source topic: for its partial,
//! for progress past the window, or for the partition to be idle. A replica
//! claims a partition idle (the idle rule: read to its end, quiet for the
//! idle timeout) and repeats the claim every second while it lasts; the
//! merger honours a claim only for `idle_lease` after it was sent, so the
//! partitions of a replica that died are waited for until their new owner
//! reports them.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::time::Duration;

use downbeat_operators::{GlobalMerge, PartialError, WindowKind, WindowResult};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{Ingest, Pumped, Source, SourceError};
use crate::config::KafkaConfig;
use crate::kafka::state_topic::topic_partition_count;
use crate::output::now_ms;
use crate::sink::partials::PartialsRecord;

/// The merger's own series.
pub struct MergeMetrics {
    records: IntCounterVec,
    partitions: IntGauge,
    pending: IntGauge,
}

impl MergeMetrics {
    /// Create and register every series.
    pub fn new(registry: &Registry) -> Self {
        let records = IntCounterVec::new(
            Opts::new(
                "downbeat_merge_records_total",
                "Records of the partials topic read by the merger, by outcome: \
                 merged, progress, duplicate (a partial sent again, as after a \
                 hand-over), late (new content for a window already emitted), \
                 or refused by reason (version, invalid, undecodable).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let partitions = IntGauge::new(
            "downbeat_merge_source_partitions",
            "Partitions of the source topic every global window waits for.",
        )
        .expect("valid metric");
        let pending = IntGauge::new(
            "downbeat_merge_pending_windows",
            "Global windows waiting for a partition's partial or progress.",
        )
        .expect("valid metric");
        for metric in [
            Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(partitions.clone()),
            Box::new(pending.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        Self {
            records,
            partitions,
            pending,
        }
    }

    fn record(&self, outcome: &str) {
        self.records.with_label_values(&[outcome]).inc();
    }
}

/// A partition's latest idle claim: the replica's clock when it was sent.
type IdleClaims = HashMap<u32, i64>;

/// (window, start, partition, part) of a partial.
type PartialKey = (WindowKind, i64, u32, u32);

/// Digests of the partials merged most recently, so a partial sent again
/// after its window was emitted (a hand-over re-publishes what the old
/// owner had sent) is told apart from one with new content (late).
#[derive(Default)]
struct Merged {
    digests: HashMap<PartialKey, u64>,
    order: VecDeque<PartialKey>,
}

impl Merged {
    /// Partials remembered: a day of two windows a minute over 64 partitions.
    const CAPACITY: usize = 200_000;

    fn insert(&mut self, key: PartialKey, digest: u64) {
        if self.digests.insert(key, digest).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.digests.remove(&oldest);
            }
        }
    }

    fn is_copy(&self, key: &PartialKey, digest: u64) -> bool {
        self.digests.get(key) == Some(&digest)
    }
}

fn digest(payload: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

/// Reads partials and progress, emits global windows.
pub struct PartialsSource {
    consumer: BaseConsumer,
    merge: GlobalMerge,
    out: Vec<WindowResult>,
    topic: String,
    idle_since: IdleClaims,
    merged: Merged,
    idle_lease_ms: i64,
    metrics: MergeMetrics,
    rejects: Option<Box<dyn Write + Send>>,
    caught_up: bool,
}

impl PartialsSource {
    /// Read `kafka.partials_topic` from its start into `merge`; an idle
    /// claim holds for `idle_lease` after it was sent. Refused records are
    /// kept, verbatim, in `rejects`.
    pub fn open(
        kafka: &KafkaConfig,
        merge: GlobalMerge,
        idle_lease: Duration,
        registry: &Registry,
        rejects: Option<Box<dyn Write + Send>>,
    ) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &kafka.group)
            .set("client.id", "downbeat-merge")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Records deleted under a merger that lags past the retention:
            // go on from the oldest kept (the log says so), never skip to
            // the end.
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50");
        for (key, value) in &kafka.properties {
            config.set(key, value);
        }
        let partitions = topic_partition_count(&config, &kafka.partials_topic)?;
        let consumer: BaseConsumer = config.create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            assignment.add_partition_offset(&kafka.partials_topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer,
            merge,
            out: Vec::new(),
            topic: kafka.partials_topic.clone(),
            idle_since: HashMap::new(),
            merged: Merged::default(),
            idle_lease_ms: i64::try_from(idle_lease.as_millis()).unwrap_or(i64::MAX),
            metrics: MergeMetrics::new(registry),
            rejects,
            caught_up: false,
        })
    }

    /// One record of the partials topic; a bad one is counted, logged and
    /// kept aside.
    fn on_record(&mut self, payload: &[u8], offset: i64) {
        match serde_json::from_slice::<PartialsRecord>(payload) {
            Ok(PartialsRecord::Partial(partial)) => {
                let (partition, end_ms) = (partial.partition, partial.end_ms);
                let key = (partial.window, partial.start_ms, partition, partial.part);
                let digest = digest(payload);
                tracing::debug!(offset, ?key, end_ms, streams = partial.streams, "partial");
                match self.merge.offer(*partial) {
                    Ok(true) => {
                        self.metrics.record("merged");
                        self.merged.insert(key, digest);
                    }
                    Ok(false) if self.merged.is_copy(&key, digest) => {
                        self.metrics.record("duplicate");
                    }
                    Ok(false) => {
                        self.metrics.record("late");
                        tracing::warn!(topic = %self.topic, offset, partition, end_ms, "partial for a window already emitted (its partition was idle, or its content changed): not counted");
                    }
                    Err(error) => {
                        let reason = match error {
                            PartialError::Version(_) => "version",
                            PartialError::Invalid(_) => "invalid",
                        };
                        self.refuse(reason, &error, payload, offset);
                    }
                }
            }
            Ok(PartialsRecord::Progress {
                partition,
                through_ms,
                partitions,
                idle,
                at_ms,
            }) => {
                self.metrics.record("progress");
                tracing::debug!(offset, partition, through_ms, idle, at_ms, "progress");
                self.on_partitions(partitions);
                self.merge.progress(partition, through_ms);
                if idle {
                    self.idle_since.insert(partition, at_ms);
                } else {
                    self.idle_since.remove(&partition);
                }
            }
            Err(error) => self.refuse("undecodable", &error, payload, offset),
        }
    }

    /// The source topic's partition count, as a replica saw it.
    fn on_partitions(&mut self, partitions: u32) {
        let known = self.merge.partitions();
        if partitions > known {
            if known > 0 {
                tracing::warn!(
                    from = known,
                    to = partitions,
                    "the source topic has more partitions now: windows wait for them too"
                );
            }
            self.merge.set_partitions(partitions);
            self.metrics.partitions.set(i64::from(partitions));
        } else if partitions < known {
            tracing::warn!(
                known,
                reported = partitions,
                "a replica reports fewer partitions than known: still waiting for all of them"
            );
        }
    }

    fn refuse(&mut self, reason: &str, error: &dyn std::fmt::Display, payload: &[u8], offset: i64) {
        self.metrics.record(reason);
        tracing::warn!(topic = %self.topic, offset, reason, %error, "partials record refused");
        if let Some(writer) = self.rejects.as_mut() {
            let kept = writer
                .write_all(payload)
                .and_then(|()| writer.write_all(b"\n"))
                .and_then(|()| writer.flush());
            if let Err(error) = kept {
                tracing::error!(%error, "cannot write to the rejects file; no longer keeping refused records");
                self.rejects = None;
            }
        }
    }

    fn emit(&mut self, now_ms: i64, ingest: &mut dyn Ingest) {
        let (claims, lease) = (&self.idle_since, self.idle_lease_ms);
        let idle = |partition: u32| {
            claims
                .get(&partition)
                .is_some_and(|&at_ms| now_ms.saturating_sub(at_ms) <= lease)
        };
        self.merge.emit_ready_with_idle(idle, &mut self.out);
        self.metrics.pending.set(self.merge.pending() as i64);
        if !self.out.is_empty() {
            ingest.pipeline().push_closed(&mut self.out);
            ingest.publish();
        }
    }
}

/// Records read in one pump before the merger emits what they completed.
const RECORDS_PER_PUMP: usize = 4096;

impl Source for PartialsSource {
    fn pump(&mut self, timeout: Duration, ingest: &mut dyn Ingest) -> Result<Pumped, SourceError> {
        let mut pumped = Pumped::Idle;
        let mut wait = timeout;
        for _ in 0..RECORDS_PER_PUMP {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let offset = message.offset();
                    let payload = message.payload().unwrap_or_default().to_vec();
                    drop(message);
                    self.on_record(&payload, offset);
                    pumped = Pumped::Data;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consume error");
                    break;
                }
                None => {
                    // Read to the end of the topic: rebuilt.
                    if !self.caught_up {
                        self.caught_up = true;
                        ingest.set_ready(true);
                    }
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        self.emit(now_ms(), ingest);
        Ok(pumped)
    }

    fn tick(&mut self, now_ms: i64, ingest: &mut dyn Ingest) {
        self.emit(now_ms, ingest);
    }
}

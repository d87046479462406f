//! The partials topic: each replica's partial windows, per input partition,
//! for the merge tier (`downbeat merge`).
//!
//! Records are JSON, keyed so a compacted topic keeps the newest of each:
//! - a partial window, key `<window>/<start_ms>/<partition>/<part>`: the
//!   same content whenever it is published again (after a crash or a
//!   hand-over); split into parts of at most [`MAX_SONG_BYTES`] of songs so
//!   a record stays within Kafka's default message size (1 MB);
//! - progress, key `progress/<partition>`: windows ending at or before
//!   `through_ms` hold the partition (a partition with no plays in a window
//!   sends no partial), with the source topic's partition count, and
//!   whether the partition is idle (read to its end and quiet for the idle
//!   timeout). An idle partition's progress is sent again every
//!   [`IDLE_HEARTBEAT_MS`]: the merger honours the claim only while it is
//!   fresh, so a replica that dies does not leave its partitions idle.
//!
//! [`PartialsSink::persist`] waits for the broker's acknowledgement, so a
//! checkpoint (and the offsets it commits) never runs ahead of the partials.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use downbeat_operators::Partial;
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseRecord;
use serde::{Deserialize, Serialize};

use super::{ClosedWindow, Sink, Written};
use crate::config::KafkaConfig;
use crate::kafka::acknowledged::{AcknowledgedProducer, Unacknowledged};
use crate::kafka::state_topic::{create_topic, topic_partition_count};
use crate::output::now_ms;
use crate::pipeline::InputProgress;

/// How long persisting may wait for the broker's acknowledgement.
const PERSIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The songs of one partial record, in bytes of JSON at most (about): with
/// the users' sketch (about 130 kB as JSON) and the rest, a record stays
/// under Kafka's default `message.max.bytes` of 1 MB.
pub const MAX_SONG_BYTES: usize = 640 * 1024;

/// How long the partials topic keeps a window (when downbeat creates it):
/// 7 days. A merger restarted rebuilds the windows it still holds.
const PARTIALS_RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// How often an idle partition's progress is sent again.
const IDLE_HEARTBEAT_MS: i64 = 1_000;

/// One record of the partials topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PartialsRecord {
    /// One window's state for one partition.
    Partial(Box<Partial>),
    /// Windows ending at or before `through_ms` hold `partition`, one of
    /// the source topic's `partitions`.
    Progress {
        /// The source topic's partition.
        partition: u32,
        /// Its progress.
        through_ms: i64,
        /// The source topic's partition count.
        partitions: u32,
        /// The partition holds no window (the idle rule) as of `at_ms`.
        #[serde(default)]
        idle: bool,
        /// The replica's clock when sent (epoch ms).
        #[serde(default)]
        at_ms: i64,
    },
}

/// Publishes partial windows and progress to the partials topic.
pub struct PartialsSink {
    producer: AcknowledgedProducer,
    /// A record the producer gave up on: no checkpoint may pass it again.
    lost: Option<String>,
    topic: String,
    /// Partitions of the partials topic: a source partition's records all
    /// go to one of them (`partition % count`), in order.
    topic_partitions: u32,
    /// Progress last published, per partition, and when.
    sent: HashMap<u32, (InputProgress, u32, i64)>,
}

impl PartialsSink {
    /// Open `kafka.partials_topic` (created compacted, one partition, if
    /// missing; an existing topic may have more).
    pub fn open(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &kafka.brokers);
        for (key, value) in &kafka.properties {
            base.set(key, value);
        }
        // Compacted (a re-published partial replaces the first), and deleted
        // after the retention (every window has its own keys).
        let retention_ms = PARTIALS_RETENTION_MS.to_string();
        let settings = [
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", retention_ms.as_str()),
        ];
        create_topic(&base, &kafka.partials_topic, &settings)?;
        let topic_partitions = topic_partition_count(&base, &kafka.partials_topic)?;
        let producer = AcknowledgedProducer::create(&base, "downbeat-partials", 5, "partials")?;
        Ok(Self {
            producer,
            lost: None,
            topic: kafka.partials_topic.clone(),
            topic_partitions,
            sent: HashMap::new(),
        })
    }

    /// Send one record of source partition `source` (keys stay unique per
    /// window for compaction; the partition is chosen, not hashed, so a
    /// source partition's records keep their order).
    fn send(&self, source: u32, key: &str, record: &PartialsRecord) -> io::Result<()> {
        let value = serde_json::to_vec(record).expect("partials serialize");
        let partition = i32::try_from(source % self.topic_partitions.max(1)).unwrap_or(0);
        let record = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(key)
            .partition(partition)
            .payload(&value);
        self.producer.send(record).map_err(io::Error::other)
    }
}

impl Sink for PartialsSink {
    fn window(&mut self, _window: &ClosedWindow<'_>) -> io::Result<()> {
        Ok(())
    }

    fn partials(
        &mut self,
        partials: &[Partial],
        progress: &[InputProgress],
        inputs: usize,
    ) -> io::Result<()> {
        for partial in partials {
            for part in partial.clone().split(MAX_SONG_BYTES) {
                let key = format!(
                    "{}/{}/{}/{}",
                    part.window.name(),
                    part.start_ms,
                    part.partition,
                    part.part
                );
                tracing::debug!(%key, streams = part.streams, "partial sent");
                let source = part.partition;
                self.send(source, &key, &PartialsRecord::Partial(Box::new(part)))?;
            }
        }
        let partitions = u32::try_from(inputs).unwrap_or(u32::MAX);
        let now = now_ms();
        for &input in progress {
            if let Some(&(sent, sent_partitions, at_ms)) = self.sent.get(&input.input) {
                let heartbeat_due = input.idle && now - at_ms >= IDLE_HEARTBEAT_MS;
                if sent == input && sent_partitions == partitions && !heartbeat_due {
                    continue;
                }
            }
            let record = PartialsRecord::Progress {
                partition: input.input,
                through_ms: input.through_ms,
                partitions,
                idle: input.idle,
                at_ms: now,
            };
            tracing::debug!(?input, partitions, "progress sent");
            self.send(input.input, &format!("progress/{}", input.input), &record)?;
            self.sent.insert(input.input, (input, partitions, now));
        }
        self.producer.poll();
        Ok(())
    }

    /// Every partial sent is acknowledged, or an error: a checkpoint must
    /// not pass partials the broker does not have. Still in flight after
    /// PERSIST_TIMEOUT is `TimedOut` (defer the checkpoint); a delivery the
    /// producer gave up on is any other error (stop).
    fn persist(&mut self) -> io::Result<Option<Written>> {
        if let Some(why) = &self.lost {
            return Err(io::Error::other(why.clone()));
        }
        match self.producer.wait(PERSIST_TIMEOUT) {
            Ok(()) => Ok(None),
            Err(slow @ Unacknowledged::InFlight { .. }) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, slow))
            }
            Err(lost @ Unacknowledged::Lost { .. }) => {
                self.lost = Some(lost.to_string());
                Err(io::Error::other(lost))
            }
        }
    }

    fn name(&self) -> &'static str {
        "partials topic"
    }
}

#[cfg(test)]
mod tests {
    use downbeat_operators::{user_hash, AggregatorConfig, Dimensions, Play, WindowAggregator};

    use super::*;

    /// The case: 20,000 songs in a minute from one partition, with
    /// thousands of users (the sketch), names as long as EventSim's. Every
    /// record of its tumbling partial fits in Kafka's default 1 MB message.
    #[test]
    fn a_partial_of_twenty_thousand_songs_fits_in_one_megabyte_records() {
        let mut agg = WindowAggregator::new(AggregatorConfig {
            partials: true,
            ..AggregatorConfig::default()
        })
        .unwrap();
        agg.add_source(0, i64::MIN);
        for i in 0..40_000u32 {
            let artist = format!("The Artist Called Number {}", (i % 20_000) % 7_000);
            let song = format!("A Song Title Of Usual Length No. {}", i % 20_000);
            let song = agg.intern(&artist, &song);
            let play = Play {
                time_ms: 60_000 + i64::from(i),
                user_hash: user_hash(format!("user{}", i % 9_000).as_bytes()),
                song,
                dims: Dimensions::default(),
                duration_ms: Some(200_000),
            };
            agg.insert_from(0, play).unwrap();
        }
        agg.flush(&mut Vec::new());
        let tumbling = agg
            .take_partials()
            .into_iter()
            .find(|p| p.songs.len() == 20_000)
            .expect("the minute's partial");
        let parts = tumbling.split(MAX_SONG_BYTES);
        let sizes: Vec<usize> = parts
            .into_iter()
            .map(|part| {
                serde_json::to_vec(&PartialsRecord::Partial(Box::new(part)))
                    .unwrap()
                    .len()
            })
            .collect();
        eprintln!("partial of 20k songs: records of {sizes:?} bytes");
        assert!(sizes.len() >= 2, "split: {sizes:?}");
        assert!(sizes.iter().all(|&size| size < 1_000_000), "{sizes:?}");
    }
}

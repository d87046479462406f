//! Partition checkpoints in a Kafka topic, so a replica can take over a
//! partition from another, dead or alive, with no shared filesystem.
//!
//! Every checkpoint publishes one record per held partition, keyed
//! `<group>/<topic>/<partition>` with the [`PartitionCheckpoint`] as JSON,
//! and waits for the broker to acknowledge them (all in-sync replicas)
//! before the offsets they cover are committed. The topic is created
//! compacted (one partition), so it keeps the newest record per key. On an
//! assignment the replica reads it from the start to its end and keeps, per
//! partition, the entry with the highest `seq`, as it does across the
//! replicas' files in a checkpoint directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use thiserror::Error;

use super::acknowledged::{AcknowledgedProducer, Unacknowledged};
use super::partition::PartitionCheckpoint;
use crate::config::KafkaConfig;

/// The largest checkpoint record (one partition's, with its open sessions):
/// 32 MiB, about 600,000 sessions. The topic is created allowing it.
const MAX_RECORD_BYTES: &str = "33554432";

/// How long a checkpoint may wait for the broker's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the state topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the state topic could not be used.
#[derive(Debug, Error)]
pub enum StateTopicError {
    /// The client or a request failed: check the brokers and the ACLs on
    /// the state topic.
    #[error("state topic {topic}: {source}")]
    Kafka {
        /// The state topic.
        topic: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// The checkpoint records are not all acknowledged (slow or lost).
    #[error("state topic {topic}: {source}")]
    Unacknowledged {
        /// The state topic.
        topic: String,
        /// What is missing.
        source: Unacknowledged,
    },
    /// The broker did not answer in time.
    #[error("state topic {topic}: no answer within {seconds} s")]
    Timeout {
        /// The state topic.
        topic: String,
        /// The time allowed.
        seconds: u64,
    },
}

/// The state topic of one consumer group reading one topic.
pub struct StateTopic {
    topic: String,
    key_prefix: String,
    producer: AcknowledgedProducer,
    reader_config: ClientConfig,
}

impl StateTopic {
    /// Open `kafka.state_topic`, creating it (compacted) if missing.
    pub fn open(kafka: &KafkaConfig) -> Result<Self, StateTopicError> {
        let topic = kafka.state_topic.clone();
        let kafka_error = |source| StateTopicError::Kafka {
            topic: topic.clone(),
            source,
        };
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &kafka.brokers);
        for (key, value) in &kafka.properties {
            base.set(key, value);
        }
        create_topic(
            &base,
            &topic,
            &[
                ("cleanup.policy", "compact"),
                ("max.message.bytes", MAX_RECORD_BYTES),
            ],
        )
        .map_err(kafka_error)?;
        // A partition's checkpoint holds its open sessions: compressed (JSON
        // of ids and times shrinks about four times) and allowed past
        // librdkafka's 1 MB default, unless the user's properties say otherwise.
        let mut producer_config = base.clone();
        for (key, value) in [
            ("compression.type", "lz4"),
            ("message.max.bytes", MAX_RECORD_BYTES),
        ] {
            if !kafka.properties.contains_key(key) {
                producer_config.set(key, value);
            }
        }
        let producer =
            AcknowledgedProducer::create(&producer_config, "downbeat-state", 0, "checkpoints")
                .map_err(kafka_error)?;
        let mut reader_config = base;
        reader_config
            .set("client.id", "downbeat-state-reader")
            .set("group.id", "downbeat-state-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        Ok(Self {
            key_prefix: format!("{}/{}/", kafka.group, kafka.topic),
            topic,
            producer,
            reader_config,
        })
    }

    /// Publish `partitions` and wait until the broker has them.
    pub fn publish(&self, partitions: &[PartitionCheckpoint]) -> Result<(), StateTopicError> {
        for partition in partitions {
            let key = format!("{}{}", self.key_prefix, partition.partition);
            let value = serde_json::to_vec(partition).expect("checkpoints serialize");
            if value.len() > 1 << 20 {
                tracing::debug!(
                    partition = partition.partition,
                    bytes = value.len(),
                    "large checkpoint record (open sessions)"
                );
            }
            let record = BaseRecord::<str, [u8]>::to(&self.topic)
                .key(&key)
                .payload(&value);
            self.producer
                .send(record)
                .map_err(|source| self.error(source))?;
        }
        self.producer
            .wait(PUBLISH_TIMEOUT)
            .map_err(|source| StateTopicError::Unacknowledged {
                topic: self.topic.clone(),
                source,
            })
    }

    /// The newest checkpoint of each partition of this group's topic.
    pub fn latest_partitions(&self) -> Result<BTreeMap<i32, PartitionCheckpoint>, StateTopicError> {
        let consumer: BaseConsumer = self
            .reader_config
            .create()
            .map_err(|source| self.error(source))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, 0, READ_TIMEOUT)
            .map_err(|source| self.error(source))?;
        let mut latest: BTreeMap<i32, PartitionCheckpoint> = BTreeMap::new();
        if high <= low {
            return Ok(latest);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, 0, Offset::Offset(low))
            .map_err(|source| self.error(source))?;
        consumer
            .assign(&assignment)
            .map_err(|source| self.error(source))?;
        let started = Instant::now();
        let mut next = low;
        while next < high {
            if started.elapsed() > READ_TIMEOUT {
                return Err(StateTopicError::Timeout {
                    topic: self.topic.clone(),
                    seconds: READ_TIMEOUT.as_secs(),
                });
            }
            let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = polled.map_err(|source| self.error(source))?;
            next = message.offset() + 1;
            let ours = message
                .key()
                .and_then(|key| std::str::from_utf8(key).ok())
                .is_some_and(|key| key.starts_with(&self.key_prefix));
            if !ours {
                continue;
            }
            match serde_json::from_slice::<PartitionCheckpoint>(
                message.payload().unwrap_or_default(),
            ) {
                Ok(checkpoint) => {
                    let newer = latest
                        .get(&checkpoint.partition)
                        .is_none_or(|known| checkpoint.seq > known.seq);
                    if newer {
                        latest.insert(checkpoint.partition, checkpoint);
                    }
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic, offset = message.offset(), %error, "ignoring an unreadable checkpoint record");
                }
            }
        }
        Ok(latest)
    }

    fn error(&self, source: rdkafka::error::KafkaError) -> StateTopicError {
        StateTopicError::Kafka {
            topic: self.topic.clone(),
            source,
        }
    }
}

/// Create `topic` with one partition and the `settings`, unless it exists.
pub fn create_topic(
    base: &ClientConfig,
    topic: &str,
    settings: &[(&str, &str)],
) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base.create()?;
    // An existing topic needs no admin rights (nor a broker that serves
    // CreateTopics): look first.
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let mut new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1));
    for (key, value) in settings {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    let results = runtime.block_on(admin.create_topics([&new_topic], &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, ?code, "could not create the topic; using it as it is");
            }
        }
    }
    Ok(())
}

/// The number of partitions of `topic` (at least 1).
pub fn topic_partition_count(
    base: &ClientConfig,
    topic: &str,
) -> Result<u32, rdkafka::error::KafkaError> {
    let consumer: rdkafka::consumer::BaseConsumer = base.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    Ok(u32::try_from(count).unwrap_or(u32::MAX).max(1))
}

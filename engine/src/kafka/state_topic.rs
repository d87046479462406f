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
//!
//! A partition's open listening sessions can outgrow a record (brokers take
//! 1 MB by default). Beyond [`SESSIONS_PER_CHUNK`] they go in chunk records
//! keyed `<group>/<topic>/<partition>/sessions/<seq>/<index>`, sent before
//! the checkpoint record of that `seq`, which then has no `sessions`: since
//! one producer writes the topic's one partition in order, a checkpoint
//! record that is there has all its chunks there. Once a newer checkpoint
//! is acknowledged, the older one's chunks are deleted (tombstones, which
//! compaction removes).
//!
//! Each replica also keeps its streams forecast's state there, keyed
//! `<group>/<topic>/forecast/<replica>`, read back when it restarts under
//! the same name (a StatefulSet pod's).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use downbeat_operators::ForecastState;
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
use super::partition::compact_sessions::{self, Row};
use super::partition::PartitionCheckpoint;
use crate::config::KafkaConfig;

/// Key (after the group's prefix) of a replica's forecast state:
/// `<group>/<topic>/forecast/<replica>`.
const FORECAST_KEY: &str = "forecast/";

/// Open sessions per chunk record: about 250 KB of JSON before compression.
pub const SESSIONS_PER_CHUNK: usize = 5_000;

/// One chunk of a partition checkpoint's open sessions.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionChunk {
    partition: i32,
    seq: u64,
    index: u32,
    of: u32,
    sessions: Vec<Row>,
}

/// Session chunks read: (partition, seq) -> index -> (chunks in all, sessions).
type ChunksRead = HashMap<(i32, u64), BTreeMap<u32, (u32, Vec<Row>)>>;

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
    /// Per partition, the (seq, chunks) of its newest checkpoint whose
    /// sessions went in chunks: deleted once a newer one is acknowledged.
    chunked: Mutex<HashMap<i32, (u64, u32)>>,
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
        create_topic(&base, &topic, &[("cleanup.policy", "compact")]).map_err(kafka_error)?;
        // Checkpoints carry open sessions (in chunks of SESSIONS_PER_CHUNK):
        // JSON of ids and times that compresses about four times.
        let mut producer_config = base.clone();
        if !kafka.properties.contains_key("compression.type") {
            producer_config.set("compression.type", "lz4");
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
            chunked: Mutex::new(HashMap::new()),
        })
    }

    fn chunk_key(&self, partition: i32, seq: u64, index: u32) -> String {
        format!("{}{partition}/sessions/{seq}/{index}", self.key_prefix)
    }

    fn send(&self, key: &str, value: Option<&[u8]>) -> Result<(), StateTopicError> {
        let mut record = BaseRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record)
            .map_err(|source| self.error(source))
    }

    /// Send `partition`'s checkpoint, its sessions in chunks when they are
    /// many; returns the chunks sent (0: inline).
    fn send_checkpoint(&self, partition: &PartitionCheckpoint) -> Result<u32, StateTopicError> {
        let key = format!("{}{}", self.key_prefix, partition.partition);
        let sessions = partition.sessions.as_deref().unwrap_or_default();
        if sessions.len() <= SESSIONS_PER_CHUNK {
            let value = serde_json::to_vec(partition).expect("checkpoints serialize");
            self.send(&key, Some(&value))?;
            return Ok(0);
        }
        let of = sessions.len().div_ceil(SESSIONS_PER_CHUNK) as u32;
        for (index, chunk) in sessions.chunks(SESSIONS_PER_CHUNK).enumerate() {
            let index = index as u32;
            let chunk = SessionChunk {
                partition: partition.partition,
                seq: partition.seq,
                index,
                of,
                sessions: compact_sessions::rows(chunk),
            };
            let value = serde_json::to_vec(&chunk).expect("chunks serialize");
            let chunk_key = self.chunk_key(partition.partition, partition.seq, index);
            self.send(&chunk_key, Some(&value))?;
        }
        let head = PartitionCheckpoint {
            partition: partition.partition,
            seq: partition.seq,
            next_offset: partition.next_offset,
            replay_from: partition.replay_from,
            max_event_ms_before_replay: partition.max_event_ms_before_replay,
            emitted_through_ms: partition.emitted_through_ms,
            outliers: partition.outliers.clone(),
            sessions: None,
        };
        let value = serde_json::to_vec(&head).expect("checkpoints serialize");
        self.send(&key, Some(&value))?;
        Ok(of)
    }

    /// Publish `partitions` and wait until the broker has them.
    pub fn publish(&self, partitions: &[PartitionCheckpoint]) -> Result<(), StateTopicError> {
        let mut sent = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let chunks = self.send_checkpoint(partition)?;
            sent.push((partition.partition, partition.seq, chunks));
        }
        self.producer
            .wait(PUBLISH_TIMEOUT)
            .map_err(|source| StateTopicError::Unacknowledged {
                topic: self.topic.clone(),
                source,
            })?;
        // Acknowledged: the chunks of the checkpoints these replace can go
        // (the tombstones are acknowledged with the next checkpoint).
        let mut chunked = self.chunked.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, seq, chunks) in sent {
            let previous = if chunks > 0 {
                chunked.insert(partition, (seq, chunks))
            } else {
                chunked.remove(&partition)
            };
            if let Some((old_seq, old_chunks)) = previous.filter(|&(old, _)| old != seq) {
                for index in 0..old_chunks {
                    self.send(&self.chunk_key(partition, old_seq, index), None)?;
                }
            }
        }
        Ok(())
    }

    /// The newest checkpoint of each partition of this group's topic.
    pub fn latest_partitions(&self) -> Result<BTreeMap<i32, PartitionCheckpoint>, StateTopicError> {
        let mut latest: BTreeMap<i32, PartitionCheckpoint> = BTreeMap::new();
        let mut chunks: ChunksRead = HashMap::new();
        self.read_all(|key, offset, payload| {
            if key.starts_with(FORECAST_KEY) {
                return;
            }
            if key.contains("/sessions/") {
                match serde_json::from_slice::<SessionChunk>(payload) {
                    Ok(chunk) => {
                        chunks
                            .entry((chunk.partition, chunk.seq))
                            .or_default()
                            .insert(chunk.index, (chunk.of, chunk.sessions));
                    }
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, offset, %error, "ignoring an unreadable session chunk");
                    }
                }
                return;
            }
            match serde_json::from_slice::<PartitionCheckpoint>(payload) {
                Ok(checkpoint) => {
                    let newer = latest
                        .get(&checkpoint.partition)
                        .is_none_or(|known| checkpoint.seq > known.seq);
                    if newer {
                        latest.insert(checkpoint.partition, checkpoint);
                    }
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic, offset, %error, "ignoring an unreadable checkpoint record");
                }
            }
        })?;
        self.attach_chunks(&mut latest, chunks);
        Ok(latest)
    }

    /// The forecast state `replica` published last, if any.
    pub fn forecast_of(&self, replica: &str) -> Result<Option<ForecastState>, StateTopicError> {
        let wanted = format!("{FORECAST_KEY}{replica}");
        let mut found = None;
        self.read_all(|key, offset, payload| {
            if key != wanted {
                return;
            }
            match serde_json::from_slice::<ForecastState>(payload) {
                Ok(state) => found = Some(state),
                Err(error) => {
                    tracing::warn!(topic = %self.topic, offset, %error, "ignoring an unreadable forecast record");
                }
            }
        })?;
        Ok(found)
    }

    /// Send `replica`'s forecast state (acknowledged with the next
    /// [`StateTopic::publish`]).
    pub fn send_forecast(
        &self,
        replica: &str,
        state: &ForecastState,
    ) -> Result<(), StateTopicError> {
        let key = format!("{}{FORECAST_KEY}{replica}", self.key_prefix);
        let value = serde_json::to_vec(state).expect("forecast state serializes");
        self.send(&key, Some(&value))
    }

    /// Read the topic from its start to its end: `each(key without this
    /// group's prefix, offset, payload)` for every record of this group
    /// that is not a tombstone.
    fn read_all(&self, mut each: impl FnMut(&str, i64, &[u8])) -> Result<(), StateTopicError> {
        let consumer: BaseConsumer = self
            .reader_config
            .create()
            .map_err(|source| self.error(source))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, 0, READ_TIMEOUT)
            .map_err(|source| self.error(source))?;
        if high <= low {
            return Ok(());
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
            let Some(key) = message
                .key()
                .and_then(|key| std::str::from_utf8(key).ok())
                .and_then(|key| key.strip_prefix(&self.key_prefix))
            else {
                continue;
            };
            // Tombstones: chunks of a replaced checkpoint.
            if let Some(payload) = message.payload() {
                each(key, message.offset(), payload);
            }
        }
        Ok(())
    }

    /// Put each newest checkpoint's session chunks back into it, and
    /// remember them so that the next checkpoint deletes them.
    fn attach_chunks(
        &self,
        latest: &mut BTreeMap<i32, PartitionCheckpoint>,
        mut chunks: ChunksRead,
    ) {
        let mut chunked = self.chunked.lock().unwrap_or_else(|e| e.into_inner());
        for checkpoint in latest.values_mut() {
            let Some(parts) = chunks.remove(&(checkpoint.partition, checkpoint.seq)) else {
                continue;
            };
            let of = parts.values().next().map_or(0, |(of, _)| *of);
            let complete = parts.len() == of as usize
                && parts.keys().copied().eq(0..of)
                && parts.values().all(|(n, _)| *n == of);
            if !complete {
                // Cannot happen while one producer writes the topic in
                // order; said loudly rather than resumed wrong.
                tracing::error!(topic = %self.topic, partition = checkpoint.partition, seq = checkpoint.seq, found = parts.len(), of, "a checkpoint's session chunks are incomplete: its sessions start over");
                continue;
            }
            let rows: Vec<Row> = parts.into_values().flat_map(|(_, rows)| rows).collect();
            checkpoint.sessions = Some(compact_sessions::from_rows(rows));
            chunked.insert(checkpoint.partition, (checkpoint.seq, of));
        }
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

#[cfg(test)]
mod tests {
    use downbeat_operators::{OpenSession, SessionKey};
    use rdkafka::mocking::MockCluster;

    use super::*;
    use crate::kafka::partition::SessionSnapshot;

    fn sessions(count: u64, start_ms: i64) -> SessionSnapshot {
        (0..count)
            .map(|i| {
                let key = SessionKey {
                    user_id: i.to_string().into(),
                    session_id: Some((i * 7).to_string().into()),
                };
                let session = OpenSession {
                    start_ms: start_ms + i as i64,
                    end_ms: start_ms + 1_000 + i as i64,
                    events: 1 + i % 9,
                    plays: i % 5,
                };
                (key, session)
            })
            .collect()
    }

    fn checkpoint(partition: i32, seq: u64, sessions: SessionSnapshot) -> PartitionCheckpoint {
        PartitionCheckpoint {
            partition,
            seq,
            next_offset: 10 * seq as i64,
            replay_from: 5,
            max_event_ms_before_replay: Some(1),
            emitted_through_ms: 60_000,
            outliers: None,
            sessions: Some(sessions),
        }
    }

    /// (tombstones, chunk records) of the topic as written, compaction aside.
    fn records(cluster_servers: &str, topic: &str) -> (usize, usize) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster_servers)
            .set("group.id", "count")
            .create()
            .unwrap();
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Offset(low))
            .unwrap();
        consumer.assign(&list).unwrap();
        let (mut tombstones, mut chunks, mut next) = (0, 0, low);
        let started = Instant::now();
        while next < high && started.elapsed() < Duration::from_secs(20) {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            next = message.offset() + 1;
            let key = std::str::from_utf8(message.key().unwrap()).unwrap();
            match (message.payload(), key.contains("/sessions/")) {
                (None, _) => tombstones += 1,
                (Some(_), true) => chunks += 1,
                _ => {}
            }
        }
        (tombstones, chunks)
    }

    /// Many open sessions go in chunk records and come back whole; a newer
    /// checkpoint replaces them (the old chunks are deleted), and a
    /// partition with few sessions keeps them inline.
    #[test]
    fn many_sessions_go_in_chunks_and_come_back_whole() {
        let cluster = MockCluster::new(1).unwrap();
        let servers = cluster.bootstrap_servers();
        cluster.create_topic("state", 1, 1).unwrap();
        let kafka = KafkaConfig {
            brokers: servers.clone(),
            topic: "listens".to_owned(),
            group: "g".to_owned(),
            state_topic: "state".to_owned(),
            ..KafkaConfig::default()
        };
        let state = StateTopic::open(&kafka).unwrap();
        let big = sessions(2 * SESSIONS_PER_CHUNK as u64 + 123, 1_000);
        let small = sessions(40, 5_000);
        state
            .publish(&[
                checkpoint(0, 1, big.clone()),
                checkpoint(1, 1, small.clone()),
            ])
            .unwrap();
        assert_eq!(records(&servers, "state"), (0, 3));

        // Another replica reads them: whole, in order.
        let other = StateTopic::open(&kafka).unwrap();
        let latest = other.latest_partitions().unwrap();
        assert_eq!(latest[&0], checkpoint(0, 1, big.clone()));
        assert_eq!(latest[&1], checkpoint(1, 1, small));

        // It checkpoints partition 0 again, now with fewer sessions: the
        // three old chunks are deleted, the new ones read back.
        let fewer = sessions(SESSIONS_PER_CHUNK as u64 + 1, 9_000);
        other.publish(&[checkpoint(0, 2, fewer.clone())]).unwrap();
        other.publish(&[checkpoint(0, 3, fewer.clone())]).unwrap();
        let (tombstones, chunks) = records(&servers, "state");
        assert_eq!((tombstones, chunks), (3 + 2, 3 + 2 + 2));
        let latest = StateTopic::open(&kafka)
            .unwrap()
            .latest_partitions()
            .unwrap();
        assert_eq!(latest[&0], checkpoint(0, 3, fewer));
    }

    /// A replica's forecast state goes in under its name, beside the
    /// partition checkpoints, and only that replica reads it back (the
    /// newest one); the partition checkpoints are read as before.
    #[test]
    fn forecast_state_is_kept_per_replica() {
        use downbeat_operators::{ForecastConfig, Forecaster};
        let cluster = MockCluster::new(1).unwrap();
        let servers = cluster.bootstrap_servers();
        cluster.create_topic("state", 1, 1).unwrap();
        let kafka = KafkaConfig {
            brokers: servers,
            topic: "listens".to_owned(),
            group: "g".to_owned(),
            state_topic: "state".to_owned(),
            ..KafkaConfig::default()
        };
        let learnt = |minutes: i64| {
            let mut forecaster = Forecaster::new(ForecastConfig::default(), 60_000).unwrap();
            for minute in 0..minutes {
                forecaster.observe(minute * 60_000, 100 + (minute % 7) as u64);
            }
            forecaster.state().clone()
        };
        let state = StateTopic::open(&kafka).unwrap();
        assert_eq!(state.forecast_of("r0").unwrap(), None);
        state.send_forecast("r0", &learnt(30)).unwrap();
        state.send_forecast("r0", &learnt(90)).unwrap();
        state.send_forecast("r1", &learnt(5)).unwrap();
        state.publish(&[checkpoint(0, 1, sessions(3, 0))]).unwrap();

        let restarted = StateTopic::open(&kafka).unwrap();
        let found = restarted.forecast_of("r0").unwrap().expect("r0's state");
        assert_eq!(found.windows(), 90);
        assert_eq!(found.last_start_ms(), Some(89 * 60_000));
        assert_eq!(restarted.forecast_of("r1").unwrap().unwrap().windows(), 5);
        assert_eq!(restarted.forecast_of("r2").unwrap(), None);
        let latest = restarted.latest_partitions().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[&0], checkpoint(0, 1, sessions(3, 0)));
    }
}

//! Kafka partitions as a source (`run --source kafka`): the consumer loop.
//! Records are admitted by the group state machine, decoded and counted by
//! the pipeline, each partition with its own watermark; rebalances and
//! fetch reports are fed to the state machine after each poll; checkpoints
//! are written on a timer, on revoke and on shutdown. See the README's
//! "Kafka: delivery, recovery and scale-out" for the design.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{EventProgress, Ingest, Pumped, Source, SourceError};
use crate::config::KafkaConfig;
use crate::kafka::checkpoint::{new_checkpoint, CheckpointStore, ReplicaCheckpoint};
use crate::kafka::client::{client_config, ClientCallbacks, ClientEvent};
use crate::kafka::group::{Admit, Group, PendingCheckpoint, SeenStream};
use crate::kafka::metrics::KafkaMetrics;
use crate::kafka::partition::{PartitionCheckpoint, PartitionGeometry};
use crate::kafka::state_topic::StateTopic;
use crate::output::now_ms;
use crate::pipeline::{Outcome, Parsed, Pipeline, Reread};
use downbeat_operators::ForecastState;
use downbeat_operators::Verdict;

/// The consumer, the group state machine, and what they report.
pub struct KafkaSource {
    /// Set when a sink's output could not be made durable: the source stops.
    not_durable: Option<String>,
    consumer: BaseConsumer<ClientCallbacks>,
    events: Arc<Mutex<Vec<ClientEvent>>>,
    closing: Arc<AtomicBool>,
    topic: String,
    group: Group,
    store: Option<CheckpointStore>,
    state_topic: Option<StateTopic>,
    replica: String,
    /// Windows the forecast had learnt from when its state was last sent
    /// to the state topic (sent again only once it learnt more).
    forecast_sent_windows: Option<u64>,
    checkpoint_interval: Duration,
    last_checkpoint: Instant,
    kafka_metrics: Arc<KafkaMetrics>,
    ingest_latencies: Vec<Duration>,
    apply_nanos: Vec<u64>,
    event_progress: Option<EventProgress>,
}

/// Where a replica keeps its checkpoints, and what it finds there at start.
pub struct Recovery {
    /// The checkpoint store (None: no `kafka.checkpoint_dir`).
    pub store: Option<CheckpointStore>,
    /// This replica's own last checkpoint.
    pub own: Option<ReplicaCheckpoint>,
    /// Partition checkpoints in Kafka (None: no `kafka.state_topic`).
    pub state_topic: Option<StateTopic>,
    /// This replica's name in checkpoints.
    pub replica: String,
    /// This replica's newest forecast state, from its own checkpoint file
    /// or the state topic (the later one).
    pub forecast: Option<ForecastState>,
}

impl Recovery {
    /// Open the checkpoint directory of `kafka` (none when it is `""`) as `replica`.
    pub fn open(kafka: &KafkaConfig, replica: &str) -> anyhow::Result<Self> {
        let state_topic = if kafka.state_topic.is_empty() {
            None
        } else {
            Some(StateTopic::open(kafka)?)
        };
        let published = state_topic.as_ref().and_then(|topic| {
            topic.forecast_of(replica).unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read the forecast state: it warms up again");
                None
            })
        });
        let dir = &kafka.checkpoint_dir;
        if dir.is_empty() {
            tracing::warn!("kafka.checkpoint_dir is empty: after a crash, this replica's counters restart from zero, and without kafka.state_topic windows in progress restart empty (offsets are still committed after processing)");
            return Ok(Self {
                store: None,
                own: None,
                state_topic,
                replica: replica.to_owned(),
                forecast: published,
            });
        }
        let store = CheckpointStore::open(Path::new(dir), &kafka.group, &kafka.topic, replica)?;
        let own = store.load_own()?;
        let saved = own.as_ref().and_then(|own| own.forecast.clone());
        let forecast = [published, saved]
            .into_iter()
            .flatten()
            .max_by_key(ForecastState::last_start_ms);
        Ok(Self {
            store: Some(store),
            own,
            state_topic,
            replica: replica.to_owned(),
            forecast,
        })
    }
}

impl KafkaSource {
    /// Subscribe to `kafka.topic` in `kafka.group`.
    pub fn subscribe(
        kafka: &KafkaConfig,
        geometry: PartitionGeometry,
        idle_timeout_ms: i64,
        recovery: Recovery,
        kafka_metrics: Arc<KafkaMetrics>,
    ) -> anyhow::Result<Self> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let closing = Arc::new(AtomicBool::new(false));
        let callbacks = ClientCallbacks::new(
            Arc::clone(&events),
            Arc::clone(&closing),
            Arc::clone(&kafka_metrics),
            kafka.topic.clone(),
        );
        let consumer: BaseConsumer<ClientCallbacks> =
            client_config(kafka).create_with_context(callbacks)?;
        consumer.subscribe(&[&kafka.topic])?;
        let carried = recovery.own.into_iter().flat_map(|own| own.partitions);
        Ok(Self {
            not_durable: None,
            consumer,
            events,
            closing,
            topic: kafka.topic.clone(),
            group: Group::new(geometry, idle_timeout_ms, carried),
            store: recovery.store,
            state_topic: recovery.state_topic,
            replica: recovery.replica,
            forecast_sent_windows: None,
            checkpoint_interval: Duration::from_millis(kafka.checkpoint_interval_ms),
            last_checkpoint: Instant::now(),
            kafka_metrics,
            ingest_latencies: Vec::new(),
            apply_nanos: Vec::new(),
            event_progress: None,
        })
    }

    /// One record: admitted by the state machine, counted by the pipeline.
    /// Returns an offset to seek the partition back to.
    fn on_record(
        group: &mut Group,
        ingest_latencies: &mut Vec<Duration>,
        message: &BorrowedMessage<'_>,
        ingest: &mut dyn Ingest,
    ) -> Option<i64> {
        let (partition, offset) = (message.partition(), message.offset());
        let restore = match group.admit(partition, offset) {
            Admit::Skip => return None,
            Admit::SeekBack(to) => {
                tracing::info!(
                    partition,
                    offset,
                    seek_to = to,
                    "records skipped after a seek; seeking further back"
                );
                return Some(to);
            }
            Admit::Restore => true,
            Admit::Count => false,
        };
        let now = now_ms();
        let raw = message.payload().unwrap_or_default();
        let pipeline = ingest.pipeline();
        let parsed = pipeline.decode_record(message.payload());
        let input = partition as u32;
        match parsed {
            Parsed::Play(stream) if restore => {
                let time_ms = stream.time_ms();
                match pipeline.reread_from_input(input, offset, stream, raw) {
                    Reread::Restore => {
                        let in_pane = !group.is_late(partition, time_ms)
                            && pipeline.restore_from_input(input, stream);
                        let seen = SeenStream {
                            offset,
                            time_ms,
                            in_pane,
                        };
                        group.seen(partition, seen);
                    }
                    Reread::Held => group.hold(partition, offset),
                    Reread::Refused => {}
                }
            }
            Parsed::Play(stream) => {
                match pipeline.guard_from_input(input, offset, stream, raw) {
                    Some(stream) => {
                        let time_ms = stream.time_ms();
                        let late = group.is_late(partition, time_ms);
                        let outcome = pipeline.count_from_input(input, stream, late, raw);
                        let in_pane = outcome == Outcome::Stream;
                        if let (true, Some(ms)) = (in_pane, message.timestamp().to_millis()) {
                            let latency = now.saturating_sub(ms).max(0) as u64;
                            ingest_latencies.push(Duration::from_millis(latency));
                        }
                        let seen = SeenStream {
                            offset,
                            time_ms,
                            in_pane,
                        };
                        group.seen(partition, seen);
                    }
                    None => group.hold(partition, offset),
                }
                Self::apply_verdicts(group, partition, pipeline);
            }
            _ if restore => {}
            other => {
                pipeline.apply_from_input(input, other, raw);
            }
        }
        Self::record_done(group, partition, offset, restore, now, ingest);
        None
    }

    /// A record is through: the partition moves on, windows behind it are
    /// caught up, the watermark may close windows and sessions.
    fn record_done(
        group: &mut Group,
        partition: i32,
        offset: i64,
        restore: bool,
        now: i64,
        ingest: &mut dyn Ingest,
    ) {
        let pipeline = ingest.pipeline();
        let progressed = group.record_done(partition, offset, restore, now);
        if let Some(upto) = progressed.catch_up_to {
            pipeline.catch_up(partition as u32, upto);
        }
        if progressed.advance {
            if let Some(watermark) = group.watermark(now) {
                pipeline.advance_to(watermark);
            }
        }
        if pipeline.has_closed() {
            ingest.publish();
        }
    }

    /// The outlier guard of `partition` decided on streams it held: count
    /// those it released (lateness by the partition's watermark, moved by
    /// each in turn), refuse the others.
    fn apply_verdicts(group: &mut Group, partition: i32, pipeline: &mut Pipeline) {
        for verdict in pipeline.take_input_verdicts() {
            match verdict {
                Verdict::Accept(held) => {
                    let time_ms = held.time_ms();
                    let late = group.is_late(partition, time_ms);
                    let outcome = pipeline.count_held_from_input(partition as u32, &held, late);
                    let seen = SeenStream {
                        offset: held.offset,
                        time_ms,
                        in_pane: outcome == Outcome::Stream,
                    };
                    group.seen(partition, seen);
                }
                Verdict::Reject(held) => {
                    pipeline.refuse_outlier(&held);
                    group.refused(partition, held.offset);
                }
            }
        }
    }

    /// Feed the client's queued events to the state machine.
    fn handle_events(&mut self, ingest: &mut dyn Ingest) {
        let events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        for event in events {
            match event {
                ClientEvent::Fetch(fetch) => self.group.set_fetch(fetch),
                ClientEvent::Assigned(assignment) => self.assign(assignment, ingest),
                ClientEvent::Revoked => {
                    tracing::info!("partitions revoked");
                    self.revoke(ingest);
                }
                ClientEvent::RebalanceFailed(error) => {
                    tracing::error!(?error, "rebalance failed");
                    self.revoke(ingest);
                }
            }
        }
    }

    /// New partitions: resume each from its newest checkpoint or the
    /// group's committed offset, then take the assignment.
    fn assign(&mut self, mut assignment: TopicPartitionList, ingest: &mut dyn Ingest) {
        let partitions: Vec<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        let committed = self.committed(&assignment);
        self.share_song_budget(partitions.len(), ingest);
        let checkpoints = self.latest_checkpoints();
        for start in self
            .group
            .assign(&partitions, &checkpoints, &committed, now_ms())
        {
            ingest.pipeline().open_input(
                start.partition as u32,
                start.emitted_through_ms,
                start.outliers.as_ref(),
                start.sessions.as_deref(),
            );
            if let Some(offset) = start.fetch_from {
                let _ = assignment.set_partition_offset(
                    &self.topic,
                    start.partition,
                    Offset::Offset(offset),
                );
            }
            tracing::info!(partition = start.partition, fetch_from = ?start.fetch_from, resumed = checkpoints.contains_key(&start.partition), "partition assigned");
        }
        if let Err(error) = self.consumer.assign(&assignment) {
            tracing::error!(%error, "cannot assign partitions");
        }
        self.kafka_metrics.set_assigned(self.group.held().count());
        self.update_readiness(ingest);
    }

    /// Split the song budget between the topic's partitions (read from the
    /// broker), so that however many this replica holds, the whole stays
    /// within `memory.song_state_mib`.
    fn share_song_budget(&mut self, assigned: usize, ingest: &mut dyn Ingest) {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10));
        let partitions = metadata.ok().and_then(|metadata| {
            let topic = metadata.topics().iter().find(|t| t.name() == self.topic)?;
            Some(topic.partitions().len())
        });
        let count = partitions.filter(|&count| count > 0).unwrap_or_else(|| {
            tracing::warn!(topic = %self.topic, assigned, "cannot read the topic's partition count; sharing the song budget between the partitions assigned");
            assigned
        });
        ingest.pipeline().share_song_budget(count);
    }

    /// The group's committed offsets of `assignment`.
    fn committed(&self, assignment: &TopicPartitionList) -> BTreeMap<i32, i64> {
        let committed = self
            .consumer
            .committed_offsets(assignment.clone(), Duration::from_secs(10))
            .map_err(|error| tracing::warn!(%error, "cannot read the group's committed offsets"))
            .unwrap_or_default();
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    }

    /// Partitions leave: checkpoint them, commit, then drop their panes.
    fn revoke(&mut self, ingest: &mut dyn Ingest) {
        self.checkpoint(ingest);
        let _ = self.consumer.commit_consumer_state(CommitMode::Sync);
        for partition in self.group.revoke() {
            ingest.pipeline().close_input(partition as u32);
            self.kafka_metrics.forget_partition(partition);
        }
        if let Err(error) = self.consumer.unassign() {
            tracing::error!(%error, "cannot drop the assignment");
        }
        self.kafka_metrics.set_assigned(0);
        self.update_readiness(ingest);
    }

    /// Write a checkpoint of every held partition, then store their offsets
    /// for the next commit. Without a checkpoint directory, only the
    /// offsets are stored.
    fn checkpoint(&mut self, ingest: &mut dyn Ingest) {
        let persisted = ingest.persist();
        if let Some(why) = persisted.failed {
            // The sinks' output is not all durable (a partial the broker
            // did not take): no checkpoint may cover it. Stop; the restart
            // resumes from the last checkpoint and publishes it again.
            self.kafka_metrics.checkpoint(false);
            self.not_durable.get_or_insert(why);
            return;
        }
        if persisted.pending.is_some() {
            // Sent but not yet acknowledged: no checkpoint this time (the
            // offsets stay where they were); the next one tries again.
            self.kafka_metrics.checkpoint(false);
            return;
        }
        let pipeline = ingest.pipeline();
        let pending = self.group.checkpoint(
            |p| pipeline.emitted_through(p as u32),
            |p| pipeline.outlier_snapshot(p as u32),
            |p| pipeline.session_snapshot(p as u32),
        );
        // Taken with the windows emitted so far: after a restart the windows
        // emitted again are learnt again, and forecast the same.
        let forecast = pipeline.forecast_state().cloned();
        if let Some(store) = &self.store {
            let checkpoint = ReplicaCheckpoint {
                emitted_bytes: persisted.emitted_bytes,
                emitted_session_bytes: persisted.emitted_session_bytes,
                counters: persisted.counters,
                partitions: pending.partitions.clone(),
                forecast: forecast.clone(),
                ..new_checkpoint(now_ms())
            };
            let saved = store.save(&checkpoint);
            if let Err(error) = saved {
                self.kafka_metrics.checkpoint(false);
                tracing::error!(%error, "checkpoint failed; offsets not committed");
                return;
            }
        }
        if let Some(state_topic) = &self.state_topic {
            let learnt = forecast.as_ref().map(|state| state.windows());
            let sent = match forecast.filter(|_| learnt != self.forecast_sent_windows) {
                Some(state) => state_topic.send_forecast(&self.replica, &state),
                None => Ok(()),
            };
            if let Err(error) =
                sent.and_then(|()| state_topic.publish(&pending.partitions[..pending.held]))
            {
                self.kafka_metrics.checkpoint(false);
                tracing::error!(%error, "checkpoint not acknowledged by the state topic; offsets not committed");
                return;
            }
        }
        if self.store.is_some() || self.state_topic.is_some() {
            self.kafka_metrics.checkpoint(true);
        }
        if self.state_topic.is_some() {
            self.forecast_sent_windows = ingest
                .pipeline()
                .forecast_state()
                .map(ForecastState::windows);
        }
        self.store_offsets(&pending);
    }

    /// The newest checkpoint of each partition, from the checkpoint
    /// directory and the state topic (the highest `seq` wins). When neither
    /// can be read, assigned partitions start from the committed offsets.
    fn latest_checkpoints(&self) -> BTreeMap<i32, PartitionCheckpoint> {
        let mut latest = match &self.store {
            Some(store) => store.latest_partitions().unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read the checkpoint directory");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let Some(state_topic) = &self.state_topic else {
            return latest;
        };
        match state_topic.latest_partitions() {
            Ok(published) => {
                for (partition, checkpoint) in published {
                    let newer = latest
                        .get(&partition)
                        .is_none_or(|known| checkpoint.seq > known.seq);
                    if newer {
                        latest.insert(partition, checkpoint);
                    }
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the state topic"),
        }
        latest
    }

    fn store_offsets(&mut self, pending: &PendingCheckpoint) {
        let mut offsets = TopicPartitionList::new();
        for (partition, next_offset) in self.group.checkpoint_saved(pending) {
            let _ =
                offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next_offset));
        }
        if offsets.count() > 0 {
            if let Err(error) = self.consumer.store_offsets(&offsets) {
                tracing::debug!(%error, "cannot store offsets");
            }
        }
    }

    fn update_readiness(&self, ingest: &mut dyn Ingest) {
        let ready = self.group.held().next().is_some() && self.kafka_metrics.connected();
        ingest.set_ready(ready);
    }

    fn report(&mut self, now: i64, ingest: &mut dyn Ingest) {
        let watermark = self
            .group
            .watermark(now)
            .or(ingest.pipeline().closed_through_ms());
        self.event_progress = Some(EventProgress {
            max_event_ms: self.group.max_event_ms(),
            watermark_ms: watermark,
        });
        let idle = self.group.idle_caught_up(now);
        for progress in self.group.partition_progress() {
            let partition = progress.partition;
            ingest.pipeline().note_input_progress(
                partition as u32,
                progress.watermark_ms,
                idle.contains(&partition),
            );
            self.kafka_metrics.set_partition_progress(
                partition,
                progress.next_offset,
                progress.watermark_ms,
            );
            if let Some(lag) = progress.lag_records {
                self.kafka_metrics.set_lag(partition, lag);
            }
        }
        self.kafka_metrics.restored(self.group.take_restored());
        self.kafka_metrics
            .record_ingest_latencies(&mut self.ingest_latencies);
        self.kafka_metrics
            .record_apply_latencies(&mut self.apply_nanos);
        self.update_readiness(ingest);
    }
}

impl Source for KafkaSource {
    fn pump(&mut self, timeout: Duration, ingest: &mut dyn Ingest) -> Result<Pumped, SourceError> {
        if let Some(why) = self.not_durable.take() {
            return Err(SourceError::NotDurable(why));
        }
        let polled = self.consumer.poll(timeout);
        let started = Instant::now();
        let pumped = match polled {
            Some(Ok(message)) => {
                let seek = Self::on_record(
                    &mut self.group,
                    &mut self.ingest_latencies,
                    &message,
                    ingest,
                );
                self.apply_nanos.push(started.elapsed().as_nanos() as u64);
                let partition = message.partition();
                drop(message);
                if let Some(offset) = seek {
                    let sought = self.consumer.seek(
                        &self.topic,
                        partition,
                        Offset::Offset(offset),
                        Duration::from_secs(5),
                    );
                    if let Err(error) = sought {
                        tracing::error!(%error, partition, "seek failed");
                    }
                }
                Pumped::Data
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "kafka consume error");
                Pumped::Idle
            }
            None => Pumped::Idle,
        };
        self.handle_events(ingest);
        Ok(pumped)
    }

    fn tick(&mut self, now_ms: i64, ingest: &mut dyn Ingest) {
        self.handle_events(ingest);
        for partition in self.group.idle_caught_up(now_ms) {
            // An idle partition's guard decides on what it holds, as the
            // single input's does.
            let pipeline = ingest.pipeline();
            pipeline.flush_input_guard(partition as u32);
            Self::apply_verdicts(&mut self.group, partition, pipeline);
            pipeline.catch_up(partition as u32, i64::MAX);
        }
        if let Some(watermark) = self.group.watermark(now_ms) {
            ingest.pipeline().advance_to(watermark);
        }
        ingest.publish();
        self.report(now_ms, ingest);
        if self.last_checkpoint.elapsed() >= self.checkpoint_interval {
            self.last_checkpoint = Instant::now();
            self.checkpoint(ingest);
        }
    }

    fn event_progress(&self) -> Option<EventProgress> {
        self.event_progress
    }

    fn close(&mut self, ingest: &mut dyn Ingest) {
        ingest.set_ready(false);
        self.checkpoint(ingest);
        let _ = self.consumer.commit_consumer_state(CommitMode::Sync);
        // Leaving the group revokes the partitions, so another replica
        // takes them over at once; the checkpoint above covers them.
        self.closing.store(true, Ordering::Relaxed);
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::from_millis(100));
    }

    fn manages_readiness(&self) -> bool {
        true
    }
}

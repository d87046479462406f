//! The consumer loop, its librdkafka context and the per-partition engine.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use downbeat_operators::{bucket_start, WindowResult};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::checkpoint::{new_checkpoint, CheckpointStore};
use super::context::{Context, FetchState};
use super::emit::EmitSink;
use super::group::GroupClient;
use super::metrics::KafkaMetrics;
use super::partition::{
    OffsetCheck, PartitionCheckpoint, PartitionGeometry, PartitionState, RecordRole,
};
use crate::config::Config;
use crate::decode::RejectReason;
use crate::http::{self, ServerState};
use crate::metrics::Metrics;
use crate::output::{now_ms, open_writer};
use crate::pipeline::{parse_line, Outcome, ParseSettings, Parsed, Pipeline};
use crate::source::lines::Line;

/// How often idleness, metrics, readiness and checkpoints are looked at.
const TICK: Duration = Duration::from_millis(100);

/// A resumed partition is fetched from this many records before its resume
/// offset (they are skipped unread). Some Kafka-protocol brokers (tansu
/// 0.6) answer a fetch that starts inside a record batch with the next
/// batch, or with nothing if it is the last one; starting before the batch
/// avoids both. Real Kafka returns the containing batch and the client
/// skips the same records anyway.
const RESUME_LOOKBACK_RECORDS: i64 = 10_000;

fn fetch_from(resume_offset: i64) -> Offset {
    Offset::Offset(resume_offset.saturating_sub(RESUME_LOOKBACK_RECORDS).max(0))
}

/// Everything the consumer thread and the rebalance callback share.
pub(super) struct Engine {
    topic: String,
    pipeline: Pipeline,
    parse_settings: ParseSettings,
    partitions: BTreeMap<i32, PartitionState>,
    geometry: PartitionGeometry,
    idle_timeout_ms: i64,
    store: Option<CheckpointStore>,
    /// Partitions this replica checkpointed but does not hold now (before
    /// its first assignment after a restart, or after a revoke). Their
    /// entries stay in its file: for a partition nobody else has
    /// checkpointed since, they are the only copy of its state.
    carried: BTreeMap<i32, PartitionCheckpoint>,
    emit: Option<EmitSink>,
    closed: Vec<WindowResult>,
    names: Vec<u8>,
    latencies: Vec<Duration>,
    apply_nanos: Vec<u64>,
    restored: u64,
    server: Arc<ServerState>,
    kafka_metrics: Arc<KafkaMetrics>,
    /// Per-partition fetch state from librdkafka statistics.
    fetch: Arc<Mutex<HashMap<i32, FetchState>>>,
}

impl Engine {
    /// One record of partition `partition` at `offset`. Returns an offset
    /// to seek the partition back to when records before this one are missing.
    #[must_use]
    fn on_record(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        kafka_ms: Option<i64>,
    ) -> Option<i64> {
        let now = now_ms();
        let Some(state) = self.partitions.get_mut(&partition) else {
            return None; // revoked meanwhile
        };
        if let OffsetCheck::SeekBack(to) = state.check_offset(offset) {
            tracing::info!(partition, offset, expected = ?state.next_offset(), seek_to = to, "records skipped after a seek; seeking further back");
            return Some(to);
        }
        let role = state.role(offset);
        if role == RecordRole::Seen {
            return None;
        }
        let was_restoring = state.restoring();
        let watermark_before = state.watermark_ms();
        self.names.clear();
        let raw = payload.unwrap_or_default();
        let parsed = match payload {
            None => Parsed::Rejected(RejectReason::NoValue),
            Some(bytes) => parse_line(
                &Line {
                    bytes,
                    truncated: false,
                },
                &self.parse_settings,
                &mut self.names,
            ),
        };
        let source = partition as u32;
        match (role, parsed) {
            (RecordRole::Restore, Parsed::Stream(stream)) => {
                let time_ms = stream.time_ms();
                if !state.is_late(time_ms)
                    && self
                        .pipeline
                        .restore_from_source(source, stream, &self.names)
                {
                    state.note_pane(offset, time_ms);
                }
                state.observe(time_ms);
                self.restored += 1;
            }
            (RecordRole::Restore, _) => self.restored += 1,
            (_, Parsed::Stream(stream)) => {
                let time_ms = stream.time_ms();
                let late = state.is_late(time_ms);
                let outcome =
                    self.pipeline
                        .apply_from_source(source, stream, late, &self.names, raw);
                if outcome == Outcome::Stream {
                    state.note_pane(offset, time_ms);
                    if let Some(ms) = kafka_ms {
                        self.latencies
                            .push(Duration::from_millis(now.saturating_sub(ms).max(0) as u64));
                    }
                }
                state.observe(time_ms);
            }
            (_, other) => {
                self.pipeline
                    .apply(other, &self.names, raw, &mut self.closed);
            }
        }
        state.processed(offset, now);
        let rebuilt = was_restoring && !state.restoring();
        if rebuilt {
            tracing::info!(partition, "partition state rebuilt");
        }
        let pane_ms = self.geometry.pane_ms;
        let watermark = state.watermark_ms();
        let crossed = match (watermark_before, watermark) {
            (Some(before), Some(after)) => {
                bucket_start(before, pane_ms) != bucket_start(after, pane_ms)
            }
            (None, Some(_)) => true,
            _ => false,
        };
        if (crossed || rebuilt) && !state.restoring() {
            if let Some(watermark) = watermark {
                self.catch_up(source, watermark);
            }
        }
        if crossed || was_restoring {
            self.advance(now);
        }
        None
    }

    /// A partition behind the windows closed here (taken over from a
    /// replica that was behind) emits its share of them up to its own
    /// watermark.
    fn catch_up(&mut self, source: u32, upto_ms: i64) {
        let aggregator = self.pipeline.aggregator_mut();
        if aggregator.is_behind(source) {
            aggregator.catch_up(source, upto_ms, &mut self.closed);
        }
    }

    /// The engine's watermark: the minimum over assigned partitions that are
    /// not idle; when all are idle, the wall clock minus the lateness (the
    /// core idle rule). None while a partition's state is being rebuilt.
    ///
    /// Idle means no record for the idle timeout *and* nothing left to read:
    /// a partition with a backlog the client has not reached yet is slow,
    /// not idle, and holds the windows open.
    fn global_watermark(&self, now: i64) -> Option<i64> {
        let mut minimum: Option<i64> = None;
        let mut any_active = false;
        let mut any_seen = false;
        let fetch = self.fetch.lock().unwrap_or_else(|e| e.into_inner());
        for state in self.partitions.values() {
            if state.restoring() {
                return None;
            }
            let watermark = state.watermark_ms();
            any_seen |= watermark.is_some();
            let caught_up = fetch
                .get(&state.partition())
                .is_some_and(|f| f.caught_up(state.next_offset()));
            if caught_up && state.is_idle(now, self.idle_timeout_ms) {
                continue;
            }
            any_active = true;
            let watermark = watermark?;
            minimum = Some(minimum.map_or(watermark, |m| m.min(watermark)));
        }
        if any_active {
            minimum
        } else if any_seen {
            Some(now.saturating_sub(self.geometry.allowed_lateness_ms))
        } else {
            None
        }
    }

    fn advance(&mut self, now: i64) {
        if let Some(watermark) = self.global_watermark(now) {
            let before = self.closed.len();
            self.pipeline.advance_to(watermark, &mut self.closed);
            if self.closed.len() > before {
                tracing::debug!(
                    watermark,
                    partitions = ?self.partitions.values().map(|p| (p.partition(), p.watermark_ms(), p.next_offset(), p.restoring())).collect::<Vec<_>>(),
                    windows = self.closed.len() - before,
                    "windows closed"
                );
            }
        }
        if !self.closed.is_empty() {
            self.publish();
        }
    }

    /// Closed windows to the metrics, the latest-windows API and the output.
    fn publish(&mut self) {
        for window in self.closed.drain(..) {
            let json = serde_json::to_string(&window).expect("window results serialize");
            self.server
                .metrics
                .on_window(&self.pipeline.window_label(window.window), &window);
            if let Some(sink) = self.emit.as_mut() {
                if let Err(error) = sink.write_line(&json) {
                    tracing::error!(%error, "cannot write window results");
                }
            }
            self.server.publish_window(window.window, json);
        }
        crate::live::publish_trending(&mut self.pipeline, &self.server);
        if let Some(sink) = self.emit.as_mut() {
            if let Err(error) = sink.flush(false) {
                tracing::error!(%error, "cannot write window results");
            }
        }
        if let Some(started) = self.pipeline.take_close_started() {
            self.server.metrics.record_close_latency(started.elapsed());
        }
    }

    /// Periodic work: idleness, metrics, readiness.
    fn tick(&mut self) {
        let now = now_ms();
        self.pipeline.tick(now, &mut self.closed);
        // A partition behind that has gone idle owes windows its input will
        // not complete: emit them now (the idle rule, for catching up).
        let fetch = self.fetch.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let idle_behind: Vec<u32> = self
            .partitions
            .values()
            .filter(|state| !state.restoring() && state.is_idle(now, self.idle_timeout_ms))
            .filter(|state| {
                fetch
                    .get(&state.partition())
                    .is_some_and(|f| f.caught_up(state.next_offset()))
            })
            .map(|state| state.partition() as u32)
            .collect();
        for source in idle_behind {
            self.catch_up(source, i64::MAX);
        }
        self.advance(now);
        let max_event = self
            .partitions
            .values()
            .filter_map(PartitionState::max_event_ms)
            .max();
        let watermark = self
            .global_watermark(now)
            .or(self.pipeline_closed_through());
        self.pipeline.set_external_progress(max_event, watermark);
        self.pipeline.sync_metrics(&self.server.metrics, now);
        for state in self.partitions.values() {
            let next = state.next_offset();
            self.kafka_metrics.set_partition_progress(
                state.partition(),
                next,
                state.watermark_ms(),
            );
            if let Some(f) = fetch.get(&state.partition()) {
                let position = next.unwrap_or(f.fetch_offset - f.queued);
                if f.high_offset >= 0 {
                    self.kafka_metrics
                        .set_lag(state.partition(), (f.high_offset - position).max(0));
                }
            }
        }
        self.kafka_metrics
            .restored(std::mem::take(&mut self.restored));
        self.kafka_metrics
            .record_ingest_latencies(&mut self.latencies);
        self.kafka_metrics
            .record_apply_latencies(&mut self.apply_nanos);
        self.update_readiness();
    }

    fn pipeline_closed_through(&mut self) -> Option<i64> {
        self.pipeline.aggregator_mut().closed_through_ms()
    }

    fn update_readiness(&self) {
        let ready = !self.partitions.is_empty() && self.kafka_metrics.connected();
        self.server.ready.store(ready, Ordering::Relaxed);
    }

    /// Write a checkpoint of every assigned partition and store their
    /// offsets for the next commit. Without a checkpoint directory, only
    /// the offsets are stored.
    fn checkpoint(&mut self, consumer: &dyn GroupClient) {
        let now = now_ms();
        self.pipeline.sync_metrics(&self.server.metrics, now);
        let mut checkpoint = new_checkpoint(now);
        if let Some(sink) = self.emit.as_mut() {
            match sink.flush(true) {
                Ok(bytes) if sink.file.is_some() => checkpoint.emitted_bytes = Some(bytes),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "cannot flush window results"),
            }
        }
        let aggregator = self.pipeline.aggregator_mut();
        for state in self.partitions.values_mut() {
            let emitted = aggregator.emitted_through(state.partition() as u32);
            if let Some(partition) = state.checkpoint(emitted) {
                checkpoint.partitions.push(partition);
            }
        }
        let held = checkpoint.partitions.len();
        for (partition, carried) in &self.carried {
            if !self.partitions.contains_key(partition) {
                checkpoint.partitions.push(carried.clone());
            }
        }
        if let Some(store) = &self.store {
            checkpoint.counters = self.server.metrics.counter_snapshot();
            let saved = store.save(&checkpoint);
            if let Err(error) = &saved {
                tracing::error!(%error, "checkpoint failed; offsets not committed");
            }
            self.kafka_metrics.checkpoint(saved.is_ok());
            if saved.is_err() {
                return;
            }
        }
        for partition in &checkpoint.partitions[..held] {
            self.carried.insert(partition.partition, partition.clone());
        }
        // The committed offset is where counting resumes.
        let mut offsets = TopicPartitionList::new();
        for partition in &checkpoint.partitions[..held] {
            let _ = offsets.add_partition_offset(
                &self.topic,
                partition.partition,
                Offset::Offset(partition.next_offset),
            );
        }
        if offsets.count() > 0 {
            consumer.store_offsets(&offsets);
        }
    }

    /// New partitions: resume each from its newest checkpoint (setting the
    /// offset the consumer starts at) or start it fresh.
    pub(super) fn assign(
        &mut self,
        consumer: &dyn GroupClient,
        assignment: &mut TopicPartitionList,
    ) {
        let now = now_ms();
        let committed = consumer.committed(assignment).unwrap_or_default();
        let latest = match &self.store {
            Some(store) => store.latest_partitions().unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read checkpoints; starting assigned partitions from committed offsets");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        let partitions: Vec<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        for partition in partitions {
            let source = partition as u32;
            let state = match latest.get(&partition) {
                Some(checkpoint) => {
                    let _ = assignment.set_partition_offset(
                        &self.topic,
                        partition,
                        fetch_from(checkpoint.replay_from),
                    );
                    self.pipeline
                        .aggregator_mut()
                        .add_source(source, checkpoint.emitted_through_ms);
                    tracing::info!(
                        partition,
                        next_offset = checkpoint.next_offset,
                        replay_from = checkpoint.replay_from,
                        "resuming partition from checkpoint"
                    );
                    PartitionState::resumed(checkpoint, self.geometry, now)
                }
                None => {
                    self.pipeline.aggregator_mut().add_source(source, i64::MIN);
                    let group_offset =
                        committed
                            .find_partition(&self.topic, partition)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(offset) => Some(offset),
                                _ => None,
                            });
                    tracing::info!(
                        partition,
                        ?group_offset,
                        "partition has no checkpoint; starting at the group's committed offset"
                    );
                    match group_offset {
                        Some(offset) => {
                            let _ = assignment.set_partition_offset(
                                &self.topic,
                                partition,
                                fetch_from(offset),
                            );
                            PartitionState::fresh_at(partition, offset, self.geometry, now)
                        }
                        None => PartitionState::fresh(partition, self.geometry, now),
                    }
                }
            };
            self.partitions.insert(partition, state);
        }
        self.kafka_metrics.set_assigned(self.partitions.len());
        self.update_readiness();
    }

    /// Partitions leave: checkpoint them, then drop their panes.
    pub(super) fn revoke(&mut self, consumer: &dyn GroupClient) {
        self.checkpoint(consumer);
        consumer.commit_sync();
        for partition in std::mem::take(&mut self.partitions).into_keys() {
            self.pipeline
                .aggregator_mut()
                .remove_source(partition as u32);
            self.kafka_metrics.forget_partition(partition);
        }
        self.kafka_metrics.set_assigned(0);
        self.update_readiness();
    }
}

/// The librdkafka settings: ours, then the user's pass-through properties.
fn client_config(config: &Config) -> ClientConfig {
    let kafka = &config.kafka;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group)
        // A replica that died is noticed within 10 s (Kafka's default is 45 s).
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("client.id", "downbeat")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        .set("fetch.wait.max.ms", "50")
        .set("enable.partition.eof", "false");
    for (key, value) in &kafka.properties {
        client.set(key, value);
    }
    client
}

fn replica_id(config: &Config) -> String {
    config.kafka.replica_id.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "downbeat".to_owned())
    })
}

/// `downbeat run --source kafka`: consume until SIGINT/SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let addr: SocketAddr = config.http.listen.parse()?;
    let pipeline_config = config.pipeline()?;
    let idle_timeout_ms = pipeline_config.watermark.idle_timeout_ms;
    let allowed_lateness_ms = pipeline_config.watermark.allowed_lateness_ms;
    let metrics = Arc::new(Metrics::new());
    let kafka_metrics = Arc::new(KafkaMetrics::new(metrics.registry()));
    let server = Arc::new(ServerState::new(Arc::clone(&metrics)));

    let replica = replica_id(&config);
    let store = match &config.kafka.checkpoint_dir {
        Some(dir) => Some(CheckpointStore::open(
            Path::new(dir),
            &config.kafka.group,
            &config.kafka.topic,
            &replica,
        )?),
        None => {
            tracing::warn!("no kafka.checkpoint_dir: after a crash or a rebalance, windows in progress restart empty (offsets are still committed after processing)");
            None
        }
    };
    let own = match &store {
        Some(store) => store.load_own()?,
        None => None,
    };
    if let Some(own) = &own {
        metrics.restore_counters(&own.counters);
        tracing::info!(
            replica,
            partitions = own.partitions.len(),
            "restored this replica's counters from its checkpoint"
        );
    }
    let emit = match config.output.emit_windows.as_deref() {
        Some(path) => Some(EmitSink::open(
            path,
            own.as_ref().and_then(|c| c.emitted_bytes),
        )?),
        None => None,
    };
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path)?),
        None => None,
    };
    let pipeline = Pipeline::new(pipeline_config, &metrics, rejects, now_ms())?;
    let geometry = PartitionGeometry {
        allowed_lateness_ms,
        pane_ms: pipeline.pane_ms(),
        max_width_ms: pipeline.max_width_ms(),
    };
    let fetch = Arc::new(Mutex::new(HashMap::new()));
    let engine = Arc::new(Mutex::new(Engine {
        topic: config.kafka.topic.clone(),
        parse_settings: pipeline.parse_settings(),
        pipeline,
        partitions: BTreeMap::new(),
        geometry,
        idle_timeout_ms,
        store,
        carried: own
            .iter()
            .flat_map(|c| c.partitions.iter().map(|p| (p.partition, p.clone())))
            .collect(),
        emit,
        closed: Vec::new(),
        names: Vec::new(),
        latencies: Vec::new(),
        apply_nanos: Vec::new(),
        restored: 0,
        server: Arc::clone(&server),
        kafka_metrics: Arc::clone(&kafka_metrics),
        fetch: Arc::clone(&fetch),
    }));
    let context = Context {
        engine: Arc::clone(&engine),
        kafka_metrics: Arc::clone(&kafka_metrics),
        fetch,
        topic: config.kafka.topic.clone(),
    };
    let consumer: BaseConsumer<Context> = client_config(&config).create_with_context(context)?;
    consumer.subscribe(&[&config.kafka.topic])?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(http::bind(addr))?;
    tracing::info!(%addr, brokers = %config.kafka.brokers, topic = %config.kafka.topic, group = %config.kafka.group, replica, "consuming from kafka; serving the live page at /, /metrics, /healthz, /readyz and /api/v1/*");
    runtime.spawn(http::serve(listener, Arc::clone(&server)));
    let stop = Arc::new(AtomicBool::new(false));
    let shutdown = Arc::clone(&stop);
    runtime.spawn(async move {
        crate::live::wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.store(true, Ordering::Relaxed);
    });

    let interval = Duration::from_millis(config.kafka.checkpoint_interval_ms);
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(TICK) {
            Some(Ok(message)) => {
                let polled = Instant::now();
                let kafka_ms = message.timestamp().to_millis();
                let mut engine = engine.lock().unwrap_or_else(|e| e.into_inner());
                let partition = message.partition();
                let seek =
                    engine.on_record(partition, message.offset(), message.payload(), kafka_ms);
                let apply_nanos = polled.elapsed().as_nanos() as u64;
                engine.apply_nanos.push(apply_nanos);
                drop(engine);
                if let Some(offset) = seek {
                    drop(message);
                    if let Err(error) = consumer.seek(
                        &config.kafka.topic,
                        partition,
                        Offset::Offset(offset),
                        Duration::from_secs(5),
                    ) {
                        tracing::error!(%error, partition, "seek failed");
                    }
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "kafka consume error"),
            None => {}
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let mut engine = engine.lock().unwrap_or_else(|e| e.into_inner());
            engine.tick();
            if last_checkpoint.elapsed() >= interval {
                last_checkpoint = Instant::now();
                engine.checkpoint(&consumer);
            }
        }
    }
    server.ready.store(false, Ordering::Relaxed);
    engine
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .checkpoint(&consumer);
    consumer.commit_sync();
    // Leaving the group revokes the partitions (a final checkpoint) so
    // another replica takes them over at once.
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

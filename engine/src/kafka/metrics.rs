//! Series of the Kafka source, registered in the engine's registry.
//! `partition` labels are bounded by the topic's partition count, and a
//! partition's series are removed when it is revoked.

use std::time::Duration;

use prometheus::{GaugeVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::hdr_summary::HdrSummary;

/// Consumer and checkpoint series.
pub struct KafkaMetrics {
    lag: IntGaugeVec,
    committed: IntGaugeVec,
    processed: IntGaugeVec,
    partition_watermark: GaugeVec,
    assigned: IntGauge,
    connected: IntGauge,
    connection_errors: IntCounter,
    rebalances: IntCounter,
    checkpoints: IntCounter,
    checkpoint_failures: IntCounter,
    restored_records: IntCounter,
    ingest_latency: HdrSummary,
    apply_latency: HdrSummary,
}

impl KafkaMetrics {
    /// Create and register every series.
    pub fn new(registry: &Registry) -> Self {
        let int_gauge_vec = |name: &str, help: &str| {
            let vec =
                IntGaugeVec::new(Opts::new(name, help), &["partition"]).expect("valid metric");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let int_gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            let vec = GaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let summary = |summary: HdrSummary| {
            registry
                .register(Box::new(summary.clone()))
                .expect("unique metric");
            summary
        };
        Self {
            lag: int_gauge_vec("downbeat_kafka_consumer_lag_records", "Records between this replica's position and the partition's high watermark (from librdkafka statistics)."),
            committed: int_gauge_vec("downbeat_kafka_committed_offset", "Last offset committed to the group, per partition (next record to read)."),
            processed: int_gauge_vec("downbeat_kafka_processed_offset", "Next offset to process, per partition."),
            partition_watermark: gauge_vec("downbeat_kafka_partition_watermark_timestamp_seconds", "Event-time watermark of each assigned partition, epoch seconds.", "partition"),
            assigned: int_gauge("downbeat_kafka_assigned_partitions", "Partitions assigned to this replica."),
            connected: int_gauge("downbeat_kafka_connected", "1 when a broker connection is up."),
            connection_errors: counter("downbeat_kafka_connection_errors_total", "Broker connection failures reported by librdkafka."),
            rebalances: counter("downbeat_kafka_rebalances_total", "Partition assignments and revocations."),
            checkpoints: counter("downbeat_checkpoints_total", "Checkpoints written."),
            checkpoint_failures: counter("downbeat_checkpoint_failures_total", "Checkpoints that could not be written."),
            restored_records: counter("downbeat_kafka_restored_records_total", "Records re-read to rebuild window state after a restart or a hand-over (not counted again)."),
            ingest_latency: summary(HdrSummary::new("downbeat_kafka_ingest_latency_seconds", "From a record's Kafka timestamp to its stream being in window state (HdrHistogram quantiles since start).", 1e-6, 3_600_000_000)),
            apply_latency: summary(HdrSummary::new("downbeat_kafka_apply_latency_seconds", "From a record leaving the consumer's poll to its stream being in window state (HdrHistogram quantiles since start).", 1e-9, 3_600_000_000_000)),
        }
    }

    /// Per-partition consumer lag.
    pub fn set_lag(&self, partition: i32, records: i64) {
        self.lag
            .with_label_values(&[&partition.to_string()])
            .set(records);
    }

    /// Last committed offset of a partition.
    pub fn set_committed(&self, partition: i32, offset: i64) {
        self.committed
            .with_label_values(&[&partition.to_string()])
            .set(offset);
    }

    /// Next offset to process and the watermark of a partition.
    pub fn set_partition_progress(
        &self,
        partition: i32,
        next_offset: Option<i64>,
        watermark_ms: Option<i64>,
    ) {
        let label = partition.to_string();
        if let Some(offset) = next_offset {
            self.processed.with_label_values(&[&label]).set(offset);
        }
        if let Some(ms) = watermark_ms {
            self.partition_watermark
                .with_label_values(&[&label])
                .set(ms as f64 / 1000.0);
        }
    }

    /// A partition left: drop its series.
    pub fn forget_partition(&self, partition: i32) {
        let label = partition.to_string();
        let _ = self.lag.remove_label_values(&[&label]);
        let _ = self.committed.remove_label_values(&[&label]);
        let _ = self.processed.remove_label_values(&[&label]);
        let _ = self.partition_watermark.remove_label_values(&[&label]);
    }

    /// Partitions now assigned.
    pub fn set_assigned(&self, count: usize) {
        self.assigned.set(count as i64);
    }

    /// Broker connection state.
    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// True when the last report said a broker connection is up.
    pub fn connected(&self) -> bool {
        self.connected.get() == 1
    }

    /// A broker connection failed.
    pub fn connection_error(&self) {
        self.connection_errors.inc();
    }

    /// A rebalance (assign or revoke) happened.
    pub fn rebalance(&self) {
        self.rebalances.inc();
    }

    /// A checkpoint was written (or failed).
    pub fn checkpoint(&self, ok: bool) {
        if ok {
            self.checkpoints.inc();
        } else {
            self.checkpoint_failures.inc();
        }
    }

    /// Records re-read to rebuild state.
    pub fn restored(&self, records: u64) {
        self.restored_records.inc_by(records);
    }

    /// Record poll-to-state latencies (one batch, nanoseconds).
    pub fn record_apply_latencies(&self, nanos: &mut Vec<u64>) {
        if nanos.is_empty() {
            return;
        }
        self.apply_latency.record_all(nanos.drain(..));
    }

    /// Record ingest latencies (one batch).
    pub fn record_ingest_latencies(&self, latencies: &mut Vec<Duration>) {
        if latencies.is_empty() {
            return;
        }
        self.ingest_latency.record_all(
            latencies
                .drain(..)
                .map(|latency| u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
        );
    }
}

//! librdkafka's callbacks: statistics (lag, connection state), errors,
//! rebalances (checkpoint on revoke, resume on assign) and commits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::{ClientContext, NativeClient};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::consumer::Engine;
use super::group::{self, CallbackClient};
use super::metrics::KafkaMetrics;

/// What librdkafka last reported about fetching one partition.
#[derive(Clone, Copy, Debug)]
pub(super) struct FetchState {
    /// The partition's high watermark (end of the log).
    pub(super) high_offset: i64,
    /// Next offset the client will fetch.
    pub(super) fetch_offset: i64,
    /// Records fetched but not yet polled.
    pub(super) queued: i64,
}

impl FetchState {
    /// Nothing left to read as of the report: the log ends where we are.
    pub(super) fn caught_up(&self, processed: Option<i64>) -> bool {
        self.high_offset >= 0
            && self.queued == 0
            && self.fetch_offset >= self.high_offset
            && processed.is_none_or(|next| next >= self.high_offset)
    }
}

/// librdkafka callbacks.
pub(super) struct Context {
    pub(super) engine: Arc<Mutex<Engine>>,
    pub(super) kafka_metrics: Arc<KafkaMetrics>,
    pub(super) fetch: Arc<Mutex<HashMap<i32, FetchState>>>,
    pub(super) topic: String,
}

impl Context {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        self.kafka_metrics.set_connected(up);
        if let Some(topic) = statistics.topics.get(&self.topic) {
            let mut fetch = self.fetch.lock().unwrap_or_else(|e| e.into_inner());
            for (&partition, stats) in &topic.partitions {
                if partition >= 0 {
                    fetch.insert(
                        partition,
                        FetchState {
                            high_offset: stats.hi_offset,
                            fetch_offset: stats.next_offset,
                            queued: stats.fetchq_cnt,
                        },
                    );
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let connection = matches!(
            code,
            Some(RDKafkaErrorCode::BrokerTransportFailure)
                | Some(RDKafkaErrorCode::AllBrokersDown)
                | Some(RDKafkaErrorCode::Resolve)
        );
        if connection {
            self.kafka_metrics.connection_error();
            if code == Some(RDKafkaErrorCode::AllBrokersDown) {
                self.kafka_metrics.set_connected(false);
            }
            tracing::warn!(%error, reason, "kafka connection problem");
        } else {
            tracing::error!(%error, reason, "kafka error");
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, native: &NativeClient, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.kafka_metrics.rebalance();
        let client = CallbackClient(native);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.engine().assign(&client, tpl);
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
                group::assign(native, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("partitions revoked");
                self.engine().revoke(&client);
                group::unassign(native);
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                self.engine().revoke(&client);
                group::unassign(native);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if result.is_err() {
            return;
        }
        for element in offsets.elements() {
            if let Offset::Offset(offset) = element.offset() {
                self.kafka_metrics
                    .set_committed(element.partition(), offset);
            }
        }
    }
}

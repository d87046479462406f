//! The librdkafka side: client settings, and callbacks that only translate
//! librdkafka's events. Rebalances and fetch statistics are queued for the
//! consumer loop, which feeds them to the group state machine after the
//! poll returns (librdkafka waits for the assign or unassign call, so
//! nothing moves meanwhile); connection state and commits go to metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::{ClientContext, NativeClient};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::group::FetchState;
use super::metrics::KafkaMetrics;
use crate::config::KafkaConfig;

/// A client event for the consumer loop.
#[derive(Debug)]
pub enum ClientEvent {
    /// These partitions are assigned; the loop must call `assign`.
    Assigned(TopicPartitionList),
    /// Every partition is revoked; the loop must call `unassign`.
    Revoked,
    /// The rebalance failed; the loop must drop the assignment.
    RebalanceFailed(RDKafkaRespErr),
    /// The latest fetch statistics of the topic's partitions.
    Fetch(HashMap<i32, FetchState>),
}

/// librdkafka callbacks.
pub struct ClientCallbacks {
    events: Arc<Mutex<Vec<ClientEvent>>>,
    /// Set when the consumer is closing: the revoke is then answered at
    /// once (the loop has already checkpointed and will not poll again).
    closing: Arc<AtomicBool>,
    kafka_metrics: Arc<KafkaMetrics>,
    topic: String,
}

impl ClientCallbacks {
    /// Callbacks queueing into `events`.
    pub fn new(
        events: Arc<Mutex<Vec<ClientEvent>>>,
        closing: Arc<AtomicBool>,
        kafka_metrics: Arc<KafkaMetrics>,
        topic: String,
    ) -> Self {
        Self {
            events,
            closing,
            kafka_metrics,
            topic,
        }
    }

    fn push(&self, event: ClientEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

impl ClientContext for ClientCallbacks {
    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        self.kafka_metrics.set_connected(up);
        if let Some(topic) = statistics.topics.get(&self.topic) {
            let fetch = topic
                .partitions
                .iter()
                .filter(|(&partition, _)| partition >= 0)
                .map(|(&partition, stats)| {
                    let state = FetchState {
                        high_offset: stats.hi_offset,
                        fetch_offset: stats.next_offset,
                        queued: stats.fetchq_cnt,
                    };
                    (partition, state)
                })
                .collect();
            self.push(ClientEvent::Fetch(fetch));
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

impl ConsumerContext for ClientCallbacks {
    fn rebalance(&self, native: &NativeClient, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.kafka_metrics.rebalance();
        if self.closing.load(Ordering::Relaxed) {
            // SAFETY: a live handle; a null list clears the assignment.
            let _ = unsafe { rdkafka::bindings::rd_kafka_assign(native.ptr(), std::ptr::null()) };
            return;
        }
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.push(ClientEvent::Assigned(tpl.clone()));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.push(ClientEvent::Revoked);
            }
            other => self.push(ClientEvent::RebalanceFailed(other)),
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

/// The librdkafka settings: ours, then the user's pass-through properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
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

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::*;

    /// Managed Kafka (MSK, Confluent Cloud, Aiven) wants TLS and SASL: the
    /// settings the README shows are accepted by the consumer and the
    /// producers (a librdkafka built without OpenSSL refuses them with
    /// "OpenSSL not available at build time").
    #[test]
    fn tls_and_sasl_settings_are_accepted() {
        for (mechanism, protocol) in [("SCRAM-SHA-512", "SASL_SSL"), ("PLAIN", "SASL_SSL")] {
            let kafka = KafkaConfig {
                brokers: "127.0.0.1:1".into(),
                properties: [
                    ("security.protocol", protocol),
                    ("sasl.mechanism", mechanism),
                    ("sasl.username", "downbeat"),
                    ("sasl.password", "secret"),
                    ("ssl.ca.location", "probe"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                ..KafkaConfig::default()
            };
            let config = client_config(&kafka);
            if let Err(error) = config.create::<BaseConsumer>() {
                panic!("{mechanism} over {protocol}: {error}");
            }
            let mut producer = ClientConfig::new();
            for (key, value) in &kafka.properties {
                producer.set(key, value);
            }
            producer.set("bootstrap.servers", &kafka.brokers);
            assert!(producer.create::<BaseProducer>().is_ok());
        }
        // mTLS: a client certificate that does not exist is refused by name.
        let mut config = client_config(&KafkaConfig::default());
        config
            .set("security.protocol", "SSL")
            .set("ssl.certificate.location", "/nonexistent/client.pem");
        let Err(error) = config.create::<BaseConsumer>() else {
            panic!("a missing client certificate was accepted");
        };
        assert!(error.to_string().contains("ssl"), "{error}");
    }
}

//! A producer whose caller learns, by a wall-clock deadline, whether the
//! broker took every record sent: the partials and the state topic use it
//! so that a checkpoint never runs ahead of what the broker holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use thiserror::Error;

/// Why the records sent are not all acknowledged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Unacknowledged {
    /// Still in flight at the deadline: the producer keeps retrying (until
    /// its `message.timeout.ms`), so a later wait may succeed.
    #[error("{records} records not acknowledged within {timeout:?}")]
    InFlight {
        /// Records still in flight.
        records: i32,
        /// The time waited.
        timeout: Duration,
    },
    /// The producer gave up on these records (its delivery reports).
    #[error("{records} records were not delivered: {first_error}")]
    Lost {
        /// Records lost since the last wait.
        records: u64,
        /// The first loss's error.
        first_error: String,
    },
}

/// Counts the records the broker did not take.
#[derive(Default)]
struct Losses {
    records: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// The delivery callback: counts losses (logged once per wait).
pub struct DeliveryCounter {
    losses: Arc<Losses>,
    what: &'static str,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if self.losses.records.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(%error, what = self.what, "a record was not delivered");
            }
            let mut first = self.losses.first_error.lock().expect("not poisoned");
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

/// An idempotent, `acks=all` producer and its delivery counter.
pub struct AcknowledgedProducer {
    producer: BaseProducer<DeliveryCounter>,
    losses: Arc<Losses>,
}

impl AcknowledgedProducer {
    /// A producer from `config` (brokers and the user's properties), named
    /// `client_id`; `what` names its records in logs.
    pub fn create(
        config: &ClientConfig,
        client_id: &str,
        linger_ms: u32,
        what: &'static str,
    ) -> Result<Self, KafkaError> {
        let losses = Arc::new(Losses::default());
        let producer = config
            .clone()
            .set("client.id", client_id)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", linger_ms.to_string())
            .create_with_context(DeliveryCounter {
                losses: Arc::clone(&losses),
                what,
            })?;
        Ok(Self { producer, losses })
    }

    /// Send one record, waiting while the local queue is full.
    pub fn send(&self, record: BaseRecord<'_, str, [u8]>) -> Result<(), KafkaError> {
        let mut pending = record;
        loop {
            match self.producer.send(pending) {
                Ok(()) => return Ok(()),
                Err((error, record))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    self.producer.poll(Duration::from_millis(100));
                    pending = record;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Serve delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Wait, by the wall clock, until nothing is in flight; then report the
    /// records lost since the last wait. (rdkafka 0.36's `flush` counts its
    /// timeout in polls, and a poll returns early on each delivery report:
    /// with many records in flight it gave up after about a second, not the
    /// time asked.)
    pub fn wait(&self, timeout: Duration) -> Result<(), Unacknowledged> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.producer.in_flight_count();
            if records == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Unacknowledged::InFlight { records, timeout });
            }
            self.producer
                .poll((deadline - now).min(Duration::from_millis(100)));
        }
        let records = self.losses.records.swap(0, Ordering::Relaxed);
        if records == 0 {
            return Ok(());
        }
        let first_error = self
            .losses
            .first_error
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or_default();
        Err(Unacknowledged::Lost {
            records,
            first_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    fn producer(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        message_timeout_ms: u32,
    ) -> AcknowledgedProducer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.timeout.ms", message_timeout_ms.to_string());
        AcknowledgedProducer::create(&config, "test", 5, "test records").unwrap()
    }

    fn send_many(producer: &AcknowledgedProducer, count: usize) {
        for i in 0..count {
            let payload = vec![b'x'; 100];
            let key = i.to_string();
            let record = BaseRecord::<str, [u8]>::to("t").key(&key).payload(&payload);
            producer.send(record).unwrap();
        }
    }

    /// Thousands of records in flight, delivered in small batches over a
    /// slow link, are all acknowledged within the deadline (rdkafka's
    /// poll-counting `flush` gives up on these long before it).
    #[test]
    fn many_records_are_acknowledged_within_the_deadline() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        cluster
            .broker_round_trip_time(1, Duration::from_millis(10))
            .unwrap();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("batch.num.messages", "10");
        let producer = AcknowledgedProducer::create(&config, "test", 0, "test records").unwrap();
        send_many(&producer, 5_000);
        assert_eq!(producer.wait(Duration::from_secs(30)), Ok(()));
    }

    /// A broker that is down: the records are in flight at the deadline
    /// (defer), are delivered once it is back (a later wait succeeds), and
    /// past the producer's message timeout they are lost (stop).
    #[test]
    fn slow_is_in_flight_and_past_the_message_timeout_is_lost() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let patient = producer(&cluster, 60_000);
        let impatient = producer(&cluster, 1_000);
        assert_eq!(patient.wait(Duration::from_secs(10)), Ok(()));
        cluster.broker_down(1).unwrap();
        send_many(&patient, 10);
        send_many(&impatient, 10);
        assert!(matches!(
            patient.wait(Duration::from_millis(500)),
            Err(Unacknowledged::InFlight { records: 10, .. })
        ));
        assert!(matches!(
            impatient.wait(Duration::from_secs(20)),
            Err(Unacknowledged::Lost { records: 10, .. })
        ));
        cluster.broker_up(1).unwrap();
        assert_eq!(patient.wait(Duration::from_secs(30)), Ok(()));
        // The losses were reported once.
        assert_eq!(impatient.wait(Duration::from_secs(1)), Ok(()));
    }
}

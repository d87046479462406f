//! Kafka: the consumer-group state machine, checkpoints, the client glue,
//! the series of the Kafka source, and `produce`. The source itself is
//! `source::kafka`. See the README's "Kafka: delivery, recovery and
//! scale-out" for the design.

pub mod acknowledged;
pub mod checkpoint;
pub mod client;
pub mod group;
pub mod metrics;
pub mod partition;
pub mod produce;
pub mod state_topic;

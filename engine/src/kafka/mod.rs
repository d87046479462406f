//! The Kafka source: `downbeat run --source kafka`.
//!
//! One thread polls the consumer and runs the pipeline; the rebalance
//! callback (which librdkafka runs inside that same poll) checkpoints the
//! partitions being revoked and resumes the ones assigned. See the README's
//! "Kafka: delivery, recovery and scale-out" for the design.

pub mod checkpoint;
pub mod metrics;
pub mod partition;
pub mod produce;

mod consumer;
mod context;
mod emit;
mod group;

pub use consumer::run;

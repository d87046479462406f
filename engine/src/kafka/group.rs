//! The consumer-group operations the engine needs, both from the poll loop
//! (through the consumer) and inside librdkafka's rebalance callback, where
//! rdkafka 0.36 hands over only the native handle.
//!
//! rdkafka 0.36 is used because it bundles librdkafka 2.3: from 2.4 on,
//! librdkafka's fetch-time leader discovery (KIP-951) dereferences a NULL
//! topic name when a broker identifies topics by a zero id, as tansu does,
//! and the process dies with SIGSEGV when the broker restarts.

use std::ptr;

use rdkafka::bindings as rd;
use rdkafka::client::NativeClient;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::time::Duration;

/// Offsets and assignment, whichever side of the callback we are on.
pub trait GroupClient {
    /// Remember offsets for the next commit.
    fn store_offsets(&self, offsets: &TopicPartitionList);
    /// Commit what is stored, waiting for the answer.
    fn commit_sync(&self);
    /// The group's committed offsets for `partitions`.
    fn committed(&self, partitions: &TopicPartitionList) -> Option<TopicPartitionList>;
}

impl<C: ConsumerContext> GroupClient for BaseConsumer<C> {
    fn store_offsets(&self, offsets: &TopicPartitionList) {
        if let Err(error) = Consumer::store_offsets(self, offsets) {
            tracing::debug!(%error, "cannot store offsets");
        }
    }

    fn commit_sync(&self) {
        let _ = self.commit_consumer_state(CommitMode::Sync);
    }

    fn committed(&self, partitions: &TopicPartitionList) -> Option<TopicPartitionList> {
        self.committed_offsets(partitions.clone(), Duration::from_secs(10))
            .map_err(|error| tracing::warn!(%error, "cannot read the group's committed offsets"))
            .ok()
    }
}

/// The handle librdkafka passes to the rebalance callback.
pub struct CallbackClient<'a>(pub &'a NativeClient);

impl GroupClient for CallbackClient<'_> {
    fn store_offsets(&self, offsets: &TopicPartitionList) {
        // SAFETY: both pointers are live for the call: the handle is the
        // callback's, the list is borrowed; librdkafka copies what it keeps.
        let error = unsafe { rd::rd_kafka_offsets_store(self.0.ptr(), offsets.ptr()) };
        if error as i32 != 0 {
            tracing::debug!(?error, "cannot store offsets");
        }
    }

    fn commit_sync(&self) {
        // SAFETY: a null list commits the stored offsets; 0 = synchronous.
        let error = unsafe { rd::rd_kafka_commit(self.0.ptr(), ptr::null(), 0) };
        if error as i32 != 0 {
            tracing::debug!(?error, "commit on revoke failed");
        }
    }

    fn committed(&self, partitions: &TopicPartitionList) -> Option<TopicPartitionList> {
        let list = partitions.clone();
        // SAFETY: `list` is owned here and outlives the call, which fills
        // its offsets in place.
        let error = unsafe { rd::rd_kafka_committed(self.0.ptr(), list.ptr(), 10_000) };
        if error as i32 != 0 {
            tracing::warn!(?error, "cannot read the group's committed offsets");
            return None;
        }
        Some(list)
    }
}

/// Take the assignment (eager protocol).
pub fn assign(native: &NativeClient, assignment: &TopicPartitionList) {
    // SAFETY: live handle and list for the duration of the call.
    let error = unsafe { rd::rd_kafka_assign(native.ptr(), assignment.ptr()) };
    if error as i32 != 0 {
        tracing::error!(?error, "cannot assign partitions");
    }
}

/// Drop the whole assignment.
pub fn unassign(native: &NativeClient) {
    // SAFETY: a null list clears the assignment.
    let _ = unsafe { rd::rd_kafka_assign(native.ptr(), ptr::null()) };
}

//! The consumer-group logic as a plain state machine, with no Kafka client
//! in it: which partitions this replica holds, where each starts reading
//! and from where it re-reads, each partition's watermark and idleness,
//! the engine's watermark over them, and the checkpoint, resume, catch-up
//! and commit decisions.
//!
//! The client glue (`source::kafka`) turns librdkafka's events into calls
//! here and carries out the answers: seeks, offsets to assign, windows to
//! close, offsets to commit.

use std::collections::{BTreeMap, HashMap};

use downbeat_operators::bucket_start;

use super::partition::{
    OffsetCheck, PartitionCheckpoint, PartitionGeometry, PartitionState, RecordRole,
    SessionSnapshot,
};
use crate::pipeline::OutlierSnapshot;

/// A resumed partition is fetched from this many records before its resume
/// offset (they are skipped unread). Some Kafka-protocol brokers (tansu
/// 0.6) answer a fetch that starts inside a record batch with the next
/// batch, or with nothing if it is the last one; starting before the batch
/// avoids both. Real Kafka returns the containing batch and the client
/// skips the same records anyway.
pub const RESUME_LOOKBACK_RECORDS: i64 = 10_000;

/// What the client last reported about fetching one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchState {
    /// The partition's high watermark (end of the log).
    pub high_offset: i64,
    /// Next offset the client will fetch.
    pub fetch_offset: i64,
    /// Records fetched but not yet polled.
    pub queued: i64,
}

impl FetchState {
    /// Nothing left to read as of the report: the log ends where we are.
    pub fn caught_up(&self, processed: Option<i64>) -> bool {
        self.high_offset >= 0
            && self.queued == 0
            && self.fetch_offset >= self.high_offset
            && processed.is_none_or(|next| next >= self.high_offset)
    }
}

/// Where the consumer starts an assigned partition, and how far the
/// windows already hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// The partition.
    pub partition: i32,
    /// Offset to fetch from; None: the group's committed offset, or the
    /// start of the log.
    pub fetch_from: Option<i64>,
    /// Windows ending at or before this already hold the partition.
    pub emitted_through_ms: i64,
    /// The partition's outlier guard as checkpointed (None: a fresh guard).
    pub outliers: Option<OutlierSnapshot>,
    /// The partition's open sessions as checkpointed (None: none).
    pub sessions: Option<SessionSnapshot>,
}

/// What to do with the record at an offset, before decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Not ours (revoked meanwhile) or already processed: skip it.
    Skip,
    /// Records before it are missing: seek the partition back to this offset.
    SeekBack(i64),
    /// Counted before a restart or hand-over: rebuild its pane only.
    Restore,
    /// New: count it.
    Count,
}

/// A stream read from a partition, as the state machine needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenStream {
    /// Its offset: the record's own, or an earlier one for a stream the
    /// outlier guard held and has now released.
    pub offset: i64,
    /// Its event time.
    pub time_ms: i64,
    /// It went into a pane (counted, or restored because a window needs it).
    pub in_pane: bool,
}

/// What the windows need after a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progressed {
    /// The partition may owe windows closed here: catch it up to this.
    pub catch_up_to: Option<i64>,
    /// The engine's watermark may have moved: close windows.
    pub advance: bool,
}

/// A checkpoint in the making: the partitions held (first `held`), then
/// those carried from before. Offsets are committed only once it is saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCheckpoint {
    /// Every partition this replica's checkpoint file lists.
    pub partitions: Vec<PartitionCheckpoint>,
    /// How many of them this replica holds now.
    pub held: usize,
}

/// Where one held partition is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: i32,
    /// Next offset to process.
    pub next_offset: Option<i64>,
    /// Its watermark.
    pub watermark_ms: Option<i64>,
    /// Records behind the end of the log, when the client reported it.
    pub lag_records: Option<i64>,
}

/// The group state of one replica.
pub struct Group {
    geometry: PartitionGeometry,
    idle_timeout_ms: i64,
    partitions: BTreeMap<i32, PartitionState>,
    /// Partitions this replica checkpointed but does not hold now (before
    /// its first assignment after a restart, or after a revoke). Their
    /// entries stay in its file: for a partition nobody else has
    /// checkpointed since, they are the only copy of its state.
    carried: BTreeMap<i32, PartitionCheckpoint>,
    fetch: HashMap<i32, FetchState>,
    restored: u64,
}

impl Group {
    /// A replica that holds nothing yet; `carried` is its own last checkpoint.
    pub fn new(
        geometry: PartitionGeometry,
        idle_timeout_ms: i64,
        carried: impl IntoIterator<Item = PartitionCheckpoint>,
    ) -> Self {
        Self {
            geometry,
            idle_timeout_ms,
            partitions: BTreeMap::new(),
            carried: carried.into_iter().map(|p| (p.partition, p)).collect(),
            fetch: HashMap::new(),
            restored: 0,
        }
    }

    /// Partitions assigned: each resumes from its newest checkpoint (and
    /// re-reads its live panes), else starts at the group's committed
    /// offset, else at the start of the log.
    pub fn assign(
        &mut self,
        partitions: &[i32],
        checkpoints: &BTreeMap<i32, PartitionCheckpoint>,
        committed: &BTreeMap<i32, i64>,
        now_ms: i64,
    ) -> Vec<Start> {
        let geometry = self.geometry;
        let lookback = |offset: i64| Some(offset.saturating_sub(RESUME_LOOKBACK_RECORDS).max(0));
        let mut starts = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let (state, start) = match (checkpoints.get(&partition), committed.get(&partition)) {
                (Some(checkpoint), _) => (
                    PartitionState::resumed(checkpoint, geometry, now_ms),
                    Start {
                        partition,
                        fetch_from: lookback(checkpoint.replay_from),
                        emitted_through_ms: checkpoint.emitted_through_ms,
                        outliers: checkpoint.outliers.clone(),
                        sessions: checkpoint.sessions.clone(),
                    },
                ),
                (None, Some(&offset)) => (
                    PartitionState::fresh_at(partition, offset, geometry, now_ms),
                    Start {
                        partition,
                        fetch_from: lookback(offset),
                        emitted_through_ms: i64::MIN,
                        outliers: None,
                        sessions: None,
                    },
                ),
                (None, None) => (
                    PartitionState::fresh(partition, geometry, now_ms),
                    Start {
                        partition,
                        fetch_from: None,
                        emitted_through_ms: i64::MIN,
                        outliers: None,
                        sessions: None,
                    },
                ),
            };
            self.partitions.insert(partition, state);
            starts.push(start);
        }
        starts
    }

    /// Every partition is revoked (the eager protocol); the caller has
    /// checkpointed them. Returns the partitions to drop.
    pub fn revoke(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.partitions).into_keys().collect()
    }

    /// The partitions held now.
    pub fn held(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// What to do with the record at `offset` of `partition`.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Admit::Skip;
        };
        if let OffsetCheck::SeekBack(to) = state.check_offset(offset) {
            return Admit::SeekBack(to);
        }
        let admit = match state.role(offset) {
            RecordRole::Seen => return Admit::Skip,
            RecordRole::Restore => Admit::Restore,
            RecordRole::Count => Admit::Count,
        };
        state.admitted();
        admit
    }

    /// A stream of `partition` at `time_ms` is late by the partition's own
    /// watermark (decided per partition, so the verdict is the same however
    /// partitions interleave and whichever replica reads them).
    pub fn is_late(&self, partition: i32, time_ms: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|state| state.is_late(time_ms))
    }

    /// The outlier guard holds the stream at `offset` of `partition`.
    pub fn hold(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.note_held(offset);
        }
    }

    /// The outlier guard refused the stream at `offset` of `partition`.
    pub fn refused(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.note_decided(offset);
        }
    }

    /// A stream of `partition` passed the outlier guard (counted or late,
    /// or restored): the record being handled, or one held before that the
    /// guard released with it. Moves the partition's watermark at once, so
    /// the next stream's lateness is decided after it, as in `replay`.
    pub fn seen(&mut self, partition: i32, stream: SeenStream) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if stream.in_pane {
            state.note_pane(stream.offset, stream.time_ms);
        } else {
            state.note_decided(stream.offset);
        }
        state.observe(stream.time_ms);
    }

    /// The record at `offset` of `partition` was handled (`admit` said
    /// Restore or Count, and its streams went to [`Group::seen`]).
    pub fn record_done(
        &mut self,
        partition: i32,
        offset: i64,
        restore: bool,
        now_ms: i64,
    ) -> Progressed {
        let pane_ms = self.geometry.pane_ms;
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Progressed::default();
        };
        let was_restoring = state.restoring();
        let watermark_before = state.watermark_at_admit();
        if restore {
            self.restored += 1;
        }
        state.processed(offset, now_ms);
        let rebuilt = was_restoring && !state.restoring();
        if rebuilt {
            tracing::info!(partition, "partition state rebuilt");
        }
        let watermark = state.watermark_ms();
        let crossed = match (watermark_before, watermark) {
            (Some(before), Some(after)) => {
                bucket_start(before, pane_ms) != bucket_start(after, pane_ms)
            }
            (None, Some(_)) => true,
            _ => false,
        };
        let catch_up_to = if (crossed || rebuilt) && !state.restoring() {
            watermark
        } else {
            None
        };
        Progressed {
            catch_up_to,
            advance: crossed || was_restoring,
        }
    }

    /// The client's latest fetch report.
    pub fn set_fetch(&mut self, fetch: HashMap<i32, FetchState>) {
        self.fetch = fetch;
    }

    fn caught_up(&self, state: &PartitionState) -> bool {
        self.fetch
            .get(&state.partition())
            .is_some_and(|f| f.caught_up(state.next_offset()))
    }

    /// The engine's watermark: the minimum over held partitions that are
    /// not idle; when all are idle, the wall clock minus the lateness (the
    /// idle rule). None while a partition's state is being rebuilt.
    ///
    /// Idle means no record for the idle timeout *and* nothing left to read:
    /// a partition with a backlog the client has not reached yet is slow,
    /// not idle, and holds the windows open.
    pub fn watermark(&self, now_ms: i64) -> Option<i64> {
        let mut minimum: Option<i64> = None;
        let mut any_active = false;
        let mut any_seen = false;
        for state in self.partitions.values() {
            if state.restoring() {
                return None;
            }
            let watermark = state.watermark_ms();
            any_seen |= watermark.is_some();
            if self.caught_up(state) && state.is_idle(now_ms, self.idle_timeout_ms) {
                continue;
            }
            any_active = true;
            let watermark = watermark?;
            minimum = Some(minimum.map_or(watermark, |m| m.min(watermark)));
        }
        if any_active {
            minimum
        } else if any_seen {
            Some(now_ms.saturating_sub(self.geometry.allowed_lateness_ms))
        } else {
            None
        }
    }

    /// Partitions that went idle with nothing left to read: they owe the
    /// windows closed here that their input will not complete, now (the
    /// idle rule, for catching up).
    pub fn idle_caught_up(&self, now_ms: i64) -> Vec<i32> {
        self.partitions
            .values()
            .filter(|state| !state.restoring() && state.is_idle(now_ms, self.idle_timeout_ms))
            .filter(|state| self.caught_up(state))
            .map(PartitionState::partition)
            .collect()
    }

    /// The largest event time over the held partitions.
    pub fn max_event_ms(&self) -> Option<i64> {
        self.partitions
            .values()
            .filter_map(PartitionState::max_event_ms)
            .max()
    }

    /// Where each held partition is, for its series.
    pub fn partition_progress(&self) -> Vec<PartitionProgress> {
        self.partitions
            .values()
            .map(|state| {
                let next_offset = state.next_offset();
                let lag_records = self.fetch.get(&state.partition()).and_then(|f| {
                    let position = next_offset.unwrap_or(f.fetch_offset - f.queued);
                    (f.high_offset >= 0).then(|| (f.high_offset - position).max(0))
                });
                PartitionProgress {
                    partition: state.partition(),
                    next_offset,
                    watermark_ms: state.watermark_ms(),
                    lag_records,
                }
            })
            .collect()
    }

    /// Records re-read to rebuild state since the last call.
    pub fn take_restored(&mut self) -> u64 {
        std::mem::take(&mut self.restored)
    }

    /// A checkpoint of every held partition, the windows through
    /// `emitted_through(partition)` holding it, its outlier guard
    /// `outliers(partition)`, plus the partitions carried from before.
    pub fn checkpoint(
        &mut self,
        emitted_through: impl Fn(i32) -> i64,
        outliers: impl Fn(i32) -> Option<OutlierSnapshot>,
        sessions: impl Fn(i32) -> Option<SessionSnapshot>,
    ) -> PendingCheckpoint {
        let mut partitions: Vec<PartitionCheckpoint> = self
            .partitions
            .values_mut()
            .filter_map(|state| {
                let partition = state.partition();
                state.checkpoint(
                    emitted_through(partition),
                    outliers(partition),
                    sessions(partition),
                )
            })
            .collect();
        let held = partitions.len();
        for (partition, carried) in &self.carried {
            if !self.partitions.contains_key(partition) {
                partitions.push(carried.clone());
            }
        }
        PendingCheckpoint { partitions, held }
    }

    /// The checkpoint is saved: its partitions are now the carried copy,
    /// and their offsets (where counting resumes) may be committed.
    pub fn checkpoint_saved(&mut self, checkpoint: &PendingCheckpoint) -> Vec<(i32, i64)> {
        let held = &checkpoint.partitions[..checkpoint.held];
        for partition in held {
            self.carried.insert(partition.partition, partition.clone());
        }
        held.iter()
            .map(|partition| (partition.partition, partition.next_offset))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::partition::tests::GEOMETRY;
    const IDLE_MS: i64 = 5_000;

    fn caught_up_at(high_offset: i64) -> FetchState {
        FetchState {
            high_offset,
            fetch_offset: high_offset,
            queued: 0,
        }
    }

    /// Count the stream at `offset` of `partition` as the glue would.
    fn count(
        group: &mut Group,
        partition: i32,
        offset: i64,
        time_ms: i64,
        now_ms: i64,
    ) -> Progressed {
        assert_eq!(group.admit(partition, offset), Admit::Count);
        let late = group.is_late(partition, time_ms);
        let stream = SeenStream {
            offset,
            time_ms,
            in_pane: !late,
        };
        group.seen(partition, stream);
        group.record_done(partition, offset, false, now_ms)
    }

    #[test]
    fn an_assignment_resumes_from_the_checkpoint_then_the_committed_offset_then_the_start() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        let checkpoint = PartitionCheckpoint {
            partition: 0,
            seq: 3,
            next_offset: 20_500,
            replay_from: 20_000,
            max_event_ms_before_replay: Some(59_000),
            emitted_through_ms: 60_000,
            outliers: None,
            sessions: None,
        };
        let checkpoints = BTreeMap::from([(0, checkpoint)]);
        let committed = BTreeMap::from([(0, 99_999), (1, 700)]);
        let starts = group.assign(&[0, 1, 2], &checkpoints, &committed, 0);
        assert_eq!(
            starts,
            vec![
                Start {
                    partition: 0,
                    fetch_from: Some(20_000 - RESUME_LOOKBACK_RECORDS),
                    emitted_through_ms: 60_000,
                    outliers: None,
                    sessions: None,
                },
                Start {
                    partition: 1,
                    fetch_from: Some(0),
                    emitted_through_ms: i64::MIN,
                    outliers: None,
                    sessions: None,
                },
                Start {
                    partition: 2,
                    fetch_from: None,
                    emitted_through_ms: i64::MIN,
                    outliers: None,
                    sessions: None,
                },
            ]
        );
        // Partition 0: the look-back is skipped, its live panes rebuilt
        // without counting, then counting resumes at the checkpoint's offset.
        assert_eq!(group.admit(0, 19_999), Admit::Skip);
        assert_eq!(group.admit(0, 20_000), Admit::Restore);
        assert_eq!(
            group.watermark(0),
            None,
            "no windows close while rebuilding"
        );
        for offset in 20_000..20_500 {
            assert_eq!(group.admit(0, offset), Admit::Restore);
            let stream = SeenStream {
                offset,
                time_ms: 61_000,
                in_pane: true,
            };
            group.seen(0, stream);
            group.record_done(0, offset, true, 0);
        }
        assert_eq!(group.take_restored(), 500);
        assert_eq!(group.admit(0, 20_500), Admit::Count);
        // Partition 1 counts from its committed offset only.
        assert_eq!(group.admit(1, 699), Admit::Skip);
        assert_eq!(group.admit(1, 700), Admit::Count);
        assert_eq!(group.admit(2, 0), Admit::Count);
        assert_eq!(group.admit(7, 0), Admit::Skip, "not assigned here");
    }

    #[test]
    fn a_revoke_checkpoints_every_held_partition_and_commits_only_once_saved() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0, 1], &BTreeMap::new(), &BTreeMap::new(), 0);
        for offset in 0..10 {
            count(&mut group, 0, offset, 61_000 + offset, 0);
        }
        count(&mut group, 1, 0, 62_000, 0);
        let pending = group.checkpoint(|_| i64::MIN, |_| None, |_| None);
        assert_eq!(pending.held, 2);
        let offsets: Vec<(i32, i64, i64)> = pending
            .partitions
            .iter()
            .map(|p| (p.partition, p.replay_from, p.next_offset))
            .collect();
        assert_eq!(offsets, vec![(0, 0, 10), (1, 0, 1)]);
        // Nothing is committed until the checkpoint is saved; then exactly
        // the offsets it covers, never beyond.
        assert_eq!(group.checkpoint_saved(&pending), vec![(0, 10), (1, 1)]);
        assert_eq!(group.revoke(), vec![0, 1]);
        assert_eq!(group.held().count(), 0);
        // After the revoke the replica's file still carries them.
        let next = group.checkpoint(|_| i64::MIN, |_| None, |_| None);
        assert_eq!((next.held, next.partitions.len()), (0, 2));
        assert!(
            group.checkpoint_saved(&next).is_empty(),
            "nothing held: nothing to commit"
        );
    }

    #[test]
    fn a_checkpoint_that_was_not_saved_commits_nothing_and_the_next_covers_more() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0], &BTreeMap::new(), &BTreeMap::new(), 0);
        count(&mut group, 0, 0, 61_000, 0);
        let _lost = group.checkpoint(|_| i64::MIN, |_| None, |_| None);
        count(&mut group, 0, 1, 61_500, 0);
        let saved = group.checkpoint(|_| i64::MIN, |_| None, |_| None);
        assert_eq!(group.checkpoint_saved(&saved), vec![(0, 2)]);
        assert!(saved.partitions[0].seq > 1, "every checkpoint bumps seq");
    }

    #[test]
    fn a_partition_taken_over_from_a_replica_behind_catches_up_as_its_watermark_moves() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        let behind = PartitionCheckpoint {
            partition: 3,
            seq: 9,
            next_offset: 100,
            replay_from: 100,
            max_event_ms_before_replay: Some(130_000),
            emitted_through_ms: 120_000,
            outliers: None,
            sessions: None,
        };
        let starts = group.assign(&[3], &BTreeMap::from([(3, behind)]), &BTreeMap::new(), 0);
        assert_eq!(starts[0].emitted_through_ms, 120_000);
        // Nothing to rebuild (replay_from == next_offset): the first record
        // counts, and its watermark crossing a pane asks for catch-up to it.
        let progressed = count(&mut group, 3, 100, 250_000, 0);
        assert_eq!(progressed.catch_up_to, Some(240_000));
        assert!(progressed.advance);
        // Within the same pane: nothing more to catch up.
        let progressed = count(&mut group, 3, 101, 251_000, 0);
        assert_eq!(progressed, Progressed::default());
    }

    #[test]
    fn rebuilding_asks_to_catch_up_once_rebuilt() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        let checkpoint = PartitionCheckpoint {
            partition: 0,
            seq: 1,
            next_offset: 2,
            replay_from: 0,
            max_event_ms_before_replay: None,
            emitted_through_ms: 60_000,
            outliers: None,
            sessions: None,
        };
        group.assign(
            &[0],
            &BTreeMap::from([(0, checkpoint)]),
            &BTreeMap::new(),
            0,
        );
        fn restored(group: &mut Group, offset: i64, time_ms: i64) -> Progressed {
            assert_eq!(group.admit(0, offset), Admit::Restore);
            let stream = SeenStream {
                offset,
                time_ms,
                in_pane: true,
            };
            group.seen(0, stream);
            group.record_done(0, offset, true, 0)
        }
        let first = restored(&mut group, 0, 130_000);
        assert_eq!(first.catch_up_to, None, "still rebuilding");
        assert!(first.advance);
        let last = restored(&mut group, 1, 131_000);
        assert_eq!(
            last.catch_up_to,
            Some(121_000),
            "rebuilt: catch up to its watermark"
        );
    }

    #[test]
    fn a_gap_after_a_resume_seeks_back_then_carries_on() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        let checkpoint = PartitionCheckpoint {
            partition: 0,
            seq: 1,
            next_offset: 900,
            replay_from: 500,
            max_event_ms_before_replay: None,
            emitted_through_ms: 0,
            outliers: None,
            sessions: None,
        };
        group.assign(
            &[0],
            &BTreeMap::from([(0, checkpoint)]),
            &BTreeMap::new(),
            0,
        );
        // The broker answered with a later batch: seek further back.
        assert_eq!(group.admit(0, 600), Admit::SeekBack(300));
        assert_eq!(group.admit(0, 450), Admit::Skip, "before the target: seen");
        assert_eq!(group.admit(0, 500), Admit::Restore);
    }

    #[test]
    fn a_slow_partition_holds_the_watermark_and_an_idle_one_does_not() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0, 1], &BTreeMap::new(), &BTreeMap::new(), 0);
        count(&mut group, 0, 0, 300_000, 0);
        count(&mut group, 1, 0, 100_000, 0);
        assert_eq!(
            group.watermark(1_000),
            Some(90_000),
            "the minimum over partitions"
        );
        // Partition 1 gets nothing for longer than the idle timeout, but
        // the client has not fetched its backlog: slow, not idle.
        count(&mut group, 0, 1, 301_000, 10_000);
        group.set_fetch(HashMap::from([
            (0, caught_up_at(2)),
            (
                1,
                FetchState {
                    high_offset: 50,
                    fetch_offset: 1,
                    queued: 0,
                },
            ),
        ]));
        assert_eq!(
            group.watermark(10_000),
            Some(90_000),
            "slow partition 1 holds it"
        );
        assert!(group.idle_caught_up(10_000).is_empty());
        // Once its log is read to the end, partition 1 is idle: partition
        // 0's watermark rules, and partition 1 owes its windows now.
        group.set_fetch(HashMap::from([(0, caught_up_at(2)), (1, caught_up_at(1))]));
        assert_eq!(group.watermark(10_000), Some(291_000));
        assert_eq!(group.idle_caught_up(10_000), vec![1]);
        // Both idle: the wall clock minus the lateness.
        assert_eq!(group.watermark(20_000), Some(10_000));
    }

    #[test]
    fn late_streams_are_judged_by_their_own_partition() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0, 1], &BTreeMap::new(), &BTreeMap::new(), 0);
        count(&mut group, 0, 0, 300_000, 0);
        assert!(group.is_late(0, 100_000));
        assert!(!group.is_late(1, 100_000), "partition 1 has not moved");
    }

    /// A record the outlier guard holds is read again after a resume: the
    /// checkpoint re-reads from it, with the partition's position when it
    /// was read; once refused, it no longer holds the re-read back.
    #[test]
    fn a_held_record_is_re_read_after_a_resume() {
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0], &BTreeMap::new(), &BTreeMap::new(), 0);
        count(&mut group, 0, 0, 61_000, 0);
        assert_eq!(group.admit(0, 1), Admit::Count);
        group.hold(0, 1);
        group.record_done(0, 1, false, 0);
        count(&mut group, 0, 2, 700_000, 0);
        let snapshot = OutlierSnapshot {
            confirmed_max_ms: Some(700_000),
            held: vec![(1, 1)],
        };
        let pending = group.checkpoint(|_| 660_000, |_| Some(snapshot.clone()), |_| None);
        let checkpoint = &pending.partitions[0];
        assert_eq!(
            (
                checkpoint.replay_from,
                checkpoint.max_event_ms_before_replay
            ),
            (1, Some(61_000))
        );
        assert_eq!(checkpoint.outliers, Some(snapshot));
        group.refused(0, 1);
        let pending = group.checkpoint(|_| 660_000, |_| None, |_| None);
        assert_eq!(pending.partitions[0].replay_from, 2);
    }

    /// A partition's open sessions go into its checkpoint, and a resume
    /// from it hands them back (with the checkpoint's JSON in between).
    #[test]
    fn open_sessions_are_checkpointed_and_handed_back_on_resume() {
        use downbeat_operators::{OpenSession, SessionKey};
        let mut group = Group::new(GEOMETRY, IDLE_MS, []);
        group.assign(&[0], &BTreeMap::new(), &BTreeMap::new(), 0);
        count(&mut group, 0, 0, 61_000, 0);
        let sessions = vec![(
            SessionKey {
                user_id: "42".into(),
                session_id: Some("\"a\\\"b\"".into()),
            },
            OpenSession {
                start_ms: 1_000,
                end_ms: 61_000,
                events: 3,
                plays: 2,
            },
        )];
        let pending = group.checkpoint(|_| 0, |_| None, |_| Some(sessions.clone()));
        let json = serde_json::to_string(&pending.partitions[0]).unwrap();
        let checkpoint: PartitionCheckpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(checkpoint.sessions.as_ref(), Some(&sessions));
        let mut resumed = Group::new(GEOMETRY, IDLE_MS, []);
        let checkpoints = BTreeMap::from([(0, checkpoint)]);
        let starts = resumed.assign(&[0], &checkpoints, &BTreeMap::new(), 0);
        assert_eq!(starts[0].sessions, Some(sessions));
    }
}

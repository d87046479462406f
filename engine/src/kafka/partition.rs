//! One Kafka partition's place in the stream: its watermark, the next
//! offset to process, and where its live panes began, so that a checkpoint
//! can say where to re-read from to rebuild them.

use std::collections::BTreeMap;

use downbeat_operators::{bucket_start, OpenSession, SessionKey};
use serde::{Deserialize, Serialize};

use crate::pipeline::OutlierSnapshot;

/// What a checkpoint keeps of one partition. With it, a new owner (this
/// process after a crash, or another replica after a rebalance) rebuilds
/// the partition's panes by re-reading `replay_from..next_offset` without
/// counting those records again, then carries on from `next_offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// The partition.
    pub partition: i32,
    /// Grows by one per checkpoint of this partition, whoever writes it: the
    /// highest wins when several files mention the partition.
    pub seq: u64,
    /// Next offset to count.
    pub next_offset: i64,
    /// First offset of the earliest pane still held (= `next_offset` if none).
    pub replay_from: i64,
    /// The partition's largest event time just before `replay_from`.
    pub max_event_ms_before_replay: Option<i64>,
    /// Windows ending at or before this already include this partition.
    pub emitted_through_ms: i64,
    /// The partition's outlier guard: its confirmed position and the
    /// records it held, which are at or after `replay_from`. Absent in
    /// checkpoints of earlier versions.
    #[serde(default)]
    pub outliers: Option<OutlierSnapshot>,
    /// The partition's open listening sessions (absent without sessions,
    /// and in checkpoints of earlier versions), each as one array
    /// `[user_id, session_id, start_ms, end_ms, events, plays]`: about 50
    /// bytes a session, so a partition's checkpoint stays one record.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "compact_sessions"
    )]
    pub sessions: Option<SessionSnapshot>,
}

/// What a checkpoint keeps of a partition's sessionizer: its open sessions.
pub type SessionSnapshot = Vec<(SessionKey, OpenSession)>;

/// [`SessionSnapshot`] as arrays of six values rather than two objects.
pub(crate) mod compact_sessions {
    use downbeat_operators::{OpenSession, SessionKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SessionSnapshot;

    /// `[user_id, session_id, start_ms, end_ms, events, plays]`.
    pub type Row = (String, Option<String>, i64, i64, u64, u64);

    /// Sessions as rows.
    pub fn rows(sessions: &[(SessionKey, OpenSession)]) -> Vec<Row> {
        sessions
            .iter()
            .map(|(key, s)| {
                (
                    key.user_id.to_string(),
                    key.session_id.as_ref().map(ToString::to_string),
                    s.start_ms,
                    s.end_ms,
                    s.events,
                    s.plays,
                )
            })
            .collect()
    }

    /// Rows as sessions.
    pub fn from_rows(rows: Vec<Row>) -> SessionSnapshot {
        rows.into_iter()
            .map(|(user_id, session_id, start_ms, end_ms, events, plays)| {
                (
                    SessionKey {
                        user_id: user_id.into(),
                        session_id: session_id.map(Into::into),
                    },
                    OpenSession {
                        start_ms,
                        end_ms,
                        events,
                        plays,
                    },
                )
            })
            .collect()
    }

    pub fn serialize<S: Serializer>(
        sessions: &Option<SessionSnapshot>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        sessions.as_deref().map(rows).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SessionSnapshot>, D::Error> {
        let rows: Option<Vec<Row>> = Option::deserialize(deserializer)?;
        Ok(rows.map(from_rows))
    }
}

/// Where a pane of this partition began in the log.
#[derive(Clone, Copy, Debug)]
struct PaneOrigin {
    first_offset: i64,
    max_event_ms_before: Option<i64>,
}

/// Runtime state of one assigned partition.
#[derive(Debug)]
pub struct PartitionState {
    partition: i32,
    seq: u64,
    allowed_lateness_ms: i64,
    pane_ms: i64,
    max_width_ms: i64,
    /// Next offset expected; `None` until the first record (no checkpoint).
    next_offset: Option<i64>,
    /// Records below this offset were counted before: they only rebuild panes.
    restore_until: i64,
    max_event_ms: Option<i64>,
    panes: BTreeMap<i64, PaneOrigin>,
    /// Records the outlier guard holds, by offset, with the partition's
    /// largest event time when each was read: a checkpoint re-reads from
    /// the earliest, so the guard can hold it again.
    held: BTreeMap<i64, Option<i64>>,
    /// The watermark when the record being handled was admitted.
    watermark_at_admit: Option<i64>,
    last_record_wall_ms: i64,
    /// The checkpoint this partition resumed from, while it is rebuilt:
    /// until then it is still the partition's true state.
    resumed_from: Option<PartitionCheckpoint>,
    /// After a seek, the first record must be at `next_offset`; some
    /// brokers answer a fetch that starts inside a record batch with the
    /// next batch, so a gap there means "seek further back".
    seek_pending: bool,
    seek_retries: u32,
}

/// What the consumer should do about a record's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetCheck {
    /// Process it (or skip it if [`RecordRole::Seen`]).
    InOrder,
    /// Records before it are missing: seek back to this offset and retry.
    SeekBack(i64),
}

/// Attempts to seek back before accepting a gap after a resume.
const MAX_SEEK_RETRIES: u32 = 4;

/// What to do with the record at some offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRole {
    /// Already processed (redelivered after a seek): skip it.
    Seen,
    /// Counted before a restart or hand-over: rebuild panes only.
    Restore,
    /// New: count it.
    Count,
}

/// Pane and lateness geometry shared by all partitions.
#[derive(Clone, Copy, Debug)]
pub struct PartitionGeometry {
    /// Allowed lateness, as for the single-input watermark.
    pub allowed_lateness_ms: i64,
    /// Pane width of the aggregator.
    pub pane_ms: i64,
    /// Widest window: a pane is held this long after its start.
    pub max_width_ms: i64,
}

impl PartitionState {
    /// A partition with no checkpoint: starts wherever the consumer does.
    pub fn fresh(partition: i32, geometry: PartitionGeometry, now_ms: i64) -> Self {
        Self {
            partition,
            seq: 0,
            allowed_lateness_ms: geometry.allowed_lateness_ms,
            pane_ms: geometry.pane_ms,
            max_width_ms: geometry.max_width_ms,
            next_offset: None,
            restore_until: i64::MIN,
            max_event_ms: None,
            panes: BTreeMap::new(),
            held: BTreeMap::new(),
            watermark_at_admit: None,
            last_record_wall_ms: now_ms,
            resumed_from: None,
            seek_pending: false,
            seek_retries: 0,
        }
    }

    /// A partition resumed from a checkpoint: the consumer must start at
    /// [`PartitionCheckpoint::replay_from`].
    pub fn resumed(
        checkpoint: &PartitionCheckpoint,
        geometry: PartitionGeometry,
        now_ms: i64,
    ) -> Self {
        Self {
            seq: checkpoint.seq,
            next_offset: Some(checkpoint.replay_from),
            restore_until: checkpoint.next_offset,
            max_event_ms: checkpoint.max_event_ms_before_replay,
            resumed_from: Some(checkpoint.clone()),
            seek_pending: true,
            ..Self::fresh(checkpoint.partition, geometry, now_ms)
        }
    }

    /// Check the first record after a resume: a gap before it means the
    /// broker skipped records (see `seek_pending`); ask to seek further
    /// back, a few times, before accepting the gap.
    pub fn check_offset(&mut self, offset: i64) -> OffsetCheck {
        let Some(next) = self.next_offset.filter(|_| self.seek_pending) else {
            return OffsetCheck::InOrder;
        };
        if offset <= next {
            if offset == next {
                self.seek_pending = false;
            }
            return OffsetCheck::InOrder;
        }
        if self.seek_retries >= MAX_SEEK_RETRIES {
            tracing::warn!(
                partition = self.partition,
                expected = next,
                offset,
                "records missing from the log; carrying on after the gap"
            );
            self.seek_pending = false;
            return OffsetCheck::InOrder;
        }
        self.seek_retries += 1;
        let back = (offset - next).saturating_mul(1 << self.seek_retries);
        OffsetCheck::SeekBack(next.saturating_sub(back).max(0))
    }

    /// A partition without checkpoint whose group offset is known: records
    /// before it are not this replica's to count.
    pub fn fresh_at(
        partition: i32,
        committed_offset: i64,
        geometry: PartitionGeometry,
        now_ms: i64,
    ) -> Self {
        Self {
            next_offset: Some(committed_offset),
            seek_pending: true,
            ..Self::fresh(partition, geometry, now_ms)
        }
    }

    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The role of the record at `offset`, before it is processed.
    pub fn role(&self, offset: i64) -> RecordRole {
        match self.next_offset {
            Some(next) if offset < next => RecordRole::Seen,
            _ if offset < self.restore_until => RecordRole::Restore,
            _ => RecordRole::Count,
        }
    }

    /// True while records already counted are being re-read.
    pub fn restoring(&self) -> bool {
        self.next_offset
            .is_some_and(|next| next < self.restore_until)
    }

    /// This partition's watermark: its largest event time minus the lateness.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.max_event_ms
            .map(|max| max.saturating_sub(self.allowed_lateness_ms))
    }

    /// Largest event time seen in this partition.
    pub fn max_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }

    /// A stream is late when its pane ended at or before this partition's
    /// watermark. Decided per partition, from the partition's own order, so
    /// the verdict is the same however partitions interleave and whichever
    /// replica re-reads them; with one partition it is `replay`'s rule.
    pub fn is_late(&self, time_ms: i64) -> bool {
        self.watermark_ms()
            .is_some_and(|wm| bucket_start(time_ms, self.pane_ms) + self.pane_ms <= wm)
    }

    /// A stream at `time_ms`, record `offset`, went into its pane.
    pub fn note_pane(&mut self, offset: i64, time_ms: i64) {
        // A stream the outlier guard held comes from an earlier offset.
        let before = self.held.remove(&offset).unwrap_or(self.max_event_ms);
        let origin = self
            .panes
            .entry(bucket_start(time_ms, self.pane_ms))
            .or_insert(PaneOrigin {
                first_offset: offset,
                max_event_ms_before: before,
            });
        if offset < origin.first_offset {
            *origin = PaneOrigin {
                first_offset: offset,
                max_event_ms_before: before,
            };
        }
    }

    /// A record is about to be handled: remember the watermark before it.
    pub fn admitted(&mut self) {
        self.watermark_at_admit = self.watermark_ms();
    }

    /// The watermark before the record being handled.
    pub fn watermark_at_admit(&self) -> Option<i64> {
        self.watermark_at_admit
    }

    /// The outlier guard holds the stream at `offset` (not yet observed).
    pub fn note_held(&mut self, offset: i64) {
        self.held.insert(offset, self.max_event_ms);
    }

    /// The outlier guard decided on the stream at `offset` (refused it, or
    /// released it and it was late).
    pub fn note_decided(&mut self, offset: i64) {
        self.held.remove(&offset);
    }

    /// A stream at `time_ms` was read (counted or not).
    pub fn observe(&mut self, time_ms: i64) {
        if self.max_event_ms.is_none_or(|max| time_ms > max) {
            self.max_event_ms = Some(time_ms);
        }
    }

    /// The record at `offset` is done; `now_ms` is the wall clock.
    pub fn processed(&mut self, offset: i64, now_ms: i64) {
        self.next_offset = Some(offset + 1);
        self.last_record_wall_ms = now_ms;
    }

    /// Next offset to count (what a commit says).
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// No record for `idle_timeout_ms`: the partition stops holding the
    /// engine's watermark back (the core idle rule, per partition).
    pub fn is_idle(&self, now_ms: i64, idle_timeout_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_record_wall_ms) >= idle_timeout_ms
    }

    /// The checkpoint after windows through `emitted_through_ms` include
    /// this partition. Panes no open window needs are forgotten first.
    pub fn checkpoint(
        &mut self,
        emitted_through_ms: i64,
        outliers: Option<OutlierSnapshot>,
        sessions: Option<SessionSnapshot>,
    ) -> Option<PartitionCheckpoint> {
        if self.restoring() {
            // Mid-rebuild the resumed checkpoint still describes the partition.
            let mut resumed = self.resumed_from.clone()?;
            self.seq += 1;
            resumed.seq = self.seq;
            return Some(resumed);
        }
        self.resumed_from = None;
        let next_offset = self.next_offset?;
        let max_width_ms = self.max_width_ms;
        self.panes
            .retain(|start, _| start.saturating_add(max_width_ms) > emitted_through_ms);
        let held = self.held.iter().map(|(&offset, &before)| PaneOrigin {
            first_offset: offset,
            max_event_ms_before: before,
        });
        let earliest = self
            .panes
            .values()
            .copied()
            .chain(held)
            .min_by_key(|origin| origin.first_offset);
        let (replay_from, max_event_ms_before_replay) = match earliest {
            Some(origin) if origin.first_offset < next_offset => {
                (origin.first_offset, origin.max_event_ms_before)
            }
            _ => (next_offset, self.max_event_ms),
        };
        self.seq += 1;
        Some(PartitionCheckpoint {
            partition: self.partition,
            seq: self.seq,
            next_offset,
            replay_from,
            max_event_ms_before_replay,
            emitted_through_ms,
            outliers,
            sessions,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// One-minute panes, 10-minute windows, 10 s of lateness.
    pub(in crate::kafka) const GEOMETRY: PartitionGeometry = PartitionGeometry {
        allowed_lateness_ms: 10_000,
        pane_ms: 60_000,
        max_width_ms: 600_000,
    };

    #[test]
    fn lateness_follows_the_partitions_own_watermark_per_pane() {
        let mut p = PartitionState::fresh(0, GEOMETRY, 0);
        assert!(!p.is_late(0));
        p.observe(200_000);
        // Watermark 190 s: the pane [120 s, 180 s) has ended, [180 s, 240 s) has not.
        assert!(p.is_late(179_999));
        assert!(!p.is_late(180_000));
    }

    #[test]
    fn a_checkpoint_restarts_at_the_first_record_of_the_earliest_live_pane() {
        let mut p = PartitionState::fresh(3, GEOMETRY, 0);
        for (offset, time) in [(10, 61_000), (11, 125_000), (12, 62_000), (13, 700_000)] {
            p.note_pane(offset, time);
            p.observe(time);
            p.processed(offset, 0);
        }
        let cp = p.checkpoint(i64::MIN, None, None).unwrap();
        assert_eq!((cp.next_offset, cp.replay_from), (14, 10));
        assert_eq!(cp.max_event_ms_before_replay, None);
        // Windows through 11 minutes emitted: the pane at 1 minute is no
        // longer needed, the pane at 2 minutes is (the 10-minute window ending at 12).
        let cp = p.checkpoint(660_000, None, None).unwrap();
        assert_eq!(cp.replay_from, 11);
        assert_eq!(cp.max_event_ms_before_replay, Some(61_000));
        assert!(cp.seq > 1);

        let resumed = PartitionState::resumed(&cp, GEOMETRY, 0);
        assert_eq!(resumed.role(10), RecordRole::Seen);
        assert_eq!(resumed.role(11), RecordRole::Restore);
        assert_eq!(resumed.role(13), RecordRole::Restore);
        assert_eq!(resumed.role(14), RecordRole::Count);
        assert!(resumed.restoring());
        assert_eq!(resumed.watermark_ms(), Some(51_000));
        let mut resumed = resumed;
        let again = resumed.checkpoint(900_000, None, None).unwrap();
        assert_eq!(
            (again.next_offset, again.replay_from),
            (14, 11),
            "unchanged while rebuilding"
        );
        assert!(again.seq > cp.seq);
    }

    #[test]
    fn a_gap_right_after_a_resume_asks_to_seek_further_back() {
        let cp = PartitionCheckpoint {
            partition: 0,
            seq: 1,
            next_offset: 900,
            replay_from: 500,
            max_event_ms_before_replay: None,
            emitted_through_ms: 0,
            outliers: None,
            sessions: None,
        };
        let mut p = PartitionState::resumed(&cp, GEOMETRY, 0);
        assert_eq!(p.check_offset(600), OffsetCheck::SeekBack(300));
        assert_eq!(
            p.check_offset(450),
            OffsetCheck::InOrder,
            "before the target: skipped as seen"
        );
        assert_eq!(p.role(450), RecordRole::Seen);
        assert_eq!(p.check_offset(500), OffsetCheck::InOrder);
        p.processed(500, 0);
        assert_eq!(
            p.check_offset(700),
            OffsetCheck::InOrder,
            "later gaps are the log's own"
        );
    }

    /// A partition's open sessions in its checkpoint: one array each, about
    /// 50 bytes, and back unchanged.
    #[test]
    fn sessions_are_checkpointed_compactly_and_read_back() {
        use downbeat_operators::{OpenSession, SessionKey};
        let sessions: SessionSnapshot = (0..25_000u64)
            .map(|i| {
                let key = SessionKey {
                    user_id: (100_000 + i).to_string().into(),
                    session_id: Some((5_000_000 + i).to_string().into()),
                };
                let start_ms = 1_700_000_000_000 + i as i64 * 37;
                let session = OpenSession {
                    start_ms,
                    end_ms: start_ms + 600_000,
                    events: 20 + i % 7,
                    plays: 17 + i % 5,
                };
                (key, session)
            })
            .collect();
        let checkpoint = PartitionCheckpoint {
            partition: 3,
            seq: 9,
            next_offset: 100,
            replay_from: 50,
            max_event_ms_before_replay: None,
            emitted_through_ms: 0,
            outliers: None,
            sessions: Some(sessions.clone()),
        };
        let json = serde_json::to_string(&checkpoint).unwrap();
        assert!(json.contains(r#"["100000","5000000",1700000000000,1700000600000,20,17]"#));
        let per_session = json.len() / sessions.len();
        assert!(per_session <= 56, "{per_session} bytes a session");
        let back: PartitionCheckpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, checkpoint);
        let without = PartitionCheckpoint {
            sessions: None,
            ..checkpoint
        };
        let json = serde_json::to_string(&without).unwrap();
        assert!(!json.contains("sessions"), "{json}");
        assert_eq!(
            serde_json::from_str::<PartitionCheckpoint>(&json).unwrap(),
            without
        );
    }
}

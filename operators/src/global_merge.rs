//! The merge tier's operator: partials from every partition in, each global
//! window out once.
//!
//! A window is complete when every partition of the input has either sent
//! its partial for it or reported progress past its end (a partition with
//! no plays in a window sends no partial). It is then emitted once, in end
//! order, as the record a single `replay` of all partitions would give:
//! streams, breakdowns and listening times added, the top K from the sum of
//! every song's counts (same order and ties), active users from the union
//! of the users (exact while the union is small, the sketch beyond). A
//! partial sent again (after a crash or a hand-over) replaces the first:
//! its content is the same.

use std::collections::{BTreeMap, HashMap};

use crate::breakdown::Breakdown;
use crate::distinct_users::DistinctUsers;
use crate::duration::DurationHistogram;
use crate::event::EventTimeMs;
use crate::partial::{Partial, PartialError};
use crate::result::WindowResult;
use crate::top_k::top_k_named;
use crate::window::{WindowId, WindowSpec};

/// (end, window index, start): emission order.
type WindowKey = (EventTimeMs, usize, EventTimeMs);

/// Partials in, global windows out.
pub struct GlobalMerge {
    windows: Vec<WindowSpec>,
    partitions: u32,
    top_k: usize,
    pending: BTreeMap<WindowKey, BTreeMap<u32, Partial>>,
    /// Per partition: every window ending at or before this is reported.
    progress: HashMap<u32, EventTimeMs>,
    /// Windows ending at or before this were emitted.
    emitted_through_ms: EventTimeMs,
}

impl GlobalMerge {
    /// A merger of `partitions` partitions (numbered from 0) for `windows`
    /// (in the replicas' configuration order), with leaderboards of `top_k`.
    pub fn new(windows: Vec<WindowSpec>, partitions: u32, top_k: usize) -> Self {
        Self {
            windows,
            partitions,
            top_k,
            pending: BTreeMap::new(),
            progress: HashMap::new(),
            emitted_through_ms: EventTimeMs::MIN,
        }
    }

    /// Take a partial. Refused when unreadable, for an unknown window or
    /// partition; ignored (Ok(false)) when its window was already emitted.
    pub fn offer(&mut self, partial: Partial) -> Result<bool, PartialError> {
        partial.state()?;
        if partial.partition >= self.partitions {
            return Err(PartialError::Invalid("partition"));
        }
        let width_ms = partial.end_ms - partial.start_ms;
        let index = self
            .windows
            .iter()
            .position(|spec| spec.kind() == partial.window && spec.width_ms() == width_ms)
            .ok_or(PartialError::Invalid("window"))?;
        if partial.end_ms <= self.emitted_through_ms {
            return Ok(false);
        }
        let key = (partial.end_ms, index, partial.start_ms);
        self.pending
            .entry(key)
            .or_default()
            .insert(partial.partition, partial);
        Ok(true)
    }

    /// `partition` has passed every window ending at or before `through_ms`.
    pub fn progress(&mut self, partition: u32, through_ms: EventTimeMs) {
        let known = self.progress.entry(partition).or_insert(EventTimeMs::MIN);
        *known = (*known).max(through_ms);
    }

    /// Emit every complete window, in end order, into `out`. A window
    /// waits for the windows ending before it.
    pub fn emit_ready(&mut self, out: &mut Vec<WindowResult>) {
        while let Some((&key, partials)) = self.pending.first_key_value() {
            let (end_ms, _, _) = key;
            let complete = (0..self.partitions).all(|partition| {
                partials.contains_key(&partition)
                    || self.progress.get(&partition).is_some_and(|&p| p >= end_ms)
            });
            if !complete {
                return;
            }
            let partials = self.pending.pop_first().map(|(_, p)| p).unwrap_or_default();
            out.push(self.merge(key, &partials));
            self.emitted_through_ms = self.emitted_through_ms.max(end_ms);
        }
    }

    /// Windows waiting for partitions.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn merge(&self, key: WindowKey, partials: &BTreeMap<u32, Partial>) -> WindowResult {
        let (end_ms, index, start_ms) = key;
        let mut streams = 0;
        let mut undercount = 0;
        let mut users = DistinctUsers::default();
        let mut breakdown = Breakdown::default();
        let mut listening = DurationHistogram::default();
        let mut songs: HashMap<(&str, &str), u64> = HashMap::new();
        for partial in partials.values() {
            // Checked when offered.
            let Ok(state) = partial.state() else { continue };
            streams += state.streams;
            undercount += partial.songs_max_undercount;
            users.merge(&state.users);
            breakdown.merge(&state.breakdown);
            listening.merge(&state.listening);
            for (artist, song, n) in &partial.songs {
                *songs.entry((artist.as_str(), song.as_str())).or_insert(0) += n;
            }
        }
        let named = songs
            .into_iter()
            .map(|((artist, song), n)| (n, artist, song))
            .collect();
        WindowResult {
            window: self.windows[index].kind(),
            id: WindowId(index as u16),
            start_ms,
            end_ms,
            streams,
            active_users: users.count(),
            top_songs: top_k_named(named, self.top_k),
            top_songs_max_undercount: undercount,
            breakdown,
            listening: listening.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{user_hash, AggregatorConfig, Dimensions, Play, WindowAggregator};

    /// `count` plays over 30 minutes: (time, partition, song, user).
    fn plays(count: i64, users: i64) -> Vec<(i64, u32, String, i64)> {
        let mut all: Vec<_> = (0..count)
            .map(|i| {
                let time_ms = 1_000_000 + (i * 7_919) % 1_800_000;
                let song = format!("song {}", (i * i) % 13);
                (time_ms, (i % 5) as u32, song, (i * 31) % users)
            })
            .collect();
        all.sort_by_key(|p| p.0);
        all
    }

    /// One aggregator over every play, and the merge of five aggregators
    /// each counting one partition's plays (partials through JSON, each sent
    /// twice as after a crash).
    fn single_and_merged(
        all: &[(i64, u32, String, i64)],
    ) -> (Vec<WindowResult>, Vec<WindowResult>) {
        let config = AggregatorConfig {
            partials: true,
            ..AggregatorConfig::default()
        };
        let mut single = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        let mut parts: Vec<WindowAggregator> = (0..5)
            .map(|p| {
                let mut agg = WindowAggregator::new(config.clone()).unwrap();
                agg.add_source(p, i64::MIN);
                agg
            })
            .collect();
        for (time_ms, partition, song, user) in all {
            for (agg, source) in [
                (&mut single, 0),
                (&mut parts[*partition as usize], *partition),
            ] {
                let song = agg.intern("A", song);
                let play = Play {
                    time_ms: *time_ms,
                    user_hash: user_hash(user.to_string().as_bytes()),
                    song,
                    dims: Dimensions::default(),
                    duration_ms: Some(180_000 + (*user as u32 % 7) * 1000),
                };
                agg.insert_from(source, play).unwrap();
            }
        }
        let mut expected = Vec::new();
        single.flush(&mut expected);
        let mut merge = GlobalMerge::new(AggregatorConfig::default().windows, 5, 10);
        let mut got = Vec::new();
        for (partition, agg) in parts.iter_mut().enumerate() {
            agg.flush(&mut Vec::new());
            for partial in agg.take_partials() {
                let json = serde_json::to_string(&partial).unwrap();
                assert!(merge.offer(serde_json::from_str(&json).unwrap()).unwrap());
                assert!(merge.offer(serde_json::from_str(&json).unwrap()).unwrap());
            }
            merge.emit_ready(&mut got);
            assert!(
                got.is_empty() || partition == 4,
                "waits for every partition"
            );
            merge.progress(partition as u32, i64::MAX);
        }
        merge.emit_ready(&mut got);
        assert_eq!(merge.pending(), 0);
        (expected, got)
    }

    /// Few users (exact sets): the merged records are the single ones, byte
    /// for byte.
    #[test]
    fn merged_partitions_equal_one_aggregator() {
        let (expected, got) = single_and_merged(&plays(3_000, 37));
        let json = |w: &[WindowResult]| serde_json::to_string(w).unwrap();
        assert_eq!(json(&got), json(&expected));
    }

    /// Thousands of users a window (sketches): everything equal but active
    /// users, which stay within 2% of the single count.
    #[test]
    fn merged_sketches_stay_within_two_percent() {
        let (expected, mut got) = single_and_merged(&plays(60_000, 20_000));
        assert!(expected.iter().any(|w| w.active_users > 5_000));
        assert_eq!(got.len(), expected.len());
        for (merged, single) in got.iter_mut().zip(&expected) {
            let error = (merged.active_users as f64 - single.active_users as f64).abs();
            assert!(
                error <= 0.02 * single.active_users as f64,
                "{} vs {}",
                merged.active_users,
                single.active_users
            );
            merged.active_users = single.active_users;
        }
        let json = |w: &[WindowResult]| serde_json::to_string(w).unwrap();
        assert_eq!(json(&got), json(&expected));
    }

    /// A partial of another version, for an unknown partition or window, or
    /// with a broken part is refused; one for an emitted window is ignored.
    #[test]
    fn bad_and_stale_partials_are_refused_or_ignored() {
        let mut agg = WindowAggregator::new(AggregatorConfig {
            partials: true,
            ..AggregatorConfig::default()
        })
        .unwrap();
        agg.add_source(1, i64::MIN);
        let song = agg.intern("A", "x");
        let play = Play {
            time_ms: 60_000,
            user_hash: 1,
            song,
            dims: Dimensions::default(),
            duration_ms: None,
        };
        agg.insert_from(1, play).unwrap();
        agg.flush(&mut Vec::new());
        let partial = agg.take_partials().remove(0);
        let mut merge = GlobalMerge::new(AggregatorConfig::default().windows, 2, 10);
        let mut other_version = partial.clone();
        other_version.version = 2;
        assert_eq!(merge.offer(other_version), Err(PartialError::Version(2)));
        let mut unknown = partial.clone();
        unknown.partition = 2;
        assert_eq!(
            merge.offer(unknown),
            Err(PartialError::Invalid("partition"))
        );
        let mut wide = partial.clone();
        wide.start_ms -= 1;
        assert_eq!(merge.offer(wide), Err(PartialError::Invalid("window")));
        let mut broken: serde_json::Value = serde_json::to_value(&partial).unwrap();
        broken["breakdown"]["level"] = serde_json::json!([1]);
        let broken: Partial = serde_json::from_value(broken).unwrap();
        assert_eq!(merge.offer(broken), Err(PartialError::Invalid("breakdown")));
        assert!(merge.offer(partial.clone()).unwrap());
        merge.progress(0, i64::MAX);
        let mut out = Vec::new();
        merge.emit_ready(&mut out);
        assert_eq!(out.len(), 1);
        assert!(!merge.offer(partial).unwrap(), "its window was emitted");
    }
}

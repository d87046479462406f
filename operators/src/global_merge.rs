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
use crate::top_k::{top_artists, top_k_named};
use crate::window::{WindowId, WindowSpec};

/// (end, window index, start): emission order.
type WindowKey = (EventTimeMs, usize, EventTimeMs);

/// One window's partials: per partition, its parts by number.
type WindowPartials = BTreeMap<u32, BTreeMap<u32, Partial>>;

/// True when every part of the partition's partial is in.
fn whole(parts: &BTreeMap<u32, Partial>) -> bool {
    parts
        .values()
        .next()
        .is_some_and(|first| parts.len() == first.parts as usize)
}

/// Partials in, global windows out.
pub struct GlobalMerge {
    windows: Vec<WindowSpec>,
    partitions: u32,
    top_k: usize,
    pending: BTreeMap<WindowKey, WindowPartials>,
    /// Per partition: every window ending at or before this is reported.
    progress: HashMap<u32, EventTimeMs>,
    /// The last window emitted: those before it in emission order are out
    /// (several windows share an end: the order is end, window, start).
    last_emitted: Option<WindowKey>,
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
            last_emitted: None,
        }
    }

    /// Take a partial. Refused when unreadable or for an unknown window;
    /// ignored (Ok(false)) when its window was already emitted.
    pub fn offer(&mut self, partial: Partial) -> Result<bool, PartialError> {
        partial.state()?;
        // The partition count comes from progress records only: a window
        // must not be complete because the partials seen so far name fewer.
        let width_ms = partial.end_ms - partial.start_ms;
        let index = self
            .windows
            .iter()
            .position(|spec| spec.kind() == partial.window && spec.width_ms() == width_ms)
            .ok_or(PartialError::Invalid("window"))?;
        let key = (partial.end_ms, index, partial.start_ms);
        if self.last_emitted.is_some_and(|last| key <= last) {
            return Ok(false);
        }
        let parts = self
            .pending
            .entry(key)
            .or_default()
            .entry(partial.partition)
            .or_default();
        if parts
            .values()
            .next()
            .is_some_and(|p| p.parts != partial.parts)
        {
            // Split differently: the content changed (it should not), the
            // newest wins whole.
            parts.clear();
        }
        parts.insert(partial.part, partial);
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
        self.emit_ready_with_idle(|_| false, out);
    }

    /// [`GlobalMerge::emit_ready`], where the partitions `idle` accepts
    /// (silent for the idle timeout: the idle rule) are waited for no more.
    pub fn emit_ready_with_idle(
        &mut self,
        idle: impl Fn(u32) -> bool,
        out: &mut Vec<WindowResult>,
    ) {
        if self.partitions == 0 {
            // The input's partition count is not known yet.
            return;
        }
        while let Some((&key, partials)) = self.pending.first_key_value() {
            let (end_ms, _, _) = key;
            let complete = (0..self.partitions).all(|partition| {
                partials.get(&partition).is_some_and(whole)
                    || self.progress.get(&partition).is_some_and(|&p| p >= end_ms)
                    || idle(partition)
            });
            if !complete {
                return;
            }
            let partials = self.pending.pop_first().map(|(_, p)| p).unwrap_or_default();
            out.push(self.merge(key, &partials));
            self.last_emitted = Some(key);
        }
    }

    /// The input now has `partitions` partitions (it may grow): windows
    /// then wait for the new ones too.
    pub fn set_partitions(&mut self, partitions: u32) {
        self.partitions = self.partitions.max(partitions);
    }

    /// The partitions windows wait for.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Windows waiting for partitions.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn merge(&self, key: WindowKey, partials: &WindowPartials) -> WindowResult {
        let (end_ms, index, start_ms) = key;
        let mut streams = 0;
        let mut undercount = 0;
        let mut users = DistinctUsers::default();
        let mut breakdown = Breakdown::default();
        let mut listening = DurationHistogram::default();
        let mut songs: HashMap<(&str, &str), u64> = HashMap::new();
        for partial in partials.values().flat_map(BTreeMap::values) {
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
        let named: Vec<(u64, &str, &str)> = songs
            .into_iter()
            .map(|((artist, song), n)| (n, artist, song))
            .collect();
        let top_artists = top_artists(named.iter().map(|&(n, artist, _)| (n, artist)), self.top_k);
        WindowResult {
            window: self.windows[index].kind(),
            id: WindowId(index as u16),
            start_ms,
            end_ms,
            streams,
            active_users: users.count(),
            top_songs: top_k_named(named, self.top_k),
            top_songs_max_undercount: undercount,
            top_artists,
            breakdown,
            listening: listening.summary(),
            forecast: None,
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
        single_and_merged_split(all, usize::MAX)
    }

    /// [`single_and_merged`], each partial split into parts of at most
    /// `max_song_bytes` of songs.
    fn single_and_merged_split(
        all: &[(i64, u32, String, i64)],
        max_song_bytes: usize,
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
            let partials = agg.take_partials().into_iter();
            for partial in partials.flat_map(|p| p.split(max_song_bytes)) {
                let json = serde_json::to_string(&partial).unwrap();
                assert!(merge.offer(serde_json::from_str(&json).unwrap()).unwrap());
                assert!(merge.offer(serde_json::from_str(&json).unwrap()).unwrap());
                // Emitting as each arrives: a window emitted does not make
                // the next one with the same end (another width) stale.
                merge.emit_ready(&mut got);
            }
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

    /// Partials split into parts of a few songs each merge to the same
    /// records; a window waits for every part.
    #[test]
    fn split_partials_merge_to_the_same_records() {
        let all = plays(3_000, 37);
        let (expected, got) = single_and_merged_split(&all, 40);
        let json = |w: &[WindowResult]| serde_json::to_string(w).unwrap();
        assert_eq!(json(&got), json(&expected));

        let mut agg = WindowAggregator::new(AggregatorConfig {
            partials: true,
            ..AggregatorConfig::default()
        })
        .unwrap();
        agg.add_source(0, i64::MIN);
        for (time_ms, _, song, user) in &all {
            let song = agg.intern("A", song);
            let play = Play {
                time_ms: *time_ms,
                user_hash: user_hash(user.to_string().as_bytes()),
                song,
                dims: Dimensions::default(),
                duration_ms: None,
            };
            agg.insert_from(0, play).unwrap();
        }
        agg.flush(&mut Vec::new());
        let first = agg.take_partials().remove(0);
        let parts = first.clone().split(40);
        assert!(parts.len() > 3, "13 songs in parts of 40 bytes");
        let encoded = |parts: &[Partial]| serde_json::to_string(parts).unwrap();
        assert_eq!(
            encoded(&parts),
            encoded(&first.clone().split(40)),
            "deterministic"
        );
        let mut merge = GlobalMerge::new(AggregatorConfig::default().windows, 1, 10);
        let mut out = Vec::new();
        for part in parts.into_iter().rev() {
            assert!(out.is_empty(), "emitted before its last part");
            merge.offer(part).unwrap();
            merge.emit_ready(&mut out);
        }
        assert_eq!(out.len(), 1);
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

    /// A partial of another version, for an unknown window, or with a
    /// broken part is refused; one for an emitted window is ignored.
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

//! Streams per song for one pane or window: exact within a byte budget, a
//! mergeable heavy-hitters summary beyond it.
//!
//! A pane charges every song it holds [`ENTRY_OVERHEAD_BYTES`] plus the
//! bytes of its names. When the charge passes the pane's budget the counts
//! take a Misra–Gries step (Agarwal et al., "Mergeable Summaries", 2012):
//! the count of the (h+1)-th most streamed song, h half the songs held, is
//! subtracted from every count and songs left at zero are dropped. Every
//! count is then below the song's true count by at most `max_undercount`,
//! the sum of what was subtracted, and a song dropped has at most that many
//! streams uncounted. Each step removes at least (h+1) times what it adds to
//! the bound, so the bound stays under streams / (h+1). Summaries merge by
//! adding counts and bounds, which is how sliding windows combine panes.

use std::collections::HashMap;

use crate::event::SongId;

/// What one held song costs besides its names, from the layouts: the
/// catalog entry (40) and its index slot (up to 10 with slack), the pane's
/// map slot (up to 36 with slack), the names' allocation header and rounding
/// (about 16). The memory bench checks the total against peak RSS.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// Streams per song, with the bound on how far any count is below the truth.
#[derive(Clone, Debug, Default)]
pub struct SongCounts {
    counts: HashMap<SongId, u64, ahash::RandomState>,
    charged_bytes: usize,
    max_undercount: u64,
}

impl SongCounts {
    /// Count one stream of `song`. Returns true when the song is new here.
    #[inline]
    pub fn add(&mut self, song: SongId) -> bool {
        let count = self.counts.entry(song).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Charge `bytes` for a song just added.
    pub fn charge(&mut self, bytes: usize) {
        self.charged_bytes += bytes;
    }

    /// Bytes charged for the songs held.
    pub fn charged_bytes(&self) -> usize {
        self.charged_bytes
    }

    /// Every count is at most this far below the song's true count, and a
    /// song not held has at most this many streams (0: exact).
    pub fn max_undercount(&self) -> u64 {
        self.max_undercount
    }

    /// Songs held.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True when no song is held.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// (song, streams) of every song held.
    pub fn iter(&self) -> impl Iterator<Item = (SongId, u64)> + '_ {
        self.counts.iter().map(|(&song, &count)| (song, count))
    }

    /// Add everything `other` counted; the bounds add too.
    pub fn merge(&mut self, other: &SongCounts) {
        self.counts.reserve(other.counts.len());
        for (&song, &count) in &other.counts {
            *self.counts.entry(song).or_insert(0) += count;
        }
        self.charged_bytes += other.charged_bytes;
        self.max_undercount += other.max_undercount;
    }

    /// Misra–Gries steps until at most `target_bytes` are charged: each
    /// subtracts the count of the (h+1)-th most streamed song from all, h
    /// half the songs held, and drops songs left at zero. `uncharge` is told
    /// of every dropped song and returns what it was charged.
    pub fn reduce_to(&mut self, target_bytes: usize, mut uncharge: impl FnMut(SongId) -> usize) {
        while self.charged_bytes > target_bytes && !self.counts.is_empty() {
            let keep = self.counts.len() / 2;
            let mut counts: Vec<u64> = self.counts.values().copied().collect();
            let (_, &mut cut, _) = counts.select_nth_unstable_by(keep, |a, b| b.cmp(a));
            let mut freed = 0;
            self.counts.retain(|&song, count| {
                if *count > cut {
                    *count -= cut;
                    true
                } else {
                    freed += uncharge(song);
                    false
                }
            });
            self.charged_bytes = self.charged_bytes.saturating_sub(freed);
            self.max_undercount += cut;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts_of(songs: &[u32]) -> HashMap<u32, u64> {
        let mut truth = HashMap::new();
        for &song in songs {
            *truth.entry(song).or_insert(0) += 1;
        }
        truth
    }

    /// Feed `songs`, charging `bytes_each`, reducing whenever the charge
    /// passes `budget` (as the aggregator does).
    fn summarize(songs: &[u32], bytes_each: usize, budget: usize) -> SongCounts {
        let mut summary = SongCounts::default();
        for &song in songs {
            if summary.add(SongId(song)) {
                summary.charge(bytes_each);
                if summary.charged_bytes() > budget {
                    summary.reduce_to(budget, |_| bytes_each);
                }
            }
        }
        summary
    }

    /// The guarantee, checked against the true counts: no count above the
    /// truth, none more than `max_undercount` below it, songs dropped with
    /// at most `max_undercount` streams, the bound under n / (h + 1).
    fn assert_bounds(summary: &SongCounts, truth: &HashMap<u32, u64>) {
        let held: HashMap<u32, u64> = summary.iter().map(|(s, n)| (s.0, n)).collect();
        let bound = summary.max_undercount();
        for (song, &true_count) in truth {
            let counted = held.get(song).copied().unwrap_or(0);
            assert!(
                counted <= true_count,
                "song {song}: {counted} > {true_count}"
            );
            assert!(
                true_count - counted <= bound,
                "song {song}: {true_count} - {counted} > {bound}"
            );
        }
        assert!(held.keys().all(|song| truth.contains_key(song)));
    }

    #[test]
    fn exact_while_under_budget() {
        let songs: Vec<u32> = (0..1000).map(|i| i % 37).collect();
        let summary = summarize(&songs, 100, 37 * 100);
        assert_eq!(summary.max_undercount(), 0);
        let held: HashMap<u32, u64> = summary.iter().map(|(s, n)| (s.0, n)).collect();
        assert_eq!(held, counts_of(&songs));
        assert_eq!(summary.charged_bytes(), 3700);
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_distinct_songs() {
        // Song 0 is every third stream; the rest are all different.
        let songs: Vec<u32> = (0..30_000u32)
            .map(|i| if i % 3 == 0 { 0 } else { i + 1 })
            .collect();
        let summary = summarize(&songs, 100, 100 * 100);
        assert!(summary.len() <= 100);
        assert!(summary.max_undercount() > 0);
        assert_bounds(&summary, &counts_of(&songs));
        let top = summary.iter().max_by_key(|&(_, n)| n).unwrap();
        assert_eq!(top.0, SongId(0), "the heavy hitter leads");
    }

    #[test]
    fn a_song_larger_than_the_budget_empties_the_pane() {
        let mut summary = SongCounts::default();
        summary.add(SongId(1));
        summary.charge(5000);
        summary.reduce_to(100, |_| 5000);
        assert!(summary.is_empty());
        assert_eq!(summary.charged_bytes(), 0);
        assert_eq!(summary.max_undercount(), 1);
    }

    proptest! {
        #[test]
        fn bounds_hold_for_any_stream_and_after_merging(
            a in proptest::collection::vec(0u32..300, 0..2000),
            b in proptest::collection::vec(0u32..300, 0..2000),
            budget_songs in 1usize..80,
        ) {
            let budget = budget_songs * 10;
            let left = summarize(&a, 10, budget);
            let right = summarize(&b, 10, budget);
            assert_bounds(&left, &counts_of(&a));
            let half = (budget_songs / 2) as u64;
            prop_assert!(left.max_undercount() * (half + 1) <= a.len() as u64);
            let mut merged = left.clone();
            merged.merge(&right);
            let both: Vec<u32> = a.iter().chain(&b).copied().collect();
            assert_bounds(&merged, &counts_of(&both));
        }
    }
}

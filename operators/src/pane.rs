//! A pane: everything one slide-sized slice of event time contributes.
//!
//! Events go into exactly one pane; tumbling and sliding windows are built
//! from panes when they close, so an event costs the same whatever the
//! window width.

use crate::breakdown::Breakdown;
use crate::distinct_users::DistinctUsers;
use crate::duration::DurationHistogram;
use crate::event::{Play, SongId};
use crate::song_counts::SongCounts;

/// Aggregate state of one pane (or of a window merged from panes).
#[derive(Clone, Debug, Default)]
pub struct Pane {
    streams: u64,
    song_counts: SongCounts,
    users: DistinctUsers,
    breakdown: Breakdown,
    durations: DurationHistogram,
}

impl Pane {
    /// Count one stream. Returns true when the song is new to this pane
    /// (the caller retains the song in its catalog).
    #[inline]
    pub fn add(&mut self, stream: &Play) -> bool {
        self.streams += 1;
        self.users.insert(stream.user_hash);
        self.breakdown.add(stream.dims);
        if let Some(duration_ms) = stream.duration_ms {
            self.durations.record(duration_ms);
        }
        self.song_counts.add(stream.song)
    }

    /// Add everything `other` counted.
    pub fn merge(&mut self, other: &Pane) {
        self.streams += other.streams;
        self.song_counts.merge(&other.song_counts);
        self.users.merge(&other.users);
        self.breakdown.merge(&other.breakdown);
        self.durations.merge(&other.durations);
    }

    /// Streams counted.
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// Streams per song: exact while [`SongCounts::max_undercount`] is 0.
    pub fn song_counts(&self) -> impl Iterator<Item = (SongId, u64)> + '_ {
        self.song_counts.iter()
    }

    /// Songs counted (the catalog references this pane holds).
    pub fn songs(&self) -> impl Iterator<Item = SongId> + '_ {
        self.song_counts.iter().map(|(song, _)| song)
    }

    /// The per-song counts, with their byte charge and error bound.
    pub fn song_summary(&self) -> &SongCounts {
        &self.song_counts
    }

    /// The per-song counts, to charge or reduce.
    pub fn song_summary_mut(&mut self) -> &mut SongCounts {
        &mut self.song_counts
    }

    /// Distinct users.
    pub fn users(&self) -> &DistinctUsers {
        &self.users
    }

    /// Breakdown counts.
    pub fn breakdown(&self) -> &Breakdown {
        &self.breakdown
    }

    /// Listening durations.
    pub fn durations(&self) -> &DurationHistogram {
        &self.durations
    }
}

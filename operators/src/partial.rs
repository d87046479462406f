//! One window's state for one partition of the input, in a form another
//! process can merge exactly: what a replica publishes for every window it
//! closes and partition it holds, and what the merger adds up (see
//! [`crate::global_merge`]).
//!
//! A partial carries *every* song of the partition in the window, not only
//! the top K, so the global leaderboard is exact; the users as their hashes
//! while few, else the sketch; the breakdown and listening times whole. Its
//! content is derived from the partition's records alone, so publishing it
//! again after a crash or a hand-over gives the same record.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::breakdown::{Breakdown, BreakdownState};
use crate::catalog::SongCatalog;
use crate::distinct_users::{DistinctUsers, UsersState};
use crate::duration::{DurationHistogram, DurationState};
use crate::event::EventTimeMs;
use crate::pane::Pane;
use crate::window::WindowKind;

/// The format version this build writes and reads.
pub const PARTIAL_VERSION: u32 = 1;

/// One window's state for one partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Partial {
    /// [`PARTIAL_VERSION`].
    pub version: u32,
    /// The window's kind.
    pub window: WindowKind,
    /// Window start, inclusive.
    pub start_ms: EventTimeMs,
    /// Window end, exclusive.
    pub end_ms: EventTimeMs,
    /// The input partition.
    pub partition: u32,
    /// Streams.
    pub streams: u64,
    /// Every song: (artist, song, streams), by artist then song.
    pub songs: Vec<(String, String, u64)>,
    /// How far below the truth a song count may be (0: exact; see
    /// [`crate::song_counts`]).
    #[serde(default)]
    pub songs_max_undercount: u64,
    /// The distinct users.
    pub users: UsersState,
    /// The breakdown counts.
    pub breakdown: BreakdownState,
    /// The listening times.
    pub listening: DurationState,
}

/// Why a partial could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PartialError {
    /// Written by a build with another format.
    #[error("partial of format version {0}, this build reads {PARTIAL_VERSION}")]
    Version(u32),
    /// A part of it is not what its format says.
    #[error("partial with an invalid {0}")]
    Invalid(&'static str),
}

/// A partial's state, checked and ready to merge.
pub struct PartialState {
    /// Streams.
    pub streams: u64,
    /// Users.
    pub users: DistinctUsers,
    /// Breakdown.
    pub breakdown: Breakdown,
    /// Listening times.
    pub listening: DurationHistogram,
}

impl Partial {
    /// The partial of `partition` for the window `[start_ms, end_ms)` whose
    /// state (that partition's panes merged) is `state`.
    pub fn from_pane(
        window: WindowKind,
        start_ms: EventTimeMs,
        end_ms: EventTimeMs,
        partition: u32,
        state: &Pane,
        catalog: &SongCatalog,
    ) -> Self {
        let mut songs: Vec<(String, String, u64)> = state
            .song_counts()
            .filter_map(|(id, streams)| {
                let (artist, song) = catalog.names(id)?;
                Some((artist.to_owned(), song.to_owned(), streams))
            })
            .collect();
        songs.sort_unstable();
        Self {
            version: PARTIAL_VERSION,
            window,
            start_ms,
            end_ms,
            partition,
            streams: state.streams(),
            songs,
            songs_max_undercount: state.song_summary().max_undercount(),
            users: state.users().to_state(),
            breakdown: state.breakdown().to_state(),
            listening: state.durations().to_state(),
        }
    }

    /// Check the version and every part.
    pub fn state(&self) -> Result<PartialState, PartialError> {
        if self.version != PARTIAL_VERSION {
            return Err(PartialError::Version(self.version));
        }
        if self.end_ms <= self.start_ms {
            return Err(PartialError::Invalid("window"));
        }
        let songs_streams: u64 = self.songs.iter().map(|(_, _, n)| n).sum();
        if songs_streams > self.streams {
            return Err(PartialError::Invalid("song counts"));
        }
        Ok(PartialState {
            streams: self.streams,
            users: DistinctUsers::from_state(&self.users).ok_or(PartialError::Invalid("users"))?,
            breakdown: Breakdown::from_state(&self.breakdown)
                .ok_or(PartialError::Invalid("breakdown"))?,
            listening: DurationHistogram::from_state(&self.listening)
                .ok_or(PartialError::Invalid("listening"))?,
        })
    }
}

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
    /// This record's part of the partial, from 0 (see [`Partial::split`]).
    #[serde(default)]
    pub part: u32,
    /// How many parts the partial was split into (1: whole).
    #[serde(default = "one")]
    pub parts: u32,
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

fn one() -> u32 {
    1
}

/// Bytes a song takes in a partial's JSON besides its names.
const SONG_OVERHEAD_BYTES: usize = 16;

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
            part: 0,
            parts: 1,
            streams: state.streams(),
            songs,
            songs_max_undercount: state.song_summary().max_undercount(),
            users: state.users().to_state(),
            breakdown: state.breakdown().to_state(),
            listening: state.durations().to_state(),
        }
    }

    /// Split into parts whose songs take at most about `max_song_bytes` of
    /// JSON each, so every record stays within a broker's message size
    /// (Kafka's default is 1 MB). Part 0 carries the whole state and the
    /// first songs; the others only songs. The split depends on the content
    /// alone, so a re-publication gives the same parts.
    pub fn split(mut self, max_song_bytes: usize) -> Vec<Partial> {
        let mut chunks: Vec<Vec<(String, String, u64)>> = vec![Vec::new()];
        let mut bytes = 0;
        for song in std::mem::take(&mut self.songs) {
            let size = song.0.len() + song.1.len() + SONG_OVERHEAD_BYTES;
            let current = chunks.last().map_or(0, Vec::len);
            if current > 0 && bytes + size > max_song_bytes {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            chunks.last_mut().expect("one chunk at least").push(song);
        }
        let parts = chunks.len() as u32;
        let mut out = Vec::with_capacity(chunks.len());
        for (part, songs) in chunks.into_iter().enumerate() {
            let record = if part == 0 {
                Partial {
                    parts,
                    songs,
                    ..self.clone()
                }
            } else {
                Partial {
                    part: part as u32,
                    parts,
                    streams: 0,
                    songs,
                    songs_max_undercount: 0,
                    users: DistinctUsers::default().to_state(),
                    breakdown: Breakdown::default().to_state(),
                    listening: DurationHistogram::default().to_state(),
                    ..self.clone()
                }
            };
            out.push(record);
        }
        out
    }

    /// Check the version and every part.
    pub fn state(&self) -> Result<PartialState, PartialError> {
        if self.version != PARTIAL_VERSION {
            return Err(PartialError::Version(self.version));
        }
        if self.end_ms <= self.start_ms {
            return Err(PartialError::Invalid("window"));
        }
        if self.parts == 0 || self.part >= self.parts {
            return Err(PartialError::Invalid("part"));
        }
        let songs_streams: u64 = self.songs.iter().map(|(_, _, n)| n).sum();
        // A split partial's songs are spread over its parts.
        if self.parts == 1 && songs_streams > self.streams {
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

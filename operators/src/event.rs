//! The typed listen event that flows between stages.

use crate::dimensions::Dimensions;

/// Event time: milliseconds since the Unix epoch.
pub type EventTimeMs = i64;

/// An interned (artist, song) pair; see [`crate::SongCatalog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SongId(pub u32);

/// One play of one song by one user: the only event the windows count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Play {
    /// When the play happened (event time).
    pub time_ms: EventTimeMs,
    /// Stable 64-bit hash of the user id, from [`crate::user_hash`].
    pub user_hash: u64,
    /// The song, interned by the window aggregator's catalog.
    pub song: SongId,
    /// Breakdown dimensions: level, device, state, gender.
    pub dims: Dimensions,
    /// Listening time, where the input carried one.
    pub duration_ms: Option<u32>,
}

//! The window result: one JSON line per emitted window.

use serde::Serialize;

use crate::breakdown::Breakdown;
use crate::duration::DurationSummary;
use crate::window::{WindowId, WindowKind};

/// One song on a leaderboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SongCount {
    /// Artist name ("" where the input format has none).
    pub artist: String,
    /// Song title.
    pub song: String,
    /// Exact streams in the window.
    pub streams: u64,
}

/// A closed window. Serialized field names and meanings are a public contract:
/// `window`, `start_ms` (inclusive), `end_ms` (exclusive), `streams`,
/// `active_users`, `top_songs`; `breakdown` and `listening` are extensions.
#[derive(Clone, Debug, Serialize)]
pub struct WindowResult {
    /// Serialized as `"tumbling"` or `"sliding"`.
    pub window: WindowKind,
    /// Which configured window this is (not serialized: the record's
    /// `window` field names the kind, as the public format says).
    #[serde(skip)]
    pub id: WindowId,
    /// Window start, epoch milliseconds, inclusive.
    pub start_ms: i64,
    /// Window end, epoch milliseconds, exclusive.
    pub end_ms: i64,
    /// Streams in the window.
    pub streams: u64,
    /// Distinct users among the window's streams.
    pub active_users: u64,
    /// Top songs by streams, then artist, then song (byte order).
    pub top_songs: Vec<SongCount>,
    /// Streams by level, device, state and gender.
    pub breakdown: Breakdown,
    /// Listening-time summary of the streams that carried a duration.
    pub listening: DurationSummary,
}

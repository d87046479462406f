//! The window result: one JSON line per emitted window.

use serde::Serialize;

use crate::breakdown::Breakdown;
use crate::duration::DurationSummary;
use crate::forecast::Band;
use crate::window::{WindowId, WindowKind};

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One song on a leaderboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SongCount {
    /// Artist name ("" where the input format has none).
    pub artist: String,
    /// Song title.
    pub song: String,
    /// Streams in the window (exact unless the window record carries
    /// `top_songs_max_undercount`).
    pub streams: u64,
}

/// One artist on the artists' leaderboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtistCount {
    /// Artist name (never empty: plays without an artist are left out).
    pub artist: String,
    /// Streams of the artist's songs in the window (a lower bound, short by
    /// at most `top_songs_max_undercount` per song, when the record carries
    /// that field).
    pub streams: u64,
}

/// A closed window. Serialized field names and meanings are a public contract:
/// `window`, `start_ms` (inclusive), `end_ms` (exclusive), `streams`,
/// `active_users`, `top_songs`; `top_artists`, `breakdown`, `listening`
/// and `forecast` are extensions.
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
    /// 0 (and not serialized) while the window's song counts are exact.
    /// Beyond the memory budget each count in `top_songs` is at most this
    /// far below the song's true streams, and a song not listed has at most
    /// the last listed count plus this.
    #[serde(skip_serializing_if = "is_zero")]
    pub top_songs_max_undercount: u64,
    /// Top artists by streams (summed over their songs), then artist (byte
    /// order); plays without an artist are left out.
    pub top_artists: Vec<ArtistCount>,
    /// Streams by level, device, state and gender.
    pub breakdown: Breakdown,
    /// Listening-time summary of the streams that carried a duration.
    pub listening: DurationSummary,
    /// Tumbling windows: the forecast of `streams` made when the window
    /// before closed, with its prediction band (see [`crate::forecast`]).
    /// Absent while the forecast warms up, and on every other window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Band>,
}

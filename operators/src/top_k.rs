//! Top-k songs: exact counts, a total order, names resolved at the end.

use std::cmp::Ordering;

use crate::catalog::SongCatalog;
use crate::event::SongId;
use crate::result::SongCount;

/// Leaderboard order: streams descending, then artist, then song ascending
/// (byte order).
fn leaderboard_order(a: &(u64, &str, &str), b: &(u64, &str, &str)) -> Ordering {
    b.0.cmp(&a.0)
        .then_with(|| a.1.cmp(b.1))
        .then_with(|| a.2.cmp(b.2))
}

/// The `k` most streamed songs of `counts`, in leaderboard order.
///
/// Linear selection then a sort of the `k` winners: O(n + k log k).
pub fn top_k(
    counts: impl IntoIterator<Item = (SongId, u64)>,
    k: usize,
    catalog: &SongCatalog,
) -> Vec<SongCount> {
    let mut entries: Vec<(u64, &str, &str)> = counts
        .into_iter()
        .filter_map(|(id, n)| catalog.names(id).map(|(artist, song)| (n, artist, song)))
        .collect();
    if k == 0 {
        return Vec::new();
    }
    if entries.len() > k {
        entries.select_nth_unstable_by(k - 1, leaderboard_order);
        entries.truncate(k);
    }
    entries.sort_unstable_by(leaderboard_order);
    entries
        .into_iter()
        .map(|(streams, artist, song)| SongCount {
            artist: artist.to_owned(),
            song: song.to_owned(),
            streams,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_count_then_artist_then_song_bytes() {
        let mut catalog = SongCatalog::new();
        let ids: Vec<SongId> = [("b", "x"), ("a", "z"), ("a", "y"), ("Z", "q"), ("c", "c")]
            .iter()
            .map(|(artist, song)| catalog.intern(artist, song))
            .collect();
        let counts = vec![
            (ids[0], 5),
            (ids[1], 5),
            (ids[2], 5),
            (ids[3], 5),
            (ids[4], 9),
        ];
        let top = top_k(counts.clone(), 3, &catalog);
        let names: Vec<(&str, &str, u64)> = top
            .iter()
            .map(|s| (s.artist.as_str(), s.song.as_str(), s.streams))
            .collect();
        assert_eq!(names, vec![("c", "c", 9), ("Z", "q", 5), ("a", "y", 5)]);
        assert_eq!(top_k(counts, 10, &catalog).len(), 5);
    }
}

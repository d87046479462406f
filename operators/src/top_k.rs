//! Top-k songs: a total order, names resolved at the end.

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
/// Selects on counts alone first (no name is read), so names are looked up
/// and compared only for the songs tied at the k-th count: O(n) plus the
/// ties, then a sort of the `k` winners.
pub fn top_k(
    counts: impl IntoIterator<Item = (SongId, u64)>,
    k: usize,
    catalog: &SongCatalog,
) -> Vec<SongCount> {
    if k == 0 {
        return Vec::new();
    }
    let mut by_count: Vec<(u64, SongId)> = counts
        .into_iter()
        .map(|(song, streams)| (streams, song))
        .collect();
    if by_count.len() > k {
        let (_, &mut (kth, _), _) = by_count.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
        // Every song above the k-th count wins; those tied with it compete by name.
        by_count.retain(|&(streams, _)| streams >= kth);
    }
    let entries: Vec<(u64, &str, &str)> = by_count
        .into_iter()
        .filter_map(|(n, id)| catalog.names(id).map(|(artist, song)| (n, artist, song)))
        .collect();
    top_k_named(entries, k)
}

/// The `k` first of (streams, artist, song) in leaderboard order.
pub fn top_k_named(mut entries: Vec<(u64, &str, &str)>, k: usize) -> Vec<SongCount> {
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

//! Top-k songs and artists: a total order, names resolved at the end.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::catalog::SongCatalog;
use crate::event::SongId;
use crate::result::{ArtistCount, SongCount};

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

/// Keep the `k` first of `entries` by `order`, sorted (k > 0): a selection,
/// then a sort of the winners only.
fn first_k<T>(entries: &mut Vec<T>, k: usize, order: impl Fn(&T, &T) -> Ordering) {
    if entries.len() > k {
        entries.select_nth_unstable_by(k - 1, &order);
        entries.truncate(k);
    }
    entries.sort_unstable_by(order);
}

/// The `k` first of (streams, artist, song) in leaderboard order.
pub fn top_k_named(mut entries: Vec<(u64, &str, &str)>, k: usize) -> Vec<SongCount> {
    if k == 0 {
        return Vec::new();
    }
    first_k(&mut entries, k, leaderboard_order);
    entries
        .into_iter()
        .map(|(streams, artist, song)| SongCount {
            artist: artist.to_owned(),
            song: song.to_owned(),
            streams,
        })
        .collect()
}

/// The `k` most streamed artists of (streams, artist) song entries: each
/// artist's songs summed; streams descending, then artist ascending (byte
/// order); the empty artist (formats without one) left out.
pub fn top_artists<'a>(
    songs: impl IntoIterator<Item = (u64, &'a str)>,
    k: usize,
) -> Vec<ArtistCount> {
    if k == 0 {
        return Vec::new();
    }
    let mut by_artist: HashMap<&str, u64, ahash::RandomState> = HashMap::default();
    for (streams, artist) in songs {
        if !artist.is_empty() {
            *by_artist.entry(artist).or_default() += streams;
        }
    }
    let order = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    let mut artists: Vec<(&str, u64)> = by_artist.into_iter().collect();
    first_k(&mut artists, k, order);
    artists
        .into_iter()
        .map(|(artist, streams)| ArtistCount {
            artist: artist.to_owned(),
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

    /// An artist leads on the sum of songs that each trail another artist's
    /// one song; ties go to the artist's bytes; the empty artist is left out.
    #[test]
    fn artists_sum_their_songs_and_tie_by_bytes() {
        let songs = [
            (4, "many"),
            (4, "many"),
            (4, "many"),
            (10, "one hit"),
            (6, "b"),
            (6, "a"),
            (50, ""),
        ];
        let top = top_artists(songs, 3);
        let got: Vec<(&str, u64)> = top.iter().map(|a| (a.artist.as_str(), a.streams)).collect();
        assert_eq!(got, vec![("many", 12), ("one hit", 10), ("a", 6)]);
        assert!(top_artists(songs, 0).is_empty());
    }

    /// Against a from-scratch recomputation on many random boards.
    #[test]
    fn artists_match_a_sort_of_every_artist() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let names: Vec<String> = (0..12).map(|i| format!("artist {i}")).collect();
        for _ in 0..200 {
            let songs: Vec<(u64, &str)> = (0..next() % 40)
                .map(|_| (next() % 5, names[(next() % 12) as usize].as_str()))
                .collect();
            let k = 1 + (next() % 6) as usize;
            let mut sums: std::collections::BTreeMap<&str, u64> = Default::default();
            for &(n, artist) in &songs {
                *sums.entry(artist).or_default() += n;
            }
            let mut expected: Vec<(&str, u64)> = sums.into_iter().collect();
            expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            expected.truncate(k);
            let got: Vec<(&str, u64)> = top_artists(songs.iter().copied(), k)
                .iter()
                .map(|a| {
                    (
                        names.iter().find(|n| **n == a.artist).unwrap().as_str(),
                        a.streams,
                    )
                })
                .collect();
            assert_eq!(got, expected);
        }
    }
}

//! Hand-written code against the crate that could replace it (issue 9, item 5):
//! xoshiro256++ vs `rand_xoshiro`, FNV-1a vs xxh3 on song names, and the SSE2
//! `", "` search of `state_from_location` vs `memchr`. The hand-written sides
//! are copies of the code as it was, kept here so the figures can be re-run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The generator's seeding: four SplitMix64 words.
fn split_mix_words(seed: u64) -> [u64; 4] {
    let mut x = seed;
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    [next(), next(), next(), next()]
}

/// The hand-written xoshiro256++ the generator used.
struct HandXoshiro([u64; 4]);

impl HandXoshiro {
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

fn crate_xoshiro(seed: u64) -> Xoshiro256PlusPlus {
    let mut bytes = [0u8; 32];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(split_mix_words(seed)) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Xoshiro256PlusPlus::from_seed(bytes)
}

/// `Rng::below`: multiply-shift into `0..n`.
fn below(bits: u64, n: u64) -> u64 {
    ((u128::from(bits) * u128::from(n)) >> 64) as u64
}

fn rng(c: &mut Criterion) {
    const DRAWS: u64 = 4096;
    let mut hand = HandXoshiro(split_mix_words(7));
    let mut krate = crate_xoshiro(7);
    for _ in 0..1000 {
        assert_eq!(hand.next_u64(), krate.next_u64(), "same stream");
    }
    let mut group = c.benchmark_group("rng_below");
    group.throughput(Throughput::Elements(DRAWS));
    group.bench_function("hand_xoshiro256pp", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for _ in 0..DRAWS {
                sum = sum.wrapping_add(below(hand.next_u64(), black_box(10_000)));
            }
            sum
        })
    });
    group.bench_function("rand_xoshiro", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for _ in 0..DRAWS {
                sum = sum.wrapping_add(below(krate.next_u64(), black_box(10_000)));
            }
            sum
        })
    });
    group.finish();
}

/// Artist and song pairs as the generator writes them.
const SONGS: [(&str, &str); 8] = [
    ("Joseph Lopez Featuring Anthony Kowalski", "Remember My Sun"),
    ("The Velvet Lanterns", "Golden Hour"),
    ("DJ Harbor", "Midnight Blues"),
    ("Beyoncé", "Halo"),
    ("Mary Johnson & The Wanderers", "Dancing In The Rain"),
    ("Kings Of Summer", "Lost Highway (Remastered)"),
    ("Quiet Engines", "Hold My Heart"),
    ("Ana Ruiz", "Electric Dreams Of The Cities"),
];

/// A hash of an artist and a song name.
type SongHash = fn(&str, &str) -> u64;

/// The generator's song-length hash.
fn fnv1a(artist: &str, song: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in artist
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(song.as_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The same input through xxh3's streaming hasher.
fn xxh3_streaming(artist: &str, song: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(artist.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(song.as_bytes());
    hasher.digest()
}

/// The same input joined in a stack buffer, then one-shot xxh3.
fn xxh3_joined(artist: &str, song: &str) -> u64 {
    let mut buffer = [0u8; 256];
    let len = artist.len() + 1 + song.len();
    if len > buffer.len() {
        return xxh3_streaming(artist, song);
    }
    buffer[..artist.len()].copy_from_slice(artist.as_bytes());
    buffer[artist.len()] = 0xff;
    buffer[artist.len() + 1..len].copy_from_slice(song.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&buffer[..len])
}

fn song_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("song_hash");
    group.throughput(Throughput::Elements(SONGS.len() as u64));
    let hashes: [(&str, SongHash); 3] = [
        ("fnv1a", fnv1a),
        ("xxh3_streaming", xxh3_streaming),
        ("xxh3_joined", xxh3_joined),
    ];
    for (name, hash) in hashes {
        group.bench_function(name, |b| {
            b.iter(|| {
                SONGS
                    .iter()
                    .fold(0u64, |acc, (a, s)| acc ^ hash(black_box(a), black_box(s)))
            })
        });
    }
    group.finish();
}

/// Locations as they arrive (EventSim metro areas), plus two without a state.
const LOCATIONS: [&str; 10] = [
    "Los Angeles-Long Beach-Anaheim, CA",
    "New York-Newark-Jersey City, NY-NJ-PA",
    "Washington-Arlington-Alexandria, DC-VA-MD-WV",
    "Nashville-Davidson--Murfreesboro--Franklin, TN",
    "St. Louis, MO-IL",
    "Pittsburgh, PA",
    "Austin, TX",
    "Salt Lake City, UT",
    "Nowhere",
    "A place, with a comma, but long enough",
];

/// A search for the index of the last `", "`.
type CommaSearch = fn(&[u8]) -> Option<usize>;

/// The SSE2 search of `state_from_location`: the index of the last `", "`.
fn last_comma_sse2(bytes: &[u8]) -> Option<usize> {
    let mut space = bytes.len();
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let last = bytes.len() - 16;
        // SAFETY: SSE2 is part of the x86_64 baseline; the load lies within `bytes`.
        let (commas, spaces) = unsafe {
            let v = _mm_loadu_si128(bytes.as_ptr().add(last).cast::<__m128i>());
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8))) as u32,
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8))) as u32,
            )
        };
        let pairs = commas & (spaces >> 1);
        if pairs != 0 {
            space = last + (31 - pairs.leading_zeros() as usize) + 2;
        } else {
            space = last + 1;
        }
    }
    loop {
        if space < 2 {
            return None;
        }
        space -= 1;
        if bytes[space] == b' ' && bytes[space - 1] == b',' {
            return Some(space - 1);
        }
    }
}

fn last_comma_memmem(bytes: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(bytes, b", ")
}

fn last_comma_finder(bytes: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(b", "));
    FINDER.rfind(bytes)
}

fn last_comma_memrchr(bytes: &[u8]) -> Option<usize> {
    memchr::memrchr_iter(b',', bytes).find(|&i| bytes.get(i + 1) == Some(&b' '))
}

fn state_search(c: &mut Criterion) {
    let searches: [(&str, CommaSearch); 4] = [
        ("sse2", last_comma_sse2),
        ("memmem_rfind", last_comma_memmem),
        ("memmem_finder_rev_static", last_comma_finder),
        ("memrchr_iter", last_comma_memrchr),
    ];
    for location in LOCATIONS {
        let want = last_comma_sse2(location.as_bytes());
        for (name, search) in searches {
            assert_eq!(search(location.as_bytes()), want, "{name} on {location}");
        }
    }
    let mut group = c.benchmark_group("state_search");
    group.throughput(Throughput::Elements(LOCATIONS.len() as u64));
    for (name, search) in searches {
        group.bench_function(name, |b| {
            b.iter(|| {
                LOCATIONS
                    .iter()
                    .map(|l| search(black_box(l.as_bytes())).unwrap_or(0))
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rng, song_hash, state_search);
criterion_main!(benches);

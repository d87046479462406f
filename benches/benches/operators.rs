//! Criterion micro-benchmarks, one per stage, reported per event.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use downbeat::decode::{decode, Decoded, Limits};
use downbeat::json_scan::scan_object;
use downbeat_operators::{
    top_k, user_hash, AggregatorConfig, Dimensions, DistinctUsers, ForecastConfig, Forecaster,
    Play, SongCatalog, SongId, SongStreams, TrendDetector, TrendingConfig, WindowAggregator,
};

const LINES: usize = 10_000;
const START_MS: i64 = 1_700_000_000_000;

fn lines() -> Vec<Vec<u8>> {
    downbeat_benches::eventsim_lines(LINES, START_MS, 1.0, 7)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn bench_decode(c: &mut Criterion) {
    let lines = lines();
    let bounds = Limits::until(START_MS + 86_400_000, 0, downbeat::decode::MAX_FIELD_BYTES);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("json_scan", |b| {
        b.iter(|| {
            let mut fields = 0usize;
            for line in &lines {
                let text = std::str::from_utf8(line).unwrap();
                scan_object(text, |_, _| fields += 1).unwrap();
            }
            fields
        })
    });
    group.bench_function("decode_listen", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|line| matches!(decode(line, bounds), Decoded::Play(_)))
                .count()
        })
    });
    group.finish();
}

fn streams(agg: &mut WindowAggregator, count: usize) -> Vec<Play> {
    (0..count)
        .map(|i| Play {
            time_ms: START_MS + i as i64,
            user_hash: user_hash(&(i % 5_000).to_le_bytes()),
            song: agg.intern("artist", &format!("song {}", (i * 7919) % 20_000)),
            dims: Dimensions::default(),
            duration_ms: Some(200_000),
        })
        .collect()
}

fn bench_aggregate(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregate");
    const EVENTS: usize = 100_000;
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("insert_and_advance", |b| {
        b.iter_batched(
            || {
                let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
                let events = streams(&mut agg, EVENTS);
                (agg, events)
            },
            |(mut agg, events)| {
                let mut out = Vec::new();
                for e in events {
                    agg.insert(e).unwrap();
                    agg.advance(e.time_ms - 10_000, &mut out);
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    let names: Vec<String> = (0..20_000).map(|i| format!("song {i}")).collect();
    group.throughput(Throughput::Elements(names.len() as u64));
    group.bench_function("intern_existing", |b| {
        let mut catalog = SongCatalog::new();
        for name in &names {
            catalog.intern("artist", name);
        }
        b.iter(|| {
            names
                .iter()
                .map(|n| catalog.intern("artist", n).0 as u64)
                .sum::<u64>()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("distinct_users");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("insert_sketch", |b| {
        b.iter(|| {
            let mut users = DistinctUsers::default();
            for i in 0..EVENTS as u64 {
                users.insert(user_hash(&i.to_le_bytes()));
            }
            users.count()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("top_k");
    let mut catalog = SongCatalog::new();
    let counts: Vec<(SongId, u64)> = (0..20_000u64)
        .map(|i| {
            (
                catalog.intern("artist", &format!("song {i}")),
                (i * 7919) % 1_000,
            )
        })
        .collect();
    group.throughput(Throughput::Elements(counts.len() as u64));
    group.bench_function("top_10_of_20k_songs", |b| {
        b.iter(|| top_k(counts.iter().copied(), 10, &catalog).len())
    });
    group.finish();
}

/// The trend detector on a window of 20,000 songs (Zipf-like counts), after
/// an hour of the same: the per-minute cost of scoring a tumbling window.
fn bench_trending(c: &mut Criterion) {
    const SONGS: u64 = 20_000;
    let names: Vec<String> = (0..SONGS).map(|i| format!("song {i}")).collect();
    let window: Vec<SongStreams> = (0..SONGS)
        .map(|i| SongStreams {
            key: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            artist: "artist",
            song: &names[i as usize],
            streams: 20_000 / (i + 1) + (i * 7919) % 3,
        })
        .collect();
    let total: u64 = window.iter().map(|s| s.streams).sum();
    let mut detector = TrendDetector::new(TrendingConfig::default(), 60_000).unwrap();
    let mut end_ms = 60_000;
    for _ in 0..60 {
        detector.observe(end_ms, total, window.iter().copied());
        end_ms += 60_000;
    }
    let mut group = c.benchmark_group("trending");
    group.throughput(Throughput::Elements(SONGS));
    group.bench_function("observe_window_of_20k_songs", |b| {
        b.iter(|| {
            end_ms += 60_000;
            detector
                .observe(end_ms, total, window.iter().copied())
                .map(|t| t.songs.len())
        })
    });
    group.finish();
}

/// The streams forecast on one tumbling close, after two days of minutes
/// (full profile, full score pools): its per-minute cost.
fn bench_forecast(c: &mut Criterion) {
    let mut forecaster = Forecaster::new(ForecastConfig::default(), 60_000).unwrap();
    let streams = |minute: i64| {
        let phase = (minute % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
        (2_000.0 * (1.0 - 0.6 * phase.cos()) + ((minute * 7919) % 97) as f64) as u64
    };
    let mut minute = 0;
    while minute < 2 * 1440 {
        forecaster.observe(minute * 60_000, streams(minute));
        minute += 1;
    }
    let mut group = c.benchmark_group("forecast");
    group.bench_function("observe_close", |b| {
        b.iter(|| {
            minute += 1;
            forecaster.observe(minute * 60_000, streams(minute))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_aggregate,
    bench_trending,
    bench_forecast
);
criterion_main!(benches);

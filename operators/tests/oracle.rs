//! Oracle tests: random out-of-order streams through the operators, checked against naive recomputation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use downbeat_operators::{
    user_hash, AggregatorConfig, Device, Dimensions, DistinctUsers, Gender, Level, Play, UsState,
    WindowAggregator, WindowResult, WindowSpec,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};

/// November 2023, deliberately not aligned to a minute.
const BASE_MS: i64 = 1_700_000_000_123;
const MINUTE_MS: i64 = 60_000;
const TEN_MINUTES_MS: i64 = 600_000;
/// Durations above this are clamped (documented on `DurationHistogram`).
const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// User ids that differ only in case, accents or leading zeros are distinct users.
const USERS: [&str; 8] = ["u1", "U1", "ü1", "1", "01", "user-2", "", "ユーザー"];

/// (artist, song) pairs: case variants (byte order puts `Z` before `a`),
/// accents, a concatenation trap (`"A" + "x"` vs `"Ax" + ""`), an empty
/// artist, multibyte text.
const SONGS: [(&str, &str); 18] = [
    ("Abba", "Waterloo"),
    ("abba", "Waterloo"),
    ("ABBA", "waterloo"),
    ("Zoë", "Été"),
    ("Zoe", "Ete"),
    ("Ärzte", "Schrei nach Liebe"),
    ("Arzte", "x"),
    ("Björk", "Jóga"),
    ("Björk", "Joga"),
    ("Björk", "army of me"),
    ("Björk", "Hunter"),
    ("A", "x"),
    ("Ax", ""),
    ("", "Untitled"),
    ("坂本龍一", "Merry Christmas Mr. Lawrence"),
    ("Sigur Rós", "Hoppípolla"),
    ("sigur rós", "hoppípolla"),
    ("Z", "a"),
];

const LEVELS: [(Level, &str); 3] = [
    (Level::Free, "free"),
    (Level::Paid, "paid"),
    (Level::Unknown, "unknown"),
];
const DEVICES: [(Device, &str); 8] = [
    (Device::Windows, "windows"),
    (Device::Mac, "mac"),
    (Device::Linux, "linux"),
    (Device::Iphone, "iphone"),
    (Device::Ipad, "ipad"),
    (Device::Android, "android"),
    (Device::Other, "other"),
    (Device::Unknown, "unknown"),
];
/// (raw code, expected label).
const STATES: [(&str, &str); 8] = [
    ("CA", "CA"),
    ("ny", "NY"),
    ("WY", "WY"),
    ("AK", "AK"),
    ("DC", "DC"),
    ("ON", "unknown"),
    ("", "unknown"),
    ("xyz", "unknown"),
];
const GENDERS: [(Gender, &str); 3] = [
    (Gender::Male, "M"),
    (Gender::Female, "F"),
    (Gender::Unknown, "unknown"),
];

/// One listen as the test sees it: names and labels, not ids.
#[derive(Clone, Debug)]
struct Listen {
    time_ms: i64,
    user: &'static str,
    artist: &'static str,
    song: &'static str,
    level: usize,
    device: usize,
    state: usize,
    gender: usize,
    duration_ms: Option<u32>,
}

impl Listen {
    fn dims(&self) -> Dimensions {
        Dimensions {
            level: LEVELS[self.level].0,
            device: DEVICES[self.device].0,
            state: UsState::from_code(STATES[self.state].0),
            gender: GENDERS[self.gender].0,
        }
    }

    /// Interns the song in `agg`'s catalog, as the engine does at the source.
    fn stream(&self, agg: &mut WindowAggregator) -> Play {
        Play {
            time_ms: self.time_ms,
            user_hash: user_hash(self.user.as_bytes()),
            song: agg.intern(self.artist, self.song),
            dims: self.dims(),
            duration_ms: self.duration_ms,
        }
    }
}

/// A generated listen before its time is placed: cluster, offset in it,
/// optionally moved to within 1 ms of a 15 s boundary, delivery delay seed.
#[derive(Clone, Debug)]
struct Draw {
    cluster: usize,
    offset_ms: i64,
    snap_ms: Option<i64>,
    delay_seed: u32,
    listen: Listen,
}

/// Every window boundary of [`SHAPE_SETS`] is a multiple of this.
const SNAP_MS: i64 = 15_000;

fn duration_strategy() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        3 => Just(None),
        6 => (0u32..600_000).prop_map(Some),
        1 => (86_000_000u32..=u32::MAX).prop_map(Some),
    ]
}

fn draw_strategy() -> impl Strategy<Value = Draw> {
    (
        (
            0usize..4,
            0i64..150_000,
            prop_oneof![3 => Just(None), 1 => (-1i64..=1).prop_map(Some)],
            any::<u32>(),
        ),
        (
            prop::sample::select(USERS.to_vec()),
            prop::sample::select(SONGS.to_vec()),
        ),
        (
            0..LEVELS.len(),
            0..DEVICES.len(),
            0..STATES.len(),
            0..GENDERS.len(),
        ),
        duration_strategy(),
    )
        .prop_map(
            |(
                (cluster, offset_ms, snap_ms, delay_seed),
                (user, (artist, song)),
                dims,
                duration_ms,
            )| Draw {
                cluster,
                offset_ms,
                snap_ms,
                delay_seed,
                listen: Listen {
                    time_ms: 0,
                    user,
                    artist,
                    song,
                    level: dims.0,
                    device: dims.1,
                    state: dims.2,
                    gender: dims.3,
                    duration_ms,
                },
            },
        )
}

/// Listens in 1 to 3 clusters over about half an hour (so some windows are
/// empty), in delivery order: each listen is delayed by up to `lateness_ms`,
/// so it arrives when `max_seen - time_ms <= lateness_ms`. Lateness 0 and
/// 2 min put the watermark exactly on window ends when a listen is snapped.
#[derive(Clone, Debug)]
struct Scenario {
    lateness_ms: i64,
    top_k: usize,
    delivery: Vec<Listen>,
}

fn scenario_strategy(max_listens: usize) -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![Just(BASE_MS), Just(0i64), Just(-900_000i64)],
        prop::collection::vec(0i64..1_800_000, 1..4),
        prop::collection::vec(draw_strategy(), 1..max_listens),
        prop_oneof![Just(0i64), Just(10_000i64), Just(120_000i64)],
        prop_oneof![Just(10usize), 1usize..10],
    )
        .prop_map(|(base_ms, centers, draws, lateness_ms, top_k)| {
            let mut keyed: Vec<(i64, Listen)> = draws
                .into_iter()
                .map(|draw| {
                    let mut listen = draw.listen;
                    let time_ms = base_ms + centers[draw.cluster % centers.len()] + draw.offset_ms;
                    listen.time_ms = match draw.snap_ms {
                        Some(d) => time_ms - time_ms.rem_euclid(SNAP_MS) + d,
                        None => time_ms,
                    };
                    let delay = i64::from(draw.delay_seed) % (lateness_ms + 1);
                    (listen.time_ms + delay, listen)
                })
                .collect();
            keyed.sort_by_key(|(arrival, _)| *arrival);
            Scenario {
                lateness_ms,
                top_k,
                delivery: keyed.into_iter().map(|(_, listen)| listen).collect(),
            }
        })
}

/// A window shape as the oracle understands it.
#[derive(Clone, Copy, Debug)]
struct Shape {
    name: &'static str,
    width_ms: i64,
    slide_ms: i64,
}

const fn tumbling(width_ms: i64) -> Shape {
    Shape {
        name: "tumbling",
        width_ms,
        slide_ms: width_ms,
    }
}

const fn sliding(width_ms: i64, slide_ms: i64) -> Shape {
    Shape {
        name: "sliding",
        width_ms,
        slide_ms,
    }
}

/// The default configuration's windows.
const DEFAULT_SHAPES: [Shape; 2] = [tumbling(MINUTE_MS), sliding(TEN_MINUTES_MS, MINUTE_MS)];

/// Other window sets, including panes finer than any slide.
const SHAPE_SETS: [&[Shape]; 6] = [
    &DEFAULT_SHAPES,
    &[tumbling(30_000), sliding(120_000, 30_000)],
    &[sliding(300_000, MINUTE_MS), tumbling(120_000)],
    &[tumbling(45_000), sliding(180_000, MINUTE_MS)],
    &[tumbling(120_000), tumbling(180_000)],
    &[sliding(MINUTE_MS, MINUTE_MS)],
];

fn aggregator(shapes: &[Shape], top_k: usize) -> WindowAggregator {
    aggregator_with_budget(shapes, top_k, usize::MAX)
}

fn aggregator_with_budget(shapes: &[Shape], top_k: usize, budget_bytes: usize) -> WindowAggregator {
    let windows = shapes
        .iter()
        .map(|s| {
            if s.name == "tumbling" {
                WindowSpec::tumbling(s.width_ms).unwrap()
            } else {
                WindowSpec::sliding(s.width_ms, s.slide_ms).unwrap()
            }
        })
        .collect();
    WindowAggregator::new(AggregatorConfig {
        windows,
        top_k,
        pane_song_budget_bytes: budget_bytes,
        ..AggregatorConfig::default()
    })
    .unwrap()
}

/// The parts of a window result that must match exactly.
#[derive(Clone, Debug, PartialEq)]
struct Exact {
    window: &'static str,
    start_ms: i64,
    end_ms: i64,
    streams: u64,
    active_users: u64,
    top_songs: Vec<(String, String, u64)>,
    breakdown: Value,
    listening_count: u64,
    listening_sum_ms: u64,
}

/// What the oracle expects of one window.
#[derive(Debug)]
struct Expected {
    exact: Exact,
    /// Clamped durations, sorted.
    durations_ms: Vec<u64>,
}

fn exact_view(result: &WindowResult) -> Exact {
    Exact {
        window: result.window.name(),
        start_ms: result.start_ms,
        end_ms: result.end_ms,
        streams: result.streams,
        active_users: result.active_users,
        top_songs: result
            .top_songs
            .iter()
            .map(|s| (s.artist.clone(), s.song.clone(), s.streams))
            .collect(),
        breakdown: serde_json::to_value(&result.breakdown).unwrap(),
        listening_count: result.listening.count,
        listening_sum_ms: (result.listening.sum_secs * 1000.0).round() as u64,
    }
}

/// Recompute one window from scratch.
fn expected_window(shape: &Shape, end_ms: i64, members: &[&Listen], top_k: usize) -> Expected {
    let users: HashSet<&str> = members.iter().map(|l| l.user).collect();

    let mut per_song: HashMap<(&str, &str), u64> = HashMap::new();
    for l in members {
        *per_song.entry((l.artist, l.song)).or_default() += 1;
    }
    let mut top: Vec<(&str, &str, u64)> =
        per_song.into_iter().map(|((a, s), n)| (a, s, n)).collect();
    top.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
            .then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
    });
    top.truncate(top_k);

    let mut level: BTreeMap<&str, u64> = BTreeMap::new();
    let mut device: BTreeMap<&str, u64> = BTreeMap::new();
    let mut state: BTreeMap<&str, u64> = BTreeMap::new();
    let mut gender: BTreeMap<&str, u64> = BTreeMap::new();
    for l in members {
        *level.entry(LEVELS[l.level].1).or_default() += 1;
        *device.entry(DEVICES[l.device].1).or_default() += 1;
        *state.entry(STATES[l.state].1).or_default() += 1;
        *gender.entry(GENDERS[l.gender].1).or_default() += 1;
    }

    let mut durations_ms: Vec<u64> = members
        .iter()
        .filter_map(|l| l.duration_ms)
        .map(|d| u64::from(d).min(MAX_DURATION_MS))
        .collect();
    durations_ms.sort_unstable();

    Expected {
        exact: Exact {
            window: shape.name,
            start_ms: end_ms - shape.width_ms,
            end_ms,
            streams: members.len() as u64,
            active_users: users.len() as u64,
            top_songs: top
                .into_iter()
                .map(|(a, s, n)| (a.to_owned(), s.to_owned(), n))
                .collect(),
            breakdown: json!({
                "level": level,
                "device": device,
                "state": state,
                "gender": gender,
            }),
            listening_count: durations_ms.len() as u64,
            listening_sum_ms: durations_ms.iter().sum(),
        },
        durations_ms,
    }
}

/// Every window `[end - width, end)`, `end` a multiple of the slide, holding at
/// least one listen; sorted by end, then configuration order.
fn naive_windows(shapes: &[Shape], top_k: usize, listens: &[Listen]) -> Vec<Expected> {
    let (Some(first), Some(last)) = (
        listens.iter().map(|l| l.time_ms).min(),
        listens.iter().map(|l| l.time_ms).max(),
    ) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for (index, shape) in shapes.iter().enumerate() {
        let mut end_ms = first - first.rem_euclid(shape.slide_ms);
        while end_ms <= last + shape.width_ms {
            let members: Vec<&Listen> = listens
                .iter()
                .filter(|l| end_ms - shape.width_ms <= l.time_ms && l.time_ms < end_ms)
                .collect();
            if !members.is_empty() {
                all.push((
                    end_ms,
                    index,
                    expected_window(shape, end_ms, &members, top_k),
                ));
            }
            end_ms += shape.slide_ms;
        }
    }
    all.sort_by_key(|(end_ms, index, _)| (*end_ms, *index));
    all.into_iter().map(|(_, _, expected)| expected).collect()
}

/// `got_secs` is the histogram's value for `want_ms` rounded to whole
/// seconds: never below that, at most 1% above.
fn within_histogram_precision(got_secs: f64, want_ms: u64) -> bool {
    let want_secs = (want_ms + 500) / 1000;
    let got = got_secs.round() as u64;
    got_secs.fract() == 0.0 && want_secs <= got && got <= want_secs + want_secs / 100 + 1
}

/// The value of rank `ceil(q * n)` (at least 1), HdrHistogram's quantile definition.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn check_windows(got: &[WindowResult], want: &[Expected]) -> Result<(), TestCaseError> {
    let got_keys: Vec<(i64, &str, i64)> = got
        .iter()
        .map(|w| (w.end_ms, w.window.name(), w.start_ms))
        .collect();
    let want_keys: Vec<(i64, &str, i64)> = want
        .iter()
        .map(|w| (w.exact.end_ms, w.exact.window, w.exact.start_ms))
        .collect();
    prop_assert_eq!(
        got_keys,
        want_keys,
        "emitted windows (end, kind, start): each non-empty window once, in end order"
    );
    for (result, expected) in got.iter().zip(want) {
        prop_assert_eq!(&exact_view(result), &expected.exact);

        let breakdown = serde_json::to_value(&result.breakdown).unwrap();
        for dimension in ["level", "device", "state", "gender"] {
            let total: u64 = breakdown[dimension]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            prop_assert_eq!(
                total,
                result.streams,
                "{} breakdown of window ending {}",
                dimension,
                result.end_ms
            );
        }

        let listening = &result.listening;
        let durations = &expected.durations_ms;
        if durations.is_empty() {
            prop_assert_eq!(
                (listening.p50_secs, listening.max_secs),
                (0.0, 0.0),
                "empty listening summary"
            );
            continue;
        }
        for (name, got_secs, want_ms) in [
            ("p50", listening.p50_secs, quantile(durations, 0.5)),
            ("p90", listening.p90_secs, quantile(durations, 0.9)),
            ("p99", listening.p99_secs, quantile(durations, 0.99)),
            ("max", listening.max_secs, *durations.last().unwrap()),
        ] {
            prop_assert!(
                within_histogram_precision(got_secs, want_ms),
                "{} of window ending {}: got {} s, want {} ms (durations {:?})",
                name,
                result.end_ms,
                got_secs,
                want_ms,
                durations
            );
        }
    }
    Ok(())
}

/// Deliver `scenario` with the watermark at `max_seen - lateness` after every
/// listen, flush, and compare with the oracle.
fn run_on_time(shapes: &[Shape], scenario: &Scenario) -> Result<(), TestCaseError> {
    let mut agg = aggregator(shapes, scenario.top_k);
    let mut out = Vec::new();
    let mut max_seen = i64::MIN;
    for listen in &scenario.delivery {
        let stream = listen.stream(&mut agg);
        let inserted = agg.insert(stream);
        prop_assert!(
            inserted.is_ok(),
            "refused on-time {:?}: {:?}",
            listen,
            inserted
        );
        max_seen = max_seen.max(listen.time_ms);
        let watermark = max_seen - scenario.lateness_ms;
        agg.advance(watermark, &mut out);
        // A repeated watermark closes nothing new.
        let emitted = out.len();
        agg.advance(watermark, &mut out);
        prop_assert_eq!(out.len(), emitted, "repeated watermark emitted again");
    }
    agg.flush(&mut out);
    let emitted = out.len();
    agg.flush(&mut out);
    prop_assert_eq!(out.len(), emitted, "second flush emitted again");

    prop_assert_eq!(agg.late_events(), 0);
    check_windows(
        &out,
        &naive_windows(shapes, scenario.top_k, &scenario.delivery),
    )?;
    prop_assert_eq!(agg.live_panes(), 0, "panes left after flush");
    prop_assert_eq!(agg.interned_songs(), 0, "names left after flush");
    Ok(())
}

/// Deliver `scenario` in event-time order with panes of `budget_bytes`: every
/// window is exact but for its song counts, which hold the heavy-hitters
/// guarantee against the true counts (exact when the bound is 0).
fn run_within_budget(scenario: &Scenario, budget_bytes: usize) -> Result<(), TestCaseError> {
    let mut agg = aggregator_with_budget(&DEFAULT_SHAPES, scenario.top_k, budget_bytes);
    let mut out = Vec::new();
    for listen in &scenario.delivery {
        let stream = listen.stream(&mut agg);
        prop_assert!(agg.insert(stream).is_ok());
    }
    agg.flush(&mut out);
    let want = naive_windows(&DEFAULT_SHAPES, usize::MAX, &scenario.delivery);
    prop_assert_eq!(out.len(), want.len());
    for (result, expected) in out.iter().zip(&want) {
        let mut got = exact_view(result);
        let got_top = std::mem::take(&mut got.top_songs);
        let mut want_rest = expected.exact.clone();
        let all_songs = std::mem::take(&mut want_rest.top_songs);
        prop_assert_eq!(got, want_rest, "everything but the song counts is exact");

        let truth: HashMap<(&str, &str), u64> = all_songs
            .iter()
            .map(|(artist, song, n)| ((artist.as_str(), song.as_str()), *n))
            .collect();
        let bound = result.top_songs_max_undercount;
        for (artist, song, counted) in &got_top {
            let true_count = truth[&(artist.as_str(), song.as_str())];
            prop_assert!(*counted <= true_count && true_count - counted <= bound);
        }
        // A song left off has at most the last listed count plus the bound.
        if got_top.len() == scenario.top_k {
            let last = got_top.last().map_or(0, |(_, _, n)| *n);
            for ((artist, song), true_count) in &truth {
                let listed = got_top.iter().any(|(a, s, _)| a == artist && s == song);
                prop_assert!(listed || *true_count <= last + bound);
            }
        }
        if bound == 0 {
            let exact_top: Vec<_> = all_songs.into_iter().take(scenario.top_k).collect();
            prop_assert_eq!(got_top, exact_top);
        }
    }
    prop_assert_eq!(agg.interned_songs(), 0, "names left after flush");
    Ok(())
}

/// When a late listen happened, relative to the watermark it arrives at.
#[derive(Clone, Debug)]
enum LateTime {
    /// `age_ms` before the watermark.
    Before { age_ms: i64 },
    /// Within 1 ms of the 15 s boundary `steps` before the watermark's
    /// 15 s step (minutes included), but still before the watermark.
    NearBoundary { steps: i64, offset_ms: i64 },
}

impl LateTime {
    fn time_ms(&self, watermark: i64) -> i64 {
        match *self {
            LateTime::Before { age_ms } => watermark - 1 - age_ms,
            LateTime::NearBoundary { steps, offset_ms } => {
                let boundary = watermark - watermark.rem_euclid(SNAP_MS) - steps * SNAP_MS;
                (boundary + offset_ms).min(watermark - 1)
            }
        }
    }
}

fn late_time_strategy() -> impl Strategy<Value = LateTime> {
    prop_oneof![
        (0i64..200_000).prop_map(|age_ms| LateTime::Before { age_ms }),
        (0i64..9, -1i64..=1)
            .prop_map(|(steps, offset_ms)| LateTime::NearBoundary { steps, offset_ms }),
    ]
}

/// Late listens, each injected right after the on-time listen it is attached to.
fn late_strategy() -> impl Strategy<Value = Vec<(Index, LateTime, Draw)>> {
    prop::collection::vec(
        (any::<Index>(), late_time_strategy(), draw_strategy()),
        1..20,
    )
}

/// Deliver `scenario` on time and `late` listens behind the watermark.
/// A late listen must be refused when a window holding it was already
/// emitted; with `exactly`, it must be accepted otherwise. The output must
/// match the oracle over the accepted listens.
fn run_with_late(
    shapes: &[Shape],
    scenario: &Scenario,
    late: Vec<(Index, LateTime, Draw)>,
    exactly: bool,
) -> Result<(), TestCaseError> {
    let mut agg = aggregator(shapes, scenario.top_k);
    let mut out = Vec::new();
    let mut accepted: Vec<Listen> = Vec::new();
    let mut refused = 0u64;
    let mut max_seen = i64::MIN;
    let mut late_after: BTreeMap<usize, Vec<(LateTime, Listen)>> = BTreeMap::new();
    for (index, when, draw) in late {
        late_after
            .entry(index.index(scenario.delivery.len()))
            .or_default()
            .push((when, draw.listen));
    }
    for (position, listen) in scenario.delivery.iter().enumerate() {
        let stream = listen.stream(&mut agg);
        prop_assert!(agg.insert(stream).is_ok(), "refused on-time {:?}", listen);
        accepted.push(listen.clone());
        max_seen = max_seen.max(listen.time_ms);
        let watermark = max_seen - scenario.lateness_ms;
        agg.advance(watermark, &mut out);

        for (when, template) in late_after.remove(&position).unwrap_or_default() {
            let mut listen = template;
            listen.time_ms = when.time_ms(watermark);
            // The earliest-ending window holding it: the first slide boundary after it.
            let first_end = shapes
                .iter()
                .map(|s| (listen.time_ms.div_euclid(s.slide_ms) + 1) * s.slide_ms)
                .min()
                .unwrap();
            let in_emitted_window = first_end <= watermark;
            let stream = listen.stream(&mut agg);
            match agg.insert(stream) {
                Ok(()) => {
                    prop_assert!(
                        !in_emitted_window,
                        "accepted {:?} at watermark {}",
                        listen,
                        watermark
                    );
                    accepted.push(listen);
                }
                Err(late) => {
                    prop_assert!(
                        in_emitted_window || !exactly,
                        "refused {:?} at watermark {}",
                        listen,
                        watermark
                    );
                    prop_assert_eq!(late.time_ms, listen.time_ms);
                    prop_assert_eq!(late.closed_through_ms, watermark);
                    refused += 1;
                }
            }
            prop_assert_eq!(agg.late_events(), refused);
        }
    }
    agg.flush(&mut out);
    prop_assert_eq!(agg.late_events(), refused);
    check_windows(&out, &naive_windows(shapes, scenario.top_k, &accepted))?;
    prop_assert_eq!(agg.live_panes(), 0);
    prop_assert_eq!(
        agg.interned_songs(),
        0,
        "names of refused listens are forgotten"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Default configuration (tumbling 1 min, sliding 10 min every minute), top 10 or fewer.
    #[test]
    fn aggregator_matches_naive_windows(scenario in scenario_strategy(200)) {
        run_on_time(&DEFAULT_SHAPES, &scenario)?;
    }

    /// Panes past a small song budget: song counts within their bound,
    /// everything else exact; names released as panes are reduced and freed.
    #[test]
    fn song_counts_beyond_the_budget_keep_their_bound(
        scenario in scenario_strategy(200),
        budget_songs in 1usize..8,
    ) {
        let mut scenario = scenario;
        scenario.delivery.sort_by_key(|listen| listen.time_ms);
        run_within_budget(&scenario, budget_songs * 110)?;
    }

    /// A budget the panes never reach changes nothing: the same windows as
    /// the oracle, with no bound.
    #[test]
    fn a_budget_not_reached_is_exact(scenario in scenario_strategy(200)) {
        let mut scenario = scenario;
        scenario.delivery.sort_by_key(|listen| listen.time_ms);
        run_within_budget(&scenario, 1 << 20)?;
        let mut agg = aggregator_with_budget(&DEFAULT_SHAPES, scenario.top_k, 1 << 20);
        let mut out = Vec::new();
        for listen in &scenario.delivery {
            let stream = listen.stream(&mut agg);
            prop_assert!(agg.insert(stream).is_ok());
        }
        agg.flush(&mut out);
        prop_assert!(out.iter().all(|w| w.top_songs_max_undercount == 0));
        prop_assert_eq!(agg.song_reductions(), 0);
        check_windows(&out, &naive_windows(&DEFAULT_SHAPES, scenario.top_k, &scenario.delivery))?;
    }

    /// Other window sets: panes are the gcd of widths and slides.
    #[test]
    fn aggregator_matches_naive_windows_for_other_shapes(
        shapes in prop::sample::select(SHAPE_SETS.to_vec()),
        scenario in scenario_strategy(150),
    ) {
        run_on_time(shapes, &scenario)?;
    }

    /// Listens behind the watermark (default windows): refused exactly when a
    /// window holding them was emitted, counted, and absent from every window.
    #[test]
    fn late_listens_are_refused_and_change_nothing(
        scenario in scenario_strategy(150),
        late in late_strategy(),
    ) {
        run_with_late(&DEFAULT_SHAPES, &scenario, late, true)?;
    }

    /// Other window sets: a listen landing in an emitted window is always refused.
    #[test]
    fn late_listens_never_reach_emitted_windows(
        shapes in prop::sample::select(SHAPE_SETS.to_vec()),
        scenario in scenario_strategy(150),
        late in late_strategy(),
    ) {
        run_with_late(shapes, &scenario, late, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Three hours with a steadily advancing watermark: the aggregator holds
    /// exactly the panes some open window still needs (at most 11 with 10 s of
    /// lateness) and the names only those panes count.
    #[test]
    fn panes_and_names_follow_the_open_windows(
        gaps_ms in prop::collection::vec((0i64..10).prop_map(|s| s * 1_000), 1_000..2_000),
        delays_ms in prop::collection::vec(0i64..=10_000, 2_000),
        song_seeds in prop::collection::vec(0i64..5, 2_000),
    ) {
        const LATENESS_MS: i64 = 10_000;
        // Minute-aligned whole seconds: the watermark often lands on a window end.
        let mut time_ms = BASE_MS - BASE_MS.rem_euclid(MINUTE_MS);
        let mut keyed: Vec<(i64, i64, String)> = Vec::new();
        for (i, gap) in gaps_ms.iter().enumerate() {
            time_ms += gap;
            // Song names churn: each is current for a few minutes only.
            let song = format!("song {}", time_ms / 90_000 + song_seeds[i]);
            keyed.push((time_ms + delays_ms[i], time_ms, song));
        }
        keyed.sort_by_key(|(arrival, _, _)| *arrival);

        let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        let mut out = Vec::new();
        let mut max_seen = i64::MIN;
        // Model: minute -> songs counted in it, kept while an open window holds it.
        let mut model: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        let mut most_panes = 0;
        for (_, time_ms, song) in &keyed {
            let stream = Play {
                time_ms: *time_ms,
                user_hash: user_hash(b"someone"),
                song: agg.intern("artist", song),
                dims: Dimensions::default(),
                duration_ms: None,
            };
            prop_assert!(agg.insert(stream).is_ok());
            model
                .entry(time_ms.div_euclid(MINUTE_MS) * MINUTE_MS)
                .or_default()
                .insert(song.clone());
            max_seen = max_seen.max(*time_ms);
            let watermark = max_seen - LATENESS_MS;
            agg.advance(watermark, &mut out);
            // The last window holding minute m is the sliding one ending at m + 10 min.
            model.retain(|minute, _| minute + TEN_MINUTES_MS > watermark);

            let names: BTreeSet<&String> = model.values().flatten().collect();
            prop_assert_eq!(agg.live_panes(), model.len(), "at watermark {}", watermark);
            prop_assert_eq!(agg.interned_songs(), names.len(), "at watermark {}", watermark);
            prop_assert!(agg.live_panes() <= 11, "{} panes at watermark {}", agg.live_panes(), watermark);
            most_panes = most_panes.max(agg.live_panes());
        }
        prop_assert!(most_panes >= 10, "the run never filled a sliding window");
        agg.flush(&mut out);
        prop_assert_eq!(agg.live_panes(), 0);
        prop_assert_eq!(agg.interned_songs(), 0);
        let streams: u64 = out.iter().filter(|w| w.window.name() == "tumbling").map(|w| w.streams).sum();
        prop_assert_eq!(streams, keyed.len() as u64, "every listen in exactly one minute");
    }
}

/// `DistinctUsers` holding users `ids`.
fn users(ids: std::ops::Range<u64>) -> DistinctUsers {
    let mut users = DistinctUsers::default();
    for id in ids {
        users.insert(user_hash(&id.to_le_bytes()));
    }
    users
}

/// Estimate within 2% of `exact`; equal to it up to 2048 users.
fn assert_close(estimate: u64, exact: u64, what: &str) {
    if exact <= 2048 {
        assert_eq!(estimate, exact, "{what}: small sets are exact");
    } else {
        let error = (estimate as f64 - exact as f64).abs() / exact as f64;
        assert!(
            error < 0.02,
            "{what}: estimate {estimate}, exact {exact}, error {:.3}%",
            error * 100.0
        );
    }
}

#[test]
fn distinct_users_within_two_percent() {
    for n in [
        0u64, 1, 2, 100, 2_047, 2_048, 2_049, 2_100, 10_000, 100_000, 163_840, 1_000_000,
        10_000_000,
    ] {
        let mut counted = users(0..n);
        assert_close(counted.count(), n, &format!("{n} users"));
        // Seeing everyone again changes nothing.
        for id in 0..n.min(5_000) {
            counted.insert(user_hash(&id.to_le_bytes()));
        }
        assert_close(counted.count(), n, &format!("{n} users, repeated"));
    }
}

/// Union of half-open ranges, counted exactly.
fn union_len(ranges: &[std::ops::Range<u64>]) -> u64 {
    let mut sorted: Vec<_> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut total = 0;
    let mut covered_to = 0;
    for r in sorted {
        let start = r.start.max(covered_to);
        if r.end > start {
            total += r.end - start;
        }
        covered_to = covered_to.max(r.end);
    }
    total
}

/// Merge 10 consecutive panes the way a sliding window does (clone the first,
/// merge the rest), for every window over `panes`.
fn check_sliding_merges(ranges: &[std::ops::Range<u64>], what: &str) {
    let panes: Vec<DistinctUsers> = ranges.iter().map(|r| users(r.clone())).collect();
    for (pane, range) in panes.iter().zip(ranges) {
        assert_close(pane.count(), range.end - range.start, what);
    }
    for first in 0..ranges.len().saturating_sub(9) {
        let mut window = panes[first].clone();
        for pane in &panes[first + 1..first + 10] {
            window.merge(pane);
        }
        let exact = union_len(&ranges[first..first + 10]);
        assert_close(window.count(), exact, &format!("{what}, window {first}"));
    }
}

#[test]
fn sliding_merges_stay_within_two_percent() {
    // Heavy overlap, every pane a sketch.
    let ranges: Vec<_> = (0..20u64)
        .map(|p| p * 20_000..p * 20_000 + 50_000)
        .collect();
    check_sliding_merges(&ranges, "sketch panes");
    // Exact and sketch panes alternate.
    let ranges: Vec<_> = (0..20u64)
        .map(|p| {
            let size = if p % 2 == 0 { 1_500 } else { 40_000 };
            p * 10_000..p * 10_000 + size
        })
        .collect();
    check_sliding_merges(&ranges, "mixed panes");
    // Exact panes whose union crosses the exact limit while merging.
    let ranges: Vec<_> = (0..20u64).map(|p| p * 250..p * 250 + 300).collect();
    check_sliding_merges(&ranges, "small panes");
    // Exact panes whose union stays exact.
    let ranges: Vec<_> = (0..20u64).map(|p| p * 50..p * 50 + 100).collect();
    check_sliding_merges(&ranges, "tiny panes");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Random overlapping panes: a window merged from them is within 2% of the union.
    #[test]
    fn random_pane_merges_stay_within_two_percent(
        panes in prop::collection::vec((0u64..100_000, 0u64..8_000), 10..13),
    ) {
        let ranges: Vec<_> = panes.iter().map(|&(start, len)| start..start + len).collect();
        check_sliding_merges(&ranges, &format!("{ranges:?}"));
    }
}

/// The aggregator's own windows: exact minutes, sketched ten-minute windows.
#[test]
fn aggregator_counts_many_users_within_two_percent() {
    let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
    let song = agg.intern("artist", "song");
    let minute_users = |m: u64| m * 700..m * 700 + 1_500;
    for m in 0..15u64 {
        for id in minute_users(m) {
            let stream = Play {
                time_ms: m as i64 * MINUTE_MS + (id % 60) as i64 * 1_000,
                user_hash: user_hash(format!("user-{id}").as_bytes()),
                song,
                dims: Dimensions::default(),
                duration_ms: None,
            };
            agg.insert(stream).unwrap();
        }
    }
    let mut out = Vec::new();
    agg.flush(&mut out);
    assert_eq!(out.len(), 15 + 24);
    for w in &out {
        let first = (w.start_ms.max(0) / MINUTE_MS) as u64;
        let last = ((w.end_ms / MINUTE_MS) as u64).min(15);
        let ranges: Vec<_> = (first..last).map(minute_users).collect();
        assert_eq!(w.streams, 1_500 * ranges.len() as u64);
        assert_close(
            w.active_users,
            union_len(&ranges),
            &format!("{} window ending {}", w.window.name(), w.end_ms),
        );
    }
}

/// The additive fields of a window, summed over the records emitted for it.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    streams: u64,
    active_users: u64,
    breakdown: BTreeMap<String, u64>,
    listening_count: u64,
    listening_sum_ms: u64,
}

impl Totals {
    fn add(&mut self, exact: &Exact) {
        self.streams += exact.streams;
        self.active_users += exact.active_users;
        for (dimension, counts) in exact.breakdown.as_object().unwrap() {
            for (label, n) in counts.as_object().unwrap() {
                *self
                    .breakdown
                    .entry(format!("{dimension}/{label}"))
                    .or_insert(0) += n.as_u64().unwrap();
            }
        }
        self.listening_count += exact.listening_count;
        self.listening_sum_ms += exact.listening_sum_ms;
    }
}

fn totals<'a>(windows: impl Iterator<Item = &'a Exact>) -> BTreeMap<(&'static str, i64), Totals> {
    let mut sums: BTreeMap<(&'static str, i64), Totals> = BTreeMap::new();
    for exact in windows {
        sums.entry((exact.window, exact.end_ms))
            .or_default()
            .add(exact);
    }
    sums
}

/// Three sources (users split by hash, as a topic keyed by user), two
/// replicas: A holds sources 0 and 1, B holds 2. At `hand_over_at`, source 1
/// moves from A to B, which rebuilds its panes from the listens so far and
/// may have closed more or fewer windows than A. Each replica closes windows
/// at the minimum watermark of the sources it holds; B also lets source 1
/// catch up by its own watermark. Summing every record of a window over
/// both replicas must give the naive totals.
fn run_with_hand_over(scenario: &Scenario, hand_over_at: usize) -> Result<(), TestCaseError> {
    let source_of = |listen: &Listen| (user_hash(listen.user.as_bytes()) % 3) as u32;
    let mut a = aggregator(&DEFAULT_SHAPES, scenario.top_k);
    let mut b = aggregator(&DEFAULT_SHAPES, scenario.top_k);
    a.add_source(0, i64::MIN);
    a.add_source(1, i64::MIN);
    b.add_source(2, i64::MIN);
    let mut owned_by_b = vec![2u32];
    let mut out = Vec::new();
    let mut max_seen: HashMap<u32, i64> = HashMap::new();
    let watermark = |max_seen: &HashMap<u32, i64>, owned: &[u32]| {
        owned
            .iter()
            .filter_map(|s| max_seen.get(s))
            .min()
            .map(|max| max - scenario.lateness_ms)
    };
    for (i, listen) in scenario.delivery.iter().enumerate() {
        if i == hand_over_at {
            let emitted = a.emitted_through(1);
            a.remove_source(1);
            b.add_source(1, emitted);
            for earlier in scenario.delivery[..i].iter().filter(|l| source_of(l) == 1) {
                let stream = earlier.stream(&mut b);
                b.restore_from(1, stream);
            }
            owned_by_b.push(1);
        }
        let source = source_of(listen);
        let replica = if owned_by_b.contains(&source) {
            &mut b
        } else {
            &mut a
        };
        let stream = listen.stream(replica);
        let inserted = replica.insert_from(source, stream);
        prop_assert!(
            inserted.is_ok(),
            "refused on-time {:?} from source {}",
            listen,
            source
        );
        let max = max_seen.entry(source).or_insert(i64::MIN);
        *max = (*max).max(listen.time_ms);
        if owned_by_b.contains(&1) {
            if let Some(wm) = max_seen.get(&1).map(|m| m - scenario.lateness_ms) {
                b.catch_up(1, wm, &mut out);
            }
        }
        let owned_by_a: Vec<u32> = [0u32, 1]
            .into_iter()
            .filter(|s| !owned_by_b.contains(s))
            .collect();
        if let Some(wm) = watermark(&max_seen, &owned_by_a) {
            a.advance(wm, &mut out);
        }
        if let Some(wm) = watermark(&max_seen, &owned_by_b) {
            b.advance(wm, &mut out);
        }
    }
    a.flush(&mut out);
    b.flush(&mut out);
    let got_exact: Vec<Exact> = out.iter().map(exact_view).collect();
    let want = naive_windows(&DEFAULT_SHAPES, scenario.top_k, &scenario.delivery);
    prop_assert_eq!(
        totals(got_exact.iter()),
        totals(want.iter().map(|w| &w.exact)),
        "records summed per window over both replicas"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A partition handed from one replica to another, ahead or behind:
    /// nothing lost, nothing counted twice.
    #[test]
    fn a_hand_over_between_replicas_keeps_every_window_total(
        scenario in scenario_strategy(200),
        hand_over in any::<Index>(),
    ) {
        let at = hand_over.index(scenario.delivery.len() + 1);
        run_with_hand_over(&scenario, at)?;
    }
}

//! Which streams forecast: the engine's (a seasonal profile with an EWMA
//! level) against the candidates it was chosen over, on the built-in
//! generator's `--diurnal` traffic.
//!
//! Days of events from `generate --diurnal` (Monday 2023-11-13 on, UTC) are
//! counted per minute (NextSong lines: the engine's `streams`). Every method
//! forecasts each minute one minute ahead; scored from the third day on:
//! - `seasonal_naive`: the same minute the day before;
//! - `trailing_mean_60`: the mean of the previous 60 minutes;
//! - `holt_winters`: ETS(M,N,M), a level and a daily multiplicative season,
//!   started from the first day (the best of a small grid of smoothing
//!   weights, chosen on the scored days themselves: flattering it);
//! - `engine`: [`downbeat_operators::Forecaster`] with the default
//!   `[forecast]` settings, and the coverage of its 95% band.
//!
//! Printed as JSON lines: MAPE per method over the third day, over all
//! scored days, over weekend days; the engine's band coverage (one minute,
//! 5, 15 and 60 minutes ahead); and the cost of one close.
//!
//! `cargo bench -p downbeat-benches --bench forecast` (14 days at 50
//! events/s; `DOWNBEAT_BENCH_FORECAST_DAYS`, `DOWNBEAT_BENCH_FORECAST_RATE`).

use std::collections::HashMap;
use std::time::Instant;

use downbeat::source::diurnal::{Diurnal, EventClock};
use downbeat::source::generator::{Generator, GeneratorConfig};
use downbeat_operators::{ForecastConfig, Forecaster};

/// 2023-11-13 00:00 UTC, a Monday.
const MONDAY_MS: i64 = 1_699_833_600_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: usize = 1440;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a small case.
    let quick = !std::env::args().any(|a| a == "--bench");
    let days: usize = env_or("DOWNBEAT_BENCH_FORECAST_DAYS", if quick { 3 } else { 14 });
    let rate: f64 = env_or(
        "DOWNBEAT_BENCH_FORECAST_RATE",
        if quick { 5.0 } else { 50.0 },
    );
    let streams = streams_per_minute(days, rate, 7);
    let scored = 2 * DAY_MINUTES..streams.len();
    let third_day = 2 * DAY_MINUTES..(3 * DAY_MINUTES).min(streams.len());
    let weekend: Vec<usize> = scored
        .clone()
        .filter(|&m| matches!((m / DAY_MINUTES) % 7, 5 | 6))
        .collect();

    let engine = engine_forecasts(&streams);
    let mut methods: Vec<(&str, Vec<f64>)> = vec![
        ("seasonal_naive", seasonal_naive(&streams)),
        ("trailing_mean_60", trailing_mean(&streams, 60)),
        ("holt_winters", best_holt_winters(&streams, scored.clone())),
        ("engine", engine.one_ahead.clone()),
    ];
    for (name, forecasts) in methods.drain(..) {
        let line = serde_json::json!({
            "method": name,
            "days": days,
            "rate_per_sec": rate,
            "mape_day3": mape(&streams, &forecasts, third_day.clone()),
            "mape_scored_days": mape(&streams, &forecasts, scored.clone()),
            "mape_weekend_days": mape(&streams, &forecasts, weekend.iter().copied()),
        });
        println!("{line}");
    }
    let coverage = serde_json::json!({
        "engine_band_coverage": {
            "one_minute_day3": engine.coverage(0, third_day.clone()),
            "one_minute_scored_days": engine.coverage(0, scored.clone()),
            "5m": engine.coverage(5, scored.clone()),
            "15m": engine.coverage(15, scored.clone()),
            "60m": engine.coverage(60, scored.clone()),
        },
        "engine_nanos_per_close": engine.nanos_per_close,
        "engine_state_json_bytes": engine.state_json_bytes,
    });
    println!("{coverage}");
}

/// NextSong lines per minute of `days` generated days at `rate` events/s.
fn streams_per_minute(days: usize, rate: f64, seed: u64) -> Vec<u64> {
    let config = GeneratorConfig {
        seed,
        diurnal: true,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::for_rate(&config, rate);
    let count = (rate * 86_400.0 * days as f64) as u64;
    let mut clock =
        EventClock::diurnal(Diurnal::new(seed), rate, count, Some(MONDAY_MS), 0).expect("in range");
    let mut per_minute = vec![0u64; days * DAY_MINUTES];
    let mut line = Vec::with_capacity(1024);
    let finder = memchr::memmem::Finder::new(b"\"page\":\"NextSong\"");
    for _ in 0..count {
        let ts = clock.next_ms();
        generator.set_activity(clock.activity(ts));
        line.clear();
        generator.write_event(ts, &mut line);
        let minute = ((ts - MONDAY_MS) / MINUTE_MS) as usize;
        if minute < per_minute.len() && finder.find(&line).is_some() {
            per_minute[minute] += 1;
        }
    }
    per_minute
}

fn mape(actual: &[u64], forecast: &[f64], minutes: impl Iterator<Item = usize>) -> f64 {
    let (sum, n) = minutes
        .filter(|&m| actual[m] > 0 && forecast[m].is_finite())
        .fold((0.0, 0u64), |(s, n), m| {
            (
                s + (forecast[m] - actual[m] as f64).abs() / actual[m] as f64,
                n + 1,
            )
        });
    sum / n.max(1) as f64
}

fn seasonal_naive(streams: &[u64]) -> Vec<f64> {
    (0..streams.len())
        .map(|m| {
            m.checked_sub(DAY_MINUTES)
                .map_or(f64::NAN, |d| streams[d] as f64)
        })
        .collect()
}

fn trailing_mean(streams: &[u64], window: usize) -> Vec<f64> {
    (0..streams.len())
        .map(|m| {
            let from = m.saturating_sub(window);
            if m == from {
                return f64::NAN;
            }
            streams[from..m].iter().sum::<u64>() as f64 / (m - from) as f64
        })
        .collect()
}

/// ETS(M,N,M) with a daily season, started from day one's mean and ratios.
fn holt_winters(streams: &[u64], alpha: f64, gamma: f64) -> Vec<f64> {
    let first_day = &streams[..DAY_MINUTES];
    let mut level = first_day.iter().sum::<u64>() as f64 / DAY_MINUTES as f64;
    let mut season: Vec<f64> = first_day.iter().map(|&n| n as f64 / level).collect();
    let mut out = vec![f64::NAN; streams.len()];
    for m in DAY_MINUTES..streams.len() {
        let slot = m % DAY_MINUTES;
        out[m] = level * season[slot];
        let actual = streams[m] as f64;
        let new_level = alpha * actual / season[slot] + (1.0 - alpha) * level;
        season[slot] = gamma * actual / new_level + (1.0 - gamma) * season[slot];
        level = new_level;
    }
    out
}

fn best_holt_winters(streams: &[u64], scored: std::ops::Range<usize>) -> Vec<f64> {
    let mut best: Option<(f64, Vec<f64>)> = None;
    for alpha in [0.02, 0.05, 0.1, 0.2, 0.4] {
        for gamma in [0.05, 0.1, 0.2, 0.4] {
            let forecasts = holt_winters(streams, alpha, gamma);
            let error = mape(streams, &forecasts, scored.clone());
            if best.as_ref().is_none_or(|(e, _)| error < *e) {
                best = Some((error, forecasts));
            }
        }
    }
    best.expect("a grid").1
}

/// The engine's forecasts: one minute ahead (NaN while warming up), and
/// whether each horizon's band held the actual, per target minute.
struct EngineForecasts {
    one_ahead: Vec<f64>,
    /// horizon minutes (0: one window) -> target minute -> covered.
    covered: HashMap<u32, HashMap<usize, bool>>,
    nanos_per_close: f64,
    /// The checkpointed state, as JSON.
    state_json_bytes: usize,
}

impl EngineForecasts {
    fn coverage(&self, horizon: u32, minutes: impl Iterator<Item = usize>) -> f64 {
        let by_minute = &self.covered[&horizon];
        let (hit, n) = minutes
            .filter_map(|m| by_minute.get(&m))
            .fold((0u64, 0u64), |(h, n), &c| (h + u64::from(c), n + 1));
        hit as f64 / n.max(1) as f64
    }
}

fn engine_forecasts(streams: &[u64]) -> EngineForecasts {
    // `DOWNBEAT_BENCH_FORECAST_CONFIG`: a `[forecast]` section as JSON, to try settings.
    let config: ForecastConfig = std::env::var("DOWNBEAT_BENCH_FORECAST_CONFIG")
        .ok()
        .map(|json| serde_json::from_str(&json).expect("a [forecast] section as JSON"))
        .unwrap_or_default();
    let mut forecaster = Forecaster::new(config, MINUTE_MS).expect("valid");
    let mut one_ahead = vec![f64::NAN; streams.len()];
    let mut bands: HashMap<u32, HashMap<usize, downbeat_operators::Band>> = HashMap::new();
    let started = Instant::now();
    for (m, &n) in streams.iter().enumerate() {
        if let Some(band) = forecaster.observe(MONDAY_MS + m as i64 * MINUTE_MS, n) {
            one_ahead[m] = band.streams;
        }
        for ahead in forecaster.ahead() {
            let target = ((ahead.start_ms - MONDAY_MS) / MINUTE_MS) as usize;
            bands
                .entry(ahead.horizon_minutes)
                .or_default()
                .insert(target, ahead.band);
        }
    }
    let nanos_per_close = started.elapsed().as_nanos() as f64 / streams.len() as f64;
    let state_json_bytes = serde_json::to_vec(forecaster.state())
        .expect("serializes")
        .len();
    let covered = bands
        .into_iter()
        .map(|(horizon, by_target)| {
            let hits = by_target
                .into_iter()
                .filter(|&(m, _)| m < streams.len())
                .map(|(m, band)| (m, band.covers(streams[m] as f64)))
                .collect();
            (horizon, hits)
        })
        .collect();
    EngineForecasts {
        one_ahead,
        covered,
        nanos_per_close,
        state_json_bytes,
    }
}

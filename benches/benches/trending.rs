//! How well the trend detector separates a spike from ordinary traffic, on
//! the built-in generator's events through the whole pipeline (decode,
//! windows, detector), with the default `[trending]` settings.
//!
//! For each rate: hours of steady traffic, then a spike of one song for ten
//! minutes at a given share of all events. Reported per run:
//! - `false_song_windows_per_hour`: songs reported trending outside the spike
//!   (after the warm-up), per hour of event time;
//! - `detected_after_windows`: closed windows from the spike's start to the
//!   first window that reports the spike song (1 = its first minute);
//! - `alert_windows`: spike windows where the `DownbeatSongViral` condition
//!   (ratio >= 5 and >= 50 streams) holds; the alert needs 3 in a row
//!   (`for: 2m` at one evaluation per minute);
//! - `peak_ratio`: the spike song's largest ratio.
//!
//! `cargo bench -p downbeat-benches --bench trending`

use downbeat::config::Config;
use downbeat::lines::Chunk;
use downbeat::metrics::Metrics;
use downbeat::pipeline::Pipeline;
use downbeat::source::generator::Generator;
use downbeat::source::spike::SpikeConfig;
use std::collections::HashMap;

use downbeat_operators::trending::PREDICT_HORIZON_MS;
use downbeat_operators::{Trending, TrendingSong, WindowKind, WindowResult};

const START_MS: i64 = 1_700_000_040_000;
const MINUTE_MS: i64 = 60_000;
const SPIKE_SONG: &str = "Viral Hit";

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a small case.
    let quick = !std::env::args().any(|a| a == "--bench");
    let cases: &[(f64, u64, f64)] = if quick {
        &[(50.0, 30, 0.02)]
    } else {
        // (events/s, minutes before the spike, spike share)
        &[
            (100.0, 360, 0.01),
            (500.0, 360, 0.002),
            (500.0, 360, 0.01),
            // A song that tops the chart: 5% of all events.
            (500.0, 360, 0.05),
            (2_000.0, 180, 0.001),
            (2_000.0, 180, 0.005),
        ]
    };
    for &(rate, minutes, share) in cases {
        run_case(rate, minutes, share);
    }
}

fn run_case(rate: f64, steady_minutes: u64, share: f64) {
    let spike_minutes = 10;
    let mut config = Config::default();
    if let Some(min_z) = std::env::var("DOWNBEAT_BENCH_MIN_Z")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.trending.min_z = min_z;
    }
    config.generator.spike = Some(SpikeConfig {
        song: SPIKE_SONG.to_owned(),
        artist: Some("Nobody".to_owned()),
        start_ms: Some(START_MS + steady_minutes as i64 * MINUTE_MS),
        after_secs: 0,
        duration_secs: spike_minutes * 60,
        share,
    });
    let mut generator = Generator::for_rate(&config.generator, rate);
    let metrics = Metrics::new();
    // A quarter hour after the spike: the charts its closes predicted.
    let end_ms = START_MS + (steady_minutes + spike_minutes + 15) as i64 * MINUTE_MS;
    let mut pipeline = Pipeline::new(config.pipeline().unwrap(), &metrics, None, end_ms).unwrap();
    let step_ms = 1000.0 / rate;
    let events = ((end_ms - START_MS) as f64 / step_ms) as u64;
    let mut scored: Vec<Trending> = Vec::new();
    let mut closed = Vec::new();
    let mut charts: HashMap<i64, Vec<String>> = HashMap::new();
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while i < events {
        chunk.clear();
        for _ in 0..10_000.min(events - i) {
            generator.write_event(START_MS + (i as f64 * step_ms) as i64, &mut chunk);
            chunk.push(b'\n');
            i += 1;
        }
        let lines = Chunk::owned(std::mem::take(&mut chunk), false);
        for span in lines.spans() {
            pipeline.process_line(lines.line(span));
            pipeline.take_closed(&mut closed);
            keep_charts(&mut closed, &mut charts);
            scored.extend(pipeline.take_trending());
        }
    }
    pipeline.finish();
    pipeline.take_closed(&mut closed);
    keep_charts(&mut closed, &mut charts);
    scored.extend(pipeline.take_trending());
    report(rate, steady_minutes, share, spike_minutes, &scored, &charts);
}

/// The 10-minute leaderboard (the sliding window's top songs) by window end.
fn keep_charts(closed: &mut Vec<WindowResult>, charts: &mut HashMap<i64, Vec<String>>) {
    for window in closed.drain(..) {
        if window.window == WindowKind::Sliding {
            let songs = window
                .top_songs
                .iter()
                .map(|s| format!("{}\u{1f}{}", s.artist, s.song));
            charts.insert(window.end_ms, songs.collect());
        }
    }
}

/// Mean share of the next 10 minutes' top 10 that each predictor named at
/// each close: the detector's predicted chart, and the current 10-minute
/// top 10; over every close after the warm-up, and over the closes from
/// two minutes before the spike to ten minutes after it (when the current
/// chart still holds it).
fn chart_overlap(
    scored: &[Trending],
    charts: &HashMap<i64, Vec<String>>,
    spike: std::ops::Range<i64>,
) -> serde_json::Value {
    let (mut all, mut during) = ([0.0; 2], [0.0; 2]);
    let (mut n_all, mut n_during) = (0u32, 0u32);
    for t in scored.iter().filter(|t| !t.warming_up) {
        let end = t.window_end_ms;
        let (Some(now), Some(next)) = (charts.get(&end), charts.get(&(end + PREDICT_HORIZON_MS)))
        else {
            continue;
        };
        let predicted: Vec<String> = t
            .predicted_songs
            .iter()
            .map(|s| format!("{}\u{1f}{}", s.artist, s.song))
            .collect();
        let share = |named: &[String]| {
            named.iter().filter(|s| next.contains(s)).count() as f64 / next.len().max(1) as f64
        };
        let shares = [share(&predicted), share(now)];
        for i in 0..2 {
            all[i] += shares[i];
        }
        n_all += 1;
        if end > spike.start - 2 * MINUTE_MS && end <= spike.end + 10 * MINUTE_MS {
            for i in 0..2 {
                during[i] += shares[i];
            }
            n_during += 1;
        }
    }
    let mean = |sum: f64, n: u32| (sum / f64::from(n.max(1)) * 1000.0).round() / 1000.0;
    serde_json::json!({
        "closes": n_all,
        "predicted": mean(all[0], n_all),
        "current_top_10": mean(all[1], n_all),
        "spike_closes": n_during,
        "predicted_during_spike": mean(during[0], n_during),
        "current_top_10_during_spike": mean(during[1], n_during),
    })
}

fn report(
    rate: f64,
    steady_minutes: u64,
    share: f64,
    spike_minutes: u64,
    scored: &[Trending],
    charts: &HashMap<i64, Vec<String>>,
) {
    let spike_start = START_MS + steady_minutes as i64 * MINUTE_MS;
    let spike_end = spike_start + spike_minutes as i64 * MINUTE_MS;
    let in_spike = |t: &Trending| t.window_start_ms >= spike_start && t.window_end_ms <= spike_end;
    let warm: Vec<&Trending> = scored.iter().filter(|t| !t.warming_up).collect();
    // Songs reported outside the spike (anything but the spike song during it).
    let false_songs: Vec<&TrendingSong> = warm
        .iter()
        .flat_map(|t| {
            t.songs
                .iter()
                .filter(move |s| !(in_spike(t) && s.song == SPIKE_SONG))
        })
        .collect();
    let false_song_windows = false_songs.len();
    let false_alert_windows = false_songs
        .iter()
        .filter(|s| s.ratio >= 5.0 && s.streams >= 50)
        .count();
    let steady_hours = warm.iter().filter(|t| !in_spike(t)).count() as f64 / 60.0;
    let spike: Vec<&Trending> = warm.iter().copied().filter(|t| in_spike(t)).collect();
    let hit = |t: &Trending| t.songs.iter().find(|s| s.song == SPIKE_SONG).cloned();
    let detected_after = spike.iter().position(|t| hit(t).is_some()).map(|i| i + 1);
    let alert_windows = spike
        .iter()
        .filter(|t| hit(t).is_some_and(|s| s.ratio >= 5.0 && s.streams >= 50))
        .count();
    let peak_ratio = spike
        .iter()
        .filter_map(|t| hit(t).map(|s| s.ratio))
        .fold(0.0, f64::max);
    let report = serde_json::json!({
        "bench": "trending",
        "events_per_sec": rate,
        "spike_share": share,
        "spike_streams_per_min": (rate * 60.0 * share).round(),
        "steady_hours": steady_hours,
        "false_song_windows_per_hour": false_song_windows as f64 / steady_hours.max(1e-9),
        "false_alert_windows": false_alert_windows,
        "spike_windows": spike.len(),
        "detected_after_windows": detected_after,
        "alert_windows": alert_windows,
        "peak_ratio": (peak_ratio * 10.0).round() / 10.0,
        "next_10min_top_10_overlap": chart_overlap(scored, charts, spike_start..spike_end),
    });
    println!("{report}");
}

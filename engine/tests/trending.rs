//! Trending end to end: `generate` injects a spike of one song at a chosen
//! time, `run` reads the events from a file, and the spike (and only the
//! spike) shows in `/api/v1/trending` and in the rank-labelled series; an
//! artist whose ten songs each stay below the song threshold trends as an
//! artist.

mod common;

use common::{downbeat, get, stdout_of, wait_until};

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Minute-aligned start of the generated events.
const START_MS: i64 = 1_764_399_960_000;
const MINUTE_MS: i64 = 60_000;
/// 30 minutes of events at 200 per second.
const RATE: u64 = 200;
const MINUTES: i64 = 30;
/// The spike covers minutes 26 to 29.
const SPIKE_AFTER_MINUTES: i64 = 26;

/// `run --input FILE`, then wait until the last tumbling window was scored.
fn trending_after(input: &Path, last_end_ms: i64) -> (Value, String) {
    let input = input.to_str().unwrap();
    let engine = common::start_run(&["--idle-timeout-ms", "300", "--input", input]);
    let mut trending = Value::Null;
    wait_until(Duration::from_secs(60), "the last window scored", || {
        let Ok((200, body)) = get(engine.port, "/api/v1/trending") else {
            return false;
        };
        trending = serde_json::from_str(&body).expect("/api/v1/trending is JSON");
        trending["window_end_ms"] == last_end_ms
    });
    let (status, metrics) = get(engine.port, "/metrics").unwrap();
    assert_eq!(status, 200);
    (trending, metrics)
}

fn generate(spike: bool) -> Vec<u8> {
    let mut command = downbeat();
    command.args(["generate", "--seed", "3", "--rate", &RATE.to_string()]);
    command.args(["--count", &(RATE * 60 * MINUTES as u64).to_string()]);
    command.args(["--start-ms", &START_MS.to_string()]);
    if spike {
        command.args(["--spike-song", "Viral Hit", "--spike-artist", "Nobody"]);
        command.args([
            "--spike-after-secs",
            &(SPIKE_AFTER_MINUTES * 60).to_string(),
        ]);
        command.args(["--spike-duration-secs", "240", "--spike-share", "0.02"]);
    }
    stdout_of(&mut command)
}

#[test]
fn an_injected_spike_trends_at_rank_one_and_steady_traffic_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(true);

    // The spike is where it was asked for, at about the share asked for.
    let spike_start = START_MS + SPIKE_AFTER_MINUTES * MINUTE_MS;
    let mut in_spike = 0u64;
    for line in events.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let event: Value = serde_json::from_slice(line).unwrap();
        if event["song"] == "Viral Hit" {
            assert_eq!(event["artist"], "Nobody");
            assert_eq!(event["page"], "NextSong");
            let ts = event["ts"].as_i64().unwrap();
            assert!(
                (spike_start..spike_start + 4 * MINUTE_MS).contains(&ts),
                "{ts}"
            );
            in_spike += 1;
        }
    }
    let expected = (RATE * 240) as f64 * 0.02;
    assert!(
        (in_spike as f64 - expected).abs() < expected * 0.2,
        "{in_spike} plays"
    );

    let spiked = dir.path().join("spiked.jsonl");
    std::fs::write(&spiked, &events).unwrap();
    let last_end_ms = START_MS + MINUTES * MINUTE_MS;
    let (trending, metrics) = trending_after(&spiked, last_end_ms);
    assert_eq!(trending["warming_up"], false);
    let songs = trending["songs"].as_array().unwrap();
    assert_eq!(songs.len(), 1, "only the spike trends: {trending}");
    assert_eq!(songs[0]["song"], "Viral Hit");
    assert_eq!(songs[0]["rank"], 1);
    assert!(songs[0]["ratio"].as_f64().unwrap() >= 2.0, "{trending}");
    let ratio_line = metrics
        .lines()
        .find(|l| l.starts_with("downbeat_trending_song_ratio{"))
        .expect("a trending series");
    assert!(
        ratio_line.contains(r#"artist="Nobody""#)
            && ratio_line.contains(r#"rank="1""#)
            && ratio_line.contains(r#"song="Viral Hit""#),
        "{ratio_line}"
    );
    assert!(metrics.contains("downbeat_streams_baseline_ratio{window=\"1m\"}"));
    // Its artist, new to the catalogue, trends too.
    let artists = trending["artists"].as_array().unwrap();
    assert_eq!(artists[0]["artist"], "Nobody", "{trending}");
    assert!(metrics.contains(r#"downbeat_trending_artist_ratio{artist="Nobody",rank="1"}"#));

    // The same traffic without the spike: after the warm-up nothing trends.
    let steady = dir.path().join("steady.jsonl");
    std::fs::write(&steady, generate(false)).unwrap();
    let (trending, metrics) = trending_after(&steady, last_end_ms);
    assert_eq!(trending["warming_up"], false);
    assert_eq!(trending["songs"], Value::Array(Vec::new()), "{trending}");
    let total_ratio = trending["total_ratio"].as_f64().unwrap();
    assert!((0.9..1.1).contains(&total_ratio), "{trending}");
    assert!(!metrics.contains("downbeat_trending_song_ratio{"));
    assert_eq!(trending["artists"], Value::Array(Vec::new()), "{trending}");
    assert!(!metrics.contains("downbeat_trending_artist_ratio{"));
}

/// The steady traffic, with every 64th play of the last four minutes
/// rewritten to one of ten songs by "Rising Band": about 15 plays a minute
/// per song (below the 20 a song needs), about 150 for the artist.
#[test]
fn an_artist_whose_songs_each_stay_below_the_threshold_trends() {
    let dir = tempfile::tempdir().unwrap();
    let spike_start = START_MS + SPIKE_AFTER_MINUTES * MINUTE_MS;
    let mut plays = 0u64;
    let mut per_song_minute = std::collections::HashMap::<(i64, u64), u64>::new();
    let mut out = Vec::new();
    for line in generate(false)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let mut event: Value = serde_json::from_slice(line).unwrap();
        let ts = event["ts"].as_i64().unwrap();
        if event["page"] == "NextSong" && ts >= spike_start {
            plays += 1;
            if plays % 64 == 0 {
                let track = (plays / 64) % 10;
                event["artist"] = "Rising Band".into();
                event["song"] = format!("Track {track}").into();
                *per_song_minute.entry((ts / MINUTE_MS, track)).or_default() += 1;
            }
        }
        serde_json::to_writer(&mut out, &event).unwrap();
        out.push(b'\n');
    }
    let most = per_song_minute.values().max().copied().unwrap();
    assert!(
        (10..20).contains(&most),
        "a song's plays in a minute: {most}"
    );

    let input = dir.path().join("artist-spike.jsonl");
    std::fs::write(&input, out).unwrap();
    let (trending, metrics) = trending_after(&input, START_MS + MINUTES * MINUTE_MS);
    assert_eq!(trending["songs"], Value::Array(Vec::new()), "{trending}");
    let artists = trending["artists"].as_array().unwrap();
    assert_eq!(artists.len(), 1, "{trending}");
    assert_eq!(artists[0]["artist"], "Rising Band");
    assert_eq!(artists[0]["rank"], 1);
    assert!(artists[0]["streams"].as_u64().unwrap() >= 100, "{trending}");
    assert!(metrics.contains(r#"downbeat_trending_artist_ratio{artist="Rising Band",rank="1"}"#));
    assert!(!metrics.contains("downbeat_trending_song_ratio{"));
}

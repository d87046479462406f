//! An injected spike: for a while, a chosen song takes a share of all events.
//!
//! Used to demonstrate and test trending detection and the "song went viral"
//! alert with the built-in generator (`generate`, `run`, `produce`).

use serde::{Deserialize, Serialize};

/// `[generator.spike]`: the generator's events in `[start, start + duration)`
/// are, with probability `share`, a play of this song by a random user.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeConfig {
    /// Title of the song. Without `artist` it must be in the generator's
    /// catalogue (its artist is looked up); with `artist` it may be any song.
    pub song: String,
    /// Artist of the song (default: the catalogue's artist for `song`).
    #[serde(default)]
    pub artist: Option<String>,
    /// Event time the spike starts, epoch ms. Without it the spike starts
    /// `after_secs` after the first generated event.
    #[serde(default)]
    pub start_ms: Option<i64>,
    /// Seconds of event time from the first generated event to the spike
    /// (default 0; ignored when `start_ms` is set).
    #[serde(default)]
    pub after_secs: u64,
    /// How long the spike lasts (default 600).
    #[serde(default = "default_duration_secs")]
    pub duration_secs: u64,
    /// Share of all events that are plays of the song during the spike
    /// (default 0.05).
    #[serde(default = "default_share")]
    pub share: f64,
}

fn default_duration_secs() -> u64 {
    600
}

fn default_share() -> f64 {
    0.05
}

/// Longest accepted spike and furthest accepted `after_secs`: a week.
const MAX_SECS: u64 = 7 * 86_400;

/// Why a [`SpikeConfig`] was refused; each names the field to fix.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpikeError {
    /// `song` is empty: name the song that should spike.
    #[error("generator spike `song` must not be empty")]
    NoSong,
    /// `song` is not in the catalogue and no `artist` was given: pass the
    /// artist too, or pick a title from `downbeat generate` output.
    #[error("generator spike song {0:?} is not in the generator's catalogue: give its artist too")]
    UnknownSong(String),
    /// `duration_secs` or `after_secs` is out of range.
    #[error("generator spike `{field}` must be between {min} and 604800, got {value}")]
    Seconds {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The smallest accepted value.
        min: u64,
    },
    /// `share` must be a probability above 0, at most 1 (e.g. 0.05).
    #[error("generator spike `share` must be above 0 and at most 1, got {0}")]
    Share(f64),
}

impl SpikeConfig {
    /// Checks every field but the catalogue lookup.
    pub fn validate(&self) -> Result<(), SpikeError> {
        if self.song.is_empty() {
            return Err(SpikeError::NoSong);
        }
        for (field, value, min) in [
            ("duration_secs", self.duration_secs, 1),
            ("after_secs", self.after_secs, 0),
        ] {
            if value < min || value > MAX_SECS {
                return Err(SpikeError::Seconds { field, value, min });
            }
        }
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(SpikeError::Share(self.share));
        }
        Ok(())
    }
}

/// A validated spike with its names resolved.
#[derive(Clone, Debug)]
pub struct Spike {
    /// Artist name written into the injected events.
    pub artist: String,
    /// Song title written into the injected events.
    pub song: String,
    start_ms: Option<i64>,
    after_ms: i64,
    duration_ms: i64,
    /// Probability that an event during the spike is a play of the song.
    pub share: f64,
}

impl Spike {
    /// Resolve `config` against the catalogue: `artist_of(title)` gives the
    /// artist of a catalogue song.
    pub fn resolve<'a>(
        config: &SpikeConfig,
        artist_of: impl FnOnce(&str) -> Option<&'a str>,
    ) -> Result<Self, SpikeError> {
        config.validate()?;
        let artist = match &config.artist {
            Some(artist) => artist.clone(),
            None => artist_of(&config.song)
                .ok_or_else(|| SpikeError::UnknownSong(config.song.clone()))?
                .to_owned(),
        };
        Ok(Self {
            artist,
            song: config.song.clone(),
            start_ms: config.start_ms,
            after_ms: (config.after_secs * 1000) as i64,
            duration_ms: (config.duration_secs * 1000) as i64,
            share: config.share,
        })
    }

    /// True when an event at `ts_ms` falls in the spike; `first_ms` is the
    /// time of the first generated event.
    pub fn covers(&self, ts_ms: i64, first_ms: i64) -> bool {
        let start = self.start_ms.unwrap_or(first_ms + self.after_ms);
        (start..start.saturating_add(self.duration_ms)).contains(&ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(song: &str) -> SpikeConfig {
        SpikeConfig {
            song: song.to_owned(),
            artist: None,
            start_ms: None,
            after_secs: 60,
            duration_secs: 120,
            share: 0.1,
        }
    }

    #[test]
    fn the_window_follows_start_or_the_first_event() {
        let spike = Spike::resolve(&config("Hit"), |_| Some("Band")).unwrap();
        assert_eq!(spike.artist, "Band");
        assert!(!spike.covers(1_000 + 59_999, 1_000));
        assert!(spike.covers(1_000 + 60_000, 1_000));
        assert!(spike.covers(1_000 + 179_999, 1_000));
        assert!(!spike.covers(1_000 + 180_000, 1_000));
        let fixed = SpikeConfig {
            start_ms: Some(5_000),
            ..config("Hit")
        };
        let spike = Spike::resolve(&fixed, |_| Some("Band")).unwrap();
        assert!(spike.covers(5_000, 0) && !spike.covers(4_999, 0));
    }

    #[test]
    fn unknown_songs_need_an_artist_and_bad_fields_are_named() {
        assert_eq!(
            Spike::resolve(&config("Nope"), |_| None).unwrap_err(),
            SpikeError::UnknownSong("Nope".into())
        );
        let with_artist = SpikeConfig {
            artist: Some("New".into()),
            ..config("Nope")
        };
        assert_eq!(
            Spike::resolve(&with_artist, |_| None).unwrap().artist,
            "New"
        );
        let error = SpikeConfig {
            share: 0.0,
            ..config("x")
        }
        .validate()
        .unwrap_err();
        assert_eq!(error, SpikeError::Share(0.0));
        let error = SpikeConfig {
            duration_secs: 0,
            ..config("x")
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("duration_secs"));
        assert_eq!(config("").validate().unwrap_err(), SpikeError::NoSong);
    }
}

//! Forecast: the streams of the tumbling windows ahead, with a calibrated
//! prediction band.
//!
//! Fed one closed tumbling window at a time, in order. The method is a
//! *seasonal profile with an EWMA level* (chosen against seasonal-naive, a
//! trailing mean and Holt-Winters in `benches/benches/forecast.rs`):
//!
//! - **profile**: per time of day (one slot per window of a UTC day) and
//!   day type (weekday, or Saturday/Sunday), an exponentially weighted
//!   average over days of the streams seen in that slot. A forecast reads it
//!   averaged over `smoothing_windows` slots either side, which removes most
//!   of one day's counting noise; a day type not seen yet borrows the other's;
//! - **level**: an EWMA of streams over the profile, so a day busier or
//!   quieter than usual shifts every forecast within the hour;
//! - forecast for the window `h` ahead: level x profile at that window's slot.
//!
//! Until the slot ahead has been seen (the first day) the forecast is an
//! EWMA of the recent windows, flat over the horizon.
//!
//! **The band** is empirical (split conformal): every forecast is kept
//! until its window closes and scored as `ln((actual + 1) / (forecast + 1))`;
//! the band for horizon `h` is the forecast times the `(1 - coverage) / 2`
//! and `(1 + coverage) / 2` quantiles of the last `residual_windows` scores
//! of that horizon and method. No band (and no forecast) is given before
//! `min_residuals` scores exist.
//!
//! **Anomalies stay out of the state**: a window outside the band made for
//! it teaches the level and the profile nothing, so a doubling or a halving
//! is reported as outside for as long as it lasts, and the forecast is
//! where it was when traffic comes back (no opposite excursion after it).
//! A change that lasts more than `ANOMALY_HOLD_WINDOWS` (60) windows is
//! taken as the new normal and learnt, and so is everything on the first
//! day of a day type (its forecast borrowed from the other type's profile).
//! Windows inside such a run (from its third) are not scored either, so an
//! incident does not widen the band.
//! A window with no streams is not emitted by the aggregator and is skipped.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::EventTimeMs;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// A profile slot not seen yet.
const UNKNOWN: f64 = -1.0;
/// Windows in a row outside their band after which the change is learnt.
const ANOMALY_HOLD_WINDOWS: u32 = 60;
/// From this many windows in a row outside their band, windows are not
/// scored: an incident, not the forecast's usual error (normal traffic
/// rarely leaves a 95% band two windows running).
const ANOMALY_RUN_WINDOWS: u32 = 3;
/// Weight of the newest window in the recent EWMA (half-life 10 windows):
/// the forecast of the first day, before the profile knows the slot ahead.
const RECENT_ALPHA: f64 = 0.066_967;

/// How the forecast learns (the engine's `[forecast]` section).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Forecast at all (default true).
    pub enabled: bool,
    /// Share of windows the band should hold (default 0.95).
    pub coverage: f64,
    /// Windows after which a past window weighs half as much in the level
    /// (default 10).
    pub level_half_life_windows: f64,
    /// Weight of the newest day in the profile (default 0.3: a day from a
    /// week ago still counts 8%).
    pub profile_weight: f64,
    /// Profile slots averaged on each side of the one forecast (default 5).
    pub smoothing_windows: u32,
    /// Scores kept per horizon for the band (default 1,440: a day of minutes).
    pub residual_windows: usize,
    /// Scores needed before a band is given (default 60).
    pub min_residuals: usize,
    /// Horizons reported as gauges, in minutes (default 5, 15 and 60).
    pub horizons_minutes: Vec<u32>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            coverage: 0.95,
            level_half_life_windows: 10.0,
            profile_weight: 0.3,
            smoothing_windows: 5,
            residual_windows: 1_440,
            min_residuals: 60,
            horizons_minutes: vec![5, 15, 60],
        }
    }
}

/// Why a [`ForecastConfig`] was refused; each names the setting to fix.
#[derive(Debug, Error, PartialEq)]
pub enum ForecastError {
    /// `coverage` must be a share strictly between 0 and 1.
    #[error("forecast.coverage must be between 0 and 1 (exclusive), got {0}")]
    Coverage(f64),
    /// `level_half_life_windows` must be at least 1.
    #[error("forecast.level_half_life_windows must be at least 1, got {0}")]
    HalfLife(f64),
    /// `profile_weight` must be a share in (0, 1].
    #[error("forecast.profile_weight must be in (0, 1], got {0}")]
    ProfileWeight(f64),
    /// `min_residuals` must be at least 10 and at most `residual_windows`.
    #[error("forecast.min_residuals must be between 10 and residual_windows ({residual_windows}), got {min_residuals}")]
    Residuals {
        /// The setting.
        min_residuals: usize,
        /// The pool it must fit in.
        residual_windows: usize,
    },
    /// A horizon is 0 or longer than a day.
    #[error("forecast.horizons_minutes must each be 1 to 1440, got {0}")]
    Horizon(u32),
    /// The tumbling window does not divide a day.
    #[error("forecast needs a tumbling window that divides a day, got {0} ms")]
    Window(i64),
}

impl ForecastConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<(), ForecastError> {
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return Err(ForecastError::Coverage(self.coverage));
        }
        if !(self.level_half_life_windows >= 1.0 && self.level_half_life_windows.is_finite()) {
            return Err(ForecastError::HalfLife(self.level_half_life_windows));
        }
        if !(self.profile_weight > 0.0 && self.profile_weight <= 1.0) {
            return Err(ForecastError::ProfileWeight(self.profile_weight));
        }
        if self.min_residuals < 10 || self.min_residuals > self.residual_windows {
            return Err(ForecastError::Residuals {
                min_residuals: self.min_residuals,
                residual_windows: self.residual_windows,
            });
        }
        if let Some(&bad) = self.horizons_minutes.iter().find(|&&h| h == 0 || h > 1440) {
            return Err(ForecastError::Horizon(bad));
        }
        Ok(())
    }
}

/// A forecast of one window's streams: `"forecast": {"streams", "lower", "upper"}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Expected streams.
    pub streams: f64,
    /// Lower end of the prediction interval.
    pub lower: f64,
    /// Upper end of the prediction interval.
    pub upper: f64,
}

impl Band {
    /// True when `streams` lies in the band.
    pub fn covers(&self, streams: f64) -> bool {
        self.lower <= streams && streams <= self.upper
    }
}

/// Which forecast is in use for a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Profile of the time of day times the level.
    Seasonal,
    /// The recent windows' EWMA (the profile has not seen that slot yet).
    Recent,
}

impl Method {
    fn index(self) -> usize {
        match self {
            Method::Seasonal => 0,
            Method::Recent => 1,
        }
    }

    /// `"seasonal"` or `"recent"`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Seasonal => "seasonal",
            Method::Recent => "recent",
        }
    }
}

/// The forecast for the window ending `horizon_minutes` after the latest
/// closed one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ahead {
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// Start of the window forecast, epoch ms.
    pub start_ms: EventTimeMs,
    /// The forecast and its band.
    pub band: Band,
    /// How it was made.
    pub method: Method,
}

/// A forecast waiting for its window to close.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Pending {
    target_start_ms: EventTimeMs,
    /// Index into the horizons (0: one window ahead).
    horizon: usize,
    method: Method,
    streams: f64,
}

/// Everything the forecaster learnt: kept in checkpoints so a restart does
/// not wait a day to forecast again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastState {
    /// Tumbling window width the state was learnt at.
    pub window_ms: i64,
    /// Weekday then weekend profile, one value per slot ([`UNKNOWN`] = -1: not seen).
    profiles: [Vec<f64>; 2],
    /// Streams over the profile, EWMA.
    level_ratio: Option<f64>,
    /// Streams, EWMA.
    recent: Option<f64>,
    /// Start of the latest window observed.
    last_start_ms: Option<EventTimeMs>,
    /// Forecasts not scored yet.
    pending: VecDeque<Pending>,
    /// Scores per method (seasonal, recent) and horizon, oldest first.
    scores: [Vec<VecDeque<f32>>; 2],
    /// Windows observed.
    windows: u64,
    /// The forecasts made at the latest close.
    ahead: Vec<Ahead>,
    /// Windows in a row outside the band made for them.
    outside_run: u32,
}

impl ForecastState {
    /// Windows observed.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Start of the latest window learnt from (None: none yet).
    pub fn last_start_ms(&self) -> Option<EventTimeMs> {
        self.last_start_ms
    }
}

/// Forecasts tumbling windows' streams (see the module docs).
#[derive(Clone, Debug)]
pub struct Forecaster {
    config: ForecastConfig,
    /// Horizons in windows: one, then each of `horizons_minutes`.
    steps: Vec<i64>,
    level_alpha: f64,
    state: ForecastState,
    scratch: Vec<f32>,
}

impl Forecaster {
    /// A forecaster of windows `window_ms` wide.
    pub fn new(config: ForecastConfig, window_ms: i64) -> Result<Self, ForecastError> {
        config.validate()?;
        if window_ms <= 0 || DAY_MS % window_ms != 0 {
            return Err(ForecastError::Window(window_ms));
        }
        let slots = (DAY_MS / window_ms) as usize;
        let horizons = config.horizons_minutes.len() + 1;
        let state = ForecastState {
            window_ms,
            profiles: [vec![UNKNOWN; slots], vec![UNKNOWN; slots]],
            level_ratio: None,
            recent: None,
            last_start_ms: None,
            pending: VecDeque::new(),
            scores: [
                vec![VecDeque::new(); horizons],
                vec![VecDeque::new(); horizons],
            ],
            windows: 0,
            ahead: Vec::new(),
            outside_run: 0,
        };
        Ok(Self::with_state(config, state))
    }

    /// A forecaster resuming from `state` (from [`Forecaster::state`]);
    /// a state of another window width or horizon count starts afresh.
    pub fn restore(
        config: ForecastConfig,
        window_ms: i64,
        state: ForecastState,
    ) -> Result<Self, ForecastError> {
        let fresh = Self::new(config, window_ms)?;
        let fits = state.window_ms == window_ms
            && state.profiles.iter().all(|p| p.len() == fresh.slots())
            && state.scores.iter().all(|s| s.len() == fresh.steps.len());
        Ok(if fits {
            Self::with_state(fresh.config, state)
        } else {
            fresh
        })
    }

    fn with_state(config: ForecastConfig, state: ForecastState) -> Self {
        let window_ms = state.window_ms;
        let steps = std::iter::once(1)
            .chain(
                config
                    .horizons_minutes
                    .iter()
                    .map(|&m| (i64::from(m) * 60_000 + window_ms - 1) / window_ms),
            )
            .collect();
        let level_alpha = 1.0 - 0.5f64.powf(1.0 / config.level_half_life_windows);
        Self {
            config,
            steps,
            level_alpha,
            state,
            scratch: Vec::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// The width of the windows it forecasts.
    pub fn window_ms(&self) -> i64 {
        self.state.window_ms
    }

    /// What it has learnt, for a checkpoint.
    pub fn state(&self) -> &ForecastState {
        &self.state
    }

    /// Windows observed since it started (or since the state it resumed).
    pub fn windows_observed(&self) -> u64 {
        self.state.windows
    }

    /// Share of the day's slots the profile has seen (weekday and weekend
    /// together: 1 once a full day has been seen): below 1 the forecast of
    /// some windows is the recent EWMA.
    pub fn profile_seen(&self) -> f64 {
        let slots = self.slots();
        let seen = (0..slots)
            .filter(|&s| self.state.profiles.iter().any(|p| p[s] != UNKNOWN))
            .count();
        seen as f64 / slots as f64
    }

    /// The tumbling window of `start_ms` closed with `streams`: returns the
    /// forecast made for it one window ahead (None while warming up, or if
    /// the window is not after the latest one seen), then learns from it
    /// and forecasts the windows ahead ([`Forecaster::ahead`]).
    pub fn observe(&mut self, start_ms: EventTimeMs, streams: u64) -> Option<Band> {
        if self
            .state
            .last_start_ms
            .is_some_and(|last| start_ms <= last)
        {
            return None;
        }
        let actual = streams as f64;
        let made_for_this = self
            .ahead_one()
            .filter(|ahead| ahead.start_ms == start_ms)
            .map(|ahead| ahead.band);
        let outside = made_for_this.is_some_and(|band| !band.covers(actual));
        let run = if outside {
            self.state.outside_run + 1
        } else {
            0
        };
        self.state.outside_run = run;
        let lasting = run > ANOMALY_HOLD_WINDOWS;
        self.score(start_ms, actual, run < ANOMALY_RUN_WINDOWS || lasting);
        // A day type seen for the first time (its forecast borrowed from the
        // other's profile) is expected to miss: learn it as it comes.
        let (kind, slot) = self.slot_of(start_ms);
        let first_of_kind = self.state.profiles[kind][slot] == UNKNOWN;
        self.learn(start_ms, actual, !outside || lasting || first_of_kind);
        self.state.last_start_ms = Some(start_ms);
        self.state.windows += 1;
        self.forecast_ahead(start_ms);
        made_for_this
    }

    /// The forecasts made at the latest close: one window ahead first, then
    /// one per configured horizon (those with a band only).
    pub fn ahead(&self) -> &[Ahead] {
        &self.state.ahead
    }

    fn ahead_one(&self) -> Option<&Ahead> {
        self.state.ahead.first().filter(|a| a.horizon_minutes == 0)
    }

    fn slots(&self) -> usize {
        self.state.profiles[0].len()
    }

    /// Scores every pending forecast of the window at `start_ms` (`keep`:
    /// into the pools); drops those of windows skipped (no streams: not
    /// emitted).
    fn score(&mut self, start_ms: EventTimeMs, actual: f64, keep_scores: bool) {
        let keep = self.config.residual_windows;
        while let Some(pending) = self.state.pending.front().copied() {
            if pending.target_start_ms > start_ms {
                break;
            }
            self.state.pending.pop_front();
            if pending.target_start_ms < start_ms || !keep_scores {
                continue;
            }
            let score = ((actual + 1.0) / (pending.streams + 1.0)).ln() as f32;
            let pool = &mut self.state.scores[pending.method.index()][pending.horizon];
            pool.push_back(score);
            if pool.len() > keep {
                pool.pop_front();
            }
        }
    }

    /// Updates the level (from the profile before this window) and the
    /// profile with `streams`; unless `normal`, only fills a profile slot
    /// never seen (an outlier is better than nothing there).
    fn learn(&mut self, start_ms: EventTimeMs, streams: f64, normal: bool) {
        let (kind, slot) = self.slot_of(start_ms);
        if !normal {
            let value = &mut self.state.profiles[kind][slot];
            if *value == UNKNOWN {
                *value = streams;
            }
            return;
        }
        let alpha = self.level_alpha;
        let recent = self.state.recent.get_or_insert(streams);
        *recent += RECENT_ALPHA * (streams - *recent);
        if let Some(profile) = self.profile_at(start_ms) {
            let ratio = streams / profile.max(1.0);
            let level = self.state.level_ratio.get_or_insert(ratio);
            *level += alpha * (ratio - *level);
        }
        let value = &mut self.state.profiles[kind][slot];
        *value = if *value == UNKNOWN {
            streams
        } else {
            *value + self.config.profile_weight * (streams - *value)
        };
    }

    /// Forecasts, with their bands, each horizon after the window at `start_ms`.
    fn forecast_ahead(&mut self, start_ms: EventTimeMs) {
        self.state.ahead.clear();
        let window_ms = self.state.window_ms;
        for horizon in 0..self.steps.len() {
            let target_start_ms = start_ms + self.steps[horizon] * window_ms;
            let (method, streams) = self.point(target_start_ms);
            self.state.pending.push_back(Pending {
                target_start_ms,
                horizon,
                method,
                streams,
            });
            if let Some(band) = self.band(method, horizon, streams) {
                let horizon_minutes = match horizon {
                    0 => 0,
                    h => self.config.horizons_minutes[h - 1],
                };
                self.state.ahead.push(Ahead {
                    horizon_minutes,
                    start_ms: target_start_ms,
                    band,
                    method,
                });
            }
        }
        // Pending forecasts stay ordered by target (horizons interleave).
        self.state
            .pending
            .make_contiguous()
            .sort_by_key(|p| p.target_start_ms);
    }

    /// The point forecast of the window at `start_ms`.
    fn point(&self, start_ms: EventTimeMs) -> (Method, f64) {
        match (self.profile_at(start_ms), self.state.level_ratio) {
            (Some(profile), Some(level)) => (Method::Seasonal, (level * profile).max(0.0)),
            _ => (Method::Recent, self.state.recent.unwrap_or(0.0)),
        }
    }

    /// The band around `streams` from the scores of `method` at `horizon`;
    /// a seasonal forecast whose own scores are too few borrows the
    /// recent EWMA's (wider).
    fn band(&mut self, method: Method, horizon: usize, streams: f64) -> Option<Band> {
        let min = self.config.min_residuals;
        let pool = [method, Method::Recent]
            .into_iter()
            .map(|m| &self.state.scores[m.index()][horizon])
            .find(|pool| pool.len() >= min)?;
        self.scratch.clear();
        self.scratch.extend(pool.iter().copied());
        let tail = (1.0 - self.config.coverage) / 2.0;
        let low = quantile(&mut self.scratch, tail);
        let high = quantile(&mut self.scratch, 1.0 - tail);
        let at = |score: f32| ((streams + 1.0) * f64::from(score).exp() - 1.0).max(0.0);
        Some(Band {
            streams,
            lower: at(low),
            upper: at(high),
        })
    }

    /// The smoothed profile at the slot of `start_ms`: the average of the
    /// slots seen within `smoothing_windows` of it, in its day type, or
    /// the other's when its own has not seen that slot; None if neither has.
    fn profile_at(&self, start_ms: EventTimeMs) -> Option<f64> {
        let (kind, slot) = self.slot_of(start_ms);
        let profile = [kind, 1 - kind]
            .into_iter()
            .map(|k| &self.state.profiles[k])
            .find(|p| p[slot] != UNKNOWN)?;
        let slots = profile.len() as i64;
        let reach = i64::from(self.config.smoothing_windows);
        let (sum, n) = (-reach..=reach)
            .map(|d| profile[(slot as i64 + d).rem_euclid(slots) as usize])
            .filter(|&v| v != UNKNOWN)
            .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
        Some(sum / f64::from(n))
    }

    /// (day type, slot) of the window at `start_ms`: type 1 on Saturdays and
    /// Sundays (UTC; 1970-01-01 was a Thursday).
    fn slot_of(&self, start_ms: EventTimeMs) -> (usize, usize) {
        let day = start_ms.div_euclid(DAY_MS);
        let kind = usize::from(matches!((day + 3).rem_euclid(7), 5 | 6));
        let slot = (start_ms.rem_euclid(DAY_MS) / self.state.window_ms) as usize;
        (kind, slot.min(self.slots() - 1))
    }
}

/// The `q` quantile of `values` (reordered): the conformal rank
/// `ceil((n + 1) q)`, clamped to the sample.
fn quantile(values: &mut [f32], q: f64) -> f32 {
    let n = values.len();
    let rank = ((n as f64 + 1.0) * q).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    *values.select_nth_unstable_by(index, f32::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-13 00:00 UTC, a Monday.
    const MONDAY_MS: i64 = 1_699_833_600_000;
    const MINUTE_MS: i64 = 60_000;

    /// SplitMix64, for repeatable noise.
    struct Noise(u64);

    impl Noise {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Approximately Poisson with mean `mean` (normal, rounded).
        fn poisson(&mut self, mean: f64) -> u64 {
            let (u, v) = (self.unit().max(1e-12), self.unit());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            (mean + normal * mean.sqrt()).round().max(0.0) as u64
        }
    }

    /// Streams expected in minute `m` of the series: a daily cycle of
    /// ±60% and a different volume each day.
    fn expected(minute: i64) -> f64 {
        let day = minute / 1440;
        let phase = (minute % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
        let day_factor = [1.0, 1.05, 0.96, 1.02, 0.98][day as usize % 5];
        1_000.0 * day_factor * (1.0 - 0.6 * (phase - 0.8).cos())
    }

    fn series(days: i64, seed: u64) -> Vec<u64> {
        let mut noise = Noise(seed);
        (0..days * 1440)
            .map(|m| noise.poisson(expected(m)))
            .collect()
    }

    /// (forecast made one ahead, actual) per minute.
    fn run(streams: &[u64]) -> Vec<(Option<Band>, u64)> {
        let mut forecaster = Forecaster::new(ForecastConfig::default(), MINUTE_MS).unwrap();
        streams
            .iter()
            .enumerate()
            .map(|(m, &n)| (forecaster.observe(MONDAY_MS + m as i64 * MINUTE_MS, n), n))
            .collect()
    }

    fn mape(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
        let (sum, n) = pairs.fold((0.0, 0), |(s, n), (f, a)| (s + (f - a).abs() / a, n + 1));
        sum / f64::from(n)
    }

    #[test]
    fn third_day_band_is_calibrated_and_beats_both_baselines() {
        let streams = series(3, 11);
        let scored = run(&streams);
        let day3 = 2 * 1440..3 * 1440;
        let covered = day3
            .clone()
            .filter(|&m| scored[m].0.is_some_and(|b| b.covers(streams[m] as f64)))
            .count() as f64
            / 1440.0;
        assert!((0.90..=0.98).contains(&covered), "coverage {covered}");
        let ours = mape(
            day3.clone()
                .map(|m| (scored[m].0.unwrap().streams, streams[m] as f64)),
        );
        let naive = mape(
            day3.clone()
                .map(|m| (streams[m - 1440] as f64, streams[m] as f64)),
        );
        let trailing = mape(day3.map(|m| {
            let mean = streams[m - 60..m].iter().sum::<u64>() as f64 / 60.0;
            (mean, streams[m] as f64)
        }));
        assert!(ours < 0.8 * naive, "ours {ours} vs seasonal-naive {naive}");
        assert!(
            ours < 0.8 * trailing,
            "ours {ours} vs trailing mean {trailing}"
        );
    }

    #[test]
    fn warms_up_on_recent_windows_then_learns_the_day() {
        let streams = series(2, 5);
        let mut forecaster = Forecaster::new(ForecastConfig::default(), MINUTE_MS).unwrap();
        let mut first = None;
        for (m, &n) in streams.iter().enumerate() {
            let made = forecaster.observe(MONDAY_MS + m as i64 * MINUTE_MS, n);
            if made.is_some() && first.is_none() {
                first = Some(m);
            }
            if m == 1439 {
                assert!(forecaster.profile_seen() > 0.999);
            }
        }
        // One score per window from the second window on: 60 scores after 61.
        assert_eq!(first, Some(61), "absent while warming up");
        let ahead = forecaster.ahead();
        let minutes: Vec<u32> = ahead.iter().map(|a| a.horizon_minutes).collect();
        assert_eq!(minutes, vec![0, 5, 15, 60]);
        assert!(ahead.iter().all(|a| a.method == Method::Seasonal));
        let last = MONDAY_MS + (streams.len() as i64 - 1) * MINUTE_MS;
        assert_eq!(ahead[3].start_ms, last + 60 * MINUTE_MS);
        // The hour-ahead band is wider than the minute-ahead one.
        let width = |a: &Ahead| (a.band.upper - a.band.lower) / a.band.streams;
        assert!(width(&ahead[3]) >= width(&ahead[0]) * 0.9);
    }

    #[test]
    fn a_doubling_and_a_halving_stay_outside_the_band_while_they_last() {
        for factor in [2.0, 0.5] {
            let mut streams = series(3, 3);
            // 30 minutes at the evening peak of day 3.
            let peak = 2 * 1440 + 1440 / 2 + 200;
            for n in &mut streams[peak..peak + 30] {
                *n = (*n as f64 * factor) as u64;
            }
            let scored = run(&streams);
            let outside = (peak..peak + 30)
                .filter(|&m| !scored[m].0.unwrap().covers(streams[m] as f64))
                .count();
            assert_eq!(outside, 30, "factor {factor}");
            // Back to normal, the forecast is where it was: no run of
            // minutes outside the band on the other side.
            let after: Vec<bool> = (peak + 30..peak + 90)
                .map(|m| scored[m].0.unwrap().covers(streams[m] as f64))
                .collect();
            let longest = after.split(|&c| c).map(<[bool]>::len).max().unwrap_or(0);
            assert!(
                longest <= 2,
                "factor {factor}: {longest} minutes in a row outside after"
            );
        }
    }

    #[test]
    fn restored_state_forecasts_as_if_never_stopped() {
        let streams = series(2, 9);
        let config = ForecastConfig::default();
        let mut whole = Forecaster::new(config.clone(), MINUTE_MS).unwrap();
        let mut first = Forecaster::new(config.clone(), MINUTE_MS).unwrap();
        let at = |m: usize| MONDAY_MS + m as i64 * MINUTE_MS;
        for (m, &n) in streams[..1700].iter().enumerate() {
            whole.observe(at(m), n);
            first.observe(at(m), n);
        }
        let json = serde_json::to_string(first.state()).unwrap();
        let state: ForecastState = serde_json::from_str(&json).unwrap();
        let mut second = Forecaster::restore(config.clone(), MINUTE_MS, state).unwrap();
        // Equal up to the last digit JSON keeps of a float.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        for (m, &n) in streams.iter().enumerate().skip(1700) {
            let (a, b) = (whole.observe(at(m), n), second.observe(at(m), n));
            let same = match (a, b) {
                (Some(a), Some(b)) => {
                    close(a.streams, b.streams)
                        && close(a.lower, b.lower)
                        && close(a.upper, b.upper)
                }
                (a, b) => a == b,
            };
            assert!(same, "minute {m}: {a:?} vs {b:?}");
        }
        // Another width's state is not reused.
        let other = Forecaster::restore(config, 2 * MINUTE_MS, first.state().clone()).unwrap();
        assert_eq!(other.windows_observed(), 0);
    }

    #[test]
    fn old_and_repeated_windows_are_ignored() {
        let mut forecaster = Forecaster::new(ForecastConfig::default(), MINUTE_MS).unwrap();
        for m in 0..100 {
            forecaster.observe(MONDAY_MS + m * MINUTE_MS, 100);
        }
        let before = forecaster.state().clone();
        assert_eq!(forecaster.observe(MONDAY_MS + 99 * MINUTE_MS, 50), None);
        assert_eq!(forecaster.observe(MONDAY_MS, 50), None);
        assert_eq!(forecaster.state(), &before);
    }

    /// The band is the conformal quantiles of the scores of the forecasts
    /// returned before, recomputed from scratch.
    #[test]
    fn band_matches_a_recomputation_from_the_returned_forecasts() {
        let streams = series(3, 21);
        let scored = run(&streams);
        let config = ForecastConfig::default();
        // Day 3 is all seasonal, one-ahead: each band from the 1,440 scores before.
        for m in (2 * 1440 + 10..3 * 1440).step_by(97) {
            let mut scores: Vec<f64> = (m - 1440..m)
                .map(|j| {
                    let band = scored[j].0.unwrap();
                    ((streams[j] as f64 + 1.0) / (band.streams + 1.0)).ln()
                })
                .collect();
            scores.sort_by(f64::total_cmp);
            let rank = |q: f64| ((scores.len() as f64 + 1.0) * q).ceil() as usize - 1;
            let tail = (1.0 - config.coverage) / 2.0;
            let band = scored[m].0.unwrap();
            let lower = (band.streams + 1.0) * scores[rank(tail)].exp() - 1.0;
            let upper = (band.streams + 1.0) * scores[rank(1.0 - tail)].exp() - 1.0;
            assert!(
                (band.lower - lower).abs() < 0.01 * lower,
                "{m}: {band:?} vs {lower}"
            );
            assert!(
                (band.upper - upper).abs() < 0.01 * upper,
                "{m}: {band:?} vs {upper}"
            );
        }
    }

    #[test]
    fn refuses_bad_settings() {
        let bad = |edit: fn(&mut ForecastConfig)| {
            let mut config = ForecastConfig::default();
            edit(&mut config);
            config.validate().is_err()
        };
        assert!(bad(|c| c.coverage = 1.0));
        assert!(bad(|c| c.level_half_life_windows = 0.5));
        assert!(bad(|c| c.profile_weight = 0.0));
        assert!(bad(|c| c.min_residuals = 5));
        assert!(bad(|c| c.horizons_minutes = vec![0]));
        assert!(Forecaster::new(ForecastConfig::default(), 7 * MINUTE_MS).is_err());
    }
}

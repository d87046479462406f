//! The daily cycle of `--diurnal`: when generated events happen.
//!
//! Without `--diurnal` the generator's events are evenly spaced at `--rate`.
//! With it the rate follows a weekly profile around `--rate` (UTC):
//!
//! - weekdays: a trough of about 0.4x at 04:00, a morning rise to about
//!   1.0x by 08:00, a flat working day, and an evening peak of about 1.6x
//!   at 20:00;
//! - Saturdays and Sundays: a later trough (05:00) and a slower morning,
//!   busier early afternoons (about 1.3x) and a flatter evening (about 1.45x);
//! - each day's volume is scaled by a factor drawn for that day in
//!   0.94..1.06 (weather, news, releases), eased from one noon to the next;
//! - the profile is scaled so that a week averages `--rate`.
//!
//! Events arrive as a Poisson process of that rate (exponential gaps), so
//! per-minute counts vary as real traffic does. Everything is fixed by the
//! seed: the same seed, rate and start give the same times.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;

/// Weekday rate multipliers at each full hour (UTC), before scaling;
/// linear in between.
const WEEKDAY: [f64; 24] = [
    0.85, 0.65, 0.52, 0.44, 0.40, 0.45, 0.60, 0.82, 1.00, 1.02, 0.98, 0.98, //
    1.05, 1.02, 0.97, 0.97, 1.05, 1.18, 1.33, 1.48, 1.60, 1.55, 1.35, 1.10,
];
/// Saturday and Sunday multipliers at each full hour (UTC), before scaling.
const WEEKEND: [f64; 24] = [
    1.00, 0.80, 0.62, 0.50, 0.43, 0.40, 0.42, 0.50, 0.65, 0.85, 1.05, 1.20, //
    1.30, 1.35, 1.35, 1.30, 1.28, 1.33, 1.40, 1.45, 1.45, 1.35, 1.20, 1.05,
];
/// Each day's volume factor is drawn in `1 ± DAY_VARIATION`.
const DAY_VARIATION: f64 = 0.06;

/// The weekly profile of one seed: the rate multiplier at any time.
#[derive(Clone, Debug)]
pub struct Diurnal {
    seed: u64,
    /// Divides the knots so a week averages 1.
    scale: f64,
}

impl Diurnal {
    /// The profile for `seed` (which draws the day factors).
    pub fn new(seed: u64) -> Self {
        // Trapezoids over a periodic piecewise-linear curve: the knots' mean.
        let mean = |knots: &[f64; 24]| knots.iter().sum::<f64>() / 24.0;
        let scale = (5.0 * mean(&WEEKDAY) + 2.0 * mean(&WEEKEND)) / 7.0;
        Self { seed, scale }
    }

    /// The rate multiplier at `ts_ms` (about 0.4 to 1.7; a week averages
    /// about 1).
    pub fn multiplier(&self, ts_ms: i64) -> f64 {
        self.shape(ts_ms) * self.day_factor(ts_ms) / self.scale
    }

    /// The weekly shape at `ts_ms`: the hour knots of its day, linear
    /// between them (the last hour leads to the next day's first knot).
    fn shape(&self, ts_ms: i64) -> f64 {
        let day = ts_ms.div_euclid(DAY_MS);
        let into_day = ts_ms.rem_euclid(DAY_MS);
        let hour = (into_day / HOUR_MS) as usize;
        let fraction = (into_day % HOUR_MS) as f64 / HOUR_MS as f64;
        let here = knots(day)[hour];
        let next = if hour == 23 {
            knots(day + 1)[0]
        } else {
            knots(day)[hour + 1]
        };
        here + (next - here) * fraction
    }

    /// The day's volume factor, eased linearly from one noon to the next.
    fn day_factor(&self, ts_ms: i64) -> f64 {
        let since_noon = ts_ms - DAY_MS / 2;
        let day = since_noon.div_euclid(DAY_MS);
        let fraction = since_noon.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        let here = self.factor_of_day(day);
        here + (self.factor_of_day(day + 1) - here) * fraction
    }

    /// The volume factor drawn for day `day` (days since 1970-01-01).
    fn factor_of_day(&self, day: i64) -> f64 {
        let unit = (split_mix(self.seed ^ (day as u64).wrapping_mul(0x9e37_79b9)) >> 11) as f64
            / (1u64 << 53) as f64;
        1.0 + DAY_VARIATION * (2.0 * unit - 1.0)
    }
}

/// The hour knots of day `day`: 1970-01-01 was a Thursday.
fn knots(day: i64) -> &'static [f64; 24] {
    match (day + 3).rem_euclid(7) {
        5 | 6 => &WEEKEND,
        _ => &WEEKDAY,
    }
}

/// SplitMix64's output function: a well-mixed 64-bit hash.
fn split_mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `--start-ms` (or a window ending now) would put event times outside
/// 1970 to the year 9999.
#[derive(Debug, thiserror::Error)]
#[error("--start-ms {start_ms}: {count} events {step_ms} ms apart would not fit between 1970 and the year 9999")]
pub struct StartOutOfRange {
    /// The first event time asked for.
    pub start_ms: i64,
    /// Events.
    pub count: u64,
    /// Between two events.
    pub step_ms: f64,
}

/// The first event time of `count` events `step_ms` apart: `start_ms`, or
/// so that the last is `now_ms`. Refused if any would leave 1970..=9999.
pub fn counted_start(
    count: u64,
    step_ms: f64,
    start_ms: Option<i64>,
    now_ms: i64,
) -> Result<i64, StartOutOfRange> {
    let span_ms = (count as f64 * step_ms) as i64;
    let start = start_ms.unwrap_or_else(|| now_ms.saturating_sub(span_ms));
    match start.checked_add(span_ms) {
        Some(end) if start >= 0 && end <= LAST_MS => Ok(start),
        _ => Err(StartOutOfRange {
            start_ms: start,
            count,
            step_ms,
        }),
    }
}

/// Event times for `--count` events: evenly spaced, or a Poisson process
/// following the daily profile.
pub struct EventClock {
    kind: ClockKind,
}

enum ClockKind {
    /// `start + i * step`, as without `--diurnal`.
    Even {
        start_ms: i64,
        step_ms: f64,
        next: u64,
    },
    /// The Poisson process of rate `rate * multiplier(t)`.
    Diurnal(PoissonClock),
}

/// Walks the Poisson process second by second: within a second the rate
/// is that second's (the profile moves slowly), and gaps are exponential
/// in units of expected events.
struct PoissonClock {
    diurnal: Diurnal,
    rate_per_sec: f64,
    gaps: SplitMixStream,
    /// The second being filled, epoch seconds.
    second: i64,
    /// Expected events of that second already used.
    used: f64,
    /// Expected events in that second.
    capacity: f64,
}

impl EventClock {
    /// `count` events `1000 / rate` ms apart from `start_ms`, or ending
    /// now (see [`counted_start`]).
    pub fn even(
        count: u64,
        rate_per_sec: f64,
        start_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Self, StartOutOfRange> {
        let step_ms = 1000.0 / rate_per_sec;
        let start_ms = counted_start(count, step_ms, start_ms, now_ms)?;
        Ok(Self {
            kind: ClockKind::Even {
                start_ms,
                step_ms,
                next: 0,
            },
        })
    }

    /// `count` events of the daily profile at `rate_per_sec` on average,
    /// from `start_ms`, or (without it) so that the last is at most a
    /// second before `now_ms`.
    pub fn diurnal(
        diurnal: Diurnal,
        rate_per_sec: f64,
        count: u64,
        start_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Self, StartOutOfRange> {
        let seed = diurnal.seed;
        let start_ms = match start_ms {
            Some(start_ms) => start_ms,
            None => {
                // The same gaps as the walk below: their sum is the span
                // in expected events, laid back from now.
                let mut gaps = SplitMixStream::new(seed);
                let total: f64 = (0..count).map(|_| gaps.exponential()).sum();
                start_ending_at(&diurnal, rate_per_sec, total, now_ms)
            }
        };
        let out_of_range = || StartOutOfRange {
            start_ms,
            count,
            step_ms: 1000.0 / rate_per_sec,
        };
        // Bounds: the profile never goes below a third of the rate.
        let longest_ms = (count as f64 * 3000.0 / rate_per_sec) as i64;
        if start_ms < 0
            || start_ms
                .checked_add(longest_ms)
                .is_none_or(|end| end > LAST_MS)
        {
            return Err(out_of_range());
        }
        let second = start_ms.div_euclid(1000);
        let capacity = rate_per_sec * diurnal.multiplier(second * 1000);
        let used = capacity * start_ms.rem_euclid(1000) as f64 / 1000.0;
        Ok(Self {
            kind: ClockKind::Diurnal(PoissonClock {
                diurnal,
                rate_per_sec,
                gaps: SplitMixStream::new(seed),
                second,
                used,
                capacity,
            }),
        })
    }

    /// The next event's time, epoch ms (never decreasing).
    pub fn next_ms(&mut self) -> i64 {
        match &mut self.kind {
            ClockKind::Even {
                start_ms,
                step_ms,
                next,
            } => {
                let ts = *start_ms + (*next as f64 * *step_ms) as i64;
                *next += 1;
                ts
            }
            ClockKind::Diurnal(clock) => clock.next_ms(),
        }
    }

    /// The rate multiplier at `ts_ms` (1 for evenly spaced events): the
    /// generator scales its open sessions with it.
    pub fn activity(&self, ts_ms: i64) -> f64 {
        match &self.kind {
            ClockKind::Even { .. } => 1.0,
            ClockKind::Diurnal(clock) => clock.diurnal.multiplier(ts_ms),
        }
    }
}

/// 9999-12-31T23:59:59.999Z.
const LAST_MS: i64 = 253_402_300_799_999;

impl PoissonClock {
    fn next_ms(&mut self) -> i64 {
        let mut gap = self.gaps.exponential();
        while self.used + gap > self.capacity {
            gap -= self.capacity - self.used;
            self.second += 1;
            self.used = 0.0;
            self.capacity = self.rate_per_sec * self.diurnal.multiplier(self.second * 1000);
        }
        self.used += gap;
        let into_second = (self.used / self.capacity * 1000.0) as i64;
        self.second * 1000 + into_second.min(999)
    }
}

/// The start from which `expected` events of the profile end in the
/// second before `now_ms`: whole seconds walked back from it.
fn start_ending_at(diurnal: &Diurnal, rate_per_sec: f64, expected: f64, now_ms: i64) -> i64 {
    let mut second = now_ms.div_euclid(1000);
    let mut left = expected;
    loop {
        second -= 1;
        let capacity = rate_per_sec * diurnal.multiplier(second * 1000);
        if left <= capacity || second <= 0 {
            let into_ms = ((capacity - left).max(0.0) / capacity * 1000.0) as i64;
            return second * 1000 + into_ms.min(999);
        }
        left -= capacity;
    }
}

/// Exponential draws from a SplitMix64 sequence (the gaps only: the
/// events' content comes from the generator's own streams).
struct SplitMixStream(u64);

impl SplitMixStream {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0xd1ce_5eed_0000_0001)
    }

    /// A draw of the unit exponential distribution.
    fn exponential(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let unit = (split_mix(self.0) >> 11) as f64 / (1u64 << 53) as f64;
        -(1.0 - unit).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-13 00:00 UTC, a Monday.
    const MONDAY_MS: i64 = 1_699_833_600_000;

    #[test]
    fn a_week_averages_about_one_with_a_trough_and_an_evening_peak() {
        let diurnal = Diurnal::new(7);
        let minutes: Vec<f64> = (0..7 * 1440)
            .map(|m| diurnal.multiplier(MONDAY_MS + m * 60_000))
            .collect();
        let mean = minutes.iter().sum::<f64>() / minutes.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "weekly mean {mean}");
        let monday = &minutes[..1440];
        let at = |hour: usize| monday[hour * 60];
        assert!(at(4) < 0.5 && at(4) > 0.3, "04:00 {}", at(4));
        assert!(at(20) > 1.5 && at(20) < 1.8, "20:00 {}", at(20));
        let saturday = &minutes[5 * 1440..6 * 1440];
        assert!(saturday[13 * 60] > 1.2 * monday[13 * 60] / 1.06 / 1.06);
        // Smooth: no minute-to-minute jump beyond the steepest ramp.
        for pair in minutes.windows(2) {
            assert!((pair[1] - pair[0]).abs() < 0.01, "{pair:?}");
        }
    }

    #[test]
    fn diurnal_times_follow_the_profile_and_are_deterministic() {
        let diurnal = Diurnal::new(3);
        let rate = 20.0;
        let count = (rate * 86_400.0) as u64;
        let times = |seed| {
            let mut clock =
                EventClock::diurnal(Diurnal::new(seed), rate, count, Some(MONDAY_MS), 0).unwrap();
            (0..count).map(|_| clock.next_ms()).collect::<Vec<_>>()
        };
        let first = times(3);
        assert_eq!(first, times(3), "same seed, same times");
        assert_ne!(first, times(4));
        assert!(first.windows(2).all(|p| p[0] <= p[1]), "in order");
        let mut per_hour = [0u64; 24];
        for &ts in &first {
            let hour = ((ts - MONDAY_MS) / HOUR_MS) as usize;
            if hour < 24 {
                per_hour[hour] += 1;
            }
        }
        for (hour, &n) in per_hour.iter().enumerate() {
            let expected: f64 = (0..60)
                .map(|m| {
                    rate * 60.0 * diurnal.multiplier(MONDAY_MS + hour as i64 * HOUR_MS + m * 60_000)
                })
                .sum();
            let error = (n as f64 - expected).abs() / expected;
            assert!(error < 0.05, "hour {hour}: {n} vs {expected}");
        }
    }

    #[test]
    fn counted_events_end_just_before_now() {
        let now = MONDAY_MS + 3 * DAY_MS + 12_345;
        let mut clock = EventClock::diurnal(Diurnal::new(1), 50.0, 1_000_000, None, now).unwrap();
        let first = clock.next_ms();
        let mut last = first;
        for _ in 1..1_000_000 {
            last = clock.next_ms();
        }
        assert!(
            last < now && last >= now - 2_000,
            "last {last} vs now {now}"
        );
        assert!(now - first > 4 * HOUR_MS, "about 5.5 hours at 50/s");
    }

    #[test]
    fn even_clock_matches_the_old_spacing() {
        let mut clock = EventClock::even(4, 3.0, Some(1_000), 0).unwrap();
        let times: Vec<i64> = (0..4).map(|_| clock.next_ms()).collect();
        assert_eq!(times, vec![1_000, 1_333, 1_666, 2_000]);
        assert!(EventClock::diurnal(Diurnal::new(1), 1.0, 10, Some(-5), 0).is_err());
    }

    #[test]
    fn counted_times_stay_real_epoch_times() {
        assert_eq!(counted_start(10, 1.0, None, 1_000).unwrap(), 990);
        assert_eq!(counted_start(10, 1.0, Some(5), 1_000).unwrap(), 5);
        assert!(
            counted_start(10, 1.0, Some(i64::MAX), 0).is_err(),
            "would wrap"
        );
        assert!(counted_start(10, 1.0, Some(-1), 0).is_err(), "before 1970");
        assert!(
            counted_start(1, 1.0, Some(253_402_300_800_000), 0).is_err(),
            "after 9999"
        );
        assert!(
            counted_start(1_000, 1.0, None, 10).is_err(),
            "ending now would start before 1970"
        );
    }
}

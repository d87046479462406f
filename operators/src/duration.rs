//! Listening durations: exact while few, an HdrHistogram beyond.
//!
//! Values are whole seconds (rounded), the sum is kept exactly in
//! milliseconds. Up to [`EXACT_LIMIT`] values a pane keeps them in a list, so
//! sparse streams (a few plays a minute) cost a few bytes and merge for free;
//! beyond that an HdrHistogram with two significant figures (1% precision,
//! about 1,300 counters) takes over. A sliding window merges ten of these
//! every time it closes, so merge cost matters as much as record cost.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest duration recorded; longer plays are clamped to it.
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
const MAX_DURATION_SECS: u64 = MAX_DURATION_MS / 1000;

/// Values kept exactly before switching to the histogram.
pub const EXACT_LIMIT: usize = 256;

/// Durations of the streams in a pane or window.
#[derive(Clone, Debug, Default)]
pub struct DurationHistogram {
    values: Values,
    sum_ms: u64,
}

#[derive(Clone, Debug)]
enum Values {
    /// Whole seconds, unsorted.
    Few(Vec<u32>),
    /// Whole seconds.
    Many(Box<Histogram<u64>>),
}

impl Default for Values {
    fn default() -> Self {
        Values::Few(Vec::new())
    }
}

fn histogram() -> Box<Histogram<u64>> {
    Box::new(
        Histogram::new_with_bounds(1, MAX_DURATION_SECS, 2).expect("constant bounds are valid"),
    )
}

/// What a window reports about listening time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DurationSummary {
    /// Streams that carried a duration.
    pub count: u64,
    /// Total listening time.
    pub sum_secs: f64,
    /// Median.
    pub p50_secs: f64,
    /// 90th percentile.
    pub p90_secs: f64,
    /// 99th percentile.
    pub p99_secs: f64,
    /// Longest (within 1%, whole seconds).
    pub max_secs: f64,
}

/// Every value of a [`DurationHistogram`]: what a partial window carries to
/// be merged elsewhere. `few` while exact, else `many` as (value, count).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationState {
    sum_ms: u64,
    few: Vec<u32>,
    many: Vec<(u64, u64)>,
}

impl DurationHistogram {
    /// The values, for another process to merge.
    pub fn to_state(&self) -> DurationState {
        match &self.values {
            Values::Few(values) => DurationState {
                sum_ms: self.sum_ms,
                few: values.clone(),
                many: Vec::new(),
            },
            Values::Many(histogram) => DurationState {
                sum_ms: self.sum_ms,
                few: Vec::new(),
                many: histogram
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect(),
            },
        }
    }

    /// The histogram of [`DurationHistogram::to_state`]; None when the state
    /// is not one (values out of range, or both forms).
    pub fn from_state(state: &DurationState) -> Option<Self> {
        if !state.many.is_empty() {
            if !state.few.is_empty() {
                return None;
            }
            let mut many = histogram();
            for &(value, count) in &state.many {
                if value > MAX_DURATION_SECS {
                    return None;
                }
                many.record_n(value, count).ok()?;
            }
            return Some(Self {
                values: Values::Many(many),
                sum_ms: state.sum_ms,
            });
        }
        if state.few.len() > EXACT_LIMIT
            || state.few.iter().any(|&v| u64::from(v) > MAX_DURATION_SECS)
        {
            return None;
        }
        Some(Self {
            values: Values::Few(state.few.clone()),
            sum_ms: state.sum_ms,
        })
    }

    /// Record one listening time.
    #[inline]
    pub fn record(&mut self, duration_ms: u32) {
        let value_ms = u64::from(duration_ms).min(MAX_DURATION_MS);
        self.sum_ms += value_ms;
        self.record_secs(((value_ms + 500) / 1000) as u32);
    }

    #[inline]
    fn record_secs(&mut self, secs: u32) {
        match &mut self.values {
            Values::Few(values) if values.len() < EXACT_LIMIT => values.push(secs),
            Values::Few(values) => {
                let mut many = histogram();
                for &value in values.iter().chain([&secs]) {
                    many.saturating_record(u64::from(value));
                }
                self.values = Values::Many(many);
            }
            Values::Many(many) => many.saturating_record(u64::from(secs)),
        }
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &DurationHistogram) {
        self.sum_ms += other.sum_ms;
        match &other.values {
            Values::Few(values) => values.iter().for_each(|&secs| self.record_secs(secs)),
            Values::Many(theirs) => {
                if let Values::Few(values) = &self.values {
                    let mut many = histogram();
                    values
                        .iter()
                        .for_each(|&v| many.saturating_record(u64::from(v)));
                    self.values = Values::Many(many);
                }
                if let Values::Many(ours) = &mut self.values {
                    // Same bounds on both sides, so adding cannot fail.
                    let _ = ours.add(&**theirs);
                }
            }
        }
    }

    /// Count, sum and percentiles (HdrHistogram's definition: the value at
    /// rank ceil(q * count)).
    pub fn summary(&self) -> DurationSummary {
        let sum_secs = self.sum_ms as f64 / 1000.0;
        match &self.values {
            Values::Few(values) if values.is_empty() => DurationSummary::default(),
            Values::Few(values) => {
                let mut sorted = values.clone();
                sorted.sort_unstable();
                let at = |q: f64| {
                    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                    f64::from(sorted[rank - 1])
                };
                DurationSummary {
                    count: sorted.len() as u64,
                    sum_secs,
                    p50_secs: at(0.5),
                    p90_secs: at(0.9),
                    p99_secs: at(0.99),
                    max_secs: at(1.0),
                }
            }
            Values::Many(h) => DurationSummary {
                count: h.len(),
                sum_secs,
                p50_secs: h.value_at_quantile(0.5) as f64,
                p90_secs: h.value_at_quantile(0.9) as f64,
                p99_secs: h.value_at_quantile(0.99) as f64,
                max_secs: h.max() as f64,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_tracks_count_sum_and_percentiles() {
        let mut a = DurationHistogram::default();
        for s in 1..=100u32 {
            a.record(s * 1000);
        }
        let mut b = DurationHistogram::default();
        b.record(1_000);
        b.merge(&a);
        let summary = b.summary();
        assert_eq!(summary.count, 101);
        assert_eq!(summary.sum_secs, 5051.0);
        assert!((summary.p50_secs - 50.0).abs() <= 0.5, "{summary:?}");
        assert!((summary.max_secs - 100.0).abs() <= 1.0, "{summary:?}");
        assert_eq!(DurationHistogram::default().summary().count, 0);
    }

    #[test]
    fn exact_and_histogram_representations_agree_within_one_percent() {
        let mut few = DurationHistogram::default();
        let mut many = DurationHistogram::default();
        for i in 0..EXACT_LIMIT as u32 {
            few.record(120_000 + i * 700);
        }
        many.merge(&few);
        let mut big = DurationHistogram::default();
        for i in 0..EXACT_LIMIT as u32 {
            big.record(120_000 + i * 700);
            big.record(120_000 + i * 700);
        }
        many.merge(&big);
        assert!(matches!(few.values, Values::Few(_)) && matches!(many.values, Values::Many(_)));
        let (a, b) = (few.summary(), many.summary());
        assert_eq!((b.count, b.sum_secs), (3 * a.count, 3.0 * a.sum_secs));
        for (x, y) in [
            (a.p50_secs, b.p50_secs),
            (a.p99_secs, b.p99_secs),
            (a.max_secs, b.max_secs),
        ] {
            assert!(y >= x && y <= x * 1.01 + 1.0, "{a:?} vs {b:?}");
        }
    }
}

//! Listening-duration histogram (HdrHistogram, millisecond resolution).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest duration recorded exactly; longer plays are clamped to it.
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// Durations of the streams in a pane or window.
#[derive(Clone, Debug)]
pub struct DurationHistogram {
    histogram: Histogram<u64>,
    sum_ms: u64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        Self {
            // Two significant figures: 1% precision is plenty for a listening time.
            histogram: Histogram::new_with_bounds(1, MAX_DURATION_MS, 2)
                .expect("constant bounds are valid"),
            sum_ms: 0,
        }
    }
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
    /// Longest (within 1%).
    pub max_secs: f64,
}

impl DurationHistogram {
    /// Record one listening time.
    #[inline]
    pub fn record(&mut self, duration_ms: u32) {
        let value = u64::from(duration_ms).min(MAX_DURATION_MS);
        self.histogram.saturating_record(value);
        self.sum_ms += value;
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &DurationHistogram) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_ms += other.sum_ms;
    }

    /// Count, sum and percentiles.
    pub fn summary(&self) -> DurationSummary {
        let secs = |ms: u64| ms as f64 / 1000.0;
        let h = &self.histogram;
        if h.is_empty() {
            return DurationSummary::default();
        }
        DurationSummary {
            count: h.len(),
            sum_secs: secs(self.sum_ms),
            p50_secs: secs(h.value_at_quantile(0.5)),
            p90_secs: secs(h.value_at_quantile(0.9)),
            p99_secs: secs(h.value_at_quantile(0.99)),
            max_secs: secs(h.max()),
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
}

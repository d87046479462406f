//! A Prometheus summary backed by an HdrHistogram: latency quantiles since
//! start, exported with the summary type (`quantile` labels, `_sum`,
//! `_count`) so Prometheus and `promtool check metrics` read them as such.
//!
//! The prometheus crate has no summary with chosen quantiles; HdrHistogram
//! gives exact-enough quantiles (3 significant digits) at a fixed cost.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType, Quantile, Summary};

/// Quantiles exported by every latency summary.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 1.0];

struct Recorded {
    histogram: Histogram<u64>,
    sum: u64,
}

/// The summary; clones share state. Register a clone, record on another.
#[derive(Clone)]
pub struct HdrSummary {
    desc: Arc<Desc>,
    seconds_per_unit: f64,
    recorded: Arc<Mutex<Recorded>>,
}

impl HdrSummary {
    /// A summary named `name`, recording integer values in units of
    /// `seconds_per_unit` (1e-9 for nanoseconds) up to `max_units`.
    pub fn new(name: &str, help: &str, seconds_per_unit: f64, max_units: u64) -> Self {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            Vec::new(),
            Default::default(),
        )
        .expect("valid metric name and help");
        Self {
            desc: Arc::new(desc),
            seconds_per_unit,
            recorded: Arc::new(Mutex::new(Recorded {
                histogram: Histogram::new_with_bounds(1, max_units, 3).expect("valid bounds"),
                sum: 0,
            })),
        }
    }

    /// Record values (in this summary's units); values past the bound count
    /// as the bound.
    pub fn record_all(&self, values: impl IntoIterator<Item = u64>) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        for value in values {
            let value = value.max(1);
            recorded.histogram.saturating_record(value);
            recorded.sum = recorded.sum.saturating_add(value);
        }
    }

    /// The recorded value at quantile `q`, in seconds.
    pub fn quantile_seconds(&self, q: f64) -> f64 {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.histogram.value_at_quantile(q) as f64 * self.seconds_per_unit
    }
}

impl Collector for HdrSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = Summary::default();
        summary.set_sample_count(recorded.histogram.len());
        summary.set_sample_sum(recorded.sum as f64 * self.seconds_per_unit);
        // No quantile before the first value (they would read as 0 s).
        if !recorded.histogram.is_empty() {
            let quantiles = QUANTILES
                .iter()
                .map(|&q| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(q);
                    let value = recorded.histogram.value_at_quantile(q);
                    quantile.set_value(value as f64 * self.seconds_per_unit);
                    quantile
                })
                .collect();
            summary.set_quantile(quantiles);
        }
        let mut metric = Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.mut_metric().push(metric);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    #[test]
    fn exports_a_summary_whose_quantiles_match_the_values() {
        let summary = HdrSummary::new("test_latency_seconds", "Test.", 1e-6, 60_000_000);
        let registry = Registry::new();
        registry.register(Box::new(summary.clone())).unwrap();
        let encode = || {
            let mut out = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let empty = encode();
        assert!(
            empty.contains("# TYPE test_latency_seconds summary"),
            "{empty}"
        );
        assert!(empty.contains("test_latency_seconds_count 0"), "{empty}");
        assert!(!empty.contains("quantile="), "{empty}");

        // 1..=1000 microseconds.
        summary.record_all(1..=1000);
        let text = encode();
        assert!(text.contains("test_latency_seconds_count 1000"), "{text}");
        let value = |key: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(key)).expect(key);
            line[key.len()..].trim().parse().unwrap()
        };
        assert!(
            (value("test_latency_seconds_sum") - 0.5005).abs() < 1e-9,
            "{text}"
        );
        assert!((value("test_latency_seconds{quantile=\"0.5\"}") - 500e-6).abs() < 1e-9);
        assert!((value("test_latency_seconds{quantile=\"0.99\"}") - 990e-6).abs() < 1e-9);
        assert!((value("test_latency_seconds{quantile=\"1\"}") - 1e-3).abs() < 1e-9);
        assert!((summary.quantile_seconds(0.99) - 990e-6).abs() < 1e-9);
    }
}

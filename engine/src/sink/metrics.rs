//! Closed windows to the Prometheus series (gauges of the latest window,
//! the leaderboard, trending songs).

use std::io;
use std::sync::Arc;

use super::{ClosedWindow, Sink, TrendingWindow};
use crate::metrics::Metrics;

/// Updates the window series of the registry.
pub struct MetricsSink(pub Arc<Metrics>);

impl Sink for MetricsSink {
    fn window(&mut self, window: &ClosedWindow<'_>) -> io::Result<()> {
        self.0.on_window(window.label, window.result);
        Ok(())
    }

    fn trending(&mut self, trending: &TrendingWindow<'_>) {
        self.0.on_trending(trending.label, trending.trending);
    }

    fn name(&self) -> &'static str {
        "metrics"
    }
}

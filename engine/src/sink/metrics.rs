//! Closed windows to the Prometheus series (gauges of the latest window,
//! the leaderboard, trending songs, sessions).

use std::io;
use std::sync::Arc;

use downbeat_operators::ClosedSession;

use super::{ClosedWindow, Sink, TrendingWindow};
use crate::metrics::Metrics;
use crate::pipeline::ForecastUpdate;

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

    fn forecast(&mut self, update: &ForecastUpdate, label: &str) {
        self.0.on_forecast(
            label,
            update.streams,
            update.made_for_it,
            &update.ahead,
            update.profile_seen,
        );
    }

    fn sessions(&mut self, sessions: &[ClosedSession]) -> io::Result<()> {
        self.0.on_sessions(sessions);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "metrics"
    }
}

//! Window specifications and the one bucketing function every window uses.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::EventTimeMs;
use crate::trending::TrendingError;

/// Start of the bucket of `size_ms` that holds `time_ms` (buckets are aligned
/// to the epoch; works for negative times too).
#[inline]
pub fn bucket_start(time_ms: EventTimeMs, size_ms: i64) -> EventTimeMs {
    time_ms.div_euclid(size_ms) * size_ms
}

/// The two window shapes downbeat emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Width equals slide: every event is in exactly one window.
    Tumbling,
    /// Width is a multiple of the slide: every event is in width/slide windows.
    Sliding,
}

impl WindowKind {
    /// The name used in window results (`"tumbling"` or `"sliding"`).
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Tumbling => "tumbling",
            WindowKind::Sliding => "sliding",
        }
    }
}

/// Which configured window a result belongs to: its place in the
/// aggregator's window list. Two windows of the same kind (say a 1-minute
/// and a 5-minute tumbling window) have different ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowId(pub u16);

impl WindowId {
    /// The index into the window list.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Why a window specification was refused.
#[derive(Debug, Error, PartialEq)]
pub enum WindowError {
    /// Width or slide was zero or negative: give both as positive durations.
    #[error(
        "window width and slide must be positive (got width {width_ms} ms, slide {slide_ms} ms)"
    )]
    NotPositive {
        /// The width given.
        width_ms: i64,
        /// The slide given.
        slide_ms: i64,
    },
    /// Width must be a whole number of slides so windows tile the panes.
    #[error("window width {width_ms} ms is not a multiple of its slide {slide_ms} ms")]
    WidthNotMultipleOfSlide {
        /// The width given.
        width_ms: i64,
        /// The slide given.
        slide_ms: i64,
    },
    /// No window was configured at all.
    #[error("at least one window must be configured")]
    NoWindows,
    /// Top-k needs at least one entry.
    #[error("top_k must be at least 1")]
    ZeroTopK,
    /// The trend detector's settings were refused: fix the field named.
    #[error(transparent)]
    Trending(#[from] TrendingError),
}

/// One window shape: kind, width and slide, validated at construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    kind: WindowKind,
    width_ms: i64,
    slide_ms: i64,
}

impl WindowSpec {
    /// A tumbling window of `width_ms`.
    pub fn tumbling(width_ms: i64) -> Result<Self, WindowError> {
        Self::build(WindowKind::Tumbling, width_ms, width_ms)
    }

    /// A sliding window of `width_ms` advancing every `slide_ms`.
    pub fn sliding(width_ms: i64, slide_ms: i64) -> Result<Self, WindowError> {
        Self::build(WindowKind::Sliding, width_ms, slide_ms)
    }

    fn build(kind: WindowKind, width_ms: i64, slide_ms: i64) -> Result<Self, WindowError> {
        if width_ms <= 0 || slide_ms <= 0 {
            return Err(WindowError::NotPositive { width_ms, slide_ms });
        }
        if width_ms % slide_ms != 0 {
            return Err(WindowError::WidthNotMultipleOfSlide { width_ms, slide_ms });
        }
        Ok(Self {
            kind,
            width_ms,
            slide_ms,
        })
    }

    /// Tumbling or sliding.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// Width in milliseconds.
    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// Slide in milliseconds.
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }

    /// A short label for metrics: the width as `"1m"`, `"10m"`, `"30s"`, `"1h"`.
    pub fn label(&self) -> String {
        let secs = self.width_ms / 1000;
        if self.width_ms % 1000 != 0 {
            format!("{}ms", self.width_ms)
        } else if secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    }
}

/// The pane width shared by `windows`: the greatest common divisor of every
/// width and slide, so each window starts and ends on a pane boundary.
pub fn pane_ms(windows: &[WindowSpec]) -> i64 {
    windows
        .iter()
        .fold(0, |g, w| gcd(gcd(g, w.width_ms()), w.slide_ms()))
}

/// Greatest common divisor, for the pane size shared by all windows.
pub(crate) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_epoch_aligned_including_negative_times() {
        assert_eq!(bucket_start(0, 60_000), 0);
        assert_eq!(bucket_start(59_999, 60_000), 0);
        assert_eq!(bucket_start(60_000, 60_000), 60_000);
        assert_eq!(bucket_start(-1, 60_000), -60_000);
    }

    #[test]
    fn specs_validate_width_and_slide() {
        assert!(WindowSpec::sliding(600_000, 60_000).is_ok());
        assert_eq!(
            WindowSpec::sliding(90_000, 60_000),
            Err(WindowError::WidthNotMultipleOfSlide {
                width_ms: 90_000,
                slide_ms: 60_000
            })
        );
        assert!(WindowSpec::tumbling(0).is_err());
        assert_eq!(WindowSpec::tumbling(60_000).unwrap().label(), "1m");
        assert_eq!(WindowSpec::sliding(600_000, 60_000).unwrap().label(), "10m");
        assert_eq!(WindowSpec::tumbling(30_000).unwrap().label(), "30s");
    }
}

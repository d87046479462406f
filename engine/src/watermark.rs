//! The event-time watermark: largest event time seen minus the allowed
//! lateness, advanced by the wall clock when the source goes idle.

/// Settings of the watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind the largest event time an event may still arrive and
    /// be counted exactly.
    pub allowed_lateness_ms: i64,
    /// After this long without events the watermark follows the wall clock
    /// (minus the lateness), so the last windows of a quiet stream close.
    pub idle_timeout_ms: i64,
}

/// Tracks the watermark. It never moves backwards.
#[derive(Clone, Debug)]
pub struct Watermark {
    config: WatermarkConfig,
    max_event_ms: Option<i64>,
    current_ms: Option<i64>,
    last_event_wall_ms: Option<i64>,
}

impl Watermark {
    /// A watermark that has seen nothing.
    pub fn new(config: WatermarkConfig) -> Self {
        Self {
            config,
            max_event_ms: None,
            current_ms: None,
            last_event_wall_ms: None,
        }
    }

    /// An event at `event_ms` arrived. Returns the new watermark if it moved.
    #[inline]
    pub fn observe(&mut self, event_ms: i64) -> Option<i64> {
        if self.max_event_ms.is_some_and(|max| event_ms <= max) {
            return None;
        }
        self.max_event_ms = Some(event_ms);
        self.raise(event_ms.saturating_sub(self.config.allowed_lateness_ms))
    }

    /// Note that the source delivered something at wall time `now_ms`
    /// (called once per batch, not per event).
    pub fn source_active(&mut self, now_ms: i64) {
        self.last_event_wall_ms = Some(now_ms);
    }

    /// Nothing arrived for the idle timeout.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        let idle_since = self.last_event_wall_ms.unwrap_or(i64::MIN);
        now_ms.saturating_sub(idle_since) >= self.config.idle_timeout_ms
    }

    /// The idle rule: when nothing arrived for `idle_timeout_ms`, follow the
    /// wall clock minus the lateness. Returns the new watermark if it moved.
    pub fn on_idle_check(&mut self, now_ms: i64) -> Option<i64> {
        let idle_since = self.last_event_wall_ms.unwrap_or(i64::MIN);
        if now_ms.saturating_sub(idle_since) < self.config.idle_timeout_ms {
            return None;
        }
        // Nothing seen yet: nothing to close.
        self.current_ms?;
        self.raise(now_ms.saturating_sub(self.config.allowed_lateness_ms))
    }

    fn raise(&mut self, candidate_ms: i64) -> Option<i64> {
        match self.current_ms {
            Some(current) if candidate_ms <= current => None,
            _ => {
                self.current_ms = Some(candidate_ms);
                self.current_ms
            }
        }
    }

    /// The current watermark, once any event was seen.
    pub fn current_ms(&self) -> Option<i64> {
        self.current_ms
    }

    /// The largest event time seen.
    pub fn max_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: WatermarkConfig = WatermarkConfig {
        allowed_lateness_ms: 10_000,
        idle_timeout_ms: 5_000,
    };

    #[test]
    fn follows_max_event_time_minus_lateness_and_never_goes_back() {
        let mut wm = Watermark::new(CONFIG);
        assert_eq!(wm.observe(100_000), Some(90_000));
        assert_eq!(wm.observe(95_000), None);
        assert_eq!(wm.current_ms(), Some(90_000));
        assert_eq!(wm.observe(100_001), Some(90_001));
    }

    #[test]
    fn idle_source_advances_with_the_wall_clock() {
        let mut wm = Watermark::new(CONFIG);
        assert_eq!(
            wm.on_idle_check(1_000_000),
            None,
            "nothing seen, nothing to close"
        );
        wm.observe(100_000);
        wm.source_active(1_000_000);
        assert_eq!(wm.on_idle_check(1_004_999), None, "not idle yet");
        assert_eq!(wm.on_idle_check(1_005_000), Some(995_000));
        // The wall clock behind event time never pulls the watermark back.
        let mut ahead = Watermark::new(CONFIG);
        ahead.observe(5_000_000);
        assert_eq!(ahead.on_idle_check(1_000_000), None);
    }
}

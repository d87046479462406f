//! Event-time outliers: one event far ahead of its stream (a broken clock,
//! a flipped digit) must not move the watermark, or every later event
//! would be late.
//!
//! The rule. The guard knows the stream's largest *confirmed* event time.
//! An event more than `jump_ms` beyond it is held back: neither counted nor
//! moving the watermark. Held events are confirmed as a real jump (a quiet
//! night, a restart after an outage) once `confirm_events` of them lie
//! within `jump_ms` of each other: the stream's time moves on, and every
//! held event now within reach is released, oldest first (so a lone event
//! of a sparse stream's quiet night is not made late by the morning). A held event is an outlier, and is
//! rejected, once `reject_after_events` ordinary events have arrived after
//! it without confirming it. Until the first events confirm each other, the
//! stream has no position and every event waits; at the end of input the
//! largest group of held events that agree with each other is released, a
//! lone event far ahead of the rest is rejected.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::EventTimeMs;

/// The outlier rule's parameters (`[input.outliers]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// An event further than this ahead of the stream is held back.
    pub jump_ms: i64,
    /// Held events that agree (within `jump_ms`) confirm a jump at this many.
    pub confirm_events: usize,
    /// A held event is rejected after this many ordinary events.
    pub reject_after_events: usize,
    /// At most this many events are held; beyond, the oldest is rejected.
    pub max_held: usize,
}

impl Default for OutlierConfig {
    /// 15 minutes, 3 events to confirm, rejected after 8 ordinary events.
    fn default() -> Self {
        Self {
            jump_ms: 15 * 60_000,
            confirm_events: 3,
            reject_after_events: 8,
            max_held: 64,
        }
    }
}

/// Why outlier settings were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OutlierError {
    /// A setting is out of range: fix the field named.
    #[error("outlier setting `{field}` must be {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its range.
        expected: &'static str,
    },
}

impl OutlierConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), OutlierError> {
        let out_of_range = |field, expected| Err(OutlierError::OutOfRange { field, expected });
        if self.jump_ms < 1_000 {
            return out_of_range("jump_ms", "at least 1000");
        }
        if !(1..=self.max_held).contains(&self.confirm_events) {
            return out_of_range("confirm_events", "between 1 and max_held");
        }
        if self.reject_after_events == 0 {
            return out_of_range("reject_after_events", "at least 1");
        }
        if self.max_held > 100_000 {
            return out_of_range("max_held", "at most 100000");
        }
        Ok(())
    }
}

/// What the guard decided about an event, in the order to apply it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Count it now.
    Accept(T),
    /// An unconfirmed outlier: refuse it.
    Reject(T),
}

#[derive(Debug)]
struct Held<T> {
    time_ms: EventTimeMs,
    item: T,
    /// Ordinary events seen since it was held.
    outvoted: usize,
}

/// Holds events far ahead of their stream until the stream confirms them.
#[derive(Debug)]
pub struct OutlierGuard<T> {
    config: OutlierConfig,
    confirmed_max_ms: Option<EventTimeMs>,
    held: VecDeque<Held<T>>,
}

impl<T> OutlierGuard<T> {
    /// A guard for a stream that has not started (validate `config` first).
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            confirmed_max_ms: None,
            held: VecDeque::new(),
        }
    }

    /// A guard resumed from a checkpoint of the stream's position; the
    /// events it held then are put back with [`OutlierGuard::hold`] as they
    /// are read again.
    pub fn resume(config: OutlierConfig, confirmed_max_ms: Option<EventTimeMs>) -> Self {
        Self {
            confirmed_max_ms,
            ..Self::new(config)
        }
    }

    /// Events held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The largest confirmed event time: every event counted so far is at
    /// or before it.
    pub fn confirmed_max_ms(&self) -> Option<EventTimeMs> {
        self.confirmed_max_ms
    }

    /// The events held, in arrival order, with how many ordinary events
    /// arrived since each (what a checkpoint keeps).
    pub fn held_items(&self) -> impl Iterator<Item = (&T, usize)> {
        self.held.iter().map(|held| (&held.item, held.outvoted))
    }

    /// Put back an event held before a restart, with the ordinary events
    /// counted against it then; no verdict follows.
    pub fn hold(&mut self, time_ms: EventTimeMs, item: T, outvoted: usize) {
        self.held.push_back(Held {
            time_ms,
            item,
            outvoted,
        });
    }

    /// The fast path: true (and the event counts as accepted) when nothing
    /// is held and the event is within reach of the stream; otherwise the
    /// caller must [`OutlierGuard::offer`] it.
    #[inline]
    pub fn accepts_now(&mut self, time_ms: EventTimeMs) -> bool {
        let within = self
            .confirmed_max_ms
            .is_some_and(|max| time_ms <= max.saturating_add(self.config.jump_ms));
        if within && self.held.is_empty() {
            self.confirm(time_ms);
            return true;
        }
        false
    }

    /// An event at `time_ms` arrives; verdicts on it and on held events are
    /// appended to `out`, in the order to apply them.
    pub fn offer(&mut self, time_ms: EventTimeMs, item: T, out: &mut Vec<Verdict<T>>) {
        match self.confirmed_max_ms {
            Some(max) if time_ms <= max.saturating_add(self.config.jump_ms) => {
                self.confirm(time_ms);
                out.push(Verdict::Accept(item));
                self.outvote(out);
                self.release_caught_up(out);
            }
            _ => {
                self.held.push_back(Held {
                    time_ms,
                    item,
                    outvoted: 0,
                });
                if let Some((low, high)) = self.agreeing_group(self.config.confirm_events) {
                    self.release_group(low, high, out);
                    self.release_caught_up(out);
                } else if self.held.len() > self.config.max_held {
                    if let Some(oldest) = self.held.pop_front() {
                        out.push(Verdict::Reject(oldest.item));
                    }
                }
            }
        }
    }

    /// End of input (or the source fell idle): release the largest group
    /// of held events that agree with each other if the stream has no
    /// position yet, or if two or more agree; reject the rest.
    pub fn flush(&mut self, out: &mut Vec<Verdict<T>>) {
        let least = if self.confirmed_max_ms.is_none() {
            1
        } else {
            2
        };
        if let Some((low, high)) = self.agreeing_group(least) {
            self.release_group(low, high, out);
            self.release_caught_up(out);
        }
        out.extend(self.held.drain(..).map(|held| Verdict::Reject(held.item)));
    }

    fn confirm(&mut self, time_ms: EventTimeMs) {
        if self.confirmed_max_ms.is_none_or(|max| time_ms > max) {
            self.confirmed_max_ms = Some(time_ms);
        }
    }

    /// An ordinary event arrived: held events that it outvotes enough
    /// times are rejected.
    fn outvote(&mut self, out: &mut Vec<Verdict<T>>) {
        let limit = self.config.reject_after_events;
        for held in &mut self.held {
            held.outvoted += 1;
        }
        while let Some(index) = self.held.iter().position(|held| held.outvoted >= limit) {
            if let Some(held) = self.held.remove(index) {
                out.push(Verdict::Reject(held.item));
            }
        }
    }

    /// The widest range of held times within `jump_ms` holding at least
    /// `least` events (the earliest such range on ties).
    fn agreeing_group(&self, least: usize) -> Option<(EventTimeMs, EventTimeMs)> {
        let mut times: Vec<EventTimeMs> = self.held.iter().map(|held| held.time_ms).collect();
        times.sort_unstable();
        let mut best: Option<(usize, EventTimeMs, EventTimeMs)> = None;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] > self.config.jump_ms {
                start += 1;
            }
            let size = end - start + 1;
            if size >= least && best.is_none_or(|(best_size, _, _)| size > best_size) {
                best = Some((size, times[start], times[end]));
            }
        }
        best.map(|(_, low, high)| (low, high))
    }

    /// The held events in `low..=high` agree. Before the stream has a
    /// position they start it, in arrival order (as a stream that begins
    /// out of order would be read). After, they are a real jump: the stream
    /// moves to `high`, and every held event now within reach is released,
    /// oldest first.
    fn release_group(&mut self, low: EventTimeMs, high: EventTimeMs, out: &mut Vec<Verdict<T>>) {
        if self.confirmed_max_ms.is_none() {
            let mut kept = VecDeque::with_capacity(self.held.len());
            for held in self.held.drain(..) {
                if (low..=high).contains(&held.time_ms) {
                    out.push(Verdict::Accept(held.item));
                } else {
                    kept.push_back(held);
                }
            }
            self.held = kept;
        }
        self.confirm(high);
        self.release_caught_up(out);
    }

    /// Held events the stream has now caught up with are ordinary: released
    /// oldest first (by event time, then arrival), so a sparse stream's
    /// events come out in time order and none is made late by a newer one
    /// released before it.
    fn release_caught_up(&mut self, out: &mut Vec<Verdict<T>>) {
        while let Some(max) = self.confirmed_max_ms {
            let reach = max.saturating_add(self.config.jump_ms);
            let oldest = self
                .held
                .iter()
                .enumerate()
                .filter(|(_, held)| held.time_ms <= reach)
                .min_by_key(|(index, held)| (held.time_ms, *index))
                .map(|(index, _)| index);
            let Some(index) = oldest else {
                return;
            };
            if let Some(held) = self.held.remove(index) {
                self.confirm(held.time_ms);
                out.push(Verdict::Accept(held.item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Feed `times` (item = index); returns (accepted, rejected) indexes.
    fn run(times: &[i64], config: OutlierConfig) -> (Vec<usize>, Vec<usize>) {
        let mut guard = OutlierGuard::new(config);
        let mut out = Vec::new();
        for (index, &time) in times.iter().enumerate() {
            guard.offer(time, index, &mut out);
        }
        guard.flush(&mut out);
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for verdict in out {
            match verdict {
                Verdict::Accept(i) => accepted.push(i),
                Verdict::Reject(i) => rejected.push(i),
            }
        }
        (accepted, rejected)
    }

    fn steady(count: usize, start: i64, step: i64) -> Vec<i64> {
        (0..count as i64).map(|i| start + i * step).collect()
    }

    #[test]
    fn isolated_outliers_are_rejected_and_the_rest_kept_in_order() {
        let mut times = steady(200, 1_000 * MIN, 1_000);
        times.insert(50, 1_000 * MIN + 120 * MIN);
        times.insert(100, 1_000 * MIN + 23 * 60 * MIN);
        times.insert(150, 1_000 * MIN + 200 * 24 * 60 * MIN);
        let (accepted, rejected) = run(&times, OutlierConfig::default());
        assert_eq!(rejected, vec![50, 100, 150]);
        let mut normal: Vec<usize> = (0..times.len())
            .filter(|i| ![50, 100, 150].contains(i))
            .collect();
        // The first events wait for each other, then arrive in order.
        assert_eq!(accepted, std::mem::take(&mut normal));
    }

    /// A guard snapshotted mid-stream (position and held events) and
    /// resumed gives the same verdicts as one that never stopped.
    #[test]
    fn a_resumed_guard_decides_as_the_uninterrupted_one() {
        let mut times = steady(60, 1_000 * MIN, 1_000);
        times.insert(20, 1_000 * MIN + 23 * 60 * MIN);
        times.insert(22, 1_000 * MIN + 120 * MIN);
        // A real jump whose first events straddle the snapshot.
        times.extend(steady(10, 1_500 * MIN, 1_000));
        let whole = run(&times, OutlierConfig::default());
        for cut in [1, 21, 23, 25, 61, 63, 64, 66] {
            let mut first = OutlierGuard::new(OutlierConfig::default());
            let mut out = Vec::new();
            for (index, &time) in times[..cut].iter().enumerate() {
                first.offer(time, index, &mut out);
            }
            let mut second =
                OutlierGuard::resume(OutlierConfig::default(), first.confirmed_max_ms());
            for (&index, outvoted) in first.held_items() {
                second.hold(times[index], index, outvoted);
            }
            for (index, &time) in times.iter().enumerate().skip(cut) {
                second.offer(time, index, &mut out);
            }
            second.flush(&mut out);
            let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
            for verdict in out {
                match verdict {
                    Verdict::Accept(i) => accepted.push(i),
                    Verdict::Reject(i) => rejected.push(i),
                }
            }
            assert_eq!((accepted, rejected), whole, "snapshot after {cut} events");
        }
    }

    /// A sparse stream (one Kafka partition of few users): a lone event in
    /// the night, then the morning. The morning confirms the jump; the
    /// night's event, now within reach, comes out before it, so it is not
    /// made late by the newer events.
    #[test]
    fn released_events_come_out_oldest_first() {
        let mut times = steady(10, 0, 30_000);
        times.push(3 * 60 * MIN);
        times.extend(steady(5, 6 * 60 * MIN, 30_000));
        let (accepted, rejected) = run(&times, OutlierConfig::default());
        assert!(rejected.is_empty());
        assert_eq!(accepted, (0..times.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_real_gap_is_confirmed_by_the_events_after_it() {
        // A quiet night: six hours without events, then the stream goes on.
        let mut times = steady(20, 0, 30_000);
        times.extend(steady(20, 6 * 60 * MIN, 30_000));
        let (accepted, rejected) = run(&times, OutlierConfig::default());
        assert!(rejected.is_empty());
        assert_eq!(
            accepted,
            (0..40).collect::<Vec<_>>(),
            "nothing lost, order kept"
        );
    }

    #[test]
    fn a_first_event_far_ahead_does_not_set_the_stream() {
        let mut times = vec![500 * 24 * 60 * MIN];
        times.extend(steady(30, 1_000 * MIN, 1_000));
        let (accepted, rejected) = run(&times, OutlierConfig::default());
        assert_eq!(rejected, vec![0]);
        assert_eq!(accepted, (1..31).collect::<Vec<_>>());
    }

    #[test]
    fn a_short_input_is_kept_whole_and_a_lone_last_event_far_ahead_is_not() {
        assert_eq!(run(&[5 * MIN], OutlierConfig::default()), (vec![0], vec![]));
        assert_eq!(
            run(&[5 * MIN, 6 * MIN], OutlierConfig::default()),
            (vec![0, 1], vec![])
        );
        let mut times = steady(30, 0, 1_000);
        times.push(10 * 24 * 60 * MIN);
        let (_, rejected) = run(&times, OutlierConfig::default());
        assert_eq!(rejected, vec![30]);
        // Two that agree at the end are a real jump, not outliers.
        times.push(10 * 24 * 60 * MIN + 1_000);
        let (accepted, rejected) = run(&times, OutlierConfig::default());
        assert!(rejected.is_empty() && accepted.len() == 32);
    }

    #[test]
    fn an_event_slightly_ahead_is_released_once_the_stream_catches_up() {
        // 20 minutes ahead, then the stream walks up to it in 1-minute steps.
        let mut times = vec![0, MIN, 2 * MIN, 22 * MIN];
        times.extend((3..12).map(|m| m * MIN));
        let config = OutlierConfig {
            reject_after_events: 100,
            ..OutlierConfig::default()
        };
        let (accepted, rejected) = run(&times, config);
        assert!(rejected.is_empty());
        let at = accepted.iter().position(|&i| i == 3).unwrap();
        assert_eq!(
            accepted[at - 1],
            8,
            "released once the stream reached 7 min (22 - 15)"
        );
    }

    #[test]
    fn the_hold_is_bounded() {
        let config = OutlierConfig {
            max_held: 4,
            confirm_events: 3,
            ..OutlierConfig::default()
        };
        // Events scattered a day apart never agree.
        let times: Vec<i64> = (0..10).map(|d| d * 24 * 60 * MIN).collect();
        let mut guard = OutlierGuard::new(config);
        let mut out = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            guard.offer(t, i, &mut out);
            assert!(guard.held() <= 4);
        }
        assert_eq!(out.len(), 6, "the oldest are rejected as others arrive");
    }

    #[test]
    fn settings_are_validated() {
        assert!(OutlierConfig::default().validate().is_ok());
        let bad = OutlierConfig {
            confirm_events: 0,
            ..OutlierConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}

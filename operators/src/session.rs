//! Listening sessions: the events of one (user id, session id) cut where two
//! consecutive events, by event time, are more than `gap_ms` apart.
//!
//! Events may arrive out of order (within the engine's allowed lateness): a
//! key keeps its open sessions as disjoint event-time ranges, and an event
//! within `gap_ms` of one or two of them joins (and bridges) them, so the
//! result does not depend on arrival order. A session closes when the
//! watermark passes its last event plus the gap (no event that could still
//! arrive can reach it); [`Sessionizer::flush`] closes the rest at end of
//! input. Closed sessions come out in (closing time, user, session id,
//! start) order, so the output is deterministic.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::EventTimeMs;

/// The `[sessions]` section of the engine's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session ends where two consecutive events are more than this far
    /// apart (default 30 minutes).
    pub gap_ms: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            gap_ms: 30 * 60_000,
        }
    }
}

/// Why a [`SessionConfig`] was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    /// The gap must be positive, e.g. 1800000 (30 minutes).
    #[error("sessions.gap_ms must be positive, got {0}")]
    Gap(i64),
}

impl SessionConfig {
    /// Checks every field and names the first one that is wrong.
    pub fn validate(&self) -> Result<(), SessionError> {
        if self.gap_ms <= 0 {
            return Err(SessionError::Gap(self.gap_ms));
        }
        Ok(())
    }
}

/// One event for the sessionizer: any page, of a user with a non-empty id.
#[derive(Clone, Copy, Debug)]
pub struct SessionEvent<'a> {
    /// Event time.
    pub time_ms: EventTimeMs,
    /// The user id, as in the input (not empty).
    pub user_id: &'a str,
    /// The session id as its JSON text in the input (`5132`, `"abc"`), or
    /// None where the format has none: the key is then the user alone.
    pub session_id: Option<&'a str>,
    /// True for a stream (a `NextSong`).
    pub play: bool,
}

/// A session's key: user id and session id (JSON text).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    /// The user id.
    pub user_id: Arc<str>,
    /// The session id's JSON text, if the input had one.
    pub session_id: Option<Arc<str>>,
}

/// An open session: its event-time range and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    /// First event time.
    pub start_ms: EventTimeMs,
    /// Last event time.
    pub end_ms: EventTimeMs,
    /// Events (any page).
    pub events: u64,
    /// Streams.
    pub plays: u64,
}

/// A closed session: one JSON line of `replay --sessions` and
/// `run --emit-sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClosedSession {
    /// The user id.
    pub user_id: Arc<str>,
    /// The session id as in the input (its JSON text, written back as raw
    /// JSON), or null.
    #[serde(serialize_with = "raw_json_or_null")]
    pub session_id: Option<Arc<str>>,
    /// First event time, epoch ms.
    pub start_ms: EventTimeMs,
    /// Last event time, epoch ms.
    pub end_ms: EventTimeMs,
    /// Events (any page).
    pub events: u64,
    /// Streams.
    pub plays: u64,
}

fn raw_json_or_null<S: serde::Serializer>(
    value: &Option<Arc<str>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) => json.serialize(serializer),
            // Not JSON text (a caller's bug): keep it, as a string.
            Err(_) => serializer.serialize_str(text),
        },
        None => serializer.serialize_none(),
    }
}

/// Builds sessions from events and closes them as the watermark passes.
pub struct Sessionizer {
    gap_ms: i64,
    /// Each key's open sessions, disjoint and ordered by start.
    open: HashMap<SessionKey, Vec<OpenSession>>,
    /// (closing time = end + gap, key, start) of every open session.
    closing: BTreeSet<(EventTimeMs, SessionKey, EventTimeMs)>,
}

impl Sessionizer {
    /// A sessionizer with `config`'s gap.
    pub fn new(config: &SessionConfig) -> Result<Self, SessionError> {
        config.validate()?;
        Ok(Self {
            gap_ms: config.gap_ms,
            open: HashMap::new(),
            closing: BTreeSet::new(),
        })
    }

    /// Open sessions.
    pub fn open_sessions(&self) -> usize {
        self.closing.len()
    }

    /// Add one event: it starts a session, extends one, or bridges several
    /// of its key that it lies within the gap of.
    pub fn add(&mut self, event: SessionEvent<'_>) {
        let key = self.key(event);
        let gap = self.gap_ms;
        let sessions = self.open.entry(key.clone()).or_default();
        let mut merged = OpenSession {
            start_ms: event.time_ms,
            end_ms: event.time_ms,
            events: 1,
            plays: u64::from(event.play),
        };
        // The sessions this event reaches: within the gap of its range.
        let reached = |s: &OpenSession| {
            s.start_ms.saturating_sub(gap) <= event.time_ms
                && event.time_ms <= s.end_ms.saturating_add(gap)
        };
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for session in sessions.drain(..) {
            if reached(&session) {
                self.closing.remove(&(
                    session.end_ms.saturating_add(gap),
                    key.clone(),
                    session.start_ms,
                ));
                merged.start_ms = merged.start_ms.min(session.start_ms);
                merged.end_ms = merged.end_ms.max(session.end_ms);
                merged.events += session.events;
                merged.plays += session.plays;
            } else {
                kept.push(session);
            }
        }
        self.closing.insert((
            merged.end_ms.saturating_add(gap),
            key.clone(),
            merged.start_ms,
        ));
        let at = kept.partition_point(|s| s.start_ms < merged.start_ms);
        kept.insert(at, merged);
        *sessions = kept;
    }

    /// Close every session whose last event plus the gap is before
    /// `watermark_ms`.
    pub fn advance(&mut self, watermark_ms: EventTimeMs, out: &mut Vec<ClosedSession>) {
        while let Some(first) = self.closing.first() {
            if first.0 >= watermark_ms {
                break;
            }
            let (_, key, start_ms) = self.closing.pop_first().expect("not empty");
            self.close(key, start_ms, out);
        }
    }

    /// End of input: close every open session.
    pub fn flush(&mut self, out: &mut Vec<ClosedSession>) {
        while let Some((_, key, start_ms)) = self.closing.pop_first() {
            self.close(key, start_ms, out);
        }
    }

    /// Every open session, for a checkpoint.
    pub fn snapshot(&self) -> Vec<(SessionKey, OpenSession)> {
        let mut all: Vec<(SessionKey, OpenSession)> = self
            .open
            .iter()
            .flat_map(|(key, sessions)| sessions.iter().map(|s| (key.clone(), *s)))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1.start_ms).cmp(&(&b.0, b.1.start_ms)));
        all
    }

    /// Open sessions from a checkpoint, added to what is held.
    pub fn restore(&mut self, sessions: Vec<(SessionKey, OpenSession)>) {
        let gap = self.gap_ms;
        for (key, session) in sessions {
            self.closing.insert((
                session.end_ms.saturating_add(gap),
                key.clone(),
                session.start_ms,
            ));
            let held = self.open.entry(key).or_default();
            let at = held.partition_point(|s| s.start_ms < session.start_ms);
            held.insert(at, session);
        }
    }

    fn key(&self, event: SessionEvent<'_>) -> SessionKey {
        // Reuse the key's Arcs when the key is open (the usual case).
        let probe = SessionKey {
            user_id: Arc::from(event.user_id),
            session_id: event.session_id.map(Arc::from),
        };
        match self.open.get_key_value(&probe) {
            Some((key, _)) => key.clone(),
            None => probe,
        }
    }

    fn close(&mut self, key: SessionKey, start_ms: EventTimeMs, out: &mut Vec<ClosedSession>) {
        let Some(sessions) = self.open.get_mut(&key) else {
            return;
        };
        let Some(position) = sessions.iter().position(|s| s.start_ms == start_ms) else {
            return;
        };
        let session = sessions.remove(position);
        if sessions.is_empty() {
            self.open.remove(&key);
        }
        out.push(ClosedSession {
            user_id: key.user_id,
            session_id: key.session_id,
            start_ms: session.start_ms,
            end_ms: session.end_ms,
            events: session.events,
            plays: session.plays,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const GAP: i64 = 100;

    /// (time, user, session, play) of a test event.
    type Event = (i64, u8, Option<u8>, bool);
    /// (user, session, start, end, events, plays) of a session.
    type Flat = (String, Option<String>, i64, i64, u64, u64);
    type Key = (String, Option<String>);

    fn flat(sessions: &[ClosedSession]) -> Vec<Flat> {
        let mut flat: Vec<Flat> = sessions
            .iter()
            .map(|s| {
                (
                    s.user_id.to_string(),
                    s.session_id.as_deref().map(str::to_owned),
                    s.start_ms,
                    s.end_ms,
                    s.events,
                    s.plays,
                )
            })
            .collect();
        flat.sort();
        flat
    }

    /// From scratch: group by key, sort by time, cut at gaps over `GAP`.
    fn oracle(events: &[Event]) -> Vec<Flat> {
        let mut by_key: BTreeMap<Key, Vec<(i64, bool)>> = BTreeMap::new();
        for &(t, user, session, play) in events {
            by_key
                .entry((format!("u{user}"), session.map(|s| s.to_string())))
                .or_default()
                .push((t, play));
        }
        let mut out = Vec::new();
        for ((user, session), mut times) in by_key {
            times.sort_unstable();
            let finish =
                |out: &mut Vec<Flat>, (start, end, events, plays): (i64, i64, u64, u64)| {
                    out.push((user.clone(), session.clone(), start, end, events, plays));
                };
            let mut current: Option<(i64, i64, u64, u64)> = None;
            for (t, play) in times {
                current = match current {
                    Some((start, end, events, plays)) if t - end <= GAP => {
                        Some((start, t, events + 1, plays + u64::from(play)))
                    }
                    Some(done) => {
                        finish(&mut out, done);
                        Some((t, t, 1, u64::from(play)))
                    }
                    None => Some((t, t, 1, u64::from(play))),
                };
            }
            if let Some(done) = current {
                finish(&mut out, done);
            }
        }
        out.sort();
        out
    }

    /// Feed `events` in the given order with the watermark `lateness` behind
    /// the largest time seen (events behind it are what the engine drops as
    /// late; the generator below keeps within it), then flush.
    fn run(events: &[Event], lateness: i64) -> Vec<Flat> {
        let mut sessionizer = Sessionizer::new(&SessionConfig { gap_ms: GAP }).unwrap();
        let mut out = Vec::new();
        let mut max = i64::MIN;
        let names: Vec<Key> = events
            .iter()
            .map(|&(_, user, session, _)| (format!("u{user}"), session.map(|s| s.to_string())))
            .collect();
        for (&(t, _, _, play), (user, session)) in events.iter().zip(&names) {
            sessionizer.add(SessionEvent {
                time_ms: t,
                user_id: user,
                session_id: session.as_deref(),
                play,
            });
            max = max.max(t);
            sessionizer.advance(max - lateness, &mut out);
        }
        sessionizer.flush(&mut out);
        flat(&out)
    }

    proptest! {
        /// Out of order within the lateness, with bridging events: the same
        /// sessions as the from-scratch cut, and nothing closed early.
        #[test]
        fn matches_a_from_scratch_cut(
            steps in prop::collection::vec((0i64..80, 0u8..3, prop::option::of(0u8..2), any::<bool>(), 0i64..60), 1..120)
        ) {
            // Times walk forward; each event is shifted back by up to 59 ms
            // (the lateness is 60).
            let mut clock = 0;
            let events: Vec<Event> = steps
                .iter()
                .map(|&(step, user, session, play, back)| {
                    clock += step;
                    (clock - back, user, session, play)
                })
                .collect();
            let got = run(&events, 60);
            prop_assert_eq!(got, oracle(&events));
        }
    }

    #[test]
    fn a_late_event_bridges_two_sessions_and_closing_waits_for_the_gap() {
        let mut s = Sessionizer::new(&SessionConfig { gap_ms: GAP }).unwrap();
        let event = |t| SessionEvent {
            time_ms: t,
            user_id: "42",
            session_id: Some("7"),
            play: true,
        };
        let mut out = Vec::new();
        s.add(event(0));
        s.add(event(150));
        assert_eq!(s.open_sessions(), 2);
        s.add(event(80)); // within 100 of both: one session 0..150
        assert_eq!(s.open_sessions(), 1);
        s.advance(250, &mut out); // 150 + 100 is not before 250
        assert!(out.is_empty());
        s.advance(251, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].events, out[0].plays),
            (0, 150, 3, 3)
        );
        let json = serde_json::to_string(&out[0]).unwrap();
        assert_eq!(
            json,
            r#"{"user_id":"42","session_id":7,"start_ms":0,"end_ms":150,"events":3,"plays":3}"#
        );
        assert_eq!(s.open_sessions(), 0);
    }

    #[test]
    fn a_snapshot_restored_gives_the_same_sessions() {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                (
                    i * 37 % 1000,
                    (i % 5) as u8,
                    Some((i % 2) as u8),
                    i % 3 == 0,
                )
            })
            .collect();
        let whole = run(&events, 2000);
        // Half, snapshot, a new sessionizer restored, the other half.
        let mut first = Sessionizer::new(&SessionConfig { gap_ms: GAP }).unwrap();
        let names: Vec<(String, String)> = events
            .iter()
            .map(|&(_, u, s, _)| (format!("u{u}"), s.unwrap().to_string()))
            .collect();
        let feed = |sessionizer: &mut Sessionizer, range: std::ops::Range<usize>| {
            for i in range {
                sessionizer.add(SessionEvent {
                    time_ms: events[i].0,
                    user_id: &names[i].0,
                    session_id: Some(&names[i].1),
                    play: events[i].3,
                });
            }
        };
        feed(&mut first, 0..100);
        let mut second = Sessionizer::new(&SessionConfig { gap_ms: GAP }).unwrap();
        second.restore(first.snapshot());
        feed(&mut second, 100..200);
        let mut out = Vec::new();
        second.flush(&mut out);
        assert_eq!(flat(&out), whole);
    }

    #[test]
    fn a_gap_must_be_positive() {
        assert_eq!(
            SessionConfig { gap_ms: 0 }.validate(),
            Err(SessionError::Gap(0))
        );
    }
}

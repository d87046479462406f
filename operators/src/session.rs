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

use std::collections::BTreeSet;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
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

/// A session's key: user id and session id (JSON text). Short ids (up to
/// 24 bytes each) are held inline, so looking a key up compares bytes in
/// the table rather than chasing a pointer per event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    /// The user id.
    pub user_id: CompactString,
    /// The session id's JSON text, if the input had one.
    pub session_id: Option<CompactString>,
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
    pub user_id: CompactString,
    /// The session id as in the input (its JSON text, written back as raw
    /// JSON), or null.
    #[serde(serialize_with = "raw_json_or_null")]
    pub session_id: Option<CompactString>,
    /// First event time, epoch ms.
    pub start_ms: EventTimeMs,
    /// Last event time, epoch ms.
    pub end_ms: EventTimeMs,
    /// Events (any page).
    pub events: u64,
    /// Streams.
    pub plays: u64,
    /// Closed before its gap passed, to stay within the memory budget
    /// (written only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub evicted: bool,
}

fn raw_json_or_null<S: serde::Serializer>(
    value: &Option<CompactString>,
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

/// A key borrowed from an event, to look a key up without allocating. It
/// hashes like [`SessionKey`] (derived `Hash` of `str` and `Option<str>`).
#[derive(Hash)]
struct BorrowedKey<'a> {
    user_id: &'a str,
    session_id: Option<&'a str>,
}

impl From<&BorrowedKey<'_>> for SessionKey {
    fn from(key: &BorrowedKey<'_>) -> Self {
        SessionKey {
            user_id: CompactString::from(key.user_id),
            session_id: key.session_id.map(CompactString::from),
        }
    }
}

impl hashbrown::Equivalent<SessionKey> for BorrowedKey<'_> {
    fn equivalent(&self, key: &SessionKey) -> bool {
        self.user_id == &*key.user_id && self.session_id == key.session_id.as_deref()
    }
}

/// An open session and the id its closing entry names.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: u64,
    session: OpenSession,
}

/// A key's open sessions, disjoint and ordered by start: most keys have
/// one, held in the table's bucket (no allocation, no pointer to chase).
type KeySessions = SmallVec<[Held; 1]>;

/// A closing entry (time, key copy, id) in a B-tree node, with the node's
/// overhead at its usual fill.
const CLOSING_ENTRY_BYTES: usize = 96;
/// Strings up to this long are held inline (`CompactString`).
const INLINE_STRING_BYTES: usize = 24;

/// The most keys a budget allows. The table's allocation is what keys
/// cost, and it grows by doubling: keys are capped at 7/16 of a table of
/// `buckets` (half its capacity), the largest such table that fits three
/// quarters of the budget with every key's closing entry, so the table
/// never grows past it (hashbrown rehashes in place below half its
/// capacity). The last quarter is for ids longer than the inline 24 bytes.
fn max_keys(max_state_bytes: usize) -> usize {
    let bucket = std::mem::size_of::<(SessionKey, KeySessions)>() + 1;
    let cost = |buckets: usize| {
        buckets.saturating_mul(bucket) + (buckets / 16 * 7).saturating_mul(CLOSING_ENTRY_BYTES)
    };
    let room = max_state_bytes / 4 * 3;
    let mut buckets: usize = 16;
    // 2^40 buckets: beyond any memory, so an unlimited budget stops here.
    while buckets < 1 << 40 && cost(buckets * 2) <= room {
        buckets *= 2;
    }
    buckets / 16 * 7
}

/// Heap bytes of a key's strings (those longer than the inline 24), for
/// its map copy and one closing entry's copy.
fn key_heap_bytes(user_id: &str, session_id: Option<&str>) -> usize {
    let heap = |s: &str| {
        if s.len() > INLINE_STRING_BYTES {
            s.len()
        } else {
            0
        }
    };
    2 * (heap(user_id) + session_id.map_or(0, heap))
}

/// Builds sessions from events and closes them as the watermark passes.
///
/// Closing entries are lazy: an event that extends a session leaves its
/// entry as it is; when the entry comes due, a session that has moved on is
/// filed again under its real closing time. An entry's time is never later
/// than its session's real one, so sessions still close in (closing time,
/// key) order.
pub struct Sessionizer {
    gap_ms: i64,
    /// Each key's open sessions, disjoint and ordered by start.
    open: hashbrown::HashMap<SessionKey, KeySessions>,
    /// (closing time at filing, key, session id); stale entries are dropped
    /// or filed again when they come due.
    closing: BTreeSet<(EventTimeMs, SessionKey, u64)>,
    next_id: u64,
    open_sessions: usize,
    /// Heap bytes of ids longer than the inline 24 bytes.
    heap_bytes: usize,
    max_state_bytes: usize,
    /// Keys and open sessions at most (see [`max_keys`]).
    max_keys: usize,
    evicted: u64,
    /// The watermark last advanced to: an event before it may belong to a
    /// session already closed, so it is refused.
    advanced_ms: EventTimeMs,
}

impl Sessionizer {
    /// A sessionizer with `config`'s gap that holds at most
    /// `max_state_bytes` of open sessions (beyond, the session due to close
    /// first is closed early, marked `evicted`).
    pub fn new(config: &SessionConfig, max_state_bytes: usize) -> Result<Self, SessionError> {
        config.validate()?;
        Ok(Self {
            gap_ms: config.gap_ms,
            open: hashbrown::HashMap::new(),
            closing: BTreeSet::new(),
            next_id: 0,
            open_sessions: 0,
            heap_bytes: 0,
            max_state_bytes,
            max_keys: max_keys(max_state_bytes),
            evicted: 0,
            advanced_ms: EventTimeMs::MIN,
        })
    }

    /// Sessions open at once at most under the budget: past it, the session
    /// due to close first is evicted.
    pub fn max_open_sessions(&self) -> usize {
        self.max_keys
    }

    /// Open sessions.
    pub fn open_sessions(&self) -> usize {
        self.open_sessions
    }

    /// Bytes held for open sessions: the key table's allocation, the
    /// closing entries and ids held on the heap.
    pub fn state_bytes(&self) -> usize {
        self.open.allocation_size() + self.closing.len() * CLOSING_ENTRY_BYTES + self.heap_bytes
    }

    /// Sessions closed early to stay within the budget, since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Change the budget (a replica's share when it holds several inputs).
    pub fn set_max_state_bytes(&mut self, max_state_bytes: usize) {
        self.max_state_bytes = max_state_bytes;
        self.max_keys = max_keys(max_state_bytes);
    }

    /// Past the budget: more sessions or keys than it allows, or too many
    /// bytes of long ids.
    fn over_budget(&self) -> bool {
        self.open_sessions > self.max_keys
            || self.open.len() > self.max_keys
            || self.heap_bytes > self.max_state_bytes / 4
    }

    /// Add one event: it starts a session, extends one, or bridges several
    /// of its key that it lies within the gap of. Sessions evicted to stay
    /// within the budget go to `out`. False (and nothing changes) when the
    /// event is before the watermark last advanced to: a session it would
    /// join may be closed already.
    #[must_use]
    pub fn add(&mut self, event: SessionEvent<'_>, out: &mut Vec<ClosedSession>) -> bool {
        if event.time_ms < self.advanced_ms {
            return false;
        }
        let probe = BorrowedKey {
            user_id: event.user_id,
            session_id: event.session_id,
        };
        // A new key at the cap: make room first, so the table never grows.
        if self.open.len() >= self.max_keys && !self.open.contains_key(&probe) {
            while self.open.len() >= self.max_keys && self.open_sessions > 0 {
                self.close_first(None, true, out);
            }
        }
        let sessions = match self.open.entry_ref(&probe) {
            hashbrown::hash_map::EntryRef::Occupied(entry) => entry.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(entry) => {
                self.heap_bytes += key_heap_bytes(probe.user_id, probe.session_id);
                entry.insert(KeySessions::new())
            }
        };
        let gap = self.gap_ms;
        let t = event.time_ms;
        let reached = |s: &OpenSession| {
            s.start_ms.saturating_sub(gap) <= t && t <= s.end_ms.saturating_add(gap)
        };
        match sessions.iter().position(|h| reached(&h.session)) {
            Some(at) => {
                let held = &mut sessions[at].session;
                held.start_ms = held.start_ms.min(t);
                held.end_ms = held.end_ms.max(t);
                held.events += 1;
                held.plays += u64::from(event.play);
                // The event may now bridge the next session (sessions are
                // disjoint, ordered, more than the gap apart).
                if at + 1 < sessions.len() && reached(&sessions[at + 1].session) {
                    let next = sessions.remove(at + 1).session;
                    let held = &mut sessions[at].session;
                    held.end_ms = held.end_ms.max(next.end_ms);
                    held.events += next.events;
                    held.plays += next.plays;
                    // The next one's closing entry is now stale.
                    self.open_sessions -= 1;
                }
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let session = OpenSession {
                    start_ms: t,
                    end_ms: t,
                    events: 1,
                    plays: u64::from(event.play),
                };
                let at = sessions.partition_point(|h| h.session.start_ms < t);
                sessions.insert(at, Held { id, session });
                let (key, _) = self.open.get_key_value(&probe).expect("just added to");
                self.closing
                    .insert((t.saturating_add(gap), key.clone(), id));
                self.open_sessions += 1;
            }
        }
        while self.over_budget() && self.open_sessions > 0 {
            self.close_first(None, true, out);
        }
        true
    }

    /// Close every session whose last event plus the gap is before
    /// `watermark_ms`; later events before it are refused.
    pub fn advance(&mut self, watermark_ms: EventTimeMs, out: &mut Vec<ClosedSession>) {
        self.advanced_ms = self.advanced_ms.max(watermark_ms);
        while self.close_first(Some(watermark_ms), false, out) {}
    }

    /// End of input: close every open session.
    pub fn flush(&mut self, out: &mut Vec<ClosedSession>) {
        while self.close_first(None, false, out) {}
    }

    /// Close the session due first (if it is due before `before_ms`, when
    /// given). False when none is.
    fn close_first(
        &mut self,
        before_ms: Option<EventTimeMs>,
        evicted: bool,
        out: &mut Vec<ClosedSession>,
    ) -> bool {
        loop {
            let Some(first) = self.closing.first() else {
                return false;
            };
            if before_ms.is_some_and(|before| first.0 >= before) {
                return false;
            }
            let (filed_ms, key, id) = self.closing.pop_first().expect("not empty");
            let Some(sessions) = self.open.get_mut(&key) else {
                continue;
            };
            let Some(position) = sessions.iter().position(|h| h.id == id) else {
                continue; // merged into another session
            };
            let session = sessions[position].session;
            let due_ms = session.end_ms.saturating_add(self.gap_ms);
            if due_ms != filed_ms && !evicted {
                self.closing.insert((due_ms, key, id));
                continue;
            }
            sessions.remove(position);
            if sessions.is_empty() {
                self.open.remove(&key);
                self.heap_bytes -= key_heap_bytes(&key.user_id, key.session_id.as_deref());
            }
            self.open_sessions -= 1;
            self.evicted += u64::from(evicted);
            out.push(ClosedSession {
                user_id: key.user_id,
                session_id: key.session_id,
                start_ms: session.start_ms,
                end_ms: session.end_ms,
                events: session.events,
                plays: session.plays,
                evicted,
            });
            return true;
        }
    }

    /// Every open session, for a checkpoint.
    pub fn snapshot(&self) -> Vec<(SessionKey, OpenSession)> {
        let mut all: Vec<(SessionKey, OpenSession)> = self
            .open
            .iter()
            .flat_map(|(key, sessions)| sessions.iter().map(|h| (key.clone(), h.session)))
            .collect();
        all.sort_by(|a, b| (&a.0, a.1.start_ms).cmp(&(&b.0, b.1.start_ms)));
        all
    }

    /// Open sessions from a checkpoint, added to what is held.
    pub fn restore(&mut self, sessions: Vec<(SessionKey, OpenSession)>) {
        for (key, session) in sessions {
            let id = self.next_id;
            self.next_id += 1;
            self.closing
                .insert((session.end_ms.saturating_add(self.gap_ms), key.clone(), id));
            if !self.open.contains_key(&key) {
                self.heap_bytes += key_heap_bytes(&key.user_id, key.session_id.as_deref());
            }
            let held = self.open.entry(key).or_default();
            let at = held.partition_point(|h| h.session.start_ms < session.start_ms);
            held.insert(at, Held { id, session });
            self.open_sessions += 1;
        }
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
        let mut sessionizer = Sessionizer::new(&SessionConfig { gap_ms: GAP }, usize::MAX).unwrap();
        let mut out = Vec::new();
        let mut max = i64::MIN;
        let names: Vec<Key> = events
            .iter()
            .map(|&(_, user, session, _)| (format!("u{user}"), session.map(|s| s.to_string())))
            .collect();
        for (&(t, _, _, play), (user, session)) in events.iter().zip(&names) {
            let added = sessionizer.add(
                SessionEvent {
                    time_ms: t,
                    user_id: user,
                    session_id: session.as_deref(),
                    play,
                },
                &mut out,
            );
            assert!(added, "within the lateness");
            max = max.max(t);
            sessionizer.advance(max - lateness, &mut out);
        }
        sessionizer.flush(&mut out);
        assert_eq!(
            (sessionizer.open_sessions(), sessionizer.heap_bytes),
            (0, 0)
        );
        assert!(out.iter().all(|s| !s.evicted));
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
        let mut s = Sessionizer::new(&SessionConfig { gap_ms: GAP }, usize::MAX).unwrap();
        let event = |t| SessionEvent {
            time_ms: t,
            user_id: "42",
            session_id: Some("7"),
            play: true,
        };
        let mut out = Vec::new();
        assert!(s.add(event(0), &mut out));
        assert!(s.add(event(150), &mut out));
        assert_eq!(s.open_sessions(), 2);
        assert!(s.add(event(80), &mut out)); // within 100 of both: one session 0..150
        assert_eq!(s.open_sessions(), 1);
        s.advance(250, &mut out); // 150 + 100 is not before 250
        assert!(out.is_empty());
        s.advance(251, &mut out);
        assert_eq!(out.len(), 1);
        // Before the watermark: it would belong to the session just closed.
        assert!(!s.add(event(240), &mut out));
        assert_eq!(s.open_sessions(), 0);
        assert!(s.add(event(251), &mut out));
        s.flush(&mut out);
        assert_eq!(
            (out[0].start_ms, out[0].end_ms, out[0].events, out[0].plays),
            (0, 150, 3, 3)
        );
        let json = serde_json::to_string(&out[0]).unwrap();
        assert_eq!(
            json,
            r#"{"user_id":"42","session_id":7,"start_ms":0,"end_ms":150,"events":3,"plays":3}"#
        );
        assert_eq!(out.len(), 2);
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
        let mut first = Sessionizer::new(&SessionConfig { gap_ms: GAP }, usize::MAX).unwrap();
        let names: Vec<(String, String)> = events
            .iter()
            .map(|&(_, u, s, _)| (format!("u{u}"), s.unwrap().to_string()))
            .collect();
        let feed = |sessionizer: &mut Sessionizer, range: std::ops::Range<usize>| {
            for i in range {
                let added = sessionizer.add(
                    SessionEvent {
                        time_ms: events[i].0,
                        user_id: &names[i].0,
                        session_id: Some(&names[i].1),
                        play: events[i].3,
                    },
                    &mut Vec::new(),
                );
                assert!(added);
            }
        };
        feed(&mut first, 0..100);
        let mut second = Sessionizer::new(&SessionConfig { gap_ms: GAP }, usize::MAX).unwrap();
        second.restore(first.snapshot());
        feed(&mut second, 100..200);
        let mut out = Vec::new();
        second.flush(&mut out);
        assert_eq!(flat(&out), whole);
    }

    #[test]
    fn past_the_budget_the_session_due_first_is_evicted_and_marked() {
        // The smallest budget: a table of 16 buckets, 7 keys.
        let mut s = Sessionizer::new(&SessionConfig { gap_ms: GAP }, 0).unwrap();
        assert_eq!(s.max_open_sessions(), 7);
        let mut out = Vec::new();
        let users: Vec<String> = (0..8).map(|u| format!("u{u}")).collect();
        // User 3's event is the earliest: its session is due first.
        for (u, user) in users.iter().enumerate() {
            let time_ms = if u == 3 { 5 } else { 10 + u as i64 };
            let event = SessionEvent {
                time_ms,
                user_id: user,
                session_id: Some("1"),
                play: false,
            };
            assert!(s.add(event, &mut out));
        }
        let table = s.open.allocation_size();
        assert_eq!(s.open_sessions(), 7);
        assert_eq!(s.evicted(), 1);
        assert_eq!(out.len(), 1);
        assert_eq!((&*out[0].user_id, out[0].evicted), ("u3", true));
        assert!(serde_json::to_string(&out[0])
            .unwrap()
            .ends_with(r#""evicted":true}"#));
        // Many more keys come and go: the table never grows.
        for round in 0..50 {
            for u in 0..7 {
                let user = format!("r{round}-{u}");
                let event = SessionEvent {
                    time_ms: 1_000 + round,
                    user_id: &user,
                    session_id: None,
                    play: true,
                };
                assert!(s.add(event, &mut out));
            }
        }
        assert_eq!(s.open.allocation_size(), table);
        assert_eq!(s.open_sessions(), 7);
        s.flush(&mut out);
        assert_eq!((s.open_sessions(), s.heap_bytes), (0, 0));
        assert_eq!(out.len(), 8 + 350);
    }

    /// The default budget holds about 115,000 open sessions in about
    /// 48 MiB of table and closing entries.
    #[test]
    fn the_default_budget_caps_keys_below_it() {
        let budget = 64 << 20;
        let keys = max_keys(budget);
        assert!((100_000..130_000).contains(&keys), "{keys}");
        assert!(max_keys(budget / 4) < keys / 3);
    }

    #[test]
    fn a_gap_must_be_positive() {
        assert_eq!(
            SessionConfig { gap_ms: 0 }.validate(),
            Err(SessionError::Gap(0))
        );
    }
}

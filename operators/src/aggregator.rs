//! The windowed aggregator: panes in, tumbling and sliding windows out.
//!
//! Events are counted into epoch-aligned panes whose size is the greatest
//! common divisor of every window width and slide (one minute by default).
//! When the watermark passes a window's end the window is built from its
//! panes, emitted once, and panes no open window needs are freed together
//! with the song names only they referenced.
//!
//! Panes are kept per *source*: an ordered input such as one Kafka
//! partition. A single-input caller uses source 0 and never notices. With
//! several sources a window merges the panes of every source, and each
//! source carries `emitted_through`: the end of the last window holding its
//! panes. A source handed over from another process (its panes rebuilt) may
//! be behind the windows closed here; it then *catches up*: its share of
//! those windows is emitted as records of its own as its watermark passes
//! them, and until then its events for them are not late. So nothing is
//! counted twice or lost across a hand-over, and summing the records of a
//! window gives its totals.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use crate::catalog::SongCatalog;
use crate::event::{EventTimeMs, Play, SongId};
use crate::operator::Operator;
use crate::pane::Pane;
use crate::partial::Partial;
use crate::result::WindowResult;
use crate::top_k::{top_artists, top_k};
use crate::trending::{SongStreams, TrendDetector, Trending, TrendingConfig};
use crate::window::{bucket_start, pane_ms, WindowError, WindowId, WindowKind, WindowSpec};

/// What the aggregator computes.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    /// Window shapes, emitted in this order when several close together.
    pub windows: Vec<WindowSpec>,
    /// Length of every window's leaderboard.
    pub top_k: usize,
    /// Trending songs, scored on every close of the first tumbling window
    /// (none without a tumbling window).
    pub trending: TrendingConfig,
    /// Bytes of song state one pane may hold (names and counts, see
    /// [`crate::song_counts`]); beyond it the pane's song counts become a
    /// heavy-hitters summary with an error bound. `usize::MAX`: unbounded.
    pub pane_song_budget_bytes: usize,
    /// Also keep, for every window emitted, one [`Partial`] per source
    /// holding panes in it (taken with [`WindowAggregator::take_partials`]).
    pub partials: bool,
}

impl Default for AggregatorConfig {
    /// A 1-minute tumbling window and a 10-minute window sliding every minute; top 10.
    fn default() -> Self {
        Self {
            windows: vec![
                WindowSpec::tumbling(60_000).expect("valid constant"),
                WindowSpec::sliding(600_000, 60_000).expect("valid constant"),
            ],
            top_k: 10,
            trending: TrendingConfig::default(),
            pane_song_budget_bytes: usize::MAX,
            partials: false,
        }
    }
}

/// The event belongs to a window that has already been emitted.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("event at {time_ms} ms is late: windows up to {closed_through_ms} ms are closed")]
pub struct LateEvent {
    /// The event's time.
    pub time_ms: EventTimeMs,
    /// Everything before this watermark has been emitted.
    pub closed_through_ms: EventTimeMs,
}

/// An ordered input whose panes are kept apart (e.g. a Kafka partition).
pub type SourceId = u32;

/// Panes plus the windows built from them.
pub struct WindowAggregator {
    windows: Vec<WindowSpec>,
    top_k: usize,
    pane_ms: i64,
    max_width_ms: i64,
    panes: BTreeMap<(EventTimeMs, SourceId), Pane>,
    /// Per source: windows ending at or before this already hold its panes
    /// (emitted here or by a previous owner).
    emitted_through_ms: HashMap<SourceId, EventTimeMs>,
    catalog: SongCatalog,
    closed_through_ms: Option<EventTimeMs>,
    late_events: u64,
    pane_song_budget_bytes: usize,
    /// The configured share of one pane, before [`WindowAggregator::share_song_budget`].
    configured_pane_song_budget_bytes: usize,
    /// Times a pane's song counts passed the budget and were reduced.
    song_reductions: u64,
    /// The window the trend detector scores, and the detector.
    trend: Option<(usize, TrendDetector)>,
    trending: Option<Trending>,
    /// Some when partials are kept: those of windows emitted since taken.
    partials: Option<Vec<Partial>>,
}

impl WindowAggregator {
    /// Validates the config; after this nothing on the event path can fail.
    pub fn new(config: AggregatorConfig) -> Result<Self, WindowError> {
        if config.windows.is_empty() {
            return Err(WindowError::NoWindows);
        }
        if config.top_k == 0 {
            return Err(WindowError::ZeroTopK);
        }
        let pane_ms = pane_ms(&config.windows);
        let max_width_ms = config
            .windows
            .iter()
            .map(WindowSpec::width_ms)
            .max()
            .unwrap_or(0);
        let trend = match config
            .windows
            .iter()
            .position(|spec| spec.kind() == WindowKind::Tumbling)
        {
            Some(index) => {
                let width_ms = config.windows[index].width_ms();
                Some((index, TrendDetector::new(config.trending, width_ms)?))
            }
            None => None,
        };
        Ok(Self {
            windows: config.windows,
            top_k: config.top_k,
            pane_ms,
            max_width_ms,
            panes: BTreeMap::new(),
            emitted_through_ms: HashMap::new(),
            catalog: SongCatalog::new(),
            closed_through_ms: None,
            late_events: 0,
            pane_song_budget_bytes: config.pane_song_budget_bytes,
            configured_pane_song_budget_bytes: config.pane_song_budget_bytes,
            song_reductions: 0,
            trend,
            trending: None,
            partials: config.partials.then(Vec::new),
        })
    }

    /// The id for (artist, song), for the event about to be inserted.
    pub fn intern(&mut self, artist: &str, song: &str) -> SongId {
        self.catalog.intern(artist, song)
    }

    /// The hasher for [`WindowAggregator::intern_hashed`].
    pub fn song_hasher(&self) -> &ahash::RandomState {
        self.catalog.hasher()
    }

    /// [`WindowAggregator::intern`] with the name hash computed by the caller
    /// (with [`WindowAggregator::song_hasher`]), e.g. on a decode thread.
    pub fn intern_hashed(&mut self, hash: u64, artist: &str, song: &str) -> SongId {
        self.catalog.intern_hashed(hash, artist, song)
    }

    /// True when the pane of an event at `time_ms` has ended at or before the
    /// last watermark applied. With the default windows (every slide equal to
    /// the pane) that is exactly "a window holding it was emitted"; with panes
    /// smaller than every slide it also refuses events behind the watermark
    /// whose windows are still open: lateness is decided per pane, once.
    #[inline]
    pub fn is_late(&self, time_ms: EventTimeMs) -> bool {
        match self.closed_through_ms {
            Some(closed) => bucket_start(time_ms, self.pane_ms) + self.pane_ms <= closed,
            None => false,
        }
    }

    /// [`WindowAggregator::is_late`] for one source: its pane's windows
    /// already hold the source's panes.
    #[inline]
    pub fn is_late_from(&self, source: SourceId, time_ms: EventTimeMs) -> bool {
        if self.emitted_through_ms.is_empty() {
            return self.is_late(time_ms);
        }
        bucket_start(time_ms, self.pane_ms) + self.pane_ms <= self.emitted_through(source)
    }

    /// Drop a name interned for a stream that was then not inserted.
    pub fn forget_if_unreferenced(&mut self, song: SongId) {
        self.catalog.forget_if_unreferenced(song);
    }

    /// Count one stream into its pane, unless its windows are already emitted.
    #[inline]
    pub fn insert(&mut self, stream: Play) -> Result<(), LateEvent> {
        self.insert_from(0, stream)
    }

    /// [`WindowAggregator::insert`] for one of several sources.
    #[inline]
    pub fn insert_from(&mut self, source: SourceId, stream: Play) -> Result<(), LateEvent> {
        if self.is_late_from(source, stream.time_ms) {
            self.late_events += 1;
            self.catalog.forget_if_unreferenced(stream.song);
            return Err(LateEvent {
                time_ms: stream.time_ms,
                closed_through_ms: self.closed_through_ms.unwrap_or(i64::MIN),
            });
        }
        self.add_to_pane(source, stream);
        Ok(())
    }

    /// Rebuild a source's state from its input, re-read after a restart or
    /// a hand-over: the stream was counted before (its lateness was decided
    /// then), so it goes into its pane even if this aggregator has closed
    /// the window, unless every window holding the pane already holds the
    /// source. Returns false when the stream was not needed.
    pub fn restore_from(&mut self, source: SourceId, stream: Play) -> bool {
        let pane_start = bucket_start(stream.time_ms, self.pane_ms);
        let emitted = self.emitted_through(source);
        if pane_start.saturating_add(self.max_width_ms) <= emitted {
            self.catalog.forget_if_unreferenced(stream.song);
            return false;
        }
        self.add_to_pane(source, stream);
        true
    }

    #[inline]
    fn add_to_pane(&mut self, source: SourceId, stream: Play) {
        let pane = self
            .panes
            .entry((bucket_start(stream.time_ms, self.pane_ms), source))
            .or_default();
        if !pane.add(&stream) {
            return;
        }
        self.catalog.retain(stream.song);
        let songs = pane.song_summary_mut();
        songs.charge(self.catalog.charge_bytes(stream.song));
        if songs.charged_bytes() > self.pane_song_budget_bytes {
            let catalog = &mut self.catalog;
            songs.reduce_to(self.pane_song_budget_bytes, |song| {
                let bytes = catalog.charge_bytes(song);
                catalog.release(song);
                bytes
            });
            self.song_reductions += 1;
        }
    }

    /// Windows ending at or before this hold `source`'s panes already (for
    /// a source never added: the aggregator's own progress).
    pub fn emitted_through(&self, source: SourceId) -> EventTimeMs {
        self.emitted_through_ms
            .get(&source)
            .copied()
            .unwrap_or(self.closed_through_ms.unwrap_or(i64::MIN))
    }

    /// True when `source` still owes windows already closed here.
    pub fn is_behind(&self, source: SourceId) -> bool {
        self.closed_through_ms
            .is_some_and(|closed| self.emitted_through(source) < closed)
    }

    /// Take on a source whose panes are in windows up to `emitted_through_ms`
    /// (`i64::MIN` for a new one). Its panes are then rebuilt with
    /// [`WindowAggregator::restore_from`].
    pub fn add_source(&mut self, source: SourceId, emitted_through_ms: EventTimeMs) {
        self.emitted_through_ms.insert(source, emitted_through_ms);
    }

    /// Divide the configured pane song budget between `sources` sources
    /// (a topic's partitions): each (pane, source) then gets its part, the
    /// same in every process reading the topic, so reductions depend on a
    /// source's own input only.
    pub fn share_song_budget(&mut self, sources: usize) {
        self.pane_song_budget_bytes = self.configured_pane_song_budget_bytes / sources.max(1);
    }

    /// Give up a source: drop its panes (another owner takes it over).
    pub fn remove_source(&mut self, source: SourceId) {
        self.emitted_through_ms.remove(&source);
        let keys: Vec<_> = self
            .panes
            .keys()
            .filter(|(_, s)| *s == source)
            .copied()
            .collect();
        for key in keys {
            if let Some(pane) = self.panes.remove(&key) {
                for song in pane.songs() {
                    self.catalog.release(song);
                }
            }
        }
    }

    /// A source taken over from an owner that had emitted fewer windows than
    /// this aggregator: emit its share of the windows closed here that end
    /// after its `emitted_through`, up to `upto_ms` (its own watermark, so
    /// only windows its input is complete for), as records holding that
    /// source alone. Summing records per window gives the totals.
    pub fn catch_up(
        &mut self,
        source: SourceId,
        upto_ms: EventTimeMs,
        out: &mut Vec<WindowResult>,
    ) {
        let Some(closed) = self.closed_through_ms else {
            return;
        };
        let after = self.emitted_through(source);
        let upto = upto_ms.min(closed);
        if after >= upto {
            return;
        }
        for (end_ms, window) in self.due_windows(after, upto) {
            if let Some(state) = self.window_state(window, end_ms, |s| s == source) {
                out.push(self.result(window, end_ms, &state));
                self.keep_partials(window, end_ms, vec![source]);
            }
        }
        self.emitted_through_ms.insert(source, upto);
        self.free_panes_before(closed);
    }

    /// True when moving the watermark to `watermark_ms` crosses a pane
    /// boundary, the only moments a window can close.
    #[inline]
    pub fn crosses_boundary(&self, watermark_ms: EventTimeMs) -> bool {
        match self.closed_through_ms {
            Some(closed) => {
                watermark_ms > closed
                    && bucket_start(watermark_ms, self.pane_ms)
                        != bucket_start(closed, self.pane_ms)
            }
            None => true,
        }
    }

    /// The watermark moved to `watermark_ms`: emit every window with data whose
    /// end is at or before it, in end order, then free panes no window needs.
    pub fn advance(&mut self, watermark_ms: EventTimeMs, out: &mut Vec<WindowResult>) {
        if self
            .closed_through_ms
            .is_some_and(|closed| watermark_ms <= closed)
        {
            return;
        }
        // Window ends are pane boundaries: none crossed, nothing to close.
        let after = self.closed_through_ms.unwrap_or(i64::MIN);
        // The watermark says every source is complete through it, so a
        // source behind first emits its share of the windows closed before.
        let behind: Vec<SourceId> = self
            .emitted_through_ms
            .iter()
            .filter(|&(_, &emitted)| emitted < after)
            .map(|(&source, _)| source)
            .collect();
        for source in behind {
            self.catch_up(source, after, out);
        }
        let crossed = self.crosses_boundary(watermark_ms);
        if crossed {
            let mut trend = self.trend.take();
            let mut trending = None;
            for (end_ms, window) in self.due_windows(after, watermark_ms) {
                let holds = |source| self.emitted_through(source) < end_ms;
                let Some(state) = self.window_state(window, end_ms, holds) else {
                    continue;
                };
                if let Some((_, detector)) = trend.as_mut().filter(|(w, _)| *w == window) {
                    let songs = state.song_counts().filter_map(|(id, streams)| {
                        let (artist, song) = self.catalog.names(id)?;
                        let key = self.catalog.hash(id)?;
                        Some(SongStreams {
                            key,
                            artist,
                            song,
                            streams,
                        })
                    });
                    if let Some(scored) = detector.observe(end_ms, state.streams(), songs) {
                        trending = Some(scored);
                    }
                }
                out.push(self.result(window, end_ms, &state));
                let sources = self.sources_in(window, end_ms, |s| self.emitted_through(s) < end_ms);
                self.keep_partials(window, end_ms, sources);
            }
            self.trend = trend;
            if trending.is_some() {
                self.trending = trending;
            }
        }
        // Sources in step move with the watermark; sources behind (catching
        // up) keep owing the windows before `after`.
        for emitted in self.emitted_through_ms.values_mut() {
            if *emitted >= after {
                *emitted = (*emitted).max(watermark_ms);
            }
        }
        self.closed_through_ms = Some(watermark_ms);
        if crossed {
            self.free_panes_before(watermark_ms);
        }
    }

    /// Emit every remaining window (end of input).
    pub fn flush(&mut self, out: &mut Vec<WindowResult>) {
        self.advance(i64::MAX, out);
    }

    /// (end, window index) of windows with at least one pane, ending in
    /// (after, upto], in emission order. Per window shape, the ends of windows
    /// holding each pane form a run of slides; the runs of consecutive panes
    /// are merged, so the cost is panes plus due windows, however far the
    /// watermark jumps.
    fn due_windows(&self, after: EventTimeMs, upto: EventTimeMs) -> Vec<(EventTimeMs, usize)> {
        let mut due = Vec::new();
        for (index, spec) in self.windows.iter().enumerate() {
            let slide = spec.slide_ms();
            let mut run: Option<(EventTimeMs, EventTimeMs)> = None;
            for &(pane_start, _) in self.panes.keys() {
                // Windows holding this pane end in [pane end, pane start + width].
                let first = bucket_start(pane_start + self.pane_ms + slide - 1, slide);
                let last = bucket_start(pane_start.saturating_add(spec.width_ms()), slide);
                run = match run {
                    Some((lo, hi)) if first <= hi.saturating_add(slide) => Some((lo, hi.max(last))),
                    Some(done) => {
                        push_ends(&mut due, done, slide, after, upto, index);
                        Some((first, last))
                    }
                    None => Some((first, last)),
                };
            }
            if let Some(done) = run {
                push_ends(&mut due, done, slide, after, upto, index);
            }
        }
        due.sort_unstable();
        due
    }

    /// The state of the window ending at `end_ms`, merged from the panes of
    /// the sources `holds` accepts; None when they have no pane in it.
    fn window_state(
        &self,
        window: usize,
        end_ms: EventTimeMs,
        holds: impl Fn(SourceId) -> bool,
    ) -> Option<Cow<'_, Pane>> {
        let start_ms = end_ms - self.windows[window].width_ms();
        let mut panes = self
            .panes
            .range((start_ms, 0)..(end_ms, 0))
            .filter(|((_, source), _)| holds(*source))
            .map(|(_, pane)| pane);
        let first = panes.next()?;
        Some(match panes.next() {
            None => Cow::Borrowed(first),
            Some(second) => {
                let mut all = first.clone();
                all.merge(second);
                panes.for_each(|pane| all.merge(pane));
                Cow::Owned(all)
            }
        })
    }

    /// The sources `holds` accepts with panes in the window ending at `end_ms`.
    fn sources_in(
        &self,
        window: usize,
        end_ms: EventTimeMs,
        holds: impl Fn(SourceId) -> bool,
    ) -> Vec<SourceId> {
        if self.partials.is_none() {
            return Vec::new();
        }
        let start_ms = end_ms - self.windows[window].width_ms();
        let mut sources: Vec<SourceId> = self
            .panes
            .range((start_ms, 0)..(end_ms, 0))
            .map(|((_, source), _)| *source)
            .filter(|&source| holds(source))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        sources
    }

    /// With partials kept: one per source of `sources`, for the window
    /// ending at `end_ms`, from that source's panes alone.
    fn keep_partials(&mut self, window: usize, end_ms: EventTimeMs, sources: Vec<SourceId>) {
        let Some(mut partials) = self.partials.take() else {
            return;
        };
        let spec = &self.windows[window];
        let start_ms = end_ms - spec.width_ms();
        for source in sources {
            if let Some(state) = self.window_state(window, end_ms, |s| s == source) {
                let partial = Partial::from_pane(
                    spec.kind(),
                    start_ms,
                    end_ms,
                    source,
                    &state,
                    &self.catalog,
                );
                partials.push(partial);
            }
        }
        self.partials = Some(partials);
    }

    /// Every source added, with how far windows hold it (see
    /// [`WindowAggregator::emitted_through`]).
    pub fn sources_progress(&self) -> Vec<(SourceId, EventTimeMs)> {
        let mut progress: Vec<(SourceId, EventTimeMs)> = self
            .emitted_through_ms
            .keys()
            .map(|&source| (source, self.emitted_through(source)))
            .collect();
        progress.sort_unstable();
        progress
    }

    /// True while `source` has a pane in a window not yet emitted for it:
    /// its input may be over, but its windows are not.
    pub fn has_open_windows(&self, source: SourceId) -> bool {
        let emitted = self.emitted_through(source);
        self.panes
            .keys()
            .any(|&(start, s)| s == source && start.saturating_add(self.max_width_ms) > emitted)
    }

    /// True when partials are kept ([`AggregatorConfig::partials`]).
    pub fn keeps_partials(&self) -> bool {
        self.partials.is_some()
    }

    /// The partials of the windows emitted since the last call (none unless
    /// [`AggregatorConfig::partials`]).
    pub fn take_partials(&mut self) -> Vec<Partial> {
        self.partials
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The result of the window ending at `end_ms` from its state.
    fn result(&self, window: usize, end_ms: EventTimeMs, window_state: &Pane) -> WindowResult {
        let spec = &self.windows[window];
        let start_ms = end_ms - spec.width_ms();
        WindowResult {
            window: spec.kind(),
            id: WindowId(window as u16),
            start_ms,
            end_ms,
            streams: window_state.streams(),
            active_users: window_state.users().count(),
            top_songs: top_k(window_state.song_counts(), self.top_k, &self.catalog),
            top_songs_max_undercount: window_state.song_summary().max_undercount(),
            top_artists: top_artists(
                window_state
                    .song_counts()
                    .filter_map(|(id, n)| self.catalog.names(id).map(|(artist, _)| (n, artist))),
                self.top_k,
            ),
            breakdown: window_state.breakdown().clone(),
            listening: window_state.durations().summary(),
            forecast: None,
        }
    }

    /// The trend detector's answer for the latest scored window, once: None
    /// until the next tumbling window closes.
    pub fn take_trending(&mut self) -> Option<Trending> {
        self.trending.take()
    }

    /// Free panes every window holding them has been emitted with: those
    /// ending (start + widest window) at or before their source's
    /// `emitted_through`, which is at most `watermark_ms`.
    fn free_panes_before(&mut self, watermark_ms: EventTimeMs) {
        let max_width_ms = self.max_width_ms;
        let done: Vec<(EventTimeMs, SourceId)> = self
            .panes
            .keys()
            .take_while(|(start, _)| start.saturating_add(max_width_ms) <= watermark_ms)
            .filter(|(start, source)| {
                start.saturating_add(max_width_ms) <= self.emitted_through(*source)
            })
            .copied()
            .collect();
        for key in done {
            if let Some(pane) = self.panes.remove(&key) {
                for song in pane.songs() {
                    self.catalog.release(song);
                }
            }
        }
    }

    /// Events refused because their windows were already emitted.
    pub fn late_events(&self) -> u64 {
        self.late_events
    }

    /// Times a pane's song counts passed the budget and were reduced to a
    /// heavy-hitters summary.
    pub fn song_reductions(&self) -> u64 {
        self.song_reductions
    }

    /// Bytes charged for the song state of every pane held.
    pub fn song_state_bytes(&self) -> usize {
        self.panes
            .values()
            .map(|pane| pane.song_summary().charged_bytes())
            .sum()
    }

    /// Panes currently held.
    pub fn live_panes(&self) -> usize {
        self.panes.len()
    }

    /// Song names currently interned.
    pub fn interned_songs(&self) -> usize {
        self.catalog.len()
    }

    /// Everything before this has been emitted.
    pub fn closed_through_ms(&self) -> Option<EventTimeMs> {
        self.closed_through_ms
    }

    /// Width of a pane: every window starts and ends on a multiple of it.
    pub fn pane_ms(&self) -> i64 {
        self.pane_ms
    }

    /// Width of the widest window: a pane is kept this long.
    pub fn max_width_ms(&self) -> i64 {
        self.max_width_ms
    }

    /// The configured windows.
    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }
}

/// Ends in `lo..=hi` (multiples of `slide`) that fall in (after, upto].
fn push_ends(
    due: &mut Vec<(EventTimeMs, usize)>,
    (lo, hi): (EventTimeMs, EventTimeMs),
    slide: i64,
    after: EventTimeMs,
    upto: EventTimeMs,
    index: usize,
) {
    let mut end = if after >= lo {
        bucket_start(after, slide) + slide
    } else {
        lo
    };
    while end <= hi.min(upto) {
        due.push((end, index));
        end += slide;
    }
}

impl Operator for WindowAggregator {
    type In = Play;
    type Out = WindowResult;

    /// Late events are counted in [`WindowAggregator::late_events`].
    fn on_event(&mut self, event: Play, _out: &mut Vec<WindowResult>) {
        let _counted_as_late = self.insert(event);
    }

    fn on_watermark(&mut self, watermark: EventTimeMs, out: &mut Vec<WindowResult>) {
        self.advance(watermark, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimensions::Dimensions;
    use crate::distinct_users::user_hash;

    fn stream(agg: &mut WindowAggregator, time_ms: i64, user: &str, song: &str) -> Play {
        Play {
            time_ms,
            user_hash: user_hash(user.as_bytes()),
            song: agg.intern("artist", song),
            dims: Dimensions::default(),
            duration_ms: None,
        }
    }

    /// A source whose plays ended still has open windows until the last
    /// sliding window holding them is emitted (ten minutes on).
    #[test]
    fn a_source_has_open_windows_until_its_last_window_is_out() {
        let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        agg.add_source(7, i64::MIN);
        assert!(!agg.has_open_windows(7), "nothing counted yet");
        let s = stream(&mut agg, 61_000, "u1", "a");
        agg.insert_from(7, s).unwrap();
        let mut out = Vec::new();
        agg.advance(120_000, &mut out);
        assert_eq!(out.len(), 2, "the minute's windows are out");
        assert!(
            agg.has_open_windows(7),
            "sliding windows still hold the play"
        );
        agg.advance(659_999, &mut out);
        assert!(agg.has_open_windows(7));
        agg.advance(660_000, &mut out);
        assert!(
            !agg.has_open_windows(7),
            "the last sliding window ended at 11 min"
        );
    }

    #[test]
    fn tumbling_and_sliding_close_once_when_the_watermark_passes() {
        let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        let mut out = Vec::new();
        let s = stream(&mut agg, 61_000, "u1", "a");
        agg.insert(s).unwrap();
        agg.advance(119_999, &mut out);
        assert!(out.is_empty());
        agg.advance(120_000, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].window, out[0].start_ms, out[0].end_ms),
            (WindowKind::Tumbling, 60_000, 120_000)
        );
        assert_eq!(
            (out[1].window, out[1].start_ms, out[1].end_ms),
            (WindowKind::Sliding, -480_000, 120_000)
        );
        agg.advance(120_000, &mut out);
        assert_eq!(out.len(), 2, "emitted once");
        let late = stream(&mut agg, 100_000, "u2", "b");
        assert!(agg.insert(late).is_err());
        assert_eq!(agg.late_events(), 1);
        agg.flush(&mut out);
        // The sliding windows ending at 3..=11 minutes still hold the pane.
        assert_eq!(out.len(), 2 + 9);
        assert!(out[2..]
            .iter()
            .all(|w| w.window == WindowKind::Sliding && w.streams == 1));
        assert_eq!(agg.live_panes(), 0);
        assert_eq!(agg.interned_songs(), 0, "names evicted with their panes");
    }

    #[test]
    fn sliding_windows_merge_panes() {
        let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        for (t, user, song) in [(0, "a", "x"), (60_000, "a", "y"), (120_000, "b", "y")] {
            let s = stream(&mut agg, t, user, song);
            agg.insert(s).unwrap();
        }
        let mut out = Vec::new();
        agg.advance(180_000, &mut out);
        let sliding: Vec<_> = out
            .iter()
            .filter(|w| w.window == WindowKind::Sliding)
            .collect();
        let last = sliding.last().unwrap();
        assert_eq!(
            (last.end_ms, last.streams, last.active_users),
            (180_000, 3, 2)
        );
        assert_eq!(last.top_songs[0].song, "y");
        assert_eq!(last.top_songs[0].streams, 2);
    }

    /// Sums of the records per (kind, end): streams and active users.
    fn sums(out: &[WindowResult]) -> BTreeMap<(WindowKind, i64), (u64, u64)> {
        let mut sums = BTreeMap::new();
        for w in out {
            let entry = sums.entry((w.window, w.end_ms)).or_insert((0, 0));
            entry.0 += w.streams;
            entry.1 += w.active_users;
        }
        sums
    }

    #[test]
    fn a_source_taken_over_behind_catches_up_and_the_sums_match_one_source() {
        // (source, minute, user): users never cross sources, as with a topic keyed by user.
        let events: Vec<(u32, i64, String)> = (0..40)
            .map(|i| ((i % 2) as u32, i / 2, format!("u{}-{}", i % 2, i % 5)))
            .collect();
        let mut reference = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        let mut expected = Vec::new();
        for (_, minute, user) in &events {
            let s = stream(&mut reference, minute * 60_000 + 1, user, "x");
            reference.insert(s).unwrap();
        }
        reference.flush(&mut expected);

        // Source 1's previous owner emitted through minute 5; this aggregator
        // has closed through minute 12 with source 0 alone.
        let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        let mut out = Vec::new();
        agg.add_source(0, i64::MIN);
        let mut previous_owner = WindowAggregator::new(AggregatorConfig::default()).unwrap();
        previous_owner.add_source(1, i64::MIN);
        for (source, minute, user) in &events {
            let time = minute * 60_000 + 1;
            if *source == 0 && *minute < 12 {
                let s = stream(&mut agg, time, user, "x");
                agg.insert_from(0, s).unwrap();
            } else if *source == 1 && *minute < 5 {
                let s = stream(&mut previous_owner, time, user, "x");
                previous_owner.insert_from(1, s).unwrap();
            }
        }
        previous_owner.advance(5 * 60_000, &mut out);
        agg.advance(12 * 60_000, &mut out);

        // Hand-over: source 1 arrives owing windows after minute 5, its
        // panes rebuilt from its log, then it catches up by its watermark.
        agg.add_source(1, previous_owner.emitted_through(1));
        assert!(agg.is_behind(1));
        for (source, minute, user) in &events {
            if *source == 1 && *minute < 8 {
                let s = stream(&mut agg, minute * 60_000 + 1, user, "x");
                if *minute < 5 {
                    agg.restore_from(1, s);
                } else {
                    agg.insert_from(1, s)
                        .expect("not late: source 1 still owes these windows");
                }
            }
        }
        agg.catch_up(1, 8 * 60_000, &mut out);
        assert!(agg.is_behind(1), "caught up to minute 8 of 12");
        for (source, minute, user) in &events {
            let time = minute * 60_000 + 1;
            if (*source == 1 && *minute >= 8) || (*source == 0 && *minute >= 12) {
                let s = stream(&mut agg, time, user, "x");
                agg.insert_from(*source, s).unwrap();
            }
        }
        agg.catch_up(1, 12 * 60_000, &mut out);
        assert!(!agg.is_behind(1));
        agg.flush(&mut out);
        assert_eq!(sums(&out), sums(&expected));
    }
}

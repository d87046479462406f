//! Where closed windows go, behind one interface: the metrics, the state of
//! the JSON API and live page, the window output file or stdout. Adding an
//! output is one file that implements [`Sink`].

pub mod api;
pub mod emit;
pub mod metrics;
pub mod partials;

use std::io;

use downbeat_operators::{ClosedSession, Partial, Trending, WindowResult};

use crate::pipeline::{ForecastUpdate, InputProgress};

/// A closed window as the sinks see it.
pub struct ClosedWindow<'a> {
    /// The result.
    pub result: &'a WindowResult,
    /// Its JSON Lines record (without the newline).
    pub json: &'a str,
    /// Its metric label (`"1m"`, `"10m"`).
    pub label: &'a str,
}

/// The trend detector's answer for the latest tumbling window.
pub struct TrendingWindow<'a> {
    /// The answer.
    pub trending: &'a Trending,
    /// As served by `/api/v1/trending`.
    pub json: &'a str,
    /// The scored window's metric label.
    pub label: &'a str,
}

/// How long a file output is at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The window output (`--emit-windows`), in bytes.
    Windows(u64),
    /// The session output (`--emit-sessions`), in bytes.
    Sessions(u64),
}

/// An output of closed windows.
pub trait Sink {
    /// A window closed.
    fn window(&mut self, window: &ClosedWindow<'_>) -> io::Result<()>;

    /// The latest tumbling window was scored for trending songs.
    fn trending(&mut self, _trending: &TrendingWindow<'_>) {}

    /// The streams forecast after a tumbling close; `label` is the
    /// window's metric label.
    fn forecast(&mut self, _update: &ForecastUpdate, _label: &str) {}

    /// Listening sessions closed.
    fn sessions(&mut self, _sessions: &[ClosedSession]) -> io::Result<()> {
        Ok(())
    }

    /// Partial windows of each input closed (the merge tier's input), and
    /// each input's progress (one of `inputs`).
    fn partials(
        &mut self,
        _partials: &[Partial],
        _progress: &[InputProgress],
        _inputs: usize,
    ) -> io::Result<()> {
        Ok(())
    }

    /// The windows of one close are all out: flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Make what was written durable (before a checkpoint); the length of
    /// the output, when it is a file that a restart can cut back to it.
    fn persist(&mut self) -> io::Result<Option<Written>> {
        Ok(None)
    }

    /// A name for log lines.
    fn name(&self) -> &'static str;
}

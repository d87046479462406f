//! The operator trait every windowed stage implements.

use crate::event::EventTimeMs;

/// A synchronous stage: events in, results out, driven by watermarks.
///
/// Only [`Operator::on_event`] is required; stages without event-time state
/// keep the default watermark hook.
pub trait Operator {
    /// What the stage consumes.
    type In;
    /// What the stage produces.
    type Out;
    /// Take one event; push any results it completes to `out`.
    fn on_event(&mut self, event: Self::In, out: &mut Vec<Self::Out>);
    /// No event earlier than `watermark` will arrive any more (beyond the ones
    /// the stage reports as late): close the windows that end at or before it.
    fn on_watermark(&mut self, _watermark: EventTimeMs, _out: &mut Vec<Self::Out>) {}
}

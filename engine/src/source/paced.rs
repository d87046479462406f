//! The built-in generator at a fixed rate, with the wall clock as event
//! time: `run`'s default source, and `generate` without `--count`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::diurnal::Diurnal;
use super::generator::Generator;
use super::threaded::ThreadedSource;
use crate::lines::Chunk;
use crate::output::now_ms;

/// How often the generator wakes to catch up with its rate.
const STEP: Duration = Duration::from_millis(10);

/// Generate `rate_per_sec` events a second (times the daily profile's
/// multiplier with `diurnal`) for ever (until `emit` says stop); every
/// event due since the last step is written as one block of lines stamped
/// with the current wall clock.
pub fn generate_paced(
    generator: &mut Generator,
    rate_per_sec: f64,
    diurnal: Option<&Diurnal>,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) {
    let mut last = Instant::now();
    let mut expected = 0.0;
    let mut produced: u64 = 0;
    loop {
        let now = now_ms();
        let multiplier = diurnal.map_or(1.0, |d| d.multiplier(now));
        generator.set_activity(multiplier);
        let elapsed = last.elapsed();
        last += elapsed;
        expected += elapsed.as_secs_f64() * rate_per_sec * multiplier;
        let due = expected as u64;
        if due > produced {
            let mut block = Vec::with_capacity(((due - produced) as usize) * 512);
            for _ in produced..due {
                generator.write_event(now, &mut block);
                block.push(b'\n');
            }
            produced = due;
            if !emit(block) {
                return;
            }
        }
        std::thread::sleep(STEP);
    }
}

/// `--start-ms` (or a window ending now) would put event times outside
/// 1970 to the year 9999.
#[derive(Debug, thiserror::Error)]
#[error("--start-ms {start_ms}: {count} events {step_ms} ms apart would not fit between 1970 and the year 9999")]
pub struct StartOutOfRange {
    /// The first event time asked for.
    pub start_ms: i64,
    /// Events.
    pub count: u64,
    /// Between two events.
    pub step_ms: f64,
}

/// The first event time of `count` events `step_ms` apart: `start_ms`, or
/// so that the last is `now_ms`. Refused if any would leave 1970..=9999.
pub fn counted_start(
    count: u64,
    step_ms: f64,
    start_ms: Option<i64>,
    now_ms: i64,
) -> Result<i64, StartOutOfRange> {
    const LAST_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let span_ms = (count as f64 * step_ms) as i64;
    let start = start_ms.unwrap_or_else(|| now_ms.saturating_sub(span_ms));
    match start.checked_add(span_ms) {
        Some(end) if start >= 0 && end <= LAST_MS => Ok(start),
        _ => Err(StartOutOfRange {
            start_ms: start,
            count,
            step_ms,
        }),
    }
}

/// The paced generator as a live source.
pub fn source(
    mut generator: Generator,
    rate_per_sec: f64,
    diurnal: Option<Diurnal>,
) -> io::Result<ThreadedSource> {
    ThreadedSource::spawn("source-generator", move |sender| {
        generate_paced(&mut generator, rate_per_sec, diurnal.as_ref(), |block| {
            sender.send(Chunk::owned(block, false))
        });
    })
}

/// The paced generator to a writer (`generate` without `--count`); ends
/// when the writer fails (e.g. a closed pipe).
pub fn write_paced(
    generator: &mut Generator,
    rate_per_sec: f64,
    diurnal: Option<&Diurnal>,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut result = Ok(());
    generate_paced(generator, rate_per_sec, diurnal, |block| {
        result = out.write_all(&block).and_then(|()| out.flush());
        result.is_ok()
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_times_stay_real_epoch_times() {
        assert_eq!(counted_start(10, 1.0, None, 1_000).unwrap(), 990);
        assert_eq!(counted_start(10, 1.0, Some(5), 1_000).unwrap(), 5);
        assert!(
            counted_start(10, 1.0, Some(i64::MAX), 0).is_err(),
            "would wrap"
        );
        assert!(counted_start(10, 1.0, Some(-1), 0).is_err(), "before 1970");
        assert!(
            counted_start(1, 1.0, Some(253_402_300_800_000), 0).is_err(),
            "after 9999"
        );
        assert!(
            counted_start(1_000, 1.0, None, 10).is_err(),
            "ending now would start before 1970"
        );
    }
}

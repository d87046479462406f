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

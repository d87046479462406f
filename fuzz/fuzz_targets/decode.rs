//! The decoder against its from-scratch reference over serde_json: the same
//! verdict (play with the same fields, not a play, or the same reason) for
//! any bytes. Also exercises the JSON scanner's `unsafe` blocks under
//! AddressSanitizer (cargo fuzz's default).
#![no_main]

use downbeat::decode::{decode, Limits, EARLIEST_VALID_MS};
use downbeat::decode_reference::{owned, reference};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    min_ms: EARLIEST_VALID_MS,
    max_ms: 2_000_000_000_000,
    max_field_bytes: 64,
};

fuzz_target!(|line: &[u8]| {
    // Lines hold no newline: the line splitter cut there.
    if line.contains(&b'\n') {
        return;
    }
    let got = owned(decode(line, LIMITS));
    let want = reference(line, LIMITS);
    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
});

//! A validating, single-pass scanner for flat JSON objects.
//!
//! Listen events are flat objects of which downbeat reads about a dozen
//! keys. A general JSON deserializer (serde over sonic-rs, measured in the
//! README) spends most of its time in generic visitor machinery; this scanner
//! walks the object once, hands each key and value to the caller, and
//! validates everything it skips (nested values included) so invalid JSON is
//! still refused as invalid.
//!
//! Strings are scanned 16 bytes at a time (SSE2 on x86_64, 8-byte SWAR
//! elsewhere) for the bytes that end a plain run: quote, backslash and
//! control characters. Numbers are parsed in the same pass that validates
//! them; only long or out-of-range ones go through `str::parse`.

use std::borrow::Cow;

/// Containers nested deeper than this (the top-level object included) are
/// refused, as serde_json refuses them: its limit of 128 counts down to zero,
/// so the 128th level is already an error.
const MAX_DEPTH: usize = 127;

/// Why a line could not be scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Not valid JSON.
    Syntax,
    /// Valid JSON, but not an object.
    NotAnObject,
}

/// A scalar value handed to the caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    /// A string, borrowed unless it had escapes.
    Str(Cow<'a, str>),
    /// An integer that fits in i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// `null`.
    Null,
    /// `true`, `false`, an object or an array (validated, not decoded).
    Other,
}

/// Scan `text` as one JSON object, calling `on_field(key, value)` for each
/// member in order. Keys with escapes are passed unescaped.
///
/// ```
/// use downbeat::json_scan::{scan_object, Scalar, ScanError};
///
/// let mut seen = Vec::new();
/// scan_object(r#"{"ts":1700000000000,"song":"Hey \"Jude\""}"#, |key, value| {
///     seen.push((String::from_utf8_lossy(key).into_owned(), value));
/// })
/// .unwrap();
/// assert_eq!(seen[0].1, Scalar::Int(1_700_000_000_000));
/// assert_eq!(seen[1].1, Scalar::Str("Hey \"Jude\"".into()));
/// assert_eq!(scan_object("[1]", |_, _| {}), Err(ScanError::NotAnObject));
/// ```
pub fn scan_object<'a>(
    text: &'a str,
    mut on_field: impl FnMut(&[u8], Scalar<'a>),
) -> Result<(), ScanError> {
    scan_top_level(text, |s| s.object(&mut on_field))
}

/// Run `object` on the members of the top-level object of `text`; for any
/// other top-level value, tell a valid non-object from invalid JSON.
#[inline(always)]
fn scan_top_level<'a>(
    text: &'a str,
    object: impl FnOnce(&mut Scanner<'a>) -> Result<(), Invalid>,
) -> Result<(), ScanError> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    s.skip_ws();
    if s.peek() == Some(b'{') {
        s.pos += 1;
        return object(&mut s).map_err(|Invalid| ScanError::Syntax);
    }
    // Valid JSON of another shape is a type problem, not a syntax one.
    s.skip_value(0).map_err(|Invalid| ScanError::Syntax)?;
    s.skip_ws();
    if s.pos == s.bytes.len() {
        Err(ScanError::NotAnObject)
    } else {
        Err(ScanError::Syntax)
    }
}

/// How a caller of [`scan_fields`] wants one member's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Decode it into a [`Scalar`].
    Scalar,
    /// A string as its raw JSON text between the quotes (validated, not
    /// unescaped); any other value as a [`Scalar`].
    Raw,
}

/// A member value handed to a [`Fields`] visitor.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    /// A decoded value.
    Scalar(Scalar<'a>),
    /// A string's raw text between the quotes, and whether it has `\u`
    /// escapes (the only ones that can stand for letters, digits or spaces).
    Raw(&'a str, bool),
}

/// The visitor of [`scan_fields`]: picks a field per key, then receives the
/// values of the fields it picked.
pub(crate) trait Fields<'a> {
    /// Which field `key` (unescaped) is.
    type Field: Copy + 'static;
    /// The keys in the order lines usually hold them, each with what
    /// [`Fields::field`] returns for it. The `k`-th member's key is first
    /// compared directly with the `k`-th entry (quotes and colon included);
    /// on a mismatch the member takes the general path, so the order is only
    /// a prediction and every entry must agree with [`Fields::field`].
    const EXPECTED: &'static [ExpectedKey<Self::Field>] = &[];
    /// The field `key` names and how to read its value, or `None` to skip it.
    fn field(&mut self, key: &[u8]) -> Option<(Self::Field, Want)>;
    /// The value of a field picked by [`Fields::field`].
    fn value(&mut self, field: Self::Field, value: Value<'a>);
}

/// A key a [`Fields`] visitor expects at some position: its JSON text up
/// to the colon (`"ts":`), padded to 16 bytes, and the field it names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExpectedKey<F> {
    /// `"key":` followed by zeros.
    text: [u8; 16],
    /// How many bytes of `text` are the key's JSON text.
    len: usize,
    /// The low `len` bits set: the bytes of a 16-byte compare that count.
    wanted: u32,
    /// What [`Fields::field`] returns for the key.
    field: Option<(F, Want)>,
}

impl<F: Copy> ExpectedKey<F> {
    /// The key `key` (at most 13 bytes, no quote, backslash or control
    /// character), for which [`Fields::field`] returns `field`.
    pub(crate) const fn new(key: &str, field: Option<(F, Want)>) -> Self {
        let key = key.as_bytes();
        assert!(key.len() <= 13, "an expected key has at most 13 bytes");
        let mut text = [0; 16];
        text[0] = b'"';
        let mut i = 0;
        while i < key.len() {
            assert!(
                key[i] >= 0x20 && key[i] != b'"' && key[i] != b'\\',
                "an expected key needs no escapes"
            );
            text[i + 1] = key[i];
            i += 1;
        }
        text[key.len() + 1] = b'"';
        text[key.len() + 2] = b':';
        Self {
            text,
            len: key.len() + 3,
            wanted: (1 << (key.len() + 3)) - 1,
            field,
        }
    }

    /// The key, unquoted.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &[u8] {
        &self.text[1..self.len - 2]
    }

    /// The field it names, as [`Fields::field`] should return it.
    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<(F, Want)> {
        self.field
    }

    /// Whether `bytes[at..]` starts with this key's JSON text.
    #[inline(always)]
    fn is_at(&self, bytes: &[u8], at: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        if at + 16 <= bytes.len() {
            use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
            // SAFETY: SSE2 is part of the x86_64 baseline; `at + 16 <=
            // bytes.len()`, so the first load lies within `bytes`, and
            // `self.text` is 16 bytes.
            let equal = unsafe {
                let line = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
                let text = _mm_loadu_si128(self.text.as_ptr().cast::<__m128i>());
                _mm_movemask_epi8(_mm_cmpeq_epi8(line, text)) as u32
            };
            // Only the first `len` bytes need to match.
            return equal & self.wanted == self.wanted;
        }
        bytes
            .get(at..)
            .is_some_and(|rest| rest.starts_with(&self.text[..self.len]))
    }
}

/// Like [`scan_object`], but values of keys the visitor does not pick are
/// only validated, and strings can be handed over raw.
#[inline]
pub(crate) fn scan_fields<'a, F: Fields<'a>>(
    text: &'a str,
    fields: &mut F,
) -> Result<(), ScanError> {
    scan_top_level(text, |s| s.object_fields(fields))
}

/// `bytes` as text if it is valid UTF-8. All-ASCII input (the common case)
/// is recognised 64 bytes at a time without decoding sequences; otherwise
/// only the bytes from the block holding the first non-ASCII byte are
/// decoded.
#[inline]
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    let ascii = ascii_prefix(bytes);
    if ascii < bytes.len() {
        // `bytes[..ascii]` is ASCII, so no sequence starts before `ascii`
        // and the whole is valid exactly when the rest is.
        std::str::from_utf8(&bytes[ascii..]).ok()?;
    }
    // SAFETY: `bytes[..ascii]` is ASCII, which is valid UTF-8, the rest was
    // validated above, and `ascii` is a char boundary (it follows ASCII).
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// A length `n` such that `bytes[..n]` is ASCII, equal to `bytes.len()`
/// exactly when all of `bytes` is.
#[cfg(target_arch = "x86_64")]
#[inline]
fn ascii_prefix(bytes: &[u8]) -> usize {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128};
    let len = bytes.len();
    if len < 16 {
        return if bytes.is_ascii() { len } else { 0 };
    }
    let base = bytes.as_ptr();
    let mut i = 0;
    while i + 64 <= len {
        // SAFETY: SSE2 is part of the x86_64 baseline; `i + 64 <= len`, so
        // all four unaligned 16-byte loads lie within `bytes`.
        let mask = unsafe {
            let a = _mm_loadu_si128(base.add(i).cast::<__m128i>());
            let b = _mm_loadu_si128(base.add(i + 16).cast::<__m128i>());
            let c = _mm_loadu_si128(base.add(i + 32).cast::<__m128i>());
            let d = _mm_loadu_si128(base.add(i + 48).cast::<__m128i>());
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)))
        };
        if mask != 0 {
            return i;
        }
        i += 64;
    }
    if i + 32 <= len {
        // SAFETY: SSE2 is part of the x86_64 baseline; `i + 32 <= len`, so
        // both unaligned 16-byte loads lie within `bytes`.
        let mask = unsafe {
            let a = _mm_loadu_si128(base.add(i).cast::<__m128i>());
            let b = _mm_loadu_si128(base.add(i + 16).cast::<__m128i>());
            _mm_movemask_epi8(_mm_or_si128(a, b))
        };
        if mask != 0 {
            return i;
        }
        i += 32;
    }
    // Fewer than 32 bytes are left: the 16 from `i` (or the last 16, when
    // fewer are left) and the last 16 cover them.
    let last = len - 16;
    let from = i.min(last);
    // SAFETY: as above; `from <= last`, so `from + 16 <= len`, and
    // `last + 16 == len`.
    let mask = unsafe {
        let a = _mm_loadu_si128(base.add(from).cast::<__m128i>());
        let b = _mm_loadu_si128(base.add(last).cast::<__m128i>());
        _mm_movemask_epi8(_mm_or_si128(a, b))
    };
    if mask == 0 {
        len
    } else {
        from
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn ascii_prefix(bytes: &[u8]) -> usize {
    if bytes.is_ascii() {
        bytes.len()
    } else {
        0
    }
}

/// The value of a string's raw JSON text (between the quotes), which
/// [`scan_fields`] has validated.
pub(crate) fn unescape(raw: &str) -> Cow<'_, str> {
    let s = Scanner {
        text: raw,
        bytes: raw.as_bytes(),
        pos: 0,
    };
    let Some(mut backslash) = raw.bytes().position(|b| b == b'\\') else {
        return Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    let mut run = 0;
    loop {
        out.push_str(s.slice(run, backslash));
        let Ok((ch, next)) = s.escape(backslash + 1) else {
            // Not validated after all: keep the rest as it is.
            out.push_str(s.slice(backslash, raw.len()));
            return Cow::Owned(out);
        };
        out.push(ch);
        run = next;
        match raw.as_bytes()[run..].iter().position(|&b| b == b'\\') {
            Some(at) => backslash = run + at,
            None => break,
        }
    }
    out.push_str(s.slice(run, raw.len()));
    Cow::Owned(out)
}

/// Invalid JSON, inside the scanner. Being empty, it adds nothing to the
/// values returned in registers on the hot path.
struct Invalid;

/// Bytes that end a run of plain string content: quote, backslash, controls.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Index of the first quote, backslash or control byte at or after `from`,
/// one byte at a time (the reference for the block versions).
#[inline]
fn find_special_bytewise(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .position(|&b| SPECIAL[b as usize])
        .map(|i| from + i)
}

/// Index of the first quote, backslash or control byte at or after `from`
/// (`from <= bytes.len()`), eight bytes at a time in a `u64`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn find_special_swar(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    /// High bit of each byte set exactly where that byte of `x` is zero.
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        !(((x & LOW7) + LOW7) | x | LOW7)
    }
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | zero_bytes(word & (ONES * 0xe0));
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    find_special_bytewise(bytes, i)
}

/// Index of the first quote, backslash or control byte at or after `from`
/// (`from <= bytes.len()`), sixteen bytes at a time with SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_special(bytes: &[u8], from: usize) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_xor_si128,
    };
    /// Bit `k` set where byte `k` of the 16 at `block` is special.
    ///
    /// # Safety
    ///
    /// `block` must point to 16 readable bytes.
    #[inline(always)]
    unsafe fn mask16(block: *const u8) -> u32 {
        // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics are
        // always available; the caller guarantees the 16 bytes the unaligned
        // load reads.
        unsafe {
            let v = _mm_loadu_si128(block.cast::<__m128i>());
            // Flipping bit 1 maps the quote (0x22) to 0x20 and the controls
            // (below 0x20) onto themselves, and every other byte above 0x20:
            // one unsigned `<= 0x20` finds both.
            let flipped = _mm_xor_si128(v, _mm_set1_epi8(0x02));
            let quote_or_control =
                _mm_cmpeq_epi8(_mm_min_epu8(flipped, _mm_set1_epi8(0x20)), flipped);
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(quote_or_control, backslash)) as u32
        }
    }
    let len = bytes.len();
    let base = bytes.as_ptr();
    let mut i = from;
    // Most strings (keys and short values) end within their first block.
    if from + 16 <= len {
        // SAFETY: `from + 16 <= len`, so the block lies within `bytes`.
        let mask = unsafe { mask16(base.add(from)) };
        if mask != 0 {
            return Some(from + mask.trailing_zeros() as usize);
        }
        i += 16;
    } else if len < 16 {
        return find_special_bytewise(bytes, from);
    }
    while i + 16 <= len {
        // SAFETY: `i + 16 <= len`, so the block lies within `bytes`.
        let mask = unsafe { mask16(base.add(i)) };
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < len {
        // Re-read the last 16 bytes and drop those already looked at.
        let last = len - 16;
        // SAFETY: `len >= 16`, so `last..len` lies within `bytes`.
        let mask = unsafe { mask16(base.add(last)) } >> (i - last);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn find_special(bytes: &[u8], from: usize) -> Option<usize> {
    find_special_swar(bytes, from)
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Value of an ASCII hex digit, or 0xff.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    table
};

/// The run of ASCII digits from `i`: where it ends, and `mantissa` with
/// the digits appended (wrapping on overflow; the caller counts digits).
/// Eight digits at a time while eight bytes are left.
#[inline(always)]
fn digits(bytes: &[u8], mut i: usize, mut mantissa: u64) -> (usize, u64) {
    const LOW4: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const HIGH4: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    /// The value of eight digits, the first in the lowest byte; bytes that
    /// are zero count as leading zeros.
    #[inline(always)]
    fn eight(word: u64) -> u64 {
        let pairs = ((word & LOW4).wrapping_mul(1 + (10 << 8))) >> 8;
        let quads = ((pairs & 0x00ff_00ff_00ff_00ff).wrapping_mul(1 + (100 << 16))) >> 16;
        ((quads & 0x0000_ffff_0000_ffff).wrapping_mul(1 + (10_000 << 32))) >> 32
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // A byte is a digit when its high nibble is 3 and adding 6 keeps it
        // so. A carry out of a non-digit byte can only spoil the bytes after
        // it, so the lowest flagged byte is exactly the first non-digit.
        let non_digit = ((word & HIGH4) ^ ZEROS) | ((word.wrapping_add(SIXES) & HIGH4) ^ ZEROS);
        if non_digit == 0 {
            mantissa = mantissa.wrapping_mul(100_000_000).wrapping_add(eight(word));
            i += 8;
            continue;
        }
        let count = non_digit.trailing_zeros() as usize / 8;
        if count > 0 {
            // Shift the digits to the top; the zero bytes below them are
            // leading zeros.
            let value = eight(word << (64 - 8 * count));
            mantissa = mantissa.wrapping_mul(POW10_U64[count]).wrapping_add(value);
        }
        return (i + count, mantissa);
    }
    // Fewer than eight bytes are left (numbers often end a line): read the
    // last eight bytes of the input and shift the ones before `i` out, so
    // zero bytes, which are not digits, stand for those past the end.
    let len = bytes.len();
    if len >= 8 && i < len {
        let tail = u64::from_le_bytes(bytes[len - 8..].try_into().expect("8 bytes"));
        // `0 < len - i < 8`, so the shift is below 64.
        let word = tail >> (8 * (8 - (len - i)));
        let non_digit = ((word & HIGH4) ^ ZEROS) | ((word.wrapping_add(SIXES) & HIGH4) ^ ZEROS);
        // A zero byte past the end is always flagged, so `count < 8`.
        let count = non_digit.trailing_zeros() as usize / 8;
        if count > 0 {
            let value = eight(word << (64 - 8 * count));
            mantissa = mantissa.wrapping_mul(POW10_U64[count]).wrapping_add(value);
        }
        return (i + count, mantissa);
    }
    while let Some(&b) = bytes.get(i) {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
        i += 1;
    }
    (i, mantissa)
}

/// Where the run of ASCII digits from `i` ends, eight bytes at a time like
/// [`digits`] but without their value.
#[inline(always)]
fn digit_run_end(bytes: &[u8], mut i: usize) -> usize {
    const HIGH4: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // As in `digits`: the lowest flagged byte is the first non-digit.
        let non_digit = ((word & HIGH4) ^ ZEROS) | ((word.wrapping_add(SIXES) & HIGH4) ^ ZEROS);
        if non_digit != 0 {
            return i + non_digit.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(b'0'..=b'9') = bytes.get(i) {
        i += 1;
    }
    i
}

/// Powers of ten below 10^8, as integers.
const POW10_U64: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// The members of the top-level object opened before `pos`, up to the
    /// end of the text.
    #[inline(always)]
    fn object(&mut self, on_field: &mut impl FnMut(&[u8], Scalar<'a>)) -> Result<(), Invalid> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(Invalid);
                }
                let key = self.string()?;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                let value = self.scalar(1)?;
                on_field(key.as_bytes(), value);
                self.skip_ws();
                match self.next() {
                    Some(b',') => self.skip_ws(),
                    Some(b'}') => break,
                    _ => return Err(Invalid),
                }
            }
        }
        self.at_end()
    }

    /// Like [`Scanner::object`], for a [`Fields`] visitor. Compact JSON
    /// (no whitespace around `:` and `,`) takes the shortest path.
    #[inline(always)]
    fn object_fields<F: Fields<'a>>(&mut self, fields: &mut F) -> Result<(), Invalid> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            let mut expected = F::EXPECTED.iter();
            loop {
                // `pos` is at the key's opening quote, or at whitespace
                // before it.
                let field = match expected.next() {
                    Some(key) if key.is_at(self.bytes, self.pos) => {
                        self.pos += key.len;
                        key.field
                    }
                    _ => self.member_key(fields)?,
                };
                self.skip_ws();
                match field {
                    None => self.skip_member_value()?,
                    Some((field, Want::Raw)) if self.peek() == Some(b'"') => {
                        let (start, end, unicode) = self.raw_string()?;
                        fields.value(field, Value::Raw(self.slice(start, end), unicode));
                    }
                    Some((field, _)) if self.peek() == Some(b'"') => {
                        // `Scanner::string`, with the value handed over in
                        // each branch rather than through a `Cow` result.
                        let start = self.pos + 1;
                        let end = find_special(self.bytes, start).ok_or(Invalid)?;
                        let text = match self.byte_at(end) {
                            b'"' => {
                                self.pos = end + 1;
                                Cow::Borrowed(self.slice(start, end))
                            }
                            b'\\' => self.escaped_string(start, end)?,
                            _ => return Err(Invalid),
                        };
                        fields.value(field, Value::Scalar(Scalar::Str(text)));
                    }
                    Some((field, _)) => {
                        let value = self.scalar(1)?;
                        fields.value(field, Value::Scalar(value));
                    }
                }
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        self.skip_ws();
                        match self.next() {
                            Some(b',') => {}
                            Some(b'}') => break,
                            _ => return Err(Invalid),
                        }
                    }
                }
            }
        }
        self.at_end()
    }

    /// The general path for a member's key, from `pos` at its opening quote
    /// or at whitespace before it, through the colon: the field it names.
    #[inline(always)]
    fn member_key<F: Fields<'a>>(
        &mut self,
        fields: &mut F,
    ) -> Result<Option<(F::Field, Want)>, Invalid> {
        if self.peek() != Some(b'"') {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Invalid);
            }
        }
        let key_start = self.pos + 1;
        let key_end = find_special(self.bytes, key_start).ok_or(Invalid)?;
        let field = if self.byte_at(key_end) == b'"' {
            self.pos = key_end + 1;
            fields.field(self.slice(key_start, key_end).as_bytes())
        } else {
            let key = self.string()?;
            fields.field(key.as_bytes())
        };
        if self.peek() == Some(b':') {
            self.pos += 1;
        } else {
            self.skip_ws();
            self.expect(b':')?;
        }
        Ok(field)
    }

    /// Validate and skip a member value of the top-level object, building
    /// nothing.
    #[inline(always)]
    fn skip_member_value(&mut self) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'"') => self.raw_string().map(|_| ()),
            Some(b'0'..=b'9') => {
                // A plain integer of up to 18 digits is valid JSON whatever
                // its digits; anything else goes through `number`.
                let start = self.pos;
                let end = digit_run_end(self.bytes, start);
                let count = end - start;
                if count <= 18
                    && (count == 1 || self.byte_at(start) != b'0')
                    && !matches!(self.bytes.get(end), Some(b'.' | b'e' | b'E'))
                {
                    self.pos = end;
                    Ok(())
                } else {
                    self.number().map(|_| ())
                }
            }
            Some(b'-') => self.number().map(|_| ()),
            _ => self.skip_value(1),
        }
    }

    /// A string at `pos` (the opening quote), validated but not unescaped:
    /// the range of its raw text and whether it has `\u` escapes.
    #[inline(always)]
    fn raw_string(&mut self) -> Result<(usize, usize, bool), Invalid> {
        let start = self.pos + 1;
        let mut at = find_special(self.bytes, start).ok_or(Invalid)?;
        let mut unicode = false;
        loop {
            match self.byte_at(at) {
                b'"' => {
                    self.pos = at + 1;
                    return Ok((start, at, unicode));
                }
                b'\\' => {
                    let next = match self.bytes.get(at + 1) {
                        // The two-byte escapes need no decoding to validate.
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at + 2,
                        Some(b'u') => {
                            unicode = true;
                            self.escape(at + 1)?.1
                        }
                        _ => return Err(Invalid),
                    };
                    at = find_special(self.bytes, next).ok_or(Invalid)?;
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// The byte at `at`, an index [`find_special`] returned.
    #[inline(always)]
    fn byte_at(&self, at: usize) -> u8 {
        debug_assert!(at < self.bytes.len());
        // SAFETY: `find_special` only returns indices of bytes it found in
        // `self.bytes`, so `at < self.bytes.len()`.
        unsafe { *self.bytes.get_unchecked(at) }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        self.pos += 1;
        b
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), Invalid> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Only whitespace may follow the top-level value.
    #[inline]
    fn at_end(&mut self) -> Result<(), Invalid> {
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        // Every byte that can follow whitespace in valid JSON is above the
        // space, so one compare settles the usual case.
        while let Some(&b) = self.bytes.get(self.pos) {
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// `text[start..end]` where both ends sit next to ASCII delimiters.
    #[inline(always)]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
        debug_assert!(start <= end && end <= self.text.len());
        // SAFETY: every caller passes `start` right after an ASCII byte (an
        // opening quote or an escape sequence), at an ASCII byte, or at 0, and `end` at an ASCII
        // byte (a closing quote or a backslash) or at `text.len()`, with
        // `start <= end <= text.len()`. An
        // ASCII byte is never part of a multi-byte UTF-8 sequence, so both
        // are char boundaries of the valid UTF-8 `text`.
        unsafe { self.text.get_unchecked(start..end) }
    }

    /// A value inside a container `depth` levels deep.
    #[inline(always)]
    fn scalar(&mut self, depth: usize) -> Result<Scalar<'a>, Invalid> {
        match self.peek() {
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n') => self.literal(b"null", Scalar::Null),
            Some(b't') => self.literal(b"true", Scalar::Other),
            Some(b'f') => self.literal(b"false", Scalar::Other),
            Some(b'{' | b'[') => self.skip_value(depth).map(|()| Scalar::Other),
            _ => Err(Invalid),
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8], value: Scalar<'a>) -> Result<Scalar<'a>, Invalid> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(Invalid)
        }
    }

    /// A string at `pos`, which holds the opening quote.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, Invalid> {
        let start = self.pos + 1;
        let end = find_special(self.bytes, start).ok_or(Invalid)?;
        match self.byte_at(end) {
            b'"' => {
                self.pos = end + 1;
                Ok(Cow::Borrowed(self.slice(start, end)))
            }
            b'\\' => self.escaped_string(start, end),
            _ => Err(Invalid),
        }
    }

    /// The slow path: the string opened before `start` has its first escape
    /// at `first`. Finds the closing quote (refusing controls), then
    /// unescapes into a string of the right capacity.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, first: usize) -> Result<Cow<'a, str>, Invalid> {
        let bytes = self.bytes;
        let mut backslash = first;
        let end = loop {
            // Skip the backslash and the byte it escapes (checked below).
            let from = backslash + 2;
            if from > bytes.len() {
                return Err(Invalid);
            }
            let at = find_special(bytes, from).ok_or(Invalid)?;
            match bytes[at] {
                b'"' => break at,
                b'\\' => backslash = at,
                _ => return Err(Invalid),
            }
        };
        // Unescaping never lengthens: `\n` -> 1 byte, `\uXXXX` -> at most 3,
        // a surrogate pair (12 bytes) -> 4.
        let mut out = String::with_capacity(end - start);
        let mut run = start;
        let mut backslash = first;
        loop {
            out.push_str(self.slice(run, backslash));
            let (ch, next) = self.escape(backslash + 1)?;
            out.push(ch);
            // An escape holds no quote, so `next <= end`.
            run = next;
            // Up to `end` only backslashes remain: controls were refused
            // above and every quote before `end` is escaped.
            match find_special(bytes, run) {
                Some(at) if at < end => backslash = at,
                _ => break,
            }
        }
        out.push_str(self.slice(run, end));
        self.pos = end + 1;
        Ok(Cow::Owned(out))
    }

    /// One escape sequence after the backslash at `i - 1`: the character and
    /// the index after it.
    fn escape(&self, i: usize) -> Result<(char, usize), Invalid> {
        let simple = match self.bytes.get(i) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(i + 1),
            _ => return Err(Invalid),
        };
        Ok((simple, i + 1))
    }

    fn hex4(&self, i: usize) -> Result<u32, Invalid> {
        let digits = self.bytes.get(i..i + 4).ok_or(Invalid)?;
        digits.iter().try_fold(0, |acc, &b| match HEX[b as usize] {
            0xff => Err(Invalid),
            d => Ok(acc << 4 | u32::from(d)),
        })
    }

    /// `\uXXXX` (with `i` at the first hex digit), combining surrogate pairs;
    /// a lone surrogate is refused, as serde_json refuses it.
    fn unicode_escape(&self, i: usize) -> Result<(char, usize), Invalid> {
        let first = self.hex4(i)?;
        if (0xD800..0xDC00).contains(&first) {
            if self.bytes.get(i + 4..i + 6) != Some(b"\\u") {
                return Err(Invalid);
            }
            let second = self.hex4(i + 6)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(Invalid);
            }
            let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            return char::from_u32(code).map(|c| (c, i + 10)).ok_or(Invalid);
        }
        char::from_u32(first).map(|c| (c, i + 4)).ok_or(Invalid)
    }

    /// A JSON number: integers that fit in i64 exactly, others as the
    /// nearest f64. Numbers beyond the f64 range are refused, as serde_json
    /// refuses them.
    #[inline(always)]
    fn number(&mut self) -> Result<Scalar<'a>, Invalid> {
        let bytes = self.bytes;
        let start = self.pos;
        let negative = bytes[start] == b'-';
        let int_start = start + usize::from(negative);
        let (end, mantissa) = digits(bytes, int_start, 0);
        let int_digits = end - int_start;
        if int_digits == 0 || (int_digits > 1 && bytes[int_start] == b'0') {
            return Err(Invalid);
        }
        if let Some(b'.' | b'e' | b'E') = bytes.get(end) {
            return self.non_integer(start, end, negative, mantissa, int_digits);
        }
        self.pos = end;
        // Up to 18 digits cannot overflow an i64.
        if int_digits <= 18 {
            let value = mantissa as i64;
            return Ok(Scalar::Int(if negative { -value } else { value }));
        }
        self.parse_slow(start, true)
    }

    /// The rest of a number with a fraction or an exponent, whose integer
    /// part (`int_digits` digits worth `mantissa`, wrapped) ends at `i`.
    fn non_integer(
        &mut self,
        start: usize,
        mut i: usize,
        negative: bool,
        mut mantissa: u64,
        int_digits: usize,
    ) -> Result<Scalar<'a>, Invalid> {
        let bytes = self.bytes;
        let mut frac_digits = 0;
        if bytes.get(i) == Some(&b'.') {
            let frac_start = i + 1;
            (i, mantissa) = digits(bytes, frac_start, mantissa);
            frac_digits = i - frac_start;
            if frac_digits == 0 {
                return Err(Invalid);
            }
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            let exp_negative = bytes.get(i) == Some(&b'-');
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let exp_start = i;
            while let Some(&b) = bytes.get(i) {
                let digit = b.wrapping_sub(b'0');
                if digit > 9 {
                    break;
                }
                // Saturates far beyond any exponent the fast path takes.
                exponent = (exponent * 10 + i64::from(digit)).min(1 << 32);
                i += 1;
            }
            if i == exp_start {
                return Err(Invalid);
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        self.pos = i;
        if int_digits + frac_digits <= 19 && mantissa <= 1 << 53 {
            // Clinger's fast path: the mantissa and the power of ten are both
            // exact in an f64, so one multiplication or division rounds
            // correctly.
            let scale = exponent - frac_digits as i64;
            if (-22..=22).contains(&scale) {
                let magnitude = if scale < 0 {
                    mantissa as f64 / POW10[(-scale) as usize]
                } else {
                    mantissa as f64 * POW10[scale as usize]
                };
                return Ok(Scalar::Float(if negative { -magnitude } else { magnitude }));
            }
        }
        self.parse_slow(start, false)
    }

    /// The validated number `text[start..pos]` through the standard library.
    #[cold]
    fn parse_slow(&self, start: usize, integer: bool) -> Result<Scalar<'a>, Invalid> {
        let text = self.slice(start, self.pos);
        if integer {
            if let Ok(value) = text.parse::<i64>() {
                return Ok(Scalar::Int(value));
            }
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Scalar::Float(value)),
            _ => Err(Invalid),
        }
    }

    /// Skip and validate any value, inside `depth` open containers.
    fn skip_value(&mut self, depth: usize) -> Result<(), Invalid> {
        match self.peek() {
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(Invalid);
                }
                self.pos += 1;
                if open == b'{' {
                    self.skip_members(depth + 1, b'}', true)
                } else {
                    self.skip_members(depth + 1, b']', false)
                }
            }
            _ => self.scalar(depth).map(|_| ()),
        }
    }

    /// The members of a container opened just before `pos`, `depth` deep.
    fn skip_members(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), Invalid> {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if keyed {
                if self.peek() != Some(b'"') {
                    return Err(Invalid);
                }
                self.string()?;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
            }
            self.skip_value(depth)?;
            self.skip_ws();
            match self.next() {
                Some(b',') => continue,
                Some(b) if b == close => return Ok(()),
                _ => return Err(Invalid),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(text: &str) -> Result<Vec<(String, Scalar<'_>)>, ScanError> {
        let mut out = Vec::new();
        scan_object(text, |k, v| {
            out.push((String::from_utf8(k.to_vec()).unwrap(), v))
        })?;
        Ok(out)
    }

    #[test]
    fn utf8_agrees_with_the_standard_library() {
        for len in 0..100 {
            for at in 0..len {
                for byte in [0x80u8, 0xc3, 0xff, b'a'] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = byte;
                    assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok(), "{len} {at}");
                }
            }
        }
        assert_eq!(utf8("é".repeat(40).as_bytes()), Some(&*"é".repeat(40)));
    }

    /// Sequences and bad bytes at every offset of longer inputs, past the
    /// first blocks the ASCII pass skips.
    #[test]
    fn utf8_of_long_inputs_agrees_with_the_standard_library() {
        for len in [150, 200, 467] {
            for at in 0..len {
                for piece in [
                    &b"\xc3\xa9"[..],
                    b"\xf0\x9f\x8e\xb5",
                    b"\xc3",
                    b"\xe9\x80",
                    b"\xff",
                ] {
                    let mut bytes = vec![b'x'; len];
                    bytes.splice(at..(at + piece.len()).min(len), piece.iter().copied());
                    assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok(), "{len} {at}");
                }
            }
        }
    }

    #[test]
    fn scans_members_in_order_with_types() {
        let got = fields(r#" {"a":"x","b":-12,"c":1.5e3,"d":null,"e":[1,{"f":[]}],"g":true,"h\u0041":"q\"\u00e9\ud83c\udfb5"} "#).unwrap();
        assert_eq!(got[0], ("a".into(), Scalar::Str("x".into())));
        assert_eq!(got[1], ("b".into(), Scalar::Int(-12)));
        assert_eq!(got[2], ("c".into(), Scalar::Float(1500.0)));
        assert_eq!(got[3], ("d".into(), Scalar::Null));
        assert_eq!(got[4], ("e".into(), Scalar::Other));
        assert_eq!(got[5], ("g".into(), Scalar::Other));
        assert_eq!(got[6], ("hA".into(), Scalar::Str("q\"é🎵".into())));
        assert_eq!(fields("{}").unwrap(), vec![]);
    }

    #[test]
    fn refuses_invalid_json() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":nul}",
            "{} x",
            "{\"a\":[1,]}",
            "{'a':1}",
        ] {
            assert_eq!(fields(bad), Err(ScanError::Syntax), "{bad:?}");
        }
        assert_eq!(fields("[1]"), Err(ScanError::NotAnObject));
        assert_eq!(fields("\"s\""), Err(ScanError::NotAnObject));
        let deep = "{\"a\":".to_owned() + &"[".repeat(200) + &"]".repeat(200) + "}";
        assert_eq!(fields(&deep), Err(ScanError::Syntax));
        for bad in [
            "{\"a\":1e400}",
            "{\"a\":-1e400}",
            "{\"a\":1.0e309}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":\"\\u00e\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"abc\\\"}",
            "{\"a\":\"abc\\",
            "{\"a\":\"abc",
            "{\"a\":\"0123456789abcdef0123\u{1}\"}",
            "{\"a\":+1}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":1e+}",
            "{\"a\":00}",
            "{\"a\":-01}",
            "{\"a\":0123456789}",
            "{\"a\":12345678901234567890x}",
            "{\"a\" 1}",
            "{\"a\":1 \"b\":2}",
            "{,}",
            "{\"a\":tru}",
            "{\"a\":nulll}",
        ] {
            assert_eq!(fields(bad), Err(ScanError::Syntax), "{bad:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parses_numbers_like_the_standard_library() {
        for (text, expected) in [
            ("0", Scalar::Int(0)),
            ("-0", Scalar::Int(0)),
            ("7", Scalar::Int(7)),
            ("12345678", Scalar::Int(12_345_678)),
            ("123456789", Scalar::Int(123_456_789)),
            ("1795918478834", Scalar::Int(1_795_918_478_834)),
            ("999999999999999999", Scalar::Int(999_999_999_999_999_999)),
            ("9223372036854775807", Scalar::Int(i64::MAX)),
            ("-9223372036854775808", Scalar::Int(i64::MIN)),
            (
                "9223372036854775808",
                Scalar::Float(9_223_372_036_854_775_808.0),
            ),
            ("349.90661", Scalar::Float(349.90661)),
            ("-0.0", Scalar::Float(-0.0)),
            ("1e-400", Scalar::Float(0.0)),
            ("1E+2", Scalar::Float(100.0)),
            ("0.1", Scalar::Float(0.1)),
            (
                "123456789012345678901234567890",
                Scalar::Float(1.2345678901234568e29),
            ),
            (
                "2.2250738585072011e-308",
                Scalar::Float(2.225_073_858_507_201e-308),
            ),
            ("9007199254740993", Scalar::Int(9_007_199_254_740_993)),
            ("9007199254740993.0", Scalar::Float(9_007_199_254_740_992.0)),
        ] {
            for line in [
                format!("{{\"n\":{text}}}"),
                format!("{{\"n\":{text},\"z\":1}}"),
            ] {
                let got = fields(&line).unwrap();
                assert_eq!(got[0].1, expected, "{line}");
                if let Scalar::Float(f) = got[0].1 {
                    assert_eq!(
                        f.to_bits(),
                        text.parse::<f64>().unwrap().to_bits(),
                        "{line}"
                    );
                }
            }
        }
    }

    /// serde_json counts the top-level value as one level and refuses the 128th.
    #[test]
    fn depth_limit_matches_serde_json() {
        for depth in 120..135 {
            for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
                let nested = open.repeat(depth) + "1" + &close.repeat(depth);
                let inside = format!("{{\"a\":{nested}}}");
                for text in [nested, inside] {
                    let ours = fields(&text);
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(serde_json::Value::Object(_)) => assert!(ours.is_ok(), "{depth}"),
                        Ok(_) => assert_eq!(ours, Err(ScanError::NotAnObject), "{depth}"),
                        Err(_) => assert_eq!(ours, Err(ScanError::Syntax), "{depth}"),
                    }
                }
            }
        }
    }

    /// Strings ending at every offset from the end of the input exercise the
    /// block scanner's tail handling.
    #[test]
    fn strings_near_the_end_of_the_input() {
        for len in 0..70 {
            let body: String = "ab\\u00e9é\\\"".repeat(len).chars().take(len).collect();
            for prefix in ["", "     "] {
                let line = format!("{prefix}{{\"k\":\"{body}\"}}");
                let expected = serde_json::from_str::<serde_json::Value>(&line);
                let got = fields(&line);
                match expected {
                    Ok(value) => {
                        let want = value["k"].as_str().unwrap().to_owned();
                        assert_eq!(got.unwrap()[0].1, Scalar::Str(want.into()), "{line}");
                    }
                    Err(_) => assert_eq!(got, Err(ScanError::Syntax), "{line}"),
                }
                for cut in 0..line.len() {
                    if line.is_char_boundary(cut) {
                        assert_eq!(fields(&line[..cut]), Err(ScanError::Syntax), "{line} {cut}");
                    }
                }
                let control = line.replacen(&body, &format!("{body}\u{1f}"), 1);
                if !body.is_empty() {
                    assert_eq!(fields(&control), Err(ScanError::Syntax), "{control:?}");
                }
            }
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Oracle: serde_json's rendering of any object scans back to the same members.
        #[test]
        fn agrees_with_serde_json_on_valid_objects(map in prop::collection::btree_map(".*", json_value(), 0..6)) {
            let object = serde_json::Value::Object(map.clone().into_iter().collect());
            let text = serde_json::to_string(&object).unwrap();
            let got = fields(&text).unwrap();
            prop_assert_eq!(got.len(), map.len());
            for ((key, value), (k, v)) in got.iter().zip(&map) {
                prop_assert_eq!(key, k);
                let expected = match v {
                    serde_json::Value::String(s) => Scalar::Str(s.clone().into()),
                    serde_json::Value::Null => Scalar::Null,
                    serde_json::Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
                    serde_json::Value::Number(n) => Scalar::Float(n.as_f64().unwrap()),
                    _ => Scalar::Other,
                };
                prop_assert_eq!(value, &expected);
            }
        }

        /// Oracle: on arbitrary text the scanner accepts exactly what serde_json accepts as an object.
        #[test]
        fn accepts_what_serde_json_accepts(text in r#"[{}\[\]":,0-9.eE+\-a-z\\ ]{0,24}"#) {
            let serde_ok = serde_json::from_str::<serde_json::Value>(&text);
            let ours = fields(&text);
            match serde_ok {
                Ok(serde_json::Value::Object(_)) => prop_assert!(ours.is_ok(), "{text:?}: {ours:?}"),
                Ok(_) => prop_assert_eq!(ours, Err(ScanError::NotAnObject)),
                Err(_) => prop_assert_eq!(ours, Err(ScanError::Syntax)),
            }
        }
    }

    /// One piece of an EventSim-like string: its JSON spelling and its value.
    fn string_piece() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            4 => "[ -~&&[^\"\\\\]]{1,20}".prop_map(|s| (s.clone(), s)),
            2 => any::<char>()
                .prop_filter("not special", |&c| c >= ' ' && c != '"' && c != '\\')
                .prop_map(|c| (c.to_string(), c.to_string())),
            2 => prop::sample::select(vec![
                ("\\\"", "\""),
                ("\\\\", "\\"),
                ("\\/", "/"),
                ("\\b", "\u{8}"),
                ("\\f", "\u{c}"),
                ("\\n", "\n"),
                ("\\r", "\r"),
                ("\\t", "\t"),
            ])
            .prop_map(|(json, value)| (json.to_owned(), value.to_owned())),
            2 => (any::<char>(), any::<bool>()).prop_map(|(c, upper)| {
                let mut units = [0u16; 2];
                let json: String = c
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|u| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") })
                    .collect();
                (json, c.to_string())
            }),
        ]
    }

    /// A JSON string literal and its value.
    fn string_value() -> impl Strategy<Value = (String, String)> {
        prop::collection::vec(string_piece(), 0..8).prop_map(|pieces| {
            let json = pieces.iter().map(|(j, _)| j.as_str()).collect::<String>();
            let value = pieces.iter().map(|(_, v)| v.as_str()).collect::<String>();
            (format!("\"{json}\""), value)
        })
    }

    /// A member value: its JSON text and what the scanner should report.
    fn member_value() -> impl Strategy<Value = (String, Scalar<'static>)> {
        prop_oneof![
            4 => string_value().prop_map(|(json, value)| (json, Scalar::Str(value.into()))),
            2 => any::<i64>().prop_map(|n| (n.to_string(), Scalar::Int(n))),
            2 => (0i64..1 << 45).prop_map(|n| (n.to_string(), Scalar::Int(n))),
            2 => (-(1i64 << 50)..1 << 50, 0u32..8).prop_map(|(n, scale)| {
                let f = n as f64 / 10f64.powi(scale as i32);
                (format!("{f:?}"), Scalar::Float(f))
            }),
            1 => Just(("null".to_owned(), Scalar::Null)),
            1 => Just(("true".to_owned(), Scalar::Other)),
            1 => Just(("[1,{\"a\":\"\\u00e9\"},[]]".to_owned(), Scalar::Other)),
        ]
    }

    const EVENTSIM_KEYS: [&str; 18] = [
        "ts",
        "userId",
        "sessionId",
        "page",
        "auth",
        "method",
        "status",
        "level",
        "itemInSession",
        "location",
        "userAgent",
        "lastName",
        "firstName",
        "registration",
        "gender",
        "artist",
        "song",
        "length",
    ];

    /// An EventSim-like line with random values, escapes and whitespace, and
    /// the members it holds.
    fn eventsim_line() -> impl Strategy<Value = (String, Vec<(String, Scalar<'static>)>)> {
        let member = (
            member_value(),
            any::<bool>(),
            prop::sample::select(vec!["", "", "", " ", "\n\t "]),
        );
        prop::collection::vec(member, 18).prop_map(|members| {
            let mut line = "{".to_owned();
            let mut expected = Vec::new();
            for (i, ((json, value), escape_key, ws)) in members.into_iter().enumerate() {
                let key = EVENTSIM_KEYS[i];
                if i > 0 {
                    line.push(',');
                }
                line.push_str(ws);
                if escape_key {
                    // Spell the key's first letter as a \u escape.
                    let first = key.as_bytes()[0];
                    line.push_str(&format!("\"\\u{first:04x}{}\"", &key[1..]));
                } else {
                    line.push_str(&format!("\"{key}\""));
                }
                line.push_str(&format!("{ws}:{ws}{json}{ws}"));
                expected.push((key.to_owned(), value));
            }
            line.push('}');
            (line, expected)
        })
    }

    /// The scanner's view of a value serde_json parsed.
    fn as_scalar(value: &serde_json::Value) -> Scalar<'_> {
        match value {
            serde_json::Value::String(s) => Scalar::Str(s.as_str().into()),
            serde_json::Value::Null => Scalar::Null,
            serde_json::Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
            serde_json::Value::Number(n) => Scalar::Float(n.as_f64().unwrap()),
            _ => Scalar::Other,
        }
    }

    proptest! {
        /// Oracle: EventSim-like lines with random escapes, unicode and
        /// whitespace scan to the members they were built from, and every
        /// member equals serde_json's parse of it.
        #[test]
        fn eventsim_lines_agree_with_serde_json((line, expected) in eventsim_line()) {
            let got = fields(&line).unwrap();
            prop_assert_eq!(&got, &expected, "{}", line);
            let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(parsed.len(), got.len());
            for (key, value) in &got {
                prop_assert_eq!(value, &as_scalar(&parsed[key]), "{} in {}", key, line);
            }
        }

        /// Oracle: one random edit of an EventSim-like line is accepted or
        /// refused exactly as serde_json accepts or refuses it.
        #[test]
        fn edited_eventsim_lines_classify_like_serde_json(
            (line, _) in eventsim_line(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(b"{}[]\",:\\ 0-.eu\x01".to_vec()),
        ) {
            let mut bytes = line.into_bytes();
            let i = at.index(bytes.len());
            match edit {
                0 => { bytes.remove(i); }
                1 => bytes.insert(i, byte),
                _ => bytes[i] = byte,
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let ours = fields(&text);
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(_)) => prop_assert!(ours.is_ok(), "{:?}: {:?}", text, ours),
                    Ok(_) => prop_assert_eq!(ours, Err(ScanError::NotAnObject), "{:?}", text),
                    Err(_) => prop_assert_eq!(ours, Err(ScanError::Syntax), "{:?}", text),
                }
            }
        }

        /// The block scanners find the same byte as the bytewise one.
        #[test]
        fn block_scanners_agree(
            bytes in prop::collection::vec(prop::sample::select(b"ab\"\\\x00\x1f\x20\x7f\x80\xff".to_vec()), 0..80),
            from in any::<prop::sample::Index>(),
        ) {
            let from = from.index(bytes.len() + 1);
            let expected = find_special_bytewise(&bytes, from);
            prop_assert_eq!(find_special(&bytes, from), expected);
            prop_assert_eq!(find_special_swar(&bytes, from), expected);
        }

        /// Numbers of every length parse as the standard library parses them,
        /// and are accepted exactly when serde_json accepts them.
        #[test]
        fn numbers_agree_with_std_and_serde_json(
            number in r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            tail in prop::sample::select(vec!["}", ",\"z\":0}", " }"]),
        ) {
            let line = format!("{{\"n\":{number}{tail}");
            let ours = fields(&line);
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(_) => {
                    let got = ours.unwrap()[0].1.clone();
                    let integer = !number.contains(['.', 'e', 'E']);
                    match number.parse::<i64>() {
                        Ok(n) if integer => prop_assert_eq!(got, Scalar::Int(n)),
                        _ => {
                            let f: f64 = number.parse().unwrap();
                            prop_assert_eq!(got, Scalar::Float(f));
                        }
                    }
                }
                Err(_) => prop_assert_eq!(ours, Err(ScanError::Syntax), "{}", line),
            }
        }
    }
}

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
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    s.skip_ws();
    if s.peek() != Some(b'{') {
        // Valid JSON of another shape is a type problem, not a syntax one.
        s.skip_value(0)?;
        s.skip_ws();
        return if s.pos == s.bytes.len() {
            Err(ScanError::NotAnObject)
        } else {
            Err(ScanError::Syntax)
        };
    }
    s.pos += 1;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            if s.peek() != Some(b'"') {
                return Err(ScanError::Syntax);
            }
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            let value = s.scalar(1)?;
            on_field(key.as_bytes(), value);
            s.skip_ws();
            match s.next() {
                Some(b',') => s.skip_ws(),
                Some(b'}') => break,
                _ => return Err(ScanError::Syntax),
            }
        }
    }
    s.skip_ws();
    if s.pos == s.bytes.len() {
        Ok(())
    } else {
        Err(ScanError::Syntax)
    }
}

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
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128, _mm_subs_epu8,
    };
    /// Bit `k` set where byte `k` of the 16 at `at` is special.
    #[inline(always)]
    fn mask_at(bytes: &[u8], at: usize) -> u32 {
        let block = &bytes[at..at + 16];
        // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics are
        // always available; `block` holds exactly the 16 bytes the unaligned
        // load reads.
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // `v - 0x1f` saturates to zero exactly for bytes below 0x20.
            let control =
                _mm_cmpeq_epi8(_mm_subs_epu8(v, _mm_set1_epi8(0x1f)), _mm_setzero_si128());
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }
    let len = bytes.len();
    if len < 16 {
        return find_special_bytewise(bytes, from);
    }
    let mut i = from;
    while i + 16 <= len {
        let mask = mask_at(bytes, i);
        if mask != 0 {
            return Some(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < len {
        // Re-read the last 16 bytes and drop those already looked at.
        let last = len - 16;
        let mask = mask_at(bytes, last) >> (i - last);
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

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
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
    fn expect(&mut self, byte: u8) -> Result<(), ScanError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(ScanError::Syntax)
        }
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// `text[start..end]` where both ends sit next to ASCII delimiters.
    #[inline(always)]
    fn slice(&self, start: usize, end: usize) -> &'a str {
        debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
        debug_assert!(start <= end && end <= self.text.len());
        // SAFETY: every caller passes `start` right after an ASCII byte (an
        // opening quote or an escape sequence) and `end` at an ASCII byte (a
        // closing quote or a backslash) of `text`, both within `text`. An
        // ASCII byte is never part of a multi-byte UTF-8 sequence, so both
        // are char boundaries of the valid UTF-8 `text`.
        unsafe { self.text.get_unchecked(start..end) }
    }

    /// A value inside a container `depth` levels deep.
    #[inline(always)]
    fn scalar(&mut self, depth: usize) -> Result<Scalar<'a>, ScanError> {
        match self.peek() {
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n') => self.literal(b"null", Scalar::Null),
            Some(b't') => self.literal(b"true", Scalar::Other),
            Some(b'f') => self.literal(b"false", Scalar::Other),
            Some(b'{' | b'[') => self.skip_value(depth).map(|()| Scalar::Other),
            _ => Err(ScanError::Syntax),
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8], value: Scalar<'a>) -> Result<Scalar<'a>, ScanError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(ScanError::Syntax)
        }
    }

    /// A string at `pos`, which holds the opening quote.
    #[inline(always)]
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let start = self.pos + 1;
        let end = find_special(self.bytes, start).ok_or(ScanError::Syntax)?;
        match self.bytes[end] {
            b'"' => {
                self.pos = end + 1;
                Ok(Cow::Borrowed(self.slice(start, end)))
            }
            b'\\' => self.escaped_string(start, end),
            _ => Err(ScanError::Syntax),
        }
    }

    /// The slow path: the string opened before `start` has its first escape
    /// at `first`. Finds the closing quote (refusing controls), then
    /// unescapes into a string of the right capacity.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, first: usize) -> Result<Cow<'a, str>, ScanError> {
        let bytes = self.bytes;
        let mut backslash = first;
        let end = loop {
            // Skip the backslash and the byte it escapes (checked below).
            let from = backslash + 2;
            if from > bytes.len() {
                return Err(ScanError::Syntax);
            }
            let at = find_special(bytes, from).ok_or(ScanError::Syntax)?;
            match bytes[at] {
                b'"' => break at,
                b'\\' => backslash = at,
                _ => return Err(ScanError::Syntax),
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
            match memchr::memchr(b'\\', &bytes[run..end]) {
                Some(offset) => backslash = run + offset,
                None => break,
            }
        }
        out.push_str(self.slice(run, end));
        self.pos = end + 1;
        Ok(Cow::Owned(out))
    }

    /// One escape sequence after the backslash at `i - 1`: the character and
    /// the index after it.
    fn escape(&self, i: usize) -> Result<(char, usize), ScanError> {
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
            _ => return Err(ScanError::Syntax),
        };
        Ok((simple, i + 1))
    }

    fn hex4(&self, i: usize) -> Result<u32, ScanError> {
        let digits = self.bytes.get(i..i + 4).ok_or(ScanError::Syntax)?;
        digits.iter().try_fold(0, |acc, &b| match HEX[b as usize] {
            0xff => Err(ScanError::Syntax),
            d => Ok(acc << 4 | u32::from(d)),
        })
    }

    /// `\uXXXX` (with `i` at the first hex digit), combining surrogate pairs;
    /// a lone surrogate is refused, as serde_json refuses it.
    fn unicode_escape(&self, i: usize) -> Result<(char, usize), ScanError> {
        let first = self.hex4(i)?;
        if (0xD800..0xDC00).contains(&first) {
            if self.bytes.get(i + 4..i + 6) != Some(b"\\u") {
                return Err(ScanError::Syntax);
            }
            let second = self.hex4(i + 6)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(ScanError::Syntax);
            }
            let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
            return char::from_u32(code)
                .map(|c| (c, i + 10))
                .ok_or(ScanError::Syntax);
        }
        char::from_u32(first)
            .map(|c| (c, i + 4))
            .ok_or(ScanError::Syntax)
    }

    /// A JSON number: integers that fit in i64 exactly, others as the
    /// nearest f64. Numbers beyond the f64 range are refused, as serde_json
    /// refuses them.
    #[inline]
    fn number(&mut self) -> Result<Scalar<'a>, ScanError> {
        let bytes = self.bytes;
        let start = self.pos;
        let negative = bytes[start] == b'-';
        let mut i = start + usize::from(negative);
        // Digits are accumulated with wrapping arithmetic; the count of
        // digits tells below whether the result is exact.
        let mut mantissa: u64 = 0;
        let int_start = i;
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&b) = bytes.get(i) {
                    let digit = b.wrapping_sub(b'0');
                    if digit > 9 {
                        break;
                    }
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
                    i += 1;
                }
            }
            _ => return Err(ScanError::Syntax),
        }
        let int_digits = i - int_start;
        let mut frac_digits = 0;
        let mut integer = true;
        if bytes.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let frac_start = i;
            while let Some(&b) = bytes.get(i) {
                let digit = b.wrapping_sub(b'0');
                if digit > 9 {
                    break;
                }
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
                i += 1;
            }
            frac_digits = i - frac_start;
            if frac_digits == 0 {
                return Err(ScanError::Syntax);
            }
        }
        let mut exponent: i64 = 0;
        if let Some(b'e' | b'E') = bytes.get(i) {
            integer = false;
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
                return Err(ScanError::Syntax);
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        self.pos = i;
        if integer {
            // Up to 18 digits cannot overflow an i64.
            if int_digits <= 18 {
                let value = mantissa as i64;
                return Ok(Scalar::Int(if negative { -value } else { value }));
            }
            if let Ok(value) = self.slice(start, i).parse::<i64>() {
                return Ok(Scalar::Int(value));
            }
        } else if int_digits + frac_digits <= 19 && mantissa <= 1 << 53 {
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
        match self.slice(start, i).parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Scalar::Float(value)),
            _ => Err(ScanError::Syntax),
        }
    }

    /// Skip and validate any value, inside `depth` open containers.
    fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        match self.peek() {
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(ScanError::Syntax);
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
    fn skip_members(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), ScanError> {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if keyed {
                if self.peek() != Some(b'"') {
                    return Err(ScanError::Syntax);
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
                _ => return Err(ScanError::Syntax),
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
}

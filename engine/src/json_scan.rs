//! A validating, single-pass scanner for flat JSON objects.
//!
//! Listen events are flat objects of which downbeat reads about a dozen
//! keys. A general JSON deserializer (serde over sonic-rs, measured in the
//! README) spends most of its time in generic visitor machinery; this scanner
//! walks the object once, hands each key and value to the caller, and
//! validates everything it skips (nested values included) so invalid JSON is
//! still refused as invalid.

use std::borrow::Cow;

/// Nesting deeper than this is refused (as serde_json does at 128).
const MAX_DEPTH: usize = 128;

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
            s.skip_ws();
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            let value = s.scalar()?;
            on_field(key.as_bytes(), value);
            s.skip_ws();
            match s.next() {
                Some(b',') => continue,
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

/// Index of the first quote, backslash or control byte. Most strings in a
/// listen event are short, so a table loop beats a SIMD call for the first
/// bytes; long strings (user agents) switch to SIMD.
#[inline]
fn find_string_end(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 24;
    let head = &bytes[..bytes.len().min(SHORT)];
    if let Some(i) = head.iter().position(|&b| SPECIAL[b as usize]) {
        return Some(i);
    }
    if bytes.len() <= SHORT {
        return None;
    }
    let rest = &bytes[SHORT..];
    let candidate = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let end = match rest[..candidate].iter().position(|&b| b < 0x20) {
        Some(control) => control,
        None if candidate < rest.len() => candidate,
        None => return None,
    };
    Some(SHORT + end)
}

/// True if `run` holds a byte JSON forbids unescaped in strings.
#[inline]
fn has_control(run: &[u8]) -> bool {
    run.iter().fold(false, |found, &b| found | (b < 0x20))
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        self.pos += 1;
        b
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Result<(), ScanError> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(ScanError::Syntax)
        }
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn scalar(&mut self) -> Result<Scalar<'a>, ScanError> {
        match self.peek() {
            Some(b'"') => Ok(Scalar::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n') => self.literal(b"null").map(|()| Scalar::Null),
            Some(b't') => self.literal(b"true").map(|()| Scalar::Other),
            Some(b'f') => self.literal(b"false").map(|()| Scalar::Other),
            Some(b'{' | b'[') => self.skip_value(0).map(|()| Scalar::Other),
            _ => Err(ScanError::Syntax),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(ScanError::Syntax)
        }
    }

    /// A string at `pos` (which holds the opening quote).
    #[inline]
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        if self.peek() != Some(b'"') {
            return Err(ScanError::Syntax);
        }
        let start = self.pos + 1;
        let end = find_string_end(&self.bytes[start..]).ok_or(ScanError::Syntax)? + start;
        if self.bytes[end] < 0x20 {
            return Err(ScanError::Syntax);
        }
        if self.bytes[end] == b'\\' {
            return self.escaped_string(start, end);
        }
        self.pos = end + 1;
        Ok(Cow::Borrowed(&self.text[start..end]))
    }

    /// The slow path: the string has escapes from `escape` on.
    fn escaped_string(&mut self, start: usize, mut i: usize) -> Result<Cow<'a, str>, ScanError> {
        let bytes = self.bytes;
        let mut out = String::with_capacity(i - start + 16);
        out.push_str(&self.text[start..i]);
        loop {
            match bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let (ch, next) = self.escape(i + 1)?;
                    out.push(ch);
                    i = next;
                }
                Some(&b) if b < 0x20 => return Err(ScanError::Syntax),
                Some(_) => {
                    // Copy the run up to the next quote or backslash (both
                    // ASCII, so the cut is on a UTF-8 boundary).
                    let run_end =
                        memchr::memchr2(b'"', b'\\', &bytes[i..]).map_or(bytes.len(), |p| i + p);
                    if has_control(&bytes[i..run_end]) {
                        return Err(ScanError::Syntax);
                    }
                    out.push_str(&self.text[i..run_end]);
                    i = run_end;
                }
                None => return Err(ScanError::Syntax),
            }
        }
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
        let text = std::str::from_utf8(digits).map_err(|_| ScanError::Syntax)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(ScanError::Syntax);
        }
        u32::from_str_radix(text, 16).map_err(|_| ScanError::Syntax)
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

    /// A JSON number: integers that fit in i64 exactly, others as f64.
    fn number(&mut self) -> Result<Scalar<'a>, ScanError> {
        let start = self.pos;
        let bytes = self.bytes;
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return Err(ScanError::Syntax),
        }
        let mut integer = true;
        if bytes.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let digits = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits {
                return Err(ScanError::Syntax);
            }
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let digits = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits {
                return Err(ScanError::Syntax);
            }
        }
        self.pos = i;
        let text = &self.text[start..i];
        if integer {
            if let Ok(value) = text.parse::<i64>() {
                return Ok(Scalar::Int(value));
            }
        }
        text.parse::<f64>()
            .map(Scalar::Float)
            .map_err(|_| ScanError::Syntax)
    }

    /// Skip and validate any value.
    fn skip_value(&mut self, depth: usize) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Syntax);
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                self.skip_members(depth, b'}', true)
            }
            Some(b'[') => {
                self.pos += 1;
                self.skip_members(depth, b']', false)
            }
            _ => self.scalar().map(|_| ()),
        }
    }

    fn skip_members(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), ScanError> {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if keyed {
                self.string()?;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
            }
            self.skip_value(depth + 1)?;
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

//! Decoding one input line into a listen, auto-detecting the format per record.
//!
//! Three formats are understood:
//! - EventSim classic (Sparkify): has `page`; a stream is `page == "NextSong"`;
//!   `ts` (epoch ms), `userId`, `song`, `artist`, `length`, `level`, `gender`,
//!   `location` ("City, ST"), `userAgent`.
//! - streamify `listen_events`: no `page`; every record is a stream; `ts`,
//!   `userId`, `song`, `artist`, `duration`, `level`, `state`, `userAgent`, `gender`.
//! - simple: `{"user_id", "song", "timestamp"}`, every record a stream.
//!
//! Every timestamp is epoch seconds when below 1e11 and epoch milliseconds
//! from 1e11 on. Missing values may be `null` or absent keys.

use std::borrow::Cow;
use std::fmt;

use downbeat_operators::{user_hash, Device, Dimensions, Gender, Level, UsState};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Why a line was refused. The set is fixed so metric labels stay bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Blank line.
    EmptyLine,
    /// Longer than `input.max_line_bytes`.
    LineTooLong,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Not valid JSON.
    InvalidJson,
    /// Valid JSON of the wrong shape: not an object, or a field of the wrong type.
    WrongType,
    /// A stream without a user id.
    MissingUser,
    /// A stream without a timestamp.
    MissingTimestamp,
    /// A stream without a song title.
    MissingSong,
    /// A timestamp before 2000 or too far in the future.
    TimestampOutOfRange,
}

impl RejectReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::EmptyLine,
        RejectReason::LineTooLong,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::WrongType,
        RejectReason::MissingUser,
        RejectReason::MissingTimestamp,
        RejectReason::MissingSong,
        RejectReason::TimestampOutOfRange,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::EmptyLine => "empty_line",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::WrongType => "wrong_type",
            RejectReason::MissingUser => "missing_user",
            RejectReason::MissingTimestamp => "missing_timestamp",
            RejectReason::MissingSong => "missing_song",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
        }
    }
}

/// A decoded stream, borrowing from the input line where it can.
#[derive(Debug, PartialEq)]
pub struct Listen<'a> {
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// The user id as text (numbers are rendered in decimal).
    pub user: UserKey<'a>,
    /// Artist ("" when the format has none).
    pub artist: Cow<'a, str>,
    /// Song title.
    pub song: Cow<'a, str>,
    /// Breakdown dimensions.
    pub dims: Dimensions,
    /// Listening time, when given and sensible.
    pub duration_ms: Option<u32>,
}

/// What one line turned out to be.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// A stream to count.
    Stream(Listen<'a>),
    /// A valid event that is not a play (EventSim pages other than NextSong).
    NotAStream,
    /// Refused, with the reason.
    Rejected(RejectReason),
}

/// Bounds on acceptable timestamps.
#[derive(Clone, Copy, Debug)]
pub struct TimeBounds {
    /// Earliest accepted event time (inclusive).
    pub min_ms: i64,
    /// Latest accepted event time (inclusive).
    pub max_ms: i64,
}

/// 2000-01-01T00:00:00Z: nothing earlier is a real listen.
pub const EARLIEST_VALID_MS: i64 = 946_684_800_000;

impl TimeBounds {
    /// From 2000 to `now_ms + max_future_ms`.
    pub fn until(now_ms: i64, max_future_ms: i64) -> Self {
        Self {
            min_ms: EARLIEST_VALID_MS,
            max_ms: now_ms.saturating_add(max_future_ms),
        }
    }
}

/// Decode one line (without its newline).
pub fn decode(line: &[u8], bounds: TimeBounds) -> Decoded<'_> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Decoded::Rejected(RejectReason::EmptyLine);
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Decoded::Rejected(RejectReason::InvalidUtf8);
    };
    // Only objects are records (serde would read an array as a tuple).
    if !text.trim_start().starts_with('{') {
        return Decoded::Rejected(match sonic_rs::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => RejectReason::WrongType,
            Err(_) => RejectReason::InvalidJson,
        });
    }
    let record: Record<'_> = match sonic_rs::from_str(text) {
        Ok(record) => record,
        Err(error) => {
            return Decoded::Rejected(match error.classify() {
                sonic_rs::error::Category::TypeUnmatched => RejectReason::WrongType,
                _ => RejectReason::InvalidJson,
            })
        }
    };
    record.into_decoded(bounds)
}

/// All fields of all formats; unknown keys are skipped by the parser.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(default)]
    ts: Option<Timestamp>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default, borrow, rename = "userId")]
    user_id_camel: Option<UserKey<'a>>,
    #[serde(default, borrow, rename = "user_id")]
    user_id_snake: Option<UserKey<'a>>,
    #[serde(default, borrow)]
    page: Option<Text<'a>>,
    #[serde(default, borrow)]
    song: Option<Text<'a>>,
    #[serde(default, borrow)]
    artist: Option<Text<'a>>,
    #[serde(default)]
    length: Option<f64>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default, borrow)]
    level: Option<Text<'a>>,
    #[serde(default, borrow)]
    gender: Option<Text<'a>>,
    #[serde(default, borrow)]
    location: Option<Text<'a>>,
    #[serde(default, borrow)]
    state: Option<Text<'a>>,
    #[serde(default, borrow, rename = "userAgent")]
    user_agent: Option<Text<'a>>,
}

impl<'a> Record<'a> {
    fn into_decoded(self, bounds: TimeBounds) -> Decoded<'a> {
        if let Some(page) = &self.page {
            if page.0 != "NextSong" {
                return Decoded::NotAStream;
            }
        }
        let simple = self.page.is_none() && self.ts.is_none();
        let (time, user) = if simple {
            (self.timestamp, self.user_id_snake.or(self.user_id_camel))
        } else {
            (self.ts, self.user_id_camel.or(self.user_id_snake))
        };
        let Some(Timestamp(time_ms)) = time else {
            return Decoded::Rejected(RejectReason::MissingTimestamp);
        };
        if time_ms < bounds.min_ms || time_ms > bounds.max_ms {
            return Decoded::Rejected(RejectReason::TimestampOutOfRange);
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Decoded::Rejected(RejectReason::MissingUser);
        };
        let Some(Text(song)) = self.song else {
            return Decoded::Rejected(RejectReason::MissingSong);
        };
        let state = match (&self.state, &self.location) {
            (Some(state), _) => UsState::from_code(&state.0),
            (None, Some(location)) => UsState::from_location(&location.0),
            (None, None) => UsState::UNKNOWN,
        };
        let dims = Dimensions {
            level: Level::parse(text(&self.level)),
            device: Device::from_user_agent(text(&self.user_agent)),
            state,
            gender: Gender::parse(text(&self.gender)),
        };
        Decoded::Stream(Listen {
            time_ms,
            user,
            artist: self.artist.map(|a| a.0).unwrap_or(Cow::Borrowed("")),
            song,
            dims,
            duration_ms: self.length.or(self.duration).and_then(seconds_to_ms),
        })
    }
}

fn text<'r>(value: &'r Option<Text<'_>>) -> &'r str {
    value.as_ref().map(|t| &*t.0).unwrap_or("")
}

/// A listening time in seconds as milliseconds; negative or absurd values
/// (over a day) count as missing rather than refusing the stream.
fn seconds_to_ms(seconds: f64) -> Option<u32> {
    (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
        .then(|| (seconds * 1000.0).round() as u32)
}

/// A JSON string that borrows from the line unless it had escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A user id: a string, or an integer that hashes like its decimal text,
/// so `"42"` and `42` are the same user.
#[derive(Debug, PartialEq)]
pub enum UserKey<'a> {
    /// Given as a string.
    Text(Cow<'a, str>),
    /// Given as an integer.
    Number(i64),
}

impl UserKey<'_> {
    /// The stable hash used for distinct-user counts.
    pub fn hash(&self) -> u64 {
        match self {
            UserKey::Text(text) => user_hash(text.as_bytes()),
            UserKey::Number(number) => user_hash(itoa::Buffer::new().format(*number).as_bytes()),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, UserKey::Text(text) if text.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for UserKey<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = UserKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user id string or integer")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(UserKey::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(UserKey::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(UserKey::Text(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(UserKey::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(UserKey::Number)
                    .or_else(|_| Ok(UserKey::Text(Cow::Owned(v.to_string()))))
            }
        }
        deserializer.deserialize_any(UserVisitor)
    }
}

/// A timestamp normalised to epoch milliseconds (seconds below 1e11).
struct Timestamp(i64);

/// Values below this are epoch seconds, at or above it epoch milliseconds.
const SECONDS_MS_THRESHOLD: f64 = 1e11;

impl Timestamp {
    fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() {
            return None;
        }
        let ms = if value.abs() < SECONDS_MS_THRESHOLD {
            value * 1000.0
        } else {
            value
        };
        // Out-of-range values saturate and are refused by the time bounds.
        Some(Timestamp(ms.floor() as i64))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl<'de> Visitor<'de> for TimeVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an epoch timestamp number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if (v.unsigned_abs() as f64) < SECONDS_MS_THRESHOLD {
                    Timestamp(v.saturating_mul(1000))
                } else {
                    Timestamp(v)
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Timestamp::from_f64(v).ok_or_else(|| E::custom("timestamp is not finite"))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: TimeBounds = TimeBounds {
        min_ms: EARLIEST_VALID_MS,
        max_ms: 2_000_000_000_000,
    };

    fn listen(line: &str) -> Listen<'_> {
        match decode(line.as_bytes(), BOUNDS) {
            Decoded::Stream(listen) => listen,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn rejected(line: &[u8]) -> RejectReason {
        match decode(line, BOUNDS) {
            Decoded::Rejected(reason) => reason,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn eventsim_classic_next_song_is_a_stream() {
        let line = r#"{"ts":1513720872284,"userId":"1046","sessionId":5132,"page":"NextSong","auth":"Logged In","method":"PUT","status":200,"level":"paid","itemInSession":112,"location":"Charlotte-Concord-Gastonia, NC-SC","userAgent":"\"Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36\"","lastName":"Matthews","firstName":"Kenneth","registration":1509380319284,"gender":"M","artist":"Showaddywaddy","song":"Christmas Tears Will Fall","length":232.93342}"#;
        let l = listen(line);
        assert_eq!(l.time_ms, 1513720872284);
        assert_eq!(l.user.hash(), user_hash(b"1046"));
        assert_eq!(
            (&*l.artist, &*l.song),
            ("Showaddywaddy", "Christmas Tears Will Fall")
        );
        assert_eq!(l.dims.level, Level::Paid);
        assert_eq!(l.dims.device, Device::Windows);
        assert_eq!(l.dims.state.label(), "NC");
        assert_eq!(l.dims.gender, Gender::Male);
        assert_eq!(l.duration_ms, Some(232_933));
    }

    #[test]
    fn other_pages_are_events_but_not_streams() {
        let line = r#"{"ts":1513720872284,"userId":"","page":"Home","auth":"Logged Out"}"#;
        assert_eq!(decode(line.as_bytes(), BOUNDS), Decoded::NotAStream);
    }

    #[test]
    fn streamify_listen_events_with_integer_user_and_nulls() {
        let l = listen(
            r#"{"artist":"Sigur Rós","song":"Hoppípolla","duration":268.1,"ts":1700000000000,"sessionId":1,"auth":"Logged In","level":"free","city":"Austin","zip":"78701","state":"TX","userAgent":null,"lon":1.0,"lat":2.0,"userId":42,"lastName":"X","firstName":"Y","gender":"F","registration":1}"#,
        );
        assert_eq!(
            l.user.hash(),
            user_hash(b"42"),
            "42 and \"42\" are one user"
        );
        assert_eq!(&*l.artist, "Sigur Rós");
        assert_eq!(l.dims.state.label(), "TX");
        assert_eq!(l.dims.device, Device::Unknown);
        assert_eq!(l.duration_ms, Some(268_100));
    }

    #[test]
    fn simple_format_in_seconds_or_milliseconds() {
        let l = listen(r#"{"user_id":"u1","song":"S","timestamp":1700000000}"#);
        assert_eq!((l.time_ms, &*l.artist), (1_700_000_000_000, ""));
        let l = listen(r#"{"user_id":"u1","song":"S","timestamp":1700000000123}"#);
        assert_eq!(l.time_ms, 1_700_000_000_123);
        let l = listen(r#"{"user_id":7,"song":"S","timestamp":1700000000.5}"#);
        assert_eq!(l.time_ms, 1_700_000_000_500);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let l = listen(
            r#"{"ts":1700000000000,"userId":"1","page":"NextSong","artist":"A \"B\" \\ C","song":"\u00e9\ud83c\udfb5"}"#,
        );
        assert_eq!(&*l.artist, "A \"B\" \\ C");
        assert_eq!(&*l.song, "é🎵");
    }

    #[test]
    fn bad_lines_get_a_reason() {
        assert_eq!(rejected(b""), RejectReason::EmptyLine);
        assert_eq!(rejected(b"   \t"), RejectReason::EmptyLine);
        assert_eq!(rejected(b"{\"ts\":17"), RejectReason::InvalidJson);
        assert_eq!(rejected(b"not json"), RejectReason::InvalidJson);
        assert_eq!(
            rejected(b"{\"song\":\"\xff\xfe\"}"),
            RejectReason::InvalidUtf8
        );
        assert_eq!(
            rejected(br#"{"ts":"yesterday","userId":"1","song":"s"}"#),
            RejectReason::WrongType
        );
        assert_eq!(
            rejected(br#"{"ts":1700000000000,"userId":"1","song":5}"#),
            RejectReason::WrongType
        );
        assert_eq!(rejected(br#"[1,2,3]"#), RejectReason::WrongType);
        assert_eq!(rejected(br#""a string""#), RejectReason::WrongType);
        assert_eq!(rejected(b"\x00\x01garbage"), RejectReason::InvalidJson);
        assert_eq!(
            rejected(br#"{"ts":1700000000000,"userId":"","page":"NextSong","song":"s"}"#),
            RejectReason::MissingUser
        );
        assert_eq!(
            rejected(br#"{"ts":1700000000000,"userId":null,"song":"s"}"#),
            RejectReason::MissingUser
        );
        assert_eq!(
            rejected(br#"{"userId":"1","page":"NextSong","song":"s"}"#),
            RejectReason::MissingTimestamp
        );
        assert_eq!(
            rejected(br#"{"ts":1700000000000,"userId":"1","page":"NextSong","song":null}"#),
            RejectReason::MissingSong
        );
        assert_eq!(
            rejected(br#"{"ts":-5,"userId":"1","song":"s"}"#),
            RejectReason::TimestampOutOfRange
        );
        assert_eq!(
            rejected(br#"{"ts":99999999999999,"userId":"1","song":"s"}"#),
            RejectReason::TimestampOutOfRange
        );
        assert_eq!(
            rejected(br#"{"ts":1e300,"userId":"1","song":"s"}"#),
            RejectReason::TimestampOutOfRange
        );
    }
}

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

use downbeat_operators::{user_hash, Device, Dimensions, Gender, Level, UsState};

use crate::json_scan::{scan_object, Scalar, ScanError};

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
    let mut record = Record::default();
    let mut wrong_type = false;
    let scanned = scan_object(text, |key, value| {
        if record.set(key, value).is_err() {
            wrong_type = true;
        }
    });
    match scanned {
        Err(ScanError::Syntax) => Decoded::Rejected(RejectReason::InvalidJson),
        Err(ScanError::NotAnObject) => Decoded::Rejected(RejectReason::WrongType),
        Ok(()) if wrong_type => Decoded::Rejected(RejectReason::WrongType),
        Ok(()) => record.into_decoded(bounds),
    }
}

/// All fields of all formats that downbeat reads; other keys are skipped.
#[derive(Default)]
struct Record<'a> {
    ts: Option<Timestamp>,
    timestamp: Option<Timestamp>,
    user_id_camel: Option<UserKey<'a>>,
    user_id_snake: Option<UserKey<'a>>,
    page: Option<Text<'a>>,
    song: Option<Text<'a>>,
    artist: Option<Text<'a>>,
    length: Option<f64>,
    duration: Option<f64>,
    level: Option<Text<'a>>,
    gender: Option<Text<'a>>,
    location: Option<Text<'a>>,
    state: Option<Text<'a>>,
    user_agent: Option<Text<'a>>,
}

/// A known key held a value of the wrong type.
struct WrongType;

fn text_value(value: Scalar<'_>) -> Result<Option<Text<'_>>, WrongType> {
    match value {
        Scalar::Str(text) => Ok(Some(Text(text))),
        Scalar::Null => Ok(None),
        _ => Err(WrongType),
    }
}

fn number_value(value: Scalar<'_>) -> Result<Option<f64>, WrongType> {
    match value {
        Scalar::Int(n) => Ok(Some(n as f64)),
        Scalar::Float(f) => Ok(Some(f)),
        Scalar::Null => Ok(None),
        _ => Err(WrongType),
    }
}

fn time_value(value: Scalar<'_>) -> Result<Option<Timestamp>, WrongType> {
    match value {
        Scalar::Int(n) => Ok(Some(Timestamp::from_i64(n))),
        Scalar::Float(f) => Ok(Timestamp::from_f64(f)),
        Scalar::Null => Ok(None),
        _ => Err(WrongType),
    }
}

fn user_value(value: Scalar<'_>) -> Result<Option<UserKey<'_>>, WrongType> {
    match value {
        Scalar::Str(text) => Ok(Some(UserKey::Text(text))),
        Scalar::Int(n) => Ok(Some(UserKey::Number(n))),
        Scalar::Null => Ok(None),
        _ => Err(WrongType),
    }
}

impl<'a> Record<'a> {
    #[inline]
    fn set(&mut self, key: &[u8], value: Scalar<'a>) -> Result<(), WrongType> {
        match key {
            b"ts" => self.ts = time_value(value)?,
            b"timestamp" => self.timestamp = time_value(value)?,
            b"userId" => self.user_id_camel = user_value(value)?,
            b"user_id" => self.user_id_snake = user_value(value)?,
            b"page" => self.page = text_value(value)?,
            b"song" => self.song = text_value(value)?,
            b"artist" => self.artist = text_value(value)?,
            b"length" => self.length = number_value(value)?,
            b"duration" => self.duration = number_value(value)?,
            b"level" => self.level = text_value(value)?,
            b"gender" => self.gender = text_value(value)?,
            b"location" => self.location = text_value(value)?,
            b"state" => self.state = text_value(value)?,
            b"userAgent" => self.user_agent = text_value(value)?,
            _ => {}
        }
        Ok(())
    }
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

/// A timestamp normalised to epoch milliseconds (seconds below 1e11).
struct Timestamp(i64);

/// Values below this are epoch seconds, at or above it epoch milliseconds.
const SECONDS_MS_THRESHOLD: f64 = 1e11;

impl Timestamp {
    fn from_i64(value: i64) -> Self {
        if (value.unsigned_abs() as f64) < SECONDS_MS_THRESHOLD {
            Timestamp(value.saturating_mul(1000))
        } else {
            Timestamp(value)
        }
    }

    /// Non-finite values (`1e400` parses as infinity) become out of range.
    fn from_f64(value: f64) -> Option<Self> {
        if !value.is_finite() {
            return Some(Timestamp(i64::MAX));
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

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

use crate::json_scan::{self, scan_fields, ExpectedKey, Fields, Scalar, ScanError, Value, Want};

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
    /// A Kafka record without a value (e.g. a tombstone).
    NoValue,
    /// An event far ahead of its stream that the events after it did not
    /// confirm (see the outlier rule in the README).
    TimestampOutlier,
    /// A text field longer than `input.max_field_bytes`.
    FieldTooLong,
}

impl RejectReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::EmptyLine,
        RejectReason::LineTooLong,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::WrongType,
        RejectReason::MissingUser,
        RejectReason::MissingTimestamp,
        RejectReason::MissingSong,
        RejectReason::TimestampOutOfRange,
        RejectReason::NoValue,
        RejectReason::TimestampOutlier,
        RejectReason::FieldTooLong,
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
            RejectReason::NoValue => "no_value",
            RejectReason::TimestampOutlier => "timestamp_outlier",
            RejectReason::FieldTooLong => "field_too_long",
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
    /// The session id (`sessionId`), when the record has one.
    pub session_id: Option<SessionId<'a>>,
}

/// A valid event that is not a stream, as far as sessions need it: it has
/// a user id and a timestamp in range.
#[derive(Debug, PartialEq)]
pub struct Activity<'a> {
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// The user id (not empty).
    pub user: UserKey<'a>,
    /// The session id (`sessionId`), when the record has one.
    pub session_id: Option<SessionId<'a>>,
}

/// A `sessionId`: an integer (EventSim's) or a string.
#[derive(Debug, PartialEq)]
pub enum SessionId<'a> {
    /// Given as an integer.
    Number(i64),
    /// Given as a string (unescaped).
    Text(Cow<'a, str>),
}

impl SessionId<'_> {
    /// Its JSON text (`5132`, `"abc"`), appended to `out`: how sessions key
    /// and write it back.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            SessionId::Number(n) => {
                out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes())
            }
            SessionId::Text(text) => {
                serde_json::to_writer(out, &**text).expect("a string serializes into a Vec");
            }
        }
    }
}

/// What one line turned out to be.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// A stream to count.
    Play(Listen<'a>),
    /// A valid event that is not a play (EventSim pages other than NextSong),
    /// with what sessions need of it when it has a user and a timestamp in
    /// range.
    NotAStream(Option<Activity<'a>>),
    /// Refused, with the reason.
    Rejected(RejectReason),
}

/// What a play may hold: bounds on its timestamp and on its text fields.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Earliest accepted event time (inclusive).
    pub min_ms: i64,
    /// Latest accepted event time (inclusive).
    pub max_ms: i64,
    /// Longest artist, song, level, gender, location, state or user agent
    /// (bytes of UTF-8, after unescaping).
    pub max_field_bytes: usize,
}

/// The default bound on a text field: 1 KiB.
pub const MAX_FIELD_BYTES: usize = 1024;

/// 2000-01-01T00:00:00Z: nothing earlier is a real listen.
pub const EARLIEST_VALID_MS: i64 = 946_684_800_000;

impl Limits {
    /// Times from 2000 to `now_ms + max_future_ms`; fields up to `max_field_bytes`.
    pub fn until(now_ms: i64, max_future_ms: i64, max_field_bytes: usize) -> Self {
        Self {
            min_ms: EARLIEST_VALID_MS,
            max_ms: now_ms.saturating_add(max_future_ms),
            max_field_bytes,
        }
    }
}

/// Decode one line (without its newline).
pub fn decode(line: &[u8], bounds: Limits) -> Decoded<'_> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Decoded::Rejected(RejectReason::EmptyLine);
    }
    let Some(text) = json_scan::utf8(line) else {
        return Decoded::Rejected(RejectReason::InvalidUtf8);
    };
    let mut record = Record::default();
    match scan_fields(text, &mut record) {
        Err(ScanError::Syntax) => Decoded::Rejected(RejectReason::InvalidJson),
        Err(ScanError::NotAnObject) => Decoded::Rejected(RejectReason::WrongType),
        Ok(()) if record.wrong_type => Decoded::Rejected(RejectReason::WrongType),
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
    /// Raw JSON text (escapes kept), and whether it has `\u` escapes.
    user_agent: Option<(&'a str, bool)>,
    session_id: Option<SessionId<'a>>,
    /// A known key held a value of the wrong type.
    wrong_type: bool,
}

/// The keys [`Record`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Ts,
    Timestamp,
    UserIdCamel,
    UserIdSnake,
    Page,
    Song,
    Artist,
    Length,
    Duration,
    Level,
    Gender,
    Location,
    State,
    UserAgent,
    SessionId,
}

impl Field {
    /// The field `key` names, dispatching on its length first.
    #[inline(always)]
    fn from_key(key: &[u8]) -> Option<Field> {
        let field = match key.len() {
            2 if key == b"ts" => Field::Ts,
            4 if key == b"page" => Field::Page,
            4 if key == b"song" => Field::Song,
            5 if key == b"level" => Field::Level,
            5 if key == b"state" => Field::State,
            6 => match key[0] {
                b'u' if key == b"userId" => Field::UserIdCamel,
                b'a' if key == b"artist" => Field::Artist,
                b'l' if key == b"length" => Field::Length,
                b'g' if key == b"gender" => Field::Gender,
                _ => return None,
            },
            7 if key == b"user_id" => Field::UserIdSnake,
            8 if key == b"duration" => Field::Duration,
            8 if key == b"location" => Field::Location,
            9 if key == b"userAgent" => Field::UserAgent,
            9 if key == b"timestamp" => Field::Timestamp,
            9 if key == b"sessionId" => Field::SessionId,
            _ => return None,
        };
        Some(field)
    }
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

#[inline]
fn time_value(value: Scalar<'_>) -> Result<Option<Timestamp>, WrongType> {
    match value {
        Scalar::Int(n) => Ok(Some(Timestamp::from_i64(n))),
        Scalar::Float(f) => Ok(Timestamp::from_f64(f)),
        Scalar::Null => Ok(None),
        _ => Err(WrongType),
    }
}

fn session_value(value: Scalar<'_>) -> Result<Option<SessionId<'_>>, WrongType> {
    match value {
        Scalar::Str(text) => Ok(Some(SessionId::Text(text))),
        Scalar::Int(n) => Ok(Some(SessionId::Number(n))),
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

impl<'a> Fields<'a> for Record<'a> {
    type Field = Field;

    /// EventSim's key order.
    const EXPECTED: &'static [ExpectedKey<Field>] = &[
        ExpectedKey::new("ts", Some((Field::Ts, Want::Scalar))),
        ExpectedKey::new("userId", Some((Field::UserIdCamel, Want::Scalar))),
        ExpectedKey::new("sessionId", Some((Field::SessionId, Want::Scalar))),
        ExpectedKey::new("page", Some((Field::Page, Want::Scalar))),
        ExpectedKey::new("auth", None),
        ExpectedKey::new("method", None),
        ExpectedKey::new("status", None),
        ExpectedKey::new("level", Some((Field::Level, Want::Scalar))),
        ExpectedKey::new("itemInSession", None),
        ExpectedKey::new("location", Some((Field::Location, Want::Scalar))),
        ExpectedKey::new("userAgent", Some((Field::UserAgent, Want::Raw))),
        ExpectedKey::new("lastName", None),
        ExpectedKey::new("firstName", None),
        ExpectedKey::new("registration", None),
        ExpectedKey::new("gender", Some((Field::Gender, Want::Scalar))),
        ExpectedKey::new("artist", Some((Field::Artist, Want::Scalar))),
        ExpectedKey::new("song", Some((Field::Song, Want::Scalar))),
        ExpectedKey::new("length", Some((Field::Length, Want::Scalar))),
    ];

    #[inline(always)]
    fn field(&mut self, key: &[u8]) -> Option<(Field, Want)> {
        let field = Field::from_key(key)?;
        let want = if field == Field::UserAgent {
            Want::Raw
        } else {
            Want::Scalar
        };
        Some((field, want))
    }

    #[inline(always)]
    fn value(&mut self, field: Field, value: Value<'a>) {
        if self.set(field, value).is_err() {
            self.wrong_type = true;
        }
    }
}

impl<'a> Record<'a> {
    #[inline(always)]
    fn set(&mut self, field: Field, value: Value<'a>) -> Result<(), WrongType> {
        let value = match value {
            Value::Scalar(value) => value,
            Value::Raw(raw, unicode) => {
                // Only the user agent is read raw.
                debug_assert_eq!(field, Field::UserAgent);
                self.user_agent = Some((raw, unicode));
                return Ok(());
            }
        };
        match field {
            Field::Ts => self.ts = time_value(value)?,
            Field::Timestamp => self.timestamp = time_value(value)?,
            Field::UserIdCamel => self.user_id_camel = user_value(value)?,
            Field::UserIdSnake => self.user_id_snake = user_value(value)?,
            Field::Page => self.page = text_value(value)?,
            Field::Song => self.song = text_value(value)?,
            Field::Artist => self.artist = text_value(value)?,
            Field::Length => self.length = number_value(value)?,
            Field::Duration => self.duration = number_value(value)?,
            Field::Level => self.level = text_value(value)?,
            Field::Gender => self.gender = text_value(value)?,
            Field::Location => self.location = text_value(value)?,
            Field::State => self.state = text_value(value)?,
            Field::SessionId => self.session_id = session_value(value)?,
            Field::UserAgent => {
                // A string comes raw; anything else must be null.
                text_value(value)?;
                self.user_agent = None;
            }
        }
        Ok(())
    }
}

/// The device family of a user agent given as raw JSON string text,
/// exactly as [`Device::from_user_agent`] classifies its unescaped value.
///
/// The tokens that function looks for hold letters, digits and spaces only.
/// An escape other than `\u` stands for `"`, `\`, `/` or a control
/// character, none of which is in a token, and its letter cannot start one
/// (tokens start with `W`, `M`, `i`, `X`, `A` or `L`), so a token occurs in
/// the raw text exactly where it occurs in the value, and the first `(` is
/// the same one. Only `\u` escapes can spell token characters: those
/// agents are unescaped first.
fn device_from_raw(raw: &str, unicode: bool) -> Device {
    if unicode {
        return Device::from_user_agent(&json_scan::unescape(raw));
    }
    Device::from_user_agent_bytes(raw.as_bytes())
}

/// [`UsState::from_location`] with byte searches: the state code after the
/// last `", "`, up to the first `-`.
fn state_from_location(location: &str) -> UsState {
    let bytes = location.as_bytes();
    let Some(comma) = memchr::memmem::rfind(bytes, b", ") else {
        return UsState::UNKNOWN;
    };
    // The usual "City, ST" or "City, ST-ST": two upper-case letters, then
    // the end or a dash.
    if let [a @ b'A'..=b'Z', b @ b'A'..=b'Z', rest @ ..] = &bytes[comma + 2..] {
        if matches!(rest.first(), None | Some(b'-')) {
            return UsState::from_letters(*a, *b);
        }
    }
    let states = &location[comma + 2..];
    let first = match states.bytes().position(|b| b == b'-') {
        Some(dash) => &states[..dash],
        None => states,
    };
    UsState::from_code(first)
}

impl<'a> Record<'a> {
    fn into_decoded(mut self, bounds: Limits) -> Decoded<'a> {
        if let Some(page) = &self.page {
            if page.0 != "NextSong" {
                return Decoded::NotAStream(self.activity(bounds));
            }
        }
        let long_field = self.has_long_field(bounds.max_field_bytes);
        let (time, user) = self.time_and_user();
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
        if long_field {
            return Decoded::Rejected(RejectReason::FieldTooLong);
        }
        let state = match (&self.state, &self.location) {
            (Some(state), _) => UsState::from_code(&state.0),
            (None, Some(location)) => state_from_location(&location.0),
            (None, None) => UsState::UNKNOWN,
        };
        let dims = Dimensions {
            level: Level::parse(text(&self.level)),
            device: match self.user_agent {
                Some((raw, unicode)) => device_from_raw(raw, unicode),
                None => Device::from_user_agent(""),
            },
            state,
            gender: Gender::parse(text(&self.gender)),
        };
        Decoded::Play(Listen {
            time_ms,
            user,
            artist: self.artist.map(|a| a.0).unwrap_or(Cow::Borrowed("")),
            song,
            dims,
            duration_ms: self.length.or(self.duration).and_then(seconds_to_ms),
            session_id: self.session_id,
        })
    }

    /// The event's time and user, by its format: the simple format's keys
    /// first when it has neither `page` nor `ts`, EventSim's otherwise.
    fn time_and_user(&mut self) -> (Option<Timestamp>, Option<UserKey<'a>>) {
        let simple = self.page.is_none() && self.ts.is_none();
        if simple {
            (
                self.timestamp.take(),
                self.user_id_snake.take().or(self.user_id_camel.take()),
            )
        } else {
            (
                self.ts.take(),
                self.user_id_camel.take().or(self.user_id_snake.take()),
            )
        }
    }

    /// What sessions need of a non-stream event: none without a user or
    /// with a timestamp missing or out of range.
    fn activity(mut self, bounds: Limits) -> Option<Activity<'a>> {
        let (Some(Timestamp(time_ms)), Some(user)) = self.time_and_user() else {
            return None;
        };
        if time_ms < bounds.min_ms || time_ms > bounds.max_ms || user.is_empty() {
            return None;
        }
        Some(Activity {
            time_ms,
            user,
            session_id: self.session_id,
        })
    }
}

impl Record<'_> {
    /// A text field of the play is longer than `max` bytes.
    fn has_long_field(&self, max: usize) -> bool {
        let long = |value: &Option<Text<'_>>| value.as_ref().is_some_and(|t| t.0.len() > max);
        let user_agent_long = self.user_agent.is_some_and(|(raw, _)| {
            raw.len() > max && (!raw.contains('\\') || json_scan::unescape(raw).len() > max)
        });
        long(&self.song)
            || long(&self.artist)
            || long(&self.level)
            || long(&self.gender)
            || long(&self.location)
            || long(&self.state)
            || user_agent_long
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
    /// Its text (an integer in decimal), appended to `out`.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            UserKey::Text(text) => out.extend_from_slice(text.as_bytes()),
            UserKey::Number(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        }
    }

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
    #[inline]
    fn from_i64(value: i64) -> Self {
        // The same test as `as f64 < SECONDS_MS_THRESHOLD`: 1e11 is exact in
        // an f64, and so is every integer near it.
        if value.unsigned_abs() < SECONDS_MS_THRESHOLD as u64 {
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
    use crate::decode_reference::{owned, reference};
    use proptest::prelude::*;

    const BOUNDS: Limits = Limits {
        min_ms: EARLIEST_VALID_MS,
        max_ms: 2_000_000_000_000,
        max_field_bytes: 64,
    };

    fn listen(line: &str) -> Listen<'_> {
        match decode(line.as_bytes(), BOUNDS) {
            Decoded::Play(listen) => listen,
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
        assert_eq!(decode(line.as_bytes(), BOUNDS), Decoded::NotAStream(None));
        let line = r#"{"ts":1513720872284,"userId":"7","sessionId":12,"page":"Home"}"#;
        assert_eq!(
            decode(line.as_bytes(), BOUNDS),
            Decoded::NotAStream(Some(Activity {
                time_ms: 1513720872284,
                user: UserKey::Text("7".into()),
                session_id: Some(SessionId::Number(12)),
            }))
        );
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

    /// `sessionId` is an integer or a string (kept as JSON text for the
    /// session records); any other type is a wrong type, as for every key
    /// downbeat reads.
    #[test]
    fn session_ids_are_integers_or_strings() {
        let id = |value: &str| {
            let line = format!(
                r#"{{"ts":1700000000000,"userId":"1","sessionId":{value},"page":"NextSong","song":"S"}}"#
            );
            match decode(line.as_bytes(), BOUNDS) {
                Decoded::Play(listen) => listen.session_id.map(|id| {
                    let mut text = Vec::new();
                    id.write_json(&mut text);
                    String::from_utf8(text).unwrap()
                }),
                other => panic!("{value}: {other:?}"),
            }
        };
        assert_eq!(id("5132").as_deref(), Some("5132"));
        assert_eq!(id(r#""a\"b""#).as_deref(), Some(r#""a\"b""#));
        assert_eq!(id("null"), None);
        for wrong in ["1.5", "true", "[1]", "{}"] {
            let line =
                format!(r#"{{"ts":1700000000000,"userId":"1","sessionId":{wrong},"page":"Home"}}"#);
            assert_eq!(
                rejected(line.as_bytes()),
                RejectReason::WrongType,
                "{wrong}"
            );
        }
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

    /// The byte searches find the state `UsState::from_location` finds,
    /// whichever side of the last 16 bytes the last ", " falls on.
    #[test]
    fn state_from_location_agrees_with_the_operators_crate() {
        for tail in [
            "NC-SC", "CA", "ca", "NY-NJ-PA", "N", "", "TX ", " TX", "X, Y", ",", ", ",
        ] {
            for pad in 0..40 {
                for sep in [", ", ",", " "] {
                    let location =
                        format!("{}{sep}{tail}{}", "a".repeat(pad), "b, ".repeat(pad % 3));
                    assert_eq!(
                        state_from_location(&location),
                        UsState::from_location(&location),
                        "{location:?}"
                    );
                    let location = format!("{}{sep}{tail}", "é-, ".repeat(pad));
                    assert_eq!(
                        state_from_location(&location),
                        UsState::from_location(&location),
                        "{location:?}"
                    );
                }
            }
        }
    }

    /// Every predicted key names the field the general key path finds.
    #[test]
    fn expected_keys_agree_with_the_key_dispatch() {
        let mut record = Record::default();
        for expected in Record::EXPECTED {
            assert_eq!(
                expected.field(),
                record.field(expected.key()),
                "{:?}",
                String::from_utf8_lossy(expected.key())
            );
        }
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

    #[test]
    fn raw_user_agents_classify_like_unescaped_ones() {
        for (json, device) in [
            (
                r#""\"Mozilla/5.0 (iPad; CPU OS 7_1_2 like Mac OS X)\"""#,
                Device::Ipad,
            ),
            (r#""\u0028Windows NT""#, Device::Windows),
            (r#""x (\u0057indows NT""#, Device::Windows),
            (r#""x (\"Windows NT""#, Device::Windows),
            (r#""\\(Macintosh""#, Device::Mac),
            (r#""Mac\u0020OS X""#, Device::Mac),
            (r#""\n""#, Device::Other),
            (r#""""#, Device::Unknown),
        ] {
            let line =
                format!(r#"{{"ts":1700000000000,"userId":"1","song":"s","userAgent":{json}}}"#);
            assert_eq!(listen(&line).dims.device, device, "{line}");
        }
    }

    /// A JSON string literal built from EventSim-ish pieces, escapes that
    /// spell letters and punctuation included.
    fn json_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "Mozilla/5.0 ",
                "(",
                "Windows NT 6.1",
                "Macintosh",
                "iPhone",
                "iPad",
                "X11",
                "Android",
                "Linux",
                "Mac OS X",
                "; ",
                ", ",
                "-",
                "CA",
                "NC",
                "sc",
                " TX ",
                "NextSong",
                "Home",
                "paid",
                "FREE",
                "M",
                "f",
                "\\\"",
                "\\\\",
                "\\/",
                "\\n",
                "\\t",
                "\\u0028",
                "\\u0057indows",
                "\\u0069Phone",
                "\\u002c ",
                "\\u0020",
                "\\u00e9",
                "\\ud83c\\udfb5",
                "é",
                "🎵",
                "ǅ",
                "\u{2003}",
                "Los Angeles",
            ])
            .prop_map(str::to_owned),
            "[ -~&&[^\"\\\\]]{0,6}",
        ];
        prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn json_member_value() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => json_string(),
            2 => (1_600_000_000_000i64..1_800_000_000_000).prop_map(|n| n.to_string()),
            1 => (1_600_000_000i64..1_800_000_000).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => (-10.0f64..100_000.0).prop_map(|f| format!("{f:?}")),
            1 => prop::sample::select(vec![
                "null", "true", "false", "[]", "{\"a\":[1,\"\\u00e9\"]}", "1e400", "-0",
                "1.5e12", "18446744073709551615", "\"\"",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn json_key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "ts",
            "timestamp",
            "userId",
            "user_id",
            "page",
            "song",
            "artist",
            "length",
            "duration",
            "level",
            "gender",
            "location",
            "state",
            "userAgent",
            "sessionId",
            "auth",
            "\\u0074s",
            "us\\u0065rAgent",
            "song ",
            "",
        ])
        .prop_map(|k| format!("\"{k}\""))
    }

    /// An EventSim-like line: mostly the usual keys with plausible values,
    /// some random members, optionally one corrupted byte.
    fn decode_line() -> impl Strategy<Value = Vec<u8>> {
        let usual = (
            prop_oneof![Just("\"NextSong\"".to_owned()), json_member_value()],
            json_member_value(),
            json_member_value(),
            prop::collection::vec(any::<bool>(), 6),
        );
        let extra = prop::collection::vec((json_key(), json_member_value()), 0..6);
        let corrupt = prop::option::of((any::<prop::sample::Index>(), 0..3u8, any::<u8>()));
        (usual, extra, corrupt, any::<bool>()).prop_map(
            |((page, song, agent, keep), extra, corrupt, ws)| {
                let mut members = vec![
                    ("\"ts\"".to_owned(), "1700000000000".to_owned()),
                    ("\"userId\"".to_owned(), "\"1046\"".to_owned()),
                    ("\"page\"".to_owned(), page),
                    ("\"song\"".to_owned(), song),
                    ("\"userAgent\"".to_owned(), agent),
                    (
                        "\"location\"".to_owned(),
                        "\"Charlotte-Concord, NC-SC\"".to_owned(),
                    ),
                ];
                let mut kept: Vec<_> = members
                    .drain(..)
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(m, _)| m)
                    .collect();
                kept.extend(extra);
                let sep = if ws { " , " } else { "," };
                let body: Vec<String> = kept.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                let mut line = format!("{{{}}}", body.join(sep)).into_bytes();
                if let Some((at, edit, byte)) = corrupt {
                    let i = at.index(line.len());
                    match edit {
                        0 => {
                            line.remove(i);
                        }
                        1 => line.insert(i, byte),
                        _ => line[i] = byte,
                    }
                }
                line
            },
        )
    }

    /// A full EventSim line with plausible values, its members in EventSim's
    /// order or shuffled (so the predicted keys miss), a few dropped, with
    /// or without whitespace around the punctuation.
    fn eventsim_line() -> impl Strategy<Value = Vec<u8>> {
        let values = (
            prop_oneof![Just("\"NextSong\"".to_owned()), json_member_value()],
            json_member_value(),
            json_member_value(),
            json_member_value(),
            json_member_value(),
            json_member_value(),
        );
        let order = (
            any::<bool>(),
            prop::collection::vec(any::<u32>(), 18),
            prop::collection::vec(prop::bool::weighted(0.9), 18),
            prop::sample::select(vec!["", " ", "\n\t "]),
        );
        (values, order).prop_map(
            |((page, song, agent, artist, gender, level), (shuffle, rank, keep, ws))| {
                let members = [
                    ("ts", "1700000000000".to_owned()),
                    ("userId", "\"1046\"".to_owned()),
                    ("sessionId", "5132".to_owned()),
                    ("page", page),
                    ("auth", "\"Logged In\"".to_owned()),
                    ("method", "\"PUT\"".to_owned()),
                    ("status", "200".to_owned()),
                    ("level", level),
                    ("itemInSession", "112".to_owned()),
                    ("location", "\"Charlotte-Concord, NC-SC\"".to_owned()),
                    ("userAgent", agent),
                    ("lastName", "\"Matthews\"".to_owned()),
                    ("firstName", "\"Kenneth\"".to_owned()),
                    ("registration", "1509380319284".to_owned()),
                    ("gender", gender),
                    ("artist", artist),
                    ("song", song),
                    ("length", "232.93342".to_owned()),
                ];
                let mut kept: Vec<_> = members
                    .into_iter()
                    .zip(rank)
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(m, _)| m)
                    .collect();
                if shuffle {
                    kept.sort_by_key(|&(_, r)| r);
                }
                let body: Vec<String> = kept
                    .iter()
                    .map(|((k, v), _)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                    .collect();
                format!("{{{}}}", body.join(",")).into_bytes()
            },
        )
    }

    proptest! {
        /// Oracle: whole EventSim lines, in order or with shuffled keys,
        /// decode as the reference decodes them.
        #[test]
        fn eventsim_lines_in_any_key_order_agree_with_reference(line in eventsim_line()) {
            prop_assert_eq!(
                owned(decode(&line, BOUNDS)),
                reference(&line, BOUNDS),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }

        /// Oracle: `decode` agrees with a from-scratch decode over serde_json.
        #[test]
        fn decode_agrees_with_reference(line in decode_line()) {
            prop_assert_eq!(
                owned(decode(&line, BOUNDS)),
                reference(&line, BOUNDS),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }
}

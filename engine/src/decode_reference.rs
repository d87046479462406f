//! The decoding rules written out from scratch over serde_json: the oracle
//! the decoder's property tests and its fuzz target compare it with.
//! Compiled for tests and with the `fuzzing` feature only.

use downbeat_operators::{user_hash, Device, Dimensions, Gender, Level, UsState};

use crate::decode::{Decoded, Limits, RejectReason, SessionId};

/// What `decode` returns, owned, for comparing with the reference.
#[derive(Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Owned {
    Play {
        time_ms: i64,
        user: u64,
        artist: String,
        song: String,
        dims: Dimensions,
        duration_ms: Option<u32>,
        session_id: Option<String>,
    },
    /// (time, user id text, session id JSON text) when it has a user and a
    /// timestamp in range.
    NotAStream(Option<(i64, String, Option<String>)>),
    Rejected(RejectReason),
}

pub fn owned(decoded: Decoded<'_>) -> Owned {
    match decoded {
        Decoded::Play(l) => Owned::Play {
            time_ms: l.time_ms,
            user: l.user.hash(),
            artist: l.artist.into_owned(),
            song: l.song.into_owned(),
            dims: l.dims,
            duration_ms: l.duration_ms,
            session_id: l.session_id.as_ref().map(session_json),
        },
        Decoded::NotAStream(activity) => Owned::NotAStream(activity.map(|a| {
            let mut user = Vec::new();
            a.user.write_text(&mut user);
            (
                a.time_ms,
                String::from_utf8(user).unwrap(),
                a.session_id.as_ref().map(session_json),
            )
        })),
        Decoded::Rejected(reason) => Owned::Rejected(reason),
    }
}

fn session_json(id: &SessionId<'_>) -> String {
    let mut text = Vec::new();
    id.write_json(&mut text);
    String::from_utf8(text).unwrap()
}

/// The members of a JSON object in order, duplicates included.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The decoding rules written out from scratch over serde_json, with the
/// dimension parsers applied to unescaped values. One rule after the
/// other, as the README states them: long, and clearer kept whole.
#[allow(clippy::too_many_lines)]
pub fn reference(line: &[u8], bounds: Limits) -> Owned {
    use serde_json::Value as J;
    if line.iter().all(u8::is_ascii_whitespace) {
        return Owned::Rejected(RejectReason::EmptyLine);
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Owned::Rejected(RejectReason::InvalidUtf8);
    };
    match serde_json::from_str::<J>(text) {
        Err(_) => return Owned::Rejected(RejectReason::InvalidJson),
        Ok(J::Object(_)) => {}
        Ok(_) => return Owned::Rejected(RejectReason::WrongType),
    }
    let Entries(entries) = serde_json::from_str(text).unwrap();
    // Last value of each known key; `Err` marks a wrong type anywhere.
    let mut last: std::collections::HashMap<&str, &J> = Default::default();
    // The scanner reads `-0` as the integer 0 (see its number tests),
    // serde_json as the float -0.0 (the lines here never hold `-0.0`).
    let integer = |v: &J| {
        let negative_zero = v.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative());
        v.as_i64().or((v.is_f64() && negative_zero).then_some(0))
    };
    for (key, value) in &entries {
        let ok = match key.as_str() {
            "ts" | "timestamp" | "length" | "duration" => value.is_number() || value.is_null(),
            "userId" | "user_id" | "sessionId" => {
                value.is_string() || integer(value).is_some() || value.is_null()
            }
            "page" | "song" | "artist" | "level" | "gender" | "location" | "state"
            | "userAgent" => value.is_string() || value.is_null(),
            _ => true,
        };
        if !ok {
            return Owned::Rejected(RejectReason::WrongType);
        }
        last.insert(key, value);
    }
    let get = |key: &str| last.get(key).copied().filter(|v| !v.is_null());
    let string = |key: &str| get(key).map(|v| v.as_str().unwrap().to_owned());
    let time = |key: &str| {
        get(key).map(|v| match v.as_i64() {
            Some(n) if (n.unsigned_abs() as f64) < 1e11 => n.saturating_mul(1000),
            Some(n) => n,
            None => {
                let f = v.as_f64().unwrap();
                let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
                ms.floor() as i64
            }
        })
    };
    // (empty, hash, text) of a user id.
    let user = |key: &str| {
        get(key).map(|v| match v {
            J::String(s) => (s.is_empty(), user_hash(s.as_bytes()), s.clone()),
            _ => {
                let text = integer(v).unwrap().to_string();
                (false, user_hash(text.as_bytes()), text)
            }
        })
    };
    let session_id = get("sessionId").map(|v| match v {
        J::String(s) => serde_json::to_string(s).unwrap(),
        _ => integer(v).unwrap().to_string(),
    });
    let simple = get("page").is_none() && get("ts").is_none();
    let (time, user) = if simple {
        (time("timestamp"), user("user_id").or(user("userId")))
    } else {
        (time("ts"), user("userId").or(user("user_id")))
    };
    if let Some(page) = string("page") {
        if page != "NextSong" {
            let in_range = |t: &i64| (bounds.min_ms..=bounds.max_ms).contains(t);
            return Owned::NotAStream(match (time.filter(in_range), user) {
                (Some(t), Some((false, _, text))) => Some((t, text, session_id)),
                _ => None,
            });
        }
    }
    let Some(time_ms) = time else {
        return Owned::Rejected(RejectReason::MissingTimestamp);
    };
    if time_ms < bounds.min_ms || time_ms > bounds.max_ms {
        return Owned::Rejected(RejectReason::TimestampOutOfRange);
    }
    let Some((false, user, _)) = user else {
        return Owned::Rejected(RejectReason::MissingUser);
    };
    let Some(song) = string("song") else {
        return Owned::Rejected(RejectReason::MissingSong);
    };
    let too_long = [
        "song",
        "artist",
        "level",
        "gender",
        "location",
        "state",
        "userAgent",
    ]
    .iter()
    .any(|key| string(key).is_some_and(|v| v.len() > bounds.max_field_bytes));
    if too_long {
        return Owned::Rejected(RejectReason::FieldTooLong);
    }
    let state = match (string("state"), string("location")) {
        (Some(state), _) => UsState::from_code(&state),
        (None, Some(location)) => UsState::from_location(&location),
        (None, None) => UsState::UNKNOWN,
    };
    let or_empty = |key: &str| string(key).unwrap_or_default();
    let seconds = get("length")
        .or(get("duration"))
        .map(|v| v.as_f64().unwrap())
        .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s));
    Owned::Play {
        time_ms,
        user,
        artist: or_empty("artist"),
        song,
        dims: Dimensions {
            level: Level::parse(&or_empty("level")),
            device: Device::from_user_agent(&or_empty("userAgent")),
            state,
            gender: Gender::parse(&or_empty("gender")),
        },
        duration_ms: seconds.map(|s| (s * 1000.0).round() as u32),
        session_id,
    }
}

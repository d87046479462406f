//! Breakdown dimensions and how raw field values map onto their bounded sets.
//!
//! Every dimension has a fixed, small set of values (plus `unknown`), so the
//! breakdowns and their metric labels stay bounded whatever the input says.

/// Subscription level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Level {
    /// Free tier.
    Free,
    /// Paid tier.
    Paid,
    /// Missing or anything else.
    #[default]
    Unknown,
}

impl Level {
    /// All values, in index order.
    pub const ALL: [Level; 3] = [Level::Free, Level::Paid, Level::Unknown];

    /// `"free"` and `"paid"` (any case); anything else is unknown.
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("free") {
            Level::Free
        } else if value.eq_ignore_ascii_case("paid") {
            Level::Paid
        } else {
            Level::Unknown
        }
    }

    /// Label used in results and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Level::Free => "free",
            Level::Paid => "paid",
            Level::Unknown => "unknown",
        }
    }
}

/// Gender as EventSim reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Gender {
    /// `"M"`.
    Male,
    /// `"F"`.
    Female,
    /// Missing or anything else.
    #[default]
    Unknown,
}

impl Gender {
    /// All values, in index order.
    pub const ALL: [Gender; 3] = [Gender::Male, Gender::Female, Gender::Unknown];

    /// `"M"` / `"F"` (any case); anything else is unknown.
    pub fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("m") {
            Gender::Male
        } else if value.eq_ignore_ascii_case("f") {
            Gender::Female
        } else {
            Gender::Unknown
        }
    }

    /// Label used in results and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Gender::Male => "M",
            Gender::Female => "F",
            Gender::Unknown => "unknown",
        }
    }
}

/// The device family a user agent names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// Windows desktop.
    Windows,
    /// macOS desktop.
    Mac,
    /// Linux desktop.
    Linux,
    /// iPhone.
    Iphone,
    /// iPad.
    Ipad,
    /// Android phone or tablet.
    Android,
    /// A user agent naming none of the above.
    Other,
    /// No user agent.
    #[default]
    Unknown,
}

impl Device {
    /// All values, in index order.
    pub const ALL: [Device; 8] = [
        Device::Windows,
        Device::Mac,
        Device::Linux,
        Device::Iphone,
        Device::Ipad,
        Device::Android,
        Device::Other,
        Device::Unknown,
    ];

    /// Classify a user agent. Mobile tokens are checked first because mobile
    /// agents also name desktop systems ("like Mac OS X", "Linux; Android").
    pub fn from_user_agent(agent: &str) -> Self {
        Self::from_user_agent_bytes(agent.as_bytes())
    }

    /// [`Device::from_user_agent`] on bytes. Every token is ASCII letters,
    /// digits and spaces, so a JSON-escaped agent without `\u` escapes
    /// classifies exactly like its unescaped text (the decoder relies on it).
    pub fn from_user_agent_bytes(agent: &[u8]) -> Self {
        // Fast path: the platform token right after the first parenthesis.
        if let Some(open) = agent.iter().position(|&b| b == b'(') {
            let platform = &agent[open + 1..];
            if let Some(&(_, device)) = PLATFORM_PREFIXES
                .iter()
                .find(|(p, _)| platform.starts_with(p))
            {
                return device;
            }
        }
        if agent.is_empty() {
            return Device::Unknown;
        }
        TOKEN_FINDERS
            .iter()
            .find(|(finder, _)| finder.find(agent).is_some())
            .map_or(Device::Other, |&(_, device)| device)
    }

    /// Label used in results and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Device::Windows => "windows",
            Device::Mac => "mac",
            Device::Linux => "linux",
            Device::Iphone => "iphone",
            Device::Ipad => "ipad",
            Device::Android => "android",
            Device::Other => "other",
            Device::Unknown => "unknown",
        }
    }
}

/// Platform tokens that may directly follow the first `(` of a user agent.
const PLATFORM_PREFIXES: [(&[u8], Device); 5] = [
    (b"Windows", Device::Windows),
    (b"Macintosh", Device::Mac),
    (b"iPhone", Device::Iphone),
    (b"iPad", Device::Ipad),
    (b"X11", Device::Linux),
];

/// Tokens anywhere in a user agent, in order of precedence.
const DEVICE_TOKENS: [(&[u8], Device); 8] = [
    (b"iPhone", Device::Iphone),
    (b"iPad", Device::Ipad),
    (b"Android", Device::Android),
    (b"Windows", Device::Windows),
    (b"Macintosh", Device::Mac),
    (b"Mac OS X", Device::Mac),
    (b"Linux", Device::Linux),
    (b"X11", Device::Linux),
];

/// [`DEVICE_TOKENS`] as prebuilt substring searchers.
static TOKEN_FINDERS: std::sync::LazyLock<[(memchr::memmem::Finder<'static>, Device); 8]> =
    std::sync::LazyLock::new(|| {
        DEVICE_TOKENS.map(|(token, device)| (memchr::memmem::Finder::new(token), device))
    });

/// Two-letter codes of the 50 US states and DC, in index order.
const STATE_CODES: [&str; 51] = [
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL", "IN",
    "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE", "NH", "NJ",
    "NM", "NV", "NY", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA",
    "WI", "WV", "WY",
];

/// Index of every two-letter code `AA..ZZ` in `STATE_CODES` (or unknown).
const STATE_BY_LETTERS: [u8; 26 * 26] = {
    let mut table = [STATE_CODES.len() as u8; 26 * 26];
    let mut i = 0;
    while i < STATE_CODES.len() {
        let code = STATE_CODES[i].as_bytes();
        table[(code[0] - b'A') as usize * 26 + (code[1] - b'A') as usize] = i as u8;
        i += 1;
    }
    table
};

/// A US state (or DC) by two-letter code, or unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UsState(u8);

impl Default for UsState {
    fn default() -> Self {
        UsState::UNKNOWN
    }
}

impl UsState {
    /// Number of distinct values including unknown.
    pub const COUNT: usize = STATE_CODES.len() + 1;
    /// Anything that is not a US state code.
    pub const UNKNOWN: UsState = UsState(STATE_CODES.len() as u8);

    /// A two-letter code (any case); anything else is unknown.
    pub fn from_code(code: &str) -> Self {
        // Two bytes is the usual case; only then is the (Unicode) trim needed.
        match code.as_bytes() {
            &[a, b] => Self::from_letters(a, b),
            _ => match code.trim().as_bytes() {
                &[a, b] => Self::from_letters(a, b),
                _ => UsState::UNKNOWN,
            },
        }
    }

    /// The state whose code is the letters `a`, `b` (any case), or unknown.
    #[inline]
    pub fn from_letters(a: u8, b: u8) -> Self {
        let (a, b) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
        if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
            return UsState::UNKNOWN;
        }
        UsState(STATE_BY_LETTERS[(a - b'A') as usize * 26 + (b - b'A') as usize])
    }

    /// The state of an EventSim location, `"City, ST"` or `"City, ST-ST"`
    /// (a metro area over several states counts for the first one).
    pub fn from_location(location: &str) -> Self {
        match location.rsplit_once(", ") {
            Some((_, states)) => Self::from_code(states.split('-').next().unwrap_or("")),
            None => UsState::UNKNOWN,
        }
    }

    /// Index in `0..COUNT`.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The value at `index` (`index < COUNT`).
    pub fn from_index(index: usize) -> Self {
        UsState(index.min(STATE_CODES.len()) as u8)
    }

    /// The two-letter code, or `"unknown"`.
    pub fn label(self) -> &'static str {
        STATE_CODES.get(self.index()).copied().unwrap_or("unknown")
    }
}

/// The breakdown dimensions of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dimensions {
    /// Free or paid.
    pub level: Level,
    /// Device family from the user agent.
    pub device: Device,
    /// US state.
    pub state: UsState,
    /// Gender.
    pub gender: Gender,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_are_sorted_for_binary_search() {
        let mut sorted = STATE_CODES;
        sorted.sort_unstable();
        assert_eq!(sorted, STATE_CODES);
    }

    #[test]
    fn locations_map_to_their_first_state() {
        assert_eq!(UsState::from_location("Racine, WI").label(), "WI");
        assert_eq!(
            UsState::from_location("Charlotte-Concord-Gastonia, NC-SC").label(),
            "NC"
        );
        assert_eq!(
            UsState::from_location("Washington-Arlington, DC-VA-MD-WV").label(),
            "DC"
        );
        assert_eq!(UsState::from_location("Toronto, ON").label(), "unknown");
        assert_eq!(UsState::from_location("nowhere").label(), "unknown");
        assert_eq!(UsState::from_code("ny").label(), "NY");
    }

    #[test]
    fn user_agents_map_to_device_families() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36",
                Device::Windows,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit",
                Device::Mac,
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:31.0)",
                Device::Linux,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X)",
                Device::Iphone,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 7_1_2 like Mac OS X)",
                Device::Ipad,
            ),
            (
                "Mozilla/5.0 (Linux; Android 4.4.2; Nexus 5)",
                Device::Android,
            ),
            ("curl/8.0", Device::Other),
            ("", Device::Unknown),
        ];
        for (agent, device) in cases {
            assert_eq!(Device::from_user_agent(agent), device, "{agent}");
        }
    }

    #[test]
    fn levels_and_genders_are_bounded() {
        assert_eq!(Level::parse("paid"), Level::Paid);
        assert_eq!(Level::parse("gold"), Level::Unknown);
        assert_eq!(Gender::parse("F"), Gender::Female);
        assert_eq!(Gender::parse("x"), Gender::Unknown);
    }
}

//! Built-in generator of realistic EventSim ("Sparkify") listen events, byte-identical for a seed.
//!
//! The generator builds, once per seed, a song catalogue (artists and titles combined from word
//! lists, plus a few names with non-ASCII characters, quotes and backslashes), a Zipf popularity
//! curve over it, and a population of users with fixed attributes. Each event is then written as
//! one EventSim classic JSON line from precomputed, already escaped JSON fragments: the hot path
//! only draws a few random numbers, formats five integers and copies bytes.
//!
//! ```
//! use downbeat::source::generator::{Generator, GeneratorConfig};
//!
//! let mut generator = Generator::new(&GeneratorConfig::default());
//! let mut line = Vec::new();
//! generator.write_event(1_513_720_872_284, &mut line);
//! let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
//! assert_eq!(event["ts"], 1_513_720_872_284_i64);
//! assert_eq!(event["auth"], "Logged In");
//! ```

use super::spike::{Spike, SpikeConfig, SpikeError};
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::HashSet;

/// Settings of the built-in event generator.
///
/// Every field has a default, so a config may set only some of them; unknown fields are
/// rejected. Check a config with [`GeneratorConfig::validate`] before building a [`Generator`].
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Seed of every random choice: the same seed (and the same calls) gives byte-identical
    /// output. Default 42.
    pub seed: u64,
    /// Number of distinct users (userId "1" to "users"), 1 to 10,000,000; 0 (the default)
    /// scales the audience with the event rate (see [`Generator::for_rate`]).
    pub users: u32,
    /// Number of distinct artists in the catalogue, 1 to 1,000,000. Default 1,000.
    pub artists: u32,
    /// Number of distinct songs in the catalogue (fixed for a seed), 1 to 10,000,000.
    /// Default 10,000.
    pub songs: u32,
    /// Exponent `s` of the Zipf popularity of songs: the song of rank `k` (1-based) is played
    /// with probability proportional to `k^-s`. 0 (uniform) to 10. Default 1.1.
    pub song_zipf_exponent: f64,
    /// Share of events that are not NextSong (Home, Thumbs Up, Add to Playlist, Logout, ...),
    /// 0 to 1. Default 0.15.
    pub non_stream_ratio: f64,
    /// An injected spike of one song (`[generator.spike]`); none by default.
    pub spike: Option<SpikeConfig>,
    /// Follow the daily cycle (`--diurnal`, see [`super::diurnal`]): the rate varies
    /// about ±60% around the configured one over the day. Default false.
    pub diurnal: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 0,
            artists: 1_000,
            songs: 10_000,
            song_zipf_exponent: 1.1,
            non_stream_ratio: 0.15,
            spike: None,
            diurnal: false,
        }
    }
}

/// Largest accepted `users`.
const MAX_USERS: u32 = 10_000_000;
/// Largest accepted `artists`.
const MAX_ARTISTS: u32 = 1_000_000;
/// Largest accepted `songs`.
const MAX_SONGS: u32 = 10_000_000;
/// Largest accepted `song_zipf_exponent`.
const MAX_ZIPF_EXPONENT: f64 = 10.0;

/// Why a [`GeneratorConfig`] was rejected; each variant names the field to fix.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GeneratorConfigError {
    /// A count (`users`, `artists` or `songs`) is out of range: set it within the range
    /// given in the message (`users` may also be 0: scaled with the rate).
    #[error("generator setting `{field}` must be between 1 and {max}, got {value}")]
    CountOutOfRange {
        /// Name of the offending field.
        field: &'static str,
        /// The value found in the config.
        value: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// `song_zipf_exponent` is negative, too large or not a number: use e.g. 1.1 (0 means
    /// every song is equally popular).
    #[error("generator setting `song_zipf_exponent` must be between 0 and 10, got {0}")]
    ZipfExponent(f64),
    /// `non_stream_ratio` is not a share between 0 and 1: use e.g. 0.15.
    #[error("generator setting `non_stream_ratio` must be between 0 and 1, got {0}")]
    NonStreamRatio(f64),
    /// The `[generator.spike]` section is wrong: see the message.
    #[error(transparent)]
    Spike(#[from] SpikeError),
}

impl GeneratorConfig {
    /// Checks every field, and names the first one that is out of range.
    pub fn validate(&self) -> Result<(), GeneratorConfigError> {
        for (field, value, max) in [
            ("users", self.users, MAX_USERS),
            ("artists", self.artists, MAX_ARTISTS),
            ("songs", self.songs, MAX_SONGS),
        ] {
            let zero_ok = field == "users";
            if (value == 0 && !zero_ok) || value > max {
                return Err(GeneratorConfigError::CountOutOfRange { field, value, max });
            }
        }
        if !(0.0..=MAX_ZIPF_EXPONENT).contains(&self.song_zipf_exponent) {
            return Err(GeneratorConfigError::ZipfExponent(self.song_zipf_exponent));
        }
        if !(0.0..=1.0).contains(&self.non_stream_ratio) {
            return Err(GeneratorConfigError::NonStreamRatio(self.non_stream_ratio));
        }
        if let Some(spike) = &self.spike {
            spike.validate()?;
        }
        Ok(())
    }
}

/// Writes EventSim classic JSON lines: listens (NextSong) and the other pages of a session.
///
/// Users, their attributes and the song catalogue are fixed by the seed when the generator is
/// built. The audience behaves like a service's: a pool of sessions is open at any time, sized
/// so that each open session sees an event every [`SESSION_EVENT_GAP_SECS`] of event time on
/// average at the given rate; events go round the pool in order, passing over one session in
/// four (so a session's gaps vary), and
/// when a session ends (its drawn length reached, or a Logout) a user not in a session starts
/// the next one. The population (unless `users` is set) is [`USERS_PER_OPEN_SESSION`] times
/// the pool, so users come and go: at 50 or 500 events/s about two thirds of the users of
/// 10 minutes are active in any one minute (0.65; the round visits each open session
/// every 40 s, so it plays in every minute it is open). Free users who submit an upgrade become paid, and
/// paid users who submit a downgrade free, as in EventSim. Registration times are drawn as 1
/// to 400 days before the first `ts_ms` the generator is given, so they precede the events
/// whatever clock the caller uses.
#[derive(Clone)]
pub struct Generator {
    /// Random choices made per event.
    rng: Rng,
    /// Probability that an event is not a NextSong.
    non_stream_ratio: f64,
    /// Artist names, indexed by `Song::artist`.
    artists: Vec<Box<str>>,
    /// Songs by popularity rank: index 0 is the most played.
    songs: Vec<Song>,
    /// `zipf_cdf[k]` is the total weight of the songs of rank 0 to `k`.
    zipf_cdf: Vec<f64>,
    /// Per-user attributes and session state; user `i` has userId `i + 1`.
    users: Vec<User>,
    /// Whether each user is in a session.
    in_session: Vec<bool>,
    /// The open sessions, each with a copy of its user (so an event reads one entry, and
    /// the round below walks them in order).
    open: Vec<OpenSession>,
    /// Sessions kept open at once.
    open_target: usize,
    /// Sessions kept open at once at activity 1 (see [`Generator::set_activity`]).
    base_open_target: usize,
    /// The open session that wrote the last event.
    cursor: usize,
    /// `,"page":..,"level":"..","itemInSession":` for page `p` and level `l` at `2 * p + l`.
    page_fragments: Vec<Box<[u8]>>,
    /// Cumulative page weights of non-NextSong events, for free (0) and paid (1) users.
    page_cumulative_weights: [Vec<u32>; 2],
    /// `,"location":"..."` per entry of [`LOCATIONS`].
    location_fragments: Vec<Box<[u8]>>,
    /// `,"userAgent":"..."` per entry of [`USER_AGENTS`].
    agent_fragments: Vec<Box<[u8]>>,
    /// `,"lastName":"..."` per entry of [`LAST_NAMES`].
    last_name_fragments: Vec<Box<[u8]>>,
    /// `,"firstName":"...","registration":` per entry of [`FEMALE_NAMES`] then [`MALE_NAMES`].
    first_name_fragments: Vec<Box<[u8]>>,
    /// Session id given to the next session that starts.
    next_session_id: u64,
    /// The first `ts_ms` seen: registrations are counted back from it.
    anchor_ms: Option<i64>,
    /// The injected spike, if any.
    spike: Option<Spike>,
}

/// One song of the catalogue.
#[derive(Clone)]
struct Song {
    /// Index into `Generator::artists`.
    artist: u32,
    /// The title, unescaped.
    title: Box<str>,
    /// `,"artist":"...","song":"...","length":...}`: the end of its NextSong line.
    fragment: Box<[u8]>,
}

/// An open session: its user, a copy of the user's attributes, and where it is.
#[derive(Clone)]
struct OpenSession {
    /// Index into `Generator::users`.
    user: u32,
    /// The user's attributes (the level may change during the session).
    profile: User,
    /// The session id.
    session_id: u64,
    /// itemInSession of the next event.
    item_in_session: u32,
    /// Events left.
    items_left: u32,
}

/// One user's attributes.
#[derive(Clone, Copy)]
struct User {
    /// Index into `Generator::first_name_fragments` (female names first).
    first_name: u16,
    /// Index into [`LAST_NAMES`].
    last_name: u16,
    /// Index into [`LOCATIONS`].
    location: u16,
    /// Index into [`USER_AGENTS`].
    agent: u16,
    /// 0 for a free user, 1 for a paid one.
    level: u8,
    /// Whether the first name (and so the user) is female.
    female: bool,
    /// How long before the anchor time the user registered.
    registration_age_ms: i64,
}
/// Mean event time between two events of one open session, in seconds: with a session's
/// median of about 26 events (some cut short by a Logout), sessions last about 12 minutes.
pub const SESSION_EVENT_GAP_SECS: f64 = 40.0;
/// Users per open session when the population scales with the rate.
pub const USERS_PER_OPEN_SESSION: usize = 3;
/// Mean session length in events beyond the first (lengths are exponentially distributed).
const MEAN_SESSION_EXTRA_EVENTS: f64 = 36.0;
/// The round passes over one open session in this many (so it moves on by 1.25 a step).
const SKIP_ONE_IN: u64 = 4;
/// The rate assumed by [`Generator::new`] (`run`'s default).
pub const DEFAULT_RATE_PER_SEC: f64 = 500.0;

/// Index of NextSong in [`PAGES`].
const NEXT_SONG: usize = 0;
/// Index of Logout in [`PAGES`]: it ends the session.
const LOGOUT: usize = 6;
/// Longest session, in events.
const MAX_SESSION_ITEMS: u64 = 400;
/// Index of Submit Upgrade in [`PAGES`]: a free user becomes paid.
const SUBMIT_UPGRADE: usize = 12;
/// Index of Submit Downgrade in [`PAGES`]: a paid user becomes free.
const SUBMIT_DOWNGRADE: usize = 14;
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Song lengths are drawn in this range, in hundred-thousandths of a second.
const LENGTH_RANGE: (u64, u64) = (12_000_000, 40_000_000);
/// Share of users on the paid level, in percent.
const PAID_PERCENT: u64 = 55;

/// A page of the app: name, HTTP method and status, and weights among non-NextSong events
/// for free and paid users (as in EventSim's default config, NextSong aside).
struct Page {
    /// The `page` value.
    name: &'static str,
    /// The `method` value.
    method: &'static str,
    /// The `status` value.
    status: u16,
    /// Relative weight for free users.
    weight_free: u32,
    /// Relative weight for paid users.
    weight_paid: u32,
}

/// Shorthand for a [`Page`] row.
const fn page(name: &'static str, method: &'static str, status: u16, free: u32, paid: u32) -> Page {
    Page {
        name,
        method,
        status,
        weight_free: free,
        weight_paid: paid,
    }
}

/// All pages; NextSong first (weight 0: it is chosen separately).
const PAGES: &[Page] = &[
    page("NextSong", "PUT", 200, 0, 0),
    page("Home", "GET", 200, 400, 420),
    page("Thumbs Up", "PUT", 307, 120, 150),
    page("Add to Playlist", "PUT", 200, 70, 90),
    page("Add Friend", "PUT", 307, 50, 55),
    page("Roll Advert", "GET", 200, 110, 0),
    page("Logout", "PUT", 307, 60, 60),
    page("Thumbs Down", "PUT", 307, 40, 30),
    page("Settings", "GET", 200, 25, 25),
    page("Help", "GET", 200, 25, 25),
    page("About", "GET", 200, 10, 10),
    page("Upgrade", "GET", 200, 30, 0),
    page("Submit Upgrade", "PUT", 307, 8, 0),
    page("Downgrade", "GET", 200, 0, 40),
    page("Submit Downgrade", "PUT", 307, 0, 3),
    page("Save Settings", "PUT", 307, 10, 10),
    page("Error", "GET", 404, 5, 5),
];

/// US metro areas (as EventSim writes them) and a rough population weight.
const LOCATIONS: &[(&str, u32)] = &[
    ("New York-Newark-Jersey City, NY-NJ-PA", 200),
    ("Los Angeles-Long Beach-Anaheim, CA", 133),
    ("Chicago-Naperville-Elgin, IL-IN-WI", 95),
    ("Dallas-Fort Worth-Arlington, TX", 71),
    ("Houston-The Woodlands-Sugar Land, TX", 66),
    ("Washington-Arlington-Alexandria, DC-VA-MD-WV", 61),
    ("Miami-Fort Lauderdale-West Palm Beach, FL", 60),
    ("Philadelphia-Camden-Wilmington, PA-NJ-DE-MD", 60),
    ("Atlanta-Sandy Springs-Roswell, GA", 57),
    ("Boston-Cambridge-Newton, MA-NH", 47),
    ("Phoenix-Mesa-Scottsdale, AZ", 46),
    ("San Francisco-Oakland-Hayward, CA", 46),
    ("Riverside-San Bernardino-Ontario, CA", 44),
    ("Detroit-Warren-Dearborn, MI", 43),
    ("Seattle-Tacoma-Bellevue, WA", 38),
    ("Minneapolis-St. Paul-Bloomington, MN-WI", 35),
    ("San Diego-Carlsbad, CA", 33),
    ("Tampa-St. Petersburg-Clearwater, FL", 30),
    ("Denver-Aurora-Lakewood, CO", 28),
    ("St. Louis, MO-IL", 28),
    ("Baltimore-Columbia-Towson, MD", 28),
    ("Charlotte-Concord-Gastonia, NC-SC", 25),
    ("Orlando-Kissimmee-Sanford, FL", 24),
    ("San Antonio-New Braunfels, TX", 24),
    ("Portland-Vancouver-Hillsboro, OR-WA", 24),
    ("Pittsburgh, PA", 23),
    ("Las Vegas-Henderson-Paradise, NV", 22),
    ("Austin-Round Rock, TX", 20),
    ("Kansas City, MO-KS", 21),
    ("Columbus, OH", 20),
    ("Cleveland-Elyria, OH", 20),
    ("Indianapolis-Carmel-Anderson, IN", 20),
    ("Nashville-Davidson--Murfreesboro--Franklin, TN", 19),
    ("Louisville/Jefferson County, KY-IN", 13),
    ("Milwaukee-Waukesha-West Allis, WI", 16),
    ("Oklahoma City, OK", 14),
    ("Salt Lake City, UT", 12),
    ("New Orleans-Metairie, LA", 13),
    ("Birmingham-Hoover, AL", 11),
    ("Richmond, VA", 13),
    ("Hartford-West Hartford-East Hartford, CT", 12),
    ("Providence-Warwick, RI-MA", 16),
    ("Urban Honolulu, HI", 10),
    ("Albuquerque, NM", 9),
    ("Omaha-Council Bluffs, NE-IA", 9),
    ("Des Moines-West Des Moines, IA", 6),
    ("Little Rock-North Little Rock-Conway, AR", 7),
    ("Jackson, MS", 6),
    ("Knoxville, TN", 9),
    ("Boise City, ID", 7),
    ("Wichita, KS", 6),
    ("Manchester-Nashua, NH", 4),
    ("Anchorage, AK", 4),
    ("Sioux Falls, SD", 3),
    ("Fargo, ND-MN", 2),
    ("Billings, MT", 2),
    ("Charleston, WV", 2),
    ("Burlington-South Burlington, VT", 2),
    ("Portland-South Portland, ME", 5),
    ("Cheyenne, WY", 1),
    ("Trenton, NJ", 4),
    ("Racine, WI", 2),
];

/// Browser user agents seen in EventSim data, with a weight. As in the real data, the agents
/// that contain a comma are wrapped in quotes inside the JSON string.
const USER_AGENTS: &[(&str, u32)] = &[
    (
        r#""Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.78.2 (KHTML, like Gecko) Version/7.0.6 Safari/537.78.2""#,
        90,
    ),
    (
        r#""Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36""#,
        83,
    ),
    (
        r#""Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.125 Safari/537.36""#,
        80,
    ),
    (
        r#""Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.125 Safari/537.36""#,
        68,
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
        59,
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
        44,
    ),
    (
        "Mozilla/5.0 (Windows NT 6.3; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
        42,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.6; rv:31.0) Gecko/20100101 Firefox/31.0",
        29,
    ),
    (
        r#""Mozilla/5.0 (Windows NT 6.3; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36""#,
        22,
    ),
    (
        r#""Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53""#,
        30,
    ),
    (
        r#""Mozilla/5.0 (iPad; CPU OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 (KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53""#,
        10,
    ),
    (
        r#""Mozilla/5.0 (Linux; Android 4.4.2; Nexus 5 Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.135 Mobile Safari/537.36""#,
        14,
    ),
    (
        r#""Mozilla/5.0 (Linux; Android 4.4.4; SM-G900V Build/KTU84P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.131 Mobile Safari/537.36""#,
        10,
    ),
    (
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0)",
        17,
    ),
    (
        r#""Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36""#,
        8,
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:30.0) Gecko/20100101 Firefox/30.0",
        8,
    ),
    (
        r#""Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/36.0.1985.125 Chrome/36.0.1985.125 Safari/537.36""#,
        3,
    ),
    (
        r#""Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10) AppleWebKit/600.1.8 (KHTML, like Gecko) Version/8.0 Safari/600.1.8""#,
        9,
    ),
    (
        r#""Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36""#,
        19,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.9; rv:31.0) Gecko/20100101 Firefox/31.0",
        18,
    ),
];

/// Female first names.
const FEMALE_NAMES: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Ashley",
    "Emily",
    "Kimberly",
    "Michelle",
    "Amanda",
    "Melissa",
    "Stephanie",
    "Rebecca",
    "Laura",
    "Sophee",
    "Vera",
    "Jordyn",
    "Angelique",
    "Chloe",
    "Zoë",
    "Renée",
    "Ava",
    "Mia",
    "Isabella",
    "Madison",
    "Olivia",
    "Hannah",
    "Grace",
    "Lily",
    "Alexis",
    "Brooklyn",
    "Kaylee",
    "Aubrey",
    "Natalie",
    "Riley",
    "Savannah",
    "Lucía",
    "Ximena",
    "Mei",
    "Priya",
    "Aaliyah",
];

/// Male first names.
const MALE_NAMES: &[&str] = &[
    "James",
    "John",
    "Robert",
    "Michael",
    "William",
    "David",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Kenneth",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kevin",
    "Brian",
    "George",
    "Ryan",
    "Jacob",
    "Nathanael",
    "Colin",
    "Jesse",
    "Ethan",
    "Noah",
    "Liam",
    "Logan",
    "Elijah",
    "Lucas",
    "Mason",
    "Aiden",
    "Caleb",
    "Tyler",
    "Dylan",
    "Wyatt",
    "Owen",
    "José",
    "Andrés",
    "Björn",
    "Hiroshi",
    "Raj",
    "Malik",
    "Declan",
    "Sebastian",
    "Cooper",
];

/// Last names.
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Matthews",
    "Chase",
    "Blackwell",
    "Barker",
    "Collins",
    "Calderon",
    "Pratt",
    "Simpson",
    "O'Brien",
    "Müller",
    "Nuñez",
    "Peña",
    "Kowalski",
    "Novak",
    "Schmidt",
    "Larsen",
    "Fischer",
    "Rossi",
    "Kim",
    "Patel",
    "Chen",
    "Wang",
    "Singh",
    "Cohen",
    "Murphy",
    "Sullivan",
    "Howard",
    "Bishop",
    "Vasquez",
    "Dubois",
];

/// Adjectives for artist and song names.
const ADJECTIVES: &[&str] = &[
    "Velvet", "Electric", "Silver", "Black", "Golden", "Crimson", "Midnight", "Neon", "Broken",
    "Wild", "Lonely", "Burning", "Frozen", "Hollow", "Lucky", "Paper", "Glass", "Silent", "Savage",
    "Cosmic", "Arctic", "Young", "Dead", "Holy", "Wicked", "Sweet", "Bitter", "Stone", "Iron",
    "Blue", "Scarlet", "Lunar", "Solar", "Royal", "Dirty", "Happy", "Faded", "Gentle", "Secret",
    "Little", "Big", "Modern", "Ancient", "Digital", "Analog", "Tropical", "Northern", "Southern",
    "Magnetic", "Mellow",
];

/// Singular nouns for artist and song names.
const NOUNS: &[&str] = &[
    "Heart", "Fire", "River", "Night", "Love", "Rain", "Summer", "Moon", "Sun", "Ocean", "City",
    "Road", "Dream", "Light", "Storm", "Star", "Girl", "Boy", "Baby", "Home", "Time", "World",
    "Sky", "Window", "Mirror", "Garden", "Highway", "Train", "Radio", "Paradise", "Thunder",
    "Angel", "Devil", "Diamond", "Shadow", "Echo", "Memory", "Morning", "Winter", "Kiss", "Fever",
    "Gold", "Ghost", "Heaven", "Tide", "Horizon", "Wire", "Honey", "Candle", "Machine",
];

/// Plural nouns for artist and song names.
const PLURALS: &[&str] = &[
    "Wolves",
    "Kings",
    "Foxes",
    "Lights",
    "Hearts",
    "Shadows",
    "Rivers",
    "Ghosts",
    "Machines",
    "Strangers",
    "Daughters",
    "Sons",
    "Tigers",
    "Pilots",
    "Saints",
    "Sirens",
    "Horses",
    "Rebels",
    "Echoes",
    "Satellites",
    "Animals",
    "Lovers",
    "Crows",
    "Dreamers",
    "Giants",
    "Bandits",
    "Monks",
    "Drifters",
    "Kids",
    "Seasons",
    "Vultures",
    "Mountains",
    "Stars",
    "Waves",
    "Roses",
    "Cowboys",
    "Comets",
    "Wizards",
    "Sparrows",
    "Engines",
];

/// Verb phrases that start song titles.
const VERB_PHRASES: &[&str] = &[
    "Don't Stop",
    "Hold On To",
    "Take Me To",
    "Dancing In",
    "Running From",
    "Waiting For",
    "Lost In",
    "Falling Into",
    "Dreaming Of",
    "Back To",
    "Chasing",
    "Meet Me In",
    "Crying In",
    "Bring Me",
    "Save",
    "Follow",
    "Remember",
    "Touch",
    "Fly Me To",
    "Welcome To",
    "Leave",
    "Walking On",
    "Burn",
    "Tell Me About",
    "Give Me",
];

/// Version suffixes that some song titles carry.
const TITLE_SUFFIXES: &[&str] = &[
    " (Album Version)",
    " (Live)",
    " (Remastered)",
    " (Radio Edit)",
    " (Acoustic)",
    " (Remix)",
    " [Explicit]",
    " (Demo)",
    " (Instrumental)",
    " (LP Version)",
];

/// Artist names that exercise escaping and non-ASCII handling.
const SPECIAL_ARTISTS: &[&str] = &[
    "Sigur Rós",
    "Beyoncé",
    "Björk",
    "Mötley Crüe",
    "Motörhead",
    "Röyksopp",
    "Jóhann Jóhannsson",
    "Café Tacvba",
    "坂本龍一",
    "BTS (방탄소년단)",
    "AC/DC",
    "Guns N' Roses",
    "Sunn O)))",
    "!!!",
    "The \"Real\" Slim Pickens",
    "Backslash \\ Boys",
    "DJ 🎧",
    "Panic! At The Disco",
    "Florence + The Machine",
    "Earth, Wind & Fire",
    "Crosby, Stills & Nash",
];

/// Song titles that exercise escaping and non-ASCII handling.
const SPECIAL_TITLES: &[&str] = &[
    "Hoppípolla",
    "Déjà Vu",
    "Café del Mar",
    "Mañana",
    "Für Elise",
    "Ça Plane Pour Moi",
    "Sæglópur",
    "Les Corps Glorieux (7 Visions De La Vie Des Ressuscités)",
    "99 Luftballons",
    "Señorita",
    "Say \"Hello\" (Album Version)",
    "C:\\Music\\Demo Take",
    "Back\\Slash Blues",
    "Don't Stop Me Now",
    "Nothing Else Matters (Live in Moscow, 1991)",
    "🔥 Fire Emoji Song",
    "Love ❤ Song",
    "夜に駆ける",
    "Gangnam Style (강남스타일)",
    "\"Heroes\"",
];

impl Generator {
    /// Builds the catalogue and the users for `config`, for [`DEFAULT_RATE_PER_SEC`].
    ///
    /// # Panics
    ///
    /// If `config` is invalid: check it first with [`GeneratorConfig::validate`], or use
    /// [`Generator::try_new`].
    pub fn new(config: &GeneratorConfig) -> Self {
        Self::for_rate(config, DEFAULT_RATE_PER_SEC)
    }

    /// Builds the catalogue and an audience for `rate_per_sec` events a second of event time:
    /// `rate_per_sec * SESSION_EVENT_GAP_SECS` sessions open at once, and (with `users` 0)
    /// [`USERS_PER_OPEN_SESSION`] times as many users.
    ///
    /// # Panics
    ///
    /// If `config` is invalid (see [`Generator::new`]).
    pub fn for_rate(config: &GeneratorConfig, rate_per_sec: f64) -> Self {
        match Self::try_for_rate(config, rate_per_sec) {
            Ok(generator) => generator,
            Err(error) => panic!("invalid generator config: {error}"),
        }
    }

    /// Builds the catalogue and the users for `config`, or says which field is invalid.
    pub fn try_new(config: &GeneratorConfig) -> Result<Self, GeneratorConfigError> {
        Self::try_for_rate(config, DEFAULT_RATE_PER_SEC)
    }

    /// [`Generator::for_rate`], or says which field is invalid.
    pub fn try_for_rate(
        config: &GeneratorConfig,
        rate_per_sec: f64,
    ) -> Result<Self, GeneratorConfigError> {
        config.validate()?;
        let (artists, songs) = build_catalogue(config);
        let zipf_cdf = zipf_cdf(songs.len(), config.song_zipf_exponent);
        let (user_count, open_target) = audience(config.users, rate_per_sec);
        let users = build_users(config, user_count);
        let spike = match &config.spike {
            Some(spike) => Some(Spike::resolve(spike, |title| {
                songs
                    .iter()
                    .find(|song| &*song.title == title)
                    .map(|song| &*artists[song.artist as usize])
            })?),
            None => None,
        };

        let mut page_fragments = Vec::with_capacity(PAGES.len() * 2);
        for page in PAGES {
            for level in ["free", "paid"] {
                let mut fragment = b",\"page\":".to_vec();
                write_json_str(&mut fragment, page.name);
                fragment.extend_from_slice(b",\"auth\":\"Logged In\",\"method\":");
                write_json_str(&mut fragment, page.method);
                fragment.extend_from_slice(b",\"status\":");
                fragment.extend_from_slice(itoa::Buffer::new().format(page.status).as_bytes());
                fragment.extend_from_slice(b",\"level\":");
                write_json_str(&mut fragment, level);
                fragment.extend_from_slice(b",\"itemInSession\":");
                page_fragments.push(fragment.into_boxed_slice());
            }
        }
        let page_cumulative_weights = [
            cumulative(PAGES.iter().map(|page| page.weight_free)),
            cumulative(PAGES.iter().map(|page| page.weight_paid)),
        ];
        let fragments = |key: &str, values: &mut dyn Iterator<Item = &str>, after: &str| {
            values
                .map(|value| {
                    let mut fragment = format!(",\"{key}\":").into_bytes();
                    write_json_str(&mut fragment, value);
                    fragment.extend_from_slice(after.as_bytes());
                    fragment.into_boxed_slice()
                })
                .collect::<Vec<_>>()
        };
        Ok(Self {
            rng: Rng::new(config.seed, 3),
            non_stream_ratio: config.non_stream_ratio,
            artists,
            songs,
            zipf_cdf,
            in_session: vec![false; users.len()],
            users,
            open: Vec::with_capacity(open_target),
            open_target,
            base_open_target: open_target,
            cursor: 0,
            page_fragments,
            page_cumulative_weights,
            location_fragments: fragments("location", &mut LOCATIONS.iter().map(|l| l.0), ""),
            agent_fragments: fragments("userAgent", &mut USER_AGENTS.iter().map(|a| a.0), ""),
            last_name_fragments: fragments("lastName", &mut LAST_NAMES.iter().copied(), ""),
            first_name_fragments: fragments(
                "firstName",
                &mut FEMALE_NAMES.iter().chain(MALE_NAMES).copied(),
                ",\"registration\":",
            ),
            next_session_id: 1,
            anchor_ms: None,
            spike,
        })
    }

    /// Appends one EventSim classic JSON line (no trailing newline) for an event at `ts_ms`
    /// to `out`: a NextSong of a Zipf-chosen song, or with probability `non_stream_ratio`
    /// another page of the session (Home, Thumbs Up, Logout, ...).
    /// During an injected spike, the event is instead a play of the spike's
    /// song with probability `share`.
    pub fn write_event(&mut self, ts_ms: i64, out: &mut Vec<u8>) {
        if let Some(spike) = self.spike.take() {
            let first_ms = *self.anchor_ms.get_or_insert(ts_ms);
            let injected = spike.covers(ts_ms, first_ms) && self.rng.unit() < spike.share;
            if injected {
                self.write_stream_of(ts_ms, &spike.artist, &spike.song, out);
            }
            self.spike = Some(spike);
            if injected {
                return;
            }
        }
        let slot = self.next_session();
        if self.rng.unit() >= self.non_stream_ratio {
            let song = self.draw_song();
            self.write_head(ts_ms, slot, NEXT_SONG, out);
            out.extend_from_slice(&self.songs[song].fragment);
        } else {
            let level = usize::from(self.open[slot].profile.level);
            let page = self.rng.weighted(&self.page_cumulative_weights[level]);
            self.write_head(ts_ms, slot, page, out);
            out.push(b'}');
            let session = &mut self.open[slot];
            match page {
                LOGOUT => session.items_left = 0,
                // The level changes from the next event on (this one shows the old one).
                SUBMIT_UPGRADE => session.profile.level = 1,
                SUBMIT_DOWNGRADE => session.profile.level = 0,
                _ => {}
            }
        }
        self.end_if_done(slot);
    }

    /// Scales the sessions kept open at once by `multiplier` (the daily cycle's rate
    /// multiplier), so active users rise and fall with the rate: new sessions start while
    /// fewer are open, and sessions beyond the target end at their own pace.
    pub fn set_activity(&mut self, multiplier: f64) {
        let scaled = (self.base_open_target as f64 * multiplier).round();
        let most = self.users.len() * 2 / 3;
        self.open_target = (scaled.max(1.0) as usize).min(most.max(1));
    }

    /// The open session of the next event. While fewer than the target are open, a user not
    /// in a session starts one; otherwise the round goes on to the next open session, passing
    /// over one now and then, so a session's events come about `open / rate` apart.
    fn next_session(&mut self) -> usize {
        if self.open.len() < self.open_target {
            // A user not in a session; with a third of the users open, a few draws find one.
            for _ in 0..16 {
                let user = self.rng.below(self.users.len() as u64) as usize;
                if !self.in_session[user] {
                    return self.start_session(user);
                }
            }
        }
        if self.open.is_empty() {
            let user = self.rng.below(self.users.len() as u64) as usize;
            return self.start_session(user);
        }
        let skip = usize::from(self.rng.below(SKIP_ONE_IN) == 0);
        self.cursor = (self.cursor + 1 + skip) % self.open.len();
        self.cursor
    }

    /// `user` opens a session (a new id, a drawn length); returns its slot.
    fn start_session(&mut self, user: usize) -> usize {
        let extra = -(1.0 - self.rng.unit()).ln() * MEAN_SESSION_EXTRA_EVENTS;
        self.in_session[user] = true;
        self.open.push(OpenSession {
            user: user as u32,
            profile: self.users[user],
            session_id: self.next_session_id,
            item_in_session: 0,
            items_left: (1 + extra as u64).min(MAX_SESSION_ITEMS) as u32,
        });
        self.next_session_id += 1;
        self.open.len() - 1
    }

    /// The session at `slot` ends if it has no events left: its user keeps a changed level
    /// and may start another session later.
    fn end_if_done(&mut self, slot: usize) {
        if self.open[slot].items_left > 0 {
            return;
        }
        let ended = self.open.swap_remove(slot);
        let user = ended.user as usize;
        self.users[user].level = ended.profile.level;
        self.in_session[user] = false;
    }

    /// Appends a NextSong line (no trailing newline) by a random user at `ts_ms` for the given
    /// artist and song, which need not be in the catalogue (used to inject spikes). Its length
    /// is derived from the names, so the same song always has the same length.
    pub fn write_stream_of(&mut self, ts_ms: i64, artist: &str, song: &str, out: &mut Vec<u8>) {
        let slot = self.next_session();
        self.write_head(ts_ms, slot, NEXT_SONG, out);
        out.extend_from_slice(b",\"artist\":");
        write_json_str(out, artist);
        out.extend_from_slice(b",\"song\":");
        write_json_str(out, song);
        out.extend_from_slice(b",\"length\":");
        let span = LENGTH_RANGE.1 - LENGTH_RANGE.0 + 1;
        write_length(out, LENGTH_RANGE.0 + fnv1a(artist, song) % span);
        out.push(b'}');
        self.end_if_done(slot);
    }

    /// Number of songs in the catalogue.
    pub fn song_count(&self) -> usize {
        self.songs.len()
    }

    /// Artist and title of the song of popularity rank `rank` (0 is the most played), or
    /// `None` past the end of the catalogue.
    pub fn song(&self, rank: usize) -> Option<(&str, &str)> {
        let song = self.songs.get(rank)?;
        Some((&self.artists[song.artist as usize], &song.title))
    }

    /// Draws a song rank from the Zipf distribution.
    fn draw_song(&mut self) -> usize {
        let total = self.zipf_cdf[self.zipf_cdf.len() - 1];
        let target = self.rng.unit() * total;
        let rank = self.zipf_cdf.partition_point(|&weight| weight <= target);
        rank.min(self.zipf_cdf.len() - 1)
    }

    /// Writes everything up to the artist (exclusive) of an event of the open session at
    /// `slot` on `page`, and advances the session.
    fn write_head(&mut self, ts_ms: i64, slot: usize, page: usize, out: &mut Vec<u8>) {
        let anchor_ms = *self.anchor_ms.get_or_insert(ts_ms);
        let state = &mut self.open[slot];
        let mut numbers = itoa::Buffer::new();
        out.extend_from_slice(b"{\"ts\":");
        out.extend_from_slice(numbers.format(ts_ms).as_bytes());
        out.extend_from_slice(b",\"userId\":\"");
        out.extend_from_slice(numbers.format(state.user + 1).as_bytes());
        out.extend_from_slice(b"\",\"sessionId\":");
        out.extend_from_slice(numbers.format(state.session_id).as_bytes());
        out.extend_from_slice(&self.page_fragments[2 * page + usize::from(state.profile.level)]);
        out.extend_from_slice(numbers.format(state.item_in_session).as_bytes());
        out.extend_from_slice(&self.location_fragments[usize::from(state.profile.location)]);
        out.extend_from_slice(&self.agent_fragments[usize::from(state.profile.agent)]);
        out.extend_from_slice(&self.last_name_fragments[usize::from(state.profile.last_name)]);
        out.extend_from_slice(&self.first_name_fragments[usize::from(state.profile.first_name)]);
        out.extend_from_slice(
            numbers
                .format(anchor_ms - state.profile.registration_age_ms)
                .as_bytes(),
        );
        out.extend_from_slice(if state.profile.female {
            b",\"gender\":\"F\""
        } else {
            b",\"gender\":\"M\""
        });
        state.item_in_session += 1;
        state.items_left = state.items_left.saturating_sub(1);
    }
}

/// Builds the artists and the songs (in popularity order) for the config's seed.
fn build_catalogue(config: &GeneratorConfig) -> (Vec<Box<str>>, Vec<Song>) {
    let mut rng = Rng::new(config.seed, 1);

    let artist_count = config.artists as usize;
    let specials = SPECIAL_ARTISTS.len().min((artist_count / 20).max(1));
    let artists = shuffled_names(
        &mut rng,
        &SPECIAL_ARTISTS[..specials],
        artist_count,
        artist_name,
    );
    // The first special artist gets the song placed near the top, below.
    let special_artist = artists
        .iter()
        .position(|name| name == SPECIAL_ARTISTS[0])
        .unwrap_or(0);

    let song_count = config.songs as usize;
    let specials = SPECIAL_TITLES.len().min((song_count / 100).max(1));
    let mut titles = shuffled_names(
        &mut rng,
        &SPECIAL_TITLES[..specials],
        song_count,
        song_title,
    );
    // Make sure escaping is exercised by ordinary traffic: one special title, by a special
    // artist, goes among the ten most popular songs.
    let special_title = titles
        .iter()
        .position(|title| title == SPECIAL_TITLES[0])
        .unwrap_or(0);
    let popular = rng.below(song_count.min(10) as u64) as usize;
    titles.swap(special_title, popular);

    let span = LENGTH_RANGE.1 - LENGTH_RANGE.0;
    let songs = titles
        .into_iter()
        .enumerate()
        .map(|(rank, title)| {
            let artist = if rank == popular {
                special_artist
            } else {
                rng.below(artist_count as u64) as usize
            };
            // Triangular between the bounds: most songs last three to five minutes.
            let length = LENGTH_RANGE.0 + (rng.below(span + 1) + rng.below(span + 1)) / 2;
            let mut fragment = b",\"artist\":".to_vec();
            write_json_str(&mut fragment, &artists[artist]);
            fragment.extend_from_slice(b",\"song\":");
            write_json_str(&mut fragment, &title);
            fragment.extend_from_slice(b",\"length\":");
            write_length(&mut fragment, length);
            fragment.push(b'}');
            Song {
                artist: artist as u32,
                title: title.into_boxed_str(),
                fragment: fragment.into_boxed_slice(),
            }
        })
        .collect();
    let artists = artists.into_iter().map(String::into_boxed_str).collect();
    (artists, songs)
}

/// `count` distinct names: the `specials` first, the rest made by `make`, shuffled.
fn shuffled_names(
    rng: &mut Rng,
    specials: &[&str],
    count: usize,
    make: fn(&mut Rng) -> String,
) -> Vec<String> {
    let mut names: Vec<String> = specials.iter().map(|name| name.to_string()).collect();
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    while names.len() < count {
        let name = unique_name(rng, &mut taken, names.len(), make);
        names.push(name);
    }
    rng.shuffle(&mut names);
    names
}

/// Draws names with `make` until one is new (then records it); after a few collisions,
/// makes one unique by appending `index`.
fn unique_name(
    rng: &mut Rng,
    taken: &mut HashSet<String>,
    index: usize,
    make: fn(&mut Rng) -> String,
) -> String {
    for _ in 0..16 {
        let name = make(rng);
        if taken.insert(name.clone()) {
            return name;
        }
    }
    // Word-list names never end in " (Take <n>)", so this cannot collide.
    let name = format!("{} (Take {index})", make(rng));
    taken.insert(name.clone());
    name
}

/// A made-up artist name, e.g. "The Velvet Wolves" or "Kenneth Matthews".
fn artist_name(rng: &mut Rng) -> String {
    let person = |rng: &mut Rng| {
        let first = if rng.below(2) == 0 {
            rng.pick(FEMALE_NAMES)
        } else {
            rng.pick(MALE_NAMES)
        };
        format!("{first} {}", rng.pick(LAST_NAMES))
    };
    match rng.below(100) {
        0..=34 => person(rng),
        35..=54 => format!("The {} {}", rng.pick(ADJECTIVES), rng.pick(PLURALS)),
        55..=69 => format!("{} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS)),
        70..=77 => format!("{} & The {}", person(rng), rng.pick(PLURALS)),
        78..=82 => format!("{} Featuring {}", person(rng), person(rng)),
        83..=89 => format!("{} Of {}", rng.pick(PLURALS), rng.pick(NOUNS)),
        90..=94 => format!(
            "the {} and the {}",
            rng.pick(NOUNS).to_lowercase(),
            rng.pick(NOUNS).to_lowercase()
        ),
        _ => format!("DJ {}", rng.pick(NOUNS)),
    }
}

/// A made-up song title, e.g. "Midnight Train" or "Waiting For The Rain (Live)".
fn song_title(rng: &mut Rng) -> String {
    let mut title = match rng.below(100) {
        0..=24 => format!("{} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS)),
        25..=39 => format!("{} The {}", rng.pick(VERB_PHRASES), rng.pick(NOUNS)),
        40..=49 => format!("{} My {}", rng.pick(VERB_PHRASES), rng.pick(NOUNS)),
        50..=59 => format!("{} Of The {}", rng.pick(NOUNS), rng.pick(PLURALS)),
        60..=69 => format!("{} {}", rng.pick(ADJECTIVES), rng.pick(PLURALS)),
        70..=79 => format!("{} In The {}", rng.pick(NOUNS), rng.pick(NOUNS)),
        80..=89 => rng.pick(NOUNS).to_string(),
        _ => format!("{} {} Blues", rng.pick(ADJECTIVES), rng.pick(NOUNS)),
    };
    match rng.below(100) {
        0..=15 => title.push_str(rng.pick(TITLE_SUFFIXES)),
        16..=19 => {
            let first = rng.pick(MALE_NAMES);
            let last = rng.pick(LAST_NAMES);
            title.push_str(&format!(" (feat. {first} {last})"));
        }
        _ => {}
    }
    title
}

/// (users, sessions open at once) for `users` (0: scaled) at `rate_per_sec`: each open
/// session sees an event every [`SESSION_EVENT_GAP_SECS`] on average, and at most half of
/// a fixed population is in a session at once.
fn audience(users: u32, rate_per_sec: f64) -> (u32, usize) {
    let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
        rate_per_sec
    } else {
        DEFAULT_RATE_PER_SEC
    };
    // The round moves on by 1 + 1/SKIP_ONE_IN open sessions an event.
    let step = 1.0 + 1.0 / SKIP_ONE_IN as f64;
    let wanted = ((rate * SESSION_EVENT_GAP_SECS * step).round() as usize).max(1);
    if users == 0 {
        let scaled = (wanted * USERS_PER_OPEN_SESSION).clamp(100, MAX_USERS as usize);
        (scaled as u32, wanted.min(scaled / 2))
    } else {
        (users, wanted.min(users as usize / 2).max(1))
    }
}

/// Draws the fixed attributes of `count` users.
fn build_users(config: &GeneratorConfig, count: u32) -> Vec<User> {
    let mut rng = Rng::new(config.seed, 2);
    let locations = cumulative(LOCATIONS.iter().map(|l| l.1));
    let agents = cumulative(USER_AGENTS.iter().map(|a| a.1));
    (0..count)
        .map(|_| {
            let female = rng.below(2) == 0;
            let first_name = if female {
                rng.below(FEMALE_NAMES.len() as u64)
            } else {
                FEMALE_NAMES.len() as u64 + rng.below(MALE_NAMES.len() as u64)
            };
            User {
                first_name: first_name as u16,
                last_name: rng.below(LAST_NAMES.len() as u64) as u16,
                location: rng.weighted(&locations) as u16,
                agent: rng.weighted(&agents) as u16,
                level: u8::from(rng.below(100) < PAID_PERCENT),
                female,
                registration_age_ms: DAY_MS + rng.below(399 * DAY_MS as u64) as i64,
            }
        })
        .collect()
}

/// Cumulative Zipf weights `sum(k^-exponent)` for ranks 1 to `songs`.
fn zipf_cdf(songs: usize, exponent: f64) -> Vec<f64> {
    let mut total = 0.0;
    (1..=songs)
        .map(|rank| {
            total += (rank as f64).powf(-exponent);
            total
        })
        .collect()
}

/// Running sums of `weights`, for [`Rng::weighted`].
fn cumulative(weights: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut total = 0;
    weights
        .map(|weight| {
            total += weight;
            total
        })
        .collect()
}

/// Appends `value` (in hundred-thousandths of a second) as a JSON float with up to five
/// decimals, like EventSim's lengths ("232.93342", "165.642", "200.0").
fn write_length(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value / 100_000).as_bytes());
    out.push(b'.');
    let mut fraction = value % 100_000;
    if fraction == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = [b'0'; 5];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    let used = 5 - digits.iter().rev().take_while(|&&d| d == b'0').count();
    out.extend_from_slice(&digits[..used]);
}

/// Appends `s` as a JSON string, quotes included, escaped exactly as serde_json does.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            let hex = [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// FNV-1a hash of an artist and a song name (a stable hash, unlike `std`'s).
fn fnv1a(artist: &str, song: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in artist
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(song.as_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// xoshiro256++ (rand_xoshiro's) seeded by our own SplitMix64: its output is fixed forever
/// (rand's `SmallRng` may change between versions and platforms, which would change golden
/// output), and the seeding is ours so that seeds keep giving the same events.
#[derive(Clone)]
struct Rng(Xoshiro256PlusPlus);

impl Rng {
    /// A generator for `seed`; different `stream`s give independent sequences, so the
    /// catalogue does not change when, say, the number of users does.
    fn new(seed: u64, stream: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut split_mix = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // `from_seed` reads the four state words little-endian.
        let mut state = [0u8; 32];
        for word in state.chunks_exact_mut(8) {
            word.copy_from_slice(&split_mix().to_le_bytes());
        }
        Self(Xoshiro256PlusPlus::from_seed(state))
    }

    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (multiply-shift; the bias, below `n / 2^64`, is negligible).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A float in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniformly chosen element of a non-empty slice.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the weights whose running sums are `cumulative`.
    fn weighted(&mut self, cumulative: &[u32]) -> usize {
        let total = cumulative[cumulative.len() - 1];
        let target = self.below(u64::from(total)) as u32;
        cumulative.partition_point(|&sum| sum <= target)
    }

    /// Fisher-Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::collections::{BTreeMap, HashMap};

    /// The keys of a JSON object, in the order they appear.
    struct Keys(Vec<String>);

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeysVisitor;
            impl<'de> Visitor<'de> for KeysVisitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(KeysVisitor)
        }
    }

    /// The keys of a real EventSim NextSong line, in order (from the Sparkify log).
    const STREAM_KEYS: [&str; 18] = [
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

    const START_MS: i64 = 1_513_720_872_284;

    /// `count` events, one per line, 250 ms apart.
    fn generate(config: &GeneratorConfig, count: usize) -> Vec<u8> {
        let mut generator = Generator::new(config);
        let mut out = Vec::new();
        for i in 0..count {
            generator.write_event(START_MS + 250 * i as i64, &mut out);
            out.push(b'\n');
        }
        out
    }

    fn parse_lines(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn every_line_is_an_eventsim_event_with_the_right_keys_and_types() {
        let out = generate(&GeneratorConfig::default(), 20_000);
        let mut streams = 0;
        for line in out.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
            let keys: Keys = serde_json::from_slice(line).unwrap();
            let event: serde_json::Value = serde_json::from_slice(line).unwrap();
            let page = event["page"].as_str().unwrap();
            if page == "NextSong" {
                streams += 1;
                assert_eq!(keys.0, STREAM_KEYS);
                assert!(event["artist"].as_str().is_some_and(|a| !a.is_empty()));
                assert!(event["song"].as_str().is_some_and(|s| !s.is_empty()));
                let length = event["length"].as_f64().unwrap();
                assert!(event["length"].is_f64());
                assert!((120.0..=400.0).contains(&length), "{length}");
                assert_eq!(event["method"], "PUT");
                assert_eq!(event["status"], 200);
            } else {
                assert_eq!(keys.0, STREAM_KEYS[..15], "{page}");
                let spec = PAGES.iter().find(|p| p.name == page).unwrap();
                assert_eq!(event["method"], spec.method);
                assert_eq!(event["status"], spec.status);
            }
            assert!(event["ts"].is_i64());
            let user: u32 = event["userId"].as_str().unwrap().parse().unwrap();
            // At the default rate (500/s): 25,000 sessions open of 75,000 users.
            assert!((1..=75_000).contains(&user), "{user}");
            assert!(event["sessionId"].is_u64());
            assert_eq!(event["auth"], "Logged In");
            assert!(["free", "paid"].contains(&event["level"].as_str().unwrap()));
            assert!(event["itemInSession"].is_u64());
            let location = event["location"].as_str().unwrap();
            assert!(location.contains(", "), "{location}");
            let agent = event["userAgent"].as_str().unwrap();
            assert!(agent.starts_with("Mozilla/5.0") || agent.starts_with("\"Mozilla/5.0"));
            assert!(event["lastName"].is_string());
            assert!(event["firstName"].is_string());
            let registration = event["registration"].as_i64().unwrap();
            assert!(registration < event["ts"].as_i64().unwrap());
            assert!(["M", "F"].contains(&event["gender"].as_str().unwrap()));
        }
        assert!(streams > 15_000);
    }

    #[test]
    fn non_stream_ratio_is_respected() {
        for ratio in [0.0, 0.15, 0.5, 1.0] {
            let config = GeneratorConfig {
                non_stream_ratio: ratio,
                ..GeneratorConfig::default()
            };
            let events = parse_lines(&generate(&config, 40_000));
            let others = events.iter().filter(|e| e["page"] != "NextSong").count();
            let share = others as f64 / events.len() as f64;
            assert!((share - ratio).abs() < 0.01, "ratio {ratio}: got {share}");
        }
    }

    #[test]
    fn the_pages_are_varied_and_logout_is_where_the_constant_says() {
        assert_eq!(PAGES[NEXT_SONG].name, "NextSong");
        assert_eq!(PAGES[LOGOUT].name, "Logout");
        let events = parse_lines(&generate(&GeneratorConfig::default(), 40_000));
        let pages: HashSet<&str> = events.iter().map(|e| e["page"].as_str().unwrap()).collect();
        for expected in [
            "Home",
            "Thumbs Up",
            "Add to Playlist",
            "Logout",
            "Roll Advert",
        ] {
            assert!(pages.contains(expected), "{expected} missing");
        }
    }

    #[test]
    fn users_keep_their_attributes_and_sessions_count_items() {
        let config = GeneratorConfig {
            users: 2_000,
            // No level changes here: the level is checked as a fixed attribute.
            non_stream_ratio: 0.0,
            ..GeneratorConfig::default()
        };
        let events = parse_lines(&generate(&config, 50_000));
        let fixed = [
            "level",
            "location",
            "userAgent",
            "lastName",
            "firstName",
            "registration",
            "gender",
        ];
        let mut attributes: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        let mut sessions: HashMap<(String, u64), u64> = HashMap::new();
        let mut last_session: HashMap<String, u64> = HashMap::new();
        for event in &events {
            let user = event["userId"].as_str().unwrap().to_string();
            let values: Vec<_> = fixed.iter().map(|key| event[key].clone()).collect();
            assert_eq!(
                attributes.entry(user.clone()).or_insert(values.clone()),
                &values
            );
            let session = event["sessionId"].as_u64().unwrap();
            let item = event["itemInSession"].as_u64().unwrap();
            let expected = sessions.entry((user.clone(), session)).or_insert(0);
            assert_eq!(item, *expected, "user {user} session {session}");
            *expected += 1;
            // A user's sessions do not interleave: a new session id is always larger.
            let previous = last_session.insert(user.clone(), session).unwrap_or(0);
            assert!(session >= previous);
        }
        // Most users show up (a thousand are in a session at once), and the attributes
        // vary between users.
        assert!(
            (1_500..=2_000).contains(&attributes.len()),
            "{}",
            attributes.len()
        );
        for (i, key) in fixed.iter().enumerate() {
            let distinct: HashSet<String> = attributes.values().map(|v| v[i].to_string()).collect();
            assert!(distinct.len() >= 2, "{key} never varies");
        }
        let locations: HashSet<String> = attributes.values().map(|v| v[1].to_string()).collect();
        assert!(locations.len() >= 40, "{}", locations.len());
        // Sessions end and others begin: twice as many as are open at once (1,000).
        assert!(sessions.len() > 2_000, "{}", sessions.len());
        assert!(sessions.values().all(|&items| items <= MAX_SESSION_ITEMS));
    }

    /// (user id, minute) of every event, and the events, of `minutes` minutes at `rate`.
    fn by_minute(rate: f64, minutes: i64, seed: u64) -> Vec<(u32, i64, serde_json::Value)> {
        let config = GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        };
        let mut generator = Generator::for_rate(&config, rate);
        let count = (rate * 60.0) as i64 * minutes;
        let mut out = Vec::new();
        let mut events = Vec::with_capacity(count as usize);
        for i in 0..count {
            out.clear();
            let ts = 1_700_000_000_000 + (i as f64 * 1000.0 / rate) as i64;
            generator.write_event(ts, &mut out);
            let event: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let user = event["userId"].as_str().unwrap().parse().unwrap();
            events.push((user, ts / 60_000, event));
        }
        events
    }

    /// The median over minutes (from the 10th) of active users in the minute over active
    /// users in the 10 minutes ending with it.
    fn median_active_ratio(events: &[(u32, i64, serde_json::Value)]) -> f64 {
        let mut minutes: BTreeMap<i64, HashSet<u32>> = BTreeMap::new();
        for (user, minute, _) in events {
            minutes.entry(*minute).or_default().insert(*user);
        }
        let keys: Vec<i64> = minutes.keys().copied().collect();
        let mut ratios: Vec<f64> = keys[9..keys.len() - 1]
            .iter()
            .map(|&m| {
                let ten: HashSet<u32> = (m - 9..=m)
                    .filter_map(|k| minutes.get(&k))
                    .flatten()
                    .copied()
                    .collect();
                minutes[&m].len() as f64 / ten.len() as f64
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    }

    /// The audience scales with the rate: at 50 and 500 events/s about two thirds of the
    /// users of 10 minutes are active in a minute (not all of them), sessions last about
    /// 12 minutes with many plays, and the population grows with the rate.
    #[test]
    fn the_audience_scales_with_the_rate() {
        for (rate, minutes) in [(50.0, 45), (500.0, 13)] {
            let events = by_minute(rate, minutes, 7);
            let ratio = median_active_ratio(&events);
            assert!((0.2..=0.8).contains(&ratio), "{rate}/s: ratio {ratio}");
            let users: HashSet<u32> = events.iter().map(|e| e.0).collect();
            let per_rate = users.len() as f64 / rate;
            assert!(
                (40.0..200.0).contains(&per_rate),
                "{rate}/s: {} users",
                users.len()
            );
            if minutes < 45 {
                continue;
            }
            // Sessions that began from minute 5 to 15, as long as they were seen (those
            // still open at the end are a small minority, counted at their length so far).
            let mut sessions: HashMap<u64, (i64, i64, u32)> = HashMap::new();
            for (_, _, event) in &events {
                let ts = event["ts"].as_i64().unwrap();
                let entry = sessions
                    .entry(event["sessionId"].as_u64().unwrap())
                    .or_insert((ts, ts, 0));
                entry.1 = ts;
                entry.2 += u32::from(event["page"] == "NextSong");
            }
            let first = events[0].2["ts"].as_i64().unwrap();
            let mut lengths: Vec<(i64, u32)> = sessions
                .values()
                .filter(|s| s.0 > first + 300_000 && s.0 < first + 900_000)
                .map(|s| (s.1 - s.0, s.2))
                .collect();
            lengths.sort_unstable();
            let (median_ms, _) = lengths[lengths.len() / 2];
            assert!(
                (8 * 60_000..16 * 60_000).contains(&median_ms),
                "{rate}/s: median session {median_ms} ms"
            );
            let mut plays: Vec<u32> = lengths.iter().map(|l| l.1).collect();
            plays.sort_unstable();
            assert!(plays[plays.len() / 2] >= 8, "{rate}/s: median plays");
        }
    }

    /// Free users who submit an upgrade are paid from their next event on, and paid users
    /// who submit a downgrade free, within a session and in their later sessions.
    #[test]
    fn users_upgrade_and_downgrade() {
        assert_eq!(PAGES[SUBMIT_UPGRADE].name, "Submit Upgrade");
        assert_eq!(PAGES[SUBMIT_DOWNGRADE].name, "Submit Downgrade");
        let events = by_minute(50.0, 60, 3);
        let mut level: HashMap<u32, &str> = HashMap::new();
        let (mut upgrades, mut downgrades) = (0, 0);
        for (user, _, event) in &events {
            let now = event["level"].as_str().unwrap();
            if let Some(&before) = level.get(user) {
                assert_eq!(now, before, "user {user} changed level without submitting");
            }
            let after = match event["page"].as_str().unwrap() {
                "Submit Upgrade" => {
                    assert_eq!(now, "free");
                    upgrades += 1;
                    "paid"
                }
                "Submit Downgrade" => {
                    assert_eq!(now, "paid");
                    downgrades += 1;
                    "free"
                }
                _ => now,
            };
            level.insert(*user, after);
        }
        assert!(
            upgrades > 20 && downgrades > 10,
            "{upgrades} up, {downgrades} down"
        );
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let config = GeneratorConfig::default();
        let first = generate(&config, 10_000);
        assert_eq!(first, generate(&config, 10_000));
        let other = GeneratorConfig {
            seed: 43,
            ..config.clone()
        };
        assert_ne!(first, generate(&other, 10_000));
        // The catalogue is fixed by the seed alone, not by the number of users.
        let more_users = GeneratorConfig {
            users: 50,
            ..config.clone()
        };
        let a = Generator::new(&config);
        let b = Generator::new(&more_users);
        let c = Generator::new(&other);
        assert!((0..a.song_count()).all(|rank| a.song(rank) == b.song(rank)));
        assert!((0..a.song_count()).any(|rank| a.song(rank) != c.song(rank)));
    }

    #[test]
    fn song_popularity_is_zipf_skewed() {
        let config = GeneratorConfig::default();
        let generator = Generator::new(&config);
        let events = parse_lines(&generate(&config, 100_000));
        let mut plays: HashMap<(String, String), usize> = HashMap::new();
        for event in events.iter().filter(|e| e["page"] == "NextSong") {
            let key = (
                event["artist"].as_str().unwrap().to_string(),
                event["song"].as_str().unwrap().to_string(),
            );
            *plays.entry(key).or_default() += 1;
        }
        let count = |rank: usize| {
            let (artist, song) = generator.song(rank).unwrap();
            plays
                .get(&(artist.to_string(), song.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let mut per_song: Vec<usize> = (0..generator.song_count()).map(count).collect();
        let top = per_song[0];
        assert_eq!(top, *per_song.iter().max().unwrap());
        per_song.sort_unstable();
        let median = per_song[per_song.len() / 2];
        assert!(top > 100 * median.max(1), "top {top}, median {median}");
        // Every play is of a catalogue song.
        assert_eq!(
            per_song.iter().sum::<usize>(),
            plays.values().sum::<usize>()
        );
        // The top song's share matches 1 / sum(k^-1.1).
        let expected = 1.0 / zipf_cdf(10_000, 1.1)[9_999];
        let share = top as f64 / plays.values().sum::<usize>() as f64;
        assert!((share - expected).abs() < 0.01, "{share} vs {expected}");
    }

    #[test]
    fn zero_exponent_is_uniform() {
        let config = GeneratorConfig {
            songs: 10,
            song_zipf_exponent: 0.0,
            non_stream_ratio: 0.0,
            ..GeneratorConfig::default()
        };
        let events = parse_lines(&generate(&config, 20_000));
        let mut plays: HashMap<String, usize> = HashMap::new();
        for event in &events {
            *plays.entry(event["song"].to_string()).or_default() += 1;
        }
        assert_eq!(plays.len(), 10);
        assert!(
            plays.values().all(|&n| (1_700..2_300).contains(&n)),
            "{plays:?}"
        );
    }

    #[test]
    fn the_catalogue_is_unique_and_has_tricky_names() {
        let generator = Generator::new(&GeneratorConfig::default());
        let songs: Vec<_> = (0..generator.song_count())
            .map(|rank| generator.song(rank).unwrap())
            .collect();
        assert_eq!(songs.len(), 10_000);
        let titles: HashSet<&str> = songs.iter().map(|s| s.1).collect();
        assert_eq!(titles.len(), songs.len());
        let artists: HashSet<&str> = songs.iter().map(|s| s.0).collect();
        assert!(artists.len() > 990, "{}", artists.len());
        let all = || songs.iter().flat_map(|(a, s)| [*a, *s]);
        assert!(all().any(|name| name.contains('"')));
        assert!(all().any(|name| name.contains('\\')));
        assert!(all().any(|name| !name.is_ascii()));
        assert!(all().any(|name| name.chars().any(|c| c as u32 > 0xffff)));
        // A tricky song is among the ten most popular, so plain traffic exercises escaping.
        assert!(songs[..10].iter().any(|(_, s)| SPECIAL_TITLES.contains(s)));
        // Every catalogue fragment is valid JSON that round-trips the names.
        for (rank, song) in generator.songs.iter().enumerate() {
            let mut object = b"{\"x\":0".to_vec();
            object.extend_from_slice(&song.fragment);
            let value: serde_json::Value = serde_json::from_slice(&object).unwrap();
            assert_eq!(value["artist"], songs[rank].0);
            assert_eq!(value["song"], songs[rank].1);
        }
    }

    #[test]
    fn write_stream_of_round_trips_any_name() {
        let mut generator = Generator::new(&GeneratorConfig::default());
        let names = SPECIAL_ARTISTS
            .iter()
            .chain(SPECIAL_TITLES)
            .copied()
            .chain(["tab\there", "new\nline", "nul\u{0}\u{1f}\u{7f}", "\\\"", ""]);
        for (i, name) in names.enumerate() {
            let mut out = Vec::new();
            generator.write_stream_of(START_MS + i as i64, name, "Song \"x\" \\ é", &mut out);
            let keys: Keys = serde_json::from_slice(&out).unwrap();
            assert_eq!(keys.0, STREAM_KEYS);
            let event: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(event["artist"], name);
            assert_eq!(event["song"], "Song \"x\" \\ é");
            assert_eq!(event["page"], "NextSong");
            assert!(event["length"].is_f64());
        }
        // Same names, same length.
        let length = |generator: &mut Generator| {
            let mut out = Vec::new();
            generator.write_stream_of(START_MS, "Beyoncé", "Halo", &mut out);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()["length"].clone()
        };
        assert_eq!(length(&mut generator), length(&mut generator));
    }

    #[test]
    fn escaping_matches_serde_json() {
        let mut cases: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        cases.extend(
            [
                "",
                "plain",
                "Sigur Rós",
                "\"quoted\"",
                "back\\slash",
                "\\\\\"\"",
                "🔥❤坂本",
                "\u{2028}\u{2029}",
            ]
            .map(String::from),
        );
        for case in cases {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &case);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&case).unwrap()
            );
        }
    }

    #[test]
    fn lengths_are_written_like_eventsim() {
        let write = |value| {
            let mut out = Vec::new();
            write_length(&mut out, value);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(write(23_293_342), "232.93342");
        assert_eq!(write(16_564_200), "165.642");
        assert_eq!(write(20_000_000), "200.0");
        assert_eq!(write(12_000_001), "120.00001");
        assert_eq!(write(40_000_000), "400.0");
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: GeneratorConfig = serde_json::from_str(r#"{"seed": 7, "songs": 50}"#).unwrap();
        assert_eq!(
            config,
            GeneratorConfig {
                seed: 7,
                songs: 50,
                ..GeneratorConfig::default()
            }
        );
        assert!(serde_json::from_str::<GeneratorConfig>(r#"{"sead": 7}"#).is_err());
        assert_eq!(GeneratorConfig::default().validate(), Ok(()));

        let bad = |change: fn(&mut GeneratorConfig)| {
            let mut config = GeneratorConfig::default();
            change(&mut config);
            let error = config.validate().unwrap_err();
            assert!(Generator::try_new(&config).is_err());
            error.to_string()
        };
        assert!(bad(|c| c.users = MAX_USERS + 1).contains("`users`"));
        assert!(bad(|c| c.artists = MAX_ARTISTS + 1).contains("`artists`"));
        assert!(bad(|c| c.songs = 0).contains("`songs`"));
        assert!(bad(|c| c.song_zipf_exponent = f64::NAN).contains("`song_zipf_exponent`"));
        assert!(bad(|c| c.song_zipf_exponent = -1.0).contains("`song_zipf_exponent`"));
        assert!(bad(|c| c.non_stream_ratio = 1.5).contains("`non_stream_ratio`"));
    }

    #[test]
    fn tiny_configs_work() {
        let config = GeneratorConfig {
            users: 1,
            artists: 1,
            songs: 1,
            ..GeneratorConfig::default()
        };
        let events = parse_lines(&generate(&config, 1_000));
        assert!(events.iter().all(|e| e["userId"] == "1"));
        let songs: HashSet<String> = events
            .iter()
            .filter(|e| e["page"] == "NextSong")
            .map(|e| e["song"].to_string())
            .collect();
        assert_eq!(songs.len(), 1);
    }

    /// Throughput in release: `cargo test -p downbeat-engine --release --lib
    /// source::generator -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let mut generator = Generator::new(&GeneratorConfig::default());
        let mut out = Vec::with_capacity(1 << 20);
        let events = 5_000_000;
        let mut bytes = 0;
        let started = std::time::Instant::now();
        for i in 0..events {
            generator.write_event(START_MS + i, &mut out);
            out.push(b'\n');
            if out.len() > (1 << 20) - 1024 {
                bytes += out.len();
                out.clear();
            }
        }
        bytes += out.len();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{:.2} M events/s, {:.0} MB/s, {:.0} bytes/event",
            events as f64 / seconds / 1e6,
            bytes as f64 / seconds / 1e6,
            bytes as f64 / events as f64
        );
    }
}

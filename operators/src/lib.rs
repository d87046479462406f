//! Pure, synchronous stream operators for downbeat: no I/O, no clock, no async.
//!
//! Time enters only as event time (integer epoch milliseconds) and watermarks.
//! The engine crate decodes input into [`Play`] values and feeds them to a
//! [`WindowAggregator`], which keeps one-minute panes and emits tumbling and
//! sliding [`WindowResult`]s as the watermark passes their ends.
//!
//! ```
//! use downbeat_operators::{AggregatorConfig, Dimensions, Play, WindowAggregator, user_hash};
//!
//! let mut agg = WindowAggregator::new(AggregatorConfig::default()).unwrap();
//! let song = agg.intern("Daft Punk", "One More Time");
//! agg.insert(Play {
//!     time_ms: 60_000,
//!     user_hash: user_hash(b"42"),
//!     song,
//!     dims: Dimensions::default(),
//!     duration_ms: Some(320_000),
//! }).unwrap();
//! let mut out = Vec::new();
//! agg.flush(&mut out);
//! assert_eq!(out[0].window, downbeat_operators::WindowKind::Tumbling);
//! assert_eq!(out[0].streams, 1);
//! assert_eq!(out[0].top_songs[0].song, "One More Time");
//! ```
#![deny(missing_docs)]

pub mod aggregator;
pub mod breakdown;
pub mod catalog;
pub mod dimensions;
pub mod distinct_users;
pub mod duration;
pub mod event;
pub mod forecast;
pub mod global_merge;
pub mod operator;
pub mod outlier;
pub mod pane;
pub mod partial;
pub mod result;
pub mod session;
pub mod song_counts;
pub mod top_k;
pub mod trending;
pub mod window;

pub use aggregator::{AggregatorConfig, LateEvent, SourceId, WindowAggregator};
pub use breakdown::Breakdown;
pub use catalog::SongCatalog;
pub use dimensions::{Device, Dimensions, Gender, Level, UsState};
pub use distinct_users::{user_hash, DistinctUsers};
pub use duration::{DurationHistogram, DurationSummary};
pub use event::{EventTimeMs, Play, SongId};
pub use forecast::{Ahead, Band, ForecastConfig, ForecastError, ForecastState, Forecaster, Method};
pub use global_merge::GlobalMerge;
pub use operator::Operator;
pub use outlier::{OutlierConfig, OutlierError, OutlierGuard, Verdict};
pub use pane::Pane;
pub use partial::{Partial, PartialError, PARTIAL_VERSION};
pub use result::{ArtistCount, SongCount, WindowResult};
pub use session::{
    ClosedSession, OpenSession, SessionConfig, SessionError, SessionEvent, SessionKey, Sessionizer,
};
pub use song_counts::SongCounts;
pub use top_k::{top_artists, top_k, top_k_named};
pub use trending::{
    PredictedSong, SongStreams, TrendDetector, Trending, TrendingConfig, TrendingError,
    TrendingSong,
};
pub use window::{bucket_start, WindowError, WindowId, WindowKind, WindowSpec};

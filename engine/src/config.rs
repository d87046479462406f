//! Configuration: one TOML file, overridden by environment variables and
//! flags, validated as a whole before any event is read.
//!
//! Every field has a default; units are in the field names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use downbeat_operators::window::pane_ms;
use downbeat_operators::{
    AggregatorConfig, ForecastConfig, ForecastError, OutlierConfig, OutlierError, SessionConfig,
    TrendingConfig, TrendingError, WindowSpec,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decode::MAX_FIELD_BYTES;
use crate::pipeline::PipelineConfig;
use crate::source::generator::{Generator, GeneratorConfig, GeneratorConfigError};
use crate::watermark::WatermarkConfig;

/// Why the configuration was refused. Each names the file or field at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read: check the path and permissions.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (unknown keys and
    /// wrong types are refused); the message names the key and line.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field.
        message: String,
    },
    /// A value is out of range; fix the named field.
    #[error("invalid value for `{field}`: {reason}")]
    Invalid {
        /// Dotted field name, e.g. `windows.top_k`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where live mode reads events from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The built-in generator.
    #[default]
    Generator,
    /// JSON lines from `source.path` (`-` for stdin).
    File,
    /// A Kafka topic, see `[kafka]`.
    Kafka,
}

/// `[source]`: the live-mode source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `generator` (default) or `file`.
    pub kind: SourceKind,
    /// For `file`: the path, or `-` for stdin.
    pub path: Option<String>,
    /// For `generator`: events per second (default 500).
    pub rate_per_sec: f64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::Generator,
            path: None,
            rate_per_sec: 500.0,
        }
    }
}

/// `[kafka]`: the Kafka source (`source.kind = "kafka"`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port..]`.
    pub brokers: String,
    /// The topic of listen events.
    pub topic: String,
    /// Consumer group; replicas in one group split the partitions (default `downbeat`).
    pub group: String,
    /// Where checkpoints go: window state is rebuilt from them after a crash
    /// or a hand-over (default `downbeat-state`, relative to the working
    /// directory: a replica restarted in place is exact). Replicas that take
    /// each other's partitions must share it. `""` opts out: no checkpoints,
    /// offsets committed after processing (at least once).
    pub checkpoint_dir: String,
    /// A topic that also holds every partition's checkpoint (created
    /// compacted if missing), so a replica takes a partition over from
    /// another with no shared `checkpoint_dir`. `""` (default): none.
    pub state_topic: String,
    /// A topic for the merge tier: every window closed, per partition held,
    /// as a partial record with every song (created compacted if missing);
    /// `downbeat merge` reads it. `""` (default): none.
    pub partials_topic: String,
    /// Time between checkpoints (default 1000).
    pub checkpoint_interval_ms: u64,
    /// This replica's name in checkpoint files (default: the host name).
    pub replica_id: Option<String>,
    /// Passed to librdkafka as is (e.g. `"security.protocol" = "SASL_SSL"`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_owned(),
            topic: "listen_events".to_owned(),
            group: "downbeat".to_owned(),
            checkpoint_dir: DEFAULT_CHECKPOINT_DIR.to_owned(),
            state_topic: String::new(),
            partials_topic: String::new(),
            checkpoint_interval_ms: 1000,
            replica_id: None,
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// `[windows]`: window shapes, leaderboard length, lateness.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Tumbling window width (default 60).
    pub tumbling_width_secs: u64,
    /// Sliding window width (default 600).
    pub sliding_width_secs: u64,
    /// Sliding window slide (default 60).
    pub sliding_slide_secs: u64,
    /// Leaderboard length (default 10).
    pub top_k: usize,
    /// How late an event may be and still count exactly (default 10000).
    pub allowed_lateness_ms: u64,
    /// After this long without input the watermark follows the wall clock (default 5000).
    pub idle_timeout_ms: u64,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            tumbling_width_secs: 60,
            sliding_width_secs: 600,
            sliding_slide_secs: 60,
            top_k: 10,
            allowed_lateness_ms: 10_000,
            idle_timeout_ms: 5_000,
        }
    }
}

/// `[input]`: limits on input records.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Longer lines are refused as `line_too_long` (default 1 MiB).
    pub max_line_bytes: usize,
    /// A play whose artist, song, level, gender, location, state or user
    /// agent is longer is refused as `field_too_long` (default 1 KiB).
    pub max_field_bytes: usize,
    /// `[input.outliers]`: events far ahead of their stream wait for the
    /// stream to confirm them; unconfirmed ones are refused as
    /// `timestamp_outlier` (see the README's Semantics).
    pub outliers: OutlierConfig,
    /// Events further ahead of the wall clock are refused (default 15 minutes: a client clock that far ahead would otherwise hold every other event late).
    pub max_future_ms: u64,
    /// `replay` decodes on this many threads; 0 (default) means one per core,
    /// 1 decodes inline on the pipeline thread.
    pub decode_threads: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: 1 << 20,
            max_field_bytes: MAX_FIELD_BYTES,
            outliers: OutlierConfig::default(),
            max_future_ms: 900_000,
            decode_threads: 0,
        }
    }
}

/// `[memory]`: the budget for the state that grows with distinct songs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Song names and per-song counts of every pane held (default 128 MiB).
    /// Each pane gets an equal share; a pane past its share keeps its song
    /// counts as a heavy-hitters summary whose error bound the window
    /// records carry (`top_songs_max_undercount`). Everything else the
    /// engine holds is bounded on its own (see the README's memory budget).
    pub song_state_mib: u64,
    /// Open listening sessions (default 64 MiB, about 250,000 sessions).
    /// Beyond, the session due to close first is closed early and written
    /// with `"evicted": true`. With Kafka, divided by the topic's partitions.
    pub session_state_mib: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            song_state_mib: 128,
            session_state_mib: 64,
        }
    }
}

/// `kafka.checkpoint_dir` unless set: beside the process, so the default
/// is exact after a crash and a restart in place.
pub const DEFAULT_CHECKPOINT_DIR: &str = "downbeat-state";

/// `[http]`: the live-mode server.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (default `127.0.0.1:9898`).
    pub listen: String,
    /// Open connections at most; at the cap the oldest is closed. 0
    /// (default): half the file descriptor limit read at start, at most 4096.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".to_owned(),
            max_connections: 0,
        }
    }
}

/// `[output]`: where results and refused input go.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Write every closed window as a JSON line here (`-` for stdout).
    pub emit_windows: Option<String>,
    /// Keep every refused or late line, verbatim, in this file.
    pub rejects: Option<String>,
    /// Write every closed listening session as a JSON line here (`-` for
    /// stdout).
    pub emit_sessions: Option<String>,
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Live-mode source.
    pub source: SourceConfig,
    /// The Kafka source.
    pub kafka: KafkaConfig,
    /// The built-in generator.
    pub generator: GeneratorConfig,
    /// Windows.
    pub windows: WindowsConfig,
    /// Trending songs: scored on every close of the tumbling window against
    /// each song's own exponentially weighted baseline.
    pub trending: TrendingConfig,
    /// Input limits.
    pub input: InputConfig,
    /// Listening sessions.
    pub sessions: SessionConfig,
    /// The streams forecast of the tumbling window.
    pub forecast: ForecastConfig,
    /// Memory budget.
    pub memory: MemoryConfig,
    /// HTTP server.
    pub http: HttpConfig,
    /// Outputs.
    pub output: OutputConfig,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Config {
    /// Defaults, or the file at `path` over the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Check every field; the message names the first field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_windows()?;
        self.validate_input()?;
        self.validate_source()?;
        self.validate_kafka()?;
        self.validate_generator()?;
        self.validate_trending()?;
        self.validate_forecast()?;
        if self.memory.song_state_mib == 0 || self.memory.song_state_mib > 1 << 20 {
            return Err(invalid(
                "memory.song_state_mib",
                "must be between 1 and 1048576",
            ));
        }
        if self.memory.session_state_mib == 0 || self.memory.session_state_mib > 1 << 20 {
            return Err(invalid(
                "memory.session_state_mib",
                "must be between 1 and 1048576",
            ));
        }
        self.sessions
            .validate()
            .map_err(|error| invalid("sessions.gap_ms", error.to_string()))?;
        Ok(())
    }

    /// The song-state share of one pane: the budget over the panes one
    /// input holds at most (the widest window, the allowed lateness and the
    /// pane being filled).
    fn pane_song_budget_bytes(&self, pane_ms: u64) -> usize {
        let w = &self.windows;
        let held_ms =
            w.tumbling_width_secs.max(w.sliding_width_secs) * 1000 + w.allowed_lateness_ms;
        let panes = held_ms.div_ceil(pane_ms) + 1;
        let budget = self.memory.song_state_mib.saturating_mul(1 << 20);
        usize::try_from(budget / panes).unwrap_or(usize::MAX)
    }

    fn validate_windows(&self) -> Result<(), ConfigError> {
        let w = &self.windows;
        if w.tumbling_width_secs == 0 || w.tumbling_width_secs > 86_400 {
            return Err(invalid(
                "windows.tumbling_width_secs",
                "must be between 1 and 86400",
            ));
        }
        if w.sliding_slide_secs == 0 || w.sliding_slide_secs > 86_400 {
            return Err(invalid(
                "windows.sliding_slide_secs",
                "must be between 1 and 86400",
            ));
        }
        if w.sliding_width_secs == 0 || w.sliding_width_secs > 7 * 86_400 {
            return Err(invalid(
                "windows.sliding_width_secs",
                "must be between 1 and 604800",
            ));
        }
        if w.sliding_width_secs % w.sliding_slide_secs != 0 {
            return Err(invalid(
                "windows.sliding_width_secs",
                "must be a multiple of windows.sliding_slide_secs",
            ));
        }
        if w.top_k == 0 || w.top_k > 1000 {
            return Err(invalid("windows.top_k", "must be between 1 and 1000"));
        }
        if w.allowed_lateness_ms > 86_400_000 {
            return Err(invalid(
                "windows.allowed_lateness_ms",
                "must be at most 86400000 (one day)",
            ));
        }
        if w.idle_timeout_ms < 100 || w.idle_timeout_ms > 86_400_000 {
            return Err(invalid(
                "windows.idle_timeout_ms",
                "must be between 100 and 86400000",
            ));
        }
        Ok(())
    }

    fn validate_input(&self) -> Result<(), ConfigError> {
        if self.input.max_line_bytes < 1024 || self.input.max_line_bytes > 1 << 30 {
            return Err(invalid(
                "input.max_line_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        if !(64..=1 << 20).contains(&self.input.max_field_bytes) {
            return Err(invalid(
                "input.max_field_bytes",
                "must be between 64 and 1048576",
            ));
        }
        self.input.outliers.validate().map_err(|error| {
            let OutlierError::OutOfRange { field, .. } = &error;
            let field = match *field {
                "jump_ms" => "input.outliers.jump_ms",
                "confirm_events" => "input.outliers.confirm_events",
                "reject_after_events" => "input.outliers.reject_after_events",
                _ => "input.outliers.max_held",
            };
            invalid(field, error.to_string())
        })?;
        if self.input.decode_threads > 64 {
            return Err(invalid(
                "input.decode_threads",
                "must be at most 64 (0 = one per core)",
            ));
        }
        if self.input.max_future_ms > 365 * 86_400_000 {
            return Err(invalid("input.max_future_ms", "must be at most one year"));
        }
        Ok(())
    }

    fn validate_source(&self) -> Result<(), ConfigError> {
        if self.http.max_connections > 1 << 20 {
            return Err(invalid(
                "http.max_connections",
                "must be at most 1048576 (0 = from the file descriptor limit)",
            ));
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                format!(
                    "`{}` is not an address like 127.0.0.1:9898",
                    self.http.listen
                ),
            ));
        }
        let rate = self.source.rate_per_sec;
        if !(rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0) {
            return Err(invalid(
                "source.rate_per_sec",
                "must be a number greater than 0 and at most 10000000",
            ));
        }
        if self.source.kind == SourceKind::File
            && self.source.path.as_deref().unwrap_or("").is_empty()
        {
            return Err(invalid(
                "source.path",
                "is required when source.kind is \"file\"",
            ));
        }
        Ok(())
    }

    fn validate_trending(&self) -> Result<(), ConfigError> {
        if self.trending.top_k > 1000 {
            return Err(invalid("trending.top_k", "must be between 1 and 1000"));
        }
        self.trending.validate().map_err(|error| {
            let field = match &error {
                TrendingError::ZeroTopK => "trending.top_k",
                TrendingError::HalfLife(_) => "trending.half_life_windows",
                TrendingError::Threshold {
                    field: "min_ratio", ..
                } => "trending.min_ratio",
                TrendingError::Threshold { .. } => "trending.min_z",
                TrendingError::Floor(_) => "trending.baseline_floor_streams",
                TrendingError::MaxTrackedSongs(_) => "trending.max_tracked_songs",
                TrendingError::WindowWidth(_) => "windows.tumbling_width_secs",
            };
            invalid(field, error.to_string())
        })
    }

    fn validate_forecast(&self) -> Result<(), ConfigError> {
        if !self.forecast.enabled {
            return Ok(());
        }
        // A tumbling width that does not divide a day turns the forecast
        // off (see `pipeline`), rather than refusing a config that worked.
        self.forecast.validate().map_err(|error| {
            let field = match &error {
                ForecastError::Coverage(_) => "forecast.coverage",
                ForecastError::HalfLife(_) => "forecast.level_half_life_windows",
                ForecastError::ProfileWeight(_) => "forecast.profile_weight",
                ForecastError::Residuals { .. } => "forecast.min_residuals",
                ForecastError::Horizon(_) => "forecast.horizons_minutes",
                ForecastError::Window(_) => "windows.tumbling_width_secs",
            };
            invalid(field, error.to_string())
        })?;
        Ok(())
    }

    /// The forecast's settings when it runs: enabled, and the tumbling
    /// window divides a day (its profile has one slot per window of a day).
    fn forecast_config(&self) -> Option<ForecastConfig> {
        if !self.forecast.enabled {
            return None;
        }
        let width_secs = self.windows.tumbling_width_secs;
        if width_secs == 0 || 86_400 % width_secs != 0 {
            tracing::warn!(
                width_secs,
                "no streams forecast: the tumbling window does not divide a day"
            );
            return None;
        }
        Some(self.forecast.clone())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if self.source.kind != SourceKind::Kafka {
            return Ok(());
        }
        if k.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "is required (host:port[,host:port..])",
            ));
        }
        if k.topic.trim().is_empty() {
            return Err(invalid("kafka.topic", "is required"));
        }
        if k.group.trim().is_empty() {
            return Err(invalid("kafka.group", "must not be empty"));
        }
        if k.checkpoint_interval_ms < 10 || k.checkpoint_interval_ms > 3_600_000 {
            return Err(invalid(
                "kafka.checkpoint_interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        if let Some(id) = &k.replica_id {
            let ok = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(
                    "kafka.replica_id",
                    "must be letters, digits, '-', '_' or '.'",
                ));
            }
        }
        Ok(())
    }

    fn validate_generator(&self) -> Result<(), ConfigError> {
        self.generator.validate().map_err(|error| {
            let field = match &error {
                GeneratorConfigError::CountOutOfRange { field: "users", .. } => "generator.users",
                GeneratorConfigError::CountOutOfRange {
                    field: "artists", ..
                } => "generator.artists",
                GeneratorConfigError::CountOutOfRange { .. } => "generator.songs",
                GeneratorConfigError::ZipfExponent(_) => "generator.song_zipf_exponent",
                GeneratorConfigError::NonStreamRatio(_) => "generator.non_stream_ratio",
                GeneratorConfigError::Spike(_) => "generator.spike",
            };
            invalid(field, error.to_string())
        })?;
        if self.generator.spike.is_some() {
            // The spike's song is looked up in the catalogue the seed builds.
            Generator::try_new(&self.generator)
                .map_err(|error| invalid("generator.spike", error.to_string()))?;
        }
        Ok(())
    }

    /// The pipeline settings (call after [`Config::validate`]).
    pub fn pipeline(&self) -> Result<PipelineConfig, ConfigError> {
        let w = &self.windows;
        let secs = |s: u64| (s * 1000) as i64;
        let tumbling = WindowSpec::tumbling(secs(w.tumbling_width_secs))
            .map_err(|e| invalid("windows.tumbling_width_secs", e.to_string()))?;
        let sliding = WindowSpec::sliding(secs(w.sliding_width_secs), secs(w.sliding_slide_secs))
            .map_err(|e| invalid("windows.sliding_width_secs", e.to_string()))?;
        let windows = vec![tumbling, sliding];
        let pane_song_budget_bytes = self.pane_song_budget_bytes(pane_ms(&windows) as u64);
        Ok(PipelineConfig {
            aggregator: AggregatorConfig {
                windows,
                top_k: w.top_k,
                trending: self.trending.clone(),
                pane_song_budget_bytes,
                partials: self.source.kind == SourceKind::Kafka
                    && !self.kafka.partials_topic.is_empty(),
            },
            watermark: WatermarkConfig {
                allowed_lateness_ms: w.allowed_lateness_ms as i64,
                idle_timeout_ms: w.idle_timeout_ms as i64,
            },
            max_line_bytes: self.input.max_line_bytes,
            max_field_bytes: self.input.max_field_bytes,
            outliers: self.input.outliers,
            max_future_ms: self.input.max_future_ms as i64,
            sessions: Some(self.sessions.clone()),
            forecast: self.forecast_config(),
            session_state_bytes: usize::try_from(self.memory.session_state_mib << 20)
                .unwrap_or(usize::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_readme_config_block_is_accepted_and_states_the_defaults() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let config = parse(block).unwrap();
        config.validate().unwrap();
        let defaults = Config::default();
        assert_eq!(config.windows, defaults.windows);
        assert_eq!(config.input, defaults.input);
        assert_eq!(config.http, defaults.http);
        assert_eq!(config.generator, defaults.generator);
        assert_eq!(config.trending, defaults.trending);
        assert_eq!(config.memory, defaults.memory);
        assert_eq!(config.kafka.checkpoint_dir, defaults.kafka.checkpoint_dir);
        assert_eq!(config.kafka.state_topic, defaults.kafka.state_topic);
        assert_eq!(config.kafka.partials_topic, defaults.kafka.partials_topic);
        assert_eq!(config.source.rate_per_sec, defaults.source.rate_per_sec);
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::default().pipeline().unwrap();
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_field() {
        let error = parse("[windows]\ntop_kk = 3\n").unwrap_err();
        assert!(error.contains("top_kk"), "{error}");
        let error = parse("[windows]\ntop_k = \"ten\"\n").unwrap_err();
        assert!(error.contains("top_k"), "{error}");
        let error = parse("[nope]\n").unwrap_err();
        assert!(error.contains("nope"), "{error}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut config =
            parse("[windows]\nsliding_width_secs = 90\nsliding_slide_secs = 60\n").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("windows.sliding_width_secs"), "{error}");
        config = parse("[http]\nlisten = \"nowhere\"\n").unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.listen"));
        config = parse("[trending]\nmin_z = nan\n").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("trending.min_z"), "{error}");
        config = parse("[trending]\nhalf_life_windows = -1\n").unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("trending.half_life_windows"), "{error}");
        config = parse("[windows]\ntop_k = 0\n").unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("windows.top_k"));
    }
}

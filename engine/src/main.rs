//! The `downbeat` command line: run, replay, generate.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use downbeat::config::{Config, SourceKind};
use downbeat::output::now_ms;
use downbeat::source::diurnal::{Diurnal, EventClock};
use downbeat::source::generator::Generator;
use downbeat::source::spike::SpikeConfig;

/// downbeat: live music-streaming analytics over event-time windows.
#[derive(Parser)]
#[command(name = "downbeat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live mode: consume a source, serve /metrics, /healthz, /readyz and
    /// /api/v1/windows/latest (built-in generator by default).
    Run(RunArgs),
    /// Batch mode: read JSON Lines as fast as possible, write every window.
    Replay(ReplayArgs),
    /// Write realistic EventSim-style events to stdout.
    Generate(GenerateArgs),
    /// Fill a Kafka topic from the generator or a file, keyed by userId.
    Produce(ProduceArgs),
    /// The merge tier: read the partials the replicas publish
    /// (`run --partials-topic`), emit each global window once.
    Merge(MergeArgs),
}

#[derive(Args)]
struct MergeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Kafka bootstrap brokers, host:port[,host:port..].
    #[arg(long, env = "DOWNBEAT_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// The topic the replicas publish partial windows to (or
    /// `kafka.partials_topic` in the config file).
    #[arg(long, env = "DOWNBEAT_PARTIALS_TOPIC")]
    partials_topic: Option<String>,
    /// Consumer group id of the merger's client (it commits nothing).
    #[arg(long, env = "DOWNBEAT_KAFKA_GROUP")]
    group: Option<String>,
    /// HTTP listen address.
    #[arg(long, env = "DOWNBEAT_LISTEN")]
    listen: Option<String>,
    /// Append every global window as JSON Lines here (`-` = stdout).
    #[arg(long, env = "DOWNBEAT_EMIT_WINDOWS")]
    emit_windows: Option<String>,
    /// A librdkafka property, KEY=VALUE (repeatable).
    #[arg(long = "kafka-property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// A replica's claim that a partition is idle (read to its end and
    /// quiet: windows stop waiting for it) holds this long (ms) after it
    /// was sent; replicas repeat it every second. Shorter than the allowed
    /// lateness, so a dead replica's partitions are waited for again before
    /// a window with their new plays closes.
    #[arg(long, default_value_t = 5_000)]
    idle_lease_ms: u64,
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(path) = args.emit_windows {
        config.output.emit_windows = Some(path);
    }
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    config.kafka.group = args.group.unwrap_or_else(|| "downbeat-merge".to_owned());
    if let Some(topic) = args.partials_topic {
        config.kafka.partials_topic = topic;
    }
    config.kafka.properties.extend(args.properties);
    downbeat::merge::merge(config, std::time::Duration::from_millis(args.idle_lease_ms))
}

/// Settings shared by every command; each overrides the config file.
#[derive(Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "DOWNBEAT_CONFIG")]
    config: Option<PathBuf>,
    /// Keep every refused or late line, verbatim, in this file.
    #[arg(long, env = "DOWNBEAT_REJECTS")]
    rejects: Option<String>,
    /// How late (ms) an event may arrive and still be counted exactly.
    #[arg(long, env = "DOWNBEAT_ALLOWED_LATENESS_MS")]
    allowed_lateness_ms: Option<u64>,
    /// Leaderboard length.
    #[arg(long, env = "DOWNBEAT_TOP_K")]
    top_k: Option<usize>,
    /// Generator seed.
    #[arg(long, env = "DOWNBEAT_SEED")]
    seed: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// HTTP listen address.
    #[arg(long, env = "DOWNBEAT_LISTEN")]
    listen: Option<String>,
    /// Also write every closed window as a JSON line to PATH (`-` = stdout).
    #[arg(long, env = "DOWNBEAT_EMIT_WINDOWS")]
    emit_windows: Option<String>,
    /// Also write every closed listening session as a JSON line to PATH
    /// (`-` = stdout).
    #[arg(long, env = "DOWNBEAT_EMIT_SESSIONS")]
    emit_sessions: Option<String>,
    /// Event source.
    #[arg(long, value_enum, env = "DOWNBEAT_SOURCE")]
    source: Option<SourceKind>,
    /// For `--source file`: JSON Lines file, or `-` for stdin (implies --source file).
    #[arg(long, env = "DOWNBEAT_INPUT")]
    input: Option<String>,
    /// Generator events per second.
    #[arg(long, env = "DOWNBEAT_RATE")]
    rate: Option<f64>,
    /// The generator follows a daily cycle around --rate (see `generate --diurnal`).
    #[arg(long, env = "DOWNBEAT_DIURNAL")]
    diurnal: bool,
    /// Idle time (ms) after which the watermark follows the wall clock.
    #[arg(long, env = "DOWNBEAT_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    #[command(flatten)]
    spike: SpikeArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// For `--source kafka`: consumer group; replicas in one group split the partitions.
    #[arg(long, env = "DOWNBEAT_KAFKA_GROUP")]
    group: Option<String>,
    /// For `--source kafka`: checkpoint directory (default `downbeat-state`;
    /// shared by replicas that take over each other's partitions; `""`: none,
    /// at least once).
    #[arg(long, env = "DOWNBEAT_CHECKPOINT_DIR")]
    checkpoint_dir: Option<String>,
    /// For `--source kafka`: also keep every partition's checkpoint in this
    /// (compacted) topic, so replicas take partitions over from each other
    /// with no shared checkpoint directory.
    #[arg(long, env = "DOWNBEAT_STATE_TOPIC")]
    state_topic: Option<String>,
    /// For `--source kafka`: publish every closed window per partition held
    /// to this topic, for `downbeat merge`.
    #[arg(long, env = "DOWNBEAT_PARTIALS_TOPIC")]
    partials_topic: Option<String>,
    /// For `--source kafka`: milliseconds between checkpoints.
    #[arg(long, env = "DOWNBEAT_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// For `--source kafka`: this replica's name in checkpoints (default: host name).
    #[arg(long, env = "DOWNBEAT_REPLICA_ID")]
    replica_id: Option<String>,
}

/// An injected spike of one song in the generator's events (`[generator.spike]`).
#[derive(Args)]
struct SpikeArgs {
    /// Inject a spike of this song (title; in the catalogue unless --spike-artist is given).
    #[arg(long)]
    spike_song: Option<String>,
    /// Artist of the spiking song (default: the catalogue's).
    #[arg(long, requires = "spike_song")]
    spike_artist: Option<String>,
    /// Event time the spike starts, epoch ms.
    #[arg(long, requires = "spike_song", conflicts_with = "spike_after_secs")]
    spike_start_ms: Option<i64>,
    /// Seconds of event time from the first generated event to the spike (default 0).
    #[arg(long, requires = "spike_song")]
    spike_after_secs: Option<u64>,
    /// How long the spike lasts, seconds (default 600).
    #[arg(long, requires = "spike_song")]
    spike_duration_secs: Option<u64>,
    /// Share of all events that are plays of the song during the spike (default 0.05).
    #[arg(long, requires = "spike_song")]
    spike_share: Option<f64>,
}

impl SpikeArgs {
    /// Fold the flags into the config's `[generator.spike]`.
    fn apply(&self, config: &mut Config) {
        let Some(song) = &self.spike_song else {
            return;
        };
        let spike = config.generator.spike.get_or_insert_with(|| SpikeConfig {
            song: song.clone(),
            artist: None,
            start_ms: None,
            after_secs: 0,
            duration_secs: 600,
            share: 0.05,
        });
        spike.song = song.clone();
        if let Some(artist) = &self.spike_artist {
            spike.artist = Some(artist.clone());
        }
        if let Some(start_ms) = self.spike_start_ms {
            spike.start_ms = Some(start_ms);
        }
        if let Some(after_secs) = self.spike_after_secs {
            spike.start_ms = None;
            spike.after_secs = after_secs;
        }
        if let Some(duration_secs) = self.spike_duration_secs {
            spike.duration_secs = duration_secs;
        }
        if let Some(share) = self.spike_share {
            spike.share = share;
        }
    }
}

/// Where the Kafka topic is.
#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap brokers, host:port[,host:port..] (implies --source kafka for run).
    #[arg(long, env = "DOWNBEAT_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Kafka topic of listen events.
    #[arg(long, env = "DOWNBEAT_KAFKA_TOPIC")]
    topic: Option<String>,
    /// A librdkafka property, KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// JSON Lines to produce (`-` = stdin) instead of the generator.
    #[arg(long, conflicts_with_all = ["rate", "count", "start_ms", "spike_song"])]
    input: Option<String>,
    /// How records are keyed: by userId (a user's plays in one partition),
    /// a random key per record, or none.
    #[arg(long, value_enum, default_value_t = downbeat::kafka::produce::KeyBy::User)]
    key: downbeat::kafka::produce::KeyBy,
    #[command(flatten)]
    events: GeneratedEvents,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// JSON Lines input file, or `-` for stdin.
    #[arg(long)]
    input: String,
    /// Where window results go (`-` = stdout).
    #[arg(long, default_value = "-")]
    output: String,
    /// Also build listening sessions and write each closed one as a JSON
    /// line here (`-` = stdout).
    #[arg(long)]
    sessions: Option<String>,
    /// Threads that decode input (0 = one per core, 1 = inline).
    #[arg(long, env = "DOWNBEAT_DECODE_THREADS")]
    decode_threads: Option<usize>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    events: GeneratedEvents,
}

/// Which generated events `generate` and `produce` emit.
#[derive(Args)]
struct GeneratedEvents {
    /// Events per second: the spacing of event times, and the pace when no --count is given.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after N events, emitted as fast as possible (timestamps ending now).
    #[arg(long)]
    count: Option<u64>,
    /// Event time of the first event (epoch ms) with --count; defaults so the last event is now.
    #[arg(long)]
    start_ms: Option<i64>,
    /// Follow a daily cycle around --rate (UTC): a trough near 04:00, an evening peak,
    /// about ±60%, weekends different; Poisson arrivals, fixed by the seed.
    #[arg(long)]
    diurnal: bool,
    #[command(flatten)]
    spike: SpikeArgs,
}

impl CommonArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(rejects) = &self.rejects {
            config.output.rejects = Some(rejects.clone());
        }
        if let Some(lateness) = self.allowed_lateness_ms {
            config.windows.allowed_lateness_ms = lateness;
        }
        if let Some(top_k) = self.top_k {
            config.windows.top_k = top_k;
        }
        if let Some(seed) = self.seed {
            config.generator.seed = seed;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Replay(args) => replay(args),
        Command::Generate(args) => generate(args),
        Command::Produce(args) => produce(args),
        Command::Merge(args) => merge(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(io::stderr(), "downbeat: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: a message that already ends with
/// its cause's text (`cannot read X: No such file`) does not repeat it.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(path) = args.emit_windows {
        config.output.emit_windows = Some(path);
    }
    if let Some(path) = args.emit_sessions {
        config.output.emit_sessions = Some(path);
    }
    if let Some(source) = args.source {
        config.source.kind = source;
    }
    if let Some(input) = args.input {
        config.source.kind = SourceKind::File;
        config.source.path = Some(input);
    }
    if let Some(rate) = args.rate {
        config.source.rate_per_sec = rate;
    }
    if args.diurnal {
        config.generator.diurnal = true;
    }
    if let Some(idle) = args.idle_timeout_ms {
        config.windows.idle_timeout_ms = idle;
    }
    args.spike.apply(&mut config);
    let kafka = &mut config.kafka;
    if let Some(brokers) = args.kafka.brokers {
        kafka.brokers = brokers;
        config.source.kind = SourceKind::Kafka;
    }
    if let Some(topic) = args.kafka.topic {
        kafka.topic = topic;
    }
    kafka.properties.extend(args.kafka.properties);
    if let Some(group) = args.group {
        kafka.group = group;
    }
    if let Some(dir) = args.checkpoint_dir {
        kafka.checkpoint_dir = dir;
    }
    if let Some(topic) = args.state_topic {
        kafka.state_topic = topic;
    }
    if let Some(topic) = args.partials_topic {
        kafka.partials_topic = topic;
    }
    if let Some(interval) = args.checkpoint_interval_ms {
        kafka.checkpoint_interval_ms = interval;
    }
    if let Some(id) = args.replica_id {
        kafka.replica_id = Some(id);
    }
    config.validate()?;
    downbeat::live::run(config)
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    if let Some(threads) = args.decode_threads {
        config.input.decode_threads = threads;
    }
    if let Some(path) = args.sessions {
        config.output.emit_sessions = Some(path);
    }
    config.validate()?;
    let summary = downbeat::replay::replay(&config, &args.input, &args.output)?;
    let line = serde_json::to_string(&summary).context("summary serializes")?;
    // A closed stderr must not turn a finished replay into a panic.
    let _ = writeln!(io::stderr(), "{line}");
    if summary.interrupted {
        anyhow::bail!("interrupted: windows still open were not written");
    }
    if let Some(error) = &summary.totals.rejects_write_error {
        anyhow::bail!("refused lines were not all kept in the rejects file: {error}");
    }
    Ok(())
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    config.source.rate_per_sec = args.events.rate;
    config.generator.diurnal |= args.events.diurnal;
    args.events.spike.apply(&mut config);
    if let Some(brokers) = args.kafka.brokers {
        config.kafka.brokers = brokers;
    }
    if let Some(topic) = args.kafka.topic {
        config.kafka.topic = topic;
    }
    config.source.kind = SourceKind::Kafka;
    config.validate()?;
    let summary = downbeat::kafka::produce::produce(downbeat::kafka::produce::ProduceSettings {
        brokers: config.kafka.brokers.clone(),
        topic: config.kafka.topic.clone(),
        input: args.input,
        rate_per_sec: args.events.rate,
        count: args.events.count,
        start_ms: args.events.start_ms,
        properties: args.kafka.properties,
        generator: config.generator.clone(),
        key: args.key,
    })?;
    let line = serde_json::to_string(&summary).context("summary serializes")?;
    let _ = writeln!(io::stderr(), "{line}");
    if summary.failed > 0 {
        anyhow::bail!("{} records were not delivered", summary.failed);
    }
    Ok(())
}

/// The times of `count` generated events: evenly spaced, or the daily cycle.
fn event_clock(
    diurnal: Option<Diurnal>,
    events: &GeneratedEvents,
    count: u64,
) -> anyhow::Result<EventClock> {
    Ok(match diurnal {
        Some(diurnal) => {
            EventClock::diurnal(diurnal, events.rate, count, events.start_ms, now_ms())?
        }
        None => EventClock::even(count, events.rate, events.start_ms, now_ms())?,
    })
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let mut config = args.common.config()?;
    config.source.rate_per_sec = args.events.rate;
    config.generator.diurnal |= args.events.diurnal;
    args.events.spike.apply(&mut config);
    config.validate()?;
    let mut generator = Generator::for_rate(&config.generator, args.events.rate);
    let diurnal = downbeat::live::diurnal_of(&config.generator);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Vec::with_capacity(1024);
    let written = match args.events.count {
        Some(count) => {
            let mut clock = event_clock(diurnal, &args.events, count)?;
            (0..count).try_for_each(|_| {
                let ts = clock.next_ms();
                generator.set_activity(clock.activity(ts));
                line.clear();
                generator.write_event(ts, &mut line);
                line.push(b'\n');
                out.write_all(&line)
            })
        }
        None => downbeat::source::paced::write_paced(
            &mut generator,
            args.events.rate,
            diurnal.as_ref(),
            &mut out,
        ),
    };
    match written.and_then(|()| out.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing events to stdout"),
    }
}

//! `downbeat run`: live mode. One source (the paced generator, a file or
//! stdin, or Kafka partitions) through the driver into the metrics, the
//! JSON API and live page state, and `--emit-windows`, until SIGINT or
//! SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, SourceKind};
use crate::driver::{Driver, Mode};
use crate::kafka::metrics::KafkaMetrics;
use crate::kafka::partition::PartitionGeometry;
use crate::lines::VERBATIM_LINE_CAP_BYTES;
use crate::metrics::Metrics;
use crate::output::{now_ms, open_writer, refuse_same_file, refuse_shared_outputs};
use crate::pipeline::Pipeline;
use crate::service::Service;
use crate::sink::api::{ApiSink, ServerState};
use crate::sink::emit::{EmitSink, Records};
use crate::sink::metrics::MetricsSink;
use crate::sink::partials::PartialsSink;
use crate::sink::Sink;
use crate::source::diurnal::Diurnal;
use crate::source::generator::Generator;
use crate::source::kafka::{KafkaSource, Recovery};
use crate::source::{file, paced, Source};

/// Between two ticks of a generator or file source.
const TICK: Duration = Duration::from_millis(200);

/// Between two ticks of the Kafka source (idleness, checkpoints).
const KAFKA_TICK: Duration = Duration::from_millis(100);

/// Metrics, the API, the partials topic (Kafka with `kafka.partials_topic`)
/// `--emit-windows` and `--emit-sessions` (resumed where the last checkpoint
/// left them, with Kafka).
fn live_sinks(
    config: &Config,
    metrics: &Arc<Metrics>,
    state: &Arc<ServerState>,
    resume: ResumeBytes,
) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(MetricsSink(Arc::clone(metrics))),
        Box::new(ApiSink(Arc::clone(state))),
    ];
    if config.source.kind == SourceKind::Kafka && !config.kafka.partials_topic.is_empty() {
        sinks.push(Box::new(PartialsSink::open(&config.kafka)?));
    }
    if let Some(path) = config.output.emit_windows.as_deref() {
        let emit = match config.source.kind {
            SourceKind::Kafka => EmitSink::resume(path, resume.windows)?,
            _ => EmitSink::create(path)?,
        };
        sinks.push(Box::new(emit));
    }
    if let Some(path) = config.output.emit_sessions.as_deref() {
        let emit = match config.source.kind {
            SourceKind::Kafka => EmitSink::resume_for(Records::Sessions, path, resume.sessions)?,
            _ => EmitSink::create_for(Records::Sessions, path)?,
        };
        sinks.push(Box::new(emit));
    }
    Ok(sinks)
}

/// How much of each output file the last checkpoint covers (Kafka).
#[derive(Clone, Copy, Debug, Default)]
struct ResumeBytes {
    windows: Option<u64>,
    sessions: Option<u64>,
}

/// Run until SIGINT/SIGTERM. Fails before reading any event if the
/// configuration, the listen address or an output file is unusable.
pub fn run(config: Config) -> anyhow::Result<()> {
    let pipeline_config = config.pipeline()?;
    let watermark = pipeline_config.watermark;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(ServerState::new(Arc::clone(&metrics)));
    let outputs = [
        ("--emit-windows", config.output.emit_windows.as_deref()),
        ("--rejects", config.output.rejects.as_deref()),
        ("--emit-sessions", config.output.emit_sessions.as_deref()),
    ];
    refuse_shared_outputs(&outputs)?;
    if let (SourceKind::File, Some(input)) = (config.source.kind, config.source.path.as_deref()) {
        refuse_same_file(input, &outputs)?;
    }
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path)?),
        None => None,
    };
    let mut pipeline = Pipeline::new(pipeline_config, &metrics, rejects, now_ms())?;
    let cap = VERBATIM_LINE_CAP_BYTES.max(config.input.max_line_bytes + 1);
    let mut resume = ResumeBytes::default();
    let (mut source, tick): (Box<dyn Source>, Duration) = match config.source.kind {
        SourceKind::Generator => {
            let generator = Generator::for_rate(&config.generator, config.source.rate_per_sec);
            (
                Box::new(paced::source(
                    generator,
                    config.source.rate_per_sec,
                    diurnal_of(&config.generator),
                )?),
                TICK,
            )
        }
        SourceKind::File => {
            let path = config.source.path.as_deref().unwrap_or("-");
            (Box::new(file::live(path, cap)?), TICK)
        }
        SourceKind::Kafka => {
            let replica = replica_id(&config);
            let mut recovery = Recovery::open(&config.kafka, &replica)?;
            resume = restore(&mut recovery, &mut pipeline, &metrics, &replica);
            let geometry = PartitionGeometry {
                allowed_lateness_ms: watermark.allowed_lateness_ms,
                pane_ms: pipeline.pane_ms(),
                max_width_ms: pipeline.max_width_ms(),
            };
            let kafka_metrics = Arc::new(KafkaMetrics::new(metrics.registry()));
            let kafka = &config.kafka;
            tracing::info!(brokers = %kafka.brokers, topic = %kafka.topic, group = %kafka.group, replica, "consuming from kafka");
            let source = KafkaSource::subscribe(
                kafka,
                geometry,
                watermark.idle_timeout_ms,
                recovery,
                kafka_metrics,
            )?;
            (Box::new(source), KAFKA_TICK)
        }
    };
    let sinks = live_sinks(&config, &metrics, &state, resume)?;
    let service = Service::start(&config.http, Arc::clone(&state))?;
    let mut driver = Driver::new(pipeline, sinks, metrics, Some(state), Mode::Live { tick });
    let result = driver.run(source.as_mut(), &service.stop);
    drop(source);
    service.shutdown();
    result?;
    Ok(())
}

/// This replica's name in checkpoints: the config's, else the host name.
fn replica_id(config: &Config) -> String {
    config.kafka.replica_id.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "downbeat".to_owned())
    })
}

/// The daily profile when the generator follows it (`--diurnal`).
pub fn diurnal_of(generator: &crate::source::generator::GeneratorConfig) -> Option<Diurnal> {
    generator.diurnal.then(|| Diurnal::new(generator.seed))
}

/// What a Kafka replica's checkpoint restores before it reads: its
/// counters and forecast; returns the lengths to cut its outputs back to.
fn restore(
    recovery: &mut Recovery,
    pipeline: &mut Pipeline,
    metrics: &Metrics,
    replica: &str,
) -> ResumeBytes {
    if let Some(state) = recovery.forecast.take() {
        tracing::info!(
            replica,
            windows = state.windows(),
            "restored this replica's streams forecast from its checkpoint"
        );
        pipeline.restore_forecast(state);
    }
    let Some(own) = &recovery.own else {
        return ResumeBytes::default();
    };
    metrics.restore_counters(&own.counters);
    tracing::info!(
        replica,
        partitions = own.partitions.len(),
        "restored this replica's counters from its checkpoint"
    );
    ResumeBytes {
        windows: own.emitted_bytes,
        sessions: own.emitted_session_bytes,
    }
}

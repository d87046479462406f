//! `downbeat merge`: the merge tier. Reads the partials topic the replicas
//! write (`run --partials-topic`) and emits each global window once, when
//! every partition of the source topic has reported it, through the same
//! sinks as `run`: `/metrics`, the JSON API and live page, `--emit-windows`.

use std::sync::Arc;
use std::time::Duration;

use downbeat_operators::GlobalMerge;

use crate::config::Config;
use crate::driver::{Driver, Mode};
use crate::metrics::Metrics;
use crate::output::now_ms;
use crate::pipeline::Pipeline;
use crate::service::Service;
use crate::sink::api::{ApiSink, ServerState};
use crate::sink::emit::EmitSink;
use crate::sink::metrics::MetricsSink;
use crate::sink::Sink;
use crate::source::partials::PartialsSource;

/// Between two ticks of the merger.
const TICK: Duration = Duration::from_millis(100);

/// Merge until SIGINT/SIGTERM; a replica's claim that a partition is idle
/// holds for `idle_lease` after it was sent.
pub fn merge(config: Config, idle_lease: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.kafka.partials_topic.is_empty(),
        "downbeat merge needs --partials-topic"
    );
    let pipeline_config = config.pipeline()?;
    let windows = pipeline_config.aggregator.windows.clone();
    let top_k = pipeline_config.aggregator.top_k;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(ServerState::new(Arc::clone(&metrics)));
    let pipeline = Pipeline::new(pipeline_config, &metrics, None, now_ms())?;
    let merge = GlobalMerge::new(windows, 0, top_k);
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(crate::output::open_writer(path)?),
        None => None,
    };
    let mut source = PartialsSource::open(
        &config.kafka,
        merge,
        idle_lease,
        metrics.registry(),
        rejects,
    )?;
    let mut sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(MetricsSink(Arc::clone(&metrics))),
        Box::new(ApiSink(Arc::clone(&state))),
    ];
    if let Some(path) = config.output.emit_windows.as_deref() {
        // Rebuilt from the start of the partials topic: written again whole.
        sinks.push(Box::new(EmitSink::create(path)?));
    }
    tracing::info!(brokers = %config.kafka.brokers, partials_topic = %config.kafka.partials_topic, "merging partial windows");
    let service = Service::start(&config.http, Arc::clone(&state))?;
    let mut driver = Driver::new(
        pipeline,
        sinks,
        metrics,
        Some(state),
        Mode::Live { tick: TICK },
    );
    let result = driver.run(&mut source, &service.stop);
    drop(source);
    service.shutdown();
    result?;
    Ok(())
}

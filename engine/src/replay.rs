//! `downbeat replay`: batch mode. The replay source (parallel decoding,
//! results identical to one thread) through the driver into the window
//! output, as fast as the input can be read.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::driver::{Driver, DriverError, Ending, Mode};
use crate::lines::VERBATIM_LINE_CAP_BYTES;
use crate::metrics::Metrics;
use crate::output::{
    now_ms, open_writer, refuse_same_file, refuse_shared_outputs, SameFileError, SharedOutputError,
};
use crate::pipeline::{Pipeline, PipelineError, Totals};
use crate::process::peak_rss_bytes;
use crate::service::stop_on_signal;
use crate::sink::emit::{EmitSink, Records};
use crate::sink::Sink;
use crate::source::file::ReplaySource;
use crate::source::SourceError;

/// The summary line printed on stderr at the end.
#[derive(Serialize)]
pub struct Summary {
    /// Counts.
    #[serde(flatten)]
    pub totals: Totals,
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Input lines per second.
    pub lines_per_sec: f64,
    /// Threads that decoded input.
    pub decode_threads: usize,
    /// From the watermark closing windows to their lines being written.
    pub window_close_latency_us: LatencySummary,
    /// Peak resident memory of the process (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// SIGINT or SIGTERM stopped the replay: the windows closed until then
    /// were written, the ones still open were not.
    pub interrupted: bool,
}

/// Percentiles of an HdrHistogram of latencies, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencySummary {
    /// Summarise a histogram of nanoseconds.
    pub fn from_nanos(histogram: &hdrhistogram::Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            p50: us(histogram.value_at_quantile(0.5)),
            p99: us(histogram.value_at_quantile(0.99)),
            max: us(histogram.max()),
        }
    }
}

/// Errors that stop a replay before or while reading (bad input lines never do).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be opened or read.
    #[error("cannot read input {path}: {source}")]
    Input {
        /// The path given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// An output could not be created or written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The path given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// An output is the input file.
    #[error(transparent)]
    SameFile(#[from] SameFileError),
    /// Two outputs name the same file.
    #[error(transparent)]
    SharedOutput(#[from] SharedOutputError),
    /// The signal handlers could not be set up.
    #[error("cannot watch for signals: {source}")]
    Signals {
        /// Why.
        source: io::Error,
    },
    /// The input failed while being read.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Replay `input` (`-` = stdin) through the pipeline, writing windows to `output`.
pub fn replay(config: &Config, input: &str, output: &str) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let threads = match config.input.decode_threads {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let output_error = |path: &str| {
        let path = path.to_owned();
        move |source| ReplayError::Output { path, source }
    };
    let sessions = config.output.emit_sessions.as_deref();
    let outputs = [
        ("--output", Some(output)),
        ("--rejects", config.output.rejects.as_deref()),
        ("--sessions", sessions),
    ];
    refuse_same_file(input, &outputs)?;
    refuse_shared_outputs(&outputs)?;
    let metrics = Arc::new(Metrics::new());
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path).map_err(output_error(path))?),
        None => None,
    };
    let mut pipeline_config = config.pipeline()?;
    if sessions.is_none() {
        // Nobody reads them: skip the work.
        pipeline_config.sessions = None;
    }
    let pipeline = Pipeline::new(pipeline_config, &metrics, rejects, now_ms())?;
    let cap = VERBATIM_LINE_CAP_BYTES.max(config.input.max_line_bytes + 1);
    let mut source = ReplaySource::open(input, threads, cap, &pipeline.parse_settings())?;
    let windows = EmitSink::create(output).map_err(output_error(output))?;
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(windows)];
    if let Some(path) = sessions {
        let sink = EmitSink::create_for(Records::Sessions, path).map_err(output_error(path))?;
        sinks.push(Box::new(sink));
    }
    let mut driver = Driver::new(pipeline, sinks, metrics, None, Mode::Batch);
    let stop = stop_on_signal().map_err(|source| ReplayError::Signals { source })?;
    let ending = match driver.run(&mut source, &stop) {
        Ok(ending) => ending,
        Err(DriverError::Source(error)) => return Err(error.into()),
        Err(DriverError::Sink { sink, source }) => {
            let path = match (sink, sessions) {
                ("session output", Some(path)) => path,
                _ => output,
            };
            return Err(output_error(path)(source));
        }
    };
    let elapsed = started.elapsed();
    let totals = driver.pipeline_ref().totals().clone();
    Ok(Summary {
        lines_per_sec: totals.lines as f64 / elapsed.as_secs_f64().max(1e-9),
        totals,
        elapsed_secs: elapsed.as_secs_f64(),
        decode_threads: threads.max(1),
        window_close_latency_us: LatencySummary::from_nanos(driver.close_latency()),
        peak_rss_bytes: peak_rss_bytes(),
        interrupted: ending == Ending::Stopped,
    })
}

//! `downbeat replay`: batch mode, as fast as the input can be read.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::output::{now_ms, open_writer, WindowWriter};
use crate::pipeline::{Pipeline, Totals};
use crate::source::lines::LineReader;

/// Lines are kept whole (for the rejects file) up to this size.
pub const VERBATIM_LINE_CAP_BYTES: usize = 64 << 20;

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
    Config(#[from] crate::config::ConfigError),
    /// The pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// Replay `input` (`-` = stdin) through the pipeline, writing windows to `output`.
pub fn replay(config: &Config, input: &str, output: &str) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let (reader, size): (Box<dyn Read>, Option<u64>) = if input == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(input).map_err(|source| ReplayError::Input {
            path: input.to_owned(),
            source,
        })?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let out_error = |path: &str| {
        let path = path.to_owned();
        move |source| ReplayError::Output { path, source }
    };
    let mut windows = WindowWriter::new(open_writer(output).map_err(out_error(output))?);
    let rejects = match config.output.rejects.as_deref() {
        Some(path) => Some(open_writer(path).map_err(out_error(path))?),
        None => None,
    };
    let metrics = Metrics::new();
    let mut pipeline = Pipeline::new(config.pipeline()?, &metrics, rejects, now_ms())?;
    let progress = progress_bar(size);
    let mut lines = LineReader::new(
        reader,
        VERBATIM_LINE_CAP_BYTES.max(config.input.max_line_bytes + 1),
    );
    let mut closed = Vec::new();
    let mut bytes_read: u64 = 0;
    loop {
        let line = lines.next_line().map_err(|source| ReplayError::Input {
            path: input.to_owned(),
            source,
        })?;
        let Some(line) = line else { break };
        bytes_read += line.bytes.len() as u64 + 1;
        pipeline.process_line(line, &mut closed);
        if !closed.is_empty() {
            write_all(&mut windows, &mut closed).map_err(out_error(output))?;
        }
        if let Some(bar) = &progress {
            if pipeline.totals().lines % 65_536 == 0 {
                bar.set_position(bytes_read);
                let rate = pipeline.totals().lines as f64 / started.elapsed().as_secs_f64();
                bar.set_message(format!("{:.0} events/s", rate));
            }
        }
    }
    pipeline.finish(&mut closed);
    write_all(&mut windows, &mut closed).map_err(out_error(output))?;
    windows.flush().map_err(out_error(output))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    Ok(Summary {
        totals: pipeline.totals().clone(),
        elapsed_secs: elapsed.as_secs_f64(),
        lines_per_sec: pipeline.totals().lines as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

fn write_all(
    windows: &mut WindowWriter,
    closed: &mut Vec<downbeat_operators::WindowResult>,
) -> io::Result<()> {
    for window in closed.drain(..) {
        windows.write(&window)?;
    }
    Ok(())
}

fn progress_bar(size: Option<u64>) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} eta {eta}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {msg}").expect("valid template"),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

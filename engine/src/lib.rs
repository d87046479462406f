//! downbeat engine: one driver from sources through decoding, watermarks
//! and the pipeline to sinks (metrics, the JSON API, window output), and
//! the HTTP server.
#![deny(missing_docs)]

pub mod config;
pub mod decode;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod decode_reference;
pub mod driver;
pub mod hdr_summary;
pub mod http;
pub mod json_scan;
pub mod kafka;
pub mod lines;
pub mod live;
pub mod merge;
pub mod metrics;
pub mod output;
pub mod page;
pub mod pipeline;
pub mod process;
pub mod replay;
pub mod service;
pub mod sink;
pub mod source;
pub mod watermark;

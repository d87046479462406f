//! downbeat engine: sources, decoding, watermarks, the pipeline, metrics, HTTP.
#![deny(missing_docs)]

pub mod config;
pub mod decode;
pub mod hdr_summary;
pub mod http;
pub mod json_scan;
pub mod kafka;
pub mod live;
pub mod metrics;
pub mod output;
pub mod page;
pub mod pipeline;
pub mod process;
pub mod replay;
pub mod source;
pub mod watermark;

//! The logferry agent: tails a database's change log beside it and ships sealed segments to
//! the shipper, crash-safe.
//!
//! # Layout
//! - [`sources`]: one module per database kind behind the [`sources::Source`] trait
//!   (each kind's snapshots live with it).
//! - [`segmenter`]: cuts the event stream into segments of bounded size (inside a
//!   transaction too) or age (at a transaction boundary).
//! - [`resume`]: where a stream's chain ends and where its source reconnects.
//! - [`spool`]: durable local spool and checkpoint (the durability rules live in its docs).
//! - [`snapshot_upload`]: a snapshot's chunks and manifest, uploaded as its data arrives.
//! - [`client`]: HTTP client of the shipper.
//! - [`pipeline`]: wires source → segmenter → sealer → spool → shipper, one file per stage,
//!   and handles retries.
//! - [`metrics`]: Prometheus gauges and counters for every stage.
//! - [`exposure`]: the RPO exposure, from positions read and acknowledged.
//! - [`backoff`]: retry delays.
//! - [`error`]: the crate's error type.
//! - [`crash_point!`]: where the crash tests stop the agent (the `failpoints` feature).

/// Crashes the process at this point (as `kill -9` would: no unwinding, no destructors)
/// when the failpoint `$name` is set to `return` in `FAILPOINTS`, so a test can stop the
/// agent inside a durability window; compiled to nothing without the `failpoints` feature.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        fail::fail_point!($name, |_| std::process::abort())
    };
}

pub mod backoff;
pub mod client;
pub mod encryption;
pub mod error;
pub mod exposure;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod resume;
pub mod segmenter;
pub mod snapshot_upload;
pub mod sources;
pub mod spool;

pub use error::{AgentError, Result};

//! The logferry shipper: receives sealed segments from agents, verifies them, stores them in
//! object storage, and checks and lists the stored chains from the store alone.
//!
//! # Layout
//! - [`api`]: HTTP routes and the mapping of errors to status codes.
//! - [`ingest`]: validate → admit against the chain → store create-only (durability rule 2).
//! - [`storage`]: the object store (local directory or S3) behind a small interface.
//! - [`catalog`]: per-stream index of stored segments, rebuilt from a listing at boot.
//! - [`sources`]: restore, export, the drill and the payload check, one module per source
//!   kind behind [`sources::SourceRestore`].
//! - [`restore`]: what every kind's restore shares: verified reads, progress, reports.
//! - [`snapshots`]: snapshot chunks and manifests (accept, list); [`capsules`]: key
//!   capsules as uploads bring them, and the key rule of every upload.
//! - [`verify`]: full check of every stored chain (`logferry-shipper verify`).
//! - [`listing`]: stream and segment listing (`logferry-shipper ls`).
//! - [`metrics`]: Prometheus counters.
//! - [`auth`], [`audit`]: who may call the API, and the record of who did.
//! - [`listen`]: connections, their limits and their draining on shutdown.
//! - [`tls`], [`certs`]: TLS on the API, and `gen-certs`.
//! - [`keyring`]: the keys reading commands open stored objects with (`serve` has none);
//!   [`rotate`]: `rotate-key`.
//! - [`read_ahead`]: store reads in flight, in order, memory-bounded.
//! - [`error`]: the crate's error type.
//! - `store_conformance` (tests and the `test-support` feature): what every store backend
//!   must do, one suite for all.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod capsules;
pub mod catalog;
pub mod certs;
pub mod drill_record;
pub mod drill_schedule;
pub mod error;
pub mod ingest;
pub mod interrupt;
pub mod keyring;
pub mod listen;
pub mod listing;
pub mod metrics;
pub mod page;
pub mod promotion;
pub mod read_ahead;
pub mod restore;
pub mod rotate;
pub mod snapshots;
pub mod sources;
pub mod storage;
#[cfg(any(test, feature = "test-support"))]
pub mod store_conformance;
pub mod store_error;
#[cfg(test)]
mod test_support;
pub mod time_arg;
pub mod tls;
pub mod verify;
pub mod watch;

pub use error::{Result, ShipperError};

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
//! - [`snapshots`]: snapshot chunks and manifests (accept, list).
//! - [`verify`]: full check of every stored chain (`logferry-shipper verify`).
//! - [`listing`]: stream and segment listing (`logferry-shipper ls`).
//! - [`metrics`]: Prometheus counters.
//! - [`error`]: the crate's error type.

pub mod api;
pub mod catalog;
pub mod error;
pub mod ingest;
pub mod listing;
pub mod metrics;
pub mod restore;
pub mod snapshots;
pub mod sources;
pub mod storage;
pub mod store_error;
pub mod verify;

pub use error::{Result, ShipperError};

//! The logferry shipper: receives sealed segments from agents, verifies them, stores them in
//! object storage, and checks and lists the stored chains from the store alone.
//!
//! # Layout
//! - [`api`]: HTTP routes and the mapping of errors to status codes.
//! - [`ingest`]: validate → admit against the chain → store create-only (durability rule 2).
//! - [`storage`]: the object store (local directory or S3) behind a small interface.
//! - [`catalog`]: per-stream index of stored segments, rebuilt from a listing at boot.
//! - [`drill`]: the restore drill of `verify --restore-drill`.
//! - [`restore`]: point-in-time restore and export from the store alone: plan, snapshot,
//!   collect.
//! - [`replay`]: streams the collected binlog into a server or files while reading goes on.
//! - [`target_server`]: the server a restore writes into.
//! - [`snapshots`]: snapshot chunks and manifests (accept, list).
//! - [`verify`]: full check of every stored chain (`logferry-shipper verify`).
//! - [`listing`]: stream and segment listing (`logferry-shipper ls`).
//! - [`metrics`]: Prometheus counters.
//! - [`error`]: the crate's error type.

pub mod api;
pub mod catalog;
pub mod drill;
pub mod error;
pub mod ingest;
pub mod listing;
pub mod metrics;
pub mod replay;
pub mod restore;
pub mod snapshots;
pub mod storage;
pub mod store_error;
pub mod target_server;
pub mod verify;

pub use error::{Result, ShipperError};

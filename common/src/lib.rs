//! Shared vocabulary of logferry's agent and shipper.
//!
//! # Layout
//! - [`error`]: the crate's one error type, variants named by what the caller does next.
//! - [`stream`]: validated stream names and the kinds of source a stream comes from.
//! - [`position`]: totally ordered, resumable positions in a source's change log.
//! - [`segment`]: the sealed, checksummed segment file (header, compressed payload, trailer).
//! - [`lz4_frame`]: LZ4 payloads in the standard frame format.
//! - [`snapshot`]: full snapshots in chunks and their manifest.
//! - [`binlog`]: the MySQL/MariaDB payload inside a segment and its conversion back to a
//!   binlog file that `mariadb-binlog` reads.
//! - [`keys`]: the object-store key grammar (keys sort in position order).
//! - [`trx`]: transaction boundaries in a binlog event stream.
//! - [`wire`]: JSON bodies exchanged between agent and shipper.

pub mod binlog;
pub mod error;
pub mod keys;
pub mod lz4_frame;
pub mod position;
pub mod segment;
pub mod snapshot;
pub mod stream;
pub mod trx;
pub mod wire;

pub use error::{Error, Result};
pub use position::{BinlogPos, Position};
pub use segment::{Codec, Compression, DecodeLimits, Segment, SegmentHeader, SegmentMeta};
pub use stream::{SourceKind, StreamId};

//! Shared vocabulary of logferry's agent and shipper.
//!
//! # Layout
//! - [`error`]: the crate's one error type, variants named by what the caller does next.
//! - [`stream`]: validated stream names and the kinds of source a stream comes from.
//! - [`position`]: positions in a source's change log, one variant per kind.
//! - [`segment`]: the sealed, checksummed segment file (header, compressed payload, trailer).
//! - [`lz4_frame`]: LZ4 payloads in the standard frame format.
//! - [`crypto`]: end-to-end encryption: master and epoch keys, capsules, sealing, MACs.
//! - [`snapshot`]: full snapshots in chunks and their manifest.
//! - [`keys`]: the object-store key grammar (keys sort in position order).
//! - [`format`](mod@format): one module per source kind: its positions, payload, transaction
//!   boundaries and snapshot content. Nothing outside it knows a source's format.
//! - [`wire`]: JSON bodies exchanged between agent and shipper.

pub mod crypto;
pub mod error;
pub mod exposition;
pub mod format;
pub mod keys;
pub mod lz4_frame;
pub mod position;
pub mod segment;
pub mod snapshot;
pub mod stream;
pub mod wire;

pub use error::{Error, Result};
pub use format::mysql::BinlogPos;
pub use position::Position;
pub use segment::{
    Codec, Compression, DecodeLimits, Lineage, Segment, SegmentHeader, SegmentMeta, TrxMark,
};
pub use stream::{SourceKind, StreamId};

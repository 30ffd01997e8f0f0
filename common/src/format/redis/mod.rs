//! The Redis format: replication positions, RESP, the AOF-form segment payload, and the
//! snapshot manifest's Redis part. Everything in `logferry-common` that knows what a Redis
//! replication stream is lives here.
//!
//! - [`position`]: [`ReplPos`], history + offset (+ replication id and selected db).
//! - [`resp`]: the protocol: measuring, parsing and writing values.
//! - [`payload`]: the AOF-form payload, its walk, `#TS:` annotations and transactions.
//! - [`rdb`]: the few facts a snapshot records from an RDB's header and size hints.
//! - [`snapshot`]: the Redis part of a snapshot manifest.

pub mod payload;
pub mod position;
pub mod rdb;
pub mod resp;
pub mod snapshot;

pub use payload::{check_payload, skip_line, ts_line, walk, Command, TrxTracker};
pub use position::ReplPos;
pub use snapshot::{DbKeys, RedisSnapshot};

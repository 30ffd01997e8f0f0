//! The Redis part of a snapshot manifest: an RDB as a full sync delivered it.

use serde::{Deserialize, Serialize};

/// What a Redis snapshot records besides its chunks: the RDB a full sync sent, and where in
/// the replication stream it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSnapshot {
    /// The server the full sync came from (`host:port`).
    pub server: String,
    /// The replication id the server answered `+FULLRESYNC` with.
    pub replid: String,
    /// The offset it answered with: the stream continues with the byte after it.
    pub offset: u64,
    /// RDB format version (the number after `REDIS` in its header).
    pub rdb_version: u32,
    /// The server's version, from the RDB's `redis-ver` field.
    #[serde(default)]
    pub redis_version: String,
    /// Keys per db, counted in the RDB (dbs without keys left out).
    #[serde(default)]
    pub keys: Vec<DbKeys>,
}

/// The keys of one db in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbKeys {
    /// The db number.
    pub db: u32,
    /// Keys in it.
    pub keys: u64,
}

//! Full snapshots: a consistent dump taken from a paused replica, stored in chunks next to
//! the segment chain, and the manifest that lists them.
//!
//! Keys: `streams/<stream>/snapshots/<id>/chunk-<000001>.zst` and
//! `streams/<stream>/snapshots/<id>/manifest.json`. The id is the 13-digit ms timestamp of
//! the snapshot, so a listing sorts snapshots oldest first. A snapshot exists once its
//! manifest is stored; the manifest is written last.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result, StreamId};

/// One stored chunk of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// 1-based chunk number.
    pub index: u32,
    /// Bytes stored (zstd-compressed).
    pub stored_bytes: u64,
    /// Bytes of dump text in the chunk.
    pub plain_bytes: u64,
    /// sha256 of the stored bytes, hex.
    pub sha256: String,
    /// sha256 of the dump text, hex.
    pub plain_sha256: String,
}

/// Row count and checksum of one table at the snapshot's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// `schema.table`.
    pub name: String,
    /// `SELECT COUNT(*)`.
    pub rows: u64,
    /// `CHECKSUM TABLE` (absent when the engine cannot give one).
    pub checksum: Option<u64>,
}

/// Everything needed to restore and check a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Stream whose chain the snapshot joins.
    pub stream: StreamId,
    /// Snapshot id (13-digit ms timestamp).
    pub id: String,
    /// Primary binlog position the replica had applied (text form of a `BinlogPos`): the
    /// chain continues from here.
    pub position: String,
    /// When the dump started, ms since the epoch.
    pub taken_at_ms: i64,
    /// Replica it was taken from (host:port).
    pub replica: String,
    /// The dump tool and its version.
    pub dump_tool: String,
    /// Chunks in order.
    pub chunks: Vec<ChunkInfo>,
    /// Tables with row counts and checksums.
    pub tables: Vec<TableInfo>,
}

impl SnapshotManifest {
    /// Total bytes of dump text.
    pub fn plain_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.plain_bytes).sum()
    }
}

/// Id of a snapshot taken at `ms`.
pub fn snapshot_id(ms: i64) -> String {
    format!("{:013}", ms.max(0))
}

/// Prefix of a stream's snapshots.
pub fn snapshots_prefix(stream: &StreamId) -> String {
    format!("streams/{stream}/snapshots")
}

/// Key of chunk `index` of snapshot `id`.
pub fn chunk_key(stream: &StreamId, id: &str, index: u32) -> String {
    format!("{}/{id}/chunk-{index:06}.zst", snapshots_prefix(stream))
}

/// Key of the manifest of snapshot `id`.
pub fn manifest_key(stream: &StreamId, id: &str) -> String {
    format!("{}/{id}/manifest.json", snapshots_prefix(stream))
}

/// Checks that `id` is a snapshot id (13 digits).
///
/// # Errors
/// [`Error::Invalid`] quoting it.
pub fn validate_id(id: &str) -> Result<()> {
    if id.len() == 13 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "snapshot id",
            format!("{id:?}: expected 13 digits"),
        ))
    }
}

/// Compresses one chunk of dump text; returns the stored bytes and its [`ChunkInfo`].
///
/// # Errors
/// [`Error::Compress`] if zstd fails.
pub fn seal_chunk(index: u32, plain: &[u8]) -> Result<(Vec<u8>, ChunkInfo)> {
    let stored = zstd::bulk::compress(plain, 3).map_err(Error::Compress)?;
    let info = ChunkInfo {
        index,
        stored_bytes: stored.len() as u64,
        plain_bytes: plain.len() as u64,
        sha256: hex::encode(Sha256::digest(&stored)),
        plain_sha256: hex::encode(Sha256::digest(plain)),
    };
    Ok((stored, info))
}

/// The largest `snapshot.chunk_bytes` an agent accepts.
pub const MAX_CHUNK_BYTES_SETTING: u64 = 64 * 1024 * 1024;
/// How much dump text the agent reads at a time; a chunk is cut once it holds at least
/// `snapshot.chunk_bytes`, so it may exceed that by less than one read.
pub const DUMP_READ_BYTES: usize = 256 * 1024;
/// The largest dump text a chunk may hold; a reader never allocates more for a chunk,
/// whatever its manifest says.
pub const MAX_CHUNK_PLAIN_BYTES: u64 = MAX_CHUNK_BYTES_SETTING + DUMP_READ_BYTES as u64;

/// Verifies and decompresses a stored chunk against its [`ChunkInfo`].
///
/// # Errors
/// [`Error::Corrupt`] on a checksum or length mismatch, or a manifest that claims more
/// than [`MAX_CHUNK_PLAIN_BYTES`].
pub fn open_chunk(stored: &[u8], info: &ChunkInfo) -> Result<Vec<u8>> {
    if info.plain_bytes > MAX_CHUNK_PLAIN_BYTES {
        return Err(Error::corrupt(format!(
            "snapshot chunk {} claims {} bytes of dump text, more than any chunk holds ({MAX_CHUNK_PLAIN_BYTES})",
            info.index, info.plain_bytes
        )));
    }
    if hex::encode(Sha256::digest(stored)) != info.sha256 {
        return Err(Error::corrupt(format!(
            "snapshot chunk {} fails its sha256",
            info.index
        )));
    }
    let plain = zstd::bulk::decompress(stored, info.plain_bytes as usize).map_err(|e| {
        Error::corrupt(format!(
            "snapshot chunk {} does not decompress: {e}",
            info.index
        ))
    })?;
    if plain.len() as u64 != info.plain_bytes
        || hex::encode(Sha256::digest(&plain)) != info.plain_sha256
    {
        return Err(Error::corrupt(format!(
            "snapshot chunk {} decompresses to other bytes",
            info.index
        )));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_claiming_a_huge_chunk_is_refused_before_allocating() {
        let text = b"INSERT INTO t VALUES (1);\n".repeat(10);
        let (stored, mut info) = seal_chunk(1, &text).unwrap();
        info.plain_bytes = u64::MAX / 2;
        let err = open_chunk(&stored, &info).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
    }

    #[test]
    fn chunks_round_trip_and_detect_damage() {
        let text = b"INSERT INTO t VALUES (1),(2);\n".repeat(100);
        let (mut stored, info) = seal_chunk(1, &text).unwrap();
        assert_eq!(open_chunk(&stored, &info).unwrap(), text);
        stored[5] ^= 1;
        assert!(open_chunk(&stored, &info).is_err());
    }

    #[test]
    fn keys_sort_by_time() {
        let s = StreamId::new("db").unwrap();
        assert!(manifest_key(&s, &snapshot_id(999)) < manifest_key(&s, &snapshot_id(1000)));
        assert!(chunk_key(&s, "0000000000001", 2).ends_with("chunk-000002.zst"));
        assert!(validate_id(&snapshot_id(5)).is_ok() && validate_id("x").is_err());
    }
}

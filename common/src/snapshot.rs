//! Full snapshots: a consistent dump taken from a paused replica, stored in chunks next to
//! the segment chain, and the manifest that lists them.
//!
//! Keys are in [`crate::keys`]. The id is the 13-digit ms timestamp of the snapshot, so a
//! listing sorts snapshots oldest first. A snapshot exists once its manifest is stored; the
//! manifest is written last. The manifest is generic; what a source kind adds sits in
//! [`SnapshotContent`], defined by that kind's [`crate::format`](mod@crate::format) module.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::format::mysql::snapshot::{MysqlSnapshot, TableInfo};
use crate::{Error, Position, Result, SourceKind, StreamId};

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

/// Everything needed to restore and check a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Stream whose chain the snapshot joins.
    pub stream: StreamId,
    /// Snapshot id (13-digit ms timestamp).
    pub id: String,
    /// Where in the stream's log the snapshot stands (text form of the kind's position):
    /// the chain continues from here.
    pub position: String,
    /// When the dump started, ms since the epoch.
    pub taken_at_ms: i64,
    /// Chunks in order.
    pub chunks: Vec<ChunkInfo>,
    /// What the source kind adds (for MySQL: replica, dump tool, per-table checksums).
    #[serde(flatten)]
    pub content: SnapshotContent,
}

/// The per-source part of a manifest, tagged with the source kind (`"kind": "mysql"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SnapshotContent {
    /// A `mariadb-dump` of a paused replica.
    Mysql(MysqlSnapshot),
}

impl SnapshotContent {
    /// The source kind the snapshot belongs to.
    pub fn kind(&self) -> SourceKind {
        match self {
            SnapshotContent::Mysql(_) => SourceKind::Mysql,
        }
    }

    /// What the snapshot holds, in a few words for listings (`3 tables from replica-1:3306`).
    pub fn summary(&self) -> String {
        match self {
            SnapshotContent::Mysql(m) => format!(
                "{} tables{} from {}",
                m.tables.len(),
                if m.users {
                    " and the users"
                } else {
                    ", no users"
                },
                m.replica
            ),
        }
    }
}

impl SnapshotManifest {
    /// Reads a stored manifest. Manifests written before the per-source part was tagged
    /// have no `kind` and are MySQL's.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming what does not parse.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::corrupt_in("snapshot manifest", e.to_string());
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("kind")
                .or_insert_with(|| serde_json::Value::from("mysql"));
        }
        serde_json::from_value(value).map_err(bad)
    }

    /// The stream position the snapshot stands at.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the text is not a position of the snapshot's kind.
    pub fn position(&self) -> Result<Position> {
        Position::parse(self.content.kind(), &self.position)
    }

    /// Total bytes of dump text.
    pub fn plain_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.plain_bytes).sum()
    }
}

/// Id of a snapshot taken at `ms`.
pub fn snapshot_id(ms: i64) -> String {
    format!("{:013}", ms.max(0))
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

/// The largest `source.snapshot.chunk_bytes` an agent accepts.
pub const MAX_CHUNK_BYTES_SETTING: u64 = 64 * 1024 * 1024;
/// How much dump text the agent reads at a time; a chunk is cut once it holds at least
/// `source.snapshot.chunk_bytes`, so it may exceed that by less than one read.
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
        return Err(Error::corrupt_in("snapshot chunk", format!(
            "chunk {} claims {} bytes of dump text, more than any chunk holds ({MAX_CHUNK_PLAIN_BYTES})",
            info.index, info.plain_bytes
        )));
    }
    if hex::encode(Sha256::digest(stored)) != info.sha256 {
        return Err(Error::corrupt_in(
            "snapshot chunk",
            format!("chunk {} fails its sha256", info.index),
        ));
    }
    let plain = zstd::bulk::decompress(stored, info.plain_bytes as usize).map_err(|e| {
        Error::corrupt_in(
            "snapshot chunk",
            format!("chunk {} does not decompress: {e}", info.index),
        )
    })?;
    if plain.len() as u64 != info.plain_bytes
        || hex::encode(Sha256::digest(&plain)) != info.plain_sha256
    {
        return Err(Error::corrupt_in(
            "snapshot chunk",
            format!("chunk {} decompresses to other bytes", info.index),
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{chunk_key, manifest_key};

    #[test]
    fn a_manifest_written_before_kinds_reads_as_mysql() {
        let old = br#"{"stream":"db","id":"0000000000001","position":"b.000001:4",
            "taken_at_ms":1,"replica":"r:1","dump_tool":"d","chunks":[],"tables":[]}"#;
        let m = SnapshotManifest::from_json(old).unwrap();
        assert_eq!(m.content.kind(), SourceKind::Mysql);
        let again = SnapshotManifest::from_json(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
        assert!(serde_json::to_string(&m)
            .unwrap()
            .contains(r#""kind":"mysql""#));
        let err = SnapshotManifest::from_json(b"{}").unwrap_err().to_string();
        assert!(err.contains("snapshot manifest"), "{err}");
    }

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
    fn ids_sort_by_time() {
        let s = StreamId::new("db").unwrap();
        assert!(manifest_key(&s, &snapshot_id(999)) < manifest_key(&s, &snapshot_id(1000)));
        assert!(chunk_key(&s, &snapshot_id(1), 2).ends_with("chunk-000002.zst"));
        assert!(validate_id(&snapshot_id(5)).is_ok() && validate_id("x").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes, and a valid manifest with bytes changed: an error or a manifest,
        /// never a panic; its chunks then open (or fail) against arbitrary bytes without one.
        #[test]
        fn random_and_mutated_manifests_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            flips in proptest::collection::vec((0usize..10_000, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let _ = SnapshotManifest::from_json(&bytes);
            let good = br#"{"stream":"db","id":"0000000000001","position":"b.000001:4",
                "taken_at_ms":1,"replica":"r:1","dump_tool":"d","chunks":[
                {"index":1,"stored_bytes":10,"plain_bytes":20,"sha256":"00","plain_sha256":"00"}],"tables":[]}"#;
            proptest::prop_assert!(SnapshotManifest::from_json(good).is_ok(), "the unmutated manifest reads");
            let mut m = good.to_vec();
            for (at, v) in flips {
                let i = at % m.len();
                m[i] = v;
            }
            if let Ok(manifest) = SnapshotManifest::from_json(&m) {
                for info in &manifest.chunks {
                    let _ = open_chunk(&bytes, info);
                }
            }
        }
    }
}

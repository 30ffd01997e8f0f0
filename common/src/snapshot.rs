//! Full snapshots: a consistent dump taken from a paused replica, stored in chunks next to
//! the segment chain, and the manifest that lists them.
//!
//! Keys are in [`crate::keys`]. The id is the 13-digit ms timestamp of the snapshot, so a
//! listing sorts snapshots oldest first. A snapshot exists once its manifest is stored; the
//! manifest is written last. The manifest is generic; what a source kind adds sits in
//! [`SnapshotContent`], defined by that kind's [`crate::format`](mod@crate::format) module.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::seal::Envelope;
use crate::crypto::{canonical_json, EpochKey, KeyRef, ENVELOPE_LEN};

pub use crate::format::mysql::snapshot::{MysqlSnapshot, TableInfo};
pub use crate::format::redis::RedisSnapshot;
use crate::{Error, Position, Result, SourceKind, StreamId};

/// One stored chunk of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// 1-based chunk number.
    pub index: u32,
    /// Bytes stored (zstd-compressed, then encrypted when the manifest names a key).
    pub stored_bytes: u64,
    /// Bytes of dump text in the chunk.
    pub plain_bytes: u64,
    /// sha256 of the stored bytes, hex.
    pub sha256: String,
    /// sha256 of the dump text, hex; empty for a sealed chunk (its AES-GCM tag checks it).
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
    /// The key the chunks are sealed under (`MASTER/EPOCH`); unset for chunks in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// HMAC of the rest of the manifest under the key's epoch: the manifest stays in
    /// clear (the shipper checks chunks against it without a key) but only a key holder
    /// can write one that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// What the MAC covers, as read from the store ([`canonical_json`]); empty for a
    /// manifest made here, whose form is taken from the struct.
    #[serde(skip)]
    pub stored_form: StoredForm,
}

/// The canonical form of a record as stored. It never makes two records differ: equal
/// content is equal, however it was stored.
#[derive(Debug, Clone, Default)]
pub struct StoredForm(Vec<u8>);

impl PartialEq for StoredForm {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for StoredForm {}

/// What binds a snapshot's chunks to their place: the epoch key they are sealed under
/// and the snapshot they belong to (a chunk copied into another snapshot, or moved to
/// another index, does not open).
#[derive(Debug, Clone, Copy)]
pub struct ChunkSealing<'a> {
    /// The epoch key.
    pub key: &'a EpochKey,
    /// The snapshot's id.
    pub snapshot: &'a str,
}

impl ChunkSealing<'_> {
    fn aad(&self, index: u32) -> Vec<u8> {
        format!(
            "logferry chunk v1\0{}\0{}\0{index}",
            self.key.stream(),
            self.snapshot
        )
        .into_bytes()
    }
}

/// Purpose of a manifest's MAC.
const MANIFEST_MAC: &str = "snapshot manifest";

/// The per-source part of a manifest, tagged with the source kind (`"kind": "mysql"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SnapshotContent {
    /// A `mariadb-dump` of a paused replica.
    Mysql(MysqlSnapshot),
    /// An RDB from a Redis full sync.
    Redis(RedisSnapshot),
}

impl SnapshotContent {
    /// The source kind the snapshot belongs to.
    pub fn kind(&self) -> SourceKind {
        match self {
            SnapshotContent::Mysql(_) => SourceKind::Mysql,
            SnapshotContent::Redis(_) => SourceKind::Redis,
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
            SnapshotContent::Redis(r) => format!(
                "{} keys in {} dbs from {} (RDB v{})",
                r.keys.iter().map(|d| d.keys).sum::<u64>(),
                r.keys.len(),
                r.server,
                r.rdb_version
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
        let form = canonical_json(value.clone());
        let mut m: SnapshotManifest = serde_json::from_value(value).map_err(bad)?;
        m.stored_form = StoredForm(form);
        Ok(m)
    }

    /// The stream position the snapshot stands at.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the text is not a position of the snapshot's kind.
    pub fn position(&self) -> Result<Position> {
        Position::parse(self.content.kind(), &self.position)
    }

    /// The key the chunks are sealed under; `None` for a snapshot in clear.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the manifest names no valid key reference.
    pub fn key_ref(&self) -> Result<Option<KeyRef>> {
        self.key
            .as_deref()
            .map(KeyRef::parse)
            .transpose()
            .map_err(|e| Error::corrupt_in("snapshot manifest", e.to_string()))
    }

    /// Names `key` as the chunks' key and sets the MAC over everything else.
    ///
    /// # Errors
    /// [`Error::Key`] if the MAC key cannot be derived.
    pub fn sign(&mut self, key: &EpochKey) -> Result<()> {
        self.key = Some(key.key_ref().to_string());
        self.mac = None;
        let form = canonical_json(
            serde_json::to_value(&*self)
                .map_err(|e| Error::corrupt_in("snapshot manifest", e.to_string()))?,
        );
        self.mac = Some(key.mac(MANIFEST_MAC, &form)?);
        self.stored_form = StoredForm(form);
        Ok(())
    }

    /// Checks the MAC with the epoch key the manifest names.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the MAC is missing or does not match: the manifest was not
    /// written by a key holder, or was altered.
    pub fn check_mac(&self, key: &EpochKey) -> Result<()> {
        let unauthentic = |why: &str| {
            Error::corrupt_in(
                "snapshot manifest",
                format!(
                    "{why} under key {}: altered, or not written by a holder of the key",
                    key.key_ref()
                ),
            )
        };
        let Some(mac) = &self.mac else {
            return Err(unauthentic("carries no MAC"));
        };
        let built;
        let form = if self.stored_form.0.is_empty() {
            built = canonical_json(serde_json::to_value(self).unwrap_or_default());
            &built
        } else {
            // What the MAC covers must be what this manifest says: one changed since it
            // was read is checked as it is now.
            let mut as_stored = SnapshotManifest::from_json(&self.stored_form.0)?;
            as_stored.mac.clone_from(&self.mac);
            if &as_stored != self {
                return Err(unauthentic(
                    "differs from what was stored, and fails its MAC",
                ));
            }
            &self.stored_form.0
        };
        if key.mac_matches(MANIFEST_MAC, form, mac)? {
            Ok(())
        } else {
            Err(unauthentic("fails its MAC"))
        }
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

/// Compresses (and, with `sealing`, encrypts) one chunk of dump text; returns the stored
/// bytes and its [`ChunkInfo`]. An encrypted chunk is `envelope || ciphertext || tag`.
///
/// # Errors
/// [`Error::Compress`] if zstd fails; [`Error::Key`] if encryption does.
pub fn seal_chunk(
    index: u32,
    plain: &[u8],
    sealing: Option<&ChunkSealing<'_>>,
) -> Result<(Vec<u8>, ChunkInfo)> {
    let compressed = zstd::bulk::compress(plain, 3).map_err(Error::Compress)?;
    let stored = match sealing {
        None => compressed,
        Some(s) => {
            let envelope = Envelope::fresh()?;
            let mut out = Vec::with_capacity(ENVELOPE_LEN + compressed.len() + 16);
            out.extend_from_slice(envelope.as_bytes());
            out.extend_from_slice(&compressed);
            let tag = s
                .key
                .seal_in_place(&envelope, &s.aad(index), &mut out[ENVELOPE_LEN..])?;
            out.extend_from_slice(&tag);
            out
        }
    };
    let info = ChunkInfo {
        index,
        stored_bytes: stored.len() as u64,
        plain_bytes: plain.len() as u64,
        sha256: hex::encode(Sha256::digest(&stored)),
        // A hash of the dump text in a manifest anyone may read would confirm a guess of
        // it: a sealed chunk has none, its tag checks it instead.
        plain_sha256: if sealing.is_some() {
            String::new()
        } else {
            hex::encode(Sha256::digest(plain))
        },
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

/// Verifies, decrypts (with `sealing`) and decompresses a stored chunk against its
/// [`ChunkInfo`].
///
/// # Errors
/// [`Error::Corrupt`] on a checksum, tag or length mismatch, or a manifest that claims
/// more than [`MAX_CHUNK_PLAIN_BYTES`].
pub fn open_chunk(
    stored: &[u8],
    info: &ChunkInfo,
    sealing: Option<&ChunkSealing<'_>>,
) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::corrupt_in("snapshot chunk", detail);
    if info.plain_bytes > MAX_CHUNK_PLAIN_BYTES {
        return Err(bad(format!(
            "chunk {} claims {} bytes of dump text, more than any chunk holds ({MAX_CHUNK_PLAIN_BYTES})",
            info.index, info.plain_bytes
        )));
    }
    if hex::encode(Sha256::digest(stored)) != info.sha256 {
        return Err(bad(format!("chunk {} fails its sha256", info.index)));
    }
    let mut opened;
    let compressed = match sealing {
        None => stored,
        Some(s) => {
            if stored.len() < ENVELOPE_LEN {
                return Err(bad(format!(
                    "chunk {} is too short to be sealed",
                    info.index
                )));
            }
            let (envelope, sealed) = stored.split_at(ENVELOPE_LEN);
            let envelope = Envelope::from_bytes(envelope, "snapshot chunk")?;
            opened = sealed.to_vec();
            &*s.key
                .open_in_place(&envelope, &s.aad(info.index), &mut opened, "snapshot chunk")?
        }
    };
    let plain = zstd::bulk::decompress(compressed, info.plain_bytes as usize)
        .map_err(|e| bad(format!("chunk {} does not decompress: {e}", info.index)))?;
    if plain.len() as u64 != info.plain_bytes
        || (sealing.is_none() && hex::encode(Sha256::digest(&plain)) != info.plain_sha256)
    {
        return Err(bad(format!(
            "chunk {} decompresses to other bytes",
            info.index
        )));
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
        let (stored, mut info) = seal_chunk(1, &text, None).unwrap();
        info.plain_bytes = u64::MAX / 2;
        let err = open_chunk(&stored, &info, None).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
    }

    #[test]
    fn a_sealed_chunk_opens_only_in_its_place_and_a_signed_manifest_only_unaltered() {
        use crate::crypto::EpochKey;
        let stream = StreamId::new("db").unwrap();
        let key = EpochKey::generate(&stream, "main", 1).unwrap();
        let text = b"INSERT INTO t VALUES ('marker-42');\n".repeat(50);
        let here = ChunkSealing {
            key: &key,
            snapshot: "0000000000001",
        };
        let (stored, info) = seal_chunk(2, &text, Some(&here)).unwrap();
        assert!(!stored.windows(9).any(|w| w == b"marker-42"));
        assert_eq!(open_chunk(&stored, &info, Some(&here)).unwrap(), text);
        let elsewhere = ChunkSealing {
            key: &key,
            snapshot: "0000000000002",
        };
        assert!(open_chunk(&stored, &info, Some(&elsewhere)).is_err());
        let mut moved = info.clone();
        moved.index = 3;
        assert!(open_chunk(&stored, &moved, Some(&here)).is_err());
        assert!(
            open_chunk(&stored, &info, None).is_err(),
            "a sealed chunk read as plain"
        );

        let mut m = SnapshotManifest::from_json(
            br#"{"stream":"db","id":"0000000000001","position":"b.000001:4","taken_at_ms":1,
            "kind":"mysql","replica":"r:1","dump_tool":"d","chunks":[],"tables":[]}"#,
        )
        .unwrap();
        m.chunks.push(info);
        assert!(m.check_mac(&key).is_err(), "an unsigned manifest passes");
        m.sign(&key).unwrap();
        let back = SnapshotManifest::from_json(&serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        back.check_mac(&key).unwrap();
        assert_eq!(back.key_ref().unwrap(), Some(key.key_ref()));
        let mut newer = back.clone();
        newer.id = "0000000000009".into();
        let err = newer.check_mac(&key).unwrap_err().to_string();
        assert!(err.contains("fails its MAC"), "{err}");
        let other = EpochKey::generate(&stream, "main", 1).unwrap();
        assert!(back.check_mac(&other).is_err());
        // A member this build does not know, signed by a newer one: still checked, and
        // covered (changing it fails the MAC).
        let mut newer_build: serde_json::Value = serde_json::to_value(&m).unwrap();
        newer_build["compression"] = "zstd-3".into();
        newer_build.as_object_mut().unwrap().remove("mac");
        let mac = key
            .mac(MANIFEST_MAC, &canonical_json(newer_build.clone()))
            .unwrap();
        newer_build["mac"] = mac.into();
        let read = SnapshotManifest::from_json(&serde_json::to_vec(&newer_build).unwrap()).unwrap();
        read.check_mac(&key).unwrap();
        newer_build["compression"] = "none".into();
        let read = SnapshotManifest::from_json(&serde_json::to_vec(&newer_build).unwrap()).unwrap();
        assert!(
            read.check_mac(&key).is_err(),
            "a changed unknown member passes"
        );
    }

    #[test]
    fn chunks_round_trip_and_detect_damage() {
        let text = b"INSERT INTO t VALUES (1),(2);\n".repeat(100);
        let (mut stored, info) = seal_chunk(1, &text, None).unwrap();
        assert_eq!(open_chunk(&stored, &info, None).unwrap(), text);
        stored[5] ^= 1;
        assert!(open_chunk(&stored, &info, None).is_err());
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
                    let _ = open_chunk(&bytes, info, None);
                }
            }
        }
    }
}

//! Snapshot chunks and manifests: accepted from agents, read back by restore and `ls`.
//!
//! Chunks are stored create-only after their sha256 (sent by the agent in the
//! `x-logferry-sha256` header) matched; the manifest is accepted only when every chunk it
//! lists is stored with the listed size, so a stored manifest means a complete snapshot.

use bytes::Bytes;
use futures::StreamExt;
use logferry_common::keys::{
    chunk_key, is_manifest_key, manifest_key, snapshot_prefix, snapshots_prefix,
};
use logferry_common::snapshot::{validate_id, SnapshotManifest};
use logferry_common::StreamId;
use sha2::{Digest, Sha256};

use crate::capsules::UploadKeys;
use crate::error::{Result, ShipperError};
use crate::read_ahead::read_ahead;
use crate::storage::{Store, Stored};

/// Header carrying the hex sha256 of an uploaded chunk.
pub const SHA256_HEADER: &str = "x-logferry-sha256";

/// Whether an upload was new or an identical re-send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly stored.
    Created,
    /// The same bytes were already stored.
    Duplicate,
}

/// Stores one chunk after checking its sha256.
///
/// # Errors
/// [`ShipperError::BadSnapshot`] for a bad id or checksum, [`ShipperError::Conflict`] when
/// other bytes are stored under the key, [`ShipperError::Store`].
pub async fn put_chunk(
    store: &Store,
    stream: &StreamId,
    id: &str,
    index: u32,
    sha256: Option<&str>,
    body: Bytes,
) -> Result<Accepted> {
    validate_id(id)?;
    let actual = hex::encode(Sha256::digest(&body));
    if sha256 != Some(actual.as_str()) {
        return Err(bad(format!(
            "chunk {index} of snapshot {id}: {SHA256_HEADER} is {sha256:?}, the body hashes to {actual}"
        )));
    }
    put_once(store, &chunk_key(stream, id, index), body).await
}

/// Stores a manifest once every chunk it lists is stored with its size, and the key it
/// names is admitted by `keys`.
///
/// # Errors
/// [`ShipperError::BadSnapshot`] for a malformed or incomplete manifest, as [`put_chunk`]
/// otherwise.
pub async fn put_manifest(
    store: &Store,
    keys: &UploadKeys,
    stream: &StreamId,
    id: &str,
    body: Bytes,
) -> Result<Accepted> {
    validate_id(id)?;
    let m = SnapshotManifest::from_json(&body)
        .map_err(|e| bad(format!("manifest of snapshot {id}: {e}")))?;
    if &m.stream != stream || m.id != id {
        return Err(bad(format!(
            "manifest names {}/{}, the URL {stream}/{id}",
            m.stream, m.id
        )));
    }
    let key = m
        .key_ref()
        .map_err(|e| bad(format!("manifest of snapshot {id}: {e}")))?;
    keys.admit(store, stream, key.as_ref(), &format!("snapshot {id}"))
        .await?;
    m.position()
        .map_err(|e| bad(format!("manifest of snapshot {id}: {e}")))?;
    let stored = store.list(&snapshot_prefix(stream, id)).await?;
    for c in &m.chunks {
        let key = chunk_key(stream, id, c.index);
        match stored.iter().find(|o| o.key == key) {
            Some(o) if o.size == c.stored_bytes => {}
            Some(o) => {
                return Err(bad(format!(
                    "chunk {} is stored with {} bytes, the manifest says {}",
                    c.index, o.size, c.stored_bytes
                )))
            }
            None => {
                return Err(bad(format!(
                    "chunk {} of snapshot {id} is not stored",
                    c.index
                )))
            }
        }
    }
    put_once(store, &manifest_key(stream, id), body).await
}

async fn put_once(store: &Store, key: &str, body: Bytes) -> Result<Accepted> {
    match store.put_new(key, body.clone()).await? {
        Stored::Created => Ok(Accepted::Created),
        Stored::AlreadyExists if store.get(key).await? == body => Ok(Accepted::Duplicate),
        Stored::AlreadyExists => Err(ShipperError::Conflict(format!(
            "{key} is already stored with other content"
        ))),
    }
}

/// The complete snapshots of `stream` (those with a manifest in its own place), oldest
/// first, as `ls` shows them: without checking who wrote them (see [`list_trusted`]).
///
/// # Errors
/// When the store fails.
pub async fn list(store: &Store, stream: &StreamId) -> Result<Vec<SnapshotManifest>> {
    let manifests = store
        .list(&snapshots_prefix(stream))
        .await?
        .into_iter()
        .filter(|obj| is_manifest_key(&obj.key));
    let mut read = Box::pin(read_ahead(
        manifests,
        store.read_ahead(),
        |obj| obj.size,
        |obj| async move {
            let bytes = store.get(&obj.key).await?;
            Ok::<_, ShipperError>((obj.key.clone(), SnapshotManifest::from_json(&bytes)))
        },
    ));
    let mut out = Vec::new();
    while let Some(m) = read.next().await {
        // One manifest that does not parse (written into the bucket by anyone) must not
        // stop every restore: it is skipped, and `verify` reports it.
        let (key, m) = match m.into_inner()? {
            (key, Ok(m)) => (key, m),
            (key, Err(e)) => {
                tracing::warn!(%key, error = %e, "skipping a manifest that does not parse");
                continue;
            }
        };
        // A manifest copied from another stream or snapshot (its MAC still holds) would
        // send a restore to that snapshot's chunks: only one in its own place is listed.
        if manifest_key(&m.stream, &m.id) == key {
            out.push(m);
        } else {
            tracing::warn!(%key, stream = %m.stream, id = %m.id, "skipping a manifest stored under another snapshot's key");
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The snapshots of `stream` that a key holder wrote (each manifest's MAC checked with the
/// store's keyring), oldest first: what a restore or a drill may use. The others, and
/// those whose key is not at hand, are skipped with a warning that says why (`verify`
/// reports them); a segment under a missing key still stops the restore, naming it.
///
/// # Errors
/// When the store fails.
pub async fn list_trusted(store: &Store, stream: &StreamId) -> Result<Vec<SnapshotManifest>> {
    let mut out = Vec::new();
    for m in list(store, stream).await? {
        let key = manifest_key(&m.stream, &m.id);
        match store.keyring().manifest_key(store, &key, &m).await {
            Ok(_) => out.push(m),
            Err(e @ (ShipperError::Corrupt { .. } | ShipperError::Key { .. })) => {
                tracing::warn!(%key, error = %e, "skipping a snapshot not known to be written by a key holder");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn bad(msg: String) -> ShipperError {
    ShipperError::BadSnapshot(msg)
}

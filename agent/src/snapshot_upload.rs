//! Uploads one snapshot as its data arrives: cut into chunks of `chunk_bytes`, each sealed
//! (zstd, sha256) off the runtime's threads and uploaded with retries, then the manifest
//! last, so a snapshot exists only once all of it is stored. Every source kind's snapshots
//! go through here: a MySQL dump's output, a Redis full resync's RDB.

use std::time::Duration;

use logferry_common::snapshot::{
    seal_chunk, snapshot_id, ChunkInfo, SnapshotContent, SnapshotManifest,
};
use logferry_common::{Position, StreamId};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::pipeline::ShutdownRx;

/// Dump text per chunk when the source's config does not say.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// How many times one chunk or manifest upload is tried again before the snapshot fails.
const UPLOAD_RETRIES: u32 = 8;

/// One snapshot being uploaded.
pub struct SnapshotUpload {
    client: ShipperClient,
    stream: StreamId,
    id: String,
    taken_at_ms: i64,
    chunk_bytes: usize,
    buf: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    shutdown: ShutdownRx,
}

impl SnapshotUpload {
    /// Starts the snapshot of `stream` taken at `taken_at_ms` (its id).
    pub fn new(
        client: &ShipperClient,
        stream: &StreamId,
        taken_at_ms: i64,
        chunk_bytes: usize,
        shutdown: ShutdownRx,
    ) -> Self {
        SnapshotUpload {
            client: client.clone(),
            stream: stream.clone(),
            id: snapshot_id(taken_at_ms),
            taken_at_ms,
            chunk_bytes: chunk_bytes.max(1),
            buf: Vec::with_capacity(chunk_bytes),
            chunks: Vec::new(),
            shutdown,
        }
    }

    /// The snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends the next bytes of the snapshot's data, uploading each chunk once full.
    ///
    /// # Errors
    /// [`AgentError::Snapshot`] when sealing fails or a shutdown interrupts; the upload's
    /// errors once its retries are spent.
    pub async fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        // Never more than `chunk_bytes` per chunk, however large a part: a reader refuses
        // chunks above `MAX_CHUNK_PLAIN_BYTES`.
        while !bytes.is_empty() {
            let room = self.chunk_bytes - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            if self.buf.len() >= self.chunk_bytes {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Uploads what is left as the last chunk, then the manifest naming every chunk.
    ///
    /// # Errors
    /// As [`Self::push`].
    pub async fn finish(
        mut self,
        position: &Position,
        content: SnapshotContent,
    ) -> Result<SnapshotManifest> {
        if !self.buf.is_empty() {
            self.flush().await?;
        }
        let manifest = SnapshotManifest {
            stream: self.stream.clone(),
            id: self.id.clone(),
            position: position.to_string(),
            taken_at_ms: self.taken_at_ms,
            chunks: std::mem::take(&mut self.chunks),
            content,
        };
        if *self.shutdown.borrow() {
            return Err(interrupted());
        }
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| AgentError::Snapshot(format!("encoding the manifest: {e}")))?;
        let (client, stream, id) = (&self.client, &self.stream, &self.id);
        upload_with_retry(&mut self.shutdown, || {
            client.put_manifest(stream, id, body.clone())
        })
        .await?;
        info!(id = %manifest.id, chunks = manifest.chunks.len(), bytes = manifest.plain_bytes(), "snapshot stored");
        Ok(manifest)
    }

    async fn flush(&mut self) -> Result<()> {
        let index = self.chunks.len() as u32 + 1;
        // Compressing and hashing a chunk is CPU work: off the runtime's threads. The
        // buffer comes back for the next chunk.
        let text = std::mem::take(&mut self.buf);
        let ((stored, info), mut text) =
            tokio::task::spawn_blocking(move || seal_chunk(index, &text).map(|s| (s, text)))
                .await
                .map_err(|e| {
                    AgentError::Snapshot(format!("sealing chunk {index} failed: {e}"))
                })??;
        let (client, stream, id) = (&self.client, &self.stream, &self.id);
        upload_with_retry(&mut self.shutdown, || {
            client.put_chunk(stream, id, index, stored.clone(), &info.sha256)
        })
        .await?;
        self.chunks.push(info);
        text.clear();
        self.buf = text;
        Ok(())
    }
}

/// The error of a snapshot stopped by a shutdown request.
pub fn interrupted() -> AgentError {
    AgentError::Snapshot("interrupted by a shutdown request".into())
}

async fn upload_with_retry<F, Fut>(shutdown: &mut ShutdownRx, mut put: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut tries = 0;
    loop {
        match put().await {
            Err(e) if e.is_retryable() && tries < UPLOAD_RETRIES => {
                tries += 1;
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "snapshot upload failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Err(interrupted()),
                }
            }
            other => return other,
        }
    }
}

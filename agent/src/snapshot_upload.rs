//! Uploads one snapshot as its data arrives: cut into chunks of `chunk_bytes`, each sealed
//! (zstd, AES-256-GCM under the client's epoch key, sha256) off the runtime's threads and
//! uploaded with retries, then the manifest last, so a snapshot exists only once all of it
//! is stored. One chunk is sealed and uploaded while the next fills, so the source (a dump,
//! a full sync's socket) is not held up by the round trip; at most two chunks are in memory. Every source kind's snapshots
//! go through here: a MySQL dump's output, a Redis full resync's RDB.

use std::time::Duration;

use logferry_common::snapshot::{
    seal_chunk, snapshot_id, ChunkInfo, ChunkSealing, SnapshotContent, SnapshotManifest,
};
use logferry_common::{Position, StreamId};
use tracing::{info, warn};

use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::pipeline::ShutdownRx;

/// Dump text per chunk when the source's config does not say.
pub const DEFAULT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// How long the uploads of one chunk or manifest may keep failing before the snapshot
/// fails: a shipper restarting or briefly away must not cost a whole dump (the replica
/// stays paused meanwhile, its IO thread still receiving).
pub const UPLOAD_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// How often a snapshot upload still failing says so.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(30);

/// A chunk being sealed and uploaded: its manifest entry and its buffer, once stored.
type ChunkTask = tokio::task::JoinHandle<Result<(ChunkInfo, Vec<u8>)>>;

/// One snapshot being uploaded.
pub struct SnapshotUpload {
    client: ShipperClient,
    stream: StreamId,
    id: String,
    taken_at_ms: i64,
    chunk_bytes: usize,
    buf: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    /// The chunk being sealed and uploaded; it hands back its buffer.
    in_flight: Option<ChunkTask>,
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
            in_flight: None,
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

    /// Uploads what is left as the last chunk, then the manifest naming every chunk
    /// (with its MAC under the epoch key, when encrypting).
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
        self.landed().await?;
        let mut manifest = SnapshotManifest {
            stream: self.stream.clone(),
            id: self.id.clone(),
            position: position.to_string(),
            taken_at_ms: self.taken_at_ms,
            chunks: std::mem::take(&mut self.chunks),
            content,
            key: None,
            mac: None,
            stored_form: Default::default(),
        };
        if let Some(enc) = self.client.encryption() {
            manifest.sign(enc.key())?;
        }
        if *self.shutdown.borrow() {
            return Err(interrupted());
        }
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| AgentError::Snapshot(format!("encoding the manifest: {e}")))?;
        let (client, stream, id) = (&self.client, &self.stream, &self.id);
        upload_with_retry(client, &mut self.shutdown, "manifest", || {
            client.put_manifest(stream, id, body.clone())
        })
        .await?;
        info!(id = %manifest.id, chunks = manifest.chunks.len(), bytes = manifest.plain_bytes(), "snapshot stored");
        Ok(manifest)
    }

    /// Waits for the chunk in flight, if any, and records it; its buffer serves the next.
    async fn landed(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(task) = self.in_flight.take() else {
            return Ok(None);
        };
        let (info, mut text) = task
            .await
            .map_err(|e| AgentError::Snapshot(format!("a chunk's upload task died: {e}")))??;
        self.chunks.push(info);
        let dumped: u64 = self.chunks.iter().map(|c| c.plain_bytes).sum();
        info!(id = %self.id, chunk = self.chunks.len(), dumped_bytes = dumped, "snapshot chunk stored");
        text.clear();
        Ok(Some(text))
    }

    /// Starts sealing and uploading the full buffer as the next chunk, once the one before
    /// it is stored.
    async fn flush(&mut self) -> Result<()> {
        let spare = self.landed().await?;
        let index = self.chunks.len() as u32 + 1;
        let next = spare.unwrap_or_else(|| Vec::with_capacity(self.chunk_bytes));
        let text = std::mem::replace(&mut self.buf, next);
        let (client, stream, id) = (self.client.clone(), self.stream.clone(), self.id.clone());
        let mut shutdown = self.shutdown.clone();
        self.in_flight = Some(tokio::spawn(async move {
            // Compressing and hashing a chunk is CPU work: off the runtime's threads.
            let key = client.encryption().map(|e| e.key().clone());
            let sealing_id = id.clone();
            let ((stored, info), text) = tokio::task::spawn_blocking(move || {
                let sealing = key.as_deref().map(|key| ChunkSealing {
                    key,
                    snapshot: &sealing_id,
                });
                seal_chunk(index, &text, sealing.as_ref()).map(|s| (s, text))
            })
            .await
            .map_err(|e| AgentError::Snapshot(format!("sealing chunk {index} failed: {e}")))??;
            if let Some(enc) = client.encryption() {
                let epoch = enc.key().epoch().to_owned();
                upload_with_retry(&client, &mut shutdown, "key capsule", || {
                    client.ensure_capsule(&stream, &epoch)
                })
                .await?;
            }
            upload_with_retry(&client, &mut shutdown, &format!("chunk {index}"), || {
                client.put_chunk(&stream, &id, index, stored.clone(), &info.sha256)
            })
            .await?;
            Ok((info, text))
        }));
        Ok(())
    }
}

impl Drop for SnapshotUpload {
    fn drop(&mut self) {
        // A snapshot given up on (an error, a shutdown) stops its chunk upload too.
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
    }
}

/// The error of a snapshot stopped by a shutdown request.
pub fn interrupted() -> AgentError {
    AgentError::Snapshot("interrupted by a shutdown request".into())
}

/// Runs `put` until it succeeds, retrying what can be retried with the client's backoff
/// for up to [`UPLOAD_PATIENCE`]; a shutdown ends the wait.
async fn upload_with_retry<F, Fut>(
    client: &ShipperClient,
    shutdown: &mut ShutdownRx,
    what: &str,
    mut put: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut backoff = client.backoff();
    let first_failure = tokio::time::Instant::now();
    let mut said = None::<tokio::time::Instant>;
    loop {
        match put().await {
            Err(e) if e.is_retryable() && first_failure.elapsed() < UPLOAD_PATIENCE => {
                let wait = backoff.next_delay();
                if said.is_none_or(|at| at.elapsed() >= STILL_FAILING_EVERY) {
                    warn!(error = %e, retry_in = ?wait, failing_for = ?first_failure.elapsed(), "uploading snapshot {what} failed; retrying until the shipper answers");
                    said = Some(tokio::time::Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Err(interrupted()),
                }
            }
            Ok(()) => {
                if said.is_some() {
                    info!(failed_for = ?first_failure.elapsed(), "snapshot {what} uploaded after retries");
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

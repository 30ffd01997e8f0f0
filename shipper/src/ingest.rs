//! Ingest of one uploaded segment: validate, admit against the chain, store create-only.
//!
//! Durability rule: success is returned only after the store holds the object (fsynced for
//! a local directory) and its trailer sha256 matched, which covers every stored byte (and,
//! with `server.verify_payload`, after the payload decompressed to its plaintext sha256).
//! An identical re-send succeeds without a write; a different segment at the same start, or
//! one overlapping the chain, is a conflict and never overwrites.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use logferry_common::keys::segment_key;
use logferry_common::wire::SegmentAck;
use logferry_common::{DecodeLimits, Segment};
use tracing::{info, warn};

use crate::catalog::{Admission, Catalog, SegmentRef};
use crate::error::{Result, ShipperError};
use crate::metrics::Metrics;
use crate::storage::{Store, Stored};

/// What the ingest path needs; shared by all requests.
#[derive(Debug)]
pub struct Ingest {
    /// The object store.
    pub store: Store,
    /// The chain index.
    pub catalog: Catalog,
    /// Counters.
    pub metrics: Metrics,
    /// Size limits for decoding uploads.
    pub limits: DecodeLimits,
    /// Whether to decompress each upload and check its plaintext sha256 too.
    pub verify_payload: bool,
}

impl Ingest {
    /// Validates and stores one encoded segment.
    ///
    /// # Errors
    /// [`ShipperError::Format`], [`ShipperError::Conflict`], [`ShipperError::Store`].
    pub async fn segment(self: &Arc<Self>, body: Bytes) -> Result<SegmentAck> {
        self.metrics.uploads.fetch_add(1, Ordering::Relaxed);
        let limits = self.limits;
        let verify_payload = self.verify_payload;
        let raw = body.clone();
        let seg = tokio::task::spawn_blocking(move || -> Result<Segment> {
            let seg = Segment::decode(raw, &limits)?;
            if verify_payload {
                seg.payload()?;
            }
            Ok(seg)
        })
        .await
        .map_err(|e| ShipperError::Internal(format!("the validation of an upload failed: {e}")))?
        .inspect_err(|_| {
            self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        })?;
        let m = &seg.header.meta;
        let (start_key, end_key) = (m.start.sort_key(), m.end.sort_key());
        let key = segment_key(&m.stream, &start_key, &end_key);
        let lock = self.catalog.stream(&m.stream);
        let mut chain = lock.lock().await;
        match chain.admit(&start_key, &end_key) {
            Admission::SameStart(existing) => self.compare(&existing, &key, &body).await,
            Admission::Overlap(other) => {
                self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(ShipperError::Conflict(format!(
                    "segment {} .. {} overlaps stored segment {}",
                    m.start, m.end, other.key
                )))
            }
            Admission::New { gap } => {
                let size = body.len() as u64;
                match self.store.put_new(&key, body.clone()).await {
                    Ok(Stored::Created) => {}
                    Ok(Stored::AlreadyExists) => {
                        let existing = SegmentRef {
                            key: key.clone(),
                            start_key,
                            end_key,
                            size,
                        };
                        return self.compare(&existing, &key, &body).await;
                    }
                    Err(e) => {
                        self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                if gap {
                    self.metrics.gaps.fetch_add(1, Ordering::Relaxed);
                    warn!(stream = %m.stream, start = %m.start, "stored a segment that does not follow its predecessor: the chain has a gap");
                }
                self.metrics.stored.fetch_add(1, Ordering::Relaxed);
                self.metrics.stored_bytes.fetch_add(size, Ordering::Relaxed);
                self.metrics.saw_event(m.stream.as_str(), m.last_event_ms);
                info!(%key, events = m.event_count, bytes = size, "stored segment");
                let seg_ref = SegmentRef {
                    key: key.clone(),
                    start_key,
                    end_key,
                    size,
                };
                chain.insert(seg_ref, Some(seg.header.clone()));
                Ok(SegmentAck {
                    key,
                    duplicate: false,
                })
            }
        }
    }

    /// Answers a segment whose start is already stored: identical bytes are acknowledged,
    /// anything else is a conflict.
    async fn compare(&self, existing: &SegmentRef, key: &str, body: &Bytes) -> Result<SegmentAck> {
        let stored = self.store.get(&existing.key).await.inspect_err(|_| {
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if existing.key == key && stored == *body {
            self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(SegmentAck {
                key: key.to_owned(),
                duplicate: true,
            });
        }
        self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
        Err(ShipperError::Conflict(format!(
            "a different segment is already stored at this start position: {}",
            existing.key
        )))
    }
}

//! The ship stage: uploads spooled segments oldest first, a few at a time, and advances the
//! checkpoint only on the shipper's acknowledgements, in spool order.
//!
//! Up to `shipper.uploads_in_flight` uploads run at once, so a catch-up through a link
//! with a long round trip is not one round trip per segment. Their results are taken in
//! the order the segments were spooled: a segment is acknowledged in the spool (the
//! checkpoint moved past it, its file deleted) only after every older one, so the
//! checkpoint never passes a segment the shipper has not stored. A segment that lands at
//! the shipper before an older one still in flight is stored ahead of it; the chain is
//! whole again when the older one lands.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use logferry_common::segment::{max_payload_for, DEFAULT_MAX_SEGMENT_BYTES};
use logferry_common::wire::Limits;
use logferry_common::{Position, Segment, SegmentMeta};
use logferry_config::AgentConfig;
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use super::spool_loop::on_spool;
use super::{wait_or_shutdown, Ended, ShutdownRx};
use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::exposure::Exposure;
use crate::metrics::Metrics;
use crate::resume::ResumePoint;
use crate::spool::{Spool, SpoolEntry};

/// Asks the shipper for its segment limit until it answers (uploads wait for it anyway),
/// and checks that `segment.max_bytes` fits in it.
async fn agree_limits(
    cfg: &AgentConfig,
    client: &ShipperClient,
    spool: &Arc<Spool>,
    limit: &AtomicU64,
    agreed: &AtomicBool,
    backoff: &mut Backoff,
    shutdown: &mut ShutdownRx,
) -> Result<bool> {
    let shipper = loop {
        match client.limits().await {
            Ok(l) => {
                break l.map_or(DEFAULT_MAX_SEGMENT_BYTES, |l| l.max_segment_bytes);
            }
            Err(e) if e.is_retryable() => {
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "cannot ask the shipper for its limits; segments stay in the spool");
                if wait_or_shutdown(wait, shutdown).await {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    };
    backoff.reset();
    let fits = max_payload_for(shipper) / 2;
    if cfg.segment.max_bytes > fits {
        return Err(AgentError::LimitMismatch {
            max_bytes: cfg.segment.max_bytes,
            shipper,
            fits,
        });
    }
    limit.store(shipper, Ordering::Relaxed);
    agreed.store(true, Ordering::Relaxed);
    let limits = Limits {
        max_segment_bytes: shipper,
    };
    if let Err(e) = on_spool(spool, move |s| s.save_limits(&limits)).await {
        warn!(error = %e, "could not remember the shipper's limits; the next start assumes the default until the shipper answers");
    }
    Ok(true)
}

/// How one segment's upload ended.
enum Upload {
    /// The shipper stored it (or already held the same bytes).
    Stored(SpoolEntry, Box<SegmentMeta>),
    /// The spooled file is damaged (and was moved to quarantine); nothing after it was
    /// sent.
    Damaged,
    /// Shutdown came while it was being retried.
    Shutdown,
}

/// What one upload needs of the ship loop.
#[derive(Clone, Copy)]
struct Uploader<'a> {
    client: &'a ShipperClient,
    spool: &'a Arc<Spool>,
    metrics: &'a Metrics,
}

impl Uploader<'_> {
    /// Sends the spooled segment `seg` (read from `entry`) until the shipper acknowledges
    /// it, retrying what a retry can cure with its own backoff; `None` stands for a damaged
    /// file, which ends the uploads here.
    async fn upload(
        self,
        entry: SpoolEntry,
        seg: Option<Segment>,
        mut backoff: Backoff,
        mut shutdown: ShutdownRx,
    ) -> Result<Upload> {
        let Some(seg) = seg else {
            return Ok(Upload::Damaged);
        };
        let meta = seg.header.meta.clone();
        let epoch = seg.header.key_ref().map(|r| r.epoch);
        let body = seg.into_bytes();
        let mut failures = 0u32;
        loop {
            // The capsule of the segment's key goes first: the shipper refuses a segment
            // whose key it does not hold.
            let sent = match &epoch {
                Some(epoch) => self.client.ensure_capsule(&meta.stream, epoch).await,
                None => Ok(()),
            };
            let sent = match sent {
                Ok(()) => self.client.upload(&entry.name, body.clone()).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(ack) => {
                    if failures > 0 {
                        info!(segment = %entry.name, "shipper reachable again");
                    }
                    debug!(key = %ack.key, duplicate = ack.duplicate, "segment acknowledged");
                    return Ok(Upload::Stored(entry, Box::new(meta)));
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    self.metrics.ship_retries.inc();
                    let wait = backoff.next_delay();
                    if failures == 1 || failures % 20 == 0 {
                        warn!(segment = %entry.name, error = %e, retry_in = ?wait, spool_bytes = self.spool.bytes(), "upload failed; segments stay in the spool");
                    }
                    if wait_or_shutdown(wait, &mut shutdown).await {
                        return Ok(Upload::Shutdown);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `entry` from the spool (checked against its trailer); `None` when it is
    /// damaged (then moved to quarantine).
    async fn read(self, entry: &SpoolEntry) -> Result<Option<Segment>> {
        let reading = entry.clone();
        match on_spool(self.spool, move |s| s.read(&reading)).await {
            Ok(seg) => Ok(Some(seg)),
            Err(e @ AgentError::SpoolCorrupt { .. }) => {
                self.metrics.spool_damaged.inc();
                error!(error = %e, "a spooled segment is damaged: it was moved to quarantine, and its range is read again from the source");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn ship_loop(
    cfg: &AgentConfig,
    client: &ShipperClient,
    spool: &Arc<Spool>,
    metrics: &Metrics,
    exposure: &Exposure,
    sealed: &Notify,
    acked: [&Notify; 2],
    durable: &watch::Sender<Option<Position>>,
    limit: &AtomicU64,
    agreed: &AtomicBool,
    mut backoff: Backoff,
    mut shutdown: ShutdownRx,
) -> Result<Ended> {
    if !agree_limits(
        cfg,
        client,
        spool,
        limit,
        agreed,
        &mut backoff,
        &mut shutdown,
    )
    .await?
    {
        return Ok(Ended::Shutdown);
    }
    let window = cfg.shipper.uploads_in_flight.max(1);
    let uploader = Uploader {
        client,
        spool,
        metrics,
    };
    let mut uploads = FuturesOrdered::new();
    // Listed and not yet sent, oldest first; the spool is listed again only when this is
    // empty and a segment was sealed since (a day's backlog is listed once, not per ack).
    let mut listed: VecDeque<SpoolEntry> = VecDeque::new();
    let mut list_again = true;
    // The newest spooled file handed to an upload: a new listing starts after it.
    let mut queued: Option<String> = None;
    // A damaged file was found: nothing after it is sent, the uploads before it finish.
    let mut damaged = false;
    loop {
        if listed.is_empty() && list_again && !damaged {
            list_again = false;
            let entries = on_spool(spool, |s| s.list()).await?;
            metrics.spool_segments.set(entries.len() as u64);
            metrics.spool_bytes.set(spool.bytes());
            listed.extend(
                entries
                    .into_iter()
                    .filter(|e| queued.as_ref().is_none_or(|q| e.name > *q)),
            );
        }
        // Read (and check) in spool order here, so that a damaged file stops the sending
        // of everything after it; only the sending runs concurrently.
        while uploads.len() < window && !damaged {
            let Some(entry) = listed.pop_front() else {
                break;
            };
            queued = Some(entry.name.clone());
            let seg = uploader.read(&entry).await?;
            damaged = seg.is_none();
            uploads.push_back(uploader.upload(entry, seg, backoff.clone(), shutdown.clone()));
        }
        let outcome = tokio::select! {
            // A finished upload first: shutdown does not throw away an acknowledgement.
            biased;
            Some(outcome) = uploads.next() => outcome?,
            _ = shutdown.changed() => return Ok(Ended::Shutdown),
            // A newly sealed segment can join the uploads while there is room for it.
            _ = sealed.notified(), if uploads.len() < window && !damaged => {
                list_again = true;
                continue;
            }
        };
        let (entry, meta) = match outcome {
            Upload::Stored(entry, meta) => (entry, meta),
            Upload::Damaged => return Ok(Ended::Damaged),
            Upload::Shutdown => return Ok(Ended::Shutdown),
        };
        crate::crash_point!("ship-after-upload-before-checkpoint");
        if !acknowledge(spool, metrics, &entry, &meta, &mut shutdown).await? {
            return Ok(Ended::Shutdown);
        }
        durable.send_replace(Some(meta.end.clone()));
        exposure.acknowledged(&meta.end);
        exposure.publish(metrics);
        metrics.segments_shipped.inc();
        metrics.bytes_shipped.inc_by(entry.len);
        metrics
            .last_acked_event_ms
            .store(meta.last_event_ms, Ordering::Relaxed);
        metrics
            .spool_segments
            .set((listed.len() + uploads.len()) as u64);
        metrics.spool_bytes.set(spool.bytes());
        for waiter in acked {
            waiter.notify_one();
        }
        if *shutdown.borrow() {
            return Ok(Ended::Shutdown);
        }
    }
}

/// Moves the checkpoint past the stored `entry` and deletes its file; `false` when
/// shutdown came while waiting for room on a full disk.
async fn acknowledge(
    spool: &Arc<Spool>,
    metrics: &Metrics,
    entry: &SpoolEntry,
    meta: &SegmentMeta,
    shutdown: &mut ShutdownRx,
) -> Result<bool> {
    loop {
        let (done, point) = (entry.clone(), ResumePoint::after(meta));
        match on_spool(spool, move |s| s.acknowledge(&done, &point)).await {
            Ok(()) => return Ok(true),
            // Even the checkpoint may not fit on a full disk: the upload is stored, so wait
            // for room rather than stop (a restart would send it again).
            Err(e) if e.is_spool_full() => {
                metrics.spool_disk_full.set(1);
                warn!(error = %e, "the spool's disk is full: cannot record the acknowledgement yet");
                if wait_or_shutdown(Duration::from_secs(1), shutdown).await {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

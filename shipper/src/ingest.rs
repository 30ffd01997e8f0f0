//! Ingest of one uploaded segment: validate, admit against the chain, store create-only.
//!
//! Durability rule: success is returned only after the store holds the object (fsynced for
//! a local directory) and its trailer sha256 matched, which covers every stored byte (and,
//! with `server.verify_payload`, after the payload decompressed to its plaintext sha256).
//! An identical re-send succeeds without a write; a different segment at the same start, or
//! one overlapping the chain, is a conflict and never overwrites.

use std::sync::Arc;

use bytes::Bytes;
use logferry_common::keys::segment_key;
use logferry_common::wire::SegmentAck;
use logferry_common::{DecodeLimits, Segment};
use tracing::{debug, info, warn};

use crate::alerts::Alerts;
use crate::capsules::UploadKeys;
use crate::catalog::{Admission, Catalog, SegmentRef};
use crate::error::{Result, ShipperError};
use crate::metrics::Metrics;
use crate::storage::{Store, Stored};
use crate::time_arg::now_ms;
use crate::watch::status::StreamStatus;
use crate::watch::Watch;

/// What the ingest path needs; shared by all requests.
#[derive(Debug)]
pub struct Ingest {
    /// The object store.
    pub store: Store,
    /// The chain index.
    pub catalog: Catalog,
    /// Counters.
    pub metrics: Metrics,
    /// Every stream's reports and stored facts, for its status.
    pub watch: Watch,
    /// The alert rules, their book and receivers.
    pub alerts: Alerts,
    /// Size limits for decoding uploads.
    pub limits: DecodeLimits,
    /// Whether to decompress each upload in clear and check its plaintext sha256 too (an
    /// encrypted one cannot be: the shipper holds no key).
    pub verify_payload: bool,
    /// Whether uploads in clear are accepted, and which capsules are stored.
    pub keys: UploadKeys,
}

impl Ingest {
    /// Every stream's status at `now_ms`, with the alerts that fire on it: what
    /// `/v1/status`, `status` and `/metrics` show.
    pub async fn statuses(&self, now_ms: i64) -> Vec<StreamStatus> {
        let mut statuses = self.watch.statuses(now_ms);
        self.alerts.annotate(&mut statuses).await;
        statuses
    }

    /// Validates and stores one encoded segment.
    ///
    /// # Errors
    /// [`ShipperError::Format`], [`ShipperError::Conflict`], [`ShipperError::Store`].
    pub async fn segment(self: &Arc<Self>, body: Bytes) -> Result<SegmentAck> {
        self.metrics.uploads.inc();
        let limits = self.limits;
        let verify_payload = self.verify_payload;
        let raw = body.clone();
        let seg = tokio::task::spawn_blocking(move || -> Result<Segment> {
            let seg = Segment::decode(raw, &limits)?;
            if verify_payload && seg.header.key_ref().is_none() {
                seg.payload()?;
            }
            Ok(seg)
        })
        .await
        .map_err(|e| ShipperError::Internal(format!("the validation of an upload failed: {e}")))?
        .inspect_err(|_| {
            self.metrics.rejected.inc();
        })?;
        let m = &seg.header.meta;
        let (start_key, end_key) = (m.start.sort_key(), m.end.sort_key());
        let key = segment_key(&m.stream, &start_key, &end_key);
        self.keys
            .admit(&self.store, &m.stream, seg.header.key_ref().as_ref(), &key)
            .await
            .inspect_err(|_| {
                self.metrics.rejected.inc();
            })?;
        let lock = self.catalog.stream(&m.stream);
        let mut chain = lock.lock().await;
        match chain.admit(&start_key, &end_key) {
            Admission::SameStart(existing) => self.compare(&existing, &key, &body).await,
            Admission::Overlap(other) => {
                self.metrics.conflicts.inc();
                Err(ShipperError::Conflict(format!(
                    "segment {} .. {} overlaps stored segment {}",
                    m.start, m.end, other.key
                )))
            }
            Admission::New { gap } => {
                // Only a stored neighbour is judged: with uploads in flight, the segment
                // before this one may not have landed yet (`verify` judges the whole chain).
                let before = match gap {
                    false => chain.header_before(&self.store, &start_key).await?,
                    true => None,
                };
                if let Some(why) = before.as_ref().and_then(|b| m.may_follow(&b.meta)) {
                    let why = format!(
                        "stream {}: segment {} .. {} may not follow the stored one before it: {why}",
                        m.stream, m.start, m.end
                    );
                    self.metrics.conflicts.inc();
                    warn!(stream = %m.stream, start = %m.start, origin = %m.lineage.origin, "refused a segment of another server: {why}");
                    return Err(ShipperError::Conflict(why));
                }
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
                        self.metrics.store_errors.inc();
                        return Err(e);
                    }
                }
                self.metrics.stored.inc();
                self.metrics.stored_bytes.inc_by(size);
                self.watch.stored_commit(&m.stream, m.last_event_ms);
                self.metrics
                    .stored_segment(m.stream.as_str(), m.first_event_ms, now_ms());
                info!(%key, events = m.event_count, bytes = size, "stored segment");
                let seg_ref = SegmentRef {
                    key: key.clone(),
                    start_key,
                    end_key,
                    size,
                };
                chain.insert(seg_ref, Some(seg.header.clone()));
                if m.lineage.forks_at.is_some() {
                    self.record_fork(m).await;
                }
                self.watch.set_breaks(&m.stream, chain.breaks());
                if gap {
                    // Uploads in flight may land out of order: the older one closes this.
                    debug!(stream = %m.stream, start = %m.start, breaks = chain.breaks(), "stored a segment ahead of its predecessor");
                }
                Ok(SegmentAck {
                    key,
                    duplicate: false,
                })
            }
        }
    }

    /// Records a fork (the segment starts a leg after one): the stream's status and the
    /// `fork` alert read these records; the segment itself is the proof. A record that
    /// cannot be written is logged, not fatal: the segment is stored.
    async fn record_fork(&self, m: &logferry_common::SegmentMeta) {
        let leg = m.events_start().leg();
        let record = serde_json::json!({
            "stream": m.stream.as_str(),
            "leg": leg,
            "server": m.lineage.origin,
            "forks_at": m.lineage.forks_at.as_ref().map(ToString::to_string),
            "continues_at": m.start.to_string(),
        });
        let key = logferry_common::keys::fork_key(&m.stream, now_ms(), leg);
        warn!(stream = %m.stream, %key, forks_at = ?record["forks_at"], continues_at = %m.start, server = %m.lineage.origin, "the stream FORKED: a standby that missed stored transactions continues it; the old branch's transactions after the fork point are skipped by restores (export --branch {leg} writes those only the old server had)");
        let body = bytes::Bytes::from(record.to_string());
        if let Err(e) = self.store.put_new(&key, body).await {
            warn!(%key, error = %e, "the fork record could not be stored");
        }
    }

    /// Answers a segment whose start is already stored: identical bytes are acknowledged,
    /// anything else is a conflict.
    async fn compare(&self, existing: &SegmentRef, key: &str, body: &Bytes) -> Result<SegmentAck> {
        let stored = self.store.get(&existing.key).await.inspect_err(|_| {
            self.metrics.store_errors.inc();
        })?;
        if existing.key == key && stored == *body {
            self.metrics.duplicates.inc();
            return Ok(SegmentAck {
                key: key.to_owned(),
                duplicate: true,
            });
        }
        self.metrics.conflicts.inc();
        Err(ShipperError::Conflict(format!(
            "a different segment is already stored at this start position: {}",
            existing.key
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ingest, segment as encoded, segment_from};
    use logferry_common::segment::Lineage;
    use logferry_common::{BinlogPos, Position};

    fn segment(start: u64, end: u64) -> Bytes {
        encoded(start, end, &start.to_le_bytes())
    }

    fn breaks(ing: &Ingest) -> usize {
        ing.watch.statuses(0)[0].chain_breaks
    }

    #[tokio::test]
    async fn uploads_landing_out_of_order_leave_no_break_once_all_are_in() {
        let ing = ingest();
        ing.segment(segment(4, 10)).await.unwrap();
        ing.segment(segment(20, 30)).await.unwrap();
        assert_eq!(breaks(&ing), 1, "10..20 is still in flight");
        ing.segment(segment(10, 20)).await.unwrap();
        assert_eq!(breaks(&ing), 0);
        let metrics = ing.metrics.render(&ing.watch.statuses(0));
        assert!(
            metrics.contains("logferry_shipper_chain_breaks{stream=\"orders\"} 0.0"),
            "{metrics}"
        );
        let stored = ing.store.list("streams/orders/segments").await.unwrap();
        assert_eq!(stored.len(), 3);
    }

    #[tokio::test]
    async fn concurrent_uploads_of_one_stream_all_land_once() {
        let ing = ingest();
        let bounds: Vec<(u64, u64)> = (0..16u64).map(|i| (4 + i * 10, 14 + i * 10)).collect();
        let uploads = bounds.iter().rev().map(|&(a, b)| {
            let ing = ing.clone();
            tokio::spawn(async move { ing.segment(segment(a, b)).await })
        });
        for up in uploads.collect::<Vec<_>>() {
            let ack = up.await.unwrap().unwrap();
            assert!(!ack.duplicate);
        }
        // Sent again (an agent restarted before its acknowledgements were recorded).
        for &(a, b) in &bounds {
            assert!(ing.segment(segment(a, b)).await.unwrap().duplicate);
        }
        assert_eq!(breaks(&ing), 0);
        assert_eq!(ing.metrics.stored.get(), 16);
        assert_eq!(ing.metrics.duplicates.get(), 16);
    }

    #[tokio::test]
    async fn an_invalid_upload_is_counted_and_names_the_problem() {
        let ing = ingest();
        let mut body = segment(4, 10).to_vec();
        let at = body.len() / 2;
        body[at] ^= 0xff;
        let e = ing.segment(Bytes::from(body)).await.unwrap_err();
        assert!(matches!(e, ShipperError::Format(_)), "{e}");
        assert_eq!(ing.metrics.rejected.get(), 1);
        assert!(ing.store.list("streams").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_segment_of_another_server_is_refused_unless_it_starts_a_new_leg() {
        let ing = ingest();
        let from = |origin: &str| Lineage {
            origin: origin.into(),
            ..Lineage::default()
        };
        ing.segment(segment_from(4, 10, b"a", from("server_id=1 host=a:3306")))
            .await
            .unwrap();
        let e = ing
            .segment(segment_from(10, 20, b"b", from("server_id=1 host=b:3306")))
            .await
            .unwrap_err();
        assert!(matches!(e, ShipperError::Conflict(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("host=a:3306") && msg.contains("host=b:3306") && msg.contains("orders"),
            "{msg}"
        );
        ing.segment(segment_from(10, 20, b"a2", from("server_id=1 host=a:3306")))
            .await
            .unwrap();
        let leg = |o| Position::Mysql(BinlogPos::new("mysql-bin.000001", o).unwrap().on_leg(1));
        let mut meta = Segment::decode(encoded(20, 30, b"c"), &DecodeLimits::default())
            .unwrap()
            .header
            .meta;
        meta.end = leg(40);
        meta.lineage = Lineage {
            leg_start: Some(leg(15)),
            ..from("server_id=2 host=b:3306")
        };
        let body = Segment::seal(meta, b"c", logferry_common::Compression::None)
            .unwrap()
            .into_bytes();
        ing.segment(body).await.unwrap();
        assert_eq!(ing.metrics.conflicts.get(), 1);
    }
}

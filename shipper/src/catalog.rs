//! The catalog: an in-memory index of stored segments per stream, rebuilt from one listing
//! of the object store at boot (the store stays the source of truth; object keys carry the
//! sort keys of both positions, so the chain is checkable from keys alone).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use logferry_common::keys::{parse_segment_key, stream_of_key};
use logferry_common::{SegmentHeader, StreamId};
use tokio::sync::Mutex as AsyncMutex;
use tracing::warn;

use logferry_common::Segment;

use crate::error::{Result, ShipperError};
use crate::read_ahead::read_ahead;
use crate::storage::Store;

/// Bytes read to decode a segment header without fetching the whole object (a header is at
/// most 64 KiB plus the fixed prefix).
pub const HEADER_PROBE_BYTES: u64 = 64 * 1024 + 64;

/// Reads the header of a stored segment with one ranged read.
///
/// # Errors
/// When the store fails or the header is corrupt.
pub async fn read_header(store: &Store, seg: &SegmentRef) -> Result<SegmentHeader> {
    let prefix = store
        .get_prefix(&seg.key, seg.size, HEADER_PROBE_BYTES)
        .await?;
    Segment::peek_header(&prefix).map_err(|source| ShipperError::Corrupt {
        key: seg.key.clone(),
        source,
    })
}

/// Every stored segment under `prefix` with its header, in key (= chain) order.
///
/// # Errors
/// When the listing or a header read fails.
pub async fn stored_segments(
    store: &Store,
    prefix: &str,
) -> Result<Vec<(SegmentRef, SegmentHeader)>> {
    let segs = store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|obj| segment_ref(&obj.key, obj.size));
    let mut headers = Box::pin(read_ahead(
        segs,
        store.read_ahead(),
        |_| HEADER_PROBE_BYTES,
        |seg| async move {
            let header = read_header(store, &seg).await?;
            Ok::<_, ShipperError>((seg, header))
        },
    ));
    let mut out = Vec::new();
    while let Some(read) = headers.next().await {
        out.push(read.into_inner()?);
    }
    Ok(out)
}

/// A stored segment as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    /// Object key.
    pub key: String,
    /// Sort key of the start position.
    pub start_key: String,
    /// Sort key of the end position.
    pub end_key: String,
    /// Size in bytes.
    pub size: u64,
}

/// How a new segment relates to a stream's stored chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It extends or fills the chain; `gap` says whether it does not start where the
    /// previous segment ends.
    New {
        /// The new segment does not follow its predecessor directly.
        gap: bool,
    },
    /// A segment with the same start is stored: same bytes = idempotent, else conflict.
    SameStart(SegmentRef),
    /// It overlaps a stored segment (conflict).
    Overlap(SegmentRef),
}

/// One stream's segments, ordered by start.
#[derive(Debug, Default)]
pub struct StreamCatalog {
    segments: BTreeMap<String, SegmentRef>,
    first_header: Option<SegmentHeader>,
    last_header: Option<SegmentHeader>,
    /// Neighbouring stored segments where one does not end where the next starts.
    breaks: usize,
}

impl StreamCatalog {
    /// Decides how a segment spanning `start_key..end_key` may be admitted.
    pub fn admit(&self, start_key: &str, end_key: &str) -> Admission {
        if let Some(same) = self.segments.get(start_key) {
            return Admission::SameStart(same.clone());
        }
        let prev = self
            .segments
            .range(..start_key.to_owned())
            .next_back()
            .map(|(_, s)| s);
        if let Some(p) = prev.filter(|p| p.end_key.as_str() > start_key) {
            return Admission::Overlap(p.clone());
        }
        let next = self
            .segments
            .range(start_key.to_owned()..)
            .next()
            .map(|(_, s)| s);
        if let Some(n) = next.filter(|n| end_key > n.start_key.as_str()) {
            return Admission::Overlap(n.clone());
        }
        Admission::New {
            gap: prev.is_some_and(|p| p.end_key != start_key),
        }
    }

    /// Records a stored segment (with its header when known).
    pub fn insert(&mut self, seg: SegmentRef, header: Option<SegmentHeader>) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = seg.start_key.clone();
        let prev = self
            .segments
            .range(..start.clone())
            .next_back()
            .map(|(_, p)| p);
        let next = self
            .segments
            .range((Excluded(start.clone()), Unbounded))
            .next()
            .map(|(_, n)| n);
        let broken = |a: &SegmentRef, b: &SegmentRef| usize::from(a.end_key != b.start_key);
        // The breaks around what is there now (an entry at the same start is replaced).
        let before = match (self.segments.get(&start), prev, next) {
            (Some(old), p, n) => p.map_or(0, |p| broken(p, old)) + n.map_or(0, |n| broken(old, n)),
            (None, Some(p), Some(n)) => broken(p, n),
            (None, _, _) => 0,
        };
        let after = prev.map_or(0, |p| broken(p, &seg)) + next.map_or(0, |n| broken(&seg, n));
        self.breaks = (self.breaks + after).saturating_sub(before);
        let is_first = self
            .segments
            .keys()
            .next()
            .is_none_or(|first| seg.start_key < *first);
        let is_last = self
            .segments
            .keys()
            .next_back()
            .is_none_or(|last| seg.start_key > *last);
        if is_first {
            self.first_header.clone_from(&header);
        }
        if is_last {
            self.last_header = header;
        }
        self.segments.insert(seg.start_key.clone(), seg);
    }

    /// Places where the stored chain is broken (a segment that does not end where the next
    /// stored one starts). Uploads in flight can land out of order, so a break may be one
    /// that the next upload closes; one that stays is a gap `verify` reports.
    pub fn breaks(&self) -> usize {
        self.breaks
    }

    /// Number of stored segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Stored segments in chain order.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentRef> {
        self.segments.values()
    }

    /// The header of the segment at `end` of the chain (`None` for an empty chain), read
    /// from the store the first time and cached: `GET /v1/streams/<s>` is polled often.
    ///
    /// # Errors
    /// When the store fails or the header is corrupt.
    pub async fn end_header(
        &mut self,
        store: &Store,
        end: ChainEnd,
    ) -> Result<Option<SegmentHeader>> {
        let (seg, cached) = match end {
            ChainEnd::First => (self.segments.values().next(), &mut self.first_header),
            ChainEnd::Last => (self.segments.values().next_back(), &mut self.last_header),
        };
        let Some(seg) = seg else {
            return Ok(None);
        };
        if let Some(h) = cached {
            return Ok(Some(h.clone()));
        }
        let h = read_header(store, seg).await?;
        *cached = Some(h.clone());
        Ok(Some(h))
    }
}

impl StreamCatalog {
    /// The last `n` stored segments, newest first.
    pub fn last_segments(&self, n: usize) -> Vec<SegmentRef> {
        self.segments.values().rev().take(n).cloned().collect()
    }

    /// The header of the stored segment just before `start_key` (the one a new segment
    /// follows): the cached last header when that is the one (uploads in order), else read
    /// from the store.
    ///
    /// # Errors
    /// When the store fails or the header is corrupt.
    pub async fn header_before(
        &mut self,
        store: &Store,
        start_key: &str,
    ) -> Result<Option<SegmentHeader>> {
        let Some(prev) = self
            .segments
            .range(..start_key.to_owned())
            .next_back()
            .map(|(_, s)| s.clone())
        else {
            return Ok(None);
        };
        let is_last = self
            .segments
            .keys()
            .next_back()
            .is_some_and(|k| *k == prev.start_key);
        if is_last {
            return self.end_header(store, ChainEnd::Last).await;
        }
        read_header(store, &prev).await.map(Some)
    }
}

/// Which end of a chain [`StreamCatalog::end_header`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEnd {
    /// The segment with the lowest start.
    First,
    /// The segment with the highest start.
    Last,
}

/// All streams' catalogs; each stream has its own lock so uploads of different streams do
/// not wait for each other.
#[derive(Debug, Default)]
pub struct Catalog {
    streams: Mutex<HashMap<StreamId, Arc<AsyncMutex<StreamCatalog>>>>,
}

impl Catalog {
    /// Rebuilds the catalog from one listing of `store`.
    ///
    /// # Errors
    /// When the listing fails.
    pub async fn load(store: &Store) -> Result<Self> {
        let catalog = Catalog::default();
        for obj in store.list("streams").await? {
            let Some(seg) = segment_ref(&obj.key, obj.size) else {
                continue;
            };
            let Some(stream) = stream_of_key(&obj.key).and_then(|s| StreamId::new(s).ok()) else {
                warn!(key = %obj.key, "ignoring an object outside the key grammar");
                continue;
            };
            catalog.stream(&stream).lock().await.insert(seg, None);
        }
        Ok(catalog)
    }

    /// The catalog of `stream`, created empty if unknown.
    pub fn stream(&self, stream: &StreamId) -> Arc<AsyncMutex<StreamCatalog>> {
        let mut map = match self.streams.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(stream.clone()).or_default().clone()
    }

    /// Known stream names, sorted.
    pub fn stream_names(&self) -> Vec<StreamId> {
        let map = match self.streams.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut names: Vec<_> = map.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Whether a segment's header belongs under `key`: its stream and positions spell that
/// key. The one placement rule of `verify` and restore, so that an authentic segment
/// copied into another stream's chain or to another place is never replayed there.
///
/// # Errors
/// What the header says instead.
pub fn check_placed(key: &str, header: &logferry_common::SegmentHeader) -> Result<(), String> {
    let m = &header.meta;
    let expected =
        logferry_common::keys::segment_key(&m.stream, &m.start.sort_key(), &m.end.sort_key());
    if expected == key {
        Ok(())
    } else {
        Err(format!(
            "header says stream {} {} .. {}, the key says otherwise",
            m.stream, m.start, m.end
        ))
    }
}

/// Parses a segment object key into a [`SegmentRef`]; `None` for other objects.
pub fn segment_ref(key: &str, size: u64) -> Option<SegmentRef> {
    let (start_key, end_key) = parse_segment_key(key)?;
    Some(SegmentRef {
        key: key.to_owned(),
        start_key,
        end_key,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: &str) -> SegmentRef {
        SegmentRef {
            key: format!("streams/s/segments/{a}-{b}.lfs"),
            start_key: a.into(),
            end_key: b.into(),
            size: 1,
        }
    }

    #[test]
    fn admission_rules() {
        let mut c = StreamCatalog::default();
        assert_eq!(c.admit("10", "20"), Admission::New { gap: false });
        c.insert(r("10", "20"), None);
        c.insert(r("20", "30"), None);
        assert_eq!(c.admit("30", "40"), Admission::New { gap: false });
        assert_eq!(c.admit("35", "40"), Admission::New { gap: true });
        assert_eq!(c.admit("20", "30"), Admission::SameStart(r("20", "30")));
        assert_eq!(c.admit("25", "35"), Admission::Overlap(r("20", "30")));
        assert_eq!(c.admit("05", "15"), Admission::Overlap(r("10", "20")));
        assert_eq!(c.admit("00", "10"), Admission::New { gap: false });
    }

    fn header(start: u64) -> SegmentHeader {
        let meta = logferry_common::SegmentMeta {
            stream: logferry_common::StreamId::new("s").unwrap(),
            source: logferry_common::SourceKind::Mysql,
            start: logferry_common::Position::Mysql(
                logferry_common::BinlogPos::new("b.000001", start).unwrap(),
            ),
            end: logferry_common::Position::Mysql(
                logferry_common::BinlogPos::new("b.000001", start + 10).unwrap(),
            ),
            open_trx: None,
            first_event_ms: 0,
            last_event_ms: 0,
            event_count: 1,
            lineage: logferry_common::segment::Lineage::default(),
        };
        logferry_common::Segment::seal(meta, b"x", logferry_common::Compression::default())
            .unwrap()
            .header
    }

    #[test]
    fn first_and_last_headers_follow_the_ends_of_the_chain() {
        let mut c = StreamCatalog::default();
        c.insert(r("20", "30"), Some(header(20)));
        assert_eq!(c.first_header, Some(header(20)));
        c.insert(r("30", "40"), Some(header(30)));
        assert_eq!(c.first_header, Some(header(20)));
        assert_eq!(c.last_header, Some(header(30)));
        c.insert(r("10", "20"), None);
        assert_eq!(c.first_header, None, "a new first segment is read again");
        assert_eq!(c.last_header, Some(header(30)));
        assert_eq!(c.segment_count(), 3);
    }

    #[test]
    fn breaks_open_and_close_as_segments_land_out_of_order() {
        let mut c = StreamCatalog::default();
        c.insert(r("10", "20"), None);
        c.insert(r("40", "50"), None);
        assert_eq!(c.breaks(), 1);
        c.insert(r("30", "40"), None);
        assert_eq!(c.breaks(), 1, "20..30 is still missing");
        c.insert(r("20", "30"), None);
        assert_eq!(c.breaks(), 0, "the chain is whole again");
        c.insert(r("60", "70"), None);
        c.insert(r("00", "05"), None);
        assert_eq!(c.breaks(), 2, "before 10 and after 50");
        c.insert(r("60", "70"), None);
        assert_eq!(c.breaks(), 2, "the same segment again changes nothing");
    }

    #[test]
    fn keys_parse() {
        let s = segment_ref("streams/db1/segments/0001_04-0001_90.lfs", 5).unwrap();
        assert_eq!(
            (s.start_key.as_str(), s.end_key.as_str()),
            ("0001_04", "0001_90")
        );
        assert!(segment_ref("streams/db1/other/x.json", 1).is_none());
    }
}

//! What the unit tests of ingest and the API share: an ingest over an in-memory store and
//! sealed segments of one MySQL stream.

use std::sync::Arc;

use bytes::Bytes;
use logferry_common::{
    BinlogPos, Compression, DecodeLimits, Position, Segment, SegmentMeta, SourceKind, StreamId,
};

use crate::catalog::Catalog;
use crate::ingest::Ingest;
use crate::storage::Store;

/// An ingest over an empty in-memory store, accepting segments up to 1 MiB and checking
/// their payloads.
pub(crate) fn ingest() -> Arc<Ingest> {
    let store = Store::in_memory();
    let metrics = crate::metrics::Metrics::new();
    let alerts =
        crate::alerts::Alerts::new(Default::default(), store.clone(), metrics.alerts.clone())
            .expect("an HTTP client");
    Arc::new(Ingest {
        store,
        alerts,
        catalog: Catalog::default(),
        metrics,
        watch: crate::watch::Watch::new(60.0, 0, 0),
        limits: DecodeLimits::for_segments(1 << 20),
        verify_payload: true,
        keys: crate::capsules::UploadKeys::new(true),
    })
}

/// An encoded segment of stream `orders` spanning `start..end` of the first binlog.
pub(crate) fn segment(start: u64, end: u64, payload: &[u8]) -> Bytes {
    segment_from(
        start,
        end,
        payload,
        logferry_common::segment::Lineage::default(),
    )
}

/// Like [`segment`], read from the server and on the leg `lineage` says.
pub(crate) fn segment_from(
    start: u64,
    end: u64,
    payload: &[u8],
    lineage: logferry_common::segment::Lineage,
) -> Bytes {
    let at = |o| Position::Mysql(BinlogPos::new("mysql-bin.000001", o).unwrap());
    let meta = SegmentMeta {
        stream: StreamId::new("orders").unwrap(),
        source: SourceKind::Mysql,
        start: at(start),
        end: at(end),
        open_trx: None,
        first_event_ms: 1,
        last_event_ms: 2,
        event_count: 1,
        lineage,
    };
    Segment::seal(meta, payload, Compression::default())
        .unwrap()
        .into_bytes()
}

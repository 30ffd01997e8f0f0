//! `ls`: what the store holds, per stream and per segment, read from the store alone.

use std::time::{Duration, UNIX_EPOCH};

use logferry_common::StreamId;

use crate::catalog::stored_segments;
use crate::error::Result;
use crate::storage::Store;

/// One stored segment's description.
#[derive(Debug, Clone)]
pub struct SegmentLine {
    /// Object key.
    pub key: String,
    /// Start position (text form).
    pub start: String,
    /// End position (text form).
    pub end: String,
    /// Commit time of the first event, ms.
    pub first_event_ms: i64,
    /// Commit time of the last event, ms.
    pub last_event_ms: i64,
    /// Events.
    pub events: u64,
    /// Stored bytes.
    pub bytes: u64,
}

/// Reads the headers of every segment of every stream (or of `only`), in chain order.
///
/// # Errors
/// When the store cannot be listed or a header cannot be read.
pub async fn segments(
    store: &Store,
    only: Option<&StreamId>,
) -> Result<Vec<(String, Vec<SegmentLine>)>> {
    let prefix = logferry_common::keys::stream_prefix(only);
    let mut out: Vec<(String, Vec<SegmentLine>)> = Vec::new();
    for (r, h) in stored_segments(store, &prefix).await? {
        let stream = h.meta.stream.to_string();
        let line = SegmentLine {
            key: r.key,
            start: h.meta.start.to_string(),
            end: h.meta.end.to_string(),
            first_event_ms: h.meta.first_event_ms,
            last_event_ms: h.meta.last_event_ms,
            events: h.meta.event_count,
            bytes: r.size,
        };
        match out.last_mut() {
            Some((s, lines)) if *s == stream => lines.push(line),
            _ => out.push((stream, vec![line])),
        }
    }
    Ok(out)
}

/// RFC 3339 rendering (UTC, seconds) of a ms timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

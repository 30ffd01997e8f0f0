//! `ls`: what the store holds, per stream, per segment and per snapshot, read from the
//! store alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use logferry_common::keys::{is_manifest_name, parse_snapshot_key, stream_of_key};
use logferry_common::snapshot::SnapshotManifest;
use logferry_common::StreamId;

use crate::catalog::stored_segments;
use crate::error::Result;
use crate::snapshots;
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
    /// The server its events were read from (empty in older segments).
    pub origin: String,
    /// On a new leg's first segment: where the new server's first event starts.
    pub leg_start: Option<String>,
    /// After a fork: where the previous leg's history goes on.
    pub forks_at: Option<String>,
}

impl SegmentLine {
    /// `ls`'s line for a segment that starts a new leg: the server switch, and the fork
    /// when there was one (a Redis fork starts a new history after a full resync instead);
    /// `None` for any other segment.
    pub fn leg_note(&self) -> Option<String> {
        let Some(leg_start) = self.leg_start.as_ref() else {
            return self.forks_at.as_ref().map(|at| format!(
                "new history at {} after a FORK: the promoted server held the stream only up to {at}; the stored commands after it are skipped by restores after the fork (export --branch N names the export that writes them)",
                self.start
            ));
        };
        Some(match &self.forks_at {
            Some(at) => format!(
                "new leg at {leg_start} on {} after a FORK: it continues the chain at {at}; the old branch's transactions from {at} to {} are skipped by restores (export --branch lists and writes those only the old server had)",
                self.origin, self.start
            ),
            None => format!(
                "new leg at {leg_start} on {}: continues the chain at {}",
                self.origin, self.start
            ),
        })
    }
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
            origin: h.meta.lineage.origin.clone(),
            leg_start: h.meta.lineage.leg_start.as_ref().map(ToString::to_string),
            forks_at: h.meta.lineage.forks_at.as_ref().map(ToString::to_string),
        };
        match out.last_mut() {
            Some((s, lines)) if *s == stream => lines.push(line),
            _ => out.push((stream, vec![line])),
        }
    }
    Ok(out)
}

/// One stored snapshot's description: complete (its manifest is stored, which the shipper
/// accepts only once every chunk is), or chunks without a manifest (a snapshot that did not
/// finish, or one still uploading).
#[derive(Debug, Clone)]
pub enum SnapshotLine {
    /// A snapshot a restore can start from.
    Complete(Box<SnapshotManifest>),
    /// Chunks no manifest names.
    Incomplete {
        /// The snapshot id.
        id: String,
        /// How many chunks are stored.
        chunks: usize,
        /// Their stored bytes.
        bytes: u64,
    },
}

impl SnapshotLine {
    /// The snapshot id (a 13-digit ms timestamp: lines sort by it).
    pub fn id(&self) -> &str {
        match self {
            SnapshotLine::Complete(m) => &m.id,
            SnapshotLine::Incomplete { id, .. } => id,
        }
    }
}

/// Every snapshot of every stream (or of `only`), oldest first per stream, complete or not.
///
/// # Errors
/// When the store cannot be listed or a manifest cannot be read.
pub async fn snapshots(
    store: &Store,
    only: Option<&StreamId>,
) -> Result<BTreeMap<String, Vec<SnapshotLine>>> {
    let prefix = logferry_common::keys::stream_prefix(only);
    let mut objects: BTreeMap<(String, String), (bool, usize, u64)> = BTreeMap::new();
    for obj in store.list(&prefix).await? {
        let Some(stream) = stream_of_key(&obj.key).and_then(|s| StreamId::new(s).ok()) else {
            continue;
        };
        let Some((id, name)) = parse_snapshot_key(&stream, &obj.key) else {
            continue;
        };
        let entry = objects
            .entry((stream.to_string(), id.to_owned()))
            .or_default();
        if is_manifest_name(name) {
            entry.0 = true;
        } else {
            entry.1 += 1;
            entry.2 += obj.size;
        }
    }
    let mut out: BTreeMap<String, Vec<SnapshotLine>> = BTreeMap::new();
    let streams: BTreeSet<String> = objects.keys().map(|(s, _)| s.clone()).collect();
    for stream in streams {
        let id = StreamId::new(&stream)?;
        let mut lines: Vec<SnapshotLine> = snapshots::list(store, &id)
            .await?
            .into_iter()
            .map(|m| SnapshotLine::Complete(Box::new(m)))
            .collect();
        lines.extend(
            objects
                .range((stream.clone(), String::new())..)
                .take_while(|((s, _), _)| *s == stream)
                .filter(|(_, (manifest, ..))| !manifest)
                .map(|((_, id), (_, chunks, bytes))| SnapshotLine::Incomplete {
                    id: id.clone(),
                    chunks: *chunks,
                    bytes: *bytes,
                }),
        );
        lines.sort_by(|a, b| a.id().cmp(b.id()));
        out.insert(stream, lines);
    }
    Ok(out)
}

/// RFC 3339 rendering (UTC, seconds) of a ms timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

//! What the store holds of a stream, as the status needs it: the chain's end and breaks,
//! the snapshots' times, the last drill. Read again every `watch.refresh_ms`, not on each
//! request, so that a page or a scrape costs no listing of the bucket.

use logferry_common::keys::{
    fork_time, forks_prefix, is_manifest_name, parse_snapshot_key, snapshots_prefix,
};
use logferry_common::StreamId;

use super::status::DrillSummary;
use crate::catalog::{Catalog, ChainEnd};
use crate::drill_record;
use crate::error::Result;
use crate::storage::Store;

/// The stored facts of one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredFacts {
    /// The source kind of its segments.
    pub kind: Option<String>,
    /// Commit time of the newest stored change, ms since the epoch.
    pub last_commit_ms: Option<i64>,
    /// Places where the chain is broken.
    pub chain_breaks: usize,
    /// When each complete snapshot was taken (its id), oldest first.
    pub snapshot_times: Vec<i64>,
    /// The newest trustworthy drill result.
    pub last_drill: Option<DrillSummary>,
    /// When each fork of the stream was recorded, oldest first.
    pub fork_times: Vec<i64>,
}

/// Reads the stored facts of `stream`.
///
/// # Errors
/// When the store cannot be listed or read.
pub async fn read(store: &Store, catalog: &Catalog, stream: &StreamId) -> Result<StoredFacts> {
    let (last, chain_breaks) = {
        let lock = catalog.stream(stream);
        let mut chain = lock.lock().await;
        (
            chain.end_header(store, ChainEnd::Last).await?,
            chain.breaks(),
        )
    };
    let mut snapshot_times: Vec<i64> = store
        .list(&snapshots_prefix(stream))
        .await?
        .iter()
        .filter_map(|o| parse_snapshot_key(stream, &o.key))
        .filter(|(_, name)| is_manifest_name(name))
        .filter_map(|(id, _)| id.parse::<i64>().ok())
        .collect();
    snapshot_times.sort_unstable();
    let mut fork_times: Vec<i64> = store
        .list(&forks_prefix(stream))
        .await?
        .iter()
        .filter_map(|o| fork_time(&o.key))
        .collect();
    fork_times.sort_unstable();
    let (newest, passed) = drill_record::latest(store, stream).await?;
    let last_drill = newest.map(|r| DrillSummary {
        finished_ms: r.finished_ms,
        passed: r.verdict.passed(),
        last_passed_ms: passed.map(|p| p.finished_ms),
    });
    Ok(StoredFacts {
        kind: last.as_ref().map(|h| h.meta.source.to_string()),
        last_commit_ms: last.map(|h| h.meta.last_event_ms),
        chain_breaks,
        snapshot_times,
        last_drill,
        fork_times,
    })
}

//! The restore drill (`verify --restore-drill`): proves from the store alone that a restore
//! works, into a scratch server.
//!
//! Every snapshot's manifest records the row count and `CHECKSUM TABLE` of each table at its
//! position. The drill loads the next-to-newest snapshot, replays the stored binlog up to
//! the newest snapshot's position and compares every table with the newest manifest: the
//! older snapshot plus the replayed events must equal the newer snapshot exactly. With a
//! single snapshot it compares that snapshot as loaded. It then replays the rest of the
//! chain to the latest stored transaction, as a restore would.

use indicatif::ProgressBar;
use logferry_common::format::mysql::sql::quote_table;
use logferry_common::snapshot::{SnapshotContent, SnapshotManifest, TableInfo};
use logferry_common::{BinlogPos, StreamId};

use super::collect::Collected;
use super::plan::{self, Plan};
use super::replay;
use super::snapshot;
use super::target::Target;
use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};
use crate::restore::{Difference, DrillReport};
use crate::snapshots;
use crate::storage::Store;

/// Runs the drill for `stream` into the empty server `scratch`.
///
/// # Errors
/// [`ShipperError::Restore`] when no snapshot exists, the scratch server is not empty, or a
/// step fails; differences are reported, not errors.
pub async fn run(
    store: &Store,
    stream: &StreamId,
    scratch: &TargetServer,
    bar: &ProgressBar,
) -> Result<DrillReport> {
    let existing = scratch.user_databases().await?;
    if !existing.is_empty() {
        return Err(ShipperError::Restore(format!(
            "the scratch server already holds databases ({}); the drill needs an empty one",
            existing.join(", ")
        )));
    }
    let snaps = snapshots::list(store, stream).await?;
    let newest = snaps.last().ok_or_else(|| {
        ShipperError::Restore(format!("stream {stream} has no snapshot to drill with"))
    })?;
    let mut report = DrillReport {
        compared_what: "tables",
        ..DrillReport::default()
    };
    let newest_pos = BinlogPos::parse(&newest.position)?;
    let first_target = Target::BinlogPosition(newest_pos.clone());
    // Start from the snapshot before the newest when there is one, so that replayed events
    // are checked too.
    let base = snaps.len().checked_sub(2).map_or(newest, |i| &snaps[i]);
    // Both legs are planned before the scratch server is touched: a gap stops the drill
    // there.
    let plan = plan_with_snapshot(store, stream, base, &first_target).await?;
    let rest = plan::plan_from(store, stream, &newest_pos, &Target::Latest).await?;
    report.base = format!("snapshot {} at {}", base.id, base.position);
    let relaxed = scratch.relax_for_replay(false).await;
    for note in &relaxed.notes {
        tracing::warn!("{note}");
    }
    let drilled = async {
        snapshot::load_snapshot(store, &plan, scratch, bar).await?;
        let collected = replay::into_server(store, &plan, &first_target, scratch, bar).await?;
        add(&mut report, &collected);
        report.checked_against = format!("snapshot {} at {}", newest.id, newest.position);
        compare(scratch, newest, &mut report).await?;
        let collected = replay::into_server(store, &rest, &Target::Latest, scratch, bar).await?;
        add(&mut report, &collected);
        Ok::<_, ShipperError>(())
    }
    .await;
    let put_back = scratch.put_back(&relaxed).await;
    drilled?;
    put_back?;
    Ok(report)
}

/// The chain from `base`'s position to `target`, which must be unbroken, with `base` to
/// load first.
async fn plan_with_snapshot(
    store: &Store,
    stream: &StreamId,
    base: &SnapshotManifest,
    target: &Target,
) -> Result<Plan> {
    let start = BinlogPos::parse(&base.position)?;
    let mut plan = plan::plan_from(store, stream, &start, target).await?;
    plan.snapshot = Some(base.clone());
    Ok(plan)
}

fn add(report: &mut DrillReport, c: &Collected) {
    report.events += c.events;
    if let Some(p) = &c.last_position {
        report.last_position = Some(p.to_string());
    }
}

async fn compare(
    scratch: &TargetServer,
    manifest: &SnapshotManifest,
    report: &mut DrillReport,
) -> Result<()> {
    let SnapshotContent::Mysql(content) = &manifest.content;
    for t in &content.tables {
        let found = table_info(scratch, &t.name).await?;
        report.compared += 1;
        if found.rows != t.rows || found.checksum != t.checksum {
            report.differences.push(Difference {
                table: t.name.clone(),
                expected: describe(t),
                found: describe(&found),
            });
        }
    }
    Ok(())
}

fn describe(t: &TableInfo) -> String {
    format!(
        "{} rows, checksum {}",
        t.rows,
        t.checksum.map_or("none".into(), |c| c.to_string())
    )
}

async fn table_info(scratch: &TargetServer, name: &str) -> Result<TableInfo> {
    let quoted = name
        .split_once('.')
        .map(|(s, t)| quote_table(s, t))
        .ok_or_else(|| {
            ShipperError::Restore(format!("manifest table name {name:?} has no schema"))
        })?;
    let rows = scratch
        .query(&format!(
            "SELECT COUNT(*) FROM {quoted}; CHECKSUM TABLE {quoted}"
        ))
        .await;
    let missing = || TableInfo {
        name: name.to_owned(),
        rows: 0,
        checksum: None,
    };
    let Ok(rows) = rows else { return Ok(missing()) };
    let count = rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let checksum = rows
        .get(1)
        .and_then(|r| r.get(1))
        .and_then(|v| v.parse().ok());
    Ok(TableInfo {
        name: name.to_owned(),
        rows: count,
        checksum,
    })
}

//! The restore drill (`verify --restore-drill`): proves from the store alone that a restore
//! works, into a scratch server, or says that it proved nothing.
//!
//! Every snapshot's manifest records the row count and `CHECKSUM TABLE` of each table at its
//! position. With two snapshots or more, the drill loads the next-to-newest, replays the
//! stored binlog up to the newest snapshot's position and compares every table with the
//! newest manifest: the older snapshot plus the replayed events must equal the newer
//! snapshot exactly. It then replays the rest of the chain to the latest stored
//! transaction, as a restore would. With `--replica` (required with a single snapshot) it
//! then pauses that live replica at or after the restored copy's position, replays the
//! chain up to exactly where the replica stopped, and compares every table of both. With
//! no snapshot, or one and no replica, nothing can be compared: the verdict is "not
//! proven", never a pass.

use std::collections::BTreeSet;
use std::time::Duration;

use indicatif::ProgressBar;
use logferry_common::format::mysql::sql::{quote_table, system_schemas_sql_list};
use logferry_common::snapshot::{SnapshotContent, SnapshotManifest, TableInfo};
use logferry_common::{BinlogPos, StreamId};

use super::collect::Collected;
use super::live_replica::LiveReplica;
use super::plan::{self, Plan};
use super::replay;
use super::snapshot;
use super::target::Target;
use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{Difference, DrillReport};
use crate::snapshots;
use crate::storage::Store;

/// How long the live replica may take to apply up to the restored copy's position.
const REPLICA_CATCH_UP: Duration = Duration::from_secs(120);

/// How long the stored chain may take to reach the paused replica's position (the agent
/// ships within seconds of a commit).
const CHAIN_CATCH_UP: Duration = Duration::from_secs(120);

/// How often the chain is read again while it catches up.
const CHAIN_POLL: Duration = Duration::from_secs(1);

/// Runs the drill for `stream` into the empty server `scratch`, comparing with the live
/// `replica` too when one is given.
///
/// # Errors
/// [`ShipperError::Restore`] when the scratch server is not empty or a step fails;
/// differences and "not proven" are reported, not errors.
pub async fn run(
    store: &Store,
    stream: &StreamId,
    scratch: &TargetServer,
    replica: Option<&TargetServer>,
    bar: &ProgressBar,
    interrupt: &Interrupt,
) -> Result<DrillReport> {
    let existing = scratch.user_databases().await?;
    if !existing.is_empty() {
        return Err(ShipperError::Restore(format!(
            "the scratch server already holds databases ({}); the drill needs an empty one",
            existing.join(", ")
        )));
    }
    let snaps = snapshots::list_trusted(store, stream).await?;
    let mut report = DrillReport {
        compared_what: "tables",
        ..DrillReport::default()
    };
    let Some(newest) = snaps.last() else {
        report.not_proven = Some(format!(
            "stream {stream} has no snapshot to restore from; take one (logferry-agent snapshot) and drill again"
        ));
        return Ok(report);
    };
    let older = snaps.len().checked_sub(2).map(|i| &snaps[i]);
    if older.is_none() && replica.is_none() {
        report.not_proven = Some(format!(
            "stream {stream} has one snapshot only ({}): loading it and comparing it with its own manifest proves nothing about the replay; give --replica (a live replica of the source, its SQL thread paused while every table is counted and checksummed) or drill again after the next snapshot",
            newest.id
        ));
        return Ok(report);
    }
    // Every leg is planned before the scratch server is touched: a gap stops the drill
    // there.
    let legs = match older {
        Some(base) => {
            let newest_pos = BinlogPos::parse(&newest.position)?;
            let to_newest = Target::BinlogPosition(newest_pos.clone());
            vec![
                (
                    plan_with_snapshot(store, stream, base, &to_newest).await?,
                    to_newest,
                    Some(newest),
                ),
                (
                    plan::plan_from(store, stream, &newest_pos, &Target::Latest).await?,
                    Target::Latest,
                    None,
                ),
            ]
        }
        None => vec![(
            plan_with_snapshot(store, stream, newest, &Target::Latest).await?,
            Target::Latest,
            None,
        )],
    };
    let base = older.unwrap_or(newest);
    report.base = format!("snapshot {} at {}", base.id, base.position);
    // Accounts an earlier drill created would collide with a replayed CREATE USER.
    let accounts = scratch.drop_user_accounts().await?;
    if !accounts.is_empty() {
        tracing::info!(accounts = %accounts.join(", "), "dropped the scratch server's accounts left by an earlier drill");
    }
    let relaxed = scratch.relax_for_replay(false).await;
    for note in &relaxed.notes {
        tracing::warn!("{note}");
    }
    let never = Interrupt::never();
    let drilled = async {
        let mut reached = BinlogPos::parse(&base.position)?;
        let replayed = async {
            for (plan, target, check) in &legs {
                snapshot::load_snapshot(store, plan, scratch, bar, &never).await?;
                let collected =
                    replay::into_server(store, plan, target, scratch, bar, &never).await?;
                add(&mut report, &collected);
                if let Some(p) = &collected.last_position {
                    reached = p.clone();
                }
                if let Some(manifest) = check {
                    report
                        .checked_against
                        .push(format!("snapshot {} at {}", manifest.id, manifest.position));
                    compare_with_manifest(scratch, manifest, &mut report).await?;
                }
            }
            Ok::<_, ShipperError>(())
        };
        tokio::select! {
            r = replayed => r?,
            () = interrupt.requested() => return Err(stopped()),
        }
        if let Some(replica) = replica {
            let on = Scratch {
                store,
                stream,
                server: scratch,
                bar,
            };
            compare_with_replica(&on, replica, &reached, &mut report, interrupt).await?;
        }
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

/// Counts a replayed leg into the report.
fn add(report: &mut DrillReport, c: &Collected) {
    report.events += c.events;
    if let Some(p) = &c.last_position {
        report.last_position = Some(p.to_string());
    }
}

/// The stream a drill restores and the scratch server it restores into.
#[derive(Clone, Copy)]
struct Scratch<'a> {
    store: &'a Store,
    stream: &'a StreamId,
    server: &'a TargetServer,
    bar: &'a ProgressBar,
}

/// Pauses the replica at or after `reached`, replays the chain up to exactly where it
/// stopped (waiting for the chain to get there), compares every table of both, and puts
/// the replica back.
async fn compare_with_replica(
    scratch: &Scratch<'_>,
    replica: &TargetServer,
    reached: &BinlogPos,
    report: &mut DrillReport,
    interrupt: &Interrupt,
) -> Result<()> {
    let Scratch {
        store,
        stream,
        server: scratch,
        bar,
    } = *scratch;
    let live = LiveReplica::new(replica.clone());
    let (at, paused) = live.pause_at_or_after(reached, REPLICA_CATCH_UP).await?;
    tracing::info!(replica = %replica, position = %at, "replica paused for the comparison");
    let compared = async {
        let target = Target::BinlogPosition(at.clone());
        let plan = chain_reaching(store, stream, reached, &target).await?;
        let collected =
            replay::into_server(store, &plan, &target, scratch, bar, &Interrupt::never()).await?;
        add(report, &collected);
        report
            .checked_against
            .push(format!("the replica {replica}, paused at {at}"));
        compare_servers(scratch, live.server(), report).await
    };
    // A stop request ends the comparison, never the put-back.
    let compared = tokio::select! {
        c = compared => c,
        () = interrupt.requested() => Err(stopped()),
    };
    let put_back = live.put_back(paused).await;
    if let (Err(_), Err(p)) = (&compared, &put_back) {
        tracing::error!("{p}");
    }
    compared?;
    put_back
}

/// The error of a drill stopped by SIGINT, SIGTERM or SIGHUP.
fn stopped() -> ShipperError {
    ShipperError::Interrupted(
        "the drill was stopped; a replica it paused was started again, and the scratch server holds a partial copy".into(),
    )
}

/// The plan from `from` to `target`, read again until the stored chain reaches the target
/// (for at most [`CHAIN_CATCH_UP`]).
async fn chain_reaching(
    store: &Store,
    stream: &StreamId,
    from: &BinlogPos,
    target: &Target,
) -> Result<Plan> {
    let deadline = tokio::time::Instant::now() + CHAIN_CATCH_UP;
    loop {
        match plan::plan_from(store, stream, from, target).await {
            Err(ShipperError::Gap(why)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%why, "waiting for the stored chain to reach the replica");
                tokio::time::sleep(CHAIN_POLL).await;
            }
            Err(ShipperError::Gap(why)) => {
                return Err(ShipperError::Restore(format!(
                    "the stored chain did not reach the paused replica's position within {} s ({why}); is the agent shipping?",
                    CHAIN_CATCH_UP.as_secs()
                )))
            }
            other => return other,
        }
    }
}

async fn compare_with_manifest(
    scratch: &TargetServer,
    manifest: &SnapshotManifest,
    report: &mut DrillReport,
) -> Result<()> {
    let SnapshotContent::Mysql(content) = &manifest.content else {
        return Err(ShipperError::Restore(format!(
            "snapshot {} is not a MySQL snapshot",
            manifest.id
        )));
    };
    let from = format!("snapshot {}'s manifest", manifest.id);
    for t in &content.tables {
        let found = table_info(scratch, &t.name).await?;
        report.compared += 1;
        if found.rows != t.rows || found.checksum != t.checksum {
            report.differences.push(Difference {
                table: t.name.clone(),
                expected_from: from.clone(),
                expected: describe(t),
                found: describe(&found),
            });
        }
    }
    Ok(())
}

/// Compares every base table either server holds outside the system schemas.
async fn compare_servers(
    scratch: &TargetServer,
    replica: &TargetServer,
    report: &mut DrillReport,
) -> Result<()> {
    let mut names = user_tables(replica).await?;
    names.extend(user_tables(scratch).await?);
    for name in names {
        let want = table_info(replica, &name).await?;
        let found = table_info(scratch, &name).await?;
        report.compared += 1;
        if found != want {
            report.differences.push(Difference {
                table: name,
                expected_from: "the replica".into(),
                expected: describe(&want),
                found: describe(&found),
            });
        }
    }
    Ok(())
}

/// `schema.table` of every base table outside the system schemas.
async fn user_tables(server: &TargetServer) -> Result<BTreeSet<String>> {
    let rows = server
        .query(&format!(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN {}",
            system_schemas_sql_list()
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
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
    let rows = match rows {
        Ok(rows) => rows,
        // A table the other side has and this one lacks is a difference, not an error.
        Err(e) if e.to_string().contains("ERROR 1146") => {
            return Ok(TableInfo {
                name: name.to_owned(),
                rows: 0,
                checksum: None,
            })
        }
        Err(e) => return Err(e),
    };
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

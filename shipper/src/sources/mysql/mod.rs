//! MySQL/MariaDB streams: point-in-time restore into a server, export to binlog files, and
//! the restore drill, from the object store alone (no shipper running).
//!
//! 1. [`plan`]: the newest complete snapshot at or before the target, and the stored
//!    segments that follow its primary position, checked to run unbroken to the target.
//! 2. [`snapshot`]: loads the snapshot into the target server (or writes it to a directory).
//! 3. [`collect`]: the events after the snapshot's position up to the last transaction
//!    that ends at or before the target, whole transactions only, rebuilt as binlog file
//!    pieces and handed on segment by segment as each is verified; [`replay`] streams
//!    them into the server through the stock `mariadb-binlog | mariadb`, or into files.
//! - [`target`]: `--to` for a MySQL stream (time, binlog position, MariaDB GTID, latest).
//! - [`target_server`]: the server a restore writes into.
//! - [`drill`]: the restore drill, comparing per-table checksums with a manifest.

pub mod branch;
pub mod collect;
pub mod drill;
pub mod live_replica;
pub mod plan;
pub mod promote;
pub mod replay;
pub mod snapshot;
pub mod target;
pub mod target_server;

use logferry_common::format::mysql::check_chain;
use logferry_common::keys::snapshot_prefix;
use logferry_common::{BinlogPos, Position, StreamId};

use self::plan::Plan;
use self::target::Target;
use self::target_server::{Progress, TargetServer, PROGRESS_SCHEMA};
use super::SourceRestore;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{Bars, DrillReport, ExportOptions, Report, Request, RestoreOptions};
use crate::storage::Store;

/// The MySQL/MariaDB implementation of [`SourceRestore`].
#[derive(Debug, Clone, Copy)]
pub struct Mysql;

impl SourceRestore for Mysql {
    async fn restore(
        &self,
        store: &Store,
        req: &Request<'_>,
        opts: &RestoreOptions<'_>,
        bars: &Bars,
    ) -> Result<Report> {
        let target: Target = req.to.parse()?;
        let server: TargetServer = opts.target.parse()?;
        let mut notes = Vec::new();
        let resumed = if opts.resume {
            Some(resume_point(&server, req).await?)
        } else {
            None
        };
        let mut plan = match &resumed {
            Some(from) => {
                notes.push(format!(
                    "resumed from {from}, where the interrupted restore stopped"
                ));
                plan::plan_from(store, req.stream, from, &target).await?
            }
            None => plan::plan(store, req.stream, &target).await?,
        };
        let existing = server.user_databases().await?;
        if !existing.is_empty() && !opts.force && resumed.is_none() {
            let hint = if existing.iter().any(|d| d == PROGRESS_SCHEMA) {
                "it holds an interrupted restore: pass --resume to continue it or --force to start over"
            } else {
                "restore into an empty server, or pass --force to drop them first"
            };
            return Err(ShipperError::Restore(format!(
                "the target already holds databases ({}); {hint}",
                existing.join(", ")
            )));
        }
        if opts.force && resumed.is_none() {
            let dropped = server.drop_user_databases().await?;
            let accounts = server.drop_user_accounts().await?;
            if !dropped.is_empty() || !accounts.is_empty() {
                notes.push(format!(
                    "--force: dropped the target's databases [{}] and accounts [{}] before loading (system schemas, root and the restoring account untouched)",
                    dropped.join(", "),
                    accounts.join(", ")
                ));
            }
        }
        if resumed.is_some() {
            // From here the target moves past the record: a resumed run that dies any way
            // but a clean interrupt leaves none, so it is never replayed from twice.
            server.clear_progress().await?;
        }
        let relaxed = server.relax_for_replay(opts.keep_durability).await;
        for note in &relaxed.notes {
            tracing::warn!("{note}");
        }
        notes.splice(0..0, relaxed.notes.iter().cloned());
        let mut skipped = Vec::new();
        let applied = loop {
            match apply(store, &plan, &target, &server, bars, &opts.interrupt).await {
                Err(ShipperError::Corrupt { key, source }) if is_chunk_of(&plan, &key) => {
                    let bad = plan
                        .snapshot
                        .as_ref()
                        .map_or_else(String::new, |m| m.id.clone());
                    tracing::warn!(snapshot = %bad, %key, error = %source, "snapshot chunk is corrupt; falling back to an older snapshot");
                    skipped.push(bad.clone());
                    let next = async {
                        server.drop_user_databases().await?;
                        server.drop_user_accounts().await?;
                        plan::plan_skipping(store, req.stream, &target, &skipped).await
                    }
                    .await;
                    match next {
                        Ok(p) => {
                            notes.push(format!(
                                "snapshot {bad} is corrupt ({key}: {source}); fell back to snapshot {} and a longer replay; run logferry-shipper verify",
                                p.snapshot.as_ref().map_or("?", |m| m.id.as_str())
                            ));
                            plan = p;
                        }
                        Err(e) => break Err(e),
                    }
                }
                other => break other,
            }
        };
        let put_back = server.put_back(&relaxed).await;
        let collected = match applied {
            Ok(c) => c,
            Err(e) => {
                if let Err(d) = put_back {
                    tracing::error!(error = %d, "could not put the target's settings back");
                }
                return Err(e);
            }
        };
        put_back?;
        let mut report = report(&plan, &collected);
        report.notes.splice(0..0, notes);
        report.interrupted = collected.interrupted;
        if collected.interrupted {
            let at = collected.last_position.as_ref().unwrap_or(&plan.start);
            server
                .save_progress(&Progress {
                    stream: req.stream.to_string(),
                    at: at.clone(),
                    target: req.to.to_owned(),
                })
                .await?;
        } else {
            server.clear_progress().await?;
        }
        if let Some(previous) = &relaxed.flush {
            report.notes.push(format!("durability: innodb_flush_log_at_trx_commit was 2 during the restore, back to {previous}; redo log flushed"));
        }
        Ok(report)
    }

    async fn export(
        &self,
        store: &Store,
        req: &Request<'_>,
        opts: &ExportOptions<'_>,
        bars: &Bars,
    ) -> Result<Report> {
        let target: Target = req.to.parse()?;
        let plan = match opts.from {
            Some(f) => plan::plan_from(store, req.stream, &BinlogPos::parse(f)?, &target).await?,
            None => plan::plan(store, req.stream, &target).await?,
        };
        let mut written = Vec::new();
        if let Some(m) = &plan.snapshot {
            let bar = bars.phase("writing the snapshot", m.plain_bytes());
            written.extend(snapshot::export_snapshot(store, &plan, opts.dir, &bar).await?);
            bar.finish_and_clear();
        }
        let bar = bars.phase("exporting segments", segment_bytes(&plan));
        let collected = replay::into_dir(store, &plan, &target, opts.dir, &bar).await?;
        bar.finish_and_clear();
        snapshot::write_howto(opts.dir, &plan, &collected).await?;
        written.extend(collected.files.iter().cloned());
        written.push("RESTORE.txt".into());
        let mut report = report(&plan, &collected);
        report.written = written;
        report.dir = Some(opts.dir.to_owned());
        Ok(report)
    }

    async fn drill(
        &self,
        store: &Store,
        stream: &StreamId,
        target: &str,
        replica: Option<&str>,
        bars: &Bars,
        interrupt: &Interrupt,
    ) -> Result<DrillReport> {
        let scratch: TargetServer = target.parse()?;
        let replica = replica
            .map(|r| TargetServer::parse_flag(r, "--replica"))
            .transpose()?;
        let bar = bars.phase("drilling", 0);
        let report = drill::run(store, stream, &scratch, replica.as_ref(), &bar, interrupt).await;
        bar.finish_and_clear();
        report
    }

    fn check_payload(&self, payload: &[u8], start: &Position, end: &Position) -> Result<u64> {
        Ok(check_chain(payload, start.as_mysql()?, end.as_mysql()?)?)
    }
}

/// Where an interrupted restore of `req`'s stream to `req`'s target left `server`, as it
/// recorded there.
///
/// # Errors
/// [`ShipperError::Restore`] when the target holds no such record, or one of another
/// stream or another `--to`.
async fn resume_point(server: &TargetServer, req: &Request<'_>) -> Result<BinlogPos> {
    let stream = req.stream;
    match server.progress().await? {
        Some(p) if p.stream == stream.as_str() && p.target == req.to => Ok(p.at),
        Some(p) if p.stream == stream.as_str() => Err(ShipperError::Restore(format!(
            "--resume: the interrupted restore of stream {stream} went --to {}, not {}; resume with --to {}, or start over with --force",
            p.target, req.to, p.target
        ))),
        Some(p) => Err(ShipperError::Restore(format!(
            "--resume: the target holds an interrupted restore of stream {}, not {stream}; resume that stream, or start over with --force",
            p.stream
        ))),
        None => Err(ShipperError::Restore(format!(
            "--resume: the target records no interrupted restore ({PROGRESS_SCHEMA}.progress is missing); a restore killed outright or stopped while loading its snapshot cannot be resumed: start over with --force"
        ))),
    }
}

/// Loads the plan's snapshot into `server` and replays the binlog after it, with progress
/// bars, until the target or an interrupt.
async fn apply(
    store: &Store,
    plan: &Plan,
    target: &Target,
    server: &TargetServer,
    bars: &Bars,
    interrupt: &Interrupt,
) -> Result<collect::Collected> {
    if let Some(m) = &plan.snapshot {
        let bar = bars.phase("loading the snapshot", m.plain_bytes());
        snapshot::load_snapshot(store, plan, server, &bar, interrupt).await?;
        bar.finish_and_clear();
    }
    let bar = bars.phase("replaying segments", segment_bytes(plan));
    let collected = replay::into_server(store, plan, target, server, &bar, interrupt).await?;
    bar.finish_and_clear();
    Ok(collected)
}

/// Whether `key` is a chunk of the snapshot `plan` loads.
fn is_chunk_of(plan: &Plan, key: &str) -> bool {
    plan.snapshot
        .as_ref()
        .is_some_and(|m| key.starts_with(&snapshot_prefix(&m.stream, &m.id)))
}

/// Stored bytes of the plan's segments: the unit of the replay progress bar.
fn segment_bytes(plan: &Plan) -> u64 {
    plan.segments.iter().map(|c| c.seg.size).sum()
}

/// The report of a finished restore or export: the plan refused any gap before the
/// target, so one after it is only noted.
fn report(plan: &Plan, c: &collect::Collected) -> Report {
    Report {
        snapshot: plan.snapshot.clone(),
        start: plan.start.to_string(),
        events: c.events,
        transactions: c.transactions,
        segments_verified: c.segments_verified,
        last: c
            .last_position
            .as_ref()
            .map(ToString::to_string)
            .zip(c.last_time_ms),
        notes: plan.gap.iter().cloned().collect(),
        written: Vec::new(),
        dir: None,
        interrupted: false,
    }
}

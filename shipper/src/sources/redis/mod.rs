//! Redis streams on the read side: point-in-time restore into a server, export as a
//! multi-part AOF directory, the restore drill, and the payload check `verify` runs, from
//! the object store alone.
//!
//! 1. [`plan`]: the newest snapshot at or before the target and the stored segments after
//!    its position, one unbroken run of one history up to the target.
//! 2. [`endpoint`]: the target is told `REPLICAOF` a short-lived endpoint of this process,
//!    which answers `+FULLRESYNC` with the snapshot's RDB (Redis's own loader reads it),
//! 3. [`replay`](mod@replay): then streams the commands up to the target, whole transactions only,
//!    waits until the target acknowledges every byte, and the target is told `REPLICAOF NO
//!    ONE`.
//! - [`export`]: the same snapshot and commands as an AOF directory.
//! - [`promote`]: a replica made the stream's primary, fed what it lacks from the store.
//! - [`digest`]: the drill's logical digest of every key.
//! - [`client`]: the connection to the target; [`target`]: `--to`.

pub mod client;
pub mod digest;
pub mod endpoint;
pub mod export;
pub mod plan;
pub mod promote;
pub mod replay;
pub mod target;

use logferry_common::format::redis::check_payload;
use logferry_common::keys::snapshot_prefix;
use logferry_common::snapshot::SnapshotManifest;
use logferry_common::{Position, StreamId};
use logferry_config::redis::RedisEndpoint;

use self::client::Client;
use self::endpoint::Endpoint;
use self::export::AofExport;
use self::plan::Plan;
use self::replay::{replay, Replayed};
use self::target::Target;
use super::SourceRestore;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{Bars, DrillReport, ExportOptions, Report, Request, RestoreOptions};
use crate::snapshots;
use crate::storage::Store;

/// The Redis implementation of [`SourceRestore`].
#[derive(Debug, Clone, Copy)]
pub struct Redis;

/// The target server of a restore or drill, logged in, checked to be a standalone server.
async fn target_server(url: &str, flag: &str) -> Result<Client> {
    let ep = RedisEndpoint::parse(url, flag)
        .map_err(|e| ShipperError::Restore(format!("{e} (the stream is a Redis stream)")))?;
    let mut client = Client::connect(&ep).await?;
    let role = client.role().await?;
    if role != "master" {
        return Err(ShipperError::Restore(format!(
            "the target {} is a {role}, not a standalone server: a restore makes it replicate from this host and then \
             stand alone; point {flag} at a server of its own (or run REPLICAOF NO ONE on it first)",
            client.addr()
        )));
    }
    Ok(client)
}

/// Refuses a target that holds keys unless `force`; the keys it holds, for the report.
async fn check_empty(client: &mut Client, force: bool, flag: &str) -> Result<u64> {
    let keys = client.keyspace().await?;
    if !keys.is_empty() && !force {
        let held: Vec<String> = keys
            .iter()
            .map(|(db, n)| format!("db{db}: {n} keys"))
            .collect();
        return Err(ShipperError::Restore(format!(
            "the target {} already holds data ({}); {flag}",
            client.addr(),
            held.join(", ")
        )));
    }
    Ok(keys.iter().map(|k| k.1).sum())
}

/// The newest RDB format a Redis version loads (5.x and 6.x: 9, 7.0: 10, 7.2: 11, 7.4
/// and 8.x: 12); `None` when unknown (a newer or a forked server is not refused).
fn rdb_version_loaded_by(redis_version: &str) -> Option<u32> {
    let mut parts = redis_version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    match (major, minor) {
        (5 | 6, _) => Some(9),
        (7, 0) => Some(10),
        (7, 1..=3) => Some(11),
        (7, _) | (8, _) => Some(12),
        _ => None,
    }
}

/// Refuses a target too old to load the snapshot's RDB (it would retry the sync forever).
async fn check_loads(client: &mut Client, snapshot: &SnapshotManifest) -> Result<()> {
    let logferry_common::snapshot::SnapshotContent::Redis(content) = &snapshot.content else {
        return Ok(());
    };
    let version = client
        .info("server", "redis_version")
        .await?
        .unwrap_or_default();
    match rdb_version_loaded_by(&version) {
        Some(loads) if loads < content.rdb_version => Err(ShipperError::Restore(format!(
            "the target {} runs Redis {version}, which reads RDB format {loads} and older; snapshot {} is RDB format {} \
             (Redis {}): restore into a server of that version or newer",
            client.addr(),
            snapshot.id,
            content.rdb_version,
            content.redis_version
        ))),
        _ => Ok(()),
    }
}

/// The target's count of error replies (`total_error_replies`), which grows when it
/// refuses a replayed command.
async fn error_replies(client: &mut Client) -> Result<u64> {
    Ok(client
        .info("stats", "total_error_replies")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Loads `plan` into the target: its snapshot through a full sync from an endpoint of
/// this process, then the commands up to `target`; the target stands alone again after,
/// whatever happened (a stop requested by the operator included), with its `masterauth`
/// put back. A full sync is all or nothing, so a stopped restore is not resumed: it is run
/// again.
async fn serve(
    client: &mut Client,
    store: &Store,
    plan: &Plan,
    target: &Target,
    bars: &Bars,
    interrupt: &Interrupt,
) -> Result<Replayed> {
    let Some(snapshot) = &plan.snapshot else {
        return Err(ShipperError::Internal(
            "a Redis restore needs a snapshot".into(),
        ));
    };
    check_loads(client, snapshot).await?;
    let errors_before = error_replies(client).await?;
    let endpoint = Endpoint::bind(client.local_ip()?).await?;
    let auth = client.ok(&["CONFIG", "GET", "masterauth"]).await?;
    let old_auth = match auth {
        logferry_common::format::redis::resp::Value::Array(Some(v)) => {
            v.get(1).map(|v| v.text()).unwrap_or_default()
        }
        _ => String::new(),
    };
    client
        .ok(&["CONFIG", "SET", "masterauth", endpoint.password()])
        .await?;
    let addr = endpoint.addr();
    tracing::info!(target = client.addr(), endpoint = %addr, snapshot = %snapshot.id,
        "the target replicates from the restore endpoint (should this process die, run REPLICAOF NO ONE on the target and put back its masterauth)");
    let target_addr = client.addr().to_owned();
    // A connection of its own asks whether the target is loading, so a stop in the middle
    // of that question leaves `client` in step for the clean-up below.
    let mut watcher = client.reconnect().await?;
    let fed = async {
        client
            .ok(&[
                "REPLICAOF".to_owned(),
                addr.ip().to_string(),
                addr.port().to_string(),
            ])
            .await?;
        let mut feed = endpoint.accept(&target_addr).await?;
        let bar = bars.phase("snapshot", snapshot.plain_bytes());
        feed.rdb(store, snapshot, &bar).await?;
        bar.finish_and_clear();
        // The target reads nothing from the link while it loads the RDB: the commands
        // wait until it has (it acknowledges then).
        feed.applied(&mut watcher).await?;
        let bar = bars.phase("commands", plan.payload_bytes());
        let replayed = replay(store, plan, target, &mut feed, &bar).await?;
        bar.finish_and_clear();
        feed.applied(&mut watcher).await?;
        Ok::<_, ShipperError>(replayed)
    };
    let fed = tokio::select! {
        fed = fed => fed,
        () = interrupt.requested() => Err(ShipperError::Interrupted(format!(
            "the target {target_addr} was told to stand alone again and holds an incomplete copy: run the restore again with --force"
        ))),
    };
    let alone = client.ok(&["REPLICAOF", "NO", "ONE"]).await;
    let put_back = client.ok(&["CONFIG", "SET", "masterauth", &old_auth]).await;
    let replayed = fed.map_err(|e| match e {
        // A corrupt chunk falls back to an older snapshot; an interrupt says it already.
        e @ (ShipperError::Corrupt { .. } | ShipperError::Interrupted(_)) => e,
        e => ShipperError::Restore(format!(
            "{e}; the target {target_addr} stands alone again but may hold an incomplete copy: run the restore again with --force"
        )),
    })?;
    alone?;
    put_back?;
    let refused = error_replies(client).await?.saturating_sub(errors_before);
    if refused > 0 {
        return Err(ShipperError::Restore(format!(
            "the target {target_addr} refused {refused} of the replayed commands (its log says \"sending an error to its master\"): \
             the restored copy is not the stream's state; restore into a server of the source's version"
        )));
    }
    Ok(replayed)
}

/// Whether `key` is a chunk of the plan's snapshot (a corrupt one falls back to an older
/// snapshot).
fn is_chunk_of(plan: &Plan, key: &str) -> bool {
    plan.snapshot
        .as_ref()
        .is_some_and(|m| key.starts_with(&snapshot_prefix(&m.stream, &m.id)))
}

/// The report of a replay from `plan`.
fn report(plan: &Plan, replayed: &Replayed, mut notes: Vec<String>) -> Report {
    if replayed.open_at_end {
        notes.push(
            "the stored chain ends inside a transaction (MULTI without its EXEC yet): it was left out".into(),
        );
    }
    if replayed.skipped_open_at_start {
        notes.push(format!(
            "{} lies inside a transaction: its rest was left out, the replay starts at the next whole one",
            plan.start
        ));
    }
    if let Some(f) = &replayed.stopped_at_fork {
        notes.push(format!(
            "the stream FORKED at {f} (a replica promoted while behind continued it): the restore stops there, at the state the promoted server started from; the old primary's commands after it are left out (export --branch N names the export that writes them)"
        ));
    }
    if let Some(gap) = &plan.gap {
        notes.push(gap.clone());
    }
    Report {
        snapshot: plan.snapshot.clone(),
        start: plan.start.to_string(),
        events: replayed.commands,
        transactions: replayed.transactions,
        segments_verified: replayed.segments,
        last: replayed.last.as_ref().map(|(p, ms)| (p.to_string(), *ms)),
        notes,
        written: Vec::new(),
        dir: None,
        interrupted: false,
    }
}

impl SourceRestore for Redis {
    async fn restore(
        &self,
        store: &Store,
        req: &Request<'_>,
        opts: &RestoreOptions<'_>,
        bars: &Bars,
    ) -> Result<Report> {
        if opts.resume {
            return Err(ShipperError::Restore(
                "--resume continues MySQL restores; a Redis restore is one full sync: run it again with --force".into(),
            ));
        }
        let target: Target = req.to.parse()?;
        let mut plan = plan::plan(store, req.stream, &target, &[]).await?;
        let mut client = target_server(opts.target, "--target").await?;
        let replaced = check_empty(
            &mut client,
            opts.force,
            "restore into an empty server, or pass --force to replace it",
        )
        .await?;
        let mut notes = Vec::new();
        if replaced > 0 {
            notes.push(format!(
                "--force: the target's {replaced} keys were replaced"
            ));
        }
        let mut skipped = Vec::new();
        loop {
            match serve(&mut client, store, &plan, &target, bars, &opts.interrupt).await {
                Err(ShipperError::Corrupt { key, source }) if is_chunk_of(&plan, &key) => {
                    let bad = plan
                        .snapshot
                        .as_ref()
                        .map_or_else(String::new, |m| m.id.clone());
                    tracing::warn!(snapshot = %bad, %key, error = %source, "snapshot chunk is corrupt; falling back to an older snapshot");
                    skipped.push(bad.clone());
                    plan = plan::plan(store, req.stream, &target, &skipped).await?;
                    notes.push(format!(
                        "snapshot {bad} is corrupt ({key}: {source}); fell back to snapshot {} and a longer replay; run logferry-shipper verify",
                        plan.snapshot.as_ref().map_or("?", |m| m.id.as_str())
                    ));
                }
                Err(e) => return Err(e),
                Ok(replayed) => return Ok(report(&plan, &replayed, notes)),
            }
        }
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
            Some(from) => {
                let from = logferry_common::format::redis::ReplPos::parse(from)?;
                plan::plan_from(store, req.stream, &from, None, &target).await?
            }
            None => plan::plan(store, req.stream, &target, &[]).await?,
        };
        let mut files = AofExport::create(opts.dir).await?;
        if let Some(m) = &plan.snapshot {
            let bar = bars.phase("snapshot", m.plain_bytes());
            files.base(store, m, &bar).await?;
            bar.finish_and_clear();
        }
        let bar = bars.phase("commands", plan.payload_bytes());
        let replayed = replay(store, &plan, &target, &mut files, &bar).await?;
        bar.finish_and_clear();
        let mut report = report(&plan, &replayed, Vec::new());
        report.written = files.finish().await?;
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
        if replica.is_some() {
            return Err(ShipperError::Restore(
                "--replica compares with a live MySQL replica; a Redis drill compares with the newest snapshot".into(),
            ));
        }
        let snaps = snapshots::list_trusted(store, stream).await?;
        let mut report = DrillReport {
            compared_what: "keys",
            ..DrillReport::default()
        };
        let Some((newest, older)) = snaps.split_last() else {
            report.not_proven = Some(format!("stream {stream} has no snapshot"));
            return Ok(report);
        };
        let Some((base, plan)) = drill_plan(store, stream, newest, older).await? else {
            report.not_proven = Some(format!(
                "no older snapshot of stream {stream} is joined to the newest ({}) by an unbroken chain: nothing to \
                 replay and compare (a full resync between them breaks the chain; the next scheduled snapshot mends it)",
                newest.id
            ));
            return Ok(report);
        };
        let mut client = target_server(target, "--target").await?;
        check_empty(
            &mut client,
            false,
            "the drill replaces a scratch server's data: point --target at an empty scratch server (FLUSHALL it first)",
        )
        .await?;
        // The newest snapshot alone, as Redis loads it: what the replay must arrive at.
        let alone = Plan {
            snapshot: Some(newest.clone()),
            start: plan.start.clone(),
            segments: Vec::new(),
            gap: None,
            starts_in_trx: false,
            fork: None,
        };
        let to = Target::Position(newest.position()?.as_redis()?.clone());
        serve(&mut client, store, &alone, &to, bars, interrupt).await?;
        let expected = digest::digest(&mut client).await?;
        let replayed = serve(&mut client, store, &plan, &to, bars, interrupt).await?;
        let restored = digest::digest(&mut client).await?;
        // The scratch server is left empty, ready for the next drill.
        client.ok(&["FLUSHALL"]).await?;
        let against = format!(
            "snapshot {} (loaded alone into the scratch server)",
            newest.id
        );
        report.base = base.id.clone();
        report.differences =
            digest::compare(&expected, &restored, &against, crate::time_arg::now_ms());
        report.checked_against.push(against);
        report.compared = expected.len().max(restored.len());
        report.events = replayed.commands;
        report.last_position = replayed.last.map(|(p, _)| p.to_string());
        Ok(report)
    }

    fn check_payload(&self, payload: &[u8], start: &Position, end: &Position) -> Result<u64> {
        Ok(check_payload(payload, start.as_redis()?, end.as_redis()?)?)
    }
}

/// The newest snapshot older than `newest` from which the stored chain runs unbroken to
/// `newest`'s position, and the plan of that replay.
async fn drill_plan<'a>(
    store: &Store,
    stream: &StreamId,
    newest: &SnapshotManifest,
    older: &'a [SnapshotManifest],
) -> Result<Option<(&'a SnapshotManifest, Plan)>> {
    let to = newest.position()?.as_redis()?.clone();
    for base in older.iter().rev() {
        let from = base.position()?.as_redis()?.clone();
        if from.history != to.history || from.offset > to.offset {
            continue;
        }
        match plan::plan_from(
            store,
            stream,
            &from,
            Some(base.clone()),
            &Target::Position(to.clone()),
        )
        .await
        {
            Ok(plan) => return Ok(Some((base, plan))),
            Err(ShipperError::Gap(why)) => {
                tracing::warn!(snapshot = %base.id, %why, "the drill cannot replay from this snapshot")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::rdb_version_loaded_by as loads;

    #[test]
    fn rdb_versions_by_redis_version() {
        for (v, rdb) in [
            ("6.2.14", Some(9)),
            ("7.0.15", Some(10)),
            ("7.2.4", Some(11)),
            ("7.4.1", Some(12)),
            ("8.0.0", Some(12)),
            ("9.1.0", None),
            ("garbage", None),
        ] {
            assert_eq!(loads(v), rdb, "{v}");
        }
    }
}

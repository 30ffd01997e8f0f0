//! `promote` for MySQL/MariaDB: makes a standby the stream's primary with nothing the store
//! holds missing. Each step is logged; a step that fails leaves the standby read-only and
//! the report says which step it was.
//!
//! 1. the stored chain's end and its GTID state; a promotion already done at that end is
//!    refused;
//! 2. the standby's GTID state (what it logged and what it applied as a replica);
//! 3. the old primary fenced if it answers (`read_only`, `super_read_only` where it exists,
//!    its client connections killed);
//! 4. the standby made read-only and its replication stopped;
//! 5. the transactions it lacks applied from the store, whole, through
//!    `mariadb-binlog | mariadb`, which keeps their original GTIDs;
//! 6. its GTID state checked to hold the stored end;
//! 7. `RESET SLAVE ALL` and `read_only = OFF`.

use std::time::Instant;

use logferry_common::format::mysql::{self as binlog, code, event_body, Gtid, GtidState, Walked};
use logferry_common::BinlogPos;
use tracing::{info, warn};

use super::plan::{self, ChainSegment};
use super::replay;
use super::target::Target;
use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::promotion::{self, Outcome, PromoteRequest, PromotionReport};
use crate::restore::{segment_payload, Bars};
use crate::storage::Store;
use crate::time_arg::now_ms;

/// Runs a promotion (or, with `req.dry_run`, says what it would do).
///
/// # Errors
/// [`ShipperError::Restore`] when the stream cannot be promoted as asked (no GTID state,
/// promoted already, the standby unreachable) or a step fails; the report of a failed
/// promotion is stored before.
pub async fn run(store: &Store, req: &PromoteRequest<'_>, bars: &Bars) -> Result<PromotionReport> {
    let started = Instant::now();
    let standby = TargetServer::parse_flag(req.standby, "--standby")?;
    let old = req
        .old_primary
        .map(|u| TargetServer::parse_flag(u, "--old-primary"))
        .transpose()?;
    let chain = plan::chain(store, req.stream).await?;
    let last = chain.last().ok_or_else(|| {
        ShipperError::Restore(format!("stream {} has no stored segments", req.stream))
    })?;
    let stored_end = last.open_trx.as_ref().unwrap_or(&last.end);
    let stored_gtid = stored_end.gtid.clone().ok_or_else(|| {
        ShipperError::Restore(format!(
            "the stored chain of {} ends at {stored_end}, which carries no GTID state: promote needs MariaDB GTIDs",
            req.stream
        ))
    })?;
    info!(stream = %req.stream, stored_end = %stored_end, "promote: the stored chain's end");
    if !req.dry_run {
        promotion::refuse_repeat(store, req.stream, &stored_gtid).await?;
    }
    let gtid_before = gtid_state(&standby).await?;
    info!(standby = %standby, gtid = %gtid_before.render(), "promote: the standby's GTID state");
    let stored = parse(&stored_gtid)?;
    let from = first_missing(store, &chain, &gtid_before).await?;
    let last_seen_commit_ms = promotion::last_seen_commit(store, req.stream).await?;
    let last_stored_commit_ms = last.header.meta.last_event_ms;
    let mut report = PromotionReport {
        stream: req.stream.to_string(),
        standby: standby.to_string(),
        outcome: Outcome::DryRun,
        failed_at: None,
        error: None,
        fence: match &old {
            Some(o) => format!("{o}: would be fenced"),
            None => "not given (--old-primary): not fenced".into(),
        },
        stored_gtid: stored_gtid.clone(),
        gtid_before: gtid_before.render(),
        gtid_after: gtid_before.render(),
        applied_transactions: stored.beyond(&gtid_before).iter().map(|(_, n)| n).sum(),
        applied_events: 0,
        last_stored_commit_ms,
        last_seen_commit_ms,
        data_loss_ms: last_seen_commit_ms.map(|seen| (seen - last_stored_commit_ms).max(0)),
        started_ms: now_ms(),
        elapsed_ms: 0,
    };
    if req.dry_run {
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let mut step = "fence the old primary";
    let done = async {
        report.fence = match &old {
            Some(o) => fence(o).await,
            None => "not given (--old-primary): not fenced".into(),
        };
        step = "make the standby read-only and stop its replication";
        standby
            .query("SET GLOBAL read_only = ON; STOP SLAVE")
            .await?;
        info!(standby = %standby, "promote: the standby is read-only, its replication stopped");
        report.applied_transactions = 0;
        if let Some(from) = &from {
            step = "apply the transactions it lacks from the store";
            let plan = plan::plan_from(store, req.stream, from, &Target::Latest).await?;
            let bar = bars.phase("applying", plan.segments.iter().map(|c| c.seg.size).sum());
            let got = replay::into_server(
                store,
                &plan,
                &Target::Latest,
                &standby,
                &bar,
                &Interrupt::never(),
            )
            .await;
            bar.finish_and_clear();
            let got = got?;
            report.applied_transactions = got.transactions;
            report.applied_events = got.events;
            info!(transactions = got.transactions, events = got.events, "promote: applied from the store");
        }
        step = "check the standby holds the stored end";
        let after = gtid_state(&standby).await?;
        report.gtid_after = after.render();
        let short = stored.beyond(&after);
        if !short.is_empty() {
            return Err(ShipperError::Restore(format!(
                "after applying, the standby's GTID state {} still lacks stored transactions up to {}",
                after.render(),
                short.iter().map(|(g, _)| g.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        step = "make the standby writable";
        standby
            .query("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
            .await?;
        info!(standby = %standby, "promote: the standby is the primary");
        Ok::<(), ShipperError>(())
    }
    .await;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match done {
        Ok(()) => {
            report.outcome = Outcome::Promoted;
            let key = promotion::save(store, req.stream, &report).await?;
            info!(%key, "promote: report stored");
            Ok(report)
        }
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.failed_at = Some(step.to_owned());
            report.error = Some(e.to_string());
            warn!(step, error = %e, "promote failed; the standby is left read-only");
            if let Err(save) = promotion::save(store, req.stream, &report).await {
                warn!(error = %save, "the report of the failed promotion could not be stored");
            }
            Err(ShipperError::Restore(format!(
                "promote stopped at \"{step}\": {e}; the standby {standby} is left read-only\n{}",
                report.render()
            )))
        }
    }
}

/// Fences the old primary if it answers: read-only (and `super_read_only` where the server
/// has it), its client connections killed. Says what it did.
async fn fence(old: &TargetServer) -> String {
    if let Err(e) = old.query("SET GLOBAL read_only = ON").await {
        return format!("{old}: did not answer or refused ({e}): not fenced (down, or cut off)");
    }
    let super_ro = match old.query("SET GLOBAL super_read_only = ON").await {
        Ok(_) => ", super_read_only",
        Err(_) => "",
    };
    let ids = old
        .query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
             AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Binlog Dump GTID') \
             AND USER NOT IN ('system user', 'event_scheduler')",
        )
        .await
        .unwrap_or_default();
    let mut killed = 0;
    for id in ids.iter().filter_map(|r| r.first()) {
        if old.query(&format!("KILL CONNECTION {id}")).await.is_ok() {
            killed += 1;
        }
    }
    info!(old_primary = %old, killed, "promote: the old primary is fenced");
    format!("{old}: fenced (read_only{super_ro}, {killed} client connections killed)")
}

/// The server's GTID state: what it logged and what it applied as a replica, per domain
/// the further on.
async fn gtid_state(server: &TargetServer) -> Result<GtidState> {
    let rows = server
        .query("SELECT @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos")
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    let mut state = GtidState::default();
    for text in row.iter().filter(|t| *t != "NULL") {
        state = state.merged(&parse(text)?);
    }
    Ok(state)
}

fn parse(text: &str) -> Result<GtidState> {
    GtidState::parse(text).map_err(|e| ShipperError::Restore(format!("GTID state {text:?}: {e}")))
}

/// Where the first stored transaction the standby does not hold starts; `None` when it
/// holds them all.
async fn first_missing(
    store: &Store,
    chain: &[ChainSegment],
    has: &GtidState,
) -> Result<Option<BinlogPos>> {
    let covered = |p: &BinlogPos| {
        p.gtid
            .as_deref()
            .and_then(|g| GtidState::parse(g).ok())
            .is_some_and(|s| s.beyond(has).is_empty())
    };
    // Segments that end at a boundary the standby holds hold nothing it lacks.
    let skip = chain
        .iter()
        .rposition(|c| c.open_trx.is_none() && covered(&c.end))
        .map_or(0, |i| i + 1);
    for c in &chain[skip..] {
        let payload = segment_payload(store, &c.seg).await?;
        let mut at = c.events_start.clone();
        let mut found = None;
        binlog::walk(&c.events_start, &payload, |w| {
            let Walked::Event {
                bytes,
                header,
                end,
                crc32,
            } = w
            else {
                return Ok(true);
            };
            let start = std::mem::replace(&mut at, end.clone());
            if header.event_type == code::MARIADB_GTID {
                let g = Gtid::of_event(header.server_id, event_body(bytes, crc32));
                if g.is_some_and(|g| !has.covers(&g)) {
                    found = Some(start);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

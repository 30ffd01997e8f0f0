//! `promote` for MySQL/MariaDB: makes a standby the stream's primary with nothing the store
//! holds missing. Each step is logged; a step that fails leaves the standby read-only and
//! the report says which step it was.
//!
//! 1. preflight, nothing changed yet: the standby writes a binlog (its GTID state is then
//!    what it holds), a promotion already done at the stored end is refused;
//! 2. the old primary fenced if it answers (`read_only`, `super_read_only` where it exists,
//!    its client connections killed), then the store waited for until it holds the old
//!    primary's last transaction (the agent ships what it still has), at most
//!    30 s;
//! 3. the standby made read-only; what its relay log received and had not applied is
//!    applied (`MASTER_GTID_WAIT`), since it may hold transactions the store lacks; then
//!    every replication connection stopped;
//! 4. the chain read again, the standby's last GTID per domain found in it exactly (same
//!    server id: a standby that went its own way is refused), the transactions after it
//!    applied from the store, whole, through `mariadb-binlog | mariadb`, which keeps their
//!    original GTIDs;
//! 5. its GTID state checked to end where the store ends;
//! 6. `RESET SLAVE ALL` for every connection and `read_only = OFF`.

use std::time::{Duration, Instant};

use logferry_common::format::mysql::{self as binlog, code, event_body, Gtid, GtidState, Walked};
use logferry_common::BinlogPos;
use tracing::info;

use super::plan::{self, ChainSegment};
use super::replay;
use super::target::Target;
use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};
use crate::promotion::{self, Outcome, PromoteRequest, PromotionReport, Steps};
use crate::restore::{segment_payload, Bars};
use crate::storage::Store;
use crate::time_arg::now_ms;

/// How long fencing the old primary may take (a hung server must not stall the promotion;
/// its client processes are killed when the wait ends).
const FENCE_LIMIT: Duration = Duration::from_secs(30);
/// How long a fenced old primary's last transactions are waited for in the store.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How long the standby's relay log may take to be applied.
const RELAY_WAIT_SECONDS: u32 = 300;

/// Runs a promotion (or, with `req.dry_run`, says what it would do).
///
/// # Errors
/// [`ShipperError::Restore`] when the stream cannot be promoted as asked (no GTID state,
/// promoted already, the standby unreachable or gone its own way) or a step fails; the
/// report of a failed promotion is stored before.
pub async fn run(store: &Store, req: &PromoteRequest<'_>, bars: &Bars) -> Result<PromotionReport> {
    let started = Instant::now();
    let mut steps = Steps::new(req);
    let standby = TargetServer::parse_flag(req.standby, "--standby")?;
    let old = req
        .old_primary
        .map(|u| TargetServer::parse_flag(u, "--old-primary"))
        .transpose()?;
    let version = standby
        .query("SELECT VERSION()")
        .await?
        .first()
        .and_then(|r| r.first().cloned())
        .unwrap_or_default();
    if !version.to_ascii_lowercase().contains("mariadb") {
        return Err(ShipperError::Restore(format!(
            "the standby {standby} runs MySQL {version}: promote compares and applies by MariaDB GTID state so far; \
             on MySQL check that SELECT GTID_SUBSET('<the stored end's GTID set, logferry-shipper ls>', @@GLOBAL.gtid_executed) is 1, \
             then STOP REPLICA; RESET REPLICA ALL; SET GLOBAL super_read_only = OFF, read_only = OFF, and point the agent at it"
        )));
    }
    if !standby.writes_binlog().await? {
        return Err(ShipperError::Restore(format!(
            "the standby {standby} writes no binlog (log_bin is off): its GTID state could not show what it holds after the promotion; start it with --log-bin (and log_slave_updates) first"
        )));
    }
    let (chain, stored_gtid) = stored_end(store, req).await?;
    if !req.dry_run {
        promotion::refuse_repeat(store, req.stream, &stored_gtid.render()).await?;
    }
    let gtid_before = gtid_state(&standby).await?;
    info!(standby = %standby, gtid = %gtid_before.last.render(), "promote: the standby's GTID state");
    let last = chain
        .last()
        .map(|c| c.header.meta.last_event_ms)
        .unwrap_or(0);
    let last_seen_commit_ms = promotion::last_seen_commit(store, req.stream).await?;
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
        stored_end: stored_gtid.render(),
        standby_before: gtid_before.last.render(),
        standby_after: gtid_before.last.render(),
        applied_transactions: 0,
        applied_events: 0,
        relay_transactions: Some(0),
        relay_note: None,
        last_stored_commit_ms: last,
        last_seen_commit_ms,
        data_loss_ms: last_seen_commit_ms.map(|seen| (seen - last).max(0)),
        started_ms: now_ms(),
        elapsed_ms: 0,
        steps: Vec::new(),
        notes: Vec::new(),
    };
    if req.dry_run {
        first_missing(store, &chain, &gtid_before).await?;
        report.applied_transactions = stored_gtid
            .beyond(&gtid_before.last)
            .iter()
            .map(|(_, n)| n)
            .sum();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    let done = async {
        if let Some(o) = &old {
            steps.begin("fence the old primary");
            let (what, at) = tokio::time::timeout(FENCE_LIMIT, fence(o))
                .await
                .unwrap_or_else(|_| {
                    (
                        format!("{o}: did not finish answering within {} s: perhaps partly fenced (a hung server: stop it by hand before clients reach it)", FENCE_LIMIT.as_secs()),
                        None,
                    )
                });
            report.fence = what;
            if let Some(at) = at {
                steps.begin("wait for the store to hold the old primary's last transaction");
                wait_stored(store, req, &at).await?;
            }
        }
        steps.begin("make the standby read-only");
        standby.query("SET GLOBAL read_only = ON").await?;
        steps.begin("apply what the standby's relay log holds");
        let applied_before_relay = gtid_state(&standby).await?;
        if let Some(note) = drain_relay_log(&standby).await? {
            report.relay_note = Some(note);
        }
        steps.begin("stop the standby's replication");
        stop_replication(&standby).await?;
        let before = gtid_state(&standby).await?;
        report.relay_transactions = Some(before
            .last
            .beyond(&applied_before_relay.last)
            .iter()
            .map(|(_, n)| n)
            .sum());
        steps.begin("find what the standby lacks");
        let (chain, stored_gtid) = stored_end(store, req).await?;
        report.stored_end = stored_gtid.render();
        report.last_stored_commit_ms = chain.last().map_or(0, |c| c.header.meta.last_event_ms);
        report.data_loss_ms = report
            .last_seen_commit_ms
            .map(|seen| (seen - report.last_stored_commit_ms).max(0));
        let from = first_missing(store, &chain, &before).await?;
        if let Some(from) = &from {
            steps.begin("apply the transactions it lacks from the store");
            let plan = plan::plan_from(store, req.stream, from, &Target::Latest).await?;
            let bar = bars.phase("applying", plan.segments.iter().map(|c| c.seg.size).sum());
            let got = replay::into_server(
                store,
                &plan,
                &Target::Latest,
                &standby,
                &bar,
                &req.interrupt,
            )
            .await;
            bar.finish_and_clear();
            let got = got?;
            report.applied_transactions = got.transactions;
            report.applied_events = got.events;
            if got.interrupted {
                return Err(ShipperError::Interrupted(format!(
                    "stopped after {} of the transactions the standby lacks; run promote again to apply the rest",
                    got.transactions
                )));
            }
            info!(transactions = got.transactions, events = got.events, "promote: applied from the store");
        }
        steps.begin("check the standby ends where the store ends");
        let after = gtid_state(&standby).await?;
        report.standby_after = after.last.render();
        if let Some(g) = stored_gtid.domains().find(|g| !after.holds(g)) {
            return Err(ShipperError::Restore(format!(
                "after applying, the standby (GTID state {}) does not hold the store's last transaction {g}",
                after.last.render()
            )));
        }
        steps.begin("make the standby writable");
        reset_replication(&standby).await?;
        standby.query("SET GLOBAL read_only = OFF").await?;
        info!(standby = %standby, "promote: the standby is the primary");
        Ok::<(), ShipperError>(())
    }
    .await;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    promotion::conclude(store, req.stream, report, steps, done, async || {
        let read_only = standby
            .query("SELECT @@GLOBAL.read_only")
            .await
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.first()).cloned());
        let left = match read_only.as_deref() {
            Some("1") => "is left read-only",
            Some(_) => {
                "is NOT read-only: set read_only = ON on it by hand before anything writes to it"
            }
            None => "did not answer: check that it is read-only",
        };
        format!("{standby} {left}")
    })
    .await
}

/// The stored chain and the GTID state at its last transaction boundary.
async fn stored_end(
    store: &Store,
    req: &PromoteRequest<'_>,
) -> Result<(Vec<ChainSegment>, GtidState)> {
    let chain = plan::chain(store, req.stream).await?;
    let last = chain.last().ok_or_else(|| {
        ShipperError::Restore(format!("stream {} has no stored segments", req.stream))
    })?;
    let end = last.open_trx.as_ref().unwrap_or(&last.end);
    let state = end.gtid.as_deref().ok_or_else(|| {
        ShipperError::Restore(format!(
            "the stored chain of {} ends at {end}, which carries no GTID state: promote needs MariaDB GTIDs",
            req.stream
        ))
    })?;
    info!(stream = %req.stream, stored_end = %end, "promote: the stored chain's end");
    let state = parse(state)?;
    Ok((chain, state))
}

/// Waits until the stored chain holds `state` (the fenced old primary's last
/// transactions), at most [`CATCH_UP`].
async fn wait_stored(store: &Store, req: &PromoteRequest<'_>, state: &GtidState) -> Result<()> {
    let until = Instant::now() + CATCH_UP;
    let prefix = logferry_common::keys::segments_prefix(req.stream);
    loop {
        // Only the newest segment's header: the chain may be long.
        let newest = store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| crate::catalog::segment_ref(&o.key, o.size))
            .max_by(|a, b| a.start_key.cmp(&b.start_key));
        let stored = match newest {
            Some(seg) => {
                let m = crate::catalog::read_header(store, &seg).await?.meta;
                let end = m.open_trx.as_ref().unwrap_or(&m.end).as_mysql()?.clone();
                parse(end.gtid.as_deref().unwrap_or_default())?
            }
            None => GtidState::default(),
        };
        let behind = state.beyond(&stored);
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(ShipperError::Restore(format!(
                "the old primary (fenced) holds transactions up to {} that the store still lacks after {} s: is its agent running? Start it, or promote without --old-primary to accept losing them",
                state.render(),
                CATCH_UP.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops every replication connection (MariaDB's `STOP ALL SLAVES`; `STOP SLAVE` where
/// the server has only one).
async fn stop_replication(server: &TargetServer) -> Result<()> {
    if server.query("STOP ALL SLAVES").await.is_err() {
        server.query("STOP SLAVE").await?;
    }
    Ok(())
}

/// Forgets every replication connection (`RESET SLAVE ... ALL` for each named one too).
async fn reset_replication(server: &TargetServer) -> Result<()> {
    let named = server
        .rows_named("SHOW ALL SLAVES STATUS")
        .await
        .unwrap_or_default();
    for row in named {
        if let Some(name) = row.get("Connection_name").filter(|n| !n.is_empty()) {
            server
                .query(&format!("RESET SLAVE '{}' ALL", name.replace('\'', "''")))
                .await?;
        }
    }
    server.query("RESET SLAVE ALL").await?;
    Ok(())
}

/// Applies what the standby's relay log received and had not applied, so that nothing it
/// got from the old primary is thrown away with it. Its IO thread must still be running
/// (connected or retrying): MariaDB discards the relay log when replication starts again
/// after both threads stopped, so then nothing can be drained, which the returned note
/// says.
async fn drain_relay_log(server: &TargetServer) -> Result<Option<String>> {
    let Some(status) = server.first_row_named("SHOW SLAVE STATUS").await? else {
        return Ok(None);
    };
    let field = |name: &str| status.get(name).cloned().unwrap_or_default();
    let received = field("Gtid_IO_Pos");
    let applied = gtid_state(server).await?;
    if received.is_empty() || parse(&received)?.beyond(&applied.last).is_empty() {
        return Ok(None);
    }
    if field("Last_SQL_Errno").parse::<u32>().is_ok_and(|n| n != 0) {
        return Err(ShipperError::Restore(format!(
            "the standby's replication stopped on an error ({}: {}), with its relay log received up to {received}: fix it (see SHOW SLAVE STATUS) and promote again",
            field("Last_SQL_Errno"),
            field("Last_SQL_Error")
        )));
    }
    if field("Slave_IO_Running") == "No" && field("Slave_SQL_Running") == "No" {
        return Ok(Some(format!(
            "its relay log had received up to {received} but both replication threads were stopped, so it cannot be applied (MariaDB discards it when replication starts again); what the store lacks of it is lost"
        )));
    }
    info!(standby = %server, received = %received, "promote: applying what the standby's relay log holds");
    if field("Slave_SQL_Running") != "Yes" {
        server.query("START SLAVE SQL_THREAD").await?;
    }
    let waited = server
        .query(&format!(
            "SELECT MASTER_GTID_WAIT('{}', {RELAY_WAIT_SECONDS})",
            received.replace('\'', "")
        ))
        .await?;
    match waited.first().and_then(|r| r.first()).map(String::as_str) {
        Some("0") => Ok(None),
        other => Err(ShipperError::Restore(format!(
            "the standby did not apply its relay log up to {received} within {RELAY_WAIT_SECONDS} s (MASTER_GTID_WAIT answered {other:?}); see SHOW SLAVE STATUS on it"
        ))),
    }
}

/// Fences the old primary if it answers: read-only (and `super_read_only` where the server
/// has it), its client connections killed. Says what it did, and the GTID state it ends at
/// when it answered.
async fn fence(old: &TargetServer) -> (String, Option<GtidState>) {
    if let Err(e) = old.query("SET GLOBAL read_only = ON").await {
        return (
            format!("{old}: did not answer or refused ({e}): not fenced (down, or cut off)"),
            None,
        );
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
    let ends = old
        .query("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r.first()).cloned())
        .and_then(|text| GtidState::parse(&text).ok());
    (
        format!("{old}: fenced (read_only{super_ro}, {killed} client connections killed)"),
        ends,
    )
}

/// What a server holds, by GTID: per domain the furthest it logged or applied, and per
/// domain and originating server the furthest sequence number (`gtid_binlog_state` keeps
/// one per server id, so a GTID is known to be held exactly, not merely by its number).
#[derive(Debug, Clone, Default)]
struct Holds {
    last: GtidState,
    per_server: std::collections::HashMap<(u32, u32), u64>,
}

impl Holds {
    /// Whether the server holds `g` itself (same server id), not another transaction under
    /// its number.
    fn holds(&self, g: &Gtid) -> bool {
        self.per_server
            .get(&(g.domain, g.server))
            .is_some_and(|n| *n >= g.seq)
    }
}

/// What `server` holds: its `gtid_binlog_state`, `gtid_binlog_pos` and `gtid_slave_pos`.
async fn gtid_state(server: &TargetServer) -> Result<Holds> {
    let rows = server
        .query(
            "SELECT @@GLOBAL.gtid_binlog_state, @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos",
        )
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    let mut h = Holds::default();
    for text in row.iter().filter(|t| *t != "NULL") {
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = Gtid::parse(part)
                .map_err(|e| ShipperError::Restore(format!("GTID {part:?} of {server}: {e}")))?;
            let n = h.per_server.entry((g.domain, g.server)).or_insert(0);
            *n = (*n).max(g.seq);
        }
    }
    for text in row.iter().skip(1).filter(|t| *t != "NULL") {
        h.last = h.last.merged(&parse(text)?);
    }
    Ok(h)
}

fn parse(text: &str) -> Result<GtidState> {
    GtidState::parse(text).map_err(|e| ShipperError::Restore(format!("GTID state {text:?}: {e}")))
}

/// Where the first stored transaction the standby does not hold starts; `None` when it
/// holds them all (it may hold more: what its relay log had). Every stored transaction with
/// a sequence number the standby has reached must be held by it exactly (same server id),
/// the first one it lacks in each domain must directly follow its last one (the store holds
/// everything in between), and none it holds may come after one it lacks.
///
/// # Errors
/// [`ShipperError::Restore`] naming the GTIDs when the standby went its own way, the store
/// lacks what lies between, or the domains interleave; store and payload errors.
async fn first_missing(
    store: &Store,
    chain: &[ChainSegment],
    has: &Holds,
) -> Result<Option<BinlogPos>> {
    let covered = |p: &BinlogPos| {
        p.gtid
            .as_deref()
            .and_then(|g| GtidState::parse(g).ok())
            .is_some_and(|s| s.beyond(&has.last).is_empty())
    };
    let old_branches = plan::old_branches(chain);
    // Segments before the last one whose end the standby has reached hold nothing it
    // lacks; that one is walked too, to check the standby holds its transactions exactly.
    let skip = chain
        .iter()
        .rposition(|c| c.open_trx.is_none() && covered(&c.end))
        .unwrap_or(0);
    let mut found: Option<BinlogPos> = None;
    let mut started: std::collections::HashSet<u32> = std::collections::HashSet::new();
    for c in &chain[skip..] {
        let payload = segment_payload(store, &c.seg).await?;
        let mut at = c.events_start.clone();
        let mut problem = None;
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
            if header.event_type != code::MARIADB_GTID || plan::in_old_branch(&old_branches, end) {
                return Ok(true);
            }
            let Some(g) = Gtid::of_event(header.server_id, event_body(bytes, crc32)) else {
                return Ok(true);
            };
            let last = has.last.get(g.domain);
            if has.holds(&g) {
                if let Some(f) = &found {
                    problem = Some(format!(
                        "the store holds {g}, which the standby has, after the one at {f}, which it lacks (several GTID domains interleaved): promote cannot apply only what it lacks"
                    ));
                    return Ok(false);
                }
            } else if let Some(l) = last.filter(|l| g.seq <= l.seq) {
                problem = Some(format!(
                    "the standby's last transaction in domain {} is {l}, and it does not hold the stored {g}: the standby went its own way (written to after it stopped replicating, or another database)",
                    g.domain
                ));
                return Ok(false);
            } else if started.insert(g.domain) {
                let expected = last.map_or(1, |l| l.seq + 1);
                if g.seq != expected {
                    problem = Some(format!(
                        "the standby ends at {} in domain {} and the first stored transaction after it is {g}: the store does not hold what lies between (the standby is older than the stored chain)",
                        last.map_or_else(|| "nothing".to_owned(), |l| l.to_string()),
                        g.domain
                    ));
                    return Ok(false);
                }
                found.get_or_insert(start);
            }
            Ok(true)
        })?;
        if let Some(p) = problem {
            return Err(ShipperError::Restore(p));
        }
    }
    Ok(found)
}

//! `promote` for Redis: makes a replica the stream's primary with nothing the store holds
//! missing, and keeps the stream's history going on it, so the agent pointed at it
//! continues with `+CONTINUE` where the chain ends. Each step is logged; a step that fails
//! leaves the standby a replica of the primary it had (read-only) and the report says which
//! step it was.
//!
//! 1. preflight, nothing changed yet: the standby is a replica of the stream's history (its
//!    replication id is the stored chain's); what it lacks is read from the store and
//!    rebuilt (`Catch::build`): the store must hold the history unbroken from the
//!    standby's offset; a promotion already done at the stored end is refused;
//! 2. the old primary's writes paused if it answers (`CLIENT PAUSE … WRITE`), and the
//!    standby, when still linked to it, waited for until it holds the old primary's offset
//!    (at most 30 s);
//! 3. the chain and the standby read again; when the standby's offset is short of the
//!    stored end, it is told `REPLICAOF` an endpoint of this process
//!    ([`super::endpoint`]), which answers its `PSYNC` with `+CONTINUE` and sends the
//!    stored stream after its offset byte for byte (the heartbeats the store skipped
//!    rebuilt to their length, [`heartbeats`]) until it acknowledges the stored end;
//! 4. `REPLICAOF NO ONE`: it keeps the stream's replication id as its `master_replid2`, so
//!    the stream goes on from it as one chain.
//!
//! The stored end is the chain's last transaction boundary: a `MULTI` the chain ends inside
//! was never committed on the standby's side, and is not sent. The agent then finds the
//! promoted standby's history ending before the chain's end: it records a fork there (the
//! cut `MULTI` is the old branch) and takes a full sync, a new history.

use std::time::{Duration, Instant};

use futures::StreamExt;
use logferry_common::format::redis::payload::heartbeats;
use logferry_common::format::redis::resp::{info_field, Value};
use logferry_common::format::redis::{walk, ReplPos, TrxTracker};
use logferry_config::redis::RedisEndpoint;
use tracing::{info, warn};

use super::client::Client;
use super::endpoint::Endpoint;
use super::plan::{self, ChainSegment};
use crate::error::{Result, ShipperError};
use crate::promotion::{self, Outcome, PromoteRequest, PromotionReport, Steps};
use crate::restore::{segment_payloads, Bars};
use crate::storage::Store;
use crate::time_arg::now_ms;

/// How long the standby may take to reach the fenced old primary's offset.
const CATCH_UP: Duration = Duration::from_secs(30);

/// How long the old primary's writes stay paused: long enough for the operator to move
/// its clients; `CLIENT UNPAUSE` ends it sooner.
const FENCE_MS: u64 = 24 * 3600 * 1000;

/// The most stream bytes a promotion rebuilds and holds to send (the standby must not wait
/// on the store mid-stream: no byte may be added to keep its link alive).
const MAX_CATCH_UP_BYTES: usize = 512 * 1024 * 1024;

/// What `INFO replication` says of a server's place in its history.
#[derive(Debug, Clone)]
struct Replication {
    role: String,
    replid: String,
    /// The offset of the last byte it holds.
    offset: u64,
    /// The primary it replicates (`master_host`, `master_port`), when a replica.
    primary: Option<(String, String)>,
    link_up: bool,
    /// The first offset its replication backlog holds, when it has one.
    backlog_from: Option<u64>,
}

impl Replication {
    /// Whether the server holds the stream up to `end` in the stream's own history (a
    /// server that holds it under another id would start a new history when promoted).
    fn holds(&self, end: &ReplPos) -> bool {
        self.replid == end.replid && self.offset >= end.offset
    }

    fn render(&self) -> String {
        place(&self.replid, self.offset)
    }
}

/// A place in a replication history, as the report shows it (`<replid> offset <n>`).
fn place(replid: &str, offset: u64) -> String {
    format!("{replid} offset {offset}")
}

async fn replication(client: &mut Client) -> Result<Replication> {
    let info = client.ok(&["INFO", "replication"]).await?.text();
    let field = |name: &str| info_field(&info, name).map(str::to_owned);
    Ok(Replication {
        role: field("role").unwrap_or_default(),
        replid: field("master_replid").unwrap_or_default(),
        offset: field("master_repl_offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| {
                ShipperError::Restore(format!(
                    "{} gives no master_repl_offset in INFO replication",
                    client.addr()
                ))
            })?,
        primary: field("master_host").zip(field("master_port")),
        link_up: field("master_link_status").as_deref() == Some("up"),
        backlog_from: field("repl_backlog_first_byte_offset")
            .filter(|_| field("repl_backlog_active").as_deref() == Some("1"))
            .and_then(|o| o.parse().ok()),
    })
}

async fn connect(url: &str, flag: &str) -> Result<Client> {
    let ep = RedisEndpoint::parse(url, flag)
        .map_err(|e| ShipperError::Restore(format!("{e} (the stream is a Redis stream)")))?;
    Client::connect(&ep).await
}

/// The stored chain and its end: the last transaction boundary.
async fn stored_end(
    store: &Store,
    req: &PromoteRequest<'_>,
) -> Result<(Vec<ChainSegment>, ReplPos)> {
    let chain = plan::chain(store, req.stream).await?;
    let last = chain.last().ok_or_else(|| {
        ShipperError::Restore(format!(
            "stream {} has no stored segments: there is nothing to promote a standby to",
            req.stream
        ))
    })?;
    let end = match &last.header.meta.open_trx {
        Some(t) => t.as_redis()?.clone(),
        None => last.end.clone(),
    };
    Ok((chain, end))
}

/// The stream a standby lacks, rebuilt from the store: every stored command after its
/// offset up to the stored end byte for byte, and heartbeats of the same length in the
/// place of those the agent skipped.
#[derive(Debug, Default)]
struct Catch {
    bytes: Vec<u8>,
    commands: u64,
    transactions: u64,
}

impl Catch {
    /// Rebuilds what a standby at `offset` of `end`'s history lacks.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the store does not hold that history unbroken from
    /// `offset`, `offset` is not a place in it, or the bytes pass
    /// [`MAX_CATCH_UP_BYTES`]; a segment that does not read.
    async fn build(
        store: &Store,
        chain: &[ChainSegment],
        offset: u64,
        end: &ReplPos,
    ) -> Result<Catch> {
        // The unbroken run of `end`'s history that ends the chain.
        let mut first = chain.len();
        while let Some(c) = first.checked_sub(1).map(|i| &chain[i]) {
            let joins = chain.get(first).is_none_or(|next| c.end == next.start);
            if !joins || c.end.history != end.history {
                break;
            }
            first -= 1;
        }
        let run = &chain[first..];
        let Some(head) = run.first().filter(|c| c.start.offset <= offset) else {
            return Err(ShipperError::Restore(format!(
                "the standby is at offset {offset} of the stream's history {}, but the store holds it unbroken only from offset {} (a snapshot or a break there): \
                 it lacks what the store does not hold; promote a standby that is nearer, or restore a server from the store",
                end.replid,
                run.first().map_or(end.offset, |c| c.start.offset)
            )));
        };
        let from = run
            .iter()
            .position(|c| c.end.offset > offset)
            .unwrap_or(run.len());
        let segs = &run[from..];
        let mut out = Catch::default();
        let mut trx = TrxTracker::new(plan::starts_in_trx(chain, segs.first().or(Some(head))));
        let mut payloads = Box::pin(segment_payloads(
            store,
            segs.iter().map(|c| (&c.seg, c.header.payload_len)),
        ));
        for c in segs {
            let payload = payloads
                .next()
                .await
                .ok_or_else(|| ShipperError::Internal("fewer payloads than segments".into()))?
                .ok()?;
            let mut at = c.start.offset;
            let mut problem = None;
            walk(&payload, |cmd| {
                let body = at + cmd.skipped;
                let cmd_end = body + if cmd.preamble { 0 } else { cmd.bytes.len() as u64 };
                if cmd_end > end.offset {
                    return Ok(false);
                }
                let name = cmd.args.first().copied().unwrap_or_default();
                if cmd_end > offset {
                    let gap = body.saturating_sub(offset.max(at));
                    if gap > MAX_CATCH_UP_BYTES as u64 {
                        problem = Some(format!("{gap} skipped bytes at offset {at}: more than a promotion sends"));
                        return Ok(false);
                    }
                    let Some(beats) = heartbeats(gap) else {
                        problem = Some(format!("{gap} skipped bytes at offset {at} are no run of heartbeats"));
                        return Ok(false);
                    };
                    out.bytes.extend_from_slice(&beats);
                    if !cmd.preamble {
                        if body < offset {
                            problem = Some(format!(
                                "the standby's offset {offset} lies inside the stored command at {body}: it is not a place in this stream"
                            ));
                            return Ok(false);
                        }
                        out.bytes.extend_from_slice(cmd.bytes);
                        out.commands += 1;
                        if trx.after(name) && !cmd.is("SELECT") {
                            out.transactions += 1;
                        }
                    }
                } else if !cmd.preamble {
                    trx.after(name);
                }
                at = cmd_end;
                Ok(true)
            })
            .map_err(|e| ShipperError::Restore(format!("{}: {e}", c.seg.key)))?;
            if let Some(p) = problem {
                return Err(ShipperError::Restore(format!("{}: {p}", c.seg.key)));
            }
            if out.bytes.len() > MAX_CATCH_UP_BYTES {
                return Err(ShipperError::Restore(format!(
                    "the standby lacks more than {} MiB of the stream: restore a server from the store instead (restore --to latest), or let the standby catch up first",
                    MAX_CATCH_UP_BYTES >> 20
                )));
            }
        }
        let reaches = offset + out.bytes.len() as u64;
        if reaches != end.offset {
            return Err(ShipperError::Restore(format!(
                "the stored stream rebuilt from offset {offset} ends at {reaches}, not at the stored end {}: run logferry-shipper verify",
                end.offset
            )));
        }
        Ok(out)
    }
}

/// Pauses the old primary's writes; what was done, and its offset then when it answered.
async fn fence(url: &str) -> (String, Option<u64>) {
    let paused = async {
        let mut old = connect(url, "--old-primary").await?;
        old.ok(&["CLIENT", "PAUSE", &FENCE_MS.to_string(), "WRITE"])
            .await?;
        let at = replication(&mut old).await?;
        Ok::<_, ShipperError>((old.addr().to_owned(), at.offset))
    }
    .await;
    match paused {
        Ok((addr, offset)) => {
            info!(old_primary = %addr, offset, "promote: the old primary's writes are paused");
            (
                format!(
                    "{addr}: writes paused for 24 h at offset {offset} (CLIENT PAUSE WRITE: its writing clients wait rather than fail; \
                     CLIENT UNPAUSE ends it, and so does a restart of that server)"
                ),
                Some(offset),
            )
        }
        Err(e) => {
            warn!(error = %e, "promote: the old primary did not answer; not fenced");
            (format!("did not answer ({e}): not fenced"), None)
        }
    }
}

/// Waits until the standby, linked to the old primary, holds its offset `at`.
async fn wait_caught_up(standby: &mut Client, at: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let now = replication(standby).await?;
        if now.offset >= at || !now.link_up {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ShipperError::Restore(format!(
                "the standby reached offset {} of the old primary's {at} within {} s: see its log; the old primary stays paused (CLIENT UNPAUSE on it undoes that)",
                now.offset,
                CATCH_UP.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Feeds the standby (at `at`) `catch` from an endpoint of this process and waits until it
/// acknowledges the stored end. Whatever happens (an error, a stop asked for), its
/// `masterauth` is put back (`auth_stuck` says when that failed), and on failure it
/// replicates its primary again.
async fn feed(
    standby: &mut Client,
    at: &Replication,
    catch: &Catch,
    req: &PromoteRequest<'_>,
    bars: &Bars,
    auth_stuck: &mut bool,
) -> Result<()> {
    if req.interrupt.is_requested() {
        return Err(ShipperError::Interrupted(
            "stopped before the standby was fed".into(),
        ));
    }
    let mut watcher = standby.reconnect().await?;
    // The clean-up's own connection, opened before anything changes: a stop may cut a
    // command on `standby`'s.
    let mut clean = standby.reconnect().await?;
    let endpoint = Endpoint::bind(standby.local_ip()?).await?;
    let old_auth = match standby.ok(&["CONFIG", "GET", "masterauth"]).await? {
        Value::Array(Some(v)) => v.get(1).map(Value::text).unwrap_or_default(),
        _ => String::new(),
    };
    standby
        .ok(&["CONFIG", "SET", "masterauth", endpoint.password()])
        .await?;
    let addr = endpoint.addr();
    let standby_addr = standby.addr().to_owned();
    let fed = async {
        standby
            .ok(&[
                "REPLICAOF",
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .await?;
        let mut link = endpoint.accept(&standby_addr).await?;
        let wanted = Some((at.replid.clone(), at.offset + 1));
        if link.asked != wanted {
            return Err(ShipperError::Restore(format!(
                "the standby asked to continue at {:?}, not after what it held ({}): it changed while it was promoted",
                link.asked,
                at.render()
            )));
        }
        link.continued(&at.replid, at.offset).await?;
        let bar = bars.phase("applying", catch.bytes.len() as u64);
        let sent = link.stream(&catch.bytes, &bar).await;
        bar.finish_and_clear();
        sent?;
        link.applied(&mut watcher).await
    };
    let fed = tokio::select! {
        biased;
        fed = fed => fed,
        () = req.interrupt.requested() => Err(ShipperError::Interrupted(
            "stopped while the standby was being fed from the store".into(),
        )),
    };
    let mut put_back = clean.ok(&["CONFIG", "SET", "masterauth", &old_auth]).await;
    if put_back.is_err() {
        if let Ok(mut again) = standby.reconnect().await {
            put_back = again.ok(&["CONFIG", "SET", "masterauth", &old_auth]).await;
            clean = again;
        }
    }
    *auth_stuck = put_back.is_err();
    let put_back = put_back.map_err(|e| {
        ShipperError::Restore(format!(
            "{e}; the standby's masterauth is still promote's one-time password: set it back by hand (CONFIG SET masterauth) before it replicates its primary again"
        ))
    });
    if fed.is_err() && put_back.is_ok() {
        point_back(&mut clean, at).await;
    }
    *standby = clean;
    fed?;
    put_back?;
    Ok(())
}

/// Points the standby back at the primary it replicated in `before` (after a failed or
/// stopped step left it replicating this process's closed endpoint).
async fn point_back(standby: &mut Client, before: &Replication) {
    let Some((host, port)) = &before.primary else {
        return;
    };
    let now = replication(standby).await.ok().and_then(|r| r.primary);
    if now.as_ref() == Some(&(host.clone(), port.clone())) {
        return;
    }
    if let Err(e) = standby.ok(&["REPLICAOF", host, port]).await {
        warn!(error = %e, "the standby could not be pointed back at its primary {host}:{port}: run REPLICAOF on it by hand");
    }
}

/// Runs a promotion of a Redis replica (or, with `req.dry_run`, says what it would do).
///
/// # Errors
/// [`ShipperError::Restore`] when the stream cannot be promoted as asked (nothing stored,
/// promoted already, the standby not a replica of the stream's history, or behind what
/// the store holds unbroken), refused before anything changes; or when a step fails, whose
/// report is stored before.
pub async fn run(store: &Store, req: &PromoteRequest<'_>, bars: &Bars) -> Result<PromotionReport> {
    let started = Instant::now();
    let mut steps = Steps::new(req);
    let mut standby = connect(req.standby, "--standby").await?;
    let (chain, end) = stored_end(store, req).await?;
    if chain
        .last()
        .is_some_and(|c| c.header.meta.open_trx.is_some())
    {
        warn!(stored_end = %end, "the stored chain ends inside a MULTI: the standby gets what precedes it; the agent will record a fork there and take a full sync from the promoted standby");
    }
    let stored_end_text = |end: &ReplPos| place(&end.replid, end.offset);
    if !req.dry_run {
        promotion::refuse_repeat(store, req.stream, &stored_end_text(&end)).await?;
    }
    let before = replication(&mut standby).await?;
    info!(standby = %standby.addr(), at = %before.render(), role = %before.role, "promote: the standby's replication state");
    if before.role != "slave" {
        return Err(ShipperError::Restore(format!(
            "the standby {} is a {}, not a replica: promote takes a replica of the stream's primary (REPLICAOF NO ONE already run? Then point the agent at it)",
            standby.addr(),
            before.role
        )));
    }
    if before.replid != end.replid {
        return Err(ShipperError::Restore(format!(
            "the standby {} replicates another history ({}) than the stream's ({}): it is not a copy of this stream's database, \
             or it replicates a server that already took the stream over (point the agent at that one); nothing was changed",
            standby.addr(),
            before.render(),
            stored_end_text(&end)
        )));
    }
    // Preflight: what it lacks must be in the store, whole, before anything is changed.
    let (to_apply, to_apply_commands) = if before.holds(&end) {
        (0, 0)
    } else {
        let preview = Catch::build(store, &chain, before.offset, &end).await?;
        (preview.transactions, preview.commands)
    };
    let last_stored = chain.last().map_or(0, |c| c.header.meta.last_event_ms);
    let last_seen_commit_ms = promotion::last_seen_commit(store, req.stream).await?;
    let mut report = PromotionReport {
        stream: req.stream.to_string(),
        standby: standby.addr().to_owned(),
        outcome: Outcome::DryRun,
        failed_at: None,
        error: None,
        fence: match req.old_primary {
            Some(_) => "the old primary: would be fenced".into(),
            None => "not given (--old-primary): not fenced".into(),
        },
        stored_end: stored_end_text(&end),
        standby_before: before.render(),
        standby_after: before.render(),
        relay_transactions: None,
        relay_note: None,
        applied_transactions: to_apply,
        applied_events: to_apply_commands,
        last_stored_commit_ms: last_stored,
        last_seen_commit_ms,
        data_loss_ms: last_seen_commit_ms.map(|seen| (seen - last_stored).max(0)),
        started_ms: now_ms(),
        elapsed_ms: 0,
        steps: Vec::new(),
        notes: Vec::new(),
    };
    if req.dry_run {
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    // Set when the standby's masterauth could not be put back: it is then not pointed back
    // at its primary (it could not log in there).
    let mut auth_stuck = false;
    let done = async {
        if let Some(url) = req.old_primary {
            steps.begin("fence the old primary");
            let (what, at) = fence(url).await;
            report.fence = what;
            if let Some(at) = at {
                steps.begin("wait for the standby to hold the old primary's last write");
                wait_caught_up(&mut standby, at).await?;
            }
        }
        steps.begin("find what the standby lacks");
        let (chain, end) = stored_end(store, req).await?;
        report.stored_end = stored_end_text(&end);
        report.last_stored_commit_ms = chain.last().map_or(0, |c| c.header.meta.last_event_ms);
        report.data_loss_ms = report
            .last_seen_commit_ms
            .map(|seen| (seen - report.last_stored_commit_ms).max(0));
        let at = replication(&mut standby).await?;
        if at.replid != end.replid {
            return Err(ShipperError::Restore(format!(
                "the standby's history changed to {} while it was promoted",
                at.render()
            )));
        }
        (report.applied_transactions, report.applied_events) = (0, 0);
        let fed = !at.holds(&end);
        if fed {
            let catch = Catch::build(store, &chain, at.offset, &end).await?;
            steps.begin("apply what it lacks from the store");
            feed(&mut standby, &at, &catch, req, bars, &mut auth_stuck).await?;
            report.applied_transactions = catch.transactions;
            report.applied_events = catch.commands;
            info!(
                transactions = catch.transactions,
                commands = catch.commands,
                "promote: applied from the store"
            );
        }
        steps.begin("check the standby holds the stored end");
        let after = replication(&mut standby).await?;
        report.standby_after = after.render();
        // Fed, it must stand exactly at the stored end: its history then continues the
        // stream's byte for byte.
        let exact = !fed || after.offset == end.offset;
        if !after.holds(&end) || !exact {
            return Err(ShipperError::Restore(format!(
                "the standby is at {}, not at the stored end {}",
                after.render(),
                report.stored_end
            )));
        }
        if after.offset > end.offset && after.backlog_from.is_none_or(|b| b > end.offset + 1) {
            report.notes.push(format!(
                "the standby holds {} bytes of the stream after the stored end (the old primary's last writes, not stored yet), \
                 beyond what its replication backlog keeps: the agent pointed at it takes a full sync, a new history \
                 (a break in the chain; those writes are in its snapshot)",
                after.offset - end.offset
            ));
        }
        if req.interrupt.is_requested() {
            return Err(ShipperError::Interrupted(
                "stopped before the standby was made a primary".into(),
            ));
        }
        steps.begin("make the standby a primary");
        standby.ok(&["REPLICAOF", "NO", "ONE"]).await?;
        info!(standby = %standby.addr(), "promote: the standby is the primary");
        Ok::<(), ShipperError>(())
    }
    .await;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let paused = report.fence.contains("writes paused");
    promotion::conclude(store, req.stream, report, steps, done, async || {
        // A fresh connection: the step may have failed on a broken one.
        if let Ok(fresh) = standby.reconnect().await {
            standby = fresh;
        }
        if !auth_stuck {
            point_back(&mut standby, &before).await;
        }
        let left = match replication(&mut standby).await {
            Ok(r) if r.role == "slave" => format!(
                "is left a replica of {} (read-only unless replica-read-only is off)",
                r.primary
                    .map_or_else(|| "?".into(), |(h, p)| format!("{h}:{p}"))
            ),
            Ok(r) => format!("is a {}: check who writes to it", r.role),
            Err(_) => "did not answer: check that it is still a replica".to_owned(),
        };
        if paused {
            format!("{left}; the old primary's writes stay paused (CLIENT UNPAUSE on it ends that)")
        } else {
            left
        }
    })
    .await
}

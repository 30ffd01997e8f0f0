//! `promote` for Redis: makes a replica the stream's primary with nothing the store holds
//! missing, and keeps the stream's history going on it, so the agent pointed at it
//! continues with `+CONTINUE` where the chain ends. Each step is logged; a step that fails
//! leaves the standby a replica (read-only) and the report says which step it was.
//!
//! 1. preflight, nothing changed yet: the standby is a replica of the stream's history (its
//!    replication id is the stored chain's), and the store holds that history unbroken
//!    from the standby's offset; a promotion already done at the stored end is refused;
//! 2. the old primary's writes paused if it answers (`CLIENT PAUSE … WRITE`), and the
//!    standby, when still linked to it, waited for until it holds the old primary's offset
//!    (at most 30 s);
//! 3. when the standby's offset is short of the stored end, it is told `REPLICAOF` an
//!    endpoint of this process ([`super::endpoint`]), which answers its `PSYNC` with
//!    `+CONTINUE` and sends the stored stream after its offset byte for byte (the
//!    heartbeats the store skipped rebuilt to their length, [`heartbeats`]) until it
//!    acknowledges the stored end;
//! 4. `REPLICAOF NO ONE`: it keeps the stream's replication id as its `master_replid2`, so
//!    the stream goes on from it as one chain.

use std::time::{Duration, Instant};

use futures::StreamExt;
use logferry_common::format::redis::payload::heartbeats;
use logferry_common::format::redis::{resp::Value, walk, ReplPos, TrxTracker};
use logferry_config::redis::RedisEndpoint;
use tracing::{info, warn};

use super::client::Client;
use super::endpoint::{Endpoint, Feed};
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

/// What `INFO replication` says of a server's place in its history.
#[derive(Debug, Clone)]
struct Replication {
    role: String,
    replid: String,
    replid2: String,
    /// The offset of the last byte it holds.
    offset: u64,
    /// The first offset `replid2` is no longer accepted at (`-1`: none).
    second_offset: i64,
    link_up: bool,
}

impl Replication {
    /// Whether the server holds the stream up to `end` (its bytes under `end.replid`).
    fn holds(&self, end: &ReplPos) -> bool {
        (self.replid == end.replid && self.offset >= end.offset)
            || (self.replid2 == end.replid
                && i64::try_from(end.offset).is_ok_and(|o| o < self.second_offset))
    }

    fn render(&self) -> String {
        format!("{} offset {}", self.replid, self.offset)
    }
}

async fn replication(client: &mut Client) -> Result<Replication> {
    let info = client.ok(&["INFO", "replication"]).await?.text();
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok());
    Ok(Replication {
        role: field("role").unwrap_or_default(),
        replid: field("master_replid").unwrap_or_default(),
        replid2: field("master_replid2").unwrap_or_default(),
        offset: number("master_repl_offset")
            .and_then(|o| u64::try_from(o).ok())
            .ok_or_else(|| {
                ShipperError::Restore(format!(
                    "{} gives no master_repl_offset in INFO replication",
                    client.addr()
                ))
            })?,
        second_offset: number("second_repl_offset").unwrap_or(-1),
        link_up: field("master_link_status").as_deref() == Some("up"),
    })
}

async fn connect(url: &str, flag: &str) -> Result<Client> {
    let ep = RedisEndpoint::parse(url, flag)
        .map_err(|e| ShipperError::Restore(format!("{e} (the stream is a Redis stream)")))?;
    Client::connect(&ep).await
}

/// The stored segments a standby at `offset` of `end`'s history lacks: the unbroken run of
/// that history up to the chain's end, from the segment holding the byte after `offset`.
fn missing(chain: &[ChainSegment], offset: u64) -> Result<&[ChainSegment]> {
    let Some(last) = chain.last() else {
        return Ok(&[]);
    };
    let mut first = chain.len() - 1;
    while first > 0 && chain[first - 1].end == chain[first].start {
        first -= 1;
    }
    let run = &chain[first..];
    if offset < run[0].start.offset {
        return Err(ShipperError::Restore(format!(
            "the standby is at offset {offset} of the stream's history {}, but the store holds it unbroken only from offset {} (a snapshot or a break there): it lacks what the store does not hold; promote a standby that is nearer, or restore one from the store",
            last.end.replid, run[0].start.offset
        )));
    }
    let from = run
        .iter()
        .position(|c| c.end.offset > offset)
        .unwrap_or(run.len());
    Ok(&run[from..])
}

/// What a feed handed on (or, without a feed, would).
#[derive(Debug, Default)]
struct Fed {
    commands: u64,
    transactions: u64,
}

fn corrupt(detail: String) -> logferry_common::Error {
    logferry_common::Error::Corrupt {
        what: "Redis payload",
        detail,
    }
}

/// Walks `segs` and sends (to `feed`, when given) the stream after `offset` as it was:
/// every stored command byte for byte and, in the place of skipped heartbeats, heartbeats
/// of the same length.
async fn feed_stream(
    store: &Store,
    segs: &[ChainSegment],
    offset: u64,
    mut feed: Option<&mut Feed>,
    bar: &indicatif::ProgressBar,
) -> Result<Fed> {
    let mut fed = Fed::default();
    let mut trx = TrxTracker::new(false);
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
        let mut out = Vec::new();
        let mut at = c.start.offset;
        let mut inside = None;
        walk(&payload, |cmd| {
            let body = at + cmd.skipped;
            let end = body
                + if cmd.preamble {
                    0
                } else {
                    cmd.bytes.len() as u64
                };
            if end > offset {
                let gap = body.saturating_sub(offset.max(at));
                let beats = heartbeats(gap).ok_or_else(|| {
                    corrupt(format!(
                        "{gap} skipped bytes at offset {at} are no run of heartbeats"
                    ))
                })?;
                out.extend_from_slice(&beats);
                if !cmd.preamble {
                    if body < offset {
                        inside = Some(body);
                        return Ok(false);
                    }
                    out.extend_from_slice(cmd.bytes);
                    fed.commands += 1;
                    if trx.after(cmd.args.first().copied().unwrap_or_default()) {
                        fed.transactions += 1;
                    }
                }
            } else if !cmd.preamble {
                trx.after(cmd.args.first().copied().unwrap_or_default());
            }
            at = end;
            Ok(true)
        })
        .map_err(|e| ShipperError::Restore(format!("{}: {e}", c.seg.key)))?;
        if let Some(body) = inside {
            return Err(ShipperError::Restore(format!(
                "the standby's offset {offset} lies inside the stored command at {body} ({}): it is not a place in this stream",
                c.seg.key
            )));
        }
        if let Some(f) = feed.as_deref_mut() {
            f.stream(&out).await?;
        }
        bar.inc(c.header.payload_len);
    }
    Ok(fed)
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
                format!("{addr}: writes paused for 24 h (CLIENT PAUSE WRITE; CLIENT UNPAUSE ends it) at offset {offset}"),
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

/// Feeds the standby the stream after its offset from an endpoint of this process, and
/// waits until it acknowledges `end`; its `masterauth` is put back whatever happens.
async fn catch_up_from_store(
    standby: &mut Client,
    store: &Store,
    segs: &[ChainSegment],
    at: &Replication,
    end: &ReplPos,
    bars: &Bars,
) -> Result<Fed> {
    let endpoint = Endpoint::bind(standby.local_ip()?).await?;
    let old_auth = match standby.ok(&["CONFIG", "GET", "masterauth"]).await? {
        Value::Array(Some(v)) => v.get(1).map(Value::text).unwrap_or_default(),
        _ => String::new(),
    };
    standby
        .ok(&["CONFIG", "SET", "masterauth", endpoint.password()])
        .await?;
    let addr = endpoint.addr();
    let mut watcher = standby.reconnect().await?;
    let fed = async {
        standby
            .ok(&["REPLICAOF", &addr.ip().to_string(), &addr.port().to_string()])
            .await?;
        let mut feed = endpoint.accept(standby.addr()).await?;
        let wanted = Some((at.replid.clone(), at.offset + 1));
        if feed.asked != wanted {
            return Err(ShipperError::Restore(format!(
                "the standby asked to continue at {:?}, not after what it held ({} offset {}): it changed while it was promoted",
                feed.asked, at.replid, at.offset
            )));
        }
        feed.continued(&at.replid, at.offset).await?;
        let bar = bars.phase("applying", segs.iter().map(|c| c.header.payload_len).sum());
        let fed = feed_stream(store, segs, at.offset, Some(&mut feed), &bar).await;
        bar.finish_and_clear();
        let fed = fed?;
        if feed.sent() < end.offset {
            return Err(ShipperError::Restore(format!(
                "the stored stream ends at offset {} of what was sent, short of the chain's end {}",
                feed.sent(),
                end.offset
            )));
        }
        feed.applied(&mut watcher).await?;
        Ok(fed)
    }
    .await;
    let put_back = standby
        .ok(&["CONFIG", "SET", "masterauth", &old_auth])
        .await;
    let fed = fed?;
    put_back?;
    Ok(fed)
}

/// Runs a promotion of a Redis replica (or, with `req.dry_run`, says what it would do).
///
/// # Errors
/// [`ShipperError::Restore`] when the stream cannot be promoted as asked (nothing stored,
/// promoted already, the standby not a replica of the stream's history, or behind what
/// the store holds unbroken) or a step fails; the report of a failed promotion is stored
/// before.
pub async fn run(store: &Store, req: &PromoteRequest<'_>, bars: &Bars) -> Result<PromotionReport> {
    let started = Instant::now();
    let mut steps = Steps::new(req);
    let mut standby = connect(req.standby, "--standby").await?;
    let chain = plan::chain(store, req.stream).await?;
    let Some(end) = chain.last().map(|c| c.end.clone()) else {
        return Err(ShipperError::Restore(format!(
            "stream {} has no stored segments: there is nothing to promote a standby to",
            req.stream
        )));
    };
    let stored_end = format!("{} offset {}", end.replid, end.offset);
    if !req.dry_run {
        promotion::refuse_repeat(store, req.stream, &stored_end).await?;
    }
    let before = replication(&mut standby).await?;
    info!(standby = %standby.addr(), at = %before.render(), role = %before.role, "promote: the standby's replication state");
    if before.role != "slave" {
        return Err(ShipperError::Restore(format!(
            "the standby {} is a {}, not a replica: promote takes a replica of the stream's primary (REPLICAOF NO ONE already run? Then point the agent at it; what it lacks of the store can be seen with restore --dry-run)",
            standby.addr(),
            before.role
        )));
    }
    if before.replid != end.replid && !before.holds(&end) {
        return Err(ShipperError::Restore(format!(
            "the standby {} replicates another history ({}) than the stream's ({stored_end}): it is not a copy of this stream's database, or went its own way; nothing was changed",
            standby.addr(),
            before.render()
        )));
    }
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
        stored_end,
        standby_before: before.render(),
        standby_after: before.render(),
        relay_transactions: None,
        relay_note: None,
        applied_transactions: 0,
        applied_events: 0,
        last_stored_commit_ms: last_stored,
        last_seen_commit_ms,
        data_loss_ms: last_seen_commit_ms.map(|seen| (seen - last_stored).max(0)),
        started_ms: now_ms(),
        elapsed_ms: 0,
        steps: Vec::new(),
    };
    if req.dry_run {
        if !before.holds(&end) {
            let segs = missing(&chain, before.offset)?;
            let fed = feed_stream(
                store,
                segs,
                before.offset,
                None,
                &indicatif::ProgressBar::hidden(),
            )
            .await?;
            report.applied_transactions = fed.transactions;
            report.applied_events = fed.commands;
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
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
        let at = replication(&mut standby).await?;
        if !at.holds(&end) {
            let segs = missing(&chain, at.offset)?;
            steps.begin("apply what it lacks from the store");
            let fed = catch_up_from_store(&mut standby, store, segs, &at, &end, bars).await?;
            report.applied_transactions = fed.transactions;
            report.applied_events = fed.commands;
            info!(
                transactions = fed.transactions,
                commands = fed.commands,
                "promote: applied from the store"
            );
        }
        steps.begin("check the standby holds the stored end");
        let after = replication(&mut standby).await?;
        report.standby_after = after.render();
        if !after.holds(&end) {
            return Err(ShipperError::Restore(format!(
                "the standby is at {}, short of the stored end {}",
                after.render(),
                report.stored_end
            )));
        }
        steps.begin("make the standby a primary");
        standby.ok(&["REPLICAOF", "NO", "ONE"]).await?;
        info!(standby = %standby.addr(), "promote: the standby is the primary");
        Ok::<(), ShipperError>(())
    }
    .await;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match done {
        Ok(()) => {
            report.steps = steps.finish(None);
            report.outcome = Outcome::Promoted;
            let key = promotion::save(store, req.stream, &report).await?;
            info!(%key, "promote: report stored");
            Ok(report)
        }
        Err(e) => {
            let step = steps.current().to_owned();
            report.steps = steps.finish(Some(&e.to_string()));
            report.outcome = Outcome::Failed;
            report.failed_at = Some(step.clone());
            report.error = Some(e.to_string());
            let left = match replication(&mut standby).await {
                Ok(r) if r.role == "slave" => {
                    "is left a replica (read-only unless replica-read-only is off)".to_owned()
                }
                Ok(r) => format!("is a {}: check who writes to it", r.role),
                Err(_) => "did not answer: check that it is still a replica".to_owned(),
            };
            warn!(step, error = %e, "promote failed; the standby {left}");
            if let Err(save) = promotion::save(store, req.stream, &report).await {
                warn!(error = %save, "the report of the failed promotion could not be stored");
            }
            Err(ShipperError::Restore(format!(
                "promote stopped at \"{step}\": {e}; the standby {left}\n{}",
                report.render()
            )))
        }
    }
}

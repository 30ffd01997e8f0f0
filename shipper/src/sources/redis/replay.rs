//! The commands after a snapshot's position up to the target, whole transactions only,
//! read segment by segment (each verified) and handed to a [`Sink`]: the restore
//! endpoint's replication link, or an AOF file.
//!
//! The stream's own `SELECT`s pass through as they are; before the first command a
//! `SELECT` of the db in force there is added (a segment's preamble says which). A
//! transaction (`MULTI` … `EXEC`, which Redis 7 also wraps around a script's effects) is
//! held until its `EXEC` and then handed on whole, or not at all when the target comes
//! first or the chain ends inside it. `#SKIP:` annotations give every command's offset, so
//! a position target is exact.

use futures::StreamExt;
use indicatif::ProgressBar;
use logferry_common::format::redis::payload::advance;
use logferry_common::format::redis::{resp, walk, ReplPos, TrxTracker};

use super::plan::Plan;
use super::target::Target;
use crate::error::{Result, ShipperError};
use crate::restore::segment_payloads;
use crate::storage::Store;

/// Where replayed transactions go.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Takes one whole transaction (one or more RESP commands) received in second `ts`.
    ///
    /// # Errors
    /// When the bytes cannot be delivered.
    async fn transaction(&mut self, commands: &[u8], ts: i64) -> Result<()>;

    /// Called while the next segment is awaited, every [`IDLE_EVERY`]: a link to a server
    /// says it is alive here.
    ///
    /// # Errors
    /// When the link is broken.
    async fn idle(&mut self) -> Result<()>;
}

/// How often [`Sink::idle`] is called while a segment is awaited.
pub const IDLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`replay`] handed on.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    /// Commands handed on (the stream's `SELECT`s included).
    pub commands: u64,
    /// Transactions handed on (a command outside `MULTI` is one).
    pub transactions: u64,
    /// Segments read and verified.
    pub segments: u64,
    /// Position after, and receive time (ms, to the second) of, the last transaction.
    pub last: Option<(ReplPos, i64)>,
    /// The chain ended inside a transaction that was therefore left out.
    pub open_at_end: bool,
    /// The start lay inside a transaction, whose rest was therefore left out.
    pub skipped_open_at_start: bool,
    /// The replay stopped at the fork point before the target: the commands after it are
    /// the old primary's only.
    pub stopped_at_fork: Option<ReplPos>,
}

/// The state of a walk through the chain, carried across segments.
struct Walker<'t> {
    target: &'t Target,
    /// The fork point of the history replayed: nothing after it is taken.
    fork: Option<&'t ReplPos>,
    /// The fork point stopped the walk.
    stopped_at_fork: bool,
    /// After the last whole transaction taken (at first, the snapshot's position: what lies
    /// before it is in the snapshot).
    at: ReplPos,
    /// The db selected in the stream after the last command walked.
    stream_db: u32,
    /// The db selected on the receiving side, once something was handed on.
    sink_db: Option<u32>,
    trx: TrxTracker,
    /// The transaction being collected, and its second.
    pending: Vec<u8>,
    pending_ts: i64,
    pending_commands: u64,
    /// Whole transactions ready to hand on, with their second, end and command count.
    ready: Vec<(Vec<u8>, i64, ReplPos, u64)>,
    /// The target was passed: nothing more is taken.
    done: bool,
    /// The start lay inside a transaction whose rest was passed over.
    skipped_open: bool,
}

impl Walker<'_> {
    /// Takes one segment's payload; `start` is its first position, `first_second` the
    /// receive second of its first command (for commands before its first `#TS:`).
    fn segment(&mut self, payload: &[u8], start: &ReplPos, first_second: i64) -> Result<()> {
        let mut offset = start.offset;
        let mut second = first_second;
        let skip_until = self.at.offset;
        walk(payload, |cmd| {
            if let Some(ts) = cmd.ts {
                second = ts;
            }
            offset = advance(offset, &cmd)?;
            if cmd.preamble {
                self.stream_db = cmd.selected_db().unwrap_or(self.stream_db);
                return Ok(true);
            }
            let name = cmd.args.first().copied().unwrap_or_default();
            let db_before = self.stream_db;
            if let Some(db) = cmd.selected_db() {
                self.stream_db = db;
            }
            let open_at_start =
                self.sink_db.is_none() && self.pending.is_empty() && self.trx.in_multi();
            if offset <= skip_until || open_at_start {
                // Before the start (in the snapshot), or the rest of a transaction that
                // began before it (`export --from` inside one): not a whole transaction.
                self.trx.after(name);
                self.skipped_open |= open_at_start && offset > skip_until;
                return Ok(true);
            }
            if self.pending.is_empty() {
                self.pending_ts = second;
                if self.sink_db != Some(db_before) && !cmd.is("SELECT") {
                    self.pending.extend_from_slice(&resp::select(db_before));
                    self.pending_commands += 1;
                }
            }
            self.pending.extend_from_slice(cmd.bytes);
            self.pending_commands += 1;
            if !self.trx.after(name) {
                return Ok(true);
            }
            let end = ReplPos::new(start.history, offset, &start.replid, self.stream_db);
            let past = match self.target {
                Target::Latest => false,
                Target::Time(t) => self.pending_ts * 1000 > *t,
                Target::Position(p) => end.cmp_place(p).is_gt(),
            };
            let forked = !past && self.fork.is_some_and(|f| end.cmp_place(f).is_gt());
            if past || forked {
                self.stopped_at_fork = forked;
                self.done = true;
                return Ok(false);
            }
            self.sink_db = Some(self.stream_db);
            self.at = end.clone();
            self.ready.push((
                std::mem::take(&mut self.pending),
                self.pending_ts,
                end,
                std::mem::take(&mut self.pending_commands),
            ));
            Ok(true)
        })?;
        Ok(())
    }
}

/// Walks `plan`'s segments from its start and hands every whole transaction up to
/// `target` to `sink`, in order, counting payload bytes on `bar`.
///
/// # Errors
/// A segment that does not read or open (named); `sink`'s errors.
pub async fn replay(
    store: &Store,
    plan: &Plan,
    target: &Target,
    sink: &mut impl Sink,
    bar: &ProgressBar,
) -> Result<Replayed> {
    let mut w = Walker {
        target,
        fork: plan.fork.as_ref(),
        stopped_at_fork: false,
        at: plan.start.clone(),
        stream_db: plan.start.db,
        sink_db: None,
        trx: TrxTracker::new(plan.starts_in_trx),
        pending: Vec::new(),
        pending_ts: 0,
        pending_commands: 0,
        ready: Vec::new(),
        done: false,
        skipped_open: false,
    };
    let mut out = Replayed::default();
    let mut payloads = Box::pin(segment_payloads(
        store,
        plan.segments.iter().map(|c| (&c.seg, c.header.payload_len)),
    ));
    let mut segs = plan.segments.iter();
    loop {
        let next = loop {
            match tokio::time::timeout(IDLE_EVERY, payloads.next()).await {
                Ok(next) => break next,
                Err(_) => sink.idle().await?,
            }
        };
        let Some(payload) = next else {
            break;
        };
        let payload = payload.ok()?;
        let c = segs
            .next()
            .ok_or_else(|| ShipperError::Internal("more payloads than segments".into()))?;
        w.segment(
            &payload,
            &c.start,
            c.header.meta.first_event_ms.div_euclid(1000),
        )?;
        out.segments += 1;
        bar.inc(c.header.payload_len);
        for (bytes, ts, end, commands) in w.ready.drain(..) {
            sink.transaction(&bytes, ts).await?;
            out.commands += commands;
            out.transactions += 1;
            out.last = Some((end, ts * 1000));
        }
        if w.done {
            break;
        }
    }
    out.open_at_end = !w.done && !w.pending.is_empty();
    out.skipped_open_at_start = w.skipped_open;
    out.stopped_at_fork = w.fork.filter(|_| w.stopped_at_fork).cloned();
    Ok(out)
}

//! Collecting what a restore applies: the events after the plan's start, whole
//! transactions only, up to the last one that ends at or before the target, rebuilt as
//! binlog file pieces and handed on segment by segment.
//!
//! A transaction may span segments (a segment is cut at its size limit whatever the
//! transaction). Whether it is applied is decided when it begins: if it does not end in
//! the segment it begins in, the segment where it ends is found from the headers (the first
//! one that is not wholly inside it) and read ahead for its commit. It is then streamed
//! segment by segment like any other event, so a transaction of any size costs a few
//! segments of memory. A transaction whose end is not stored is not applied.

use indicatif::ProgressBar;
use logferry_common::binlog::{self, EventHeader, ExportFiles, PayloadBuilder, Walked};
use logferry_common::trx::{code, event_body, TrxTracker};
use logferry_common::BinlogPos;
use tokio::sync::mpsc;

use super::plan::{binlog_pos, ChainSegment, Plan};
use super::segment_payload;
use super::target::Target;
use crate::error::{Result, ShipperError};
use crate::replay::Piece;
use crate::storage::Store;

/// What [`collect`] handed on so far.
#[derive(Debug, Default)]
pub struct Collected {
    /// Names of the binlog files the kept events came from, in order.
    pub files: Vec<String>,
    /// Events included.
    pub events: u64,
    /// Transactions (and standalone statements) included.
    pub transactions: u64,
    /// Position after the last included event (always a transaction boundary).
    pub last_position: Option<BinlogPos>,
    /// Commit time of the last included event, ms.
    pub last_time_ms: Option<i64>,
    /// Segments read and verified.
    pub segments_verified: u64,
    /// The replay stopped because the next transaction ends after the target, or is not
    /// stored whole.
    pub reached_target: bool,
    /// The transaction of a GTID target was included.
    pub passed_gtid: bool,
}

/// Whether a transaction whose last event has `header` and ends at `end` belongs to a
/// restore to `target`.
fn within(target: &Target, out: &Collected, header: &EventHeader, end: &BinlogPos) -> bool {
    match target {
        Target::Latest => true,
        Target::Time(t) => i64::from(header.timestamp) * 1000 <= *t,
        Target::Position(p) => end.cmp_place(p).is_le(),
        Target::Gtid(_) => !out.passed_gtid,
    }
}

/// The state carried from segment to segment.
struct Collector<'a> {
    plan: &'a Plan,
    target: &'a Target,
    trx: TrxTracker,
    /// A transaction that began in an earlier segment is being applied.
    carrying: bool,
    /// The transaction being applied or considered is the GTID target's.
    is_target_trx: bool,
    done: bool,
}

/// One segment's share of the collection.
#[derive(Default)]
struct Piecework {
    kept: PayloadBuilder,
    kept_from: Option<String>,
    /// Events of a transaction that began in this segment and has not ended yet.
    pending: PayloadBuilder,
    pending_file: Option<String>,
    pending_events: u64,
    /// Where that transaction began.
    pending_start: Option<BinlogPos>,
}

impl Collector<'_> {
    /// Walks one segment's payload, keeping what belongs to the restore. Returns the
    /// collection's share of it.
    fn walk_segment(
        &mut self,
        c: &ChainSegment,
        payload: &[u8],
        out: &mut Collected,
    ) -> Result<Piecework> {
        let seg_start = binlog_pos(&c.header.meta.start);
        let mut w = Piecework::default();
        let mut file = seg_start.file.clone();
        let mut at = seg_start.clone();
        binlog::walk(seg_start, payload, |step| {
            let (bytes, header, end, crc32) = match step {
                Walked::Format(fde) => {
                    w.kept.push_format(fde);
                    return Ok(true);
                }
                Walked::Event {
                    bytes,
                    header,
                    end,
                    crc32,
                } => (bytes, header, end, crc32),
            };
            let event_file = std::mem::replace(&mut file, end.file.clone());
            let event_start = std::mem::replace(&mut at, end.clone());
            if end.cmp_place(&self.plan.start).is_le() {
                return Ok(true);
            }
            let body = event_body(bytes, crc32);
            if let Target::Gtid(g) = self.target {
                if header.event_type == code::MARIADB_GTID && g.is_event(header.server_id, body) {
                    self.is_target_trx = true;
                }
            }
            let boundary = self.trx.after(header.event_type, body);
            if self.carrying {
                w.kept_from.get_or_insert(event_file);
                w.kept.push_event(bytes);
                out.events += 1;
            } else {
                if w.pending_start.is_none() {
                    w.pending_start = Some(event_start);
                    w.pending_file = Some(event_file);
                }
                w.pending.push_event(bytes);
                w.pending_events += 1;
                if !boundary {
                    return Ok(true);
                }
                if !within(self.target, out, &header, end) {
                    self.stop(out);
                    return Ok(false);
                }
                if w.kept_from.is_none() {
                    w.kept_from = w.pending_file.take();
                }
                w.kept.push_raw(&w.pending.take());
                out.events += w.pending_events;
                w.pending_events = 0;
                w.pending_start = None;
                w.pending_file = None;
            }
            if boundary {
                self.carrying = false;
                out.transactions += 1;
                out.last_position = Some(end.clone());
                out.passed_gtid |= std::mem::take(&mut self.is_target_trx);
                out.last_time_ms = Some(i64::from(header.timestamp) * 1000);
            }
            Ok(true)
        })?;
        Ok(w)
    }

    fn stop(&mut self, out: &mut Collected) {
        self.done = true;
        out.reached_target = true;
    }

    /// Whether the transaction that began at `trx_start` and is still open at the end of
    /// segment `i` ends at or before the target; `None` when its end is not stored.
    async fn verdict(
        &self,
        store: &Store,
        i: usize,
        trx_start: &BinlogPos,
        out: &Collected,
    ) -> Result<Option<bool>> {
        for c in &self.plan.segments[i + 1..] {
            let inside = c
                .header
                .meta
                .open_trx
                .as_ref()
                .is_some_and(|p| binlog_pos(p).cmp_place(trx_start).is_eq());
            if inside {
                continue;
            }
            let payload = segment_payload(store, &c.seg).await?;
            let mut trx = self.trx.clone();
            let mut found = None;
            binlog::walk(binlog_pos(&c.header.meta.start), &payload, |step| {
                if let Walked::Event {
                    bytes,
                    header,
                    end,
                    crc32,
                } = step
                {
                    if trx.after(header.event_type, event_body(bytes, crc32)) {
                        found = Some(within(self.target, out, &header, end));
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
}

/// Reads the plan's segments (verifying each) and keeps whole transactions after
/// `plan.start` that end at or before `target`, sending them to `pieces` as binlog file
/// pieces after each segment, so that applying overlaps with reading and memory holds a
/// few segments whatever the size of the restore or of one transaction. `out` tells what
/// was handed on, also when an error stops the collection half-way.
///
/// # Errors
/// When a segment is corrupt, the store fails, or the receiver of `pieces` is gone.
pub async fn collect(
    store: &Store,
    plan: &Plan,
    target: &Target,
    bar: &ProgressBar,
    out: &mut Collected,
    pieces: &mpsc::Sender<Piece>,
) -> Result<()> {
    let mut export = ExportFiles::default();
    let mut col = Collector {
        plan,
        target,
        trx: TrxTracker::default(),
        carrying: false,
        is_target_trx: false,
        done: false,
    };
    for (i, c) in plan.segments.iter().enumerate() {
        if col.done {
            break;
        }
        let payload = segment_payload(store, &c.seg).await?;
        out.segments_verified += 1;
        bar.inc(c.seg.size);
        let mut w = col.walk_segment(c, &payload, out)?;
        if let (Some(trx_start), false) = (w.pending_start.take(), col.done) {
            match col.verdict(store, i, &trx_start, out).await? {
                Some(true) => {
                    if w.kept_from.is_none() {
                        w.kept_from = w.pending_file.take();
                    }
                    w.kept.push_raw(&w.pending.take());
                    out.events += w.pending_events;
                    col.carrying = true;
                }
                Some(false) | None => col.stop(out),
            }
        }
        if let Some(from) = w.kept_from {
            export.push_segment(&from, &w.kept.take())?;
        }
        for (name, bytes) in export.drain() {
            if out.files.last() != Some(&name) {
                out.files.push(name.clone());
            }
            pieces
                .send((name, bytes))
                .await
                .map_err(|_| ShipperError::Restore("the replay stopped before the end".into()))?;
        }
        bar.set_message(format!("{} events", out.events));
    }
    if let (Target::Gtid(g), false) = (target, out.passed_gtid) {
        return Err(ShipperError::Restore(format!(
            "GTID {g} is not in the stored chain after {} (or its transaction is not stored whole yet); {}",
            plan.start, plan.range
        )));
    }
    out.reached_target |= out.passed_gtid;
    Ok(())
}

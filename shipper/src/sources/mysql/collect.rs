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

use futures::StreamExt;
use indicatif::ProgressBar;
use logferry_common::format::mysql::{
    self as binlog, EventHeader, ExportFiles, PayloadBuilder, Walked,
};
use logferry_common::format::mysql::{code, event_body, TrxTracker};
use logferry_common::BinlogPos;
use tokio::sync::mpsc;

use super::plan::{ChainSegment, Plan};
use super::replay::Piece;
use super::target::{Gtid, Target};
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{segment_payload, segment_payloads};
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
    /// The operator stopped it between two segments, before the target.
    pub interrupted: bool,
}

/// Whether a transaction whose last event has `header` and ends at `end` belongs to a
/// restore to `target`.
fn within(target: &Target, out: &Collected, header: &EventHeader, end: &BinlogPos) -> bool {
    match target {
        Target::Latest => true,
        Target::Time(t) => i64::from(header.timestamp) * 1000 <= *t,
        Target::BinlogPosition(p) => end.cmp_place(p).is_le(),
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
    /// A stop the operator asked for: honoured at the next transaction boundary.
    interrupt: &'a Interrupt,
}

/// One segment's share of the collection.
#[derive(Default)]
struct Piecework {
    kept: PayloadBuilder,
    /// Where the first kept event starts.
    kept_from: Option<BinlogPos>,
    /// Events of a transaction that began in this segment and has not ended yet.
    pending: PayloadBuilder,
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
        let seg_start = &c.events_start;
        let mut w = Piecework::default();
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
            let event_start = std::mem::replace(&mut at, end.clone());
            if end.cmp_place(&self.plan.start).is_le() || self.plan.orphaned(end) {
                return Ok(true);
            }
            let body = event_body(bytes, crc32);
            if let Target::Gtid(g) = self.target {
                if header.event_type == code::MARIADB_GTID
                    && Gtid::of_event(header.server_id, body) == Some(*g)
                {
                    self.is_target_trx = true;
                }
            }
            let boundary = self.trx.after(header.event_type, body);
            if self.carrying {
                w.kept_from.get_or_insert(event_start);
                w.kept.push_event(bytes);
                out.events += 1;
            } else {
                if w.pending_start.is_none() {
                    w.pending_start = Some(event_start);
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
                    w.kept_from = w.pending_start.take();
                }
                w.kept.push_raw(&w.pending.take());
                out.events += w.pending_events;
                w.pending_events = 0;
                w.pending_start = None;
            }
            if boundary {
                self.carrying = false;
                out.transactions += 1;
                out.last_position = Some(end.clone());
                out.passed_gtid |= std::mem::take(&mut self.is_target_trx);
                out.last_time_ms = Some(i64::from(header.timestamp) * 1000);
                // Segments are cut inside transactions, so a stop waits for a commit, not
                // for the end of a segment.
                if self.interrupt.is_requested() {
                    out.interrupted = true;
                    self.done = true;
                    return Ok(false);
                }
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
            let inside = c.open_trx.as_ref().is_some_and(|p| p == trx_start);
            if inside {
                continue;
            }
            let payload = segment_payload(store, &c.seg).await?;
            let mut trx = self.trx.clone();
            let mut found = None;
            binlog::walk(&c.events_start, &payload, |step| {
                if let Walked::Event {
                    bytes,
                    header,
                    end,
                    crc32,
                } = step
                {
                    if self.plan.orphaned(end) {
                        return Ok(true);
                    }
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
    interrupt: &Interrupt,
) -> Result<()> {
    let mut export = ExportFiles::default();
    let mut col = Collector {
        plan,
        target,
        trx: TrxTracker::default(),
        carrying: false,
        is_target_trx: false,
        done: false,
        interrupt,
    };
    let mut payloads = Box::pin(segment_payloads(
        store,
        plan.segments.iter().map(|c| (&c.seg, c.header.payload_len)),
    ));
    for (i, c) in plan.segments.iter().enumerate() {
        if col.done {
            break;
        }
        // Between segments, unless a transaction runs on into this one (the walk then
        // stops at its commit): everything sent ends at a commit, so the server holds
        // whole transactions when it stops.
        if interrupt.is_requested() && !col.carrying {
            out.interrupted = true;
            break;
        }
        let payload = payloads
            .next()
            .await
            .ok_or_else(|| ShipperError::Internal(format!("{} was not read", c.seg.key)))?
            .ok()?;
        out.segments_verified += 1;
        bar.inc(c.seg.size);
        let mut w = col.walk_segment(c, &payload[..], out)?;
        if let (Some(trx_start), false) = (w.pending_start.take(), col.done) {
            match col.verdict(store, i, &trx_start, out).await? {
                Some(true) => {
                    if w.kept_from.is_none() {
                        w.kept_from = Some(trx_start.clone());
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
    if let (Target::Gtid(g), false, false) = (target, out.passed_gtid, out.interrupted) {
        return Err(ShipperError::Restore(format!(
            "GTID {g} is not in the stored chain after {} (or its transaction is not stored whole yet); {}",
            plan.start, plan.range
        )));
    }
    out.reached_target |= out.passed_gtid;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mysql::plan::plan_from;
    use bytes::Bytes;
    use logferry_common::format::mysql::{file_events, EVENT_HEADER_LEN};
    use logferry_common::keys::segment_key;
    use logferry_common::{Compression, Position, Segment, SegmentMeta, SourceKind, StreamId};
    use logferry_config::StoreConfig;

    const FILE: &str = "b.000001";

    /// A binlog event without checksum, stamped `ts`, ending at `log_pos`.
    fn event(ty: u8, ts: u32, log_pos: u32, body: &[u8]) -> Vec<u8> {
        let size = (EVENT_HEADER_LEN + body.len()) as u32;
        let mut e = ts.to_le_bytes().to_vec();
        e.push(ty);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&log_pos.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    /// Events of a stream laid end to end in one file, from offset 4.
    #[derive(Default)]
    struct Log {
        events: Vec<(u64, u64, Vec<u8>)>,
        at: u64,
    }

    impl Log {
        fn push(&mut self, ty: u8, ts: u32, body: &[u8]) -> u64 {
            let start = self.at.max(4);
            let end = start + (EVENT_HEADER_LEN + body.len()) as u64;
            self.events
                .push((start, end, event(ty, ts, end as u32, body)));
            self.at = end;
            start
        }

        /// A MariaDB transaction: GTID `seq` (at `ts`), `rows` row events, XID at `commit`.
        fn trx(&mut self, seq: u64, ts: u32, rows: usize, commit: u32) -> u64 {
            let mut gtid = seq.to_le_bytes().to_vec();
            gtid.extend_from_slice(&0u32.to_le_bytes());
            gtid.push(0);
            let start = self.push(code::MARIADB_GTID, ts, &gtid);
            for _ in 0..rows {
                self.push(30, ts, &[7u8; 40]);
            }
            self.push(code::XID, commit, &[0u8; 8]);
            start
        }
    }

    fn pos(at: u64) -> Position {
        Position::Mysql(BinlogPos::new(FILE, at).unwrap())
    }

    /// A position with the GTID state after transaction `seq` of domain 0, server 1.
    fn pos_after(at: u64, seq: u64) -> Position {
        Position::Mysql(
            BinlogPos::new(FILE, at)
                .unwrap()
                .with_gtid(Some(format!("0-1-{seq}"))),
        )
    }

    /// Stores events `range` of `log` as one segment; `open_trx` where the transaction
    /// open at its end began; `seq` the last transaction committed before its end (the
    /// GTID state the agent records there).
    async fn store_segment(
        store: &Store,
        log: &Log,
        range: std::ops::Range<usize>,
        open_trx: Option<u64>,
        seq: u64,
    ) {
        let evs = &log.events[range];
        let fde = event(15, 1, 0, &[0u8; 60]);
        let mut p = PayloadBuilder::default();
        p.push_format(&fde);
        for (_, _, e) in evs {
            p.push_event(e);
        }
        let ts = |e: &Vec<u8>| i64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]])) * 1000;
        let meta = SegmentMeta {
            stream: StreamId::new("s").unwrap(),
            source: SourceKind::Mysql,
            start: pos(evs[0].0),
            end: match open_trx {
                Some(_) => pos(evs[evs.len() - 1].1),
                None => pos_after(evs[evs.len() - 1].1, seq),
            },
            open_trx: open_trx.map(|at| pos_after(at, seq)),
            first_event_ms: ts(&evs[0].2),
            last_event_ms: ts(&evs[evs.len() - 1].2),
            event_count: evs.len() as u64,
            lineage: logferry_common::segment::Lineage::default(),
        };
        let seg = Segment::seal(meta, &p.take(), Compression::None).unwrap();
        let m = &seg.header.meta;
        let key = segment_key(&m.stream, &m.start.sort_key(), &m.end.sort_key());
        store
            .put_new(&key, Bytes::from(seg.bytes().to_vec()))
            .await
            .unwrap();
    }

    /// T1 (3 events, commit at 100 s) in segment A, whose tail holds the start of T2;
    /// T2 (GTID at 200 s, commit at 300 s) runs through all of segment B into C, which ends
    /// with T3 (commit at 400 s). With `whole` false, C is not stored.
    async fn three_segments(dir: &std::path::Path, whole: bool) -> (Store, Log, u64) {
        let store = Store::open(&StoreConfig::from_url(dir.to_str().unwrap()))
            .unwrap()
            .with_keyring(crate::keyring::Keyring::new(None, true));
        let mut log = Log::default();
        log.trx(1, 100, 1, 100);
        let t2 = log.trx(2, 200, 6, 300);
        log.trx(3, 400, 0, 400);
        // A: T1 (0..3) and T2's GTID + 2 rows (3..6); B: 3 rows (6..9); C: the last row,
        // T2's XID and T3 (9..13).
        store_segment(&store, &log, 0..6, Some(t2), 1).await;
        store_segment(&store, &log, 6..9, Some(t2), 1).await;
        if whole {
            store_segment(&store, &log, 9..13, None, 3).await;
        }
        (store, log, t2)
    }

    async fn run(store: &Store, target: Target) -> (Collected, Vec<u8>) {
        let stream = StreamId::new("s").unwrap();
        let plan = plan_from(store, &stream, &BinlogPos::new(FILE, 4).unwrap(), &target)
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let mut out = Collected::default();
        collect(
            store,
            &plan,
            &target,
            &ProgressBar::hidden(),
            &mut out,
            &tx,
            &Interrupt::never(),
        )
        .await
        .unwrap();
        drop(tx);
        let mut file = Vec::new();
        while let Some((name, bytes)) = rx.recv().await {
            assert_eq!(name, FILE);
            file.extend_from_slice(&bytes);
        }
        (out, file)
    }

    /// Event type codes of the replayed file, without its format description.
    fn types(file: &[u8]) -> Vec<u8> {
        if file.is_empty() {
            return Vec::new();
        }
        file_events(file)
            .map(|e| e.unwrap()[4])
            .filter(|t| *t != 15)
            .collect()
    }

    const T1: [u8; 3] = [code::MARIADB_GTID, 30, code::XID];

    #[tokio::test]
    async fn a_transaction_across_three_segments_is_applied_whole_when_it_commits_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log, _) = three_segments(dir.path(), true).await;
        let (out, file) = run(&store, Target::Time(350_000)).await;
        assert_eq!(out.transactions, 2);
        assert_eq!(out.events, 3 + 8);
        assert_eq!(
            out.last_position.map(|p| p.offset),
            Some(log.events[10].1),
            "T2's commit"
        );
        let mut want = T1.to_vec();
        want.push(code::MARIADB_GTID);
        want.extend([30; 6]);
        want.push(code::XID);
        assert_eq!(types(&file), want);
        let (out, _) = run(&store, Target::Latest).await;
        assert_eq!((out.transactions, out.events), (3, 13));
    }

    #[tokio::test]
    async fn a_target_inside_a_spanning_transaction_stops_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log, _) = three_segments(dir.path(), true).await;
        // Its first events are stamped 200 s, at or before the target; it commits at 300 s.
        for target in [
            Target::Time(250_000),
            Target::BinlogPosition(BinlogPos::new(FILE, log.events[7].1).unwrap()),
        ] {
            let (out, file) = run(&store, target.clone()).await;
            assert_eq!((out.transactions, out.events), (1, 3), "{target:?}");
            assert!(out.reached_target);
            assert_eq!(types(&file), T1, "{target:?}: nothing of T2 is handed on");
        }
    }

    #[tokio::test]
    async fn a_gtid_target_whose_transaction_spans_segments_includes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = three_segments(dir.path(), true).await;
        let g = Target::Gtid(Gtid {
            domain: 0,
            server: 1,
            seq: 2,
        });
        let (out, _) = run(&store, g).await;
        assert_eq!(out.transactions, 2);
        assert!(out.passed_gtid);
    }

    #[tokio::test]
    async fn a_transaction_whose_end_is_not_stored_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = three_segments(dir.path(), false).await;
        let (out, file) = run(&store, Target::Latest).await;
        assert_eq!((out.transactions, out.events), (1, 3));
        assert_eq!(types(&file), T1);
    }
}
